"""The ``instahide`` command: build, check and inspect InstaHide challenge releases.

Exit codes: 0 success, 1 internal error (a bug: please report it), 2 bad input (the message says
which file, field or parameter and what was expected), 3 an audit finding.
"""

from __future__ import annotations

import argparse
import sys

from commands import attack, docs, generate, release, verify
from commands.common import OneLineParser, run, version_option

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="instahide",
        description="Build, publish, attack and score InstaHide challenges, reproducibly. "
        "Run 'instahide COMMAND --help' for each command.",
        epilog="validate and score one submission with the 'verify' command (verify --help).\n"
        "exit codes: 0 ok, 1 internal error, 2 bad input, 3 audit finding",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    version_option(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser)
    generate.register(sub)
    verify.register(sub)
    release.register(sub)
    attack.register(sub)
    docs.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
