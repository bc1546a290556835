"""Natural-photo image sets for the attack tests and benchmark: resized crops of the sample photos
that scikit-image ships inside its package (read from disk, never downloaded).

Two halves.  The development half (:data:`PRIVATE_PHOTOS`, whose crops the attacks were developed
and tuned on, with :data:`PUBLIC_PHOTOS` as the public patches) and the held-out half
(:data:`HELDOUT_PHOTOS`): photos no attack was ever developed, tuned or tested on as private
images (they served as public patches only, which no attack has to recover).  Held-out releases
swap the roles: held-out private crops, the development photos as patches.  Only
``benchmarks/bench_attacks.py --heldout`` reads the held-out half, to measure.

A third set stands in for what makes the held-out half hard while the attack is developed
(:func:`texture_private`): synthetic colour textures, one per class, whose crops are alike as
crops of brick or gravel are, drawn from a seed, never from a held-out photo.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from challenge.imageset import ImageSet

# colour photos first; each photo is one class of the private set
PRIVATE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
                  "retina.jpg", "ihc.png", "camera.png", "coins.png", "page.png")
PUBLIC_PHOTOS = ("brick.png", "grass.png", "gravel.png", "moon.png", "text.png", "hubble_deep_field.jpg",
                 "color.png", "horse.png", "clock_motion.png", "cell.png")
HELDOUT_PHOTOS = PUBLIC_PHOTOS  # the other usable photos skimage ships give no 10 distinct crops (microaneurysms: none)
DISTINCT = 0.8  # a private crop is kept only if it correlates less than this with every earlier one


def _photo(name: str) -> np.ndarray:
    import skimage

    with Image.open(Path(skimage.__file__).parent / "data" / name) as im:
        return np.asarray(im.convert("RGB"))


def texture(seed: int, size: int = 384) -> np.ndarray:
    """uint8 (size, size, 3): a texture, white noise band-passed around a random frequency (0.003
    to 0.1 cycles per pixel) and orientation, in random colours or grey, of low to medium contrast."""
    rng = np.random.default_rng(seed)
    fy, fx = np.fft.fftfreq(size)[:, None], np.fft.rfftfreq(size)[None, :]
    radius, angle = np.maximum(np.hypot(fy, fx), 1 / size), np.arctan2(fy, fx)
    centre, width = np.exp(rng.uniform(np.log(0.003), np.log(0.1))), rng.uniform(0.3, 1.0)
    band = np.exp(-np.log(radius / centre) ** 2 / (2 * width**2) + rng.uniform(0, 3) * (np.cos(2 * (angle - rng.uniform(0, np.pi))) - 1))
    grey = rng.random() < 0.5
    noise = rng.standard_normal((1 if grey else 3, size, size))
    t = np.stack([np.fft.irfft2(np.fft.rfft2(v) * band, s=(size, size)) for v in noise], axis=-1)
    t = np.repeat(t, 3, axis=-1) if grey else t @ (np.eye(3) + 0.5 * rng.standard_normal((3, 3)))
    t = (t - t.mean()) / t.std()
    return np.clip(rng.uniform(60, 190, 1 if grey else 3) + rng.uniform(20, 45) * t, 0, 255).astype(np.uint8)


def _crops(photo: np.ndarray, count: int, rng: np.random.Generator, distinct: bool) -> np.ndarray:
    """``count`` square crops of a random side between 1/8 and 1/3 of the short side, resized to
    32x32; flat crops are skipped and, if ``distinct``, near-copies of earlier crops too (a photo
    of mostly sky would otherwise give a set of identical images no attack could tell apart)."""
    h, w = photo.shape[:2]
    out, flat = [], []
    for _ in range(1000 * count):
        if len(out) == count:
            break
        side = int(rng.integers(min(h, w) // 8, min(h, w) // 3))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = np.asarray(Image.fromarray(photo[y : y + side, x : x + side]).resize((32, 32), Image.Resampling.LANCZOS))
        v = crop.astype(np.float64).ravel()
        if v.std() < 20:
            continue
        v = (v - v.mean()) / np.linalg.norm(v - v.mean())
        if distinct and flat and max(abs(float(v @ f)) for f in flat) > DISTINCT:
            continue
        out.append(crop)
        flat.append(v)
    if len(out) < count:
        raise RuntimeError(f"only {len(out)} usable crops of {count}")
    return np.stack(out)


def _imageset(names, per_photo: int, seed: int, labelled: bool, load=_photo) -> ImageSet:
    rng = np.random.default_rng(seed)
    images = np.concatenate([_crops(load(name), per_photo, rng, labelled) for name in names])
    labels = np.repeat(np.arange(len(names)), per_photo) if labelled else np.full(len(images), -1)
    origin = np.stack([np.zeros(len(images), np.int64), np.arange(len(images), dtype=np.int64)], axis=1)
    return ImageSet(images, labels=labels.astype(np.int64), class_names=tuple(names) if labelled else (),
                    source_files=("skimage-data",), origin=origin)


def natural_private(per_photo: int = 10, seed: int = 0) -> ImageSet:
    """``10 * per_photo`` labelled crops, one class per photo."""
    return _imageset(PRIVATE_PHOTOS, per_photo, seed, labelled=True)


def natural_public(per_photo: int = 256, seed: int = 1) -> ImageSet:
    """``10 * per_photo`` unlabelled crops of other photos: the public patches."""
    return _imageset(PUBLIC_PHOTOS, per_photo, seed, labelled=False)


def heldout_private(per_photo: int = 10, seed: int = 0) -> ImageSet:
    """``10 * per_photo`` labelled crops of the held-out photos, one class per photo (measure only)."""
    return _imageset(HELDOUT_PHOTOS, per_photo, seed, labelled=True)


def heldout_public(per_photo: int = 256, seed: int = 1) -> ImageSet:
    """Public patches for held-out releases: crops of the development photos."""
    return _imageset(PRIVATE_PHOTOS, per_photo, seed, labelled=False)


def texture_private(per_photo: int = 10, seed: int = 0) -> ImageSet:
    """``10 * per_photo`` labelled crops of 10 synthetic textures (:func:`texture`, seeds 0 to 9),
    one class per texture: a development set of alike images, released with the development
    photos as patches (:func:`heldout_public`), as the held-out photos are."""
    return _imageset(tuple(f"texture-{t}" for t in range(10)), per_photo, seed, labelled=True,
                     load=lambda name: texture(int(name.rsplit("-", 1)[1])))
