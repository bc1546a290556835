"""CI runs every test: a test that needs something of the machine (tests/helpers.py, REQUIREMENTS)
skips without it on a developer's machine, and fails under CI, where .ci/run sets every switch."""

import re
from pathlib import Path

import pytest

from tests.helpers import REQUIREMENTS, unavailable

ROOT = Path(__file__).resolve().parent.parent


def test_ci_sets_every_requirement_switch():
    assert sorted(set(re.findall(r"\bINSTAHIDE_REQUIRE_([A-Z_]+)=1\b", (ROOT / ".ci" / "run").read_text()))) \
        == sorted(REQUIREMENTS)


@pytest.mark.parametrize("requirement", REQUIREMENTS)
def test_a_missing_requirement_skips_or_fails_under_its_switch(monkeypatch, requirement):
    monkeypatch.delenv(f"INSTAHIDE_REQUIRE_{requirement}", raising=False)
    with pytest.raises(pytest.skip.Exception, match="the machine lacks it"):
        unavailable(requirement, "the machine lacks it")
    monkeypatch.setenv(f"INSTAHIDE_REQUIRE_{requirement}", "1")
    with pytest.raises(pytest.fail.Exception, match=f"INSTAHIDE_REQUIRE_{requirement}=1 but the machine lacks it"):
        unavailable(requirement, "the machine lacks it")
