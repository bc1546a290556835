"""``generate`` on a Dask cluster: each task encodes and writes whole chunks of the release.

The client draws the small global plan (selection, order, partners, public indices, lambdas)
exactly as a single-process run does (:mod:`generator.release`).  A task owns rows ``a .. b``,
where ``a`` and ``b`` lie on chunk boundaries of the key store's sign rows (:func:`task_rows`),
and the chunks of public.zarr's encryptions that begin in them (:func:`zarr_span`: at some image
shapes a chunk straddles two tasks' rows, and its owner encodes the few rows past ``b`` it needs
once more).  It draws the sign rows, encodes with the same :class:`generator.release.RowEncoder`,
writes its byte range of the preallocated ``encryption.npy``, its own Zarr chunk files and
sign-row chunks, syncs them to disk and returns the SHA-256 of its chunk files.  Every key is
drawn by row index, so the bytes do not depend on which worker ran what.

``encryption.npy`` has one digest over the whole file: once the tasks are done the client reads
the file back to hash it, streamed (a single-process run hashes it as it writes).  The workers
write into the release's build folder, beside ``--out``: it must be on a filesystem every worker
sees at the same path.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import numpy as np
import zarr

from challenge import format as fmt
from challenge.geometry import image_values
from challenge.manifest import PREVIEW_COUNT
from challenge.npy import npy_header
from challenge.progress import Progress
from generator.release import RowEncoder, ZarrChunks, sync_path

__all__ = ["on_cluster", "task_rows", "write_on_cluster"]


def on_cluster(client):
    """``generate(..., write_elsewhere=on_cluster(client))``: the encryptions written by ``client``'s workers."""
    return partial(write_on_cluster, client)


def task_rows(chunk: int, sign_rows: int) -> int:
    """Rows per task: ``chunk`` rounded up to whole chunks of the key store's sign rows, which
    tasks write through Zarr, so no two tasks ever write one sign chunk."""
    return sign_rows * -(-chunk // sign_rows)


def zarr_span(start: int, stop: int, zarr_rows: int, n: int) -> tuple[int, int]:
    """The rows of public.zarr's encryption chunks that the task of rows ``start .. stop`` writes:
    the chunks that begin in its rows, whole (so a chunk that straddles two tasks' rows is the
    earlier task's, which encodes the rows it needs past ``stop`` a second time)."""
    return min(n, _round_up(start, zarr_rows)), min(n, _round_up(stop, zarr_rows))


def _round_up(rows: int, step: int) -> int:
    return step * -(-rows // step)


def write_on_cluster(client, encoder: RowEncoder, row_keys: tuple, *, public_dir: Path, z_signs: zarr.Array,
                     with_zarr: bool, chunk: int, digests: dict, progress: bool | None) -> np.ndarray:
    """Encode every row on ``client``'s workers into ``public_dir`` and ``z_signs``; return the preview's rows.

    ``digests`` receives the SHA-256 of every chunk file of public.zarr's encryptions.
    """
    N = len(row_keys[0])
    shape = (N, *encoder.image_shape)
    npy = public_dir / fmt.ENCRYPTION_FILE
    header = npy_header(shape)
    with open(npy, "xb") as f:  # preallocated: every task writes its own byte range
        f.write(header)
        f.truncate(len(header) + N * _row_bytes(shape))
    zarr_rows = zarr.open_array(str(public_dir / fmt.PUBLIC_ZARR / "encryption"), mode="r").chunks[0] if with_zarr else 0
    signs_path = Path(z_signs.store.root) / z_signs.path
    rows = task_rows(chunk, z_signs.chunks[0])
    shared = client.scatter(encoder, broadcast=True, hash=False)
    futures = {}
    for a in range(0, N, rows):
        b = min(a + rows, N)
        zarr_rows_of_task = zarr_span(a, b, zarr_rows, N) if zarr_rows else (a, b)
        end = max(b, zarr_rows_of_task[1])
        futures[client.submit(_write_task, shared, (a, b), zarr_rows_of_task, tuple(keys[a:end] for keys in row_keys),
                              npy, len(header), public_dir, zarr_rows, signs_path, chunk, pure=False)] = b - a
    from distributed import as_completed, wait

    try:
        with Progress("write", N, enabled=progress, unit="encryptions") as bar:
            for future in as_completed(futures, loop=client.loop):
                digests.update(future.result())
                bar.advance(futures[future])
    except BaseException:
        client.cancel(list(futures))
        wait(list(futures))  # no task writes into the build folder once the caller removes it
        raise
    head = min(N, PREVIEW_COUNT)
    return np.fromfile(npy, "<f4", count=head * _row_bytes(shape) // 4, offset=len(header)).reshape(head, *shape[1:])


def _row_bytes(shape: tuple) -> int:
    return 4 * image_values(shape[1:])


def _write_task(encoder: RowEncoder, own: tuple[int, int], zarr_span: tuple[int, int], row_keys: tuple, npy: Path,
                offset: int, public_dir: Path, zarr_rows: int, signs_path: Path, chunk: int) -> dict[str, str]:
    """Rows ``own`` of encryption.npy and the sign rows, the chunks of public.zarr in ``zarr_span``
    (``row_keys`` are the keys from ``own[0]`` to the end of both), ``chunk`` rows encoded at a
    time; returns the chunk files' digests."""
    start, stop = own
    digests: dict[str, str] = {}
    z_signs = zarr.open_array(str(signs_path), mode="r+")
    chunks = ZarrChunks(public_dir, "encryption", rows=zarr_rows, row_shape=encoder.image_shape, digests=digests,
                        first_chunk=zarr_span[0] // zarr_rows) if zarr_rows else None
    end = max(stop, zarr_span[1])
    buffer = np.empty((min(chunk, end - start), *encoder.image_shape), "<f4")  # one block in memory, reused
    fd = os.open(npy, os.O_WRONLY)
    try:
        for a in range(start, end, chunk):
            b = min(a + chunk, end)
            signs, data = encoder.rows(a, *(keys[a - start : b - start] for keys in row_keys), out=buffer[: b - a])
            if a < stop:
                mine = min(b, stop) - a
                _pwrite_all(fd, memoryview(data[:mine]).cast("B"), offset + a * data[0].nbytes)
                z_signs[a : a + mine] = signs[:mine]
            if chunks is not None:
                chunks.write(data[max(0, zarr_span[0] - a) : max(0, zarr_span[1] - a)])
        if chunks is not None:
            chunks.close()
        os.fsync(fd)  # a worker on another machine: its writes are on the shared disk before the client publishes
    finally:
        os.close(fd)
    sign_rows = z_signs.chunks[0]
    written = [public_dir / name for name in digests]
    written += [signs_path / z_signs.metadata.encode_chunk_key((i, 0))
                for i in range(start // sign_rows, -(-stop // sign_rows))]
    for path in written:
        if path.exists():  # a sign chunk of fill values only (mixup) is not stored
            sync_path(path)
    return digests


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    """``pwrite`` until every byte is written (one call writes at most about 2 GiB on Linux)."""
    while len(data):
        done = os.pwrite(fd, data, offset)
        data, offset = data[done:], offset + done
