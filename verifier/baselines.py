"""Reference submissions that show the scale of the metric on a release.

``oracle``: the ground truth (each encryption's first private image, uint8): Max_SSIM 1, Min_L2 0.
``blind``: |encryption| stretched per image to the domain's range, what one gets without any key.
``noise``: uniform random values in the domain's range (seeded).
``constant``: one flat grey image for every encryption, its level the one that scores best
(fitted with the keys): the floor any attack must beat.
``mean``: the per-pixel mean of the private images for every encryption: what knowing the data
set's average image alone gets.
``pairing``: what the last step of Carlini et al.'s attack recovers once its first steps (which
encryptions share a private image, and their lambdas) are solved, here taken from the keys: a
least-squares fit of |encryption| by lambda-weighted private images plus a per-pixel term for the
average public patch.  In the positive domain |encryption| is the mix, and this recovers the
images; in the centred domain the mask hides the signs, and it does not.
Each is written block by block, so a baseline for a million encryptions needs little memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from challenge import format as fmt
from challenge.domain import UINT8_TO_CENTERED
from challenge.errors import UsageError, argument
from verifier import metrics
from challenge.npy import ROWS
from challenge.submission import Expected, encryption_blocks, write_submission

__all__ = ["FLOORS", "FROM_KEYS", "KINDS", "METHODS", "best_grey_level", "blind", "floor_blocks", "floor_image", "write_baseline"]

KINDS = ("oracle", "blind", "noise", "constant", "mean", "pairing")
# baselines made from the ground truth: written for their owner's eyes only (0600 in a 0700 folder)
FROM_KEYS = ("oracle", "constant", "mean", "pairing")
FLOORS = ("constant", "mean")  # trivial submissions every leaderboard shows as reference rows
METHODS = {
    "oracle": "oracle: each encryption's first private image (the ground truth)",
    "blind": "blind: |encryption| stretched per image to the pixel domain's range",
    "noise": "noise: uniform random values in the pixel domain's range",
    "constant": "constant: one flat grey image for every encryption, the uint8 level with the best Max_SSIM",
    "mean": "mean: the per-pixel mean of the private images (uint8) for every encryption",
    "pairing": "pairing: least-squares fit of |encryption| by lambda-mixes of the private images, "
    "given the true pairing and lambdas",
}


def oracle_blocks(store: fmt.KeyStore, rows: int = ROWS) -> Iterator[np.ndarray]:
    private_images = store.read("private/images")
    index = store["encryption/private_index"]
    for start in range(0, index.shape[0], rows):
        yield private_images[index[start : start + rows, 0]]


def best_grey_level(store: fmt.KeyStore) -> int:
    """The uint8 level v (0..255, ties: the smallest) whose flat image scores the highest Max_SSIM.

    SSIM(flat v, p) is computed once per level and private image with the scorer's own kernel;
    Max_SSIM(v) is then the mean over encryptions of its best private image, summed in fixed
    blocks of :data:`ROWS` rows so the choice never depends on options.
    """
    private_images = store.read("private/images")
    n = len(private_images)
    flats = np.broadcast_to(UINT8_TO_CENTERED[:, None, None, None], (256, *private_images.shape[1:]))
    table = metrics.score_pairs(flats, private_images, np.tile(np.arange(n), (256, 1)))[0]  # (256, n)
    index = store["encryption/private_index"]
    totals = np.zeros(256)
    for start in range(0, index.shape[0], ROWS):
        totals += table[:, index[start : start + ROWS]].max(axis=2).sum(axis=1)
    return int(np.argmax(totals))


def _repeat(image: np.ndarray, n: int, rows: int) -> Iterator[np.ndarray]:
    for start in range(0, n, rows):
        yield np.broadcast_to(image, (min(rows, n - start), *image.shape))


def floor_blocks(kind: str, store: fmt.KeyStore, expected: Expected, rows: int = ROWS) -> Iterator[np.ndarray]:
    """uint8 blocks of the ``constant`` or ``mean`` baseline: one image repeated for every encryption."""
    return _repeat(floor_image(kind, store), expected.n, rows)


def floor_image(kind: str, store: fmt.KeyStore) -> np.ndarray:
    """The one uint8 image the ``constant`` or ``mean`` baseline submits for every encryption."""
    if kind == "constant":
        return np.full(store["private/images"].shape[1:], best_grey_level(store), np.uint8)
    if kind == "mean":
        return np.rint(store.read("private/images").mean(axis=0)).astype(np.uint8)
    raise ValueError(f"{kind!r} is not a floor; expected one of {', '.join(FLOORS)}")


def blind(encryptions: np.ndarray, expected: Expected) -> np.ndarray:
    """|x| rescaled per image so its smallest value is the domain's low end and its largest the high end."""
    lo, hi = expected.value_range
    a = np.abs(encryptions.astype(np.float64)).reshape(len(encryptions), -1)
    amin = a.min(axis=1, keepdims=True)
    width = a.max(axis=1, keepdims=True) - amin
    stretched = np.divide(a - amin, width, out=np.full_like(a, 0.5), where=width > 0)
    return (lo + stretched * (hi - lo)).astype(np.float32).reshape(encryptions.shape)


def noise_blocks(expected: Expected, seed: int, rows: int = ROWS) -> Iterator[np.ndarray]:
    lo, hi = expected.value_range
    rng = np.random.default_rng(seed)
    for start in range(0, expected.n, rows):
        count = min(rows, expected.n - start)
        yield rng.uniform(lo, hi, (count, *expected.shape[1:])).astype(np.float32)


def pairing_blocks(store: fmt.KeyStore, encryptions: Iterator[np.ndarray], expected: Expected,
                   rows: int = ROWS) -> Iterator[np.ndarray]:
    """Solve min ||M X - |encryption| ||^2 over all encryptions, streaming the normal equations.

    Row i of M holds lam_ij at the column of private image j and the public lambdas' sum in a
    last column, whose unknown is the average public patch.  Each encryption then submits its
    first private image as solved, clipped to the domain.
    """
    n, k_private = store.params.n_private, store.params.k_private
    image_shape = store["private/images"].shape[1:]
    gram, moments = np.zeros((n + 1, n + 1)), np.zeros((n + 1, int(np.prod(image_shape))))
    start = 0
    for block in encryptions:
        stop = start + len(block)
        index, lam = store.rows("encryption/private_index", start, stop), store.rows("encryption/lam", start, stop)
        design = np.zeros((len(block), n + 1))
        for j in range(k_private):
            np.add.at(design, (np.arange(len(block)), index[:, j]), lam[:, j].astype(np.float64))
        design[:, n] = lam[:, k_private:].astype(np.float64).sum(axis=1)
        gram += design.T @ design
        moments += design.T @ np.abs(block.reshape(len(block), -1).astype(np.float64))
        start = stop
    solved = np.linalg.lstsq(gram, moments, rcond=None)[0][:n]
    lo, hi = expected.value_range
    images = np.clip(solved, lo, hi).astype(np.float32).reshape(n, *image_shape)
    first = store["encryption/private_index"]
    for start in range(0, expected.n, rows):
        yield images[first[start : start + rows, 0]]


def write_baseline(kind: str, out: Path, expected: Expected, *, store: fmt.KeyStore | None = None,
                   release: Path | None = None, seed: int = 0, rows: int = ROWS, force: bool = False) -> Path:
    """Write a baseline submission into ``out``: the scale of the scores on a release.

    Parameters
    ----------
    kind : str
        One of :data:`KINDS`: ``oracle`` (the ground truth), ``blind`` (``|encryption|``
        stretched to the domain), ``noise``, ``constant`` and ``mean`` (the floors), ``pairing``
        (a least-squares fit given the true pairing and lambdas).
    out : path
        The submission folder.
    expected : Expected
        What the release's submissions look like (``release.expected`` of :func:`attacks.open_public`).
    store : KeyStore, optional
        The key store: needed by oracle, constant, mean and pairing.
    release : path, optional
        The release folder: needed by blind and pairing.
    seed : int, optional
        The noise baseline's random seed.
    rows : int, optional
        Rows made at a time: bounds memory.
    force : bool, optional
        Replace an existing submission.

    Returns
    -------
    path : Path
        The ``decryption.npy`` written.

    Raises
    ------
    UsageError
        If ``kind`` is unknown or lacks ``store`` or ``release``, or the submission cannot be
        written (:func:`challenge.write_submission`).
    """
    keys = argument("store", flag="--keys")  # as a message names it
    if kind == "oracle":
        if store is None:
            raise UsageError(f"the oracle baseline needs {keys} (it submits the ground truth)")
        blocks, dtype = oracle_blocks(store, rows), "uint8"
    elif kind == "blind":
        if release is None:
            raise UsageError(f"the blind baseline needs {argument('release')} (it reads public/encryption.npy)")
        blocks, dtype = (blind(block, expected) for block in encryption_blocks(release, expected, rows)), "float32"
    elif kind == "pairing":
        if store is None or release is None:
            raise UsageError(f"the pairing baseline needs {keys} (the pairing and lambdas) and {argument('release')} "
                             "(the encryptions)")
        blocks, dtype = pairing_blocks(store, encryption_blocks(release, expected, rows), expected, rows), "float32"
    elif kind == "noise":
        blocks, dtype = noise_blocks(expected, seed, rows), "float32"
    elif kind in FLOORS:
        if store is None:
            raise UsageError(f"the {kind} baseline needs {keys} (it is fitted to the private images)")
        blocks, dtype = floor_blocks(kind, store, expected, rows), "uint8"
    else:
        raise UsageError(f"unknown baseline {kind!r}; expected one of {', '.join(KINDS)}")
    metadata = {"team": "baseline", "method": METHODS[kind]}
    return write_submission(out, blocks, expected=expected, dtype=dtype, metadata=metadata, force=force,
                            private=kind in FROM_KEYS)
