"""``instahide attack NAME`` and ``instahide strength``, for every attack of :data:`attacks.registry.ATTACKS`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from functools import partial
from pathlib import Path

from attacks import registry
from attacks.registry import Attack
from challenge.errors import UsageError
from commands.common import OneLineParser, add_source_options, positive_int, shape_options
from commands.sweep import AXES, SWEEP_DEFAULTS, axis as sweep_axis, run_sweep

__all__ = ["register"]

ATTACK_EXAMPLES = """\
examples:
  instahide attack pool --release r/ --pool cifar-10-batches-py/ --out sub-pool/
  instahide attack pool --release r/ --out sub-pool/        # pool: the embedded demo data
  instahide attack graph --release r/ --out sub-graph/ --json
  verify sub-graph/ --release r/                            # then score it like any submission
"""

STRENGTH_EXAMPLES = """\
examples:
  instahide strength r/ --keys r/secret/keys.zarr --out report/
  instahide strength r/ --keys r/secret/keys.zarr --pool cifar-10-batches-py/ --out report/ --json
  instahide strength --sweep k=4,6 --sweep domain=positive,centered --private photos/ --out sweep/
"""


def register(sub) -> None:
    """Add ``attack`` (with ``pool`` and ``graph``) and ``strength`` to the ``instahide`` subcommands."""
    p = sub.add_parser("attack", help="run a known attack on a release's public files and write a submission",
                       description="Run a published attack on a release, using only its public files, and write "
                       "a submission (decryption.npy, metadata.json) that 'verify' scores.",
                       epilog=ATTACK_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    kinds = p.add_subparsers(dest="attack", required=True, metavar="ATTACK", parser_class=OneLineParser)
    for attack in registry.ATTACKS:
        q = kinds.add_parser(attack.name, help=attack.help, description=attack.description, epilog=ATTACK_EXAMPLES,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
        if attack.uses_pool:
            q.add_argument("--pool", type=Path, help="candidate images: any --private layout, loaded at the release's "
                           "image shape (default: the embedded demo data)")
        q.add_argument("--release", type=Path, required=True, help="the release folder, or its public/ folder")
        q.add_argument("--out", type=Path, required=True, help="submission folder to write")
        q.add_argument("--rows", type=positive_int, default=4096, help="rows processed at a time (default: %(default)s)")
        q.add_argument("--force", action="store_true", help="replace an existing decryption.npy")
        q.add_argument("--json", action="store_true", help="print a summary as JSON on stdout")
        q.set_defaults(run=_quiet_under_json(partial(_run_attack, attack)))

    p = sub.add_parser("strength", help="run every known attack on a release and report what it recovers",
                       description="Before publishing: run the pool attack (with --pool, or when the private set "
                       "is the embedded data), the graph attack, the constant and mean floors and the key-given "
                       "pairing baseline; score each and write strength.json, strength.html and pictures. With "
                       "--sweep: do it on a small practice release per setting of a parameter grid, built from "
                       "--private/--public, and write a table, sweep.json and a chart.",
                       epilog=STRENGTH_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("release", type=Path, nargs="?", metavar="RELEASE", help="the release folder (not with --sweep)")
    p.add_argument("--keys", type=Path, help="the key store secret/keys.zarr (to score; not with --sweep)")
    p.add_argument("--pool", type=Path, help="a data set the private images may come from (any --private layout)")
    p.add_argument("--out", type=Path, required=True, help="report folder")
    p.add_argument("--rows", type=positive_int, default=4096, help="rows processed at a time (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="replace an existing report")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    sweep = p.add_argument_group("sweep: choose the parameters before building the real release")
    sweep.add_argument("--sweep", type=sweep_axis, action="append", metavar="NAME=V1,V2",
                       help=f"a grid axis (repeatable; the settings are the product): NAME one of {', '.join(AXES)}")
    add_source_options(sweep)
    sweep.add_argument("--n-private", type=positive_int, help=f"private images per release (default: {SWEEP_DEFAULTS['n_private']})")
    sweep.add_argument("--per-image", type=positive_int, help=f"encryptions per private image (default: {SWEEP_DEFAULTS['per_image']})")
    sweep.add_argument("--seed", default="sweep", help="any text: each setting's practice seed derives from it and the setting "
                       "(default: %(default)s)")
    sweep.add_argument("--budget", type=positive_int, default=300, metavar="SECONDS",
                       help="a setting whose attacks run longer is stopped and reported over budget (default: %(default)s)")
    p.set_defaults(run=_quiet_under_json(_run_strength))


def _quiet_under_json(run):
    """``run`` drawing no progress bar under ``--json`` (stderr carries only errors then)."""
    def quietly(args) -> int:
        from challenge.progress import quiet

        if not args.json:
            return run(args)
        with quiet():
            return run(args)

    return quietly


def _pool_at_shape(path: Path | None, release):
    """The candidate images (without a path, the embedded demo data) at the release's image shape:
    resized to its side, an image folder decoded to grey for a grey release."""
    from dataclasses import replace

    from generator.default_data import default_private
    from generator.images import resize_images
    from generator.sources import load_private

    options = shape_options(path, release.image_shape)
    if path is not None:
        return load_private(path, **options)
    pool = default_private()
    return pool if options["size"] is None else replace(pool, images=resize_images(pool.images, options["size"]))


def _load_pool(path: Path | None, release):
    """:func:`_pool_at_shape`, or one line naming the pool and both shapes when they differ."""
    from challenge.errors import UsageError

    pool = _pool_at_shape(path, release)
    if pool.image_shape != release.image_shape:
        name = "the embedded demo data" if path is None else f"--pool {path}"
        ours, theirs = ("x".join(map(str, shape)) for shape in (pool.image_shape, release.image_shape))
        raise UsageError(f"{name}: its images are {ours}, the release's {theirs}; "
                         "give --pool a data set of the release's image shape")
    return pool


def _embedded_pool(release):
    """The embedded demo data when the release was built from it (its fingerprint is in the manifest)."""
    pool = _pool_at_shape(None, release)
    return pool if release.manifest.fingerprint("private") == pool.fingerprint() else None


def _finish(args, summary: dict) -> int:
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True))
    else:
        print(f"wrote {args.out}/decryption.npy: {summary['attack']} attack, {summary['rows']} rows "
              f"in {summary['running_time_s']:.1f} s")
    return 0


def _inputs(attack: Attack, pool) -> tuple[dict, dict]:
    """What ``attack.run`` is given beyond the release, and the fields that say so in its report."""
    return ({"pool": pool}, {"pool_size": len(pool)}) if attack.uses_pool else ({}, {})


def _run_attack(attack: Attack, args) -> int:
    from attacks.public import open_public
    from challenge.files import output_folder

    release = open_public(args.release)
    inputs, fields = _inputs(attack, _load_pool(args.pool, release) if attack.uses_pool else None)
    start = time.perf_counter()
    with output_folder(args.out):
        summary, _ = attack.run(release, args.out, **inputs, rows=args.rows, force=args.force)
    return _finish(args, {"attack": attack.name, "rows": release.expected.n, **fields,
                          "running_time_s": time.perf_counter() - start, **summary})


def _attacker(attack: Attack, release, pool, args):
    """``attack`` as strength runs it (a :class:`verifier.strength.Attacker`): its writer, which adds
    what its measure hook finds with the keys; none for an attack that needs a pool when there is none."""
    from verifier.strength import Attacker

    if attack.uses_pool and pool is None:
        return Attacker(attack.name, who=attack.attacker, has=attack.has, missing="give --pool the data set the private "
                        "images come from")
    inputs, fields = _inputs(attack, pool)

    def write(folder: Path, store) -> dict:
        _, answer = attack.run(release, folder, **inputs, rows=args.rows, force=args.force)
        return {**fields, **(attack.measure(answer, store) if attack.measure else {})}

    return Attacker(attack.name, who=attack.attacker, has=attack.has, write=write)


def _run_strength(args) -> int:
    """The composition: the registered attacks that apply, run and scored by the verifier's report."""
    from attacks.public import open_public
    from verifier.strength import STRENGTH_HTML, STRENGTH_JSON, strength

    if args.sweep:
        return run_sweep(args)
    sweep_only = [option for option, value in (("--private", args.private), ("--public", args.public),
                                               ("--n-private", args.n_private), ("--per-image", args.per_image))
                  if value is not None]
    if args.release is None or args.keys is None or sweep_only:
        raise UsageError(f"{sweep_only[0]} is a --sweep option" if sweep_only else
                         "give RELEASE and --keys (or --sweep NAME=V1,V2 to sweep parameters)")
    release = open_public(args.release)
    pool = _load_pool(args.pool, release) if args.pool is not None else _embedded_pool(release)
    attackers = [_attacker(attack, release, pool, args) for attack in registry.ATTACKS]
    log = None if args.json else (lambda line: print(f"  {line}", file=sys.stderr))
    report = strength(args.release, args.keys, args.out, attackers, force=args.force, rows=args.rows, log=log)
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print("\n".join(report["verdict"]))
        print(f"wrote {args.out / STRENGTH_JSON}, {args.out / STRENGTH_HTML}")
    return 0
