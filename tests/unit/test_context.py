"""A task's stop signal: what a handler waiting in ctx.sleep (from any number of threads) sees."""

from __future__ import annotations

import threading
import time

import pytest

from sidecar.handlers.context import TaskCancelled, TaskContext


def context() -> TaskContext:
    return TaskContext(task_id="t", type="x", details={}, attempt=1, max_attempts=3, state=None,
                       on_progress=lambda ctx: None, on_checkpoint=lambda ctx, state: None)


def test_sleep_runs_its_time_out_when_no_stop_is_asked() -> None:
    ctx = context()
    started = time.monotonic()
    ctx.sleep(0.05)
    assert time.monotonic() - started >= 0.045
    assert not ctx.cancelled
    ctx.raise_if_cancelled()


def test_every_waiting_thread_wakes_when_a_stop_is_asked_and_later_waits_return_at_once() -> None:
    ctx = context()
    woke: list[str] = []

    def wait() -> None:
        try:
            ctx.sleep(30)
        except TaskCancelled as exc:
            woke.append(str(exc))

    threads = [threading.Thread(target=wait) for _ in range(5)]
    for thread in threads:
        thread.start()
    time.sleep(0.1)
    ctx.request_stop("cancel")
    ctx.request_stop("timeout")  # a second ask changes nothing
    for thread in threads:
        thread.join(timeout=5)
    assert woke == ["cancel"] * 5
    assert ctx.cancelled and ctx.stop_reason == "cancel"
    with pytest.raises(TaskCancelled):
        ctx.sleep(30)  # returns at once: the flag stays up
    with pytest.raises(TaskCancelled):
        ctx.raise_if_cancelled()


def test_a_stop_asked_from_many_threads_at_once_is_taken_once() -> None:
    errors: list[BaseException] = []
    for _ in range(50):
        ctx = context()
        barrier = threading.Barrier(4)

        def ask(reason: str) -> None:
            barrier.wait()
            try:
                ctx.request_stop(reason)
            except BaseException as exc:  # e.g. a lock released twice
                errors.append(exc)

        threads = [threading.Thread(target=ask, args=(r,)) for r in ("cancel", "pause", "shutdown", "timeout")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert ctx.cancelled and ctx.stop_reason in ("cancel", "pause", "shutdown", "timeout")
    assert errors == []
