"""``instahide strength``: what the known attacks recover from a release, before it is published.

Runs the attacks it is given (the command tree picks them: ``graph`` always; ``pool`` when a pool is
given or the private set is the embedded demo data, whose pool ships with the tool), the trivial floors (``constant``,
``mean``) and the key-given ``pairing`` baseline; scores each with the verifier and writes
``strength.json`` and ``strength.html`` (with pictures of the best and worst recoveries beside the
truth).  The keys are used only to score and to measure the graph attack's pairing accuracy.
"""

from __future__ import annotations

import html
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from challenge import format as fmt
from challenge.domain import to_uint8
from challenge.errors import UsageError
from challenge.files import output_folder, write_atomic
from challenge.npy import read_npy_header
from challenge.preview import contact_sheet, save_png
from challenge.submission import Expected, encryption_blocks, open_for_scoring, write_submission
from verifier.baselines import floor_blocks, pairing_blocks
from verifier.scoring import SUCCESS_SSIM, Scores, score

__all__ = ["STRENGTH_HTML", "STRENGTH_JSON", "Writer", "strength", "verdict"]

STRENGTH_JSON = "strength.json"
STRENGTH_HTML = "strength.html"
SHOWN = 6  # best and worst recoveries pictured per attack
PRIVATE_WARNING = ('<p class="private"><strong>Private: this page shows the release\'s private images</strong> '
                   "(the ground truth, and recoveries of it). Keep it, like the key store, from anyone who may "
                   "take part in the challenge until the keys are revealed.</p>")


@dataclass
class Entry:
    name: str
    keyless: bool
    seconds: float
    scores: Scores
    extra: dict

    def to_json(self) -> dict:
        s = self.scores.summary
        return {"attack": self.name, "keyless": self.keyless, "running_time_s": round(self.seconds, 3),
                **{k: s[k] for k in ("Max_SSIM", "Mean_SSIM", "success_rate", "recovered_share", "n_private")},
                **self.extra}


Writer = Callable[[Path, fmt.KeyStore], dict]  # writes a submission into a folder; returns report fields


def strength(release_path: Path, keys: Path, out: Path, attacks: list[tuple[str, Writer]], force: bool = False,
             rows: int = 4096, log: Callable[[str], None] | None = None) -> dict:
    """Run, score and report the keyless ``attacks`` (name, writer) beside the floors and the key-given
    pairing baseline; returns the report written to strength.json.  The attacks come from the caller
    (the command tree), so the verifier imports none."""
    expected, store = open_for_scoring(release_path, keys)  # the keys the release commits to
    params = store.params
    report_path = Path(out) / STRENGTH_JSON
    if report_path.exists() and not force:
        raise UsageError(f"{report_path}: already exists; pass --force to replace it")
    subs = Path(out) / "submissions"

    def floor(kind: str, method: str) -> Writer:
        return lambda d, store: _write(d, floor_blocks(kind, store, expected, rows), "uint8", expected, method, force)

    runs: list[tuple[str, bool, Writer]] = [
        ("constant", False, floor("constant", "constant floor: the best flat grey")),
        ("mean", False, floor("mean", "mean floor: the mean private image")),
        ("pairing", False, lambda d, store: _write(
            d, pairing_blocks(store, encryption_blocks(release_path, expected, rows), expected, rows),
            "float32", expected, "key-given pairing baseline", force)),
        *((name, True, writer) for name, writer in attacks),
    ]
    with output_folder(out, private=True):
        entries = []
        for name, keyless, run in runs:
            start = time.perf_counter()
            extra = run(subs / name, store)
            seconds = time.perf_counter() - start
            validation, scores = score(subs / name, store, expected=expected, rows=rows)
            if not validation.valid:
                raise RuntimeError(f"{name}: wrote an invalid submission: {validation.problems}")
            entries.append(Entry(name, keyless, seconds, scores, extra))
            if log:
                log(f"{name}: Max_SSIM {scores.summary['Max_SSIM']:.3f}, recovered "
                    f"{round(scores.summary['recovered_share'] * scores.summary['n_private'])} in {seconds:.1f} s")
        report = {"release": str(release_path), "params": params.to_dict(), "verdict": verdict(entries),
                  "success_ssim": SUCCESS_SSIM, "attacks": [e.to_json() for e in entries]}
        _pictures(entries, store, params.domain, subs, Path(out))
        write_atomic(Path(out) / STRENGTH_HTML, _html(report, entries))
        write_atomic(report_path, json.dumps(report, indent=2, sort_keys=True) + "\n")
    return report


def _write(folder: Path, blocks, dtype: str, expected: Expected, method: str, force: bool) -> dict:
    write_submission(folder, blocks, expected, dtype, {"team": "instahide strength", "method": method}, force)
    return {}


def verdict(entries: list[Entry]) -> str:
    """One line: the keyless attack that recovers most private images, or that none does."""
    keyless = [e for e in entries if e.keyless]
    best = max(keyless, key=lambda e: (e.scores.summary["recovered_share"], e.scores.summary["Max_SSIM"]))
    s = best.scores.summary
    recovered = round(s["recovered_share"] * s["n_private"])
    if recovered:
        return f"broken by {best.name}: {recovered} of {s['n_private']} private images recovered"
    return (f"not broken by the known keyless attacks: no private image recovered (SSIM > {SUCCESS_SSIM}); "
            f"best Max_SSIM {s['Max_SSIM']:.2f} by {best.name}")


def _pictures(entries: list[Entry], store: fmt.KeyStore, domain: str, subs: Path, out: Path) -> None:
    """Per attack, a PNG: its best and worst recoveries (top row) above the true images (bottom row)."""
    private_images = store.read("private/images")
    index = store["encryption/private_index"][:]
    (out / "pictures").mkdir(parents=True, exist_ok=True)
    for e in entries:
        order = np.argsort(-e.scores.max_ssim, kind="stable")
        rows = np.concatenate([order[:SHOWN], order[-SHOWN:]])
        header, _ = read_npy_header(subs / e.name / "decryption.npy", 1 << 62)
        recovered = np.stack([header.read_rows(int(r), int(r) + 1)[0] for r in rows])
        if recovered.dtype != np.uint8:
            recovered = to_uint8(recovered, domain)
        truth = private_images[index[rows, e.scores.best_column[rows]]]
        save_png(contact_sheet(np.concatenate([recovered, truth]), columns=len(rows)), out / "pictures" / f"{e.name}.png")


def _html(report: dict, entries: list[Entry]) -> str:
    rows = []
    for e in entries:
        j = e.to_json()
        pair = f"{j['pair_accuracy']:.3f}" if "pair_accuracy" in j else ""
        rows.append(f"<tr><td>{html.escape(e.name)}</td><td>{'yes' if e.keyless else 'no'}</td>"
                    f"<td>{j['Max_SSIM']:.4f}</td><td>{j['Mean_SSIM']:.4f}</td><td>{j['success_rate']:.3f}</td>"
                    f"<td>{j['recovered_share']:.3f}</td><td>{j['running_time_s']:.1f} s</td><td>{pair}</td></tr>")
    pictures = "".join(f"<h3>{html.escape(e.name)}</h3><p>best {SHOWN} and worst {SHOWN} recoveries (top) above "
                       f"the true images (bottom)</p><img src=\"pictures/{html.escape(e.name)}.png\" alt=\"{html.escape(e.name)}\">"
                       for e in entries)
    return ("<!doctype html><html><head><meta charset=\"utf-8\"><title>release strength</title></head><body>"
            f"<h1>Strength of {html.escape(report['release'])}</h1>{PRIVATE_WARNING}<p><b>{html.escape(report['verdict'])}</b></p>"
            "<table border=\"1\" cellpadding=\"4\"><tr><th>attack</th><th>keyless</th><th>Max_SSIM</th><th>Mean_SSIM</th>"
            "<th>success rate</th><th>recovered share</th><th>running time</th><th>pair accuracy</th></tr>"
            + "".join(rows) + "</table>" + pictures + "</body></html>\n")
