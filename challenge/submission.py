"""The submission contract (docs/FORMAT.md, section 8): what a valid submission looks like, how a
tool writes one, and the release's encryptions it answers; all of it public.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from challenge import format as fmt
from challenge.domain import DOMAINS
from challenge.errors import UsageError, argument
from challenge.files import UnsafeFile, make_folders, remove_made, write_atomic
from challenge.manifest import Manifest
from challenge.npy import ROWS, read_npy_header
from challenge.params import Params
from challenge.places import check_output
from challenge.progress import Progress
from challenge.text import printable

__all__ = ["DECRYPTION_FILE", "METADATA_FILE", "Expected", "encryption_blocks", "expected_from_keys",
           "expected_from_params", "open_for_scoring", "write_submission"]

DECRYPTION_FILE = "decryption.npy"
METADATA_FILE = "metadata.json"


@dataclass(frozen=True)
class Expected:
    """What a valid submission looks like: N rows of ``image_shape`` images, floats in ``domain``
    (all of it public)."""

    n: int
    domain: str
    image_shape: tuple[int, int, int]

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.n, *self.image_shape)

    @property
    def value_range(self) -> tuple[float, float]:
        return DOMAINS[self.domain]


def expected_from_params(params: Params) -> Expected:
    """The public promise of a release of these parameters (its manifest's or its key store's)."""
    return Expected(params.n_encryptions, params.domain, params.image_shape)


def expected_from_keys(store: fmt.KeyStore) -> Expected:
    return expected_from_params(store.params)


def open_for_scoring(release: Path | None, keys: Path | None) -> tuple[Expected, fmt.KeyStore | None]:
    """What a submission must look like and the key store to score it with (or None), checking that
    the two belong together: same parameters, and the key store the manifest commits to."""
    if release is None and keys is None:
        raise UsageError(f"give {argument('release')} (to validate) or {argument('keys')} (to validate and score)")
    store = fmt.open_key_store(keys) if keys is not None else None
    if release is None:
        return expected_from_keys(store), store
    manifest = Manifest.read(release)
    if store is not None:
        fmt.check_commitment(manifest.commitment, store, release, keys)  # first: it names both commitments
        if manifest.version != store.version or manifest.params != store.params:
            raise UsageError(f"{printable(release)}: manifest parameters differ from those of the key store "
                             f"{printable(keys)} it commits to: the manifest was changed")
    return expected_from_params(manifest.params), store


def encryption_blocks(release: Path, expected: Expected, rows: int = ROWS) -> Iterator[np.ndarray]:
    """The release's published encryptions, ``rows`` at a time, after checking the file's header."""
    path = Path(release) / fmt.PUBLIC_DIR / fmt.ENCRYPTION_FILE
    if not path.is_file():
        path = Path(release) / fmt.ENCRYPTION_FILE
    if not path.is_file():
        raise UsageError(f"{release}: no {fmt.PUBLIC_DIR}/{fmt.ENCRYPTION_FILE}; this baseline needs the release's encryptions")
    array, problems = read_npy_header(path, 1 << 62)
    if array is not None and (array.shape != expected.shape or array.dtype != np.float32):
        problems.append(f"shape {array.shape} dtype {array.dtype}, expected {expected.shape} float32")
    if problems:
        raise UsageError(f"{path}: not the release's encryptions ({'; '.join(problems)})")
    for _, block in array.chunks(rows):
        yield block


def write_submission(out: Path, blocks: Iterator[np.ndarray], *, expected: Expected, dtype: str,
                     metadata: dict, force: bool = False, private: bool = False) -> Path:
    """Stream ``blocks`` into ``out/decryption.npy`` (via a temporary file) and write ``metadata.json``.

    Parameters
    ----------
    out : path
        The submission folder, created if missing; never inside a release or a key store.
    blocks : iterable of ndarray
        The rows of the decryption in order, (rows, H, W, C) each; ``expected.n`` rows in all.
    expected : Expected
        What the release's submissions look like (``release.expected`` of :func:`attacks.open_public`).
    dtype : str
        The stored dtype: ``"uint8"``, or ``"float32"`` in the release's pixel domain.
    metadata : dict
        Written as ``metadata.json`` (e.g. ``team``, ``method``).
    force : bool, optional
        Replace an existing ``decryption.npy``.
    private : bool, optional
        The rows are (or are fitted to) the private images: the files are 0600 in a folder created 0700.

    Returns
    -------
    path : Path
        The ``decryption.npy`` written.

    Raises
    ------
    UsageError
        If ``decryption.npy`` exists without ``force``, ``out`` is in a protected place, or it is
        unwritable (read-only, full disk, a file in the way); no temporary file, no decryption
        without its metadata and no folder this call created is left behind.
    """
    out = Path(out)
    check_output(out)
    target = out / DECRYPTION_FILE
    if target.exists() and not force:
        raise UsageError(f"{printable(target)}: already exists; pass {argument('force', True)} to replace it")
    tmp = out / f".{DECRYPTION_FILE}.partial-{os.getpid()}"
    mode = 0o600 if private else 0o644
    made = []
    try:
        made = make_folders(out, private=private)
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "wb") as f:
            os.fchmod(f.fileno(), mode)  # whatever the umask
            header = {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": expected.shape}
            np.lib.format.write_array_header_1_0(f, header)
            written = 0
            with Progress("write", expected.n, unit="rows") as bar:
                for block in blocks:
                    f.write(np.ascontiguousarray(block, dtype=dtype).data)
                    written += len(block)
                    bar.advance(len(block))
        if written != expected.n:
            raise RuntimeError(f"baseline produced {written} rows, expected {expected.n}")
        write_atomic(out / METADATA_FILE, json.dumps(metadata, indent=2, sort_keys=True) + "\n", mode=mode)
        os.replace(tmp, target)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        remove_made(made)
        if isinstance(e, OSError):
            raise UsageError(f"cannot write the submission: {printable(e.filename or out)}: {e.strerror or e}") from None
        if isinstance(e, UnsafeFile):
            raise UsageError(f"cannot write the submission: {printable(e)}") from None
        raise
    return target
