"""Task graphs over stdio: batches, dependencies, cycles, pause/resume, queue control."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.sidecar_client import SidecarProcess, db_rows


def batch(n: int, *, policy: str = "fail", fail: set[int] = frozenset(), seconds: float = 0.1) -> list[dict]:
    items = [{"ref": "playlist", "type": "demo.noop", "onChildFailure": policy, "details": {"title": "Mix"}}]
    for i in range(n):
        if i in fail:
            items.append({"type": "demo.fail", "parentId": "playlist", "details": {"message": f"video {i} gone"}})
        else:
            items.append({"type": "demo.sleep", "parentId": "playlist", "details": {"seconds": seconds, "steps": 2}})
    return items


def status_of(sidecar: SidecarProcess, task_id: str) -> str:
    return sidecar.call("tasks.get", {"id": task_id})["status"]


def test_a_playlist_batch_of_fifty_completes_with_aggregate_progress(start_sidecar) -> None:
    sidecar = start_sidecar("--concurrency", "8")
    tasks = sidecar.call("tasks.createMany", {"tasks": batch(50)})["tasks"]
    parent, children = tasks[0], tasks[1:]
    assert all(c["parentId"] == parent["id"] for c in children)
    done = sidecar.wait_status(parent["id"], "COMPLETED", timeout=30)
    assert done["progress"] == 100
    assert done["result"] == {"children": {"completed": 50, "failed": 0, "cancelled": 0}}
    parent_updates = sidecar.updates(parent["id"])
    assert "WAITING" in [u["status"] for u in parent_updates]  # handler returned, children unfinished
    aggregates = [u["progress"] for u in parent_updates if u["status"] == "WAITING"]
    assert len(aggregates) >= 2 and aggregates == sorted(aggregates) and 0 < aggregates[-1] <= 100
    assert len(parent_updates) < 60  # coalesced, not one announcement per child move
    tree = sidecar.call("tasks.tree", {"id": parent["id"]})
    assert tree["childCounts"] == {"COMPLETED": 50} and len(tree["children"]) == 50
    got = sidecar.call("tasks.get", {"id": parent["id"], "include": ["children"]})
    assert [c["id"] for c in got["children"]] == [c["id"] for c in children]
    assert got["childCounts"] == {"COMPLETED": 50}


def test_a_failing_child_fails_the_batch_and_cancels_the_rest(start_sidecar) -> None:
    sidecar = start_sidecar("--concurrency", "2")
    tasks = sidecar.call("tasks.createMany", {"tasks": batch(10, fail={0}, seconds=2)})["tasks"]
    parent, failing = tasks[0], tasks[1]
    failed = sidecar.wait_status(parent["id"], "FAILED", timeout=15)
    assert failing["id"] in failed["error"] and "video 0 gone" in failed["error"]
    for child in tasks[2:]:
        sidecar.wait_status(child["id"], "CANCELLED", timeout=10)


def test_continue_policy_completes_with_counts(start_sidecar) -> None:
    sidecar = start_sidecar("--concurrency", "4")
    tasks = sidecar.call("tasks.createMany", {"tasks": batch(6, policy="continue", fail={1, 3})})["tasks"]
    done = sidecar.wait_status(tasks[0]["id"], "COMPLETED", timeout=15)
    assert done["result"]["children"] == {"completed": 4, "failed": 2, "cancelled": 0}


def test_cancel_then_retry_a_batch_reruns_only_what_did_not_finish(start_sidecar) -> None:
    sidecar = start_sidecar("--concurrency", "2")
    tasks = sidecar.call("tasks.createMany", {"tasks": batch(4, seconds=0.3)})["tasks"]
    parent = tasks[0]
    first = sidecar.wait_status(tasks[1]["id"], "COMPLETED", timeout=10)
    sidecar.call("tasks.cancel", {"id": parent["id"]})
    sidecar.wait_status(parent["id"], "CANCELLED", timeout=10)
    # The parent ends at once; a child whose handler was running is asked to stop and ends when the
    # handler returns, a moment later (reading its status right away raced with that).
    statuses = {c["id"]: sidecar.wait_status(c["id"], "COMPLETED", "CANCELLED")["status"] for c in tasks[1:]}
    assert statuses == {c["id"]: status_of(sidecar, c["id"]) for c in tasks[1:]}
    assert statuses[first["id"]] == "COMPLETED"
    assert "CANCELLED" in statuses.values()

    retried = sidecar.call("tasks.retry", {"id": parent["id"]})
    assert retried["status"] == "WAITING"  # the parent's own handler had finished: it is not re-run
    done = sidecar.wait_status(parent["id"], "COMPLETED", timeout=15)
    assert done["attempt"] == 0
    assert sidecar.call("tasks.get", {"id": first["id"]})["version"] == first["version"]  # untouched
    assert done["result"]["children"]["completed"] == 4


def test_spawned_children_from_a_handler(start_sidecar) -> None:
    sidecar = start_sidecar("--handlers", "fixture_handlers")
    parent = sidecar.call("tasks.create", {"type": "test.playlist", "details": {"entries": 5, "seconds": 0.2}})
    done = sidecar.wait_status(parent["id"], "COMPLETED", timeout=15)
    assert done["result"] == {"entries": 5, "children": {"completed": 5, "failed": 0, "cancelled": 0}}
    children = sidecar.call("tasks.list", {"parentId": parent["id"]})["tasks"]
    assert len(children) == 5 and {c["idempotencyKey"] for c in children} == {
        f"{parent['id']}:spawn:{n}" for n in range(1, 6)
    }


def test_a_parent_handler_failing_after_spawning_retries_without_duplicates(start_sidecar) -> None:
    sidecar = start_sidecar("--handlers", "fixture_handlers")
    parent = sidecar.call("tasks.create", {
        "type": "test.playlist", "details": {"entries": 3, "fail_after_spawn": True}, "maxAttempts": 2,
    })
    failed = sidecar.wait_status(parent["id"], "FAILED", timeout=15)
    assert failed["attempt"] == 2
    assert len(sidecar.call("tasks.list", {"parentId": parent["id"]})["tasks"]) == 3  # spawned once


def test_dependencies_wait_then_run(sidecar: SidecarProcess) -> None:
    tasks = sidecar.call("tasks.createMany", {"tasks": [
        {"ref": "download", "type": "demo.sleep", "details": {"seconds": 0.3, "steps": 1}},
        {"ref": "convert", "type": "demo.noop", "dependsOn": ["download"]},
    ]})["tasks"]
    download, convert = tasks
    assert convert["status"] == "WAITING" and convert["dependsOn"] == [download["id"]]
    done = sidecar.wait_status(convert["id"], "COMPLETED", timeout=10)
    first_done = sidecar.call("tasks.get", {"id": download["id"]})
    assert done["startedAt"] >= first_done["completedAt"]


def test_a_failed_dependency_cascades(sidecar: SidecarProcess) -> None:
    a = sidecar.call("tasks.create", {"type": "demo.fail", "details": {"message": "no network"}})
    b = sidecar.call("tasks.create", {"type": "demo.noop", "dependsOn": [a["id"]]})
    c = sidecar.call("tasks.create", {"type": "demo.noop", "dependsOn": [b["id"]]})
    assert sidecar.wait_status(b["id"], "FAILED")["error"] == f"dependency {a['id']} failed"
    assert sidecar.wait_status(c["id"], "FAILED")["error"] == f"dependency {b['id']} failed"
    late = sidecar.call("tasks.create", {"type": "demo.noop", "dependsOn": [a["id"]]})
    assert late["status"] == "FAILED"  # accepted, and ends the same way at once


def test_a_cancelled_dependency_cancels_dependents(sidecar: SidecarProcess) -> None:
    a = sidecar.call("tasks.create", {"type": "demo.sleep", "details": {"seconds": 30}})
    b = sidecar.call("tasks.create", {"type": "demo.noop", "dependsOn": [a["id"]]})
    sidecar.call("tasks.cancel", {"id": a["id"]})
    assert sidecar.wait_status(b["id"], "CANCELLED")["error"] == f"dependency {a['id']} was cancelled"
    late = sidecar.call("tasks.create", {"type": "demo.noop", "dependsOn": [a["id"]]})
    assert late["status"] == "CANCELLED"


@pytest.mark.parametrize(
    "items, cycle_labels",
    [
        ([{"ref": "a", "type": "demo.noop", "dependsOn": ["a"]}], ["a", "a"]),
        ([
            {"ref": "a", "type": "demo.noop", "dependsOn": ["c"]},
            {"ref": "b", "type": "demo.noop", "dependsOn": ["a"]},
            {"ref": "c", "type": "demo.noop", "dependsOn": ["b"]},
        ], ["a", "c", "b", "a"]),
        ([
            {"ref": "parent", "type": "demo.noop"},
            {"ref": "child", "type": "demo.noop", "parentId": "parent", "dependsOn": ["parent"]},
        ], ["parent", "child", "parent"]),
    ],
)
def test_cycles_within_one_call_are_refused(sidecar: SidecarProcess, items, cycle_labels) -> None:
    err = sidecar.error("tasks.createMany", {"tasks": items})
    assert err.code == -32004
    labels = [n["ref"] for n in err.data["cycle"]]
    assert labels[0] == labels[-1] and sorted(set(labels)) == sorted(set(cycle_labels))
    assert len(labels) == len(cycle_labels)
    assert sidecar.call("tasks.stats")["total"] == 0


def test_cycles_through_existing_tasks_are_refused(start_sidecar) -> None:
    sidecar = start_sidecar("--concurrency", "1")
    blocker = sidecar.call("tasks.create", {"type": "demo.sleep", "details": {"seconds": 30}})
    parent = sidecar.call("tasks.create", {"type": "demo.noop", "dependsOn": [blocker["id"]]})
    # a child that waits for its own parent: the parent waits for its children
    err = sidecar.error("tasks.create", {"type": "demo.noop", "parentId": parent["id"], "dependsOn": [parent["id"]]})
    assert err.code == -32004 and parent["id"] in err.data["cycle"]
    # through a longer chain: x depends on parent; a child of parent depending on x closes the loop
    x = sidecar.call("tasks.create", {"type": "demo.noop", "dependsOn": [parent["id"]]})
    err = sidecar.error("tasks.create", {"type": "demo.noop", "parentId": parent["id"], "dependsOn": [x["id"]]})
    assert err.code == -32004 and {parent["id"], x["id"]} <= {n for n in err.data["cycle"] if isinstance(n, str)}
    # acyclic: depending on a sibling's dependency is fine
    ok = sidecar.call("tasks.create", {"type": "demo.noop", "parentId": parent["id"], "dependsOn": [blocker["id"]]})
    assert ok["status"] == "WAITING"


def test_unknown_dependency_is_invalid_params(sidecar: SidecarProcess) -> None:
    err = sidecar.error("tasks.create", {"type": "demo.noop", "dependsOn": ["nope"]})
    assert err.code == -32602 and err.data["field"] == "dependsOn[0]"
    err = sidecar.error("tasks.createMany", {"tasks": [{"type": "demo.noop"}, {"type": "demo.noop", "dependsOn": ["x"]}]})
    assert err.data["field"] == "tasks[1].dependsOn[0]"


def test_a_terminal_parent_takes_no_children(sidecar: SidecarProcess) -> None:
    parent = sidecar.call("tasks.create", {"type": "demo.noop"})
    sidecar.wait_status(parent["id"], "COMPLETED")
    err = sidecar.error("tasks.create", {"type": "demo.noop", "parentId": parent["id"]})
    assert err.code == -32002


def test_pause_a_running_batch_kill_restart_resume_finish(start_sidecar, db_path: Path) -> None:
    first = start_sidecar("--concurrency", "2")
    tasks = first.call("tasks.createMany", {"tasks": [
        {"ref": "p", "type": "demo.noop"},
        *({"type": "demo.sleep", "parentId": "p", "details": {"seconds": 1.5, "steps": 15}} for _ in range(4)),
    ]})["tasks"]
    parent, children = tasks[0], tasks[1:]
    first.wait_notification(
        lambda m: m["method"] == "task.updated" and m["params"]["task"]["parentId"] == parent["id"]
        and m["params"]["task"]["progress"] >= 20
    )
    first.call("tasks.pause", {"id": parent["id"]})
    for c in children:
        first.wait_status(c["id"], "PAUSED", timeout=10)
    assert first.call("tasks.get", {"id": parent["id"]})["status"] == "PAUSED"
    paused_progress = {c["id"]: first.call("tasks.get", {"id": c["id"]})["progress"] for c in children}
    first.kill()

    second = start_sidecar("--concurrency", "2")
    assert second.ready["recovered"] == {"requeued": 0, "failed": 0, "cancelled": 0, "paused": 0}
    assert all(second.call("tasks.get", {"id": c["id"]})["status"] == "PAUSED" for c in children)
    resumed = second.call("tasks.resume", {"id": parent["id"]})
    assert resumed["status"] in ("WAITING", "QUEUED")
    done = second.wait_status(parent["id"], "COMPLETED", timeout=20)
    assert done["result"]["children"]["completed"] == 4
    results = [second.call("tasks.get", {"id": c["id"]})["result"] for c in children]
    resumed_from = [r["resumedFrom"] for r in results]
    assert sum(resumed_from) > 0  # the interrupted children continued from their checkpoints
    assert any(paused_progress[c["id"]] > 0 for c in children)


def test_queue_pause_resume_and_concurrency_persist(start_sidecar) -> None:
    first = start_sidecar()
    state = first.call("queue.pause", {})
    assert state["paused"] is True
    task = first.call("tasks.create", {"type": "demo.noop"})
    first.call("queue.setConcurrency", {"limit": 2})
    first.call("queue.pause", {"type": "demo.sleep"})
    assert first.call("tasks.get", {"id": task["id"]})["status"] == "QUEUED"
    first.stop()

    second = start_sidecar()
    state = second.call("queue.status")
    assert state == {"paused": True, "pausedTypes": ["demo.sleep"], "concurrency": 2, "typeConcurrency": {}}
    assert second.call("system.info")["concurrency"] == 2
    sleeper = second.call("tasks.create", {"type": "demo.sleep", "details": {"seconds": 0.1}})
    second.call("queue.resume", {})
    second.wait_status(task["id"], "COMPLETED")
    assert second.call("tasks.get", {"id": sleeper["id"]})["status"] == "QUEUED"  # its type is still paused
    second.call("queue.resume", {"type": "demo.sleep"})
    second.wait_status(sleeper["id"], "COMPLETED")
    second.call("queue.setConcurrency", {"type": "demo.sleep", "limit": 1})
    assert second.call("queue.status")["typeConcurrency"] == {"demo.sleep": 1}


def test_deleting_a_parent_removes_its_subtree(sidecar: SidecarProcess) -> None:
    tasks = sidecar.call("tasks.createMany", {"tasks": batch(3, seconds=0.05)})["tasks"]
    sidecar.wait_status(tasks[0]["id"], "COMPLETED", timeout=10)
    assert sidecar.call("tasks.delete", {"id": tasks[0]["id"]}) == {"deleted": 4}
    assert sidecar.call("tasks.stats")["total"] == 0


def test_stats_stay_exact_through_every_kind_of_change(start_sidecar, db_path: Path) -> None:
    first = start_sidecar("--concurrency", "2")
    batch_tasks = first.call("tasks.createMany", {"tasks": batch(6, fail={2}, seconds=0.2)})["tasks"]
    chain = first.call("tasks.createMany", {"tasks": [
        {"ref": "a", "type": "demo.fail"}, {"ref": "b", "type": "demo.noop", "dependsOn": ["a"]},
    ]})["tasks"]
    long = first.call("tasks.create", {"type": "demo.sleep", "details": {"seconds": 30}})
    paused = first.call("tasks.create", {"type": "demo.noop", "runAt": 4_000_000_000_000})
    first.call("tasks.pause", {"id": paused["id"]})
    first.wait_status(batch_tasks[0]["id"], "FAILED", timeout=15)
    first.wait_status(chain[1]["id"], "FAILED")
    first.wait_status(long["id"], "RUNNING")
    first.call("tasks.retry", {"id": chain[0]["id"]})
    first.call("tasks.delete", {"id": batch_tasks[0]["id"]}) if first.call(
        "tasks.get", {"id": batch_tasks[0]["id"]})["status"] == "FAILED" and all(
        first.call("tasks.get", {"id": t["id"]})["status"] in ("COMPLETED", "FAILED", "CANCELLED")
        for t in batch_tasks[1:]) else None
    first.kill()  # the running one is recovered at the next start
    second = start_sidecar()
    deadline = time.monotonic() + 10
    while second.call("tasks.get", {"id": chain[0]["id"]})["status"] != "FAILED":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    second.call("tasks.prune", {"statuses": ["CANCELLED"]})
    stats = second.call("tasks.stats")
    truth: dict[str, dict[str, int]] = {}
    for type_, status, n in db_rows(db_path, "SELECT type, status, COUNT(*) FROM tasks GROUP BY 1, 2"):
        truth.setdefault(type_, {})[status] = n
    assert stats["byType"] == truth
    assert stats["total"] == sum(sum(v.values()) for v in truth.values())


def test_a_tree_listed_children_first_is_created_parents_first_and_runs_to_the_root(sidecar: SidecarProcess) -> None:
    items = [
        {"ref": "clip", "type": "demo.noop", "parentId": "video"},
        {"ref": "video", "type": "demo.noop", "parentId": "playlist"},
        {"ref": "thumb", "type": "demo.noop", "parentId": "video"},
        {"ref": "playlist", "type": "demo.noop"},
        {"ref": "other", "type": "demo.noop", "parentId": "playlist"},
    ]
    tasks = sidecar.call("tasks.createMany", {"tasks": items})["tasks"]
    ids = {item["ref"]: task["id"] for item, task in zip(items, tasks)}
    assert [t["parentId"] for t in tasks] == [ids["video"], ids["playlist"], ids["video"], None, ids["playlist"]]
    assert sidecar.wait_status(ids["playlist"], "COMPLETED")["status"] == "COMPLETED"
    tree = sidecar.call("tasks.tree", {"id": ids["playlist"]})
    assert sorted(child["id"] for child in tree["children"]) == sorted([ids["video"], ids["other"]])
    video = next(child for child in tree["children"] if child["id"] == ids["video"])
    assert sorted(child["id"] for child in video["children"]) == sorted([ids["clip"], ids["thumb"]])


@pytest.mark.parametrize("policy", ["fail", "continue"])
def test_cancelling_a_waiting_parent_whose_children_have_not_started_ends_it_cancelled(
    sidecar: SidecarProcess, policy: str
) -> None:
    sidecar.call("queue.pause", {"type": "demo.sleep"})  # the children stay QUEUED
    tasks = sidecar.call("tasks.createMany", {"tasks": batch(2, policy=policy)})["tasks"]
    parent = tasks[0]
    sidecar.wait_status(parent["id"], "WAITING")  # its own handler returned
    answered = sidecar.call("tasks.cancel", {"id": parent["id"]})
    # settling its last child's cancellation used to complete (continue) or fail (fail) it instead
    assert answered["status"] == "CANCELLED" and answered["error"] is None
    assert all(status_of(sidecar, c["id"]) == "CANCELLED" for c in tasks[1:])
    assert [u["status"] for u in sidecar.updates(parent["id"])][-1] == "CANCELLED"


def test_cancel_after_pause_wins_while_the_handler_is_still_stopping(start_sidecar) -> None:
    sidecar = start_sidecar("--handlers", "fixture_handlers")
    task = sidecar.call("tasks.create", {"type": "test.slow_to_stop", "details": {"every": 1.0}})
    sidecar.wait_status(task["id"], "RUNNING")
    assert sidecar.call("tasks.pause", {"id": task["id"]})["status"] == "RUNNING"  # pausing
    sidecar.call("tasks.cancel", {"id": task["id"]})  # before the handler noticed the pause
    done = sidecar.wait_status(task["id"], "PAUSED", "CANCELLED", timeout=10)
    assert done["status"] == "CANCELLED"


def test_cancel_after_pause_of_a_batch_cancels_the_whole_subtree(start_sidecar) -> None:
    sidecar = start_sidecar("--handlers", "fixture_handlers")
    parent, *children = sidecar.call("tasks.createMany", {"tasks": [
        {"ref": "p", "type": "demo.noop"},
        *[{"type": "test.slow_to_stop", "parentId": "p", "details": {"every": 1.0}} for _ in range(2)],
    ]})["tasks"]
    for child in children:
        sidecar.wait_status(child["id"], "RUNNING")
    sidecar.call("tasks.pause", {"id": parent["id"]})
    sidecar.call("tasks.cancel", {"id": parent["id"]})
    for child in children:
        assert sidecar.wait_status(child["id"], "PAUSED", "CANCELLED", timeout=10)["status"] == "CANCELLED"
    tree = sidecar.call("tasks.tree", {"id": parent["id"]})
    assert tree["status"] == "CANCELLED" and tree["childCounts"] == {"CANCELLED": 2}


def test_cancel_while_a_timeout_is_being_handled_ends_the_task_instead_of_retrying_it(start_sidecar) -> None:
    sidecar = start_sidecar("--handlers", "fixture_handlers")
    task = sidecar.call("tasks.create", {"type": "test.slow_to_stop_timeout", "details": {"every": 1.0}})
    sidecar.wait_status(task["id"], "RUNNING")
    time.sleep(0.7)  # the 0.5 s timeout fired; the handler looks again at 1.0 s
    sidecar.call("tasks.cancel", {"id": task["id"]})
    done = sidecar.wait_status(task["id"], "CANCELLED", "FAILED", timeout=10)
    assert done["status"] == "CANCELLED" and done["attempt"] == 1
    statuses = [u["status"] for u in sidecar.updates(task["id"])]
    assert "QUEUED" not in statuses[1:]  # never put back for a retry


def test_a_parent_whose_handler_fails_cancels_its_children_and_prune_spares_them_until_they_stop(
    start_sidecar,
) -> None:
    sidecar = start_sidecar("--handlers", "fixture_handlers", "--grace-seconds", "1.5")
    root, middle = sidecar.call("tasks.createMany", {"tasks": [
        {"ref": "root", "type": "demo.noop", "onChildFailure": "continue"},
        {"type": "test.spawn_then_fail", "parentId": "root", "details": {"n": 2}},
    ]})["tasks"]
    assert sidecar.wait_status(middle["id"], "FAILED")["error"].endswith("the parent failed after spawning")
    assert sidecar.wait_status(root["id"], "COMPLETED")["result"]["children"]["failed"] == 1
    grandchildren = sidecar.call("tasks.list", {"parentId": middle["id"]})["tasks"]
    assert len(grandchildren) == 2
    # the children ignore the stop: still RUNNING while their grace period lasts
    assert {status_of(sidecar, g["id"]) for g in grandchildren} == {"RUNNING"}
    assert sidecar.call("tasks.prune", {})["deleted"] == 0  # not while handlers run below the root
    for g in grandchildren:
        sidecar.wait_status(g["id"], "CANCELLED", timeout=10)
    assert sidecar.call("tasks.prune", {})["deleted"] == 4


def test_prune_leaves_the_finished_children_of_a_batch_still_running(sidecar: SidecarProcess) -> None:
    # the batch's result counts its children when the last one ends: pruned ones went uncounted
    # (a failed child reported as failed: 0)
    parent, ok, bad, slow = sidecar.call("tasks.createMany", {"tasks": [
        {"ref": "p", "type": "demo.noop", "onChildFailure": "continue"},
        {"parentId": "p", "type": "demo.noop"},
        {"parentId": "p", "type": "demo.fail"},
        {"parentId": "p", "type": "demo.sleep", "details": {"seconds": 1.5, "steps": 1}},
    ]})["tasks"]
    sidecar.wait_status(ok["id"], "COMPLETED")
    sidecar.wait_status(bad["id"], "FAILED")
    assert sidecar.call("tasks.prune", {})["deleted"] == 0
    done = sidecar.wait_status(parent["id"], "COMPLETED", timeout=10)
    assert done["result"]["children"] == {"completed": 2, "failed": 1, "cancelled": 0}
    assert sidecar.call("tasks.prune", {})["deleted"] == 4


def test_tasks_failed_by_recovery_settle_their_dependents_and_parents(start_sidecar, db_path: Path) -> None:
    first = start_sidecar()
    long_run = {"type": "demo.sleep", "details": {"seconds": 30}, "maxAttempts": 1}
    made = first.call("tasks.createMany", {"tasks": [
        {"ref": "a", **long_run},
        {"ref": "b", "type": "demo.noop", "dependsOn": ["a"]},
        {"ref": "keep_going", "type": "demo.noop", "onChildFailure": "continue"},
        {"ref": "c", "parentId": "keep_going", **long_run},
        {"ref": "fail_fast", "type": "demo.noop"},
        {"ref": "d", "parentId": "fail_fast", **long_run},
        {"ref": "e", "parentId": "fail_fast", "type": "demo.sleep", "runAt": 4102444800000},
    ]})["tasks"]
    a, b, keep_going, c, fail_fast, d, e = (t["id"] for t in made)
    for task_id in (a, c, d):
        first.wait_status(task_id, "RUNNING")
    first.wait_status(fail_fast, "WAITING")
    first.kill()  # a, c and d were on their last attempt

    second = start_sidecar()
    assert second.ready["recovered"] == {"requeued": 0, "failed": 3, "cancelled": 0, "paused": 0}
    by_id = {row[0]: row[1:] for row in db_rows(db_path, "SELECT id, status, error, result FROM tasks")}
    assert by_id[b][:2] == ("FAILED", f"dependency {a} failed")
    assert by_id[keep_going][0] == "COMPLETED" and '"failed":1' in by_id[keep_going][2]
    assert by_id[fail_fast][0] == "FAILED" and d in by_id[fail_fast][1]
    assert by_id[e][0] == "CANCELLED"
    counts = second.call("tasks.stats")["byStatus"]
    assert counts.get("WAITING", 0) == 0 and counts.get("RUNNING", 0) == 0


def test_recovery_recomputes_progress_up_a_nested_batch_and_the_sidecar_starts(start_sidecar, db_path: Path) -> None:
    # A task failed by recovery changes its parent's progress, which changes the grandparent's:
    # recovery once iterated the set of parents to update while adding to it, and crashed at every
    # start on that database.
    first = start_sidecar()
    long_run = {"type": "demo.sleep", "details": {"seconds": 30, "steps": 30}}
    made = first.call("tasks.createMany", {"tasks": [
        {"ref": "last_try", **long_run, "maxAttempts": 1},
        {"ref": "playlist", **long_run},
        {"ref": "album", **long_run, "parentId": "playlist", "onChildFailure": "continue"},
        {"ref": "track", "type": "demo.noop", "parentId": "album", "dependsOn": ["last_try"]},
        {"ref": "other_track", **long_run, "parentId": "album"},
    ]})["tasks"]
    last_try, playlist, album, track, _ = (t["id"] for t in made)
    for task_id in (last_try, playlist, album):
        first.wait_status(task_id, "RUNNING")
    first.kill()

    second = start_sidecar()
    assert second.ready["recovered"]["failed"] == 1
    assert second.call("tasks.get", {"id": track})["status"] == "FAILED"
    assert second.call("tasks.get", {"id": album})["progress"] > 0  # the failed track counts as done


def test_stats_forget_a_task_deleted_in_the_transaction_that_first_gave_its_status(sidecar: SidecarProcess, db_path: Path) -> None:
    first = sidecar.call("tasks.create", {"type": "demo.sleep", "details": {"seconds": 30}})
    sidecar.call("tasks.cancel", {"id": first["id"]})
    sidecar.wait_status(first["id"], "CANCELLED")
    # one batch, one transaction: a demo.noop cancelled at once (its dependency was), then pruned
    sidecar.send([
        {"jsonrpc": "2.0", "id": "c", "method": "tasks.create",
         "params": {"type": "demo.noop", "dependsOn": [first["id"]]}},
        {"jsonrpc": "2.0", "id": "p", "method": "tasks.prune", "params": {}},
    ])
    batch = sidecar.wait_message(lambda m: isinstance(m, list))
    assert {r["id"]: r["result"] for r in batch}["p"] == {"deleted": 2}
    stats = sidecar.call("tasks.stats")
    assert stats["total"] == 0 and stats["byType"] == {} and not any(stats["byStatus"].values())
    assert db_rows(db_path, 'SELECT * FROM "task_counts" WHERE "n" != 0') == []


def test_retrying_a_failed_batch_while_a_child_is_still_stopping_runs_that_child_again(start_sidecar, tmp_path) -> None:
    sidecar = start_sidecar("--handlers", "fixture_handlers")
    parent, failing, slow = sidecar.call("tasks.createMany", {"tasks": [
        {"ref": "p", "type": "demo.noop"},
        {"type": "test.fail_once", "parentId": "p", "details": {"marker": str(tmp_path / "failed-once")}},
        {"type": "test.slow_to_stop", "parentId": "p", "details": {"seconds": 2, "every": 1.0}},
    ]})["tasks"]
    sidecar.wait_status(parent["id"], "FAILED")  # the first child failed; the slow one is told to stop
    assert sidecar.call("tasks.get", {"id": slow["id"]})["status"] == "RUNNING"
    retried = sidecar.call("tasks.retry", {"id": parent["id"]})
    # the slow child, still stopping for the failure, goes back to QUEUED rather than CANCELLED
    # (which would fail the retried batch again), and runs again with it
    done = sidecar.wait_notification(lambda m: m["method"] == "task.updated"
                                     and m["params"]["task"]["id"] == parent["id"]
                                     and m["params"]["task"]["version"] > retried["version"]
                                     and m["params"]["task"]["status"] in ("COMPLETED", "FAILED"),
                                     timeout=15)["params"]["task"]
    assert done["status"] == "COMPLETED", done["error"]
    assert sidecar.call("tasks.get", {"id": slow["id"]})["status"] == "COMPLETED"
