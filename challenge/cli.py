"""The ``instahide`` command: build, check and inspect InstaHide challenge releases.

Exit codes: 0 success, 1 internal error (a bug: please report it), 2 bad input (the message says
which file, field or parameter and what was expected), 3 an audit finding.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from challenge.errors import UsageError


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a mistake in one line (and exit code 2) instead of a usage dump."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def positive_int(text: str) -> int:
    """argparse type for counts and sizes: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from attacks.cli import register as register_attacks
    from generator.cli import register as register_generator
    from verifier.cli import register as register_verifier
    from verifier.release_cli import register as register_release_checks

    parser = OneLineParser(
        prog="instahide",
        description="Build, publish, attack and score InstaHide challenges, reproducibly. "
        "Run 'instahide COMMAND --help' for each command.",
        epilog="exit codes: 0 ok, 1 internal error, 2 bad input, 3 audit finding",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser)
    register_generator(sub)
    register_verifier(sub)
    register_release_checks(sub)
    register_attacks(sub)
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
    except OSError as e:  # the environment said no (read-only, full disk, permissions): not a bug
        where = f"{e.filename}: " if e.filename else ""
        print(f"{main_parser.prog}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except Exception:
        traceback.print_exc()
        print(f"{main_parser.prog}: internal error (a bug); please report the traceback above", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
