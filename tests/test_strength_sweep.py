"""``instahide strength --sweep`` (issue #22, part 3): a small release per setting of a named grid,
each attack's recovery per setting as a table, JSON and a chart; the same seed gives the same
figures; a setting over its budget is reported as such; a bad grid is one line and exit 2."""

from __future__ import annotations

import argparse
import json
import stat
import subprocess

import pytest

from commands import sweep as sweep_command
from tests.helpers import run_cli
from tests.test_progress_bars import run_on_a_terminal
from tests.test_strength_progress import bar

SMALL = ("--n-private", "20", "--per-image", "5")


def figures(sweep: dict) -> list:
    """What a sweep measured, without its wall times."""
    return [{k: v for k, v in row.items() if k != "seconds"} for row in sweep["settings"]]


def test_a_sweep_is_a_table_json_and_chart_and_replays_to_the_same_figures(tmp_path):
    args = ("strength", "--sweep", "k=4,6", *SMALL, "--seed", "s1")
    status, stdout, terminal = run_on_a_terminal(*args, "--out", str(tmp_path / "a"))
    assert status == 0, terminal
    assert bar("sweep", terminal)  # a bar with rate and ETA over the settings
    lines = stdout.splitlines()
    assert lines[0] == "| setting | constant | mean | pairing | pool | graph | time |"
    assert [line.split(" | ")[0] for line in lines[2:4]] == ["| k=4", "| k=6"]
    first = json.loads((tmp_path / "a" / "sweep.json").read_text())
    assert [row["params"]["k"] for row in first["settings"]] == [4, 6]
    assert all(row["params"]["n_private"] == 20 and not row["over_budget"] for row in first["settings"])
    pool = [a for a in first["settings"][0]["attacks"] if a["attack"] == "pool"][0]
    assert pool["recovered_above_floors"] == 20  # the embedded data: its pool ships with the tool
    assert (tmp_path / "a" / "charts" / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "a" / "settings" / "02" / "strength.html").is_file() and not (tmp_path / "a" / ".release").exists()
    assert stat.S_IMODE((tmp_path / "a" / "sweep.html").stat().st_mode) == 0o600

    again = run_cli(*args, "--out", str(tmp_path / "b"), "--json")
    assert again.returncode == 0, again.stderr
    assert figures(json.loads(again.stdout)) == figures(first)


def test_a_setting_over_its_budget_is_reported_so(tmp_path, monkeypatch):
    def too_slow(command, **kwargs):  # as subprocess.run does at the budget, after the report was begun
        report = command[command.index("--out") + 1]
        (sweep_command.Path(report) / "submissions").mkdir(parents=True)
        raise subprocess.TimeoutExpired(command, kwargs["timeout"])

    monkeypatch.setattr(sweep_command.subprocess, "run", too_slow)
    args = argparse.Namespace(release=None, keys=None, out=tmp_path / "s", force=False, sweep=[("domain", ["positive"])],
                              private=None, public=None, pool=None, n_private=20, per_image=5, seed="x", budget=7, json=True)
    assert sweep_command.run_sweep(args) == 0
    row = json.loads((tmp_path / "s" / "sweep.json").read_text())["settings"][0]
    assert row["over_budget"] and row["attacks"] == [] and row["report"] is None
    assert not (tmp_path / "s" / "settings" / "01").exists() and not (tmp_path / "s" / ".release").exists()
    assert "| domain=positive | over budget (7 s) |" in (tmp_path / "s" / "sweep.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["--sweep", "q=1"], "argument --sweep: 'q=1': expected NAME=V1,V2,... with NAME one of k, k_private"),
    (["--sweep", "k=four"], "the values of k must be ints"),
    (["--sweep", "k=6", "--sweep", "k_private=6"], "--sweep setting k=6 k_private=6: --mode cross needs at least one public patch"),
    (["--sweep", "k=4", "--sweep", "k=6"], "--sweep names k more than once"),
    (["--sweep", "k=4", "--keys", "x"], "--sweep builds its own releases: give no RELEASE and no --keys"),
    ([], "give RELEASE and --keys (or --sweep NAME=V1,V2 to sweep parameters)"),
    (["r", "--keys", "k", "--n-private", "4"], "--n-private is a --sweep option"),
])
def test_a_bad_sweep_is_one_line_and_exit_2(tmp_path, args, message):
    result = run_cli("strength", *args, "--out", str(tmp_path / "s"))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr
    assert not (tmp_path / "s").exists()
