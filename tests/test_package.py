"""Installed like any PyData tool: a wheel built from this checkout, installed into a fresh virtual
environment, works from any folder (the embedded data and the documents are package data), and its
version is the one ``challenge.__version__`` defines.  Offline: the wheel is built without build
isolation and the fresh environment borrows this one's dependencies, never the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import challenge
from tests.helpers import unavailable

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "challenge", "generator", "verifier", "attacks", "commands", "docs")


def _run(*args, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)
    assert done.returncode == 0, f"{args}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of the sources (the build writes build/ and *.egg-info beside them)."""
    import setuptools

    if int(setuptools.__version__.split(".")[0]) < 77:
        unavailable("TEST_EXTRAS", f"setuptools {setuptools.__version__}: the build needs >= 77 (pip install -e '.[test]')")
    tmp = tmp_path_factory.mktemp("wheel")
    (tmp / "src").mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, tmp / "src" / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, tmp / "src" / name)
    _run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "-w", tmp / "dist", tmp / "src", cwd=tmp)
    (built,) = (tmp / "dist").glob("*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh venv holding the wheel; its dependencies come from this environment's site-packages,
    added as a plain path (its .pth files, the editable install's among them, are not run)."""
    venv = tmp_path_factory.mktemp("venv") / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=venv.parent)
    python = venv / "bin" / "python"
    site = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=venv).stdout.strip())
    (site / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    _run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps", "--no-index", wheel,
         cwd=venv.parent)
    return venv / "bin"


def _env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def test_wheel_ships_data_and_documents(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"generator/data/private.npz", "generator/data/public.npz", "challenge/docs/FORMAT.md",
            "challenge/docs/AUDIT.md", "challenge/docs/API.md"} <= names
    assert wheel.name.startswith(f"instahide_challenge-{challenge.__version__}-")
    assert not any(name.startswith(("tests/", "data/", "benchmarks/")) for name in names)


def test_installed_tool_works_from_any_folder(installed, tmp_path):
    """generate, baseline, verify, reproduce and docs from a folder that is not the checkout."""
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = _env()
    where = _run(installed / "python", "-c", "import challenge, generator; print(challenge.__file__)", cwd=work, env=env)
    assert str(installed.parent) in where.stdout and str(ROOT) not in where.stdout
    for program in ("instahide", "verify"):
        assert _run(installed / program, "--version", cwd=work, env=env).stdout.split()[-1] == challenge.__version__
    _run(installed / "instahide", "generate", "--out", "practice", "--practice", "--seed", "tutorial",
         "--n-private", "20", "--per-image", "5", cwd=work, env=env)
    _run(installed / "instahide", "baseline", "oracle", "--keys", "practice/secret/keys.zarr", "--out", "oracle",
         cwd=work, env=env)
    scored = _run(installed / "verify", "oracle", "--keys", "practice/secret/keys.zarr", "--release", "practice",
                  cwd=work, env=env)
    assert "Max_SSIM" in scored.stdout and "1.0000" in scored.stdout
    assert "identical" in _run(installed / "instahide", "reproduce", "practice", cwd=work, env=env).stdout
    assert "# Release format" in _run(installed / "instahide", "docs", "FORMAT", cwd=work, env=env).stdout


def test_one_version():
    """pyproject.toml reads the version from challenge.__version__; the manifest and --version use it."""
    from importlib.metadata import version

    text = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in text and 'version = {attr = "challenge.__version__"}' in text
    assert version("instahide-challenge") == challenge.__version__
