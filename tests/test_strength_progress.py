"""Progress wherever an attack runs (issue #22, part 5): a bar with rate and ETA for the features,
the grouping, each refinement round and the fit, on stderr when it is a terminal; none under
``--json`` and none in a pipe."""

from __future__ import annotations

import json
import re

from tests.helpers import run_cli
from tests.test_progress_bars import run_on_a_terminal

STEPS = ("features", "grouping", "round 1/10", "fit")


def bar(label: str, text: str) -> bool:
    """Whether ``text`` holds a drawn bar of ``label`` with its count, elapsed time, ETA and rate."""
    return re.search(rf"{re.escape(label)} +\d+% \|#*\s*\| \d+/\d+ \[ *\d+\.\ds< *\d+\.\ds, [\d.]+k? \w+/s\]", text) is not None


def test_attack_graph_draws_every_step_on_a_terminal(tiny_release, tmp_path):
    status, stdout, terminal = run_on_a_terminal("attack", "graph", "--release", str(tiny_release), "--out", str(tmp_path / "g"))
    assert status == 0, terminal
    assert all(bar(step, terminal) for step in STEPS), terminal
    assert "wrote" in stdout and "\r" not in stdout


def test_strength_draws_the_attacks_and_the_scoring(tiny_release, tmp_path):
    status, _, terminal = run_on_a_terminal("strength", str(tiny_release), "--keys", str(tiny_release / "secret" / "keys.zarr"),
                                            "--out", str(tmp_path / "s"))
    assert status == 0, terminal
    assert all(bar(step, terminal) for step in (*STEPS, "pool", "score")), terminal


def test_no_bar_under_json_nor_in_a_pipe(tiny_release, tmp_path):
    status, stdout, terminal = run_on_a_terminal("attack", "graph", "--release", str(tiny_release), "--out", str(tmp_path / "g"),
                                                 "--json")
    assert status == 0 and json.loads(stdout)["attack"] == "graph"
    assert terminal == ""
    piped = run_cli("attack", "graph", "--release", str(tiny_release), "--out", str(tmp_path / "h"))
    assert piped.returncode == 0 and piped.stderr == ""
