"""Hostile releases and key stores: every one gives a clear finding or error naming the file,
never a crash, a hang, an unpickled object, a huge allocation or a read or write outside."""

import io
import json
import os
import pickle
import shutil

import numpy as np
import pytest
import zarr

from challenge import format as fmt
from challenge.manifest import FIELDS
from commands.main import main
from tests.helpers import watchdog
from verifier.audit import audit

MARKER = "pwned"


class Payload:
    """Unpickling this creates a file: proof that nothing was unpickled if the file never appears."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


@pytest.fixture
def release(tiny_release, tmp_path):
    return shutil.copytree(tiny_release, tmp_path / "release")


def keys(release):
    return release / "secret" / "keys.zarr"


def rewrite_json(path, change):
    obj = json.loads(path.read_text())
    change(obj)
    path.write_text(json.dumps(obj))


def npy_bytes(header: dict, body: bytes = b"") -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue() + body


def outside_fifo(release):
    fifo = release.parent / "outside.fifo"
    os.mkfifo(fifo)
    return fifo


def outside_file(release):
    """A file beside the release (a FIFO here would hang zarr's reader thread, beyond a watchdog's reach)."""
    path = release.parent / "outside.bin"
    path.write_bytes(bytes(range(32)))
    return path


def pickled_npy(release, name="encryption.npy"):
    np.save(release / "public" / name, np.array([Payload(str(release.parent / MARKER))], dtype=object), allow_pickle=True)


# (damage, check, file, words in the message)
DAMAGES = {
    "npy holding a pickled object": (pickled_npy, "encryptions", "public/encryption.npy", "it says object"),
    "npy truncated": (lambda r: (r / "public/encryption.npy").write_bytes((r / "public/encryption.npy").read_bytes()[:5000]),
                      "encryptions", "public/encryption.npy", "truncated"),
    "npy with bytes after the array": (lambda r: open(r / "public/encryption.npy", "ab").write(b"\0" * 12),
                                       "encryptions", "public/encryption.npy", "bytes after the array"),
    "npy header claiming 10^12 rows": (
        lambda r: (r / "public/encryption.npy").write_bytes(npy_bytes({"descr": "<f4", "fortran_order": False, "shape": (10**12, 32, 32, 3)})),
        "encryptions", "public/encryption.npy", "(1000000000000, 32, 32, 3)"),
    "npy in Fortran order": (lambda r: np.save(r / "public/label.npy", np.asfortranarray(np.load(r / "public/label.npy"))),
                             "labels", "public/label.npy", "Fortran order"),
    "manifest truncated": (lambda r: (r / "public/manifest.json").write_bytes((r / "public/manifest.json").read_bytes()[:100]),
                           "manifest", "public/manifest.json", "not valid JSON"),
    "manifest params with a float n_private": (
        lambda r: rewrite_json(r / "public/manifest.json", lambda m: m["params"].update(n_private=20.5)),
        "manifest", "public/manifest.json", "field 'n_private' is 20.5, expected int"),
    "manifest params with NaN c1": (
        lambda r: (r / "public/manifest.json").write_text((r / "public/manifest.json").read_text().replace('"c1": 0.65', '"c1": NaN')),
        "manifest", "public/manifest.json", "NaN is not a JSON number"),  # refused when parsed
    "manifest names a file outside (../)": (
        lambda r: (outside_fifo(r), rewrite_json(r / "public/manifest.json", lambda m: m["files"].update({"../../outside.fifo": "0" * 64}))),
        "public_files", "public/manifest.json", "unsafe name"),
    "manifest names an absolute path": (
        lambda r: rewrite_json(r / "public/manifest.json", lambda m: m["files"].update({"/etc/passwd": "0" * 64})),
        "public_files", "public/manifest.json", "unsafe name"),
    "public file is a symlink leaving the folder": (
        lambda r: ((r / "public/label.npy").unlink(), (r / "public/label.npy").symlink_to(outside_fifo(r))),
        "public_files", "public/label.npy", "symlink"),
    "public zarr metadata lying about its chunks": (
        lambda r: rewrite_json(r / "public/public.zarr/encryption/zarr.json",
                               lambda m: m["chunk_grid"]["configuration"].update(chunk_shape=[10**9, 32, 32, 3])),
        "public_zarr", "public/public.zarr/encryption/zarr.json", "in chunks of 1024 rows"),
    "preview claiming 10^5 x 10^5 pixels": (
        lambda r: (r / "public/preview.png").write_bytes(
            (r / "public/preview.png").read_bytes()[:16] + (100000).to_bytes(4, "big") * 2 + (r / "public/preview.png").read_bytes()[24:]),
        "preview", "public/preview.png", "IHDR (100000, 100000"),
    "key store array of the wrong shape": (
        lambda r: rewrite_json(keys(r) / "encryption/lam/zarr.json", lambda m: m.update(shape=[100, 5])),
        "key_store", "secret/keys.zarr/encryption/lam", "shape (100, 5)"),
    "key store array of the wrong dtype": (
        lambda r: zarr.open_group(str(keys(r)), mode="r+").create_array("private/labels", shape=(20,), dtype="float64", overwrite=True),
        "key_store", "secret/keys.zarr/private/labels", "dtype float64"),
    "key store with NaN lambdas": (
        lambda r: zarr.open_array(str(keys(r) / "encryption/lam"), mode="r+").__setitem__((4, 2), np.nan),
        "lambda", "secret/keys.zarr/encryption/lam", "not finite"),
    "key store metadata lying about its chunks": (
        lambda r: rewrite_json(keys(r) / "encryption/lam/zarr.json", lambda m: m["chunk_grid"]["configuration"].update(chunk_shape=[50, 6])),
        "key_store", "secret/keys.zarr/encryption/lam", "chunks of 50 rows, expected 100"),
    "key store chunks larger than the format's": (
        lambda r: rewrite_json(keys(r) / "encryption/lam/zarr.json", lambda m: m["chunk_grid"]["configuration"].update(chunk_shape=[10**9, 6])),
        "key_store", "secret/keys.zarr/encryption/lam", "at most 4096 rows"),
    "key store params lying about the sizes": (
        lambda r: rewrite_json(keys(r) / "zarr.json", lambda m: m["attributes"]["params"].update(per_image=10**6)),
        "key_store", "secret/keys.zarr/encryption/private_index", "shape (100, 2), expected (20000000, 2)"),
    "key store chunk replaced by a pickle": (
        lambda r: (keys(r) / "encryption/lam/c/0/0").write_bytes(pickle.dumps(Payload(str(r.parent / MARKER)))),
        "key_store", "secret/keys.zarr/encryption/lam", "unreadable"),
    "key store chunk truncated": (
        lambda r: (keys(r) / "private/images/c/0/0/0/0").write_bytes((keys(r) / "private/images/c/0/0/0/0").read_bytes()[:100]),
        "key_store", "secret/keys.zarr/private/images", "unreadable"),
    "key store chunk symlinked outside": (
        lambda r: ((keys(r) / "seed/c/0").unlink(), (keys(r) / "seed/c/0").symlink_to(outside_file(r))),
        "key_store", "secret/keys.zarr/seed/c/0", "symlink inside the key store"),
    "key store declaring object dtype": (
        lambda r: rewrite_json(keys(r) / "private/labels/zarr.json", lambda m: m.update(data_type="object")),
        "key_store", "secret/keys.zarr/private/labels", "unreadable metadata"),
}


@pytest.mark.parametrize("case", DAMAGES)
def test_hostile_release_or_key_store_gives_a_named_finding(release, case):
    damage, check, file, words = DAMAGES[case]
    damage(release)
    before = sorted(p.relative_to(release.parent) for p in release.parent.rglob("*"))
    with watchdog():
        report = audit(release, keys(release))
    found = [f for f in report.findings if f.check == check and f.file == file and words in f.message + f.where]
    assert found, [f.line() for f in report.findings]
    assert not report.sound
    assert not (release.parent / MARKER).exists(), "something was unpickled"
    assert sorted(p.relative_to(release.parent) for p in release.parent.rglob("*")) == before  # nothing written


@pytest.mark.parametrize("case", ["npy holding a pickled object", "key store chunk replaced by a pickle",
                                  "manifest names a file outside (../)", "public file is a symlink leaving the folder",
                                  "key store chunk symlinked outside"])
def test_every_command_survives_hostile_input(release, tmp_path, case, capsys):
    DAMAGES[case][0](release)
    with watchdog():
        assert main(["audit", str(release)]) == 3
        assert main(["inspect", str(release)]) == 0
        assert main(["inspect", str(release), "--keys", str(keys(release)), "--sheet", str(tmp_path / "s.png")]) in (0, 2)
        code = main(["reproduce", str(release), "--work", str(tmp_path)])
    assert code in (2, 3)
    out = capsys.readouterr()
    assert "Traceback" not in out.err and "internal error" not in out.err
    assert not (release.parent / MARKER).exists()


def test_open_key_store_refuses_before_reading(release):
    rewrite_json(keys(release) / "zarr.json", lambda m: m["attributes"]["params"].update(n_private=True))
    with pytest.raises(fmt.FormatError, match="field 'n_private' is True, expected int"):
        fmt.open_key_store(keys(release))


def test_public_zarr_chunk_with_hidden_padding_is_found(release):
    """Zarr pads the last chunk; data hidden in the padding is invisible to zarr but not to audit."""
    path = release / "public/public.zarr/label/c/0/0"
    data = bytearray(path.read_bytes())
    data[-8:] = b"secret!!"
    path.write_bytes(bytes(data))
    manifest = fmt.read_json(release / "public/manifest.json")
    manifest["files"]["public.zarr/label/c/0/0"] = fmt.sha256_file(path)
    fmt.write_json(release / "public/manifest.json", manifest)
    np.testing.assert_array_equal(zarr.open_array(str(release / "public/public.zarr/label"), mode="r")[...],
                                  np.load(release / "public/label.npy"))
    found = [f for f in audit(release, keys(release)).findings if f.check == "public_zarr"]
    assert [f.file for f in found] == ["public/public.zarr/label/c/0/0"]


def test_sheet_is_never_written_into_the_public_folder(tiny_release, capsys):
    sheet = tiny_release / "public" / "sheet.png"
    assert main(["inspect", str(tiny_release), "--keys", str(keys(tiny_release)), "--sheet", str(sheet)]) == 2
    assert "inside the release" in capsys.readouterr().err and not sheet.exists()


MANIFEST_FIELDS = ["format", "format_version", "generator", "generator.name", "params", "params.k", "params.mode",
                   "n_encryptions", "class_names", "pixel_domain", "arrays", "seed", "seed.kind", "sources",
                   "sources.private", "sources.private.images", "sources.private.notes", "sources.public.images", "key_store",
                   "key_store.commitment", "files", "files.label.npy"]


@pytest.mark.parametrize("field", MANIFEST_FIELDS)
def test_any_json_value_in_any_manifest_field_is_a_finding_never_a_crash(release, tmp_path, field, capsys):
    path = release / "public" / "manifest.json"
    original = path.read_text()
    *parents, last = ["files", field[6:]] if field.startswith("files.") else field.split(".")
    for value in (None, [], "x", -1):
        manifest = json.loads(original)
        target = manifest
        for key in parents:
            target = target[key]
        target[last] = value
        path.write_text(json.dumps(manifest))
        assert main(["audit", str(release)]) == 3, (field, value)
        assert main(["inspect", str(release)]) == 0, (field, value)
        if value is None:
            assert main(["reproduce", str(release), "--work", str(tmp_path)]) in (2, 3), (field, value)
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err


@pytest.mark.parametrize("field", sorted(FIELDS))
def test_a_manifest_without_a_field_is_a_finding_never_a_crash(release, tmp_path, field, capsys):
    """The audit, inspect and reproduce read the manifest through ``Manifest.from_json``, which names
    the missing field; before, a manifest without ``files`` crashed the audit (a KeyError, exit 1)."""
    rewrite_json(release / "public" / "manifest.json", lambda m: m.pop(field))
    assert main(["audit", str(release)]) == 3
    assert main(["inspect", str(release)]) == 0
    assert main(["reproduce", str(release), "--work", str(tmp_path)]) in (2, 3)
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err
