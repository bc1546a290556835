"""Property: every valid parameter combination yields a release that ``audit`` finds sound; every
invalid one is refused by ``generate`` with exit code 2 and leaves nothing behind."""

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from challenge.lambdas import acceptance
from challenge.params import MIN_ACCEPTED_TRIES, MODES, Params
from commands.main import main

# derandomize: CI runs the same examples every time, so main stays green or fails for a reason
SETTINGS = settings(max_examples=25, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.filter_too_much])
CLASSES = 10  # the embedded private set: 10 classes of 20 images


@st.composite
def valid_params(draw) -> Params:
    mode = draw(st.sampled_from(MODES))
    k = draw(st.integers(2, 8))
    k_private = k if mode == "inside" else draw(st.integers(1, k - 1))
    n_private = draw(st.integers(max(2, k_private), 12))
    params = Params(
        mode=mode, k=k, k_private=k_private,
        c1=draw(st.floats(min(1.0, 1.5 / k), 1.0)), c2=draw(st.floats(0.0, 0.8 * k_private / k)),
        n_private=n_private, per_image=draw(st.integers(1, 4)),
        domain=draw(st.sampled_from(["centered", "positive"])),
        balanced=n_private % CLASSES == 0 and draw(st.booleans()),
    )
    assume(acceptance(params.lambda_constraints) >= MIN_ACCEPTED_TRIES)
    return params


BREAKS = {  # one broken rule of docs/FORMAT.md section 2 each
    "k too small": lambda p, x: {"k": x % 2, "k_private": 1},
    "k too large": lambda p, x: {"k": 17 + x % 4},
    "k_private above k": lambda p, x: {"k_private": p.k + 1 + x % 3},
    "k_private zero": lambda p, x: {"k_private": 0},
    "inside without k_private = k": lambda p, x: {"mode": "inside", "k_private": p.k - 1},
    "cross without a public patch": lambda p, x: {"mode": "cross", "k_private": p.k},
    "c1 at or below 1/k": lambda p, x: {"c1": 1.0 / p.k - (x % 5) / 100},
    "c1 above 1": lambda p, x: {"c1": 1.0 + (1 + x % 5) / 10},
    "c2 negative": lambda p, x: {"c2": -(1 + x % 5) / 10},
    "c2 above 1": lambda p, x: {"c2": 1.0 + (1 + x % 5) / 10},
    "n_private below max(2, k_private)": lambda p, x: {"n_private": x % max(2, p.k_private)},
    "per_image not positive": lambda p, x: {"per_image": -(x % 3)},
    "balanced n_private not a multiple of the classes": lambda p, x: {"balanced": True, "n_private": 11},
    "lambda constraints accept almost nothing": lambda p, x: {"mode": "cross", "k": 6, "k_private": 2, "c1": 0.2, "c2": 0.9},
    "unknown domain": lambda p, x: {"domain": "sphere"},
}


def argv(out: Path, p: Params) -> list[str]:
    args = ["generate", "--out", str(out), "--seed", "9e3b71c05fa2d846b1e07c3a5d92f4680ca7e1b53d6f082947bc1ea5603fd28b", "--mode", str(p.mode), "--k", str(p.k),
            "--k-private", str(p.k_private), "--c1", repr(p.c1), "--c2", repr(p.c2), "--n-private", str(p.n_private),
            "--per-image", str(p.per_image), "--domain", str(p.domain)]
    return args + ["--balanced"] * p.balanced


def exit_code(args: list[str]) -> int:
    try:
        return main(args)
    except SystemExit as e:  # argparse's own refusals (e.g. an unknown --domain)
        return e.code


@SETTINGS
@given(valid_params())
def test_every_valid_combination_gives_a_sound_release(params):
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "release"
        assert exit_code(argv(out, params)) == 0, params
        assert exit_code(["audit", str(out)]) == 0, params


@SETTINGS
@given(valid_params(), st.sampled_from(sorted(BREAKS)), st.integers(0, 1000))
def test_every_invalid_combination_is_refused_with_exit_2(params, rule, x):
    broken = Params(**{**params.to_dict(), **BREAKS[rule](params, x)})
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "release"
        assert exit_code(argv(out, broken)) == 2, (rule, broken)
        assert list(Path(tmp).iterdir()) == [], (rule, broken)
