"""The engine in-process: slot accounting when a transaction is rolled back."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

import sidecar.handlers.builtin  # noqa: F401  (registers demo.noop)
from sidecar.domain.engine import Engine
from sidecar.errors import StorageError
from sidecar.handlers.registry import default_registry
from sidecar.persistence import migrations, models


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

    engine = Engine(models.database.connection, default_registry, announce=announce,
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
    row = sqlite3.connect(models.database.database).execute("SELECT COUNT(*) FROM tasks").fetchone()
    assert row == (2,)
