"""A test client that drives a real sidecar process over pipes, as an app would.

The command comes from ``TASK_SIDECAR_CMD`` (e.g. a frozen binary) or defaults to
``python -m sidecar`` from this source tree, so the same black-box suite checks both forms.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent


def db_rows(db: Path | str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """What the database file holds, read on a connection of its own, closed at once (Python 3.13
    warns about a connection left to the garbage collector)."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return conn.execute(sql, params).fetchall()


def sidecar_command() -> list[str]:
    custom = os.environ.get("TASK_SIDECAR_CMD")
    if custom:
        return shlex.split(custom)
    return [sys.executable, "-m", "sidecar"]


def spawn_raw(db: Path | str, *args: str, stderr: Any = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
    """The sidecar on bare pipes, for tests that must control reading stdout themselves."""
    return subprocess.Popen(
        [*sidecar_command(), "--db", str(db), "--log-level", "WARNING", *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


class RpcError(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"{error.get('code')}: {error.get('message')}")
        self.code = error.get("code")
        self.message = error.get("message")
        self.data = error.get("data")


class SidecarProcess:
    def __init__(self, db: Path | str, *args: str, env: dict[str, str] | None = None, wait_ready: bool = True) -> None:
        self.db = str(db)
        full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)]), **(env or {})}
        self.proc = subprocess.Popen(
            [*sidecar_command(), "--db", self.db, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            env=full_env,
        )
        self.lines: list[bytes] = []  # every stdout line, raw
        self.messages: list[dict[str, Any]] = []
        self.notifications: list[dict[str, Any]] = []
        self.responses: dict[Any, Any] = {}
        self.stderr_lines: list[str] = []
        self._cond = threading.Condition()
        self._ids = itertools.count(1)
        self._stdout_thread = threading.Thread(target=self._read_stdout, daemon=True)
        self._stdout_thread.start()
        self._stderr_thread = threading.Thread(target=self._read_stderr, daemon=True)
        self._stderr_thread.start()
        self.ready: dict[str, Any] | None = None
        if wait_ready:
            self.ready = self.wait_notification(lambda m: m["method"] == "sidecar.ready", timeout=20)["params"]

    # ------------------------------------------------------------ reading

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._record(line.rstrip(b"\n"))
        with self._cond:
            self._cond.notify_all()

    def _record(self, line: bytes) -> None:
        message = orjson.loads(line)  # anything that is not JSON fails the test loudly
        with self._cond:
            self.lines.append(line)
            if isinstance(message, list):
                self.responses[("batch", len(self.lines))] = message
            elif "method" in message:
                self.notifications.append(message)
            else:
                self.responses[message.get("id")] = message
            self.messages.append(message)
            self._cond.notify_all()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_lines.append(line.decode(errors="replace"))

    @property
    def stderr(self) -> str:
        return "".join(self.stderr_lines)

    # ------------------------------------------------------------ writing

    def send_raw(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def send(self, message: Any) -> None:
        self.send_raw(orjson.dumps(message) + b"\n")

    def request(self, method: str, params: Any = None, *, ident: Any = None) -> Any:
        ident = next(self._ids) if ident is None else ident
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": ident, "method": method}
        if params is not None:
            message["params"] = params
        self.send(message)
        return ident

    def response(self, ident: Any, timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while ident not in self.responses:
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._stdout_thread.is_alive()):
                    raise TimeoutError(f"no response to {ident!r}; stderr:\n{self.stderr}")
                self._cond.wait(min(left, 0.2))
            return self.responses[ident]

    def call(self, method: str, params: Any = None, timeout: float = 10) -> Any:
        answer = self.response(self.request(method, params), timeout)
        if "error" in answer:
            raise RpcError(answer["error"])
        return answer["result"]

    def error(self, method: str, params: Any = None) -> RpcError:
        try:
            self.call(method, params)
        except RpcError as exc:
            return exc
        raise AssertionError(f"{method} {params} succeeded")

    # ------------------------------------------------------------ notifications

    def wait_notification(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for message in self.notifications[seen:]:
                    if predicate(message):
                        return message
                seen = len(self.notifications)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no matching notification; stderr:\n{self.stderr}")
                self._cond.wait(min(left, 0.2))

    def wait_message(self, predicate: Callable[[Any], bool], start: int = 0, timeout: float = 10) -> Any:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for message in self.messages[start:]:
                    if predicate(message):
                        return message
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no matching message; stderr:\n{self.stderr}")
                self._cond.wait(min(left, 0.2))

    def updates(self, task_id: str | None = None) -> list[dict[str, Any]]:
        with self._cond:
            return [
                n["params"]["task"]
                for n in self.notifications
                if n["method"] == "task.updated" and (task_id is None or n["params"]["task"]["id"] == task_id)
            ]

    def wait_status(self, task_id: str, *statuses: str, timeout: float = 10) -> dict[str, Any]:
        return self.wait_notification(
            lambda m: m["method"] == "task.updated"
            and m["params"]["task"]["id"] == task_id
            and m["params"]["task"]["status"] in statuses,
            timeout,
        )["params"]["task"]

    # ------------------------------------------------------------ lifecycle

    def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    def wait_exit(self, timeout: float = 15) -> int:
        code = self.proc.wait(timeout)
        self._stdout_thread.join(5)
        return code

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._stdout_thread.join(5)

    def stop(self) -> int:
        if self.proc.poll() is None:
            try:
                self.close_stdin()
            except (BrokenPipeError, OSError):
                pass
            try:
                self.wait_exit(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        code = self.proc.wait(10)
        self._stdout_thread.join(5)
        self._stderr_thread.join(5)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        return code
