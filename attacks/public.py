"""What every attack reads: a release's PUBLIC files only, checked before a byte of data is read.

The image shape is taken from ``encryption.npy``'s header, so an attack follows whatever shape
(H, W, C) the release was made at, whether or not its manifest records one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from challenge import format as fmt
from challenge.errors import UsageError
from challenge.geometry import CHANNELS
from challenge.params import Params
from challenge.manifest import Manifest, manifest_path
from challenge.npy import NpyFile, read_npy_header
from challenge.submission import Expected, expected_from_params

__all__ = ["PublicRelease", "open_public", "magnitudes"]


@dataclass(frozen=True, kw_only=True)
class PublicRelease:
    """A release as an attacker sees it: parameters, the expected submission, the labels, the encryptions."""

    path: Path
    manifest: Manifest  # read leniently: fields an attack does not need may be None (see open_public)
    params: Params
    expected: Expected
    labels: np.ndarray  # float32 (N, classes): lambda-weighted one-hot labels of the private images
    encryptions: NpyFile  # the checked header of encryption.npy: float32 (N, H, W, C)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of every image of the release, as its encryptions have it."""
        return self.encryptions.shape[1:]

    def encryption_blocks(self, rows: int) -> Iterator[np.ndarray]:
        """The encryptions (float32 (B, H, W, C)), ``rows`` at a time."""
        for _, block in self.encryptions.chunks(rows):
            yield block


def _public_file(release: Path, name: str) -> Path:
    """``release/public/name``, or ``release/name`` when ``release`` is the public folder itself."""
    path = Path(release) / fmt.PUBLIC_DIR / name
    return path if path.is_file() else Path(release) / name


def _header(path: Path, max_bytes: int, fits, expected: str, what: str) -> NpyFile:
    """The checked header of a public array, or one UsageError naming the file and what was expected."""
    header, problems = read_npy_header(path, max_bytes)
    if header is not None and not fits(header):
        problems.append(f"shape {header.shape} dtype {header.dtype}, expected {expected}")
    if problems:
        raise UsageError(f"{path}: not the release's {what} ({'; '.join(problems)})")
    return header


def open_public(release: Path) -> PublicRelease:
    """A release as an attacker sees it: its public files only, never the key store.

    Parameters
    ----------
    release : path
        The release folder or its ``public/`` folder.

    Returns
    -------
    release : PublicRelease
        The manifest (read leniently: an attack needs only the parameters), the parameters, the
        expected submission, the labels (read) and the encryptions (their checked header; read
        block by block).

    Raises
    ------
    UsageError
        If the parameters, the labels or the encryptions' header are missing or malformed.
    """
    problems = []  # an attacker reads what it can: only the parameters are needed
    manifest = Manifest.read(release, problems)
    params = manifest.params
    if params is None:
        raise UsageError(f"{manifest_path(release)}: params: {dict(problems).get('params', 'malformed')}")
    expected = expected_from_params(params)
    n = expected.n
    names = manifest.class_names or []  # empty when the private set named no classes
    path = _public_file(release, fmt.LABEL_FILE)
    labels = _header(path, n * max(len(names), 1 << 16) * 4 + 10_000,
                     lambda h: h.dtype == np.float32 and len(h.shape) == 2 and h.shape[0] == n
                     and (not names or h.shape[1] == len(names)),
                     f"({n}, {len(names) or 'C'}) float32", "labels").read_rows(0, n)
    if not np.all(np.isfinite(labels)) or labels.min() < 0:
        raise UsageError(f"{path}: labels must be finite and non-negative (lambda-weighted one-hot rows)")
    encryptions = _header(_public_file(release, fmt.ENCRYPTION_FILE), 1 << 62,
                          lambda h: h.dtype == np.float32 and len(h.shape) == 4 and h.shape[0] == n
                          and h.shape[3] in CHANNELS and min(h.shape[1:3]) >= 1,
                          f"({n}, H, W, C) float32 with C in {CHANNELS}", "encryptions")
    return PublicRelease(path=Path(release), manifest=manifest, params=params, expected=expected, labels=labels,
                         encryptions=encryptions)


def magnitudes(block: np.ndarray, params: Params) -> np.ndarray:
    """float32, the shape of ``block``: what the attacks fit.  With a sign mask only |x| carries
    information; without one (mixup) x itself is the mix."""
    return (np.abs(block) if params.masked else block).astype(np.float32)
