import pytest

from tests.helpers import run_cli


def test_help_teaches():
    result = run_cli("generate", "--help")
    assert result.returncode == 0
    for option in ("--seed", "--practice", "--mode", "--k-private", "--c1", "--c2", "--domain", "--chunk", "--force"):
        assert option in result.stdout
    assert "examples:" in result.stdout
    top = run_cli("--help")
    assert top.returncode == 0 and "generate" in top.stdout and "exit codes" in top.stdout


@pytest.mark.parametrize("args, message", [
    (["--k", "4", "--k-private", "5"], "--k-private"),
    (["--k", "6", "--c1", "0.16"], "--c1"),
    (["--c2", "1.5"], "--c2"),
    (["--n-private", "-3"], "--n-private"),
    (["--per-image", "-1"], "--per-image"),
    (["--per-image", "0"], "--per-image"),
    (["--chunk", "0"], "--chunk"),
    (["--k", "abc"], "invalid int value"),
    (["--mode", "magic"], "invalid choice"),
    (["--seed", "1234"], "--practice"),
    (["--practice"], "--seed"),
    (["--n-private", "300"], "fewer than --n-private"),
    (["--c1", "0.2", "--c2", "0.9"], "loosen"),
])
def test_bad_parameters_give_one_line_and_exit_2(tmp_path, args, message):
    result = run_cli("generate", "--out", str(tmp_path / "r"), *args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "r").exists()


def test_existing_output_refused_then_forced(tmp_path):
    out = tmp_path / "r"
    args = ("generate", "--out", str(out), "--n-private", "10", "--per-image", "2")
    assert run_cli(*args).returncode == 0
    again = run_cli(*args)
    assert again.returncode == 2 and "already exists" in again.stderr and "--force" in again.stderr
    assert run_cli(*args, "--force").returncode == 0


def test_unwritable_output_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = run_cli("generate", "--out", str(blocker / "r"), "--n-private", "10", "--per-image", "2")
    assert result.returncode == 2 and "Traceback" not in result.stderr and str(blocker) in result.stderr


def test_an_os_error_is_exit_2_in_one_line(capsys):
    """Read-only folders, full disks and permissions are the environment's answer, not a bug."""
    from commands.common import OneLineParser, run

    def refuse(args):
        raise PermissionError(13, "Permission denied", "/somewhere/out")

    parser = OneLineParser(prog="demo")
    parser.set_defaults(run=refuse)
    assert run(parser, []) == 2
    err = capsys.readouterr().err
    assert err == "demo: error: /somewhere/out: Permission denied\n"
