"""Submissions sent as a ``.zip`` (as Codabench and the 2020 challenge take them), opened safely.

An archive is as untrusted as a folder, and worse: its names can point outside the folder it is
extracted into ("zip slip"), its members can be symlinks or devices, and a few kilobytes can inflate
to terabytes (a "zip bomb"), while the sizes its headers declare can lie.  :func:`extracted` unpacks
an archive into a fresh private temporary folder only after every member passed these checks:

* names: relative, ``/``-separated, no ``..``, ``.`` or empty component, no backslash, no drive
  letter, no control character; no name twice; no file that is also used as a folder;
* kinds: regular files and folders only (the Unix file type in the external attributes); no
  encrypted member; only *stored* and *deflate* members (what every zip tool writes by default): the
  bzip2 and LZMA decoders of :mod:`zipfile` inflate a whole block at once, without an output bound;
* counts and sizes: at most :data:`MAX_MEMBERS` members; a total of at most the largest valid
  submission (:func:`verifier.submission.largest_valid_bytes`) plus its metadata plus
  :data:`EXTRA_BYTES`; at most :data:`MAX_RATIO` bytes out per byte in.  The caps are checked on
  the declared sizes first and again on the bytes actually inflated, which stop at the cap;
* nested archives are extracted as plain files and never expanded.

Every refusal is one :class:`UnsafeArchive` line naming the archive, the member and what was
expected.  :func:`layout_hint` explains the usual packing mistakes (``decryption.npz``, a zipped
folder instead of zipped files, an archive inside the archive).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from challenge.errors import UsageError
from challenge.files import open_regular
from challenge.submission import DECRYPTION_FILE, METADATA_FILE, Expected
from challenge.text import printable
from verifier.submission import MAX_METADATA_BYTES, largest_valid_bytes

__all__ = ["EXTRA_BYTES", "add_layout_hint", "MAX_MEMBERS", "MAX_RATIO", "UnsafeArchive", "extracted", "is_archive", "layout_hint",
           "submission_folder", "total_cap"]

MAX_MEMBERS = 64  # a submission is two files; room for a README and what macOS adds (__MACOSX/, .DS_Store)
EXTRA_BYTES = 1 << 20  # room for such extra files beside decryption.npy and metadata.json
# Deflate cannot exceed about 1,032 bytes out per byte in: any honest deflate member passes (a constant
# submission compresses about 1,000:1), and a header that declares more is lying.
MAX_RATIO = 1100
RATIO_SLACK = 1 << 16  # small members (headers, empty files) have meaningless ratios
CHUNK = 1 << 20  # bytes inflated at a time
ARCHIVE_SUFFIXES = (".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar", ".npz")
_BAD_NAME_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")
_DRIVE = re.compile(r"^[A-Za-z]:")
_ACCEPTED_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
_UNIX = 3  # ZipInfo.create_system of archives made on Unix: the high 16 bits of external_attr are st_mode
_KINDS = {stat.S_IFLNK: "a symlink", stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket"}


class UnsafeArchive(UsageError):
    """A submission archive that is refused (exit code 2): one line naming archive, member and expectation."""


def total_cap(expected: Expected) -> int:
    """Most bytes an archive may inflate to: the largest valid submission, its metadata and small extras."""
    return largest_valid_bytes(expected) + MAX_METADATA_BYTES + EXTRA_BYTES


def is_archive(path: str | os.PathLike) -> bool:
    """Whether a submission path names a zip archive rather than a folder (by its name and kind)."""
    path = Path(path)
    return path.suffix.lower() == ".zip" and not path.is_dir()


@dataclass(frozen=True)
class _Member:
    info: zipfile.ZipInfo
    parts: tuple[str, ...]  # the checked name's components
    is_dir: bool


class _Refusal:
    """Builds the one-line messages for one archive."""

    def __init__(self, archive: Path):
        self.archive = printable(archive)

    def __call__(self, member: str | None, problem: str, expected: str) -> UnsafeArchive:
        where = f"{self.archive}: member {printable(repr(member))}" if member is not None else self.archive
        return UnsafeArchive(f"{where}: {problem}; expected {expected}")


def _name_problem(name: str) -> str | None:
    """Why a member name cannot be extracted safely, or None."""
    if _BAD_NAME_CHARS.search(name):
        return "a backslash or control character in its name"
    if name.startswith("/") or _DRIVE.match(name):
        return "an absolute name"
    parts = name.rstrip("/").split("/")
    if ".." in parts:
        return "a '..' component that leads outside the folder"
    if any(part in ("", ".") for part in parts):
        return "an empty or '.' component in its name"
    return None


def _kind_problem(info: zipfile.ZipInfo, is_dir: bool) -> str | None:
    """Why a member is not a plain file or folder (symlink, device, ...), from its external attributes."""
    if info.create_system != _UNIX:
        return None  # MS-DOS attributes have no file types beyond the folder flag
    kind = stat.S_IFMT(info.external_attr >> 16)
    if kind in _KINDS:
        return _KINDS[kind]
    if kind == stat.S_IFDIR and not is_dir:
        return "a folder without a trailing '/' in its name"
    if kind == stat.S_IFREG and is_dir:
        return "a file whose name ends in '/'"
    return None


def _checked_members(zf: zipfile.ZipFile, refuse: _Refusal, cap: int) -> list[_Member]:
    """Every member, after the checks that need no inflation (names, kinds, methods, declared sizes)."""
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise refuse(None, f"{len(infos):,} members", f"at most {MAX_MEMBERS} ({DECRYPTION_FILE}, {METADATA_FILE})")
    members, seen, declared = [], {}, 0
    for info in infos:
        name = info.orig_filename
        problem = _name_problem(name)
        is_dir = name.endswith("/")
        if problem is None:
            problem = _kind_problem(info, is_dir)
        if problem is None and info.flag_bits & 0x1:
            problem = "encrypted"
        if problem is None and info.compress_type not in _ACCEPTED_METHODS:
            problem = f"compression method {info.compress_type}"
        if problem is not None:
            expected = ("a stored or deflate member (zip -r, or Python's zipfile with ZIP_DEFLATED)"
                        if problem.startswith("compression") else "a plain file or folder with a relative name")
            raise refuse(name, problem, expected)
        parts = tuple(name.rstrip("/").split("/"))
        if parts in seen:
            raise refuse(name, "a second member of the same name", "each name once")
        for depth in range(1, len(parts)):
            if seen.get(parts[:depth]) is False:
                raise refuse(name, f"inside {'/'.join(parts[:depth])!r}, which is a file", "each name once")
        if not is_dir and any(other[:len(parts)] == parts for other in seen if len(other) > len(parts)):
            raise refuse(name, "a file with the name of a folder of another member", "each name once")
        seen[parts] = is_dir
        if is_dir and info.file_size:
            raise refuse(name, f"a folder that declares {info.file_size:,} bytes", "an empty folder entry")
        if info.file_size > MAX_RATIO * info.compress_size + RATIO_SLACK:
            raise refuse(name, f"declares {info.file_size:,} bytes from {info.compress_size:,} compressed",
                         f"at most {MAX_RATIO}:1 (deflate's own limit is about 1032:1)")
        declared += info.file_size
        if declared > cap:
            raise refuse(name, f"members declare more than {cap:,} bytes in all",
                         "no more than the largest valid submission and its metadata")
        members.append(_Member(info, parts, is_dir))
    return members


def _inflate(zf: zipfile.ZipFile, member: _Member, folder: Path, refuse: _Refusal, budget: int) -> int:
    """Write one file member under ``folder``, counting what is actually inflated; returns the bytes written.

    The member may not produce more than it declares, more than :data:`MAX_RATIO` times its compressed
    size, nor more than ``budget`` (what is left of the archive's total cap): the copy stops there.
    """
    info = member.info
    limit = min(info.file_size, MAX_RATIO * info.compress_size + RATIO_SLACK, budget)
    target = folder.joinpath(*member.parts)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o600)
    written = 0
    with os.fdopen(fd, "wb") as out, zf.open(info) as source:
        while block := source.read(min(CHUNK, limit - written + 1)):
            written += len(block)
            if written > limit:
                raise refuse(info.orig_filename, f"inflates past {limit:,} bytes (declared: {info.file_size:,})",
                             "a member no larger than it declares and the total cap")
            out.write(block)
    return written


@contextmanager
def extracted(archive: str | os.PathLike, expected: Expected, *, workdir: str | os.PathLike | None = None) -> Iterator[Path]:
    """Extract a submission archive into a fresh private folder (mode 0700) and yield it; removed on exit.

    ``expected`` (N and the domain) sets the size cap (:func:`total_cap`); ``workdir`` is where the
    temporary folder is made (default: the system's).  Refusals are :class:`UnsafeArchive`; a
    corrupt archive, or one that cannot be extracted for lack of space, is a :class:`UsageError`.
    """
    archive = Path(archive)
    refuse = _Refusal(archive)
    cap = total_cap(expected)
    with open_regular(archive) as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > cap + cap // 1000 + (16 << 20):  # stored data plus generous room for headers
            raise refuse(None, f"{size:,} bytes", f"at most about {cap:,}, the largest valid submission, zipped")
        try:
            zf = zipfile.ZipFile(handle)
        except (zipfile.BadZipFile, OSError, ValueError) as e:
            raise refuse(None, f"not a readable zip archive ({e})",
                         f"a .zip holding {DECRYPTION_FILE} (and optionally {METADATA_FILE}) at its top level") from None
        with zf:
            members = _checked_members(zf, refuse, cap)
            folder = Path(tempfile.mkdtemp(prefix="instahide-submission-", dir=workdir))
            try:
                budget = cap
                for member in members:
                    if member.is_dir:
                        folder.joinpath(*member.parts).mkdir(parents=True, exist_ok=True)
                        continue
                    try:
                        budget -= _inflate(zf, member, folder, refuse, budget)
                    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as e:
                        raise refuse(member.info.orig_filename, f"corrupt ({e})",
                                     "a member whose data matches its header (CRC and sizes)") from None
                    except OSError as e:
                        raise UsageError(f"{printable(archive)}: cannot be extracted into {folder}: "
                                         f"{e.strerror or e}") from None
                yield folder
            finally:
                shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def submission_folder(path: str | os.PathLike, expected: Expected, *,
                      workdir: str | os.PathLike | None = None) -> Iterator[Path]:
    """The folder to validate: ``path`` itself, or the checked extraction of ``path`` if it is a ``.zip``."""
    if is_archive(path):
        with extracted(path, expected, workdir=workdir) as folder:
            yield folder
    else:
        yield Path(path)


def _found_files(folder: Path, limit: int = 1000, depth: int = 3) -> list[Path]:
    """Up to ``limit`` files under ``folder``, at most ``depth`` levels deep, without following links."""
    found, pending = [], [(folder, 0)]
    while pending and len(found) < limit:
        current, level = pending.pop(0)
        try:
            entries = sorted(os.scandir(current), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            if entry.name == "__MACOSX":
                continue
            path = Path(entry.path)
            if entry.is_dir(follow_symlinks=False):
                if level + 1 < depth:
                    pending.append((path, level + 1))
            elif entry.is_file(follow_symlinks=False):
                found.append(path)
    return found[:limit]


def add_layout_hint(validation) -> None:
    """Append :func:`layout_hint` to a validation that found no ``decryption.npy``."""
    if any(problem.startswith(f"{DECRYPTION_FILE}: missing") for problem in validation.problems):
        hint = layout_hint(validation.folder)
        if hint:
            validation.problems.append(hint)


def layout_hint(folder: str | os.PathLike) -> str | None:
    """A hint for a submission folder (or extracted archive) without ``decryption.npy`` at its top
    level, or None: what it holds instead and how to fix it."""
    folder = Path(folder)
    files = _found_files(folder)
    fix = f"save the array with np.save('{DECRYPTION_FILE}', x) and zip the files, not their folder"
    top = [f for f in files if f.parent == folder]
    for path in top:
        if path.name.lower() == "decryption.npz":
            return (f"found {path.name}, a NumPy .npz archive (np.savez), expected {DECRYPTION_FILE}: save with "
                    f"np.save('{DECRYPTION_FILE}', x)")
    nested = [f for f in files if f.parent != folder and f.name == DECRYPTION_FILE]
    if nested:
        inner = printable(nested[0].parent.relative_to(folder).as_posix())
        return (f"found {inner}/{DECRYPTION_FILE}, expected it at the top level: zip the files, not their folder "
                f"(cd {inner} && zip ../submission.zip {DECRYPTION_FILE} {METADATA_FILE})")
    for path in top:
        if path.name.lower().startswith("decryption") and path.name != DECRYPTION_FILE:
            return f"found {printable(path.name)}, expected exactly {DECRYPTION_FILE}: {fix}"
    for path in top:
        if path.name.lower().endswith(ARCHIVE_SUFFIXES):
            return (f"found {printable(path.name)}, an archive inside the submission, which is not expanded: "
                    f"put {DECRYPTION_FILE} itself at the top level")
    return None
