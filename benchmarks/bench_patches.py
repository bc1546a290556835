"""Patch-bank builder against a plain single-process Pillow loop doing the same work, same run.

Writes N ImageNet-sized JPEGs (about 400x350, smooth colour noise plus shapes and grain) to a
temporary folder, then times:

* ``build_patch_bank`` with the default worker count (all cores), and
* a plain loop in this process: open, draft, decode, convert, resize, crop, count keypoints,
  keep, and write the kept patches to Zarr at the end - the same bytes, checked.

Each measurement runs in a fresh process (as ``instahide patches`` does), after imports and the
JIT cache load; the two are interleaved and the best of 3 is kept, so other load on the machine
hits both alike.  Prints source images/s, patches/s and the speed-up (target: >= 1.6x on 2 cores).
Usage: python benchmarks/bench_patches.py [N_IMAGES [REPEATS]]   (defaults 2000, 3)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from generator.patches import (  # noqa: E402
    DEFAULT_MIN_KEYPOINTS,
    build_patch_bank,
    count_keypoints,
    crop_positions,
    load_patch_bank,
    load_resized,
)
from generator.images import walk_image_files  # noqa: E402

SEED = b"benchmark-seed"
CROPS = 2
REPEATS = 3


def make_images(root: Path, n: int) -> None:
    rng = np.random.default_rng(2020)
    for i in range(n):
        d = root / f"n{i % 20:08d}"
        d.mkdir(parents=True, exist_ok=True)
        w, h = int(rng.integers(360, 440)), int(rng.integers(320, 380))
        small = rng.integers(0, 256, (int(rng.integers(4, 24)), int(rng.integers(4, 24)), 3), dtype=np.uint8)
        im = Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)
        draw = ImageDraw.Draw(im)
        for _ in range(int(rng.integers(0, 30))):
            x, y, r = int(rng.integers(0, w)), int(rng.integers(0, h)), int(rng.integers(4, 80))
            draw.ellipse([x - r, y - r, x + r, y + r], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        a = np.asarray(im).astype(np.int16) + rng.integers(-12, 13, (h, w, 3))
        Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(d / f"img_{i:06d}.JPEG", quality=85)


def plain_loop(root: Path, out: Path) -> np.ndarray:
    import zarr

    files = walk_image_files(root, {})
    kept, boxes = [], []
    for idx, rel in enumerate(files):
        img, _ = load_resized(root / rel)
        h, w = img.shape[:2]
        pos = crop_positions(SEED, rel, width=w, height=h, k=CROPS)
        crops = np.stack([img[y:y + 32, x:x + 32] for x, y in pos])
        keep = count_keypoints(crops) > DEFAULT_MIN_KEYPOINTS
        kept.extend(crops[keep])
        boxes.extend((idx, x, y, x + 32, y + 32) for (x, y), k in zip(pos, keep) if k)
    patches = np.stack(kept)
    g = zarr.open_group(out, mode="w", zarr_format=3)
    g.create_array("patches", data=patches, chunks=(1024, 32, 32, 3))
    g.create_array("origin", data=np.asarray(boxes, np.int64), chunks=(16384, 5))
    return patches


def timed_run(mode: str, public: Path, out: Path) -> None:
    """One measurement in a fresh process (as the CLI runs); prints JSON: seconds, patches."""
    count_keypoints(np.zeros((1, 32, 32, 3), np.uint8))  # JIT/cache load outside the timings
    t = time.perf_counter()
    if mode == "builder":
        n = build_patch_bank(public, out, seed=SEED, crops_per_image=CROPS, workers=None).patches
    else:
        n = len(plain_loop(public, out))
    print(json.dumps({"seconds": time.perf_counter() - t, "patches": n}))


def measure(mode: str, public: Path, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    r = subprocess.run([sys.executable, __file__, "--time", mode, str(public), str(out)],
                       check=True, capture_output=True, text=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--time":
        timed_run(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]))
        return
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else REPEATS
    tmp = Path(tempfile.mkdtemp(prefix="bench_patches_"))
    try:
        t = time.perf_counter()
        make_images(tmp / "public", n)
        size = sum(f.stat().st_size for f in (tmp / "public").rglob("*.JPEG"))
        print(f"wrote {n} JPEGs ({size / n / 1024:.0f} KiB each) in {time.perf_counter() - t:.1f} s")
        runs: dict[str, list[dict]] = {"builder": [], "plain": []}
        for _ in range(repeats):  # interleaved, best of repeats: other load on the machine hits both
            for mode in runs:
                runs[mode].append(measure(mode, tmp / "public", tmp / f"{mode}.zarr"))
        best = {m: min(r, key=lambda x: x["seconds"]) for m, r in runs.items()}
        t_par, t_plain = best["builder"]["seconds"], best["plain"]["seconds"]
        import zarr

        same = np.array_equal(load_patch_bank(tmp / "builder.zarr").images,
                              zarr.open_group(tmp / "plain.zarr", mode="r")["patches"][:])
        workers = len(os.sched_getaffinity(0))
        p = best["builder"]["patches"]
        print(f"best of {repeats}, each run in a fresh process, imports and JIT load excluded")
        print(f"plain single-process loop   : {t_plain:6.2f} s  {n / t_plain:6.1f} images/s  "
              f"{p / t_plain:7.1f} patches/s")
        print(f"build_patch_bank ({workers} workers): {t_par:6.2f} s  {n / t_par:6.1f} images/s  "
              f"{p / t_par:7.1f} patches/s")
        print(f"patches kept {p} of {n * CROPS} crops; identical banks: {same}")
        print(f"speed-up: {t_plain / t_par:.2f}x  (all runs: builder "
              f"{[round(r['seconds'], 2) for r in runs['builder']]}, plain "
              f"{[round(r['seconds'], 2) for r in runs['plain']]})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
