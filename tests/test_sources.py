"""load_private: every layout written here in its real on-disk format, read back, compared.

The expected images and labels are the arrays the test wrote (an independent source of truth),
never the loader's own helpers.
"""

from __future__ import annotations

import math
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from generator.sources import SourceError, detect_layout, load_private

RNG = np.random.default_rng(1234)


def rand_images(n):
    return RNG.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)


# ---------------------------------------------------------------- binary CIFAR


def write_cifar_bin(path: Path, images, *label_cols):
    """Records exactly as the CIFAR site documents: label byte(s), then R, G, B planes row-major."""
    with open(path, "wb") as fh:
        for i, img in enumerate(images):
            fh.write(bytes(int(col[i]) for col in label_cols))
            for c in range(3):
                fh.write(img[:, :, c].tobytes())


def test_cifar10_binary(tmp_path):
    imgs = [rand_images(7), rand_images(5)]
    labs = [RNG.integers(0, 10, 7), RNG.integers(0, 10, 5)]
    for i in range(2):
        write_cifar_bin(tmp_path / f"data_batch_{i + 1}.bin", imgs[i], labs[i])
    write_cifar_bin(tmp_path / "test_batch.bin", rand_images(3), [1, 2, 3])
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (tmp_path / "batches.meta.txt").write_text("\n".join(names) + "\n\n")
    s = load_private(tmp_path)
    assert np.array_equal(s.images, np.concatenate(imgs))
    assert np.array_equal(s.labels, np.concatenate(labs))
    assert s.class_names == tuple(names)
    assert s.source_files == ("data_batch_1.bin", "data_batch_2.bin")
    assert s.origin_columns == ("file", "record")
    assert s.origin[8].tolist() == [1, 1]  # 9th image is record 1 of the second file
    t = load_private(tmp_path, split="test")
    assert t.labels.tolist() == [1, 2, 3] and t.source_files == ("test_batch.bin",)


def test_cifar_binary_parent_folder_and_default_names(tmp_path):
    d = tmp_path / "cifar-10-batches-bin"
    d.mkdir()
    img = rand_images(2)
    write_cifar_bin(d / "data_batch_1.bin", img, [3, 9])
    s = load_private(tmp_path)
    assert np.array_equal(s.images, img) and s.class_names == tuple("0123456789")


def test_cifar100_binary(tmp_path):
    img = rand_images(6)
    coarse, fine = RNG.integers(0, 20, 6), RNG.integers(0, 100, 6)
    write_cifar_bin(tmp_path / "train.bin", img, coarse, fine)
    write_cifar_bin(tmp_path / "test.bin", rand_images(1), [0], [99])
    names = [f"class{i}" for i in range(100)]
    (tmp_path / "fine_label_names.txt").write_text("\n".join(names))
    s = load_private(tmp_path)
    assert np.array_equal(s.images, img) and np.array_equal(s.labels, fine)
    assert s.class_names == tuple(names)
    assert load_private(tmp_path, split="test").labels.tolist() == [99]


def test_binary_wrong_record_size(tmp_path):
    write_cifar_bin(tmp_path / "data_batch_1.bin", rand_images(2), [1, 2])
    with open(tmp_path / "data_batch_1.bin", "ab") as fh:
        fh.write(b"\0" * 100)
    with pytest.raises(SourceError, match=r"data_batch_1\.bin.*3073-byte records"):
        load_private(tmp_path)


def test_cifar100_wrong_record_size(tmp_path):
    write_cifar_bin(tmp_path / "train.bin", rand_images(2), [1, 2])  # 1 label byte: CIFAR-10 records
    with pytest.raises(SourceError, match=r"train\.bin.*3074-byte records"):
        load_private(tmp_path)


def test_binary_bad_label_and_missing_batch(tmp_path):
    write_cifar_bin(tmp_path / "data_batch_1.bin", rand_images(2), [1, 12])
    with pytest.raises(SourceError, match=r"data_batch_1\.bin: record 1: label: expected 0\.\.9, got 12"):
        load_private(tmp_path)
    write_cifar_bin(tmp_path / "data_batch_1.bin", rand_images(2), [1, 2])
    write_cifar_bin(tmp_path / "data_batch_3.bin", rand_images(2), [1, 2])
    with pytest.raises(SourceError, match="data_batch_N.bin 2 is missing"):
        load_private(tmp_path)


def test_bad_meta_names(tmp_path):
    write_cifar_bin(tmp_path / "data_batch_1.bin", rand_images(1), [1])
    (tmp_path / "batches.meta.txt").write_text("a\nb\n")
    with pytest.raises(SourceError, match=r"batches\.meta\.txt: class names: expected 10"):
        load_private(tmp_path)


# ---------------------------------------------------------------- python CIFAR (Python 2 pickles)


class Py2Pickle:
    """Writes protocol-2 pickles the way Python 2's cPickle wrote the CIFAR files (str = bytes)."""

    def __init__(self):
        self.out = bytearray(b"\x80\x02")

    def s(self, b: bytes):
        self.out += (b"U" + bytes([len(b)]) if len(b) < 256 else b"T" + struct.pack("<I", len(b))) + b
        return self

    def i(self, v: int):
        self.out += b"J" + struct.pack("<i", v)
        return self

    def op(self, code: bytes):
        self.out += code
        return self

    def glob(self, module: str, name: str):
        self.out += b"c" + module.encode() + b"\n" + name.encode() + b"\n"
        return self

    def value(self, v):
        if isinstance(v, bytes):
            return self.s(v)
        if isinstance(v, int):
            return self.i(v)
        if isinstance(v, list):
            self.op(b"](")
            for x in v:
                self.value(x)
            return self.op(b"e")
        if isinstance(v, np.ndarray):
            assert v.dtype == np.uint8 and v.ndim == 2
            self.glob("numpy.core.multiarray", "_reconstruct").glob("numpy", "ndarray")
            self.i(0).op(b"\x85").s(b"b").op(b"\x87R")
            self.op(b"(").i(1).i(v.shape[0]).i(v.shape[1]).op(b"\x86")
            self.glob("numpy", "dtype").s(b"u1").i(0).i(1).op(b"\x87R")
            self.op(b"(").i(3).s(b"|").op(b"NNN").i(-1).i(-1).i(0).op(b"tb")
            return self.op(b"\x89").s(v.tobytes()).op(b"tb")
        raise TypeError(type(v))

    def dict(self, d: dict) -> bytes:
        self.op(b"}(")
        for k, v in d.items():
            self.s(k.encode())
            self.value(v)
        return bytes(self.op(b"u.").out)


def write_py_batch(path, images, labels, label_key="labels", extra=None):
    d = {
        "batch_label": b"training batch 1 of 5",
        label_key: [int(x) for x in labels],
        "data": images.transpose(0, 3, 1, 2).reshape(len(images), 3072).copy(),
        "filenames": [f"img_{i}.png".encode() for i in range(len(images))],
    }
    d.update(extra or {})
    path.write_bytes(Py2Pickle().dict(d))


def test_py2_writer_matches_standard_reading(tmp_path):
    """The hand-written Python 2 pickle reads with plain pickle the way CIFAR's own snippet does."""
    img = rand_images(2)
    write_py_batch(tmp_path / "b", img, [4, 5])
    with open(tmp_path / "b", "rb") as fh:
        d = pickle.load(fh, encoding="bytes")
    assert d[b"labels"] == [4, 5] and np.array_equal(d[b"data"].reshape(2, 3, 32, 32).transpose(0, 2, 3, 1), img)


def test_cifar10_python(tmp_path):
    imgs = [rand_images(4), rand_images(3)]
    labs = [RNG.integers(0, 10, 4), RNG.integers(0, 10, 3)]
    for i in range(2):
        write_py_batch(tmp_path / f"data_batch_{i + 1}", imgs[i], labs[i])
    write_py_batch(tmp_path / "test_batch", rand_images(2), [7, 8])
    names = [f"n{i}".encode() for i in range(10)]
    (tmp_path / "batches.meta").write_bytes(
        Py2Pickle().dict({"label_names": names, "num_cases_per_batch": 10000, "num_vis": 3072}))
    assert detect_layout(tmp_path)[0] == "cifar10-py"
    s = load_private(tmp_path)
    assert np.array_equal(s.images, np.concatenate(imgs))
    assert np.array_equal(s.labels, np.concatenate(labs))
    assert s.class_names == tuple(f"n{i}" for i in range(10))
    assert s.source_files == ("data_batch_1", "data_batch_2")
    assert s.origin[4].tolist() == [1, 0]
    assert load_private(tmp_path, split="test").labels.tolist() == [7, 8]


def test_cifar100_python(tmp_path):
    img = rand_images(5)
    fine = RNG.integers(0, 100, 5)
    write_py_batch(tmp_path / "train", img, fine, "fine_labels", {"coarse_labels": [1] * 5})
    (tmp_path / "meta").write_bytes(Py2Pickle().dict({
        "fine_label_names": [f"f{i}".encode() for i in range(100)],
        "coarse_label_names": [f"c{i}".encode() for i in range(20)]}))
    s = load_private(tmp_path)
    assert np.array_equal(s.images, img) and np.array_equal(s.labels, fine)
    assert s.class_names[42] == "f42"


def test_python3_pickle_also_reads(tmp_path):
    img = rand_images(3)
    d = {"data": img.transpose(0, 3, 1, 2).reshape(3, 3072).copy(), "labels": [0, 1, 2]}
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps(d, protocol=4))
    assert np.array_equal(load_private(tmp_path).images, img)


class Evil:
    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return os.system, (self.cmd,)


@pytest.mark.parametrize("where", ["data_batch_1", "batches.meta"])
def test_malicious_pickle_refused_and_not_run(tmp_path, where):
    marker = tmp_path / "pwned"
    write_py_batch(tmp_path / "data_batch_1", rand_images(1), [0])
    payload = {"data": Evil(f"touch {marker}"), "labels": [0]}
    (tmp_path / where).write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(SourceError, match=rf"{where}: refused global '(os|posix)\.system'"):
        load_private(tmp_path)
    assert not marker.exists()


def test_other_globals_refused(tmp_path):
    class EvalIt:
        def __reduce__(self):
            return eval, ("1+1",)

    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({"data": EvalIt()}, protocol=2))
    with pytest.raises(SourceError, match=r"refused global '(builtins|__builtin__)\.eval'"):
        load_private(tmp_path)
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({"data": np.ones(3)}, protocol=5))
    with pytest.raises(SourceError, match="refused global 'numpy._core.numeric._frombuffer'"):
        load_private(tmp_path)


def test_python_batch_wrong_fields(tmp_path):
    (tmp_path / "data_batch_1").write_bytes(
        Py2Pickle().dict({"data": np.zeros((2, 100), np.uint8), "labels": [0, 0]}))
    with pytest.raises(SourceError, match=r"data_batch_1: data: expected a uint8 array \(N, 3072\)"):
        load_private(tmp_path)
    write_py_batch(tmp_path / "data_batch_1", rand_images(2), [0])
    with pytest.raises(SourceError, match="data_batch_1: labels: expected 2 integers"):
        load_private(tmp_path)
    (tmp_path / "data_batch_1").write_bytes(b"\x80\x02garbage")
    with pytest.raises(SourceError, match="data_batch_1: not a readable CIFAR pickle"):
        load_private(tmp_path)


# ---------------------------------------------------------------- numpy files


def test_npz_and_npy_pair(tmp_path):
    img, lab = rand_images(4), np.array([0, 3, 1, 3], np.int32)
    np.savez(tmp_path / "set.npz", images=img, labels=lab, class_names=np.array(["a", "b", "c", "d"]))
    s = load_private(tmp_path / "set.npz")
    assert np.array_equal(s.images, img) and s.labels.tolist() == [0, 3, 1, 3]
    assert s.class_names == ("a", "b", "c", "d") and s.source_files == ("set.npz",)
    d = tmp_path / "pair"
    d.mkdir()
    np.save(d / "images.npy", img)
    np.save(d / "labels.npy", lab.astype(np.int64))
    for p in (d, d / "images.npy"):
        s = load_private(p)
        assert np.array_equal(s.images, img) and s.class_names == ("0", "1", "2", "3")


def test_npz_wrong_shape_dtype_and_pickles(tmp_path):
    np.savez(tmp_path / "a.npz", images=np.zeros((2, 32, 32, 3), np.float32), labels=np.zeros(2, int))
    with pytest.raises(SourceError, match=r"a\.npz: images: expected uint8 \(N, H, W, C\) with C = 1 or 3, got float32"):
        load_private(tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", images=np.zeros((2, 3, 32, 32), np.uint8), labels=np.zeros(2, int))
    with pytest.raises(SourceError, match=r"b\.npz: images: .*\(2, 3, 32, 32\)"):
        load_private(tmp_path / "b.npz")
    np.savez(tmp_path / "c.npz", images=np.zeros((2, 32, 32, 3), np.uint8), labels=np.zeros(3, int))
    with pytest.raises(SourceError, match=r"c\.npz: labels: expected integer \(2,\)"):
        load_private(tmp_path / "c.npz")
    np.savez(tmp_path / "d.npz", images=np.zeros((1, 32, 32, 3), np.uint8),
             labels=np.array([Evil("true")], dtype=object))
    with pytest.raises(SourceError, match=r"d\.npz: member labels\.npy \(labels\): dtype object holds Python objects"):
        load_private(tmp_path / "d.npz")
    np.savez(tmp_path / "e.npz", pictures=np.zeros((1, 32, 32, 3), np.uint8))
    with pytest.raises(SourceError, match=r"e\.npz: images: missing array"):
        load_private(tmp_path / "e.npz")


# ---------------------------------------------------------------- image folders


def expected_32(im: Image.Image) -> np.ndarray:
    """Independent statement of the documented rule: short side 32 by LANCZOS, centre crop."""
    w, h = im.size
    if (w, h) != (32, 32):
        nw, nh = (32, math.floor(h * 32 / w + 0.5)) if w <= h else (math.floor(w * 32 / h + 0.5), 32)
        im = im.resize((nw, nh), Image.Resampling.LANCZOS)
    w, h = im.size
    a = np.asarray(im)
    return a[(h - 32) // 2:(h - 32) // 2 + 32, (w - 32) // 2:(w - 32) // 2 + 32]


def test_image_folder(tmp_path):
    root = tmp_path / "set"
    exact = rand_images(3)
    (root / "cat").mkdir(parents=True)
    (root / "dog" / "sub").mkdir(parents=True)
    Image.fromarray(exact[0]).save(root / "cat" / "b.png")
    Image.fromarray(exact[1]).save(root / "cat" / "a.bmp")
    Image.fromarray(exact[2]).save(root / "dog" / "sub" / "z.png")
    big = Image.fromarray(RNG.integers(0, 256, (48, 77, 3), dtype=np.uint8))
    big.save(root / "dog" / "big.png")
    tall = Image.fromarray(RNG.integers(0, 256, (90, 40, 3), dtype=np.uint8))
    tall.save(root / "dog" / "tall.tiff")
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    s = load_private(root)
    assert s.class_names == ("cat", "dog")
    assert s.source_files == ("cat/a.bmp", "cat/b.png", "dog/big.png", "dog/sub/z.png", "dog/tall.tiff")
    assert s.labels.tolist() == [0, 0, 1, 1, 1]
    assert np.array_equal(s.images[0], exact[1]) and np.array_equal(s.images[1], exact[0])
    assert np.array_equal(s.images[3], exact[2])
    assert np.array_equal(s.images[2], expected_32(big))
    assert np.array_equal(s.images[4], expected_32(tall))
    assert s.notes == {"ignored_non_image_files": 1}
    assert s.origin.tolist() == [[i, 0] for i in range(5)]


def test_image_folder_conversions(tmp_path):
    root = tmp_path / "set"
    (root / "c").mkdir(parents=True)
    grey = RNG.integers(0, 256, (32, 32), dtype=np.uint8)
    Image.fromarray(grey, "L").save(root / "c" / "grey.png")
    g16 = RNG.integers(0, 65536, (32, 32), dtype=np.uint16)
    Image.fromarray(g16).save(root / "c" / "g16.png")
    rgba = RNG.integers(0, 256, (32, 32, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(root / "c" / "rgba.png")
    pal = Image.fromarray(rand_images(1)[0]).quantize(16)
    pal.save(root / "c" / "pal.gif")
    s = load_private(root)
    by = dict(zip(s.source_files, s.images))
    assert np.array_equal(by["c/grey.png"], np.repeat(grey[:, :, None], 3, axis=2))
    want16 = np.round(g16.astype(np.float64) / 257).astype(np.uint8)
    assert Image.open(root / "c" / "g16.png").mode.startswith("I")
    assert np.array_equal(by["c/g16.png"], np.repeat(want16[:, :, None], 3, axis=2))
    assert np.array_equal(by["c/rgba.png"], rgba[:, :, :3])
    assert np.array_equal(by["c/pal.gif"], np.asarray(pal.convert("RGB")))
    mode16 = Image.open(root / "c" / "g16.png").mode
    assert s.notes == {"converted_L": 1, f"converted_{mode16}": 1, "converted_RGBA": 1, "converted_P": 1}


def test_image_folder_corrupt_and_truncated_skipped(tmp_path):
    root = tmp_path / "set"
    (root / "a").mkdir(parents=True)
    img = Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    img.save(root / "a" / "good.jpg", quality=90)
    data = (root / "a" / "good.jpg").read_bytes()
    (root / "a" / "trunc.jpg").write_bytes(data[: len(data) // 2])
    (root / "a" / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    (root / "a" / "empty.jpg").write_bytes(b"")
    s = load_private(root)
    assert s.source_files == ("a/good.jpg",)
    assert s.notes == {"skipped_unreadable": 3}


def test_image_folder_empty_class_is_error(tmp_path):
    root = tmp_path / "set"
    (root / "full").mkdir(parents=True)
    Image.fromarray(rand_images(1)[0]).save(root / "full" / "x.png")
    (root / "empty").mkdir()
    (root / "empty" / "readme.txt").write_text("x")
    with pytest.raises(SourceError, match=r"empty: class folder 'empty' has no image files"):
        load_private(root)
    (root / "empty" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(SourceError, match=r"class folder 'empty' has no readable image"):
        load_private(root)


def test_image_folder_symlink_loop_does_not_hang(tmp_path):
    root = tmp_path / "set"
    (root / "a").mkdir(parents=True)
    Image.fromarray(rand_images(1)[0]).save(root / "a" / "x.png")
    os.symlink("..", root / "a" / "loop")
    os.symlink(root / "a", root / "b_link")  # a symlinked class folder is not followed either
    os.symlink(root / "a" / "x.png", root / "a" / "y.png")  # a symlinked file is read
    s = load_private(root)
    assert s.source_files == ("a/x.png", "a/y.png") and s.class_names == ("a",)
    assert s.notes == {"skipped_symlinked_dirs": 2}


def test_unrecognised_layouts(tmp_path):
    with pytest.raises(SourceError, match="no such file"):
        load_private(tmp_path / "nope")
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(SourceError, match="unrecognised"):
        load_private(tmp_path)
    with pytest.raises(SourceError, match="unrecognised file"):
        load_private(tmp_path / "f.txt")


def test_image_folder_resize_rounds_half_up(tmp_path):
    root = tmp_path / "set"
    (root / "c").mkdir(parents=True)
    im = Image.fromarray(RNG.integers(0, 256, (77, 64, 3), dtype=np.uint8))  # 64 wide: 77/2 = 38.5
    im.save(root / "c" / "half.png")
    want = np.asarray(im.resize((32, 39), Image.Resampling.LANCZOS))[3:35]
    assert np.array_equal(load_private(root).images[0], want)
