"""Schema versions, keyed by ``PRAGMA user_version``.

Each migration runs in its own transaction and bumps ``user_version``; a database made by an older
release is upgraded in place on open. Migrations are plain functions (no files to ship), so a frozen
build carries them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import peewee as pw

log = logging.getLogger(__name__)


def _v1_seed_schema(db: pw.SqliteDatabase) -> None:
    """The first release: one tasks table with the seed columns."""
    db.execute_sql(
        """
        CREATE TABLE IF NOT EXISTS "tasks" (
            "id" TEXT NOT NULL PRIMARY KEY,
            "type" TEXT NOT NULL,
            "status" TEXT NOT NULL,
            "parent_id" TEXT REFERENCES "tasks" ("id") ON DELETE CASCADE,
            "progress" REAL NOT NULL DEFAULT 0,
            "details" TEXT NOT NULL DEFAULT '{}',
            "result" TEXT,
            "error" TEXT,
            "priority" INTEGER NOT NULL DEFAULT 0,
            "created_at" INTEGER NOT NULL,
            "updated_at" INTEGER NOT NULL
        )
        """
    )
    db.execute_sql('CREATE INDEX IF NOT EXISTS "tasks_status" ON "tasks" ("status")')


def _v2_scheduler_columns(db: pw.SqliteDatabase) -> None:
    """Attempts, delays, idempotency, checkpoints, versions, and the indexes the claim needs."""
    import peewee as pw
    from playhouse.migrate import SqliteMigrator, migrate

    m = SqliteMigrator(db)
    migrate(
        m.add_column("tasks", "message", pw.TextField(null=True)),
        m.add_column("tasks", "attempt", pw.IntegerField(default=0)),
        m.add_column("tasks", "max_attempts", pw.IntegerField(default=3)),
        m.add_column("tasks", "run_at", pw.BigIntegerField(default=0)),
        m.add_column("tasks", "idempotency_key", pw.TextField(null=True)),
        m.add_column("tasks", "checkpoint", pw.TextField(null=True)),
        m.add_column("tasks", "started_at", pw.BigIntegerField(null=True)),
        m.add_column("tasks", "completed_at", pw.BigIntegerField(null=True)),
        m.add_column("tasks", "version", pw.IntegerField(default=1)),
        m.drop_index("tasks", "tasks_status"),
        m.add_index("tasks", ("idempotency_key",), unique=True),
        m.add_index("tasks", ("type",)),
        m.add_index("tasks", ("parent_id",)),
        m.add_index("tasks", ("created_at",)),
    )
    # The claim: WHERE status='QUEUED' ORDER BY priority DESC, created_at; run_at for delayed ones.
    db.execute_sql(
        'CREATE INDEX "tasks_claim" ON "tasks" ("status", "priority" DESC, "created_at")'
    )
    # prune / terminal history scans
    db.execute_sql('CREATE INDEX "tasks_status_completed" ON "tasks" ("status", "completed_at")')
    # rows written by v1 carry no run_at; they are due now
    db.execute_sql('UPDATE "tasks" SET "run_at" = "created_at" WHERE "run_at" = 0')


def _v3_settings(db: pw.SqliteDatabase) -> None:
    db.execute_sql(
        'CREATE TABLE IF NOT EXISTS "settings" ("key" TEXT NOT NULL PRIMARY KEY, "value" TEXT NOT NULL)'
    )


def _v4_task_graphs(db: pw.SqliteDatabase) -> None:
    """Parent/child batches and dependencies."""
    import peewee as pw
    from playhouse.migrate import SqliteMigrator, migrate

    m = SqliteMigrator(db)
    migrate(
        m.add_column("tasks", "depends_on", pw.TextField(null=True)),  # JSON list, as created
        m.add_column("tasks", "on_child_failure", pw.TextField(default="fail")),
        m.add_column("tasks", "weight", pw.FloatField(default=1)),
        # 1 once the task's own handler has returned (a parent then waits for its children)
        m.add_column("tasks", "handler_done", pw.IntegerField(default=0)),
    )
    db.execute_sql(
        'CREATE TABLE "task_deps" ('
        '"task_id" TEXT NOT NULL REFERENCES "tasks" ("id") ON DELETE CASCADE, '
        '"depends_on_id" TEXT NOT NULL REFERENCES "tasks" ("id") ON DELETE CASCADE, '
        'PRIMARY KEY ("task_id", "depends_on_id")) WITHOUT ROWID'
    )
    db.execute_sql('CREATE INDEX "task_deps_depends_on" ON "task_deps" ("depends_on_id")')
    db.execute_sql('CREATE INDEX "tasks_parent_status" ON "tasks" ("parent_id", "status")')
    db.execute_sql('DROP INDEX IF EXISTS "tasks_parent_id"')


def _v5_counters(db: pw.SqliteDatabase) -> None:
    """Counts by type and status kept by triggers, so tasks.stats is O(types), not O(tasks).

    As first released; migration 6 replaces the insert/update triggers (too slow per row).
    """
    db.execute_sql(
        'CREATE TABLE "task_counts" ("type" TEXT NOT NULL, "status" TEXT NOT NULL, '
        '"n" INTEGER NOT NULL, PRIMARY KEY ("type", "status")) WITHOUT ROWID'
    )
    db.execute_sql(
        'INSERT INTO "task_counts" ("type", "status", "n") '
        'SELECT "type", "status", COUNT(*) FROM "tasks" GROUP BY "type", "status"'
    )
    db.execute_sql(
        'CREATE TRIGGER "tasks_count_insert" AFTER INSERT ON "tasks" BEGIN '
        'INSERT INTO "task_counts" ("type", "status", "n") VALUES (new."type", new."status", 1) '
        'ON CONFLICT ("type", "status") DO UPDATE SET "n" = "n" + 1; END'
    )
    db.execute_sql(
        'CREATE TRIGGER "tasks_count_delete" AFTER DELETE ON "tasks" BEGIN '
        'UPDATE "task_counts" SET "n" = "n" - 1 WHERE "type" = old."type" AND "status" = old."status"; END'
    )
    db.execute_sql(
        'CREATE TRIGGER "tasks_count_update" AFTER UPDATE OF "status" ON "tasks" '
        'WHEN old."status" != new."status" BEGIN '
        'UPDATE "task_counts" SET "n" = "n" - 1 WHERE "type" = old."type" AND "status" = old."status"; '
        'INSERT INTO "task_counts" ("type", "status", "n") VALUES (new."type", new."status", 1) '
        'ON CONFLICT ("type", "status") DO UPDATE SET "n" = "n" + 1; END'
    )
    # the Activity Center lists by status, newest first; prune scans finished tasks by status
    db.execute_sql('CREATE INDEX "tasks_status_created" ON "tasks" ("status", "created_at")')
    db.execute_sql('DROP INDEX IF EXISTS "tasks_status_completed"')


def _v6_counts_by_the_engine(db: pw.SqliteDatabase) -> None:
    """The engine (the only writer) adds each transaction's net status changes itself.

    A per-row insert/update trigger measured 35 µs a row. Deletes, which cascade to subtrees the
    engine does not see, keep their trigger. ``prev_status`` lets a status UPDATE return the status
    it replaced. The counts are rebuilt in case a writer without the engine ran in between.
    """
    import peewee as pw
    from playhouse.migrate import SqliteMigrator, migrate

    db.execute_sql('DROP TRIGGER IF EXISTS "tasks_count_insert"')
    db.execute_sql('DROP TRIGGER IF EXISTS "tasks_count_update"')
    migrate(SqliteMigrator(db).add_column("tasks", "prev_status", pw.TextField(null=True)))
    db.execute_sql('DELETE FROM "task_counts"')
    db.execute_sql(
        'INSERT INTO "task_counts" ("type", "status", "n") '
        'SELECT "type", "status", COUNT(*) FROM "tasks" GROUP BY "type", "status"'
    )


def _v7_type_listing(db: pw.SqliteDatabase) -> None:
    """A type-filtered page read in order from an index instead of sorting every task of the type."""
    db.execute_sql('CREATE INDEX "tasks_type_status_created" ON "tasks" ("type", "status", "created_at")')
    db.execute_sql('DROP INDEX IF EXISTS "tasks_type"')


def _v8_scan_indexes(db: pw.SqliteDatabase) -> None:
    """prune finds finished tasks by completion time; the scheduler its next wake-up by run_at."""
    db.execute_sql('CREATE INDEX "tasks_status_completed" ON "tasks" ("status", "completed_at")')
    db.execute_sql('CREATE INDEX "tasks_status_run_at" ON "tasks" ("status", "run_at")')


def _v9_partial_hot_indexes(db: pw.SqliteDatabase) -> None:
    """Indexes that only the rows they serve are in: fewer index writes per insert and status change.

    The claim and the scheduler's wake-up look only at QUEUED rows, prune only at finished ones,
    yet every status change rewrote an entry in all three; most tasks have no idempotency key and
    no parent, yet each insert added a NULL entry to both of those indexes. The claim's order
    becomes priority, then run_at (when a task became due), so the first due task is found without
    walking past those delayed to later.
    """
    db.execute_sql('DROP INDEX IF EXISTS "tasks_claim"')
    db.execute_sql('DROP INDEX IF EXISTS "tasks_status_run_at"')
    db.execute_sql('DROP INDEX IF EXISTS "tasks_status_completed"')
    db.execute_sql(
        'CREATE INDEX "tasks_claim" ON "tasks" ("priority" DESC, "run_at") WHERE "status" = \'QUEUED\''
    )
    db.execute_sql('CREATE INDEX "tasks_queued_run_at" ON "tasks" ("run_at") WHERE "status" = \'QUEUED\'')
    db.execute_sql(
        'CREATE INDEX "tasks_finished" ON "tasks" ("status", "completed_at") WHERE "completed_at" IS NOT NULL'
    )
    db.execute_sql('DROP INDEX IF EXISTS "tasks_idempotency_key"')
    db.execute_sql(
        'CREATE UNIQUE INDEX "tasks_idempotency_key" ON "tasks" ("idempotency_key") '
        'WHERE "idempotency_key" IS NOT NULL'
    )
    db.execute_sql('DROP INDEX IF EXISTS "tasks_parent_status"')
    db.execute_sql(
        'CREATE INDEX "tasks_parent_status" ON "tasks" ("parent_id", "status") WHERE "parent_id" IS NOT NULL'
    )


def _v10_one_status_index(db: pw.SqliteDatabase) -> None:
    """One index keyed by status instead of two: (type, status, created_at) serves every reader.

    Each status change of a task rewrote its entry in both, and a drain of no-op tasks spent a
    quarter of its SQL keeping the second one. A status-filtered page, and recovery of RUNNING
    tasks at start-up, now read that index once per task type present (few: an app registers a
    handful), found by a skip-scan of its first column (:func:`store.present_types`).
    """
    db.execute_sql('DROP INDEX IF EXISTS "tasks_status_created"')


def _v11_claim_by_type(db: pw.SqliteDatabase) -> None:
    """The claim reads each eligible type's best QUEUED tasks from an index keyed by type first.

    One index of every QUEUED task in (priority, run_at) order made a claim walk past the tasks of
    the types it may not start: with 10,000 downloads queued behind their type's limit, every
    completion of another type read all of them (create -> COMPLETED of a no-op 1.1 -> 3.1 ms).
    """
    db.execute_sql(
        'CREATE INDEX "tasks_claim_type" ON "tasks" ("type", "priority" DESC, "run_at") '
        'WHERE "status" = \'QUEUED\''
    )
    db.execute_sql('DROP INDEX IF EXISTS "tasks_claim"')


def _v12_stop_requests(db: pw.SqliteDatabase) -> None:
    """The stop a user asked of a running task (``cancel``, ``pause``), kept with its row.

    The handler may take a while to stop; a crash before it did put the task back to QUEUED and
    ran it again, although the user had been told "cancelling". Recovery now ends it as asked. Set
    with the "cancelling"/"pausing" message, cleared by the claim that starts the task again.
    """
    db.execute_sql('ALTER TABLE "tasks" ADD COLUMN "stop_requested" TEXT')


def _v13_counted_deletes(db: pw.SqliteDatabase) -> None:
    """The delete trigger counts a task it removes even when its (type, status) has no row yet.

    The engine adds a transaction's status changes at its end; a task that reached a status for the
    first time and was deleted in the same transaction (a prune right behind its cancellation) met
    no row to subtract from, then the engine's +1 came: tasks.stats counted a task that was gone,
    for good. The trigger now upserts (-1 now, +1 at the commit: 0). Counts rebuilt once.
    """
    db.execute_sql('DROP TRIGGER IF EXISTS "tasks_count_delete"')
    db.execute_sql(
        'CREATE TRIGGER "tasks_count_delete" AFTER DELETE ON "tasks" BEGIN '
        'INSERT INTO "task_counts" ("type", "status", "n") VALUES (old."type", old."status", -1) '
        'ON CONFLICT ("type", "status") DO UPDATE SET "n" = "n" - 1; END'
    )
    db.execute_sql('DELETE FROM "task_counts"')
    db.execute_sql(
        'INSERT INTO "task_counts" ("type", "status", "n") '
        'SELECT "type", "status", COUNT(*) FROM "tasks" GROUP BY "type", "status"'
    )


def _v14_wake_up_by_type(db: pw.SqliteDatabase) -> None:
    """The scheduler's wake-up reads each type's earliest delayed task from an index keyed by type.

    Its question is "when is the next QUEUED task of these types due?". The (run_at) index could
    not filter by type, so SQLite answered from the listing index instead, reading every QUEUED
    task of the types: 23 ms with 75,000 delayed (5,000 downloads waiting out a retry's backoff
    cost ~1.5 ms), after every claim that found too little due. Keyed by (type, run_at), it is one
    seek per type. The index holds the same rows as before: no more writes per insert or claim.
    """
    db.execute_sql('DROP INDEX IF EXISTS "tasks_queued_run_at"')
    db.execute_sql(
        'CREATE INDEX "tasks_queued_type_run_at" ON "tasks" ("type", "run_at") WHERE "status" = \'QUEUED\''
    )


MIGRATIONS: list[Callable[[pw.SqliteDatabase], None]] = [
    _v1_seed_schema,
    _v2_scheduler_columns,
    _v3_settings,
    _v4_task_graphs,
    _v5_counters,
    _v6_counts_by_the_engine,
    _v7_type_listing,
    _v8_scan_indexes,
    _v9_partial_hot_indexes,
    _v10_one_status_index,
    _v11_claim_by_type,
    _v12_stop_requests,
    _v13_counted_deletes,
    _v14_wake_up_by_type,
]
SCHEMA_VERSION = len(MIGRATIONS)


class SchemaTooNew(Exception):
    pass


def schema_version(db: pw.SqliteDatabase) -> int:
    return int(db.execute_sql("PRAGMA user_version").fetchone()[0])


def upgrade(db: pw.SqliteDatabase, target: int = SCHEMA_VERSION) -> int:
    """Apply every migration above the file's ``user_version``; returns the version reached."""
    current = schema_version(db)
    if current > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"database schema version {current} is newer than this sidecar understands ({SCHEMA_VERSION})"
        )
    for number in range(current + 1, target + 1):
        log.info("migrating database schema to version %d", number)
        with db.atomic("IMMEDIATE"):
            MIGRATIONS[number - 1](db)
            db.execute_sql(f"PRAGMA user_version = {number}")
    return max(current, target)
