"""Scoring throughput: verifier.metrics.score_pairs against a scikit-image loop, same pairs, same run.

For each image shape (default: 32x32x3 CIFAR, 28x28x1 MNIST, 64x64x3 and 224x224x3 ImageNet sizes),
scores recovered/private pairs (SSIM + L2) with score_pairs, after a warm-up call so JIT compilation
is excluded, and the first of them with a plain loop over skimage.metrics.structural_similarity
(``channel_axis=-1`` for colour, the 2-D image for grey) plus a numpy L2 (its rate is per pair, so
the subset scales).  --pairs and --skimage-pairs count pairs at 32x32x3; other shapes get as many
pairs as hold the same number of values (at least 20 and 4), so every shape takes about as long.
Each side is timed as its best of several runs (the machine may be shared).  Prints pairs/s for
each and their ratio per shape: the goal is >= 100, and the exit status is 1 below 50 at any shape
(or if the two disagree by more than 1e-6).  Also prints the ratio of pairs per CPU second, which
other load on the machine distorts less (score_pairs' wall-time rate is at most that many times
its thread count).

    python benchmarks/bench_metrics.py [--shapes 32x32x3,28x28x1,64x64x3,224x224x3] [--pairs 10000]
                                       [--skimage-pairs 1000] [--per-row 1] [--repeats 10]
                                       [--skimage-repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import time

import numba
import numpy as np
from skimage.metrics import structural_similarity

from verifier.metrics import score_pairs

MIN_RATIO = 50.0
GOAL_RATIO = 100.0
DEFAULT_SHAPES = "32x32x3,28x28x1,64x64x3,224x224x3"
REFERENCE_VALUES = 32 * 32 * 3  # --pairs and --skimage-pairs count pairs of this many values


def best_of(repeats: int, fn):
    """Fastest of several runs (the machine may be shared): (wall s, CPU s of that run, result).

    CPU time is the whole process's, all threads: it shows how much other load stole.
    """
    best = (float("inf"), 0.0)
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        best = min(best, (time.perf_counter() - wall, time.process_time() - cpu))
    return best[0], best[1], result


def skimage_loop(recovered, private, index):
    """What a verifier would do without the kernels: one library call per pair."""
    pairs = [(b, k) for b in range(index.shape[0]) for k in range(index.shape[1])]
    out = np.empty((len(pairs), 2))
    colour = recovered.shape[-1] == 3
    for i, (b, k) in enumerate(pairs):
        x = recovered[b].astype(np.float64)
        y = private[index[b, k]] / 127.5 - 1.0
        out[i, 0] = structural_similarity(
            x if colour else x[..., 0], y if colour else y[..., 0], win_size=7, gaussian_weights=False,
            use_sample_covariance=True, K1=0.01, K2=0.03, data_range=2.0, channel_axis=-1 if colour else None,
        )
        out[i, 1] = np.sqrt(np.mean((x - y) ** 2))
    return out


def parse_shape(text: str) -> tuple[int, int, int]:
    try:
        shape = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        shape = ()
    if len(shape) != 3 or shape[2] not in (1, 3) or min(shape[:2]) < 7:
        raise argparse.ArgumentTypeError(f"a shape is HxWxC with H, W >= 7 and C = 1 or 3, got {text!r}")
    return shape


def scaled(pairs: int, shape: tuple[int, int, int], m: int, least: int) -> int:
    """Pairs of this shape holding as many values as `pairs` at 32x32x3: a multiple of m, >= least."""
    n = max(least, round(pairs * REFERENCE_VALUES / np.prod(shape)))
    return -(-n // m) * m


def bench_shape(shape, args) -> bool:
    """Time one shape; print its line; return whether it passes."""
    m = args.per_row
    npairs = scaled(args.pairs, shape, m, 20)
    nslow = min(npairs, scaled(args.skimage_pairs, shape, m, 4))
    # Content does not change the work done; noisy copies of random private images stand in.
    rng = np.random.default_rng(0)
    rows = npairs // m
    private = rng.integers(0, 256, (npairs, *shape), dtype=np.uint8)
    index = rng.permutation(npairs).reshape(rows, m)
    recovered = (private[index[:, 0]] / 127.5 - 1.0 + rng.normal(0, 0.1, (rows, *shape))).clip(-1, 1)
    recovered = recovered.astype(np.float32)

    score_pairs(recovered[:8], private, index[:8])  # warm-up: JIT compile (or cache load)
    fast_s, fast_cpu, (fast_ssim, fast_l2) = best_of(args.repeats, lambda: score_pairs(recovered, private, index))
    sub = nslow // m
    slow_s, slow_cpu, slow = best_of(args.skimage_repeats, lambda: skimage_loop(recovered[:sub], private, index[:sub]))

    fast_rate = npairs / fast_s
    slow_rate = nslow / slow_s
    ratio = fast_rate / slow_rate
    max_diff = max(np.abs(fast_ssim[:sub].ravel() - slow[:, 0]).max(), np.abs(fast_l2[:sub].ravel() - slow[:, 1]).max())

    name = "x".join(map(str, shape))
    print(f"{name}:")
    print(f"  score_pairs : {npairs} pairs ({rows} x {m}) in {fast_s:.4f} s = {fast_rate:,.0f} pairs/s "
          f"(best of {args.repeats}, {numba.get_num_threads()} numba threads; {fast_cpu / fast_s:.2f} cores busy)")
    print(f"  skimage loop: {nslow} pairs in {slow_s:.4f} s = {slow_rate:,.1f} pairs/s "
          f"(best of {args.skimage_repeats}, one thread; {slow_cpu / slow_s:.2f} cores busy)")
    print(f"  ratio       : {ratio:.1f}x (goal >= {GOAL_RATIO:.0f}x, required >= {MIN_RATIO:.0f}x)")
    print(f"  per CPU second: {npairs / fast_cpu:,.0f} and {nslow / slow_cpu:,.1f} pairs, "
          f"{(npairs / fast_cpu) / (nslow / slow_cpu):.1f}x (what a shared machine leaves comparable)")
    print(f"  max |difference| vs skimage/numpy on the shared pairs: {max_diff:.2e}")
    ok = True
    if max_diff > 1e-6:
        print("  FAIL: scores disagree with scikit-image")
        ok = False
    if ratio < MIN_RATIO:
        print(f"  FAIL: ratio below {MIN_RATIO:.0f}x")
        ok = False
    elif ratio < GOAL_RATIO:
        print(f"  note: ratio below the {GOAL_RATIO:.0f}x goal")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default=DEFAULT_SHAPES, type=lambda s: [parse_shape(v) for v in s.split(",")],
                        help=f"comma-separated HxWxC image shapes (default {DEFAULT_SHAPES})")
    parser.add_argument("--pairs", type=int, default=10_000, help="pairs scored at 32x32x3 (scaled for other shapes)")
    parser.add_argument("--skimage-pairs", type=int, default=1_000, help="pairs of the skimage loop at 32x32x3")
    parser.add_argument("--per-row", type=int, default=1, help="private images compared with each recovered one")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs of score_pairs (best counts)")
    parser.add_argument("--skimage-repeats", type=int, default=3, help="timed runs of the skimage loop")
    args = parser.parse_args()
    if args.per_row < 1 or not 0 < args.skimage_pairs <= args.pairs:
        parser.error("--per-row must be >= 1 and 0 < --skimage-pairs <= --pairs")
    results = [bench_shape(shape, args) for shape in args.shapes]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
