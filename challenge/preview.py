"""PNG contact sheets: grids of 32x32 images, for people who would rather look than read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def contact_sheet(images: np.ndarray, columns: int = 8, scale: int = 2, gap: int = 2) -> Image.Image:
    """uint8 (n, 32, 32, 3) -> one RGB image, row-major, ``scale``x enlarged, white gaps."""
    n = len(images)
    rows = max(1, -(-n // columns))
    size = 32 * scale
    sheet = np.full((rows * (size + gap) + gap, columns * (size + gap) + gap, 3), 255, np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        y, x = gap + r * (size + gap), gap + c * (size + gap)
        sheet[y : y + size, x : x + size] = image.repeat(scale, axis=0).repeat(scale, axis=1)
    return Image.fromarray(sheet)


def save_png(image: Image.Image, path: Path) -> None:
    """PNG without timestamps or other metadata, so equal pixels give equal bytes."""
    image.save(path, format="PNG", optimize=False, compress_level=1)
