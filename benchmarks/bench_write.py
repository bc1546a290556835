"""Release bytes written per second by ``generate``, against a plain sequential write of the same size.

Both are measured in this run, on the same disk, and both end with their data on the disk:
``generate`` fsyncs every file before it publishes the release (docs/FORMAT.md section 1), the
plain write is one file written in 4 MiB blocks and fsynced. ``generate`` runs in this process
after a small warm-up release, so numba compilation and imports are not counted; the source data
is the embedded data, loaded before timing.

The disk's speed drifts by a factor of 3 or more within a minute on a shared machine, so each
format set is measured in several rounds, each a plain write of its encryptions' size followed at
once by ``generate``; a round's ratio is generate's bytes per second over that plain write's, and
the result is the median round.  The SHA-256 rate of one core is printed too: every byte of a
release is hashed for its manifest (section 1), so when the disk writes faster than one core
hashes, hashing, not the disk, bounds ``--formats npy``.

    python benchmarks/bench_write.py [--encryptions 200000] [--rounds 3] [--workdir DIR]

Needs the default release's size free plus a margin (one file or release exists at a time); the
script checks and refuses otherwise. Exit status 1 if a median ratio is below 0.8.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from challenge.params import Params  # noqa: E402
from generator.default_data import default_private, default_public  # noqa: E402
from generator.release import generate  # noqa: E402

SEED = bytes.fromhex("9f3c1e7a5b2d8046e1c7a93f5d0b6e28c4a7f19e3b5d0c826f4a1e9b7d3c5a08")
TARGET = 0.8


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def plain_write(path: Path, size: int, block: int = 4 << 20) -> float:
    """Seconds to write ``size`` bytes sequentially and fsync them."""
    data = os.urandom(block)
    start = time.perf_counter()
    with open(path, "wb") as f:
        for offset in range(0, size, block):
            f.write(data[: min(block, size - offset)])
        f.flush()
        os.fsync(f.fileno())
    seconds = time.perf_counter() - start
    path.unlink()
    return seconds


def timed_generate(out: Path, params: Params, data, formats: tuple[str, ...]) -> tuple[float, int]:
    start = time.perf_counter()
    generate(out, params, seed=SEED, private=data[0], public=data[1], formats=formats, progress=False)
    seconds = time.perf_counter() - start
    size = folder_bytes(out)
    shutil.rmtree(out)
    return seconds, size


def sha256_rate(size: int, block: int = 64 << 20) -> float:
    """Bytes per second one core hashes (SHA-256, as the manifest's digests), over ``size`` bytes."""
    data = os.urandom(block)
    digest, start = hashlib.sha256(), time.perf_counter()
    for offset in range(0, size, block):
        digest.update(memoryview(data)[: min(block, size - offset)])
    return size / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encryptions", type=int, default=200_000, help="multiple of 100 (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per format set; the median counts (default: %(default)s)")
    parser.add_argument("--workdir", type=Path, help="where to write (default: the system's temporary folder)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-write-", dir=args.workdir))
    need = int(1.2 * args.encryptions * 3072 * 4 * 2)
    free = shutil.disk_usage(work).free
    if free < need:
        shutil.rmtree(work)
        raise SystemExit(f"{work}: {free / 1e9:.1f} GB free, need {need / 1e9:.1f} GB; use a smaller --encryptions")
    try:
        data = default_private(), default_public()
        generate(work / "warm", Params(n_private=20, per_image=5), seed=SEED, private=data[0], public=data[1],
                 progress=False)  # compile, cache
        shutil.rmtree(work / "warm")
        params = Params(per_image=args.encryptions // 100)
        print(f"{params.n_encryptions:,} encryptions in {work} (free: {free / 1e9:.0f} GB); load {load()}")
        worst = float("inf")
        for formats in (("npy", "zarr"), ("npy",)):
            nominal = params.n_encryptions * 3072 * 4 * len(formats)  # the encryptions: all but ~1 % of a release
            ratios = []
            for _ in range(args.rounds):
                plain = nominal / plain_write(work / "plain", nominal)
                seconds, size = timed_generate(work / "r", params, data, formats)
                ratios.append(size / seconds / plain)
                print(f"  --formats {','.join(formats):<8} {size / 1e9:5.2f} GB in {seconds:5.2f} s = "
                      f"{size / 1e6 / seconds:4.0f} MB/s; plain write + fsync of {nominal / 1e9:.2f} GB just before: "
                      f"{plain / 1e6:4.0f} MB/s; ratio {ratios[-1]:.2f}  [load {load()}]", flush=True)
            median = statistics.median(ratios)
            worst = min(worst, median)
            print(f"--formats {','.join(formats)}: median ratio {median:.2f} of {args.rounds} rounds (target >= {TARGET})")
        print(f"SHA-256 on one core: {sha256_rate(2 << 30) / 1e6:.0f} MB/s")
        return 0 if worst >= TARGET else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    sys.exit(main())
