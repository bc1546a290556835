import numpy as np
import pytest

from challenge.domain import affine
from challenge.params import Params
from challenge.encoding import encode
from challenge.keys import draw_plan, sign_bits
from tests.naive import encode_reference

SEED = bytes(range(32))


def keys_for(params, private_set, public_bank):
    plan = draw_plan(SEED, params, labels=private_set.labels, bank_size=len(public_bank) if params.k_public else 0,
                     version=2)
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


def random_keys(rng, rows, shape, k, k_private, n_tables=(5, 7)):
    """Tables and row keys drawn at random, lambda of any sign (zeros included): the encoder must equal
    its twin for every input, not only for the keys that draw_plan makes."""
    values = shape[0] * shape[1] * shape[2]
    private, public = (rng.integers(0, 256, (n, *shape), dtype=np.uint8) for n in n_tables)
    lam = rng.standard_normal((rows, k)).astype(np.float32)
    lam[rng.random((rows, k)) < 0.1] = 0.0
    signs = rng.integers(0, 256, (rows, -(-values // 8)), dtype=np.uint8)
    signs[:, -1] &= np.uint8((1 << (values % 8 or 8)) - 1)  # the pad bits of the last byte are zero (FORMAT.md)
    return (private, public), {
        "private_index": rng.integers(0, n_tables[0], (rows, k_private), dtype=np.int32),
        "public_index": rng.integers(0, n_tables[1], (rows, k - k_private), dtype=np.int32),
        "lam": lam,
        "sign_bits": signs,
    }


@pytest.mark.parametrize("shape, k, k_private", [
    ((28, 28, 1), 6, 2), ((9, 11, 3), 2, 1), ((32, 32, 3), 4, 4), ((64, 64, 3), 9, 3), ((224, 224, 3), 6, 2),
    ((224, 224, 3), 5, 5),
])
@pytest.mark.parametrize("domain", ["centered", "positive"])
def test_encoder_equals_twin_for_any_keys_threads_and_chunks(shape, k, k_private, domain):
    """Every shape of issue 12, k not a multiple of the kernel's pass width (3) and a multiple of it,
    rows that are one image or a part of a tile; one thread or two, the rows in chunks or all at once."""
    import numba

    rng = np.random.default_rng(sum(shape) + k)
    rows = 3 if shape == (224, 224, 3) else 11
    tables, keys = random_keys(rng, rows, shape, k, k_private)
    slow = encode_reference(*tables, affine(domain), *keys.values())
    threads = numba.get_num_threads()
    try:
        for n_threads, chunk in ((1, rows), (min(2, numba.config.NUMBA_NUM_THREADS), 1), (threads, 2)):
            numba.set_num_threads(n_threads)
            fast = np.concatenate([encode(*tables, affine(domain), **{name: a[i : i + chunk] for name, a in keys.items()})
                                   for i in range(0, rows, chunk)])
            assert fast.shape == (rows, *shape) and fast.tobytes() == slow.tobytes()
    finally:
        numba.set_num_threads(threads)
