"""What a running handler sees: its task, progress and checkpoint reporting, cancellation."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class TaskError(Exception):
    """A handler failure with an explicit retry decision (plain exceptions are retryable)."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


# Which stop decides how a task ends when several were asked before its handler stopped: a user's
# cancel over their pause, either over the sidecar's own shutdown (which puts the task back to
# QUEUED), and any of them over a timeout (a retry).
STOP_PRECEDENCE = {"timeout": 0, "shutdown": 1, "pause": 2, "cancel": 3}


def strongest_stop(*reasons: str | None) -> str | None:
    """The reason that decides among stops asked (None: none was)."""
    return max((r for r in reasons if r), key=STOP_PRECEDENCE.__getitem__, default=None)


class TaskCancelled(Exception):
    """Raised inside a handler by :meth:`TaskContext.raise_if_cancelled` once a stop was asked."""


class _StopSignal:
    """A flag set once, that threads can wait on: what ``threading.Event`` does, for a tenth of its
    set-up cost (an Event builds a Condition in Python; this is one lock), since every task gets
    one when it is claimed. The lock is held while the flag is down; setting releases it, and each
    waiter that gets it passes it on at once, so any number of threads may wait."""

    __slots__ = ("_lock", "_set")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self._set = False

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        """Callers serialize (TaskContext.request_stop holds the context's lock)."""
        if not self._set:
            self._set = True
            self._lock.release()

    def wait(self, timeout: float) -> bool:
        if self._set:
            return True
        if self._lock.acquire(timeout=timeout):
            self._lock.release()
            return True
        return self._set


class TaskContext:
    """Handed to a handler. Thread-safe: the handler runs in its own thread.

    ``progress`` and ``checkpoint`` only record the latest value and wake the engine; the engine
    coalesces progress writes (about 10 per second per task) and commits before announcing.
    """

    def __init__(
        self,
        *,
        task_id: str,
        type: str,
        details: dict[str, Any],
        attempt: int,
        max_attempts: int,
        state: Any,
        on_progress: Callable[["TaskContext"], None],
        on_checkpoint: Callable[["TaskContext", Any], None],
        on_spawn: Callable[["TaskContext", list[dict[str, Any]]], list[dict[str, Any]]] | None = None,
    ) -> None:
        self.id = task_id
        self.type = type
        self.details = details
        self.attempt = attempt
        self.max_attempts = max_attempts
        self._state = state
        self._on_progress = on_progress
        self._on_checkpoint = on_checkpoint
        self._on_spawn = on_spawn
        self._spawned = 0
        self._stop = _StopSignal()
        self.stop_reason: str | None = None  # "cancel", "pause", "shutdown", "timeout"
        self._lock = threading.Lock()
        self._pending_progress: tuple[float, str | None] | None = None
        self._progress_posted = False
        self.abandoned = False
        self.options: Any = None  # the app's start-up options (AppOptions), set by the engine

    # ------------------------------------------------------------ for handlers

    @property
    def state(self) -> Any:
        """The last checkpoint saved by this task (by an earlier attempt too), or None."""
        return self._state

    def progress(self, percent: float, message: str | None = None) -> None:
        percent = min(100.0, max(0.0, float(percent)))
        with self._lock:
            self._pending_progress = (percent, message)
            if self._progress_posted:
                return
            self._progress_posted = True
        self._on_progress(self)

    def checkpoint(self, state: Any) -> None:
        """Persist ``state`` so a re-run (after a crash, pause or retry) can resume from it."""
        self._state = state
        self._on_checkpoint(self, state)

    def spawn(
        self,
        type: str,
        details: dict[str, Any] | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        """Create a child task of this one; returns it once committed.

        ``options`` are ``tasks.create`` params (``priority``, ``dependsOn``, ``weight``,
        ``maxAttempts``, ``runAt``, ``idempotencyKey``, ``onChildFailure``). Unless given, the
        idempotency key is derived from this task and the spawn's position, so a handler re-run after
        a crash that spawns the same children in the same order creates no duplicates.
        """
        return self.spawn_many([{"type": type, "details": details or {}, **options}])[0]

    def spawn_many(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Create many children in one transaction (all or nothing), with this task's new progress."""
        if self._on_spawn is None:
            raise RuntimeError("spawning is not available here")
        prepared = []
        for item in items:
            self._spawned += 1
            prepared.append({"idempotencyKey": f"{self.id}:spawn:{self._spawned}", **item, "parentId": self.id})
        return self._on_spawn(self, prepared)

    @property
    def cancelled(self) -> bool:
        """True once the task should stop (cancel, pause, shutdown or timeout)."""
        return self._stop.is_set()

    def raise_if_cancelled(self) -> None:
        if self._stop.is_set():
            raise TaskCancelled(self.stop_reason or "cancelled")

    def sleep(self, seconds: float) -> None:
        """Wait up to ``seconds``; raises :class:`TaskCancelled` as soon as a stop is asked."""
        if self._stop.wait(max(0.0, seconds)):
            raise TaskCancelled(self.stop_reason or "cancelled")

    # ------------------------------------------------------------ for the engine

    def request_stop(self, reason: str) -> bool:
        """Ask the handler to stop for ``reason``; False if a stop that outranks it was asked already.

        A later, stronger request replaces the reason the task will end with: a user who pauses a
        download and then cancels it (before its handler noticed the pause) wants it cancelled.
        """
        with self._lock:
            if self.stop_reason is not None and STOP_PRECEDENCE[reason] <= STOP_PRECEDENCE[self.stop_reason]:
                return False
            self.stop_reason = reason
            self._stop.set()
            return True

    def take_progress(self) -> tuple[float, str | None] | None:
        with self._lock:
            pending, self._pending_progress = self._pending_progress, None
            self._progress_posted = False
            return pending
