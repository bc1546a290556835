"""End-to-end ``verify`` (validate + score) wall time and peak memory, as a participant's run sees it.

1. The default release (5,000 encryptions) and its float32 ``blind`` baseline: ``verify`` with a
   cold numba cache (a fresh, empty NUMBA_CACHE_DIR: every kernel is compiled) and a warm one.
2. A 1,000,000-encryption release (``instahide generate --n-private 100 --per-image 10000``, built
   in a temporary folder unless ``--million PATH`` names one) and its uint8 ``oracle`` baseline
   (3 GB): wall time and peak RSS. Scoring streams, so peak RSS must stay far below the
   submission's size: the run fails (exit status 1) above ``--max-rss-mb``.

Each command runs in its own process; peak RSS is that process's ``ru_maxrss`` (from ``wait4``).

    python benchmarks/bench_verify.py [--skip-million] [--million RELEASE] [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

SEED = "4b8e2f6a1c9d3e7b5a0f8c2d6e4a9b1f3c7e5d0a8b2f6c4e9a1d3b7f5e0c8a26"  # a strong seed: guessable ones are refused


def timed(args: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """Run ``python -m args...``; return (wall seconds, peak RSS in MB, stdout). Fail loudly on error."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        pid = os.posix_spawn(sys.executable, [sys.executable, "-m", *args], env or os.environ,
                             file_actions=[(os.POSIX_SPAWN_DUP2, out.fileno(), 1), (os.POSIX_SPAWN_DUP2, err.fileno(), 2)])
        _, status, usage = os.wait4(pid, 0)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit(f"failed: {' '.join(args)}\n{err.read()}")
        return wall, usage.ru_maxrss / 1024, out.read()


def verify(submission: Path, release: Path, env: dict | None = None) -> tuple[float, float, dict]:
    wall, rss, out = timed(["commands.verify", str(submission), "--release", str(release),
                            "--keys", str(release / "secret" / "keys.zarr"), "--json"], env)
    return wall, rss, json.loads(out)["scores"]


def report(label: str, n: int, wall: float, rss: float, scores: dict) -> None:
    print(f"{label:<34} {wall:8.2f} s  {n / wall:10,.0f} encryptions/s  peak RSS {rss:7.0f} MB  "
          f"Max_SSIM {scores['Max_SSIM']:.4f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-million", action="store_true", help="only the 5,000-encryption release")
    parser.add_argument("--million", type=Path, help="an existing 1,000,000-encryption release to verify against")
    parser.add_argument("--workdir", type=Path, help="where temporary releases go (default: the system temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--max-rss-mb", type=float, default=1024.0, help="peak RSS allowed for the 1M run (default: 1024)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-verify-", dir=args.workdir))
    ok = True
    try:
        print(f"cores: {os.cpu_count()}, work folder: {work}")
        small = work / "release-5k"
        wall, _, _ = timed(["commands.main", "generate", "--out", str(small), "--seed", SEED])
        print(f"generate 5,000 encryptions         {wall:8.2f} s")
        timed(["commands.main", "baseline", "blind", "--release", str(small), "--out", str(work / "blind-5k")])
        env = {**os.environ, "NUMBA_CACHE_DIR": str(work / "numba-cache")}
        for label in ("verify 5k float32, cold numba cache", "verify 5k float32, warm numba cache"):
            wall, rss, scores = verify(work / "blind-5k", small, env)
            report(label, 5000, wall, rss, scores)

        if not args.skip_million:
            big = args.million
            if big is None:
                big = work / "release-1m"
                wall, rss, _ = timed(["commands.main", "generate", "--out", str(big), "--seed", SEED,
                                      "--n-private", "100", "--per-image", "10000"])
                print(f"generate 1,000,000 encryptions     {wall:8.2f} s  peak RSS {rss:7.0f} MB")
            n = json.loads((big / "public" / "manifest.json").read_text())["n_encryptions"]
            wall, _, _ = timed(["commands.main", "baseline", "oracle", "--keys", str(big / "secret" / "keys.zarr"),
                                "--out", str(work / "oracle-1m")], env)
            size = (work / "oracle-1m" / "decryption.npy").stat().st_size
            print(f"oracle baseline, uint8 ({size / 1e9:.2f} GB)    {wall:8.2f} s")
            wall, rss, scores = verify(work / "oracle-1m", big, env)
            report(f"verify {n:,} uint8, warm cache", n, wall, rss, scores)
            ok = rss <= args.max_rss_mb and scores["Max_SSIM"] > 1 - 1e-12
            print(f"peak RSS {rss:.0f} MB vs submission {size / 1e6:,.0f} MB: "
                  f"{'streams' if rss <= args.max_rss_mb else 'TOO MUCH MEMORY'} (limit {args.max_rss_mb:.0f} MB)")
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
