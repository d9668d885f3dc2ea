"""peewee models: the schema of the task store, and how the database file is opened.

The models define and migrate the schema; the hot path (create, claim, progress, complete) uses
prepared SQL in :mod:`sidecar.persistence.store` because peewee's per-query build cost would be the
throughput limit.
"""

from __future__ import annotations

import sqlite3

import peewee as pw

database = pw.SqliteDatabase(None)


class BaseModel(pw.Model):
    class Meta:
        database = database


class Task(BaseModel):
    id = pw.TextField(primary_key=True)
    type = pw.TextField()
    status = pw.TextField()
    parent = pw.ForeignKeyField(
        "self", null=True, column_name="parent_id", backref="children", on_delete="CASCADE"
    )
    progress = pw.FloatField(default=0)
    message = pw.TextField(null=True)
    details = pw.TextField(default="{}")  # JSON text
    result = pw.TextField(null=True)  # JSON text
    error = pw.TextField(null=True)
    priority = pw.IntegerField(default=0)
    attempt = pw.IntegerField(default=0)
    max_attempts = pw.IntegerField(default=3)
    run_at = pw.BigIntegerField(default=0)
    idempotency_key = pw.TextField(null=True, unique=True)
    checkpoint = pw.TextField(null=True)  # JSON text
    created_at = pw.BigIntegerField()
    updated_at = pw.BigIntegerField()
    started_at = pw.BigIntegerField(null=True)
    completed_at = pw.BigIntegerField(null=True)
    version = pw.IntegerField(default=1)
    depends_on = pw.TextField(null=True)  # JSON list of ids, as created
    on_child_failure = pw.TextField(default="fail")
    weight = pw.FloatField(default=1)
    handler_done = pw.IntegerField(default=0)
    prev_status = pw.TextField(null=True)  # set by every status UPDATE: what it replaced
    stop_requested = pw.TextField(null=True)  # "cancel"/"pause" asked of it while RUNNING (recovery)

    class Meta:
        table_name = "tasks"


class TaskDep(BaseModel):
    task = pw.ForeignKeyField(Task, column_name="task_id", on_delete="CASCADE")
    depends_on = pw.ForeignKeyField(Task, column_name="depends_on_id", on_delete="CASCADE")

    class Meta:
        table_name = "task_deps"
        primary_key = pw.CompositeKey("task", "depends_on")
        without_rowid = True


class TaskCount(BaseModel):
    """Maintained by triggers on ``tasks`` (migration 5); read by tasks.stats."""

    type = pw.TextField()
    status = pw.TextField()
    n = pw.IntegerField()

    class Meta:
        table_name = "task_counts"
        primary_key = pw.CompositeKey("type", "status")
        without_rowid = True


class Setting(BaseModel):
    """Key/value settings that must survive restarts (queue pauses, concurrency overrides)."""

    key = pw.TextField(primary_key=True)
    value = pw.TextField()  # JSON text

    class Meta:
        table_name = "settings"


def new_connection() -> sqlite3.Connection:
    """A connection of the caller's own to the database :func:`open_database` set up, with the same
    pragmas. Not the one peewee keeps for each thread: the caller closes it."""
    return database._connect()


def open_database(
    path: str, *, durability: str = "normal", busy_timeout_ms: int = 5000, max_pages: int | None = None
) -> pw.SqliteDatabase:
    """Point the shared :data:`database` at ``path`` with the sidecar's pragmas.

    Pragmas are applied on every new connection (each thread has its own).
    """
    pragmas: dict[str, object] = {
        "journal_mode": "wal",
        "synchronous": 2 if durability == "full" else 1,
        "foreign_keys": 1,
        "busy_timeout": busy_timeout_ms,
        # Kept as the backstop that bounds the -wal file: under sustained writes the background
        # PASSIVE checkpoints (checkpointer.py) never let the log restart on their own (the
        # reliability soak saw 534 MB after 2 min with this at 0). They do shrink the work left
        # for this inline checkpoint, and reset the file when the sidecar is idle.
        "wal_autocheckpoint": 1000,
    }
    if max_pages:
        pragmas["max_page_count"] = max_pages
    # each thread still opens its own connection; the engine's may be used by a caller that runs
    # its request inline while holding the engine's lock (Engine._run_inline)
    database.init(path, pragmas=pragmas, check_same_thread=False)
    return database
