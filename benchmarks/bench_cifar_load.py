"""load_private on a 50,000-record CIFAR-10 binary set against np.fromfile of the same bytes.

The floor is reading the five files; load_private also checks sizes and labels, and turns the
channel-planar records into (N, 32, 32, 3) images.  Best of 3 runs each (the page cache is warm
for both).  Usage: python benchmarks/bench_cifar_load.py
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from generator.sources import load_private  # noqa: E402
from timing import best_of  # noqa: E402


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench_cifar_"))
    try:
        rng = np.random.default_rng(0)
        files = []
        for b in range(1, 6):
            rec = rng.integers(0, 256, (10_000, 3073), dtype=np.uint8)
            rec[:, 0] %= 10
            f = tmp / f"data_batch_{b}.bin"
            rec.tofile(f)
            files.append(f)
        (tmp / "batches.meta.txt").write_text("\n".join(f"class{i}" for i in range(10)) + "\n")
        s = load_private(tmp)
        assert len(s) == 50_000
        t_raw = best_of(3, lambda: [np.fromfile(f, dtype=np.uint8) for f in files])
        t_load = best_of(3, lambda: load_private(tmp))
        mb = sum(f.stat().st_size for f in files) / 1e6
        print(f"50,000 records, {mb:.0f} MB")
        print(f"np.fromfile of the same bytes : {t_raw:.3f} s")
        print(f"load_private                  : {t_load:.3f} s")
        print(f"ratio load_private / fromfile : {t_load / t_raw:.2f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
