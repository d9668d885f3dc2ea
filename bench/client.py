"""A minimal stdio client for the sidecar, built for measuring, with the protocol checks on.

One reader thread timestamps every line as it arrives (``clock()``), parses it with orjson, and
keeps: responses by id, the first time each task was seen in each status, the last task object
of each task, and counters. It checks what a UI relies on: ``sidecar.ready`` is the first line,
``task.updated`` ``seq`` grows by exactly one, and every response arrives. Any breach is recorded
in ``errors``; measuring code calls :meth:`check` and fails the run.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from bench.common import BENCH, ROOT, WORK, clock, cpu_seconds, rss_mb

SIDECAR_PYTHON = os.environ.get("BENCH_SIDECAR_PYTHON", sys.executable)
# The CPU the sidecar process (every one of its threads) is confined to, for the one-core variant;
# unset: wherever the OS schedules it, as an app runs it.
SIDECAR_CPU = os.environ.get("BENCH_SIDECAR_CPU")


def _confine_to_cpu() -> None:  # runs in the child, before exec: its threads inherit the mask
    assert SIDECAR_CPU is not None
    os.sched_setaffinity(0, {int(SIDECAR_CPU)})


class Sidecar:
    def __init__(
        self,
        db: str,
        *,
        handlers: tuple[str, ...] = ("bench.handlers",),
        args: tuple[str, ...] = (),
        track: bool = True,
        stderr_name: str | None = None,
        ready_timeout: float = 60.0,
    ) -> None:
        cmd = [SIDECAR_PYTHON, "-m", "sidecar", "--db", db, "--log-level", os.environ.get("BENCH_LOG_LEVEL", "WARNING")]
        for module in handlers:
            cmd += ["--handlers", module]
        cmd += list(args)
        WORK.mkdir(parents=True, exist_ok=True)
        self._stderr = open(WORK / (stderr_name or f"sidecar-{os.getpid()}.stderr"), "ab")
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.track = track
        self.errors: list[str] = []
        self.responses: dict[int, tuple[float, Any]] = {}
        self.first_seen: dict[str, dict[str, float]] = {}
        self.last_task: dict[str, dict[str, Any]] = {}
        self.updates = 0
        self.merged_updates = 0  # versions never announced (merged away under backpressure)
        self.deleted = 0
        self.lines = 0
        self.last_seq = 0
        self.last_line_at = 0.0
        self.max_gap_s = 0.0
        self.on_update: Callable[[float, dict[str, Any]], None] | None = None
        self._waiters: list[tuple[str, set[str]]] = []  # (status, ids not yet seen in it)
        self.t_ready: float | None = None
        self.ready: dict[str, Any] | None = None
        self._ids = itertools.count(1)
        self._cond = threading.Condition()
        self._write_lock = threading.Lock()
        self.t_spawn = clock()
        self.proc = subprocess.Popen(
            cmd, cwd=str(ROOT), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._stderr, env=env, bufsize=0,
            preexec_fn=_confine_to_cpu if SIDECAR_CPU is not None else None,
        )
        self.pid = self.proc.pid
        self._reader = threading.Thread(target=self._read, name="bench-reader", daemon=True)
        self._reader.start()
        if not self.wait_for(lambda: self.t_ready is not None or self.proc.poll() is not None,
                             ready_timeout):
            self.errors.append(f"no sidecar.ready within {ready_timeout}s")
        if self.t_ready is None:
            self.kill()
            raise RuntimeError(f"sidecar did not start (exit {self.proc.poll()}); see {self._stderr.name}")

    # ------------------------------------------------------------ reading

    def _read(self) -> None:
        assert self.proc.stdout is not None
        # Every line of one read is stamped with the time that read returned: that is when the
        # client has the bytes. (Stamping each line after parsing the ones before it would add
        # this client's own parsing, and the wake-up of a thread waiting on an earlier response,
        # to a later line: a RUNNING sent in the same write as its create's answer.)
        fd = self.proc.stdout.fileno()
        first = True
        for t, line in _lines_with_arrival(fd):
            self.lines += 1
            if self.last_line_at:
                gap = t - self.last_line_at
                if gap > self.max_gap_s and self.t_ready is not None:
                    self.max_gap_s = gap
            self.last_line_at = t
            try:
                msg = orjson.loads(line)
            except orjson.JSONDecodeError:
                self.errors.append(f"unparseable line on stdout: {line[:200]!r}")
                continue
            if first:
                first = False
                if not (isinstance(msg, dict) and msg.get("method") == "sidecar.ready"):
                    self.errors.append(f"first line is not sidecar.ready: {line[:200]!r}")
                else:
                    self.ready = msg["params"]
                    with self._cond:
                        self.t_ready = t
                        self._cond.notify_all()
                    continue
            if isinstance(msg, list):
                for item in msg:
                    self._response(t, item)
            elif "id" in msg and "method" not in msg:
                self._response(t, msg)
            elif msg.get("method") == "task.updated":
                self._update(t, msg["params"])
            elif msg.get("method") == "task.deleted":
                self.deleted += len(msg["params"]["ids"])
        with self._cond:
            self._cond.notify_all()

    def _seen_for_waiters(self, tid: str, status: str) -> None:
        with self._cond:
            for wanted, pending in self._waiters:
                if wanted == status and tid in pending:
                    pending.discard(tid)
                    if not pending:
                        self._cond.notify_all()

    def _response(self, t: float, msg: dict[str, Any]) -> None:
        with self._cond:
            self.responses[msg.get("id")] = (t, msg)
            self._cond.notify_all()

    def _update(self, t: float, params: dict[str, Any]) -> None:
        seq = params["seq"]
        if seq != self.last_seq + 1:
            self.errors.append(f"task.updated seq gap: {self.last_seq} -> {seq}")
        self.last_seq = seq
        self.updates += 1
        task = params["task"]
        if self.track:
            tid = task["id"]
            prev = self.last_task.get(tid)
            if prev is None:
                if task["version"] != 1:
                    self.merged_updates += task["version"] - 1
            elif task["version"] <= prev["version"]:
                self.errors.append(f"task {tid}: version {task['version']} announced after {prev['version']}")
            elif task["version"] > prev["version"] + 1:
                self.merged_updates += task["version"] - prev["version"] - 1
            seen = self.first_seen.get(tid)
            if seen is None:
                seen = self.first_seen[tid] = {}
            status = task["status"]
            if status not in seen:
                seen[status] = t
                if self._waiters:
                    self._seen_for_waiters(tid, status)
            self.last_task[tid] = task
        if self.on_update is not None:
            self.on_update(t, task)

    # ------------------------------------------------------------ writing

    def _write(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        with self._write_lock:
            self.proc.stdin.write(data)

    def send(self, method: str, params: Any = None) -> tuple[int, float]:
        """Send one request; returns (id, send time)."""
        rid = next(self._ids)
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            msg["params"] = params
        data = orjson.dumps(msg) + b"\n"
        t = clock()
        self._write(data)
        return rid, t

    def send_many(self, requests: list[tuple[str, Any]]) -> tuple[list[int], float]:
        """Pipeline many requests in one write; returns (ids, time the write started)."""
        ids = []
        parts = []
        for method, params in requests:
            rid = next(self._ids)
            ids.append(rid)
            parts.append(orjson.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params}))
        data = b"\n".join(parts) + b"\n"
        t = clock()
        self._write(data)
        return ids, t

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    def result(self, rid: int, timeout: float = 60.0) -> tuple[float, Any]:
        """(arrival time, result) of request ``rid``; a JSON-RPC error or a timeout is a failure."""
        if not self.wait_for(lambda: rid in self.responses, timeout):
            raise TimeoutError(f"no response to request {rid} within {timeout}s")
        t, msg = self.responses.pop(rid)
        if "error" in msg:
            raise RuntimeError(f"request {rid} failed: {msg['error']}")
        return t, msg["result"]

    def call(self, method: str, params: Any = None, timeout: float = 60.0) -> Any:
        rid, _ = self.send(method, params)
        return self.result(rid, timeout)[1]

    def timed_call(self, method: str, params: Any = None, timeout: float = 60.0) -> tuple[float, Any]:
        """Round trip in ms as the client sees it, and the result."""
        rid, t0 = self.send(method, params)
        t1, result = self.result(rid, timeout)
        return (t1 - t0) * 1000.0, result

    # ------------------------------------------------------------ waiting on tasks

    def count_status(self, ids: list[str], status: str) -> int:
        seen = self.first_seen
        return sum(1 for i in ids if status in seen.get(i, ()))

    def wait_status(self, ids: list[str], status: str, timeout: float) -> bool:
        """Wait until every task in ``ids`` was seen in ``status``.

        Woken by the reader as statuses arrive: a polling loop over 100,000 ids would take a
        core of this 2-core machine away from the sidecar being measured.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            waiter: tuple[str, set[str]] = (status, set())
            self._waiters.append(waiter)  # before the scan: an arrival during it is not missed
            try:
                pending = waiter[1]
                pending.update(i for i in ids if status not in self.first_seen.get(i, ()))
                while pending:
                    left = deadline - time.monotonic()
                    if left <= 0 or self.proc.poll() is not None:
                        return False
                    self._cond.wait(min(left, 0.05))
                return True
            finally:
                self._waiters.remove(waiter)

    # ------------------------------------------------------------ process

    def rss_mb(self) -> float | None:
        return rss_mb(self.pid)

    def cpu_seconds(self) -> float | None:
        return cpu_seconds(self.pid)

    def check(self) -> None:
        if self.errors:
            raise AssertionError("; ".join(self.errors[:5]))

    def close(self, timeout: float = 30.0) -> int:
        """Close stdin (the documented stop), wait for exit 0."""
        try:
            if self.proc.stdin:
                self.proc.stdin.close()
        except OSError:
            pass
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.errors.append(f"sidecar did not exit within {timeout}s of stdin EOF")
            self.kill()
            rc = -9
        self._reader.join(5)
        self._stderr.close()
        if rc != 0:
            self.errors.append(f"sidecar exited {rc}")
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> "Sidecar":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.proc.poll() is None:
            self.close()


def _lines_with_arrival(fd: int) -> Iterator[tuple[float, bytes]]:
    """(arrival time, line) for each line read from ``fd``, until end of file.

    A line longer than one read (a 5,000-task createMany answer is ~2.5 MB) is kept in pieces
    until its end arrives: joined once, never rescanned.
    """
    pieces: list[bytes] = []
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        t = clock()
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                if start < len(chunk):
                    pieces.append(chunk[start:])
                break
            if pieces:
                pieces.append(chunk[start:end])
                line = b"".join(pieces)
                pieces.clear()
            else:
                line = chunk[start:end]
            yield t, line
            start = end + 1
    if pieces:
        yield clock(), b"".join(pieces)


def noop_item(**extra: Any) -> dict[str, Any]:
    return {"type": "demo.noop", **extra}


BENCH_DIR = BENCH
