"""The InstaHide encoder: mix with lambda, then flip signs, for a batch of rows.

For a pixel domain with value ``u / scale + offset`` (:func:`challenge.domain.affine`) the mix
``sum_j lam_j * (u_j / scale + offset)`` is computed as

    acc = 0;  acc += lam[j] * u_j   for j = 0 .. k-1 (private images first), in float64
    mix = acc / scale + offset * (lam[0] + ... + lam[k-1])
    out = float32(mix), negated where the sign bit is 1

``encode`` (numba, parallel over tiles of 2048 values, so that even one large image uses every
thread) and its plain-numpy twin ``tests/naive.py::encode_reference`` produce the same bytes.  The
products lam_j * u_j of a float32 and a byte are exact in float64, so ``acc += lam_j * u_j`` may be
one fused multiply-add (one rounding either way) and the result does not depend on vector width;
no fastmath, because the order of operations is part of the format.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic

from challenge.geometry import image_values, sign_bytes

__all__ = ["encode"]

_TILE = 2048  # values of one row mixed at a time: the float64 accumulator (16 KiB) stays in L1 at any image size
_TILES_PER_TASK = 8  # tiles per parallel task (one accumulator each); prange splits the tasks evenly among threads


@intrinsic
def _fma(typingctx, a, b, c):
    """``a * b + c`` rounded once.  Here ``a * b`` is lam_j * u_j, exact in float64, so the result is
    bit for bit the format's ``c + a * b`` (one rounding either way), in one instruction instead of two."""
    def codegen(context, builder, signature, args):
        return builder.fma(*args)
    return types.float64(types.float64, types.float64, types.float64), codegen


@njit(cache=True, inline="always")
def _term(private_images, public_images, private_index, public_index, lam, r, j, start, n):
    """Weight and tile of term j of row r.  Past the last term (a pass's padding) the weight is +0: it
    adds +0 to an accumulator that is never -0 (it starts at +0, and a sum rounded to nearest is -0 only
    if both addends are), so the accumulator keeps its bits."""
    k, k_private = lam.shape[1], private_index.shape[1]
    weight = np.float64(lam[r, j]) if j < k else 0.0
    j = j if j < k else 0
    if j < k_private:
        return weight, private_images[private_index[r, j], start : start + n]
    return weight, public_images[public_index[r, j - k_private], start : start + n]


@njit(cache=True, inline="always")
def _plus_terms(acc, wa, ua, wb, ub, wc, uc):
    """``((acc + wa ua) + wb ub) + wc uc``, rounded after each term as the format's sum is."""
    return _fma(wc, np.float64(uc), _fma(wb, np.float64(ub), _fma(wa, np.float64(ua), acc)))


@njit(cache=True, parallel=True)
def _encode_kernel(private_images, public_images, scale, offset, private_index, public_index, lam, sign_bits, out):
    k = lam.shape[1]
    values = out.shape[1]
    tiles = (values + _TILE - 1) // _TILE
    tasks = (out.shape[0] * tiles + _TILES_PER_TASK - 1) // _TILES_PER_TASK
    out_bits = out.view(np.uint32)
    passes = (k + 2) // 3  # three images per pass over the accumulator: fewer passes, three memory streams at once
    for task in prange(tasks):
        acc = np.empty(_TILE)
        for item in range(task * _TILES_PER_TASK, min(out.shape[0] * tiles, (task + 1) * _TILES_PER_TASK)):
            r, start = item // tiles, item % tiles * _TILE
            n = min(_TILE, values - start)
            lam_sum = 0.0
            for j in range(k):
                lam_sum += np.float64(lam[r, j])
            shift = offset * lam_sum
            tile = out[r, start : start + n]
            for p in range(passes):  # terms 3p, 3p+1, 3p+2 in order: acc += lam_j * u_j from acc = 0, rounded at each term
                wa, a = _term(private_images, public_images, private_index, public_index, lam, r, 3 * p, start, n)
                wb, b = _term(private_images, public_images, private_index, public_index, lam, r, 3 * p + 1, start, n)
                wc, c = _term(private_images, public_images, private_index, public_index, lam, r, 3 * p + 2, start, n)
                if p < passes - 1:
                    for t in range(n):
                        acc[t] = _plus_terms(acc[t] if p > 0 else 0.0, wa, a[t], wb, b[t], wc, c[t])
                else:  # the last pass, fused with the scaling: a division, as the format says
                    for t in range(n):
                        mix = _plus_terms(acc[t] if p > 0 else 0.0, wa, a[t], wb, b[t], wc, c[t])
                        tile[t] = np.float32(mix / scale + shift)
            bits = out_bits[r, start : start + n]  # a sign flip is an XOR of the top bit: the same bytes as -x
            signs = sign_bits[r, start >> 3 :]  # _TILE is a multiple of 8: a tile starts on a sign byte
            for w in range(n >> 6):  # 64 values' signs in one little-endian word, shifted lane by lane
                word = np.uint64(0)
                for i in range(8):
                    word |= np.uint64(signs[8 * w + i]) << np.uint64(8 * i)
                for i in range(64):
                    bits[64 * w + i] ^= np.uint32(word >> np.uint64(i)) << np.uint32(31)
            for t in range(n & ~63, n):
                bits[t] ^= np.uint32((signs[t >> 3] >> (t & 7)) & 1) << np.uint32(31)


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
