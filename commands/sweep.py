"""``instahide strength --sweep``: choose the parameters before publishing.

Builds a small practice release for every setting of a grid the maintainer names (each
``--sweep NAME=V1,V2``; the settings are their product), from the sources the real release will
use, runs ``instahide strength`` on it in a process of its own, stopped at ``--budget`` seconds,
and reports each attack's recovery per setting (:func:`verifier.strength.sweep_files`).  Every
release's seed is derived from ``--seed`` and the setting, so a sweep is replayed exactly; the
releases are removed once measured (their reports, which show private images, stay, private).
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from challenge.errors import UsageError

__all__ = ["AXES", "axis", "run_sweep", "settings"]

AXES = {"k": int, "k_private": int, "domain": str, "c1": float, "c2": float, "per_image": int, "mode": str}
SWEEP_DEFAULTS = {"n_private": 100, "per_image": 20}  # small releases: a setting takes seconds, not minutes
KEPT = ("attack", "Max_SSIM", "recovered", "recovered_above_floors", "n_private", "pair_accuracy")  # per attack


def axis(text: str) -> tuple[str, list]:
    """argparse type of ``--sweep``: ``NAME=V1,V2,...`` with NAME one of :data:`AXES`."""
    name, equals, values = text.partition("=")
    name = name.strip().replace("-", "_")
    if not equals or name not in AXES:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=V1,V2,... with NAME one of {', '.join(AXES)}")
    try:
        parsed = [AXES[name](v.strip()) for v in values.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: the values of {name} must be {AXES[name].__name__}s") from None
    if not parsed or len(set(parsed)) != len(parsed):
        raise argparse.ArgumentTypeError(f"{text!r}: expected distinct values after {name}=")
    return name, parsed


def settings(axes: list[tuple[str, list]], base):
    """(label, Params) for every combination of the axes' values, checked before anything runs."""
    from challenge.params import ParameterError

    names = [name for name, _ in axes]
    if len(set(names)) != len(names):
        raise UsageError(f"--sweep names {', '.join(sorted({n for n in names if names.count(n) > 1}))} more than once")
    out = []
    for values in itertools.product(*(v for _, v in axes)):
        chosen = dict(zip(names, values))
        if "k_private" not in chosen:  # as 'generate' does without --k-private
            chosen["k_private"] = chosen.get("k", base.k) if chosen.get("mode", base.mode) == "inside" else base.k_private
        label = " ".join(f"{n}={v}" for n, v in zip(names, values))
        try:
            out.append((label, replace(base, **chosen).validate()))
        except ParameterError as e:
            raise UsageError(f"--sweep setting {label}: {e}") from None
    return out


def run_sweep(args) -> int:
    from challenge.files import output_folder, write_files
    from challenge.keystream import parse_seed
    from challenge.params import Params
    from challenge.progress import Progress
    from generator.release import generate
    from generator.sources import load_sources
    from verifier.charts import require_matplotlib
    from verifier.strength import SWEEP_HTML, SWEEP_JSON, SWEEP_MD, sweep_files

    if args.release is not None or args.keys is not None:
        raise UsageError("--sweep builds its own releases: give no RELEASE and no --keys")
    require_matplotlib()
    out = Path(args.out)
    if (out / SWEEP_JSON).exists() and not args.force:
        raise UsageError(f"{out / SWEEP_JSON}: already exists; pass --force to replace it")
    base = Params(n_private=args.n_private or SWEEP_DEFAULTS["n_private"], per_image=args.per_image or SWEEP_DEFAULTS["per_image"])
    grid = settings(args.sweep, base)
    private, public = load_sources(args.private, args.public, Params())
    rows = []
    with output_folder(out, private=True), Progress("sweep", len(grid), unit="settings") as bar:
        for number, (label, params) in enumerate(grid, 1):
            release, report = out / ".release", out / "settings" / f"{number:02d}"
            shutil.rmtree(release, ignore_errors=True)
            generate(release, params, seed=parse_seed(f"{args.seed} {label}", practice=True), private=private,
                     public=public,
                     practice=True, progress=False)
            command = [sys.executable, "-m", "commands.main", "strength", str(release), "--keys",
                       str(release / "secret" / "keys.zarr"), "--out", str(report), "--json", "--force",
                       *(["--pool", str(args.pool)] if args.pool is not None else [])]
            start = time.perf_counter()
            try:
                done = subprocess.run(command, capture_output=True, text=True, timeout=args.budget)
            except subprocess.TimeoutExpired:  # the process is killed: its half-written report goes too
                done = None
                shutil.rmtree(report, ignore_errors=True)
            seconds = time.perf_counter() - start
            shutil.rmtree(release)
            if done is not None and done.returncode != 0:
                raise UsageError(f"--sweep setting {label}: strength failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
            attacks = [] if done is None else json.loads(done.stdout)["attacks"]
            rows.append({"setting": label, "params": params.to_dict(),
                         "report": None if done is None else f"settings/{number:02d}/strength.html",
                         "seconds": round(seconds, 1), "over_budget": done is None,
                         "attacks": [{k: a[k] for k in KEPT if k in a} for a in attacks]})
            bar.advance()
        sweep = {"seed": args.seed, "budget_s": args.budget, "axes": dict(args.sweep), "settings": rows}
        files = sweep_files(sweep)
        write_files(out, files, "sweep", private=True)  # the JSON last: a sweep without it is not whole
    if args.json:
        print(json.dumps(sweep, indent=2, sort_keys=True))
    else:
        print(files[SWEEP_MD], end="")
        print(f"wrote {out / SWEEP_JSON}, {out / SWEEP_MD}, {out / SWEEP_HTML}")
    return 0
