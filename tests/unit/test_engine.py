"""The engine in-process: slot accounting when a transaction is rolled back; handler reports that
share a transaction."""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

import pytest

import sidecar.handlers.builtin  # noqa: F401  (registers demo.noop)
from sidecar.domain.engine import Engine
from sidecar.errors import ShuttingDown, StorageError
from sidecar.handlers.registry import Registry, default_registry
from sidecar.persistence import migrations, models, store

from tests.sidecar_client import db_rows


@pytest.fixture
def engine_and_waiter(tmp_path: Path):
    db = models.open_database(str(tmp_path / "engine.db"))
    migrations.upgrade(db)
    completed: list[str] = []
    done = threading.Condition()

    def announce(tasks: list[dict]) -> None:
        with done:
            completed.extend(t["id"] for t in tasks if t["status"] == "COMPLETED")
            done.notify_all()

    engine = Engine(models.new_connection, default_registry, announce=announce,
                    announce_deleted=lambda ids: None, concurrency=1)
    engine.start()

    def wait_completed(task_id: str, timeout: float = 10) -> bool:
        with done:
            return done.wait_for(lambda: task_id in completed, timeout)

    yield engine, wait_completed
    engine.shutdown()
    db.close()


def test_a_rolled_back_transaction_gives_back_the_slot_of_a_task_started_on_insert(engine_and_waiter) -> None:
    engine, wait_completed = engine_and_waiter
    create = lambda tx: engine.graph.create_many(tx, [{"type": "demo.noop"}])[0]  # noqa: E731
    first = engine.submit(create).result(10)  # the engine has looked at its queue: it is idle
    assert wait_completed(first["id"])
    with engine._turn:  # both ops wait in the inbox, so they share one transaction
        started = engine.submit(create)  # inserted RUNNING into the one free slot...
        broken = engine.submit(lambda tx: tx.conn.execute("SELECT * FROM no_such_table"))
    with pytest.raises(StorageError):  # ...then the transaction fails and is rolled back
        started.result(10)
    with pytest.raises(StorageError):
        broken.result(10)
    again = engine.submit(create).result(10)
    assert wait_completed(again["id"]), "the rolled-back task kept the only slot"
    assert db_rows(models.database.database, "SELECT COUNT(*) FROM tasks") == [(2,)]


def test_prune_of_everything_takes_a_task_finished_in_the_same_millisecond(engine_and_waiter, monkeypatch) -> None:
    engine, wait_completed = engine_and_waiter
    task = engine.submit(lambda tx: engine.graph.create_many(tx, [{"type": "demo.noop"}])[0]).result(10)
    assert wait_completed(task["id"])
    [(finished_at,)] = db_rows(models.database.database, "SELECT completed_at FROM tasks")
    # the prune's transaction reads the clock in the millisecond the task finished in (a fast
    # client, or a wall clock stepped back): "older than 0 ms" must still mean every finished task
    monkeypatch.setattr("sidecar.domain.engine.now_ms", lambda: finished_at)
    prune = lambda older_than_ms: engine.graph.prune_in_steps(older_than_ms, ["COMPLETED"])  # noqa: E731
    assert prune(1).result(10) == {"deleted": 0}, "finished 0 ms ago is not more than 1 ms ago"
    assert prune(0).result(10) == {"deleted": 1}
    assert db_rows(models.database.database, "SELECT COUNT(*) FROM tasks") == [(0,)]


class Gates:
    """Handlers that return only when their gate opens, in an order the test chooses."""

    def __init__(self, tmp_path: Path, grace_s: float = 5.0) -> None:
        self.events: dict[str, threading.Event] = {}
        self.registry = Registry()
        self.registry.handler("unit.gate")(self._gate)
        self.registry.handler("unit.failing_gate", max_attempts=1)(self._failing_gate)
        self.registry.handler("unit.stoppable")(self._stoppable)
        self.registry.handler("unit.fails_first", max_attempts=1)(self._fails_first)
        self.registry.handler("unit.ticker")(self._ticker)
        self.failed_once: set[str] = set()
        self.registry.handler("demo.noop")(lambda ctx: None)
        self.tasks: dict[str, dict] = {}
        self.changed = threading.Condition()
        self.db = models.open_database(str(tmp_path / "gates.db"))
        migrations.upgrade(self.db)
        self.engine = Engine(models.new_connection, self.registry, announce=self._announce,
                             announce_deleted=lambda ids: None, concurrency=4, grace_s=grace_s)
        self.finish_reports = 0
        gates = self

        class CountingInbox(queue.SimpleQueue):
            def put(self, item, block=True, timeout=None):
                if item.finish:
                    gates.finish_reports += 1
                super().put(item)

        self.engine._inbox = CountingInbox()
        self.engine.start()

    def _gate(self, ctx) -> dict:
        name = ctx.details["gate"]
        if ctx.details.get("said"):
            ctx.progress(10, ctx.details["said"])
        self.events.setdefault(name, threading.Event()).wait(10)
        if ctx.details.get("last"):  # a download's progress(100, …) right before it returns
            ctx.progress(100, ctx.details["last"])
        if ctx.details.get("not_json"):
            return {"gate": name, "ids": {1, 2}}
        return {"gate": name}

    def _fails_first(self, ctx) -> dict:
        name = ctx.details["gate"]
        self._gate(ctx)
        if name not in self.failed_once:
            self.failed_once.add(name)
            raise RuntimeError(f"gate {name} broke once")
        return {"gate": name}

    def _stoppable(self, ctx) -> None:
        ctx.progress(10, ctx.details["said"])
        while not ctx.cancelled:
            time.sleep(0.005)
        ctx.raise_if_cancelled()

    def _ticker(self, ctx) -> None:
        """Reports progress every 10 ms until its gate opens."""
        opened = self.events.setdefault(ctx.details["gate"], threading.Event())
        tick = 0
        while not opened.wait(0.01):
            tick += 1
            ctx.progress(tick % 100)

    def _failing_gate(self, ctx) -> dict:
        self._gate(ctx)
        raise RuntimeError(f"gate {ctx.details['gate']} broke")

    def _announce(self, tasks: list[dict]) -> None:
        with self.changed:
            self.tasks.update((t["details"].get("gate", t["id"]), t) for t in tasks)
            self.changed.notify_all()

    def wait(self, predicate, timeout: float = 10) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: predicate(self.tasks), timeout)

    def status(self, name: str) -> str:
        return self.tasks[name]["status"]


@pytest.fixture
def make_gates(tmp_path: Path):
    made: list[Gates] = []

    def make(**options) -> Gates:
        made.append(Gates(tmp_path, **options))
        return made[-1]

    yield make
    for g in made:
        for event in g.events.values():
            event.set()
        g.engine.shutdown()
        g.db.close()


@pytest.fixture
def gates(make_gates) -> Gates:
    return make_gates()


def _finish_in_one_transaction(gates: Gates, order: list[str], ops: tuple = ()) -> list:
    """Submit ``ops``, then open the gates in ``order``, while the engine is held, so the ops and
    the finish reports wait in its inbox in that order and are written by one transaction."""
    before = gates.finish_reports
    with gates.engine._turn:
        answers = [gates.engine.submit(op) for op in ops]
        for i, name in enumerate(order, before + 1):
            gates.events.setdefault(name, threading.Event()).set()
            deadline = time.monotonic() + 10
            while gates.finish_reports < i and time.monotonic() < deadline:
                time.sleep(0.001)
            assert gates.finish_reports == i
    return answers


def _graph(gates: Gates) -> None:
    create = gates.engine.submit(lambda tx: gates.engine.graph.create_many(tx, [
        {"type": "unit.gate", "details": {"gate": "a"}, "ref": "a"},
        {"type": "unit.gate", "details": {"gate": "parent"}, "ref": "parent"},
        {"type": "unit.gate", "details": {"gate": "child"}, "parentId": "parent"},
        {"type": "unit.gate", "details": {"gate": "b"}, "ref": "b"},
        {"type": "demo.noop", "details": {"gate": "after"}, "dependsOn": ["a", "b"]},
    ]))
    create.result(10)
    assert gates.wait(lambda t: all(t.get(n, {}).get("status") == "RUNNING" for n in ("a", "parent", "child", "b")))


def test_handlers_finishing_together_end_as_they_would_one_at_a_time(gates: Gates) -> None:
    _graph(gates)
    seen: list[list[str]] = []
    write = gates.engine.graph.handlers_succeeded

    def spy(tx, succeeded):
        seen.append([s[0] for s in succeeded])
        write(tx, succeeded)

    gates.engine.graph.handlers_succeeded = spy  # type: ignore[method-assign]
    # the parent's report sits between plain ones: written on its own, in its place
    _finish_in_one_transaction(gates, ["a", "parent", "child", "b"])
    assert gates.wait(lambda t: t.get("after", {}).get("status") == "COMPLETED"), gates.tasks
    ids = {name: gates.tasks[name]["id"] for name in ("a", "parent", "child", "b")}
    assert seen[0] == [ids["a"], ids["parent"], ids["child"], ids["b"]]
    for name in ("a", "parent", "child", "b"):
        assert gates.status(name) == "COMPLETED" and gates.tasks[name]["progress"] == 100
    assert gates.tasks["child"]["result"] == {"gate": "child"}
    assert gates.tasks["parent"]["result"]["children"] == {"completed": 1, "failed": 0, "cancelled": 0}
    assert db_rows(models.database.database, "SELECT status, COUNT(*) FROM tasks GROUP BY status") == [("COMPLETED", 5)]


def test_a_failing_batched_write_is_retried_one_report_at_a_time(gates: Gates) -> None:
    _graph(gates)
    write = gates.engine.graph.handlers_succeeded
    sizes: list[int] = []

    def only_one_at_a_time(tx, succeeded):
        sizes.append(len(succeeded))
        if len(succeeded) > 1:
            raise RuntimeError("a bug in the batched write")
        write(tx, succeeded)

    gates.engine.graph.handlers_succeeded = only_one_at_a_time  # type: ignore[method-assign]
    _finish_in_one_transaction(gates, ["a", "b", "child", "parent"])
    assert gates.wait(lambda t: t.get("after", {}).get("status") == "COMPLETED"), gates.tasks
    assert sizes[0] == 4 and set(sizes[1:5]) == {1}
    assert all(gates.status(name) == "COMPLETED" for name in ("a", "b", "child", "parent"))


def test_a_cancel_asked_in_a_transaction_outranks_a_parents_report_written_after_it_in_the_same_one(
    gates: Gates,
) -> None:
    # The top task fails for good and cancels its running descendants; their handlers' successes
    # are written later in that same transaction, before the stop reaches them. Reported as a
    # success, the child went WAITING for a grandchild whose completion then skipped it (its
    # parent being cancelled): WAITING forever. So a task with children ends CANCELLED; the
    # grandchild, whose handler returned before any stop reached it, has done its work: COMPLETED.
    gates.engine.submit(lambda tx: gates.engine.graph.create_many(tx, [
        {"type": "unit.failing_gate", "details": {"gate": "top"}, "ref": "top"},
        {"type": "unit.gate", "details": {"gate": "child"}, "ref": "child", "parentId": "top"},
        {"type": "unit.gate", "details": {"gate": "grandchild"}, "parentId": "child"},
    ])).result(10)
    assert gates.wait(lambda t: all(t.get(n, {}).get("status") == "RUNNING" for n in ("top", "child", "grandchild")))
    _finish_in_one_transaction(gates, ["top", "child", "grandchild"])
    assert gates.wait(lambda t: all(t[n]["status"] in ("COMPLETED", "FAILED", "CANCELLED")
                                    for n in ("top", "child", "grandchild"))), gates.tasks
    assert [gates.status(n) for n in ("top", "child", "grandchild")] == ["FAILED", "CANCELLED", "COMPLETED"]
    assert gates.tasks["grandchild"]["result"] == {"gate": "grandchild"}


def _batch_of_two(gates: Gates, **video: str) -> None:
    """A batch (``onChildFailure: "fail"``, its own handler done) with two running children: "bad",
    which fails when its gate opens, and "video" (``video``: more of its details)."""
    gates.engine.submit(lambda tx: gates.engine.graph.create_many(tx, [
        {"type": "unit.gate", "details": {"gate": "batch"}, "ref": "batch"},
        {"type": "unit.failing_gate", "details": {"gate": "bad"}, "parentId": "batch"},
        {"type": "unit.gate", "details": {"gate": "video", **video}, "parentId": "batch"},
    ])).result(10)
    assert gates.wait(lambda t: all(t.get(n, {}).get("status") == "RUNNING" for n in ("batch", "bad", "video"))
                      and t["video"]["message"] == video.get("said", t["video"]["message"]))
    gates.events.setdefault("batch", threading.Event()).set()
    assert gates.wait(lambda t: t["batch"]["status"] == "WAITING")


def test_a_child_that_finished_as_its_batch_failed_completes_with_its_result_and_message(gates: Gates) -> None:
    # A playlist's download that finished in the transaction in which a sibling's 404 failed the
    # batch: its file is in place, so CANCELLED (with no result) would hide it from the app.
    _batch_of_two(gates)
    _finish_in_one_transaction(gates, ["bad", "video"])
    assert gates.wait(lambda t: t["video"]["status"] in ("COMPLETED", "CANCELLED")), gates.tasks
    assert [gates.status(n) for n in ("batch", "bad", "video")] == ["FAILED", "FAILED", "COMPLETED"]
    video = gates.tasks["video"]
    assert video["result"] == {"gate": "video"} and video["message"] != "cancelling"
    assert db_rows(models.database.database, "SELECT status, result FROM tasks WHERE id = ?",
                   video["id"]) == [("COMPLETED", '{"gate":"video"}')]


def _one_running(gates: Gates, name: str, **details) -> str:
    gates.engine.submit(lambda tx: gates.engine.graph.create_many(tx, [
        {"type": details.pop("type", "unit.gate"), "details": {"gate": name, **details}},
    ])).result(10)
    assert gates.wait(lambda t: t.get(name, {}).get("status") == "RUNNING"
                      and t[name]["message"] == details.get("said", t[name]["message"]))
    return gates.tasks[name]["id"]


def test_a_users_cancel_that_reaches_a_handler_only_after_it_returned_lets_it_complete(gates: Gates) -> None:
    task_id = _one_running(gates, "x", said="halfway")
    [answer] = _finish_in_one_transaction(gates, ["x"], ops=(lambda tx: gates.engine.graph.cancel(tx, task_id),))
    assert answer.result(10)["message"] == "cancelling"
    assert gates.wait(lambda t: t["x"]["status"] in ("COMPLETED", "CANCELLED")), gates.tasks
    assert gates.status("x") == "COMPLETED" and gates.tasks["x"]["result"] == {"gate": "x"}
    assert gates.tasks["x"]["message"] == "halfway"  # its own last word, not "cancelling"


def test_a_cancel_with_a_result_that_cannot_be_stored_ends_cancelled(gates: Gates) -> None:
    # The result is checked before the cancel is set aside: a run that produced nothing storable
    # has not done its work, and the user asked to cancel it.
    task_id = _one_running(gates, "x", said="halfway", not_json=True)
    _finish_in_one_transaction(gates, ["x"], ops=(lambda tx: gates.engine.graph.cancel(tx, task_id),))
    assert gates.wait(lambda t: t["x"]["status"] in ("COMPLETED", "FAILED", "CANCELLED")), gates.tasks
    assert gates.status("x") == "CANCELLED" and gates.tasks["x"]["message"] == "halfway"


def test_a_download_finishing_as_its_batch_fails_keeps_its_last_progress_message(gates: Gates) -> None:
    # bad's failure (cancelling the video), the video's progress(100, "200 MB"), its result: one
    # transaction. The message is its last one, not the one from before the cancel.
    _batch_of_two(gates, said="190 of 200 MB", last="200 MB")
    time.sleep(0.3)  # past the progress coalescing interval: the last progress is its own op
    _finish_in_one_transaction(gates, ["bad", "video"])
    assert gates.wait(lambda t: t["video"]["status"] in ("COMPLETED", "CANCELLED")), gates.tasks
    video = gates.tasks["video"]
    assert (video["status"], video["progress"], video["message"]) == ("COMPLETED", 100, "200 MB")


def test_a_paused_task_shows_its_last_message_not_pausing(gates: Gates) -> None:
    task_id = _one_running(gates, "p", type="unit.stoppable", said="120 of 200 MB")
    assert gates.engine.submit(lambda tx: gates.engine.graph.pause(tx, task_id)).result(10)["message"] == "pausing"
    assert gates.wait(lambda t: t["p"]["status"] == "PAUSED"), gates.tasks
    assert gates.tasks["p"]["message"] == "120 of 200 MB"


def test_a_handler_that_returns_after_its_cancel_reached_it_still_ends_cancelled(gates: Gates) -> None:
    gates.engine.submit(lambda tx: gates.engine.graph.create_many(tx, [
        {"type": "unit.gate", "details": {"gate": "y"}, "ref": "y"},
    ])).result(10)
    assert gates.wait(lambda t: t.get("y", {}).get("status") == "RUNNING")
    task_id = gates.tasks["y"]["id"]
    gates.engine.submit(lambda tx: gates.engine.graph.cancel(tx, task_id)).result(10)
    running = gates.engine.running(task_id)
    deadline = time.monotonic() + 10
    while running is not None and running.ctx.stop_reason is None and time.monotonic() < deadline:
        time.sleep(0.001)
    gates.events.setdefault("y", threading.Event()).set()  # it returns its result all the same
    assert gates.wait(lambda t: t["y"]["status"] in ("COMPLETED", "CANCELLED")), gates.tasks
    assert gates.status("y") == "CANCELLED" and gates.tasks["y"]["result"] is None


def test_ops_submitted_while_held_reach_the_engine_only_when_the_block_ends(engine_and_waiter) -> None:
    """The reader submits an op and only then attaches the response to its future; the engine
    answers a transaction before announcing it only for the futures it finds attached."""
    engine, wait_completed = engine_and_waiter
    create = lambda tx: engine.graph.create_many(tx, [{"type": "demo.noop"}])[0]  # noqa: E731
    engine.submit(create).result(10)  # the engine thread is up and idle
    answered_in: list[str] = []
    with engine.submits_held():
        future = engine.submit(create)
        time.sleep(0.2)  # ample time for an engine thread that had the op to commit it
        assert not future.done(), "the op was committed before the caller attached to it"
        future.add_done_callback(lambda f: answered_in.append(threading.current_thread().name))
    task = future.result(10)
    assert wait_completed(task["id"])
    assert answered_in and answered_in[0] != threading.current_thread().name, answered_in


def test_a_retry_in_the_transaction_that_failed_the_batch_leaves_no_stale_cancel(gates: Gates) -> None:
    # bad fails (failing the batch, which is marked as being cancelled in that transaction), bad is
    # deleted, the batch retried, and the last child reports: the batch used to ignore that report
    # (its stale "being cancelled") and wait forever with every child finished.
    _batch_of_two(gates)
    bad, batch = gates.tasks["bad"]["id"], gates.tasks["batch"]["id"]
    before = gates.finish_reports
    with gates.engine._turn:
        gates.events.setdefault("bad", threading.Event()).set()
        deadline = time.monotonic() + 10
        while gates.finish_reports < before + 1 and time.monotonic() < deadline:
            time.sleep(0.001)
        gates.engine.submit(lambda tx: gates.engine.graph.delete(tx, bad))
        gates.engine.submit(lambda tx: gates.engine.graph.retry(tx, batch))
        gates.events.setdefault("video", threading.Event()).set()
        while gates.finish_reports < before + 2 and time.monotonic() < deadline:
            time.sleep(0.001)
    assert gates.wait(lambda t: t["batch"]["status"] == "COMPLETED", timeout=5), gates.tasks["batch"]


def test_a_cancel_rolled_back_by_a_storage_error_does_not_end_the_task_after_the_grace(make_gates) -> None:
    from sidecar.errors import StorageError

    gates = make_gates(grace_s=0.3)
    gates.engine.submit(lambda tx: gates.engine.graph.create_many(tx, [
        {"type": "unit.gate", "details": {"gate": "x"}}])).result(10)
    assert gates.wait(lambda t: t.get("x", {}).get("status") == "RUNNING")
    task_id = gates.tasks["x"]["id"]
    with gates.engine._turn:  # the cancel shares its transaction with an op that fails
        cancel = gates.engine.submit(lambda tx: gates.engine.graph.cancel(tx, task_id))
        broken = gates.engine.submit(lambda tx: tx.conn.execute("SELECT * FROM no_such_table"))
    for answer in (cancel, broken):
        with pytest.raises(StorageError):
            answer.result(10)
    time.sleep(1.0)  # over three grace periods
    assert gates.status("x") == "RUNNING" and gates.engine.running(task_id) is not None
    gates.events["x"].set()
    assert gates.wait(lambda t: t["x"]["status"] == "COMPLETED")

def test_a_child_retried_after_its_parent_completed_is_recounted_in_the_parents_result(gates: Gates) -> None:
    # "Retry failed downloads" in a finished playlist (onChildFailure: continue): the playlist row's
    # counts follow the retried video (failed -> running -> completed), its status stays COMPLETED.
    gates.engine.submit(lambda tx: gates.engine.graph.create_many(tx, [
        {"type": "unit.gate", "details": {"gate": "list"}, "ref": "list", "onChildFailure": "continue"},
        {"type": "unit.fails_first", "details": {"gate": "flaky"}, "parentId": "list"},
        {"type": "unit.gate", "details": {"gate": "fine"}, "parentId": "list"},
    ])).result(10)
    for name in ("list", "flaky", "fine"):
        gates.events.setdefault(name, threading.Event()).set()
    assert gates.wait(lambda t: t.get("list", {}).get("status") == "COMPLETED"), gates.tasks
    assert gates.tasks["list"]["result"]["children"] == {"completed": 1, "failed": 1, "cancelled": 0}
    flaky = gates.tasks["flaky"]["id"]
    gates.engine.submit(lambda tx: gates.engine.graph.retry(tx, flaky)).result(10)
    assert gates.wait(lambda t: t["flaky"]["status"] == "COMPLETED"), gates.tasks
    assert gates.wait(lambda t: t["list"]["result"]["children"] == {"completed": 2, "failed": 0, "cancelled": 0})
    parent = gates.tasks["list"]
    assert parent["status"] == "COMPLETED" and parent["result"]["gate"] == "list"
    assert db_rows(models.database.database, "SELECT status, json_extract(result, '$.children.completed') "
                   "FROM tasks WHERE id = ?", parent["id"]) == [("COMPLETED", 2)]


def test_a_parent_slow_to_recompute_is_recomputed_less_often_than_every_tenth_of_a_second(
    gates: Gates, monkeypatch
) -> None:
    # A parent's progress is read from all its children: 24 ms for 75,000. Every 0.1 s, that is a
    # quarter of the engine thread, which every other write waits for.
    summaries: list[float] = []
    read_children = store.children_summary

    def slow_children_summary(conn, parent_id):
        summaries.append(time.monotonic())
        time.sleep(0.03)  # a parent of ~100,000 children
        return read_children(conn, parent_id)

    monkeypatch.setattr(store, "children_summary", slow_children_summary)
    gates.engine.submit(lambda tx: gates.engine.graph.create_many(tx, [
        {"type": "unit.gate", "details": {"gate": "batch"}, "ref": "batch"},
        {"type": "unit.ticker", "details": {"gate": "child"}, "parentId": "batch"},
    ])).result(10)
    assert gates.wait(lambda t: t.get("child", {}).get("progress", 0) > 0)
    time.sleep(2.0)  # the child reports 100 times a second; each report marks the parent
    during = list(summaries)
    gaps = [later - earlier for earlier, later in zip(during, during[1:])]
    assert len(gaps) >= 1, during
    assert min(gaps) >= 0.5, gaps  # 0.03 s / 5 % = 0.6 s apart (every ~0.13 s before)
    assert gates.wait(lambda t: t["batch"]["progress"] > 0)  # still recomputed


@pytest.fixture
def finished_thousand(tmp_path: Path, monkeypatch):
    """An engine over 1,000 tasks finished long ago, whose prune takes one statement of
    ``roots`` per step; yields the engine and the sizes of the ``task.deleted`` it announced."""

    def make(roots: int) -> tuple[Engine, list[int]]:
        monkeypatch.setattr("sidecar.domain.graph.PRUNE_STEP_BUDGET_S", 0.0)  # one statement per step
        monkeypatch.setattr("sidecar.domain.graph.PRUNE_ROOTS_PER_STATEMENT", roots)
        engine = Engine(models.new_connection, default_registry, announce=lambda tasks: None,
                        announce_deleted=lambda ids: deletions.append(len(ids)), concurrency=1)
        made.append(engine)
        engine.start()
        old = [{"type": "demo.noop", "runAt": 0} for _ in range(1000)]
        engine.submit(lambda tx: engine.graph.create_many(tx, old)).result(10)
        conn = models.new_connection()
        conn.execute("UPDATE tasks SET status = 'COMPLETED', completed_at = 1000")
        conn.commit()
        conn.close()
        return engine, deletions

    db = models.open_database(str(tmp_path / "prune.db"))
    migrations.upgrade(db)
    deletions: list[int] = []
    made: list[Engine] = []
    yield make
    for engine in made:
        engine.shutdown()
    db.close()


def test_a_big_prune_lets_other_writes_through_between_its_transactions(finished_thousand) -> None:
    # Deleting costs ~50 us a task in a year-old database: clearing 100,000 finished tasks in one
    # transaction held every progress report, claim and create for 5 s.
    engine, deletions = finished_thousand(roots=100)
    finished: list[str] = []
    pruned = engine.graph.prune_in_steps(60_000, ["COMPLETED"])
    pruned.add_done_callback(lambda f: finished.append("prune"))
    made = engine.submit(lambda tx: engine.graph.create_many(tx, [{"type": "demo.noop"}])[0])
    made.add_done_callback(lambda f: finished.append("create"))
    assert pruned.result(10) == {"deleted": 1000}
    new_id = made.result(10)["id"]
    assert finished == ["create", "prune"], "the create waited for the whole prune"
    assert sum(deletions) == 1000 and len(deletions) == 10  # announced step by step
    assert db_rows(models.database.database, "SELECT id FROM tasks") == [(new_id,)]


def test_a_stop_during_a_big_prune_answers_it_and_keeps_what_was_deleted(finished_thousand) -> None:
    engine, deletions = finished_thousand(roots=10)
    pruned = engine.graph.prune_in_steps(60_000, ["COMPLETED"])
    engine.shutdown()  # while the prune's 100 steps go on
    try:
        outcome = pruned.result(10)  # answered either way, never left hanging
    except ShuttingDown:
        outcome = "stopped"
    left = db_rows(models.database.database, "SELECT COUNT(*) FROM tasks")[0][0]
    assert left == 1000 - sum(deletions)  # every committed step was announced, nothing else went
    assert outcome == {"deleted": 1000} if left == 0 else outcome == "stopped"
