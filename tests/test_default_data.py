"""The embedded default data (generator/data/, made by data/): loadable, well-formed, image-like, and rebuildable."""

from __future__ import annotations

import hashlib
import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).resolve().parents[1] / "data"  # the script and its README
PRIVATE = DATA.parent / "generator" / "data" / "private.npz"  # the files, shipped as package data
PUBLIC = PRIVATE.with_name("public.npz")

# The documented keep rule for public patches (data/README.md); repeated here, not imported,
# so a change to the script's thresholds has to be a deliberate change to this test too.
MIN_PATCH_STD = 12.0
MIN_PATCH_GRAD = 4.0


def _load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def private() -> dict[str, np.ndarray]:
    return _load(PRIVATE)


@pytest.fixture(scope="module")
def patches() -> np.ndarray:
    return _load(PUBLIC)["patches"]


@pytest.fixture(scope="module")
def script():
    """data/ is not a package: load the generator script by path."""
    spec = importlib.util.spec_from_file_location("make_default_data", DATA / "make_default_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _hcorr(images: np.ndarray) -> np.ndarray:
    """Per-image correlation of horizontally neighbouring pixel values (all channels)."""
    x = images.astype(np.float64)
    a = x[:, :, :-1].reshape(len(x), -1)
    b = x[:, :, 1:].reshape(len(x), -1)
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    return (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))


def _grad_energy(images: np.ndarray) -> np.ndarray:
    """Per-image mean |dx| + |dy| of luma, in 0..255 units."""
    luma = images.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return np.abs(np.diff(luma, axis=1)).mean((1, 2)) + np.abs(np.diff(luma, axis=2)).mean((1, 2))


def test_keys_shapes_dtypes(private, patches):
    assert set(private) == {"images", "labels", "class_names"}
    images, labels, names = private["images"], private["labels"], private["class_names"]
    assert images.dtype == np.uint8 and images.shape == (200, 32, 32, 3)
    assert labels.dtype == np.int64 and labels.shape == (200,)
    assert names.dtype.kind == "U" and names.shape == (10,)
    assert len(set(names.tolist())) == 10 and all(names)
    assert patches.dtype == np.uint8 and patches.shape == (2560, 32, 32, 3)
    assert set(_load(PUBLIC)) == {"patches"}


def test_labels_and_sizes(private, patches):
    labels = private["labels"]
    assert labels.min() >= 0 and labels.max() < len(private["class_names"])
    counts = np.bincount(labels, minlength=10)
    assert (counts == 20).all()
    assert len(labels) >= 100 and (counts > 0).sum() >= 10
    assert len(patches) >= 2000


def test_metric_rejects_noise():
    """The naturalness checks below must be able to fail: uniform noise scores near zero."""
    noise = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    assert np.abs(_hcorr(noise)).max() < 0.2
    flat = np.full((1, 32, 32, 3), 128, np.uint8)
    assert _grad_energy(flat)[0] < MIN_PATCH_GRAD


def test_private_images_look_natural(private):
    images = private["images"]
    corr = _hcorr(images)
    assert corr.mean() > 0.85, corr.mean()
    assert corr.min() > 0.7, corr.min()  # stripes / checkerboards are the lowest, ~0.79
    assert images.reshape(len(images), -1).std(1).min() > 10  # an object, not a blank frame
    assert _grad_energy(images).min() > 2


def test_patches_look_natural_and_none_flat(patches):
    corr = _hcorr(patches)
    assert corr.mean() > 0.85, corr.mean()
    assert corr.min() > 0.7, corr.min()
    assert patches.reshape(len(patches), -1).std(1).min() >= MIN_PATCH_STD
    assert _grad_energy(patches).min() >= MIN_PATCH_GRAD


def test_no_duplicates(private, patches):
    both = np.concatenate([private["images"], patches]).reshape(-1, 32 * 32 * 3)
    assert len(np.unique(both, axis=0)) == len(both)


def test_files_are_small():
    assert PRIVATE.stat().st_size + PUBLIC.stat().st_size < 10 * 1024 * 1024


def test_readme_hashes_match_files():
    """The SHA-256 in data/README.md must name the shipped bytes (catches a stale README)."""
    readme = (DATA / "README.md").read_text()
    for path in (PRIVATE, PUBLIC):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert re.search(rf"\b{digest}\b.*{re.escape(path.name)}", readme), path.name


def test_regenerates_identically(script, private, patches):
    images, labels, names = script.make_private()
    for got, want in ((images, private["images"]), (labels, private["labels"]), (names, private["class_names"])):
        assert got.dtype == want.dtype and got.shape == want.shape
        assert got.tobytes() == want.tobytes()
    rebuilt = script.make_public()
    assert rebuilt.dtype == patches.dtype and rebuilt.shape == patches.shape
    assert rebuilt.tobytes() == patches.tobytes()


def test_keep_rule_matches_script(script):
    """The script's patch filter is the documented one."""
    assert (script.MIN_PATCH_STD, script.MIN_PATCH_GRAD) == (MIN_PATCH_STD, MIN_PATCH_GRAD)
    flat = np.full((32, 32, 3), 90, np.uint8)
    assert not script.patch_is_textured(flat)
    stripes = flat.copy()
    stripes[:, ::4] = 200
    assert script.patch_is_textured(stripes)
