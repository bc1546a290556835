"""Format versions: releases of version 1 are still read, audited, scored and reproduced; version 2
binds every keystream to its release, so a seed used twice shares no mask."""

import lzma
import tarfile
from pathlib import Path

import numpy as np
import pytest

from challenge import format as fmt
from challenge.params import Params
from generator.release import generate
from tests.helpers import SEED, run_cli

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


@pytest.mark.parametrize("command", [
    ["audit", "{r}"],
    ["reproduce", "{r}"],
    ["inspect", "{r}", "--keys", "{r}/secret/keys.zarr", "--sheet", "{tmp}/sheet.png"],
])
def test_version_1_release_audits_reproduces_and_inspects(release_v1, tmp_path, command):
    result = run_cli(*(part.format(r=release_v1, tmp=tmp_path) for part in command))
    assert result.returncode == 0, result.stdout + result.stderr


def test_version_1_release_scores(release_v1, tmp_path):
    keys = str(release_v1 / "secret" / "keys.zarr")
    made = run_cli("baseline", "oracle", "--keys", keys, "--release", str(release_v1), "--out", str(tmp_path / "oracle"))
    assert made.returncode == 0, made.stderr
    scored = run_cli("--keys", keys, "--release", str(release_v1), str(tmp_path / "oracle"), "--json", module="commands.verify")
    assert scored.returncode == 0, scored.stderr
    assert '"Max_SSIM": 1.0' in scored.stdout


def test_one_seed_two_releases_share_no_sign_mask(tmp_path, private_set, public_bank):
    """Version 2 derives the stream key from the seed and the release's inputs (FORMAT.md 7.1)."""
    masks = []
    for n_private in (20, 21):
        out = tmp_path / f"n{n_private}"
        generate(out, Params(n_private=n_private, per_image=5), SEED, private_set, public_bank)
        masks.append(fmt.open_key_store(out / "secret" / "keys.zarr").read("encryption/sign_bits"))
    rows = {row.tobytes() for row in masks[0]}
    assert not any(row.tobytes() in rows for row in masks[1])


def test_version_1_shared_masks_when_a_seed_was_reused(tmp_path, private_set, public_bank):
    """The flaw version 2 fixes: version 1 keyed every stream by the seed alone."""
    masks = []
    for n_private in (20, 21):
        out = tmp_path / f"n{n_private}"
        generate(out, Params(n_private=n_private, per_image=5), SEED, private_set, public_bank, format_version=1)
        masks.append(fmt.open_key_store(out / "secret" / "keys.zarr").read("encryption/sign_bits"))
    assert np.array_equal(masks[0][:100], masks[1][:100])
