"""The task state machine, written down once.

Every status write in the sidecar goes through :func:`check` or uses :func:`sources` to build the
``WHERE status IN (...)`` guard of its UPDATE, so the database itself refuses an illegal move.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    QUEUED = "QUEUED"
    WAITING = "WAITING"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


TERMINAL: frozenset[Status] = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})
UNFINISHED: frozenset[Status] = frozenset(Status) - TERMINAL

# from-status -> the statuses it may move to. Terminal statuses only leave through tasks.retry.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.QUEUED: frozenset(
        {Status.RUNNING, Status.WAITING, Status.PAUSED, Status.CANCELLED, Status.FAILED}
    ),
    Status.WAITING: frozenset(
        {Status.QUEUED, Status.PAUSED, Status.COMPLETED, Status.FAILED, Status.CANCELLED}
    ),
    Status.RUNNING: frozenset(
        {
            Status.COMPLETED,
            Status.FAILED,
            Status.CANCELLED,
            Status.QUEUED,  # retry after backoff, shutdown, crash recovery
            Status.WAITING,  # handler returned, children unfinished
            Status.PAUSED,
        }
    ),
    Status.PAUSED: frozenset({Status.QUEUED, Status.WAITING, Status.CANCELLED, Status.FAILED}),
    Status.COMPLETED: frozenset(),
    # only tasks.retry takes these: QUEUED, or WAITING when the task still waits for dependencies
    # or (its handler having finished) for children being retried with it
    Status.FAILED: frozenset({Status.QUEUED, Status.WAITING}),
    Status.CANCELLED: frozenset({Status.QUEUED, Status.WAITING}),
}


class IllegalTransition(Exception):
    def __init__(self, task_id: str, current: str, target: str) -> None:
        super().__init__(f"task {task_id} cannot move from {current} to {target}")
        self.task_id, self.current, self.target = task_id, current, target


def allowed(current: Status | str, target: Status | str) -> bool:
    # Plain lookups (a Status hashes and compares as its text): Status(value) is two Python
    # calls, and this runs for every task started.
    try:
        targets = TRANSITIONS[current]  # type: ignore[index]
    except KeyError:
        raise ValueError(f"{current!r} is not a task status") from None
    if target not in TRANSITIONS:
        raise ValueError(f"{target!r} is not a task status")
    return target in targets


def check(task_id: str, current: Status | str, target: Status | str) -> None:
    if not allowed(current, target):
        raise IllegalTransition(task_id, str(current), str(target))


_SOURCES: dict[Status, tuple[str, ...]] = {
    target: tuple(sorted(s.value for s, targets in TRANSITIONS.items() if target in targets))
    for target in Status
}


def sources(target: Status) -> tuple[str, ...]:
    """The statuses from which ``target`` may be reached, for an UPDATE's WHERE guard."""
    return _SOURCES[Status(target)]
