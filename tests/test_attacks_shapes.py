"""The attacks and baselines at any image shape: synthetic releases (tests/synthetic.py) of
28x28x1 and 9x11x3 beside the default 32x32x3, the shape read from encryption.npy's header."""

import numpy as np
import pytest

from attacks import graph as G
from attacks.pool import pool_attack
from attacks.public import open_public
from challenge.errors import UsageError
from challenge.submission import Expected
from tests.naive import gradients_reference
from tests.synthetic import SHAPES, synthetic_release
from verifier.baselines import blind, pairing_blocks


@pytest.mark.parametrize("shape", SHAPES)
def test_gradients_match_the_pixel_loop(shape):
    images = np.random.default_rng(1).random((3, *shape)).astype(np.float32)
    np.testing.assert_array_equal(G.gradients(images), gradients_reference(images))


@pytest.mark.parametrize("shape", SHAPES)
def test_open_public_takes_the_shape_from_the_encryptions(tmp_path, shape):
    truth = synthetic_release(tmp_path, shape)
    release = open_public(tmp_path)
    assert release.image_shape == shape
    np.testing.assert_array_equal(np.concatenate(list(release.encryption_blocks(7))), truth.encryptions)


@pytest.mark.parametrize("bad", [(120, 28, 28, 2), (120, 784), (119, 28, 28, 1)])
def test_encryptions_of_no_image_shape_are_one_line(tmp_path, bad):
    synthetic_release(tmp_path, (28, 28, 1))
    np.save(tmp_path / "public" / "encryption.npy", np.zeros(bad, np.float32))
    with pytest.raises(UsageError, match=r"encryption\.npy: not the release's encryptions .*C in \(1, 3\)") as error:
        open_public(tmp_path)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("shape", [(28, 28, 1), (9, 11, 3)])
def test_graph_attack_finds_the_pairing_at_any_shape(tmp_path, shape):
    truth = synthetic_release(tmp_path, shape, one_patch=True)
    result = G.graph_attack(open_public(tmp_path))
    assert G.pair_accuracy(result.groups, truth.index, truth.params.n_private) >= 0.95
    assert result.images.shape == (truth.params.n_private, *shape) and np.isfinite(result.images).all()


class _Pool:
    """The part of an ImageSet the pool attack reads, at any shape."""

    def __init__(self, images, labels, class_names):
        self.images, self.labels, self.class_names = images, labels, class_names

    def __len__(self):
        return len(self.images)


@pytest.mark.parametrize("shape", [(28, 28, 1), (9, 11, 3)])
def test_pool_attack_finds_a_private_image_of_each_encryption(tmp_path, shape):
    truth = synthetic_release(tmp_path, shape)
    decoys = np.random.default_rng(9).integers(0, 256, (50, *shape), np.uint8)
    images = np.concatenate([truth.private, decoys])
    pool = _Pool(images, np.arange(len(images)) % 3, [f"class {c}" for c in range(3)])
    choice, _ = pool_attack(open_public(tmp_path), pool, rows=16)
    assert np.mean((choice[:, None] == truth.index).any(axis=1)) >= 0.95


def test_a_pool_of_another_shape_is_refused(tmp_path):
    synthetic_release(tmp_path, (28, 28, 1))
    pool = _Pool(np.zeros((5, 32, 32, 3), np.uint8), np.zeros(5, np.int64), [])
    with pytest.raises(UsageError, match="pool's images are 32x32x3 and the release's 28x28x1"):
        pool_attack(open_public(tmp_path), pool)


class _KeyStore:
    """The part of a key store the pairing baseline reads, from a synthetic release's truth."""

    def __init__(self, truth):
        self.params = truth.params
        self.arrays = {"private/images": truth.private, "encryption/private_index": truth.index,
                       "encryption/lam": truth.lam.astype(np.float32)}

    def __getitem__(self, name):
        return self.arrays[name]

    def rows(self, name, start=0, stop=None):
        return self.arrays[name][start:stop]


@pytest.mark.parametrize("shape", SHAPES)
def test_pairing_recovers_exact_mixes_at_any_shape(tmp_path, shape):
    """One public patch: |x| is exactly the model the pairing baseline fits, so it finds the images."""
    truth = synthetic_release(tmp_path, shape, one_patch=True)
    release = open_public(tmp_path)
    got = np.concatenate(list(pairing_blocks(_KeyStore(truth), release.encryption_blocks(25), release.expected, rows=25)))
    assert got.shape == truth.encryptions.shape
    np.testing.assert_allclose(got, truth.private[truth.index[:, 0]] / 255.0, atol=1e-4)


@pytest.mark.parametrize("shape", [(28, 28, 1), (9, 11, 3)])
def test_blind_keeps_the_shape(shape):
    x = np.random.default_rng(3).standard_normal((4, *shape)).astype(np.float32)
    out = blind(x, Expected(4, "centered", shape))
    assert out.shape == x.shape and out.min() == -1 and out.max() == 1


def test_graph_attack_does_not_whiten_features_too_wide_for_a_covariance(tmp_path, monkeypatch):
    """A whitening holds D x D matrices: at 512 x 512 x 3 (D = 786,432) that is terabytes.  Above
    MAX_WHITENED values per image the attack keeps the pixel differences, never forming one."""
    side = int(np.ceil(np.sqrt(G.MAX_WHITENED / 3 + 1)))  # the smallest square colour image above the limit
    truth = synthetic_release(tmp_path, (side, side, 3), one_patch=True)

    def refuse(*args, **kwargs):
        raise AssertionError("a covariance of features wider than MAX_WHITENED was formed")

    monkeypatch.setattr(G, "whitener", refuse)
    result = G.graph_attack(open_public(tmp_path))
    assert G.pair_accuracy(result.groups, truth.index, truth.params.n_private) >= 0.95
