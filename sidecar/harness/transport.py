"""The sidecar child process and its line-framed pipes.

Knows processes, bytes and lines; nothing about JSON-RPC beyond parsing each stdout line as JSON.
A reader thread hands every parsed stdout message to ``on_message``; stderr is drained by a second
thread into a ring buffer (shown when the sidecar dies) and optionally a log file.
"""

from __future__ import annotations

import collections
import json
import os
import shlex
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable

from sidecar.harness.recorder import Recorder

# The directory holding the ``sidecar`` package. The default child imports it from here (through
# PYTHONPATH) but runs in the user's working directory, so the user's relative paths (--db,
# --handlers) mean what they say.
SOURCE_ROOT = Path(__file__).resolve().parent.parent.parent


class SpawnError(OSError):
    """The sidecar could not be started at all (bad --cmd, no such program, not executable)."""


def default_command() -> list[str]:
    # -P (3.11+): the working directory is not put first on sys.path, so a ``sidecar`` folder in
    # the user's directory cannot shadow the source tree; the sidecar's --handlers loading still
    # makes the working directory importable, last.
    safe_path = ["-P"] if sys.version_info >= (3, 11) else []
    return [sys.executable, *safe_path, "-m", "sidecar"]


def default_env() -> dict[str, str]:
    """What the default command needs in its environment: the source root importable."""
    paths = [str(SOURCE_ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {"PYTHONPATH": os.pathsep.join(paths)}


def build_command(
    cmd: str | None, db: str, extra_args: list[str] | None = None, cwd: str | os.PathLike[str] | None = None
) -> list[str]:
    """The argv of the child: ``--cmd`` (split like a shell would) or the source tree, plus ``--db``.

    A ``--cmd`` program given as a relative path (``build/dist/...``) is made absolute against
    ``cwd`` (default: the harness's working directory), where the user typed it."""
    if cmd is None:
        argv = default_command()
    else:
        try:
            argv = shlex.split(cmd)
        except ValueError as exc:
            raise SpawnError(f"--cmd {cmd!r}: cannot split it like a shell would: {exc}") from None
        if not argv:
            raise SpawnError("--cmd is empty")
        program = argv[0]
        if os.sep in program or (os.altsep and os.altsep in program):
            argv[0] = os.path.join(os.path.abspath(cwd if cwd is not None else os.curdir), program)
    return argv + ["--db", db] + list(extra_args or [])


class Transport:
    """One sidecar child process. ``write`` sends one message; received messages go to ``on_message``."""

    def __init__(
        self,
        argv: list[str],
        on_message: Callable[[Any], None],
        on_bad_line: Callable[[str], None] | None = None,
        on_exit: Callable[[int | None], None] | None = None,
        recorder: Recorder | None = None,
        cwd: str | os.PathLike[str] | None = None,
        stderr_log: str | None = None,
        echo_stderr: bool = False,
        env: dict[str, str] | None = None,
    ):
        self.argv = argv
        self._on_message = on_message
        self._on_bad_line = on_bad_line
        self._on_exit = on_exit
        self._recorder = recorder
        self._write_lock = threading.Lock()
        self._echo_stderr = echo_stderr
        self._stderr_log = open(stderr_log, "a", encoding="utf-8") if stderr_log else None
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=200)
        child_env = dict(os.environ, PYTHONUTF8="1", PYTHONUNBUFFERED="1", **(env or {}))
        if recorder:
            recorder.meta(event="spawn", argv=argv)
        try:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=cwd,  # None: the harness's own working directory, the user's
                env=child_env,
                # Own session: a Ctrl-C in the harness's terminal does not hit the sidecar; the
                # harness stops it through the protocol (stdin EOF) instead.
                start_new_session=True,
            )
        except OSError as exc:
            if self._stderr_log:
                self._stderr_log.close()
            reason = exc.strerror or str(exc)
            raise SpawnError(f"cannot start {argv[0]}: {reason}") from None
        self._reader = threading.Thread(target=self._read_stdout, name="sidecar-stdout", daemon=True)
        self._stderr_reader = threading.Thread(target=self._read_stderr, name="sidecar-stderr", daemon=True)
        self._reader.start()
        self._stderr_reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def write(self, msg: Any) -> None:
        self.write_line(json.dumps(msg, ensure_ascii=False, separators=(",", ":")), msg)

    def write_line(self, line: str, msg: Any = None) -> None:
        """Send one line as is (``raw`` requests use this to send malformed input on purpose)."""
        data = line.encode("utf-8") + b"\n"
        with self._write_lock:
            if self._recorder:
                if msg is not None:
                    self._recorder.sent(msg)
                else:
                    self._recorder.meta(event="send_raw", raw=line)
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write(data)
                self.proc.stdin.flush()
            except (BrokenPipeError, ValueError, OSError) as exc:
                raise ConnectionError(f"the sidecar is not reading its stdin ({exc})") from None

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            if not text.strip():
                continue
            try:
                msg = json.loads(text)
            except json.JSONDecodeError:
                if self._recorder:
                    self._recorder.received_raw(text)
                if self._on_bad_line:
                    self._on_bad_line(text)
                continue
            if self._recorder:
                self._recorder.received(msg)
            self._on_message(msg)
        code = self.proc.wait()
        if self._recorder:
            self._recorder.meta(event="exit", returncode=code)
        if self._on_exit:
            self._on_exit(code)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            self.stderr_tail.append(text)
            if self._stderr_log:
                self._stderr_log.write(text + "\n")
                self._stderr_log.flush()
            if self._echo_stderr:
                sys.stderr.write(f"[sidecar] {text}\n")
                sys.stderr.flush()

    def drain_stderr(self, timeout: float = 1.0) -> None:
        """After the child exited: let the stderr thread read what is left, so messages are complete."""
        if not self.alive():
            self._stderr_reader.join(timeout)

    def close(self, timeout: float = 10.0) -> int | None:
        """Stop the sidecar the polite way (stdin EOF), then SIGTERM after ``timeout`` s (0: at once),
        then SIGKILL after 3 s more. Returns the exit code."""
        if self.proc.stdin and not self.proc.stdin.closed:
            with self._write_lock:
                try:
                    self.proc.stdin.close()
                except OSError:
                    pass
        code: int | None
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                code = self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                code = self.proc.wait()
        self._reader.join(2)
        self._stderr_reader.join(2)
        # Close our ends of the pipes once their readers are done (a reader still blocked, on a
        # grandchild holding the pipe, keeps its file): else an in-process user of the harness
        # (tests, the Python API) leaks two descriptors per sidecar.
        for pipe, reader in ((self.proc.stdout, self._reader), (self.proc.stderr, self._stderr_reader)):
            if pipe is not None and not reader.is_alive():
                pipe.close()
        if self._stderr_log:
            self._stderr_log.close()
        return code

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
            self.proc.wait()
