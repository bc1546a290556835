"""Image-folder private set: ``load_private`` with 2 worker processes against 1, same run.

Writes N small JPEGs (64..160 px a side, smooth colour noise plus grain) in 10 class folders to a
temporary folder, then times ``load_private(folder, size=S, workers=W)`` for W = 1 and 2, each
in a fresh process (as ``instahide generate --private FOLDER`` runs it), interleaved, best of
REPEATS; checks both give the same fingerprint and prints files/s and the ratio 2 workers / 1.
Usage: python benchmarks/bench_folder_load.py [N_IMAGES [SIZE [REPEATS]]]   (defaults 3000, 32, 3)
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHILD = """
import json, sys, time
from generator.sources import load_private
t = time.perf_counter()
s = load_private(sys.argv[1], size=int(sys.argv[2]), workers=int(sys.argv[3]))
print(json.dumps({"seconds": time.perf_counter() - t, "fingerprint": s.fingerprint(), "n": len(s)}))
"""


def make_images(root: Path, n: int) -> None:
    rng = np.random.default_rng(2021)
    for i in range(n):
        d = root / f"class{i % 10}"
        d.mkdir(parents=True, exist_ok=True)
        w, h = int(rng.integers(64, 161)), int(rng.integers(64, 161))
        small = rng.integers(0, 256, (int(rng.integers(3, 12)), int(rng.integers(3, 12)), 3), dtype=np.uint8)
        a = np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)).astype(np.int16)
        a += rng.integers(-10, 11, (h, w, 3))
        Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(d / f"{i:06d}.jpg", quality=85)


def run(folder: Path, size: int, workers: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(folder), str(size), str(workers)], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 32
    repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    with tempfile.TemporaryDirectory(prefix="bench-folder-") as tmp:
        folder = Path(tmp) / "photos"
        make_images(folder, n)
        runs: dict[int, list[float]] = {1: [], 2: []}
        prints = set()
        for _ in range(repeats):
            for workers in (1, 2):
                r = run(folder, size, workers)
                runs[workers].append(round(r["seconds"], 2))
                prints.add(r["fingerprint"])
        best = {workers: min(times) for workers, times in runs.items()}
        assert len(prints) == 1, "the set differs with the worker count"
        print(f"{n} JPEGs (64..160 px) -> {size}x{size}x3, best of {repeats}, fresh process each")
        for workers in (1, 2):
            print(f"load_private workers={workers}: {best[workers]:.2f} s  ({n / best[workers]:,.0f} files/s)")
        print(f"ratio 2 workers / 1: {best[1] / best[2]:.2f}x  (same fingerprint; all runs: 1 worker {runs[1]}, "
              f"2 workers {runs[2]})")


if __name__ == "__main__":
    main()
