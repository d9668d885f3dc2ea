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
def sidecar_in_namespace(setup: str) -> Iterator[None]:
    """While active, sidecars started by :class:`SidecarProcess` run in a private mount namespace.

    ``setup`` is shell run inside the namespace before the sidecar is exec'd (e.g. mount a tmpfs).
    ``unshare`` and ``sh`` both exec, so the Popen pid is the sidecar's own pid, and the namespace
    (with its mounts) disappears with the process: nothing is left mounted on the host.
    """
    inner = " ".join(_sh_quote(part) for part in sidecar_command())
    script = f"set -e\n{setup}\nexec {inner} \"$@\""
    cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sidecar-ns"]
    old = os.environ.get("TASK_SIDECAR_CMD")
    os.environ["TASK_SIDECAR_CMD"] = " ".join(_sh_quote(part) for part in cmd)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TASK_SIDECAR_CMD", None)
        else:
            os.environ["TASK_SIDECAR_CMD"] = old


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
    "FULL", "ROOT", "SCALE", "SidecarProcess", "connect", "consistency_problems", "consistency_problems_in_namespace", "full_only", "in_namespace",
    "percentile", "record", "rss_kib", "scaled", "sidecar_in_namespace", "unshare_available",
]
