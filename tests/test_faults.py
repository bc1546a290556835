"""Faults while writing a release: SIGKILL at any point of the writing, a full disk, a read-only folder;
and concurrent readers.  A release folder is either absent or complete, never half-written."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from challenge import format as fmt
from challenge.errors import UsageError
from generator import release as release_module
from generator.release import generate
from tests.helpers import HANG, SEED, TINY, in_private_tmpfs, left_behind, run_cli
from verifier.audit import audit

SMALL = ["--n-private", "20", "--per-image", "50", "--chunk", "128", "--seed",
         "c4e1f7a2093d6b58e2a7c10f94d3b6e8571a0c2f4e9d8b3a6f1c07e25d9a4b13"]


def generate_argv(out):
    return [sys.executable, "-m", "commands.main", "generate", "--out", str(out), "--force", *SMALL]


def is_complete(out):
    return audit(out, out / "secret" / "keys.zarr").sound


# ``generate ARGS`` that SIGKILLs itself at its KILL_AT-th call of what writes a release (open, mkdir,
# fsync, rename; 0: never) and, if it lives, prints how many such calls it made: a kill at a point the
# code reaches, whatever the machine's load (a sleep before the kill hits another phase when loaded).
KILL_AT_CALL = """
import builtins, io, os, signal, sys
import commands.main, commands.generate, generator.release, generator.sources  # imported before counting
kill_at, calls = int(sys.argv[1]), [0]
def counted(real):
    def call(*args, **kwargs):
        calls[0] += 1
        if calls[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    return call
for module, name in ((os, "mkdir"), (os, "rename"), (os, "fsync"), (io, "open"), (builtins, "open")):
    setattr(module, name, counted(getattr(module, name)))
code = commands.main.main(sys.argv[2:])
print(f"calls: {calls[0]}", file=sys.stderr)
sys.exit(code)
"""


def generate_killed_at(call: int, out) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", KILL_AT_CALL, str(call), "generate", "--out", str(out), "--force", *SMALL],
                          capture_output=True, text=True, timeout=HANG)


def test_sigkill_at_any_point_leaves_nothing_or_a_complete_release(tmp_path):
    out = tmp_path / "work" / "release"
    full = generate_killed_at(0, out)
    assert full.returncode == 0, full.stderr
    calls = int(full.stderr.rsplit("calls: ", 1)[1])
    reference = fmt.read_json(out / "public" / "manifest.json")
    shutil.copytree(out, tmp_path / "whole")
    outcomes = {"absent": 0, "complete": 0, "killed mid-write": 0}
    for attempt in range(20):
        shutil.rmtree(out, ignore_errors=True)
        if attempt % 2:  # half the runs create, half replace a release (--force)
            shutil.copytree(tmp_path / "whole", out)
        call = 1 + attempt * calls // 20  # from the first call to the last twentieth: every phase
        assert generate_killed_at(call, out).returncode == -signal.SIGKILL, f"not killed at call {call} of {calls}"
        if any(p.name.startswith(".release.partial-") for p in out.parent.iterdir()):
            outcomes["killed mid-write"] += 1
        if out.exists():
            assert is_complete(out), f"killed at call {call} of {calls}: {out} exists but is not a sound release"
            assert fmt.read_json(out / "public" / "manifest.json") == reference
            outcomes["complete"] += 1
        else:
            outcomes["absent"] += 1
    assert outcomes["killed mid-write"] >= 10 and outcomes["absent"] and outcomes["complete"], outcomes  # every phase
    assert subprocess.run(generate_argv(out), capture_output=True).returncode == 0
    assert is_complete(out) and fmt.read_json(out / "public" / "manifest.json") == reference
    assert [p.name for p in out.parent.iterdir()] == ["release"]  # every leftover was cleaned up


def test_killed_between_the_two_renames_of_a_replacement(tmp_path, private_set, public_bank, monkeypatch):
    """The replaced release (with its secret keys) is put back, not left in a hidden folder."""
    out = tmp_path / "release"
    before = generate(out, TINY, seed=SEED, private=private_set, public=public_bank)
    hidden_old = tmp_path / ".release.old-999999999"
    os.rename(out, hidden_old)  # what a kill right after the first rename of _publish leaves
    with pytest.raises(UsageError, match="already exists"):
        generate(out, TINY, seed=SEED, private=private_set, public=public_bank)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["release"]
    assert fmt.read_json(out / "public" / "manifest.json") == before and is_complete(out)


def test_an_old_release_that_cannot_be_deleted_does_not_fail_its_replacement(tmp_path, private_set, public_bank,
                                                                            monkeypatch):
    """The replaced release is deleted after the new one took its name: a file that will not go
    (busy, or a disk error) leaves a leftover, not a failed run that has in fact published."""
    out = tmp_path / "release"
    generate(out, TINY, seed=SEED, private=private_set, public=public_bank)
    real_unlink = os.unlink

    def unlink(path, *args, **kwargs):
        if str(path) == "preview.png":  # rmtree unlinks by name within the folder it is emptying
            raise OSError(errno.EBUSY, "Device or resource busy", path)
        return real_unlink(path, *args, **kwargs)
    monkeypatch.setattr(os, "unlink", unlink)
    manifest = generate(out, TINY, seed=bytes(32), private=private_set, public=public_bank, force=True)
    monkeypatch.undo()
    assert fmt.read_json(out / "public" / "manifest.json") == manifest and is_complete(out)


def _failing(real, after: int = 0):
    calls = []

    def write(*args, **kwargs):
        calls.append(1)
        if len(calls) > after:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    return write


@pytest.mark.parametrize("target", ["label.npy", "preview.png", "manifest.json", "encryption chunk", "public.zarr chunk"])
def test_full_disk_at_any_write_leaves_no_partial_release(tmp_path, private_set, public_bank, monkeypatch, target):
    if target == "label.npy":
        monkeypatch.setattr(release_module, "_npy_file", _failing(release_module._npy_file))
    elif target == "public.zarr chunk":  # written by a background thread: its error still reaches the caller
        monkeypatch.setattr(release_module.ZarrChunks, "_flush", _failing(release_module.ZarrChunks._flush, after=1))
    elif target == "preview.png":
        monkeypatch.setattr(release_module, "save_png", _failing(release_module.save_png))
    elif target == "manifest.json":
        monkeypatch.setattr(release_module.fmt, "write_json", _failing(fmt.write_json))
    else:
        monkeypatch.setattr(release_module, "encode", _failing(release_module.encode, after=3))
    with pytest.raises(UsageError, match="No space left on device"):
        generate(tmp_path / "new", TINY, seed=SEED, private=private_set, public=public_bank, chunk=10)
    assert list(tmp_path.iterdir()) == []


def test_full_disk_while_replacing_keeps_the_old_release(tmp_path, private_set, public_bank, monkeypatch):
    out = tmp_path / "release"
    before = generate(out, TINY, seed=SEED, private=private_set, public=public_bank)
    monkeypatch.setattr(release_module.fmt, "write_json", _failing(fmt.write_json))
    with pytest.raises(UsageError, match="No space left on device"):
        generate(out, TINY, seed=bytes(32), private=private_set, public=public_bank, force=True)
    assert [p.name for p in tmp_path.iterdir()] == ["release"]
    assert fmt.read_json(out / "public" / "manifest.json") == before and is_complete(out)


def test_real_full_disk_gives_a_clear_error_and_no_partial_release(tmp_path):
    result = in_private_tmpfs(tmp_path, "size=4m", "generate", "--out", str(tmp_path / "mnt" / "r"), *SMALL)
    assert result.returncode == 2 and "No space left on device" in result.stderr and "Traceback" not in result.stderr
    assert left_behind(result) == []  # nothing left on the full disk


def test_read_only_output_folder_gives_a_clear_error(tmp_path):
    if os.geteuid() == 0:  # root ignores permission bits: use a read-only file system
        result = in_private_tmpfs(tmp_path, "ro,size=1m", "generate", "--out", str(tmp_path / "mnt" / "r"), *SMALL)
        assert left_behind(result) == []
    else:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o555)
        result = run_cli("generate", "--out", str(folder / "r"), *SMALL)
        folder.chmod(0o755)
        assert list(folder.iterdir()) == []
    assert result.returncode == 2 and "cannot write here" in result.stderr and "Traceback" not in result.stderr


def test_concurrent_audits_of_one_release_do_not_interfere(tiny_release):
    processes = [subprocess.Popen([sys.executable, "-m", "commands.main", "audit", str(tiny_release), "--json"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    results = [p.communicate(timeout=300) for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0], results
    assert len({out for out, _ in results}) == 1


def test_concurrent_verify_runs_on_one_release_do_not_interfere(tiny_release, tmp_path):
    """Four scorings of one submission at once, two of them into the same folder: same scores, whole files."""
    keys = tiny_release / "secret" / "keys.zarr"
    submission = tmp_path / "oracle"
    assert run_cli("baseline", "oracle", "--keys", str(keys), "--out", str(submission)).returncode == 0
    outs = [tmp_path / "a", tmp_path / "b", tmp_path / "shared", tmp_path / "shared"]
    processes = [subprocess.Popen([sys.executable, "-m", "commands.verify", str(submission), "--keys", str(keys),
                                   "--release", str(tiny_release), "--out", str(out), "--json"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for out in outs]
    results = [p.communicate(timeout=300) for p in processes]
    assert [p.returncode for p in processes] == [0] * 4, results
    assert len({json.dumps(json.loads(out)["scores"], sort_keys=True) for out, _ in results}) == 1
    scores = {(out / "scores.json").read_text() for out in outs}
    assert len(scores) == 1 and json.loads(scores.pop())["Max_SSIM"] == 1.0
    assert sorted(p.name for p in (tmp_path / "shared").iterdir()) == ["scores.json", "scores.txt"]
