"""Downsampled ImageNet (Imagenet32 / Imagenet64 / Imagenet16, ``npz`` version):
``train_data_batch_1.npz``.. (``val_data.npz`` with ``split="test"``), each with ``data`` uint8
(N, 3*S*S), every row R, G, B planes of an S x S image row-major (as CIFAR's), and ``labels``
(N,) integers 1..1000; S is taken from the width and must be the same in every file; other arrays
(``mean``) are not read.  Labels are stored 0-based (``labels - 1``) and the class names are the
file's 1-based label numbers as text ("1".."1000"), so a name is the authors' class id.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from challenge.imageset import ImageSet
from generator.images import SourceError
from generator.sources.arrays import load_npz, npz_shape
from generator.sources.cifar import numbered_batches, planar_to_hwc

IMAGENET_CLASSES = 1000


def load_batches(d: Path, split: str) -> ImageSet:
    if split == "train":
        files = numbered_batches(d, r"train_data_batch_(\d+)\.npz", "train_data_batch_N.npz")
    else:
        files = [d / "val_data.npz"]
        if not os.path.lexists(files[0]):
            raise SourceError(f"{files[0]}: missing (downsampled ImageNet validation file)")
    shapes = [npz_shape(f, "data") for f in files]  # allocate once: Imagenet64's train is 15.7 GB
    for f, shape in zip(files, shapes):
        side = math.isqrt(shape[1] // 3) if len(shape) == 2 else 0
        if len(shape) != 2 or side < 1 or 3 * side * side != shape[1] or shape[1] != shapes[0][1]:
            raise SourceError(f"{f}: data: expected (N, 3*S*S) with the same S in every file "
                              f"(S = 32 for Imagenet32), got {shape}")
    side = math.isqrt(shapes[0][1] // 3)
    total = sum(shape[0] for shape in shapes)
    images = np.empty((total, side, side, 3), np.uint8)
    labels = np.empty(total, np.int64)
    origin = np.empty((total, 2), np.int64)
    at = 0
    for i, f in enumerate(files):
        arrays = load_npz(f, ("data", "labels"))
        data, lab = arrays["data"], arrays["labels"]
        n = len(data)
        if data.dtype != np.uint8 or data.shape != shapes[i]:
            raise SourceError(f"{f}: data: expected uint8 {shapes[i]}, got {data.dtype} {data.shape}")
        if lab.dtype.kind not in "iu" or lab.shape != (n,):
            raise SourceError(f"{f}: labels: expected integer ({n},), got {lab.dtype} {lab.shape}")
        bad = np.flatnonzero((lab < 1) | (lab > IMAGENET_CLASSES))
        if bad.size:
            raise SourceError(f"{f}: record {bad[0]}: labels: expected 1..{IMAGENET_CLASSES}, got {lab[bad[0]]}")
        planar_to_hwc(data, images[at : at + n])
        labels[at : at + n] = lab - 1
        origin[at : at + n, 0] = i
        origin[at : at + n, 1] = np.arange(n)
        at += n
    names = tuple(str(i) for i in range(1, IMAGENET_CLASSES + 1))
    return ImageSet(images, labels=labels, class_names=names, source_files=tuple(f.name for f in files), origin=origin)
