"""challenge.lambdas: the half-normal kernels against tests/spec.py (a plain numpy reading of
FORMAT.md 7.5), bit for bit; accuracy against libm; the distribution against the half-normal law;
the feasibility rule."""

import math

import numpy as np
import pytest

from challenge.lambdas import SQRT2, acceptance, half_normals, ln
from challenge.params import ParameterError, Params
from tests import spec


@pytest.fixture(scope="module")
def samples():
    rng = np.random.default_rng(7)
    return np.concatenate([rng.uniform(0, 1, 20000), 2.0 ** -rng.uniform(0, 104, 2000),
                           [2.0**-104, 0.5, 1.0 - 2**-53, SQRT2 / 2, np.nextafter(SQRT2 / 2, 1), 1e-300, 7.0]])


def test_ln_matches_its_numpy_reading_bit_for_bit(samples):
    kernel = np.array([ln(float(x)) for x in samples])
    assert np.array_equal(kernel.view(np.uint64), spec.ln(samples).view(np.uint64))


def test_ln_is_accurate(samples):
    exact = np.log(samples)
    error = np.abs(np.array([ln(float(x)) for x in samples]) - exact)
    assert np.all(error <= 4 * np.spacing(np.abs(exact)) + 1e-300)


def test_ln_known_answers():
    """Pinned bits: another implementation of the rules must give these."""
    assert ln(0.5).hex() == "-0x1.62e42fefa39efp-1"
    assert ln(1.0) == 0.0
    assert ln(0.1).hex() == "-0x1.26bb1bbb55515p+1"  # libm: ...516p+1, one ulp away: why the rules exist


def test_half_normals_match_numpy_bit_for_bit():
    words = np.random.default_rng(3).integers(0, 2**64, 4000, dtype=np.uint64)
    out = np.empty(3000)
    filled = half_normals(words, out)
    expected = spec.half_normals(words, 3000)
    assert filled == len(expected)
    assert np.array_equal(out[:filled].view(np.uint64), expected.view(np.uint64))


def test_half_normals_report_running_out():
    words = np.array([0, 0, 2**63, 2**63], np.uint64)  # (-1, -1): s = 2, rejected; (0, 0): s = 0, rejected
    assert half_normals(words, np.empty(2)) == 0


def test_half_normal_law():
    words = np.random.default_rng(11).integers(0, 2**64, 400_000, dtype=np.uint64)
    z = np.empty(300_000)
    z = z[: half_normals(words, z)]
    assert abs(z.mean() - math.sqrt(2 / math.pi)) < 0.005
    assert abs(z.var() - (1 - 2 / math.pi)) < 0.005
    # Kolmogorov-Smirnov distance to the half-normal CDF erf(x / sqrt 2)
    z.sort()
    cdf = np.array([math.erf(x / math.sqrt(2)) for x in z[::50]])
    empirical = np.arange(0, len(z), 50) / len(z)
    assert np.max(np.abs(cdf - empirical)) < 0.01


def test_feasibility_is_the_documented_count():
    """20,000 version-2 tries under the public feasibility key; the spec's implementation recounts them."""
    params = Params(k=4, k_private=2, c1=0.5, c2=0.4)
    accepted = acceptance(params.lambda_constraints)
    assert 0 < accepted < 20_000
    assert spec.feasibility_accepted(params.to_dict()) == accepted


def test_infeasible_constraints_are_refused_in_one_line():
    with pytest.raises(ParameterError, match="accept only 0 of 20,000 lambda tries"):
        Params(c1=0.2, c2=0.9).validate()
