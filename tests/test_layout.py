"""The layout says the architecture, and stays saying it (issue #13).

``challenge/`` is the format and imports none of the other packages; ``generator/`` builds,
``verifier/`` checks and scores, ``attacks/`` attacks: each imports ``challenge/`` and never a
sibling; ``commands/`` (the command-line tree) composes them and nothing imports it.  And every
module the format documents cite exists, so the prose cannot drift from the code unnoticed.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

from challenge import format as fmt

ROOT = Path(__file__).resolve().parent.parent
LIBRARIES = ("challenge", "generator", "verifier", "attacks")
PACKAGES = (*LIBRARIES, "commands")
DOCS = ("docs/FORMAT.md", "docs/AUDIT.md", "docs/ATTACKS.md")


def module_imports() -> dict[str, set[str]]:
    """Module -> the project modules it imports (anywhere in it, lazy imports included)."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            found = set()
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    found.add(node.module)
                    found.update(f"{node.module}.{alias.name}" for alias in node.names)
                elif isinstance(node, ast.Import):
                    found.update(alias.name for alias in node.names)
            modules[name] = found
    return {m: {_resolve(d, modules) for d in deps if d.split(".")[0] in PACKAGES} - {None, m}
            for m, deps in modules.items()}


def _resolve(name: str, modules) -> str | None:
    """The project module ``name`` denotes (``pkg.mod.attr`` -> ``pkg.mod``)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


GRAPH = module_imports()


def test_every_package_is_seen():
    assert {m.split(".")[0] for m in GRAPH} == set(PACKAGES)


def test_no_import_circle():
    state: dict[str, int] = {}

    def visit(module: str, stack: list[str]) -> None:
        state[module] = 1
        for dep in sorted(GRAPH[module]):
            if state.get(dep) == 1:
                pytest.fail("import circle: " + " -> ".join(stack[stack.index(dep):] + [module, dep]))
            if not state.get(dep):
                visit(dep, stack + [module])
        state[module] = 2

    for module in sorted(GRAPH):
        if not state.get(module):
            visit(module, [])


def test_challenge_imports_only_challenge():
    upward = sorted(f"{m} -> {d}" for m, deps in GRAPH.items() if m.split(".")[0] == "challenge"
                    for d in deps if d.split(".")[0] != "challenge")
    assert not upward


def test_no_sibling_imports():
    """generator/, verifier/ and attacks/ each import challenge/ and themselves only."""
    siblings = sorted(f"{m} -> {d}" for m, deps in GRAPH.items() if m.split(".")[0] in LIBRARIES[1:]
                      for d in deps if d.split(".")[0] not in ("challenge", m.split(".")[0]))
    assert not siblings


def test_nothing_imports_the_command_tree():
    inward = sorted(f"{m} -> {d}" for m, deps in GRAPH.items() if m.split(".")[0] != "commands"
                    for d in deps if d.split(".")[0] == "commands")
    assert not inward


def test_no_module_shadows_the_standard_library():
    import sys

    shadows = sorted(m for m in GRAPH if m.rpartition(".")[2] in sys.stdlib_module_names)
    assert not shadows


_PATH = re.compile(r"`((?:%s)/[\w/]+\.py)(?:::(\w+))?`" % "|".join(PACKAGES))
_DOTTED = re.compile(r"`((?:%s)(?:\.\w+)+)(?:\(\))?`" % "|".join(PACKAGES))


def doc_references() -> list[tuple[str, str, str | None]]:
    """(document, module, attribute or None) for every module reference in the format's documents:
    `` `pkg/file.py` ``, `` `pkg/file.py::name` `` and `` `pkg.module.name` ``."""
    refs = []
    for doc in DOCS:
        text = (ROOT / doc).read_text(encoding="utf-8")
        for path, attribute in _PATH.findall(text):
            refs.append((doc, path.removesuffix(".py").replace("/", ".").removesuffix(".__init__"), attribute or None))
        for dotted in _DOTTED.findall(text):
            first, second = dotted.split(".")[:2]
            if first == "generator" and second in fmt.generator_info():
                continue  # the manifest's field generator.version, not a module
            refs.append((doc, dotted, None))
    return refs


@pytest.mark.parametrize("doc, reference, attribute", doc_references())
def test_documented_module_references_exist(doc, reference, attribute):
    parts = reference.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:] + ([attribute] if attribute else []):
            assert hasattr(target, name), f"{doc}: {reference}: {target.__name__} has no {name!r}"
            target = getattr(target, name)
        return
    pytest.fail(f"{doc}: {reference}: no such module")


def test_the_documents_cite_modules():
    assert len(doc_references()) >= 10
