"""Loaders beyond 32x32x3: MNIST IDX files, downsampled-ImageNet npz batches, image folders at
any size and in grey, parallel folder decoding, patch banks at the release's shape.

Every file is written here in its documented on-disk format from arrays the test holds, and the
loader's output is compared with those arrays (or with Pillow applied as the rule says).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import generator.images as gi
import generator.sources.folder as gf
from challenge.imageset import ImageSet
from challenge.params import Params
from generator.patches import build_patch_bank, count_keypoints, crop_positions, load_patch_bank, load_resized
from generator.sources import SourceError, detect_layout, load_private, load_public, load_sources
from tests.helpers import run_cli
from tests.naive import count_keypoints_reference
from tests.test_patches import make_public, natural_image

RNG = np.random.default_rng(2812)


# ---------------------------------------------------------------- ImageSet


def _set(images):
    n = len(images)
    return ImageSet(images, labels=np.zeros(n, np.int64), class_names=("a",), source_files=("f",),
                    origin=np.zeros((n, 2), np.int64))


def test_imageset_takes_any_shape_grey_or_rgb_and_names_the_shape_it_expects():
    for shape in ((28, 28, 1), (64, 64, 3), (5, 9, 3), (1, 1, 1)):
        assert _set(np.zeros((2, *shape), np.uint8)).image_shape == shape
    for bad in (np.zeros((2, 8, 8, 2), np.uint8), np.zeros((2, 8, 8), np.uint8), np.zeros((2, 8, 8, 3), np.int16),
                np.zeros((2, 0, 8, 3), np.uint8)):
        with pytest.raises(ValueError, match=r"uint8 \(N, H, W, C\) with C = 1 \(grey\) or 3 \(RGB\) and H, W >= 1"):
            _set(bad)


def test_fingerprint_of_32x32x3_sets_is_unchanged_and_other_shapes_hash_their_shape():
    images = RNG.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    s = _set(images)
    h = hashlib.sha256(b"instahide-imageset-v1\0")  # the definition releases recorded
    h.update(np.int64(3).tobytes() + images.tobytes() + s.labels.astype("<i8").tobytes())
    assert s.fingerprint() == h.hexdigest()
    flat = images.reshape(3, 32, 96, 1)  # the same bytes in another shape
    assert _set(flat).fingerprint() != s.fingerprint()
    assert _set(images.reshape(3, 96, 32, 1)).fingerprint() != _set(flat).fingerprint()


# ---------------------------------------------------------------- MNIST IDX


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file as the MNIST page documents it: 0, 0, type 0x08, ndim, big-endian sizes, data."""
    return bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_mnist(d: Path, images, labels, prefix="train", gz=False):
    d.mkdir(parents=True, exist_ok=True)
    for kind, data in (("images-idx3", images), ("labels-idx1", labels)):
        raw = idx_bytes(np.asarray(data, np.uint8))
        name = f"{prefix}-{kind}-ubyte"
        if gz:
            (d / f"{name}.gz").write_bytes(gzip.compress(raw))
        else:
            (d / name).write_bytes(raw)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_plain_and_gzipped(tmp_path, gz):
    images = RNG.integers(0, 256, (9, 28, 28), dtype=np.uint8)
    labels = np.array([0, 1, 2, 3, 4, 5, 6, 7, 9])
    write_mnist(tmp_path, images, labels, gz=gz)
    write_mnist(tmp_path, images[:2, :, ::-1], [5, 3], prefix="t10k", gz=gz)
    assert detect_layout(tmp_path)[0] == "mnist-idx"
    s = load_private(tmp_path)
    assert s.images.shape == (9, 28, 28, 1) and np.array_equal(s.images[..., 0], images)
    assert s.labels.tolist() == labels.tolist() and s.class_names == tuple("0123456789")
    suffix = ".gz" if gz else ""
    assert s.source_files == (f"train-images-idx3-ubyte{suffix}", f"train-labels-idx1-ubyte{suffix}")
    assert s.origin[4].tolist() == [0, 4]
    t = load_private(tmp_path, split="test")
    assert np.array_equal(t.images[..., 0], images[:2, :, ::-1]) and t.labels.tolist() == [5, 3]


def test_mnist_resized_stays_grey_by_the_folder_rule(tmp_path):
    images = RNG.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    write_mnist(tmp_path, images, [1, 2, 3])
    s = load_private(tmp_path, size=32)
    assert s.images.shape == (3, 32, 32, 1)
    for got, img in zip(s.images, images):  # square: straight LANCZOS to 32x32
        assert np.array_equal(got[..., 0], np.asarray(Image.fromarray(img).resize((32, 32), Image.Resampling.LANCZOS)))
    assert load_private(tmp_path, size=28).fingerprint() == load_private(tmp_path).fingerprint()
    assert load_private(tmp_path, grey=True).image_shape == (28, 28, 1)  # grey already: nothing to do


def _mnist_dir(tmp_path, image_bytes: bytes, gz=False) -> Path:
    d = tmp_path / "m"
    d.mkdir()
    name = "train-images-idx3-ubyte"
    if gz:
        (d / f"{name}.gz").write_bytes(image_bytes)
    else:
        (d / name).write_bytes(image_bytes)
    (d / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(2, np.uint8)))
    return d


GOOD = idx_bytes(np.zeros((2, 28, 28), np.uint8))


@pytest.mark.parametrize("raw, gz, message", [
    (b"\x00\x00\x08\x01" + GOOD[4:], False, r"magic: expected 0x00000803 \(unsigned bytes, 3 dimensions\), got 0x00000801"),
    (gzip.compress(b"\x00\x00\x0d\x03" + GOOD[4:]), True, r"magic: expected 0x00000803 .* got 0x00000d03"),
    (GOOD[:4] + struct.pack(">3I", 3, 28, 28) + GOOD[16:], False,
     r"1,584 bytes; its header claims 3x28x28 values, 2,368 bytes with the header"),
    (GOOD[:4] + struct.pack(">3I", 2, 0, 28) + GOOD[16:], False, r"dimensions \(2, 0, 28\): expected every size >= 1"),
    (GOOD[:-5], False, r"1,579 bytes; its header claims 2x28x28"),
    (gzip.compress(GOOD)[:-30], True, r"unreadable \(Compressed file ended"),
    (gzip.compress(GOOD[:-100]), True, r"1,468 bytes of data, its header \(2x28x28\) claims 1,568 \(truncated\?\)"),
    (GOOD[:9], False, r"9 bytes of data, an IDX header needs 16 \(truncated\?\)"),
    (b"not gzip at all", True, r"unreadable \(Not a gzipped file"),
])
def test_hostile_idx_files_are_one_error_naming_the_file(tmp_path, raw, gz, message):
    d = _mnist_dir(tmp_path, raw, gz)
    with pytest.raises(SourceError, match=r"train-images-idx3-ubyte(\.gz)?: " + f"(.*{message})"):
        load_private(d)


def test_gzip_bomb_is_inflated_only_up_to_its_header_claim(tmp_path, monkeypatch):
    bomb = gzip.compress(GOOD + bytes(64 << 20), compresslevel=9)  # 64 MiB more than the header says
    assert len(bomb) < 100_000
    d = _mnist_dir(tmp_path, bomb, gz=True)
    inflated = []
    real = gzip.GzipFile.read

    def counting_read(self, size=-1):
        out = real(self, size)
        inflated.append(len(out))
        return out

    monkeypatch.setattr(gzip.GzipFile, "read", counting_read)
    with pytest.raises(SourceError, match=r"more data than its header \(2x28x28\) claims; refused .*gzip bomb"):
        load_private(d)
    assert sum(inflated) == len(GOOD) + 1  # header, data, then one byte too many: no further
    monkeypatch.setattr(gi, "MAX_ARRAY_BYTES", 1000)
    with pytest.raises(SourceError, match=r"header claims 2x28x28 = 1,568 bytes, more than the 1,000 allowed"):
        load_private(d)


def test_mnist_labels_must_match_images(tmp_path):
    write_mnist(tmp_path, np.zeros((3, 28, 28), np.uint8), [1, 2])
    with pytest.raises(SourceError, match=r"train-labels-idx1-ubyte: labels: expected 3 .* got 2"):
        load_private(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(SourceError, match=r"train-labels-idx1-ubyte: missing"):
        load_private(tmp_path)


# ---------------------------------------------------------------- downsampled ImageNet


def write_imagenet(path: Path, images: np.ndarray, labels, **extra):
    """A batch as the Imagenet32/64 npz files hold it: data rows of R, G, B planes, 1-based labels."""
    data = np.concatenate([images[..., c].reshape(len(images), -1) for c in range(3)], axis=1)
    np.savez(path, data=data, labels=np.asarray(labels), **extra)


def test_imagenet32_and_64_npz_batches(tmp_path):
    a = RNG.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    b = RNG.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    write_imagenet(tmp_path / "train_data_batch_1.npz", a, [1, 1000, 7, 2], mean=np.zeros(3072))
    write_imagenet(tmp_path / "train_data_batch_2.npz", b, [3, 4, 5])
    write_imagenet(tmp_path / "val_data.npz", b[:1], [9])
    assert detect_layout(tmp_path)[0] == "imagenet-npz"
    s = load_private(tmp_path)
    assert np.array_equal(s.images, np.concatenate([a, b])) and s.labels.tolist() == [0, 999, 6, 1, 2, 3, 4]
    assert len(s.class_names) == 1000 and s.class_names[999] == "1000"
    assert s.source_files == ("train_data_batch_1.npz", "train_data_batch_2.npz") and s.origin[5].tolist() == [1, 1]
    assert load_private(tmp_path, split="test").labels.tolist() == [8]
    d64 = tmp_path / "i64"
    d64.mkdir()
    c = RNG.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    write_imagenet(d64 / "val_data.npz", c, [1, 2])
    assert np.array_equal(load_private(d64, split="test").images, c)
    small = load_private(d64, split="test", size=28)
    assert small.images.shape == (2, 28, 28, 3)
    expected = np.asarray(Image.fromarray(c[1]).resize((28, 28), Image.Resampling.LANCZOS))
    assert np.array_equal(small.images[1], expected)


def test_hostile_imagenet_batches(tmp_path):
    imgs = np.zeros((2, 8, 8, 3), np.uint8)
    f = tmp_path / "train_data_batch_1.npz"
    np.savez(f, data=np.zeros((2, 192), np.uint8), label=np.array([1, 2]))
    with pytest.raises(SourceError, match=r"train_data_batch_1\.npz: labels: missing array \(has data, label\)"):
        load_private(tmp_path)
    write_imagenet(f, imgs, [0, 2])
    with pytest.raises(SourceError, match=r"train_data_batch_1\.npz: record 0: labels: expected 1\.\.1000, got 0"):
        load_private(tmp_path)
    np.savez(f, data=np.zeros((2, 100), np.uint8), labels=np.array([1, 2]))
    with pytest.raises(SourceError, match=r"data: expected \(N, 3\*S\*S\) .* got \(2, 100\)"):
        load_private(tmp_path)
    write_imagenet(f, imgs, [1, 2])
    write_imagenet(tmp_path / "train_data_batch_2.npz", np.zeros((1, 16, 16, 3), np.uint8), [1])
    with pytest.raises(SourceError, match=r"train_data_batch_2\.npz: data: expected .* the same S in every file"):
        load_private(tmp_path)
    write_imagenet(tmp_path / "train_data_batch_3.npz", imgs, [1, 2])
    (tmp_path / "train_data_batch_2.npz").unlink()
    with pytest.raises(SourceError, match=r"train_data_batch_N\.npz 2 is missing"):
        load_private(tmp_path)
    (tmp_path / "train_data_batch_3.npz").unlink()
    np.savez(f, data=np.zeros((2, 192), np.float32), labels=np.array([1, 2]))
    with pytest.raises(SourceError, match=r"data: expected uint8 \(2, 192\), got float32"):
        load_private(tmp_path)
    with pytest.raises(SourceError, match=r"grey: this set is RGB \(8x8x3\)"):
        write_imagenet(f, imgs, [1, 2])
        load_private(tmp_path, grey=True)


# ---------------------------------------------------------------- image folders at any size


def expected(im: Image.Image, size: int, grey: bool) -> np.ndarray:
    """The documented folder rule stated independently: 8-bit RGB or L, short side to ``size`` by
    LANCZOS (long side rounded half up), centre crop."""
    im = im.convert("L" if grey else "RGB")
    w, h = im.size
    if (w, h) != (size, size):
        nw, nh = (size, math.floor(h * size / w + 0.5)) if w <= h else (math.floor(w * size / h + 0.5), size)
        im = im.resize((nw, nh), Image.Resampling.LANCZOS)
    w, h = im.size
    a = np.asarray(im)[(h - size) // 2:(h - size) // 2 + size, (w - size) // 2:(w - size) // 2 + size]
    return a[..., None] if grey else a


def write_folder(root: Path, n_per_class: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    paths = []
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(n_per_class):
            w, h = int(rng.integers(20, 90)), int(rng.integers(20, 90))
            path = root / c / f"{i:04d}.{'png' if i % 3 else 'jpg'}"
            natural_image(rng, w, h).save(path)
            paths.append(path)
    return paths


@pytest.mark.parametrize("size, grey", [(28, True), (28, False), (64, False), (64, True)])
def test_image_folder_at_any_size_rgb_or_grey(tmp_path, size, grey):
    paths = write_folder(tmp_path, 3)
    s = load_private(tmp_path, size=size, grey=grey, workers=1)
    assert s.image_shape == (size, size, 1 if grey else 3)
    for got, path in zip(s.images, paths):
        with Image.open(path) as im:
            assert np.array_equal(got, expected(im, size, grey))
    assert s.labels.tolist() == [0, 0, 0, 1, 1, 1] and s.class_names == ("cat", "dog")
    assert s.notes.get("converted_RGB", 0) == (6 if grey else 0)


def test_folder_decoded_by_workers_is_the_same_bytes_in_the_same_order(tmp_path, monkeypatch):
    write_folder(tmp_path, 20, seed=3)
    (tmp_path / "dog" / "0005.png").write_bytes(b"\x89PNG broken")
    monkeypatch.setattr(gf, "PARALLEL_FROM", 8)
    monkeypatch.setattr(gf, "FOLDER_CHUNK", 3)  # chunks that do not divide the classes
    one = load_private(tmp_path, size=28, workers=1)
    two = load_private(tmp_path, size=28, workers=2)
    assert one.fingerprint() == two.fingerprint() and one.source_files == two.source_files
    assert np.array_equal(one.origin, two.origin) and one.notes == two.notes
    assert one.notes["skipped_unreadable"] == 1 and len(one) == 39 and "dog/0005.png" not in one.source_files


# ---------------------------------------------------------------- patch banks at the release's shape

SEED = b"pinned"


def store_digest(bank: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in bank.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(bank)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def test_bank_at_32_keeps_the_bytes_it_had(tmp_path):
    """Digest of a bank built by the code before banks had other shapes (same zarr version)."""
    make_public(tmp_path / "pub", n=6)
    build_patch_bank(tmp_path / "pub", tmp_path / "bank", seed=SEED, workers=1, min_keypoints=3)
    assert store_digest(tmp_path / "bank") == "af8caa64a12e9ee35fee0437ad53014998909c7055bba34460f6d5280cdf6463"


def test_grey_bank_at_28_follows_the_scaled_rule_whatever_the_workers(tmp_path):
    pub = tmp_path / "pub"
    make_public(pub, n=8)
    build_patch_bank(pub, tmp_path / "a", seed=SEED, workers=1, min_keypoints=1, patch_size=28, grey=True)
    build_patch_bank(pub, tmp_path / "b", seed=SEED, workers=2, min_keypoints=1, patch_size=28, grey=True,
                     batch_files=3, chunk_files=2)
    assert store_digest(tmp_path / "a") == store_digest(tmp_path / "b")
    bank = load_patch_bank(tmp_path / "a")
    assert bank.image_shape == (28, 28, 1) and len(bank) > 5
    for img, (f, x0, y0, x1, y1) in zip(bank.images, bank.origin):
        src = load_resized(pub / bank.source_files[f], 28, grey=True)[0]
        assert min(src.shape[:2]) == 35 and src.shape[2] == 1  # round_half_up(40 * 28 / 32)
        assert (x1 - x0, y1 - y0) == (28, 28) and np.array_equal(img, src[y0:y1, x0:x1])
        assert (x0, y0) in crop_positions(SEED, bank.source_files[f], width=src.shape[1], height=src.shape[0],
                                          k=2, patch_size=28)
    with pytest.raises(SourceError, match=r"patch size: expected 7\.\.512 px, got 6"):
        build_patch_bank(pub, tmp_path / "c", seed=SEED, workers=1, patch_size=6)


def test_keypoint_counter_equals_its_twin_on_grey_and_larger_patches(public_bank):
    rng = np.random.default_rng(1)
    rgb = public_bank.images[rng.choice(len(public_bank), 6, replace=False)]
    grey = np.asarray([np.asarray(Image.fromarray(p).convert("L").resize((28, 28))) for p in rgb])[..., None]
    big = np.asarray([np.asarray(Image.fromarray(p).resize((64, 64), Image.Resampling.BICUBIC)) for p in rgb[:3]])
    for patches in (grey, big):
        counts = count_keypoints(patches)
        assert counts.sum() > 0
        np.testing.assert_array_equal(counts, count_keypoints_reference(patches))


def test_sources_give_one_shape_to_private_and_public(tmp_path):
    write_mnist(tmp_path / "mnist", RNG.integers(0, 256, (6, 28, 28), dtype=np.uint8), [0, 1, 2, 0, 1, 2])
    make_public(tmp_path / "photos", n=6)
    cross = Params(mode="cross")
    private, public = load_sources(tmp_path / "mnist", tmp_path / "photos", cross)
    assert private.image_shape == public.image_shape == (28, 28, 1)
    private, public = load_sources(tmp_path / "mnist", tmp_path / "photos", cross, size=40)
    assert private.image_shape == public.image_shape == (40, 40, 1)
    with pytest.raises(SourceError, match=r"the embedded public patches: patches are 32x32x3, the private images "
                                          r"28x28x1; .*'instahide patches DIR --out bank\.zarr --size 28 --grey'"):
        load_sources(tmp_path / "mnist", None, cross)
    assert load_sources(tmp_path / "mnist", None, Params(mode="inside", k=2, k_private=2))[1] is None
    build_patch_bank(tmp_path / "photos", tmp_path / "bank32", seed=SEED, workers=1)
    with pytest.raises(SourceError, match=r"bank32: patches are 32x32x3, the private images 28x28x1"):
        load_sources(tmp_path / "mnist", tmp_path / "bank32", cross)
    private, public = load_sources(None, tmp_path / "bank32", cross)  # the default shape still works
    assert private.image_shape == public.image_shape == (32, 32, 3)
    with pytest.raises(SourceError, match=r"size: expected a side of 7\.\.512 px"):
        load_sources(None, None, cross, size=3)
    with tempfile.TemporaryDirectory() as t:
        np.savez(Path(t) / "p.npz", patches=np.zeros((4, 28, 28, 1), np.uint8))
        assert load_public(Path(t) / "p.npz").image_shape == (28, 28, 1)
        assert load_sources(tmp_path / "mnist", Path(t) / "p.npz", cross)[1].image_shape == (28, 28, 1)


# ---------------------------------------------------------------- through the command line


def test_folder_private_draws_a_load_bar_on_a_terminal_and_json_stays_clean(tmp_path):
    from tests.test_progress_bars import run_on_a_terminal

    write_folder(tmp_path / "folder", 6)
    status, stdout, terminal = run_on_a_terminal("generate", "--out", str(tmp_path / "r"), "--private",
                                                 str(tmp_path / "folder"), "--n-private", "4", "--per-image", "2",
                                                 "--json")
    assert status == 0, terminal
    assert json.loads(stdout)["n_encryptions"] == 8  # stdout is the JSON and nothing else
    assert "load 100%" in terminal and "12/12 [" in terminal and "files/s" in terminal, terminal


def test_patches_size_and_grey_and_bad_sizes_on_the_command_line(tmp_path):
    make_public(tmp_path / "photos", n=4)
    result = run_cli("patches", str(tmp_path / "photos"), "--out", str(tmp_path / "b.zarr"), "--size", "28",
                     "--grey", "--workers", "1", "--json")
    assert result.returncode == 0, result.stderr
    assert load_public(tmp_path / "b.zarr").image_shape == (28, 28, 1)
    result = run_cli("patches", str(tmp_path / "photos"), "--out", str(tmp_path / "c.zarr"), "--size", "5")
    assert result.returncode == 2 and result.stderr.strip().endswith("patch size: expected 7..512 px, got 5")
    write_mnist(tmp_path / "mnist", np.zeros((4, 28, 28), np.uint8), [0, 1, 0, 1])
    result = run_cli("generate", "--out", str(tmp_path / "r"), "--private", str(tmp_path / "mnist"))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "patches are 32x32x3, the private images 28x28x1" in result.stderr and not (tmp_path / "r").exists()
    result = run_cli("generate", "--out", str(tmp_path / "r"), "--size", "3")
    assert result.returncode == 2 and "size: expected a side of 7..512 px" in result.stderr
