"""The floor under any start latency over stdio: a queue with nothing but a pipe and SQLite.

A child process reads one NDJSON line per create and, in one transaction (WAL,
synchronous=NORMAL), inserts the job QUEUED and claims it RUNNING, commits, and writes the
response and the RUNNING notification in one ``write``: no JSON-RPC library, no checks, no task
state machine, no threads. The parent is the client: it writes a create and blocks in ``read``
until the RUNNING line arrives, with the same probe gaps as every system in the side-by-side run.

This is what an event-driven, durable queue behind a pipe costs on this host at the least. The
sidecar pays it and its own work on top; an in-process queue (litequeue) pays neither crossing.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import time
import uuid

import orjson

from bench.ceilings.raw_sqlite import SCHEMA, connect
from bench.common import ROOT, clock, emit, fail, fresh_dir, idle_footprint, probe_gap, summary


def serve(db: str) -> None:
    conn = connect(db)  # the raw SQLite ceiling's table, connection and pragmas
    conn.executescript(SCHEMA)
    out = os.dup(1)
    stdin = os.fdopen(os.dup(0), "rb", buffering=0)
    buf = b""
    while True:
        chunk = stdin.read(65536)
        if not chunk:
            return
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            msg = orjson.loads(line)
            job_id = str(uuid.uuid4())
            now = time.time_ns() // 1_000_000
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO jobs VALUES (?, 'QUEUED', ?, ?, ?)",
                         (job_id, orjson.dumps(msg["params"]).decode(), now, now))
            claimed = conn.execute("UPDATE jobs SET status='RUNNING', updated_at=? "
                                   "WHERE id=? AND status='QUEUED'", (now, job_id)).rowcount
            conn.execute("COMMIT")
            if claimed != 1:
                raise SystemExit(f"claim of {job_id} changed {claimed} rows")
            os.write(out, orjson.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": {"id": job_id}})
                     + b"\n" + orjson.dumps({"jsonrpc": "2.0", "method": "task.updated",
                                             "params": {"id": job_id, "status": "RUNNING"}}) + b"\n")


def probe(child: subprocess.Popen[bytes], samples: int, gap: str) -> list[float]:
    assert child.stdin is not None and child.stdout is not None
    fd_in, fd_out = child.stdin.fileno(), child.stdout.fileno()
    times: list[float] = []
    for rid in range(samples):
        line = orjson.dumps({"jsonrpc": "2.0", "id": rid, "method": "tasks.create",
                             "params": {"type": "noop", "details": {}}}) + b"\n"
        t0 = clock()
        os.write(fd_in, line)
        got = b""
        while b'"RUNNING"' not in got:
            chunk = os.read(fd_out, 65536)
            if not chunk:
                fail("the raw stdio queue exited")
            got += chunk
        times.append((clock() - t0) * 1000)
        probe_gap(gap)
    return times


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--serve", metavar="DB")
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--idle-s", type=float, default=2.0)
    return p.parse_args()


def measure(serve_cmd: list[str], a: argparse.Namespace, system: str, storage: str, notes: str) -> None:
    """Start the queue ``serve_cmd`` runs, probe it (idle, then awake), and emit its result."""
    child = subprocess.Popen(serve_cmd, cwd=str(ROOT), stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    try:
        probe(child, 20, "awake")  # warm up: imports, the first pages of the file
        idle = probe(child, a.samples, "idle")
        awake = probe(child, a.samples, "awake")
        footprint = idle_footprint(child.pid, a.idle_s)
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(10)
    if child.returncode:
        fail(f"{system}: its serving process exited {child.returncode}")
    emit({"system": system, "version": sqlite3.sqlite_version,
          "latency": {"start_ms": summary(idle), "start_awake_ms": summary(awake)}, "idle": footprint,
          "storage": storage, "notes": notes})


def main() -> None:
    a = parse_args()
    if a.serve:
        serve(a.serve)
        return
    db = fresh_dir(f"stdio-start-{os.getpid()}") / "raw.db"
    measure([sys.executable, "-m", "bench.ceilings.stdio_start", "--serve", str(db)], a,
            system="raw sqlite3 over stdio",
            storage="WAL, synchronous=NORMAL, insert + claim in one transaction",
            notes="the floor under a start latency over a pipe: a Python process reading NDJSON, "
                  "one transaction per create, the RUNNING line written after the commit; no "
                  "JSON-RPC library, checks, state machine or threads")


if __name__ == "__main__":
    main()
