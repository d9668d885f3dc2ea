"""What the harness knows about the sidecar's tasks, built from notifications and responses.

Thread-safe: the reader thread feeds it, the UI and the scenario runner read it and wait on it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

TERMINAL = ("COMPLETED", "FAILED", "CANCELLED")


@dataclass
class Event:
    """One received notification, with the monotonic time it arrived."""

    t: float
    method: str
    params: Any


@dataclass
class Board:
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    # statuses each task went through, in order, consecutive duplicates collapsed
    status_history: dict[str, list[str]] = field(default_factory=dict)
    last_seq: int | None = None
    gaps: list[tuple[int, int]] = field(default_factory=list)  # (expected seq, received seq)
    deleted: set[str] = field(default_factory=set)
    started: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self._cond = threading.Condition()

    # -- feeding ---------------------------------------------------------------------------------

    def on_notification(self, method: str, params: Any) -> None:
        with self._cond:
            self.events.append(Event(time.monotonic(), method, params))
            if method == "task.updated" and isinstance(params, dict):
                seq = params.get("seq")
                if isinstance(seq, int):
                    if self.last_seq is not None and seq != self.last_seq + 1:
                        self.gaps.append((self.last_seq + 1, seq))
                    self.last_seq = seq
                task = params.get("task")
                if isinstance(task, dict):
                    self._merge(task)
            elif method == "task.deleted" and isinstance(params, dict):
                for task_id in params.get("ids") or []:
                    self.tasks.pop(task_id, None)
                    self.deleted.add(task_id)
            self._cond.notify_all()

    def on_result(self, result: Any) -> None:
        """Learn tasks from a response: a Task, ``{tasks: [...]}``, or a tree of them."""
        with self._cond:
            for task in _tasks_in(result):
                self._merge(task, from_response=True)
            self._cond.notify_all()

    def _merge(self, task: dict[str, Any], from_response: bool = False) -> None:
        task_id = task.get("id")
        if not isinstance(task_id, str) or task_id in self.deleted:
            return
        old = self.tasks.get(task_id)
        if old is not None and _version(task) < _version(old):
            return
        self.tasks[task_id] = task
        history = self.status_history.setdefault(task_id, [])
        status = task.get("status")
        if status and (not history or history[-1] != status):
            # A response may show a status that the notifications also show: collapse repeats.
            history.append(status)

    # -- reading ---------------------------------------------------------------------------------

    def snapshot(self) -> tuple[list[dict[str, Any]], list[Event]]:
        with self._cond:
            return list(self.tasks.values()), list(self.events)

    def get(self, task_id: str) -> dict[str, Any] | None:
        with self._cond:
            return self.tasks.get(task_id)

    def ever_had_status(self, task_id: str, status: str) -> bool:
        with self._cond:
            return status in self.status_history.get(task_id, [])

    def resolve(self, prefix: str) -> str:
        """A full task id from a unique prefix of a known id; the prefix itself when nothing matches."""
        with self._cond:
            if prefix in self.tasks:
                return prefix
            matches = sorted(t for t in self.tasks if t.startswith(prefix))
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            shown = ", ".join(m[:12] for m in matches[:5])
            raise AmbiguousId(f"id prefix {prefix!r} is ambiguous: {shown}{', ...' if len(matches) > 5 else ''}")
        return prefix

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``predicate()`` (called with the board locked) is true, or ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.1))
            return True

    def notify_waiters(self) -> None:
        with self._cond:
            self._cond.notify_all()


class AmbiguousId(ValueError):
    pass


def _version(task: dict[str, Any]) -> int:
    v = task.get("version")
    return v if isinstance(v, int) else 0


def _tasks_in(value: Any) -> list[dict[str, Any]]:
    """Every Task-shaped object inside a result (a Task has ``id``, ``type`` and ``status``)."""
    found: list[dict[str, Any]] = []

    def walk(v: Any) -> None:
        if isinstance(v, dict):
            if isinstance(v.get("id"), str) and "status" in v and "type" in v:
                found.append({k: x for k, x in v.items() if k != "children"} if "children" in v else v)
            for x in v.values():
                if isinstance(x, (dict, list)):
                    walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    walk(value)
    return found
