"""Issue #19 for ``instahide strength`` and ``instahide attack``: what shows private images is
readable by its owner only and says so; foreign keys, outputs inside a release and failed writes
are one line and exit 2, with nothing left behind."""

from __future__ import annotations

import os
import stat
from dataclasses import replace

import pytest

from challenge.format import read_json
from generator.release import generate
from tests.helpers import TINY, in_private_tmpfs, left_behind, run_cli, strength_report


@pytest.fixture(scope="module")
def report(tiny_release, tmp_path_factory):
    return strength_report(tiny_release, tmp_path_factory.mktemp("strength") / "report")


def test_every_file_of_the_report_is_the_owners_only(report):
    modes = {}
    for folder, dirs, files in os.walk(report):
        for name in dirs + files:
            path = os.path.join(folder, name)
            modes[os.path.relpath(path, report)] = stat.S_IMODE(os.lstat(path).st_mode)
    modes["."] = stat.S_IMODE(os.lstat(report).st_mode)
    assert "pictures/pool-best1.png" in modes and "submissions/mean/decryption.npy" in modes
    wrong = {p: oct(m) for p, m in modes.items() if m != (0o700 if (report / p).is_dir() else 0o600)}
    assert not wrong


def test_the_page_says_at_the_top_that_it_shows_the_private_images(report):
    page = (report / "strength.html").read_text(encoding="utf-8")
    assert page.index("shows the release's private images") < page.index("<table")


@pytest.fixture(scope="module", params=["same parameters", "other parameters"])
def other_release(request, tmp_path_factory, private_set, public_bank):
    out = tmp_path_factory.mktemp("other") / "release"
    params = TINY if request.param == "same parameters" else replace(TINY, per_image=4)
    generate(out, params, seed=bytes(range(1, 33)), private=private_set, public=public_bank)
    return out


def test_foreign_keys_are_refused_naming_both_commitments(tiny_release, other_release, tmp_path):
    ours = read_json(tiny_release / "public" / "manifest.json")["key_store"]["commitment"]
    theirs = read_json(other_release / "public" / "manifest.json")["key_store"]["commitment"]
    result = run_cli("strength", str(tiny_release), "--keys", str(other_release / "secret" / "keys.zarr"),
                     "--out", str(tmp_path / "r"))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert ours in result.stderr and theirs in result.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("inside", ["public/report", "secret/report", "secret/keys.zarr/report", "public", "."])
def test_an_out_inside_a_release_or_a_key_store_is_refused(tiny_release, inside):
    out = tiny_release / inside
    before = sorted(p.name for p in tiny_release.rglob("*"))
    for command in (["strength", str(tiny_release), "--keys", str(tiny_release / "secret" / "keys.zarr")],
                    ["attack", "graph", "--release", str(tiny_release)]):
        result = run_cli(*command, "--out", str(out), "--force")
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and "inside" in result.stderr
    assert sorted(p.name for p in tiny_release.rglob("*")) == before


def test_an_out_beside_the_release_files_is_accepted(tiny_release, tmp_path):
    from challenge.places import check_output

    check_output(tmp_path / "report")
    check_output(tiny_release.parent / "report")


@pytest.mark.parametrize("command", ["strength", "graph"])
def test_a_failed_write_leaves_no_out_behind(tiny_release, tmp_path, command):
    out = tmp_path / "mnt" / "out"
    args = (["strength", tiny_release, "--keys", tiny_release / "secret" / "keys.zarr"] if command == "strength"
            else ["attack", "graph", "--release", tiny_release])
    result = in_private_tmpfs(tmp_path, "size=64k", *args, "--out", out)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "No space" in result.stderr
    assert left_behind(result) == []
