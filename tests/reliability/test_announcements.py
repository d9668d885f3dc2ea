"""A UI cache built only from notifications (it never polls) must end up equal to the database.

Found by the soak: pruning a finished batch removed its children through ON DELETE CASCADE without
counting or announcing them (tasks.delete got it right); fixed in 86869a3, kept as a regression test.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.reliability.common import connect
from tests.sidecar_client import SidecarProcess


def finished_batch(sidecar: SidecarProcess, children: int = 3) -> list[str]:
    created = sidecar.call("tasks.createMany", {"tasks": [{"ref": "p", "type": "demo.noop"}]
                                                + [{"parentId": "p", "type": "demo.noop"} for _ in range(children)]})
    ids = [t["id"] for t in created["tasks"]]
    for task_id in ids:
        sidecar.wait_status(task_id, "COMPLETED")
    time.sleep(0.01)  # completed_at < now
    return ids


def cache_from_notifications(sidecar: SidecarProcess) -> set[str]:
    alive: set[str] = set()
    for note in list(sidecar.notifications):
        if note["method"] == "task.updated":
            alive.add(note["params"]["task"]["id"])
        elif note["method"] == "task.deleted":
            alive -= set(note["params"]["ids"])
    return alive


def db_ids(db: Path) -> set[str]:
    conn = connect(db)
    try:
        return {r[0] for r in conn.execute("SELECT id FROM tasks")}
    finally:
        conn.close()


def test_deleting_a_batch_announces_its_whole_subtree(sidecar: SidecarProcess, db_path: Path) -> None:
    ids = finished_batch(sidecar)
    assert sidecar.call("tasks.delete", {"id": ids[0]}) == {"deleted": len(ids)}
    sidecar.wait_notification(lambda m: m["method"] == "task.deleted")
    assert cache_from_notifications(sidecar) == db_ids(db_path) == set()


def test_pruning_a_batch_announces_its_whole_subtree(sidecar: SidecarProcess, db_path: Path) -> None:
    ids = finished_batch(sidecar)
    answer = sidecar.call("tasks.prune", {})
    sidecar.wait_notification(lambda m: m["method"] == "task.deleted")
    time.sleep(0.2)
    assert db_ids(db_path) == set()
    assert cache_from_notifications(sidecar) == set(), "children deleted without a task.deleted"
    assert answer == {"deleted": len(ids)}
