"""``instahide docs``: the format's documents, wherever the tool is installed.

A wheel ships ``docs/`` as the package data ``challenge/docs/`` (pyproject.toml); a checkout reads
``docs/`` beside the packages.  ``--help`` texts cite these documents, so an installed user can read them.
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

from challenge.errors import UsageError

__all__ = ["document_folder", "register"]

DOCS_EXAMPLES = """\
examples:
  instahide docs                 # list the documents and where they are
  instahide docs FORMAT          # print docs/FORMAT.md (the release, the submission, the scores)
  instahide docs API | less      # the Python API for notebooks
"""


def document_folder():
    """The documents as package data when installed, else ``docs/`` of the checkout."""
    installed = resources.files("challenge") / "docs"
    return installed if installed.is_dir() else Path(__file__).resolve().parent.parent / "docs"


def register(sub) -> None:
    p = sub.add_parser("docs", help="list or print the format's documents (FORMAT, AUDIT, ATTACKS, API)",
                       description="Print one of the documents the help texts cite (docs/NAME.md), or list them.",
                       epilog=DOCS_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", nargs="?", metavar="NAME", help="FORMAT, AUDIT, ATTACKS or API (case-insensitive)")
    p.set_defaults(run=_run_docs)


def _run_docs(args) -> int:
    folder = document_folder()
    names = sorted(f.name.removesuffix(".md") for f in folder.iterdir() if f.name.endswith(".md"))
    if args.name is None:
        for name in names:
            print(f"{name:<8} {folder / (name + '.md')}")
        return 0
    wanted = args.name.upper().removesuffix(".MD")
    if wanted not in names:
        raise UsageError(f"no document {args.name!r}; expected one of {', '.join(names)}")
    sys.stdout.write((folder / f"{wanted}.md").read_text(encoding="utf-8"))
    return 0
