"""Interactive mode driven through a pseudo-terminal, as a person would use it."""

from __future__ import annotations

import re
import sys

import pexpect
import pytest

from .helpers import REPO, harness_env

ANSI = r"(?:\x1b\[[0-9;?]*[A-Za-z])*"  # rich and prompt_toolkit put escape codes between words
CPR_REQUEST = "\x1b[6n"


class Terminal:
    """A pexpect child that answers prompt_toolkit's cursor-position requests like a real terminal
    (with the cursor on the first row), so the live view (the bottom toolbar) is drawn."""

    def __init__(self, child: pexpect.spawn):
        self.child = child

    def expect(self, pattern: str, timeout: float = 15) -> re.Match[str]:
        compiled = re.compile(pattern)
        while True:
            i = self.child.expect([re.escape(CPR_REQUEST), compiled], timeout=timeout)
            if i == 0:
                self.child.send("\x1b[1;1R")
                continue
            return self.child.match

    def command(self, line: str) -> None:
        self.child.sendline(line)


@pytest.fixture
def terminal(tmp_path):
    child = pexpect.spawn(
        sys.executable,
        ["-m", "sidecar.harness", "--history", str(tmp_path / "history")],
        cwd=str(REPO),
        env={**harness_env(), "TERM": "xterm", "COLUMNS": "160", "LINES": "40"},
        dimensions=(40, 160),
        encoding="utf-8",
        codec_errors="replace",
        timeout=20,
    )
    try:
        yield Terminal(child)
    finally:
        if child.isalive():
            child.sendcontrol("d")
            try:
                child.expect(pexpect.EOF, timeout=10)
            except (pexpect.TIMEOUT, pexpect.EOF):
                pass
        child.close(force=True)


def test_create_list_and_quit_through_a_pty(terminal: Terminal, tmp_path) -> None:
    terminal.expect("task types: .*demo.sleep")
    terminal.expect("sidecar>")
    terminal.command("create demo.sleep seconds=0.2")
    task_id = terminal.expect(rf"created {ANSI}([0-9a-f-]{{36}})").group(1)
    # the live view under the prompt shows the task and the notification stream
    terminal.expect(rf"notifications {ANSI}\({ANSI}\d+")
    terminal.expect(rf"task\.updated #\d+\s+{task_id[:8]}")
    for _ in range(20):  # list until the task has finished (0.2 s of work; the sidecar may be slow)
        terminal.command("list")
        m = terminal.expect(rf"{task_id[:8]}{ANSI}\s+{ANSI}demo\.sleep{ANSI}\s+{ANSI}(\w+)")
        terminal.expect(r"1 task\(s\)")
        if m.group(1) == "COMPLETED":
            break
    else:
        pytest.fail("the task never showed COMPLETED in list")
    terminal.command(f"get {task_id[:6]}")  # ids may be abbreviated
    terminal.expect(r'"progress"' + ANSI + r":\s*" + ANSI + r"100")
    terminal.command("quit")
    terminal.child.expect(pexpect.EOF, timeout=15)
    terminal.child.close()
    assert terminal.child.exitstatus == 0
    assert "create demo.sleep seconds=0.2" in (tmp_path / "history").read_text()


def test_completion_of_task_types_and_errors_shown(terminal: Terminal) -> None:
    terminal.expect("sidecar>")
    terminal.child.send("create demo.sl")
    terminal.expect(r"demo\.sl")
    terminal.child.send("\t")
    terminal.expect(r"eep")  # completed to demo.sleep (only the missing letters are drawn)
    terminal.child.send(" seconds=-1\r")
    terminal.expect(r"error -32602")  # refused by the details schema, shown, the prompt goes on
    terminal.command("get nosuchtask")
    terminal.expect(r"error -32001")
    terminal.command("frobnicate")
    terminal.expect(r"unknown command")
    terminal.command("quit")
    terminal.child.expect(pexpect.EOF, timeout=15)


def test_call_completes_every_method_the_sidecar_has() -> None:
    from prompt_toolkit.completion import CompleteEvent
    from prompt_toolkit.document import Document

    from sidecar.harness.commands import HELP, METHOD_NAMES, Commands
    from sidecar.harness.interactive import HarnessCompleter
    from sidecar.harness.session import SidecarOptions, open_sidecar

    with open_sidecar(SidecarOptions()) as client:
        table = {m["name"] for m in client.call("rpc.discover")["methods"]} | {"rpc.discover"}
        commands = Commands(client)
        commands.load_methods()
        completer = HarnessCompleter(commands)
        offered = {c.text for c in completer.get_completions(Document("call "), CompleteEvent())}
    assert {"rpc.discover", "queue.status"} <= offered
    assert offered == table
    assert set(METHOD_NAMES) == table  # the fallback for a sidecar without rpc.discover is complete
    assert "wait ID [STATUS ...]" in HELP and "--type=T,U" in HELP  # as in docs/harness.md
