"""litequeue (WAL, synchronous=NORMAL): 4 worker threads doing pop() + done(), 1 ms poll when empty."""

from __future__ import annotations

import threading
import time

from bench.common import dist_version
from bench.peers.base import Tracker, parse, run, thread_workers, workdir

POLL_S = 0.001


def main() -> None:
    a = parse()
    from litequeue import LiteQueue

    d = workdir("litequeue")
    path = str(d / "lq.db")
    LiteQueue(path).close()
    producer = LiteQueue(path)
    tracker = Tracker()
    stop = threading.Event()

    def worker() -> None:
        q = LiteQueue(path)  # a connection per worker thread
        while not stop.is_set():
            msg = q.pop()
            if msg is None:
                time.sleep(POLL_S)
                continue
            tracker.job(int(msg.data))
            q.done(msg.message_id)
        q.close()

    start, stop_all = thread_workers(a.workers, worker, stop)

    run("litequeue", dist_version("litequeue"), a, enqueue=lambda k: producer.put(str(k)),
        start_workers=start, stop_workers=stop_all, tracker=tracker,
        storage="LiteQueue: WAL, synchronous=NORMAL, commit per put/pop/done",
        notes=f"no blocking get: workers poll every {POLL_S * 1000:g} ms when empty")


if __name__ == "__main__":
    main()
