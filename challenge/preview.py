"""PNG contact sheets: grids of 32x32 images, for people who would rather look than read; and the
bounded reading of a PNG someone else wrote (a preview to check)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from challenge import files

__all__ = ["contact_sheet", "png_chunks", "read_png", "save_png"]


def contact_sheet(images: np.ndarray, columns: int = 8, scale: int = 2, gap: int = 2) -> Image.Image:
    """uint8 (n, H, W, C), C = 1 or 3 -> one RGB image, row-major, ``scale``x enlarged, white gaps."""
    n = len(images)
    rows = max(1, -(-n // columns))
    height, width = images.shape[1] * scale, images.shape[2] * scale
    sheet = np.full((rows * (height + gap) + gap, columns * (width + gap) + gap, 3), 255, np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        y, x = gap + r * (height + gap), gap + c * (width + gap)
        sheet[y : y + height, x : x + width] = image.repeat(scale, axis=0).repeat(scale, axis=1)  # grey: broadcast
    return Image.fromarray(sheet)


def save_png(image: Image.Image, path: Path) -> None:
    """PNG without timestamps or other metadata, so equal pixels give equal bytes."""
    image.save(path, format="PNG", optimize=False, compress_level=1)


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, payload) of every PNG chunk; ValueError for a broken signature or trailing bytes."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG file")
    chunks, i = [], 8
    while i < len(data):
        if i + 12 > len(data):
            raise ValueError("truncated chunk")
        (length,) = struct.unpack(">I", data[i : i + 4])
        chunks.append((data[i + 4 : i + 8], data[i + 8 : i + 8 + length]))
        i += 12 + length
        if chunks[-1][0] == b"IEND":
            break
    if i != len(data):
        raise ValueError("bytes after IEND" if i < len(data) else "truncated chunk")
    if not chunks:
        raise ValueError("no chunks after the PNG signature")
    return chunks


def read_png(path: Path, width: int, height: int) -> np.ndarray:
    """The RGB pixels of a PNG that must be ``width`` x ``height`` 8-bit RGB made of IHDR, IDAT and IEND only.

    The file is read with a cap and its header checked before anything is decoded, so a PNG
    claiming 100000 x 100000 pixels is refused without allocating them.  ValueError (or
    :class:`challenge.files.UnsafeFile`, a ValueError too) says what is wrong.
    """
    raw = height * (3 * width + 1)  # the filtered scanlines; zlib never more than doubles them
    data = files.read_bytes(path, 2 * raw + 4096, what=f"{width}x{height} PNG")
    chunks = png_chunks(data)
    kinds = [kind for kind, _ in chunks]
    if kinds[0] != b"IHDR" or set(kinds[1:-1]) != {b"IDAT"} or kinds[-1] != b"IEND":
        raise ValueError(f"chunks {sorted(set(k.decode('latin-1') for k in kinds))}, expected IHDR, IDAT, IEND only")
    ihdr = struct.unpack(">IIBB", chunks[0][1][:10])
    if ihdr != (width, height, 8, 2):
        raise ValueError(f"IHDR {ihdr}, expected {width}x{height} 8-bit RGB")
    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, SyntaxError, struct.error, zlib.error, Image.DecompressionBombError) as e:
        raise ValueError(f"does not decode ({type(e).__name__}: {e})") from None
