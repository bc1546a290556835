import math

import numpy as np
import pytest

from challenge.keystream import row_words
from challenge.lambdas import LAMBDA_TRIES, words_per_try
from challenge.params import ParameterError, Params
from challenge.keys import distinct_below, draw_plan, lambda_rows, select_private, sign_bits
from tests.naive import lambda_reference

SEED = bytes(range(32))


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("params", [Params(), Params(k=4, k_private=2, c1=0.5, c2=0.4), Params(mode="inside", k=3, k_private=3, c1=0.9)])
def test_lambda_kernel_matches_plain_reference(params, version):
    n = 400
    lam = lambda_rows(SEED, params, first_row=0, n_rows=n, version=version)
    per_try = words_per_try(params.k, version)
    words = row_words(SEED, "lambda", first_row=0, n_rows=n, words_per_row=LAMBDA_TRIES * per_try)
    words = words.reshape(n, LAMBDA_TRIES, per_try)
    redrawn = 0
    for r in range(n):
        expected = lambda_reference(words[r], params.k, params.k_private, params.c1, params.c2, version)
        if expected is None:  # this row went to round 1+: check it against its own round
            redrawn += 1
            round_words = row_words(SEED, "lambda", first_row=r, n_rows=1, words_per_row=LAMBDA_TRIES * per_try,
                                    round_=1)
            round_words = round_words.reshape(LAMBDA_TRIES, per_try)
            expected = lambda_reference(round_words, params.k, params.k_private, params.c1, params.c2, version)
            if expected is None:
                continue
        assert lam[r].tobytes() == expected.tobytes(), r
    assert redrawn < n // 10


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("params", [Params(), Params(c1=0.4, c2=0.45), Params(k=8, k_private=3, c1=0.3, c2=0.5)])
def test_lambda_constraints_hold_for_every_row(params, version):
    lam = lambda_rows(SEED, params, first_row=0, n_rows=5000, version=version)
    assert lam.dtype == np.float32 and lam.shape == (5000, params.k)
    assert np.all(lam > 0)
    assert np.all(lam.astype(np.float64).max(axis=1) <= params.c1)
    assert np.all(lam[:, : params.k_private].astype(np.float64).sum(axis=1) >= params.c2)
    assert np.allclose(lam.sum(axis=1), 1, atol=1e-6)


@pytest.mark.parametrize("version", [1, 2])
def test_lambda_rows_do_not_depend_on_their_batch(version):
    params = Params(c1=0.4, c2=0.45)  # strict: many rows need redraw rounds
    whole = lambda_rows(SEED, params, first_row=0, n_rows=300, version=version)
    assert np.array_equal(lambda_rows(SEED, params, first_row=117, n_rows=50, version=version), whole[117:167])


def test_distinct_below_is_distinct_avoids_exclusions_and_is_uniform():
    words = row_words(SEED, "public", first_row=0, n_rows=20_000, words_per_row=3)
    excluded = (np.arange(20_000) % 7)[:, None]
    draws = distinct_below(words, 7, excluded)
    full = np.concatenate([excluded, draws], axis=1)
    assert np.all(np.sort(full, axis=1)[:, 1:] != np.sort(full, axis=1)[:, :-1])
    assert draws.min() >= 0 and draws.max() < 7
    counts = np.bincount(draws.ravel(), minlength=7)
    assert np.all(np.abs(counts - 60_000 / 7) < 5 * math.sqrt(60_000 / 7))


def test_plan_counts_partners_and_distinct_patches(private_set):
    params = Params(n_private=30, per_image=7)
    plan = draw_plan(SEED, params, labels=private_set.labels, bank_size=500, version=2)
    first = plan.private_index[:, 0]
    assert np.array_equal(np.bincount(first, minlength=30), np.full(30, 7))
    assert np.all(plan.private_index[:, 1] != first)
    assert np.all(np.diff(np.sort(plan.public_bank_index, axis=1), axis=1) > 0)
    assert plan.public_bank_index.max() < 500
    assert len(np.unique(plan.selection)) == 30 and plan.selection.max() < len(private_set)
    assert not np.all(np.diff(first) >= 0), "published order must be shuffled"


def test_plan_inside_mode_partners_are_distinct_others(private_set):
    params = Params(mode="inside", k=4, k_private=4, c1=0.6, n_private=10, per_image=20)
    plan = draw_plan(SEED, params, labels=private_set.labels, bank_size=0, version=2)
    rows = np.sort(plan.private_index, axis=1)
    assert np.all(np.diff(rows, axis=1) > 0)
    assert plan.public_bank_index.shape == (200, 0)


def test_balanced_selection(private_set):
    chosen = select_private(SEED, private_set.labels, 30, balanced=True)
    assert np.array_equal(np.bincount(private_set.labels[chosen], minlength=10), np.full(10, 3))
    with pytest.raises(ParameterError, match="divisible"):
        select_private(SEED, private_set.labels, 31, balanced=True)
    with pytest.raises(ParameterError, match="fewer than n_private=201"):
        select_private(SEED, private_set.labels, 201, balanced=False)


def test_different_seeds_give_different_keys(private_set):
    a = draw_plan(SEED, Params(), labels=private_set.labels, bank_size=2560, version=2)
    b = draw_plan(bytes(32), Params(), labels=private_set.labels, bank_size=2560, version=2)
    assert not np.array_equal(a.lam, b.lam) and not np.array_equal(a.private_index, b.private_index)
    assert not np.array_equal(sign_bits(SEED, 0, 4, (32, 32, 3)), sign_bits(bytes(32), 0, 4, (32, 32, 3)))
