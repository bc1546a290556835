"""What every command shares: one-line argparse errors, argument types, the source options and
``run``, which turns user mistakes into one line and exit code 2 and bugs into exit code 1."""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

from challenge.errors import UsageError, command_line
from challenge.places import check_output

__all__ = ["OneLineParser", "add_source_options", "check_keys_path", "natural_int", "positive_int", "run", "shape_options", "version_option"]


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a mistake in one line (and exit code 2) instead of a usage dump."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def version_option(p: argparse.ArgumentParser) -> None:
    """--version: the one version, ``challenge.__version__`` (pyproject.toml reads it too)."""
    from challenge import __version__

    p.add_argument("--version", action="version", version=f"%(prog)s (instahide-challenge) {__version__}")


def check_keys_path(keys: Path | None) -> None:
    """A release folder (or its ``secret/``) given where a key store is expected: name the key store
    inside it, so the mistake costs one line, not a hunt through the format's documents."""
    from challenge.text import printable

    if keys is None or (keys / "zarr.json").exists():
        return
    for inside in (keys / "secret" / "keys.zarr", keys / "keys.zarr"):
        if (inside / "zarr.json").is_file():
            raise UsageError(f"--keys {printable(keys)}: a release folder, not a key store; "
                             f"did you mean --keys {printable(inside)}?")
    if (keys / "manifest.json").is_file() or (keys / "public" / "manifest.json").is_file():
        raise UsageError(f"--keys {printable(keys)}: a release's public files, not a key store; the key store is the "
                         "release's secret/keys.zarr, which its maintainer keeps until the reveal")


def _whole_number(text: str, minimum: int, meaning: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be {meaning}, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type for counts and sizes: a whole number of at least 1."""
    return _whole_number(text, 1, "positive")


def natural_int(text: str) -> int:
    """argparse type for seeds of numpy's generators, which refuse negative ones: 0 or more."""
    return _whole_number(text, 0, "0 or more")


def add_source_options(p: argparse.ArgumentParser) -> None:
    """--private and --public, shared by every command that reads the source data sets."""
    p.add_argument("--private", type=Path,
                   help="private set: CIFAR-10/100 folder (binary or python version), MNIST IDX folder, "
                   "Imagenet32/64 npz folder, image folder (one subfolder per class) or .npz (default: embedded)")
    p.add_argument("--public", type=Path,
                   help="public patches: a bank from 'instahide patches', an image folder (a bank is "
                   "built at the private images' shape) or an .npz with 'patches' (default: embedded)")


def shape_options(source: Path | None, image_shape) -> dict:
    """The ``size`` and ``grey`` of :func:`generator.sources.load_sources` that load ``source`` at a
    release's ``image_shape``, as 'generate --size S --grey' made it: a square shape is the side to
    resize to; only an image folder is decoded to grey (any other set is grey already, or is not
    the data the release was made from, which the fingerprint then says)."""
    from generator.sources import detect_layout

    height, width, channels = image_shape
    grey = channels == 1 and source is not None and detect_layout(source)[0] == "image-folder"
    return {"size": height if height == width else None, "grey": grey}


OUTPUT_OPTIONS = ("out", "work")  # every command's output paths: never inside a release or a key store


def run(main_parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    """Parse and run; turn user mistakes into one line and exit code 2, bugs into exit code 1.  The
    library's messages name the flags (:func:`challenge.errors.command_line`)."""
    with command_line():
        return _run(main_parser, argv)


def _run(main_parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    args = main_parser.parse_args(argv)
    try:
        check_keys_path(getattr(args, "keys", None))
        for option in OUTPUT_OPTIONS:
            if getattr(args, option, None) is not None:
                check_output(getattr(args, option), f"--{option}", replaces_release=getattr(args, "writes_release", False))
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
