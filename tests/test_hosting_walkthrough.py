"""README "Hosting it on Codabench" runs as written: its commands, in order, on a tiny release (as ``c1/``),
with this checkout's wheel (built as tests/test_package.py builds it) and the numpy-only environment."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.test_package import wheel  # noqa: F401  (the fixture: the wheel built from this checkout)

ROOT = Path(__file__).resolve().parent.parent
BUILT_ELSEWHERE = ("pip wheel ", "python3 -m venv numpy-only")  # the fixtures make these two


def walkthrough() -> list[str]:
    section = (ROOT / "README.md").read_text().split("### Hosting it on Codabench", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_the_walkthrough_names_the_wheel_of_this_version(wheel):  # noqa: F811
    names = zipfile.ZipFile(wheel).namelist()
    assert {"verifier/codabench/score.py", "verifier/codabench/check_submission.py"} <= set(names)  # bundle needs them
    assert any(wheel.name in line for line in walkthrough())
    assert sum(line.startswith(BUILT_ELSEWHERE) for line in walkthrough()) == len(BUILT_ELSEWHERE)


def test_the_hosting_walkthrough_runs(tiny_release, wheel, numpy_only_python, tmp_path):  # noqa: F811
    shutil.copytree(tiny_release, tmp_path / "c1")
    (tmp_path / "dist").mkdir()
    shutil.copyfile(wheel, tmp_path / "dist" / wheel.name)
    (tmp_path / "numpy-only").symlink_to(Path(numpy_only_python).parent.parent)
    script = "\n".join(line for line in walkthrough() if not line.startswith(BUILT_ELSEWHERE))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "competition.zip").stat().st_mode & 0o777 == 0o600
    scores = json.loads((tmp_path / "app" / "output" / "scores.json").read_text())
    assert 0 <= scores["Max_SSIM"] <= 1 and "valid:" in done.stdout
    kit = zipfile.ZipFile(tmp_path / "competition.zip").namelist()
    assert f"starting_kit/{wheel.name}" in kit and "starting_kit/Dockerfile" in kit
    assert (tmp_path / "keys.tar.gz").is_file()
