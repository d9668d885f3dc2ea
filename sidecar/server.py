"""The sidecar process: wires transport, protocol, engine and store, and owns the lifecycle.

Start-up: guard stdio, take the database lock, open + migrate + recover, start the engine, announce
``sidecar.ready``, then serve lines until EOF, ``system.shutdown``, SIGTERM or the parent's death.
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import peewee
from filelock import FileLock, Timeout

from sidecar import PROTOCOL_VERSION, __version__
from sidecar.domain.engine import Engine
from sidecar.errors import INVALID_REQUEST
from sidecar.handlers import builtin as _builtin  # noqa: F401  (registers demo.*)
from sidecar.handlers import program_ledger
from sidecar.handlers.registry import AppOptions, HandlerLoadError, Registry, default_registry, load_modules
from sidecar.memory import pause_collection, release_free_memory
from sidecar.methods import build_methods
from sidecar.persistence import migrations, models, store
from sidecar.persistence.checkpointer import Checkpointer
from sidecar.protocol import Notifier, Protocol, error_response, unserializable, warm_up
from sidecar.transport import LineReader, StdioTransport, TooLong, Transport

log = logging.getLogger("sidecar")

INLINE_MAX_BYTES = 16 * 1024  # a lone request up to this size runs its transaction in the reader
EXIT_OK = 0
EXIT_LOCKED = 3
EXIT_DATABASE = 4
EXIT_HANDLERS = 5  # a --handlers module or file cannot be loaded


@dataclass
class Config:
    db_path: str
    handler_modules: list[str] = field(default_factory=list)
    concurrency: int = 4
    durability: str = "normal"
    max_message_bytes: int = 8 * 1024 * 1024
    grace_s: float = 5.0
    allow_dirs: list[str] = field(default_factory=list)
    allow_programs: dict[str, str] = field(default_factory=dict)
    allow_hosts: list[str] = field(default_factory=list)
    max_db_pages: int | None = None
    move_aside_corrupt: bool = False


def _is_corruption(exc: BaseException) -> bool:
    """A damaged or foreign file, as opposed to a locked, read-only or missing one."""
    text = str(exc).lower()
    return any(mark in text for mark in ("not a database", "malformed", "corrupt"))


class _Stop(Exception):
    """Raised in the reader thread by SIGTERM to leave a blocking read."""


class Sidecar:
    def __init__(self, config: Config, registry: Registry = default_registry) -> None:
        self.config = config
        self.db_path = os.path.abspath(config.db_path)
        self.registry = registry
        self.cursors = store.Cursors()
        self._stop_reason: str | None = None
        self._reading = False
        # Taken now, not once ready: a parent that dies during start-up must still be noticed.
        self._parent_pid = os.getppid()

    def read_conn(self) -> sqlite3.Connection:
        return models.database.connection()

    @property
    def stopping(self) -> bool:
        return self._stop_reason is not None

    def request_stop(self, reason: str) -> None:
        if self._stop_reason is None:
            self._stop_reason = reason

    def run(self) -> int:
        transport = StdioTransport(self.config.max_message_bytes, on_unencodable=unserializable)
        try:
            return self._run(transport)
        finally:
            transport.close()

    def _run(self, transport: Transport) -> int:
        # First: a SIGTERM during start-up (a slow handler import, a migration) is then a stop that
        # ends in exit 0 once start-up is done, not a death by the signal.
        if threading.current_thread() is threading.main_thread():
            self._install_signals(transport.reader)  # (a sidecar embedded in a thread, as the fuzzer runs it, has none)
        self.registry.options = AppOptions(
            allow_dirs=[os.path.realpath(d) for d in self.config.allow_dirs],
            allow_programs=dict(self.config.allow_programs),
            allow_hosts=list(self.config.allow_hosts),
        )
        try:
            load_modules(self.config.handler_modules)
        except HandlerLoadError as exc:
            # the traceback, when there is one, is the app's own module raising: the developer needs it
            log.error("%s", exc, exc_info=exc.__cause__)
            return EXIT_HANDLERS
        lock = FileLock(self.db_path + ".lock", mode=0o600)
        try:
            # Private to the user: tasks' details and results may name their files and URLs.
            os.makedirs(os.path.dirname(self.db_path) or ".", mode=0o700, exist_ok=True)
            lock.acquire(timeout=0)
        except Timeout:
            log.error(
                "another task-sidecar already uses %s (lock file %s.lock is held); refusing to start",
                self.db_path, self.db_path,
            )
            return EXIT_LOCKED
        except OSError as exc:
            log.error("cannot use database %s: %s (is the directory writable?)", self.db_path, exc)
            return EXIT_DATABASE
        try:
            # Before anything is requeued: a program a killed sidecar left running must not run
            # beside the copy its task's next attempt starts.
            program_ledger.use(self.db_path + "-programs")
            notifier = Notifier(transport.send, transport.send_many)
            self.engine = engine = Engine(
                models.new_connection,
                self.registry,
                announce=notifier.tasks_updated,
                announce_deleted=notifier.task_deleted,
                notify=notifier.notify,
                concurrency=self.config.concurrency,
                grace_s=self.config.grace_s,
                hold_output=transport.held(),
            )
            try:
                recovered = self._open_database(engine)
            except migrations.SchemaTooNew as exc:
                log.error("cannot open database %s: %s", self.db_path, exc)
                return EXIT_DATABASE
            except (sqlite3.DatabaseError, peewee.DatabaseError, OSError) as exc:
                if not _is_corruption(exc):
                    log.error("cannot open database %s: %s", self.db_path, exc)
                    return EXIT_DATABASE
                if not self.config.move_aside_corrupt:
                    log.error(
                        "cannot open database %s: %s. If the file is corrupt, start once with "
                        "--move-aside-corrupt-db to rename it (and its -wal/-shm files) to "
                        "%s.corrupt-<time> and begin with an empty database.",
                        self.db_path, exc, self.db_path,
                    )
                    return EXIT_DATABASE
                moved = self._move_aside(exc)
                recovered = self._open_database(engine)
                recovered["movedAside"] = moved
            protocol = Protocol(build_methods(self))
            # ready is the first line: announced before the engine may claim (and announce) work
            notifier.notify(
                "sidecar.ready",
                {
                    "version": __version__,
                    "protocolVersion": PROTOCOL_VERSION,
                    "pid": os.getpid(),
                    "dbPath": self.db_path,
                    "recovered": recovered,
                },
            )
            self.engine.start()
            checkpointer = Checkpointer(models.new_connection, on_quiet=self._on_quiet)
            checkpointer.start()
            threading.Thread(target=warm_up, args=(protocol, self.registry), name="warm-up", daemon=True).start()
            self._serve(transport, protocol)
            log.info("stopping (%s)", self._stop_reason or "stdin closed")
            self.engine.shutdown()
            checkpointer.stop()
            models.database.close()
            return EXIT_OK
        finally:
            lock.release()

    def _on_quiet(self) -> None:
        """The writes have stopped: hand back the memory the burst used (see sidecar.memory)."""
        self.engine.renew_connection()
        release_free_memory()

    def _move_aside(self, exc: Exception) -> str:
        models.database.close()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target = f"{self.db_path}.corrupt-{stamp}"
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(self.db_path + suffix):
                os.replace(self.db_path + suffix, target + suffix)
        log.error("database %s could not be opened (%s); moved it to %s and starting empty",
                  self.db_path, exc, target)
        return target

    def _open_database(self, engine: Engine) -> dict[str, Any]:
        """Open and migrate the database, then recover what a crash interrupted (the counts)."""
        if not os.path.exists(self.db_path):
            # Create it private: SQLite gives the -wal and -shm files the database file's mode.
            os.close(os.open(self.db_path, os.O_CREAT | os.O_WRONLY, 0o600))
        db = models.open_database(
            self.db_path, durability=self.config.durability, max_pages=self.config.max_db_pages
        )
        migrations.upgrade(db)
        self.cursors = store.Cursors(store.cursor_key(db.connection()))
        return engine.recover()

    def _serve(self, transport: Transport, protocol: Protocol) -> None:
        while self._serve_next(transport, protocol):
            pass

    def _serve_next(self, transport: Transport, protocol: Protocol) -> bool:
        """Read and handle one line; False at EOF or a stop. One call per line, so the last
        request (and what answers it) is not kept alive in this thread's locals while it waits
        for the next: that would pin the memory a burst used (see sidecar.memory)."""
        reader = transport.reader
        try:
            # a stop signal from here on raises _Stop (see _install_signals); one that came
            # before was seen by the check
            self._reading = True
            if self._stop_reason is not None:
                return False
            line = reader.read()
        except _Stop:
            return False
        finally:
            self._reading = False
        if line is None:
            return False
        if isinstance(line, TooLong):
            transport.send(
                error_response(
                    INVALID_REQUEST, "Invalid request",
                    f"message of {line.size} bytes exceeds the limit of {self.config.max_message_bytes}",
                )
            )
        elif len(line) > INLINE_MAX_BYTES:
            # a big request (a 5,000-task createMany) is committed by the engine thread while
            # this one goes on reading; no garbage collection until its answer is out (see
            # sidecar.memory)
            resume_collection = pause_collection()
            answered = False
            try:
                with self.engine.submits_held():
                    answered = protocol.handle(
                        line, lambda answer: transport.send(answer, on_written=resume_collection)
                    )
            finally:
                if not answered:  # a notification, or handle() failed: nothing to wait for
                    resume_collection()
        else:
            # a burst is group-committed by the engine thread; a lone request runs here when the
            # engine is idle
            with self.engine.submits_held(run_inline=not reader.has_more()):
                protocol.handle(line, transport.send)
        return True

    def _install_signals(self, reader: LineReader) -> None:
        def on_term(signum: int, frame: Any) -> None:
            self.request_stop(signal.Signals(signum).name)
            if self._reading:
                raise _Stop()

        signal.signal(signal.SIGTERM, on_term)
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, on_term)
        if os.name == "posix":
            wake_r, wake_w = os.pipe()
            os.set_blocking(wake_r, False)
            os.set_blocking(wake_w, False)
            signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
            reader.wake_fd = wake_r
        parent = self._parent_pid

        def watch_parent() -> None:
            # stdin EOF is the primary signal; this catches a parent that died holding our stdin open
            while self._stop_reason is None:
                time.sleep(1.0)
                if os.getppid() != parent:
                    log.warning("parent process %d is gone; stopping", parent)
                    os.kill(os.getpid(), signal.SIGTERM)
                    return

        if os.name == "posix":
            threading.Thread(target=watch_parent, name="parent-watch", daemon=True).start()
