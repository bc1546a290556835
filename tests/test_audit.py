"""``instahide audit``: sound on fresh releases, and each planted fault is found and named."""

import json
import re
import shutil
import tracemalloc

import numpy as np
import pytest
import zarr
from PIL import Image

from challenge import files, format as fmt
from challenge.keystream import stream_key
from commands.main import main
from challenge.params import Params
from generator.release import generate
from tests.helpers import SEED, run_cli
from verifier.audit import CHECKS, _contains, _hash_groups, audit


@pytest.fixture
def release(tiny_release, tmp_path):
    """A private copy of the tiny release, free to damage."""
    return shutil.copytree(tiny_release, tmp_path / "release")


def keys(release):
    return release / "secret" / "keys.zarr"


def run(release, store=None, chunk=4096):
    return audit(release, store or keys(release), chunk=chunk)


def findings(report, check):
    return [f for f in report.findings if f.check == check]


def rehash(release):
    """Make the manifest list the files' current digests, as a careless or dishonest maintainer would."""
    path = release / "public" / "manifest.json"
    manifest = fmt.read_json(path)
    manifest["files"] = {name: fmt.sha256_file(release / "public" / name) for name in fmt.public_files(release / "public")}
    fmt.write_json(path, manifest)


def edit_key(release, name, change):
    array = zarr.open_group(str(keys(release)), mode="r+")[name]
    data = array[...]
    change(data)
    array[...] = data


def test_fresh_release_is_sound_with_every_check(tiny_release):
    report = run(tiny_release)
    assert report.sound, [f.line() for f in report.findings]
    assert [report.status(c) for c in CHECKS] == ["ok"] * len(CHECKS)
    assert run(tiny_release, chunk=7).sound  # chunk boundaries change nothing


@pytest.mark.parametrize("params", [
    Params(mode="inside", k=3, k_private=3, n_private=6, per_image=3),
    Params(mode="mixup", n_private=6, per_image=3, domain="positive"),
    Params(k=4, k_private=1, n_private=10, per_image=2, balanced=True),
])
def test_fresh_releases_of_every_mode_are_sound(tmp_path, private_set, public_bank, params):
    generate(tmp_path / "r", params, seed=SEED, private=private_set, public=public_bank)
    report = run(tmp_path / "r")
    assert report.sound, [f.line() for f in report.findings]


def test_flipped_mask_bit(release):
    edit_key(release, "encryption/sign_bits", lambda a: a.__setitem__((7, 10), a[7, 10] ^ 8))
    report = run(release)
    assert {f.check for f in report.findings} == {"commitment", "seed_keys", "encryptions"}
    assert findings(report, "encryptions")[0].where == "row 7"
    assert findings(report, "seed_keys")[0].file == "secret/keys.zarr/encryption/sign_bits"


def test_changed_lambda_within_the_rules(release):
    """Swapping the two private lambdas of a row keeps every constraint: only the seed and the encryption tell."""
    edit_key(release, "encryption/lam", lambda a: a.__setitem__((3, slice(0, 2)), a[3, 1::-1].copy()))
    report = run(release)
    assert {"commitment", "seed_keys", "encryptions"} <= {f.check for f in report.findings}
    assert not findings(report, "lambda")
    assert [f.where for f in findings(report, "encryptions")] == ["row 3"]


def test_changed_lambda_breaking_c1_and_the_sum(release):
    edit_key(release, "encryption/lam", lambda a: a.__setitem__(5, [0.7, 0.06, 0.06, 0.06, 0.06, 0.06]))
    edit_key(release, "encryption/lam", lambda a: a.__setitem__((9, 0), a[9, 0] + np.float32(0.01)))
    messages = {(f.where, f.message) for f in findings(run(release), "lambda")}
    assert ("row 5", "max lambda > c1 = 0.65") in messages
    assert ("row 9", "lambdas do not sum to 1") in messages


def test_swapped_rows_in_the_published_encryptions(release):
    enc = np.load(release / "public" / "encryption.npy")
    enc[[3, 4]] = enc[[4, 3]]
    np.save(release / "public" / "encryption.npy", enc)
    report = run(release)
    assert findings(report, "digests")[0].file == "public/encryption.npy"
    rehash(release)  # even with a consistent manifest:
    report = run(release)
    assert [f.where for f in findings(report, "encryptions")] == ["row 3 (+1 more)"]
    assert not findings(report, "digests")


def test_every_listed_file_is_hashed(release):
    """Each file the manifest lists, in turn, with a digest that is not its own: a digest finding
    naming that file and nothing else (the content checks stay quiet: the bytes are the release's)."""
    path = release / "public" / "manifest.json"
    manifest = fmt.read_json(path)
    names = sorted(manifest["files"])
    assert {"encryption.npy", "label.npy", "preview.png", "public.zarr/zarr.json"} <= set(names)
    for name in names:
        digest = manifest["files"][name]
        fmt.write_json(path, {**manifest, "files": {**manifest["files"], name: digest[:-1] + "0f"[digest[-1] == "0"]}})
        report = run(release)
        assert [(f.check, f.file) for f in report.findings] == [("digests", f"public/{name}")], name
    fmt.write_json(path, manifest)
    assert run(release).sound


@pytest.mark.parametrize("task_bytes", [1, 5000, 1 << 40])
def test_digests_hashed_in_tasks_of_any_size_find_every_changed_file(release, monkeypatch, task_bytes):
    """Each task hashes a group of files (one file each, a few, or all): every changed digest is
    found whichever group it is in, once, with both digests' first 16 digits."""
    import verifier.audit

    monkeypatch.setattr(verifier.audit, "HASH_TASK_BYTES", task_bytes)
    path = release / "public" / "manifest.json"
    manifest = fmt.read_json(path)
    changed = sorted(manifest["files"])[::3]
    wrong = {name: "0" * 64 if manifest["files"][name] != "0" * 64 else "1" * 64 for name in changed}
    fmt.write_json(path, {**manifest, "files": {**manifest["files"], **wrong}})
    found = findings(run(release), "digests")
    assert [(f.file, f.message) for f in found] == [
        (f"public/{name}", f"SHA-256 {manifest['files'][name][:16]}... differs from public/manifest.json's {wrong[name][:16]}...")
        for name in changed]


@pytest.mark.parametrize("sizes", [[], [1], [3, 1, 4, 1, 5, 9, 2, 6], [10, 0, 0, 10, 0]])
@pytest.mark.parametrize("task_bytes", [1, 4, 10, 100])
def test_hash_groups_cut_the_files_in_order(sizes, task_bytes, monkeypatch):
    import verifier.audit

    monkeypatch.setattr(verifier.audit, "HASH_TASK_BYTES", task_bytes)
    names = [f"f{i}" for i in range(len(sizes))]
    groups = list(_hash_groups(names, dict(zip(names, sizes))))
    assert [name for group in groups for name in group] == names and all(groups)
    weight = [sum(sizes[names.index(n)] for n in group) for group in groups]
    assert all(w >= task_bytes for w in weight[:-1])  # every group but the last reaches the task size...
    assert all(w - sizes[names.index(group[-1])] < task_bytes for w, group in zip(weight, groups))  # ...and no more


@pytest.mark.parametrize("block", [1, 2, 3, 7, 64, 1 << 20])
def test_secret_search_finds_a_needle_across_block_boundaries(tmp_path, block):
    needles = (b"SECRET-SEED", b"ab")
    for at in range(0, 40):
        path = tmp_path / f"f{at}"
        path.write_bytes(b"x" * at + needles[0] + b"y" * 5)
        assert _contains(path, needles, block), (at, block)
    (tmp_path / "clean").write_bytes(b"SECRET-SEE" + b"x" * 50 + b"a" + b"x" + b"b")
    assert not _contains(tmp_path / "clean", needles, block)


def test_swapped_rows_in_the_key_store(release):
    edit_key(release, "encryption/private_index", lambda a: a.__setitem__([3, 4], a[[4, 3]]))
    report = run(release)
    assert {"commitment", "seed_keys", "encryptions", "labels"} <= {f.check for f in report.findings}


def test_private_image_copied_into_public(release):
    truth = zarr.open_array(str(keys(release) / "private" / "images"), mode="r")[:1]
    np.save(release / "public" / "ground_truth.npy", truth)
    found = findings(run(release), "public_files")
    assert [(f.file, f.message) for f in found] == [
        ("public/ground_truth.npy", "not listed in the manifest and not a file the format declares public")]
    rehash(release)  # listed in the manifest with the right digest: still not a public file
    found = findings(run(release), "public_files")
    assert [f.file for f in found] == ["public/ground_truth.npy"] and "not a file the format declares" in found[0].message


def test_unlisted_files_the_format_declares_are_named_as_such(release):
    """A declared public file missing from the manifest's list is "not listed", not also "not a
    file the format declares": the finding says which of the two the maintainer got wrong."""
    path = release / "public" / "manifest.json"
    manifest = fmt.read_json(path)
    chunk = sorted(name for name in manifest["files"] if name.startswith("public.zarr/encryption/c/"))[0]
    fmt.write_json(path, {**manifest, "files": {k: v for k, v in manifest["files"].items() if k not in ("preview.png", chunk)}})
    found = findings(run(release), "public_files")
    assert [(f.file, f.message) for f in found] == [
        ("public/preview.png", "not listed in the manifest"), (f"public/{chunk}", "not listed in the manifest")]


def test_private_image_hidden_in_declared_files(release):
    truth = zarr.open_array(str(keys(release) / "private" / "images"), mode="r")[0]
    Image.fromarray(np.tile(truth, (7, 7, 1))[:202, :202]).save(release / "public" / "preview.png")
    (release / "public" / "public.zarr" / "encryption" / "c" / "1" / "0" / "0").mkdir(parents=True)
    (release / "public" / "public.zarr" / "encryption" / "c" / "1" / "0" / "0" / "0").write_bytes(truth.tobytes())
    rehash(release)
    report = run(release)
    assert findings(report, "preview")[0].file == "public/preview.png"
    assert findings(report, "public_zarr")[0].file == "public/public.zarr/encryption/c/1/0/0/0"


SEED_FIELD = "expected {kind: strong|practice, replayable: kind == practice, note: the generator's note for the kind}"


@pytest.mark.parametrize("edit, expected", [
    (lambda m: {**m, "extra": 1}, [("", "fields: unexpected ['extra'], missing []")]),
    (lambda m: {k: v for k, v in m.items() if k != "sources"} | {"x": 0},
     [("", "fields: unexpected ['x'], missing ['sources']")]),
    (lambda m: {**m, "seed": {**m["seed"], "note": m["seed"]["note"] + "."}}, [("seed", SEED_FIELD)]),
    (lambda m: {**m, "seed": {**m["seed"], "replayable": not m["seed"]["replayable"]}}, [("seed", SEED_FIELD)]),
    (lambda m: {**m, "seed": {**m["seed"], "kind": "weak"}}, [("seed", SEED_FIELD)]),
    (lambda m: {**m, "seed": {**m["seed"], "extra": 1}}, [("seed", SEED_FIELD)]),
])
def test_manifest_fields_and_seed_record_are_checked_exactly(release, edit, expected):
    path = release / "public" / "manifest.json"
    fmt.write_json(path, edit(fmt.read_json(path)))
    found = [(f.where, f.message) for f in findings(run(release), "manifest")]
    assert [f for f in found if f[0] in ("", "seed")] == expected


def test_seed_in_manifest_is_found(release):
    path = release / "public" / "manifest.json"
    manifest = fmt.read_json(path)
    manifest["sources"]["private"]["fingerprint"] = SEED.hex()
    fmt.write_json(path, manifest)
    assert findings(run(release), "secrets")[0].file == "public/manifest.json"


@pytest.mark.parametrize("encoding", ["raw", "hex", "HEX"])
@pytest.mark.parametrize("secret", ["seed", "stream key"])
@pytest.mark.parametrize("name", ["preview.png", "public.zarr/zarr.json", "public.zarr/encryption/zarr.json"])
def test_a_secret_in_any_public_file_not_rederived_is_found(release, name, secret, encoding):
    """The files whose bytes the audit does not re-derive from the keys (the manifest, the preview,
    the Zarr metadata) are searched for the seed and the stream key, raw or as hex."""
    store = fmt.open_key_store(keys(release))
    value = store.read("seed").tobytes()
    if secret == "stream key":
        value = stream_key(value, store.attrs["stream_context"], store.version)
    planted = {"raw": value, "hex": value.hex().encode(), "HEX": value.hex().upper().encode()}[encoding]
    path = release / "public" / name
    path.write_bytes(path.read_bytes() + planted)
    found = findings(run(release), "secrets")
    assert [(f.file, f.message) for f in found] == [(f"public/{name}", "contains the secret seed")]


def test_a_file_that_cannot_be_searched_for_secrets_is_named(release, monkeypatch):
    """Not searched is not clean: a file the search cannot read is a finding, with the reason."""
    import verifier.audit

    def unreadable(path, needles):
        raise files.UnsafeFile(f"{path}: cannot be read: Permission denied")
    monkeypatch.setattr(verifier.audit, "_contains", unreadable)
    found = findings(run(release), "secrets")
    assert [(f.file, f.message) for f in found][0] == ("public/manifest.json", "not searched: cannot be read: Permission denied")
    assert {f.file for f in found} == {"public/manifest.json", "public/preview.png"} | {
        f"public/{n}" for n in fmt.read_json(release / "public" / "manifest.json")["files"] if n.endswith("zarr.json")}


def test_a_symlinked_manifest_is_a_finding_not_searched_through(release, tmp_path):
    """...and the files after it are still searched."""
    manifest = release / "public" / "manifest.json"
    manifest.rename(tmp_path / "elsewhere.json")
    manifest.symlink_to(tmp_path / "elsewhere.json")
    with open(release / "public" / "preview.png", "ab") as preview:
        preview.write(SEED.hex().encode())
    report = run(release)
    assert [f.file for f in findings(report, "public_files")] == ["public/manifest.json"]
    assert [f.file for f in findings(report, "secrets")] == ["public/preview.png"]


def test_key_store_that_differs_from_the_commitment(release):
    group = zarr.open_group(str(keys(release)), mode="r+")
    group.attrs["private_source"] = {"files": ["other.npz"], "origin_columns": ["file", "record"]}
    report = run(release)
    assert [f.check for f in report.findings] == ["commitment"], [f.line() for f in report.findings]
    actual, published = fmt.commitment(fmt.open_key_store(keys(release))), fmt.read_json(
        release / "public" / "manifest.json")["key_store"]["commitment"]
    assert (report.findings[0].file, report.findings[0].message) == (
        "secret/keys.zarr", f"hashes to {actual[:23]}..., but public/manifest.json key_store.commitment is "
        f"{published[:23]}...: this is not the committed key store (or the manifest was changed)")


def test_key_store_of_another_release(release, tmp_path, private_set, public_bank):
    from tests.helpers import TINY
    generate(tmp_path / "other", TINY, seed=bytes(32), private=private_set, public=public_bank)
    report = run(release, keys(tmp_path / "other"))
    assert {"commitment", "encryptions", "labels"} <= {f.check for f in report.findings}
    assert findings(report, "commitment")[0].file == str(keys(tmp_path / "other"))


def _unverifiable_spans(text: str) -> list[range]:
    """Manifest bytes only the source data can confirm (fingerprints, generator version): reproduce's job."""
    spans = [range(*m.span(1)) for m in re.finditer(r'"fingerprint": "([0-9a-f]{64})"', text)]
    return spans + [range(*re.search(r'"version": "([^"]*)"', text).span(1))]


def _decoded_chunk(release, rel: str):
    """The values of the key-store array whose chunk file is ``rel`` (None for other files or undecodable ones)."""
    if not rel.startswith("secret/keys.zarr/") or "/c/" not in rel:
        return None
    name = rel.removeprefix("secret/keys.zarr/").split("/c/")[0]
    try:
        return zarr.open_group(str(keys(release)), mode="r")[name][...]
    except Exception:  # a damaged chunk: not inert
        return None


def test_a_corrupted_byte_anywhere_is_detected_and_named(release):
    rng = np.random.default_rng(2024)
    files = sorted(p for p in release.rglob("*") if p.is_file())
    assert len(files) > 30
    for path in files:
        rel = path.relative_to(release).as_posix()
        data = bytearray(path.read_bytes())
        skip = _unverifiable_spans(data.decode()) if path.name == "manifest.json" else []
        for _ in range(2):
            i = int(rng.integers(len(data)))
            while any(i in span for span in skip):
                i = int(rng.integers(len(data)))
            bit = 1 << int(rng.integers(8))
            data[i] ^= bit
            path.write_bytes(bytes(data))
            try:
                report = run(release)
                flipped = _decoded_chunk(release, rel)
            finally:
                data[i] ^= bit
                path.write_bytes(bytes(data))
            named = [f for f in report.findings if rel == f.file or rel.startswith(f.file + "/") or rel in f.message]
            # zstd ignores a few bits of a frame: a flip that leaves every decoded key as it was changed no key
            inert = flipped is not None and np.array_equal(flipped, _decoded_chunk(release, rel))
            assert named or inert, f"byte {i} bit {bit} of {rel}: {[f.line() for f in report.findings]}"
    assert run(release).sound


def test_memory_does_not_grow_with_the_number_of_encryptions(tmp_path, private_set):
    """Audit streams: 8x the encryptions, the same peak (well below the size of encryption.npy)."""
    peaks = []
    for per_image in (50, 400):
        out = tmp_path / str(per_image)
        generate(out, Params(mode="inside", k=2, k_private=2, c1=0.9, c2=0.0, n_private=10, per_image=per_image),
                 seed=SEED, private=private_set, public=None)
        tracemalloc.start()
        try:
            assert run(out, chunk=256).sound
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    big = (tmp_path / "400" / "public" / "encryption.npy").stat().st_size
    assert peaks[1] < big / 3 and peaks[1] < peaks[0] + 2**20, (peaks, big)


def test_cli_exit_codes_table_and_json(release, tiny_release, tmp_path, capsys):
    result = run_cli("audit", str(tiny_release), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["sound"] is True

    assert main(["audit", str(tiny_release)]) == 0
    table = capsys.readouterr().out
    assert all(check in table for check in CHECKS) and "sound: every check passed" in table

    edit_key(release, "encryption/lam", lambda a: a.__setitem__((0, 0), 0.5))
    assert main(["audit", str(release), "--json"]) == 3
    report = json.loads(capsys.readouterr().out)
    assert report["sound"] is False and {"file", "where", "message", "check"} == set(report["findings"][0])

    assert main(["audit", str(tmp_path / "nothing")]) == 2
    assert "not a release" in capsys.readouterr().err
    assert main(["audit", str(tiny_release), "--keys", str(tmp_path)]) == 2
    assert "not a key store" in capsys.readouterr().err
