"""Submissions as .zip archives: hostile archives are refused with one line, valid ones validate."""

from __future__ import annotations

import io
import json
import os
import stat
import struct
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

from challenge.errors import UsageError
from verifier.archive import (MAX_MEMBERS, UnsafeArchive, extracted, is_archive, layout_hint, submission_folder,
                              total_cap)
from challenge.submission import Expected
from verifier.submission import validate

SMALL = Expected(1, "centered", (32, 32, 3))  # total cap about 1.1 MB: bombs need only a few MB
TINY = Expected(100, "centered", (32, 32, 3))  # the tiny release of tests/conftest.py


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def make_zip(path: Path, members: dict, method=zipfile.ZIP_DEFLATED) -> Path:
    """A zip of ``name -> bytes`` (or ``name -> (ZipInfo fields, bytes)``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate names we write on purpose
        with zipfile.ZipFile(path, "w", method) as zf:
            for name, data in members.items() if isinstance(members, dict) else members:
                if isinstance(data, tuple):
                    fields, data = data
                    info = zipfile.ZipInfo(name)
                    info.compress_type = method
                    for key, value in fields.items():
                        setattr(info, key, value)
                    zf.writestr(info, data)
                else:
                    zf.writestr(name, data)
    return path


def patch_headers(path: Path, **fields) -> None:
    """Overwrite fields of every local and central header in place (the sizes a header declares)."""
    data = bytearray(path.read_bytes())
    local = {"flags": (6, "<H"), "compress_size": (18, "<I"), "file_size": (22, "<I")}
    central = {"flags": (8, "<H"), "compress_size": (20, "<I"), "file_size": (24, "<I")}
    for signature, layout in ((b"PK\x03\x04", local), (b"PK\x01\x02", central)):
        start = 0
        while (at := data.find(signature, start)) >= 0:
            for name, value in fields.items():
                offset, fmt = layout[name]
                old = struct.unpack_from(fmt, data, at + offset)[0]
                struct.pack_into(fmt, data, at + offset, value(old) if callable(value) else value)
            start = at + 4
    path.write_bytes(bytes(data))


def refused(path: Path, expected: Expected = SMALL) -> str:
    """The one-line refusal of an archive; checks nothing was left behind in the temporary folder."""
    workdir = path.parent / "work"
    workdir.mkdir(exist_ok=True)
    with pytest.raises(UsageError) as err:
        with extracted(path, expected, workdir=workdir):
            pass
    message = str(err.value)
    assert "\n" not in message and message.startswith(str(path)), message
    assert not any(workdir.iterdir()), "the temporary folder must be removed"
    return message


@pytest.mark.parametrize("name", ["../evil.npy", "/tmp/evil.npy", "a/../../evil.npy", "a\\..\\evil.npy",
                                  "C:/evil.npy", "c:evil.npy", "a/./b.npy", "a//b.npy", "bad\x01name"])
def test_zip_slip_names_are_refused(tmp_path, name):
    path = make_zip(tmp_path / "sub.zip", {name: b"x"})
    message = refused(path)
    assert "member" in message and "expected a plain file or folder with a relative name" in message
    assert not (tmp_path / "evil.npy").exists() and not (tmp_path.parent / "evil.npy").exists()


@pytest.mark.parametrize("kind, word", [(stat.S_IFLNK, "symlink"), (stat.S_IFIFO, "FIFO"),
                                        (stat.S_IFCHR, "character device"), (stat.S_IFBLK, "block device"),
                                        (stat.S_IFSOCK, "socket")])
def test_special_members_are_refused(tmp_path, kind, word):
    fields = {"create_system": 3, "external_attr": (kind | 0o777) << 16}
    path = make_zip(tmp_path / "sub.zip", {"decryption.npy": (fields, b"/etc/passwd")})
    assert word in refused(path)


def test_duplicate_names_are_refused(tmp_path):
    path = make_zip(tmp_path / "sub.zip", [("decryption.npy", b"a"), ("decryption.npy", b"b")])
    assert "same name" in refused(path)
    path = make_zip(tmp_path / "sub2.zip", [("a", b"file"), ("a/b", b"inside a file")])
    assert "which is a file" in refused(path)
    path = make_zip(tmp_path / "sub3.zip", [("a/b", b"x"), ("a", b"file over a folder")])
    assert "name of a folder" in refused(path)


def test_encrypted_members_are_refused(tmp_path):
    path = make_zip(tmp_path / "sub.zip", {"decryption.npy": b"secret"})
    patch_headers(path, flags=lambda old: old | 0x1)
    assert "encrypted" in refused(path)


@pytest.mark.parametrize("method", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_unbounded_decoders_are_refused(tmp_path, method):
    path = make_zip(tmp_path / "sub.zip", {"decryption.npy": bytes(1000)}, method=method)
    assert "compression method" in refused(path)


def test_too_many_members_are_refused(tmp_path):
    path = make_zip(tmp_path / "sub.zip", {f"f{i}": b"" for i in range(MAX_MEMBERS + 1)})
    assert f"at most {MAX_MEMBERS}" in refused(path)


def test_zip_bomb_is_refused_by_its_declared_size(tmp_path):
    path = make_zip(tmp_path / "sub.zip", {"decryption.npy": bytes(4 * total_cap(SMALL))})
    assert path.stat().st_size < 20_000
    assert "more than" in refused(path)


def test_many_small_members_add_up_to_the_cap(tmp_path):
    share = total_cap(SMALL) // 8
    path = make_zip(tmp_path / "sub.zip", {f"part{i}": bytes(share) for i in range(10)})
    assert "in all" in refused(path)


def test_header_that_understates_the_size_is_refused_while_inflating(tmp_path):
    """The headers declare 1,000 bytes; the data inflates to 4 MB: only the declared bytes are ever written."""
    path = make_zip(tmp_path / "sub.zip", {"decryption.npy": bytes(4 << 20)})
    patch_headers(path, file_size=1000)
    assert "corrupt" in refused(path)


def test_header_that_overstates_the_ratio_is_refused(tmp_path):
    path = make_zip(tmp_path / "sub.zip", {"decryption.npy": bytes(1000)})
    patch_headers(path, file_size=900_000)
    assert "1100:1" in refused(path)


def test_copy_stops_at_the_cap_whatever_the_decoder_yields(tmp_path, monkeypatch):
    """Even a decoder that ignores the declared size is never asked for more than the member's limit."""
    path = make_zip(tmp_path / "sub.zip", {"decryption.npy": bytes(1000)})
    endless = _Endless()
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, info: endless)
    assert "inflates past 1,000 bytes" in refused(path)
    assert endless.given <= 1001


class _Endless(io.RawIOBase):
    """A member stream that yields zeros for ever, counting what it gave."""

    given = 0

    def read(self, n=-1):
        self.given += n
        return bytes(n)


def test_not_a_zip_and_not_a_file(tmp_path):
    (tmp_path / "junk.zip").write_bytes(b"not a zip at all")
    assert "not a readable zip archive" in refused(tmp_path / "junk.zip")
    os.mkfifo(tmp_path / "fifo.zip")
    with pytest.raises(UsageError, match="FIFO"):
        with extracted(tmp_path / "fifo.zip", SMALL):
            pass


def test_nested_archives_are_not_expanded(tmp_path):
    inner = make_zip(tmp_path / "inner.zip", {"decryption.npy": npy(np.zeros((1, 32, 32, 3), np.uint8))})
    path = make_zip(tmp_path / "sub.zip", {"inner.zip": inner.read_bytes()})
    with extracted(path, SMALL) as folder:
        assert sorted(p.name for p in folder.iterdir()) == ["inner.zip"]
        assert "not expanded" in layout_hint(folder)


def test_valid_zip_validates_and_is_removed_afterwards(tmp_path):
    array = np.random.default_rng(0).integers(0, 256, (100, 32, 32, 3), dtype=np.uint8)
    metadata = json.dumps({"team": "zip", "method": "test"}).encode()
    path = make_zip(tmp_path / "sub.zip", {"decryption.npy": npy(array), "metadata.json": metadata,
                                           "__MACOSX/": b"", "__MACOSX/._decryption.npy": b"\0" * 82})
    assert is_archive(path) and not is_archive(tmp_path)
    with submission_folder(path, TINY) as folder:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        result = validate(folder, TINY)
        assert result.valid, result.problems
        assert result.metadata == {"team": "zip", "method": "test"}
    assert not folder.exists()
    with submission_folder(tmp_path, TINY) as same:
        assert same == tmp_path


def test_zip_of_the_oracle_baseline_validates(tmp_path, tiny_release):
    from challenge.format import open_key_store
    from verifier.baselines import write_baseline
    from verifier.scoring import score

    store = open_key_store(tiny_release / "secret" / "keys.zarr")
    sub = tmp_path / "oracle"
    write_baseline("oracle", sub, TINY, store=store)
    path = make_zip(tmp_path / "oracle.zip", {p.name: p.read_bytes() for p in sub.iterdir()})
    with extracted(path, TINY) as folder:
        validation, scores = score(folder, store)
    assert validation.valid and scores.summary["Max_SSIM"] == pytest.approx(1.0)


@pytest.mark.parametrize("members, words", [
    ({"decryption.npz": b"PK..."}, ["decryption.npz", "np.save('decryption.npy'"]),
    ({"sub/decryption.npy": b"x", "sub/metadata.json": b"{}"}, ["sub/decryption.npy", "not their folder"]),
    ({"Decryption.NPY": b"x"}, ["Decryption.NPY", "exactly decryption.npy"]),
    ({"decryption.npy.gz": b"x"}, ["decryption.npy.gz", "exactly decryption.npy"]),
    ({"readme.txt": b"x"}, None),
])
def test_layout_hints(tmp_path, members, words):
    path = make_zip(tmp_path / "sub.zip", members)
    with extracted(path, SMALL) as folder:
        result = validate(folder, SMALL)
        assert not result.valid and "decryption.npy: missing" in result.problems[0]
        hint = layout_hint(folder)
    if words is None:
        assert hint is None
    else:
        assert hint is not None and "\n" not in hint
        for word in words:
            assert word in hint, hint


def test_hint_for_a_plain_folder(tmp_path):
    (tmp_path / "decryption.npz").write_bytes(b"PK")
    assert "np.savez" in layout_hint(tmp_path)


def test_refusals_are_usage_errors():
    assert issubclass(UnsafeArchive, UsageError)


# --- through the commands: verify and leaderboard take .zip submissions -----------------------------

def _oracle_zip(tmp_path: Path, tiny_release: Path) -> Path:
    from tests.helpers import run_cli

    keys = str(tiny_release / "secret" / "keys.zarr")
    made = run_cli("baseline", "oracle", "--keys", keys, "--release", str(tiny_release), "--out", str(tmp_path / "oracle"))
    assert made.returncode == 0, made.stderr
    folder = tmp_path / "oracle"
    return make_zip(tmp_path / "oracle.zip", {name: (folder / name).read_bytes() for name in ("decryption.npy", "metadata.json")})


def test_verify_scores_a_zip_and_writes_beside_it(tmp_path, tiny_release):
    from tests.helpers import run_cli

    submission = _oracle_zip(tmp_path, tiny_release)
    result = run_cli(str(submission), "--keys", str(tiny_release / "secret" / "keys.zarr"), "--release",
                     str(tiny_release), "--json", module="commands.verify")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["scores"]["Max_SSIM"] == 1.0
    assert json.loads((tmp_path / "scores.json").read_text())["Max_SSIM"] == 1.0


def test_verify_gives_the_hint_for_a_zipped_npz(tmp_path, tiny_release):
    from tests.helpers import run_cli

    bad = make_zip(tmp_path / "npz.zip", {"decryption.npz": b"PK not really"})
    result = run_cli(str(bad), "--release", str(tiny_release), module="commands.verify")
    assert result.returncode == 2 and "np.save('decryption.npy', x)" in result.stderr, result.stderr


def test_one_bad_zip_does_not_stop_the_leaderboard(tmp_path, tiny_release):
    from tests.helpers import run_cli

    good = _oracle_zip(tmp_path, tiny_release)
    slip = make_zip(tmp_path / "slip.zip", {"../decryption.npy": b"x"})
    result = run_cli("leaderboard", str(good), str(slip), "--keys", str(tiny_release / "secret" / "keys.zarr"),
                     "--release", str(tiny_release), "--out", str(tmp_path / "board"))
    assert result.returncode == 0, result.stderr
    board = (tmp_path / "board" / "leaderboard.md").read_text()
    assert "oracle.zip" in board and "slip.zip" in board and "Traceback" not in result.stderr
