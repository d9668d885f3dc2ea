"""The battery's database check (common.consistency_problems) runs while a sidecar may still be
committing (the fuzzer checks every 500 inputs): a commit that lands between two of its reads must
not be reported as an inconsistency."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from sidecar.persistence import migrations, models
from tests.reliability import common

INSERT_TASK = (
    'INSERT INTO "tasks" ("id", "type", "status", "created_at", "updated_at", "attempt", "max_attempts", '
    '"run_at", "version", "on_child_failure", "weight", "handler_done") '
    "VALUES (?, 'demo.noop', ?, 0, 0, 0, 3, 0, 1, 'fail', 1, 0)"
)
SET_COUNT = 'INSERT OR REPLACE INTO "task_counts" ("type", "status", "n") VALUES (\'demo.noop\', ?, ?)'


def writer_connection(db: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 5000")
    return conn


def complete_task_as_the_engine_does(conn: sqlite3.Connection, task_id: str) -> None:
    """One transaction: the task's status and both counters, consistent when committed."""
    conn.execute("BEGIN IMMEDIATE")
    conn.execute('UPDATE "tasks" SET "status" = \'COMPLETED\', "progress" = 100 WHERE "id" = ?', (task_id,))
    conn.execute(SET_COUNT, ("QUEUED", 0))
    conn.execute(SET_COUNT, ("COMPLETED", 1))
    conn.execute("COMMIT")


def test_a_commit_between_the_checks_reads_is_not_an_inconsistency(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "tasks.db"
    database = models.open_database(str(db))
    migrations.upgrade(database)
    database.close()
    writer = writer_connection(db)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute(INSERT_TASK, ("t1", "QUEUED"))
    writer.execute(SET_COUNT, ("QUEUED", 1))
    writer.execute("COMMIT")
    assert common.consistency_problems(db) == []

    class CommitAfterCountersRead(sqlite3.Connection):
        """Lets the 'sidecar' commit right after the check has read the counters."""

        committed = False

        def execute(self, sql: str, *args: object) -> sqlite3.Cursor:  # type: ignore[override]
            cursor = super().execute(sql, *args)
            if '"task_counts"' in sql and not CommitAfterCountersRead.committed:
                rows = cursor.fetchall()
                complete_task_as_the_engine_does(writer, "t1")
                CommitAfterCountersRead.committed = True
                return iter(rows)  # type: ignore[return-value]  # the check only iterates it
            return cursor

    def connect(path: Path | str) -> sqlite3.Connection:
        return sqlite3.connect(path, timeout=10, factory=CommitAfterCountersRead)

    monkeypatch.setattr(common, "connect", connect)
    assert common.consistency_problems(db) == []
    assert CommitAfterCountersRead.committed  # the commit did land in the middle of the check
    monkeypatch.undo()
    assert common.consistency_problems(db) == []  # and what it committed is consistent too
    assert writer.execute('SELECT "status" FROM "tasks"').fetchone() == ("COMPLETED",)
    writer.close()

