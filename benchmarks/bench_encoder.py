"""Encoder throughput at several image shapes, in memory, against baselines measured in the same run.

For each shape (default 28x28x1, 32x32x3, 64x64x3, 224x224x3) prints encryptions/s of the numba
encoder and of the plain numpy reference (ratio must be >= 20), and the encoder's output bytes/s as
a share of this machine's memcpy bandwidth on a buffer of the same size, copied by as many numba
threads as the encoder uses (must be >= 0.25, and >= 0.4 at 224x224x3); a one-thread copy is printed
beside it.  The images are the embedded data resized (nearest neighbour).  JIT compilation is
excluded (warm-up calls first); the encoder and the copies are timed in turn, best of 5 each, into
buffers already faulted in.  The load average is printed before and after: the machine is shared.
Exit status 1 if a target is missed.

    python benchmarks/bench_encoder.py [--shapes 28x28x1,32x32x3,64x64x3,224x224x3] [--megabytes 300]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numba
import numpy as np
from numba import njit, prange

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.naive, the reference twin

from challenge.domain import affine  # noqa: E402
from challenge.encoding import encode  # noqa: E402
from challenge.format import FORMAT_VERSION  # noqa: E402
from challenge.geometry import check_image_shape, image_values  # noqa: E402
from challenge.keys import draw_plan, sign_bits  # noqa: E402
from challenge.params import Params  # noqa: E402
from generator.default_data import default_private, default_public  # noqa: E402
from tests.helpers import resized  # noqa: E402
from tests.naive import encode_reference  # noqa: E402
from timing import best_of, best_of_each  # noqa: E402

SPEEDUP_TARGET = 20
SHARE_TARGETS = {(224, 224, 3): 0.4}  # of memcpy; 0.25 at every other shape
SHARE_TARGET = 0.25


@njit(cache=True, parallel=True)
def parallel_copy(src, dst):
    """memcpy by as many threads as the encoder uses (numba's), in blocks of 64 KiB."""
    for block in prange(src.size // 16384 + 1):
        dst[block * 16384 : (block + 1) * 16384] = src[block * 16384 : (block + 1) * 16384]


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def parse_shape(text: str) -> tuple[int, int, int]:
    return check_image_shape(tuple(int(v) for v in text.lower().split("x")))


def measure(shape: tuple[int, int, int], megabytes: float, seed: bytes) -> bool:
    """One shape's figures, printed; whether it meets its targets."""
    rows = max(100, int(megabytes * 1e6 / (4 * image_values(shape))) // 100 * 100)
    params = Params(n_private=100, per_image=rows // 100, image_shape=shape)
    private, bank = resized(default_private(), shape), resized(default_public(), shape)
    plan = draw_plan(seed, params, labels=private.labels, bank_size=len(bank), version=FORMAT_VERSION)
    t_signs = best_of(1, lambda: sign_bits(seed, 0, rows, shape))
    signs = sign_bits(seed, 0, rows, shape)
    tables = (private.images[plan.selection], bank.images, affine("centered"))
    row_keys = {"private_index": plan.private_index, "public_index": plan.public_bank_index, "lam": plan.lam,
                "sign_bits": signs}
    out = np.zeros((rows, *shape), np.float32)  # every output buffer's pages are faulted in before timing
    src, dst = np.ones(out.size, np.float32), np.zeros(out.size, np.float32)
    encode(*tables, **{name: k[:10] for name, k in row_keys.items()})  # JIT warm-ups
    parallel_copy(src[:10], dst[:10])
    t_fast, t_copy, t_copy_one = best_of_each(
        5, lambda: encode(*tables, **row_keys, out=out), lambda: parallel_copy(src, dst), lambda: np.copyto(dst, src))

    r = max(10, rows // 10)
    t_ref = best_of(1, lambda: encode_reference(*tables, *(k[:r] for k in row_keys.values()))) * rows / r

    speedup, share = t_ref / t_fast, t_copy / t_fast
    share_target = SHARE_TARGETS.get(shape, SHARE_TARGET)
    name = "x".join(map(str, shape))
    print(f"{name:>10}: {rows:6d} rows ({out.nbytes / 1e6:.0f} MB)  encoder {rows / t_fast:10,.0f} enc/s "
          f"{out.nbytes / t_fast / 1e9:5.2f} GB/s | reference {rows / t_ref:9,.0f} enc/s (on {r} rows) | "
          f"memcpy {out.nbytes / t_copy / 1e9:5.2f} GB/s ({numba.get_num_threads()} threads; "
          f"{out.nbytes / t_copy_one / 1e9:5.2f} GB/s on one) | sign masks {t_signs:.3f} s")
    print(f"{'':>10}  ratio to reference {speedup:7.1f}x (target >= {SPEEDUP_TARGET}x)   "
          f"share of memcpy {share:5.2f} (target >= {share_target})")
    return speedup >= SPEEDUP_TARGET and share >= share_target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="28x28x1,32x32x3,64x64x3,224x224x3",
                        help="comma-separated HxWxC shapes (default: %(default)s)")
    parser.add_argument("--megabytes", type=float, default=300, help="encoder output per shape (default: %(default)s)")
    args = parser.parse_args()
    shapes = [parse_shape(text) for text in args.shapes.split(",")]
    print(f"load average {load_average()} on {os.cpu_count()} cores")
    results = [measure(shape, args.megabytes, bytes(range(32))) for shape in shapes]
    print(f"load average {load_average()}")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
