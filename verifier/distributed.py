"""Scoring and auditing on a Dask cluster.

Every CPU-second the client spends is serial time (on a small machine it shares the cores with
the workers), so the client does little: few tasks, small results, no per-row work.

Scoring: the client checks the folder, the metadata and the file's header (:func:`check_files`)
and cuts the rows into about :data:`TASKS_PER_WORKER` tasks per worker (:func:`task_span`), each
given its rows of ``private_index`` (the private images go once to every worker).  A task reads
``decryption.npy`` from its path ``rows`` rows at a time, the blocks of a single process, checks
their values and scores them into an :class:`Accumulator` of its own rows; the client merges these
(:meth:`Accumulator.merge`: copies and an order-free maximum) and makes the result, whose means
are exact sums (``math.fsum``) of the same per-encryption values, so the scores are the same to
the last bit.  Value tallies are merged in row order, so a bad file gets the same problems.  The
workers open the submission themselves: it must be at a path they all see.

Auditing (:func:`audit_on_cluster`): tasks hash the release's public files, whole, in groups
(:data:`verifier.audit.HASH_TASK_BYTES`), while other tasks check the rows, a few ``chunk`` s
each (about :data:`TASKS_PER_WORKER` tasks per worker): a task reads its rows' keys from the key
store and opens the release's ``.npy`` files by their paths, and returns each chunk's findings
(:func:`verifier.audit.check_chunk`); the client merges them in row order, a few tasks per worker
in flight, so the report is the one of a single process.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from challenge import format as fmt
from challenge.npy import ROWS, NpyFile
from challenge.progress import Progress
from challenge.submission import Expected
from verifier import metrics
from verifier.audit import RowContext, RowFindings, Runner, check_chunk
from verifier.scoring import Accumulator, Engine, Scores
from verifier.submission import Validation, ValueTally, centered, check_files

__all__ = ["TASKS_PER_WORKER", "audit_on_cluster", "score_image_on_cluster", "score_on_cluster", "task_span"]

TASKS_PER_WORKER = 8  # a task costs the client a few ms: few of them, but enough to even out the workers


def score_on_cluster(client, folder: Path, store: fmt.KeyStore, expected: Expected, *, rows: int = ROWS,
                     engine: Engine = metrics.score_pairs,
                     selected: np.ndarray | None = None) -> tuple[Validation, Scores | None]:
    """What :func:`verifier.scoring.score` returns, computed by ``client``'s workers, ``rows`` rows at a time."""
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


def task_span(n: int, rows: int, workers: int) -> int:
    """Rows per scoring task: whole blocks of ``rows``, about :data:`TASKS_PER_WORKER` tasks per worker."""
    blocks = -(-n // rows)
    return rows * max(1, -(-blocks // (TASKS_PER_WORKER * workers)))


def _score_rows(client, source: NpyFile | _Repeated, store: fmt.KeyStore, expected: Expected, rows: int,
                engine: Engine, selected: np.ndarray | None) -> tuple[ValueTally, Accumulator]:
    private_images = store.read("private/images")
    shared = client.scatter(private_images, broadcast=True, hash=False)
    span = task_span(expected.n, rows, _workers(client))
    futures = {}
    for a in range(0, expected.n, span):
        b = min(a + span, expected.n)
        futures[client.submit(_score_span, source, a, b, rows, expected, shared,
                              store.rows("encryption/private_index", a, b), None if selected is None else selected[a:b],
                              engine, pure=False)] = a
    from distributed import as_completed

    acc = Accumulator(expected.n, len(private_images), selected)
    tallies = {}
    try:
        with Progress("score", expected.n, unit="encryptions") as bar:
            for future, (tally, part) in as_completed(futures, with_results=True, loop=client.loop):
                start = futures[future]
                tallies[start] = tally
                if part is not None:
                    acc.merge(start, part)
                bar.advance(min(span, expected.n - start))
    finally:
        client.cancel(list(futures))
    tally = ValueTally(expected)
    for start in sorted(tallies):
        tally.merge(tallies[start])
    return tally, acc


def _score_span(source: NpyFile | _Repeated, start: int, stop: int, rows: int, expected: Expected,
                private_images: np.ndarray, index: np.ndarray, selected: np.ndarray | None,
                engine: Engine) -> tuple[ValueTally, Accumulator | None]:
    """A worker's rows ``start .. stop``, ``rows`` at a time (the blocks of one process): their value
    tally and, if every value is valid, their scores, aggregated here so that the client only copies
    them (``index`` and ``selected`` are these rows')."""
    tally = ValueTally(expected)
    acc = Accumulator(stop - start, len(private_images), selected)
    for a in range(start, stop, rows):
        block = source.read_rows(a, min(a + rows, stop))
        tally.add(a, block)
        if tally.clean:  # else only the tally goes on: the file is invalid and is not scored
            own = index[a - start : a - start + len(block)]
            acc.add(a - start, *engine(centered(block, expected.domain), private_images, own), own)
    return tally, acc if tally.clean else None


def _workers(client) -> int:
    return max(1, sum(client.nthreads().values()))


def audit_on_cluster(client) -> Runner:
    """``audit(..., runner=audit_on_cluster(client))``: the audit's heavy work on ``client``'s workers."""
    return _OnCluster(client)


class _OnCluster(Runner):
    def __init__(self, client):
        self.client = client

    def later(self, fn: Callable, *args) -> Callable:
        return self.client.submit(fn, *args, pure=False).result

    def check_chunks(self, context: RowContext, chunks: Iterable[tuple[int, int]]) -> Iterator[RowFindings]:
        """A task checks several chunks, about :data:`TASKS_PER_WORKER` tasks per worker."""
        chunks = list(chunks)
        workers = _workers(self.client)
        per_task = -(-len(chunks) // (TASKS_PER_WORKER * workers))
        shared = self.client.scatter(context, broadcast=True, hash=False)
        tasks = ((shared, chunks[i : i + per_task]) for i in range(0, len(chunks), per_task))
        for found, error in _in_order(self.client, _check_task, tasks, window=2 * workers):
            yield from found
            if error is not None:
                raise error


def _check_task(context: RowContext, chunks: list[tuple[int, int]]) -> tuple[list[RowFindings], fmt.FormatError | None]:
    """The findings of each chunk in turn, up to an unreadable key chunk, returned with its error
    (so the client merges the chunks before it, as a single process does)."""
    arrays = context.open_published()
    found = []
    try:
        for a, b in chunks:
            found.append(check_chunk(context, arrays, a, b))
    except fmt.FormatError as e:
        return found, e
    return found, None


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
