import numpy as np
import pytest

from challenge.domain import affine
from challenge.params import Params
from challenge.encoding import encode
from challenge.keys import draw_plan, sign_bits
from tests.naive import encode_reference

SEED = bytes(range(32))


def keys_for(params, private_set, public_bank):
    plan = draw_plan(SEED, params, private_set.labels, len(public_bank) if params.k_public else 0, 2)
    signs = sign_bits(SEED, 0, params.n_encryptions, (32, 32, 3)) if params.masked else np.zeros((params.n_encryptions, 384), np.uint8)
    return private_set.images[plan.selection], plan, signs


@pytest.mark.parametrize("params", [
    Params(n_private=40, per_image=10),
    Params(n_private=40, per_image=10, domain="positive"),
    Params(mode="inside", k=4, k_private=4, n_private=40, per_image=10),
    Params(mode="mixup", n_private=40, per_image=10),
    Params(k=9, k_private=3, c1=0.5, n_private=40, per_image=10),
])
def test_numba_encoder_equals_numpy_reference_bit_for_bit(params, private_set, public_bank):
    truth, plan, signs = keys_for(params, private_set, public_bank)
    tables = (truth, public_bank.images, affine(params.domain))
    fast = encode(*tables, private_index=plan.private_index, public_index=plan.public_bank_index, lam=plan.lam, sign_bits=signs)
    slow = encode_reference(*tables, plan.private_index, plan.public_bank_index, plan.lam, signs)
    assert fast.dtype == np.float32 and fast.shape == (params.n_encryptions, 32, 32, 3)
    assert fast.tobytes() == slow.tobytes()


@pytest.mark.parametrize("domain", ["centered", "positive"])
def test_unmasking_recovers_the_lambda_mix(domain, private_set, public_bank):
    """sigma * encryption is exactly the format's mix (acc / scale + offset * sum(lam), in float64,
    where the products lam_j * u_j and their sums are exact), and within float32 rounding of
    the textbook mix sum_j lam_j * value(u_j)."""
    params = Params(n_private=20, per_image=5, domain=domain)
    truth, plan, signs = keys_for(params, private_set, public_bank)
    enc = encode(truth, public_bank.images, affine(domain), private_index=plan.private_index,
                 public_index=plan.public_bank_index, lam=plan.lam, sign_bits=signs)
    sigma = 1.0 - 2.0 * np.unpackbits(signs, axis=1, bitorder="little").reshape(-1, 32, 32, 3)
    to_value = (lambda u: u / 127.5 - 1.0) if domain == "centered" else (lambda u: u / 255.0)
    images = np.concatenate([truth[plan.private_index], public_bank.images[plan.public_bank_index]], axis=1)
    mix = np.einsum("nk,nkhwc->nhwc", plan.lam.astype(np.float64), to_value(images.astype(np.float64)))
    np.testing.assert_allclose(sigma * enc, mix, rtol=0, atol=2e-7)
    scale, offset = affine(domain)
    weights = plan.lam.astype(np.float64)
    exact = np.einsum("nk,nkhwc->nhwc", weights, images.astype(np.float64)) / scale
    exact += offset * weights.sum(axis=1)[:, None, None, None]
    assert np.array_equal(sigma.astype(np.float32) * enc, exact.astype(np.float32))


def test_mask_flips_about_half_the_signs(private_set, public_bank):
    params = Params(n_private=20, per_image=5)
    _, _, signs = keys_for(params, private_set, public_bank)
    share = np.unpackbits(signs).mean()
    assert 0.49 < share < 0.51


def test_positive_domain_mask_hides_nothing(private_set, public_bank):
    """In [0, 1] every mix is non-negative, so |encryption| is the mix: InstaHide collapses to
    Mixup.  In [-1, 1] the mix has both signs and |encryption| is not the mix."""
    for domain, hides in (("positive", False), ("centered", True)):
        params = Params(n_private=20, per_image=5, domain=domain)
        truth, plan, signs = keys_for(params, private_set, public_bank)
        tables = (truth, public_bank.images, affine(domain))
        row_keys = {"private_index": plan.private_index, "public_index": plan.public_bank_index, "lam": plan.lam}
        masked, mixup = encode(*tables, **row_keys, sign_bits=signs), encode(*tables, **row_keys, sign_bits=np.zeros_like(signs))
        assert np.array_equal(np.abs(masked), mixup) != hides
