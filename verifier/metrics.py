"""Exact, fast image-similarity metrics used to score InstaHide recoveries.

Images are NHWC arrays of one shape (H, W, C) with C = 1 (grey) or 3 (RGB), on the [-1, 1] scale
(a uint8 pixel ``u`` maps to ``u / 127.5 - 1``).  The shape is taken from the arrays; nothing
assumes 32x32x3.  Everything is computed in float64.

SSIM
    The mean structural similarity of Wang et al. [1]_, exactly as scikit-image [2]_ computes it
    with ``structural_similarity(a, b, win_size=7, gaussian_weights=False,
    use_sample_covariance=True, K1=0.01, K2=0.03, data_range=2.0)``, given ``channel_axis=-1`` for
    colour and, for grey, the 2-D images ``a[..., 0]``, ``b[..., 0]`` without ``channel_axis``
    (scikit-image gives both calls the same value on a one-channel image).  Per channel, with
    N = 7*7 = 49, local statistics are taken over a 7x7 uniform window (scipy ``uniform_filter``
    semantics: centred, border mode ``'reflect'``)::

        ux, uy    window means of x and y
        vx  = N/(N-1) * (mean(x*x) - ux*ux)      sample variances, N/(N-1) = 49/48
        vy  = N/(N-1) * (mean(y*y) - uy*uy)
        vxy = N/(N-1) * (mean(x*y) - ux*uy)      sample covariance
        C1 = (0.01 * 2.0)**2,  C2 = (0.03 * 2.0)**2
        S  = (2*ux*uy + C1) * (2*vxy + C2) / ((ux**2 + uy**2 + C1) * (vx + vy + C2))

    A channel scores the mean of S over the interior (H-6) x (W-6) pixels (3 pixels, the window
    radius, are cropped from every border: 26x26 at 32x32, 22x22 at 28x28, the single centre pixel
    at 7x7); SSIM is the mean of the C channel scores.  The window needs H >= 7 and W >= 7:
    smaller images are refused (scikit-image refuses them too, "win_size exceeds image extent").

    No padding is needed: every window centred on the interior lies wholly inside the image (the
    one centred on row 3 covers rows 0..6, the one on row H-4 rows H-7..H-1), so the border mode
    never reaches the averaged pixels.  The kernel therefore computes only the interior, from
    window sums sx = N*ux, sy, sxx, syy, sxy.  Multiplying 2*ux*uy + C1 and ux**2 + uy**2 + C1 by
    N**2, and 2*vxy + C2 and vx + vy + C2 by N*(N-1) (the factors cancel in S), gives the form it
    evaluates, with a single division::

        S = (2 sx sy + N^2 C1) (2 (N sxy - sx sy) + N(N-1) C2)
            / ((sx^2 + sy^2 + N^2 C1) (N (sxx + syy) - (sx^2 + sy^2) + N(N-1) C2))

    sxx + syy is accumulated as one window sum of x*x + y*y.  The form is algebraically identical;
    only rounding differs, and the tests find the kernel within 1e-12 of scikit-image at every
    shape they try (they demand 1e-6).  Identical images score exactly 1.  scikit-image works in
    float32 when given float32 images; this module casts to float64 first, so it matches
    scikit-image on the float64 casts.

L2
    Root mean square difference on the [-1, 1] scale: ``||x - y||_2 / sqrt(d)``, d = H*W*C.  It
    needs no window: ``l2`` takes any H, W >= 1.

Inputs are used as given: values outside [-1, 1] are neither rejected nor clipped; NaN and inf are
refused.  Each pair is computed by one thread in a fixed order, so the scores are the same to the
last bit whatever the thread count.

References
----------
.. [1] Z. Wang, A. C. Bovik, H. R. Sheikh, E. P. Simoncelli (2004). Image quality assessment:
   from error visibility to structural similarity. IEEE Trans. Image Processing 13(4), 600-612.
   doi:10.1109/TIP.2003.819861
.. [2] scikit-image, ``skimage.metrics.structural_similarity``,
   https://scikit-image.org/docs/stable/api/skimage.metrics.html#skimage.metrics.structural_similarity
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit, prange, types
from numba.extending import overload

__all__ = ["DATA_RANGE", "K1", "K2", "WIN_SIZE", "l2", "score_pairs", "ssim"]

WIN_SIZE = 7
DATA_RANGE = 2.0
K1 = 0.01
K2 = 0.03

_RADIUS = (WIN_SIZE - 1) // 2
_NP = WIN_SIZE * WIN_SIZE
# Constants of the division-free form (see module docstring).
_C1N = _NP * _NP * (K1 * DATA_RANGE) ** 2
_C2N = _NP * (_NP - 1) * (K2 * DATA_RANGE) ** 2
_BLOCK = 8  # float64 lanes per 64-byte vector and cache line: S-map lanes are computed in whole
# vectors (no scalar remainder loop) and scratch rows start on cache lines


# ----------------------------------------------------------------------------------------------
# Kernels.  An image is handled as H rows of W*C lanes (W pixels x C channels, interleaved, as
# stored), so every inner loop runs over independent lanes and vectorises without reordering any
# floating-point sum (no fastmath).  Sizes come from the arrays, so one compilation serves every
# shape.  A neighbour k pixels to the right (same channel: k*C lanes on) is read through a view
# that starts k*C lanes later; the views are made once per thread (numba's slicing costs more
# than a short loop) and every index is a loop variable, which LLVM sees as non-negative: numba's
# negative-index handling then vanishes and the loops vectorise.
# A pair is scored in one pass down its rows, so that its scratch is a few rows, in the core's
# caches at any image size: as a row of y enters the 7-row window it is taken to float64 into a
# ring of the last 8 rows (read again as it leaves), and the same loop updates the L2 partials and
# the window sums.  NaN and inf need no pass of their own: they make L2 non-finite, and only then
# are they counted.  Scratch rows start on 64-byte lines, so that a vector load at an aligned lane
# touches one cache line, not two.
# error_model="numpy" only drops Python's ZeroDivisionError check, which blocks vectorising the
# one division; no lane's denominator can be zero (its factors are >= the scaled C1 and C2).

_RING = WIN_SIZE + 1  # rows of y kept as float64: the window's 7 and the one entering it


def _centered(v):
    """A pixel of y as float64 on the [-1, 1] scale (compiled by the overload below)."""


@overload(_centered)
def _centered_overload(v):
    if isinstance(v, types.Integer):  # uint8 u: u / 127.5 - 1, the value challenge.domain's table holds
        return lambda v: np.float64(v) / 127.5 - 1.0
    return lambda v: np.float64(v)


@njit(cache=True)
def _aligned_zeros(rows, cols):
    """Zeroed float64 (rows, cols rounded up to whole vectors), each row starting on a 64-byte line."""
    cols = -(-cols // _BLOCK) * _BLOCK
    raw = np.zeros(rows * cols + _BLOCK)
    start = (-(raw.ctypes.data // 8)) % _BLOCK
    return raw[start:start + rows * cols].reshape(rows, cols)


@njit(cache=True)
def _new_work(lanes, channels):
    """One thread's scratch for images of rows of lanes = W*C values.

    Returns (ring, cur, (flat, ahead), pair, taps, acc, sq).  ring holds the last rows of y, as
    float64.  For the fields f = x, y, x*x + y*y, x*y (only x*x + y*y is needed, not the two
    squares apart), cur[f] holds the vertical 7-row window sums of the current interior row, each
    field followed by zeros; flat is cur end to end and ahead the same C lanes on, so pair = flat
    + ahead holds the sums of two horizontal neighbours of the same channel.  taps holds, per
    field, the four views whose sum at lane q is the 7x7 window sum of interior lane q: pair[q],
    pair[q + 2C], pair[q + 4C], cur[q + 6C].  acc holds per-lane running sums of the S map
    (padded to whole vectors; the padding lanes compute from finite values and are never summed),
    sq those of the squared differences.
    """
    c = channels
    cur = _aligned_zeros(4, lanes + _BLOCK)  # a field's lanes, then zeros: padding lanes read on
    room = cur.shape[1]
    flat = cur.reshape(4 * room)
    pair = _aligned_zeros(1, 4 * room)[0]
    taps = [(pair[f * room:], pair[f * room + 2 * c:], pair[f * room + 4 * c:], flat[f * room + 6 * c:])
            for f in range(4)]
    return (_aligned_zeros(_RING, lanes), cur, (flat, flat[c:]), pair, (taps[0], taps[1], taps[2], taps[3]),
            _aligned_zeros(1, max(0, lanes - 2 * _RADIUS * c))[0], _aligned_zeros(1, lanes)[0])


@njit(cache=True, error_model="numpy")
def _scores(x, y, work, channels, with_ssim):
    """(SSIM, L2) of two (rows x lanes) images: x float32 or float64, y the same or uint8 pixels.

    x's values are taken to float64 as they are read, y's by _centered.  SSIM is NaN unless
    with_ssim.  One function, its views unpacked once: a call or an unpacking per row would cost
    more than a row's work (numba counts references to every array it passes).
    """
    ring, cur, (flat, ahead), pair, taps, acc, sq = work
    (x0, x2, x4, x6), (y0, y2, y4, y6), (q0, q2, q4, q6), (m0, m2, m4, m6) = taps
    rows, lanes = x.shape
    cur[:, :] = 0.0
    acc[:] = 0.0
    sq[:] = 0.0
    for i in range(rows):
        new = i % _RING  # y's row i enters the ring here ...
        if i < WIN_SIZE:  # ... into the window of interior row 0, image rows 0..6
            for q in range(lanes):
                a = np.float64(x[i, q])
                b = ring[new, q] = _centered(y[i, q])
                d = a - b
                sq[q] += d * d
                cur[0, q] += a
                cur[1, q] += b
                cur[2, q] += a * a + b * b
                cur[3, q] += a * b
        else:  # ... or slides the window down, row i - 7 leaving it
            old = (i - WIN_SIZE) % _RING
            for q in range(lanes):
                a1 = np.float64(x[i, q])
                b1 = ring[new, q] = _centered(y[i, q])
                a0 = np.float64(x[i - WIN_SIZE, q])
                b0 = ring[old, q]
                d = a1 - b1
                sq[q] += d * d
                cur[0, q] += a1 - a0
                cur[1, q] += b1 - b0
                cur[2, q] += (a1 * a1 + b1 * b1) - (a0 * a0 + b0 * b0)
                cur[3, q] += a1 * b1 - a0 * b0
        if not with_ssim or i < WIN_SIZE - 1:
            continue
        for p in range(ahead.size):  # all fields at once; lanes that pair across two fields are
            pair[p] = flat[p] + ahead[p]  # never read
        for q in range(acc.size):  # horizontal 7-pixel sums, then the S map
            sx = x0[q] + x2[q] + x4[q] + x6[q]
            sy = y0[q] + y2[q] + y4[q] + y6[q]
            ssq = q0[q] + q2[q] + q4[q] + q6[q]
            sxy = m0[q] + m2[q] + m4[q] + m6[q]
            t = sx * sy
            xx = sx * sx
            yy = sy * sy
            num = (2.0 * t + _C1N) * (2.0 * (_NP * sxy - t) + _C2N)
            den = (xx + yy + _C1N) * ((_NP * ssq - (xx + yy)) + _C2N)
            acc[q] += num / den
    s = 0.0
    for q in range(lanes):
        s += sq[q]
    l2 = np.sqrt(s / (rows * lanes))
    if not with_ssim:
        return np.nan, l2
    out_rows = rows - 2 * _RADIUS
    out_cols = lanes // channels - 2 * _RADIUS  # lanes past out_cols * C pad acc to whole vectors
    total = 0.0
    for c in range(channels):  # mean per channel, then over channels, as scikit-image does
        s = 0.0
        for j in range(out_cols):
            s += acc[channels * j + c]
        total += s / (out_rows * out_cols)
    return total / channels, l2


@njit(cache=True)
def _count_nonfinite(x):
    """How many of an image's values are NaN or inf.

    Counted only for a pair whose L2 is not finite: a NaN or inf in either image makes its sum of
    squared differences NaN or inf, so a finite L2 shows both images finite.
    """
    bad = 0
    for i in range(x.shape[0]):
        for q in range(x.shape[1]):
            bad += not np.isfinite(x[i, q])
    return bad


@njit(cache=True, parallel=True, error_model="numpy")
def _score_kernel(rec, priv, index, channels, nchunks):
    """SSIM and L2 of rec[b] against priv[index[b, k]] for all (b, k); parallel over pairs.

    Images are (rows, W*C) planes.  Also returns, per recovered image, its count of non-finite
    values (scores then meaningless).
    """
    nrec, m = index.shape
    npairs = nrec * m
    out_ssim = np.empty(npairs)
    out_l2 = np.empty(npairs)
    nonfinite = np.zeros(nrec, dtype=np.int64)
    nchunks = max(1, min(npairs, nchunks))
    for c in prange(nchunks):
        work = _new_work(rec.shape[2], channels)
        for p in range(c * npairs // nchunks, (c + 1) * npairs // nchunks):
            b = p // m
            out_ssim[p], out_l2[p] = _scores(rec[b], priv[index[b, p - b * m]], work, channels, True)
            if not np.isfinite(out_l2[p]):  # every pair of b counts the same (private images are finite)
                nonfinite[b] = _count_nonfinite(rec[b])
    return out_ssim.reshape(nrec, m), out_l2.reshape(nrec, m), nonfinite


@njit(cache=True, parallel=True, error_model="numpy")
def _pairs_kernel(a, b, channels, with_ssim, nchunks):
    """SSIM (NaN unless with_ssim) and L2 of a[p] against b[p]; parallel over pairs.

    Images are (rows, W*C) planes.  Also returns, per pair, the count of non-finite values in a[p]
    and in b[p].
    """
    npairs = a.shape[0]
    out_ssim = np.empty(npairs)
    out_l2 = np.empty(npairs)
    nonfinite = np.zeros((2, npairs), dtype=np.int64)
    nchunks = max(1, min(npairs, nchunks))
    for c in prange(nchunks):
        work = _new_work(a.shape[2], channels)
        for p in range(c * npairs // nchunks, (c + 1) * npairs // nchunks):
            out_ssim[p], out_l2[p] = _scores(a[p], b[p], work, channels, with_ssim)
            if not np.isfinite(out_l2[p]):
                nonfinite[0, p] = _count_nonfinite(a[p])
                nonfinite[1, p] = _count_nonfinite(b[p])
    return out_ssim, out_l2, nonfinite


# ----------------------------------------------------------------------------------------------
# Python API: validate, present each array as C-contiguous (n, H, W*C) planes, call a kernel.


_VALUES_PER_CHUNK = 256 * 32 * 32 * 3  # a millisecond or two of work


def _run(kernel, npairs: int, values: int, *args):
    """Call a kernel with its pairs split in contiguous chunks handed out to threads on demand.

    Dynamic hand-out (chunk size 1 of the prange over chunks) keeps all threads busy when the
    machine is shared; a static split would wait for the slowest thread.  The split changes no
    score: each pair is computed whole by one thread.
    """
    pairs_per_chunk = max(1, _VALUES_PER_CHUNK // values)
    nchunks = max(4 * numba.get_num_threads(), -(-npairs // pairs_per_chunk))
    with numba.parallel_chunksize(1):
        return kernel(*args, nchunks)


def _image_shape(name: str, a: np.ndarray, items: str, window: bool) -> tuple[int, int, int]:
    """The (H, W, C) of a stack of images, checked: C is 1 or 3, and H, W reach the SSIM window."""
    if a.ndim != 4 or a.shape[3] not in (1, 3):
        raise ValueError(
            f"{name} must have shape ({items}, H, W, C) with C = 1 (grey) or 3 (RGB), got {a.shape}"
        )
    height, width, channels = a.shape[1:]
    least = WIN_SIZE if window else 1
    if height < least or width < least:
        why = f"SSIM's {WIN_SIZE}x{WIN_SIZE} window needs" if window else "L2 needs"
        raise ValueError(
            f"{name} holds {height}x{width}x{channels} images (shape {a.shape}): {why} height and "
            f"width >= {least}"
        )
    return height, width, channels


def _same_shape(name_a: str, shape_a: tuple, name_b: str, shape_b: tuple) -> None:
    if shape_a != shape_b:
        differ = [axis for axis, p, q in zip(("height", "width", "channels"), shape_a, shape_b) if p != q]
        raise ValueError(
            f"{name_a} and {name_b} must hold images of one shape, got {'x'.join(map(str, shape_a))} and "
            f"{'x'.join(map(str, shape_b))}: they differ in {' and '.join(differ)}"
        )


def _planes(a: np.ndarray) -> np.ndarray:
    """(n, H, W, C) as C-contiguous (n, H, W*C): one row of interleaved lanes per image row."""
    n, height, width, channels = a.shape
    return np.ascontiguousarray(a).reshape(n, height, width * channels)


def _float_images(name: str, a, items: str, window: bool) -> tuple[np.ndarray, tuple[int, int, int]]:
    a = np.asarray(a)
    if a.dtype not in (np.float32, np.float64):
        raise ValueError(f"{name} must be float32 or float64 on the [-1, 1] scale, got dtype {a.dtype}")
    return a, _image_shape(name, a, items, window)


def _check_finite(name: str, nonfinite: np.ndarray) -> None:
    bad = np.flatnonzero(nonfinite)
    if len(bad):
        raise ValueError(
            f"{name} must be finite, but image {bad[0]} holds {nonfinite[bad[0]]} NaN or inf values "
            f"({len(bad)} such images)"
        )


def _pairs(a, b, with_ssim: bool) -> tuple[np.ndarray, np.ndarray]:
    a, shape_a = _float_images("a", a, "N", with_ssim)
    b, shape_b = _float_images("b", b, "N", with_ssim)
    _same_shape("a", shape_a, "b", shape_b)
    if len(a) != len(b):
        raise ValueError(f"a and b must hold the same number of images, got {len(a)} and {len(b)}")
    if a.dtype != b.dtype:  # mixed float32/float64: cast both, keeping to two kernel specialisations
        a, b = a.astype(np.float64), b.astype(np.float64)
    out_ssim, out_l2, nonfinite = _run(_pairs_kernel, len(a), math.prod(shape_a), _planes(a), _planes(b),
                                       shape_a[2], with_ssim)
    _check_finite("a", nonfinite[0])
    _check_finite("b", nonfinite[1])
    return out_ssim, out_l2


def ssim(a, b) -> np.ndarray:
    """SSIM of a[i] vs b[i] for float images (M, H, W, C), H, W >= 7, on [-1, 1]; returns (M,) float64."""
    return _pairs(a, b, True)[0]


def l2(a, b) -> np.ndarray:
    """RMS difference of a[i] vs b[i] for float images (M, H, W, C) on [-1, 1]; returns (M,) float64."""
    return _pairs(a, b, False)[1]


def score_pairs(recovered, private_images, private_index) -> tuple[np.ndarray, np.ndarray]:
    """SSIM and L2 of each recovered image against the private images it is to be compared with.

    recovered : float32/float64 (B, H, W, C) on the [-1, 1] scale; C = 1 or 3, H, W >= 7.
    private_images : uint8 (n, H, W, C), the same image shape; pixel u means u / 127.5 - 1.
    private_index : integer (B, m); row b lists the m private images to compare recovered[b] with.
    Returns (ssim, l2), float64 arrays of shape (B, m): [b, k] scores recovered[b] against
    private_images[private_index[b, k]].
    """
    rec, shape = _float_images("recovered", recovered, "B", True)
    priv = np.asarray(private_images)
    if priv.dtype != np.uint8:
        raise ValueError(f"private_images must be uint8, got dtype {priv.dtype}")
    _same_shape("recovered", shape, "private_images", _image_shape("private_images", priv, "n", True))
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
    rec = _planes(rec)
    index = np.ascontiguousarray(index, dtype=np.int64)
    out_ssim, out_l2, nonfinite = _run(_score_kernel, index.size, math.prod(shape), rec, _planes(priv), index,
                                       shape[2])
    if index.shape[1] == 0:  # no pairs, so the kernel looked at no image: check them here
        nonfinite = np.count_nonzero(~np.isfinite(rec), axis=(1, 2))
    _check_finite("recovered", nonfinite)
    return out_ssim, out_l2
