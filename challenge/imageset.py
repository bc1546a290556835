"""In-memory image sets: the one shape every loader produces and the generator consumes.

A private set and a public patch bank are both an :class:`ImageSet`: uint8 images (N, H, W, C),
grey (C = 1) or RGB (C = 3), any H, W >= 1, with where each came from.  ``origin`` rows say how
to find an image again in its source (for CIFAR: file and record; for a patch: file and crop
box), so a key store can name the exact source of every secret image without copying the source
data set.
"""

from __future__ import annotations

import hashlib
from dataclasses import KW_ONLY, dataclass, field

import numpy as np

from challenge.geometry import CHANNELS

__all__ = ["ImageSet"]

_UNSHAPED_FINGERPRINT = (32, 32, 3)  # the one shape whose fingerprint does not hash the shape


@dataclass(frozen=True)
class ImageSet:
    """Images (N, H, W, C) uint8 with labels and provenance.

    Attributes
    ----------
    images : uint8 array (N, H, W, C), NHWC, C = 1 (grey) or 3 (RGB), H, W >= 1.
    labels : int64 array (N,), class index per image; -1 where a set has no labels (patches).
    class_names : names of the classes, indexed by label.
    source_files : relative paths (or names) of the files the images came from.
    origin : int64 array (N, len(origin_columns)); column 0 indexes ``source_files``.
    origin_columns : what each column of ``origin`` means; ("file", "record") unless given.
    notes : counts of handled oddities (skipped, converted), reported in summaries and manifests.
    """

    images: np.ndarray
    _: KW_ONLY
    labels: np.ndarray
    class_names: tuple[str, ...]
    source_files: tuple[str, ...]
    origin: np.ndarray
    origin_columns: tuple[str, ...] = ("file", "record")
    notes: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.images)
        shape = self.images.shape
        if self.images.dtype != np.uint8 or len(shape) != 4 or shape[3] not in CHANNELS or min(shape[1:3]) < 1:
            raise ValueError(f"images must be uint8 (N, H, W, C) with C = 1 (grey) or 3 (RGB) and H, W >= 1, "
                             f"got {self.images.dtype} {shape}")
        if self.labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {self.labels.shape}")
        if self.origin.shape != (n, len(self.origin_columns)):
            raise ValueError(f"origin must have shape ({n}, {len(self.origin_columns)}), got {self.origin.shape}")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of every image of the set."""
        return tuple(int(v) for v in self.images.shape[1:])

    def fingerprint(self) -> str:
        """SHA-256 of the pixels and labels in order: equal fingerprints mean equal inputs.

        The shape is hashed too, except for 32x32x3 sets, whose fingerprint releases recorded
        before images had other shapes (the same bytes as 28x28x1 images could otherwise match).
        """
        h = hashlib.sha256(b"instahide-imageset-v1\0")
        if self.image_shape != _UNSHAPED_FINGERPRINT:
            h.update(b"shape\0" + np.asarray(self.image_shape, "<i8").tobytes())
        h.update(np.asarray(len(self), "<i8").tobytes())
        h.update(np.ascontiguousarray(self.images).tobytes())
        h.update(np.ascontiguousarray(self.labels, dtype="<i8").tobytes())
        return h.hexdigest()
