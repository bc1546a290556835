"""``generate`` and ``patches`` on real-format inputs from disk, through the command line."""

import json

import numpy as np

from challenge import format as fmt
from generator.patches import load_patch_bank
from generator.sources import load_private
from tests.helpers import run_cli
from tests.test_patches import make_public


def make_private_npz(path, n=30, classes=3):
    rng = np.random.default_rng(5)
    base = rng.integers(0, 256, (n, 4, 4, 3), dtype=np.uint8)
    images = base.repeat(8, axis=1).repeat(8, axis=2)  # blocky, not noise
    np.savez(path, images=images, labels=np.arange(n) % classes,
             class_names=np.array([f"class{c}" for c in range(classes)]))
    return path


def test_generate_from_npz_private_and_image_folder_public(tmp_path):
    private = make_private_npz(tmp_path / "private.npz")
    make_public(tmp_path / "photos")
    out = tmp_path / "release"
    result = run_cli("generate", "--out", str(out), "--private", str(private), "--public", str(tmp_path / "photos"),
                     "--n-private", "12", "--per-image", "2", "--k", "4", "--balanced")
    assert result.returncode == 0, result.stderr
    manifest = fmt.read_json(out / "public" / "manifest.json")
    assert manifest["sources"]["private"]["fingerprint"] == load_private(private).fingerprint()
    assert manifest["sources"]["public"]["images"] > 2
    assert manifest["class_names"] == ["class0", "class1", "class2"]
    keys = fmt.open_key_store(out / "secret" / "keys.zarr")
    assert np.array_equal(np.bincount(keys.read("private/labels")), [4, 4, 4])


def test_patches_command_then_generate_from_the_bank(tmp_path):
    odd = make_public(tmp_path / "photos")
    bank = tmp_path / "bank.zarr"
    result = run_cli("patches", str(tmp_path / "photos"), "--out", str(bank), "--workers", "1", "--json")
    assert result.returncode == 0, result.stderr
    report, patches = json.loads(result.stdout), load_patch_bank(bank)
    assert report["path"] == str(bank) and report["patches"] == len(patches) > 2
    assert report["unreadable"] == sum(kind in ("truncated", "corrupt") for kind in odd.values())
    again = run_cli("patches", str(tmp_path / "photos"), "--out", str(bank), "--workers", "1")
    assert again.returncode == 0 and f"{len(patches)} patches from {report['files']} images" in again.stdout
    assert np.array_equal(load_patch_bank(bank).images, patches.images)  # the same bank, built again
    out = tmp_path / "release"
    result = run_cli("generate", "--out", str(out), "--public", str(bank), "--n-private", "10",
                     "--per-image", "2", "--k", "4")
    assert result.returncode == 0, result.stderr
    public = fmt.read_json(out / "public" / "manifest.json")["sources"]["public"]
    assert public["fingerprint"] == patches.fingerprint() and public["images"] == len(patches)
    keys = fmt.open_key_store(out / "secret" / "keys.zarr")
    assert np.array_equal(keys.read("public/images"), patches.images[keys.read("public/bank_index")])


def test_bad_sources_are_one_line_errors(tmp_path):
    for args, expected in (
        (["--private", str(tmp_path / "missing")], "missing"),
        (["--public", str(tmp_path / "none.npz")], "none.npz"),
        (["--private", str(make_private_npz(tmp_path / "p.npz", n=8))], "fewer than --n-private"),
    ):
        result = run_cli("generate", "--out", str(tmp_path / "r"), *args)
        assert result.returncode == 2, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and expected in result.stderr
    bad = run_cli("patches", str(tmp_path / "nothing"), "--out", str(tmp_path / "b.zarr"))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
