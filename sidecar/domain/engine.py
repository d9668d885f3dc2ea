"""The engine: the one writer of the database, and the scheduler that lives in it.

Why one writer: SQLite allows one writer at a time, and the hot path (create, claim, progress,
complete) is bound by per-transaction cost, not by SQL. So every change is an *op* — a function run
by the engine — and its thread group-commits every op that is waiting in one transaction
(one SAVEPOINT each, so one op's failure does not undo its neighbours), then resolves the callers'
futures, announces the changed tasks, and starts the handlers it claimed. Nothing is announced before
it is committed. When the transaction's work was handlers finishing, it starts the handlers it
claims before its commit and, while they report at once, takes further rounds (their reports, the
next claims) in the same transaction (:meth:`Engine._take_rounds`). When the engine is idle, a caller may run its own ops under the same lock
(:meth:`Engine.submits_held`): the single-writer rule holds, one thread wake-up is saved.

Handlers run in their own threads and talk back only by posting ops (progress, checkpoint, finish).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import math
import queue
import random
import sqlite3
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import orjson

from sidecar.domain.graph import Graph
from sidecar.domain.states import Status
from sidecar.domain.workers import WorkerPool
from sidecar.errors import InvalidParams, ShuttingDown, SidecarError, StorageError, UnknownTaskType
from sidecar.future import Future
from sidecar.handlers.context import TaskCancelled, TaskContext, TaskError, strongest_stop
from sidecar.handlers.registry import DetailsError, HandlerSpec, Registry
from sidecar.persistence import store
from sidecar.persistence.store import Task

log = logging.getLogger(__name__)

Op = Callable[["Tx"], Any]
MAX_BATCH = 2000
PROGRESS_INTERVAL_S = 0.1  # at most ~10 progress announcements per second per task
# A parent's progress is recomputed from all its children (~0.3 us each): every 0.1 s, that is 24 %
# of the engine thread for a parent of 75,000 children. Spaced out so that it takes at most this
# share: a playlist of 5,000 (2 ms) still every 0.1 s, 75,000 children every ~0.5 s.
AGGREGATE_SHARE = 0.05
AGGREGATE_MAX_INTERVAL_S = 1.0  # however big the parent (or a stall of the host), once a second
STORAGE_RETRY_S = 1.0
MAX_WAIT_S = 60.0
ROUND_WINDOW_S = 0.002  # how long a transaction may keep writing the reports of handlers it started
# how many handlers it may start before its commit: ~56 announcements, which still leave in one
# write from this thread (the transport gives bigger batches to its writer thread, one wake-up more)
ROUND_MAX_TASKS = 28


def now_ms() -> int:
    return time.time_ns() // 1_000_000


_ENDED = ("FAILED", "CANCELLED")


class Tx:
    """What an op may do besides SQL: announce changed tasks and defer in-memory effects."""

    __slots__ = (
        "conn", "now", "announced", "deleted", "after", "latest", "stopping", "dirty", "counts", "released",
        "started", "batching", "succeeded", "claimed", "early", "ended",
    )

    def __init__(self, conn: sqlite3.Connection, now: int) -> None:
        self.conn = conn
        self.now = now
        self.announced: list[Task] = []
        self.deleted: list[str] = []
        self.after: list[Callable[[], None]] = []
        self.latest: dict[str, Task] = {}  # the last announced state of each task in this transaction
        self.stopping: dict[str, str] = {}  # stops asked in this transaction (applied after commit)
        self.dirty: set[str] = set()  # parents whose aggregate progress must be recomputed
        self.counts: dict[tuple[str, str], int] = {}  # net status changes, for task_counts
        self.released: list[Running] = []  # slots freed in this transaction (given back on rollback)
        self.started: list[Running] = []  # slots taken by tasks started as they were inserted
        self.batching = False  # handlers' successes wait in ``succeeded`` to be written together
        self.succeeded: list[tuple[str, str, dict[str, Any]]] = []
        self.claimed: list[Running] = []  # slots taken by the claims of this transaction
        self.early: list[Running] = []  # of those, the ones whose handlers started before the commit
        self.ended: list[store.Row] = []  # rows moved to FAILED or CANCELLED (their types' end hooks)

    def count(self, type: str, status: str, delta: int) -> None:
        key = (type, status)
        self.counts[key] = self.counts.get(key, 0) + delta

    def moved(self, row: store.Row) -> None:
        """Account a row returned by store.transition (it carries the status it replaced)."""
        type_ = row[store.I_TYPE]
        self.count(type_, row[store.PREV_STATUS], -1)
        self.count(type_, row[2], +1)
        if row[2] in _ENDED:
            self.ended.append(row)

    def announce(self, row: store.Row, task: Task | None = None) -> Task:
        """Announce ``row`` after the commit (``task``: its Task, when the caller has it already)."""
        if task is None:
            task = store.task_from_row(row)
        self.announced.append(task)
        self.latest[task["id"]] = task
        if task["parentId"] is not None:
            self.dirty.add(task["parentId"])
        return task

    def mark(self) -> tuple[Any, ...]:
        return (len(self.announced), len(self.deleted), len(self.after), dict(self.counts), len(self.started),
                len(self.ended))

    def undo_to(self, mark: tuple[Any, ...]) -> list[Running]:
        """Forget what was done since ``mark``; returns the slots it had taken (to give back)."""
        del self.announced[mark[0] :], self.deleted[mark[1] :], self.after[mark[2] :], self.ended[mark[5] :]
        self.counts = mark[3]
        taken = self.started[mark[4] :]
        del self.started[mark[4] :]
        return taken


@dataclass
class Running:
    ctx: TaskContext
    spec: HandlerSpec
    last_progress: float = 0.0
    message_before_stop: str | None = None  # its last message before a stop's "cancelling"/"pausing"


@dataclass(order=True)
class _Timer:
    when: float
    seq: int
    op: Op = field(compare=False)


@dataclass
class _Item:
    op: Op
    future: Future[Any] | None  # None: posted by a handler; retried after a storage error
    finish: bool = False  # a handler's outcome: consecutive ones are written together


class _HeldSubmits:
    """The block of :meth:`Engine.submits_held`; its state is the thread's, so one serves all."""

    __slots__ = ("_engine", "_run_inline")

    def __init__(self, engine: Engine, run_inline: bool) -> None:
        self._engine = engine
        self._run_inline = run_inline

    def __enter__(self) -> None:
        self._engine._held.items = []

    def __exit__(self, *exc: object) -> None:
        engine = self._engine
        held: list[_Item] = engine._held.items
        engine._held.items = None
        if held and not (self._run_inline and engine._run_inline(held)):
            for item in held:
                engine._inbox.put(item)


_WAKE = _Item(lambda tx: None, None)  # posted only to make the engine thread recompute its wait


class Engine:
    def __init__(
        self,
        db_connect: Callable[[], sqlite3.Connection],  # a new connection, the engine's to close
        registry: Registry,
        *,
        announce: Callable[[list[Task]], None],
        announce_deleted: Callable[[list[str]], None],
        notify: Callable[[str, Any], None] = lambda method, params: None,
        concurrency: int = 4,
        grace_s: float = 5.0,
        hold_output: contextlib.AbstractContextManager[None] = contextlib.nullcontext(),  # re-entrant
    ) -> None:
        self._connect = db_connect
        self.registry = registry
        self.graph = Graph(self)
        self.queue = QueueSettings(concurrency)
        self._dirty_parents: set[str] = set()
        self._aggregate_scheduled = False
        self._aggregate_cost_s = 0.0  # what the last recomputation of parents' progress took
        self._announce = announce
        self._hold_output = hold_output
        self._wake_types: list[str] | None = None  # the next run_at to look up, after the commit
        self._announce_deleted = announce_deleted
        self._notify = notify
        self.grace_s = grace_s
        self._inbox: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        # Held by whichever thread runs a transaction or reads the engine's state: the engine thread,
        # or a caller running its own requests while the engine is idle (see submits_held).
        self._turn = threading.Lock()
        self._held = threading.local()
        # (classes, not contextlib.contextmanager: one is entered for every request)
        self._hold_inline = _HeldSubmits(self, True)
        self._hold_queued = _HeldSubmits(self, False)
        self._sleep_until = -math.inf  # when the engine thread will look again on its own
        self._timers: list[_Timer] = []
        self._timer_seq = itertools.count()
        self._running: dict[str, Running] = {}
        # handlers started by a transaction that was rolled back: claimed again by the next one
        self._reclaim: dict[str, Running] = {}
        # QUEUED tasks per type as committed (task_counts, kept by the same counts; a deleted task
        # is not subtracted, so it may over-count until reloaded): a claim reads only the types
        # that have some, not every registered type
        self._queued: dict[str, int] = {}
        self._claiming = True
        self._claim_needed = True
        self._wake_at_ms: int | None = None
        self._closing = False
        self._stopped = threading.Event()
        self._idle = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name="engine", daemon=True)
        self._workers = WorkerPool(0, self._execute)
        self._conn: sqlite3.Connection | None = None
        self.stats_loops = 0
        self.stats_items = 0

    # ------------------------------------------------------------ public, any thread

    def recover(self) -> dict[str, int]:
        """After a crash, before :meth:`start`: put the interrupted (RUNNING) tasks back to QUEUED,
        or end them FAILED when that was their last attempt (CANCELLED or PAUSED when the user had
        asked so and the handler had not stopped yet), and settle what waited on the ones that ended
        (their dependents, their parents, their own children) in the same transaction.

        Nothing of it is announced: it happens before ``sidecar.ready``, and a client reads the
        tasks once ready (the counts go in ``ready``'s ``recovered``).
        """
        conn = self._connect()
        try:
            tx = Tx(conn, now_ms())
            conn.execute("BEGIN IMMEDIATE")
            recovered = store.recover_interrupted(conn, tx.now)
            self.graph.ended_outside(tx, recovered.cancelled + recovered.failed)
            # Parents' aggregate progress, level by level: announcing a parent marks its own parent.
            while tx.dirty:
                self._dirty_parents, tx.dirty = tx.dirty, set()
                self._op_aggregate(tx)
            store.apply_counts(conn, tx.counts)
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.rollback()
            conn.close()  # the file may be moved aside next (a corrupt database)
            raise
        self._conn = conn
        self._run_end_hooks(tx.ended)
        counts = {
            "requeued": recovered.requeued, "failed": len(recovered.failed),
            "cancelled": len(recovered.cancelled), "paused": recovered.paused,
        }
        if any(counts.values()):
            log.info("recovered interrupted tasks: %s", counts)
        return counts

    def _run_end_hooks(self, rows: list[store.Row]) -> None:
        """After the commit: the clean-up of tasks that ended while their handler was not running."""
        for row in rows:
            task_id = row[0]
            if task_id in self._running:
                continue  # its handler is still stopping and cleans up after itself
            spec = self.registry.get(row[store.I_TYPE])
            if spec is None or spec.on_end is None:
                continue
            try:
                spec.on_end(task_id, orjson.loads(row[store.I_DETAILS]), self.registry.options)
            except Exception:  # the app's hook: say so, keep serving
                log.warning("end hook of %s for task %s failed:\n%s", spec.type, task_id, traceback.format_exc())

    def start(self) -> None:
        # settings first, in the caller's thread: queue.status may be answered before the loop runs
        conn = self._conn or self._connect()
        self.queue.load(conn)
        self._queued = store.queued_by_type(conn)
        self._conn = conn
        self._workers.resize(self.queue.concurrency)
        self._thread.start()

    def renew_connection(self) -> None:
        """Swap the engine's connection for a new one; called when the sidecar has gone quiet.

        A connection keeps what a burst made it allocate — its page cache, compiled statements,
        weak references to the cursors it made — and those few long-lived blocks, scattered among
        the burst's freed memory, keep Python and malloc from returning the pages around them
        (after 100,000 tasks: 2.8 of the 11 MB the sidecar had grown by). The new connection reads
        the schema here, so the next request does not pay for it.
        """
        fresh = self._connect()
        try:
            fresh.execute('SELECT 1 FROM "tasks" LIMIT 0')
        except sqlite3.Error as exc:  # keep the connection that works
            log.debug("connection not renewed: %s", exc)
            fresh.close()
            return
        with self._turn:
            if self._conn is None:  # stopped
                old = fresh
            else:
                old, self._conn = self._conn, fresh
                try:  # forget what deletes left over-counted
                    self._queued = store.queued_by_type(fresh)
                except sqlite3.Error as exc:
                    log.debug("queued counts not reloaded: %s", exc)
        old.close()

    def submit(self, op: Op) -> Future[Any]:
        """Run ``op`` in the engine's next transaction; the future resolves after the commit."""
        if self._closing:
            raise ShuttingDown()
        future: Future[Any] = Future()
        item = _Item(op, future)
        held: list[_Item] | None = getattr(self._held, "items", None)
        if held is not None:
            held.append(item)
        else:
            self._inbox.put(item)
        return future

    def submits_held(self, run_inline: bool = False) -> contextlib.AbstractContextManager[None]:
        """Ops this thread submits inside the block reach the engine when the block ends.

        The reader wraps every request in it: the protocol attaches the response to an op's
        future after submitting the op, and the engine answers and announces a transaction
        together, answers first (see _run). An op the engine committed before the response was
        attached would have its answer written after its announcements. Nothing inside the
        block may wait for one of its own futures.

        With ``run_inline`` (a lone request), the ops are run by this thread when the engine is
        idle: the request's commit, response and RUNNING notification then happen without
        waking the engine thread (on a shared VM each wake-up costs 0.1 ms or more). If the
        engine is busy, they go to its inbox as usual.
        """
        return self._hold_inline if run_inline else self._hold_queued

    def _run_inline(self, items: list[_Item]) -> bool:
        if self._conn is None or not self._inbox.empty() or not self._turn.acquire(blocking=False):
            return False
        try:
            try:
                self._run(self._next_items(items))
            except Exception:  # a bug: as in the engine's loop, say it loudly and keep serving
                log.critical("engine error (inline):\n%s", traceback.format_exc())
            timeout = self._timeout()
            wake = timeout is not None and time.monotonic() + timeout < self._sleep_until
        finally:
            self._turn.release()
        if wake:  # a timer or claim the engine thread, asleep, does not know of yet
            self._inbox.put(_WAKE)
        return True

    def post(self, op: Op) -> None:
        self._inbox.put(_Item(op, None))

    @property
    def concurrency(self) -> int:
        return self.queue.concurrency

    # ------------------------------------------------------------ for the graph (engine thread)

    def running(self, task_id: str) -> Running | None:
        return self._running.get(task_id)

    def wake(self) -> None:
        """Something may have become claimable: look at the queue after this transaction."""
        self._claim_needed = True

    def abandon_later(self, ctx: TaskContext) -> None:
        self._add_timer(self.grace_s, partial(self._op_abandon, ctx))

    def shutdown(self) -> None:
        """Stop claiming, signal running handlers, wait the grace period, requeue what is left."""
        if self._closing:
            return
        self.submit(self._op_begin_shutdown).result()
        self._closing = True
        deadline = time.monotonic() + self.grace_s
        with self._idle:
            while self._running and time.monotonic() < deadline:
                self._idle.wait(timeout=max(0.0, deadline - time.monotonic()))
        future: Future[Any] = Future()
        self._inbox.put(_Item(self._op_requeue_running, future))
        future.result()
        self._inbox.put(_Item(self._op_stop, None))
        self._stopped.wait()
        self._thread.join(timeout=5)
        log.debug("engine: %d transactions, %d ops", self.stats_loops, self.stats_items)

    # ------------------------------------------------------------ the loop

    def _loop(self) -> None:
        try:
            while not self._stopped.is_set():
                try:
                    self._run_next()
                except Exception:  # a bug: say it loudly, but keep serving
                    log.critical("engine loop error:\n%s", traceback.format_exc())
                    time.sleep(0.1)
        finally:
            with self._turn:
                conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()
            self._stopped.set()

    def _run_next(self) -> None:
        """Wait for work, then run one transaction. A call of its own so that nothing of the last
        transaction stays referenced from this thread while it waits: a burst's last report, kept
        alive, would pin the memory the burst used (pymalloc hands back whole arenas only)."""
        first = self._wait()
        with self._turn:
            self._run(self._next_items([] if first is None else [first]), rounds=True)

    def _timeout(self) -> float | None:
        when: list[float] = []
        if self._timers:
            when.append(self._timers[0].when - time.monotonic())
        if self._claiming and len(self._running) < self.queue.concurrency:
            if self._claim_needed:
                return 0.0
            if self._wake_at_ms is not None:
                when.append((self._wake_at_ms - now_ms()) / 1000.0)
        if not when:
            return None
        # capped: a runAt centuries ahead must not overflow the wait (and clocks do jump)
        return min(MAX_WAIT_S, max(0.0, min(when)))

    def _wait(self) -> _Item | None:
        """Block (without the lock) until something arrives or the next timer, claim or wake-up is due."""
        with self._turn:
            timeout = self._timeout()
            self._sleep_until = math.inf if timeout is None else time.monotonic() + timeout
        try:
            if timeout is None:
                return self._inbox.get()
            if timeout > 0:
                return self._inbox.get(timeout=timeout)
            return None
        except queue.Empty:
            return None
        finally:
            self._sleep_until = -math.inf  # awake: it will look at everything before sleeping again

    def _next_items(self, first: list[_Item]) -> list[_Item]:
        items = [item for item in first if item is not _WAKE]
        if items and self._inbox.empty() and len(self._running) > 1:
            # Other handlers are about to report too: give them the GIL once, so their reports
            # share this transaction (group commit) instead of each paying for its own.
            time.sleep(0)
        while len(items) < MAX_BATCH:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                break
            if item is not _WAKE:
                items.append(item)
        mono = time.monotonic()
        while self._timers and self._timers[0].when <= mono:
            items.append(_Item(heapq.heappop(self._timers).op, None))
        if self._wake_at_ms is not None and self._wake_at_ms <= now_ms():
            self._wake_at_ms = None
            self._claim_needed = True
        return items

    def _run(self, items: list[_Item], batch: bool = True, rounds: bool = False) -> None:
        conn = self._conn
        assert conn is not None
        claim = self._claiming and self._claim_needed and len(self._running) < self.queue.concurrency
        if not items and not claim and not self._reclaim:
            return
        tx = Tx(conn, now_ms())
        self.stats_loops += 1
        self.stats_items += len(items)
        outcomes: list[tuple[_Item, bool, Any]] = []
        claimed: list[Running] = []
        reclaimed = dict(self._reclaim)
        try:
            conn.execute("BEGIN IMMEDIATE")
            if reclaimed:
                self._reclaim_running(tx, reclaimed)
            # A request alone in its transaction needs no savepoint: if it is refused, the whole
            # transaction is rolled back and begun again (two statements saved on the idle path).
            # Not so when claims are written again above: they must not be rolled back with it.
            if not self._apply(tx, items, 0, outcomes, len(items) == 1 and not reclaimed, batch):
                return
            fresh: list[Running] = []
            if self._claiming and (self._claim_needed or claim):
                fresh = self._claim(tx)
                if rounds and fresh and any(item.finish for item in items):
                    if not self._take_rounds(tx, fresh, items, outcomes):
                        return
                    fresh = []  # all started already
            claimed = tx.started + fresh
            store.apply_counts(conn, tx.counts)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._restore(tx)
            self._storage_failure(conn, items, exc)
            return
        for task_id in reclaimed:
            self._reclaim.pop(task_id, None)
        for (type_, status), delta in tx.counts.items():
            if status == "QUEUED" and delta:
                self._queued[type_] = self._queued.get(type_, 0) + delta
        if tx.released:
            with self._idle:
                self._idle.notify_all()
        if tx.dirty:
            self._dirty_parents |= tx.dirty
            if not self._aggregate_scheduled:
                self._aggregate_scheduled = True
                spaced = min(AGGREGATE_MAX_INTERVAL_S, self._aggregate_cost_s / AGGREGATE_SHARE)
                self._add_timer(max(PROGRESS_INTERVAL_S, spaced), self._op_aggregate)
        if tx.ended:  # before the announcements: a client told CANCELLED finds the clean-up done
            self._run_end_hooks(tx.ended)
        # Answers first: a caller of a 5,000-task createMany should not wait behind 5,000
        # announcements (both are after the commit; versions order them for a cache). All of it
        # leaves in one write.
        with self._hold_output:
            for item, ok, value in outcomes:
                if item.future is not None:
                    if ok:
                        item.future.set_result(value)
                    else:
                        item.future.set_exception(value)
            if tx.announced:
                self._announce(tx.announced)
            if tx.deleted:
                self._announce_deleted(tx.deleted)
        for effect in tx.after:
            effect()
        if claimed:
            self._start_handlers(claimed)
        if self._wake_types is not None:
            # When the next delayed task is due: not needed for what was just announced, so
            # looked up after it left (a read outside the transaction; this thread is the writer).
            types, self._wake_types = self._wake_types, None
            try:
                self._wake_at_ms = store.next_run_at(conn, types, now_ms())
            except sqlite3.Error as exc:  # look again soon rather than never
                log.error("storage error looking up the next run_at: %s", exc)
                self._wake_at_ms = now_ms() + int(STORAGE_RETRY_S * 1000)

    def _apply(
        self, tx: Tx, items: list[_Item], start: int, outcomes: list[tuple[_Item, bool, Any]], alone: bool,
        batch: bool,
    ) -> bool:
        """Run ``items[start:]`` in ``tx``. False when the transaction was rolled back and run again
        (a bug in an op, dropped then): the caller must stop."""
        conn = tx.conn
        for index in range(start, len(items)):
            item = items[index]
            if tx.succeeded and not item.finish and not self._write_succeeded(tx, items):
                return False
            tx.batching = batch and item.finish
            if item.future is None:
                # A handler's report cannot be refused, so it needs no savepoint (two statements
                # saved per op on the hot path). If one fails anyway it is a bug: the whole
                # transaction is rolled back and redone without it.
                try:
                    item.op(tx)
                except sqlite3.Error:
                    raise
                except Exception:
                    log.error("internal op failed, dropped:\n%s", traceback.format_exc())
                    self._redo(tx, items[:index] + items[index + 1 :], batch)
                    return False
                continue
            mark = tx.mark()
            if not alone:
                conn.execute("SAVEPOINT op")
            try:
                value = item.op(tx)
            except sqlite3.Error:
                raise
            except Exception as exc:  # the op refused (SidecarError) or has a bug
                if alone:
                    conn.execute("ROLLBACK")
                    conn.execute("BEGIN IMMEDIATE")
                else:
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                for running in tx.undo_to(mark):
                    self._running.pop(running.ctx.id, None)
                if not isinstance(exc, SidecarError):
                    log.error("op failed:\n%s", traceback.format_exc())
                outcomes.append((item, False, exc))
                continue
            if not alone:
                conn.execute("RELEASE op")
            outcomes.append((item, True, value))
        tx.batching = False
        return not tx.succeeded or self._write_succeeded(tx, items)

    def _take_rounds(
        self, tx: Tx, fresh: list[Running], items: list[_Item], outcomes: list[tuple[_Item, bool, Any]]
    ) -> bool:
        """Start the handlers of ``fresh`` before the commit, and while they report at once, write
        their reports and the next claims in the same transaction. The reports it runs are added
        to ``items`` (for a retry if the commit fails); False when the transaction was rolled back
        and run again (see _apply).

        Taken only when this transaction's work was handlers finishing: short tasks then finish
        several times per transaction instead of once per slot, and the commit, the counters,
        the announcement's write and the engine's wait are paid once for all of them (the fixed
        cost of a transaction was ~250 µs against ~35 µs per task). A handler so started runs
        up to ROUND_WINDOW_S before its RUNNING is committed; a crash in between leaves the task
        QUEUED and it runs again, as one interrupted while RUNNING does. If the transaction is
        rolled back, the handlers keep running and their claims are written again first thing in
        the next transaction (see _restore), so no task is claimed twice.
        """
        deadline = time.monotonic() + ROUND_WINDOW_S
        last = False
        while fresh:
            self._start_handlers(fresh)
            tx.early += fresh
            if last or len(tx.early) >= ROUND_MAX_TASKS or time.monotonic() >= deadline:
                break
            time.sleep(0)  # let the handlers just started run; short ones report before it returns
            start = len(items)
            items += self._inbox_now()
            if len(items) == start:
                break
            self.stats_items += len(items) - start
            # The successes are written before the claim, not once after the last round (a
            # statement less per round, ~1 %): announced in that order, a task's COMPLETED comes
            # before the RUNNING of the task that took its slot, as a client counting slots expects.
            if not self._apply(tx, items, start, outcomes, False, True):
                return False
            # A request waits for the commit (its answer, and a task it created that this round's
            # claim starts): this round is the last.
            last = any(item.future is not None for item in items[start:])
            fresh = self._claim(tx) if self._claiming and self._claim_needed else []
        return True

    def _inbox_now(self) -> list[_Item]:
        """What waits in the inbox now, without waiting (at most MAX_BATCH items, as a
        transaction's first batch)."""
        waiting: list[_Item] = []
        while len(waiting) < MAX_BATCH:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return waiting
            if item is not _WAKE:
                waiting.append(item)
        return waiting

    def _reclaim_running(self, tx: Tx, reclaimed: dict[str, Running]) -> None:
        """Claim again the tasks whose handlers a rolled-back transaction had started (they run
        still, or their reports wait to be written again)."""
        rows = store.claim_by_id(tx.conn, list(reclaimed), tx.now)
        for row in rows:
            task = tx.announce(row)
            tx.count(task["type"], "QUEUED", -1)
            tx.count(task["type"], "RUNNING", +1)
        if len(rows) < len(reclaimed):  # not QUEUED any more (changed by another program?)
            log.warning("%d running tasks could not be claimed again", len(reclaimed) - len(rows))

    def _write_succeeded(self, tx: Tx, items: list[_Item]) -> bool:
        """Write the successes that consecutive finish reports left in ``tx.succeeded``. On a bug,
        roll back and run the transaction again with each report written on its own (so the one
        that fails is found and dropped, as any failing report is); False then."""
        try:
            self._write_succeeded_now(tx)
        except sqlite3.Error:
            raise
        except Exception:
            log.error("writing finished tasks failed, retrying one by one:\n%s", traceback.format_exc())
            self._redo(tx, items, batch=False)
            return False
        return True

    def _redo(self, tx: Tx, items: list[_Item], batch: bool) -> None:
        """Roll ``tx`` back (a bug in an op) and run ``items`` again in a new transaction."""
        tx.conn.execute("ROLLBACK")
        self._restore(tx)
        self._run(items, batch)

    def _write_succeeded_now(self, tx: Tx) -> None:
        if tx.succeeded:
            succeeded, tx.succeeded = tx.succeeded, []
            self.graph.handlers_succeeded(tx, succeeded)

    def _restore(self, tx: Tx) -> None:
        """Undo a rolled-back transaction's slot changes: give back the slots it had freed, take
        back those it had taken for tasks it inserted or claimed (their rows are as they were),
        except for handlers it had started already: they keep their slots, and the next
        transaction claims their tasks again before anything else."""
        for running in tx.released:
            self._running.setdefault(running.ctx.id, running)
        for running in tx.started:
            self._running.pop(running.ctx.id, None)
        early = {id(running) for running in tx.early}
        for running in tx.claimed:
            if id(running) in early:  # running still, or its reports will be written again
                self._reclaim[running.ctx.id] = running
            else:
                self._running.pop(running.ctx.id, None)

    def _storage_failure(self, conn: sqlite3.Connection, items: list[_Item], exc: sqlite3.Error) -> None:
        log.error("storage error, transaction rolled back: %s", exc)
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        error = StorageError(str(exc))
        for item in items:
            if item.future is not None:
                item.future.set_exception(error)
            else:  # a handler's report (finish, progress): never drop it, try again
                self._add_timer(STORAGE_RETRY_S, item.op)
        self._claim_needed = True
        self._add_timer(STORAGE_RETRY_S, lambda tx: None)  # wake to retry claiming later

    def _add_timer(self, delay_s: float, op: Op) -> None:
        heapq.heappush(self._timers, _Timer(time.monotonic() + delay_s, next(self._timer_seq), op))

    # ------------------------------------------------------------ scheduling

    def _eligible_types(self, free: int, queued_in: Tx | None = None) -> tuple[list[str], int]:
        """The types that may start now, and how many tasks one claim may take without passing a
        per-type limit (a type with fewer slots left than ``free`` lowers it). With ``queued_in``,
        only the types that have QUEUED tasks once that transaction commits."""
        if self.queue.paused:
            return [], 0
        counts: dict[str, int] = {}
        for running in self._running.values():
            counts[running.spec.type] = counts.get(running.spec.type, 0) + 1
        eligible = []
        batch = free
        queued = self._queued
        pending = queued_in.counts if queued_in is not None else None
        for spec in self.registry:
            if spec.type in self.queue.paused_types:
                continue
            if pending is not None and queued.get(spec.type, 0) + pending.get((spec.type, "QUEUED"), 0) <= 0:
                continue
            limit = self.queue.type_limits.get(spec.type, spec.concurrency)
            running = counts.get(spec.type, 0)
            if limit is None or running < limit:
                eligible.append(spec.type)
                if limit is not None:
                    batch = min(batch, limit - running)
        return eligible, batch

    def _claim(self, tx: Tx) -> list[Running]:
        claimed: list[Running] = []
        self._claim_needed = False
        while len(self._running) < self.queue.concurrency:
            types, batch = self._eligible_types(self.queue.concurrency - len(self._running), tx)
            rows = store.claim_many(tx.conn, types, tx.now, batch)
            for row in rows:
                claimed.append(self._started(tx, row))
            if len(rows) < batch or not types:
                self._wake_types = types  # looked up once the commit is announced
                break
        else:
            self._claim_needed = True  # slots ran out; look again when one frees
        return claimed

    def _started(self, tx: Tx, row: store.Row) -> Running:
        """Account and announce a claimed row (followed by its checkpoint); give it a slot."""
        checkpoint = row[-1]
        task = tx.announce(row[:-1])
        running = self._take_slot(tx, task, store.orjson.loads(checkpoint) if checkpoint is not None else None)
        tx.claimed.append(running)
        return running

    def may_start_on_insert(self, tx: Tx, type: str) -> bool:
        """Whether a task of ``type`` inserted QUEUED and due now may take a slot in the same write.

        True only when the claim that would follow could pick nothing else: claiming is on, a
        slot is free for the type, and nothing else is due (no claim pending, no delayed task
        come due). Then the insert writes the task as RUNNING — the row the claim's UPDATE would
        have made — and an idle queue starts a new task with one statement instead of two.
        """
        if not self._claiming or self._claim_needed or self._wake_types is not None:
            return False
        if self._wake_at_ms is not None and self._wake_at_ms <= tx.now:
            return False
        free = self.queue.concurrency - len(self._running)
        if free <= 0:
            return False
        types, batch = self._eligible_types(free)
        return batch > 0 and type in types

    def started_on_insert(self, tx: Tx, row: store.Row, task: Task) -> None:
        """Account, announce and give a slot to a task inserted RUNNING (see may_start_on_insert);
        its handler starts after the commit."""
        tx.announce(row, task)
        tx.started.append(self._take_slot(tx, task, None))

    def _take_slot(self, tx: Tx, task: Task, state: Any) -> Running:
        tx.count(task["type"], "QUEUED", -1)
        tx.count(task["type"], "RUNNING", +1)
        spec = self.registry.get(task["type"])
        assert spec is not None
        ctx = TaskContext(
            task_id=task["id"],
            type=task["type"],
            details=task["details"],
            attempt=task["attempt"],
            max_attempts=task["maxAttempts"],
            state=state,
            on_progress=self._on_progress,
            on_checkpoint=self._on_checkpoint,
            on_spawn=self._on_spawn,
        )
        ctx.options = self.registry.options
        running = Running(ctx, spec)
        self._running[ctx.id] = running
        return running

    def _start_handlers(self, claimed: list[Running]) -> None:
        for running in claimed:
            spec = running.spec
            if spec.timeout_s:
                self._add_timer(spec.timeout_s, partial(self._op_timeout, running.ctx))
        self._workers.submit_many(claimed)

    def _execute(self, running: Running) -> None:
        ctx = running.ctx
        outcome: tuple[Any, ...]
        try:
            result = running.spec.fn(ctx)
            # Read once it returned: a stop asked after this did not reach the handler.
            outcome = ("ok", result, ctx.stop_reason)
        except TaskCancelled:
            outcome = ("stopped",)
        except TaskError as exc:
            outcome = ("error", str(exc) or type(exc).__name__, exc.retryable)
        except Exception as exc:
            log.info("task %s (%s) raised:\n%s", ctx.id, ctx.type, traceback.format_exc())
            outcome = ("error", f"{type(exc).__name__}: {exc}", True)
        self._inbox.put(_Item(partial(self._op_finish, ctx, outcome), None, finish=True))

    def _backoff_ms(self, spec: HandlerSpec, attempt: int) -> int:
        delay = min(spec.retry_max_s, spec.retry_base_s * (2 ** max(0, attempt - 1)))
        return int(delay * random.uniform(0.8, 1.2) * 1000)

    # ------------------------------------------------------------ handler reports (ops)

    def _on_progress(self, ctx: TaskContext) -> None:
        self.post(partial(self._op_progress, ctx))

    def _on_checkpoint(self, ctx: TaskContext, state: Any) -> None:
        self.post(partial(self._op_checkpoint, ctx, store.dumps(state)))

    def _on_spawn(self, ctx: TaskContext, items: list[dict[str, Any]]) -> list[Task]:
        """Runs in the handler's thread: validate like tasks.createMany, then wait for the commit."""
        for i, item in enumerate(items):
            self.check_create(item, f"spawn[{i}].")
        return self.submit(partial(self._op_spawn, ctx, items)).result()

    def _op_spawn(self, ctx: TaskContext, items: list[dict[str, Any]], tx: Tx) -> list[Task]:
        if self._current(ctx) is None or ctx.abandoned:
            raise TaskCancelled("the task is no longer running")
        tasks = self.graph.create_many(tx, items)
        _, progress = store.children_summary(tx.conn, ctx.id)  # the parent's new progress, same commit
        if progress is not None:
            row = store.set_aggregate_progress(tx.conn, ctx.id, progress, tx.now)
            if row is not None:
                tx.announce(row)
        return tasks

    def check_create(self, item: dict[str, Any], prefix: str = "") -> None:
        """What tasks.create checks before anything reaches the store: the type and its details."""
        spec = self.registry.get(item.get("type", ""))
        if spec is None:
            raise UnknownTaskType(str(item.get("type")), f"{prefix}type")
        details = item.get("details", {})
        if spec.validator is not None:
            spec.validator.check(details, f"{prefix}details")
        if spec.check_details is not None:
            try:
                spec.check_details(details, self.registry.options)
            except DetailsError as exc:
                raise InvalidParams(f"{prefix}details.{exc.field}", exc.reason) from None

    def _current(self, ctx: TaskContext) -> Running | None:
        running = self._running.get(ctx.id)
        return running if running is not None and running.ctx is ctx else None

    def _op_progress(self, ctx: TaskContext, tx: Tx) -> None:
        running = self._current(ctx)
        if running is None or ctx.abandoned:
            ctx.take_progress()
            return
        wait = running.last_progress + PROGRESS_INTERVAL_S - time.monotonic()
        if wait > 0:  # coalesce: come back when the interval is over, write the latest then
            self._add_timer(wait, partial(self._op_progress, ctx))
            return
        pending = ctx.take_progress()
        if pending is None:
            return
        if store.has_children(tx.conn, ctx.id):  # a parent's progress is its children's aggregate
            row = store.set_message(tx.conn, ctx.id, pending[1], tx.now)
        else:
            row = store.set_progress(tx.conn, ctx.id, pending[0], pending[1], tx.now)
        if row is not None:
            running.last_progress = time.monotonic()
            tx.announce(row)

    def _op_aggregate(self, tx: Tx) -> None:
        """Recompute the progress of parents whose children moved (coalesced like any progress),
        and the children's counts in the result of a COMPLETED one."""
        self._aggregate_scheduled = False
        dirty, self._dirty_parents = self._dirty_parents, set()
        started = time.monotonic()
        for parent_id in dirty:
            counts, progress = store.children_summary(tx.conn, parent_id)
            if progress is None:
                continue
            row = store.set_aggregate_progress(tx.conn, parent_id, progress, tx.now)
            if row is not None:
                tx.announce(row)
            else:  # unchanged, or finished: a COMPLETED parent whose child was retried
                self.graph.recount_completed(tx, parent_id, counts)
        self._aggregate_cost_s = time.monotonic() - started

    def _op_checkpoint(self, ctx: TaskContext, state_json: str, tx: Tx) -> None:
        if self._current(ctx) is not None and not ctx.abandoned:
            store.set_checkpoint(tx.conn, ctx.id, state_json)

    def _op_timeout(self, ctx: TaskContext, tx: Tx) -> None:
        if self._current(ctx) is not None:
            ctx.request_stop("timeout")
            self.abandon_later(ctx)

    def _op_abandon(self, ctx: TaskContext, tx: Tx) -> None:
        """A handler that ignored its stop signal for the grace period: free its slot."""
        running = self._current(ctx)
        if running is None or ctx.stop_reason is None:
            return  # finished already, or the stop that set this timer was rolled back
        log.warning("task %s did not stop within %.1fs of %s; abandoning it", ctx.id, self.grace_s, ctx.stop_reason)
        self._op_finish(ctx, ("stopped",), tx)
        ctx.abandoned = True
        tx.after.append(partial(self._workers.replace, running))

    def _op_finish(self, ctx: TaskContext, outcome: tuple[Any, ...], tx: Tx) -> None:
        running = self._current(ctx)
        if running is None or ctx.abandoned:
            return
        # Free the slot now, so this transaction's claim can fill it (one commit for both).
        del self._running[ctx.id]
        tx.released.append(running)
        self.wake()
        # Every write below is guarded by the state machine: if the task was already decided
        # (e.g. failed by a failing child), nothing is written.
        spec = running.spec
        pending = ctx.take_progress()
        extra: dict[str, Any] = {} if pending is None else {"progress": pending[0], "message": pending[1]}
        kind = outcome[0]
        result_json: str | None = None
        if kind == "ok":
            try:
                result_json = store.dumps(outcome[1])
            except TypeError as exc:
                kind, outcome = "error", ("error", f"result is not JSON: {exc}", False)
        # A stop asked earlier in this same transaction reaches the handler only after the commit,
        # but it came first: it decides (a parent's cancel must not be outrun by its child's report).
        reason = strongest_stop(tx.stopping.get(ctx.id), ctx.stop_reason) if tx.stopping else ctx.stop_reason
        if pending is None and reason is not None:  # not left saying "cancelling" once it has ended
            extra.update(self.graph.message_after_stop(tx, ctx.id, running))
        if reason is not None and kind == "ok" and outcome[2] is None and not store.has_children(tx.conn, ctx.id):
            # Its handler had returned before any stop reached it: the work is done (a download's
            # file is in place), so it completes. A task with children keeps the stop: it would
            # wait for children that the same stop is cancelling.
            tx.stopping.pop(ctx.id, None)
            reason = None
        if reason == "cancel" or (kind != "ok" and reason is not None):
            kind = "stopped"  # a handler failing because it was asked to stop has stopped
        if kind == "ok":
            if pending is not None:
                extra = {"message": pending[1]}
            tx.succeeded.append((ctx.id, result_json, extra))
            if not tx.batching:
                self._write_succeeded_now(tx)
            return
        self._write_succeeded_now(tx)  # what finished before this report is written before it
        if kind == "stopped":
            if reason == "timeout":
                kind, outcome = "error", ("error", f"timed out after {spec.timeout_s:g}s", True)
            # A run the user paused or the sidecar's own shutdown stopped gives its attempt back:
            # quitting the app or pausing a download must not use up its retries. (A run cut short
            # by a crash still counts: it may be the task that crashes the sidecar.)
            elif reason == "shutdown":
                # keeps its run_at: its place in the queue
                self.graph.move(tx, ctx.id, Status.QUEUED, attempt=ctx.attempt - 1, **extra)
                return
            elif reason == "pause":
                if self.graph.move(tx, ctx.id, Status.PAUSED, attempt=ctx.attempt - 1, **extra) is not None:
                    self.graph.pause_descendants(tx, ctx.id)  # children it spawned while pausing
                return
            else:
                # and_descendants: children it spawned (or a client added) while it was stopping
                self.graph.end(tx, ctx.id, Status.CANCELLED, and_descendants=True, **extra)
                return
        text, retryable = outcome[1], outcome[2]
        if retryable and ctx.attempt < ctx.max_attempts:
            self.graph.move(
                tx, ctx.id, Status.QUEUED, error=text, run_at=tx.now + self._backoff_ms(spec, ctx.attempt), **extra
            )
            self.wake()
        else:
            # its children would run on under a task that is over: cancelled, like a failed child's siblings
            self.graph.end(tx, ctx.id, Status.FAILED, error=text, and_descendants=True, **extra)

    # ------------------------------------------------------------ lifecycle ops

    def _op_begin_shutdown(self, tx: Tx) -> None:
        self._claiming = False
        for running in self._running.values():
            running.ctx.request_stop("shutdown")

    def _op_requeue_running(self, tx: Tx) -> int:
        count = 0
        for task_id, running in list(self._running.items()):
            running.ctx.abandoned = True
            # keeps its place; quitting uses up no attempt, even when the handler was slow to stop
            row = store.transition(tx.conn, task_id, Status.QUEUED, tx.now, attempt=running.ctx.attempt - 1)
            if row is not None:
                tx.moved(row)
                tx.announce(row)
                count += 1
        self._running.clear()
        return count

    def _op_stop(self, tx: Tx) -> None:
        tx.after.append(self._stopped.set)

    # ------------------------------------------------------------ queue control

    def set_queue(self, tx: Tx, *, paused: bool | None = None, type: str | None = None,
                  limit: int | None | bool = False) -> dict[str, Any]:
        """Pause/resume claiming (all or one type) or change a concurrency limit; persisted."""
        queue = self.queue
        if paused is not None:
            if type is None:
                queue.paused = paused
            elif paused:
                queue.paused_types.add(type)
            else:
                queue.paused_types.discard(type)
        if limit is not False:
            if type is None:
                queue.concurrency_override = limit  # type: ignore[assignment]
            elif limit is None:
                queue.type_limits.pop(type, None)
            else:
                queue.type_limits[type] = limit  # type: ignore[assignment]
        queue.save(tx.conn)
        state = queue.describe()
        tx.after.append(lambda: self._workers.resize(queue.concurrency))
        tx.after.append(partial(self._notify, "queue.updated", state))
        self.wake()
        return state


class QueueSettings:
    """Claiming switches and limits that survive restarts (the ``settings`` table)."""

    def __init__(self, default_concurrency: int) -> None:
        self.default_concurrency = default_concurrency
        self.paused = False
        self.paused_types: set[str] = set()
        self.concurrency_override: int | None = None
        self.type_limits: dict[str, int] = {}

    @property
    def concurrency(self) -> int:
        return self.concurrency_override or self.default_concurrency

    def load(self, conn: sqlite3.Connection) -> None:
        row = conn.execute('SELECT "value" FROM "settings" WHERE "key" = \'queue\'').fetchone()
        if row is None:
            return
        data = store.orjson.loads(row[0])
        self.paused = bool(data.get("paused", False))
        self.paused_types = set(data.get("pausedTypes", []))
        # int(): a limit written as 3.0 by a sidecar before 3738e80 failed every start
        override = data.get("concurrency")
        self.concurrency_override = int(override) if override is not None else None
        self.type_limits = {type_: int(limit) for type_, limit in data.get("typeConcurrency", {}).items()}

    def save(self, conn: sqlite3.Connection) -> None:
        conn.execute(
            'INSERT INTO "settings" ("key", "value") VALUES (\'queue\', ?) '
            'ON CONFLICT ("key") DO UPDATE SET "value" = excluded."value"',
            (store.dumps({
                "paused": self.paused,
                "pausedTypes": sorted(self.paused_types),
                "concurrency": self.concurrency_override,
                "typeConcurrency": self.type_limits,
            }),),
        )

    def describe(self) -> dict[str, Any]:
        return {
            "paused": self.paused,
            "pausedTypes": sorted(self.paused_types),
            "concurrency": self.concurrency,
            "typeConcurrency": dict(self.type_limits),
        }
