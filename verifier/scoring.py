"""Score a submission against the key store, streaming: one pass over the file, bounded memory.

Per encryption i with private images p_i1 .. p_im (m = k_private) and recovery r_i, on the
[-1, 1] scale: SSIM(r_i, p_ij) and L2(r_i, p_ij) = ||r_i - p_ij||_2 / sqrt(H W C)
(:mod:`verifier.metrics`).  Aggregates, as in 2020, are means over encryptions of per-encryption
max / mean / min; docs/FORMAT.md section 9 defines every one.

Scores are a membership oracle (a candidate image's SSIM tells whether it is private), so what is
published is limited: values rounded to :data:`DECIMALS` decimals and, with a holdout, only the
public part of the encryptions (:func:`holdout_mask` splits them by a keyed rule).
"""

from __future__ import annotations

import json
import math
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from challenge import format as fmt
from challenge.errors import UsageError, argument
from challenge.files import write_files
from challenge.keystream import row_words
from verifier import metrics
from challenge.npy import ROWS
from challenge.submission import DECRYPTION_FILE, Expected, expected_from_keys, open_for_scoring
from verifier.submission import Validation, ValueTally, check_shape, centered, validate

__all__ = [
    "DECIMALS", "METRICS", "PARTS", "SUCCESS_SSIM", "Accumulator", "Metric", "Scores", "format_table", "headline",
    "holdout_mask",
    "platform_scores", "published", "score", "score_array", "score_blocks", "selected_rows", "write_scores",
]

SUCCESS_SSIM = 0.8  # the 2020 success threshold: a recovery succeeds if its SSIM exceeds it
SCORES_JSON = "scores.json"
SCORES_TXT = "scores.txt"


@dataclass(frozen=True)
class Metric:
    """One published score (docs/FORMAT.md section 9): its name, which way is better and what it
    means, as the ``verify`` table, the leaderboard and the competition's pages say it.  A score
    averaged over the encryptions has ``per_encryption``: (ssim, l2), each (rows, k_private) of a
    block, to the (rows,) values whose exact mean it is; the shares are counted in
    :meth:`Accumulator.result`."""

    name: str
    better: str  # "higher" or "lower"
    meaning: str
    per_encryption: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None


METRICS = (  # the leaderboard's columns, in this order; the first ranks
    Metric("Max_SSIM", "higher", "mean over encryptions of the best SSIM against its private images (the ranking "
           "score)", lambda ssim, l2: ssim.max(axis=1)),
    Metric("Mean_SSIM", "higher", "mean over encryptions of the mean SSIM against its private images",
           lambda ssim, l2: ssim.mean(axis=1)),
    Metric("Min_L2", "lower", "mean over encryptions of the smallest RMS difference on [-1, 1]", lambda ssim, l2: l2.min(axis=1)),
    Metric("Max_L2", "lower", "mean over encryptions of the largest RMS difference", lambda ssim, l2: l2.max(axis=1)),
    Metric("Mean_L2", "lower", "mean over encryptions of the mean RMS difference", lambda ssim, l2: l2.mean(axis=1)),
    Metric("success_rate", "higher", f"share of encryptions whose best SSIM exceeds {SUCCESS_SSIM}"),
    Metric("recovered_share", "higher", f"share of the private images whose best SSIM, over every encryption that "
           f"contains them, exceeds {SUCCESS_SSIM}"),
)
DECIMALS = 4  # published scores: round half even of the exact float64 mean (docs/FORMAT.md section 9)
PARTS = ("public", "final")
_HOLDOUT_ROWS = 1 << 20  # rows of the split drawn at a time: 8 MB of keystream

Engine = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def headline() -> tuple[str, ...]:
    """The published scores' names, in the order of :data:`METRICS` (read when called: the table is
    the one place a score is added)."""
    return tuple(metric.name for metric in METRICS)


def published(value: float) -> float:
    """A score as published: ``round(value, DECIMALS)``, the exact float64 value rounded half to even."""
    return round(value, DECIMALS)


def holdout_mask(seed: bytes, n_encryptions: int, fraction: float) -> np.ndarray:
    """True for the encryptions held out for the final board.

    Encryption i is held out iff word i (little-endian uint64, bytes 8i .. 8i + 7) of the keystream
    purpose ``holdout`` keyed by the key store's seed (nonce ``holdout\\0`` + uint32 0) is below
    ``int(fraction * 2**64)``: anyone with the revealed keys can recompute the split, nobody
    without them can tell which encryptions count for the final board.
    """
    if not 0 < fraction < 1:
        raise UsageError(f"{argument('holdout')} is {fraction}; expected a fraction strictly between 0 and 1")
    bound = np.uint64(int(fraction * 2**64))
    mask = np.empty(n_encryptions, bool)
    for start in range(0, n_encryptions, _HOLDOUT_ROWS):
        stop = min(start + _HOLDOUT_ROWS, n_encryptions)
        words = row_words(seed, "holdout", first_row=start, n_rows=stop - start, words_per_row=1)
        mask[start:stop] = words[:, 0] < bound
    return mask


def selected_rows(store: fmt.KeyStore, holdout: float | None, part: str = "public") -> np.ndarray | None:
    """The encryptions a score covers under a holdout.

    Parameters
    ----------
    store : KeyStore
        The key store, whose seed draws the split.
    holdout : float or None
        The fraction held out for the final board, strictly between 0 and 1; None: no holdout.
    part : {'public', 'final'}, optional
        The part scored: the public leaderboard's, or the held-out one.

    Returns
    -------
    rows : ndarray of bool or None
        (N,): True for each encryption of ``part``, for :func:`score_array`'s ``selected``;
        None (all) without a holdout.

    Raises
    ------
    UsageError
        If ``holdout`` is not in (0, 1), ``part`` is unknown, or the part is empty.
    """
    if holdout is None:
        return None
    if part not in PARTS:
        raise UsageError(f"part {part!r}; expected one of {', '.join(PARTS)}")
    final = holdout_mask(bytes(store.read("seed")), store.params.n_encryptions, holdout)
    rows = final if part == "final" else ~final
    if not rows.any():
        raise UsageError(f"{argument('holdout', holdout)} leaves no encryption in the {part} part; "
                         "choose another fraction")
    return rows


@dataclass
class Scores:
    """Aggregates plus the per-encryption and per-private-image detail behind them."""

    summary: dict  # headline() name -> float, plus counts
    _: KW_ONLY
    encryptions: np.ndarray  # (E,) the encryption rows these scores cover, ascending
    max_ssim: np.ndarray  # (E,) per covered encryption
    best_column: np.ndarray  # (E,) which private image (column of private_index) gave max_ssim
    best_per_private: np.ndarray  # (n,) best SSIM over every covered encryption that contains the image

    def to_json(self) -> dict:
        """The published summary (rounded) and ``best(p)`` per private image (NaN: in no covered encryption)."""
        best = [None if np.isnan(v) else published(float(v)) for v in self.best_per_private]
        summary = {k: published(v) if isinstance(v, float) else v for k, v in self.summary.items()}
        return {**summary, "best_ssim_per_private": best}


class Accumulator:
    """Collects per-pair scores block by block; :meth:`result` aggregates them exactly.

    Per-encryption values are kept (one float64 per averaged metric: 40 MB for a million
    encryptions) so that the means are exactly rounded sums (``math.fsum``), independent of block
    size and order.  Only the ``selected`` encryptions (all by default) count.
    """

    def __init__(self, n_encryptions: int, n_private: int, selected: np.ndarray | None = None):
        self.averaged = tuple(metric for metric in METRICS if metric.per_encryption is not None)
        self.per_encryption = np.full((n_encryptions, len(self.averaged)), np.nan)  # a column per averaged metric
        self.best_column = np.zeros(n_encryptions, np.int16)
        self.best_per_private = np.full(n_private, -np.inf)
        self.selected = np.ones(n_encryptions, bool) if selected is None else selected
        self.filled = 0

    def add(self, start: int, ssim: np.ndarray, l2: np.ndarray, index: np.ndarray) -> None:
        stop = start + len(ssim)
        self.per_encryption[start:stop] = np.stack([metric.per_encryption(ssim, l2) for metric in self.averaged], axis=1)
        self.best_column[start:stop] = ssim.argmax(axis=1)
        counted = self.selected[start:stop]
        np.maximum.at(self.best_per_private, np.asarray(index)[counted].ravel(), ssim[counted].ravel())
        self.filled += len(ssim)

    def merge(self, start: int, part: "Accumulator") -> None:
        """Take in ``part``, the accumulator of rows ``start ..`` (their ``selected`` rows, as this one's):
        copies and an order-free maximum, so blocks added to parts merged in any order are added here."""
        stop = start + len(part.per_encryption)
        self.per_encryption[start:stop] = part.per_encryption
        self.best_column[start:stop] = part.best_column
        np.maximum(self.best_per_private, part.best_per_private, out=self.best_per_private)
        self.filled += part.filled

    def result(self) -> Scores:
        total = len(self.per_encryption)
        if self.filled != total:
            raise RuntimeError(f"scored {self.filled} of {total} encryptions")
        rows = np.flatnonzero(self.selected)
        n = len(rows)
        values = self.per_encryption[rows]
        summary = {metric.name: math.fsum(column) / n for metric, column in zip(self.averaged, values.T)}
        max_ssim = values[:, self.averaged.index(METRICS[0])]
        seen = np.isfinite(self.best_per_private)
        summary["success_rate"] = float(np.count_nonzero(max_ssim > SUCCESS_SSIM)) / n
        summary["recovered_share"] = float(np.count_nonzero(self.best_per_private > SUCCESS_SSIM)) / len(seen)
        summary["n_encryptions"] = n
        summary["n_private"] = len(seen)
        best = np.where(seen, self.best_per_private, np.nan)
        return Scores(summary, encryptions=rows, max_ssim=max_ssim.copy(), best_column=self.best_column[rows],
                      best_per_private=best)


def _accumulate(store: fmt.KeyStore, expected: Expected, selected: np.ndarray | None, engine: Engine):
    """An accumulator and the ``on_rows(start, block)`` that feeds it blocks on the [-1, 1] scale."""
    private_images = store.read("private/images")
    index_array = store["encryption/private_index"]
    acc = Accumulator(expected.n, len(private_images), selected)

    def on_rows(start: int, block: np.ndarray) -> None:
        index = index_array[start : start + len(block)]
        acc.add(start, *engine(block, private_images, index), index)
    return acc, on_rows


def score(folder: Path, store: fmt.KeyStore, *, expected: Expected | None = None, rows: int = ROWS,
          engine: Engine = metrics.score_pairs, selected: np.ndarray | None = None) -> tuple[Validation, Scores | None]:
    """Validate ``folder`` and, if it is valid, score it; the file and the keys are read once, in blocks.

    :func:`verifier.distributed.score_on_cluster` gives the same on a Dask cluster.
    """
    expected = expected or expected_from_keys(store)
    acc, on_rows = _accumulate(store, expected, selected, engine)
    validation = validate(folder, expected, rows=rows, on_rows=on_rows)
    return validation, acc.result() if validation.valid else None


def score_blocks(blocks: Iterable[np.ndarray], store: fmt.KeyStore, expected: Expected, *,
                 selected: np.ndarray | None = None, engine: Engine = metrics.score_pairs) -> Scores:
    """Score recoveries made in memory (blocks in the submission's dtypes and domain), e.g. the floors."""
    acc, on_rows = _accumulate(store, expected, selected, engine)
    start = 0
    for block in blocks:
        on_rows(start, centered(block, expected.domain))
        start += len(block)
    return acc.result()


def score_array(decryption, keys: Path | str | fmt.KeyStore, *, release: Path | str | None = None, rows: int = ROWS,
                selected: np.ndarray | None = None, engine: Engine = metrics.score_pairs) -> Scores:
    """Score a recovery held in memory against the ground truth in ``keys``.

    The array gets the checks ``verify`` gives ``decryption.npy`` and the same streaming scorer, so
    the scores are ``verify``'s.

    Parameters
    ----------
    decryption : array_like
        (N, H, W, C): float32 or float64 in the release's pixel domain, or uint8; any byte order.
    keys : path or KeyStore
        The key store, a path or opened (:func:`challenge.open_key_store`).
    release : path, optional
        The release: the key store must then be the one its manifest commits to.
    rows : int, optional
        Rows scored at a time: bounds memory, never changes a score.
    selected : ndarray of bool, optional
        (N,): the encryptions that count (:func:`selected_rows`); all by default.
    engine : callable, optional
        The pair scorer (:func:`verifier.metrics.score_pairs`); tests swap in a reference.

    Returns
    -------
    scores : Scores
        ``scores.summary`` maps each metric to its value (:func:`platform_scores` rounds them as
        published), beside per-encryption and per-private-image detail.

    Raises
    ------
    UsageError
        If the array is not a valid submission (shape, dtype, NaN, values outside the domain), or
        the key store is not the release's.
    """
    if isinstance(keys, fmt.KeyStore):
        expected, store = expected_from_keys(keys), keys
    else:
        expected, store = open_for_scoring(None if release is None else Path(release), Path(keys))
    decryption = np.asarray(decryption)
    problems = check_shape(decryption, expected)
    if not problems:
        tally = ValueTally(expected)
        for start in range(0, expected.n, rows):
            tally.add(start, _native(decryption[start : start + rows]))
        problems = tally.problems()
    if problems:
        raise UsageError("the decryption array is not a valid submission: "
                         + "; ".join(p.removeprefix(f"{DECRYPTION_FILE}: ") for p in problems))
    blocks = (_native(decryption[a : a + rows]) for a in range(0, expected.n, rows))
    return score_blocks(blocks, store, expected, selected=selected, engine=engine)


def _native(block: np.ndarray) -> np.ndarray:
    """A contiguous block in native byte order, as the numba kernels need."""
    return np.ascontiguousarray(block, dtype=block.dtype.newbyteorder("="))


def format_table(scores: Scores) -> str:
    """The scores as a table for people.

    Parameters
    ----------
    scores : Scores
        From :func:`score_array`.

    Returns
    -------
    table : str
        Aligned ``name  value  meaning`` lines, one per metric (with how many images
        ``recovered_share`` counts).
    """
    s = scores.summary
    counted = {"recovered_share": f" ({round(s['recovered_share'] * s['n_private'])} of {s['n_private']})"}
    return "\n".join(f"{m.name:<16}{published(s[m.name]):9.4f}  {m.meaning}{counted.get(m.name, '')}" for m in METRICS)


def platform_scores(scores: Scores) -> dict:
    """The scores as challenge platforms read them (``scores.json``).

    Parameters
    ----------
    scores : Scores
        From :func:`score_array`.

    Returns
    -------
    scores : dict
        Each headline metric's name -> its value, rounded as published.
    """
    return {name: published(scores.summary[name]) for name in headline()}


def write_scores(scores: Scores, out: Path) -> list[Path]:
    """``scores.json`` (flat JSON object) and ``scores.txt`` (``key: value`` lines) in ``out``."""
    flat = platform_scores(scores)
    return write_files(Path(out), {
        SCORES_JSON: json.dumps(flat, indent=2) + "\n",
        SCORES_TXT: "".join(f"{name}: {value!r}\n" for name, value in flat.items()),
    }, "scores files")
