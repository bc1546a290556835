"""The public API stays small, readable and documented (issue 21, part 3): a call names its
arguments beyond the first few (``generate(out, params, seed=..., private=..., public=...)``); a
mistake names the keyword argument from Python and the flag from the command line; the packages
re-export docs/API.md's names without importing them up front; each has numpydoc sections."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("challenge", "generator", "verifier", "attacks", "commands")
MAX_POSITIONAL = 4

def public_modules() -> list:
    """Every module of the packages; verifier/codabench is a standalone program, not the API."""
    modules = []
    for package in PACKAGES:
        root = importlib.import_module(package)
        modules.append(root)
        for info in pkgutil.walk_packages(root.__path__, f"{package}."):
            if not info.name.startswith("verifier.codabench"):
                modules.append(importlib.import_module(info.name))
    return modules


def public_callables() -> dict[str, object]:
    """Qualified name -> each function in a module's ``__all__``, and each public method or
    ``__init__`` of a class there (a dataclass's, generated, takes its fields)."""
    found = {}
    for module in public_modules():
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            if getattr(obj, "__module__", None) != module.__name__:
                continue  # a re-export: checked where it is defined
            if inspect.isfunction(obj):
                found[f"{module.__name__}.{name}"] = obj
            elif inspect.isclass(obj):
                for attribute, value in vars(obj).items():
                    value = getattr(value, "__func__", value)  # a classmethod's or staticmethod's function
                    if inspect.isfunction(value) and (not attribute.startswith("_") or attribute == "__init__"):
                        found[f"{module.__name__}.{name}.{attribute}"] = value
    return found


def positional(function) -> list[str]:
    return [p.name for p in inspect.signature(function).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in ("self", "cls")]


def test_public_functions_take_at_most_four_arguments_by_position():
    too_many = {name: positional(f) for name, f in public_callables().items()
                if len(positional(f)) > MAX_POSITIONAL}
    assert not too_many, f"make the arguments beyond the first one or two keyword-only: {too_many}"


# --- messages name the caller's words: keyword arguments from Python, flags from the command line ---

def _api_refusals(tmp_path):
    """(call, what its message must name) for library calls a notebook makes with a mistake."""
    from challenge.keystream import parse_seed
    from challenge.params import Params
    from challenge.submission import open_for_scoring
    from generator.release import parse_formats
    from verifier.baselines import write_baseline
    from verifier.reproduce import check_work
    from verifier.scoring import holdout_mask
    from tests.helpers import TINY

    return [
        (lambda: Params(k=1).validate(), "k must be between 2"),
        (lambda: Params(mode="inside", k=3, k_private=2).validate(), "mode='inside' mixes only private images: k_private"),
        (lambda: Params(c1=0.1).validate(), "c1 must be in"),
        (lambda: parse_seed("short", practice=False), "seed must be exactly 64 hex digits (256 bits); a shorter, guessable seed is "
                                      "accepted only with practice=True"),
        (lambda: parse_formats("zarr"), "formats='zarr': must include npy"),
        (lambda: open_for_scoring(None, None), "give release (to validate) or keys (to validate and score)"),
        (lambda: write_baseline("oracle", tmp_path / "b", TINY), "the oracle baseline needs store"),
        (lambda: check_work(tmp_path / "missing"), f"work={tmp_path / 'missing'}: not a folder"),
        (lambda: holdout_mask(bytes(32), 10, 1.5), "holdout is 1.5"),
    ]


def test_api_messages_name_keyword_arguments_not_flags(tmp_path):
    from challenge.errors import UsageError

    for call, says in _api_refusals(tmp_path):
        with pytest.raises((UsageError, ValueError)) as caught:
            call()
        assert says in str(caught.value) and "--" not in str(caught.value), str(caught.value)


def test_a_refused_write_says_pass_force_true(tiny_release, tmp_path):
    from challenge.errors import UsageError
    from challenge.submission import write_submission
    from tests.helpers import TINY

    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "decryption.npy").write_bytes(b"")
    with pytest.raises(UsageError, match=r"already exists; pass force=True to replace it$"):
        write_submission(tmp_path / "sub", iter([]), expected=TINY, dtype="uint8", metadata={})


@pytest.mark.parametrize("argv, says", [
    (["generate", "--out", "{tmp}/r", "--k", "1"], "--k must be between 2"),
    (["generate", "--out", "{tmp}/r", "--mode", "inside", "--k", "3", "--k-private", "2"],
     "--mode inside mixes only private images: --k-private must equal --k (3)"),
    (["generate", "--out", "{tmp}/r", "--formats", "zarr"], "--formats zarr: must include npy"),
    (["generate", "--out", "{tmp}/r", "--seed", "short"], "--seed must be exactly 64 hex digits (256 bits); a shorter, "
     "guessable seed is accepted only with --practice"),
    (["baseline", "oracle", "--out", "{tmp}/b"], "give --release (to validate) or --keys (to validate and score)"),
])
def test_the_command_line_names_the_flags(tmp_path, capsys, argv, says):
    from commands.main import main

    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    assert f"error: {says}" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_argument_names_a_keyword_or_a_flag():
    from challenge.errors import argument, command_line

    python = [argument("k_private"), argument("force", True), argument("mode", "inside"), argument("store", flag="--keys")]
    with command_line():
        flags = [argument("k_private"), argument("force", True), argument("mode", "inside"), argument("store", flag="--keys")]
    assert python == ["k_private", "force=True", "mode='inside'", "store"]
    assert flags == ["--k-private", "--force", "--mode inside", "--keys"]
    assert argument("k") == "k"  # the block is left as it was found


# --- the packages re-export the API, lazily ---

@pytest.mark.parametrize("package", PACKAGES[:-1])
def test_each_package_re_exports_its_api(package):
    """``from generator import generate`` is ``generator.release.generate``: each name in the package's
    ``__all__`` is the object its module defines (and lists), and ``dir()`` shows it."""
    root = importlib.import_module(package)
    names = [n for n in root.__all__ if n != "__version__"]
    assert names and set(names) <= set(dir(root))
    for name in names:
        obj = getattr(root, name)
        module = importlib.import_module(obj.__module__)
        assert module.__name__.startswith(f"{package}.") and getattr(module, name) is obj
        assert name in getattr(module, "__all__", [name]), f"{module.__name__}.{name} is not in its __all__"
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        root.nothing


def test_importing_the_packages_loads_no_heavy_library():
    """The re-exports are resolved on first use: importing the four packages imports neither numpy
    nor numba nor zarr (so a command's start pays only for what it uses)."""
    code = ("import sys, challenge, generator, verifier, attacks; "
            "print(sorted(m for m in ('numpy', 'numba', 'zarr') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# --- numpydoc Parameters / Returns / Raises on what docs/API.md uses ---

DOCUMENTED = [  # docs/API.md's functions, classes and methods (its exceptions say when they are raised)
    "challenge.parse_seed", "challenge.fresh_seed", "challenge.Params", "challenge.Manifest",
    "challenge.Manifest.read", "challenge.Manifest.from_json", "challenge.Manifest.to_json",
    "challenge.Manifest.fingerprint", "challenge.open_key_store", "challenge.format.KeyStore.read",
    "challenge.write_submission",
    "generator.generate", "generator.load_sources", "generator.default_private", "generator.default_public",
    "verifier.score_array", "verifier.format_table", "verifier.platform_scores", "verifier.selected_rows",
    "verifier.write_baseline",
    "attacks.open_public", "attacks.pool_attack", "attacks.graph_attack",
]


def resolve(dotted: str):
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise LookupError(dotted)


def numpydoc_sections(doc: str) -> dict[str, list[str]]:
    """Section title -> the names its entries document (``c1, c2 : float`` documents two)."""
    lines = doc.splitlines()
    sections, current = {}, None
    for i, line in enumerate(lines):
        underline = lines[i + 1].strip() if i + 1 < len(lines) else ""
        if line.strip() and underline and set(underline) == {"-"} and len(underline) == len(line.strip()):
            current = sections.setdefault(line.strip(), [])
        elif current is not None and line and not line[0].isspace() and set(line.strip()) != {"-"}:
            current.extend(name.strip() for name in line.split(" : ")[0].split(","))
    return sections


def raises_itself(function) -> bool:
    """Whether the body raises an error of its own (what it calls may raise more)."""
    import ast
    import textwrap

    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    return any(isinstance(node, ast.Raise) and node.exc is not None for node in ast.walk(tree))


@pytest.mark.parametrize("dotted", DOCUMENTED)
def test_the_api_is_documented_in_numpydoc(dotted):
    obj = resolve(dotted)
    doc = inspect.getdoc(obj) or ""
    sections = numpydoc_sections(doc)
    function = obj.__init__ if inspect.isclass(obj) else obj
    expected = [n for n in inspect.signature(function).parameters if n not in ("self", "cls")]
    documents = sections.get("Parameters", [])
    assert documents == expected, f"{dotted}: Parameters document {documents}, the signature has {expected}"
    if not inspect.isclass(obj):
        assert sections.get("Returns"), f"{dotted}: no Returns section"
        if raises_itself(obj):
            assert sections.get("Raises"), f"{dotted}: raises, but has no Raises section"


def test_every_name_the_api_document_imports_is_documented():
    import re

    text = (ROOT / "docs" / "API.md").read_text(encoding="utf-8")
    imported = {f"{module}.{name.strip()}" for module, names in re.findall(r"^from (\w+) import ([\w, ]+)$", text, re.M)
                for name in names.split(",") if module in PACKAGES}
    exceptions = {name for name in imported if inspect.isclass(resolve(name)) and issubclass(resolve(name), Exception)}
    assert imported - exceptions <= set(DOCUMENTED), sorted(imported - exceptions - set(DOCUMENTED))


def test_the_numpydoc_reader_sees_a_missing_or_a_stray_parameter():
    def documented(a, b):
        """Add.

        Parameters
        ----------
        a, c : int
            Numbers.

        Returns
        -------
        int
        """

    assert numpydoc_sections(inspect.getdoc(documented)) == {"Parameters": ["a", "c"], "Returns": ["int"]}
