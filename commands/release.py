"""The ``instahide audit``, ``reproduce`` and ``inspect`` subcommands: is a release trustworthy?

Exit codes: 0 sound / reproduced identical, 3 a finding / a difference, 2 bad input (a path that
is not a release or key store, different source data, a bad option), 1 internal error.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from commands.cluster import add_dask_option, dask_client
from commands.common import add_source_options, positive_int, shape_options

if TYPE_CHECKING:
    from challenge.manifest import Manifest

__all__ = ["register", "reproduce"]

AUDIT_EXAMPLES = """\
examples:
  instahide audit release/                                  # keys at release/secret/keys.zarr
  instahide audit release/ --keys revealed/keys.zarr --json
  instahide audit release/ --dask local:2                   # the rows checked by 2 worker processes
exit codes: 0 sound, 3 at least one finding, 2 bad input, 1 internal error
"""
REPRODUCE_EXAMPLES = """\
examples:
  instahide reproduce release/                              # embedded default data
  instahide reproduce release/ --keys keys.zarr --private cifar-10-batches-py/ --public bank.zarr
  instahide reproduce m/ --private /data/mnist/ --public photos/   # a 28x28 grey release: shape from its manifest
exit codes: 0 identical, 3 a difference, 2 bad input (including different source data), 1 internal error
"""
INSPECT_EXAMPLES = """\
examples:
  instahide inspect release/
  instahide inspect release/ --keys release/secret/keys.zarr --sheet truth.png   # secret picture!
"""


def _keys_default(args) -> Path:
    return args.keys if args.keys is not None else args.release / "secret" / "keys.zarr"


def _add_release(p: argparse.ArgumentParser, keys_help: str) -> None:
    p.add_argument("release", type=Path, help="the release folder (holding public/)")
    p.add_argument("--keys", type=Path, help=keys_help)


def register(sub) -> None:
    """Add ``audit``, ``reproduce`` and ``inspect`` to the ``instahide`` subcommands."""
    p = sub.add_parser(
        "audit",
        help="check a release against its key store, without the source data",
        description="Check every published byte of a release against its key store: the commitment, "
        "every encryption re-computed from its keys and the ground truth, the lambda constraints, "
        "the per-image counts, partner distinctness, the labels, and that public/ holds only what "
        "the format declares public. Needs no source data set. See docs/AUDIT.md.",
        epilog=AUDIT_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_release(p, "the key store (default: RELEASE/secret/keys.zarr)")
    p.add_argument("--chunk", type=positive_int, default=4096, help="encryptions checked at a time; bounds memory (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    add_dask_option(p)
    p.set_defaults(run=_run_audit)

    p = sub.add_parser(
        "reproduce",
        help="regenerate a release from its sources and seed and compare byte for byte",
        description="Regenerate the release from the source data and the seed in the key store, then "
        "compare every public file and the key store with the regenerated ones and report the first "
        "difference (file, encryption, field). The sources' fingerprints are checked first: "
        "different data is refused with exit code 2. The sources are loaded at the release's image "
        "shape (its --size and --grey need not be given again). Without --private/--public the embedded "
        "default data is used, as in 'instahide generate'.",
        epilog=REPRODUCE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_release(p, "the key store holding the seed (default: RELEASE/secret/keys.zarr)")
    add_source_options(p)
    p.add_argument("--work", type=Path, help="folder for the temporary regenerated release (default: the system's temp folder)")
    p.add_argument("--json", action="store_true", help="print the outcome as JSON on stdout")
    p.set_defaults(run=_run_reproduce)

    p = sub.add_parser(
        "inspect",
        help="show a release's parameters, sizes and digests (with --keys, a picture of the ground truth)",
        description="Show what a release's manifest and files say: parameters, sizes, digests. With "
        "--keys, also write a PNG sheet of private images, each beside its encryptions: it shows the "
        "ground truth, so keep it as secret as the key store. inspect checks nothing: use audit.",
        epilog=INSPECT_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_release(p, "the key store; enables the sheet and the commitment comparison")
    p.add_argument("--sheet", type=Path, default=Path("inspect.png"), help="where the sheet goes, with --keys (default: %(default)s)")
    p.add_argument("--images", type=positive_int, default=8, help="private images on the sheet (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    p.set_defaults(run=_run_inspect)


def _run_audit(args) -> int:
    from verifier.audit import CHECKS, audit
    from verifier.distributed import audit_on_cluster

    with dask_client(args.dask) as cluster:
        report = audit(args.release, _keys_default(args), chunk=args.chunk,
                       runner=None if cluster is None else audit_on_cluster(cluster))
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
        return 0 if report.sound else 3
    print(f"audit of {args.release} with {_keys_default(args)}: {report.n_encryptions} encryptions")
    width = max(map(len, CHECKS))
    for check, verifies in CHECKS.items():
        print(f"  {check:<{width}}  {report.status(check):<9}  {verifies}")
    if report.sound:
        print("sound: every check passed")
        return 0
    print(f"NOT SOUND: {len(report.findings)} finding(s)" + (f", skipped: {', '.join(report.skipped)}" if report.skipped else ""))
    for finding in report.findings:
        print(f"  - {finding.line()}")
    return 3


def reproduce(release: Path, keys: Path, *, private: Path | None = None, public: Path | None = None,
              work: Path | None = None) -> tuple[Manifest, list]:
    """Regenerate the release from the named data and its seed (generator), then compare it with the
    published one (verifier); returns the published manifest and every difference found."""
    from generator.sources import load_sources
    from verifier.reproduce import check_work, open_published

    check_work(work)
    published = open_published(release, keys)
    private_set, public_set = load_sources(private, public, published.params,  # exactly as generate loads them
                                           **shape_options(private, published.params.image_shape))
    return reproduce_from(published, (private_set, private or "(embedded data)"), (public_set, public or "(embedded data)"),
                          work)


def reproduce_from(published, private: tuple, public: tuple, work: Path | None = None) -> tuple[Manifest, list]:
    """:func:`reproduce` from loaded data: ``private`` and ``public`` are (ImageSet or None, the name shown)."""
    from generator.release import formats_of, generate
    from challenge.errors import UsageError
    from verifier.reproduce import check_sources, compare, regeneration_failed, scratch_folder

    (private_set, _), (public_set, _) = private, public
    check_sources(published.manifest, {"private": private, "public": public}, published.store.attrs)
    with scratch_folder(work) as tmp:
        again = tmp / "release"
        try:
            generate(again, published.params, seed=published.seed, private=private_set, public=public_set,
                     practice=published.practice,
                     format_version=published.store.version, formats=formats_of(published.files))
        except UsageError as e:
            raise regeneration_failed(work, e) from None
        return published.manifest, compare(published, again)


def _run_reproduce(args) -> int:
    manifest, differences = reproduce(args.release, _keys_default(args), private=args.private, public=args.public,
                                      work=args.work)
    if args.json:
        print(json.dumps({"identical": not differences, "differences": [d.__dict__ for d in differences]}, indent=2))
    elif not differences:
        print(f"reproduced: identical ({manifest.params.n_encryptions} encryptions, {len(manifest.files)} public files "
              f"+ manifest, key store {manifest.commitment})")
    else:
        print(f"differs: {differences[0].line()}")
        if len(differences) > 1:
            print(f"  ({len(differences) - 1} more difference(s); --json lists them all)")
    return 0 if not differences else 3


def _run_inspect(args) -> int:
    from verifier.describe import render, summary, write_sheet

    info = summary(args.release, args.keys)
    if args.keys is not None:
        info["sheet"] = str(write_sheet(args.release, args.keys, args.sheet, args.images))
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(render(info))
    if args.keys is not None:
        print(f"  wrote {info['sheet']}: private images (left) beside their encryptions; it shows the ground truth, keep it secret")
    return 0
