"""Encoder throughput, in memory, against baselines measured in the same run.

Prints encryptions/s of the numba encoder and of the plain numpy reference (ratio must be >= 20),
and the encoder's output bytes/s as a share of this machine's memcpy bandwidth (must be >= 0.25).
JIT compilation is excluded (a warm-up call first).  Exit status 1 if a target is missed.

    python benchmarks/bench_encoder.py [--rows 50000] [--reference-rows 5000]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.naive, the reference twin

from challenge.domain import affine  # noqa: E402
from challenge.encoding import encode  # noqa: E402
from challenge.format import FORMAT_VERSION  # noqa: E402
from challenge.keys import draw_plan, sign_bits  # noqa: E402
from challenge.params import Params  # noqa: E402
from generator.default_data import default_private, default_public  # noqa: E402
from tests.naive import encode_reference  # noqa: E402
from timing import best_of  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--reference-rows", type=int, default=5_000)
    args = parser.parse_args()

    seed = bytes(range(32))
    params = Params(n_private=100, per_image=args.rows // 100)
    private, bank = default_private(), default_public()
    rows = params.n_encryptions

    t_keys = best_of(1, lambda: draw_plan(seed, params, private.labels, len(bank), FORMAT_VERSION))
    plan = draw_plan(seed, params, private.labels, len(bank), FORMAT_VERSION)
    t_signs = best_of(1, lambda: sign_bits(seed, 0, rows))
    signs = sign_bits(seed, 0, rows)
    truth = private.images[plan.selection]
    tables = (truth, bank.images, affine("centered"))
    row_keys = {"private_index": plan.private_index, "public_index": plan.public_bank_index, "lam": plan.lam,
                "sign_bits": signs}
    out = np.empty((rows, 32, 32, 3), np.float32)
    encode(*tables, **{name: k[:10] for name, k in row_keys.items()})  # JIT warm-up
    t_fast = best_of(3, lambda: encode(*tables, **row_keys, out=out))

    r = args.reference_rows
    t_ref = best_of(1, lambda: encode_reference(*tables, *(k[:r] for k in row_keys.values()))) * rows / r

    src = np.ones(out.size, np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # fault the pages in first
    t_copy = best_of(5, lambda: np.copyto(dst, src))

    speedup = t_ref / t_fast
    share = (out.nbytes / t_fast) / (out.nbytes / t_copy)
    print(f"encoder            {rows / t_fast:12,.0f} encryptions/s  {out.nbytes / t_fast / 1e9:6.2f} GB/s")
    print(f"numpy reference    {rows / t_ref:12,.0f} encryptions/s  (timed on {r} rows)")
    print(f"memcpy             {out.nbytes / t_copy / 1e9:6.2f} GB/s ({out.nbytes / 1e6:.0f} MB, best of 5)")
    print(f"keys: plan {t_keys:.3f} s, sign masks {t_signs:.3f} s for {rows} rows")
    print(f"ratio to reference {speedup:8.1f}x   (target >= 20x)")
    print(f"share of memcpy    {share:8.2f}    (target >= 0.25)")
    return 0 if speedup >= 20 and share >= 0.25 else 1


if __name__ == "__main__":
    sys.exit(main())
