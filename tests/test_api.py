"""The Python API for notebooks: docs/API.md runs as written, and scoring an in-memory array gives
``verify``'s numbers and ``verify``'s refusals."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from challenge import format as fmt
from challenge.errors import UsageError
from tests.helpers import run_cli
from verifier.scoring import platform_scores, score_array

ROOT = Path(__file__).resolve().parent.parent
API = ROOT / "docs" / "API.md"


def code_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_api_document_runs(tmp_path, monkeypatch):
    blocks = code_blocks(API.read_text(encoding="utf-8"))
    assert len(blocks) >= 4
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"{API.name} block {i + 1}", "exec"), namespace)
    assert (tmp_path / "practice" / "secret" / "keys.zarr" / "zarr.json").is_file()
    assert namespace["platform_scores"](namespace["scores"])["Max_SSIM"] == 1.0


@pytest.fixture(scope="module")
def keys(tiny_release):
    return tiny_release / "secret" / "keys.zarr"


def _truth(store) -> np.ndarray:
    return store.read("private/images")[store["encryption/private_index"][:, 0]]


def test_in_memory_scores_are_verifys(tiny_release, keys, tmp_path):
    """An array scored in memory and the same array saved and run through ``verify``: same scores."""
    store = fmt.open_key_store(keys)
    rng = np.random.default_rng(1)
    truth = _truth(store) / 127.5 - 1
    array = np.clip(truth + rng.normal(0, 0.2, truth.shape), -1, 1).astype(np.float32)
    in_memory = platform_scores(score_array(array, keys, release=tiny_release))
    (tmp_path / "sub").mkdir()
    np.save(tmp_path / "sub" / "decryption.npy", array)
    done = run_cli("sub", "--keys", str(keys), "--release", str(tiny_release), module="commands.verify", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "sub" / "scores.json").read_text()) == in_memory
    assert platform_scores(score_array(array.astype(">f4"), store)) == in_memory  # any byte order, an opened store


@pytest.mark.parametrize("bad, says", [
    (lambda a: a[:5], "shape (5, 32, 32, 3)"),
    (lambda a: a.transpose(0, 3, 1, 2), "channels first"),
    (lambda a: a.astype(np.int16), "dtype int16"),
    (lambda a: np.where(a > 0, np.nan, a).astype(np.float32), "NaN"),
    (lambda a: a.astype(np.float32) * 3, "outside"),
])
def test_in_memory_refusals_are_verifys(keys, bad, says):
    store = fmt.open_key_store(keys)
    array = (_truth(store) / 127.5 - 1)
    with pytest.raises(UsageError, match=re.escape(says)):
        score_array(bad(array), store)


def test_in_memory_needs_the_releases_keys(tiny_release, tmp_path):
    """With release=, a key store the manifest does not commit to is refused, as verify refuses it."""
    from generator.release import generate
    from tests.helpers import TINY

    other = tmp_path / "other"
    generate(other, TINY, seed=bytes(32), **_sources())
    store = fmt.open_key_store(other / "secret" / "keys.zarr")
    with pytest.raises(UsageError, match="commit"):
        score_array(_truth(store), other / "secret" / "keys.zarr", release=tiny_release)


def _sources():
    from generator.default_data import default_private, default_public

    return {"private": default_private(), "public": default_public()}


def test_every_name_the_api_document_imports_is_in_its_modules_all():
    """What API.md uses is the documented API: each module it imports from declares ``__all__``, and
    every name it imports is listed there (a submodule, ``from challenge import format``, counts too)."""
    import importlib.util

    imports = re.findall(r"^from ([\w.]+) import ([\w, ]+?)(?:\s+#.*)?$", API.read_text(encoding="utf-8"), flags=re.M)
    assert imports
    ours = {module for module, _ in imports if module.split(".")[0] in ("challenge", "generator", "verifier", "attacks")}
    assert ours
    for module_name, names in imports:
        if module_name not in ours:
            continue
        module = importlib.import_module(module_name)
        for name in (n.strip().split(" as ")[0] for n in names.split(",")):
            if hasattr(module, "__path__") and importlib.util.find_spec(f"{module_name}.{name}") is not None:
                continue  # a submodule
            assert name in getattr(module, "__all__", ()), f"{module_name}.{name} is not in its __all__"
