"""End-to-end ``instahide generate``: wall time, MB/s written and peak RSS, in subprocesses.

Runs the default 5,000-encryption release with a cold numba cache (a fresh, empty
NUMBA_CACHE_DIR, so compilation is included) and then warm (same cache), and a 1,000,000-encryption
release (skip it with --skip-million; it writes about 25 GB).  Peak RSS is the child's
``ru_maxrss``.  Exit status 1 if the million-row run exceeds 2 GB of peak memory.

    python benchmarks/bench_generate.py [--skip-million] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SEED = "9f3c1e7a5b2d8046e1c7a93f5d0b6e28c4a7f19e3b5d0c826f4a1e9b7d3c5a08"  # strong: guessable seeds are refused


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run_generate(out: Path, cache: Path, *extra: str) -> tuple[float, int, int]:
    """(seconds, bytes written, peak RSS bytes) of one generate run in a fresh process."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    command = [sys.executable, "-c", "import sys; from commands.main import main; sys.exit(main())",
               "generate", "--out", str(out), "--seed", SEED, *extra]
    start = time.perf_counter()
    pid = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL).pid
    _, status, usage = os.wait4(pid, 0)
    seconds = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"generate failed with status {status}")
    written = folder_bytes(out)
    shutil.rmtree(out)
    return seconds, written, usage.ru_maxrss * 1024


def report(label: str, seconds: float, written: int, rss: int) -> None:
    print(f"{label:<34} {seconds:8.2f} s  {written / 1e6:9.0f} MB  {written / 1e6 / seconds:7.0f} MB/s"
          f"  peak RSS {rss / 1e6:7.0f} MB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-million", action="store_true")
    parser.add_argument("--workdir", type=Path, help="where to write (needs ~26 GB free for the million run)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(dir=args.workdir))
    try:
        cache = work / "numba-cache"
        report("default 5,000, cold numba cache", *run_generate(work / "r", cache))
        report("default 5,000, warm numba cache", *run_generate(work / "r", cache))
        if args.skip_million:
            return 0
        seconds, written, rss = run_generate(work / "r", cache, "--per-image", "10000", "--chunk", "8192")
        report("1,000,000 encryptions, warm", seconds, written, rss)
        print(f"{1e6 / seconds:,.0f} encryptions/s end to end; peak RSS target < 2 GB: {'met' if rss < 2e9 else 'MISSED'}")
        return 0 if rss < 2e9 else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
