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
from sidecar.harness.transport import build_command


@dataclass
class SidecarOptions:
    cmd: str | None = None
    db: str | None = None
    record: str | None = None
    sidecar_args: list[str] = field(default_factory=list)
    stderr_log: str | None = None
    show_stderr: bool = False
    ready_timeout: float = 30.0
    cwd: str | None = None


@contextlib.contextmanager
def open_sidecar(opts: SidecarOptions, extra_args: list[str] | None = None) -> Iterator[Client]:
    """A ready Client on a sidecar child; the child is stopped (stdin EOF) and a temporary
    database directory removed on exit."""
    tmpdir = None
    db = opts.db
    if not db:
        tmpdir = tempfile.mkdtemp(prefix="task-sidecar-harness-")
        db = os.path.join(tmpdir, "tasks.db")
    argv = build_command(opts.cmd, db, list(opts.sidecar_args) + list(extra_args or []))
    recorder = Recorder(opts.record) if opts.record else None
    client = None
    try:
        client = Client(argv, recorder=recorder, cwd=opts.cwd, stderr_log=opts.stderr_log, echo_stderr=opts.show_stderr)
        client.wait_ready(opts.ready_timeout)
        yield client
    finally:
        if client is not None:
            client.close()
        if recorder:
            recorder.close()
        if tmpdir:
            shutil.rmtree(tmpdir, ignore_errors=True)
