"""The handler thread pool."""

from __future__ import annotations

import gc
import threading
import time
import weakref

import pytest

from sidecar.domain.workers import WorkerPool


def test_an_idle_worker_keeps_no_job_alive() -> None:
    done = threading.Event()

    class Job:
        pass

    pool = WorkerPool(1, lambda job: done.set())
    job = Job()
    ref = weakref.ref(job)
    pool.submit_many([job])
    del job
    assert done.wait(10)
    time.sleep(0.05)  # the worker is back to waiting for the next job
    gc.collect()
    assert ref() is None
    pool.resize(0)
    pool.submit_many([None])


@pytest.mark.parametrize("batched", [False, True], ids=["one-at-a-time", "relay"])
def test_jobs_run_on_as_many_threads_as_the_pool_has(batched: bool) -> None:
    # submit_many wakes one worker and each passes the next job on before running its own: a
    # job that blocks must not hold back the ones behind it
    seen: set[str] = set()
    gate = threading.Barrier(3, timeout=10)

    def work(job: int) -> None:
        seen.add(threading.current_thread().name)
        gate.wait()  # all three must be running at once

    pool = WorkerPool(3, work)
    if batched:
        pool.submit_many([0, 1, 2])
    else:
        for k in range(3):
            pool.submit_many([k])
    deadline = time.monotonic() + 10
    while len(seen) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(seen) == 3
    pool.resize(0)
    pool.submit_many([None] * 3)


def test_more_jobs_than_workers_all_run() -> None:
    done: list[int] = []
    lock = threading.Lock()
    finished = threading.Event()

    def work(job: int) -> None:
        time.sleep(0.001)
        with lock:
            done.append(job)
            if len(done) == 50:
                finished.set()

    pool = WorkerPool(3, work)
    for start in range(0, 50, 10):
        pool.submit_many(list(range(start, start + 10)))
    assert finished.wait(10)
    assert sorted(done) == list(range(50))
    pool.resize(0)
    pool.submit_many([None] * 3)


def _wait_until(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_a_replaced_stuck_worker_leaves_the_pool_when_its_job_returns() -> None:
    release = threading.Event()
    ran: list[int] = []
    threads: dict[object, int] = {}

    def work(job: object) -> None:
        threads[job] = threading.get_ident()
        if job == "stuck":
            release.wait(10)
        else:
            ran.append(job)  # type: ignore[arg-type]

    stuck = "stuck"
    pool = WorkerPool(1, work)
    pool.submit_many([stuck])
    assert _wait_until(lambda: stuck in threads)
    pool.replace(stuck)
    for k in range(3):  # each on the replacement, one after another, while the stuck one hangs
        pool.submit_many([k])
        assert _wait_until(lambda: k in ran), f"job {k} never ran while a replaced worker was stuck"
    release.set()
    alive = lambda: any(t.ident == threads[stuck] for t in threading.enumerate())  # noqa: E731
    assert _wait_until(lambda: not alive()), "the stuck worker stayed in the pool after its job returned"
    pool.submit_many([99])
    assert _wait_until(lambda: 99 in ran)
    pool.resize(0)
    pool.submit_many([None])
