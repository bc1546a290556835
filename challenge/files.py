"""Bounded, regular-file-only reads and atomic writes: the one way this tool touches a file it
did not write itself.

A challenge is adversarial: submissions, releases, key stores and data sets come from people who
may want the scorer to hang, exhaust memory or crash.  So every untrusted file is

* opened without blocking and checked to be a regular file *through the open descriptor* (a FIFO,
  a device or a socket, or a symlink to one, is refused before a byte is read, and there is no
  window between the check and the read);
* size-capped before it is read or allocated (the cap is checked on the descriptor, and the read
  stops at the cap even if the file grows meanwhile);
* for JSON, parsed with bounded nesting, without NaN/Infinity, and with text that is valid
  Unicode (a lone surrogate from a ``\\ud800`` escape would crash whatever prints it later).

Writes go to a unique temporary file in the destination's folder and are renamed into place, so
a reader never sees half a file and a failed write leaves nothing behind.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from challenge.errors import UsageError
from challenge.places import check_output
from challenge.text import printable

__all__ = [
    "MAX_JSON_DEPTH",
    "UnsafeFile",
    "check_tree",
    "make_folders",
    "open_regular",
    "output_folder",
    "read_bytes",
    "read_json",
    "read_text",
    "remove_made",
    "safe_name",
    "write_atomic",
    "write_files",
]

MAX_JSON_DEPTH = 64  # deeper than any document of the format; far below Python's recursion limit

_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a folder", stat.S_IFLNK: "a symlink"}


class UnsafeFile(UsageError):
    """A file that is missing, unreadable, not a regular file, too large or malformed: exit code 2."""

    def told_as(self, path: str | os.PathLike, name: str) -> str:
        """The message with ``path`` shown as ``name``: a submission's problems name its files as the
        participant knows them (a zip's member, not the temporary folder it was extracted into)."""
        return str(self).replace(str(path), name, 1)


def _kind(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def open_regular(path: str | os.PathLike, *, follow_symlinks: bool = True):
    """Open ``path`` for binary reading if it is a regular file; :class:`UnsafeFile` otherwise.

    ``O_NONBLOCK`` makes opening a FIFO return at once instead of waiting for a writer; the type
    is then read from the descriptor, so a file swapped after a check cannot slip through.
    With ``follow_symlinks=False`` a symlink is refused even if it points to a regular file.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if not follow_symlinks:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise UnsafeFile(f"{path}: missing") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            what = "a symlink loop" if follow_symlinks else "a symlink"
            raise UnsafeFile(f"{path}: {what}; expected a regular file") from None
        raise UnsafeFile(f"{path}: cannot be read ({e.strerror})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise UnsafeFile(f"{path}: {_kind(mode)}, not a regular file; refused without reading it")
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bytes(path: str | os.PathLike, limit: int, *, what: str = "file", follow_symlinks: bool = True) -> bytes:
    """The whole content of a regular file of at most ``limit`` bytes, read with one bounded read."""
    with open_regular(path, follow_symlinks=follow_symlinks) as f:
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            raise UnsafeFile(f"{path}: {size:,} bytes, more than the {limit:,} allowed for a {what}; refused without reading it")
        try:
            data = f.read(size + 1)  # what the file holds, not the cap: a read reserves its size first
        except OSError as e:
            raise UnsafeFile(f"{path}: cannot be read ({e.strerror})") from None
    if len(data) != size:
        raise UnsafeFile(f"{path}: changed size while being read; expected a file nobody is writing")
    return data


def read_text(path: str | os.PathLike, limit: int, *, what: str = "text file", follow_symlinks: bool = True) -> str:
    """A UTF-8 text file of at most ``limit`` bytes."""
    data = read_bytes(path, limit, what=what, follow_symlinks=follow_symlinks)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UnsafeFile(f"{path}: not UTF-8 text (byte {e.start}); expected a UTF-8 {what}") from None


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def read_json(path: str | os.PathLike, limit: int, *, what: str = "JSON file", max_depth: int = MAX_JSON_DEPTH,
              follow_symlinks: bool = True):
    """Parse a JSON file of at most ``limit`` bytes, nested at most ``max_depth`` deep.

    Refused with :class:`UnsafeFile`: invalid JSON, ``NaN``/``Infinity``, nesting deeper than
    ``max_depth`` and strings (or keys) that are not valid Unicode.
    """
    text = read_text(path, limit, what=what, follow_symlinks=follow_symlinks)
    try:
        obj = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise UnsafeFile(f"{path}: nested deeper than {max_depth} levels; expected a {what}") from None
    except ValueError as e:  # JSONDecodeError and the refused constants
        raise UnsafeFile(f"{path}: not valid JSON ({e}); expected a {what}") from None
    problem = _json_problem(obj, max_depth)
    if problem:
        raise UnsafeFile(f"{path}: {problem}; expected a {what}")
    return obj


def _json_problem(obj, max_depth: int) -> str | None:
    """Why a parsed JSON value is refused (too deep, invalid Unicode), or None; no recursion."""
    stack = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > max_depth:
                return f"nested deeper than {max_depth} levels"
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(key, str) and not _valid_unicode(key):
                    return f"key {key.encode('utf-8', 'backslashreplace').decode()!r} is not valid Unicode"
                stack.append((item, depth + 1))
        elif isinstance(value, str) and not _valid_unicode(value):
            return f"string {value.encode('utf-8', 'backslashreplace').decode()[:40]!r} is not valid Unicode (a lone surrogate)"
    return None


def _valid_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_tree(root: str | os.PathLike, max_file_bytes: int, *, what: str) -> None:
    """Walk ``root`` without following links: every entry a folder or a regular file of at most
    ``max_file_bytes``; a symlink, FIFO, device or socket anywhere is refused.

    Stores such as Zarr folders are read by libraries that open files by name; checking the whole
    tree first is what keeps those reads bounded and non-blocking.
    """
    root = Path(root)
    try:
        top = os.lstat(root)
    except FileNotFoundError:
        raise UnsafeFile(f"{root}: missing") from None
    except OSError as e:
        raise UnsafeFile(f"{root}: cannot be read ({e.strerror})") from None
    if not stat.S_ISDIR(top.st_mode):
        raise UnsafeFile(f"{root}: {_kind(top.st_mode)}, expected a {what} folder")
    for folder, dirs, files in os.walk(root, onerror=_raise_walk_error):
        for name in dirs + files:
            path = os.path.join(folder, name)
            info = os.lstat(path)
            if stat.S_ISDIR(info.st_mode):
                continue
            if not stat.S_ISREG(info.st_mode):
                raise UnsafeFile(f"{path}: {_kind(info.st_mode)} inside the {what}; it must hold regular files only")
            if info.st_size > max_file_bytes:
                raise UnsafeFile(f"{path}: {info.st_size:,} bytes, more than any file of a {what} needs "
                                 f"({max_file_bytes:,}); refused")


def _raise_walk_error(error: OSError) -> None:
    raise UnsafeFile(f"{error.filename}: cannot be read ({error.strerror})")


def write_atomic(path: str | os.PathLike, data: bytes | str, *, mode: int = 0o644) -> Path:
    """Write ``data`` to ``path`` via a unique temporary file in the same folder, then rename.

    Concurrent writers and readers never see half a file; on any failure the temporary file is
    removed and :class:`UnsafeFile` names the path and the reason (read-only, full disk, ...).
    """
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise UnsafeFile(f"{path}: cannot write ({e.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise UnsafeFile(f"{path}: cannot write ({e.strerror or e})") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def make_folders(folder: str | os.PathLike, *, private: bool = False) -> list[Path]:
    """Create ``folder`` and its missing parents (0700 if ``private``, else as the umask says); return
    the folders created, deepest last, so a failed write can remove them (:func:`remove_made`)."""
    folder, made = Path(folder), []
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    for path in reversed(missing):
        try:
            path.mkdir(mode=0o700 if private else 0o777)
        except FileExistsError:  # made meanwhile by a concurrent run: not ours to remove
            continue
        made.append(path)
    return made


def remove_made(made: list[Path]) -> None:
    """Remove the folders :func:`make_folders` created, deepest first, where they are still empty:
    a failed command leaves no empty output folder behind."""
    for path in reversed(made):
        try:
            path.rmdir()
        except OSError:
            break


def write_files(out: str | os.PathLike, contents: dict[str, bytes | str], what: str, *,
                private: bool = False) -> list[Path]:
    """Write several files into ``out`` (created if needed), each atomically; all or nothing new.

    A failure (read-only, full disk, a file where the folder should be) removes the files and
    folders this call created, so no incomplete set is left, and is one :class:`UsageError` naming
    the path.  ``private``: the files show private images or keys, so they are 0600 in folders
    created 0700, readable by their owner alone whatever the umask.
    """
    out = Path(out)
    check_output(out)
    written, made = [], []
    try:
        made += make_folders(out, private=private)
        for name, data in contents.items():
            path = out / name
            made += make_folders(path.parent, private=private)
            existed = path.exists()
            write_atomic(path, data, mode=0o600 if private else 0o644)
            if not existed:
                written.append(path)
    except (OSError, UnsafeFile) as e:
        for path in written:
            path.unlink(missing_ok=True)
        remove_made(made)
        reason = str(e) if isinstance(e, UnsafeFile) else f"{e.filename or out}: {e.strerror or e}"
        raise UsageError(f"cannot write the {what}: {printable(reason)}") from None
    return [out / name for name in contents]


def safe_name(name: str) -> bool:
    """A relative POSIX path that stays inside its folder."""
    parts = name.split("/")
    return bool(name) and "\\" not in name and "\0" not in name and all(p not in ("", ".", "..") for p in parts)


@contextmanager
def output_folder(path: str | os.PathLike, *, private: bool = False) -> Iterator[Path]:
    """The folder a command writes into, created if missing (with its parents); if the block fails,
    the folders this call created are removed with everything in them, so a failed run leaves no
    output that looks whole and no empty folder.

    ``private``: for what depicts or contains private images or keys.  The folder is 0700 before
    anything is written into it (no other user can reach a file in it at any moment), and once the
    block succeeds every file the block wrote below it is 0600 and every folder it made 0700; what
    the folder held before (an existing ``--out`` may hold anything) keeps its modes.
    """
    path = Path(path)
    made = make_folders(path, private=private)
    try:
        if private:
            os.chmod(path, 0o700)
            before = _entries(path)
        yield path
        if private:
            for entry, (inode, kind) in _entries(path).items():
                if before.get(entry, (None,))[0] != inode:  # new, or replaced by a rename
                    os.chmod(entry, 0o700 if kind == stat.S_IFDIR else 0o600)
    except BaseException:
        if made:  # the top-most folder this call created, with everything written into it
            shutil.rmtree(made[0], ignore_errors=True)
        raise


def _entries(top: Path) -> dict[str, tuple[int, int]]:
    """path -> (inode, kind) of every folder and regular file below ``top``; links are not followed."""
    found = {}
    for folder, dirs, names in os.walk(top):
        for name in dirs + names:
            entry = os.path.join(folder, name)
            info = os.lstat(entry)
            if stat.S_IFMT(info.st_mode) in (stat.S_IFDIR, stat.S_IFREG):
                found[entry] = (info.st_ino, stat.S_IFMT(info.st_mode))
    return found
