"""Render the default data that ``instahide generate`` uses when no data set is named.

Everything is drawn procedurally from a fixed seed, so the shipped files carry no third-party
images or licences and anyone can rebuild them bit for bit (same numpy and Pillow versions):

    python data/make_default_data.py

It writes ``generator/data/``, where the package reads them (so they ship in the wheel):

* ``private.npz``: 200 labelled 32x32 RGB images, 20 per class, of 10 simple object classes.
* ``public.npz``: 2560 unlabelled 32x32 patches cropped from cluttered scenes (the role played
  by ImageNet patches in the 2020 challenge).

Images are rendered at 4x and downsampled with LANCZOS so that edges are anti-aliased and the
statistics look like photographs of objects (smooth regions, sharp edges), not noise.
"""

from __future__ import annotations

import hashlib
import io
import math
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SEED_PRIVATE = 20200101  # fixed, public: the data is not secret, only reproducible
SEED_PUBLIC = 20200102
SIZE = 32
SCALE = 4  # render private images at SCALE*size, then LANCZOS down: anti-aliased edges
SCENE_SCALE = 2  # scenes are many and cluttered: 2x keeps edges anti-aliased at a quarter the cost
CLASS_NAMES = (
    "disc", "square", "triangle", "ring", "star",
    "cross", "stripes", "checkerboard", "crescent", "house",
)
PER_CLASS = 20
N_PATCHES = 2560
SCENE_SIZE = 40  # scene short side before cropping, like the 2020 challenge's ImageNet patches
# A patch is kept only if it is not flat: pixel std (all channels) and mean luma gradient
# magnitude |dx| + |dy| (in 0..255 units) must both reach these floors.
MIN_PATCH_STD = 12.0
MIN_PATCH_GRAD = 4.0

OUT = Path(__file__).resolve().parent.parent / "generator" / "data"  # package data: ships in the wheel


def _grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates of an n x n canvas as broadcastable (n, 1) and (1, n) arrays."""
    c = np.arange(n, dtype=np.float32) + np.float32(0.5)
    return c[:, None], c[None, :]


def _smooth_noise(rng: np.random.Generator, n: int, cells: int, channels: int = 3) -> np.ndarray:
    """Low-frequency texture: a coarse random grid upsampled bicubically (no pixel-level noise)."""
    coarse = rng.normal(0.0, 1.0, (cells, cells, channels)).astype(np.float32)
    out = np.empty((n, n, channels), np.float32)
    for c in range(channels):
        out[..., c] = np.asarray(Image.fromarray(coarse[..., c], "F").resize((n, n), Image.BICUBIC))
    return out


def _gradient(rng: np.random.Generator, n: int, c0: np.ndarray, c1: np.ndarray, angle: float) -> np.ndarray:
    """Linear colour ramp from c0 to c1 along direction ``angle``."""
    y, x = _grid(n)
    t = ((x - n / 2) * np.float32(math.cos(angle)) + (y - n / 2) * np.float32(math.sin(angle)))
    t = np.clip(t / np.float32(n * 0.75) + np.float32(0.5), 0.0, 1.0)[..., None]
    return c0.astype(np.float32) + (c1 - c0).astype(np.float32) * t


def _background(rng: np.random.Generator, n: int) -> np.ndarray:
    """Smooth gradient plus a gentle low-frequency texture."""
    c0, c1 = rng.uniform(20, 235, (2, 3))
    img = _gradient(rng, n, c0, c1, rng.uniform(0, 2 * math.pi))
    img += _smooth_noise(rng, n, int(rng.integers(3, 7))) * rng.uniform(4, 16)
    return img


def _rotate(points: list[tuple[float, float]], angle: float, cx: float, cy: float) -> list[tuple[float, float]]:
    ca, sa = math.cos(angle), math.sin(angle)
    return [(cx + px * ca - py * sa, cy + px * sa + py * ca) for px, py in points]


def _regular(k: int, radii: list[float]) -> list[tuple[float, float]]:
    """Polygon with k*len(radii) vertices cycling through radii (star: two radii)."""
    m = k * len(radii)
    return [
        (radii[i % len(radii)] * math.cos(2 * math.pi * i / m - math.pi / 2),
         radii[i % len(radii)] * math.sin(2 * math.pi * i / m - math.pi / 2))
        for i in range(m)
    ]


def _shape_masks(kind: str, n: int, cx: float, cy: float, r: float, angle: float,
                 rng: np.random.Generator) -> tuple[Image.Image, Image.Image | None]:
    """Binary mask ('L', 0/255) of a shape, plus an optional darker detail mask (house door)."""
    mask = Image.new("L", (n, n), 0)
    d = ImageDraw.Draw(mask)
    detail = None
    if kind == "disc":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    elif kind in ("square", "stripes", "checkerboard"):
        s = 0.78 * r
        d.polygon(_rotate([(-s, -s), (s, -s), (s, s), (-s, s)], angle, cx, cy), fill=255)
    elif kind == "triangle":
        d.polygon(_rotate(_regular(3, [r]), angle, cx, cy), fill=255)
    elif kind == "ring":
        ri = r * rng.uniform(0.45, 0.62)
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        d.ellipse([cx - ri, cy - ri, cx + ri, cy + ri], fill=0)
    elif kind == "star":
        d.polygon(_rotate(_regular(5, [r, r * rng.uniform(0.38, 0.5)]), angle, cx, cy), fill=255)
    elif kind == "cross":
        a = r * rng.uniform(0.26, 0.34)
        pts = [(-a, -r), (a, -r), (a, -a), (r, -a), (r, a), (a, a),
               (a, r), (-a, r), (-a, a), (-r, a), (-r, -a), (-a, -a)]
        d.polygon(_rotate(pts, angle, cx, cy), fill=255)
    elif kind == "crescent":
        off, ri = r * rng.uniform(0.38, 0.55), r * rng.uniform(0.8, 0.95)
        ox, oy = cx + off * math.cos(angle), cy + off * math.sin(angle)
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        d.ellipse([ox - ri, oy - ri, ox + ri, oy + ri], fill=0)
    elif kind == "house":
        tilt = angle * 0.12  # houses stay mostly upright, so they still read as houses
        body = [(-0.72 * r, -0.05 * r), (0.72 * r, -0.05 * r), (0.72 * r, 0.85 * r), (-0.72 * r, 0.85 * r)]
        roof = [(-0.95 * r, -0.02 * r), (0.0, -0.9 * r), (0.95 * r, -0.02 * r)]
        d.polygon(_rotate(body, tilt, cx, cy), fill=255)
        d.polygon(_rotate(roof, tilt, cx, cy), fill=255)
        detail = Image.new("L", (n, n), 0)
        door = [(-0.18 * r, 0.35 * r), (0.18 * r, 0.35 * r), (0.18 * r, 0.85 * r), (-0.18 * r, 0.85 * r)]
        ImageDraw.Draw(detail).polygon(_rotate(door, tilt, cx, cy), fill=255)
    else:
        raise ValueError(f"unknown shape {kind!r}")
    return mask, detail


def _contrasting_colour(rng: np.random.Generator, against: np.ndarray, min_dist: float = 110.0) -> np.ndarray:
    """A random colour far enough from ``against`` that the object stands out."""
    for _ in range(50):
        c = rng.uniform(0, 255, 3)
        if np.linalg.norm(c - against) >= min_dist:
            return c
    return 255.0 - against


def _paint(img: np.ndarray, mask: Image.Image, layer_fn, shadow: tuple[float, float] | None) -> None:
    """Composite a shape into ``img`` in place: optional soft drop shadow, then the fill."""
    n = img.shape[0]
    if shadow is not None:
        sh = Image.new("L", (n, n), 0)
        sh.paste(mask, (int(round(shadow[0])), int(round(shadow[1]))))
        sh = sh.filter(ImageFilter.GaussianBlur(n / 40))
        box = sh.getbbox()
        if box:
            x0, y0, x1, y1 = box
            a = np.asarray(sh.crop(box), np.float32)[..., None] / 255.0
            img[y0:y1, x0:x1] *= 1.0 - 0.4 * a
    box = mask.getbbox()
    if not box:
        return
    x0, y0, x1, y1 = box
    a = np.asarray(mask.crop(box), np.float32)[..., None] / 255.0
    layer = layer_fn(y0, y1, x0, x1)
    img[y0:y1, x0:x1] = img[y0:y1, x0:x1] * (1.0 - a) + layer * a


def _fill(kind: str, colour: np.ndarray, colour2: np.ndarray, cx: float, cy: float, r: float,
          angle: float, light: float, strength: float, period: float):
    """Fill layer for a shape: shaded solid colour, or a shaded stripe / checker pattern."""
    cl, sl = math.cos(light), math.sin(light)
    ca, sa = math.cos(angle), math.sin(angle)

    def layer(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        y = np.arange(y0, y1, dtype=np.float64)[:, None] + 0.5 - cy
        x = np.arange(x0, x1, dtype=np.float64)[None, :] + 0.5 - cx
        shade = 1.0 + strength * (x * cl + y * sl) / r  # light from one side: a 3-D look
        if kind in ("stripes", "checkerboard"):
            u = (x * ca + y * sa) / period
            v = (-x * sa + y * ca) / period
            on = np.floor(u) % 2 if kind == "stripes" else (np.floor(u) + np.floor(v)) % 2
            base = np.where(on[..., None] > 0.5, colour, colour2)
        else:
            base = np.broadcast_to(colour, (y1 - y0, x1 - x0, 3))
        return (base * shade[..., None]).astype(np.float32)

    return layer


def _to_uint8(img: np.ndarray, size: int) -> np.ndarray:
    """Round to uint8 and LANCZOS-downsample to size x size."""
    big = Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8), "RGB")
    return np.asarray(big.resize((size, size), Image.LANCZOS))


def _render_object(rng: np.random.Generator, label: int) -> np.ndarray:
    """One private image: a single object of class ``label`` on a textured background."""
    n = SIZE * SCALE
    kind = CLASS_NAMES[label]
    img = _background(rng, n)
    r = rng.uniform(0.24, 0.37) * n
    margin = r * (0.8 if kind in ("square", "stripes", "checkerboard") else 1.0) + 3
    cx, cy = rng.uniform(margin, n - margin, 2)
    angle = rng.uniform(0, 2 * math.pi)
    mask, detail = _shape_masks(kind, n, cx, cy, r, angle, rng)
    local = img[int(cy), int(cx)]
    colour = _contrasting_colour(rng, local)
    colour2 = _contrasting_colour(rng, colour, 90.0)
    cells = rng.integers(3, 5)  # 3-4 bands or squares across: readable at 32 px
    period = 2 * 0.78 * r / cells
    light = rng.uniform(0, 2 * math.pi)
    shadow = (rng.uniform(-1, 1) * n / 25, rng.uniform(-1, 1) * n / 25)
    _paint(img, mask, _fill(kind, colour, colour2, cx, cy, r, angle, light, rng.uniform(0.12, 0.3), period), shadow)
    if detail is not None:
        _paint(img, detail, _fill("solid", colour * 0.45, colour, cx, cy, r, angle, light, 0.1, 1.0), None)
    return _to_uint8(img, SIZE)


def make_private() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (images uint8 (200,32,32,3), labels int64 (200,), class_names '<U' (10,))."""
    rng = np.random.default_rng(SEED_PRIVATE)
    labels = np.tile(np.arange(len(CLASS_NAMES), dtype=np.int64), PER_CLASS)
    labels = labels[rng.permutation(len(labels))]  # interleaved, as a real data set would be
    images = np.stack([_render_object(rng, int(k)) for k in labels])
    return images, labels, np.array(CLASS_NAMES, dtype=np.str_)


def _render_scene(rng: np.random.Generator) -> np.ndarray:
    """A cluttered scene: sky/ground gradients, hills, many overlapping shaded shapes."""
    n = SCENE_SIZE * SCENE_SCALE
    y, x = _grid(n)
    sky = _gradient(rng, n, *rng.uniform(60, 255, (2, 3)), math.pi / 2 + rng.uniform(-0.3, 0.3))
    ground = _gradient(rng, n, *rng.uniform(10, 200, (2, 3)), math.pi / 2 + rng.uniform(-0.5, 0.5))
    ground += _smooth_noise(rng, n, int(rng.integers(4, 10))) * rng.uniform(8, 25)
    horizon = rng.uniform(-0.2, 1.0) * n + (x - n / 2) * rng.uniform(-0.4, 0.4)
    below = (y > horizon)[..., None]
    img = np.where(below, ground, sky).astype(np.float32)
    img += _smooth_noise(rng, n, int(rng.integers(3, 6))) * rng.uniform(3, 10)

    kinds = CLASS_NAMES
    for _ in range(int(rng.integers(6, 16))):
        kind = kinds[int(rng.integers(len(kinds)))]
        r = float(np.exp(rng.uniform(math.log(0.05 * n), math.log(0.45 * n))))
        cx, cy = rng.uniform(-0.1 * n, 1.1 * n, 2)
        angle = rng.uniform(0, 2 * math.pi)
        mask, detail = _shape_masks(kind, n, cx, cy, r, angle, rng)
        local = img[int(np.clip(cy, 0, n - 1)), int(np.clip(cx, 0, n - 1))]
        colour = _contrasting_colour(rng, local, 70.0)
        colour2 = _contrasting_colour(rng, colour, 70.0)
        period = max(2 * r / rng.uniform(2, 6), 0.1 * n)
        light = rng.uniform(0, 2 * math.pi)
        shadow = (rng.uniform(-1, 1) * n / 25, rng.uniform(-1, 1) * n / 25) if rng.random() < 0.6 else None
        _paint(img, mask, _fill(kind, colour, colour2, cx, cy, r, angle, light, rng.uniform(0.05, 0.35), period),
               shadow)
        if detail is not None:
            _paint(img, detail, _fill("solid", colour * 0.45, colour, cx, cy, r, angle, light, 0.1, 1.0), None)
    return _to_uint8(img, SCENE_SIZE)


def patch_is_textured(patch: np.ndarray) -> bool:
    """The keep rule for public patches: not flat by both pixel std and luma edge energy."""
    p = patch.astype(np.float64)
    luma = p @ np.array([0.299, 0.587, 0.114])
    grad = np.abs(np.diff(luma, axis=0)).mean() + np.abs(np.diff(luma, axis=1)).mean()
    return bool(p.std() >= MIN_PATCH_STD and grad >= MIN_PATCH_GRAD)


def make_public() -> np.ndarray:
    """Return patches uint8 (2560, 32, 32, 3): random 32x32 crops of 40x40 scenes, flat ones dropped."""
    rng = np.random.default_rng(SEED_PUBLIC)
    patches: list[np.ndarray] = []
    seen: set[bytes] = set()
    while len(patches) < N_PATCHES:
        scene = _render_scene(rng)
        oy, ox = rng.integers(0, SCENE_SIZE - SIZE + 1, 2)
        patch = np.ascontiguousarray(scene[oy:oy + SIZE, ox:ox + SIZE])
        key = patch.tobytes()
        if patch_is_textured(patch) and key not in seen:
            seen.add(key)
            patches.append(patch)
    return np.stack(patches)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """np.savez_compressed, then pin the zip entry timestamps so the file hash is reproducible.

    numpy stamps each member with the current time; rewriting with a fixed date (and the same
    member bytes) makes a rerun give the same file, given the same numpy and zlib.
    """
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    buf.seek(0)
    with zipfile.ZipFile(buf) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for name in src.namelist():
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            dst.writestr(info, src.read(name), compresslevel=9)


def main() -> None:
    images, labels, class_names = make_private()
    private, public = OUT / "private.npz", OUT / "public.npz"
    save_npz(private, images=images, labels=labels, class_names=class_names)
    save_npz(public, patches=make_public())
    for path in (private, public):
        print(f"{_sha256(path)}  {path.name}  ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
