"""The store's SQL against a real SQLite file."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar.domain.states import IllegalTransition, Status
from sidecar.persistence import migrations, models, store


@pytest.fixture
def db_file(tmp_path: Path) -> Path:
    path = tmp_path / "store.db"
    db = models.open_database(str(path))
    migrations.upgrade(db)
    db.close()
    return path


_opened: list[sqlite3.Connection] = []


@pytest.fixture(autouse=True)
def _close_connections() -> Iterator[None]:
    # Python 3.13 warns about a connection left to the garbage collector, and the warning then
    # fails whichever later test the collector happens to run in
    yield
    while _opened:
        _opened.pop().close()


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    _opened.append(conn)
    conn.execute("PRAGMA journal_mode=wal")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def insert_one(conn: sqlite3.Connection, task_id: str, type: str, now: int) -> None:
    store.insert(
        conn, task_id=task_id, type=type, status=Status.QUEUED, parent_id=None, details_json="{}",
        priority=0, max_attempts=3, run_at=0, idempotency_key=None, now=now,
    )


def insert(conn: sqlite3.Connection, n: int, type: str = "demo.noop") -> list[str]:
    ids = [f"t{i:05d}" for i in range(n)]
    for i, task_id in enumerate(ids):
        insert_one(conn, task_id, type, now=1000 + i)
    return ids


def test_two_workers_never_claim_the_same_task(db_file: Path) -> None:
    conn = connect(db_file)
    insert(conn, 400)
    claimed: list[list[str]] = [[] for _ in range(4)]

    def worker(k: int) -> None:
        c = connect(db_file)
        while True:
            c.execute("BEGIN IMMEDIATE")
            row = store.claim(c, ["demo.noop"], 10_000)
            c.execute("COMMIT")
            if row is None:
                return
            claimed[k].append(row[0])

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [i for part in claimed for i in part]
    assert len(everything) == 400 and len(set(everything)) == 400
    assert conn.execute("SELECT COUNT(*) FROM tasks WHERE status='RUNNING' AND attempt=1").fetchone()[0] == 400


def test_claim_skips_types_not_offered_and_tasks_not_due(db_file: Path) -> None:
    conn = connect(db_file)
    insert(conn, 1, type="other")
    assert store.claim(conn, ["demo.noop"], 10_000) is None
    conn.execute("UPDATE tasks SET type='demo.noop', run_at=20000")
    assert store.claim(conn, ["demo.noop"], 10_000) is None
    assert store.next_run_at(conn, ["demo.noop"], 10_000) == 20000
    assert store.claim(conn, ["demo.noop"], 20_000) is not None


def test_one_claim_takes_several_tasks_best_first(db_file: Path) -> None:
    conn = connect(db_file)
    ids = insert(conn, 6)
    conn.execute("UPDATE tasks SET run_at = created_at")  # due when created, as tasks.create does
    conn.execute("UPDATE tasks SET priority = 5 WHERE id IN (?, ?)", (ids[4], ids[2]))
    conn.execute("UPDATE tasks SET run_at = 500 WHERE id = ?", (ids[3],))  # due longest
    conn.execute("UPDATE tasks SET run_at = 90000 WHERE id = ?", (ids[0],))  # not due yet
    rows = store.claim_many(conn, ["demo.noop"], 10_000, 4)
    assert [r[0] for r in rows] == [ids[2], ids[4], ids[3], ids[1]]
    assert {store.row_status(r) for r in rows} == {"RUNNING"}
    assert [r[0] for r in store.claim_many(conn, ["demo.noop"], 10_000, 4)] == [ids[5]]
    assert store.claim_many(conn, ["demo.noop"], 10_000, 4) == []


def _claim_steps(conn: sqlite3.Connection) -> int:
    """SQLite virtual-machine steps one claim takes (a deterministic measure of rows walked)."""
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    conn.set_progress_handler(count, 1)
    try:
        conn.execute("BEGIN IMMEDIATE")
        assert store.claim(conn, ["demo.noop"], 10_000) is not None
        conn.execute("ROLLBACK")
    finally:
        conn.set_progress_handler(None, 1)
    return steps[0]


def test_claim_does_not_walk_tasks_delayed_to_later(db_file: Path) -> None:
    conn = connect(db_file)
    insert(conn, 1)
    alone = _claim_steps(conn)
    conn.execute("BEGIN")
    for i in range(5000):  # created earlier, due tomorrow
        store.insert(
            conn, task_id=f"later{i}", type="demo.noop", status=Status.QUEUED, parent_id=None,
            details_json="{}", priority=0, max_attempts=3, run_at=90_000_000, idempotency_key=None, now=i,
        )
    conn.execute("COMMIT")
    assert _claim_steps(conn) < alone * 2


def test_a_row_started_on_insert_is_the_row_a_claim_writes(db_file: Path) -> None:
    conn = connect(db_file)
    fields = dict(type="demo.noop", status=Status.QUEUED, parent_id=None, details_json='{"n": 1}',
                  priority=3, max_attempts=2, run_at=1000, idempotency_key=None, now=1000)
    store.insert(conn, task_id="claimed", **fields)
    claimed = store.claim(conn, ["demo.noop"], 5000)
    assert claimed is not None
    store.insert_rows(conn, [store.started_row(store.new_row(task_id="started", **fields), 5000)])
    started = conn.execute(f"SELECT {store._COLS}, checkpoint FROM tasks WHERE id = 'started'").fetchone()
    assert started[1:] == claimed[1:]  # every column but the id, checkpoint included
    with pytest.raises(IllegalTransition, match="cannot move from RUNNING to RUNNING"):
        store.started_row(started[:-1], 6000)  # only a QUEUED row can start


def test_transition_is_refused_by_the_state_machine(db_file: Path) -> None:
    conn = connect(db_file)
    (task_id,) = insert(conn, 1)
    assert store.transition(conn, task_id, Status.COMPLETED, 2000) is None  # QUEUED -> COMPLETED: not allowed
    row = store.transition(conn, task_id, Status.CANCELLED, 2000, completed_at=2000)
    assert row is not None and store.row_status(row) == "CANCELLED" and row[store.COLUMNS.index("version")] == 2
    assert store.transition(conn, task_id, Status.RUNNING, 2000) is None



def test_completing_many_writes_what_one_transition_at_a_time_writes(db_file: Path) -> None:
    conn = connect(db_file)
    ids = insert(conn, 1203)  # three statements: 500 + 500 + 203
    for task_id in ids:
        store.transition(conn, task_id, Status.RUNNING, 1500, message="started")
    one_by_one, together, refused = ids[:601], ids[601:1202], ids[1202]
    store.transition(conn, refused, Status.CANCELLED, 1600, completed_at=1600)
    for i, task_id in enumerate(one_by_one):
        message = {"message": f"m{i}"} if i % 2 else {}
        store.transition(conn, task_id, Status.COMPLETED, 2000, progress=100, result=f'{{"i": {i}}}',
                         error=None, completed_at=2000, **message)
    finished = [
        (task_id, f'{{"i": {i}}}', f"m{i}" if i % 2 else store.KEEP_MESSAGE) for i, task_id in enumerate(together)
    ]
    rows = store.complete_many(conn, finished + [(refused, "null", store.KEEP_MESSAGE)], 2000)
    assert sorted(r[0] for r in rows) == sorted(together)  # the CANCELLED task is left alone
    assert {r[store.PREV_STATUS] for r in rows} == {"RUNNING"}
    read = f'SELECT {store._COLS}, "prev_status" FROM "tasks" WHERE "id" = ?'
    created = store.COLUMNS.index("created_at")
    for a, b in zip(one_by_one, together):
        row_a, row_b = conn.execute(read, (a,)).fetchone(), conn.execute(read, (b,)).fetchone()
        assert row_a[1:created] + row_a[created + 1 :] == row_b[1:created] + row_b[created + 1 :]  # but id, created_at
    assert store.row_status(conn.execute(read, (refused,)).fetchone()) == "CANCELLED"


def test_children_and_dependents_of_many_tasks_in_one_query(db_file: Path) -> None:
    conn = connect(db_file)
    parent, plain, dependency = insert(conn, 3)
    fields = dict(type="demo.noop", status=Status.QUEUED, details_json="{}", priority=0, max_attempts=1,
                  run_at=0, idempotency_key=None, now=2000)
    store.insert(conn, task_id="child", parent_id=parent, **fields)
    for name in ("waits", "done"):
        store.insert(conn, task_id=name, parent_id=None, **fields)
        conn.execute('INSERT INTO "task_deps" VALUES (?, ?)', (name, dependency))
    store.transition(conn, "done", Status.CANCELLED, 2000, completed_at=2000)
    many = [f"x{i}" for i in range(700)] + [parent, plain, dependency]  # past one IN list of 500
    assert store.unfinished_dependents_of(conn, many) == {dependency: ["waits"]}
    assert store.parents_and_dependents(conn, many) == ({parent}, {dependency: ["waits"]})
    assert store.parents_and_dependents(conn, [plain]) == (set(), {})


def test_cursor_round_trip_and_forgery() -> None:
    cursors = store.Cursors(b"k" * 16)
    token = cursors.issue(1234, 56)
    assert cursors.parse(token) == (1234, 56)
    assert store.Cursors(b"x" * 16).parse(token) is None
    assert cursors.parse("garbage") is None
    assert cursors.parse("") is None


def test_migrated_schema_matches_the_model(db_file: Path) -> None:
    conn = connect(db_file)
    columns = {r[1] for r in conn.execute("PRAGMA table_info(tasks)")}
    assert columns == {f.column_name for f in models.Task._meta.sorted_fields}
    assert conn.execute("PRAGMA user_version").fetchone()[0] == migrations.SCHEMA_VERSION
    store.claim(conn, ["a", "b"], 1)  # builds the statement
    claim_sql = store._claim_sql_cache[2]  # the statement for two types
    plan = [r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + claim_sql, (1, 1, 1, "a", 4, 1, "b", 4, 4))]
    # each type's best are read in order from the index; only those few are sorted, never the queue
    assert plan.count("SEARCH tasks USING INDEX tasks_claim_type (type=?)") == 2
    assert not any(step.startswith("SCAN tasks") for step in plan)


def count_vm_steps(conn: sqlite3.Connection) -> list[int]:
    """A counter (``[n]``, reset by assigning ``[0]`` to its item) of the hundreds of SQLite VM
    instructions ``conn`` runs from now on: how much of an index a statement walks."""
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    conn.set_progress_handler(count, 100)
    return steps


def test_a_claim_does_not_walk_the_queued_tasks_of_types_it_may_not_start(db_file: Path) -> None:
    conn = connect(db_file)
    for n in range(3000):  # downloads queued behind their type's limit
        insert_one(conn, f"held-{n:05d}", "download", now=1000 + n)
    insert_one(conn, "free-1", "convert", now=5000)
    conn.execute("UPDATE tasks SET run_at = created_at")
    steps = count_vm_steps(conn)
    assert store.claim(conn, ["convert"], 10_000)[0] == "free-1"
    assert store.claim(conn, ["convert"], 10_000) is None
    assert steps[0] < 20  # walking 3,000 index entries would take thousands
    steps[0] = 0
    best = store.claim_many(conn, ["convert", "download"], 10_000, 3)
    assert [r[0] for r in best] == ["held-00000", "held-00001", "held-00002"]  # merged in queue order
    assert steps[0] < 40


def test_the_wake_up_lookup_seeks_each_type_instead_of_reading_the_delayed_tasks(db_file: Path) -> None:
    conn = connect(db_file)
    for n in range(3000):  # downloads waiting out a retry's backoff
        insert_one(conn, f"later-{n:05d}", "download", now=1000)
    insert_one(conn, "convert-1", "convert", now=1000)
    insert_one(conn, "done-1", "download", now=1000)
    conn.execute("UPDATE tasks SET run_at = 50000 + CAST(substr(id, 7) AS INTEGER) WHERE id LIKE 'later-%'")
    conn.execute("UPDATE tasks SET run_at = 70000 WHERE id = 'convert-1'")
    conn.execute("UPDATE tasks SET run_at = 5, status = 'COMPLETED' WHERE id = 'done-1'")
    steps = count_vm_steps(conn)
    assert store.next_run_at(conn, ["download", "convert"], 10_000) == 50000
    assert store.next_run_at(conn, ["convert"], 10_000) == 70000
    assert store.next_run_at(conn, ["download"], 51_000) == 51001  # only what is still to come
    assert store.next_run_at(conn, ["convert"], 70_000) is None
    assert store.next_run_at(conn, ["other"], 0) is None
    assert store.next_run_at(conn, [], 0) is None
    assert steps[0] < 20  # reading 3,000 index entries would take thousands
    # more types than one statement holds: the earliest of every chunk
    many = [f"type-{k}" for k in range(150)] + ["convert"]
    assert store.next_run_at(conn, many, 10_000) == 70000
    assert store.next_run_at(conn, ["convert", *many[:149], "download"], 10_000) == 50000


def test_prune_passes_over_finished_roots_kept_for_their_running_grandchildren(db_file: Path) -> None:
    # Six finished batches whose grandchildren are still being stopped come first in line; a prune
    # reading three roots at a time found only those and stopped, leaving the four it could delete.
    conn = connect(db_file)
    for n in range(6):
        insert_one(conn, f"batch-{n}", "demo.noop", now=1000)
        insert_one(conn, f"child-{n}", "demo.noop", now=1000)
        insert_one(conn, f"grandchild-{n}", "demo.noop", now=1000)
        conn.execute("UPDATE tasks SET status = 'COMPLETED', completed_at = ? WHERE id = ?", (100 + n, f"batch-{n}"))
        conn.execute("UPDATE tasks SET status = 'FAILED', completed_at = 100, parent_id = ? WHERE id = ?",
                     (f"batch-{n}", f"child-{n}"))
        conn.execute("UPDATE tasks SET status = 'RUNNING', parent_id = ? WHERE id = ?", (f"child-{n}", f"grandchild-{n}"))
    for n in range(4):
        insert_one(conn, f"done-{n}", "demo.noop", now=1000)
        conn.execute("UPDATE tasks SET status = 'COMPLETED', completed_at = ? WHERE id = ?", (500 + n, f"done-{n}"))
    deleted: list[str] = []
    kept: list[str] = []
    while True:
        pruned = store.prune(conn, ["COMPLETED"], 10_000, limit=3, skip=kept)
        if not pruned.deleted and not pruned.kept:
            break
        deleted += pruned.deleted
        kept += pruned.kept
    assert sorted(deleted) == [f"done-{n}" for n in range(4)]
    assert sorted(kept) == [f"batch-{n}" for n in range(6)]
    assert conn.execute("SELECT COUNT(*) FROM tasks").fetchone()[0] == 18  # the batches stay whole


def test_counts_apply_deltas_and_deletes_count_themselves(db_file: Path) -> None:
    conn = connect(db_file)
    ids = insert(conn, 5)
    store.apply_counts(conn, {("demo.noop", "QUEUED"): 5})
    row = store.transition(conn, ids[0], Status.CANCELLED, 2000, completed_at=2000)
    assert row[store.PREV_STATUS] == "QUEUED"
    store.apply_counts(conn, {("demo.noop", "QUEUED"): -1, ("demo.noop", "CANCELLED"): 1})
    store.delete(conn, ids[1])  # the trigger
    stats = store.stats(conn)
    assert stats["byType"] == {"demo.noop": {"QUEUED": 3, "CANCELLED": 1}} and stats["total"] == 4


def test_list_by_several_statuses_merges_newest_first_and_pages(db_file: Path) -> None:
    conn = connect(db_file)
    ids = insert(conn, 30)
    for n, task_id in enumerate(ids):
        if n % 3 == 0:
            store.transition(conn, task_id, Status.CANCELLED, 2000, completed_at=2000)
        elif n % 3 == 1:
            store.transition(conn, task_id, Status.RUNNING, 2000)
    expected = [i for n, i in enumerate(ids) if n % 3 != 2][::-1]
    seen: list[str] = []
    after = None
    while True:
        rows, after = store.list_tasks(conn, statuses=["CANCELLED", "RUNNING"], types=None, parent_id=None,
                                       limit=7, after=after)
        seen += [r[0] for r in rows]
        if after is None:
            break
    assert seen == expected
    for n, type_ in enumerate(["x", "y"]):
        insert_one(conn, f"other-{n}", type_, now=900)
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    store.list_tasks(conn, statuses=["QUEUED"], types=None, parent_id=None, limit=5, after=(1500, 20))
    conn.set_trace_callback(None)
    plans = [[r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql)] for sql in statements if "json_each" not in sql]
    page = [r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + next(sql for sql in statements if "json_each" in sql))]
    # each type's range of the (type, status, created_at) index, read in order from the index alone;
    # then the page's rows by rowid; no scan of the table
    reads = [p for p in plans if "tasks_type_status_created (type=? AND status=? AND created_at<?)" in " ".join(p)]
    assert len(reads) == 3 and all("COVERING INDEX" in " ".join(p) for p in reads)  # demo.noop, x, y
    assert "SEARCH tasks USING INTEGER PRIMARY KEY (rowid=?)" in page
    assert not any(step.startswith("SCAN tasks") for p in [*plans, page] for step in p)


def test_a_filtered_page_is_read_from_one_snapshot(db_file: Path) -> None:
    conn, writer = connect(db_file), connect(db_file)
    ids = insert(conn, 3)
    moved = []

    def commit_a_start_midway() -> int:  # another connection commits while the page is being read
        if not moved:
            moved.append(store.claim(writer, ["demo.noop"], 10_000)[0])
        return 0

    conn.set_progress_handler(commit_a_start_midway, 1)
    rows, _ = store.list_tasks(conn, statuses=["QUEUED", "RUNNING"], types=["demo.noop"], parent_id=None,
                               limit=50, after=None)
    conn.set_progress_handler(None, 1)
    # the commit lands during the page's first statement: each task once, in the state of one moment
    assert moved and sorted(r[0] for r in rows) == sorted(ids)


def test_present_types_finds_every_type_by_seeking_the_index(db_file: Path) -> None:
    conn = connect(db_file)
    assert store.present_types(conn) == []
    for n, type_ in enumerate(["video", "audio", "video", "zip", "audio"]):
        insert_one(conn, f"id-{n}", type_, now=1000 + n)
    assert store.present_types(conn) == ["audio", "video", "zip"]
    plan = " ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + store._PRESENT_TYPES))
    assert "SCAN tasks" not in plan and "tasks_type_status_created (type>?)" in plan


def test_a_status_filter_lists_tasks_of_every_type_and_recovery_finds_them(db_file: Path) -> None:
    conn = connect(db_file)
    for n, type_ in enumerate(["b", "a", "c", "a", "b", "c"]):
        insert_one(conn, f"id-{n}", type_, now=1000 + n)
    conn.execute("UPDATE tasks SET status = 'RUNNING', attempt = 1 WHERE id IN ('id-0', 'id-3', 'id-5')")
    rows, after = store.list_tasks(conn, statuses=["RUNNING"], types=None, parent_id=None, limit=50, after=None)
    assert [r[0] for r in rows] == ["id-5", "id-3", "id-0"] and after is None
    assert store.recover_interrupted(conn, 5000) == store.Recovered(3, [], [], 0)
    assert store.list_tasks(conn, statuses=["RUNNING"], types=None, parent_id=None, limit=50, after=None)[0] == []
    assert store.list_tasks(conn, statuses=["QUEUED"], types=None, parent_id=None, limit=50, after=None)[0]


def test_new_task_ids_are_distinct_random_version_4_uuids() -> None:
    import uuid

    ids = store.new_task_ids(5000)
    assert len(set(ids)) == 5000
    assert len({text[:8] for text in ids}) > 4900  # shortened ids still tell a batch apart
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_recovery_requeues_interrupted_tasks_in_their_place(db_file: Path) -> None:
    conn = connect(db_file)
    first, second = insert(conn, 2)
    conn.execute("UPDATE tasks SET run_at = created_at")
    assert store.claim(conn, ["demo.noop"], 10_000)[0] == first  # running when the sidecar died
    assert store.recover_interrupted(conn, 50_000) == store.Recovered(1, [], [], 0)
    assert conn.execute("SELECT run_at FROM tasks WHERE id = ?", (first,)).fetchone()[0] == 1000
    assert store.claim(conn, ["demo.noop"], 60_000)[0] == first  # still ahead of the one behind it
    conn.execute("UPDATE tasks SET status = 'RUNNING', run_at = 90000 WHERE id = ?", (second,))
    store.recover_interrupted(conn, 50_000)  # the clock went back: due now, never later
    assert conn.execute("SELECT run_at FROM tasks WHERE id = ?", (second,)).fetchone()[0] == 50_000


def test_recovery_ends_a_task_as_the_user_asked_when_its_handler_had_not_stopped(db_file: Path) -> None:
    conn = connect(db_file)
    cancelled, paused, plain = insert(conn, 3)
    assert len(store.claim_many(conn, ["demo.noop"], 10_000, 3)) == 3
    assert store.set_stop_requested(conn, cancelled, "cancel", "cancelling", 11_000) is not None
    assert store.set_stop_requested(conn, paused, "pause", "pausing", 11_000) is not None
    assert store.recover_interrupted(conn, 50_000) == store.Recovered(1, [], [cancelled], 1)
    statuses = dict(conn.execute("SELECT id, status FROM tasks"))
    assert statuses == {cancelled: "CANCELLED", paused: "PAUSED", plain: "QUEUED"}
    assert store.claim(conn, ["demo.noop"], 60_000)[0] == plain
    # a stop asked of an earlier run is forgotten when the task starts again
    conn.execute("UPDATE tasks SET status = 'QUEUED' WHERE id = ?", (paused,))
    assert store.claim(conn, ["demo.noop"], 70_000)[0] == paused
    assert conn.execute("SELECT stop_requested FROM tasks WHERE id = ?", (paused,)).fetchone() == (None,)
