"""The defaults are the 2020 challenge's, checked against the documented values themselves (the
challenge's description: 100 private CIFAR-10 images, each the first private image of exactly 50
encryptions, k = 6 of which 2 private, lambdas redrawn while max > c1 = 0.65 or the private sum
< c2 = 0.3), not against what the code happens to say elsewhere."""

import contextlib

import numpy as np

from challenge import format as fmt
from challenge.params import Params
from commands.main import main

DOCUMENTED = {"mode": "cross", "k": 6, "k_private": 2, "c1": 0.65, "c2": 0.3, "n_private": 100, "per_image": 50}


def test_params_default_to_the_2020_challenge():
    params = Params()
    assert {name: getattr(params, name) for name in DOCUMENTED} == DOCUMENTED
    assert params.k_public == 4 and params.n_encryptions == 5000
    assert params.lambda_constraints == (6, 2, 0.65, 0.3)


def test_generate_without_options_makes_the_2020_release(tmp_path):
    """What a maintainer gets from ``instahide generate`` with no parameter (its own defaults, not
    only Params'): the 2020 shapes and pairing."""
    with contextlib.chdir(tmp_path):
        assert main(["generate", "--out", "release", "--practice", "--seed", "defaults"]) == 0
    release = tmp_path / "release"
    manifest = fmt.read_json(release / "public" / "manifest.json")
    assert {name: manifest["params"][name] for name in DOCUMENTED} == DOCUMENTED
    assert np.load(release / "public" / "encryption.npy", mmap_mode="r").shape == (5000, 32, 32, 3)
    assert np.load(release / "public" / "label.npy", mmap_mode="r").shape == (5000, 10)
    store = fmt.open_key_store(release / "secret" / "keys.zarr")
    pairs = store.read("encryption/private_index")
    assert pairs.shape == (5000, 2) and store.read("encryption/lam").shape == (5000, 6)
    assert np.array_equal(np.bincount(pairs[:, 0], minlength=100), [50] * 100)  # each private image first of 50
    assert not np.any(pairs[:, 0] == pairs[:, 1])  # its partner drawn from the other private images
    lam = store.read("encryption/lam")
    assert lam.max() <= 0.65 and lam[:, :2].sum(axis=1).min() >= 0.3 - 1e-6
