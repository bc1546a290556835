"""The InstaHide encoder: mix with lambda, then flip signs, for a batch of rows.

For a pixel domain with value ``u / scale + offset`` (:func:`challenge.domain.affine`) the mix
``sum_j lam_j * (u_j / scale + offset)`` is computed as

    acc = 0;  acc += lam[j] * u_j   for j = 0 .. k-1 (private images first), in float64
    mix = acc / scale + offset * (lam[0] + ... + lam[k-1])
    out = float32(mix), negated where the sign bit is 1

``encode`` (numba, parallel over rows) and its plain-numpy twin ``tests/naive.py::encode_reference``
produce the same bytes.  The products lam_j * u_j of a float32 and a byte are exact in float64, so the sum does not
depend on vector width; no fastmath, because the order of operations is part of the format.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from challenge.geometry import IMAGE_SHAPE, IMAGE_VALUES

__all__ = ["encode"]


@njit(cache=True, parallel=True)
def _encode_kernel(private_images, public_images, scale, offset, private_index, public_index, lam, sign_bits, out):
    k = lam.shape[1]
    k_private = private_index.shape[1]
    pixels = out.shape[1]
    for r in prange(out.shape[0]):
        lam_sum = 0.0
        for j in range(k):
            lam_sum += np.float64(lam[r, j])
        shift = offset * lam_sum
        acc = np.empty(pixels)
        for j in range(k):
            weight = np.float64(lam[r, j])
            if j < k_private:
                image = private_images[private_index[r, j]]
            else:
                image = public_images[public_index[r, j - k_private]]
            if j == 0:
                for t in range(pixels):
                    acc[t] = weight * np.float64(image[t])
            elif j < k - 1:
                for t in range(pixels):
                    acc[t] += weight * np.float64(image[t])
            else:  # the last term, fused with scaling and the sign flip: one pass less over acc
                for b in range(pixels // 8):
                    byte = sign_bits[r, b]
                    for i in range(8):
                        t = 8 * b + i
                        mix = (acc[t] + weight * np.float64(image[t])) / scale + shift
                        out[r, t] = np.float32(mix) * np.float32(1 - 2 * ((byte >> i) & 1))


def _flat(images: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(images).reshape(len(images), IMAGE_VALUES)  # also for an empty table


def encode(private_images, public_images, domain_affine, *, private_index, public_index, lam, sign_bits, out=None):
    """Encrypt rows: float32 (B, 32, 32, 3).  The per-row keys are taken by keyword: four arrays of
    the same length whose order no caller should have to remember.

    private_images, public_images : uint8 (n, 32, 32, 3) tables that the indices point into.
    domain_affine : (scale, offset) of the pixel domain.
    private_index (B, k_private), public_index (B, k_public) : int32 rows of those tables.
    lam : float32 (B, k); sign_bits : uint8 (B, 384), all zero for Mixup.
    """
    rows = len(lam)
    if out is None:
        out = np.empty((rows, *IMAGE_SHAPE), np.float32)
    scale, offset = domain_affine
    _encode_kernel(
        _flat(private_images), _flat(public_images), float(scale), float(offset),
        private_index, public_index, lam, sign_bits, out.reshape(rows, -1),
    )
    return out
