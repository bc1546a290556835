"""Small public releases of any image shape, made directly in numpy: private images mixed with
lambdas and public patches, signs flipped at random, written as a release's public files.

They let the attacks and baselines be tested at shapes other than 32x32x3 without the generator.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from challenge import format as fmt
from challenge.domain import affine
from challenge.manifest import FORMAT_NAME
from challenge.params import Params

SHAPES = [(32, 32, 3), (28, 28, 1), (9, 11, 3)]  # the default, MNIST's, and an odd colour one


@dataclass
class Synthetic:
    """The ground truth of a synthetic release (what the key store would hold)."""

    path: Path
    params: Params
    private: np.ndarray  # uint8 (n_private, H, W, C)
    index: np.ndarray  # int (N, k_private): each encryption's private images
    lam: np.ndarray  # float64 (N, k): private lambdas first
    encryptions: np.ndarray  # float32 (N, H, W, C)


def _pairs(rng, n_private: int, per_image: int) -> np.ndarray:
    """(N, 2) distinct private images per row, each image exactly ``2 * per_image`` times."""
    first = np.repeat(np.arange(n_private), per_image)
    second = rng.permutation(first)
    while np.any(same := np.flatnonzero(first == second)):
        swap = rng.integers(0, len(first), len(same))
        second[same], second[swap] = second[swap], second[same].copy()
    return np.stack([first, second], axis=1)


def _lambdas(rng, n: int, params: Params) -> np.ndarray:
    """(n, k) lambdas drawn as the generator's rule says (not its bytes): |N(0, 1)|^k normalised,
    redrawn while the largest exceeds c1 or the private ones sum to less than c2."""
    lam = np.empty((n, params.k))
    todo = np.arange(n)
    while len(todo):
        draw = np.abs(rng.standard_normal((len(todo), params.k)))
        draw /= draw.sum(axis=1, keepdims=True)
        ok = (draw.max(axis=1) <= params.c1) & (draw[:, : params.k_private].sum(axis=1) >= params.c2)
        lam[todo[ok]] = draw[ok]
        todo = todo[~ok]
    return lam


def synthetic_release(folder: Path, shape: tuple, *, n_private: int = 12, per_image: int = 10, classes: int = 3,
                      domain: str = "positive", one_patch: bool = False, seed: int = 0,
                      private: np.ndarray | None = None, patches: np.ndarray | None = None) -> Synthetic:
    """Write ``folder/public/{manifest.json, label.npy, encryption.npy}`` for a cross release of
    the default parameters (k = 6: 2 private images, 4 public patches) at ``shape``.  The images are random unless given
    (``private`` then sets n_private; private image p is of class p % ``classes``).  With
    ``one_patch`` every public patch is the same image, so |x| is exactly lambda-weighted private
    images plus mu times that patch."""
    rng = np.random.default_rng(seed)
    if private is None:
        private = rng.integers(0, 256, (n_private, *shape), np.uint8)
    if patches is None:
        patches = rng.integers(0, 256, (1 if one_patch else 16, *shape), np.uint8)
    n_private = len(private)
    params = Params(n_private=n_private, per_image=per_image, domain=domain).validate()
    index = _pairs(rng, n_private, per_image)
    n = len(index)
    lam = _lambdas(rng, n, params)
    mixed = np.concatenate([private[index], patches[rng.integers(0, len(patches), (n, params.k_public))]], axis=1)
    scale, offset = affine(domain)
    values = np.einsum("nk,nk...->n...", lam, mixed.astype(np.float64) / scale + offset)
    encryptions = (values * rng.choice([-1.0, 1.0], values.shape)).astype(np.float32)
    labels = np.zeros((n, classes), np.float32)
    for j in range(2):
        np.add.at(labels, (np.arange(n), index[:, j] % classes), lam[:, j].astype(np.float32))
    public = Path(folder) / fmt.PUBLIC_DIR
    public.mkdir(parents=True)
    manifest = {"format": FORMAT_NAME, "format_version": fmt.FORMAT_VERSION, "n_encryptions": n,
                "params": params.to_dict(), "class_names": [f"class {c}" for c in range(classes)]}
    (public / fmt.MANIFEST_FILE).write_text(json.dumps(manifest))
    np.save(public / fmt.LABEL_FILE, labels)
    np.save(public / fmt.ENCRYPTION_FILE, encryptions)
    return Synthetic(Path(folder), params, private, index, lam, encryptions)
