"""Issue #8, release side: manifests, key stores, previews and outputs that are hostile or
unwritable give one line and exit code 2 (or a finding / difference), never a hang, a traceback,
an unbounded read or a silently wrong answer; the ground-truth sheet is private; an unwritable
HOME does not stop the tool at import."""

import os
import resource
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from challenge import format as fmt
from commands.main import main
from tests.helpers import HANG, in_private_tmpfs, left_behind, unavailable
from verifier.audit import audit

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def release(tiny_release, tmp_path):
    return shutil.copytree(tiny_release, tmp_path / "release")


def keys(release):
    return release / "secret" / "keys.zarr"


def _limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))


def cli(*args, timeout=HANG, env=None, module="commands.main"):
    """The CLI in a subprocess, killed after ``timeout`` s (a hang inside a library thread is out
    of reach of a SIGALRM watchdog) and capped at 3 GB (an endless read fails instead of swapping)."""
    try:
        return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True,
                              text=True, timeout=timeout, preexec_fn=_limit_memory, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{module} {' '.join(map(str, args))}: hung for {timeout} s")


def one_line_error(result, *words):
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


# --- 1. bounded JSON for every manifest --------------------------------------------------------

def _manifest_to_dev_zero(manifest):
    manifest.unlink()
    manifest.symlink_to("/dev/zero")


def _manifest_fifo(manifest):
    manifest.unlink()
    os.mkfifo(manifest)


def _manifest_deep(manifest):
    manifest.write_text("[" * 100_000 + "]" * 100_000)


def _manifest_huge(manifest):
    with open(manifest, "wb") as f:
        f.truncate(fmt.MAX_MANIFEST_BYTES + 1)


MANIFESTS = {"symlink to /dev/zero": (_manifest_to_dev_zero, "character device"),
             "FIFO": (_manifest_fifo, "FIFO"),
             "nested 100,000 deep": (_manifest_deep, "nested deeper"),
             "larger than any manifest": (_manifest_huge, "bytes, more than")}


@pytest.mark.parametrize("case", MANIFESTS)
def test_hostile_manifest_is_one_line_for_every_command(release, tmp_path, case):
    damage, words = MANIFESTS[case]
    manifest = release / "public" / "manifest.json"
    damage(manifest)
    for command in (["reproduce", release, "--work", tmp_path], ["inspect", release]):
        one_line_error(cli(*command), "manifest.json", words)
    one_line_error(cli("baseline", "blind", "--release", release, "--out", tmp_path / "b"), "manifest.json", words)
    result = cli("audit", release)
    assert result.returncode == 3 and "Traceback" not in result.stderr
    assert f"public/manifest.json: {words}" in result.stdout or words in result.stdout, result.stdout


def test_manifest_cap_fits_the_largest_release():
    """A manifest listing every file of a 100M-encryption release (generate's Zarr layout) fits the cap."""
    from challenge.params import MAX_ENCRYPTIONS
    lines = [f'    "public.zarr/encryption/c/{i}/0/0/0": "{"0" * 64}",' for i in range(-(-MAX_ENCRYPTIONS // 1024))]
    lines += [f'    "public.zarr/label/c/{i}/0": "{"0" * 64}",' for i in range(-(-MAX_ENCRYPTIONS // 4096))]
    assert len("\n".join(lines)) + 100_000 < fmt.MAX_MANIFEST_BYTES < 64 << 20


# --- 2. key stores: regular files only, size-capped --------------------------------------------

def _fifo(path):
    path.unlink()
    os.mkfifo(path)


STORES = {
    "root zarr.json a FIFO": (lambda s: _fifo(s / "zarr.json"), "zarr.json", "FIFO"),
    "array zarr.json a FIFO": (lambda s: _fifo(s / "encryption/lam/zarr.json"), "encryption/lam/zarr.json", "FIFO"),
    "chunk a FIFO": (lambda s: _fifo(s / "encryption/private_index/c/0/0"), "private_index/c/0/0", "FIFO"),
    "chunk larger than any compressed chunk": (
        lambda s: open(s / "encryption/lam/c/0/0", "ab").truncate(fmt.MAX_STORED_CHUNK_BYTES + 1),
        "encryption/lam/c/0/0", "bytes, more than"),
    "array zarr.json larger than metadata": (
        lambda s: (s / "encryption/lam/zarr.json").write_text(" " * (fmt.MAX_ARRAY_METADATA_BYTES + 1) + "{}"),
        "encryption/lam/zarr.json", "bytes, more than"),
    "root zarr.json nested deep": (lambda s: (s / "zarr.json").write_text("[" * 100_000 + "]" * 100_000),
                                   "zarr.json", "nested deeper"),
    "a FIFO anywhere": (lambda s: os.mkfifo(s / "private" / "stray"), "private/stray", "FIFO"),
}


@pytest.mark.parametrize("case", STORES)
def test_hostile_key_store_never_hangs(release, tmp_path, case):
    damage, file, words = STORES[case]
    damage(keys(release))
    one_line_error(cli(tmp_path, "--keys", keys(release), module="commands.verify"), file, words)
    one_line_error(cli("inspect", release, "--keys", keys(release), "--sheet", tmp_path / "s.png"), file, words)
    result = cli("audit", release)
    assert result.returncode == 3 and file in result.stdout and words in result.stdout, result.stdout
    with pytest.raises(fmt.FormatError, match=words):  # in-process only now that it is known not to hang
        fmt.open_key_store(keys(release))


@pytest.mark.parametrize("image_shape", [(32, 32, 3), (224, 224, 3), (512, 512, 3)])
def test_stored_chunk_cap_covers_incompressible_chunks(tmp_path, image_shape):
    """The largest chunk of images the format writes, of random bytes, fits under the stored cap."""
    rows = fmt.chunk_rows(10**6, fmt.FORMAT_VERSION, False, int(np.prod(image_shape)))
    shape = (rows, *image_shape)
    assert np.prod(shape) <= fmt.MAX_CHUNK_BYTES
    group = zarr.open_group(str(tmp_path / "z"), mode="w")
    array = group.create_array("a", shape=shape, chunks=shape, dtype="uint8", fill_value=0)
    array[...] = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    chunk = tmp_path / "z/a/c/0/0/0/0"
    assert np.prod(shape) < chunk.stat().st_size <= fmt.MAX_STORED_CHUNK_BYTES


# --- 3. index ranges ------------------------------------------------------------------------------

def set_key(release, name, where, value):
    array = zarr.open_group(str(keys(release)), mode="r+")[name]
    data = array[...]
    data[where] = value
    array[...] = data


INDICES = {
    "private_index -7": ("encryption/private_index", (3, 0), -7, "row 3", "[0, 20)"),
    "private_index 2^31-1": ("encryption/private_index", (41, 1), 2**31 - 1, "row 41", "[0, 20)"),
    "public_index past the patches": ("encryption/public_index", (7, 2), 10**6, "row 7", "[0, "),
    "public_index negative": ("encryption/public_index", (0, 0), -1, "row 0", "[0, "),
    "label past the classes": ("private/labels", 5, 10, "row 5", "[0, 10)"),
    "negative source index": ("private/source_index", 2, -4, "row 2", ">= 0"),
    "negative bank index": ("public/bank_index", 9, -1, "row 9", ">= 0"),
}


@pytest.mark.parametrize("case", INDICES)
def test_index_out_of_range_is_refused_when_the_store_is_opened(release, tmp_path, case):
    name, where, value, row, allowed = INDICES[case]
    set_key(release, name, where, value)
    with pytest.raises(fmt.FormatError, match=name):
        fmt.open_key_store(keys(release))
    line = one_line_error(cli("baseline", "oracle", "--keys", keys(release), "--out", tmp_path / "oracle"),
                          name, row, allowed)
    assert str(value) in line
    assert not (tmp_path / "oracle").exists()
    one_line_error(cli(tmp_path, "--keys", keys(release), module="commands.verify"), name, row, allowed)
    found = audit(release, keys(release)).findings  # audit reports it as a finding, row by row
    assert any(name in f.file for f in found), [f.line() for f in found]


def test_index_check_streams_and_accepts_every_valid_store(tiny_release):
    store = fmt.open_key_store(keys(tiny_release))
    assert store.params.n_encryptions == 100


# --- 4. untrusted PNGs and unwritable outputs ---------------------------------------------------

def test_eight_byte_preview_is_a_finding(release):
    (release / "public/preview.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    report = audit(release, keys(release))
    assert [f.check for f in report.findings if f.file == "public/preview.png"] == ["preview", "digests"][:1] or \
        any(f.check == "preview" for f in report.findings), [f.line() for f in report.findings]


@pytest.mark.parametrize("data", [b"\x89PNG\r\n\x1a\n", b"", b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR"])
def test_truncated_previews_are_findings_through_the_cli(release, data, capsys):
    (release / "public/preview.png").write_bytes(data)
    assert main(["audit", str(release)]) == 3
    out = capsys.readouterr()
    assert "public/preview.png" in out.out and "Traceback" not in out.err


def _bomb_preview(release):
    path = release / "public/preview.png"
    data = path.read_bytes()
    path.write_bytes(data[:16] + (100000).to_bytes(4, "big") * 2 + data[24:])


def test_preview_bomb_is_a_difference_in_reproduce_never_decoded(release, tmp_path, monkeypatch):
    _bomb_preview(release)
    result = cli("reproduce", release, "--work", tmp_path, "--json")
    assert result.returncode == 3 and "Traceback" not in result.stderr, result.stderr
    assert "preview.png" in result.stdout and "100000" in result.stdout


@pytest.mark.parametrize("options", ["ro,size=1m", "size=256k"])
def test_reproduce_work_unwritable_or_full(release, tmp_path, options):
    result = in_private_tmpfs(tmp_path, options, "reproduce", release, "--work", tmp_path / "mnt")
    one_line_error(result, "--work")
    assert left_behind(result) == []


def test_reproduce_work_an_existing_file(release, tmp_path):
    (tmp_path / "file").write_text("x")
    one_line_error(cli("reproduce", release, "--work", tmp_path / "file"), "--work")


@pytest.mark.parametrize("options", ["ro,size=1m", "size=8k"])
def test_inspect_sheet_unwritable_or_full(release, tmp_path, options):
    result = in_private_tmpfs(tmp_path, options, "inspect", release, "--keys", keys(release),
                               "--sheet", tmp_path / "mnt" / "s.png")
    one_line_error(result, "s.png")
    assert left_behind(result) == []


def test_inspect_sheet_into_a_folder_or_a_missing_folder(release, tmp_path):
    one_line_error(cli("inspect", release, "--keys", keys(release), "--sheet", tmp_path), str(tmp_path))
    one_line_error(cli("inspect", release, "--keys", keys(release), "--sheet", tmp_path / "no" / "s.png"), "s.png")


# --- 5. the ground-truth sheet is private ---------------------------------------------------------

def test_sheet_is_private_whatever_the_umask(tiny_release, tmp_path):
    old = os.umask(0o022)
    try:
        assert main(["inspect", str(tiny_release), "--keys", str(keys(tiny_release)), "--sheet", str(tmp_path / "s.png")]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "s.png").stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.png"]


# --- 6. an unwritable HOME and a read-only package --------------------------------------------

def test_unwritable_home_and_read_only_package_still_run(tmp_path):
    """What an installed package under a user without a writable HOME sees: numba finds no cache
    location and, before the fallback, every command died at import with a RuntimeError."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    script = f'mount --bind "{ROOT}" "{ROOT}" && mount -o remount,bind,ro "{ROOT}" || exit 99; "$@"'
    env = {**os.environ, "HOME": "/proc/no-such-home", "TMPDIR": str(tmp)}
    env.pop("NUMBA_CACHE_DIR", None)
    env.pop("XDG_CACHE_HOME", None)
    command = ["unshare", "-m", "sh", "-c", script, "sh", sys.executable, "-m", "commands.main",
               "generate", "--out", str(tmp_path / "r"), "--n-private", "20", "--per-image", "5", "--practice", "--seed", "ab" * 32]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    except FileNotFoundError:
        unavailable("NAMESPACES", "unshare is not available")
    if result.returncode == 99 or "unshare:" in result.stderr:
        unavailable("NAMESPACES", f"cannot remount read-only here: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr[-3000:]
    cache = tmp / f"instahide-numba-{os.getuid()}"
    assert cache.is_dir() and stat.S_IMODE(cache.stat().st_mode) == 0o700


def test_numba_cache_fallback_refuses_a_folder_of_someone_else(tmp_path, monkeypatch):
    import challenge
    folder = tmp_path / f"instahide-numba-{os.getuid()}"
    folder.mkdir(mode=0o777)
    folder.chmod(0o777)  # writable by anyone: someone could plant a cached "kernel" (a pickle)
    monkeypatch.setattr("tempfile.gettempdir", lambda: str(tmp_path))
    chosen = Path(challenge._private_cache_folder())
    assert chosen != folder and chosen.is_dir() and stat.S_IMODE(chosen.stat().st_mode) == 0o700
