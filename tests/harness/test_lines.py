"""The short commands with a non-terminal stdin (line mode), as in a shell pipeline."""

from __future__ import annotations

import re
import sys

import pytest

from .helpers import FAKE_SIDECAR, run_harness


def test_commands_from_a_pipe() -> None:
    script = "\n".join(
        [
            "info",
            "create demo.sleep seconds=0.2 steps=2 --priority=3",
            "create demo.noop --max-attempts=1",
            "list",
            "stats",
            "raw {\"method\": \"system.ping\"}",
            "raw {oops",  # an error answer to raw is its result, not a failed command
            "quit",
            "list",  # never runs
        ]
    )
    proc = run_harness(stdin=script + "\n")
    out = proc.stdout
    assert "> info" in out and "demo.sleep" in out
    ids = re.findall(r"created ([0-9a-f-]{36}) (demo\.\w+)", out)
    assert [t for _, t in ids] == ["demo.sleep", "demo.noop"]
    assert re.search(r"~ task\.updated #\d+\s+" + ids[0][0][:8], out)  # notifications are logged
    assert "2 task(s)" in out
    assert '"result": "pong"' in out
    assert '"code": -32700' in out
    assert out.count("> list") == 1
    assert proc.returncode == 0, out + proc.stderr


def test_a_bad_command_makes_the_exit_code_non_zero() -> None:
    proc = run_harness(stdin="frobnicate\nping\n")
    assert "unknown command 'frobnicate'" in proc.stdout
    assert "pong" in proc.stdout
    assert proc.returncode == 1


@pytest.mark.parametrize(
    "command, shown",
    [
        ("create nope.type", "error -32003"),
        ("get nonexistent", "error -32001"),
        ("list --limit=0", "error -32602"),  # refused, never clamped
        ('call tasks.list {"limit": 0}', '"code": -32602'),
    ],
)
def test_an_error_answer_is_a_failed_command(command: str, shown: str) -> None:
    proc = run_harness(stdin=f"{command}\nping\n")
    assert shown in proc.stdout and "pong" in proc.stdout
    assert proc.returncode == 1, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "command, message",
    [("list --limit=abc", "error: --limit=abc: not an integer"), ("wait 1234 --timeout=abc", "error: --timeout=abc: not a number")],
)
def test_a_bad_number_is_an_error_of_that_command_only(command: str, message: str) -> None:
    proc = run_harness(stdin=f"{command}\nping\n")
    assert message in proc.stdout and "pong" in proc.stdout  # the session carried on
    assert "Traceback" not in proc.stderr
    assert proc.returncode == 1, proc.stdout + proc.stderr


def test_a_sidecar_that_dies_ends_the_session_with_exit_3() -> None:
    proc = run_harness("--cmd", f"{sys.executable} {FAKE_SIDECAR} --die-after 1", stdin="ping\nping\nping\nstats\n")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "exited (code 3) before answering system.ping" in proc.stderr
    assert (proc.stdout + proc.stderr).count("exited (code 3)") == 1  # reported once
    # (the first message it gets is load_info's system.info, so the first ping finds it dead)
    assert proc.stdout.count("> ping") == 1 and "> stats" not in proc.stdout  # nothing more was tried
