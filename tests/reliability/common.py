"""Shared pieces of the reliability battery: scale, result recording, database checks, namespaces.

Scale: ``RELIABILITY_SCALE=full`` runs the full-size variants (200 crash cycles, 1,000,000 tasks,
a 30-minute soak); anything else runs the reduced CI size. Every test records its numbers with
:func:`record`; ``python -m tests.reliability.report`` collects them into docs/reliability.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.sidecar_client import ROOT, SidecarProcess, sidecar_command

SCALE = os.environ.get("RELIABILITY_SCALE", "ci")
FULL = SCALE == "full"
RESULTS_ENV = "RELIABILITY_RESULTS"  # a JSON-lines file the report runner collects

full_only = pytest.mark.skipif(not FULL, reason="full-size variant: set RELIABILITY_SCALE=full")


def scaled(ci: Any, full: Any) -> Any:
    return full if FULL else ci


def record(test: str, **values: Any) -> None:
    """Keep a test's numbers for the results table (and print them, visible with ``-s``)."""
    entry = {"test": test, "scale": SCALE, "at": time.strftime("%Y-%m-%d %H:%M:%S"), **values}
    print(json.dumps(entry), file=sys.stderr)
    target = os.environ.get(RESULTS_ENV)
    if target:
        with open(target, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")


def percentile(samples: list[float], p: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


# ---------------------------------------------------------------- database checks


def connect(db: Path | str) -> sqlite3.Connection:
    conn = sqlite3.connect(db, timeout=10)
    conn.execute("PRAGMA busy_timeout = 10000")
    return conn


def consistency_problems(db: Path | str) -> list[str]:
    """What is wrong with a task database (empty list: consistent).

    integrity_check ok; foreign keys hold; the trigger-kept ``task_counts`` equal a GROUP BY over
    ``tasks``; no task references a missing parent or dependency; COMPLETED tasks have progress 100.
    """
    problems: list[str] = []
    conn = connect(db)
    try:
        # One read transaction: every query below sees the same commit. Read one by one, a
        # sidecar still writing could commit between the counters and the GROUP BY and the two
        # would differ by that transaction (a 10-minute fuzz run failed so at its 1,851st check).
        conn.execute("BEGIN")
        integrity = conn.execute("PRAGMA integrity_check").fetchall()
        if integrity != [("ok",)]:
            problems.append(f"integrity_check: {integrity[:5]}")
        fk = conn.execute("PRAGMA foreign_key_check").fetchall()
        if fk:
            problems.append(f"foreign_key_check: {fk[:5]}")
        counted = {
            (t, s): n for t, s, n in conn.execute('SELECT "type", "status", "n" FROM "task_counts" WHERE "n" != 0')
        }
        actual = {
            (t, s): n for t, s, n in conn.execute('SELECT "type", "status", COUNT(*) FROM "tasks" GROUP BY 1, 2')
        }
        if counted != actual:
            diff = {k: (counted.get(k), actual.get(k)) for k in set(counted) | set(actual) if counted.get(k) != actual.get(k)}
            problems.append(f"task_counts differs from GROUP BY (counted, actual): {diff}")
        orphans = conn.execute(
            'SELECT COUNT(*) FROM "tasks" c WHERE c."parent_id" IS NOT NULL '
            'AND NOT EXISTS (SELECT 1 FROM "tasks" p WHERE p."id" = c."parent_id")'
        ).fetchone()[0]
        if orphans:
            problems.append(f"{orphans} tasks reference a missing parent")
        dangling = conn.execute(
            'SELECT COUNT(*) FROM "task_deps" d WHERE NOT EXISTS (SELECT 1 FROM "tasks" t WHERE t."id" = d."depends_on_id") '
            'OR NOT EXISTS (SELECT 1 FROM "tasks" t WHERE t."id" = d."task_id")'
        ).fetchone()[0]
        if dangling:
            problems.append(f"{dangling} dependency rows reference a missing task")
        bad_done = conn.execute('SELECT COUNT(*) FROM "tasks" WHERE "status" = \'COMPLETED\' AND "progress" != 100').fetchone()[0]
        if bad_done:
            problems.append(f"{bad_done} COMPLETED tasks without progress 100")
        conn.execute("COMMIT")
    finally:
        conn.close()
    return problems


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1])


# ---------------------------------------------------------------- private mount namespaces


def unshare_available() -> str | None:
    """None when ``unshare --mount`` + tmpfs works here, else the reason it does not."""
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        return "unshare(1) is not available"
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         "d=$(mktemp -d) && mount -t tmpfs -o size=1m tmpfs \"$d\" && umount \"$d\" && rmdir \"$d\""],
        capture_output=True, timeout=20,
    )
    if probe.returncode != 0:
        return f"unshare --mount not permitted: {probe.stderr.decode(errors='replace').strip()}"
    return None


@contextlib.contextmanager
def sidecar_via_shell(setup: str, *, namespace: bool = False) -> Iterator[None]:
    """While active, sidecars started by :class:`SidecarProcess` are exec'd from ``sh -c setup``.

    ``setup`` is shell run before the sidecar is exec'd (``umask 077``, mount a tmpfs, ...). With
    ``namespace`` it runs in a private mount namespace (``unshare --mount``). ``unshare`` and ``sh``
    both exec, so the Popen pid is the sidecar's own pid, and the namespace (with its mounts)
    disappears with the process: nothing is left mounted on the host.
    """
    inner = " ".join(_sh_quote(part) for part in sidecar_command())
    script = f"set -e\n{setup}\nexec {inner} \"$@\""
    cmd = ["sh", "-c", script, "sidecar-sh"]
    if namespace:
        cmd = ["unshare", "--mount", "--propagation", "private", *cmd]
    old = os.environ.get("TASK_SIDECAR_CMD")
    os.environ["TASK_SIDECAR_CMD"] = " ".join(_sh_quote(part) for part in cmd)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TASK_SIDECAR_CMD", None)
        else:
            os.environ["TASK_SIDECAR_CMD"] = old


def sidecar_in_namespace(setup: str) -> contextlib.AbstractContextManager[None]:
    """Sidecars started meanwhile run in a private mount namespace prepared by ``setup``."""
    return sidecar_via_shell(setup, namespace=True)


def _sh_quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


def in_namespace(pid: int, *command: str) -> subprocess.CompletedProcess[bytes]:
    """Run a command in the mount namespace of process ``pid``."""
    return subprocess.run(["nsenter", "--target", str(pid), "--mount", *command], capture_output=True, timeout=60,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})


def consistency_problems_in_namespace(pid: int, db: Path | str) -> list[str]:
    """:func:`consistency_problems` of a database inside process ``pid``'s mount namespace.

    (SQLite resolves the /proc/<pid>/root magic link to "/" of *our* namespace, so it cannot be
    opened from outside through that path: run the check inside instead.)
    """
    code = ("import json, sys; from tests.reliability.common import consistency_problems; "
            "print(json.dumps(consistency_problems(sys.argv[1])))")
    result = in_namespace(pid, sys.executable, "-c", code, str(db))
    if result.returncode != 0:
        return [f"check failed: {result.stderr.decode(errors='replace')[-500:]}"]
    return json.loads(result.stdout)


__all__ = [
    "LeanClient",
    "FULL", "ROOT", "SCALE", "SidecarProcess", "connect", "consistency_problems", "consistency_problems_in_namespace", "full_only", "in_namespace",
    "percentile", "record", "rss_kib", "scaled", "sidecar_in_namespace", "sidecar_via_shell", "unshare_available",
]


# ---------------------------------------------------------------- a lean client for long runs


class LeanClient:
    """Speaks to a sidecar without keeping its output: for soaks that produce millions of messages.

    Keeps only the answers still awaited, the time each task was first seen RUNNING (when asked to),
    and counters; every other line is parsed and dropped.
    """

    def __init__(self, db: Path | str, *args: str) -> None:
        import itertools
        import threading

        import orjson

        self._orjson = orjson
        self.proc = subprocess.Popen(
            [*sidecar_command(), "--db", str(db), *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        self._ids = itertools.count(1)
        self._cond = threading.Condition()
        self._answers: dict[Any, Any] = {}
        self._waiting: set[Any] = set()
        self.watch_running: dict[str, float] = {}  # task id -> monotonic time first seen RUNNING
        self.track_running = False  # while True, record when each task is first seen RUNNING
        self.updates = 0
        self.last_seq = 0
        self.seq_gaps = 0
        ready = orjson.loads(self.proc.stdout.readline())
        assert ready["method"] == "sidecar.ready", ready
        self.ready = ready["params"]
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        loads = self._orjson.loads
        for line in self.proc.stdout:
            message = loads(line)
            if isinstance(message, dict) and message.get("method") == "task.updated":
                params = message["params"]
                self.updates += 1
                if params["seq"] != self.last_seq + 1:
                    self.seq_gaps += 1
                self.last_seq = params["seq"]
                task = params["task"]
                if self.track_running and task["status"] == "RUNNING":
                    with self._cond:
                        self.watch_running.setdefault(task["id"], time.monotonic())
                        self._cond.notify_all()
                continue
            if isinstance(message, dict) and "id" in message and message["id"] in self._waiting:
                with self._cond:
                    self._waiting.discard(message["id"])
                    self._answers[message["id"]] = message
                    self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def send(self, method: str, params: Any = None) -> Any:
        ident = next(self._ids)
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": ident, "method": method}
        if params is not None:
            message["params"] = params
        with self._cond:
            self._waiting.add(ident)
        self.proc.stdin.write(self._orjson.dumps(message) + b"\n")
        self.proc.stdin.flush()
        return ident

    def ask(self, method: str, params: Any = None, timeout: float = 30) -> dict[str, Any]:
        """The whole answer (result or error)."""
        return self._answer(self.send(method, params), timeout)

    def wait(self, ident: Any, timeout: float = 30) -> Any:
        answer = self._answer(ident, timeout)
        if "error" in answer:
            raise AssertionError(answer["error"])
        return answer["result"]

    def _answer(self, ident: Any, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while ident not in self._answers:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    raise TimeoutError(f"no answer to {ident}")
                self._cond.wait(min(left, 0.5))
            return self._answers.pop(ident)

    def call(self, method: str, params: Any = None, timeout: float = 30) -> Any:
        return self.wait(self.send(method, params), timeout)

    def wait_running(self, task_id: str, timeout: float = 30) -> float:
        deadline = time.monotonic() + timeout
        with self._cond:
            while task_id not in self.watch_running:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{task_id} never seen RUNNING")
                self._cond.wait(min(left, 0.5))
            return self.watch_running.pop(task_id)

    def stop(self, timeout: float = 30) -> int:
        try:
            if self.proc.poll() is None:
                self.proc.stdin.close()
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._thread.join(5)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream and not stream.closed:
                stream.close()
        return code
