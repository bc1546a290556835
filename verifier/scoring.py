"""Score a submission against the key store, streaming: one pass over the file, bounded memory.

Per encryption i with private images p_i1 .. p_im (m = k_private) and recovery r_i, on the
[-1, 1] scale: SSIM(r_i, p_ij) and L2(r_i, p_ij) = ||r_i - p_ij||_2 / sqrt(3072)
(:mod:`verifier.metrics`).  Aggregates, as in 2020, are means over encryptions of per-encryption
max / mean / min; docs/FORMAT.md section 9 defines every one.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from challenge import format as fmt
from challenge.errors import UsageError
from verifier import metrics
from verifier.submission import ROWS, Expected, Validation, expected_from_keys, validate

SUCCESS_SSIM = 0.8  # the 2020 success threshold: a recovery succeeds if its SSIM exceeds it
SCORES_JSON = "scores.json"
SCORES_TXT = "scores.txt"
HEADLINE = ("Max_SSIM", "Mean_SSIM", "Min_L2", "Max_L2", "Mean_L2", "success_rate", "recovered_share")

Engine = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def score_pairs_reference(recovered, private_images, private_index) -> tuple[np.ndarray, np.ndarray]:
    """Plain numpy stand-in for :func:`verifier.metrics.score_pairs` (same contract), for the tests."""
    index = np.asarray(private_index)
    rec = np.repeat(np.asarray(recovered, dtype=np.float64), index.shape[1], axis=0)
    truth = private_images[index.ravel()].astype(np.float64) / 127.5 - 1.0
    shape = index.shape
    return metrics.ssim_reference(rec, truth).reshape(shape), metrics.l2_reference(rec, truth).reshape(shape)


@dataclass
class Scores:
    """Aggregates plus the per-encryption and per-private-image detail behind them."""

    summary: dict  # HEADLINE name -> float, plus counts
    max_ssim: np.ndarray  # (N,) per encryption
    best_column: np.ndarray  # (N,) which private image (column of private_index) gave max_ssim
    best_per_private: np.ndarray  # (n,) best SSIM over every encryption that contains the image

    def to_json(self) -> dict:
        best = [None if np.isnan(v) else float(v) for v in self.best_per_private]  # NaN: in no encryption
        return {**self.summary, "best_ssim_per_private": best}


class Accumulator:
    """Collects per-pair scores block by block; :meth:`result` aggregates them exactly.

    Per-encryption values are kept (5 float64 each: 40 MB for a million encryptions) so that the
    means are exactly rounded sums (``math.fsum``), independent of block size and order.
    """

    def __init__(self, n_encryptions: int, n_private: int):
        self.per_encryption = np.full((n_encryptions, 5), np.nan)  # max/mean SSIM, min/max/mean L2
        self.best_column = np.zeros(n_encryptions, np.int16)
        self.best_per_private = np.full(n_private, -np.inf)
        self.filled = 0

    def add(self, start: int, ssim: np.ndarray, l2: np.ndarray, index: np.ndarray) -> None:
        stop = start + len(ssim)
        self.per_encryption[start:stop] = np.stack(
            [ssim.max(axis=1), ssim.mean(axis=1), l2.min(axis=1), l2.max(axis=1), l2.mean(axis=1)], axis=1)
        self.best_column[start:stop] = ssim.argmax(axis=1)
        np.maximum.at(self.best_per_private, index.ravel(), ssim.ravel())
        self.filled += len(ssim)

    def result(self) -> Scores:
        n = len(self.per_encryption)
        if self.filled != n:
            raise RuntimeError(f"scored {self.filled} of {n} encryptions")
        means = [math.fsum(column) / n for column in self.per_encryption.T]
        max_ssim = self.per_encryption[:, 0]
        seen = np.isfinite(self.best_per_private)
        summary = dict(zip(HEADLINE[:5], means))
        summary["success_rate"] = float(np.count_nonzero(max_ssim > SUCCESS_SSIM)) / n
        summary["recovered_share"] = float(np.count_nonzero(self.best_per_private > SUCCESS_SSIM)) / len(seen)
        summary["n_encryptions"] = n
        summary["n_private"] = len(seen)
        best = np.where(seen, self.best_per_private, np.nan)
        return Scores(summary, max_ssim.copy(), self.best_column.copy(), best)


def score(folder: Path, store: fmt.KeyStore, *, expected: Expected | None = None, rows: int = ROWS,
          engine: Engine = metrics.score_pairs) -> tuple[Validation, Scores | None]:
    """Validate ``folder`` and, if it is valid, score it; the file and the keys are read once, in blocks."""
    expected = expected or expected_from_keys(store)
    private_images = store.read("private/images")
    index_array = store["encryption/private_index"]
    acc = Accumulator(expected.n, len(private_images))

    def on_rows(start: int, block: np.ndarray) -> None:
        index = index_array[start : start + len(block)]
        acc.add(start, *engine(block, private_images, index), index)

    validation = validate(folder, expected, rows=rows, on_rows=on_rows)
    return validation, acc.result() if validation.valid else None


def format_table(scores: Scores) -> str:
    """The scores as aligned ``name  value  meaning`` lines."""
    s = scores.summary
    n_rec = round(s["recovered_share"] * s["n_private"])
    lines = [
        ("Max_SSIM", s["Max_SSIM"], "mean over encryptions of the best SSIM against its private images (ranks)"),
        ("Mean_SSIM", s["Mean_SSIM"], "mean over encryptions of the mean SSIM"),
        ("Min_L2", s["Min_L2"], "mean over encryptions of the smallest RMS difference on [-1, 1]"),
        ("Max_L2", s["Max_L2"], "mean over encryptions of the largest RMS difference"),
        ("Mean_L2", s["Mean_L2"], "mean over encryptions of the mean RMS difference"),
        ("success_rate", s["success_rate"], f"share of encryptions with Max_SSIM > {SUCCESS_SSIM}"),
        ("recovered_share", s["recovered_share"],
         f"share of private images with best SSIM > {SUCCESS_SSIM} ({n_rec} of {s['n_private']})"),
    ]
    return "\n".join(f"{name:<16}{value:9.4f}  {meaning}" for name, value, meaning in lines)


def platform_scores(scores: Scores) -> dict:
    """The flat name -> number mapping challenge platforms read."""
    return {name: scores.summary[name] for name in HEADLINE}


def write_atomic(path: Path, text: str) -> None:
    """Write via a unique temporary file in the same folder and rename: readers never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_scores(scores: Scores, out: Path) -> list[Path]:
    """``scores.json`` (flat JSON object) and ``scores.txt`` (``key: value`` lines) in ``out``."""
    flat = platform_scores(scores)
    paths = [out / SCORES_JSON, out / SCORES_TXT]
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(paths[0], json.dumps(flat, indent=2) + "\n")
        write_atomic(paths[1], "".join(f"{name}: {value!r}\n" for name, value in flat.items()))
    except OSError as e:
        raise UsageError(f"{out}: cannot write the scores files ({e.strerror}); choose another folder with --out") from None
    return paths
