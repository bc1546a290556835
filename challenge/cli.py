"""The ``instahide`` command: build, check and inspect InstaHide challenge releases.

Exit codes: 0 success, 1 internal error (a bug: please report it), 2 bad input (the message says
which file, field or parameter and what was expected), 3 an audit finding.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path

from challenge.errors import UsageError

EXAMPLES = """\
examples:
  instahide generate --out release/                       # embedded data, fresh secret seed
  instahide generate --out practice/ --practice --seed 7  # replayable practice release
  instahide generate --out r/ --private cifar-10-batches-py/ --public bank.zarr --balanced
"""


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a mistake in one line (and exit code 2) instead of a usage dump."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _add_generate(sub) -> None:
    from challenge.params import MODES, Params
    from challenge.domain import DOMAINS

    d = Params()
    p = sub.add_parser(
        "generate",
        help="build a challenge release (public files + secret key store)",
        description="Build an InstaHide challenge release: public/ (encryptions, labels, manifest, "
        "preview) and secret/keys.zarr (seed, keys, ground truth; keep it secret until the reveal). "
        "With no --private/--public the embedded default data in data/ is used.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", type=Path, default=Path("release"), help="release folder to create (default: %(default)s)")
    p.add_argument("--seed", help="secret seed: 64 hex digits (256 bits); default: fresh from the OS")
    p.add_argument("--practice", action="store_true",
                   help="accept a short, guessable --seed and mark the release as replayable")
    p.add_argument("--private", type=Path, help="private set: CIFAR folder, image folder or .npz (default: embedded)")
    p.add_argument("--public", type=Path, help="public patch bank: bank .zarr, image folder or .npz (default: embedded)")
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
    p.add_argument("--chunk", type=int, default=4096, help="encryptions encoded per batch; bounds memory (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="replace an existing release at --out")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON on stdout")
    p.set_defaults(run=_run_generate)


def _run_generate(args) -> int:
    from challenge.keystream import fresh_seed, parse_seed
    from challenge.params import Params
    from generator.release import generate

    k_private = args.k_private if args.k_private is not None else (args.k if args.mode == "inside" else 2)
    params = Params(mode=args.mode, k=args.k, k_private=k_private, c1=args.c1, c2=args.c2,
                    n_private=args.n_private, per_image=args.per_image, domain=args.domain,
                    balanced=args.balanced).validate()
    if args.seed is None:
        if args.practice:
            raise UsageError("--practice needs a --seed (a practice release exists to be replayed)")
        seed = fresh_seed()
    else:
        try:
            seed = parse_seed(args.seed, practice=args.practice)
        except ValueError as e:
            raise UsageError(str(e)) from None
    if args.practice:
        print("instahide: warning: practice seed: anyone can replay this release's keys; never use it "
              "for a real challenge", file=sys.stderr)
    private, public = _load_sources(args, params)
    manifest = generate(args.out, params, seed, private, public, practice=args.practice,
                        chunk=args.chunk, force=args.force)
    if args.json:
        print(json.dumps(manifest, indent=2, sort_keys=True))
    else:
        print(f"wrote {args.out}/: {manifest['n_encryptions']} encryptions "
              f"({params.mode}, k={params.k}, k_private={params.k_private}, {params.domain} domain)")
        print(f"  public/  publish this (manifest.json lists every file's SHA-256)")
        print(f"  secret/keys.zarr  KEEP SECRET until the reveal; commitment {manifest['key_store']['commitment']}")
    return 0


def _load_sources(args, params):
    from generator.default_data import default_private, default_public

    if args.private is not None:
        from generator.sources import load_private
        private = load_private(args.private)
    else:
        private = default_private()
    if not params.k_public:
        return private, None
    if args.public is not None:
        from generator.sources import load_public
        return private, load_public(args.public)
    return private, default_public()


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="instahide",
        description="Build, publish, attack and score InstaHide challenges, reproducibly. "
        "Run 'instahide COMMAND --help' for each command.",
        epilog="exit codes: 0 ok, 1 internal error, 2 bad input, 3 audit finding",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser)
    _add_generate(sub)
    return parser


def run(main_parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    """Parse and run; turn user mistakes into one line and exit code 2, bugs into exit code 1."""
    args = main_parser.parse_args(argv)
    try:
        return args.run(args)
    except UsageError as e:
        print(f"{main_parser.prog}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"{main_parser.prog}: interrupted", file=sys.stderr)
        return 130
    except Exception:
        traceback.print_exc()
        print(f"{main_parser.prog}: internal error (a bug); please report the traceback above", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
