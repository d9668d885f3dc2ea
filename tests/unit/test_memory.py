"""Pausing garbage collection: nesting, from several threads, and leaving it as it was found."""

from __future__ import annotations

import gc
import threading

from sidecar.memory import pause_collection


def test_pauses_nest_and_collection_resumes_with_the_last_one() -> None:
    assert gc.isenabled()
    first = pause_collection()
    second = pause_collection()
    assert not gc.isenabled()
    first()
    first()  # a second call of the same resume does not end the other pause
    assert not gc.isenabled()
    ended = threading.Thread(target=second)  # another thread may end it (the writer does)
    ended.start()
    ended.join()
    assert gc.isenabled()


def test_a_pause_does_not_turn_on_collection_that_was_already_off() -> None:
    gc.disable()
    try:
        pause_collection()()
        assert not gc.isenabled()
    finally:
        gc.enable()
