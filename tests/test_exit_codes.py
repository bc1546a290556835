"""The exit codes the README and ``--help`` promise, for what a command may raise: 1 and an
"internal error" line (under the traceback) for a bug, 2 and one line for a user's mistake or the
environment's refusal, 130 for an interrupt.  Faults are injected into the audit (``instahide``) and
into the opening of a release (``verify``)."""

import errno
import subprocess
import sys

import pytest

import commands.verify
import verifier.audit
from challenge.errors import UsageError
from commands import main as instahide

BUG_LINE = "internal error (a bug); please report the traceback above"


def raising(error: BaseException):
    def fail(*_, **__):
        raise error
    return fail


@pytest.mark.parametrize("error, code, last_line", [
    (ZeroDivisionError("division by zero"), 1, f"{{prog}}: {BUG_LINE}"),
    (KeyError("params"), 1, f"{{prog}}: {BUG_LINE}"),
    (UsageError("r: not a release"), 2, "{prog}: error: r: not a release"),
    (OSError(errno.ENOSPC, "No space left on device", "r/x"), 2, "{prog}: error: r/x: No space left on device"),
    (PermissionError(errno.EACCES, "Permission denied"), 2, "{prog}: error: Permission denied"),
    (KeyboardInterrupt(), 130, "{prog}: interrupted"),
])
@pytest.mark.parametrize("prog", ["instahide", "verify"])
def test_what_a_command_raises_decides_its_exit_code(tiny_release, monkeypatch, capsys, prog, error, code, last_line):
    if prog == "instahide":
        monkeypatch.setattr(verifier.audit, "audit", raising(error))
        returned = instahide.main(["audit", str(tiny_release)])
    else:
        monkeypatch.setattr(commands.verify, "open_for_scoring", raising(error))
        returned = commands.verify.main([str(tiny_release), "--release", str(tiny_release)])
    err = capsys.readouterr().err
    assert returned == code and err.splitlines()[-1] == last_line.format(prog=prog), err
    if code == 1:  # the traceback a bug report needs, above the line
        assert err.startswith("Traceback (most recent call last):") and type(error).__name__ in err
    else:
        assert len(err.splitlines()) == 1, err


def test_a_bug_exits_1_from_the_installed_entry_point(tiny_release):
    """The status a shell sees, through the console script's ``sys.exit(main())``."""
    inject = ("import sys, verifier.audit, commands.main; verifier.audit.audit = lambda *a, **k: 1 / 0; "
              "sys.exit(commands.main.main())")
    result = subprocess.run([sys.executable, "-c", inject, "audit", str(tiny_release)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and result.stderr.splitlines()[-1] == f"instahide: {BUG_LINE}", result.stderr
    assert "ZeroDivisionError" in result.stderr
