"""Shared fixtures: the embedded data and small releases built from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from generator.default_data import default_private, default_public
from generator.release import generate
from tests.helpers import SEED, TINY


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
    generate(out, TINY, SEED, private_set, public_bank)
    return out
