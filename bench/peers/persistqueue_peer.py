"""persist-queue SQLiteAckQueue (WAL; auto_commit), 4 worker threads doing get() + ack()."""

from __future__ import annotations

import threading

from bench.common import dist_version
from bench.peers.base import Tracker, parse, run, thread_workers, workdir


def main() -> None:
    a = parse()
    from persistqueue import SQLiteAckQueue
    from persistqueue.exceptions import Empty

    d = workdir("persistqueue")
    q = SQLiteAckQueue(str(d), multithreading=True, auto_commit=True)
    tracker = Tracker()
    stop = threading.Event()

    def worker() -> None:
        while not stop.is_set():
            try:
                item = q.get(block=True, timeout=0.2)
            except Empty:
                continue
            tracker.job(item)
            q.ack(item)

    start, stop_all = thread_workers(a.workers, worker, stop)

    run("persist-queue", dist_version("persist-queue"), a, enqueue=q.put, start_workers=start,
        stop_workers=stop_all, tracker=tracker,
        storage="SQLiteAckQueue: WAL, synchronous default (FULL), commit per put/ack",
        notes="in-process put event wakes blocked get(); ack per job")


if __name__ == "__main__":
    main()
