"""Prepared SQL for the task store, on a raw ``sqlite3`` connection.

The statements are built once at import; callers pass a connection they own (one per thread) and
manage the transaction. Rows come back as tuples in :data:`COLUMNS` order and become protocol Task
objects through :func:`task_from_row`, the one place that knows both shapes.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import heapq
import hmac
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import orjson

from sidecar.domain.states import TERMINAL, Status, check, sources

COLUMNS: tuple[str, ...] = (
    "id",
    "type",
    "status",
    "parent_id",
    "progress",
    "message",
    "details",
    "result",
    "error",
    "priority",
    "attempt",
    "max_attempts",
    "run_at",
    "idempotency_key",
    "created_at",
    "updated_at",
    "started_at",
    "completed_at",
    "version",
    "depends_on",
    "on_child_failure",
    "weight",
    "handler_done",  # internal: not a field of the protocol's Task (dropped by task_from_row)
)
_COLS = ", ".join(f'"{c}"' for c in COLUMNS)


def _camel(column: str) -> str:
    head, *rest = column.split("_")
    return head + "".join(word.title() for word in rest)


# The protocol's Task fields: every column before the internal ones, in camelCase.
_FIELD_NAMES = tuple(_camel(c) for c in COLUMNS[: COLUMNS.index("handler_done")])
_I_DETAILS = COLUMNS.index("details")
_I_RESULT = COLUMNS.index("result")
_I_PROGRESS = COLUMNS.index("progress")
_I_DEPENDS = COLUMNS.index("depends_on")
I_PARENT = COLUMNS.index("parent_id")
I_HANDLER_DONE = COLUMNS.index("handler_done")
I_POLICY = COLUMNS.index("on_child_failure")
I_TYPE = COLUMNS.index("type")
I_ERROR = COLUMNS.index("error")
I_RESULT = _I_RESULT
I_RUN_AT = COLUMNS.index("run_at")
I_DETAILS = _I_DETAILS
PREV_STATUS = len(COLUMNS)  # the extra element of a row returned by transition()

Row = tuple[Any, ...]
Task = dict[str, Any]


def new_task_ids(count: int) -> list[str]:
    """``count`` fresh task ids: random (version 4) UUIDs, from one urandom call for all of them
    (``str(uuid.uuid4())`` 5,000 times was a tenth of a big createMany). Random rather than
    time-ordered on purpose: apps and the harness show ids shortened to their first characters,
    which must tell tasks made together apart.

    The variant bits are set on all the bytes at once and the version digit is written as the
    text is cut: 2.7 ms for 5,000 ids, against 9.5 ms for an int per id formatted to hex."""
    noise = bytearray(os.urandom(16 * count))
    noise[8::16] = bytes([(byte & 0x3F) | 0x80 for byte in noise[8::16]])  # RFC 4122 variant
    h = noise.hex()
    return [
        f"{h[i : i + 8]}-{h[i + 8 : i + 12]}-4{h[i + 13 : i + 16]}-{h[i + 16 : i + 20]}-{h[i + 20 : i + 32]}"
        for i in range(0, 32 * count, 32)
    ]


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def task_from_row(row: Row) -> Task:
    task = dict(zip(_FIELD_NAMES, row))
    task["details"] = orjson.loads(row[_I_DETAILS]) if row[_I_DETAILS] is not None else {}
    task["result"] = orjson.loads(row[_I_RESULT]) if row[_I_RESULT] is not None else None
    task["dependsOn"] = orjson.loads(row[_I_DEPENDS]) if row[_I_DEPENDS] else []
    progress = row[_I_PROGRESS]
    task["progress"] = int(progress) if progress == int(progress) else progress
    return task


def task_from_new_row(row: Row, details: Any, depends_on: list[str]) -> Task:
    """The Task of a row made by :func:`new_row`, from the values it was made of (no JSON parsing:
    a 5,000-task createMany spent a fifth of its time reading back what it had just written)."""
    task = dict(zip(_FIELD_NAMES, row))
    task["details"] = details
    task["dependsOn"] = depends_on
    return task


def row_status(row: Row) -> str:
    return row[2]


# ---------------------------------------------------------------- writes



# A status as the plain str written to the table (``.value`` is two Python calls on 3.11).
_STATUS_TEXT: dict[str, str] = {s: s.value for s in Status}


def new_row(
    *,
    task_id: str,
    type: str,
    status: Status,
    parent_id: str | None,
    details_json: str,
    priority: int,
    max_attempts: int,
    run_at: int,
    idempotency_key: str | None,
    now: int,
    depends_on_json: str | None = None,
    on_child_failure: str = "fail",
    weight: float = 1.0,
) -> Row:
    """A new task's row, in :data:`COLUMNS` order (what :func:`insert_rows` writes)."""
    return (task_id, type, _STATUS_TEXT[status], parent_id, 0, None, details_json, None, None, priority,
            0, max_attempts, run_at, idempotency_key, now, now, None, None, 1,
            depends_on_json, on_child_failure, weight, 0)


_I_ATTEMPT = COLUMNS.index("attempt")
_I_UPDATED_AT = COLUMNS.index("updated_at")
_I_STARTED_AT = COLUMNS.index("started_at")
_I_COMPLETED_AT = COLUMNS.index("completed_at")
_I_VERSION = COLUMNS.index("version")


def started_row(row: Row, now: int) -> Row:
    """A new QUEUED row as the claim's QUEUED -> RUNNING would leave it (see :func:`claim_many`:
    the same columns, the same values), for a task started in the transaction that inserts it."""
    check(row[0], row[2], Status.RUNNING)
    started = list(row)
    started[2] = _STATUS_TEXT[Status.RUNNING]
    started[_I_ATTEMPT] += 1
    started[_I_STARTED_AT] = started[_I_UPDATED_AT] = now
    started[_I_COMPLETED_AT] = None
    started[_I_VERSION] += 1
    return tuple(started)


_INSERT_ROW = f'INSERT INTO "tasks" ({_COLS}) VALUES ({", ".join("?" * len(COLUMNS))})'


def insert_rows(conn: sqlite3.Connection, rows: list[Row]) -> None:
    # One executemany; the rows are exactly what is written (RETURNING would cost ~30 µs a row).
    conn.executemany(_INSERT_ROW, rows)


def insert(conn: sqlite3.Connection, **fields: Any) -> Row:
    row = new_row(**fields)
    insert_rows(conn, [row])
    return row


_transition_sql_cache: dict[tuple[Status, tuple[str, ...]], str] = {}


def transition(
    conn: sqlite3.Connection, task_id: str, target: Status, now: int, **sets: Any
) -> Row | None:
    """Move a task to ``target`` if the state machine allows it from its current status.

    ``sets`` are extra columns to write in the same statement. Returns the new row followed by the
    status it replaced (``row[PREV_STATUS]``), or None when the task does not exist or its current
    status may not move to ``target``.
    """
    key = (target, tuple(sets))
    sql = _transition_sql_cache.get(key)
    if sql is None:
        allowed = sources(target)
        extra = "".join(f', "{col}" = ?' for col in sets)
        marks = ", ".join("?" * len(allowed))
        sql = (
            f'UPDATE "tasks" SET "status" = ?, "prev_status" = "status", "updated_at" = ?, '
            f'"version" = "version" + 1{extra} '
            f'WHERE "id" = ? AND "status" IN ({marks}) RETURNING {_COLS}, "prev_status"'
        )
        sql = sql.replace("IN ()", "IN (NULL)")
        _transition_sql_cache[key] = sql
    params = (target.value, now, *sets.values(), task_id, *sources(target))
    return conn.execute(sql, params).fetchone()


_complete_sql_cache: dict[int, str] = {}
KEEP_MESSAGE = object()  # complete_many: leave the task's message as it is
_MANY_CHUNK = 500  # rows per multi-row statement: 4 parameters each, well under SQLite's limit


def complete_many(
    conn: sqlite3.Connection, finished: Sequence[tuple[str, str, Any]], now: int
) -> list[Row]:
    """Move tasks whose handler returned to COMPLETED, in one statement per 500.

    ``finished`` holds ``(task_id, result_json, message)`` (``KEEP_MESSAGE`` leaves the message).
    The same write as :func:`transition` to COMPLETED with progress 100, the result, no error and
    ``completed_at`` (a drain of no-op tasks spent a sixth of its SQL time on one such UPDATE …
    RETURNING per task). Guarded by the same state machine; returns the rows it moved, each followed
    by the status it replaced, in no particular order.
    """
    rows: list[Row] = []
    for start in range(0, len(finished), _MANY_CHUNK):
        chunk = finished[start : start + _MANY_CHUNK]
        sql = _complete_sql_cache.get(len(chunk))
        if sql is None:
            marks = ", ".join("?" * len(sources(Status.COMPLETED)))
            returning = ", ".join(f'"tasks".{c}' for c in (*_COLS.split(", "), '"prev_status"'))
            sql = (
                'UPDATE "tasks" SET "status" = \'COMPLETED\', "prev_status" = "status", "updated_at" = ?, '
                '"version" = "version" + 1, "progress" = 100, "result" = v."column2", "error" = NULL, '
                '"completed_at" = ?, "message" = CASE WHEN v."column3" THEN v."column4" ELSE "tasks"."message" END '
                f'FROM (VALUES {", ".join(["(?, ?, ?, ?)"] * len(chunk))}) AS v '
                f'WHERE "tasks"."id" = v."column1" AND "tasks"."status" IN ({marks}) RETURNING {returning}'
            )
            _complete_sql_cache[len(chunk)] = sql
        params: list[Any] = [now, now]
        for task_id, result_json, message in chunk:
            keep = message is KEEP_MESSAGE
            params += (task_id, result_json, not keep, None if keep else message)
        params += sources(Status.COMPLETED)
        rows += conn.execute(sql, params).fetchall()
    return rows


_PROGRESS = (
    'UPDATE "tasks" SET "progress" = ?, "message" = ?, "updated_at" = ?, "version" = "version" + 1 '
    f'WHERE "id" = ? AND "status" = \'RUNNING\' RETURNING {_COLS}'
)
_AGGREGATE = (
    'UPDATE "tasks" SET "progress" = ?, "updated_at" = ?, "version" = "version" + 1 '
    'WHERE "id" = ? AND "progress" != ? AND "status" NOT IN (\'COMPLETED\', \'FAILED\', \'CANCELLED\') '
    f"RETURNING {_COLS}"
)


def set_aggregate_progress(conn: sqlite3.Connection, task_id: str, progress: float, now: int) -> Row | None:
    """A parent's progress, derived from its children; None when unchanged or finished."""
    return conn.execute(_AGGREGATE, (progress, now, task_id, progress)).fetchone()


def set_progress(
    conn: sqlite3.Connection, task_id: str, progress: float, message: str | None, now: int
) -> Row | None:
    return conn.execute(_PROGRESS, (progress, message, now, task_id)).fetchone()


_MESSAGE = (
    'UPDATE "tasks" SET "message" = ?, "updated_at" = ?, "version" = "version" + 1 '
    f'WHERE "id" = ? RETURNING {_COLS}'
)


def set_message(conn: sqlite3.Connection, task_id: str, message: str | None, now: int) -> Row | None:
    return conn.execute(_MESSAGE, (message, now, task_id)).fetchone()


_RESULT_OF_COMPLETED = (
    'UPDATE "tasks" SET "result" = ?, "updated_at" = ?, "version" = "version" + 1 '
    f'WHERE "id" = ? AND "status" = \'COMPLETED\' RETURNING {_COLS}'
)


def set_completed_result(conn: sqlite3.Connection, task_id: str, result_json: str, now: int) -> Row | None:
    """Rewrite a COMPLETED task's result (its children's counts after one of them was retried);
    no status changes. None if the task is not COMPLETED."""
    return conn.execute(_RESULT_OF_COMPLETED, (result_json, now, task_id)).fetchone()


def message_of(conn: sqlite3.Connection, task_id: str) -> str | None:
    found = conn.execute('SELECT "message" FROM "tasks" WHERE "id" = ?', (task_id,)).fetchone()
    return None if found is None else found[0]


_STOP_REQUESTED = (
    'UPDATE "tasks" SET "message" = ?, "stop_requested" = ?, "updated_at" = ?, "version" = "version" + 1 '
    f'WHERE "id" = ? AND "status" = \'RUNNING\' RETURNING {_COLS}'
)


def set_stop_requested(conn: sqlite3.Connection, task_id: str, reason: str | None, message: str, now: int) -> Row | None:
    """Record that the user asked a running task to stop (``cancel`` or ``pause``), with the message
    they see: a crash before the handler stops then ends the task as asked (recover_interrupted)."""
    return conn.execute(_STOP_REQUESTED, (message, reason, now, task_id)).fetchone()


def set_checkpoint(conn: sqlite3.Connection, task_id: str, state_json: str | None) -> None:
    # A checkpoint is not a field of the Task object: no version bump, no announcement.
    conn.execute('UPDATE "tasks" SET "checkpoint" = ? WHERE "id" = ?', (state_json, task_id))


_claim_sql_cache: dict[int, str] = {}
_I_PRIORITY = COLUMNS.index("priority")
_I_RUN_AT = COLUMNS.index("run_at")
_CLAIM_TYPES_MERGED = 64  # above this many types, one read of them all (sorted) instead of a merge
_CLAIM_SET = (  # what it writes, started_row writes too (tests/unit/test_store.py holds them equal)
    'UPDATE "tasks" SET "status" = \'RUNNING\', "attempt" = "attempt" + 1, '
    '"started_at" = ?, "updated_at" = ?, "completed_at" = NULL, "version" = "version" + 1, '
    '"stop_requested" = NULL '
)
_CLAIM_ORDER = ' ORDER BY "priority" DESC, "run_at", "rowid" LIMIT ?'
_CLAIM_CANDIDATES = (
    'SELECT "rowid", "priority", "run_at" FROM "tasks" INDEXED BY "tasks_claim_type" '
    'WHERE "status" = \'QUEUED\' AND "run_at" <= ? AND '
)


def claim_many(conn: sqlite3.Connection, types: Sequence[str], now: int, limit: int) -> list[Row]:
    """Atomically move up to ``limit`` due QUEUED tasks of ``types`` to RUNNING, best first.

    One UPDATE whose WHERE re-checks ``status='QUEUED'``: whoever changes a row wins; nobody else can
    start the same task. Best is the highest priority, then the earliest ``run_at`` (the creation
    time unless the task was delayed or is retrying). The candidates are a merge of each type's
    best, read in order from the partial (type, priority, run_at) index that holds only QUEUED
    rows: a type held back by its concurrency limit or paused is not walked through, however many
    of its tasks wait (one index holding every type, walked in order with the types filtered,
    read all 10,000 queued downloads of a type at its limit on each claim). Within a type, the
    first due rows are found without walking the ones due later (as long as those are not ahead
    of them, i.e. of a higher priority). Each row is followed by the task's checkpoint.
    """
    if not types or limit < 1:
        return []
    sql = _claim_sql_cache.get(len(types))
    if sql is None:
        if len(types) <= _CLAIM_TYPES_MERGED:
            one_type = f'SELECT * FROM ({_CLAIM_CANDIDATES}"type" = ?{_CLAIM_ORDER})'
            candidates = f'SELECT "rowid" FROM ({" UNION ALL ".join([one_type] * len(types))}){_CLAIM_ORDER}'
        else:
            marks = ", ".join("?" * len(types))
            candidates = f'SELECT "rowid" FROM ({_CLAIM_CANDIDATES}"type" IN ({marks})){_CLAIM_ORDER}'
        sql = (
            f'{_CLAIM_SET}WHERE "rowid" IN ({candidates}) '
            # unary +: re-check the status on each row found by rowid, never look rows up by status
            f'AND +"status" = \'QUEUED\' RETURNING {_COLS}, "checkpoint"'
        )
        _claim_sql_cache[len(types)] = sql
    if len(types) <= _CLAIM_TYPES_MERGED:
        params: list[Any] = [now, now]
        for type_ in types:
            params += (now, type_, limit)
    else:
        params = [now, now, now, *types]
    params.append(limit)
    rows = conn.execute(sql, params).fetchall()
    if len(rows) > 1:  # RETURNING follows no ORDER BY: start them in the queue's order
        rows.sort(key=lambda r: (-r[_I_PRIORITY], r[_I_RUN_AT]))
    return rows


def claim_by_id(conn: sqlite3.Connection, task_ids: Sequence[str], now: int) -> list[Row]:
    """Move the QUEUED tasks among ``task_ids`` to RUNNING, as :func:`claim_many` does, whatever
    their place in the queue: the engine's claims that a rolled-back transaction undid while
    their handlers had started already."""
    sql = f'{_CLAIM_SET}WHERE "id" IN ({{marks}}) AND "status" = \'QUEUED\' RETURNING {_COLS}'
    return list(_in_chunks(conn, sql, task_ids, before=(now, now)))


def claim(conn: sqlite3.Connection, types: Sequence[str], now: int) -> Row | None:
    """Claim the best due task (see :func:`claim_many`), or None."""
    rows = claim_many(conn, types, now, 1)
    return rows[0] if rows else None


_NEXT_RUN_AT_ONE_TYPE = (
    'SELECT MIN("run_at") FROM "tasks" INDEXED BY "tasks_queued_type_run_at" '
    'WHERE "status" = \'QUEUED\' AND "type" = ? AND "run_at" > ?'
)
_next_run_at_sql_cache: dict[int, str] = {}
_NEXT_RUN_AT_TYPES_PER_STATEMENT = 64


def next_run_at(conn: sqlite3.Connection, types: Sequence[str], now: int) -> int | None:
    """The earliest future ``run_at`` among queued tasks of ``types`` (to wake the scheduler).

    One seek per type in the (type, run_at) index of QUEUED tasks, whatever number of tasks wait:
    a filter by type over every queued task read them all (23 ms with 75,000 delayed)."""
    earliest: int | None = None
    for start in range(0, len(types), _NEXT_RUN_AT_TYPES_PER_STATEMENT):
        chunk = types[start : start + _NEXT_RUN_AT_TYPES_PER_STATEMENT]
        sql = _next_run_at_sql_cache.get(len(chunk))
        if sql is None:
            each = " UNION ALL ".join([f'SELECT ({_NEXT_RUN_AT_ONE_TYPE}) AS "due"'] * len(chunk))
            sql = _next_run_at_sql_cache[len(chunk)] = f'SELECT MIN("due") FROM ({each})'
        params: list[Any] = []
        for type_ in chunk:
            params += (type_, now)
        due = conn.execute(sql, params).fetchone()[0]
        if due is not None and (earliest is None or due < earliest):
            earliest = due
    return earliest


class Recovered(NamedTuple):
    requeued: int
    failed: list[str]  # ids: what waited on them is the graph's to settle
    cancelled: list[str]  # ids, the same
    paused: int


def recover_interrupted(conn: sqlite3.Connection, now: int) -> Recovered:
    """After a crash: RUNNING tasks go back to QUEUED, or to FAILED when out of attempts; one the
    user had asked to cancel or pause (its handler had not stopped yet) ends as they asked.

    A requeued task keeps its place in the queue (its run_at; never later than now, should the clock
    have gone back). The RUNNING rows are found type by type in the (type, status) index: a file
    of a million finished tasks is not scanned at start-up.
    """
    types = present_types(conn)
    if not types:
        return Recovered(0, [], [], 0)
    running = f'"type" IN ({", ".join("?" * len(types))}) AND "status" = \'RUNNING\''
    deltas: dict[tuple[str, str], int] = {}

    def end_running(status: str, sets: str, condition: str, *params: Any) -> list[tuple[str, str]]:
        """Move the RUNNING rows matching ``condition`` to ``status``, writing ``sets`` too (its
        ``?`` filled by ``params``). Counted in ``deltas``; returns their (type, id)."""
        rows = conn.execute(
            f'UPDATE "tasks" SET "status" = \'{status}\', "prev_status" = "status", "updated_at" = ?, '
            f'"version" = "version" + 1, {sets} WHERE {running} AND {condition} RETURNING "type", "id"',
            (now, *params, *types),
        ).fetchall()
        for type_, _ in rows:
            deltas[(type_, "RUNNING")] = deltas.get((type_, "RUNNING"), 0) - 1
            deltas[(type_, status)] = deltas.get((type_, status), 0) + 1
        return rows

    cancelled = end_running("CANCELLED", '"completed_at" = ?, "stop_requested" = NULL',
                            '"stop_requested" = \'cancel\'', now)
    paused = end_running("PAUSED", '"stop_requested" = NULL, "attempt" = MAX("attempt" - 1, 0)',
                         '"stop_requested" = \'pause\'')
    requeued = end_running("QUEUED", '"run_at" = MIN("run_at", ?)', '"attempt" < "max_attempts"', now)
    failed = end_running(
        "FAILED",
        '"completed_at" = ?, '
        '"error" = \'interrupted: the sidecar stopped during the last of \' || "max_attempts" || \' attempts\'',
        "1",
        now,
    )
    apply_counts(conn, deltas)
    return Recovered(len(requeued), [r[1] for r in failed], [r[1] for r in cancelled], len(paused))


# A skip-scan of the (type, status, created_at) index: one seek for each type present.
_PRESENT_TYPES = (
    'WITH RECURSIVE "t"("type") AS (SELECT MIN("type") FROM "tasks" UNION ALL '
    'SELECT (SELECT MIN("type") FROM "tasks" WHERE "type" > "t"."type") FROM "t" WHERE "t"."type" IS NOT NULL) '
    'SELECT "type" FROM "t" WHERE "type" IS NOT NULL'
)


def present_types(conn: sqlite3.Connection) -> list[str]:
    """Every task type that has a row, registered or not, in order."""
    return [r[0] for r in conn.execute(_PRESENT_TYPES)]


_COUNT_UPSERT = (
    'INSERT INTO "task_counts" ("type", "status", "n") VALUES (?, ?, ?) '
    'ON CONFLICT ("type", "status") DO UPDATE SET "n" = "n" + excluded."n"'
)


def queued_by_type(conn: sqlite3.Connection) -> dict[str, int]:
    """How many tasks of each type are QUEUED, from ``task_counts``."""
    return dict(conn.execute('SELECT "type", "n" FROM "task_counts" WHERE "status" = \'QUEUED\' AND "n" > 0'))


def apply_counts(conn: sqlite3.Connection, deltas: dict[tuple[str, str], int]) -> None:
    """Add net status changes to ``task_counts`` (inserts and transitions; deletes have a trigger)."""
    changes = [(t, s, n) for (t, s), n in deltas.items() if n]
    if changes:
        conn.executemany(_COUNT_UPSERT, changes)


def delete(conn: sqlite3.Connection, task_id: str) -> int:
    return conn.execute('DELETE FROM "tasks" WHERE "id" = ?', (task_id,)).rowcount


class Pruned(NamedTuple):
    deleted: list[str]  # every id removed, the subtrees' included
    kept: list[str]  # finished roots found but kept: tasks below them still run


def prune(
    conn: sqlite3.Connection, statuses: Iterable[str], completed_before: int, limit: int = 5000,
    skip: Sequence[str] = (),
) -> Pruned:
    """Delete up to ``limit`` finished tasks (with their subtrees) finished before ``completed_before``,
    passing over the roots in ``skip`` (ones kept by an earlier call).

    Every id removed is returned, the subtrees' included: the foreign key cascades to children, and
    a cache driven by task.deleted must hear of them too. Nothing deleted and nothing kept means
    nothing is left to prune.
    """
    statuses = tuple(statuses)
    marks = ", ".join("?" * len(statuses))
    roots = [
        r[0]
        for r in conn.execute(
            f'SELECT "id" FROM "tasks" WHERE "status" IN ({marks}) AND "completed_at" < ? '
            f'AND NOT EXISTS (SELECT 1 FROM "tasks" c WHERE c."parent_id" = "tasks"."id" '
            f"AND c.\"status\" NOT IN {_TERMINAL_SQL}) "
            # a finished child of a batch still running stays: the batch's result counts it
            f'AND NOT EXISTS (SELECT 1 FROM "tasks" p WHERE p."id" = "tasks"."parent_id" '
            f"AND p.\"status\" NOT IN {_TERMINAL_SQL}) "
            'AND "id" NOT IN (SELECT "value" FROM json_each(?)) LIMIT ?',
            (*statuses, completed_before, dumps(list(skip)), limit),
        )
    ]
    if not roots:
        return Pruned([], [])
    below = conn.execute(
        'WITH RECURSIVE sub("id", "root", "status") AS (SELECT "id", "parent_id", "status" FROM "tasks" '
        'WHERE "parent_id" IN (SELECT "value" FROM json_each(?)) '
        'UNION SELECT t."id", sub."root", t."status" FROM "tasks" t JOIN sub ON t."parent_id" = sub."id") '
        'SELECT "id", "root", "status" FROM sub',
        (dumps(roots),),
    ).fetchall()
    # A finished task whose grandchildren still run (a parent that failed while its children were
    # being stopped) is not pruned yet: the cascade would delete tasks whose handlers still run.
    busy = {root for _, root, status in below if status not in TERMINAL}
    if busy:
        roots = [r for r in roots if r not in busy]
        below = [b for b in below if b[1] not in busy]
    if roots:
        # The ids go in as one JSON array: a statement with one "?" per id would be a new statement
        # each time, and the connection's statement cache kept up to 128 of them (SQLite's memory
        # grew by ~0.5 MB a second in the soak until the cache was full).
        conn.execute('DELETE FROM "tasks" WHERE "id" IN (SELECT "value" FROM json_each(?))', (dumps(roots),))
    return Pruned(list(dict.fromkeys([*roots, *(b[0] for b in below)])), sorted(busy))


# ---------------------------------------------------------------- reads

_GET = f'SELECT {_COLS} FROM "tasks" WHERE "id" = ?'


def get(conn: sqlite3.Connection, task_id: str) -> Row | None:
    return conn.execute(_GET, (task_id,)).fetchone()


def find_by_idempotency_key(conn: sqlite3.Connection, key: str) -> Row | None:
    return conn.execute(f'SELECT {_COLS} FROM "tasks" WHERE "idempotency_key" = ?', (key,)).fetchone()


def cursor_key(conn: sqlite3.Connection) -> bytes:
    """The key that signs ``tasks.list`` cursors, kept in the database file: a page cursor an app
    holds across a sidecar restart (a store paging through the list when it crashed) still reads
    the next page. Made at the first start; a database that cannot take the write (full, say) gets
    a key for this run only."""
    row = conn.execute('SELECT "value" FROM "settings" WHERE "key" = \'cursor_key\'').fetchone()
    if row is not None:
        try:
            return bytes.fromhex(row[0])
        except ValueError:
            pass
    key = os.urandom(16)
    try:
        conn.execute('INSERT OR REPLACE INTO "settings" ("key", "value") VALUES (\'cursor_key\', ?)', (key.hex(),))
    except sqlite3.Error:
        pass
    return key


class Cursors:
    """Opaque, tamper-evident list cursors: ``(created_at, rowid)`` signed with a per-file key
    (:func:`cursor_key`)."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or os.urandom(16)

    def issue(self, created_at: int, rowid: int) -> str:
        body = f"{created_at}.{rowid}".encode()
        mac = hmac.new(self._key, body, hashlib.sha256).digest()[:8]
        return base64.urlsafe_b64encode(body + b"." + mac).decode().rstrip("=")

    def parse(self, cursor: str) -> tuple[int, int] | None:
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            body, mac = raw[: -9], raw[-8:]
            if raw[-9:-8] != b"." or not hmac.compare_digest(
                mac, hmac.new(self._key, body, hashlib.sha256).digest()[:8]
            ):
                return None
            created, rowid = body.decode().split(".")
            return int(created), int(rowid)
        except (ValueError, UnicodeDecodeError):
            return None


_LIST_PARTS_MAX = 256  # (type, status) reads merged for one page: ~13 µs each, ~3.5 ms at most
_LIST_ORDER = ' ORDER BY "created_at" DESC, "rowid" DESC LIMIT ?'
_LIST_SELECT = f'SELECT {_COLS}, "rowid" AS "rid" FROM "tasks"'
_PAIR = '"type" = ? AND "status" = ?'


@contextlib.contextmanager
def _one_snapshot(conn: sqlite3.Connection) -> Iterator[None]:
    """Run several reads in one read transaction (unless the caller has one open): a WAL reader's
    snapshot, so no commit lands between them."""
    if conn.in_transaction:
        yield
        return
    conn.execute("BEGIN")
    try:
        yield
    finally:
        conn.execute("COMMIT")


def list_tasks(
    conn: sqlite3.Connection,
    *,
    statuses: Sequence[str] | None,
    types: Sequence[str] | None,
    parent_id: str | None,
    limit: int,
    after: tuple[int, int] | None,
) -> tuple[list[Row], tuple[int, int] | None]:
    """Newest first; keyset pagination on ``(created_at, rowid)``. A filtered page is a merge of
    small ordered index reads (:func:`_filtered_page`), never a sort of every matching row."""
    where: list[str] = []
    params: list[Any] = []
    if parent_id is not None:
        where.append('"parent_id" = ?')
        params.append(parent_id)
    if after is not None:
        where.append('("created_at", "rowid") < (?, ?)')  # a row value: SQLite seeks to it
        params.extend((after[0], after[1]))
    wanted_statuses = list(dict.fromkeys(statuses)) if statuses else None
    if not types and not wanted_statuses:
        rows = conn.execute(_LIST_SELECT + (" WHERE " + " AND ".join(where) if where else "") + _LIST_ORDER,
                            [*params, limit + 1]).fetchall()
    else:
        # one read transaction: the types present and every part come from the same moment, so a
        # task committed from one status to another meanwhile is neither listed twice nor missed
        with _one_snapshot(conn):
            rows = _filtered_page(conn, types, wanted_statuses, where, params, limit)
    more = len(rows) > limit
    rows = rows[:limit]
    last = (rows[-1][COLUMNS.index("created_at")], rows[-1][-1]) if more and rows else None
    return [r[:-1] for r in rows], last


def _filtered_page(
    conn: sqlite3.Connection, types: Sequence[str] | None, statuses: list[str] | None,
    where: list[str], params: list[Any], limit: int,
) -> list[Row]:
    """The newest ``limit + 1`` rows (each followed by its rowid) of the filter's (type, status)
    pairs (a status filter alone: per type present, the index being keyed by type first).

    Each pair's newest keys are read from the (type, status, created_at) index alone (no row is read
    unless parent_id filters) and merged here; then the page's rows by rowid. One UNION ALL of the
    parts, ordered by SQLite, cost ~50 µs a part even when empty (a sorter each): 1.4 ms for a
    status filter over five types on a million tasks, against ~13 µs a part read on its own.
    """
    wanted_types = list(dict.fromkeys(types)) if types else present_types(conn)
    pairs = [(t, s) for t in wanted_types for s in statuses or [s.value for s in Status]]
    if len(pairs) > _LIST_PARTS_MAX:  # a very wide filter: one newest-first read, filtered
        for column, values in (("type", types), ("status", statuses)):
            if values:
                where = [*where, f'"{column}" IN ({", ".join("?" * len(values))})']
                params = [*params, *values]
        sql = f'{_LIST_SELECT} WHERE {" AND ".join(where)}{_LIST_ORDER}'
        return conn.execute(sql, [*params, limit + 1]).fetchall()
    part = f'SELECT "created_at", "rowid" FROM "tasks" WHERE {" AND ".join([_PAIR, *where])}{_LIST_ORDER}'
    keys: list[tuple[int, int]] = []
    for type_, status in pairs:
        keys += conn.execute(part, [type_, status, *params, limit + 1]).fetchall()
    keys = heapq.nlargest(limit + 1, keys)
    by_rowid = {r[-1]: r for r in conn.execute(
        f'{_LIST_SELECT} WHERE "rowid" IN (SELECT "value" FROM json_each(?))', (dumps([k[1] for k in keys]),)
    )}
    return [by_rowid[rowid] for _, rowid in keys]


def stats(conn: sqlite3.Connection) -> dict[str, Any]:
    by_status = {s.value: 0 for s in Status}
    by_type: dict[str, dict[str, int]] = {}
    total = 0
    for type_, status, count in conn.execute(
        'SELECT "type", "status", "n" FROM "task_counts" WHERE "n" > 0'
    ):
        by_status[status] = by_status.get(status, 0) + count
        by_type.setdefault(type_, {})[status] = count
        total += count
    return {"total": total, "byStatus": by_status, "byType": by_type}


# ---------------------------------------------------------------- graphs

_TERMINAL_SQL = "('COMPLETED', 'FAILED', 'CANCELLED')"


def insert_deps(conn: sqlite3.Connection, task_id: str, dep_ids: Iterable[str]) -> None:
    conn.executemany(
        'INSERT OR IGNORE INTO "task_deps" ("task_id", "depends_on_id") VALUES (?, ?)',
        [(task_id, d) for d in dep_ids],
    )


def existing_ids(conn: sqlite3.Connection, ids: Sequence[str]) -> dict[str, str]:
    """id -> status for the ids that exist."""
    found: dict[str, str] = {}
    for task_id, status in conn.execute(  # one JSON array: one cached statement (see prune)
        'SELECT "id", "status" FROM "tasks" WHERE "id" IN (SELECT "value" FROM json_each(?))', (dumps(list(ids)),)
    ):
        found[task_id] = status
    return found


def waits_for(conn: sqlite3.Connection, task_id: str) -> list[str]:
    """The tasks ``task_id`` waits for: its dependencies and its children."""
    return [
        r[0]
        for r in conn.execute(
            'SELECT "depends_on_id" FROM "task_deps" WHERE "task_id" = ? '
            'UNION ALL SELECT "id" FROM "tasks" WHERE "parent_id" = ?',
            (task_id, task_id),
        )
    ]


def dependency_summary(conn: sqlite3.Connection, task_id: str) -> tuple[int, int, tuple[str, str] | None]:
    """(total, completed, first failed-or-cancelled (id, status)) over a task's dependencies."""
    total = completed = 0
    bad: tuple[str, str] | None = None
    for dep_id, status in conn.execute(
        'SELECT t."id", t."status" FROM "task_deps" d JOIN "tasks" t ON t."id" = d."depends_on_id" '
        'WHERE d."task_id" = ?',
        (task_id,),
    ):
        total += 1
        if status == "COMPLETED":
            completed += 1
        elif status in ("FAILED", "CANCELLED") and bad is None:
            bad = (dep_id, status)
    return total, completed, bad


def unfinished_dependents(conn: sqlite3.Connection, task_id: str) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            'SELECT d."task_id" FROM "task_deps" d JOIN "tasks" t ON t."id" = d."task_id" '
            f'WHERE d."depends_on_id" = ? AND t."status" NOT IN {_TERMINAL_SQL}',
            (task_id,),
        )
    ]


def _in_chunks(
    conn: sqlite3.Connection, sql: str, ids: Sequence[str], lists: int = 1, before: Sequence[Any] = ()
) -> Iterator[Row]:
    """Run ``sql`` over ``ids``, 500 at a time; each of its ``lists`` ``{marks}`` is an IN list of
    the same chunk, after the parameters ``before``."""
    for start in range(0, len(ids), _MANY_CHUNK):
        chunk = list(ids[start : start + _MANY_CHUNK])
        yield from conn.execute(sql.format(marks=", ".join("?" * len(chunk))), [*before, *(chunk * lists)])


def unfinished_dependents_of(conn: sqlite3.Connection, task_ids: Sequence[str]) -> dict[str, list[str]]:
    """:func:`unfinished_dependents` of many tasks in one query: depended-on id -> dependents."""
    found: dict[str, list[str]] = {}
    sql = (
        'SELECT d."depends_on_id", d."task_id" FROM "task_deps" d JOIN "tasks" t ON t."id" = d."task_id" '
        f'WHERE d."depends_on_id" IN ({{marks}}) AND t."status" NOT IN {_TERMINAL_SQL}'
    )
    for depends_on, task_id in _in_chunks(conn, sql, task_ids):
        found.setdefault(depends_on, []).append(task_id)
    return found


def parents_and_dependents(conn: sqlite3.Connection, task_ids: Sequence[str]) -> tuple[set[str], dict[str, list[str]]]:
    """Which of ``task_ids`` have children, and :func:`unfinished_dependents_of` them, in one query
    per 500 (a drain asks both for every transaction's finished tasks)."""
    sql = (
        'SELECT 0, "parent_id", NULL FROM "tasks" WHERE "parent_id" IN ({marks}) GROUP BY "parent_id" '
        'UNION ALL SELECT 1, d."depends_on_id", d."task_id" FROM "task_deps" d JOIN "tasks" t ON t."id" = d."task_id" '
        f'WHERE d."depends_on_id" IN ({{marks}}) AND t."status" NOT IN {_TERMINAL_SQL}'
    )
    parents: set[str] = set()
    dependents: dict[str, list[str]] = {}
    for kind, task_id, dependent in _in_chunks(conn, sql, task_ids, lists=2):
        if kind == 0:
            parents.add(task_id)
        else:
            dependents.setdefault(task_id, []).append(dependent)
    return parents, dependents


def children_summary(conn: sqlite3.Connection, parent_id: str) -> tuple[dict[str, int], float | None]:
    """Counts of children by status, and their weighted progress (finished children count 100)."""
    counts: dict[str, int] = {}
    weight_sum = 0.0
    weighted = 0.0
    for status, count, w, wp in conn.execute(
        'SELECT "status", COUNT(*), SUM("weight"), SUM("weight" * CASE WHEN "status" IN '
        f'{_TERMINAL_SQL} THEN 100 ELSE "progress" END) FROM "tasks" WHERE "parent_id" = ? '
        'GROUP BY "status"',
        (parent_id,),
    ):
        counts[status] = count
        weight_sum += w or 0.0
        weighted += wp or 0.0
    if not counts:
        return counts, None
    return counts, (round(weighted / weight_sum, 3) if weight_sum > 0 else 0.0)


def has_children(conn: sqlite3.Connection, task_id: str) -> bool:
    return conn.execute('SELECT 1 FROM "tasks" WHERE "parent_id" = ? LIMIT 1', (task_id,)).fetchone() is not None


_DESCENDANTS = (
    'WITH RECURSIVE sub("id", "depth") AS (SELECT "id", 1 FROM "tasks" WHERE "parent_id" = ? '
    'UNION ALL SELECT t."id", sub."depth" + 1 FROM "tasks" t JOIN sub ON t."parent_id" = sub."id") '
    f'SELECT t.{_COLS.replace(", ", ", t.")}, sub."depth" FROM sub JOIN "tasks" t ON t."id" = sub."id" '
    'ORDER BY sub."depth", t."created_at", t."rowid"'
)


def descendants(conn: sqlite3.Connection, task_id: str) -> list[Row]:
    """Every descendant row, parents before their children (breadth first)."""
    return [r[:-1] for r in conn.execute(_DESCENDANTS, (task_id,))]
