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

from challenge.geometry import image_values, sign_bytes

__all__ = ["encode"]

_TILE = 2048  # values of one row mixed at a time: the float64 accumulator (16 KiB) stays in L1 at any image size


@njit(cache=True, parallel=True)
def _encode_kernel(private_images, public_images, scale, offset, private_index, public_index, lam, sign_bits, out):
    k = lam.shape[1]
    k_private = private_index.shape[1]
    values = out.shape[1]
    for r in prange(out.shape[0]):
        lam_sum = 0.0
        for j in range(k):
            lam_sum += np.float64(lam[r, j])
        shift = offset * lam_sum
        buffer = np.empty(_TILE)
        for start in range(0, values, _TILE):  # _TILE is a multiple of 8: a tile starts on a sign byte
            n = min(_TILE, values - start)
            acc = buffer[:n]
            for j in range(k):
                weight = np.float64(lam[r, j])
                if j < k_private:
                    image = private_images[private_index[r, j], start : start + n]
                else:
                    image = public_images[public_index[r, j - k_private], start : start + n]
                if j == 0:
                    for t in range(n):
                        acc[t] = weight * np.float64(image[t])
                elif j < k - 1:
                    for t in range(n):
                        acc[t] += weight * np.float64(image[t])
                else:  # the last term, fused with scaling and the sign flip: one pass less over acc
                    signs = sign_bits[r, start >> 3 :]
                    tile = out[r, start : start + n]
                    for b in range(n >> 3):
                        byte = signs[b]
                        for i in range(8):
                            t = 8 * b + i
                            mix = (acc[t] + weight * np.float64(image[t])) / scale + shift
                            tile[t] = np.float32(mix) * np.float32(1 - 2 * ((byte >> i) & 1))
                    for t in range(n & ~7, n):  # the values of a last, partly padded sign byte
                        mix = (acc[t] + weight * np.float64(image[t])) / scale + shift
                        tile[t] = np.float32(mix) * np.float32(1 - 2 * ((signs[n >> 3] >> (t & 7)) & 1))


def _flat(images: np.ndarray, values: int) -> np.ndarray:
    return np.ascontiguousarray(images).reshape(len(images), values)  # also for an empty table


def encode(private_images, public_images, domain_affine, *, private_index, public_index, lam, sign_bits, out=None):
    """Encrypt rows: float32 (B, H, W, C), the shape of the private images.  The per-row keys are
    taken by keyword: four arrays of the same length whose order no caller should have to remember.

    private_images, public_images : uint8 (n, H, W, C) tables that the indices point into (the
        public one may be empty).
    domain_affine : (scale, offset) of the pixel domain.
    private_index (B, k_private), public_index (B, k_public) : int32 rows of those tables.
    lam : float32 (B, k); sign_bits : uint8 (B, ceil(H W C / 8)), all zero for Mixup.
    """
    image_shape = private_images.shape[1:]
    values = image_values(image_shape)
    if len(public_images) and public_images.shape[1:] != image_shape:
        raise ValueError(f"public images {public_images.shape[1:]} differ from the private images' shape {image_shape}")
    if sign_bits.shape[1:] != (sign_bytes(image_shape),):
        raise ValueError(f"sign rows of {sign_bits.shape[1:]} bytes, expected {sign_bytes(image_shape)} for {image_shape}")
    rows = len(lam)
    if out is None:
        out = np.empty((rows, *image_shape), np.float32)
    scale, offset = domain_affine
    _encode_kernel(
        _flat(private_images, values), _flat(public_images, values), float(scale), float(offset),
        private_index, public_index, lam, sign_bits, out.reshape(rows, values),
    )
    return out
