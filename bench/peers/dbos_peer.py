"""DBOS Transact with its SQLite system database: a queue with 4 concurrent workflows, 10 ms poll."""

from __future__ import annotations

import logging
import os

from bench.common import dist_version
from bench.peers.base import Tracker, parse, run, workdir

POLL_S = 0.01


def main() -> None:
    a = parse()
    os.environ.setdefault("DBOS__APPVERSION", "bench")
    from dbos import DBOS

    d = workdir("dbos")
    DBOS(config={"name": "bench", "system_database_url": f"sqlite:///{d / 'dbos.sqlite'}",
                 "log_level": "ERROR"})
    tracker = Tracker()

    @DBOS.workflow()
    def noop(key: int) -> None:
        tracker.job(key)

    logging.getLogger("dbos").setLevel(logging.ERROR)
    launched = []

    def enqueue(key: int) -> None:
        launched[0].enqueue(noop, key)

    def start() -> None:
        pass  # DBOS dequeues as soon as it is launched (below, before the timed drain)

    def stop() -> None:
        DBOS.destroy(workflow_completion_timeout_sec=0)

    # DBOS only enqueues through a launched instance, and then dequeues at once: the enqueue phase
    # therefore overlaps the drain. Measure drain as N / (last completion - first start).
    DBOS.launch()
    queue = DBOS.register_queue("bench", worker_concurrency=a.workers, polling_interval_sec=POLL_S)
    launched.append(queue)
    run("DBOS", dist_version("dbos"), a, enqueue=enqueue, start_workers=start, stop_workers=stop,
        tracker=tracker, storage="SQLite system database (SQLAlchemy), DBOS defaults",
        notes=f"queue worker_concurrency={a.workers}, polling_interval_sec={POLL_S}; "
              "enqueue overlaps the drain (DBOS must be launched to enqueue)",
        drain_from_first_start=True)


if __name__ == "__main__":
    main()
