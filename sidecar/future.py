"""Future: the part of :class:`concurrent.futures.Future` the sidecar uses, made cheap to create.

Every write request makes two (the engine's op, the protocol's answer). The standard library's
builds a ``threading.Condition`` per instance and goes through its Python-level ``__enter__`` and
``__exit__`` on every call: ~40 Python calls per request, a fifth of an idle create's path, run
on a CPU just woken from idle where each costs several times its warm price. This one holds a
plain lock (taken in C) and makes an event only when a thread actually blocks on it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class InvalidStateError(Exception):
    """A future given its outcome twice."""


class Future(Generic[T]):
    __slots__ = ("_lock", "_done", "_value", "_error", "_callbacks", "_waiter")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done = False
        self._value: Any = None
        self._error: BaseException | None = None
        self._callbacks: list[Callable[[Future[T]], None]] | None = None
        self._waiter: threading.Event | None = None

    def done(self) -> bool:
        return self._done

    def set_result(self, value: T) -> None:
        self._settle(value, None)

    def set_exception(self, error: BaseException) -> None:
        self._settle(None, error)

    def _settle(self, value: Any, error: BaseException | None) -> None:
        with self._lock:
            if self._done:
                raise InvalidStateError("the future already has its outcome")
            self._value = value
            self._error = error
            self._done = True
            callbacks, self._callbacks = self._callbacks, None
            waiter = self._waiter
        if waiter is not None:
            waiter.set()
        if callbacks is not None:
            for callback in callbacks:
                try:
                    callback(self)
                except Exception:
                    log.exception("exception calling callback for %r", self)

    def add_done_callback(self, callback: Callable[[Future[T]], None]) -> None:
        """Call ``callback(self)`` once the outcome is set: at once (in this thread) if it is,
        else in the thread that sets it. As concurrent.futures does, an exception it raises is
        logged, not passed on."""
        with self._lock:
            if not self._done:
                if self._callbacks is None:
                    self._callbacks = [callback]
                else:
                    self._callbacks.append(callback)
                return
        try:
            callback(self)
        except Exception:
            log.exception("exception calling callback for %r", self)

    def _wait(self, timeout: float | None) -> None:
        with self._lock:
            if self._done:
                return
            if self._waiter is None:
                self._waiter = threading.Event()
            waiter = self._waiter
        if not waiter.wait(timeout):
            raise TimeoutError()

    def result(self, timeout: float | None = None) -> T:
        """The value, waiting up to ``timeout`` seconds for it; raises the exception if it failed."""
        if not self._done:
            self._wait(timeout)
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[no-any-return]

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if not self._done:
            self._wait(timeout)
        return self._error
