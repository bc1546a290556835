"""PNG contact sheets: grids of images of any size, grey or RGB, for people who would rather look
than read, optionally labelled; and the bounded reading of a PNG someone else wrote (a preview to check)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from challenge import files

__all__ = ["LABELLED_PREVIEW_VERSION", "contact_sheet", "png_chunks", "read_png", "release_preview", "save_png"]

LABELLED_PREVIEW_VERSION = 3  # format versions 1 and 2 pinned their unlabelled preview's bytes
_FONT = ImageFont.load_default_imagefont()  # Pillow's built-in bitmap font: no file, same pixels everywhere
_LINE = 12  # pixels per line of text in that font (11 high, 1 apart)
_INK = (0, 0, 0)


def _text_width(text: str) -> int:
    return max((int(_FONT.getlength(line)) for line in text.split("\n")), default=0)


def _lines(text: str | None) -> int:
    return len(text.split("\n")) if text else 0


def contact_sheet(images: np.ndarray, *, columns: int = 8, scale: int = 2, gap: int = 2,
                  captions: list[str] | None = None, title: str | None = None) -> Image.Image:
    """uint8 (n, H, W, C), C in {1, 3} -> one RGB image, row-major, ``scale``x enlarged, white gaps.

    Grey tiles (C = 1) stay grey.  ``captions`` (one text per tile, lines split by newline) are
    written under the tiles and ``title`` above them; without either the sheet is exactly the
    unlabelled one the pinned previews of format versions 1 and 2 were drawn with.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or images.dtype != np.uint8:
        raise ValueError(f"images {images.dtype} {images.shape}, expected uint8 (n, H, W, C) with C 1 or 3")
    n, height, width = images.shape[:3]
    rows = max(1, -(-n // columns))
    captions = list(captions or [])
    caption_lines = max(map(_lines, captions), default=0)
    tile_h, tile_w = height * scale, width * scale
    cell_w = max([tile_w, *map(_text_width, captions)])
    cell_h = tile_h + caption_lines * _LINE
    top = _lines(title) * _LINE + (gap if title else 0)
    sheet_w = max(columns * (cell_w + gap) + gap, _text_width(title or "") + 2 * gap)
    sheet = np.full((top + rows * (cell_h + gap) + gap, sheet_w, 3), 255, np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        y, x = top + gap + r * (cell_h + gap), gap + c * (cell_w + gap)
        sheet[y : y + tile_h, x : x + tile_w] = image.repeat(scale, axis=0).repeat(scale, axis=1)  # C=1 broadcasts
    picture = Image.fromarray(sheet)
    if captions or title:
        draw = ImageDraw.Draw(picture)
        if title:
            draw.multiline_text((gap, gap), title, fill=_INK, font=_FONT, spacing=_LINE - 11)
        for i, caption in enumerate(captions[:n]):
            r, c = divmod(i, columns)
            y, x = top + gap + r * (cell_h + gap) + tile_h, gap + c * (cell_w + gap)
            draw.multiline_text((x, y + 1), caption, fill=_INK, font=_FONT, spacing=_LINE - 11)
    return picture


def release_preview(images: np.ndarray, format_version: int) -> Image.Image:
    """``preview.png`` of a release of ``format_version`` from its first encryptions (uint8): each
    tile labelled with its row from version 3 on, the unlabelled sheet for versions 1 and 2 (their
    bytes are pinned)."""
    if format_version < LABELLED_PREVIEW_VERSION:
        return contact_sheet(images)
    return contact_sheet(images, captions=[f"row {i}" for i in range(len(images))],
                         title=f"encryption.npy, rows 0 to {len(images) - 1} (first {len(images)} encryptions)")


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
