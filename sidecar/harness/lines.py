"""Line mode: the interactive commands read from a non-terminal stdin, output as plain text.

``printf 'create demo.noop\\nwait <id>\\nlist\\n' | task-sidecar-harness`` works, and notifications are
printed as they arrive (one line each), so the whole session reads as a log.
"""

from __future__ import annotations

import sys
import threading
from typing import TextIO

from rich.console import Console

from sidecar.harness.client import Client, SidecarGone
from sidecar.harness.commands import CommandError, CommandFailed, Commands, Quit
from sidecar.harness.session import SidecarOptions, open_sidecar
from sidecar.harness.view import notification_text


def _gone(client: Client) -> SidecarGone:
    return SidecarGone(f"the sidecar exited (code {client.exit_code})\n{client.stderr_text()}")


def run_lines(opts: SidecarOptions, stdin: TextIO, show_notifications: bool = True) -> int:
    """Run each command line; 1 if any failed. A sidecar that dies ends the session with
    SidecarGone (exit 3, reported once by the caller): the commands left cannot run."""
    console = Console(highlight=False, soft_wrap=True, width=160)
    lock = threading.Lock()
    failures = 0
    with open_sidecar(opts) as client:
        commands = Commands(client)
        commands.load_info()
        if show_notifications:

            def on_note(method: str, params: object) -> None:
                with lock:
                    console.print("~ " + notification_text(method, params), markup=False)

            client.add_listener(on_note)
        for line in stdin:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if not client.alive:  # died since the last command (a crashing handler, a signal)
                raise _gone(client)
            with lock:
                console.print(f"> {line}", markup=False)
            try:
                out = commands.execute(line)
            except Quit:
                break
            except CommandFailed as exc:  # the sidecar answered with an error
                failures += 1
                out = exc.output
            except SidecarGone:
                raise
            except ConnectionError as exc:
                # a write into a pipe the dying sidecar just closed, before its exit was noticed
                if not client.transport.alive():
                    raise _gone(client) from None
                failures += 1
                out = [f"error: {exc}"]
            except (CommandError, TimeoutError) as exc:
                failures += 1
                out = [f"error: {exc}"]
            with lock:
                for item in out:
                    console.print(item, markup=False) if isinstance(item, str) else console.print(item)
    return 1 if failures else 0
