import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import zarr

from challenge import format as fmt
from challenge.errors import UsageError
from generator import release as release_module
from generator.release import generate
from tests.helpers import SEED, TINY, run_cli

TINY_ARGS = ["--n-private", "20", "--per-image", "5"]


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_release_layout_and_manifest_digests(tiny_release):
    public = tiny_release / "public"
    assert sorted(p.name for p in tiny_release.iterdir()) == ["public", "secret"]
    manifest = fmt.read_json(public / "manifest.json")
    assert set(manifest["files"]) == set(fmt.public_files(public))
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((public / name).read_bytes()).hexdigest() == digest
    enc = np.load(public / "encryption.npy", allow_pickle=False)
    assert enc.dtype == np.float32 and enc.shape == (100, 32, 32, 3)
    assert np.array_equal(zarr.open_array(str(public / "public.zarr" / "encryption"), mode="r")[...], enc)
    assert np.abs(enc).max() <= 1.0
    assert manifest["pixel_domain"]["name"] == "centered" and manifest["seed"]["replayable"] is False


def test_labels_are_lambda_weighted_one_hots(tiny_release):
    keys = fmt.open_key_store(tiny_release / "secret" / "keys.zarr")
    labels = np.load(tiny_release / "public" / "label.npy", allow_pickle=False)
    lam, index, classes = keys.read("encryption/lam"), keys.read("encryption/private_index"), keys.read("private/labels")
    expected = np.zeros((100, 10))
    for i in range(100):
        for j in range(2):
            expected[i, classes[index[i, j]]] += float(lam[i, j])
    assert labels.dtype == np.float32 and np.array_equal(labels, expected.astype(np.float32))
    assert np.all(labels.sum(axis=1) >= 0.3 - 1e-6)


def test_commitment_matches_key_store(tiny_release):
    manifest = fmt.read_json(tiny_release / "public" / "manifest.json")
    keys = fmt.open_key_store(tiny_release / "secret" / "keys.zarr")
    assert fmt.commitment(keys) == manifest["key_store"]["commitment"]


def test_public_release_holds_no_secret(tiny_release):
    keys = fmt.open_key_store(tiny_release / "secret" / "keys.zarr")
    public_blob = b"".join(tree_bytes(tiny_release / "public").values())
    assert SEED not in public_blob and SEED.hex().encode() not in public_blob
    for row in keys.read("private/images")[:20]:
        assert row.tobytes() not in public_blob
    for row in keys.read("encryption/sign_bits")[:20]:
        assert row.tobytes() not in public_blob
    for row in keys.read("encryption/private_index")[:20]:
        assert row.tobytes() not in public_blob
    for row in keys.read("encryption/lam")[:20]:
        assert row.tobytes() not in public_blob
    assert fmt.public_files(tiny_release / "public")[:4] == ["encryption.npy", "label.npy", "preview.png", "public.zarr/encryption/c/0/0/0/0"]


def test_same_seed_same_bytes_whatever_threads_and_chunk(tmp_path):
    runs = []
    for threads, chunk in (("1", "7"), ("2", "4096")):
        out = tmp_path / f"r{threads}"
        env = dict(os.environ, NUMBA_NUM_THREADS=threads)
        result = run_cli("generate", "--out", str(out), "--seed", "9e3b71c05fa2d846b1e07c3a5d92f4680ca7e1b53d6f082947bc1ea5603fd28b", "--chunk", chunk, *TINY_ARGS, env=env)
        assert result.returncode == 0, result.stderr
        runs.append(tree_bytes(out))
    assert runs[0].keys() == runs[1].keys() and len(runs[0]) > 20
    for name in runs[0]:
        assert runs[0][name] == runs[1][name], name
    assert not any(str(tmp_path).encode() in blob for blob in runs[0].values())


def test_different_seeds_give_different_releases(tmp_path, private_set, public_bank):
    a = generate(tmp_path / "a", TINY, seed=SEED, private=private_set, public=public_bank)
    b = generate(tmp_path / "b", TINY, seed=bytes(32), private=private_set, public=public_bank)
    assert a["files"]["encryption.npy"] != b["files"]["encryption.npy"]
    assert a["key_store"]["commitment"] != b["key_store"]["commitment"]


def test_failure_midway_leaves_nothing(tmp_path, private_set, public_bank, monkeypatch):
    calls = []

    def failing_encode(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_encode(*args, **kwargs)

    real_encode = release_module.encode
    monkeypatch.setattr(release_module, "encode", failing_encode)
    with pytest.raises(UsageError, match="No space left"):
        generate(tmp_path / "out", TINY, seed=SEED, private=private_set, public=public_bank, chunk=10)
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_kept_unless_forced(tmp_path, private_set, public_bank):
    out = tmp_path / "out"
    first = generate(out, TINY, seed=SEED, private=private_set, public=public_bank)
    with pytest.raises(UsageError, match="already exists"):
        generate(out, TINY, seed=bytes(32), private=private_set, public=public_bank)
    assert fmt.read_json(out / "public" / "manifest.json") == first
    second = generate(out, TINY, seed=bytes(32), private=private_set, public=public_bank, force=True)
    assert fmt.read_json(out / "public" / "manifest.json") == second != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    (tmp_path / "notarelease").mkdir()
    with pytest.raises(UsageError, match="not a release"):
        generate(tmp_path / "notarelease", TINY, seed=SEED, private=private_set, public=public_bank, force=True)
