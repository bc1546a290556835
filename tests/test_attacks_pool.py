"""The pool attack recovers every private image of a release built from the embedded demo data."""

import numpy as np
import pytest

from attacks.pool import best_candidates, pool_attack
from attacks.public import open_public
from challenge import format as fmt
from challenge.submission import write_submission
from tests.naive import best_candidates_reference
from verifier.scoring import score


def _score(release_path, images, tmp_path):
    release = open_public(release_path)
    write_submission(tmp_path / "sub", iter([images]), expected=release.expected, dtype="uint8",
                     metadata={"team": "test"})
    _, scores = score(tmp_path / "sub", fmt.open_key_store(release_path / "secret" / "keys.zarr"))
    return scores.summary


def test_pool_attack_recovers_the_embedded_private_images(tiny_release, private_set, tmp_path):
    choice, _ = pool_attack(open_public(tiny_release), private_set, rows=64)
    summary = _score(tiny_release, private_set.images[choice], tmp_path)
    assert summary["recovered_share"] >= 0.95
    assert summary["Max_SSIM"] > 0.8


def test_a_random_choice_fails_the_same_threshold(tiny_release, private_set, tmp_path):
    choice = np.random.default_rng(0).integers(0, len(private_set), 100)
    assert _score(tiny_release, private_set.images[choice], tmp_path)["recovered_share"] < 0.95


@pytest.mark.parametrize("rows", [1, 33, 4096])
def test_streaming_the_pool_changes_nothing(tiny_release, private_set, rows):
    release = open_public(tiny_release)
    from attacks.graph import gradients, unit_rows
    from attacks.public import magnitudes

    features = np.concatenate([unit_rows(gradients(magnitudes(b, release.params))) for b in release.encryption_blocks(64)])
    choice, _ = best_candidates(features, private_set, release, rows=rows)
    np.testing.assert_array_equal(choice, best_candidates_reference(features, private_set, release))
