"""Issue #8, data sets: every file of a private set or a patch folder is a regular file, size-capped
before it is read or allocated, and a hostile one is a one-line exit 2 or a counted skip, never a
hang, a traceback or gigabytes of memory."""

from __future__ import annotations

import io
import os
import pickle
import resource
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import zarr
from PIL import Image

from generator import images
from generator.sources import cifar
from generator.patches import build_patch_bank, load_patch_bank, load_resized
from challenge.errors import UsageError
from generator.sources import load_private, load_public
from tests.helpers import watchdog

GIB = 1 << 30


@pytest.fixture(autouse=True)
def bounded_memory():
    """A test that allocates what a hostile header claims fails here instead of swapping."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (8 * GIB, hard))
    with watchdog(60):
        yield
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def npy_bytes(shape, dtype="|u1", data: bytes = b"") -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buffer.getvalue() + data


def labels_npy(n: int) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(n, np.int64))
    return buffer.getvalue()


# --- .npy / .npz headers and zip members ---------------------------------------------------------


def test_npz_member_claiming_a_billion_images_is_refused_by_name(tmp_path):
    path = tmp_path / "set.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("images.npy", npy_bytes((10**9, 32, 32, 3), data=bytes(3072)))
        z.writestr("labels.npy", labels_npy(1))
    with pytest.raises(UsageError, match=r"set\.npz.*images"):
        load_private(path)


def test_npy_file_claiming_a_billion_images_is_refused(tmp_path):
    (tmp_path / "images.npy").write_bytes(npy_bytes((10**9, 32, 32, 3), data=bytes(3072)))
    (tmp_path / "labels.npy").write_bytes(labels_npy(1))
    with pytest.raises(UsageError, match=r"images\.npy"):
        load_private(tmp_path)


def test_npz_zip_bomb_declaring_more_than_the_cap_is_refused_unread(tmp_path, monkeypatch):
    path = tmp_path / "bomb.npz"
    n = 1000
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("images.npy", npy_bytes((n, 32, 32, 3), data=bytes(n * 3072)))
        z.writestr("labels.npy", labels_npy(n))
    assert path.stat().st_size < n * 3072 // 100
    monkeypatch.setattr(images, "MAX_ARRAY_BYTES", n * 3072 // 2)
    monkeypatch.setattr(np.lib.format, "read_array", None)  # reading would fail loudly
    with pytest.raises(UsageError, match=r"bomb\.npz.*images"):
        load_private(path)


def test_npz_member_inflating_past_its_declared_size(tmp_path):
    """The zip directory says 3,200 bytes; the deflated stream holds 1 MB more."""
    path = tmp_path / "liar.npz"
    member = npy_bytes((1, 32, 32, 3), data=bytes(3072))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("images.npy", member + bytes(1 << 20))
        z.writestr("labels.npy", labels_npy(1))
    blob = bytearray(path.read_bytes())
    entry = blob.index(b"PK\x01\x02")  # central directory entry of images.npy
    struct.pack_into("<I", blob, entry + 24, len(member))
    path.write_bytes(bytes(blob))
    with pytest.raises(UsageError, match=r"liar\.npz.*images"):
        load_private(path)


def test_npz_member_whose_data_is_shorter_than_declared(tmp_path):
    path = tmp_path / "short.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("images.npy", npy_bytes((100, 32, 32, 3), data=bytes(3072)))
        z.writestr("labels.npy", labels_npy(100))
    with pytest.raises(UsageError, match=r"short\.npz.*images"):
        load_private(path)


def test_public_npz_with_a_huge_patches_header(tmp_path):
    path = tmp_path / "pub.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("patches.npy", npy_bytes((10**9, 32, 32, 3)))
    with pytest.raises(UsageError, match=r"pub\.npz.*patches"):
        load_public(path)


@pytest.mark.parametrize("kind", ["fifo", "devzero"])
def test_npz_and_npy_must_be_regular_files(tmp_path, kind):
    for name in ("set.npz", "images.npy"):
        path = tmp_path / name
        if kind == "fifo":
            os.mkfifo(path)
        else:
            path.symlink_to("/dev/zero")
    (tmp_path / "labels.npy").write_bytes(labels_npy(1))
    for target in (tmp_path / "set.npz", tmp_path):
        with pytest.raises(UsageError):
            load_private(target)


def test_valid_npz_still_loads(tmp_path):
    path = tmp_path / "ok.npz"
    images = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 32, 32, 3)
    np.savez_compressed(path, images=images, labels=np.array([0, 1]), class_names=np.array(["a", "b"]))
    loaded = load_private(path)
    assert np.array_equal(loaded.images, images) and loaded.class_names == ("a", "b")


# --- CIFAR python pickles and binary files --------------------------------------------------------


def cifar_py(folder: Path, batch: dict, meta: dict | None = None) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "data_batch_1").write_bytes(pickle.dumps(batch, protocol=4))
    if meta is not None:
        (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=4))
    return folder


def self_referencing_list() -> list:
    labels: list = [0]
    labels.append(labels)
    return labels


@pytest.mark.parametrize("labels", [self_referencing_list(), [[[[0]]]], list(range(10**6)), "0123", None])
def test_cifar_pickle_with_bad_labels_is_one_error_naming_file_and_key(tmp_path, labels):
    folder = cifar_py(tmp_path / "c", {b"data": np.zeros((2, 3072), np.uint8), b"labels": labels})
    with pytest.raises(UsageError, match=r"data_batch_1: labels"):
        load_private(folder)


def test_cifar_meta_with_self_referencing_names(tmp_path):
    names = self_referencing_list()
    folder = cifar_py(tmp_path / "c", {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]},
                      {b"label_names": names})
    with pytest.raises(UsageError, match=r"batches\.meta: label_names"):
        load_private(folder)


def test_cifar_pickle_larger_than_the_cap_is_not_unpickled(tmp_path, monkeypatch):
    folder = cifar_py(tmp_path / "c", {b"data": np.zeros((100, 3072), np.uint8), b"labels": [0] * 100})
    monkeypatch.setattr(cifar, "MAX_BATCH_BYTES", 100_000)
    monkeypatch.setattr(cifar.pickle, "Unpickler", None)  # unpickling would fail loudly
    with pytest.raises(UsageError, match=r"data_batch_1.*bytes"):
        load_private(folder)


def test_cifar_pickle_that_reconstructs_a_huge_array_is_refused(tmp_path):
    """``_reconstruct(ndarray, (10**12,), b'b')`` would allocate before any check could run."""
    from numpy._core.multiarray import _reconstruct

    class Huge:
        def __reduce__(self):
            return _reconstruct, (np.ndarray, (10**12,), b"b")

    folder = tmp_path / "c"
    folder.mkdir()
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": Huge(), b"labels": [0]}, protocol=2))
    with pytest.raises(UsageError, match="data_batch_1"):
        load_private(folder)


def test_cifar_pickle_that_calls_ndarray_is_refused(tmp_path):
    class Call:
        def __reduce__(self):
            return np.ndarray, ((10**12,), "u1")

    folder = tmp_path / "c"
    folder.mkdir()
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": Call(), b"labels": [0]}, protocol=2))
    with pytest.raises(UsageError, match="data_batch_1"):
        load_private(folder)


@pytest.mark.parametrize("name", ["data_batch_1", "batches.meta"])
def test_cifar_python_files_must_be_regular(tmp_path, name):
    folder = cifar_py(tmp_path / "c", {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]},
                      {b"label_names": [b"x"] * 10})
    (folder / name).unlink()
    os.mkfifo(folder / name)
    with pytest.raises(UsageError, match=name):
        load_private(folder)


@pytest.mark.parametrize("name", ["data_batch_1.bin", "batches.meta.txt"])
def test_cifar_binary_files_must_be_regular(tmp_path, name):
    folder = tmp_path / "b"
    folder.mkdir()
    (folder / "data_batch_1.bin").write_bytes(bytes(3073 * 2))
    (folder / "batches.meta.txt").write_text("\n".join("abcdefghij"))
    (folder / name).unlink()
    (folder / name).symlink_to("/dev/zero")
    with pytest.raises(UsageError, match=name):
        load_private(folder)


def test_class_names_file_is_bounded(tmp_path):
    folder = tmp_path / "b"
    folder.mkdir()
    (folder / "data_batch_1.bin").write_bytes(bytes(3073 * 2))
    with open(folder / "batches.meta.txt", "w") as f:
        f.write("\n".join("abcdefghij") + "\n")
        f.truncate(1 << 30)  # sparse: 1 GiB of NULs after ten names
    with pytest.raises(UsageError, match=r"batches\.meta\.txt"):
        load_private(folder)


# --- images --------------------------------------------------------------------------------------


def image_folder(root: Path, sizes: list[tuple[int, int]]) -> Path:
    (root / "cls").mkdir(parents=True)
    for i, (w, h) in enumerate(sizes):
        Image.new("RGB", (w, h), (i * 40 % 256, 90, 200)).save(root / "cls" / f"{i}.png")
    return root


@pytest.mark.parametrize("size", [(1, 200_000), (200_000, 1), (60, 3000)])
def test_extreme_aspect_ratio_is_skipped_and_counted(tmp_path, size):
    folder = image_folder(tmp_path / "imgs", [(40, 40), size])
    assert (folder / "cls" / "1.png").stat().st_size < 10_000
    loaded = load_private(folder)
    assert len(loaded) == 1 and loaded.notes["skipped_oversized"] == 1
    with pytest.raises(images.ImageTooLarge, match="1.png"):
        load_resized(folder / "cls" / "1.png")


def test_too_many_pixels_is_skipped_before_decoding(tmp_path, monkeypatch):
    folder = image_folder(tmp_path / "imgs", [(40, 40), (300, 300)])
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 200 * 200)
    loaded = load_private(folder)
    assert len(loaded) == 1 and loaded.notes["skipped_oversized"] == 1


def test_patch_bank_skips_oversized_images_and_counts_them(tmp_path):
    folder = image_folder(tmp_path / "imgs", [(64, 64), (1, 200_000)])
    summary = build_patch_bank(folder, tmp_path / "bank.zarr", seed=b"s", workers=1)
    assert summary.unreadable == 1 and summary.notes["skipped_oversized"] == 1


def test_symlink_loops_fifos_and_devices_in_an_image_folder_are_skipped_and_counted(tmp_path):
    folder = image_folder(tmp_path / "imgs", [(40, 40)])
    cls = folder / "cls"
    (cls / "a.png").symlink_to(cls / "b.png")
    (cls / "b.png").symlink_to(cls / "a.png")
    os.mkfifo(cls / "fifo.png")
    (cls / "zero.png").symlink_to("/dev/zero")
    loaded = load_private(folder)
    assert len(loaded) == 1 and sum(loaded.notes.values()) == 4, loaded.notes
    summary = build_patch_bank(folder, tmp_path / "bank.zarr", seed=b"s", workers=1)
    assert summary.files + sum(v for k, v in summary.notes.items() if k.startswith(("skipped", "ignored"))) == 5


def test_a_fifo_swapped_in_after_the_walk_is_unreadable_not_a_hang(tmp_path):
    image_folder(tmp_path / "imgs", [(40, 40)])
    fifo = tmp_path / "late.png"
    os.mkfifo(fifo)
    with pytest.raises(UsageError):
        images.read_image8(fifo)
    with pytest.raises(UsageError):
        load_resized(fifo)


# --- the patch bank loader ------------------------------------------------------------------------


@pytest.fixture
def bank(tmp_path):
    folder = tmp_path / "imgs" / "cls"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (64, 80, 3), np.uint8)).save(folder / f"{i}.png")
    build_patch_bank(folder.parent, tmp_path / "bank.zarr", seed=b"s", workers=1, min_keypoints=0)
    return tmp_path / "bank.zarr"


@pytest.mark.parametrize("damage", ["fifo", "symlink", "huge chunk"])
def test_patch_bank_tree_is_checked_before_zarr_opens_it(bank, damage):
    chunk = next(p for p in (bank / "patches").rglob("*") if p.is_file() and p.name != "zarr.json")
    chunk.unlink()
    if damage == "fifo":
        os.mkfifo(chunk)
    elif damage == "symlink":
        chunk.symlink_to("/dev/zero")
    else:
        with open(chunk, "wb") as f:
            f.truncate(1 << 30)
    with pytest.raises(UsageError, match=str(chunk.relative_to(bank.parent))):
        load_patch_bank(bank)


def test_patch_bank_claiming_a_billion_patches_is_refused(bank):
    group = zarr.open_group(bank, mode="r+")
    group["patches"].resize((10**9, 32, 32, 3))
    group.attrs["progress"] = {**group.attrs["progress"], "patches": 10**9}
    with pytest.raises(UsageError, match="patches"):
        load_patch_bank(bank)


def test_patch_bank_zarr_json_as_a_fifo_does_not_hang(bank):
    (bank / "zarr.json").unlink()
    os.mkfifo(bank / "zarr.json")
    with pytest.raises(UsageError):
        load_patch_bank(bank)
    with pytest.raises(UsageError):
        load_public(bank)
