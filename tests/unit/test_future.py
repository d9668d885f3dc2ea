"""sidecar.future.Future: the outcome reaches callbacks and waiting threads exactly once."""

from __future__ import annotations

import threading
import time

import pytest

from sidecar.future import Future, InvalidStateError


def test_callbacks_added_before_and_after_the_result_each_run_once() -> None:
    future: Future[int] = Future()
    seen: list[tuple[str, int]] = []
    future.add_done_callback(lambda f: seen.append(("before", f.result())))
    assert not future.done() and seen == []
    future.set_result(7)
    future.add_done_callback(lambda f: seen.append(("after", f.result())))
    assert future.done()
    assert seen == [("before", 7), ("after", 7)]


def test_an_exception_is_raised_by_result_and_returned_by_exception() -> None:
    future: Future[int] = Future()
    error = ValueError("refused")
    future.set_exception(error)
    assert future.exception() is error
    with pytest.raises(ValueError, match="refused"):
        future.result()


def test_the_outcome_cannot_be_set_twice() -> None:
    future: Future[int] = Future()
    future.set_result(1)
    with pytest.raises(InvalidStateError):
        future.set_result(2)
    with pytest.raises(InvalidStateError):
        future.set_exception(ValueError())
    assert future.result() == 1


def test_result_waits_for_another_thread_and_times_out_without_one() -> None:
    future: Future[str] = Future()
    with pytest.raises(TimeoutError):
        future.result(timeout=0.05)
    setter = threading.Timer(0.05, future.set_result, ("late",))
    setter.start()
    assert future.result(timeout=10) == "late"
    assert future.exception(timeout=0) is None
    setter.join()


def test_a_failing_callback_is_logged_and_the_others_still_run(caplog: pytest.LogCaptureFixture) -> None:
    future: Future[int] = Future()
    seen: list[int] = []

    def broken(_: Future[int]) -> None:
        raise RuntimeError("callback bug")

    future.add_done_callback(broken)
    future.add_done_callback(lambda f: seen.append(f.result()))
    future.set_result(3)
    assert seen == [3]
    assert "callback bug" in caplog.text


def test_callbacks_added_while_another_thread_sets_the_result_all_run_once() -> None:
    for _ in range(200):
        future: Future[int] = Future()
        calls: list[int] = []
        go = threading.Barrier(2)

        def add() -> None:
            go.wait()
            for _ in range(50):
                future.add_done_callback(lambda f: calls.append(f.result()))

        adder = threading.Thread(target=add)
        adder.start()
        go.wait()
        time.sleep(0)
        future.set_result(1)
        adder.join()
        assert calls == [1] * 50
