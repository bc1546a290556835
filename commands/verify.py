"""The ``verify`` command and the ``instahide leaderboard`` / ``instahide baseline`` subcommands.

Exit codes: 0 valid (and scored, with --keys), 2 invalid submission or bad input (every problem is
listed), 1 internal error (a bug: please report it).
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import ExitStack
from pathlib import Path

from challenge.errors import UsageError
from challenge.submission import open_for_scoring
from commands.cluster import add_dask_option, dask_client
from commands.common import OneLineParser, natural_int, positive_int, run, version_option

__all__ = ["build_parser", "main", "register"]

VERIFY_EXAMPLES = """\
examples:
  verify submission/ --release release/            # participants: validate only
  verify submission/ --keys release/secret/keys.zarr --json
  verify submission/ --keys keys.zarr --release release/ --out results/   # scores.json, scores.txt
  verify submission/ --keys keys.zarr --release release/ --holdout 0.5   # public part only
  verify submission/ --keys keys.zarr --release release/ --holdout 0.5 --part final   # maintainer
  verify submission/ --keys keys.zarr --release release/ --dask local:2   # or --dask tcp://HOST:8786 (a cluster)
"""


LEADERBOARD_EXAMPLES = """\
examples:
  instahide leaderboard subs/* --keys release/secret/keys.zarr --release release/ --out board/   # secret: shows the private images
  instahide leaderboard subs/* --keys keys.zarr --release release/ --holdout 0.5 --public --out public-board/   # to publish
  instahide leaderboard a/ b.zip --keys keys.zarr --release release/ --json   # the table as JSON on stdout
  instahide leaderboard subs/* --keys keys.zarr --release release/ --dask local:2   # 2 worker processes
"""

BASELINE_EXAMPLES = """\
examples:
  instahide baseline blind --release release/ --out blind/
  instahide baseline oracle --keys release/secret/keys.zarr --out oracle/ --json
  instahide baseline pairing --keys release/secret/keys.zarr --release release/ --out pairing/
"""


BUNDLE_EXAMPLES = """\
examples:
  instahide bundle release/ --keys release/secret/keys.zarr --out ../competition.zip
  instahide bundle release/ --keys keys.zarr --holdout 0.5 --start 2027-01-10 --end 2027-03-01 --max-per-day 3
  # the zip holds the keys (it is written 0600): upload it to Codabench only, never publish it
"""


def _add_common(p: argparse.ArgumentParser, keys_help: str, keys_required: bool = False,
                release_required: bool = False) -> None:
    from challenge.npy import ROWS

    p.add_argument("--release", type=Path, required=release_required,
                   help="the release folder, or its public/ folder (gives N and the pixel domain; with --keys, "
                   "the key store must match the commitment its manifest publishes)")
    p.add_argument("--keys", type=Path, required=keys_required, help=keys_help)
    p.add_argument("--rows", type=positive_int, default=ROWS, help="rows processed at a time; bounds memory (default: %(default)s)")


def _fraction(text: str) -> float:
    """argparse type for --holdout: a number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction such as 0.5, got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must lie strictly between 0 and 1, got {text}")
    return value


def _add_holdout(p: argparse.ArgumentParser) -> None:
    from verifier.scoring import PARTS

    p.add_argument("--holdout", type=_fraction, metavar="FRACTION",
                   help="hold out this share of the encryptions for the final board, chosen by a rule keyed by "
                   "the key store's seed (docs/FORMAT.md, section 9); scores then cover one part only")
    p.add_argument("--part", choices=PARTS, help="with --holdout: the part scored (default: public, what participants "
                   "may see; final is for the maintainer's final ranking)")


def _selected(args, store):
    """The encryptions that count, from --holdout and --part (None: all)."""
    from verifier.scoring import selected_rows

    if args.part is not None and args.holdout is None:
        raise UsageError("--part needs --holdout (without a holdout every encryption is scored)")
    return selected_rows(store, args.holdout, args.part or "public")


def _run_verify(args) -> int:
    from challenge.text import printable
    from verifier.archive import add_layout_hint, is_archive, submission_folder
    from verifier.distributed import score_on_cluster
    from verifier.scoring import format_table, score, write_scores
    from verifier.submission import validate

    expected, store = open_for_scoring(args.release, args.keys)
    shown = printable(args.submission)
    report = {"submission": shown}
    with submission_folder(args.submission, expected) as folder, dask_client(args.dask) as cluster:
        if store is None:
            if args.holdout is not None or args.part is not None:
                raise UsageError("--holdout and --part need --keys (the split is keyed by the key store's seed)")
            validation, scores = validate(folder, expected, rows=args.rows), None
        else:
            selected = _selected(args, store)
            if cluster is None:
                validation, scores = score(folder, store, expected=expected, rows=args.rows, selected=selected)
            else:
                validation, scores = score_on_cluster(cluster, folder, store, expected, rows=args.rows, selected=selected)
            report["keys_checked_against_release"] = args.release is not None
            if args.holdout is not None:
                report["holdout"] = {"fraction": args.holdout, "part": args.part or "public"}
        add_layout_hint(validation)
    report["valid"] = validation.valid
    if not validation.valid:
        problems = [printable(p) for p in validation.problems]
        if args.json:
            print(json.dumps({**report, "problems": problems}, indent=2))
        else:
            print(f"verify: {shown}: INVALID, {len(problems)} problem(s):", file=sys.stderr)
            for problem in problems:
                print(f"  - {problem}", file=sys.stderr)
        return 2
    if scores is None:
        if args.json:
            print(json.dumps({**report, "scored": False}, indent=2))
        else:
            print(f"{shown}: valid, not scored (no --keys given)")
        return 0
    if args.release is None:
        print(f"verify: note: no --release given, so the key store was not checked against a release's published "
              f"commitment; these scores are only as right as {printable(args.keys)}", file=sys.stderr)
    files = write_scores(scores, args.out or (args.submission.parent if is_archive(args.submission) else args.submission))
    if args.json:
        print(json.dumps({**report, "scored": True, "scores": scores.to_json(), "files": [printable(f) for f in files]},
                         indent=2))
    else:
        part = f" ({report['holdout']['part']} part)" if args.holdout is not None else ""
        print(f"{shown}: valid, scored on {scores.summary['n_encryptions']} encryptions{part}")
        print(format_table(scores))
        print(f"wrote {', '.join(printable(f) for f in files)}")
    return 0


def build_parser() -> OneLineParser:
    p = OneLineParser(
        prog="verify",
        description="Validate an InstaHide challenge submission (a folder holding decryption.npy and,\n"
        "optionally, metadata.json) and, with the keys, score it. See docs/FORMAT.md, sections 8 and 9.",
        epilog=VERIFY_EXAMPLES + "\nexit codes: 0 valid, 1 internal error, 2 invalid (every problem is listed)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    version_option(p)
    p.add_argument("submission", type=Path, help="submission folder, or a .zip of its files (as platforms send them)")
    _add_common(p, "the key store secret/keys.zarr: validate and score")
    p.add_argument("--json", action="store_true", help="print the outcome as JSON on stdout")
    p.add_argument("--out", type=Path, help="folder for scores.json and scores.txt (default: the submission folder)")
    _add_holdout(p)
    add_dask_option(p)
    p.set_defaults(run=_run_verify)
    return p


def _run_leaderboard(args) -> int:
    from verifier import leaderboard
    from challenge.text import printable

    leaderboard.check_replaceable(args.out, args.force)
    _, store = open_for_scoring(args.release, args.keys)
    with ExitStack() as unpacked:  # extracted .zip submissions live until their pictures are drawn
        cluster = unpacked.enter_context(dask_client(args.dask))
        entries = leaderboard.build(args.submissions, store, rows=args.rows, selected=_selected(args, store),
                                    unpacked=unpacked, cluster=cluster)
        files = leaderboard.write(entries, store, args.out, release=args.release, public=args.public, force=args.force)
    for e in entries:
        if e.scores is None:
            problems = printable("; ".join(e.validation.problems))
            print(f"instahide: warning: {printable(e.folder)}: invalid, not ranked: {problems}", file=sys.stderr)
    if args.json:
        print(json.dumps({**leaderboard.to_json(entries), "files": [printable(f) for f in files]}, indent=2))
        return 0
    print(leaderboard.markdown(entries), end="")
    print(f"wrote {', '.join(printable(f) for f in files)}", file=sys.stderr)
    return 0


def _run_baseline(args) -> int:
    from verifier.baselines import write_baseline
    from challenge.text import printable

    expected, store = open_for_scoring(args.release, args.keys)
    path = write_baseline(args.kind, args.out, expected, store=store, release=args.release, seed=args.seed,
                          rows=args.rows, force=args.force)
    if args.json:
        print(json.dumps({"baseline": args.kind, "rows": expected.n, "file": printable(path)}, indent=2))
    else:
        print(f"wrote {printable(path)}: {args.kind} baseline, {expected.n} rows")
    return 0


def register(sub) -> None:
    """Add ``leaderboard`` and ``baseline`` to the ``instahide`` subcommands."""
    from verifier.baselines import KINDS

    p = sub.add_parser("leaderboard", help="score several submissions and rank them (Markdown + HTML)",
                       description="Validate and score every submission with the keys (checked against the "
                       "commitment the release publishes), rank them by Max_SSIM as published (4 decimals; equal "
                       "Max_SSIM, equal rank, listed by folder name; self-reported metadata never ranks) and write "
                       "leaderboard.md, leaderboard.html and a picture of each submission's best and worst "
                       "recoveries beside the true images. The constant and mean baselines are shown as unranked "
                       "reference rows; a submission that cannot be read is listed as invalid with its reason.",
                       epilog=LEADERBOARD_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("submissions", type=Path, nargs="+", metavar="SUBMISSION", help="submission folders or .zip files")
    _add_common(p, "the key store secret/keys.zarr", keys_required=True, release_required=True)
    p.add_argument("--out", type=Path, default=Path("leaderboard"), help="output folder (default: %(default)s)")
    p.add_argument("--public", action="store_true", help="a board to publish during the challenge: scores and "
                   "recoveries, no private image (by default the pictures show the private images and every file is "
                   "readable by its owner alone)")
    p.add_argument("--force", action="store_true", help="replace the board already in --out (its pictures too)")
    p.add_argument("--json", action="store_true", help="print the table as JSON on stdout (instead of Markdown)")
    _add_holdout(p)
    add_dask_option(p)
    p.set_defaults(run=_run_leaderboard)

    p = sub.add_parser("baseline", help=f"write a reference submission ({', '.join(KINDS)})",
                       description="Write a baseline submission that shows the scale of the scores on a release: "
                       "oracle = the ground truth (needs --keys; scores Max_SSIM 1, Min_L2 0), blind = |encryption| "
                       "stretched to the domain (needs --release), noise = uniform random values, constant = the flat "
                       "grey image with the best Max_SSIM (needs --keys), mean = the per-pixel mean of the private "
                       "images (needs --keys), pairing = a least-squares fit of |encryption| given the true pairing "
                       "and lambdas (needs --keys and --release): it recovers the images in the positive domain, "
                       "where the mask hides nothing, and not in the centred one. constant and mean are the floors "
                       "every leaderboard shows. With --keys and --release, the keys must be the release's.",
                       epilog=BASELINE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=KINDS)
    _add_common(p, "the key store secret/keys.zarr (needed by oracle, constant, mean and pairing)")
    p.add_argument("--out", type=Path, required=True, help="submission folder to write")
    p.add_argument("--seed", type=natural_int, default=0, help="random seed of the noise baseline, 0 or more (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="replace an existing decryption.npy")
    p.add_argument("--json", action="store_true", help="print what was written as JSON on stdout")
    p.set_defaults(run=_run_baseline)

    from verifier.bundle import DEFAULT_DOCKER_IMAGE, DEFAULT_PER_DAY, DEFAULT_TOTAL

    p = sub.add_parser("bundle", help="write a Codabench competition bundle (competition.zip) for a release",
                       description="Write a Codabench v2 competition bundle: competition.yaml, pages, the reference "
                       "data (every key-store array: the bundle is SECRET, written 0600; upload it only to the "
                       "platform), a scoring program that needs only Python >= 3.9 and numpy (it runs on the "
                       "platform's stock image and checks the reference data against the release's commitment), "
                       "the public files and a starting kit. The release must pass `instahide audit` first.",
                       epilog=BUNDLE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("release", type=Path, help="the release folder (holding public/)")
    p.add_argument("--keys", type=Path, required=True, help="its key store (checked against the manifest's commitment)")
    p.add_argument("--out", type=Path, default=Path("competition.zip"),
                   help="bundle to write, outside the release (default: %(default)s)")
    p.add_argument("--title", help="competition title (default: from the release's size)")
    p.add_argument("--holdout", type=_fraction, metavar="FRACTION",
                   help="a Development phase scores the public part, a Final phase (from --end) the held-out part")
    p.add_argument("--start", type=_date, help="start of the competition, YYYY-MM-DD (default: today)")
    p.add_argument("--end", type=_date, help="end of the Development phase, YYYY-MM-DD (needed with --holdout)")
    p.add_argument("--max-per-day", type=positive_int, default=DEFAULT_PER_DAY,
                   help="submissions a participant may make a day in the Development phase (default: %(default)s)")
    p.add_argument("--max-submissions", type=positive_int, default=DEFAULT_TOTAL,
                   help="submissions a participant may make in the Development phase (default: %(default)s)")
    p.add_argument("--docker-image", default=DEFAULT_DOCKER_IMAGE,
                   help="the image the platform scores in (default: %(default)s, a stock image)")
    p.add_argument("--wheel", type=Path, help="this tool's wheel (of this very version), shipped in the starting kit "
                   "with the commands to install it offline")
    p.add_argument("--force", action="store_true", help="replace an existing bundle")
    p.set_defaults(run=_run_bundle)


def _date(text: str):
    """argparse type for --start/--end: an ISO date."""
    from datetime import date

    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date such as 2026-12-31, got {text!r}") from None


def _run_bundle(args) -> int:
    from challenge.text import printable
    from verifier.bundle import make_bundle

    path = make_bundle(args.release, args.keys, args.out, title=args.title, holdout=args.holdout, start=args.start,
                       end=args.end, docker_image=args.docker_image, per_day=args.max_per_day,
                       total=args.max_submissions, wheel=args.wheel, force=args.force)
    print(f"wrote {printable(path)} (0600): it holds the keys; upload it to Codabench only, never publish it")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
