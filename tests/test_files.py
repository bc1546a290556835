"""challenge.files: untrusted files are opened only if regular, read only up to a cap, parsed with
bounded nesting, and written atomically."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import unavailable, watchdog
from challenge.files import UnsafeFile, check_tree, read_bytes, read_json, read_text, write_atomic
from challenge.format import sha256_file

ROOT = Path(__file__).resolve().parent.parent


def test_reads_a_regular_file(tmp_path):
    (tmp_path / "a.json").write_text('{"x": [1, 2, {"y": "z"}]}')
    assert read_json(tmp_path / "a.json", 100) == {"x": [1, 2, {"y": "z"}]}
    assert read_bytes(tmp_path / "a.json", 100).startswith(b"{")


@pytest.mark.parametrize("follow", [True, False])
def test_fifo_is_refused_without_hanging(tmp_path, follow):
    os.mkfifo(tmp_path / "fifo")
    os.symlink(tmp_path / "fifo", tmp_path / "link")
    with watchdog(20):
        for name in ("fifo", "link"):
            with pytest.raises(UnsafeFile, match="(FIFO|symlink)"):
                read_json(tmp_path / name, 1000, follow_symlinks=follow)


def test_symlink_to_a_device_is_refused(tmp_path):
    os.symlink("/dev/zero", tmp_path / "zero.json")
    with watchdog(20), pytest.raises(UnsafeFile, match="character device"):
        read_json(tmp_path / "zero.json", 1 << 20)


def test_symlinks_refused_when_asked(tmp_path):
    (tmp_path / "real").write_text("{}")
    os.symlink(tmp_path / "real", tmp_path / "link")
    assert read_json(tmp_path / "link", 10) == {}
    with pytest.raises(UnsafeFile, match="symlink"):
        read_json(tmp_path / "link", 10, follow_symlinks=False)


def test_symlink_loop_and_folder_and_missing(tmp_path):
    os.symlink(tmp_path / "b", tmp_path / "a")
    os.symlink(tmp_path / "a", tmp_path / "b")
    with pytest.raises(UnsafeFile, match="loop"):
        read_bytes(tmp_path / "a", 10)
    with pytest.raises(UnsafeFile, match="folder"):
        read_bytes(tmp_path, 10)
    with pytest.raises(UnsafeFile, match="missing"):
        read_bytes(tmp_path / "nothing", 10)


def test_size_cap_before_reading(tmp_path):
    (tmp_path / "big").write_bytes(b" " * 101)
    with pytest.raises(UnsafeFile, match="101 bytes, more than the 100"):
        read_bytes(tmp_path / "big", 100)


def test_unreadable_file(tmp_path):
    """Read in a process that the permission bits bind: as root, one without the capabilities
    (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH) that let root read every file."""
    (tmp_path / "secret").write_text("{}")
    (tmp_path / "secret").chmod(0)
    bound = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            unavailable("SETPRIV", "no setpriv (util-linux) to read as root bound by permission bits")
        bound = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
    script = ("import sys\nfrom challenge.files import UnsafeFile, read_bytes\n"
              "try:\n    read_bytes(sys.argv[1], 10)\nexcept UnsafeFile as e:\n    print(e)")
    result = subprocess.run([*bound, sys.executable, "-c", script, str(tmp_path / "secret")],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.stdout.strip() == f"{tmp_path / 'secret'}: cannot be read (Permission denied)", result.stderr


@pytest.mark.parametrize("depth", [65, 100_000])
def test_deep_json_is_refused(tmp_path, depth):
    (tmp_path / "deep.json").write_text("[" * depth + "]" * depth)
    with pytest.raises(UnsafeFile, match="nested deeper"):
        read_json(tmp_path / "deep.json", 1 << 20)


def test_json_at_the_depth_limit_is_read(tmp_path):
    (tmp_path / "ok.json").write_text("[" * 64 + "]" * 64)
    nested = []
    for _ in range(63):
        nested = [nested]
    assert read_json(tmp_path / "ok.json", 1 << 20) == nested


@pytest.mark.parametrize("text, match", [
    ('{"team": "\\ud800"}', "not valid Unicode"),
    ('{"\\udfff": 1}', "not valid Unicode"),
    ('{"x": NaN}', "not valid JSON"),
    ('{"x": Infinity}', "not valid JSON"),
    ('{"x": ', "not valid JSON"),
])
def test_malformed_json(tmp_path, text, match):
    (tmp_path / "m.json").write_text(text)
    with pytest.raises(UnsafeFile, match=match):
        read_json(tmp_path / "m.json", 1000)


def test_non_utf8_text(tmp_path):
    (tmp_path / "latin1").write_bytes(b'{"team": "\xe9"}')
    with pytest.raises(UnsafeFile, match="not UTF-8"):
        read_text(tmp_path / "latin1", 100)


def test_check_tree(tmp_path):
    store = tmp_path / "store"
    (store / "a").mkdir(parents=True)
    (store / "a" / "zarr.json").write_text("{}")
    check_tree(store, 10, what="key store")
    (store / "a" / "big").write_bytes(b"x" * 11)
    with pytest.raises(UnsafeFile, match="more than any file"):
        check_tree(store, 10, what="key store")
    (store / "a" / "big").unlink()
    os.mkfifo(store / "a" / "fifo")
    with pytest.raises(UnsafeFile, match="FIFO inside the key store"):
        check_tree(store, 10, what="key store")
    (store / "a" / "fifo").unlink()
    os.symlink("/etc/passwd", store / "link")
    with pytest.raises(UnsafeFile, match="symlink inside"):
        check_tree(store, 10, what="key store")
    with pytest.raises(UnsafeFile, match="expected a key store folder"):
        check_tree(store / "a" / "zarr.json", 10, what="key store")


def test_write_atomic(tmp_path):
    target = write_atomic(tmp_path / "out.json", json.dumps({"a": 1}), mode=0o600)
    assert json.loads(target.read_text()) == {"a": 1}
    assert target.stat().st_mode & 0o777 == 0o600
    assert os.listdir(tmp_path) == ["out.json"]


def test_write_atomic_failure_leaves_nothing(tmp_path):
    (tmp_path / "dir").mkdir()
    with pytest.raises(UnsafeFile, match="cannot write"):
        write_atomic(tmp_path / "dir", "x")  # a folder cannot be replaced by a file
    assert os.listdir(tmp_path) == ["dir"]
    with pytest.raises(UnsafeFile, match="cannot write"):
        write_atomic(tmp_path / "missing" / "x", "x")


def test_a_small_file_under_a_large_cap_reserves_no_more_than_it_holds(tmp_path):
    """A 128 MiB cap must not mean a 128 MiB read buffer for a 2-byte file."""
    import tracemalloc

    (tmp_path / "small.json").write_text("{}")
    tracemalloc.start()
    try:
        assert read_json(tmp_path / "small.json", 128 << 20) == {}
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


@pytest.mark.parametrize("block", [1, 7, 1 << 22])
def test_sha256_file_is_hashlib_and_refuses_what_is_not_a_regular_file(tmp_path, block):
    """The digests' hash: a file's SHA-256 whatever the block it is read in; a symlink (even to a
    regular file) or a FIFO is refused, not followed or waited on."""
    import hashlib

    data = os.urandom(100_003)
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f", block) == hashlib.sha256(data).hexdigest()
    os.symlink(tmp_path / "f", tmp_path / "link")
    os.mkfifo(tmp_path / "fifo")
    with watchdog(20):
        for name, what in (("link", "symlink"), ("fifo", "FIFO")):
            with pytest.raises(UnsafeFile, match=what):
                sha256_file(tmp_path / name, block)
