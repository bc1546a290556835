"""``instahide attack`` and ``instahide strength`` as a user runs them."""

import json

import numpy as np

from tests.helpers import run_cli


def test_strength_reports_the_embedded_release_broken_by_pool(tiny_release, tmp_path):
    keys = tiny_release / "secret" / "keys.zarr"
    result = run_cli("strength", str(tiny_release), "--keys", str(keys), "--out", str(tmp_path / "r"), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["verdict"][0].startswith("An attacker with the private source set (pool): recovers ")
    by_name = {a["attack"]: a for a in report["attacks"]}
    assert set(by_name) == {"constant", "mean", "pairing", "pool", "graph"}
    assert by_name["pool"]["recovered_share"] >= 0.95
    assert by_name["constant"]["recovered_share"] == 0
    assert 0 <= by_name["graph"]["pair_accuracy"] <= 1
    assert (tmp_path / "r" / "strength.html").is_file() and (tmp_path / "r" / "pictures" / "pool-best1.png").is_file()
    again = run_cli("strength", str(tiny_release), "--keys", str(keys), "--out", str(tmp_path / "r"))
    assert again.returncode == 2 and "--force" in again.stderr


def test_attack_commands_write_valid_submissions(tiny_release, tmp_path):
    for attack in ("pool", "graph"):
        out = tmp_path / attack
        result = run_cli("attack", attack, "--release", str(tiny_release), "--out", str(out), "--json")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["attack"] == attack
        check = run_cli(str(out), "--release", str(tiny_release), module="commands.verify")
        assert check.returncode == 0, check.stderr


def test_a_missing_release_is_one_line_and_exit_2(tmp_path):
    result = run_cli("attack", "graph", "--release", str(tmp_path / "nowhere"), "--out", str(tmp_path / "s"))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "not a release" in result.stderr


def test_generate_warns_about_the_embedded_private_set(tmp_path):
    result = run_cli("generate", "--out", str(tmp_path / "r"), "--practice", "--seed", "w",
                     "--n-private", "20", "--per-image", "2")
    assert result.returncode == 0, result.stderr
    assert "embedded demo data" in result.stderr


def test_a_pool_of_another_shape_is_one_line_naming_it_and_both_shapes(tiny_release, tmp_path):
    from tests.test_loaders_shapes import write_mnist

    write_mnist(tmp_path / "mnist", np.zeros((4, 28, 28), np.uint8), [0, 1, 2, 3])  # grey: resized, but grey still
    result = run_cli("attack", "pool", "--release", str(tiny_release), "--pool", str(tmp_path / "mnist"),
                     "--out", str(tmp_path / "s"))
    assert result.returncode == 2 and not (tmp_path / "s").exists()
    assert result.stderr.strip().splitlines() == [
        f"instahide: error: --pool {tmp_path / 'mnist'}: its images are 32x32x1, the release's 32x32x3; "
        "give --pool a data set of the release's image shape"]


def test_strength_runs_each_registered_attack_that_has_what_it_needs():
    from argparse import Namespace

    from attacks.registry import ATTACKS
    from commands.attack import _attacker

    args = Namespace(rows=64, force=False)
    without_pool = {a.name: _attacker(a, None, None, args) for a in ATTACKS}
    assert without_pool["pool"].write is None and "give --pool" in without_pool["pool"].missing  # "not assessed (...)"
    assert without_pool["graph"].write is not None
    assert all((a.write is None) == row.uses_pool for row, a in zip(ATTACKS, without_pool.values()))
    with_pool = {a.name: _attacker(a, None, [None] * 3, args) for a in ATTACKS}  # a pool of 3 candidates
    assert all(a.write is not None and not a.missing for a in with_pool.values())
