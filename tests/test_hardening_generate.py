"""Issue #8, generator side: nothing lost, nothing hung, no traceback when `generate` and `patches`
meet concurrency, crashes, symlinks, weak seeds, permissive umasks, unwritable outputs and kills."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from challenge import format as fmt
from challenge.errors import UsageError
from challenge.keystream import parse_seed
from generator import release as release_module
from generator.release import generate
from tests.helpers import HANG, SEED, TINY, run_cli
from tests.helpers import in_private_tmpfs, left_behind, unavailable, watchdog
from tests.test_faults import is_complete

STRONG = "3f9a0c47d2e1b85a6c03f7e9124d8b60a5c1e7f32b9d04685e7a1c3f0b2d9e84"  # 32 distinct-enough bytes
TINY_ARGS = ["--n-private", "20", "--per-image", "5", "--seed", STRONG]
SLOW_ARGS = ["--n-private", "20", "--per-image", "50", "--chunk", "64", "--seed", STRONG]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "commands.main", *args]


def one_line_error(result) -> bool:
    return result.returncode == 2 and "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def manifest(out: Path) -> dict:
    return fmt.read_json(out / "public" / "manifest.json")


def siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- 1. concurrent runs -----------------------------------------------------------------------


def test_a_run_while_another_holds_the_output_exits_2_naming_the_process(tmp_path):
    out = tmp_path / "r"
    with release_module.output_lock(out):
        result = run_cli("generate", "--out", str(out), *TINY_ARGS)
    assert one_line_error(result) and f"being written by process {os.getpid()}" in result.stderr, result.stderr
    assert siblings(tmp_path) == []


@pytest.mark.parametrize("force", [False, True])
def test_two_concurrent_runs_one_wins_nothing_is_lost(tmp_path, force):
    out = tmp_path / "r"
    if force:
        assert run_cli("generate", "--out", str(out), *TINY_ARGS).returncode == 0
    extra = ["--force"] if force else []
    processes = [subprocess.Popen(cli("generate", "--out", str(out), *SLOW_ARGS, *extra),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p, *p.communicate(timeout=300)) for p in processes]
    codes = sorted(p.returncode for p, _, _ in results)
    # Overlapping runs: one wins, the other exits 2.  With --force, runs that happen not to overlap
    # both succeed, one after the other: the second replaced the first on purpose.
    assert codes == [0, 2] or (force and codes == [0, 0]), [(p.returncode, err) for p, _, err in results]
    for p, _, err in results:
        if p.returncode == 2:
            assert "being written by process" in err or "exists" in err
    published = manifest(out)["key_store"]["commitment"]
    assert any(published in stdout for p, stdout, _ in results if p.returncode == 0) and is_complete(out)
    assert siblings(tmp_path) == ["r"]


# --- 2. a crash between the renames of --force -------------------------------------------------

KILL_AT_RENAME = """
import os, signal, sys
from generator import release
real, calls, kill_at = os.rename, [], int(sys.argv[1])
def rename(a, b):
    calls.append(1)
    if len(calls) == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    real(a, b)
release.os.rename = rename
from commands.main import main
sys.argv = ["instahide", *sys.argv[2:]]
sys.exit(main())
"""


def kill_at_rename(n: int, *args: str) -> int:
    return subprocess.run([sys.executable, "-c", KILL_AT_RENAME, str(n), *args], capture_output=True, timeout=300).returncode


def replaced_then_killed(tmp_path, at_rename: int):
    """A release at tmp_path/r, then a --force replacement SIGKILLed at its ``at_rename``-th rename;
    returns the folder and the first release's manifest."""
    out = tmp_path / "r"
    assert run_cli("generate", "--out", str(out), *TINY_ARGS).returncode == 0
    before = manifest(out)
    other = ["--n-private", "20", "--per-image", "5", "--seed", STRONG[::-1]]
    assert kill_at_rename(at_rename, "generate", "--out", str(out), "--force", *other) == -signal.SIGKILL
    return out, before


def test_killed_between_the_renames_restores_the_old_release_with_its_keys(tmp_path):
    out, before = replaced_then_killed(tmp_path, 2)
    assert not out.exists() and any(name.startswith(".r.old-") for name in siblings(tmp_path))
    result = run_cli("generate", "--out", str(out), *TINY_ARGS)  # the next run, without --force
    assert result.returncode == 2 and "restored" in result.stderr and "exists" in result.stderr, result.stderr
    assert manifest(out) == before and is_complete(out)
    assert siblings(tmp_path) == ["r"]


def test_killed_after_the_new_release_took_the_name_keeps_the_old_one(tmp_path):
    out, before = replaced_then_killed(tmp_path, 3)
    old = [tmp_path / name for name in siblings(tmp_path) if name.startswith(".r.old-")]
    assert len(old) == 1 and manifest(old[0]) == before
    result = run_cli("generate", "--out", str(out), "--force", *TINY_ARGS)
    assert result.returncode == 0 and str(old[0]) in result.stderr, result.stderr
    assert manifest(old[0]) == before and is_complete(old[0])  # kept, with its keys, and named


def test_leftovers_that_hold_a_replaced_release_are_never_deleted(tmp_path, private_set, public_bank):
    out = tmp_path / "r"
    generate(out, TINY, seed=SEED, private=private_set, public=public_bank)
    before = manifest(out)
    os.rename(out, tmp_path / ".r.old-999999999")  # a kill between the renames, by a run long gone
    generate(tmp_path / "half", TINY, seed=bytes(32), private=private_set, public=public_bank)
    os.rename(tmp_path / "half", tmp_path / ".r.partial-999999999")
    with pytest.raises(UsageError, match="exists"):
        generate(out, TINY, seed=SEED, private=private_set, public=public_bank)
    assert manifest(out) == before and is_complete(out) and siblings(tmp_path) == ["r"]


# --- 3. a symlink as --out ----------------------------------------------------------------------


@pytest.mark.parametrize("force", [False, True])
def test_symlinked_out_is_refused_and_nothing_moves(tmp_path, tiny_release, force):
    link = tmp_path / "L"
    link.symlink_to(tiny_release)
    before = manifest(tiny_release)
    result = run_cli("generate", "--out", str(link), *TINY_ARGS, *(["--force"] * force))
    assert one_line_error(result) and "is a symlink" in result.stderr, result.stderr
    assert link.is_symlink() and manifest(tiny_release) == before and siblings(tmp_path) == ["L"]


# --- 4. seeds -----------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "ab" * 16 + " " * 2 + "cd" * 15,  # 64 characters with spaces: bytes.fromhex would give 31 bytes
    "ab" * 31 + "\tc",
    "0x" + "ab" * 31,
    "+" + STRONG[1:],
])
def test_a_strong_seed_is_exactly_64_hex_digits(text):
    assert len(text) == 64
    with pytest.raises(ValueError, match="64 hex digits"):
        parse_seed(text, practice=False)


@pytest.mark.parametrize("text", ["00" * 32, "ff" * 32, "ab" * 32, "deadbeef" * 8, "00" * 31 + "07",
                                  bytes(range(16)).hex() * 2, bytes(range(32)).hex()])
def test_a_low_entropy_seed_needs_practice(text):
    with pytest.raises(ValueError, match="pass practice=True"):
        parse_seed(text, practice=False)
    assert len(parse_seed(text, practice=True)) == 32


def test_strong_seeds_still_give_the_same_key():
    assert parse_seed(STRONG, practice=False) == bytes.fromhex(STRONG)
    assert parse_seed(f"  {STRONG.upper()}\n", practice=False) == bytes.fromhex(STRONG)
    assert parse_seed("ab" * 32, practice=True) == bytes([0xAB] * 32)  # existing practice releases


def test_seed_file_gives_the_same_release_as_seed(tmp_path):
    seed_file = tmp_path / "seed"
    seed_file.write_text(STRONG + "\n")
    args = ["--n-private", "20", "--per-image", "5"]
    a = run_cli("generate", "--out", str(tmp_path / "a"), "--seed", STRONG, *args)
    b = run_cli("generate", "--out", str(tmp_path / "b"), "--seed-file", str(seed_file), *args)
    assert a.returncode == 0 and b.returncode == 0, b.stderr
    assert manifest(tmp_path / "a")["key_store"] == manifest(tmp_path / "b")["key_store"]


def test_seed_file_is_bounded_regular_and_exclusive(tmp_path):
    fifo, big = tmp_path / "fifo", tmp_path / "big"
    os.mkfifo(fifo)
    big.write_text(STRONG + " " * 10_000)
    for extra in (["--seed-file", str(fifo)], ["--seed-file", str(big)], ["--seed-file", str(tmp_path / "none")],
                  ["--seed-file", str(big), "--seed", STRONG]):
        result = subprocess.run(cli("generate", "--out", str(tmp_path / "r"), *extra), capture_output=True,
                                text=True, timeout=HANG)
        assert one_line_error(result), (extra, result.stderr)
    assert siblings(tmp_path) == ["big", "fifo"]
    help_text = run_cli("generate", "--help").stdout
    assert "--seed-file" in help_text and "process list" in help_text


# --- 5. secrets at rest ------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_secret_folder_is_private_whatever_the_umask(tmp_path, private_set, public_bank, umask):
    previous = os.umask(umask)
    try:
        generate(tmp_path / "r", TINY, seed=SEED, private=private_set, public=public_bank)
    finally:
        os.umask(previous)
    secret = tmp_path / "r" / "secret"
    paths = [secret, *secret.rglob("*")]
    assert len(paths) > 10
    for path in paths:
        mode = stat.S_IMODE(path.lstat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))


# --- 6. unwritable outputs ---------------------------------------------------------------------


def test_generate_out_an_existing_file(tmp_path):
    target = tmp_path / "file"
    target.write_text("mine")
    for force in ([], ["--force"]):
        result = run_cli("generate", "--out", str(target), *TINY_ARGS, *force)
        assert one_line_error(result) and "not a release" in result.stderr, result.stderr
    assert target.read_text() == "mine" and siblings(tmp_path) == ["file"]


def make_photos(folder: Path, n: int, size=(96, 80)) -> Path:
    rng = np.random.default_rng(5)
    (folder / "cls").mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), np.uint8)).save(folder / "cls" / f"{i:04d}.png")
    return folder


def test_patches_out_an_existing_file(tmp_path):
    photos = make_photos(tmp_path / "photos", 3)
    target = tmp_path / "file"
    target.write_text("mine")
    result = run_cli("patches", str(photos), "--out", str(target), "--workers", "1")
    assert one_line_error(result), result.stderr
    assert target.read_text() == "mine"


@pytest.mark.parametrize("options", ["ro,size=1m", "size=16k"])
def test_patches_out_on_a_read_only_or_full_disk(tmp_path, options):
    photos = make_photos(tmp_path / "photos", 40)
    result = in_private_tmpfs(tmp_path, options, "patches", str(photos), "--out", str(tmp_path / "mnt" / "bank.zarr"),
                               "--workers", "1")
    errors = result.stderr.strip().splitlines()
    assert result.returncode == 2 and "Traceback" not in result.stderr and len(errors) == 1, result.stderr
    assert "bank.zarr" in errors[0]
    assert left_behind(result) == []


# --- 7. workers die with their parent -----------------------------------------------------------


def _parent_of(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return None if fields[0] == "Z" else int(fields[1])  # a zombie has exited


def descendants(pid: int) -> set[int]:
    parents = {int(p): _parent_of(int(p)) for p in os.listdir("/proc") if p.isdigit()}
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pids: set[int]) -> set[int]:
    return {pid for pid in pids if _parent_of(pid) is not None}


def _committed_files(bank: Path) -> int:
    """How many files a bank being built has committed (0 before its first commit)."""
    try:
        return json.loads((bank / "zarr.json").read_text())["attributes"]["progress"]["files"]
    except (OSError, ValueError, KeyError):  # not there yet, or read while being replaced
        return 0


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_killing_patches_kills_its_workers(tmp_path, how):
    if not Path("/proc/self/stat").exists():
        unavailable("PROC", "no /proc: a process's children cannot be listed")
    photos = make_photos(tmp_path / "photos", 1, size=(640, 480))
    for i in range(1, 3000):  # enough work to be killed in the middle of it, made in no time
        os.link(photos / "cls" / "0000.png", photos / "cls" / f"{i:04d}.png")
    process = subprocess.Popen(cli("patches", str(photos), "--out", str(tmp_path / "bank.zarr"), "--workers", "2"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: set[int] = set()
    try:
        with watchdog(600):  # a hang, not a slow machine, fails the wait
            while _committed_files(tmp_path / "bank.zarr") == 0 and process.poll() is None:
                time.sleep(0.05)  # until the first batch is in the bank: the workers ran, so were initialised
        workers = descendants(process.pid)
        assert len(workers) >= 2 and process.poll() is None and _committed_files(tmp_path / "bank.zarr") < 3000
        process.send_signal(how)
        process.wait(timeout=30)
        deadline = time.monotonic() + 120  # the kernel kills them at once; a loaded machine reaps them later
        while alive(workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(workers), f"workers {alive(workers)} outlived their parent"
    finally:
        for pid in alive(workers | descendants(process.pid)) | ({process.pid} if process.poll() is None else set()):
            os.kill(pid, signal.SIGKILL)
        process.wait(timeout=30)
