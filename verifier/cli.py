"""The ``verify`` command and the ``instahide leaderboard`` / ``instahide baseline`` subcommands.

Exit codes: 0 valid (and scored, with --keys), 2 invalid submission or bad input (every problem is
listed), 1 internal error (a bug: please report it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from challenge.cli import OneLineParser, positive_int, run
from challenge.errors import UsageError

VERIFY_EXAMPLES = """\
examples:
  verify submission/ --release release/            # participants: validate only
  verify submission/ --keys release/secret/keys.zarr --json
  verify submission/ --keys keys.zarr --out results/   # scores.json, scores.txt go to results/
"""


def _add_common(p: argparse.ArgumentParser, keys_help: str, keys_required: bool = False) -> None:
    from verifier.submission import ROWS

    p.add_argument("--release", type=Path, help="the release folder, or its public/ folder (gives N and the pixel domain)")
    p.add_argument("--keys", type=Path, required=keys_required, help=keys_help)
    p.add_argument("--rows", type=positive_int, default=ROWS, help="rows processed at a time; bounds memory (default: %(default)s)")


def _open(release: Path | None, keys: Path | None):
    """Expected shape/domain and the key store (or None), checking that the two belong together."""
    from challenge.format import open_key_store
    from verifier.submission import expected_from_keys, expected_from_manifest, read_manifest

    if release is None and keys is None:
        raise UsageError("give --release (to validate) or --keys (to validate and score)")
    store = open_key_store(keys) if keys is not None else None
    if release is None:
        return expected_from_keys(store), store
    manifest = read_manifest(release)
    if store is not None and manifest.get("params") != store.params.to_dict():
        raise UsageError(f"{keys}: key store parameters differ from those of {release}: not this release's keys")
    return expected_from_manifest(manifest), store


def _run_verify(args) -> int:
    from verifier.scoring import format_table, score, write_scores
    from verifier.submission import validate

    expected, store = _open(args.release, args.keys)
    if store is None:
        validation, scores = validate(args.submission, expected, rows=args.rows), None
    else:
        validation, scores = score(args.submission, store, expected=expected, rows=args.rows)
    report = {"submission": str(args.submission), "valid": validation.valid}
    if not validation.valid:
        if args.json:
            print(json.dumps({**report, "problems": validation.problems}, indent=2))
        else:
            print(f"verify: {args.submission}: INVALID, {len(validation.problems)} problem(s):", file=sys.stderr)
            for problem in validation.problems:
                print(f"  - {problem}", file=sys.stderr)
        return 2
    if scores is None:
        if args.json:
            print(json.dumps({**report, "scored": False}, indent=2))
        else:
            print(f"{args.submission}: valid, not scored (no --keys given)")
        return 0
    files = write_scores(scores, args.out or args.submission)
    if args.json:
        print(json.dumps({**report, "scored": True, "scores": scores.to_json(), "files": [str(f) for f in files]},
                         indent=2))
    else:
        print(f"{args.submission}: valid, scored on {scores.summary['n_encryptions']} encryptions")
        print(format_table(scores))
        print(f"wrote {', '.join(map(str, files))}")
    return 0


def build_parser() -> OneLineParser:
    p = OneLineParser(
        prog="verify",
        description="Validate an InstaHide challenge submission (a folder holding decryption.npy and,\n"
        "optionally, metadata.json) and, with the keys, score it. See docs/FORMAT.md, sections 8 and 9.",
        epilog=VERIFY_EXAMPLES + "\nexit codes: 0 valid, 1 internal error, 2 invalid (every problem is listed)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("submission", type=Path, help="submission folder")
    _add_common(p, "the key store secret/keys.zarr: validate and score")
    p.add_argument("--json", action="store_true", help="print the outcome as JSON on stdout")
    p.add_argument("--out", type=Path, help="folder for scores.json and scores.txt (default: the submission folder)")
    p.set_defaults(run=_run_verify)
    return p


def _run_leaderboard(args) -> int:
    from verifier import leaderboard

    _, store = _open(args.release, args.keys)
    entries = leaderboard.build(args.submissions, store, rows=args.rows)
    files = leaderboard.write(entries, store, args.out)
    for e in entries:
        if e.scores is None:
            print(f"instahide: warning: {e.folder}: invalid, not ranked: {'; '.join(e.validation.problems)}", file=sys.stderr)
    print(leaderboard.markdown(entries), end="")
    print(f"wrote {', '.join(map(str, files))}", file=sys.stderr)
    return 0


def _run_baseline(args) -> int:
    from verifier.baselines import write_baseline

    expected, store = _open(args.release, args.keys)
    path = write_baseline(args.kind, args.out, expected, store=store, release=args.release, seed=args.seed,
                          rows=args.rows, force=args.force)
    print(f"wrote {path}: {args.kind} baseline, {expected.n} rows")
    return 0


def register(sub) -> None:
    """Add ``leaderboard`` and ``baseline`` to the ``instahide`` subcommands."""
    from verifier.baselines import KINDS

    p = sub.add_parser("leaderboard", help="score several submissions and rank them (Markdown + HTML)",
                       description="Validate and score every submission with the keys, rank them by Max_SSIM "
                       "(ties: earlier metadata.json date) and write leaderboard.md, leaderboard.html and a "
                       "picture of each submission's best and worst recoveries beside the true images.")
    p.add_argument("submissions", type=Path, nargs="+", metavar="SUBMISSION", help="submission folders")
    _add_common(p, "the key store secret/keys.zarr", keys_required=True)
    p.add_argument("--out", type=Path, default=Path("leaderboard"), help="output folder (default: %(default)s)")
    p.set_defaults(run=_run_leaderboard)

    p = sub.add_parser("baseline", help="write a reference submission (oracle, blind or noise)",
                       description="Write a baseline submission that shows the scale of the scores on a release: "
                       "oracle = the ground truth (needs --keys; scores Max_SSIM 1, Min_L2 0), blind = |encryption| "
                       "stretched to the domain (needs --release), noise = uniform random values, pairing = a least-squares "
                       "fit of |encryption| given the true pairing and lambdas (needs --keys and --release): it recovers "
                       "the images in the positive domain, where the mask hides nothing, and not in the centred one.")
    p.add_argument("kind", choices=KINDS)
    _add_common(p, "the key store secret/keys.zarr (needed by oracle)")
    p.add_argument("--out", type=Path, required=True, help="submission folder to write")
    p.add_argument("--seed", type=int, default=0, help="random seed of the noise baseline (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="replace an existing decryption.npy")
    p.set_defaults(run=_run_baseline)


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
