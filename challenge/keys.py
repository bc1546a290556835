"""Draw every secret of a release from the seed: which images, in what order, mixed how.

All draws read the ChaCha20 keystreams of :mod:`challenge.keystream`, one purpose each, indexed
by the *published* row, so a row's keys depend only on the seed, the parameters and its index.
The bulky per-pixel sign masks are drawn per chunk by :func:`sign_bits`; everything else is
small (about 50 bytes a row) and drawn for the whole release at once by :func:`draw_plan`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from challenge.errors import argument
from challenge.geometry import image_values, sign_bytes
from challenge.keystream import random_order, row_bytes, row_words, uniform_below
from challenge.lambdas import LambdaRejected, draw_lambda
from challenge.params import ParameterError, Params

__all__ = ["Plan", "distinct_below", "draw_plan", "lambda_rows", "select_private", "sign_bits"]

_LAMBDA_ROW_BLOCK = 1 << 16


@dataclass(frozen=True)
class Plan:
    """The small secret keys of a release, row i describing published encryption i.

    selection : int64 (n_private,) source-set index of each ground-truth private image, ascending.
    private_index : int32 (N, k_private) rows of the ground-truth table; column 0 is the image
        this encryption belongs to, the others its partners.
    public_bank_index : int32 (N, k_public) patch-bank index of each public patch.
    lam : float32 (N, k) mixing coefficients, private images first.
    """

    selection: np.ndarray
    private_index: np.ndarray
    public_bank_index: np.ndarray
    lam: np.ndarray


def select_private(seed: bytes, labels: np.ndarray, n_private: int, balanced: bool) -> np.ndarray:
    """Choose ``n_private`` source images uniformly at random (or ``balanced`` per class)."""
    if len(labels) < n_private:
        raise ParameterError(f"the private set has {len(labels)} images, fewer than {argument('n_private', n_private)}")
    order = random_order(seed, "select", len(labels))
    if not balanced:
        return np.sort(order[:n_private])
    classes = np.unique(labels)
    if n_private % len(classes):
        raise ParameterError(f"{argument('balanced', True)} needs {argument('n_private')} divisible by the "
                             f"{len(classes)} classes, got {n_private}")
    quota = n_private // len(classes)
    shuffled = labels[order]
    chosen = [order[shuffled == c][:quota] for c in classes]
    short = [int(c) for c, picked in zip(classes, chosen) if len(picked) < quota]
    if short:
        raise ParameterError(f"{argument('balanced', True)} needs {quota} images of each class; "
                             f"classes {short} have fewer")
    return np.sort(np.concatenate(chosen))


def distinct_below(words: np.ndarray, bound: int, excluded: np.ndarray | None = None) -> np.ndarray:
    """Per row, ``words.shape[1]`` distinct integers in ``[0, bound)`` avoiding ``excluded``.

    Draw t picks uniformly among the values still free, then is shifted past every taken value
    in ascending order, so each row is a uniform sample without replacement using exactly one
    word per draw.
    """
    n_rows, m = words.shape
    taken = np.empty((n_rows, 0), np.int64) if excluded is None else excluded.astype(np.int64)
    out = np.empty((n_rows, m), np.int64)
    for t in range(m):
        j = uniform_below(words[:, t], bound - taken.shape[1])
        for column in np.sort(taken, axis=1).T:
            j += j >= column
        out[:, t] = j
        taken = np.concatenate([taken, j[:, None]], axis=1)
    return out


def lambda_rows(key: bytes, params: Params, *, first_row: int, n_rows: int, version: int) -> np.ndarray:
    """float32 (n_rows, k): the coefficients of rows ``first_row ..`` (:func:`challenge.lambdas.draw_lambda`)."""
    try:
        return draw_lambda(key, params.lambda_constraints, first_row=first_row, n_rows=n_rows, version=version)
    except LambdaRejected as e:
        raise ParameterError(str(e)) from None


def draw_plan(seed: bytes, params: Params, *, labels: np.ndarray, bank_size: int, version: int) -> Plan:
    """Every small secret of the release (see :class:`Plan`); ``seed`` is the stream key (FORMAT.md 7.1)."""
    n, N = params.n_private, params.n_encryptions
    if params.k_public and bank_size < params.k_public:
        raise ParameterError(f"the public bank has {bank_size} patches, fewer than k - k_private = {params.k_public}")
    selection = select_private(seed, labels, n, params.balanced)
    canonical_row = random_order(seed, "order", N)
    first = (canonical_row // params.per_image)[:, None]
    partner_words = row_words(seed, "partners", first_row=0, n_rows=N, words_per_row=params.k_private - 1)
    partners = distinct_below(partner_words, n, excluded=first)
    private_index = np.concatenate([first, partners], axis=1).astype(np.int32)
    public_words = row_words(seed, "public", first_row=0, n_rows=N, words_per_row=params.k_public)
    public_bank_index = distinct_below(public_words, bank_size).astype(np.int32)
    lam = np.concatenate(
        [lambda_rows(seed, params, first_row=a, n_rows=min(_LAMBDA_ROW_BLOCK, N - a), version=version)
         for a in range(0, N, _LAMBDA_ROW_BLOCK)]
    )
    return Plan(selection, private_index, public_bank_index, lam)


def sign_bits(seed: bytes, first_row: int, n_rows: int, image_shape: tuple[int, int, int]) -> np.ndarray:
    """uint8 (n_rows, ceil(H W C / 8)): bit-packed sign masks, one bit per value of an ``image_shape``
    image (little bit order; bit 1 means the value is negated).  Row r is bytes ``[b r, b (r + 1))``
    of the ``sign`` stream; the pad bits past the last value are zero, so a row's bytes say nothing
    the image does not use."""
    rows = row_bytes(seed, "sign", first_row=first_row, n_rows=n_rows, bytes_per_row=sign_bytes(image_shape))
    used = image_values(image_shape) % 8
    if used:
        rows[:, -1] &= (1 << used) - 1
    return rows
