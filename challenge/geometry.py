"""The image geometry of the format: one definition of the image shape and the sizes derived from it.

Every image of a release (private, public patch, encryption, recovery) is ``IMAGE_SHAPE`` uint8 or
float32, height x width x channels (NHWC when stacked); a sign mask holds one bit per value.
"""

from __future__ import annotations

__all__ = ["IMAGE_SHAPE", "IMAGE_SIDE", "IMAGE_VALUES", "SIGN_BYTES"]

IMAGE_SIDE = 32
IMAGE_SHAPE = (IMAGE_SIDE, IMAGE_SIDE, 3)  # height, width, channels (RGB)
IMAGE_VALUES = IMAGE_SHAPE[0] * IMAGE_SHAPE[1] * IMAGE_SHAPE[2]  # 3072 values per image
SIGN_BYTES = IMAGE_VALUES // 8  # 384: one sign bit per value, packed little-endian bit order
