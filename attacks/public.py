"""What every attack reads: a release's PUBLIC files only, checked before a byte of data is read."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from challenge import format as fmt
from challenge.errors import UsageError
from challenge.params import Params
from challenge.manifest import read_manifest
from challenge.npy import read_npy_header
from challenge.submission import Expected, encryption_blocks, expected_from_manifest

__all__ = ["PublicRelease", "open_public", "magnitudes"]


@dataclass(frozen=True)
class PublicRelease:
    """A release as an attacker sees it: parameters, the expected submission, the labels."""

    path: Path
    manifest: dict
    params: Params
    expected: Expected
    labels: np.ndarray  # float32 (N, C): lambda-weighted one-hot labels of the private images

    def encryption_blocks(self, rows: int):
        """The encryptions (float32 (B, 32, 32, 3)), ``rows`` at a time."""
        return encryption_blocks(self.path, self.expected, rows)


def open_public(release: Path) -> PublicRelease:
    """Read ``public/manifest.json`` and ``public/label.npy`` of ``release`` (never the key store)."""
    manifest = read_manifest(release)
    params = fmt.read_params(manifest["params"], f"{release}: manifest params", manifest["format_version"])
    expected = expected_from_manifest(manifest)
    path = Path(release) / fmt.PUBLIC_DIR / fmt.LABEL_FILE
    if not path.is_file():
        path = Path(release) / fmt.LABEL_FILE
    names = manifest.get("class_names") or []  # empty when the private set named no classes
    header, problems = read_npy_header(path, expected.n * max(len(names), 1 << 16) * 4 + 10_000)
    if header is not None and (header.dtype != np.float32 or len(header.shape) != 2 or header.shape[0] != expected.n
                               or (names and header.shape[1] != len(names))):
        problems.append(f"shape {header.shape} dtype {header.dtype}, expected ({expected.n}, {len(names) or 'C'}) float32")
    if problems:
        raise UsageError(f"{path}: not the release's labels ({'; '.join(problems)})")
    labels = header.read_rows(0, expected.n)
    if not np.all(np.isfinite(labels)) or labels.min() < 0:
        raise UsageError(f"{path}: labels must be finite and non-negative (lambda-weighted one-hot rows)")
    return PublicRelease(Path(release), manifest, params, expected, labels)


def magnitudes(block: np.ndarray, params: Params) -> np.ndarray:
    """float32 (B, 3072): what the attacks fit.  With a sign mask only |x| carries information;
    without one (mixup) x itself is the mix."""
    flat = block.reshape(len(block), -1)
    return (np.abs(flat) if params.masked else flat).astype(np.float32)
