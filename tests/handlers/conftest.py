"""Fixtures for the built-in handler tests: a local HTTP server with misbehaviour modes, a context."""

from __future__ import annotations

import contextlib
import http.server
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from sidecar.handlers import AppOptions, TaskContext


@dataclass
class Resource:
    body: bytes
    ranges: bool = True  # honour Range requests (else always 200 with the whole body)
    etag: str | None = '"v1"'
    last_modified: str | None = "Wed, 21 Oct 2026 07:28:00 GMT"
    length: bool = True  # send Content-Length
    if_range: bool = True  # honour If-Range (a sloppy server answers 206 even for a changed resource)
    drop_at: int | None = None  # close the connection once this many body bytes (absolute) were sent ...
    drops: int = 0  # ... this many times
    statuses: list[int] = field(default_factory=list)  # answered first, one per request (e.g. [503])
    chunk: int = 64 * 1024
    delay: float = 0.0  # seconds between chunks (slow downloads for cancel/kill tests)
    redirect: str | None = None  # answer 302 to this URL
    stall_at: int | None = None  # fall silent (connection open) once this many body bytes were sent


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    resources: dict[str, Resource]
    requests: list[tuple[str, dict[str, str]]]
    closing: threading.Event

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def add(self, path: str, body: bytes, **kwargs: Any) -> str:
        self.resources[path] = Resource(body, **kwargs)
        return self.base + path

    def got(self, path: str) -> list[dict[str, str]]:
        return [h for p, h in list(self.requests) if p == path]


class Handler(http.server.BaseHTTPRequestHandler):
    server: Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802
        self.server.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
        res = self.server.resources.get(self.path)
        if res is None:
            self.send_error(404, "Not Found")
            return
        if res.redirect:
            self.send_response(302)
            self.send_header("Location", res.redirect)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if res.statuses:
            status = res.statuses.pop(0)
            if status != 200:
                self.send_error(status)
                return
        body, start, total = res.body, 0, len(res.body)
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if_range = self.headers.get("If-Range")
        if res.ranges and m and (not res.if_range or if_range is None or if_range in (res.etag, res.last_modified)):
            start = int(m.group(1))
            if start >= total:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{total}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
        else:
            self.send_response(200)
        if res.ranges:
            self.send_header("Accept-Ranges", "bytes")
        if res.length:
            self.send_header("Content-Length", str(total - start))
        if res.etag:
            self.send_header("ETag", res.etag)
        if res.last_modified:
            self.send_header("Last-Modified", res.last_modified)
        self.end_headers()
        end = total
        if res.drop_at is not None and res.drops > 0 and start < res.drop_at:
            res.drops -= 1
            end = res.drop_at
        if res.stall_at is not None and start < res.stall_at:
            end = res.stall_at
        pos = start
        try:
            while pos < end and not self.server.closing.is_set():
                piece = body[pos:min(end, pos + res.chunk)]
                self.wfile.write(piece)
                self.wfile.flush()
                pos += len(piece)
                if res.delay:
                    time.sleep(res.delay)
            if res.stall_at is not None and pos == res.stall_at:
                self.server.closing.wait()  # silent, the connection open, until the test ends
        except OSError:
            pass  # the client went away
        self.close_connection = True


@contextlib.contextmanager
def serving() -> Iterator[Server]:
    """A local HTTP server on a port of its own, for the length of the block."""
    server = Server(("127.0.0.1", 0), Handler)
    server.resources, server.requests, server.closing = {}, [], threading.Event()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.closing.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def http_server() -> Iterator[Server]:
    with serving() as server:
        yield server


class Recorder:
    """A real TaskContext whose reports are recorded instead of sent to an engine."""

    def __init__(self, details: dict[str, Any] | None = None, *, state: Any = None, attempt: int = 1,
                 max_attempts: int = 5, options: AppOptions | None = None, task_id: str = "0123456789abcdef") -> None:
        self.progress: list[tuple[float, str | None]] = []
        self.checkpoints: list[Any] = []
        self.ctx = TaskContext(
            task_id=task_id, type="test", details=details or {}, attempt=attempt, max_attempts=max_attempts,
            state=state, on_progress=self._on_progress, on_checkpoint=lambda c, s: self.checkpoints.append(s),
        )
        self.ctx.options = options or AppOptions()

    def _on_progress(self, ctx: TaskContext) -> None:
        pending = ctx.take_progress()
        if pending is not None:
            self.progress.append(pending)


@pytest.fixture
def recorder() -> type[Recorder]:
    return Recorder


@pytest.fixture(autouse=True)
def guarded_killpg(monkeypatch: pytest.MonkeyPatch) -> None:
    """Safety net: os.killpg(1, …) is kill(-1, …) (every process we may signal) and killpg(0, …) is
    our own group; a bug that got there would take down far more than the test."""
    real = os.killpg

    def killpg(pgid: int, sig: int) -> None:
        if pgid <= 1 or pgid == os.getpgrp():
            raise AssertionError(f"refusing os.killpg({pgid}, {sig}) in a test")
        real(pgid, sig)

    if hasattr(os, "killpg"):
        monkeypatch.setattr(os, "killpg", killpg)
