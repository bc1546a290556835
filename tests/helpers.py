"""Constants and helpers shared by the tests."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

from dataclasses import replace

import numpy as np

from challenge.imageset import ImageSet
from challenge.params import Params

SEED = bytes(range(32))
TINY = Params(n_private=20, per_image=5)
# Seconds after which a command or task is taken to hang: a bound for a hang, never an expectation of
# speed (a cold numba cache on a loaded 2-core machine takes minutes; 60 s was marginal).
HANG = 600
# What some tests need from the machine, each with its switch: INSTAHIDE_REQUIRE_<NAME>=1 (.ci/run sets
# them all) turns "this machine cannot" from a skip into a failure, so CI never passes by skipping.
REQUIREMENTS = ("BROWSER", "NAMESPACES", "SETPRIV", "PROC", "TEST_EXTRAS", "VENV")


def unavailable(requirement: str, why: str) -> NoReturn:
    """Skip the test: this machine lacks ``requirement`` (one of :data:`REQUIREMENTS`) for the
    reason ``why``; fail it instead where the requirement's switch is set."""
    import pytest

    assert requirement in REQUIREMENTS, requirement
    switch = f"INSTAHIDE_REQUIRE_{requirement}"
    if os.environ.get(switch) == "1":
        pytest.fail(f"{switch}=1 but {why}")
    pytest.skip(why, allow_module_level=True)


def extra_module(name: str):
    """Import ``name``, which the ``[test]`` extra installs (pyproject.toml); see :func:`unavailable`."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        unavailable("TEST_EXTRAS", f"{e} (pip install -e '.[test]')")


def resized(images: ImageSet, shape: tuple[int, int, int]) -> ImageSet:
    """``images`` at another (height, width, channels), nearest neighbour, the first channels: test data
    of any shape from the embedded 32 x 32 x 3 sets."""
    height, width, channels = shape
    rows = np.arange(height) * images.images.shape[1] // height
    columns = np.arange(width) * images.images.shape[2] // width
    return replace(images, images=np.ascontiguousarray(images.images[:, rows][:, :, columns, :channels]))


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None, module: str = "commands.main") -> subprocess.CompletedProcess:
    """Run ``python -m MODULE ARGS`` the way a user would, capturing output."""
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=HANG)


@contextmanager
def watchdog(seconds: int = 60):
    """Turn a hang (e.g. a FIFO opened for reading) into a failure."""
    def expire(*_):
        raise TimeoutError(f"hung for {seconds} s")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


_LEFT = "--- left on the disk:"


def in_private_tmpfs(tmp_path: Path, options: str, *args, module: str = "commands.main") -> subprocess.CompletedProcess:
    """Run ``python -m MODULE ARGS`` with a fresh tmpfs (mount ``options``, e.g. ``ro`` or a tiny
    ``size``) at tmp_path/mnt, in a private mount namespace that vanishes with the process; see
    :func:`left_behind` for what the run left on it.  Skips where namespaces are not allowed."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    script = (f'mount -t tmpfs -o {options} tmpfs "{mnt}" || exit 99; "$@"; rc=$?; '
              f'echo "{_LEFT}"; find "{mnt}" -mindepth 1 -printf "%y %P\\n"; exit $rc')
    try:
        result = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", sys.executable, "-m", module, *map(str, args)],
                                capture_output=True, text=True, timeout=300)
    except FileNotFoundError:
        unavailable("NAMESPACES", "unshare is not available")
    if result.returncode == 99 or "unshare:" in result.stderr:
        unavailable("NAMESPACES", f"cannot mount a private tmpfs here: {result.stderr.strip()}")
    return result


def left_behind(result: subprocess.CompletedProcess, files_only: bool = False) -> list[str]:
    """What an :func:`in_private_tmpfs` run left on its disk (relative paths; only files if asked)."""
    entries = [line.split(" ", 1) for line in result.stdout.split(_LEFT, 1)[1].splitlines() if line]
    return [path for kind, path in entries if kind == "f" or not files_only]


def check_inspect_json(info: dict, public: Path, keys: Path | None = None) -> None:
    """``inspect --json`` against what it describes, read here on its own: the manifest's fields, each
    listed file's size and SHA-256 as hashed here, and the key store's size and commitment."""
    import hashlib
    import json

    from challenge import format as fmt

    manifest = json.loads((public / "manifest.json").read_text())
    for field in ("format_version", "generator", "params", "n_encryptions", "class_names", "pixel_domain", "seed", "sources"):
        assert info[field] == manifest[field], field
    assert info["commitment"] == manifest["key_store"]["commitment"]
    on_disk = {name: (public / name).read_bytes() for name in manifest["files"]}
    assert info["files"] == {name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                             for name, data in on_disk.items()}
    assert info["public_bytes"] == sum(map(len, on_disk.values()))
    if keys is None:
        assert "key_store" not in info
        return
    commitment = fmt.commitment(fmt.open_key_store(keys))
    assert info["key_store"] == {"path": str(keys), "bytes": sum(p.stat().st_size for p in keys.rglob("*") if p.is_file()),
                                 "commitment": commitment, "matches_manifest": commitment == manifest["key_store"]["commitment"]}


def manifest_json(release: Path) -> dict:
    """The manifest of ``release`` (or of its public folder) as plain JSON, for tests that edit it."""
    from challenge import format as fmt
    from challenge.manifest import manifest_path

    return fmt.read_json(manifest_path(release))


def strength_report(release: Path, out: Path) -> Path:
    """``instahide strength`` of ``release`` (keys in its secret/) into ``out``, which it returns."""
    result = run_cli("strength", str(release), "--keys", str(release / "secret" / "keys.zarr"), "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out
