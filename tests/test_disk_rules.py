"""The rules about bytes on disk live in challenge/, once each (issue 21): the writer, the readers
and the audit use the same chunk rule, group attributes, keystream purposes, side limits and
``.npy`` header parser, and what they implement is what docs/FORMAT.md says (tests/spec.py)."""

import io
import json
import shutil

import numpy as np
import pytest
import zarr

from challenge import format as fmt
from challenge.geometry import MAX_IMAGE_SIDE, MIN_IMAGE_SIDE
from challenge.keystream import keystream
from challenge.npy import NotNpy, parse_header, read_npy_header
from generator.images import SourceError
from generator.patches import build_patch_bank
from generator.sources import load_private
from tests import spec
from tests.test_audit import findings, rehash, run
from verifier.scoring import holdout_mask


@pytest.mark.parametrize("shape", [(7, 7, 1), (9, 11, 3), (32, 32, 3), (64, 64, 1), (64, 64, 3), (224, 224, 3), (512, 512, 3)])
def test_the_public_chunk_rule_is_the_documented_one(shape):
    for name in ("encryption", "label"):
        assert fmt.public_chunk_rows(name, shape) == spec.public_chunk_rows(name, shape)


def test_audit_checks_the_exact_chunk_rows_of_public_zarr(tiny_release, tmp_path):
    """A public.zarr chunked otherwise (50 rows, under the old "at most 4096" bound) with consistent
    chunk files and digests is not the format's."""
    release = shutil.copytree(tiny_release, tmp_path / "release")
    folder = release / "public" / fmt.PUBLIC_ZARR
    data = zarr.open_array(str(folder / "encryption"), mode="r")[...]
    shutil.rmtree(folder / "encryption")
    array = zarr.open_group(str(folder), mode="r+").create_array(
        "encryption", shape=data.shape, chunks=(50, *data.shape[1:]), dtype="float32", compressors=None, fill_value=0)
    array[...] = data
    rehash(release)
    found = findings(run(release), "public_zarr")
    assert [f.file for f in found] == ["public/public.zarr/encryption/zarr.json"]
    assert "chunks of 1024 rows" in found[0].message


def test_public_zarr_attributes_are_written_and_audited_alike(tiny_release, tmp_path):
    assert zarr.open_group(str(tiny_release / "public" / fmt.PUBLIC_ZARR), mode="r").attrs.asdict() \
        == fmt.public_zarr_attributes(fmt.FORMAT_VERSION) == {"format": "instahide-public", "format_version": 3}
    release = shutil.copytree(tiny_release, tmp_path / "release")
    zarr.open_group(str(release / "public" / fmt.PUBLIC_ZARR), mode="r+").attrs["format_version"] = 2
    rehash(release)
    assert [f.file for f in findings(run(release), "public_zarr")] == ["public/public.zarr/zarr.json"]


def test_holdout_is_a_keystream_purpose():
    seed = bytes(range(32))
    assert keystream(seed, "holdout", first_block=0, n_bytes=64).tobytes() == spec.stream(seed, "holdout", 64)
    assert holdout_mask(seed, 1000, 0.3).tolist() == spec.holdout(seed, 1000, 0.3)


def npy(header: bytes, version: bytes = b"\x01\x00") -> io.BytesIO:
    return io.BytesIO(b"\x93NUMPY" + version + len(header).to_bytes(2, "little") + header)


def test_one_npy_header_parser():
    good = np.lib.format.magic(1, 0)
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((2, 3), "<f4"))
    buffer.seek(0)
    assert parse_header(buffer) == ((2, 3), False, np.dtype("<f4")) and buffer.tell() == 128
    with pytest.raises(NotNpy, match="no NumPy magic"):
        parse_header(io.BytesIO(b"PK\x03\x04" + bytes(60)))
    with pytest.raises(NotNpy, match="version 3.0"):
        parse_header(npy(b"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }\n", b"\x03\x00"))
    with pytest.raises(ValueError):
        parse_header(io.BytesIO(good + b"\xff\xff" + b"{" * 65535))  # a header longer than numpy's limit


def test_sources_and_submissions_refuse_the_same_npy_headers(tmp_path):
    """Both readers go through challenge.npy.parse_header: a version-3.0 file is refused by both."""
    data = npy(b"{'descr': '<u1', 'fortran_order': False, 'shape': (1, 7, 7, 1), }\n".ljust(117) + b"\n", b"\x03\x00").getvalue()
    folder = tmp_path / "set"
    folder.mkdir()
    (folder / "images.npy").write_bytes(data + bytes(49))
    np.save(folder / "labels.npy", np.zeros(1, np.int64))
    with pytest.raises(SourceError, match="version 3.0"):
        load_private(folder)
    header, problems = read_npy_header(folder / "images.npy", 1 << 20)
    assert header is None and "version 3.0" in problems[0]


@pytest.mark.parametrize("side", [MIN_IMAGE_SIDE - 1, MAX_IMAGE_SIDE + 1])
def test_patch_banks_and_loaders_have_the_release_image_sides(tmp_path, side):
    """A patch bank or a resized set of a side no release can have is refused up front (it was 7..1024)."""
    (tmp_path / "photos").mkdir()
    with pytest.raises(SourceError, match=f"{MIN_IMAGE_SIDE}..{MAX_IMAGE_SIDE}"):
        build_patch_bank(tmp_path / "photos", tmp_path / "bank.zarr", seed=bytes(32), patch_size=side, workers=1)
    with pytest.raises(SourceError, match=f"{MIN_IMAGE_SIDE}..{MAX_IMAGE_SIDE}"):
        load_private(tmp_path, size=side)


@pytest.mark.parametrize("dtype", ["uint8", "int32", "int64", "float32"])
@pytest.mark.parametrize("compressed", [True, False])
def test_the_zarr_json_rule_is_what_zarr_writes(dtype, compressed):
    """challenge.format's zarr.json, which the audit expects, is byte for byte what zarr-python writes
    for the key store (compressed) and public.zarr (not): a zarr-python that changed it fails here."""
    files = {}
    zarr.create_array(zarr.storage.MemoryStore(files), shape=(5, 3, 2), chunks=(4, 3, 2), dtype=dtype, fill_value=0,
                      **({} if compressed else {"compressors": None}))
    meta = fmt.zarr_array_metadata((5, 3, 2), dtype, 4, compressed=compressed)
    assert files["zarr.json"].to_bytes() == json.dumps(meta, indent=2).encode() == spec.zarr_array_json((5, 3, 2), dtype, 4, compressed)
    group = {}
    zarr.open_group(zarr.storage.MemoryStore(group), mode="w").attrs.update({"format": "x", "n": 1.0})
    assert group["zarr.json"].to_bytes() == json.dumps(fmt.zarr_group_metadata({"format": "x", "n": 1.0}), indent=2).encode()
