"""Issue #11 part 4: a bar with rate and ETA on every long step, only when stderr is a terminal,
never on stdout (so ``--json`` output stays parseable)."""

from __future__ import annotations

import io
import json
import os
import select
import subprocess
import sys
import time

import pytest

from challenge.progress import Progress
from generator.patches import bank_progress, build_patch_bank, load_patch_bank
from tests.helpers import run_cli
from tests.test_patches import SEED as BANK_SEED, make_public

TINY_ARGS = ["--n-private", "20", "--per-image", "5"]


def run_on_a_terminal(*args: str, module: str = "commands.main", timeout: float = 300) -> tuple[int, str, str]:
    """Run the CLI with stderr on a pseudo-terminal and stdout on a pipe: (status, stdout, terminal text)."""
    master, slave = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", module, *args], stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    seen, deadline = [], time.monotonic() + timeout  # a watchdog, never an unbounded wait
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                try:
                    data = os.read(master, 1 << 16)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                seen.append(data)
            elif proc.poll() is not None:
                break
        else:
            proc.kill()
            pytest.fail(f"{args}: still running after {timeout} s")
        stdout = proc.stdout.read().decode()
        return proc.wait(timeout=60), stdout, b"".join(seen).decode(errors="replace")
    finally:
        os.close(master)
        proc.stdout.close()


def test_bar_shows_rate_and_eta():
    stream = io.StringIO()
    with Progress("write", 4000, enabled=True, stream=stream, unit="encryptions") as bar:
        bar.advance(4000)
    text = stream.getvalue()
    assert "encryptions/s" in text and "4000/4000" in text and "<" in text
    stream = io.StringIO()
    with Progress("sync", 3 << 20, enabled=True, stream=stream, unit="B") as bar:
        bar.advance(3 << 20)
    assert "B/s]" in stream.getvalue() and "3.15M/3.15M B" in stream.getvalue()


def test_generate_audit_verify_draw_bars_on_a_terminal_and_json_stays_clean(tmp_path):
    out = tmp_path / "r"
    status, stdout, terminal = run_on_a_terminal("generate", "--out", str(out), "--practice", "--seed", "bars",
                                                 "--json", *TINY_ARGS)
    assert status == 0, terminal
    assert json.loads(stdout)["n_encryptions"] == 100  # stdout is the JSON and nothing else
    for label in ("write", "sync"):
        assert f"{label} 100%" in terminal, terminal
    assert "encryptions/s" in terminal and "B/s" in terminal
    keys = out / "secret" / "keys.zarr"
    status, stdout, terminal = run_on_a_terminal("audit", str(out), "--keys", str(keys), "--json")
    assert status == 0 and json.loads(stdout)["sound"] and "audit 100%" in terminal and "digests 100%" in terminal
    status, _, _ = run_on_a_terminal("baseline", "oracle", "--release", str(out), "--keys", str(keys), "--out", str(tmp_path / "sub"))
    assert status == 0
    status, stdout, terminal = run_on_a_terminal(str(tmp_path / "sub"), "--keys", str(keys), "--json", module="commands.verify")
    assert status == 0 and json.loads(stdout) and "score 100%" in terminal, terminal


def test_no_bar_when_stderr_is_not_a_terminal(tmp_path):
    result = run_cli("generate", "--out", str(tmp_path / "r"), "--practice", "--seed", "bars", *TINY_ARGS)
    assert result.returncode == 0
    assert "\r" not in result.stderr and "100%" not in result.stderr and "100%" not in result.stdout


def test_patches_bar_moves_per_file_and_says_where_a_resume_starts(tmp_path, capsys):
    pub = tmp_path / "pub"
    make_public(pub)
    kw = dict(seed=BANK_SEED, crops_per_image=3, min_keypoints=3, batch_files=4, chunk_files=2, workers=1)
    decoded = []
    build_patch_bank(pub, tmp_path / "whole", on_decoded=decoded.append, **kw)
    assert decoded == [2] * 9  # 18 files, two at a time: the bar moves per chunk of files, not per committed batch

    with pytest.raises(KeyboardInterrupt):
        with bank_progress(enabled=False) as hooks:
            def interrupt(done, total, patches, inner=hooks["progress"]):
                inner(done, total, patches)
                if done >= 8:
                    raise KeyboardInterrupt
            build_patch_bank(pub, tmp_path / "cut", **{**kw, **hooks, "progress": interrupt})
    assert "re-run the same command to resume" in capsys.readouterr().err
    with bank_progress(enabled=False) as hooks:
        summary = build_patch_bank(pub, tmp_path / "cut", **kw, **hooks)
    assert summary.resumed_from_file == 8
    assert "resumed at 8 of 18 files" in capsys.readouterr().err
    assert len(load_patch_bank(tmp_path / "cut")) == len(load_patch_bank(tmp_path / "whole"))


def test_audit_digests_bar_counts_files_hashed_not_hashing_started(tiny_release, monkeypatch):
    """On a cluster the digests are hashed while the rows are checked: the bar advances as each hash
    arrives, not when its task is sent (it used to reach 100 % before any file was hashed)."""
    from verifier import audit as audit_module

    events = []

    class Deferred(audit_module.Runner):  # work starts when asked for, as it ends on a cluster
        def later(self, fn, *args):
            events.append("sent")

            def result():
                events.append("hashed")
                return fn(*args)
            return result

    class Recorder(Progress):
        def advance(self, n: int = 1) -> None:
            events.append(self.label)
            super().advance(n)

    monkeypatch.setattr(audit_module, "HASH_TASK_BYTES", 1)  # a task per file
    monkeypatch.setattr(audit_module, "Progress", Recorder)
    report = audit_module.audit(tiny_release, tiny_release / "secret" / "keys.zarr", runner=Deferred())
    assert report.sound
    digest_events = [e for e in events if e in ("sent", "hashed", "digests")]
    files = digest_events.count("sent")
    assert files >= 3 and digest_events.count("hashed") == files
    assert digest_events[files:] == ["hashed", "digests"] * files, digest_events
