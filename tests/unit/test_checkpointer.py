"""The checkpointer notices when writes stop (and only then) and keeps the -wal file bounded."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from sidecar.persistence import migrations, models
from sidecar.persistence.checkpointer import Checkpointer


def test_quiet_is_reported_once_after_writes_stop_and_the_log_is_truncated(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    db = models.open_database(str(path))
    migrations.upgrade(db)
    db.close()

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=wal")
        return conn

    quiet_at: list[float] = []
    checkpointer = Checkpointer(connect, interval_s=0.2, on_quiet=lambda: quiet_at.append(time.monotonic()))
    writer = connect()
    checkpointer.start()
    try:
        time.sleep(0.5)
        quiet_at.clear()  # whatever it thought of the start, from now on it sees writes
        writes_end = time.monotonic() + 1.0
        while time.monotonic() < writes_end:  # a write every 10 ms: no round of 200 ms is quiet
            writer.execute("INSERT INTO settings (key, value) VALUES (?, '1') ON CONFLICT (key) DO UPDATE "
                           "SET value = value + 1", ("n",))
            time.sleep(0.01)
        assert quiet_at == []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (path.with_name("c.db-wal").stat().st_size or not quiet_at):
            time.sleep(0.05)
        assert len(quiet_at) == 1 and quiet_at[0] >= writes_end
        assert path.with_name("c.db-wal").stat().st_size == 0  # truncated after five quiet rounds
    finally:
        checkpointer.stop()
        writer.close()


def test_the_connection_it_was_given_is_closed_when_it_stops(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    db = models.open_database(str(path))
    migrations.upgrade(db)
    db.close()
    made: list[sqlite3.Connection] = []

    def connect() -> sqlite3.Connection:
        made.append(sqlite3.connect(path, isolation_level=None, check_same_thread=False))
        return made[-1]

    checkpointer = Checkpointer(connect, interval_s=0.05)
    checkpointer.start()
    time.sleep(0.3)  # a few rounds, on the one connection
    checkpointer.stop()
    assert len(made) == 1
    try:
        made[0].execute("SELECT 1")
    except sqlite3.ProgrammingError as exc:
        assert "closed" in str(exc)
    else:
        raise AssertionError("the checkpointer left its connection open")
