"""Dask scale-out: 2 local worker processes against 1, same run, and the peak memory of a worker.

* patches: ``build_patch_bank`` of N_IMAGES JPEGs (made here, as benchmarks/bench_patches.py makes
  them) on a LocalCluster of 1 and of 2 worker processes (1 thread each);
* verify: scoring a blind-baseline submission of N_SCORE encryptions (a ``--formats npy`` release
  made here) on the same two clusters;
* generate: ``--dask local:2`` releases of N_GENERATE and 4 x N_GENERATE encryptions, with the peak
  RSS of each worker process (``ru_maxrss``): what a worker needs does not grow with N.

Clusters are started and warmed up (JIT caches loaded) outside the timings; the 1- and 2-worker
runs are interleaved and the best of REPEATS kept, so other load on the machine hits both alike.
Every cluster result is checked against the other (same bank bytes, same scores).
Usage: python benchmarks/bench_dask.py [N_IMAGES [N_SCORE [N_GENERATE [REPEATS]]]]
       (defaults 2000, 200000, 250000, 3)
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distributed import Client, LocalCluster  # noqa: E402

from benchmarks.bench_patches import make_images  # noqa: E402
from challenge.params import Params  # noqa: E402
from challenge.submission import open_for_scoring  # noqa: E402
from generator.default_data import default_private, default_public  # noqa: E402
from generator.patches import build_patch_bank  # noqa: E402
from generator.release import generate  # noqa: E402
from verifier.baselines import write_baseline  # noqa: E402
from generator.distributed import on_cluster  # noqa: E402
from verifier.distributed import score_on_cluster  # noqa: E402

SEED = bytes(range(32))


def cluster(workers: int) -> Client:
    return Client(LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                               env={"NUMBA_NUM_THREADS": "1"}))


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def bench_patches(clients: dict, tmp: Path, n_images: int, repeats: int) -> None:
    make_images(tmp / "photos", n_images)
    banks = {}

    def run(workers: int) -> None:
        out = tmp / f"bank{workers}.zarr"
        if out.exists():
            import shutil
            shutil.rmtree(out)
        client = clients[workers]
        build_patch_bank(tmp / "photos", out, seed=b"benchmark-seed", workers=workers,
                         executor=client.get_executor(pure=False))
        banks[workers] = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}

    run(1), run(2)  # warm-up: the keypoint counter's JIT cache loaded in every worker
    times = {1: [], 2: []}
    for _ in range(repeats):
        for workers in (1, 2):
            times[workers].append(best(lambda: run(workers), 1))
    assert banks[1] == banks[2], "the two clusters built different banks"
    t1, t2 = min(times[1]), min(times[2])
    print(f"patches, {n_images} JPEGs: 1 worker {t1:.1f} s ({n_images / t1:.0f} images/s), "
          f"2 workers {t2:.1f} s ({n_images / t2:.0f} images/s): {t1 / t2:.2f}x")


def bench_verify(clients: dict, tmp: Path, n: int, repeats: int) -> None:
    params = Params(n_private=100, per_image=n // 100)
    generate(tmp / "release", params, SEED, default_private(), default_public(), formats=("npy",),
             write_elsewhere=on_cluster(clients[2]))
    expected, store = open_for_scoring(tmp / "release", tmp / "release" / "secret" / "keys.zarr")
    write_baseline("blind", tmp / "blind", expected, store=store, release=tmp / "release")
    results = {}

    def run(workers: int) -> None:
        results[workers] = score_on_cluster(clients[workers], tmp / "blind", store, expected)[1].summary

    run(1), run(2)
    times = {1: [], 2: []}
    for _ in range(repeats):
        for workers in (1, 2):
            times[workers].append(best(lambda: run(workers), 1))
    assert results[1] == results[2], "the two clusters scored differently"
    t1, t2 = min(times[1]), min(times[2])
    print(f"verify, {expected.n} encryptions: 1 worker {t1:.1f} s ({expected.n / t1:.0f}/s), "
          f"2 workers {t2:.1f} s ({expected.n / t2:.0f}/s): {t1 / t2:.2f}x")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_generate_memory(tmp: Path, n: int) -> None:
    private, public = default_private(), default_public()
    for count in (n, 4 * n):
        with cluster(2) as client:  # fresh workers: their peak is this release's
            params = Params(n_private=100, per_image=count // 100)
            t = time.perf_counter()
            generate(tmp / f"big{count}", params, SEED, private, public, write_elsewhere=on_cluster(client))
            seconds = time.perf_counter() - t
            peaks = sorted(client.run(peak_rss_mb).values())
        size = sum(p.stat().st_size for p in (tmp / f"big{count}").rglob("*") if p.is_file()) / 1e9
        print(f"generate --dask local:2, {params.n_encryptions} encryptions 32x32x3 (npy + zarr, {size:.1f} GB): "
              f"{seconds:.0f} s, peak RSS per worker {', '.join(f'{p:.0f}' for p in peaks)} MB")
        import shutil
        shutil.rmtree(tmp / f"big{count}")


def main() -> None:
    args = [int(a) for a in sys.argv[1:]]
    n_images, n_score, n_generate, repeats = args + [2000, 200_000, 250_000, 3][len(args):]
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        tmp = Path(tmp)
        with cluster(1) as one, cluster(2) as two:
            clients = {1: one, 2: two}
            bench_patches(clients, tmp, n_images, repeats)
            bench_verify(clients, tmp, n_score, repeats)
        bench_generate_memory(tmp, n_generate)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
