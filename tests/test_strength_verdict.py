"""The strength verdict: one line per attacker, counting only what beats the trivial floors on each
private image (issue #22, part 1), and the report's charts."""

from __future__ import annotations

import numpy as np

from attacks.registry import ATTACKS
from verifier import charts
from verifier.scoring import Scores
from verifier.strength import PAIRING, Attacker, Entry, above_floors, floor_ssim, verdict

# the registered attacks pool and graph, as the command tree passes them to strength (pool not assessed unless run)
ATTACKERS = [Attacker(a.name, who=a.attacker, has=a.has, missing="give --pool the data set the private images come from")
             for a in ATTACKS if a.name in ("pool", "graph")]


def entry(name: str, best: list[float], keyless: bool = False) -> Entry:
    best = np.array(best)
    summary = {"Max_SSIM": float(np.mean(best)), "n_private": len(best)}
    scores = Scores(summary, encryptions=np.arange(len(best)), max_ssim=best, best_column=np.zeros(len(best)),
                    best_per_private=best)
    return Entry(name, keyless, 1.0, scores, {}, None)


def scored(entries: list[Entry]) -> tuple[list[Entry], np.ndarray]:
    floors = floor_ssim(entries)
    for e in entries:
        e.recovered_above = int(np.sum(above_floors(e.scores.best_per_private, floors)))
    return entries, floors


def test_an_image_a_floor_already_matches_is_no_recovery():
    entries, floors = scored([entry("constant", [0.9, 0.1, 0.1, 0.1]), entry("mean", [0.2, 0.85, 0.0, 0.0]),
                              entry("pairing", [0.95, 0.84, 0.9, 0.5]), entry("graph", [0.89, 0.7, 0.81, 0.2], True)])
    assert list(floors) == [0.9, 0.85, 0.1, 0.1]
    assert [e.recovered_above for e in entries] == [0, 0, 2, 1]  # pairing: images 0 and 2; graph: image 2 only
    lines = verdict(entries, floors, ATTACKERS)
    assert lines[0] == ("An attacker with the private source set: not assessed "
                        "(give --pool the data set the private images come from)")
    assert lines[1].startswith("An attacker with only the public files (graph): recovers 1 of 4 private images above the floors")
    assert lines[2].startswith("An attacker given the keys' pairing (pairing): recovers 2 of 4")
    assert lines[3].startswith("The floors alone reach SSIM > 0.8 on 2 of 4 private images")
    assert len(lines) == 4


def test_nothing_above_the_floors_is_said_plainly():
    entries, floors = scored([entry("constant", [0.4, 0.4]), entry("mean", [0.3, 0.3]), entry("pairing", [0.3, 0.5]),
                              entry("pool", [0.2, 0.1], True), entry("graph", [0.2, 0.3], True)])
    lines = verdict(entries, floors, ATTACKERS)
    assert [line.split(":")[0] for line in lines[:3]] == [f"{a.who.capitalize()} ({a.name})" for a in (*ATTACKERS, PAIRING)]
    assert "recovers nothing; it beats the floors on no private image" in lines[0]
    assert "recovers nothing above the floors; it beats them on 1 of 2 private images" in lines[2]
    assert lines[-1] == "No attack recovers any private image above the trivial floors"


def test_the_chart_is_a_png_and_the_same_bytes_twice():
    floors = np.linspace(-0.1, 0.9, 50)
    panels = [("graph", np.linspace(0.2, 1.0, 50)), ("pairing", np.linspace(1.0, 0.0, 50))]
    first = charts.ssim_against_floors(panels, floors, 0.8)
    assert first[:8] == b"\x89PNG\r\n\x1a\n" and len(first) > 5000
    assert charts.ssim_against_floors(panels, floors, 0.8) == first
    assert b"Software" not in first and b"tIME" not in first


def test_attacks_md_defines_the_page_s_columns():
    from pathlib import Path

    from verifier.strength import COLUMNS

    text = (Path(__file__).resolve().parent.parent / "docs" / "ATTACKS.md").read_text(encoding="utf-8")
    table = text.split("| column | meaning |", 1)[1].split("\n\n", 1)[0]
    assert [line.split(" | ")[0].lstrip("| ") for line in table.strip().splitlines()[1:]] == [name for name, _ in COLUMNS]
