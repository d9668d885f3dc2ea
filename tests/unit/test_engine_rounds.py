"""Rounds: a transaction whose work was handlers finishing starts the next handlers before its
commit and writes what they report at once in the same transaction. Checked in-process, with a
real database: short tasks finish more than once per slot per transaction; a transaction rolled
back after it started handlers claims their tasks again, so none runs twice or is lost. And the
claim reads only the types that have QUEUED tasks, without missing one that gets some."""

from __future__ import annotations

import collections
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from sidecar.domain import engine as engine_module
from sidecar.domain.engine import Engine
from sidecar.handlers.registry import Registry
from sidecar.persistence import migrations, models
from tests.reliability.common import consistency_problems

SLOTS = 4


class Drain:
    """An engine with SLOTS slots and a no-op handler that counts its runs per task."""

    def __init__(self, tmp_path: Path) -> None:
        self.runs: collections.Counter[str] = collections.Counter()
        self.registry = Registry()
        self.registry.handler("unit.short")(self._short)
        self.registry.handler("unit.other")(self._short)
        self.registry.handler("unit.flaky", retry_base_s=0.01, retry_max_s=0.01)(self._flaky)
        self.batches: list[list[dict]] = []  # what each transaction announced
        self.status: dict[str, str] = {}
        self.changed = threading.Condition()
        self.path = tmp_path / "rounds.db"
        self.db = models.open_database(str(self.path))
        migrations.upgrade(self.db)
        self.engine = Engine(models.new_connection, self.registry, announce=self._announce,
                             announce_deleted=lambda ids: None, concurrency=SLOTS)
        self.engine.start()

    def _short(self, ctx) -> None:
        with self.changed:
            self.runs[ctx.id] += 1

    def _flaky(self, ctx) -> None:
        self._short(ctx)
        if ctx.attempt == 1:
            raise RuntimeError("fails once, then succeeds (its retry is QUEUED again)")

    def _announce(self, tasks: list[dict]) -> None:
        with self.changed:
            self.batches.append(tasks)
            self.status.update((t["id"], t["status"]) for t in tasks)
            self.changed.notify_all()

    def create(self, n: int, type: str = "unit.short", **fields) -> list[str]:
        items = [{"type": type, **fields} for _ in range(n)]
        tasks = self.engine.submit(lambda tx: self.engine.graph.create_many(tx, items)).result(10)
        return [t["id"] for t in tasks]

    def wait_completed(self, ids: list[str], timeout: float = 30) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: all(self.status.get(i) == "COMPLETED" for i in ids), timeout)

    def rows(self) -> list[tuple]:
        conn = sqlite3.connect(self.path)
        try:
            return conn.execute("SELECT id, status, attempt FROM tasks").fetchall()
        finally:
            conn.close()


@pytest.fixture
def drain(tmp_path: Path):
    d = Drain(tmp_path)
    yield d
    d.engine.shutdown()
    d.db.close()


def test_short_tasks_finish_more_than_once_per_slot_in_one_transaction(drain: Drain) -> None:
    ids = drain.create(400)
    assert drain.wait_completed(ids)
    most = max(sum(t["status"] == "COMPLETED" for t in batch) for batch in drain.batches)
    assert most > SLOTS, "no transaction completed more tasks than there are slots: no rounds were taken"
    # announced in order: each task RUNNING (once) before COMPLETED, versions increasing
    seen: dict[str, list[tuple[int, str]]] = collections.defaultdict(list)
    for batch in drain.batches:
        for task in batch:
            seen[task["id"]].append((task["version"], task["status"]))
    for task_id in ids:
        versions = [v for v, _ in seen[task_id]]
        assert versions == sorted(versions) and [s for _, s in seen[task_id]][-2:] == ["RUNNING", "COMPLETED"]
    assert drain.runs == {task_id: 1 for task_id in ids}
    assert all(status == "COMPLETED" and attempt == 1 for _, status, attempt in drain.rows())
    assert consistency_problems(drain.path) == []


def test_a_transaction_rolled_back_after_it_started_handlers_claims_their_tasks_again(
    drain: Drain, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = drain.engine
    claim = engine._claim
    failed: list[int] = []

    def claim_failing_once_in_a_round(tx):
        if tx.early and not failed:  # handlers of this transaction are running already
            failed.append(len(tx.early))
            raise sqlite3.OperationalError("disk I/O error (injected)")
        return claim(tx)

    monkeypatch.setattr(engine, "_claim", claim_failing_once_in_a_round)
    monkeypatch.setattr(engine_module, "STORAGE_RETRY_S", 0.05)
    ids = drain.create(400)
    assert drain.wait_completed(ids), collections.Counter(drain.status.values())
    assert failed, "no transaction took a round, so the failure was never injected"
    # every handler ran once: the rolled-back claims were written again before anything could
    # claim those tasks a second time, and the reports of the ones that had finished were kept
    assert drain.runs == {task_id: 1 for task_id in ids}
    assert all(status == "COMPLETED" and attempt == 1 for _, status, attempt in drain.rows())
    assert consistency_problems(drain.path) == []
    assert engine._reclaim == {} and engine._running == {}


def test_a_claim_reads_only_the_types_with_queued_tasks_and_misses_none(
    drain: Drain, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sidecar.persistence import store

    read: list[tuple[str, ...]] = []
    claim_many = store.claim_many

    def recording(conn, types, now, limit):
        read.append(tuple(types))
        return claim_many(conn, types, now, limit)

    monkeypatch.setattr(store, "claim_many", recording)
    ids = drain.create(200)
    assert drain.wait_completed(ids)
    assert read and all(types in ((), ("unit.short",)) for types in read), set(read)
    # tasks that become QUEUED later, by every way there is: a new type, a delayed task coming
    # due, a failed attempt queued again for its retry
    later = drain.create(20, "unit.other") + drain.create(5, "unit.short", runAt=int(time.time() * 1000) + 300)
    later += drain.create(10, "unit.flaky")
    assert drain.wait_completed(later)
    assert all(drain.runs[task_id] == (2 if task_id in later[-10:] else 1) for task_id in later)
    assert {t for types in read for t in types} == {"unit.short", "unit.other", "unit.flaky"}
    assert drain.engine._queued == {"unit.short": 0, "unit.other": 0, "unit.flaky": 0}
    assert consistency_problems(drain.path) == []
