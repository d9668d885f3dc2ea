"""Start a sidecar for one harness run: database location, command line, recorder, ready wait."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Iterator

from sidecar.harness.client import Client
from sidecar.harness.recorder import Recorder
from sidecar.harness.transport import build_command, default_env


class OptionError(ValueError):
    """A harness option cannot be used as given (e.g. a --record file in a missing directory)."""


@dataclass
class SidecarOptions:
    cmd: str | None = None
    db: str | None = None
    record: str | None = None
    sidecar_args: list[str] = field(default_factory=list)
    stderr_log: str | None = None
    show_stderr: bool = False
    ready_timeout: float = 30.0
    # the sidecar's working directory, where relative paths resolve (None: the harness's own)
    cwd: str | None = None


def _check_writable(option: str, path: str) -> None:
    # Before anything is started, so the user gets one clear line instead of a traceback later.
    try:
        with open(path, "a", encoding="utf-8"):
            pass
    except OSError as exc:
        raise OptionError(f"{option} {path}: cannot write it: {exc.strerror or exc}") from None


@contextlib.contextmanager
def open_sidecar(opts: SidecarOptions, extra_args: list[str] | None = None) -> Iterator[Client]:
    """A ready Client on a sidecar child; the child is stopped (stdin EOF) and a temporary
    database directory removed on exit."""
    if opts.stderr_log:
        _check_writable("--stderr-log", opts.stderr_log)
    if opts.record:
        _check_writable("--record", opts.record)
    tmpdir = None
    recorder = None
    client = None
    ready = False
    try:
        db = opts.db
        if not db:
            tmpdir = tempfile.mkdtemp(prefix="task-sidecar-harness-")
            db = os.path.join(tmpdir, "tasks.db")
        argv = build_command(opts.cmd, db, list(opts.sidecar_args) + list(extra_args or []), cwd=opts.cwd)
        recorder = Recorder(opts.record) if opts.record else None
        client = Client(
            argv,
            recorder=recorder,
            cwd=opts.cwd,
            stderr_log=opts.stderr_log,
            echo_stderr=opts.show_stderr,
            env=default_env() if opts.cmd is None else None,
        )
        client.wait_ready(opts.ready_timeout)
        ready = True
        yield client
    finally:
        if client is not None:
            # A sidecar that never became ready is stuck or broken and has no work to finish:
            # SIGTERM at once (SIGKILL after a short grace) instead of the polite 10 s wait.
            client.close(10.0 if ready else 0.0)
        if recorder:
            recorder.close()
        if tmpdir:
            shutil.rmtree(tmpdir, ignore_errors=True)
