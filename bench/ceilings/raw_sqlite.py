"""The machine's SQLite ceilings, from Python with no framework (WAL, synchronous=NORMAL).

* insert, one transaction per row (what a queue's put costs at best);
* insert, many rows per transaction (what a batched create costs at best);
* claim + complete, one transaction per task, one thread: the floor of a durable drain
  (claim the oldest QUEUED row with UPDATE … RETURNING, mark it done, COMMIT).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import time
import uuid

from bench.common import clock, emit, fail, fresh_dir

SCHEMA = """
CREATE TABLE jobs (id TEXT PRIMARY KEY, status TEXT NOT NULL, payload TEXT NOT NULL,
                   created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
CREATE INDEX jobs_claim ON jobs (status, created_at);
"""


def connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=5000)
    a = p.parse_args()
    d = fresh_dir(f"raw-{os.getpid()}")
    conn = connect(str(d / "raw.db"))
    conn.executescript(SCHEMA)
    ins = "INSERT INTO jobs VALUES (?, 'QUEUED', '{}', ?, ?)"

    t0 = clock()
    for _ in range(a.n):
        now = time.time_ns() // 1_000_000
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(ins, (str(uuid.uuid4()), now, now))
        conn.execute("COMMIT")
    insert_1tx = a.n / (clock() - t0)

    t0 = clock()
    now = time.time_ns() // 1_000_000
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(ins, ((str(uuid.uuid4()), now, now) for _ in range(a.n)))
    conn.execute("COMMIT")
    insert_batch = a.n / (clock() - t0)

    claim = ("UPDATE jobs SET status='RUNNING', updated_at=? WHERE id = (SELECT id FROM jobs "
             "WHERE status='QUEUED' ORDER BY created_at LIMIT 1) AND status='QUEUED' RETURNING id, payload")
    done = "UPDATE jobs SET status='DONE', updated_at=? WHERE id=?"
    total = 2 * a.n
    t0 = clock()
    for _ in range(total):
        now = time.time_ns() // 1_000_000
        conn.execute("BEGIN IMMEDIATE")
        row = conn.execute(claim, (now,)).fetchone()
        if row is None:
            fail("raw claim found nothing")
        conn.execute(done, (now, row[0]))
        conn.execute("COMMIT")
    cycle_1tx = total / (clock() - t0)
    left = conn.execute("SELECT COUNT(*) FROM jobs WHERE status != 'DONE'").fetchone()[0]
    if left:
        fail(f"raw: {left} rows not done")
    conn.close()
    emit({"system": "raw sqlite3", "version": sqlite3.sqlite_version, "n": a.n,
          "insert_1tx_per_s": insert_1tx, "insert_batch_per_s": insert_batch,
          "claim_complete_1tx_per_s": cycle_1tx,
          "drain_per_s": cycle_1tx, "enqueue_per_s": insert_1tx,
          "storage": "WAL, synchronous=NORMAL, one connection, one thread"})


if __name__ == "__main__":
    main()
