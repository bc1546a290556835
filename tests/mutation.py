"""Mutation testing of the modules that guard the promises (issue #23): each mutant that mutmut
(2.x, used as a library: its parser and mutation operators only) makes of the selected code is
written into a scratch copy of the checkout, and that module's own tests are run against it; a
mutant no test fails is a missing test or an equivalent mutant (docs/TESTING.md lists them).

mutmut is not a dependency of the project: install it beside it, in any environment::

    python3 -m venv /tmp/mutmut && /tmp/mutmut/bin/pip install 'mutmut==2.5.1'
    /tmp/mutmut/bin/python tests/mutation.py [MODULE ...] [--python .venv/bin/python] [--out results.json]

One mutant at a time under ``nice -n 10`` (one core); string texts are not mutated (messages are
checked where they matter, and their mutants would double the run).  The targets below name, per
module, the functions mutated (all of it when None) and the tests that must kill them.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import resource
import signal
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mutmut import ALL, Config, Context, list_mutations, mutate, mutations_by_type

ROOT = Path(__file__).resolve().parent.parent
AUDIT_TESTS = ["tests/test_audit.py", "-k", "not memory_does_not_grow and not corrupted_byte_anywhere"]
# module -> (functions mutated, or None for the whole file; the tests run against each mutant; how many
# mutants, drawn at random with a fixed seed, or None for all).  The paths of the promises (commitment,
# secrets, digests, exit status) are mutated whole; the rest is sampled to fit the machine.
TARGETS = {
    "commands/common.py": (["run"], ["tests/test_exit_codes.py"], None),
    "challenge/format.py": (["commitment", "check_commitment", "sha256_file"],
                            ["tests/test_submission.py", "tests/test_files.py", "tests/test_audit.py::test_flipped_mask_bit", "tests/test_audit.py::test_every_listed_file_is_hashed",
                             "tests/test_conformance.py::test_a_release_is_what_the_spec_derives[cross]",
                             "tests/test_format_versions.py::test_version_1_release_is_read_as_before"], None),
    "challenge/submission.py": (["open_for_scoring", "expected_from_params", "expected_from_keys"],
                                ["tests/test_submission.py"], None),
    "verifier/audit.py": (["check_digests", "_sha256_files", "_hash_groups", "_digest_findings", "check_commitment",
                           "check_secrets", "_contains", "check_public_files"], AUDIT_TESTS, None),
    "generator/release.py": (["_seal_secrets", "_publish"], [
        "tests/test_release.py", "tests/test_faults.py", "tests/test_hardening_generate.py",
        "-k", "not sigkill and not concurrent and not real_full and not killing_patches"], None),
    "challenge/params.py": (None, ["tests/test_defaults.py", "tests/test_params.py", "tests/test_lambdas.py"], 20),
    "challenge/keystream.py": (None, ["tests/test_keystream.py",
                                      "tests/test_conformance.py::test_the_tool_gives_the_known_answers"], 15),
    "challenge/lambdas.py": (["words_per_try", "_try", "_first_accepted", "draw_lambda", "acceptance"],
                             ["tests/test_lambdas.py", "tests/test_conformance.py::test_the_tool_gives_the_known_answers"], 10),
    "challenge/manifest.py": (["manifest_problems", "_check_sources", "Manifest"], ["tests/test_submission.py", *AUDIT_TESTS], 10),
    "verifier/submission.py": (["check_shape", "_check_metadata", "validate", "check_files"], ["tests/test_submission.py"], 10),
    "verifier/scoring.py": (None, ["tests/test_scoring.py"], 10),
}


def selected_lines(source: str, functions: list[str] | None) -> set[int] | None:
    """The 0-based line numbers of the named functions (methods included), or None for every line."""
    if functions is None:
        return None
    lines = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in functions:
            lines.update(range(node.lineno - 1, node.end_lineno))
    return lines


def mutants(path: Path, functions: list[str] | None) -> list:
    source = path.read_text()
    config = Config(swallow_output=True, test_command="", covered_lines_by_filename=None, baseline_time_elapsed=0,
                    dict_synonyms=[], total=0, using_testmon=False, tests_dirs=[], hash_of_tests="",
                    test_time_multiplier=0, test_time_base=0, pre_mutation=None, post_mutation=None,
                    coverage_data=None, paths_to_mutate=[], no_progress=True, ci=False, rerun_all=False,
                    mutation_types_to_apply=set(mutations_by_type) - {"string", "fstring"})
    context = Context(source=source, filename=str(path), config=config, mutation_id=ALL)
    lines = selected_lines(source, functions)
    return [(m, config) for m in list_mutations(context) if lines is None or m.line_number in lines]


def run_tests(scratch: Path, python: str, tests: list[str], timeout: float) -> str:
    command = ["nice", "-n", "10", python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    try:
        done = subprocess.run(command, cwd=scratch, capture_output=True, timeout=timeout,
                              env={**os.environ, "NUMBA_CACHE_DIR": str(scratch / ".numba")})
    except subprocess.TimeoutExpired:
        return "timeout"  # counted as killed: a mutant that hangs is noticed
    return "survived" if done.returncode == 0 else "killed"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", default=list(TARGETS))
    parser.add_argument("--python", default=str(ROOT / ".venv" / "bin" / "python"), help="the project's environment")
    parser.add_argument("--out", type=Path, default=Path("mutation-results.json"))
    parser.add_argument("--recheck", action="store_true", help="run only the survivors --out lists (after adding tests)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the scratch copy is removed
    scratch = Path(tempfile.mkdtemp(prefix="instahide-mutation-"))
    try:
        shutil.copytree(ROOT, scratch, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(".venv", ".git", "__pycache__", "*.egg-info", "build"))
        results = json.loads(args.out.read_text()) if args.out.exists() else {}
        for module in args.modules:
            functions, tests, sample = TARGETS[module]
            target = scratch / module
            original = target.read_text()
            start, cpu = time.monotonic(), _children_cpu()
            if run_tests(scratch, args.python, tests, 1800) != "survived":
                print(f"{module}: the tests fail unmutated; skipped", file=sys.stderr)
                continue
            timeout = 5 * (time.monotonic() - start) + 60  # generous: the machine is shared, its load varies
            outcome = {"killed": 0, "timeout": 0, "survived": []}
            found = mutants(target, functions)
            if sample is not None and sample < len(found):
                found = [found[i] for i in sorted(random.Random(module).sample(range(len(found)), sample))]
            if args.recheck:
                survivors = {(s["line"] - 1, s["index"]) for s in results.get(module, {}).get("survived", [])}
                found = [(m, c) for m, c in found if (m.line_number, m.index) in survivors]
            for i, (mutation, config) in enumerate(found):
                mutated, _ = mutate(Context(source=original, filename=str(target), config=config, mutation_id=mutation))
                target.write_text(mutated)
                try:
                    status = run_tests(scratch, args.python, tests, timeout)
                finally:
                    target.write_text(original)
                if status == "survived":
                    changed = mutated.splitlines()[mutation.line_number]
                    outcome["survived"].append({"line": mutation.line_number + 1, "index": mutation.index,
                                                "was": mutation.line.strip(), "now": changed.strip()})
                else:
                    outcome[status] += 1
                print(f"{module} {i + 1}/{len(found)} line {mutation.line_number + 1}: {status}", flush=True)
            if args.recheck:  # the mutants killed now join those killed before
                before = results[module]
                outcome["killed"] += before["killed"] + len(before["survived"]) - len(found)
                outcome["timeout"] += before["timeout"]
                total = before["mutants"]
            else:
                total = len(found)
            outcome |= {"mutants": total, "of": len(mutants(target, functions)), "score": round((total - len(outcome["survived"])) / max(total, 1), 3),
                        "functions": functions or "all", "tests": tests, "seconds": round(time.monotonic() - start),
                        "cpu_seconds": round(_children_cpu() - cpu)}
            results[module] = outcome
            args.out.write_text(json.dumps(results, indent=1) + "\n")
            print(f"{module}: {total - len(outcome['survived'])}/{total} killed", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
