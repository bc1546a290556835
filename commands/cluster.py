"""``--dask``: run a command's chunks on a Dask cluster (the optional extra ``instahide-challenge[dask]``).

``--dask ADDRESS`` connects to a running scheduler; ``--dask local:N`` starts a ``LocalCluster`` of
N worker processes on this machine for the command's duration, each with one thread (numba's
threads included), so N is the number of cores it uses.  Workers open the command's input and
output paths themselves: on a real cluster every path must be one they all see.
"""

from __future__ import annotations

import argparse
import os
from contextlib import contextmanager

from challenge.errors import UsageError

__all__ = ["DASK_HELP", "INSTALL", "add_dask_option", "dask_client"]

INSTALL = "pip install 'instahide-challenge[dask]'"
DASK_HELP = ("run on a Dask cluster: a scheduler address (tcp://HOST:8786) or local:N (N worker processes on this "
             "machine); the workers read and write the paths given themselves, so on a cluster every path must be on "
             f"a filesystem they all see (docs/CLUSTER.md; needs {INSTALL})")
CONNECT_SECONDS = 30
MAX_LOCAL_WORKERS = 4 * (os.cpu_count() or 1)  # more processes than that only compete for the same cores


def _dask_spec(text: str) -> str:
    """argparse type for --dask: ``local:N`` with N >= 1, or a scheduler address."""
    if text.startswith("local:"):
        count = text.removeprefix("local:")
        if not (count.isdigit() and 1 <= int(count) <= MAX_LOCAL_WORKERS):
            raise argparse.ArgumentTypeError(f"local:N needs a number of worker processes N from 1 to {MAX_LOCAL_WORKERS} "
                                             f"(4 per core of this machine), got {text!r}")
    elif not text.strip():
        raise argparse.ArgumentTypeError("expected a scheduler address (tcp://HOST:8786) or local:N")
    return text


def add_dask_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dask", type=_dask_spec, metavar="ADDRESS|local:N", help=DASK_HELP)


@contextmanager
def dask_client(spec: str | None):
    """A ``distributed.Client`` for ``--dask`` (None without it), closed, with its LocalCluster, on exit."""
    if spec is None:
        yield None
        return
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise UsageError(f"--dask needs Dask's distributed scheduler, which is not installed: {INSTALL}") from None
    if spec.startswith("local:"):
        one_thread = {name: "1" for name in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
        with LocalCluster(n_workers=int(spec.removeprefix("local:")), threads_per_worker=1, processes=True,
                          dashboard_address=":0", env=one_thread) as cluster, Client(cluster) as client:
            yield client
        return
    try:
        client = Client(spec, timeout=CONNECT_SECONDS)
    except (OSError, ValueError, TypeError) as e:
        raise UsageError(f"--dask {spec}: no Dask scheduler answered there ({e})") from None
    with client:
        yield client
