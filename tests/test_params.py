"""Params.validate at the edges of every rule: the last valid value passes, the first invalid one
names its parameter (boundaries found missing by mutation testing, docs/TESTING.md)."""

import pytest

import challenge.params
from challenge.errors import command_line
from challenge.params import MAX_K, MIN_ACCEPTED_TRIES, ParameterError, Params


@pytest.mark.parametrize("params", [
    Params(k=2, k_private=1, c1=1.0, c2=0.0),
    Params(mode="inside", k=MAX_K, k_private=MAX_K, c1=1.0),
    Params(mode="inside", k=2, k_private=2, c2=1.0),  # the private sum is always 1
    Params(k=6, k_private=5, c1=1.0),
    Params(n_private=2, k_private=2, k=3, c1=1.0),
    Params(mode="mixup", k=2, k_private=1, c1=1.0),
])
def test_the_last_valid_values_pass(params):
    assert params.validate() is params


@pytest.mark.parametrize("params, flags, keywords", [
    (Params(k=1, k_private=1), "--k must be between 2 and 16, got 1",
     "k must be between 2 and 16, got 1"),
    (Params(mode="inside", k=MAX_K + 1, k_private=MAX_K + 1), "--k must be between 2 and 16, got 17",
     "k must be between 2 and 16, got 17"),
    (Params(k=6, k_private=0), "--k-private must be between 1 and --k (6), got 0",
     "k_private must be between 1 and k (6), got 0"),
    (Params(k=6, k_private=7), "--k-private must be between 1 and --k (6), got 7",
     "k_private must be between 1 and k (6), got 7"),
    (Params(k=6, k_private=6), "--mode cross needs at least one public patch: --k-private < --k",
     "mode='cross' needs at least one public patch: k_private < k"),
    (Params(mode="mixup", k=3, k_private=3), "--mode mixup needs at least one public patch: --k-private < --k",
     "mode='mixup' needs at least one public patch: k_private < k"),
    (Params(mode="inside", k=3, k_private=2), "--mode inside mixes only private images: --k-private must equal --k (3)",
     "mode='inside' mixes only private images: k_private must equal k (3)"),
    (Params(k=4, c1=0.25), "--c1 must be in (1/k, 1] = (0.2500, 1], got 0.25",
     "c1 must be in (1/k, 1] = (0.2500, 1], got 0.25"),
    (Params(k=4, c1=1.01), "--c1 must be in (1/k, 1] = (0.2500, 1], got 1.01",
     "c1 must be in (1/k, 1] = (0.2500, 1], got 1.01"),
    (Params(c2=-0.01), "--c2 must be in [0, 1], got -0.01",
     "c2 must be in [0, 1], got -0.01"),
    (Params(mode="inside", k=2, k_private=2, c2=1.01), "--c2 must be in [0, 1], got 1.01",
     "c2 must be in [0, 1], got 1.01"),
    (Params(n_private=1, k_private=1, k=2), "--n-private must be at least max(2, k_private) = 2, got 1",
     "n_private must be at least max(2, k_private) = 2, got 1"),
    (Params(n_private=2, k_private=3, k=4), "--n-private must be at least max(2, k_private) = 3, got 2",
     "n_private must be at least max(2, k_private) = 3, got 2"),
])
def test_the_first_invalid_values_are_named(params, flags, keywords):
    """By its keyword from Python, by its flag on the command line."""
    with pytest.raises(ParameterError) as error:
        params.validate()
    assert str(error.value) == keywords
    with command_line(), pytest.raises(ParameterError) as error:
        params.validate()
    assert str(error.value) == flags


def test_the_feasibility_bound_is_inclusive(monkeypatch):
    monkeypatch.setattr(challenge.params, "acceptance", lambda constraints: MIN_ACCEPTED_TRIES)
    assert Params().validate()
    monkeypatch.setattr(challenge.params, "acceptance", lambda constraints: MIN_ACCEPTED_TRIES - 1)
    with pytest.raises(ParameterError, match=f"accept only {MIN_ACCEPTED_TRIES - 1} of"):
        Params().validate()


@pytest.mark.parametrize("mode, masked", [("cross", True), ("inside", True), ("mixup", False)])
def test_only_mixup_has_no_sign_mask(mode, masked):
    params = Params(mode=mode, k=3, k_private=3 if mode == "inside" else 1)
    assert params.masked is masked
