"""The bundle's scoring program (numpy only) against ``verify`` (numba) on the same submission, each in a
fresh process as the platform runs it: wall time, and the ratio to ``verify`` measured in the same run.

Every submission on Codabench runs in a new container, so the program is always *cold*: a new
interpreter, numpy imported, the commitment of the reference data recomputed, the submission checked
and scored.  ``verify`` is shown cold (an empty NUMBA_CACHE_DIR: every kernel compiled, what it would
pay in a fresh container) and warm (its kernels cached).  Budget (issue 20): 5,000 encryptions in
< 5 s, 200,000 in < 60 s, on 2 cores.

1. A 5,000-encryption release (the default parameters) and its float32 ``blind`` baseline.
2. A 200,000-encryption release (``--n-private 100 --per-image 2000 --formats npy``), its blind baseline.

    python benchmarks/bench_scoring_program.py [--skip-large] [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from challenge import format as fmt  # noqa: E402
from verifier.bundle import PROGRAM, PROGRAM_FILES, _write_reference  # noqa: E402

SEED = "4b8e2f6a1c9d3e7b5a0f8c2d6e4a9b1f3c7e5d0a8b2f6c4e9a1d3b7f5e0c8a26"  # a strong seed: guessable ones are refused


def run(argv: list[str], env: dict | None = None, cwd: Path | None = None) -> tuple[float, str]:
    """Wall time and stdout of a command; stops the benchmark if it fails."""
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(argv)}\n{done.stderr}")
    return wall, done.stdout


def read_through(folder: Path) -> None:
    """Read a submission once, so every timed run finds it in the page cache (as freshly unzipped)."""
    for path in folder.iterdir():
        with open(path, "rb") as f:
            while f.read(1 << 24):
                pass


def platform_layout(release: Path, submission: Path, app: Path) -> Path:
    """/app/program, /app/input/ref, /app/input/res as the platform lays them out; returns the program."""
    program = app / "program"
    program.mkdir(parents=True)
    for name in PROGRAM_FILES:
        shutil.copyfile(PROGRAM / name, program / name)
    shutil.copyfile(release / "public" / "manifest.json", program / "manifest.json")
    _write_reference(fmt.open_key_store(release / "secret" / "keys.zarr"), app / "input" / "ref")
    (app / "input" / "res").symlink_to(submission.resolve())
    return program


def compare(label: str, n: int, release: Path, submission: Path, work: Path) -> None:
    app = work / f"app-{n}"
    program = platform_layout(release, submission, app)
    python = [sys.executable, "-I", "-B"]
    read_through(submission)
    program_wall, _ = run([*python, str(program / "score.py"), str(app / "input"), str(app / "output")], cwd=program)
    mine = json.loads((app / "output" / "scores.json").read_text())
    verify = [sys.executable, "-m", "commands.verify", str(submission), "--release", str(release),
              "--keys", str(release / "secret" / "keys.zarr"), "--json"]
    cache = work / f"numba-cache-{n}"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    read_through(submission)
    cold, out = run(verify, env, cwd=ROOT)
    read_through(submission)
    warm, _ = run(verify, env, cwd=ROOT)
    theirs = json.loads(out)["scores"]
    same = all(mine[k] == theirs[k] for k in mine)
    print(f"{label}: scoring program {program_wall:6.2f} s | verify cold {cold:6.2f} s (ratio {program_wall / cold:4.2f}) "
          f"| verify warm {warm:6.2f} s (ratio {program_wall / warm:4.2f}) | same published scores: {same} "
          f"| load {os.getloadavg()[0]:.2f}")
    if not same:
        sys.exit(f"scores differ: {mine} vs {theirs}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-large", action="store_true", help="only the 5,000-encryption release")
    parser.add_argument("--workdir", type=Path, help="where temporary releases go (default: the system temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-scoring-program-", dir=args.workdir))
    try:
        print(f"cores: {os.cpu_count()}, load {os.getloadavg()[0]:.2f}, work folder: {work}")
        sizes = [(5000, [])] + ([] if args.skip_large else [(200_000, ["--n-private", "100", "--per-image", "2000",
                                                                       "--formats", "npy"])])
        for n, flags in sizes:
            release, blind = work / f"release-{n}", work / f"blind-{n}"
            run([sys.executable, "-m", "commands.main", "generate", "--out", str(release), "--seed", SEED, *flags], cwd=ROOT)
            run([sys.executable, "-m", "commands.main", "baseline", "blind", "--release", str(release), "--out", str(blind)],
                cwd=ROOT)
            compare(f"{n:,} encryptions, float32 blind", n, release, blind, work)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
