"""huey with SqliteHuey (WAL, its default synchronous), thread consumer with 4 workers."""

from __future__ import annotations

import logging

from bench.common import dist_version
from bench.peers.base import Tracker, parse, run, workdir


def main() -> None:
    a = parse()
    from huey import SqliteHuey

    logging.getLogger("huey").setLevel(logging.ERROR)
    d = workdir("huey")
    huey = SqliteHuey("bench", filename=str(d / "huey.db"), results=False)
    tracker = Tracker()

    @huey.task()
    def noop(key: int) -> None:
        tracker.job(key)

    consumer = huey.create_consumer(workers=a.workers, worker_type="thread", periodic=False)

    def start() -> None:
        consumer.start()

    def stop() -> None:
        consumer.stop(graceful=True)

    run("huey", dist_version("huey"), a, enqueue=noop, start_workers=start, stop_workers=stop,
        tracker=tracker, storage="SqliteHuey: WAL, synchronous=FULL (default)",
        notes="thread consumer; polls with 0.1 s initial delay, backoff x1.15 up to 10 s (defaults)")


if __name__ == "__main__":
    main()
