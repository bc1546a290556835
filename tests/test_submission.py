"""Submission validation: every bad submission gets its message and exit code 2."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from generator.release import generate
from tests.helpers import TINY, manifest_json, run_cli
from commands import verify as cli
from challenge.manifest import Manifest
from challenge.submission import Expected, expected_from_params
from verifier.submission import _check_metadata, _tally_rows, check_shape, validate
from tests.naive import tally_rows_reference

N = 100  # encryptions in the tiny release


def make(folder: Path, array=None, raw: bytes | None = None, metadata=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if array is not None:
        np.save(folder / "decryption.npy", array, allow_pickle=True)
    if raw is not None:
        (folder / "decryption.npy").write_bytes(raw)
    if metadata is not None:
        text = metadata if isinstance(metadata, str) else json.dumps(metadata)
        (folder / "metadata.json").write_text(text)
    return folder


def verify(capsys, *args) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def good(dtype="float32") -> np.ndarray:
    return np.zeros((N, 32, 32, 3), dtype)


def npy_bytes(array: np.ndarray) -> bytes:
    import io
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


class Unpickled:
    """Unpickling this touches a marker file: the proof that a pickle was (wrongly) loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def with_nan():
    a = good()
    a[3, 0, 0, 0] = np.nan
    a[9, 1, 2, 0] = np.inf
    return a


def out_of_range():
    a = good("float64")
    a[5, :, :, 0] = 1.5
    return a


BAD = {
    "nchw": (lambda t: make(t, np.zeros((N, 3, 32, 32), np.float32)), "transpose(0, 2, 3, 1)"),
    "flat": (lambda t: make(t, np.zeros((N, 3072), np.float32)), "reshape(-1, 32, 32, 3)"),
    "rows": (lambda t: make(t, np.zeros((N - 1, 32, 32, 3), np.float32)), "one row per encryption"),
    "dtype": (lambda t: make(t, np.zeros((N, 32, 32, 3), np.int32)), "dtype int32; expected float32 or float64"),
    "nan": (lambda t: make(t, with_nan()), "2 NaN or infinite value(s) in 2 row(s) (first: row 3)"),
    "range": (lambda t: make(t, out_of_range()), "1,024 value(s) in 1 row(s) (first: row 5) lie outside [-1, 1]"),
    "text": (lambda t: make(t, raw=b"this is not numpy"), "not a .npy file"),
    "empty": (lambda t: make(t, raw=b""), "not a .npy file"),
    "truncated": (lambda t: make(t, raw=npy_bytes(good())[:-100]), "truncated"),
    "trailing": (lambda t: make(t, raw=npy_bytes(good()) + b"x"), "1 bytes after the array"),
    "fortran": (lambda t: make(t, np.asfortranarray(good())), "Fortran order"),
    "objects": (lambda t: make(t, np.array([1, "a"], dtype=object)), "pickled data is refused"),
    "missing": (lambda t: make(t), "decryption.npy: missing"),
    "metadata-json": (lambda t: make(t, good(), metadata="{not json"), "metadata.json: not valid JSON"),
    "metadata-list": (lambda t: make(t, good(), metadata=[1, 2]), "a JSON list; expected an object"),
    "metadata-field": (lambda t: make(t, good(), metadata={"team": 7}), "field 'team' must be a string"),
    "metadata-unknown": (lambda t: make(t, good(), metadata={"teem": "x"}), "unknown fields 'teem'"),
    "metadata-date": (lambda t: make(t, good(), metadata={"date": "last week"}), "expected an ISO 8601 date"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_submission_is_named_and_exits_2(tmp_path, capsys, tiny_release, case):
    build, message = BAD[case]
    folder = build(tmp_path / case)
    code, out, err = verify(capsys, folder, "--release", tiny_release)
    assert code == 2, err
    assert message in err, err
    assert "Traceback" not in err and out == ""


def test_malicious_pickle_is_never_unpickled(tmp_path, capsys, tiny_release):
    marker = tmp_path / "unpickled"
    np.save(tmp_path / "decryption.npy", np.array([Unpickled(marker)], dtype=object), allow_pickle=True)
    assert pickle.loads(pickle.dumps(Unpickled(tmp_path / "control"))) is None  # the trap works
    assert (tmp_path / "control").exists()
    code, _, err = verify(capsys, tmp_path, "--release", tiny_release)
    assert code == 2 and "pickled data is refused" in err
    assert not marker.exists()


def test_huge_file_is_refused_unread(tmp_path, capsys, tiny_release):
    folder = make(tmp_path / "huge")
    with open(folder / "decryption.npy", "wb") as f:
        f.write(npy_bytes(good())[:128])  # a valid header ...
        f.truncate(50 * 10**9)  # ... then a sparse 50 GB: reading it would take minutes
    code, _, err = verify(capsys, folder, "--release", tiny_release)
    assert code == 2 and "refused without reading it" in err and "50,000,000,000 bytes" in err


def test_all_problems_are_listed_in_one_run(tmp_path, capsys, tiny_release):
    a = with_nan()
    a[7] = -3.0
    folder = make(tmp_path, a, metadata={"team": 1, "date": "soon", "extra": True})
    code, _, err = verify(capsys, folder, "--release", tiny_release)
    assert code == 2
    assert "5 problem(s)" in err
    for message in ("NaN or infinite", "lie outside", "'team' must be a string", "ISO 8601", "unknown fields"):
        assert message in err


def test_valid_submissions_without_keys(tmp_path, capsys, tiny_release):
    samples = {
        "float32": good(),
        "float64-big-endian": np.full((N, 32, 32, 3), 0.5, ">f8"),
        "uint8": np.full((N, 32, 32, 3), 255, np.uint8),
        "within-tolerance": np.full((N, 32, 32, 3), 1.0015, np.float32),
    }
    for name, array in samples.items():
        folder = make(tmp_path / name, array, metadata={"team": "t", "date": "2020-11-01T10:00:00+01:00"})
        code, out, err = verify(capsys, folder, "--release", tiny_release / "public")
        assert (code, err) == (0, ""), name
        assert "valid, not scored" in out
    assert not list(tmp_path.rglob("scores.*"))


def test_range_follows_the_domain(tmp_path):
    folder = make(tmp_path, np.full((10, 32, 32, 3), -0.5, np.float32))
    assert validate(folder, Expected(10, "centered", (32, 32, 3))).valid
    problems = validate(folder, Expected(10, "positive", (32, 32, 3))).problems
    assert len(problems) == 1 and "outside [0, 1], the release's positive domain (tolerance 0.001)" in problems[0]


def test_blocks_do_not_change_the_verdict(tmp_path):
    a = with_nan()
    folder = make(tmp_path, a)
    one = validate(folder, Expected(N, "centered", (32, 32, 3)), rows=N).problems
    small = validate(folder, Expected(N, "centered", (32, 32, 3)), rows=3).problems
    assert one == small and len(one) == 1


def test_messages_do_not_depend_on_the_keys(tmp_path, capsys, tiny_release):
    folder = make(tmp_path, out_of_range(), metadata={"team": 3})
    keys = tiny_release / "secret" / "keys.zarr"
    without = verify(capsys, folder, "--release", tiny_release)
    with_keys = verify(capsys, folder, "--keys", keys)
    assert without == with_keys and without[0] == 2


def test_json_lists_problems(tmp_path, capsys, tiny_release):
    folder = make(tmp_path, np.zeros((N, 3, 32, 32), np.float32))
    code, out, _ = verify(capsys, folder, "--release", tiny_release, "--json")
    report = json.loads(out)
    assert code == 2 and report["valid"] is False and "NCHW" in report["problems"][0]


def test_bad_arguments_exit_2(tmp_path, capsys, tiny_release):
    folder = make(tmp_path / "s", good())
    assert verify(capsys, folder)[0] == 2
    code, _, err = verify(capsys, folder / "decryption.npy", "--release", tiny_release)
    assert code == 2 and "pass the folder that holds it" in err
    code, _, err = verify(capsys, folder, "--release", tmp_path)
    assert code == 2 and "not a release" in err
    code, _, err = verify(capsys, folder, "--keys", tmp_path)
    assert code == 2 and "not a key store" in err
    manifest = tmp_path / "other" / "public" / "manifest.json"
    manifest.parent.mkdir(parents=True)
    m = manifest_json(tiny_release)
    manifest.write_text(json.dumps({**m, "params": {**m["params"], "c1": 0.6}}))
    code, _, err = verify(capsys, folder, "--release", tmp_path / "other", "--keys", tiny_release / "secret" / "keys.zarr")
    assert code == 2 and "manifest parameters differ" in err and "the manifest was changed" in err


def test_keys_of_another_release_with_the_same_parameters(tmp_path, capsys, tiny_release, private_set, public_bank):
    """Same parameters, same data, another seed: only the commitment tells the key stores apart."""
    other = tmp_path / "other"
    generate(other, TINY, seed=bytes(32), private=private_set, public=public_bank)
    assert manifest_json(other)["params"] == manifest_json(tiny_release)["params"]
    folder = make(tmp_path / "s", good())
    code, _, err = verify(capsys, folder, "--release", tiny_release, "--keys", other / "secret" / "keys.zarr")
    published = manifest_json(tiny_release)["key_store"]["commitment"]
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"differs from {published}" in err and err.rstrip().endswith("not this release's keys")
    code, out, err = verify(capsys, folder, "--release", tiny_release, "--keys", tiny_release / "secret" / "keys.zarr")
    assert code == 0 and "valid, scored on 100 encryptions" in out, err  # its own keys pass the same check


@pytest.mark.parametrize("published", [123, None, "sha256:" + "g" * 64, "SHA256:" + "0" * 64, "x" * 200])
def test_a_malformed_commitment_in_the_manifest_is_named(tmp_path, capsys, tiny_release, published):
    release = tmp_path / "release"
    shutil.copytree(tiny_release / "public", release / "public")
    manifest = manifest_json(release)
    (release / "public" / "manifest.json").write_text(json.dumps({**manifest, "key_store": {"commitment": published}}))
    code, _, err = verify(capsys, make(tmp_path / "s", good()), "--release", release, "--keys", tiny_release / "secret" / "keys.zarr")
    path = release / "public" / "manifest.json"
    assert code == 2 and err == (f"verify: error: {path}: key_store: expected {{commitment: sha256:<64 hex>, "
                                 "scheme: instahide-key-commitment-v2}\n")


def test_expected_comes_from_the_manifest(tiny_release):
    assert expected_from_params(Manifest.read(tiny_release).params) == Expected(N, "centered", (32, 32, 3))
    assert manifest_json(tiny_release / "public") == manifest_json(tiny_release)


def test_tally_kernel_matches_numpy():
    rng = np.random.default_rng(1)
    a = rng.uniform(-1.5, 1.5, (50, 3072))
    a[rng.random(a.shape) < 0.01] = np.nan
    a[4, 7] = -np.inf
    a[9] = np.nan
    for array in (a, a.astype(np.float32)):
        counts, extremes = _tally_rows(array, -1.002, 1.002)
        ref_counts, ref_extremes = tally_rows_reference(array, -1.002, 1.002)
        np.testing.assert_array_equal(counts, ref_counts)
        np.testing.assert_array_equal(extremes, ref_extremes)


def test_console_script_exit_codes(tmp_path, tiny_release):
    folder = make(tmp_path, np.zeros((N, 3, 32, 32), np.float32))
    bad = run_cli(str(folder), "--release", str(tiny_release), module="commands.verify")
    assert bad.returncode == 2 and "NCHW" in bad.stderr and "Traceback" not in bad.stderr
    np.save(folder / "decryption.npy", good())
    ok = run_cli(str(folder), "--release", str(tiny_release), module="commands.verify")
    assert ok.returncode == 0 and "valid, not scored" in ok.stdout
    usage = run_cli(str(folder), "--rows", "0", module="commands.verify")
    assert usage.returncode == 2 and len(usage.stderr.strip().splitlines()) == 1
    assert os.listdir(folder) == ["decryption.npy"]


@pytest.mark.parametrize("with_keys", [False, True])
def test_a_malformed_manifest_is_refused_naming_the_field(tmp_path, capsys, tiny_release, with_keys):
    """verify reads the manifest as ``Manifest.read`` does: every field checked, even those it does
    not use, so a changed manifest is never scored as if it were the release's."""
    release = tmp_path / "release"
    shutil.copytree(tiny_release / "public", release / "public")
    path = release / "public" / "manifest.json"
    path.write_text(path.read_text().replace('"kind": "strong"', '"kind": "practice"'))
    keys = ["--keys", tiny_release / "secret" / "keys.zarr"] if with_keys else []
    code, _, err = verify(capsys, make(tmp_path / "s", good()), "--release", release, *keys)
    assert code == 2 and err == f"verify: error: {path}: seed: expected {{kind: strong|practice, replayable: kind == practice, " \
                                "note: the generator's note for the kind}\n"


@pytest.mark.parametrize("shape, image_shape, hint", [
    ((N, 1, 28, 28), (28, 28, 1), ""),  # a grey image has no channels-first layout to suggest
    ((N, 3, 32, 32), (32, 32, 3), " (channels first, NCHW: transpose with x.transpose(0, 2, 3, 1))"),
    ((N, 28, 28), (28, 28, 1), " (no channel axis: add one with x.reshape(-1, 28, 28, 1))"),
    ((N, 3072), (32, 32, 3), " (flattened: reshape with x.reshape(-1, 32, 32, 3))"),
    ((N - 1, 32, 32, 3), (32, 32, 3), f" ({N - 1} rows: one row per encryption is needed, row i the recovery of encryption i)"),
])
def test_a_wrong_shape_is_named_with_its_likely_cause(shape, image_shape, hint):
    expected = Expected(N, "centered", image_shape)
    assert check_shape(np.zeros(shape, np.float32), expected) == [
        f"decryption.npy: shape {shape}; expected {(N, *image_shape)}{hint}"]


def test_metadata_keeps_its_known_string_fields_only(tmp_path):
    (tmp_path / "metadata.json").write_text(json.dumps(
        {"team": "a", "method": 3, "date": "2020-11-01", "running_time": "1 h", "extra": "x"}))
    kept, problems = _check_metadata(tmp_path / "metadata.json")
    assert kept == {"team": "a", "date": "2020-11-01", "running_time": "1 h"}
    assert problems == ["metadata.json: unknown fields 'extra'; expected only team, method, running_time, hardware, date",
                        "metadata.json: field 'method' must be a string (the attack, in a few words), got int"]
