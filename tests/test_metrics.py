"""The verifier's metrics against scikit-image, a plain numpy reference and direct formulas.

Most tests run at the default 32x32x3; the section "Any image shape" repeats the comparisons at
MNIST's 28x28x1, the smallest 7x7, odd and non-square shapes and 64x64x3.
"""

from __future__ import annotations

import hashlib

import numba
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter, uniform_filter
from skimage.metrics import structural_similarity  # test-only dependency ([test] extra)

from challenge.domain import UINT8_TO_CENTERED
from tests.naive import l2_reference, score_pairs_reference, ssim_reference
from verifier import metrics
from verifier.metrics import l2, score_pairs, ssim

SHAPE = (32, 32, 3)
SHAPES = [(28, 28, 1), (32, 32, 3), (7, 7, 1), (9, 11, 3), (64, 64, 3), (13, 7, 3), (7, 10, 1)]


def skimage_ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The definition being matched, pair by pair, on float64 copies: colour with channel_axis=-1,
    grey as the 2-D image without it."""
    options = dict(win_size=7, gaussian_weights=False, use_sample_covariance=True, K1=0.01, K2=0.03, data_range=2.0)
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape[-1] == 1:
        return np.array([structural_similarity(x[..., 0], y[..., 0], **options) for x, y in zip(a, b)])
    return np.array([structural_similarity(x, y, channel_axis=-1, **options) for x, y in zip(a, b)])


def to_unit(u: np.ndarray) -> np.ndarray:
    return u.astype(np.float64) / 127.5 - 1.0


# ---------------------------------------------------------------------------------------------
# Image families


def random_images(rng, n, shape=SHAPE):
    return rng.uniform(-1.0, 1.0, (n, *shape))


def natural_images(rng, n, shape=SHAPE):
    """Smooth fields with sharp-edged shapes: blurred noise plus rectangles and discs."""
    height, width, channels = shape
    out = np.empty((n, *shape))
    yy, xx = np.mgrid[:height, :width]
    for i in range(n):
        img = gaussian_filter(rng.normal(size=shape), sigma=(rng.uniform(1, 4), rng.uniform(1, 4), 0))
        img = img / (np.abs(img).max() + 1e-12) * rng.uniform(0.2, 0.8)
        for _ in range(rng.integers(1, 4)):
            colour = rng.uniform(-1, 1, channels)
            if rng.random() < 0.5:
                r0, c0 = rng.integers(0, height - 3), rng.integers(0, width - 3)
                img[r0 : r0 + rng.integers(3, 16), c0 : c0 + rng.integers(3, 16)] = colour
            else:
                cy, cx, rad = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(2, 10)
                img[(yy - cy) ** 2 + (xx - cx) ** 2 < rad**2] = colour
        out[i] = np.clip(img, -1, 1)
    return out


def quantised(images):
    """As a private image would be: through uint8 and back."""
    return to_unit(np.round((images + 1) * 127.5).astype(np.uint8))


def checkerboard(period: int, phase: int = 0, shape=SHAPE) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    board = np.where(((yy // period + xx // period + phase) % 2) == 0, 1.0, -1.0)
    return np.repeat(board[:, :, None], shape[2], axis=2)


def constant(value, shape=SHAPE) -> np.ndarray:
    return np.broadcast_to(np.asarray(value, dtype=np.float64), shape).copy()


def extreme_pairs():
    """Images at and around the ends of the range."""
    lo, hi = constant(-1.0), constant(1.0)
    boards = [checkerboard(p, ph) for p in (1, 2, 3, 7, 16) for ph in (0, 1)]
    channel_board = checkerboard(1) * np.array([1.0, -1.0, 1.0])
    stripes = np.repeat(np.where(np.arange(32) % 2 == 0, 1.0, -1.0)[None, :, None], 32, axis=0).repeat(3, axis=2)
    images = [lo, hi, channel_board, stripes, stripes.transpose(1, 0, 2), *boards]
    a, b = [], []
    for i, x in enumerate(images):
        for y in images[i:]:
            a.append(x)
            b.append(y)
    return np.array(a), np.array(b)


def constant_pairs(rng):
    values = [-1.0, -0.5, 0.0, 1e-9, 0.3, 1.0]
    a, b = [], []
    for v in values:  # both constant
        for w in values:
            a.append(constant(v))
            b.append(constant(w))
    per_channel = constant(rng.uniform(-1, 1, 3))
    for other in (*random_images(rng, 4), *natural_images(rng, 4), per_channel):  # one constant
        for v in (-1.0, 0.0, 0.7):
            a.append(constant(v))
            b.append(other)
            a.append(other)
            b.append(constant(v))
    return np.array(a), np.array(b)


@pytest.fixture(scope="module")
def pair_sets():
    """Named (a, b) batches, float64 on [-1, 1]; over 1,000 pairs in all."""
    rng = np.random.default_rng(20240517)
    nat = natural_images(rng, 300)
    sets = {
        "random": (random_images(rng, 200), random_images(rng, 200)),
        "natural": (nat[:150], nat[150:]),
        "natural_vs_noisy": (nat[:150], np.clip(nat[:150] + rng.normal(0, 0.1, (150, *SHAPE)), -1, 1)),
        "natural_vs_quantised_self": (nat[150:], quantised(nat[150:])),
        "random_vs_natural": (random_images(rng, 100), nat[:100]),
        "small_differences": (nat[:100], nat[:100] + rng.normal(0, 1e-6, (100, *SHAPE))),
        "wide_range": (rng.uniform(-3, 3, (50, *SHAPE)), nat[:50] * 2.5),
        "constant": constant_pairs(rng),
        "extreme": extreme_pairs(),
    }
    assert sum(len(a) for a, _ in sets.values()) >= 1000
    return sets


# ---------------------------------------------------------------------------------------------
# SSIM


@pytest.mark.parametrize("name", [
    "random", "natural", "natural_vs_noisy", "natural_vs_quantised_self", "random_vs_natural",
    "small_differences", "wide_range", "constant", "extreme",
])
def test_ssim_matches_skimage(pair_sets, name):
    a, b = pair_sets[name]
    expected = skimage_ssim(a, b)
    got = ssim(a, b)
    assert got.dtype == np.float64 and got.shape == (len(a),)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    # Actually far closer than demanded; a regression to float32 or a wrong constant shows here.
    assert np.abs(got - expected).max() < 1e-12


def test_ssim_covers_a_wide_spread_of_scores(pair_sets):
    """Guards the test data itself: the comparisons above must span low to perfect scores."""
    scores = np.concatenate([ssim(a, b) for a, b in pair_sets.values()])
    assert scores.min() < -0.5 and scores.max() > 0.999 and np.ptp(np.quantile(scores, [0.25, 0.75])) > 0.1


def test_identical_images_score_one(pair_sets):
    rng = np.random.default_rng(7)
    images = np.concatenate([
        random_images(rng, 20), natural_images(rng, 20), pair_sets["extreme"][0], pair_sets["constant"][0],
    ])
    got = ssim(images, images.copy())
    np.testing.assert_allclose(got, 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(skimage_ssim(images[:20], images[:20]), 1.0, rtol=0, atol=1e-12)


def test_kernel_matches_numpy_reference(pair_sets):
    a = np.concatenate([pair_sets[k][0][:60] for k in ("random", "natural_vs_noisy", "constant", "extreme")])
    b = np.concatenate([pair_sets[k][1][:60] for k in ("random", "natural_vs_noisy", "constant", "extreme")])
    np.testing.assert_allclose(ssim(a, b), ssim_reference(a, b), rtol=0, atol=1e-12)


def test_numpy_reference_matches_skimage(pair_sets):
    a, b = pair_sets["natural_vs_noisy"]
    np.testing.assert_allclose(ssim_reference(a[:40], b[:40]), skimage_ssim(a[:40], b[:40]), rtol=0, atol=1e-12)


def test_border_mode_cannot_reach_the_averaged_interior():
    """Why the kernel skips padding: after the 3-pixel crop no 7x7 window touches the border."""
    rng = np.random.default_rng(3)
    img = rng.uniform(-1, 1, (32, 32))
    modes = ("reflect", "constant", "wrap", "nearest", "mirror")
    crops = [uniform_filter(img, size=7, mode=mode)[3:-3, 3:-3] for mode in modes]
    for crop in crops[1:]:
        np.testing.assert_allclose(crop, crops[0], rtol=0, atol=1e-14)
    # ... whereas one more row or column would see it.
    wider = [uniform_filter(img, size=7, mode=mode)[2:-2, 2:-2] for mode in ("reflect", "wrap")]
    assert np.abs(wider[0] - wider[1]).max() > 1e-3


def test_float32_input_is_scored_as_its_float64_value(pair_sets):
    a, b = pair_sets["natural_vs_noisy"]
    a32 = a[:50].astype(np.float32)
    np.testing.assert_array_equal(ssim(a32, b[:50]), ssim(a32.astype(np.float64), b[:50]))
    b32 = b[:50].astype(np.float32)
    np.testing.assert_array_equal(ssim(a32, b32), ssim(a32.astype(np.float64), b32.astype(np.float64)))
    np.testing.assert_allclose(ssim(a32, b[:50]), skimage_ssim(a32, b[:50]), rtol=0, atol=1e-12)


def test_ssim_is_symmetric_and_accepts_views(pair_sets):
    a, b = pair_sets["random_vs_natural"]
    np.testing.assert_allclose(ssim(a, b), ssim(b, a), rtol=0, atol=1e-15)
    # Non-contiguous inputs (every other image, a flipped view) are scored like their copies.
    np.testing.assert_array_equal(ssim(a[::2], b[::2]), ssim(a[::2].copy(), b[::2].copy()))
    flipped_a, flipped_b = a[:, ::-1], b[:, ::-1]
    np.testing.assert_array_equal(ssim(flipped_a, flipped_b), ssim(flipped_a.copy(), flipped_b.copy()))


# ---------------------------------------------------------------------------------------------
# L2


def test_l2_matches_direct_formula(pair_sets):
    for a, b in pair_sets.values():
        expected = np.sqrt(np.mean((a - b) ** 2, axis=(1, 2, 3)))
        np.testing.assert_allclose(l2(a, b), expected, rtol=1e-13, atol=0)
        np.testing.assert_allclose(l2_reference(a, b), expected, rtol=1e-13, atol=0)


def test_l2_known_values():
    lo, hi = constant(-1.0)[None], constant(1.0)[None]
    assert l2(lo, hi)[0] == 2.0
    assert l2(lo, lo)[0] == 0.0
    x = np.zeros((1, *SHAPE))
    x[0, 5, 6, 1] = 1.0  # one value off by 1: sqrt(1 / 3072)
    np.testing.assert_allclose(l2(x, np.zeros_like(x)), [np.sqrt(1 / 3072)], rtol=1e-15)
    np.testing.assert_allclose(l2(x.astype(np.float32), np.zeros_like(x)), [np.sqrt(1 / 3072)], rtol=1e-15)


# ---------------------------------------------------------------------------------------------
# score_pairs


@pytest.fixture(scope="module")
def scoring_case():
    rng = np.random.default_rng(11)
    private = np.round((natural_images(rng, 25) + 1) * 127.5).astype(np.uint8)
    recovered = np.clip(to_unit(private[rng.integers(0, 25, 40)]) + rng.normal(0, 0.2, (40, *SHAPE)), -1, 1)
    index = rng.integers(0, 25, (40, 3))
    index[0] = [4, 4, 4]  # repeats are allowed
    return recovered.astype(np.float32), private, index


def test_score_pairs_equals_looping_over_ssim_and_l2(scoring_case):
    recovered, private, index = scoring_case
    got_ssim, got_l2 = score_pairs(recovered, private, index)
    assert got_ssim.shape == got_l2.shape == index.shape
    assert got_ssim.dtype == got_l2.dtype == np.float64
    for b in range(len(recovered)):
        for k in range(index.shape[1]):
            x, y = recovered[b : b + 1], to_unit(private[index[b, k] : index[b, k] + 1])
            assert got_ssim[b, k] == pytest.approx(ssim(x, y)[0], abs=1e-15, rel=0)
            assert got_l2[b, k] == pytest.approx(l2(x, y)[0], abs=1e-15, rel=0)
    expected = skimage_ssim(recovered, to_unit(private[index[:, 0]]))
    np.testing.assert_allclose(got_ssim[:, 0], expected, rtol=0, atol=1e-12)


def test_score_pairs_rows_do_not_interact(scoring_case):
    """Any subset, any order, any number of candidates per row: each score depends on its pair only."""
    recovered, private, index = scoring_case
    full_ssim, full_l2 = score_pairs(recovered, private, index)
    order = np.random.default_rng(1).permutation(len(recovered))[:17]
    part_ssim, part_l2 = score_pairs(recovered[order], private, index[order, ::-1])
    np.testing.assert_array_equal(part_ssim, full_ssim[order, ::-1])
    np.testing.assert_array_equal(part_l2, full_l2[order, ::-1])
    one_ssim, _ = score_pairs(recovered, private, index[:, 1:2].astype(np.int32))
    np.testing.assert_array_equal(one_ssim[:, 0], full_ssim[:, 1])


def test_perfect_recovery_scores_exactly(scoring_case):
    """Also ties the kernel's uint8 mapping to the domain's table, value for value."""
    _, private, _ = scoring_case
    index = np.arange(len(private))[:, None]
    for recovered in (to_unit(private), UINT8_TO_CENTERED[private]):
        s, d = score_pairs(recovered, private, index)
        assert (s == 1.0).all() and (d == 0.0).all()


def test_score_pairs_empty_inputs(scoring_case):
    recovered, private, index = scoring_case
    s, d = score_pairs(recovered[:0], private, index[:0])
    assert s.shape == d.shape == (0, 3)
    s, d = score_pairs(recovered, private, np.zeros((len(recovered), 0), dtype=np.int64))
    assert s.shape == d.shape == (len(recovered), 0)


# ---------------------------------------------------------------------------------------------
# Bad inputs


def _bad_recovered():
    good = np.zeros((2, *SHAPE), dtype=np.float32)
    nan = good.copy()
    nan[1, 3, 4, 2] = np.nan
    inf = good.copy()
    inf[0, 0, 0, 0] = -np.inf
    return [
        (good.astype(np.uint8), "recovered must be float32 or float64"),
        (good.astype(np.float16), "recovered must be float32 or float64"),
        (good.astype(np.int64), "recovered must be float32 or float64"),
        (good[0], r"recovered must have shape \(B, H, W, C\) with C = 1 \(grey\) or 3 \(RGB\)"),
        (good.transpose(0, 3, 1, 2), r"recovered must have shape \(B, H, W, C\) with C = 1 \(grey\) or 3 \(RGB\)"),
        (np.zeros((2, 32, 32, 4), np.float32), r"recovered must have shape \(B, H, W, C\) with C = 1 \(grey\) or 3 \(RGB\)"),
        (nan, "recovered must be finite, but image 1 holds 1 NaN or inf"),
        (inf, "recovered must be finite, but image 0 holds 1 NaN or inf"),
    ]


@pytest.mark.parametrize("recovered, message", _bad_recovered())
def test_score_pairs_rejects_bad_recovered(recovered, message):
    private = np.zeros((3, *SHAPE), dtype=np.uint8)
    index = np.zeros((len(recovered) if recovered.ndim == 4 else 2, 2), dtype=np.int64)
    with pytest.raises(ValueError, match=message):
        score_pairs(recovered, private, index)


def test_score_pairs_finds_every_nonfinite_image_in_a_large_batch():
    recovered = np.zeros((600, *SHAPE), np.float32)
    recovered[457, 31, 0, 1] = np.inf
    recovered[458, 2, 2, 2] = np.nan
    recovered[458, 2, 3, 2] = np.nan
    message = r"recovered must be finite, but image 457 holds 1 NaN or inf values \(2 such images\)"
    with pytest.raises(ValueError, match=message):
        score_pairs(recovered, np.zeros((1, *SHAPE), np.uint8), np.zeros((600, 2), np.int64))
    message = r"b must be finite, but image 456 holds 1 NaN or inf values \(2 such images\)"
    with pytest.raises(ValueError, match=message):
        ssim(np.zeros((599, *SHAPE)), recovered[1:])


def test_finite_values_whose_squares_overflow_are_scored_not_refused():
    """NaN and inf are counted only when L2 is not finite: an L2 that overflows from finite values
    must not be taken for them."""
    big = np.full((2, *SHAPE), 1e200)
    np.testing.assert_array_equal(l2(big, -big), np.inf)
    _, d = score_pairs(big, np.zeros((1, *SHAPE), np.uint8), np.zeros((2, 1), np.int64))
    np.testing.assert_array_equal(d, np.inf)


def test_score_pairs_checks_finiteness_without_pairs():
    recovered = np.zeros((2, *SHAPE))
    recovered[1, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="recovered must be finite, but image 1"):
        score_pairs(recovered, np.zeros((1, *SHAPE), np.uint8), np.zeros((2, 0), np.int64))


@pytest.mark.parametrize("private, index, message", [
    (np.zeros((3, *SHAPE), np.float32), np.zeros((2, 1), np.int64), "private_images must be uint8"),
    (np.zeros((3, 32, 32), np.uint8), np.zeros((2, 1), np.int64),
     r"private_images must have shape \(n, H, W, C\) with C = 1 \(grey\) or 3 \(RGB\), got \(3, 32, 32\)"),
    (np.zeros((3, 3, 32, 32), np.uint8), np.zeros((2, 1), np.int64),
     r"private_images must have shape \(n, H, W, C\) with C = 1 \(grey\) or 3 \(RGB\), got \(3, 3, 32, 32\)"),
    (np.zeros((3, 28, 28, 1), np.uint8), np.zeros((2, 1), np.int64),
     "recovered and private_images must hold images of one shape, got 32x32x3 and 28x28x1: they differ in "
     "height and width and channels"),
    (np.zeros((3, 32, 31, 3), np.uint8), np.zeros((2, 1), np.int64),
     "recovered and private_images must hold images of one shape, got 32x32x3 and 32x31x3: they differ in width$"),
    (np.zeros((3, *SHAPE), np.uint8), np.zeros((2, 1), np.float64), "private_index must be an integer array"),
    (np.zeros((3, *SHAPE), np.uint8), np.zeros((2, 1), np.bool_), "private_index must be an integer array"),
    (np.zeros((3, *SHAPE), np.uint8), np.zeros(2, np.int64), r"private_index must have shape \(B, m\) with B = 2"),
    (np.zeros((3, *SHAPE), np.uint8), np.zeros((3, 1), np.int64), r"private_index must have shape \(B, m\) with B = 2"),
    (np.zeros((3, *SHAPE), np.uint8), np.array([[0], [-1]]), r"private_index values must lie in \[0, 3\)"),
    (np.zeros((3, *SHAPE), np.uint8), np.array([[0], [3]]), r"private_index values must lie in \[0, 3\)"),
])
def test_score_pairs_rejects_bad_private_side(private, index, message):
    with pytest.raises(ValueError, match=message):
        score_pairs(np.zeros((2, *SHAPE), np.float32), private, index)


@pytest.mark.parametrize("fn", [ssim, l2])
def test_pair_functions_reject_bad_inputs(fn):
    good = np.zeros((2, *SHAPE))
    with pytest.raises(ValueError, match="a must be float32 or float64"):
        fn(good.astype(np.uint8), good)
    with pytest.raises(ValueError, match=r"b must have shape \(N, H, W, C\) with C = 1 \(grey\) or 3 \(RGB\)"):
        fn(good, good[..., :2])
    with pytest.raises(ValueError, match="a and b must hold images of one shape, got 32x32x3 and 16x32x3: they "
                                         "differ in height"):
        fn(good, good[:, :16])
    with pytest.raises(ValueError, match="a and b must hold the same number of images, got 2 and 1"):
        fn(good, good[:1])
    bad = good.copy()
    bad[1, 31, 31, 2] = np.inf
    with pytest.raises(ValueError, match="b must be finite, but image 1"):
        fn(good, bad)
    with pytest.raises(ValueError, match="a must be finite, but image 1"):
        fn(bad, good)


# ---------------------------------------------------------------------------------------------
# Any image shape


def shape_pairs(shape, seed: int = 0):
    """(a, b) float64 pairs of one shape: random, natural, noisy and quantised copies, boards, constants."""
    rng = np.random.default_rng([seed, *shape])
    nat = natural_images(rng, 12, shape)
    boards = np.array([checkerboard(p, ph, shape) for p in (1, 2, 3) for ph in (0, 1)])
    flats = np.array([constant(v, shape) for v in (-1.0, 0.0, 0.3, 1.0)])
    a = np.concatenate([random_images(rng, 6, shape), nat[:6], nat[6:], nat[6:], boards, flats, flats, boards[:4]])
    b = np.concatenate([
        random_images(rng, 6, shape), nat[6:], np.clip(nat[6:] + rng.normal(0, 0.1, nat[6:].shape), -1, 1),
        quantised(nat[6:]), boards[::-1], flats[::-1], random_images(rng, 4, shape), flats,
    ])
    return a, b


@pytest.mark.parametrize("shape", SHAPES, ids=lambda shape: "x".join(map(str, shape)))
def test_ssim_and_l2_match_skimage_at_every_shape(shape):
    a, b = shape_pairs(shape)
    expected = skimage_ssim(a, b)
    got = ssim(a, b)
    assert got.shape == (len(a),) and got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)  # the documented tolerance ...
    assert np.abs(got - expected).max() < 1e-12  # ... and how close it actually is
    assert np.ptp(expected) > 0.5  # the pairs span low to high scores
    np.testing.assert_allclose(ssim_reference(a, b), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ssim(a, a.copy()), 1.0, rtol=0, atol=1e-12)
    direct = np.sqrt(np.mean((a - b) ** 2, axis=(1, 2, 3)))
    np.testing.assert_allclose(l2(a, b), direct, rtol=1e-13, atol=0)
    np.testing.assert_allclose(l2_reference(a, b), direct, rtol=1e-13, atol=0)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda shape: "x".join(map(str, shape)))
def test_score_pairs_float32_against_uint8_matches_skimage_at_every_shape(shape):
    """The verifier's case: float32 recoveries, uint8 private images, scored on the float64 values."""
    rng = np.random.default_rng([1, *shape])
    private = np.round((natural_images(rng, 10, shape) + 1) * 127.5).astype(np.uint8)
    recovered = np.clip(to_unit(private[rng.integers(0, 10, 12)]) + rng.normal(0, 0.2, (12, *shape)), -1, 1)
    recovered = recovered.astype(np.float32)
    index = rng.integers(0, 10, (12, 2))
    got_ssim, got_l2 = score_pairs(recovered, private, index)
    truth = to_unit(private[index.ravel()])
    rec = np.repeat(recovered, 2, axis=0)
    np.testing.assert_allclose(got_ssim.ravel(), skimage_ssim(rec, truth), rtol=0, atol=1e-12)
    np.testing.assert_allclose(got_l2.ravel(), np.sqrt(np.mean((rec - truth) ** 2, axis=(1, 2, 3))), rtol=1e-13)
    twin_ssim, twin_l2 = score_pairs_reference(recovered, private, index)
    np.testing.assert_allclose(got_ssim, twin_ssim, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got_l2, twin_l2, rtol=1e-13, atol=0)
    perfect_ssim, perfect_l2 = score_pairs(to_unit(private), private, np.arange(10)[:, None])
    assert (perfect_ssim == 1.0).all() and (perfect_l2 == 0.0).all()


def test_grey_is_scored_as_the_two_dimensional_image():
    """scikit-image without channel_axis on the 2-D image, and with it on (H, W, 1): the same number."""
    a, b = shape_pairs((28, 28, 1))
    options = dict(win_size=7, gaussian_weights=False, use_sample_covariance=True, K1=0.01, K2=0.03, data_range=2.0)
    with_axis = [structural_similarity(x, y, channel_axis=-1, **options) for x, y in zip(a, b)]
    np.testing.assert_array_equal(skimage_ssim(a, b), with_axis)
    np.testing.assert_allclose(ssim(a, b), with_axis, rtol=0, atol=1e-12)


def test_scores_at_32x32x3_are_unchanged_to_the_last_bit():
    """Known answer, computed by the 32x32x3-only kernels this module replaced: scores of existing
    releases and submissions do not move."""
    rng = np.random.default_rng(20261130)
    private = rng.integers(0, 256, (30, *SHAPE), dtype=np.uint8)
    index = rng.integers(0, 30, (40, 3))
    recovered = np.clip(to_unit(private[index[:, 0]]) + rng.normal(0, 0.2, (40, *SHAPE)), -1, 1).astype(np.float32)
    s, d = score_pairs(recovered, private, index)
    a = rng.uniform(-1, 1, (20, *SHAPE))
    b = np.clip(a + rng.normal(0, 0.3, a.shape), -1, 1)
    digest = hashlib.sha256(s.tobytes() + d.tobytes() + ssim(a, b).tobytes() + l2(a, b).tobytes()).hexdigest()
    assert digest == "b8c66562055a12f2f18528412b4d14c2be42422c20640ff56ae12d3b06996113"


# Per image shape, the sha256 of the scores test_scores_at_any_shape_are_unchanged_to_the_last_bit takes
DIGESTS = {
    (64, 64, 3): "dab15fb5e82abab213f4a2f3f525fd87a9494bfeccc35ade0a00f7e690d3bb3f",
    (28, 28, 1): "e2242c244926bd2f419c2021fad5cf8c759e891b28a6b9877f3265bbc088e03d",
    (37, 23, 3): "b3dbf6c8c6dcac626911fed5732c3eb3320577536429565c64119081745b3aaa",
    (13, 7, 1): "da71bd578ef5caaad370ebb1d53bc9ea1ed3d38435a87210c9c9dc4b49759010",
    (7, 7, 3): "17f2e3fc63d60b84b571ae1af2e37e69d82d8d8f99e492c05345bd7e4d5b58b3",
    (40, 150, 3): "0ab9f29d2303e8dc9d3aff3f6385e98057e755cc809ae4f560a98c1c008ad417",
    (224, 224, 3): "00d2b9c2a5627c124e0ca15a9f3111beae91913268c27ff07e79232bb107d3a2",
}


@pytest.mark.parametrize("shape", DIGESTS, ids=lambda shape: "x".join(map(str, shape)))
def test_scores_at_any_shape_are_unchanged_to_the_last_bit(shape):
    """Known answers, computed by the kernels before the one-pass rewrite (commit 90dbb49, with a
    float64 copy of y and separate SSIM and L2 passes): float32 and float64 recoveries against uint8
    private images, and ssim and l2 of float64 and float32 pairs, grey and colour, square or not."""
    rng = np.random.default_rng([20261129, *shape])
    private = rng.integers(0, 256, (12, *shape), dtype=np.uint8)
    index = rng.integers(0, 12, (8, 3))
    recovered = np.clip(to_unit(private[index[:, 0]]) + rng.normal(0, 0.2, (8, *shape)), -1, 1)
    a = rng.uniform(-1, 1, (6, *shape))
    b = np.clip(a + rng.normal(0, 0.3, a.shape), -1, 1)
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    parts = [*score_pairs(recovered.astype(np.float32), private, index), *score_pairs(recovered, private, index),
             ssim(a, b), l2(a, b), ssim(a32, b32), l2(a[:, :, :1], b[:, :, :1])]
    assert hashlib.sha256(b"".join(part.tobytes() for part in parts)).hexdigest() == DIGESTS[shape]


@pytest.mark.parametrize("shape", [(6, 32, 3), (32, 6, 1), (6, 6, 3), (1, 1, 1), (0, 9, 3)])
def test_images_smaller_than_the_window_are_refused(shape):
    images = np.zeros((2, *shape))
    window = rf"images \(shape \(2, {shape[0]}, {shape[1]}, {shape[2]}\)\): SSIM's 7x7 window needs height and width >= 7"
    shown = "x".join(map(str, shape))
    with pytest.raises(ValueError, match=f"^a holds {shown} {window}$"):
        ssim(images, images)
    with pytest.raises(ValueError, match=f"^recovered holds {shown} {window}$"):
        score_pairs(images, images.astype(np.uint8), np.zeros((2, 1), np.int64))
    with pytest.raises(ValueError, match=f"^private_images holds {shown} {window}$"):
        score_pairs(np.zeros((2, *SHAPE)), images.astype(np.uint8), np.zeros((2, 1), np.int64))


def test_l2_needs_no_window():
    rng = np.random.default_rng(5)
    for shape in [(1, 1, 1), (5, 4, 3), (6, 40, 1)]:
        a, b = rng.uniform(-1, 1, (2, 3, *shape))
        np.testing.assert_allclose(l2(a, b), np.sqrt(np.mean((a - b) ** 2, axis=(1, 2, 3))), rtol=1e-13)
    with pytest.raises(ValueError, match=r"a holds 0x4x3 images .*: L2 needs height and width >= 1"):
        l2(np.zeros((2, 0, 4, 3)), np.zeros((2, 0, 4, 3)))


@pytest.mark.parametrize("shape", [(32, 32, 3), (28, 28, 1), (9, 11, 3)], ids=lambda shape: "x".join(map(str, shape)))
def test_scores_do_not_depend_on_threads_or_chunks(shape, monkeypatch):
    """Same bits with 1 thread or all, and with one pair per chunk or all pairs in few chunks."""
    rng = np.random.default_rng([2, *shape])
    private = rng.integers(0, 256, (20, *shape), dtype=np.uint8)
    recovered = rng.uniform(-1, 1, (50, *shape)).astype(np.float32)
    index = rng.integers(0, 20, (50, 3))
    a, b = rng.uniform(-1, 1, (2, 70, *shape))
    runs = []
    before = numba.get_num_threads()
    try:
        for threads, values_per_chunk in [(1, 10**9), (numba.config.NUMBA_NUM_THREADS, 10**9),
                                          (numba.config.NUMBA_NUM_THREADS, 1)]:
            numba.set_num_threads(threads)
            monkeypatch.setattr(metrics, "_VALUES_PER_CHUNK", values_per_chunk)
            runs.append((*score_pairs(recovered, private, index), ssim(a, b), l2(a, b)))
    finally:
        numba.set_num_threads(before)
    for run in runs[1:]:
        for got, first in zip(run, runs[0]):
            np.testing.assert_array_equal(got, first)


def test_one_compilation_serves_every_shape():
    """Sizes are arguments, not constants: new shapes add no specialisation (only dtypes do)."""
    rng = np.random.default_rng(3)

    def score(shape):
        private = rng.integers(0, 256, (3, *shape), dtype=np.uint8)
        score_pairs(rng.uniform(-1, 1, (2, *shape)).astype(np.float32), private, np.zeros((2, 1), np.int64))
        ssim(rng.uniform(-1, 1, (2, *shape)), rng.uniform(-1, 1, (2, *shape)))

    score((32, 32, 3))
    counts = [len(metrics._score_kernel.signatures), len(metrics._pairs_kernel.signatures)]
    for shape in [(28, 28, 1), (7, 7, 1), (64, 64, 3), (224, 224, 3)]:
        score(shape)
    assert [len(metrics._score_kernel.signatures), len(metrics._pairs_kernel.signatures)] == counts


def test_kernels_are_cached_on_disk():
    kernels = [value for value in vars(metrics).values() if isinstance(value, numba.core.registry.CPUDispatcher)]
    assert len(kernels) >= 6
    assert all(type(kernel._cache).__name__ == "FunctionCache" for kernel in kernels)
