"""Format versions: releases of version 1 are still read, audited, scored and reproduced; version 2
binds every keystream to its release, so a seed used twice shares no mask."""

import json
import lzma
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from challenge import format as fmt
from challenge.params import Params
from generator.release import generate
from tests.helpers import SEED, TINY, check_inspect_json, run_cli

FIXTURE = Path(__file__).parent / "data" / "release-v1.tar.xz"
FIXTURE_COMMITMENT = "sha256:ed0f82dd26c0d1283cb6008d38cbd3df2da3d0ceb5f12f26a5108fa36eb1feec"


@pytest.fixture(scope="module")
def release_v1(tmp_path_factory) -> Path:
    """The version-1 release that tests/data/README.md describes (read-only: do not modify)."""
    root = tmp_path_factory.mktemp("v1")
    with lzma.open(FIXTURE) as xz, tarfile.open(fileobj=xz) as tar:
        tar.extractall(root, filter="data")
    return root / "release"


def test_version_1_release_is_read_as_before(release_v1):
    manifest = fmt.read_json(release_v1 / "public" / "manifest.json")
    store = fmt.open_key_store(release_v1 / "secret" / "keys.zarr")
    assert manifest["format_version"] == store.version == 1
    assert fmt.commitment(store) == manifest["key_store"]["commitment"] == FIXTURE_COMMITMENT


def test_version_1_release_audits_reproduces_and_inspects(release_v1, tmp_path):
    keys = release_v1 / "secret" / "keys.zarr"
    audited = run_cli("audit", str(release_v1), "--json")
    assert audited.returncode == 0, audited.stdout + audited.stderr
    report = json.loads(audited.stdout)
    assert report["sound"] and report["n_encryptions"] == 8 and {c["status"] for c in report["checks"]} == {"ok"}
    reproduced = run_cli("reproduce", str(release_v1), "--json")
    assert reproduced.returncode == 0 and json.loads(reproduced.stdout) == {"identical": True, "differences": []}, \
        reproduced.stdout + reproduced.stderr
    inspected = run_cli("inspect", str(release_v1), "--keys", str(keys), "--sheet", str(tmp_path / "sheet.png"), "--json")
    assert inspected.returncode == 0, inspected.stderr
    info = json.loads(inspected.stdout)
    check_inspect_json({k: v for k, v in info.items() if k != "sheet"}, release_v1 / "public", keys)
    assert info["format_version"] == 1 and info["key_store"]["commitment"] == FIXTURE_COMMITMENT
    assert info["sheet"] == str(tmp_path / "sheet.png")
    with Image.open(tmp_path / "sheet.png") as sheet:
        assert sheet.format == "PNG" and sheet.width > 32 and sheet.height > 32


def test_version_1_release_scores(release_v1, tmp_path):
    keys = str(release_v1 / "secret" / "keys.zarr")
    made = run_cli("baseline", "oracle", "--keys", keys, "--release", str(release_v1), "--out", str(tmp_path / "oracle"))
    assert made.returncode == 0, made.stderr
    scored = run_cli("--keys", keys, "--release", str(release_v1), str(tmp_path / "oracle"), "--json", module="commands.verify")
    assert scored.returncode == 0, scored.stderr
    assert '"Max_SSIM": 1.0' in scored.stdout


def _one_pixel_changed(images):
    changed = images.images.copy()
    changed[0, 0, 0, 0] ^= 1
    return replace(images, images=changed)


@pytest.mark.parametrize("differs", ["parameters", "private data", "public patches", "domain"])
def test_one_seed_two_releases_share_no_sign_mask(tmp_path, private_set, public_bank, differs):
    """Version 2 on derives the stream key from the seed and all the release's inputs (FORMAT.md
    7.1): a seed used again with other parameters, other private images or other patches (one
    pixel apart, so their fingerprints differ) shares no sign row."""
    second = {"parameters": (Params(n_private=21, per_image=5), private_set, public_bank),
              "private data": (TINY, _one_pixel_changed(private_set), public_bank),
              "public patches": (TINY, private_set, _one_pixel_changed(public_bank)),
              "domain": (replace(TINY, domain="positive"), private_set, public_bank)}[differs]
    masks, contexts = [], []
    for i, (params, private, public) in enumerate([(TINY, private_set, public_bank), second]):
        generate(tmp_path / str(i), params, seed=SEED, private=private, public=public)
        store = fmt.open_key_store(tmp_path / str(i) / "secret" / "keys.zarr")
        masks.append(store.read("encryption/sign_bits"))
        contexts.append(store.attrs["stream_context"])
    assert contexts[0] != contexts[1]
    rows = {row.tobytes() for row in masks[0]}
    assert not any(row.tobytes() in rows for row in masks[1])


def test_version_1_shared_masks_when_a_seed_was_reused(tmp_path, private_set, public_bank):
    """The flaw version 2 fixes: version 1 keyed every stream by the seed alone."""
    masks = []
    for n_private in (20, 21):
        out = tmp_path / f"n{n_private}"
        generate(out, Params(n_private=n_private, per_image=5), seed=SEED, private=private_set, public=public_bank,
                 format_version=1)
        masks.append(fmt.open_key_store(out / "secret" / "keys.zarr").read("encryption/sign_bits"))
    assert np.array_equal(masks[0][:100], masks[1][:100])
