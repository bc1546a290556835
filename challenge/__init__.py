"""The InstaHide challenge release format: parameters, randomness, pixel domains, key store."""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from pathlib import Path

from challenge.exports import lazy_exports as _lazy_exports

_EXPORTS = {  # docs/API.md's names, each imported on first use
    "Manifest": "challenge.manifest", "ManifestError": "challenge.manifest", "Params": "challenge.params",
    "UsageError": "challenge.errors", "fresh_seed": "challenge.keystream", "open_key_store": "challenge.format",
    "parse_seed": "challenge.keystream", "write_submission": "challenge.submission",
}
__all__ = ["__version__", *_EXPORTS]
__getattr__, __dir__ = _lazy_exports(__name__, _EXPORTS)

__version__ = "0.1.0"

_KERNEL_PACKAGES = ("challenge", "generator", "verifier", "attacks")  # the packages whose modules define numba kernels with cache=True


def _writable(folder: Path) -> bool:
    """Whether numba could cache in ``folder``: it creates it and a temporary file in it, as numba does."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError:
        return False
    return True


def _numba_can_cache() -> bool:
    """Whether one of the places numba tries (NUMBA_CACHE_DIR, the package's ``__pycache__`` folders,
    the user's cache folder) is writable; if none is, numba refuses to define a cached kernel."""
    if os.environ.get("NUMBA_CACHE_DIR") and _writable(Path(os.environ["NUMBA_CACHE_DIR"])):
        return True
    root = Path(__file__).resolve().parent.parent
    if all(_writable(root / package / "__pycache__") for package in _KERNEL_PACKAGES):
        return True
    user_cache = Path(os.environ.get("XDG_CACHE_HOME") or Path("~/.cache").expanduser())
    if sys.platform == "darwin":
        user_cache = Path("~/Library/Caches").expanduser()
    return _writable(user_cache / "numba")


def _private_cache_folder() -> str:
    """A cache folder only this user can write: numba's cache files are pickles, so a folder someone
    else owns or may write could plant code.  The per-user folder under the temp folder when it is
    ours and private, else a fresh one for this run (removed at exit)."""
    folder = Path(tempfile.gettempdir()) / f"instahide-numba-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        info = os.lstat(folder)
        if stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o077:
            return str(folder)
    except OSError:
        pass
    import atexit
    import shutil

    fresh = tempfile.mkdtemp(prefix="instahide-numba-")
    atexit.register(shutil.rmtree, fresh, ignore_errors=True)
    return fresh


def _ensure_numba_cache() -> None:
    """With a read-only package (as installed) and an unwritable HOME, numba finds nowhere to cache
    and every command would die at import: point NUMBA_CACHE_DIR at a private folder instead."""
    if _numba_can_cache():
        return
    try:
        os.environ["NUMBA_CACHE_DIR"] = _private_cache_folder()
    except OSError:  # no usable temp folder either: numba will say so itself
        return
    config = sys.modules.get("numba.core.config")
    if config is not None:  # numba read its environment at import: make it read it again
        config.reload_config()


_ensure_numba_cache()
