"""The pairing baseline shows what the pixel domain decides: with the true pairing and lambdas,
fitting |encryption| recovers the private images in [0, 1] and not in [-1, 1]."""

import pytest

from challenge import format as fmt
from challenge.params import Params
from generator.release import generate
from tests.helpers import SEED
from verifier.baselines import write_baseline
from verifier.scoring import score
from challenge.submission import expected_from_keys


@pytest.fixture(scope="module")
def max_ssim_by_domain(tmp_path_factory, private_set, public_bank):
    scores = {}
    for domain in ("positive", "centered"):
        root = tmp_path_factory.mktemp(domain)
        generate(root / "release", Params(n_private=20, per_image=20, domain=domain), seed=SEED, private=private_set,
                 public=public_bank)
        store = fmt.open_key_store(root / "release" / "secret" / "keys.zarr")
        expected = expected_from_keys(store)
        write_baseline("pairing", root / "sub", expected, store=store, release=root / "release")
        validation, result = score(root / "sub", store, expected=expected)
        assert validation.valid, validation.problems
        scores[domain] = result.summary["Max_SSIM"]
    return scores


def test_pairing_recovers_images_in_the_positive_domain(max_ssim_by_domain):
    assert max_ssim_by_domain["positive"] > 0.6


def test_the_centred_domain_hides_them(max_ssim_by_domain):
    assert max_ssim_by_domain["centered"] < max_ssim_by_domain["positive"] - 0.3


def test_pairing_needs_keys_and_release(tiny_release):
    from challenge.errors import UsageError

    store = fmt.open_key_store(tiny_release / "secret" / "keys.zarr")
    with pytest.raises(UsageError, match=r"needs store \(.*\) and release \("):
        write_baseline("pairing", tiny_release / "never", expected_from_keys(store), store=store)
    assert not (tiny_release / "never").exists()
