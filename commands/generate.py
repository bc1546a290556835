"""``instahide generate`` and ``instahide patches``: the commands that build things."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from challenge.errors import UsageError
from commands.cluster import add_dask_option, dask_client
from commands.common import add_source_options, positive_int

__all__ = ["register"]

GENERATE_EXAMPLES = """\
examples:
  instahide generate --out release/                       # embedded data, fresh secret seed
  instahide generate --out practice/ --practice --seed 7  # replayable practice release
  instahide generate --out c1/ --seed-file seed.txt        # a chosen seed, kept off the process list
  instahide generate --out r/ --private cifar-10-batches-py/ --public bank.zarr --balanced
  instahide generate --out big/ --per-image 2000 --formats npy  # .npy only: half the bytes
  instahide generate --out m/ --private /data/mnist/ --public photos/  # 28x28 grey; bank built at 28x28x1
  instahide generate --out i64/ --private /data/imagenet/val/ --size 64 --public photos/  # 64x64 RGB
  instahide generate --out big/ --per-image 2000 --dask local:4  # 4 worker processes, same bytes
"""

PATCHES_EXAMPLES = """\
examples:
  instahide patches /data/imagenet/train --out bank.zarr            # ~1.28M JPEGs, resumable
  instahide patches photos/ --out bank.zarr --crops-per-image 4 --workers 8
  instahide patches photos/ --out bank.zarr --size 28 --grey  # for a release of 28x28 grey images
  instahide patches /shared/imagenet/train --out bank.zarr --dask tcp://scheduler:8786   # the same bank
"""

SEED_FILE_BYTES = 4096  # a seed is 64 hex digits; a practice seed is a short phrase


def register(sub) -> None:
    _add_generate(sub)
    _add_patches(sub)


def _add_generate(sub) -> None:
    from challenge.domain import DOMAINS
    from challenge.format import FORMAT_VERSION, READABLE_VERSIONS
    from challenge.params import MODES, Params

    d = Params()
    p = sub.add_parser(
        "generate",
        help="build a challenge release (public files + secret key store)",
        description="Build an InstaHide challenge release: public/ (encryptions, labels, manifest, "
        "preview) and secret/keys.zarr (seed, keys, ground truth; keep it secret until the reveal). "
        "With no --private/--public the embedded default data (shipped with the tool) is used.",
        epilog=GENERATE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", type=Path, default=Path("release"), help="release folder to create (default: %(default)s)")
    seed = p.add_mutually_exclusive_group()
    seed.add_argument("--seed", help="secret seed: 64 hex digits (256 bits); default: fresh from the OS. "
                      "A command line is visible to every user in the process list: for a real "
                      "challenge use --seed-file")
    seed.add_argument("--seed-file", type=Path, metavar="PATH",
                      help="read the seed from this file (its text, surrounding whitespace ignored)")
    p.add_argument("--practice", action="store_true",
                   help="accept a short, guessable --seed and mark the release as replayable")
    add_source_options(p)
    p.add_argument("--size", type=positive_int, metavar="S",
                   help="resize the private images to S x S (short side to S with LANCZOS, centre crop; "
                   "grey stays grey); default: the set's own shape (CIFAR 32, MNIST 28 grey, an image "
                   "folder 32). A bank built from a --public folder follows; a stored bank must match")
    p.add_argument("--grey", action="store_true",
                   help="decode an image-folder private set to 8-bit grey (C = 1); default RGB")
    p.add_argument("--mode", choices=MODES, default=d.mode,
                   help="cross: private + public patches; inside: private only; mixup: no sign mask (default: %(default)s)")
    p.add_argument("--k", type=int, default=d.k, help="images per encryption (default: %(default)s)")
    p.add_argument("--k-private", type=int, help="private images per encryption (default: 2; k for --mode inside)")
    p.add_argument("--c1", type=float, default=d.c1, help="redraw lambda while any lambda > c1 (default: %(default)s)")
    p.add_argument("--c2", type=float, default=d.c2,
                   help="redraw lambda while the private lambdas sum < c2 (default: %(default)s)")
    p.add_argument("--n-private", type=int, default=d.n_private, help="private images in the challenge (default: %(default)s)")
    p.add_argument("--per-image", type=int, default=d.per_image,
                   help="encryptions whose first private image is each private image (default: %(default)s)")
    p.add_argument("--balanced", action="store_true", help="choose the private images equally from every class")
    p.add_argument("--domain", choices=list(DOMAINS), default=d.domain,
                   help="pixel domain: centered [-1,1] (the mask hides signs) or positive [0,1] "
                   "(|encryption| = mix: InstaHide collapses to Mixup) (default: %(default)s)")
    p.add_argument("--chunk", type=positive_int, default=4096, help="encryptions encoded per batch; bounds memory (default: %(default)s)")
    p.add_argument("--formats", default="npy,zarr",
                   help="copies of the public arrays: npy (the 2020 .npy files, which every reader uses; "
                   "required) and zarr (public.zarr, for chunked readers) (default: %(default)s)")
    p.add_argument("--format-version", type=int, choices=READABLE_VERSIONS, default=FORMAT_VERSION,
                   help="release format to write: 3 holds images of any shape (the private images'); 1 and 2 "
                   "(32x32x3 only) exist to regenerate releases of those versions (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="replace an existing release at --out")
    add_dask_option(p)
    p.add_argument("--json", action="store_true", help="print the manifest as JSON on stdout")
    p.set_defaults(run=_run_generate, writes_release=True)  # --out is a release (--force replaces it)


def _run_generate(args) -> int:
    from challenge.files import read_text
    from challenge.keystream import fresh_seed, parse_seed
    from challenge.manifest import Manifest
    from challenge.params import Params
    from generator.distributed import on_cluster
    from generator.release import generate, parse_formats
    from generator.sources import load_sources

    formats = parse_formats(args.formats)
    k_private = args.k_private if args.k_private is not None else (args.k if args.mode == "inside" else 2)
    params = Params(mode=args.mode, k=args.k, k_private=k_private, c1=args.c1, c2=args.c2,
                    n_private=args.n_private, per_image=args.per_image, domain=args.domain,
                    balanced=args.balanced).validate()
    seed_text = args.seed if args.seed_file is None else read_text(args.seed_file, SEED_FILE_BYTES, what="seed file")
    if seed_text is None:
        if args.practice:
            raise UsageError("--practice needs a --seed (a practice release exists to be replayed)")
        seed = fresh_seed()
    else:
        try:
            seed = parse_seed(seed_text, practice=args.practice)
        except ValueError as e:
            where = f"{args.seed_file}: " if args.seed_file is not None else ""
            raise UsageError(where + str(e)) from None
    if args.practice:
        print("instahide: warning: practice seed: anyone can replay this release's keys; never use it "
              "for a real challenge", file=sys.stderr)
    with dask_client(args.dask) as cluster:
        private, public = load_sources(args.private, args.public, params, size=args.size, grey=args.grey)
        manifest = Manifest.from_json(generate(
            args.out, params, seed=seed, private=private, public=public, practice=args.practice, chunk=args.chunk,
            force=args.force, formats=formats, format_version=args.format_version, write_elsewhere=None if cluster is None else on_cluster(cluster)))
    if args.private is None:
        print("instahide: warning: the private images are the embedded demo data, which ships with this tool: "
              "anyone can match them ('instahide attack pool' recovers them); use --private for a real challenge",
              file=sys.stderr)
    if args.json:
        print(json.dumps(manifest.to_json(), indent=2, sort_keys=True))
    else:
        print(f"wrote {args.out}/: {manifest.params.n_encryptions} encryptions "
              f"({params.mode}, k={params.k}, k_private={params.k_private}, {params.domain} domain)")
        print("  public/  publish this (manifest.json lists every file's SHA-256)")
        print(f"  secret/keys.zarr  KEEP SECRET until the reveal; commitment {manifest.commitment}")
    return 0


def _add_patches(sub) -> None:
    from generator.patches import DEFAULT_MIN_KEYPOINTS, PATCH
    from generator.sources import DEFAULT_BANK_SEED

    p = sub.add_parser(
        "patches",
        help="build a public patch bank from a folder of photos (e.g. ImageNet train)",
        description="Walk PUBLIC_DIR, resize every image so its short side is 40 px, take random 32x32 "
        "crops (--size S: short side 40/32 of S, S x S crops) and keep those that are not flat (a "
        "keypoint-count filter in the spirit of the 2020 challenge). Writes a Zarr bank recording "
        "each patch's source file and crop box. Parallel, "
        "bounded in memory and resumable: re-run the same command after an interruption.",
        epilog=PATCHES_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("public_dir", type=Path, metavar="PUBLIC_DIR", help="folder tree of images")
    p.add_argument("--out", type=Path, required=True, help="bank to create or resume (a .zarr folder)")
    p.add_argument("--crops-per-image", type=int, default=2, help="random crops tried per image (default: %(default)s)")
    p.add_argument("--min-keypoints", type=int, default=DEFAULT_MIN_KEYPOINTS,
                   help="keep patches with more keypoints than this (default: %(default)s)")
    p.add_argument("--workers", type=positive_int, help="decoding processes (default: one per core)")
    p.add_argument("--size", type=positive_int, default=PATCH, metavar="S",
                   help="patch side: S x S crops of images whose short side is 40/32 of S (the 2020 rule "
                   "scaled: 28 -> 35); the side of the release's images (default: %(default)s)")
    p.add_argument("--grey", action="store_true", help="grey patches (C = 1), for a release of grey images")
    p.add_argument("--seed", default=DEFAULT_BANK_SEED,
                   help="public text that fixes the crop positions (default: %(default)s)")
    add_dask_option(p)
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    p.set_defaults(run=_run_patches)


def _run_patches(args) -> int:
    from generator.patches import bank_progress, build_patch_bank
    from generator.sources import bank_seed

    with dask_client(args.dask) as cluster, bank_progress() as hooks:
        executor = cluster.get_executor(pure=False) if cluster is not None else None
        workers = sum(cluster.nthreads().values()) if cluster is not None else args.workers
        summary = build_patch_bank(args.public_dir, args.out, crops_per_image=args.crops_per_image,
                                   seed=bank_seed(args.seed), workers=workers, min_keypoints=args.min_keypoints,
                                   patch_size=args.size, grey=args.grey, executor=executor, **hooks)
    if args.json:
        print(json.dumps(dataclasses.asdict(summary), indent=2, sort_keys=True))
    else:
        print(f"wrote {summary.path}: {summary.patches} patches from {summary.files} images "
              f"({summary.unreadable} unreadable, skipped) in {summary.seconds:.1f} s")
    return 0
