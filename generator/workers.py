"""Worker processes for decoding many image files: started once, dying with their parent, results
taken back in submission order (so the output never depends on the worker count).

Shared by :mod:`generator.patches` (the patch bank) and :mod:`generator.sources` (image-folder
private sets).
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections import deque
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Iterable, Iterator

__all__ = ["WorkerDied", "default_workers", "in_order", "start_pool"]


class WorkerDied(Exception):
    """A worker process died (killed, out of memory, a crash in a decoder) while running ``task``."""

    def __init__(self, task: tuple):
        super().__init__(task)
        self.task = task


def default_workers() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _noop() -> None:
    return None


def start_pool(workers: int, *, preload: str, warm_up: Callable[[], None] | None = None) -> ProcessPoolExecutor:
    """``workers`` processes, started now (so they start while the caller walks its folder).

    ``fork`` when this process has a single thread (fast: workers inherit what is loaded), else
    ``forkserver`` with module ``preload`` imported (forking a multi-threaded process, e.g. one
    where Zarr's I/O thread runs, can deadlock); then a calling script needs the usual
    ``if __name__ == "__main__":`` guard.  ``warm_up`` runs once in each worker (a module-level
    function: it is pickled under ``forkserver``).  The start method never changes results.
    """
    if threading.active_count() == 1 and "fork" in mp.get_all_start_methods():
        ctx = mp.get_context("fork")
    else:
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload([preload])
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init, initargs=(os.getpid(), warm_up))
    for f in [pool.submit(_noop) for _ in range(workers)]:
        f.result()
    return pool


def in_order(pool: Executor | None, fn: Callable, tasks: Iterable[tuple], workers: int | None = None) -> Iterator[tuple]:
    """``(task, fn(*task))`` for each task, in the order of ``tasks``: in this process when
    ``pool`` is None, else on the pool with a few tasks per worker in flight (memory stays bounded).
    ``workers``: how many tasks ``pool`` runs at once (default: a process pool's own count; give it
    for another executor, e.g. a Dask client's).

    ``fn``'s exceptions are raised here, a dead worker as :class:`WorkerDied`; the tasks not taken
    yet are cancelled whenever the caller stops.
    """
    if pool is None:
        for task in tasks:
            yield task, fn(*task)
        return
    window = 4 * (workers or pool._max_workers)
    inflight: deque = deque()

    def take():
        task, fut = inflight.popleft()
        try:
            return task, fut.result()
        except BrokenProcessPool:
            raise WorkerDied(task) from None

    try:
        for task in tasks:
            inflight.append((task, pool.submit(fn, *task)))
            if len(inflight) >= window:
                yield take()
        while inflight:
            yield take()
    finally:
        for _, fut in inflight:
            fut.cancel()


def _worker_init(creator: int, warm_up: Callable[[], None] | None) -> None:
    """Workers leave Ctrl-C to the parent (which cancels them), die with it, and warm up once."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_parent(creator)
    if warm_up is not None:
        warm_up()


_PR_SET_PDEATHSIG = 1


def _exit_with_parent(creator: int) -> None:
    """End this worker when the process that started it is killed (SIGKILL/SIGTERM run no cleanup).

    On Linux the kernel sends SIGKILL when the parent dies (``PR_SET_PDEATHSIG``); everywhere a
    daemon thread also polls: the parent changed (we were re-parented) or the process that made
    the pool (``creator``, not the parent under ``forkserver``) is gone, which also covers a
    parent that died before this initializer ran.
    """
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent and _alive(creator):
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
