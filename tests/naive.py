"""Every plain-numpy twin a kernel is tested against, in one place (as stumpy's ``tests/naive.py``).

Each twin follows its definition literally, slow and obvious, and shares no code with the kernel it
checks; the kernels' tests compare the two.  The twins of the graph attack (``spmm_reference``,
``fit_images_reference``) still sit in ``attacks/graph.py``, which another branch is rewriting.
"""

from __future__ import annotations

import math

import numpy as np

from attacks.pool import class_columns, pool_features


# --- challenge.encoding ------------------------------------------------------------------------

def encode_reference(private_images, public_images, domain_affine, private_index, public_index, lam, sign_bits):
    """Plain numpy twin of :func:`challenge.encoding.encode`, slow and obvious."""
    rows = len(lam)
    scale, offset = domain_affine
    images = np.concatenate([private_images[private_index], public_images[public_index]], axis=1)
    weights = lam.astype(np.float64)
    acc = np.zeros((rows, 32 * 32 * 3))
    lam_sum = np.zeros(rows)
    for j in range(lam.shape[1]):
        acc += weights[:, j, None] * images[:, j].reshape(rows, -1)
        lam_sum += weights[:, j]
    out = (acc / scale + offset * lam_sum[:, None]).astype(np.float32)
    signs = np.unpackbits(sign_bits, axis=1, bitorder="little").astype(bool)
    out[signs] = -out[signs]
    return out.reshape(rows, 32, 32, 3)


# --- challenge.keys ----------------------------------------------------------------------------

def lambda_reference(words, k, k_private, c1, c2):
    """Plain-Python twin of :func:`challenge.keys.lambda_kernel`: first accepted try of |N(0,1)| by Box-Muller."""
    for try_words in words:
        z = []
        for i in range((k + 1) // 2):
            u1 = ((int(try_words[2 * i]) >> 11) + 1) * 2.0**-53
            u2 = (int(try_words[2 * i + 1]) >> 11) * 2.0**-53
            radius = math.sqrt(-2.0 * math.log(u1))
            z += [abs(radius * math.cos(2.0 * math.pi * u2)), abs(radius * math.sin(2.0 * math.pi * u2))]
        total = sum(z[:k])
        lam = np.array([z[j] / total for j in range(k)]).astype(np.float32)
        if float(lam.max()) <= c1 and sum(float(v) for v in lam[:k_private]) >= c2:
            return lam
    return None


# --- verifier.submission -----------------------------------------------------------------------

def tally_rows_reference(a: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """Plain numpy twin of :func:`verifier.submission._tally_rows`."""
    a = np.asarray(a, dtype=np.float64)
    finite = np.isfinite(a)
    outside = finite & ((a < lo) | (a > hi))
    counts = np.stack([(~finite).sum(axis=1), outside.sum(axis=1)], axis=1).astype(np.int64)
    extremes = np.stack([np.where(finite, a, np.inf).min(axis=1), np.where(finite, a, -np.inf).max(axis=1)], axis=1)
    return counts, extremes


# --- verifier.metrics and verifier.scoring -----------------------------------------------------

def ssim_reference(a, b) -> np.ndarray:
    """SSIM of a[i] vs b[i] (float (M, 32, 32, 3), [-1, 1]) by the textbook route: pad, filter, crop."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    win, radius = 7, 3
    c1, c2 = (0.01 * 2.0) ** 2, (0.03 * 2.0) ** 2
    cov_norm = 49 / 48

    def window_mean(img):
        # scipy's 'reflect' border (d c b a | a b c d | d c b a) is numpy's 'symmetric' padding.
        padded = np.pad(img, ((0, 0), (radius, radius), (radius, radius), (0, 0)), mode="symmetric")
        windows = np.lib.stride_tricks.sliding_window_view(padded, (win, win), axis=(1, 2))
        return windows.mean(axis=(-2, -1))  # (M, 32, 32, 3): the full-size filtered map

    ux, uy = window_mean(a), window_mean(b)
    vx = cov_norm * (window_mean(a * a) - ux * ux)
    vy = cov_norm * (window_mean(b * b) - uy * uy)
    vxy = cov_norm * (window_mean(a * b) - ux * uy)
    s_map = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    interior = s_map[:, radius:-radius, radius:-radius, :]
    return interior.mean(axis=(1, 2)).mean(axis=1)


def l2_reference(a, b) -> np.ndarray:
    """||a[i] - b[i]||_2 / sqrt(d), d = 32*32*3, for float images (M, 32, 32, 3)."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return np.linalg.norm(diff.reshape(len(diff), -1), axis=1) / np.sqrt(32 * 32 * 3)


def score_pairs_reference(recovered, private_images, private_index) -> tuple[np.ndarray, np.ndarray]:
    """Plain numpy twin of :func:`verifier.metrics.score_pairs` (same contract): an ``engine`` for ``score``."""
    index = np.asarray(private_index)
    rec = np.repeat(np.asarray(recovered, dtype=np.float64), index.shape[1], axis=0)
    truth = private_images[index.ravel()].astype(np.float64) / 127.5 - 1.0
    shape = index.shape
    return ssim_reference(rec, truth).reshape(shape), l2_reference(rec, truth).reshape(shape)


# --- attacks.pool ------------------------------------------------------------------------------

def best_candidates_reference(features: np.ndarray, pool: ImageSet, release: PublicRelease) -> np.ndarray:
    """Twin of :func:`attacks.pool.best_candidates`: one dense product over the whole pool."""
    s = features @ pool_features(pool.images, release).T
    classes = class_columns(pool, release)
    if classes is not None:
        s[~(release.labels > 0)[:, classes]] = -np.inf
    return np.argmax(s, axis=1)
