"""The shared shape of a peer run: enqueue N no-op jobs, drain them with W workers, then
measure enqueue → start latency on an idle queue, with probes 5-100 ms apart and again 0.5-1.5 ms
apart (bench.common.PROBE_GAPS_S). Each adapter supplies the queue-specific parts.

Printed result (``BENCH-RESULT``): enqueue_per_s, drain_per_s, latency.start_ms and
latency.start_awake_ms {p50,p95,p99}.
Fails (exit 2) if a job is lost or the drain does not finish.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from typing import Any, Callable

from bench.common import clock, emit, fail, fresh_dir, idle_footprint, probe_gap, summary


class Tracker:
    """Counts completions and records start times of probe jobs (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.done = 0
        self.target = 0
        self.all_done = threading.Event()
        self.first_start: float | None = None
        self.last_done: float | None = None
        self.probe_started: dict[int, float] = {}
        self.probe_event: dict[int, threading.Event] = {}

    def job(self, key: int) -> None:
        """Body of every job: a no-op that records when it ran."""
        t = clock()
        if key < 0:  # a latency probe
            self.probe_started[key] = t
            ev = self.probe_event.get(key)
            if ev is not None:
                ev.set()
            return
        with self.lock:
            if self.first_start is None:
                self.first_start = t
            self.done += 1
            self.last_done = t
            if self.done >= self.target:
                self.all_done.set()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--samples", type=int, default=20)
    p.add_argument("--timeout", type=float, default=180)
    p.add_argument("--idle-s", type=float, default=2.0, help="how long to measure the idle footprint")
    return p.parse_args(argv)


def run(
    name: str,
    version: str | None,
    a: argparse.Namespace,
    *,
    enqueue: Callable[[int], None],
    start_workers: Callable[[], None],
    stop_workers: Callable[[], None],
    tracker: Tracker,
    storage: str,
    notes: str = "",
    drain_from_first_start: bool = False,
) -> None:
    tracker.target = a.n
    t0 = clock()
    for i in range(a.n):
        enqueue(i)
    t1 = clock()
    start_workers()
    t_start = clock()
    if not tracker.all_done.wait(a.timeout):
        stop_workers()
        fail(f"{name}: drained only {tracker.done} of {a.n} jobs in {a.timeout}s")
    begin = tracker.first_start if drain_from_first_start and tracker.first_start else t_start
    drain_s = (tracker.last_done or clock()) - begin
    time.sleep(0.2)
    lat: dict[str, list[float]] = {"idle": [], "awake": []}
    for k in range(1, 2 * a.samples + 1):
        key = -k
        kind = "idle" if k <= a.samples else "awake"
        ev = tracker.probe_event[key] = threading.Event()
        probe_gap(kind)  # probes arrive at random phases of any poll loop
        ts = clock()
        enqueue(key)
        if not ev.wait(30):
            stop_workers()
            fail(f"{name}: latency probe {k} never started")
        lat[kind].append((tracker.probe_started[key] - ts) * 1000)
    idle = idle_footprint(os.getpid(), a.idle_s)  # the workers wait for work: what that costs
    stop_workers()
    emit({
        "system": name, "version": version, "n": a.n, "workers": a.workers,
        "enqueue_per_s": a.n / (t1 - t0), "drain_per_s": a.n / drain_s,
        "latency": {"start_ms": summary(lat["idle"]), "start_awake_ms": summary(lat["awake"])},
        "idle": idle, "storage": storage, "notes": notes,
    })


def workdir(name: str) -> Any:
    return fresh_dir(f"{name}-{os.getpid()}")


def thread_workers(count: int, work: Callable[[], None], stop: threading.Event) -> tuple[Callable[[], None], Callable[[], None]]:
    """``(start, stop_all)`` for ``count`` threads running ``work`` until ``stop`` is set."""
    threads = [threading.Thread(target=work, daemon=True) for _ in range(count)]

    def start() -> None:
        for t in threads:
            t.start()

    def stop_all() -> None:
        stop.set()
        for t in threads:
            t.join(5)

    return start, stop_all
