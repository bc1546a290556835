"""Shared fixtures: the embedded data and small releases built from it."""

from __future__ import annotations

import json
import subprocess
import venv
from pathlib import Path

import pytest

from generator.default_data import default_private, default_public
from generator.release import generate
from tests.helpers import SEED, TINY, unavailable


@pytest.fixture(scope="session")
def private_set():
    return default_private()


@pytest.fixture(scope="session")
def public_bank():
    return default_public()


@pytest.fixture(scope="session")
def tiny_release(tmp_path_factory, private_set, public_bank) -> Path:
    """A 100-encryption cross release with the fixed test seed (read-only: do not modify)."""
    out = tmp_path_factory.mktemp("tiny") / "release"
    generate(out, TINY, seed=SEED, private=private_set, public=public_bank)
    return out


@pytest.fixture(scope="session")
def numpy_only_python(tmp_path_factory) -> str:
    """A fresh virtual environment holding numpy and nothing else (built once). Skips where it cannot be
    made, unless INSTAHIDE_REQUIRE_VENV=1 (CI), where that is a failure (tests/helpers.py, REQUIREMENTS)."""
    folder = tmp_path_factory.mktemp("numpy-only") / "venv"
    try:
        venv.create(folder, with_pip=True, clear=True)
        python = str(folder / "bin" / "python")
        subprocess.run([python, "-m", "pip", "install", "--quiet", "numpy"], check=True, capture_output=True,
                       timeout=600)
        listed = subprocess.run([python, "-m", "pip", "list", "--format=json"], check=True, capture_output=True,
                                text=True, timeout=120).stdout
    except (OSError, subprocess.SubprocessError) as e:
        unavailable("VENV", f"cannot build a numpy-only virtual environment: {e}")
    assert {p["name"].lower() for p in json.loads(listed)} <= {"numpy", "pip", "setuptools", "wheel"}
    return python
