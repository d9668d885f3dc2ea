"""Interactive mode: a prompt (history, completion of commands, method names, task types, details
keys and task ids) above a live view of the tasks and the notification stream.

The live view is the prompt's bottom toolbar, re-rendered with rich several times a second, so it
updates in place while the user types; command output scrolls above the prompt.
"""

from __future__ import annotations

import io
import os
import shlex
from typing import Any, Iterable

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.formatted_text import ANSI
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.styles import Style
from rich.console import Console

from sidecar.harness.client import SidecarGone
from sidecar.harness.commands import COMMANDS, ID_COMMANDS, CommandError, CommandFailed, Commands, Quit
from sidecar.harness.session import SidecarOptions, open_sidecar
from sidecar.harness.view import board_view

PROMPT = "sidecar> "


class HarnessCompleter(Completer):
    def __init__(self, commands: Commands):
        self.commands = commands
        self.schemas: dict[str, list[str]] = {}

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterable[Completion]:
        text = document.text_before_cursor
        try:
            words = shlex.split(text)
        except ValueError:
            words = text.split()
        if text.endswith(" ") or not words:
            words.append("")
        current = words[-1]
        if len(words) == 1:
            yield from _matching(COMMANDS, current)
            return
        cmd = words[0].lower()
        if cmd == "create" and len(words) == 2:
            yield from _matching(self.commands.task_types, current)
        elif cmd == "create" and len(words) > 2 and "=" not in current:
            keys = [k + "=" for k in self.schemas.get(words[1], [])]
            keys += ["--priority=", "--parent=", "--max-attempts=", "--idempotencyKey=", "--runAt="]
            yield from _matching(keys, current)
        elif cmd in ("call",) and len(words) == 2:
            yield from _matching(self.commands.method_names, current)
        elif cmd in ID_COMMANDS and len(words) == 2 or (cmd == "create" and current.startswith("--parent=")):
            prefix = current.split("=", 1)[1] if current.startswith("--parent=") else current
            tasks, _ = self.commands.client.board.snapshot()
            for t in sorted(tasks, key=lambda t: -(t.get("createdAt") or 0)):
                if t["id"].startswith(prefix):
                    yield Completion(t["id"], start_position=-len(prefix), display=t["id"][:8], display_meta=f"{t.get('type')} {t.get('status')}")
        elif cmd == "list":
            yield from _matching(["QUEUED", "WAITING", "RUNNING", "PAUSED", "COMPLETED", "FAILED", "CANCELLED", "--type=", "--parent=", "--limit="], current)


def _matching(options: Iterable[str], prefix: str) -> Iterable[Completion]:
    for option in options:
        if option.startswith(prefix):
            yield Completion(option, start_position=-len(prefix))


def _history(path: str | None) -> History:
    if path is None:
        try:
            import platformdirs

            directory = platformdirs.user_state_path("task-sidecar", ensure_exists=True)
            path = os.path.join(directory, "harness-history")
        except OSError:
            return InMemoryHistory()
    try:
        return FileHistory(path)
    except OSError:
        return InMemoryHistory()


def run_interactive(opts: SidecarOptions, history: str | None = None) -> int:
    console = Console(highlight=False)
    with open_sidecar(opts) as client:
        commands = Commands(client)
        info = commands.load_info()
        commands.load_methods()
        completer = HarnessCompleter(commands)
        for h in info.get("handlers", []):
            props = ((h.get("detailsSchema") or {}).get("properties") or {}) if isinstance(h.get("detailsSchema"), dict) else {}
            completer.schemas[h.get("type")] = list(props)
        ready = client.ready or {}
        console.print(
            f"task-sidecar {ready.get('version')} (protocol {ready.get('protocolVersion')}), pid {ready.get('pid')}, db {ready.get('dbPath')}\n"
            f"task types: {', '.join(commands.task_types)}.  Type help for the commands, Tab to complete, quit to leave.",
            markup=False,
        )
        session: PromptSession[str] = PromptSession(
            history=_history(history),
            completer=completer,
            complete_while_typing=False,
            refresh_interval=0.25,
            style=Style.from_dict({"bottom-toolbar": "noreverse", "bottom-toolbar.text": ""}),
        )

        def toolbar() -> Any:
            size = session.app.output.get_size()
            if client.board.tasks == {} and not client.board.events:
                return ""
            buf = io.StringIO()
            Console(file=buf, force_terminal=True, width=max(40, size.columns - 1), color_system="standard").print(
                board_view(client.board, max_tasks=max(3, min(14, size.rows - 14)), max_events=4)
            )
            return ANSI(buf.getvalue().rstrip("\n"))

        while True:
            if not client.alive:
                console.print(f"the sidecar exited (code {client.exit_code})\n{client.stderr_text()}", markup=False)
                return 3
            try:
                line = session.prompt(PROMPT, bottom_toolbar=toolbar)
            except KeyboardInterrupt:
                continue
            except EOFError:
                break
            try:
                for item in commands.execute(line):
                    console.print(item)
            except Quit:
                break
            except CommandFailed as exc:
                for item in exc.output:
                    console.print(item)
            except SidecarGone as exc:  # reported once; nothing left to drive
                console.print(str(exc), markup=False)
                return 3
            except (CommandError, TimeoutError, ConnectionError, ValueError) as exc:
                console.print(f"error: {exc}", style="red", markup=False)
            except KeyboardInterrupt:  # e.g. a long ``wait``: back to the prompt
                console.print("interrupted", style="red")
    return 0
