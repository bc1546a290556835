"""The release format: folder layout, manifest, key store schema, digests and commitment.

See ``docs/FORMAT.md`` for the prose version.  A release is a folder::

    release/
      public/                  everything here may be published
        encryption.npy         float32 (N, H, W, C) NHWC, in the release's pixel domain and image shape
        label.npy              float32 (N, C) lambda-weighted one-hot labels of the private images
        public.zarr/           the same two arrays, Zarr v3, uncompressed
        preview.png            contact sheet of the first encryptions
        manifest.json          parameters, shapes, SHA-256 of every other public file, commitment
      secret/
        keys.zarr/             seed, per-encryption keys, ground truth (never published before reveal)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from challenge import __version__, files
from challenge.canonical import canonical_json
from challenge.errors import UsageError
from challenge.geometry import sign_bytes
from challenge.keystream import SEED_BYTES
from challenge.params import MAX_ENCRYPTIONS, SHAPED_SINCE, ParameterError, Params
from challenge.text import printable

FORMAT_VERSION = 3  # what generate writes (docs/FORMAT.md; CHANGELOG.md says what changed)
READABLE_VERSIONS = (1, 2, 3)
# version 3 changed what is committed to (the image shape among the parameters), not how
COMMITMENT_SCHEMES = {1: "instahide-key-commitment-v1", 2: "instahide-key-commitment-v2", 3: "instahide-key-commitment-v2"}
PUBLIC_DIR = "public"
SECRET_DIR = "secret"
KEYS_NAME = "keys.zarr"
ENCRYPTION_FILE = "encryption.npy"
LABEL_FILE = "label.npy"
PUBLIC_ZARR = "public.zarr"
PREVIEW_FILE = "preview.png"
MANIFEST_FILE = "manifest.json"
KEYS_FORMAT = "instahide-keys"  # the key store's attribute "format"
PUBLIC_ZARR_FORMAT = "instahide-public"  # public.zarr's attribute "format"
ROWS_PER_ZARR_CHUNK = 4096  # storage layout is fixed by the format, never by --chunk
ENCRYPTION_ZARR_ROWS = 1024  # rows per chunk of public.zarr/encryption at most
# A chunk holds at most 16 MiB of whole rows (and at least one row: the largest image, 512x512x3, is 768 KiB);
# at 32x32x3 the row cap binds first (4096 images, 12 MiB), as in versions 1 and 2.
MAX_CHUNK_BYTES = 1 << 24

# Size caps for untrusted files, each computed from the largest valid one (docs/FORMAT.md, 5 and 6).
# A manifest lists one SHA-256 per public file: the fixed files and generate's public.zarr chunks
# (1024 rows of encryption.npy, 4096 of label.npy each) for 100M encryptions, at most 128 bytes a
# line (the longest name plus the digest), and 1 MiB for every other field.  Larger images have
# fewer rows per chunk but fewer encryptions too (MAX_RELEASE_VALUES): never more chunk files.
_MAX_PUBLIC_FILES = 8 + -(-MAX_ENCRYPTIONS // ENCRYPTION_ZARR_ROWS) + -(-MAX_ENCRYPTIONS // ROWS_PER_ZARR_CHUNK)
MAX_MANIFEST_BYTES = _MAX_PUBLIC_FILES * 128 + (1 << 20)
# A key-store chunk is zstd-compressed: incompressible data grows by at most 1/256 (ZSTD_compressBound),
# plus a frame header; the 4 KiB margin covers both.
MAX_STORED_CHUNK_BYTES = MAX_CHUNK_BYTES + MAX_CHUNK_BYTES // 256 + 4096
MAX_ARRAY_METADATA_BYTES = 64 << 10  # an array's or a subgroup's zarr.json (about 1 KB as generate writes it)
# The root zarr.json holds the attributes, among them the names of every source file (an ImageNet-sized
# patch bank lists about 1.3 million, about 50 MB).
MAX_KEY_ATTRS_BYTES = 128 << 20


class FormatError(UsageError):
    """A release, key store or submission that does not follow the format."""


def json_bytes(obj: dict) -> bytes:
    """The manifest's JSON text (FORMAT.md 4: sorted keys, 2-space indent, ASCII, final newline):
    same object, same bytes."""
    return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=True) + "\n").encode("ascii")


def write_json(path: Path, obj: dict) -> None:
    path.write_bytes(json_bytes(obj))


def read_json(path: Path, limit: int = MAX_MANIFEST_BYTES, what: str = "manifest") -> dict:
    """A JSON object from an untrusted file: regular, at most ``limit`` bytes, bounded depth, valid Unicode."""
    try:
        obj = files.read_json(path, limit, what=what)
    except files.UnsafeFile as e:
        raise FormatError(str(e)) from None
    if not isinstance(obj, dict):
        raise FormatError(f"{path}: expected a JSON object")
    return obj


def sha256_file(path: Path, block: int = 1 << 22) -> str:
    """Streamed, so any size is fine; a symlink or a FIFO is refused rather than followed or waited on.

    Read into one buffer: a new block per read costs page faults where large allocations are not
    reused (a Dask worker's ``MALLOC_TRIM_THRESHOLD_``: half as much CPU again).
    """
    h = hashlib.sha256()
    buffer = memoryview(bytearray(block))
    with files.open_regular(path, follow_symlinks=False) as f:
        while size := f.readinto(buffer):
            h.update(buffer[:size])
    return h.hexdigest()


def read_params(obj, where: str, version: int) -> Params:
    """Parameters of a format-``version`` release from JSON: exact field set and JSON types first,
    then the rules of ``validate``.  Versions before 3 have no ``image_shape`` (32x32x3).

    ``Params(**obj)`` alone would accept ``n_private: 20.5`` or ``balanced: "no"``.
    """
    if type(version) is not int or version not in READABLE_VERSIONS:
        raise FormatError(f"{where}: format_version {version!r}, this tool reads {', '.join(map(str, READABLE_VERSIONS))}")
    fields = {name: field for name, field in Params.__dataclass_fields__.items()
              if version >= SHAPED_SINCE or name != "image_shape"}
    if not isinstance(obj, dict) or set(obj) != set(fields):
        raise FormatError(f"{where}: expected an object with exactly the fields {', '.join(fields)}")
    for name, field in fields.items():
        value, default = obj[name], field.default
        if isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif isinstance(default, tuple):  # image_shape: [height, width, channels]
            ok = isinstance(value, list) and len(value) == 3 and all(type(v) is int for v in value)
        else:
            ok = type(value) is type(default)
        if not ok:
            expected = "[height, width, channels]" if isinstance(default, tuple) else type(default).__name__
            raise FormatError(f"{where}: field '{name}' is {value!r}, expected {expected}")
    try:
        return Params(**obj).validate()
    except ParameterError as e:
        raise FormatError(f"{where}: {e}") from None


def public_zarr_attributes(version: int) -> dict:
    """The attributes of ``public.zarr``'s group, its only ones (FORMAT.md 5)."""
    return {"format": PUBLIC_ZARR_FORMAT, "format_version": version}


def public_chunk_rows(name: str, image_shape: tuple) -> int:
    """Rows per chunk of ``public.zarr/<name>`` (FORMAT.md 5): 4096 for ``label``; for ``encryption``
    1024, fewer for large images so that a chunk holds at most 16 MiB (one row at least): 1024 at
    32x32x3, as in versions 1 and 2."""
    if name == "label":
        return ROWS_PER_ZARR_CHUNK
    return max(1, min(ENCRYPTION_ZARR_ROWS, MAX_CHUNK_BYTES // (4 * int(np.prod(image_shape)))))


def zarr_group_metadata(attributes: dict) -> dict:
    """A group's ``zarr.json`` (FORMAT.md 5), in zarr-python 3's member order."""
    return {"attributes": attributes, "zarr_format": 3, "node_type": "group"}


def zarr_array_metadata(shape: tuple, dtype: str, rows: int, *, compressed: bool) -> dict:
    """An array's ``zarr.json`` (FORMAT.md 5), in zarr-python 3's member order (``json.dumps(..., indent=2)``
    of it is the file): chunks of ``rows`` whole rows, fill value 0, the ``bytes`` codec little-endian
    (no endian for uint8), then zstd level 0 without checksum when ``compressed`` (the key store)."""
    codecs = [{"name": "bytes"} if dtype == "uint8" else {"name": "bytes", "configuration": {"endian": "little"}}]
    if compressed:
        codecs.append({"name": "zstd", "configuration": {"level": 0, "checksum": False}})
    return {
        "shape": list(shape), "data_type": dtype,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [rows, *shape[1:]]}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0.0 if dtype.startswith("float") else 0, "codecs": codecs,
        "attributes": {}, "zarr_format": 3, "node_type": "array", "storage_transformers": [],
    }


def public_files(public_dir: Path) -> list[str]:
    """Relative POSIX paths of every file under ``public/`` except the manifest, sorted."""
    return sorted(
        p.relative_to(public_dir).as_posix()
        for p in public_dir.rglob("*")
        if p.is_file() or p.is_symlink()
        if p.relative_to(public_dir).as_posix() != MANIFEST_FILE
    )


# --- key store -------------------------------------------------------------------------------

def key_schema(params: Params) -> dict[str, tuple[str, tuple]]:
    """Name -> (dtype, shape) of every key-store array; ``None`` in a shape is data-dependent."""
    n, N, image_shape = params.n_private, params.n_encryptions, params.image_shape
    return {
        "seed": ("uint8", (SEED_BYTES,)),
        "private/images": ("uint8", (n, *image_shape)),
        "private/labels": ("int64", (n,)),
        "private/source_index": ("int64", (n,)),
        "private/origin": ("int64", (n, None)),
        "public/images": ("uint8", (None, *image_shape)),
        "public/bank_index": ("int64", (None,)),
        "public/origin": ("int64", (None, None)),
        "encryption/private_index": ("int32", (N, params.k_private)),
        "encryption/public_index": ("int32", (N, params.k_public)),
        "encryption/lam": ("float32", (N, params.k)),
        "encryption/sign_bits": ("uint8", (N, sign_bytes(image_shape))),
    }


def chunk_rows(n_rows: int, version: int, per_encryption: bool, row_bytes: int) -> int:
    """Rows per Zarr chunk of a key-store array (FORMAT.md 5): ``min(n_rows, 4096, 16 MiB / row_bytes)``,
    at least 1 (the byte cap binds only for images larger than 32x32x4, so never before version 3);
    version 1 gave the per-encryption arrays it filled later (``sign_bits``) 4096 rows always."""
    if version == 1 and per_encryption:
        return ROWS_PER_ZARR_CHUNK
    return max(1, min(n_rows, ROWS_PER_ZARR_CHUNK, MAX_CHUNK_BYTES // max(1, row_bytes)))


def create_key_store(path: Path, params: Params, attrs: dict, tables: dict[str, np.ndarray],
                     version: int = FORMAT_VERSION) -> zarr.Group:
    """Create ``keys.zarr`` with every array of :func:`key_schema`; small tables written now.

    The per-encryption arrays are created empty and filled chunk by chunk by the generator.
    """
    group = zarr.open_group(str(path), mode="w-")
    group.attrs.update({"format": KEYS_FORMAT, "format_version": version, "params": params.to_dict(version), **attrs})
    schema = key_schema(params)
    for name, (dtype, shape) in schema.items():
        if name in tables:
            data = np.ascontiguousarray(tables[name], dtype=dtype)
            rows = chunk_rows(len(data), version, per_encryption=False, row_bytes=_row_bytes(data.shape, dtype))
            array = group.create_array(name, shape=data.shape, chunks=(rows, *data.shape[1:]), dtype=dtype, fill_value=0)
            if data.size:
                array[...] = data
        else:
            rows = chunk_rows(shape[0], version, per_encryption=True, row_bytes=_row_bytes(shape, dtype))
            array = group.create_array(name, shape=shape, chunks=(rows, *shape[1:]), dtype=dtype, fill_value=0)
    return group


@dataclass
class KeyStore:
    """An opened key store whose every array was checked against the schema."""

    group: zarr.Group
    params: Params
    attrs: dict

    @property
    def version(self) -> int:
        return self.attrs["format_version"]

    def __getitem__(self, name: str) -> zarr.Array:
        return self.group[name]

    def rows(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows ``start:stop`` of one array; a chunk that does not decode is a FormatError naming it."""
        try:
            return self.group[name][start:stop]
        except Exception as e:  # codecs raise RuntimeError, ValueError, ... on damaged chunks
            where = f"{getattr(self.group.store, 'root', 'key store')}/{name}"
            rows = f"{start}..{'end' if stop is None else stop}"
            raise FormatError(f"{where}: rows {rows}: unreadable ({type(e).__name__}: {e})") from None

    def read(self, name: str) -> np.ndarray:
        """One whole array of the key store.

        Parameters
        ----------
        name : str
            Its path in the store, e.g. ``"private/images"`` (FORMAT.md 5).

        Returns
        -------
        array : ndarray

        Raises
        ------
        FormatError
            If a chunk of it does not decode (a :class:`challenge.UsageError`).
        """
        return self.rows(name)


def open_key_store(path: Path, *, check_indices: bool = True) -> KeyStore:
    """Open ``keys.zarr`` read-only, checking every array's dtype, shape and chunks against the params
    and, unless ``check_indices`` is false, every index's range (see :func:`check_index_ranges`).

    Parameters
    ----------
    path : path
        The key store folder, ``secret/keys.zarr`` of a release.
    check_indices : bool, optional
        Also read every index array and check its range (the whole of them: skip for speed when
        they are read again anyway).

    Returns
    -------
    store : KeyStore
        ``store.read(name)`` reads an array, ``store[name]`` opens it for slicing.

    Raises
    ------
    FormatError
        If the store departs from the format (a :class:`challenge.UsageError`).

    Notes
    -----
    Zarr metadata is data too: a store that lies about a shape or dtype, holds a symlink (which
    could lead reads outside it), a FIFO or a device (which would block or never end), a file
    larger than the format ever writes, or declares chunks larger than the format writes is refused
    here, before zarr reads anything from it, so no later read allocates more than one bounded chunk.
    """
    path = Path(path)
    if not os.path.lexists(path / "zarr.json"):
        raise FormatError(f"{path}: not a key store (no zarr.json)")
    try:  # only the root's zarr.json (the attributes) may be larger than a compressed chunk
        files.check_tree(path, MAX_KEY_ATTRS_BYTES, what="key store")
        for folder in sorted(p for p in path.iterdir() if p.is_dir()):
            files.check_tree(folder, MAX_STORED_CHUNK_BYTES, what="key store")
        files.read_json(path / "zarr.json", MAX_KEY_ATTRS_BYTES, what="key store's metadata")
        for meta in sorted(path.glob("*/**/zarr.json")):
            files.read_json(meta, MAX_ARRAY_METADATA_BYTES, what="Zarr array metadata")
    except files.UnsafeFile as e:
        raise FormatError(str(e)) from None
    try:
        group = zarr.open_group(str(path), mode="r")
        attrs = dict(group.attrs)
    except Exception as e:  # zarr raises many types for malformed metadata
        raise FormatError(f"{path}: unreadable key store ({type(e).__name__}: {e})") from None
    if attrs.get("format") != KEYS_FORMAT:
        raise FormatError(f"{path}: attribute 'format' is {attrs.get('format')!r}, expected {KEYS_FORMAT!r}")
    version = attrs.get("format_version")
    if type(version) is not int or version not in READABLE_VERSIONS:
        raise FormatError(f"{path}: format_version {version!r}, this tool reads {', '.join(map(str, READABLE_VERSIONS))}")
    params = read_params(attrs.get("params"), f"{path}: attribute 'params'", version)
    class_names = attrs.get("class_names")
    if not isinstance(class_names, list) or not class_names or not all(isinstance(c, str) for c in class_names):
        raise FormatError(f"{path}: attribute 'class_names' must be a non-empty list of strings")
    for name, (dtype, shape) in key_schema(params).items():
        try:
            array = group[name]
        except KeyError:
            raise FormatError(f"{path}/{name}: array is missing") from None
        except Exception as e:
            raise FormatError(f"{path}/{name}: unreadable metadata ({type(e).__name__}: {e})") from None
        if not isinstance(array, zarr.Array) or str(array.dtype) != dtype:
            raise FormatError(f"{path}/{name}: dtype {getattr(array, 'dtype', '?')}, expected {dtype}")
        if len(array.shape) != len(shape) or any(s is not None and a != s for a, s in zip(array.shape, shape)):
            raise FormatError(f"{path}/{name}: shape {array.shape}, expected {shape} (None: any)")
        chunks = array.chunks
        if (array.shards is not None or chunks[0] > ROWS_PER_ZARR_CHUNK or chunks[1:] != array.shape[1:]
                or int(np.prod(chunks)) * array.dtype.itemsize > MAX_CHUNK_BYTES):
            raise FormatError(f"{path}/{name}: chunks {chunks}, expected unsharded chunks of whole rows, "
                              f"at most {ROWS_PER_ZARR_CHUNK} rows and {MAX_CHUNK_BYTES} bytes")
        expected_rows = chunk_rows(array.shape[0], version, True, _row_bytes(array.shape, dtype))
        if version >= 2 and chunks[0] != expected_rows:
            raise FormatError(f"{path}/{name}: chunks of {chunks[0]} rows, expected {expected_rows} "
                              f"(min(rows, {ROWS_PER_ZARR_CHUNK}, {MAX_CHUNK_BYTES} bytes / bytes per row))")
    if version >= 2:
        check_stream_context(attrs, params, path)
    m = group["public/images"].shape[0]
    if m > params.n_encryptions * params.k_public:
        raise FormatError(f"{path}/public/images: {m} patches, more than the {params.n_encryptions * params.k_public} the encryptions can use")
    for name in ("public/bank_index", "public/origin"):
        if group[name].shape[0] != m:
            raise FormatError(f"{path}/{name}: {group[name].shape[0]} rows, expected {m} (one per public image)")
    store = KeyStore(group, params, attrs)
    if check_indices:
        check_index_ranges(store)
    return store


def index_ranges(store: KeyStore) -> dict[str, tuple[int, int | None]]:
    """Name -> [low, high) of every key-store array whose values index something (high None: unbounded)."""
    return {
        "encryption/private_index": (0, store.params.n_private),
        "encryption/public_index": (0, store["public/images"].shape[0]),
        "private/labels": (0, len(store.attrs["class_names"])),
        "private/source_index": (0, None),
        "public/bank_index": (0, None),
    }


def check_index_ranges(store: KeyStore, rows_per_read: int = 65536) -> None:
    """Every index in its range, read a block of rows at a time (bounded memory whatever N is).

    Everything downstream indexes with these values: a negative one would silently wrap (the oracle
    baseline would submit another image), a huge one crash.  The error names the array, the first
    bad row, its value and the allowed range.
    """
    where = getattr(store.group.store, "root", "key store")
    for name, (low, high) in index_ranges(store).items():
        for start in range(0, store[name].shape[0], rows_per_read):
            block = store.rows(name, start, start + rows_per_read)
            block = block.reshape(len(block), -1)
            bad = (block < low) | (block >= high) if high is not None else block < low
            if bad.any():
                row, column = np.argwhere(bad)[0]
                value = block[row, column]
                allowed = f"[{low}, {high})" if high is not None else f">= {low}"
                raise FormatError(f"{where}/{name}: row {start + row} holds {value}, expected indices in {allowed}")


def check_stream_context(attrs: dict, params: Params, where) -> None:
    """Versions 2 and 3 store what their stream key was derived from (FORMAT.md 7.1): it must name these parameters."""
    context = attrs.get("stream_context")
    sources = context.get("sources") if isinstance(context, dict) else None
    fingerprint = re.compile(r"[0-9a-f]{64}")
    if not (isinstance(context, dict) and set(context) == {"params", "sources"}
            and context["params"] == params.to_dict(attrs["format_version"])
            and isinstance(sources, dict) and set(sources) == {"private", "public"}
            and isinstance(sources["private"], str) and fingerprint.fullmatch(sources["private"])
            and (sources["public"] is None if not params.k_public else
                 isinstance(sources["public"], str) and fingerprint.fullmatch(sources["public"]))):
        raise FormatError(f"{where}: attribute 'stream_context' must be {{params: the store's params, "
                          "sources: {private: fingerprint, public: fingerprint or null}} (FORMAT.md 7.1)")


def commitment(store: KeyStore, rows_per_read: int = 65536) -> str:
    """SHA-256 binding every key-store array of the schema and every attribute (docs/FORMAT.md 6).

    Hashes, in sorted name order, each array's name, dtype and shape, then its C-order
    little-endian bytes, and last the attributes; version 2 writes the names and attributes as
    RFC 8785 canonical JSON, version 1 as Python's ``json.dumps``.  The seed is inside, so a
    strong-seed commitment also hides the keys until they are revealed.
    """
    version = store.version
    h = hashlib.sha256(COMMITMENT_SCHEMES[version].encode() + b"\0")
    for name in sorted(key_schema(store.params), key=lambda n: n.encode("utf-8")):
        array = store[name]
        h.update(commitment_json([name, str(array.dtype), list(array.shape)], version) + b"\0")
        little = array.dtype.newbyteorder("<")
        for start in range(0, array.shape[0], rows_per_read):
            h.update(np.ascontiguousarray(store.rows(name, start, start + rows_per_read), dtype=little).tobytes())
    h.update(commitment_json(store.attrs, version))
    return "sha256:" + h.hexdigest()


def check_commitment(published: str | None, store: KeyStore, release: Path, keys: Path) -> None:
    """Refuse a key store other than the one the release's manifest commits to (same parameters or
    not); ``published`` is the manifest's ``key_store.commitment``, None when that field is malformed."""
    if published is None:
        raise UsageError(f"{printable(release)}: manifest field key_store is malformed (audit names the problem); "
                         "there is no commitment to check the key store against")
    actual = commitment(store)
    if actual != published:
        raise UsageError(f"{printable(keys)}: key store commitment {actual} differs from {published}, the one "
                         f"{printable(release)} publishes: not this release's keys")


def _row_bytes(shape: tuple, dtype: str) -> int:
    """Bytes of one row (everything past the first dimension) of an array of ``shape``."""
    return int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(dtype).itemsize


def commitment_json(obj, version: int) -> bytes:
    """The JSON bytes the commitment hashes (names and attributes): RFC 8785 from version 2, ``json.dumps`` before."""
    return canonical_json(obj) if version >= 2 else json.dumps(obj, sort_keys=True).encode()


def generator_info() -> dict:
    return {"name": "instahide-challenge", "version": __version__}
