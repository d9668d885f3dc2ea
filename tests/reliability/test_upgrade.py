"""A database written by an earlier build must open (and upgrade in place), never be refused as if
it were corrupt: the refusal's advice (--move-aside-corrupt-db) would start the app empty.

Schema version 5 was first committed (fc551be) as trigger-kept counters; 2dfd01d rewrote migration
5 in place (adding ``tasks.prev_status`` and dropping the insert/update triggers) instead of adding
a migration 6, so a file already at user_version 5 was refused ("no such column: prev_status").
Fixed in 86869a3 (migration 5 restored, migration 6 added); kept as a regression test.
"""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

from tests.reliability.common import consistency_problems
from tests.sidecar_client import ROOT, SidecarProcess, sidecar_command

# migration 5 exactly as fc551be shipped it
V5_AS_FIRST_SHIPPED = [
    'CREATE TABLE "task_counts" ("type" TEXT NOT NULL, "status" TEXT NOT NULL, '
    '"n" INTEGER NOT NULL, PRIMARY KEY ("type", "status")) WITHOUT ROWID',
    'INSERT INTO "task_counts" ("type", "status", "n") '
    'SELECT "type", "status", COUNT(*) FROM "tasks" GROUP BY "type", "status"',
    'CREATE TRIGGER "tasks_count_insert" AFTER INSERT ON "tasks" BEGIN '
    'INSERT INTO "task_counts" ("type", "status", "n") VALUES (new."type", new."status", 1) '
    'ON CONFLICT ("type", "status") DO UPDATE SET "n" = "n" + 1; END',
    'CREATE TRIGGER "tasks_count_delete" AFTER DELETE ON "tasks" BEGIN '
    'UPDATE "task_counts" SET "n" = "n" - 1 WHERE "type" = old."type" AND "status" = old."status"; END',
    'CREATE TRIGGER "tasks_count_update" AFTER UPDATE OF "status" ON "tasks" '
    'WHEN old."status" != new."status" BEGIN '
    'UPDATE "task_counts" SET "n" = "n" - 1 WHERE "type" = old."type" AND "status" = old."status"; '
    'INSERT INTO "task_counts" ("type", "status", "n") VALUES (new."type", new."status", 1) '
    'ON CONFLICT ("type", "status") DO UPDATE SET "n" = "n" + 1; END',
    'CREATE INDEX "tasks_status_created" ON "tasks" ("status", "created_at")',
    'DROP INDEX IF EXISTS "tasks_status_completed"',
]


KEPT = "55555555-5555-4555-8555-555555555555"


def make_first_v5_database(db: Path) -> None:
    from sidecar.persistence.migrations import MIGRATIONS

    import peewee as pw

    peewee_db = pw.SqliteDatabase(str(db))
    for migration in MIGRATIONS[:4]:
        with peewee_db.atomic():
            migration(peewee_db)
    peewee_db.close()
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        for sql in V5_AS_FIRST_SHIPPED:
            conn.execute(sql)
        conn.execute(
            "INSERT INTO tasks (id, type, status, progress, details, result, priority, created_at, updated_at, "
            "attempt, max_attempts, run_at, started_at, completed_at, version, on_child_failure, weight, handler_done) "
            f"VALUES ('{KEPT}', 'demo.noop', 'COMPLETED', 100, '{{}}', '{{}}', 0, 1000, 1001, 1, 3, 1000, 1000, 1001, "
            "3, 'fail', 1, 1)"
        )
        conn.execute("PRAGMA user_version = 5")
    finally:
        conn.close()


def test_a_database_at_the_first_schema_5_opens_and_keeps_its_tasks(tmp_path: Path) -> None:
    db = tmp_path / "v5.db"
    make_first_v5_database(db)
    result = subprocess.run([*sidecar_command(), "--db", str(db)], cwd=ROOT, input=b"", capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-800:]
    sidecar = SidecarProcess(db, "--log-level", "WARNING")
    try:
        task = sidecar.call("tasks.create", {"type": "demo.noop"})
        assert sidecar.wait_status(task["id"], "COMPLETED")["attempt"] == 1
        assert sidecar.call("tasks.get", {"id": KEPT})["status"] == "COMPLETED"
        assert sidecar.call("tasks.stats")["total"] == 2
    finally:
        assert sidecar.stop() == 0
    assert not consistency_problems(db)  # and the counters are not counted twice by leftover triggers
