"""Issue #11 part 7: every public file is written once and hashed as it is written, ``--formats``
chooses the copies, and the release is synced to disk before it takes its name."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import zarr

from challenge import format as fmt
from challenge.errors import UsageError
from challenge.params import Params
from commands.release import reproduce
from generator import release as release_module
from generator.release import formats_of, generate, parse_formats
from tests.helpers import SEED, TINY, run_cli
from verifier.audit import audit

TINY_ARGS = ["--n-private", "20", "--per-image", "5"]
NPY_FILES = ["encryption.npy", "label.npy", "preview.png"]


def public_digests(release: Path) -> dict[str, str]:
    public = release / "public"
    return {name: hashlib.sha256((public / name).read_bytes()).hexdigest() for name in fmt.public_files(public)}


@pytest.fixture(scope="module")
def npy_release(tmp_path_factory, private_set, public_bank) -> Path:
    out = tmp_path_factory.mktemp("npy") / "release"
    generate(out, TINY, seed=SEED, private=private_set, public=public_bank, formats=("npy",))
    return out


def test_npy_only_release_holds_the_npy_files_and_nothing_else(npy_release, tiny_release):
    manifest = fmt.read_json(npy_release / "public" / "manifest.json")
    assert sorted(manifest["files"]) == NPY_FILES == fmt.public_files(npy_release / "public")
    assert manifest["files"] == public_digests(npy_release)
    # the same bytes as the default release's .npy files and preview: --formats only drops a copy
    default = fmt.read_json(tiny_release / "public" / "manifest.json")["files"]
    assert {name: default[name] for name in NPY_FILES} == manifest["files"]
    assert formats_of(manifest["files"]) == ("npy",) and formats_of(default) == ("npy", "zarr")


def test_npy_only_release_is_audited_reproduced_verified_and_inspected(npy_release, tmp_path):
    keys = npy_release / "secret" / "keys.zarr"
    report = audit(npy_release, keys)
    assert report.sound and report.status("public_zarr") == "n/a", report.findings
    _, differences = reproduce(npy_release, keys)
    assert differences == []
    assert run_cli("baseline", "oracle", "--release", str(npy_release), "--keys", str(keys), "--out", str(tmp_path / "sub")).returncode == 0
    assert run_cli(str(tmp_path / "sub"), "--keys", str(keys), module="commands.verify").returncode == 0
    result = run_cli("inspect", str(npy_release), "--keys", str(keys), "--sheet", str(tmp_path / "s.png"))
    assert result.returncode == 0 and "3 + manifest.json" in result.stdout, result.stdout + result.stderr
    result = run_cli("attack", "pool", "--release", str(npy_release), "--out", str(tmp_path / "pool"))
    assert result.returncode == 0, result.stderr


def test_audit_finds_a_public_zarr_added_to_an_npy_only_release(npy_release, tmp_path):
    import shutil
    release = shutil.copytree(npy_release, tmp_path / "r")
    zarr.open_group(str(release / "public" / "public.zarr"), mode="w-")
    report = audit(release, release / "secret" / "keys.zarr")
    assert not report.sound
    assert {f.check for f in report.findings} >= {"public_files", "public_zarr"}


@pytest.mark.parametrize("per_image,chunk", [(5, 7), (130, 300), (130, 4096), (103, 1024)])
def test_zarr_chunks_are_the_bytes_zarr_writes_whatever_the_chunk(tmp_path, private_set, public_bank, per_image, chunk):
    """Chunk files are written from the rows, not by zarr: byte for byte what zarr writes, at any --chunk."""
    params = Params(n_private=20, per_image=per_image)
    out = tmp_path / "r"
    generate(out, params, seed=SEED, private=private_set, public=public_bank, chunk=chunk)
    public = out / "public"
    manifest = fmt.read_json(public / "manifest.json")
    assert manifest["files"] == public_digests(out)
    for name, file, rows in (("encryption", "encryption.npy", 1024), ("label", "label.npy", fmt.ROWS_PER_ZARR_CHUNK)):
        data = np.load(public / file, allow_pickle=False)
        written = {}
        array = zarr.create_array(zarr.storage.MemoryStore(written), shape=data.shape, chunks=(rows, *data.shape[1:]),
                                  dtype="float32", compressors=None, fill_value=0)
        array[...] = data
        expected = {key: value.to_bytes() for key, value in written.items() if key != "zarr.json"}
        ours = {p.relative_to(public / "public.zarr" / name).as_posix(): p.read_bytes()
                for p in (public / "public.zarr" / name).rglob("*") if p.is_file() and p.name != "zarr.json"}
        assert ours == expected
        assert np.array_equal(zarr.open_array(str(public / "public.zarr" / name), mode="r")[...], data)


def test_npy_only_bytes_do_not_depend_on_threads_or_chunk(tmp_path):
    runs = []
    for threads, chunk in (("1", "7"), ("2", "4096")):
        out = tmp_path / f"r{threads}"
        env = dict(os.environ, NUMBA_NUM_THREADS=threads)
        result = run_cli("generate", "--out", str(out), "--practice", "--seed", "kat", "--chunk", chunk,
                         "--formats", "npy", *TINY_ARGS, env=env)
        assert result.returncode == 0, result.stderr
        runs.append(public_digests(out))
    assert runs[0] == runs[1] and sorted(runs[0]) == NPY_FILES


def test_generate_never_reads_back_what_it_wrote_to_hash_it(tmp_path, private_set, public_bank, monkeypatch):
    hashed = []
    real = fmt.sha256_file
    monkeypatch.setattr(fmt, "sha256_file", lambda path, *a: hashed.append(Path(path).name) or real(path, *a))
    generate(tmp_path / "r", TINY, seed=SEED, private=private_set, public=public_bank)
    # only the small files zarr and Pillow write themselves: zarr.json and preview.png
    assert set(hashed) <= {"zarr.json", "preview.png"}, hashed


def test_every_file_is_synced_before_the_release_takes_its_name(tmp_path, private_set, public_bank, monkeypatch):
    synced = set()
    real_fsync, real_publish = os.fsync, release_module._publish

    def fsync(fd):
        synced.add(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def publish(tmp, out):
        everything = {str(p) for p in tmp.rglob("*")} | {str(tmp)}
        assert everything <= synced, sorted(everything - synced)[:3]
        real_publish(tmp, out)

    monkeypatch.setattr(release_module.os, "fsync", fsync)
    monkeypatch.setattr(release_module, "_publish", publish)
    generate(tmp_path / "r", TINY, seed=SEED, private=private_set, public=public_bank)
    assert str(tmp_path) in synced  # the rename itself, too


@pytest.mark.parametrize("text", ["zarr", "npy,hdf5", "", "npy;zarr"])
def test_formats_without_npy_or_unknown_are_refused(text, tmp_path):
    with pytest.raises(UsageError, match=f"formats={text!r}: "):
        parse_formats(text)
    result = run_cli("generate", "--out", str(tmp_path / "r"), "--formats", text, *TINY_ARGS)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1 and "--formats" in result.stderr
    assert not (tmp_path / "r").exists()


def test_formats_order_and_spaces_do_not_matter():
    assert parse_formats("zarr, npy") == parse_formats("npy,zarr") == ("npy", "zarr")
    assert parse_formats("npy") == ("npy",)
