"""The floor under the sidecar's own start latency: the pipe, SQLite and the sidecar's contract.

``stdio_start`` is the floor of any durable queue behind a pipe (a toy table, two short lines).
This one writes what the sidecar writes for an idle ``tasks.create`` and nothing else: its
database file opened with its pragmas and migrated (its ``tasks`` table with every index, the
``task_counts`` table), and per create, in one transaction, the row inserted RUNNING through
``sidecar.persistence.store`` (as ``Engine.may_start_on_insert`` lets an idle create do) and the
counters upserted; after the commit, in one ``write``, the three frames a client reads: the
response with the QUEUED task and the QUEUED and RUNNING ``task.updated`` notifications, each
with the whole task. No JSON-RPC library, parameter checks, state machine, engine or threads.

So the sidecar's start latency minus this one is what its machinery costs; this one minus
``stdio_start`` is what its schema and its frames cost.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import orjson

from bench.ceilings.stdio_start import measure, parse_args
from bench.common import fresh_dir

NAME = "sidecar schema over stdio"


def serve(db_path: str) -> None:
    from sidecar.domain.states import Status
    from sidecar.persistence import migrations, models, store

    migrations.upgrade(models.open_database(db_path))
    conn = models.new_connection()
    out = os.dup(1)
    stdin = os.fdopen(os.dup(0), "rb", buffering=0)
    seq = 0
    buf = b""

    def updated(task: dict[str, Any]) -> bytes:
        nonlocal seq
        seq += 1
        return orjson.dumps({"jsonrpc": "2.0", "method": "task.updated", "params": {"seq": seq, "task": task}})

    while True:
        chunk = stdin.read(65536)
        if not chunk:
            conn.close()
            return
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            msg = orjson.loads(line)
            params = msg["params"]
            details = params.get("details", {})
            now = time.time_ns() // 1_000_000
            row = store.new_row(
                task_id=store.new_task_ids(1)[0], type=params["type"], status=Status.QUEUED,
                parent_id=None, details_json=store.dumps(details), priority=0, max_attempts=1,
                run_at=now, idempotency_key=None, now=now,
            )
            started = store.started_row(row, now)
            conn.execute("BEGIN IMMEDIATE")
            store.insert_rows(conn, [started])
            store.apply_counts(conn, {(params["type"], "RUNNING"): 1})
            conn.execute("COMMIT")
            queued = store.task_from_new_row(row, details, [])
            response = orjson.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": queued})
            os.write(out, b"\n".join([response, updated(queued),
                                      updated(store.task_from_new_row(started, details, []))]) + b"\n")


def main() -> None:
    a = parse_args()
    if a.serve:
        serve(a.serve)
        return
    db = fresh_dir(f"contract-start-{os.getpid()}") / "sidecar.db"
    # the sidecar's interpreter (its own venv in a bench run), as the sidecar is run
    python = os.environ.get("BENCH_SIDECAR_PYTHON") or sys.executable
    measure([python, "-m", "bench.ceilings.contract_start", "--serve", str(db)], a,
            system=NAME,
            storage="the sidecar's database (its pragmas, schema, indexes and counters), the row "
                    "inserted RUNNING and the counters upserted in one transaction",
            notes="the floor under the sidecar's own start latency: its persistence and its three "
                  "whole-task frames after the commit, in one write; no JSON-RPC library, checks, "
                  "state machine, engine or threads")


if __name__ == "__main__":
    main()
