"""Dask scale-out: 2 local worker processes against 1, same run, and the peak memory of a worker.

* patches: ``build_patch_bank`` of N_IMAGES JPEGs (made here, as benchmarks/bench_patches.py makes
  them) on a LocalCluster of 1 and of 2 worker processes (1 thread each);
* verify: scoring a blind-baseline submission of N_SCORE encryptions (a ``--formats npy`` release
  made here) on the same two clusters;
* audit: the whole audit of that release (the per-encryption checks and the digests on the
  cluster; the manifest, the key store's metadata and commitment and the preview on the client);
* generate (second form): ``--dask local:2`` releases of each N encryptions at image shape HxWxC
  (the embedded images resized, nearest neighbour), ``--formats npy`` unless ``--zarr``, each on a
  fresh cluster, with the peak RSS of each worker process (``VmHWM``), deleted right after:
  what a worker needs does not grow with N.  Check the free disk first (4 H W C bytes per
  encryption, twice with ``--zarr``).

Clusters are started and warmed up (JIT caches loaded) outside the timings; the 1- and 2-worker
runs are interleaved and the best of REPEATS kept, so other load on the machine hits both alike.
With each best time: the CPU seconds of the client's process (the client, and here the scheduler
and the nannies too) and of the workers in that run.  On 2 cores the client's take the workers'
cores: with a share s of all the CPU seconds (its "serial share"), 2 workers are at most 2 (1 - s)
times as fast as 1 (1.7x needs s <= 15 %).
Every cluster result is checked against the other (same bank bytes, same scores, same report).
The load average is printed before and after each measurement.  BENCH_TMP: where to write.
Usage: python benchmarks/bench_dask.py [N_IMAGES [N_SCORE [REPEATS]]]    (defaults 2000, 200000, 3)
       python benchmarks/bench_dask.py generate HxWxC N [N ...] [--zarr]
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distributed import Client, LocalCluster  # noqa: E402
from timing import best_of  # noqa: E402

SEED = bytes(range(32))


def cluster(workers: int) -> Client:
    return Client(LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                               env={"NUMBA_NUM_THREADS": "1"}))


def bench_patches(clients: dict, tmp: Path, n_images: int, repeats: int) -> None:
    make_images(tmp / "photos", n_images)
    banks = {}

    def run(workers: int) -> None:
        out = tmp / f"bank{workers}.zarr"
        if out.exists():
            shutil.rmtree(out)
        client = clients[workers]
        build_patch_bank(tmp / "photos", out, seed=b"benchmark-seed", workers=workers,
                         executor=client.get_executor(pure=False))
        banks[workers] = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}

    best = interleaved(run, clients, repeats)  # the warm-up loads the keypoint counter's JIT cache in every worker
    assert banks[1] == banks[2], "the two clusters built different banks"
    report(f"patches, {n_images} JPEGs", n_images, "images", best)


def interleaved(run, clients: dict, repeats: int) -> dict[int, tuple[float, float, float]]:
    """Per worker count (1, 2): the best (wall, client CPU, workers' CPU) seconds of ``run(workers)``,
    after one warm-up of each."""
    run(1), run(2)
    best = {}
    for _ in range(repeats):
        for workers in (1, 2):
            before = clients[workers].run(os.times)
            cpu = time.process_time()
            wall = best_of(1, lambda: run(workers))
            cpu = time.process_time() - cpu
            after = clients[workers].run(os.times)
            used = sum(after[w].user + after[w].system - before[w].user - before[w].system for w in after)
            best[workers] = min(best.get(workers, (wall, cpu, used)), (wall, cpu, used))
    return best


def report(what: str, count: int, unit: str, best: dict) -> None:
    """One line: each cluster's best time, rate and CPU seconds, the ratio, the load."""
    parts = []
    for workers, (wall, client, used) in best.items():
        parts.append(f"{workers} worker{'s' * (workers > 1)} {wall:.2f} s ({count / wall:.0f} {unit}/s; CPU client "
                     f"{client:.2f} s, workers {used:.2f} s, serial share {client / (client + used):.0%})")
    print(f"{what}: {', '.join(parts)}: {best[1][0] / best[2][0]:.2f}x  [load {load()}]", flush=True)


def bench_verify_and_audit(clients: dict, tmp: Path, n: int, repeats: int) -> None:
    params = Params(n_private=100, per_image=n // 100)
    release = tmp / "release"
    generate(release, params, seed=SEED, private=default_private(), public=default_public(), formats=("npy",),
             write_elsewhere=on_cluster(clients[2]))
    expected, store = open_for_scoring(release, release / "secret" / "keys.zarr")
    write_baseline("blind", tmp / "blind", expected, store=store, release=release)
    results = {}

    def score(workers: int) -> None:
        results[workers] = score_on_cluster(clients[workers], tmp / "blind", store, expected)[1].summary

    best = interleaved(score, clients, repeats)
    assert results[1] == results[2], "the two clusters scored differently"
    report(f"verify, {expected.n} encryptions", expected.n, "encryptions", best)

    def check(workers: int) -> None:
        report = audit(release, release / "secret" / "keys.zarr", runner=audit_on_cluster(clients[workers]))
        results[workers] = report.to_json()

    best = interleaved(check, clients, repeats)
    assert results[1] == results[2] and results[1]["sound"], "the two clusters audited differently"
    report(f"audit, {expected.n} encryptions", expected.n, "encryptions", best)


def peak_rss_mb() -> float:
    """This process's peak RSS since it was started (``VmHWM``).  Not ``ru_maxrss``: a worker is
    forked from the client and exec'd, and Linux carries the forked copy's peak (the client's RSS
    at that moment) into ``ru_maxrss`` across the exec."""
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024


def bench_generate_memory(tmp: Path, shape: tuple, counts: list[int], formats: tuple[str, ...]) -> None:
    private, public = (resized(images, shape) for images in (default_private(), default_public()))
    for count in counts:
        out = tmp / f"big{count}"
        before = load()
        with cluster(2) as client:  # fresh workers: their peak is this release's
            params = Params(n_private=100, per_image=count // 100)
            t = time.perf_counter()
            generate(out, params, seed=SEED, private=private, public=public, formats=formats,
                     write_elsewhere=on_cluster(client))
            seconds = time.perf_counter() - t
            peaks = sorted(client.run(peak_rss_mb).values())
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1e9
        shutil.rmtree(out)
        print(f"generate --dask local:2, {params.n_encryptions} encryptions {'x'.join(map(str, shape))} "
              f"({'+'.join(formats)}, {size:.1f} GB): {seconds:.0f} s, peak RSS per worker "
              f"{', '.join(f'{p:.0f}' for p in peaks)} MB  [load before {before}, after {load()}]", flush=True)


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    print(f"load average before: {load()} on {os.cpu_count()} cores", flush=True)
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        tmp = Path(tmp)
        if sys.argv[1:2] == ["generate"]:
            shape = tuple(int(x) for x in sys.argv[2].split("x"))
            counts = [int(a) for a in sys.argv[3:] if a != "--zarr"]
            bench_generate_memory(tmp, shape, counts, ("npy", "zarr") if "--zarr" in sys.argv else ("npy",))
        else:
            args = [int(a) for a in sys.argv[1:]]
            n_images, n_score, repeats = args + [2000, 200_000, 3][len(args):]
            with cluster(1) as one, cluster(2) as two:
                clients = {1: one, 2: two}
                bench_patches(clients, tmp, n_images, repeats)
                bench_verify_and_audit(clients, tmp, n_score, repeats)
    print(f"load average after: {load()}")


if __name__ == "__main__":
    # imported here, not above: a LocalCluster's worker processes re-import this script, and numba
    # must not be imported there before the cluster sets NUMBA_NUM_THREADS=1 (docs/CLUSTER.md)
    from benchmarks.bench_patches import make_images
    from challenge.params import Params
    from challenge.submission import open_for_scoring
    from generator.default_data import default_private, default_public
    from generator.patches import build_patch_bank
    from generator.release import generate
    from verifier.baselines import write_baseline
    from generator.distributed import on_cluster
    from tests.helpers import resized
    from verifier.audit import audit
    from verifier.distributed import audit_on_cluster, score_on_cluster

    main()
