"""The pool attack: when the private images come from a set the attacker can obtain (CIFAR-10
itself, or the embedded demo data that ships with this tool), each encryption is matched against
every candidate of that pool and the best candidate is submitted.

The similarity is sign-invariant: the correlation of the pixel differences of |encryption| with
those of |candidate| (x itself in mixup, which has no mask); see :func:`attacks.graph.gradients`
for why differences.  When the pool names the release's classes, a candidate whose class has no
weight in the encryption's ``label.npy`` row is ruled out.  The pool is streamed in blocks of
``rows`` candidates, one BLAS product per block, so 60,000 candidates need no more memory than the
encryptions' features and one block.
"""

from __future__ import annotations

import numpy as np

from attacks.graph import gradients, unit_rows
from attacks.public import PublicRelease, magnitudes
from challenge.domain import affine
from challenge.errors import UsageError
from challenge.imageset import ImageSet

__all__ = ["pool_features", "best_candidates", "pool_attack"]


def pool_features(images: np.ndarray, release: PublicRelease) -> np.ndarray:
    """uint8 candidates (B, H, W, C) -> the features an encryption of them is compared in."""
    scale, offset = affine(release.params.domain)
    values = images.astype(np.float32) / np.float32(scale) + np.float32(offset)
    return unit_rows(gradients(magnitudes(values, release.params)))


def _shape_text(shape) -> str:
    """(H, W, C) as people write it: 28x28x1."""
    return "x".join(str(int(d)) for d in shape)


def class_columns(pool: ImageSet, release: PublicRelease) -> np.ndarray | None:
    """Per candidate, its label column in the release, or None when the pool's classes are not the release's."""
    names = release.manifest.class_names or []
    if not names or list(pool.class_names) != list(names):
        return None
    return pool.labels


def best_candidates(features: np.ndarray, pool: ImageSet, release: PublicRelease, *, rows: int = 4096,
                    progress=None) -> tuple[np.ndarray, np.ndarray]:
    """Per encryption, the index of its most similar candidate and that similarity.

    Ties go to the lower index, so block size and thread count do not change the answer.
    """
    classes = class_columns(pool, release)
    allowed = release.labels > 0
    best = np.full(len(features), -np.inf, np.float32)
    choice = np.zeros(len(features), np.int64)
    for a in range(0, len(pool), rows):
        b = min(a + rows, len(pool))
        s = features @ pool_features(pool.images[a:b], release).T
        if classes is not None:
            s[~allowed[:, classes[a:b]]] = -np.inf
        top = np.argmax(s, axis=1)
        value = s[np.arange(len(s)), top]
        better = value > best
        best[better], choice[better] = value[better], a + top[better]
        if progress is not None:
            progress(b - a)
    return choice, best


def pool_attack(release: PublicRelease, pool: ImageSet, rows: int = 4096, progress=None) -> tuple[np.ndarray, np.ndarray]:
    """Match each encryption to its most similar image of a pool the attacker holds.

    Parameters
    ----------
    release : PublicRelease
        From :func:`attacks.open_public`.
    pool : ImageSet
        The candidate images, at the release's image shape (e.g. the data set the private images
        may come from).
    rows : int, optional
        Rows compared at a time: bounds memory, never changes the answer.
    progress : callable, optional
        Told how many candidates were just compared (a progress bar's advance).

    Returns
    -------
    choice : ndarray of int64
        (N,): each encryption's best candidate; submit ``pool.images[choice]``.
    similarity : ndarray of float32
        (N,): its cosine similarity.

    Raises
    ------
    UsageError
        If the pool's images are not the release's shape.
    """
    if pool.images.shape[1:] != release.image_shape:
        raise UsageError(f"the pool's images are {_shape_text(pool.images.shape[1:])} and the release's "
                         f"{_shape_text(release.image_shape)}; give a pool of the release's image shape")
    features = np.concatenate([unit_rows(gradients(magnitudes(block, release.params)))
                               for block in release.encryption_blocks(rows)])
    return best_candidates(features, pool, release, rows=rows, progress=progress)
