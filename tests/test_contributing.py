"""CONTRIBUTING.md's worked examples run as written."""

from __future__ import annotations

import json
import re
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pytest

import generator.sources as sources
from attacks import registry
from commands.main import main
from commands.verify import main as verify
from challenge.format import open_key_store
from challenge.submission import expected_from_keys
from verifier import scoring
from verifier.baselines import write_baseline
from verifier.bundle import competition, make_bundle

CONTRIBUTING = Path(__file__).resolve().parent.parent / "CONTRIBUTING.md"


def _python_blocks(section: str) -> list[str]:
    text = CONTRIBUTING.read_text()
    body = text[text.index(f"## {section}"):]
    body = body[: body.find("\n## ", 1)] if "\n## " in body[1:] else body
    return re.findall(r"```python\n(.*?)```", body, flags=re.S)


def test_a_new_source_format_is_one_module_and_one_row(tmp_path, monkeypatch):
    (block,) = _python_blocks("Adding a source format")
    namespace = {"Layout": sources.Layout}
    exec(compile(block, str(CONTRIBUTING), "exec"), namespace)
    monkeypatch.setattr(sources, "LAYOUTS", (*sources.LAYOUTS, namespace["RAW"]))
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (6, 9, 11, 3), dtype=np.uint8)
    folder = tmp_path / "raw"
    folder.mkdir()
    (folder / "pixels.u8").write_bytes(pixels.tobytes())
    (folder / "shape.json").write_text(json.dumps({"shape": list(pixels.shape), "labels": [0, 1, 2, 0, 1, 2]}))
    assert sources.detect_layout(folder) == ("raw", folder)
    loaded = sources.load_private(folder)
    assert np.array_equal(loaded.images, pixels) and loaded.class_names == ("0", "1", "2")
    assert sources.load_private(folder, size=16).images.shape == (6, 16, 16, 3)  # --size works for it as for all
    assert "raw pixels" in _unrecognised(tmp_path / "empty")


def _unrecognised(folder: Path) -> str:
    folder.mkdir()
    (folder / "stray.txt").write_text("")
    try:
        sources.detect_layout(folder)
    except sources.SourceError as e:
        return str(e)
    raise AssertionError("an empty folder was recognised")


def test_a_new_attack_is_one_module_and_one_row(tiny_release, tmp_path, monkeypatch, capsys):
    (block,) = _python_blocks("Adding an attack")
    namespace = {"Attack": registry.Attack}
    exec(compile(block, str(CONTRIBUTING), "exec"), namespace)
    monkeypatch.setattr(registry, "ATTACKS", (*registry.ATTACKS, namespace["CLASS_MEAN"]))
    with pytest.raises(SystemExit):
        main(["attack", "--help"])
    assert re.search(r"^ +class-mean\s+submit the mean pool image", capsys.readouterr().out, flags=re.M)
    out = tmp_path / "sub"
    assert main(["attack", "class-mean", "--release", str(tiny_release), "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["attack"] == "class-mean" and summary["pool_size"] == 200  # --pool: the embedded demo data
    assert verify([str(out), "--release", str(tiny_release)]) == 0 and ": valid" in capsys.readouterr().out

    keys = tiny_release / "secret" / "keys.zarr"
    assert main(["strength", str(tiny_release), "--keys", str(keys), "--out", str(tmp_path / "report"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [a["attack"] for a in report["attacks"]] == ["constant", "mean", "pairing", "pool", "graph", "class-mean"]
    (line,) = [line for line in report["verdict"] if "(class-mean)" in line]
    assert line.startswith("An attacker with the private source set (class-mean): recovers nothing")
    page = (tmp_path / "report" / "strength.html").read_text(encoding="utf-8")
    assert "<dt>class-mean: an attacker with the private source set</dt>" in page


def test_a_new_metric_is_one_row(tiny_release, tmp_path, monkeypatch, capsys):
    (block,) = _python_blocks("Adding a metric")
    namespace = {"Metric": scoring.Metric, "np": np}
    exec(compile(block, str(CONTRIBUTING), "exec"), namespace)
    before = scoring.METRICS
    table = (*before, namespace["MAX_PSNR"])
    for name, module in list(sys.modules.items()):  # each module that reads the table, as if its source had the row
        if name.split(".")[0] in ("verifier", "commands") and getattr(module, "METRICS", None) is before:
            monkeypatch.setattr(module, "METRICS", table)
    keys = tiny_release / "secret" / "keys.zarr"
    store = open_key_store(keys)
    oracle = tmp_path / "oracle"
    write_baseline("oracle", oracle, expected_from_keys(store), store=store)

    assert verify([str(oracle), "--release", str(tiny_release), "--keys", str(keys)]) == 0
    assert re.search(r"^Max_PSNR +100\.0000  mean over encryptions of the best PSNR", capsys.readouterr().out, re.M)
    scores = json.loads((oracle / "scores.json").read_text())
    assert list(scores)[-1] == "Max_PSNR" and scores["Max_PSNR"] == 100.0  # an exact recovery: L2 = 0, the cap

    board = tmp_path / "board"
    assert main(["leaderboard", str(oracle), "--keys", str(keys), "--release", str(tiny_release), "--out", str(board)]) == 0
    assert (board / "leaderboard.md").read_text().splitlines()[0].endswith(
        "| recovered_share | Max_PSNR | Self-reported running time | Hardware | Submission date |")
    assert "<th>Max_<wbr>PSNR</th>" in (board / "leaderboard.html").read_text(encoding="utf-8")

    doc = competition("t", holdout=None, start=date(2027, 1, 1), end=None, docker_image="d", description="d")
    assert doc["leaderboards"][0]["columns"][-1] == {"title": "Max_PSNR", "key": "Max_PSNR", "index": len(table) - 1,
                                                     "precision": scoring.DECIMALS, "sorting": "desc"}
    # until verifier/codabench/score.py computes it too, no bundle is built: its self-test compares the scores
    with pytest.raises(RuntimeError, match="the bundle's scoring program gives"):
        make_bundle(tiny_release, keys, tmp_path / "competition.zip")
    assert not (tmp_path / "competition.zip").exists()
