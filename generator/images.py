"""Image files as both data-set loaders read them: the walk, the caps, the conversion to 8-bit RGB
or grey and the resize (the rules are in :mod:`generator.sources`' docstring; they change pixels).

Shared by :mod:`generator.sources` (image-folder private sets) and :mod:`generator.patches` (the
public patch bank), which import this module and never each other's internals.
"""

from __future__ import annotations

import os
import struct
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from challenge.errors import UsageError
from challenge.files import open_regular

__all__ = [
    "DECODE_ERRORS",
    "IMAGE_EXTENSIONS",
    "ImageTooLarge",
    "MAX_ARRAY_BYTES",
    "MAX_ASPECT_RATIO",
    "MAX_IMAGE_PIXELS",
    "SIZE",
    "SourceError",
    "check_image_size",
    "count_note",
    "open_image",
    "read_image8",
    "resize_center_crop",
    "resize_images",
    "scaled_size",
    "to_8bit",
    "walk_image_files",
]

SIZE = 32  # side of an image-folder image when no size is asked for (CIFAR's)
# Caps on what an untrusted data set may make this tool read or allocate.
MAX_ARRAY_BYTES = 2_000_000 * 3072  # one array: 2M 32x32x3 images, more than ImageNet's 1.28M
MAX_IMAGE_PIXELS = 1 << 26  # decoded size of one image file (67 MP); Pillow warns from 89 MP
MAX_ASPECT_RATIO = 16  # long side / short side; resized, at most 32 x 512 (private) or 40 x 640 (patches)

#: Extensions read as images (lower-case).  A fixed list, not Pillow's registry, so the set of
#: files read does not change with the Pillow version.
IMAGE_EXTENSIONS = frozenset(
    ".jpg .jpeg .jpe .jfif .png .bmp .dib .gif .tif .tiff .webp .ppm .pgm .pbm .pnm .tga "
    ".qoi .pcx .sgi .ras .jp2 .j2k .avif".split()
)


class SourceError(UsageError):
    """A user's data set is not what its layout requires; the message names file, field, expectation."""


class ImageTooLarge(ValueError):
    """An image file whose decoded or resized size exceeds the caps: skipped and counted."""



def walk_image_files(root: Path, notes: dict[str, int]) -> list[str]:
    """Relative POSIX paths of image files under ``root``, sorted; never follows symlinked dirs."""
    out: list[str] = []
    stack = [("", root)]
    while stack:
        rel, d = stack.pop()
        try:
            entries = list(os.scandir(d))
        except OSError as e:
            raise SourceError(f"{d}: cannot list directory ({e.strerror})") from None
        for e in entries:
            r = f"{rel}{e.name}"
            try:
                if e.name.startswith("."):
                    count_note(notes, "ignored_hidden")
                elif e.is_dir(follow_symlinks=False):
                    stack.append((r + "/", Path(e.path)))
                elif e.is_symlink() and os.path.isdir(e.path):
                    count_note(notes, "skipped_symlinked_dirs")
                elif not e.is_file():
                    count_note(notes, "ignored_not_regular")
                elif os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS:
                    out.append(r)
                else:
                    count_note(notes, "ignored_non_image_files")
            except OSError:  # a symlink loop, a link into a folder we may not read
                count_note(notes, "skipped_unreadable_entries")
    out.sort()
    return out


def count_note(notes: dict[str, int], key: str, k: int = 1) -> None:
    notes[key] = notes.get(key, 0) + k


def to_8bit(im: Image.Image, grey: bool = False) -> tuple[Image.Image, str | None]:
    """8-bit RGB (or with ``grey``, 8-bit grey "L") version of ``im`` and the original mode if a
    conversion happened (see the module doc of :mod:`generator.sources`)."""
    mode, target = im.mode, "L" if grey else "RGB"
    if mode == target:
        return im, None
    if mode.startswith("I;16") or mode == "I":
        a = np.asarray(im).astype(np.int64)
        a = ((np.clip(a, 0, 65535) * 255 + 32767) // 65535).astype(np.uint8)
        return Image.fromarray(a, "L").convert(target), mode
    if mode in ("LA", "PA", "La"):
        im = im.convert("RGBA")
    return im.convert(target), mode


def check_image_size(size: tuple[int, int], path) -> None:
    """Refuse (:class:`ImageTooLarge`) what decoding or resizing would make enormous."""
    w, h = size
    if w * h > MAX_IMAGE_PIXELS:
        raise ImageTooLarge(f"{path}: {w} x {h} px, more than {MAX_IMAGE_PIXELS:,} pixels")
    if max(w, h) > MAX_ASPECT_RATIO * min(w, h):
        raise ImageTooLarge(f"{path}: {w} x {h} px, a long side more than {MAX_ASPECT_RATIO} times the short one")


@contextmanager
def open_image(path: str | os.PathLike):
    """Pillow image of the regular file ``path``, its header size checked before any decoding."""
    with open_regular(path) as f, Image.open(f) as im:
        check_image_size(im.size, path)
        yield im


def read_image8(path: str | os.PathLike, grey: bool = False) -> tuple[Image.Image, str | None]:
    """Decode ``path`` fully to 8-bit RGB (grey with ``grey``); raise OSError-like errors for
    unreadable files and :class:`ImageTooLarge` for oversized ones.

    Returns (image, original mode if converted else None).
    """
    with open_image(path) as im:
        im.load()
        out, converted = to_8bit(im, grey)
        if out is im:
            out = im.copy()
    return out, converted


#: Errors a malformed image file can raise while decoding (Pillow plugins are not uniform).
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError, KeyError,
                 ZeroDivisionError, Image.DecompressionBombError, struct.error)


def scaled_size(w: int, h: int, short: int) -> tuple[int, int]:
    """(w, h) scaled so the short side is ``short``; long side rounded half up, at least ``short``."""
    if w <= h:
        return short, max(short, (2 * h * short + w) // (2 * w))
    return max(short, (2 * w * short + h) // (2 * h)), short


def resize_center_crop(im: Image.Image, size: int = SIZE) -> np.ndarray:
    """Short side to ``size`` with LANCZOS (skipped if already size x size), then centre crop:
    (size, size, C) uint8, C = 1 for a grey image, 3 for RGB."""
    if im.size != (size, size):
        im = im.resize(scaled_size(*im.size, size), Image.Resampling.LANCZOS)
    w, h = im.size
    left, top = (w - size) // 2, (h - size) // 2
    a = np.asarray(im)[top : top + size, left : left + size]
    return np.ascontiguousarray(a[..., None] if a.ndim == 2 else a, dtype=np.uint8)


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, H, W, C) -> (N, size, size, C) by the image-folder rule (:func:`resize_center_crop`);
    a set already at that size is returned as it is."""
    if images.shape[1:3] == (size, size):
        return images
    out = np.empty((len(images), size, size, images.shape[3]), np.uint8)
    for i, img in enumerate(images):
        out[i] = resize_center_crop(Image.fromarray(img[..., 0] if img.shape[2] == 1 else img), size)
    return out
