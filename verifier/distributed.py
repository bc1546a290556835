"""Scoring and auditing on a Dask cluster.

Scoring: each task reads one block of ``decryption.npy`` from its path, checks its values and
scores it; the client merges the blocks into the scores of one pass.

The client checks the folder, the metadata and the file's header (:func:`check_files`), sends
each task the rows of ``private_index`` it needs (the private images go once to every worker),
and adds what comes back to one :class:`Accumulator`: its sums are exact (``math.fsum``) and its
maxima order-free, and every block is the block a single process scores, so the scores are the
same to the last bit.  Value tallies are merged in row order, so a bad file gets the same
problems.  The workers open the submission themselves: it must be at a path they all see.

Auditing (:func:`audit_on_cluster`): the client reads each chunk's keys from the key store and
sends them to a task, which opens the release's ``.npy`` files by their paths and returns the
chunk's findings (:func:`verifier.audit.check_chunk`); the client merges them in row order, a few
chunks per worker in flight, so the report is the one of a single process.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from challenge import format as fmt
from challenge.npy import ROWS, NpyFile
from challenge.progress import Progress
from challenge.submission import Expected
from verifier import metrics
from verifier.audit import RowContext, RowFindings, RunChunks, check_chunk
from verifier.scoring import Accumulator, Engine, Scores
from verifier.submission import Validation, ValueTally, centered, check_files

__all__ = ["audit_on_cluster", "score_image_on_cluster", "score_on_cluster"]


def score_on_cluster(client, folder: Path, store: fmt.KeyStore, expected: Expected, *, rows: int = ROWS,
                     engine: Engine = metrics.score_pairs,
                     selected: np.ndarray | None = None) -> tuple[Validation, Scores | None]:
    """What :func:`verifier.scoring.score` returns, computed by ``client``'s workers, ``rows`` rows a task."""
    validation = check_files(folder, expected)
    if validation.array is None:
        return validation, None
    tally, acc = _score_rows(client, validation.array, store, expected, rows, engine, selected)
    validation.problems += tally.problems()
    return validation, acc.result() if validation.valid else None


def score_image_on_cluster(client, image: np.ndarray, store: fmt.KeyStore, expected: Expected, *,
                           rows: int = ROWS, selected: np.ndarray | None = None) -> Scores:
    """The scores of one uint8 image submitted for every encryption (a leaderboard's floors)."""
    return _score_rows(client, _Repeated(image), store, expected, rows, metrics.score_pairs, selected)[1].result()


@dataclass(frozen=True)
class _Repeated:
    """A submission that is one image repeated: rows made where they are scored, never sent."""

    image: np.ndarray

    def read_rows(self, start: int, stop: int) -> np.ndarray:
        return np.broadcast_to(self.image, (stop - start, *self.image.shape))


def _score_rows(client, source: NpyFile | _Repeated, store: fmt.KeyStore, expected: Expected, rows: int,
                engine: Engine, selected: np.ndarray | None) -> tuple[ValueTally, Accumulator]:
    private_images = store.read("private/images")
    shared = client.scatter(private_images, broadcast=True, hash=False)
    index = {start: store.rows("encryption/private_index", start, start + rows) for start in range(0, expected.n, rows)}
    futures = {client.submit(_score_block, source, start, start + len(index[start]), expected, shared,
                             index[start], engine, pure=False): start for start in index}
    from distributed import as_completed

    acc = Accumulator(expected.n, len(private_images), selected)
    tallies = {}
    try:
        with Progress("score", expected.n, unit="encryptions") as bar:
            for future in as_completed(futures):
                start = futures[future]
                tallies[start], scores = future.result()
                if scores is not None:
                    acc.add(start, *scores, index[start])
                bar.advance(len(index[start]))
    finally:
        client.cancel(list(futures))
    tally = ValueTally(expected)
    for start in sorted(tallies):
        tally.merge(tallies[start])
    return tally, acc


def _score_block(source: NpyFile | _Repeated, start: int, stop: int, expected: Expected, private_images: np.ndarray,
                 index: np.ndarray, engine: Engine) -> tuple[ValueTally, tuple[np.ndarray, np.ndarray] | None]:
    """A worker's block: its value tally and, if its values are valid, its (ssim, l2)."""
    block = source.read_rows(start, stop)
    tally = ValueTally(expected)
    tally.add(start, block)
    if not tally.clean:
        return tally, None
    return tally, engine(centered(block, expected.domain), private_images, index)


def audit_on_cluster(client) -> RunChunks:
    """``audit(..., run_chunks=audit_on_cluster(client))``: the per-encryption checks on ``client``'s workers."""
    return partial(_check_on_cluster, client)


def _check_on_cluster(client, context: RowContext, chunks: Iterable[tuple]) -> Iterator[RowFindings]:
    shared = client.scatter(context, broadcast=True, hash=False)
    workers = max(1, sum(client.nthreads().values()))
    yield from _in_order(client, _check_task, ((shared, *chunk) for chunk in chunks), window=2 * workers)


def _check_task(context: RowContext, a: int, *keys: np.ndarray) -> RowFindings:
    return check_chunk(context, context.open_published(), a, *keys)


def _in_order(client, fn: Callable, tasks: Iterable[tuple], window: int) -> Iterator:
    """``fn(*task)`` for each task, run on ``client``'s workers and yielded in the order of ``tasks``,
    at most ``window`` in flight (their arguments are held by the client until they are done)."""
    inflight: deque = deque()
    try:
        for task in tasks:
            inflight.append(client.submit(fn, *task, pure=False))
            if len(inflight) >= window:
                yield inflight.popleft().result()
        while inflight:
            yield inflight.popleft().result()
    finally:
        client.cancel(list(inflight))
