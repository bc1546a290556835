"""The image geometry of the format: a release's image shape and the sizes derived from it.

Every image of a release (private, public patch, encryption, recovery) has the release's
``image_shape`` = (height, width, channels), uint8 or float32 (NHWC when stacked), with 1 (grey)
or 3 (RGB) channels.  Format versions 1 and 2 have no such parameter: their images are
:data:`DEFAULT_IMAGE_SHAPE`, the 32x32 RGB of CIFAR.  A sign mask holds one bit per value, packed
into :func:`sign_bytes` bytes (the pad bits of the last byte are zero).
"""

from __future__ import annotations

from numbers import Integral

__all__ = ["CHANNELS", "DEFAULT_IMAGE_SHAPE", "IMAGE_SHAPE", "IMAGE_SIDE", "IMAGE_VALUES", "MAX_IMAGE_SIDE",
           "MIN_IMAGE_SIDE", "SIGN_BYTES", "check_image_shape", "image_values", "sign_bytes"]

DEFAULT_IMAGE_SHAPE = (32, 32, 3)  # height, width, channels: CIFAR, and every image of versions 1 and 2
CHANNELS = (1, 3)  # grey or RGB
MIN_IMAGE_SIDE = 7  # SSIM's 7 x 7 window must fit
MAX_IMAGE_SIDE = 512  # ImageNet at 224 px fits twice over; bounds every allocation a hostile manifest can ask for

# The default shape's sizes, for code that handles only version-1/2 geometry.
IMAGE_SIDE = DEFAULT_IMAGE_SHAPE[0]
IMAGE_SHAPE = DEFAULT_IMAGE_SHAPE
IMAGE_VALUES = 32 * 32 * 3  # 3072
SIGN_BYTES = IMAGE_VALUES // 8  # 384


def image_values(shape) -> int:
    """Values per image: H * W * C."""
    height, width, channels = shape
    return int(height) * int(width) * int(channels)


def sign_bytes(shape) -> int:
    """Bytes of one packed sign row: ceil(H * W * C / 8), one bit per value, little bit order."""
    return -(-image_values(shape) // 8)


def check_image_shape(shape) -> tuple[int, int, int]:
    """``shape`` as a tuple of three ints, or ValueError naming what is wrong with it."""
    if not (isinstance(shape, (tuple, list)) and len(shape) == 3
            and all(isinstance(v, Integral) and not isinstance(v, bool) for v in shape)):
        raise ValueError(f"image shape must be three integers (height, width, channels), got {shape!r}")
    height, width, channels = (int(v) for v in shape)
    if channels not in CHANNELS:
        raise ValueError(f"image shape {height}x{width}x{channels}: channels must be 1 (grey) or 3 (RGB)")
    for name, side in (("height", height), ("width", width)):
        if not MIN_IMAGE_SIDE <= side <= MAX_IMAGE_SIDE:
            why = "SSIM's 7x7 window needs at least 7" if side < MIN_IMAGE_SIDE else f"at most {MAX_IMAGE_SIDE}"
            raise ValueError(f"image shape {height}x{width}x{channels}: {name} {side} is out of range "
                             f"[{MIN_IMAGE_SIDE}, {MAX_IMAGE_SIDE}] ({why})")
    return height, width, channels
