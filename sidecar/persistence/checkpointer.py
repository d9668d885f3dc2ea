"""Moves the WAL into the database file from a background thread.

SQLite's automatic checkpoint runs inside the commit that crosses 1,000 WAL pages and copied the
whole log there (~12 ms measured: a p99 spike on the engine's hot path). A thread with its own
connection runs PASSIVE checkpoints (they never block the writer) about once a second, so the
inline checkpoint — kept as the backstop that bounds the log under sustained writes — finds most
pages already copied; when the sidecar is idle it TRUNCATEs the -wal file.

It is also the one thread that notices the end of a burst of writes (a round in which the
database's ``data_version`` did not change), so it calls ``on_quiet`` once then: the server hands
back freed memory (:mod:`sidecar.memory`).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Checkpointer:
    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],  # a new connection, the checkpointer's to close
        interval_s: float = 1.0,
        on_quiet: Callable[[], object] = lambda: None,
    ) -> None:
        self._connect = connect
        self._interval_s = interval_s
        self._on_quiet = on_quiet
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="checkpointer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        conn = self._connect()
        # One cursor for the thread's life: each new one leaves a weak reference in the
        # connection, and those made during a burst of work are long-lived objects scattered
        # among its freed memory, which keep Python from returning the arenas around them.
        cursor = conn.cursor()
        try:
            self._rounds(cursor)
        finally:
            cursor.close()
            conn.close()

    def _rounds(self, cursor: sqlite3.Cursor) -> None:
        quiet_rounds = 0
        last_version = None
        while not self._stop.wait(self._interval_s):
            try:
                # data_version changes whenever another connection (the engine's) has committed
                version = cursor.execute("PRAGMA data_version").fetchone()[0]
                written, last_version = version != last_version, version
                busy, wal_pages, done = cursor.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                if written:
                    quiet_rounds = 0
                    continue
                quiet_rounds += 1
                if quiet_rounds == 1:  # the writes have stopped, at least for a moment
                    self._on_quiet()
                if quiet_rounds >= 5 and wal_pages and done == wal_pages:  # a while: shrink the file
                    cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:  # a full disk, a lock: try again next round
                log.debug("checkpoint skipped: %s", exc)
        try:
            cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            pass
