"""The public API stays small and readable (issue 21): a call names its arguments beyond the first
few, so that a reader can tell ``generate(out, params, seed=..., private=..., public=...)`` apart."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil

import pytest

PACKAGES = ("challenge", "generator", "verifier", "attacks", "commands")
MAX_POSITIONAL = 4

# Rewritten on other branches of issue 21 (attacks/graph.py's internals, attacks/submit.py's writers):
# tolerated until they merge, then this list must go (the test below fails once an entry keeps the rule).
NOT_YET = {
    "attacks.graph.spherical_kmeans", "attacks.graph.initial_groups", "attacks.graph.split_merged",
    "attacks.graph.fit_images", "attacks.graph.reassign", "attacks.submit.write_pool",
}


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
    hand-written ``__init__`` of a class there (a dataclass's generated ``__init__`` is its fields)."""
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
                    generated = attribute == "__init__" and dataclasses.is_dataclass(obj)
                    if inspect.isfunction(value) and (not attribute.startswith("_") or attribute == "__init__") \
                            and not generated:
                        found[f"{module.__name__}.{name}.{attribute}"] = value
    return found


def positional(function) -> list[str]:
    return [p.name for p in inspect.signature(function).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in ("self", "cls")]


def test_public_functions_take_at_most_four_arguments_by_position():
    too_many = {name: positional(f) for name, f in public_callables().items()
                if len(positional(f)) > MAX_POSITIONAL and name not in NOT_YET}
    assert not too_many, f"make the arguments beyond the first one or two keyword-only: {too_many}"


@pytest.mark.parametrize("name", sorted(NOT_YET))
def test_tolerated_exceptions_still_need_tolerating(name):
    assert len(positional(public_callables()[name])) > MAX_POSITIONAL, f"{name} keeps the rule now: drop it from NOT_YET"


def test_the_documented_records_are_built_by_keyword():
    """``Params(20, 5)`` would not say which is n_private: the records a notebook builds take keywords only."""
    from challenge.manifest import Manifest
    from challenge.params import Params

    assert positional(Params.__init__) == positional(Manifest.__init__) == []
