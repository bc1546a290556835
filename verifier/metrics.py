"""Exact, fast image-similarity metrics used to score InstaHide recoveries.

All images are 32x32 RGB, NHWC, on the [-1, 1] scale (a uint8 pixel ``u`` maps to
``u / 127.5 - 1``).  Everything is computed in float64.

SSIM
    The mean structural similarity of Wang et al. [1]_, exactly as scikit-image [2]_ computes it
    with ``structural_similarity(a, b, win_size=7, gaussian_weights=False,
    use_sample_covariance=True, K1=0.01, K2=0.03, channel_axis=-1, data_range=2.0)``.  Per
    channel, with N = 7*7 = 49, local statistics are taken over a 7x7 uniform window (scipy
    ``uniform_filter`` semantics: centred, border mode ``'reflect'``)::

        ux, uy    window means of x and y
        vx  = N/(N-1) * (mean(x*x) - ux*ux)      sample variances, N/(N-1) = 49/48
        vy  = N/(N-1) * (mean(y*y) - uy*uy)
        vxy = N/(N-1) * (mean(x*y) - ux*uy)      sample covariance
        C1 = (0.01 * 2.0)**2,  C2 = (0.03 * 2.0)**2
        S  = (2*ux*uy + C1) * (2*vxy + C2) / ((ux**2 + uy**2 + C1) * (vx + vy + C2))

    A channel scores the mean of S over the interior 26x26 pixels (3 pixels, the window radius,
    are cropped from every border); SSIM is the mean of the three channel scores.

    No padding is needed: every window centred on the interior lies wholly inside the image (the
    one centred on row 3 covers rows 0..6, the one on row 28 rows 25..31), so the border mode
    never reaches the averaged pixels.  The kernel therefore computes only the 26x26 interior, from
    window sums sx = N*ux, sy, sxx, syy, sxy.  Multiplying 2*ux*uy + C1 and ux**2 + uy**2 + C1 by
    N**2, and 2*vxy + C2 and vx + vy + C2 by N*(N-1) (the factors cancel in S), gives the form it
    evaluates, with a single division::

        S = (2 sx sy + N^2 C1) (2 (N sxy - sx sy) + N(N-1) C2)
            / ((sx^2 + sy^2 + N^2 C1) (N (sxx + syy) - (sx^2 + sy^2) + N(N-1) C2))

    sxx + syy is accumulated as one window sum of x*x + y*y.  The form is algebraically identical;
    only rounding differs, and the tests find the kernel within 1e-12 of scikit-image (they demand
    1e-6).  Identical images score exactly 1.  scikit-image works in float32 when given float32
    images; this module casts to float64 first, so it matches scikit-image on the float64 casts.

L2
    Root mean square difference on the [-1, 1] scale: ``||x - y||_2 / sqrt(d)``, d = 32*32*3.

Inputs are used as given: values outside [-1, 1] are neither rejected nor clipped.

References
----------
.. [1] Z. Wang, A. C. Bovik, H. R. Sheikh, E. P. Simoncelli (2004). Image quality assessment:
   from error visibility to structural similarity. IEEE Trans. Image Processing 13(4), 600-612.
   doi:10.1109/TIP.2003.819861
.. [2] scikit-image, ``skimage.metrics.structural_similarity``,
   https://scikit-image.org/docs/stable/api/skimage.metrics.html#skimage.metrics.structural_similarity
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from challenge.domain import UINT8_TO_CENTERED
from challenge.geometry import IMAGE_SHAPE, IMAGE_VALUES

WIN_SIZE = 7
DATA_RANGE = 2.0
K1 = 0.01
K2 = 0.03

_ROWS, _COLS, _CH = IMAGE_SHAPE
_LANES = _COLS * _CH  # one image row, channels interleaved
_PAD = (WIN_SIZE - 1) // 2
_OUT = _ROWS - 2 * _PAD  # interior rows (and columns) that are averaged: 26
_NP = WIN_SIZE * WIN_SIZE
_C1 = (K1 * DATA_RANGE) ** 2
_C2 = (K2 * DATA_RANGE) ** 2
# Constants of the division-free form (see module docstring).
_C1N = _NP * _NP * _C1
_C2N = _NP * (_NP - 1) * _C2
_D = float(IMAGE_VALUES)


# ----------------------------------------------------------------------------------------------
# Kernels.  An image is handled as 32 rows of 96 lanes (32 pixels x 3 channels, interleaved, as
# stored), so every inner loop runs over independent lanes and vectorises without reordering any
# floating-point sum (no fastmath).  The first image x is read where it lies (float32 or float64,
# each value taken to float64 as it is read); the second, y, and all scratch live in one flat
# float64 buffer per worker, at the constant offsets below, which lets LLVM prove the loops free
# of aliasing.
# error_model="numpy" only drops Python's ZeroDivisionError check, which blocks vectorising the
# one division; no real lane's denominator can be zero (its factors are >= the scaled C1 and C2).

_FS = 128  # room per window-sum field: 96 lanes, then zeros (read only by the padding lanes)
_SL = 80  # S-map lanes computed per row: the 78 real ones (26 columns x 3) padded to 10 x 8 so
# no scalar remainder loop is needed; lanes 78 and 79 are never summed.
_OFF_Y = 0  # private / second image, 32 x 96
_OFF_CUR = _OFF_Y + _ROWS * _LANES  # vertical 7-row sums of the current row: 4 fields x _FS
_OFF_S2 = _OFF_CUR + 4 * _FS  # pair sums cur[q] + cur[q + 3] (3 = next pixel, same channel)
_OFF_ACC = _OFF_S2 + 4 * _FS  # per-lane running sum of the S map
_OFF_L2 = _OFF_ACC + _FS  # per-lane running sum of squared differences
_WORK = _OFF_L2 + _LANES
# Field order in CUR and S2: sum x, sum y, sum (x*x + y*y), sum x*y.  Only x*x + y*y is needed,
# not the two squares apart, which saves a fifth field.


@njit(cache=True, error_model="numpy")
def _add_s_row(w):
    """Add one interior row of the S map to ACC, from the vertical window sums in CUR."""
    cur, s2, acc = _OFF_CUR, _OFF_S2, _OFF_ACC
    # Horizontal 7-pixel sums (same channel every 3rd lane): s2[q] + s2[q+6] + s2[q+12] + cur[q+18].
    for f in range(4):
        for q in range(_LANES):
            w[s2 + f * _FS + q] = w[cur + f * _FS + q] + w[cur + f * _FS + q + 3]
    for q in range(_SL):
        f, g = s2, cur
        sx = w[f + q] + w[f + q + 6] + w[f + q + 12] + w[g + q + 18]
        f, g = s2 + _FS, cur + _FS
        sy = w[f + q] + w[f + q + 6] + w[f + q + 12] + w[g + q + 18]
        f, g = s2 + 2 * _FS, cur + 2 * _FS
        sq = w[f + q] + w[f + q + 6] + w[f + q + 12] + w[g + q + 18]
        f, g = s2 + 3 * _FS, cur + 3 * _FS
        sxy = w[f + q] + w[f + q + 6] + w[f + q + 12] + w[g + q + 18]
        t = sx * sy
        x2 = sx * sx
        y2 = sy * sy
        num = (2.0 * t + _C1N) * (2.0 * (_NP * sxy - t) + _C2N)
        den = (x2 + y2 + _C1N) * ((_NP * sq - (x2 + y2)) + _C2N)
        w[acc + q] += num / den


@njit(cache=True, error_model="numpy")
def _ssim_work(x, w):
    """Mean SSIM of x (3072 values, float32 or float64) and the float64 image at w[_OFF_Y:]."""
    cur, acc = _OFF_CUR, _OFF_ACC
    for q in range(4 * _FS):
        w[cur + q] = 0.0
    for q in range(_SL):
        w[acc + q] = 0.0
    for k in range(WIN_SIZE):  # window of interior row 0 covers image rows 0..6
        for q in range(_LANES):
            a = np.float64(x[k * _LANES + q])
            b = w[_OFF_Y + k * _LANES + q]
            w[cur + q] += a
            w[cur + _FS + q] += b
            w[cur + 2 * _FS + q] += a * a + b * b
            w[cur + 3 * _FS + q] += a * b
    _add_s_row(w)
    for r in range(1, _OUT):  # slide the window down: add image row r + 6, drop row r - 1
        for q in range(_LANES):
            # Indices written out from loop variables: LLVM then sees them non-negative and
            # vectorises (a precomputed row offset brings back numba's negative-index handling).
            a1 = np.float64(x[(r + WIN_SIZE - 1) * _LANES + q])
            b1 = w[_OFF_Y + (r + WIN_SIZE - 1) * _LANES + q]
            a0 = np.float64(x[(r - 1) * _LANES + q])
            b0 = w[_OFF_Y + (r - 1) * _LANES + q]
            w[cur + q] += a1 - a0
            w[cur + _FS + q] += b1 - b0
            w[cur + 2 * _FS + q] += (a1 * a1 + b1 * b1) - (a0 * a0 + b0 * b0)
            w[cur + 3 * _FS + q] += a1 * b1 - a0 * b0
        _add_s_row(w)
    total = 0.0
    for c in range(_CH):  # mean per channel, then over channels, as scikit-image does
        s = 0.0
        for j in range(_OUT):
            s += w[acc + _CH * j + c]
        total += s / (_OUT * _OUT)
    return total / _CH


@njit(cache=True, error_model="numpy")
def _l2_work(x, w):
    """RMS difference of x and the image at w[_OFF_Y:], summed in per-lane partials."""
    for q in range(_LANES):
        w[_OFF_L2 + q] = 0.0
    for i in range(_ROWS):
        for q in range(_LANES):
            d = np.float64(x[i * _LANES + q]) - w[_OFF_Y + i * _LANES + q]
            w[_OFF_L2 + q] += d * d
    s = 0.0
    for q in range(_LANES):
        s += w[_OFF_L2 + q]
    return np.sqrt(s / _D)


@njit(cache=True)
def _new_work():
    return np.zeros(_WORK)  # field tails stay zero, so the padding lanes compute from finite values


@njit(cache=True)
def _count_nonfinite(x):
    """How many of an image's values are NaN or inf (checked in the kernels, on the way through)."""
    bad = 0
    for i in range(_ROWS * _LANES):
        bad += not np.isfinite(x[i])
    return bad


@njit(cache=True)
def _load_float(w, src):
    """Copy a float image to w[_OFF_Y:] as float64; return its count of NaN and inf values."""
    for i in range(_ROWS * _LANES):
        w[_OFF_Y + i] = src[i]
    return _count_nonfinite(src)


@njit(cache=True)
def _load_u8(w, src, lut):
    """Map a uint8 image to [-1, 1] into w[_OFF_Y:] through lut (bit-identical to u / 127.5 - 1)."""
    for i in range(_ROWS * _LANES):
        w[_OFF_Y + i] = lut[src[i]]


@njit(cache=True, parallel=True, error_model="numpy")
def _score_kernel(rec, priv, index, lut, nchunks):
    """SSIM and L2 of rec[b] against priv[index[b, k]] for all (b, k); parallel over pairs.

    Also returns, per recovered image, its count of non-finite values (scores then meaningless).
    """
    nrec, m = index.shape
    npairs = nrec * m
    out_ssim = np.empty(npairs)
    out_l2 = np.empty(npairs)
    nonfinite = np.zeros(nrec, dtype=np.int64)
    nchunks = max(1, min(npairs, nchunks))
    for c in prange(nchunks):
        w = _new_work()
        last = -1
        for p in range(c * npairs // nchunks, (c + 1) * npairs // nchunks):
            b = p // m
            x = rec[b]
            if b != last:  # consecutive pairs share the recovered image: check it once (a row
                # split between two chunks is counted by both, to the same value)
                nonfinite[b] = _count_nonfinite(x)
                last = b
            _load_u8(w, priv[index[b, p - b * m]], lut)
            out_ssim[p] = _ssim_work(x, w)
            out_l2[p] = _l2_work(x, w)
    return out_ssim.reshape(nrec, m), out_l2.reshape(nrec, m), nonfinite


@njit(cache=True, parallel=True, error_model="numpy")
def _pairs_kernel(a, b, with_ssim, nchunks):
    """SSIM (NaN unless with_ssim) and L2 of a[p] against b[p]; parallel over pairs.

    Also returns, per pair, the count of non-finite values in a[p] and in b[p].
    """
    npairs = a.shape[0]
    out_ssim = np.full(npairs, np.nan)
    out_l2 = np.empty(npairs)
    nonfinite = np.zeros((2, npairs), dtype=np.int64)
    nchunks = max(1, min(npairs, nchunks))
    for c in prange(nchunks):
        w = _new_work()
        for p in range(c * npairs // nchunks, (c + 1) * npairs // nchunks):
            nonfinite[0, p] = _count_nonfinite(a[p])
            nonfinite[1, p] = _load_float(w, b[p])
            if with_ssim:
                out_ssim[p] = _ssim_work(a[p], w)
            out_l2[p] = _l2_work(a[p], w)
    return out_ssim, out_l2, nonfinite


# ----------------------------------------------------------------------------------------------
# Python API: validate, present each array as C-contiguous (n, 3072), call a kernel.


_PAIRS_PER_CHUNK = 256  # a millisecond or two of work


def _run(kernel, npairs: int, *args):
    """Call a kernel with its pairs split in contiguous chunks handed out to threads on demand.

    Dynamic hand-out (chunk size 1 of the prange over chunks) keeps all threads busy when the
    machine is shared; a static split would wait for the slowest thread.
    """
    nchunks = max(4 * numba.get_num_threads(), -(-npairs // _PAIRS_PER_CHUNK))
    with numba.parallel_chunksize(1):
        return kernel(*args, nchunks)


def _float_images(name: str, a) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype not in (np.float32, np.float64):
        raise ValueError(f"{name} must be float32 or float64 on the [-1, 1] scale, got dtype {a.dtype}")
    if a.ndim != 4 or a.shape[1:] != IMAGE_SHAPE:
        raise ValueError(f"{name} must have shape (N, 32, 32, 3), got {a.shape}")
    return np.ascontiguousarray(a).reshape(a.shape[0], _ROWS * _LANES)


def _check_finite(name: str, nonfinite: np.ndarray) -> None:
    bad = np.flatnonzero(nonfinite)
    if len(bad):
        raise ValueError(
            f"{name} must be finite, but image {bad[0]} holds {nonfinite[bad[0]]} NaN or inf values "
            f"({len(bad)} such images)"
        )


def _pairs(a, b, with_ssim: bool) -> tuple[np.ndarray, np.ndarray]:
    a = _float_images("a", a)
    b = _float_images("b", b)
    if a.shape != b.shape:
        raise ValueError(f"a and b must hold the same number of images, got {a.shape[0]} and {b.shape[0]}")
    if a.dtype != b.dtype:  # mixed float32/float64: cast both, keeping to two kernel specialisations
        a, b = a.astype(np.float64), b.astype(np.float64)
    out_ssim, out_l2, nonfinite = _run(_pairs_kernel, a.shape[0], a, b, with_ssim)
    _check_finite("a", nonfinite[0])
    _check_finite("b", nonfinite[1])
    return out_ssim, out_l2


def ssim(a, b) -> np.ndarray:
    """SSIM of a[i] vs b[i] for float images (M, 32, 32, 3) on the [-1, 1] scale; returns (M,) float64."""
    return _pairs(a, b, True)[0]


def l2(a, b) -> np.ndarray:
    """RMS difference of a[i] vs b[i] for float images (M, 32, 32, 3) on [-1, 1]; returns (M,) float64."""
    return _pairs(a, b, False)[1]


def score_pairs(recovered, private_images, private_index) -> tuple[np.ndarray, np.ndarray]:
    """SSIM and L2 of each recovered image against the private images it is to be compared with.

    recovered : float32/float64 (B, 32, 32, 3) on the [-1, 1] scale.
    private_images : uint8 (n, 32, 32, 3); pixel u means u / 127.5 - 1.
    private_index : integer (B, m); row b lists the m private images to compare recovered[b] with.
    Returns (ssim, l2), float64 arrays of shape (B, m): [b, k] scores recovered[b] against
    private_images[private_index[b, k]].
    """
    rec = _float_images("recovered", recovered)
    priv = np.asarray(private_images)
    if priv.dtype != np.uint8:
        raise ValueError(f"private_images must be uint8, got dtype {priv.dtype}")
    if priv.ndim != 4 or priv.shape[1:] != IMAGE_SHAPE:
        raise ValueError(f"private_images must have shape (n, 32, 32, 3), got {priv.shape}")
    index = np.asarray(private_index)
    if index.dtype == np.bool_ or not np.issubdtype(index.dtype, np.integer):
        raise ValueError(f"private_index must be an integer array, got dtype {index.dtype}")
    if index.ndim != 2 or index.shape[0] != rec.shape[0]:
        raise ValueError(
            f"private_index must have shape (B, m) with B = {rec.shape[0]} (one row per recovered image), "
            f"got {index.shape}"
        )
    if index.size and (index.min() < 0 or index.max() >= priv.shape[0]):
        raise ValueError(
            f"private_index values must lie in [0, {priv.shape[0]}) (the private image count), "
            f"got min {index.min()} and max {index.max()}"
        )
    priv = np.ascontiguousarray(priv).reshape(priv.shape[0], _ROWS * _LANES)
    index = np.ascontiguousarray(index, dtype=np.int64)
    out_ssim, out_l2, nonfinite = _run(_score_kernel, index.size, rec, priv, index, UINT8_TO_CENTERED)
    if index.shape[1] == 0:  # no pairs, so the kernel looked at no image: check them here
        nonfinite = np.count_nonzero(~np.isfinite(rec), axis=1)
    _check_finite("recovered", nonfinite)
    return out_ssim, out_l2
