"""Rounds: a transaction whose work was handlers finishing starts the next handlers before its
commit and writes what they report at once in the same transaction. Checked in-process, with a
real database: short tasks finish more than once per slot per transaction; a transaction rolled
back after it started handlers claims their tasks again, so none runs twice or is lost."""

from __future__ import annotations

import collections
import sqlite3
import threading
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

    def _announce(self, tasks: list[dict]) -> None:
        with self.changed:
            self.batches.append(tasks)
            self.status.update((t["id"], t["status"]) for t in tasks)
            self.changed.notify_all()

    def create(self, n: int) -> list[str]:
        items = [{"type": "unit.short"} for _ in range(n)]
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
