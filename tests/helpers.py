"""Constants and helpers shared by the tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from challenge.params import Params

SEED = bytes(range(32))
TINY = Params(n_private=20, per_image=5)


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None, module: str = "commands.main") -> subprocess.CompletedProcess:
    """Run ``python -m MODULE ARGS`` the way a user would, capturing output."""
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=600)
