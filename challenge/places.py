"""Where a command may write: never into a release or a key store.

A release folder holds exactly what ``generate`` wrote: ``public/``, whose every file participants
may download (``bundle`` ships it), and ``secret/``, the only copy of the keys.  A picture of the
private images saved into ``public/`` is a leak; a submission written over ``secret/keys.zarr``
loses the challenge.  So every output path (``--out``, ``--sheet``, ``--work``) is checked against
the folders above it before anything is written, and one inside a release or a key store is
refused (exit code 2) whatever the command.

A folder is recognised by what the format puts in it, never by its name alone:

* a release: a folder with ``public/manifest.json``;
* a release's public folder, as participants have it: a folder with a ``manifest.json`` and an
  ``encryption.npy``;
* a key store: a folder with a ``zarr.json`` and ``private/images/zarr.json``.
"""

from __future__ import annotations

import os
from pathlib import Path

from challenge.errors import UsageError
from challenge.text import printable

__all__ = ["check_output", "protected_place"]

_PUBLIC, _MANIFEST, _ENCRYPTIONS = "public", "manifest.json", "encryption.npy"


def _what(folder: Path) -> str | None:
    """What ``folder`` is, if it is a release, a release's public folder or a key store."""
    if (folder / _PUBLIC / _MANIFEST).is_file():
        return "the release"
    if (folder / _MANIFEST).is_file() and (folder / _ENCRYPTIONS).is_file():
        return "the release's public folder"
    if (folder / "zarr.json").is_file() and (folder / "private" / "images" / "zarr.json").is_file():
        return "the key store"
    return None


def protected_place(path: str | os.PathLike) -> tuple[str, Path] | None:
    """(what, folder) of the release or key store that ``path`` is or lies in, or None.

    Symlinks are resolved first, so a link to ``public/`` is seen for what it is.
    """
    resolved = Path(os.path.realpath(path))
    for folder in (resolved, *resolved.parents):
        what = _what(folder)
        if what is not None:
            return what, folder
    return None


def check_output(path: str | os.PathLike, option: str = "output", *, replaces_release: bool = False) -> None:
    """Refuse (:class:`UsageError`, exit code 2) an output ``path`` inside a release or a key store.

    ``option`` names the argument in the message (:func:`challenge.errors.argument`).  ``replaces_release``:
    ``path`` is a whole release to write (``generate --force`` may replace one), not a file in it.
    """
    place = protected_place(path)
    if place is None:
        return
    what, folder = place
    if replaces_release and what == "the release" and folder == Path(os.path.realpath(path)):
        return
    raise UsageError(f"{option} {printable(path)}: inside {what} {printable(folder)}, which holds only what generate "
                     "wrote (anything else there may be published or may overwrite a secret); choose a path outside it")
