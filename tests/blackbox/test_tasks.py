"""Task behaviour as a client over stdio sees it."""

from __future__ import annotations

import sys
import time
from typing import Any

import orjson
import pytest

from tests.sidecar_client import SidecarProcess


def test_a_task_runs_with_progress_announced_in_order(sidecar: SidecarProcess) -> None:
    task = sidecar.call("tasks.create", {"type": "demo.sleep", "details": {"seconds": 0.4, "steps": 4}})
    assert task["status"] == "QUEUED" and task["attempt"] == 0 and task["version"] == 1
    done = sidecar.wait_status(task["id"], "COMPLETED")
    assert done["progress"] == 100
    assert done["result"] == {"steps": 4, "resumedFrom": 0}
    assert done["attempt"] == 1 and done["completedAt"] >= done["startedAt"] >= done["createdAt"]

    updates = sidecar.updates(task["id"])
    statuses = [u["status"] for u in updates]
    assert statuses[0] == "QUEUED" and statuses[1] == "RUNNING" and statuses[-1] == "COMPLETED"
    progress = [u["progress"] for u in updates if u["status"] in ("RUNNING", "COMPLETED")]
    assert progress == sorted(progress) and progress[-1] == 100
    assert [u["version"] for u in updates] == list(range(1, len(updates) + 1))
    seqs = [n["params"]["seq"] for n in sidecar.notifications if n["method"] == "task.updated"]
    assert seqs == list(range(1, len(seqs) + 1))
    assert sidecar.call("tasks.get", {"id": task["id"]}) == done


def test_progress_is_coalesced_and_the_last_value_arrives(start_sidecar) -> None:
    sidecar = start_sidecar()
    task = sidecar.call("tasks.create", {"type": "demo.sleep", "details": {"seconds": 1.0, "steps": 1000}})
    sidecar.wait_status(task["id"], "COMPLETED", timeout=15)
    updates = sidecar.updates(task["id"])
    running = [u for u in updates if u["status"] == "RUNNING"]
    assert 3 <= len(running) <= 20  # 1,000 reports in ~1 s become about 10 announcements
    assert updates[-1]["progress"] == 100 and updates[-1]["message"] == "step 1000/1000"


def test_the_latest_progress_arrives_even_when_the_handler_goes_quiet(start_sidecar) -> None:
    sidecar = start_sidecar("--handlers", "fixture_handlers")
    task = sidecar.call("tasks.create", {"type": "test.burst"})
    quiet = sidecar.wait_notification(
        lambda m: m["method"] == "task.updated" and m["params"]["task"]["id"] == task["id"]
        and m["params"]["task"]["progress"] == 50, timeout=5,
    )["params"]["task"]
    assert quiet["status"] == "RUNNING" and quiet["message"] == "burst 500"
    sidecar.wait_status(task["id"], "COMPLETED")


def test_cancel_a_running_task(sidecar: SidecarProcess) -> None:
    task = sidecar.call("tasks.create", {"type": "demo.sleep", "details": {"seconds": 30, "steps": 300}})
    sidecar.wait_status(task["id"], "RUNNING")
    sidecar.call("tasks.cancel", {"id": task["id"]})
    cancelled = sidecar.wait_status(task["id"], "CANCELLED", timeout=5)
    assert cancelled["completedAt"] is not None
    # a terminal task is never moved by the scheduler, and cannot be cancelled twice
    err = sidecar.error("tasks.cancel", {"id": task["id"]})
    assert err.code == -32002 and err.data == {"id": task["id"], "from": "CANCELLED", "to": "CANCELLED"}


def test_cancel_a_queued_task_is_immediate(start_sidecar) -> None:
    sidecar = start_sidecar("--concurrency", "1")
    blocker = sidecar.call("tasks.create", {"type": "demo.sleep", "details": {"seconds": 2, "steps": 2}})
    queued = sidecar.call("tasks.create", {"type": "demo.noop"})
    sidecar.wait_status(blocker["id"], "RUNNING")
    cancelled = sidecar.call("tasks.cancel", {"id": queued["id"]})
    assert cancelled["status"] == "CANCELLED"
    sidecar.call("tasks.cancel", {"id": blocker["id"]})
    sidecar.wait_status(blocker["id"], "CANCELLED")
    assert sidecar.call("tasks.get", {"id": queued["id"]})["attempt"] == 0  # never started


def test_a_handler_ignoring_cancel_is_abandoned_after_the_grace_period(start_sidecar) -> None:
    sidecar = start_sidecar("--handlers", "fixture_handlers", "--grace-seconds", "0.5", "--concurrency", "1")
    stuck = sidecar.call("tasks.create", {"type": "test.ignores_cancel", "details": {"seconds": 30}})
    after = sidecar.call("tasks.create", {"type": "demo.noop"})
    sidecar.wait_status(stuck["id"], "RUNNING")
    sidecar.call("tasks.cancel", {"id": stuck["id"]})
    sidecar.wait_status(stuck["id"], "CANCELLED", timeout=5)
    sidecar.wait_status(after["id"], "COMPLETED", timeout=5)  # the slot was freed


def test_the_pool_keeps_its_size_while_abandoned_handlers_hang(start_sidecar) -> None:
    # One thread stays stuck in each abandoned handler. Every task after it must still get a
    # thread of its own (the pool once lost one: from the second task on, tasks sat RUNNING
    # with no handler until the stuck one returned).
    sidecar = start_sidecar("--handlers", "fixture_handlers", "--grace-seconds", "0.3", "--concurrency", "1")
    for _ in range(2):
        stuck = sidecar.call("tasks.create", {"type": "test.ignores_cancel", "details": {"seconds": 60}})
        sidecar.wait_status(stuck["id"], "RUNNING")
        sidecar.call("tasks.cancel", {"id": stuck["id"]})
        sidecar.wait_status(stuck["id"], "CANCELLED", timeout=5)
        for _ in range(3):
            task = sidecar.call("tasks.create", {"type": "demo.noop"})
            sidecar.wait_status(task["id"], "COMPLETED", timeout=5)


def test_failures_are_retried_with_backoff_then_fail(start_sidecar) -> None:
    sidecar = start_sidecar("--handlers", "fixture_handlers")
    task = sidecar.call("tasks.create", {"type": "test.flaky", "details": {"succeed_on": 99}})
    failed = sidecar.wait_status(task["id"], "FAILED", timeout=15)
    assert failed["attempt"] == 3 and failed["maxAttempts"] == 3
    assert failed["error"] == "RuntimeError: flaky failure on attempt 3"
    updates = sidecar.updates(task["id"])
    requeues = [u for u in updates if u["status"] == "QUEUED" and u["attempt"] > 0]
    assert len(requeues) == 2
    for u in requeues:  # backoff: not due before ~0.1 s, 0.2 s (x0.8 jitter)
        assert u["runAt"] - u["updatedAt"] >= 0.08 * 1000 * (2 ** (u["attempt"] - 1))
        assert u["error"].startswith("RuntimeError: flaky failure")


def test_a_flaky_task_succeeds_on_a_later_attempt(start_sidecar) -> None:
    sidecar = start_sidecar("--handlers", "fixture_handlers")
    task = sidecar.call("tasks.create", {"type": "test.flaky", "details": {"succeed_on": 2}})
    done = sidecar.wait_status(task["id"], "COMPLETED", timeout=10)
    assert done["result"] == {"attempt": 2}
    assert done["error"] is None  # the first attempt's error is cleared by the success


def test_non_retryable_failure_fails_at_once_and_retry_starts_a_new_series(sidecar: SidecarProcess) -> None:
    task = sidecar.call("tasks.create", {"type": "demo.fail", "details": {"message": "boom"}})
    failed = sidecar.wait_status(task["id"], "FAILED")
    assert failed["attempt"] == 1 and failed["error"] == "boom"
    again = sidecar.call("tasks.retry", {"id": task["id"]})
    assert again["status"] == "QUEUED" and again["attempt"] == 0 and again["error"] is None
    failed2 = sidecar.wait_notification(
        lambda m: m["method"] == "task.updated" and m["params"]["task"]["id"] == task["id"]
        and m["params"]["task"]["status"] == "FAILED" and m["params"]["task"]["version"] > failed["version"]
    )["params"]["task"]
    assert failed2["attempt"] == 1
    err = sidecar.error("tasks.retry", {"id": sidecar.call("tasks.create", {"type": "demo.noop"})["id"]})
    assert err.code == -32002


def test_retryable_demo_failure_uses_all_attempts(sidecar: SidecarProcess) -> None:
    task = sidecar.call(
        "tasks.create", {"type": "demo.fail", "details": {"retryable": True}, "maxAttempts": 2}
    )
    failed = sidecar.wait_status(task["id"], "FAILED", timeout=10)
    assert failed["attempt"] == 2 and failed["error"] == "demo failure"


def test_timeout_fails_the_attempt(start_sidecar) -> None:
    sidecar = start_sidecar("--handlers", "fixture_handlers")
    task = sidecar.call("tasks.create", {"type": "test.slow"})
    failed = sidecar.wait_status(task["id"], "FAILED", timeout=10)
    assert failed["error"] == "timed out after 0.5s"


def test_a_result_that_is_not_json_fails_the_task(start_sidecar) -> None:
    sidecar = start_sidecar("--handlers", "fixture_handlers")
    task = sidecar.call("tasks.create", {"type": "test.bad_result"})
    failed = sidecar.wait_status(task["id"], "FAILED")
    assert "result is not JSON" in failed["error"]


def test_idempotency_key_returns_the_existing_task(sidecar: SidecarProcess) -> None:
    first = sidecar.call("tasks.create", {"type": "demo.noop", "idempotencyKey": "video-42"})
    second = sidecar.call("tasks.create", {"type": "demo.noop", "idempotencyKey": "video-42"})
    assert second["id"] == first["id"]
    many = sidecar.call("tasks.createMany", {"tasks": [
        {"type": "demo.noop", "idempotencyKey": "video-42"},
        {"type": "demo.noop", "idempotencyKey": "video-43"},
        {"type": "demo.noop", "idempotencyKey": "video-43"},
    ]})["tasks"]
    assert many[0]["id"] == first["id"] and many[1]["id"] == many[2]["id"] != first["id"]
    assert sidecar.call("tasks.stats")["total"] == 2


def test_create_many_is_all_or_nothing_and_in_request_order(sidecar: SidecarProcess) -> None:
    err = sidecar.error("tasks.createMany", {"tasks": [
        {"type": "demo.noop"}, {"type": "demo.noop", "parentId": "missing"}
    ]})
    assert err.code == -32602 and err.data["field"] == "tasks[1].parentId"
    assert sidecar.call("tasks.stats")["total"] == 0
    tasks = sidecar.call("tasks.createMany", {"tasks": [
        {"type": "demo.noop", "details": {"n": i}} for i in range(200)
    ]})["tasks"]
    assert [t["details"]["n"] for t in tasks] == list(range(200))
    for t in tasks:
        sidecar.wait_status(t["id"], "COMPLETED")


def test_priority_then_age_decides_the_order(start_sidecar) -> None:
    sidecar = start_sidecar("--concurrency", "1")
    blocker = sidecar.call("tasks.create", {"type": "demo.sleep", "details": {"seconds": 0.5, "steps": 1}})
    sidecar.wait_status(blocker["id"], "RUNNING")
    low = sidecar.call("tasks.create", {"type": "demo.noop", "priority": 0})
    old_high = sidecar.call("tasks.create", {"type": "demo.noop", "priority": 5})
    new_high = sidecar.call("tasks.create", {"type": "demo.noop", "priority": 5})
    for t in (low, old_high, new_high):
        sidecar.wait_status(t["id"], "COMPLETED")
    started = [u["id"] for u in sidecar.updates() if u["status"] == "RUNNING" and u["progress"] == 0]
    assert started == [blocker["id"], old_high["id"], new_high["id"], low["id"]]


def test_a_task_started_as_it_is_inserted_is_written_as_a_claim_would(start_sidecar) -> None:
    # On an idle queue a lone create is written RUNNING at once (no insert-then-claim); with the
    # slot taken, the next one is claimed later. The client must not be able to tell them apart.
    sidecar = start_sidecar("--concurrency", "1")
    idle = sidecar.call("tasks.create", {"type": "demo.sleep", "details": {"seconds": 0.3, "steps": 1}})
    sidecar.wait_status(idle["id"], "RUNNING")
    claimed = sidecar.call("tasks.create", {"type": "demo.noop"})
    assert claimed["status"] == "QUEUED"
    for task in (idle, claimed):
        done = sidecar.wait_status(task["id"], "COMPLETED")
        updates = sidecar.updates(task["id"])
        queued, running = updates[0], updates[1]
        assert task == queued and queued["status"] == "QUEUED" and queued["version"] == 1
        assert running["status"] == "RUNNING" and running["version"] == 2 and running["attempt"] == 1
        assert running["startedAt"] == running["updatedAt"] >= queued["createdAt"]
        assert running["completedAt"] is None and running["progress"] == 0
        assert {k: v for k, v in running.items() if k not in ("status", "version", "attempt", "startedAt", "updatedAt")} \
            == {k: v for k, v in queued.items() if k not in ("status", "version", "attempt", "startedAt", "updatedAt")}
        assert done == updates[-1] == sidecar.call("tasks.get", {"id": task["id"]})
    # the status counts behind tasks.stats were kept by both paths
    assert {s: n for s, n in sidecar.call("tasks.stats")["byStatus"].items() if n} == {"COMPLETED": 2}


@pytest.mark.parametrize("wait", [0, 0.05, 0.3])
def test_the_announced_completion_is_the_stored_task(start_sidecar, wait: float) -> None:
    # Progress written in a transaction of its own (wait > 0) or in the one that completes the task
    # (wait 0): either way the COMPLETED task announced is exactly what is stored, versions one
    # apart, the handler's message kept.
    sidecar = start_sidecar("--handlers", "fixture_handlers")
    tasks = [sidecar.call("tasks.create", {"type": "test.report_then_return", "details": {"wait": wait}})
             for _ in range(8)]
    for task in tasks:
        done = sidecar.wait_status(task["id"], "COMPLETED")
        updates = sidecar.updates(task["id"])
        assert done == updates[-1] == sidecar.call("tasks.get", {"id": task["id"]})
        assert [u["version"] for u in updates] == list(range(1, len(updates) + 1))
        assert done["message"] == "fetched" and done["progress"] == 100 and done["result"] == {"done": True}
        assert done["completedAt"] == done["updatedAt"] and done["error"] is None


def test_a_paused_type_or_a_full_queue_keeps_a_new_task_queued(start_sidecar) -> None:
    sidecar = start_sidecar("--concurrency", "1")
    sidecar.call("queue.pause", {"type": "demo.noop"})
    paused = sidecar.call("tasks.create", {"type": "demo.noop"})
    blocker = sidecar.call("tasks.create", {"type": "demo.sleep", "details": {"seconds": 0.4, "steps": 1}})
    sidecar.wait_status(blocker["id"], "RUNNING")
    waiting = sidecar.call("tasks.create", {"type": "demo.sleep", "details": {"seconds": 0, "steps": 1}})
    assert [u["status"] for u in sidecar.updates(paused["id"])] == ["QUEUED"]
    assert [u["status"] for u in sidecar.updates(waiting["id"])] == ["QUEUED"]
    sidecar.wait_status(waiting["id"], "COMPLETED")
    assert [u["status"] for u in sidecar.updates(paused["id"])] == ["QUEUED"]
    sidecar.call("queue.resume", {"type": "demo.noop"})
    sidecar.wait_status(paused["id"], "COMPLETED")
    assert {s: n for s, n in sidecar.call("tasks.stats")["byStatus"].items() if n} == {"COMPLETED": 3}


def test_run_at_delays_the_start(sidecar: SidecarProcess) -> None:
    run_at = int(time.time() * 1000) + 700
    task = sidecar.call("tasks.create", {"type": "demo.noop", "runAt": run_at})
    running = sidecar.wait_status(task["id"], "RUNNING", timeout=5)
    assert running["startedAt"] >= run_at


def test_per_type_concurrency_limit(start_sidecar) -> None:
    sidecar = start_sidecar("--handlers", "fixture_handlers", "--concurrency", "4")
    tasks = [sidecar.call("tasks.create", {"type": "test.one_at_a_time", "details": {"seconds": 0.2}}) for _ in range(3)]
    for t in tasks:
        sidecar.wait_status(t["id"], "COMPLETED")
    running, peak = 0, 0
    for u in sidecar.updates():
        if u["status"] == "RUNNING" and u["progress"] == 0 and u["version"] == 2:
            running += 1
        elif u["status"] == "COMPLETED":
            running -= 1
        peak = max(peak, running)
    assert peak == 1


def test_list_filters_and_paginates_newest_first(sidecar: SidecarProcess) -> None:
    created = sidecar.call("tasks.createMany", {"tasks": [
        {"type": "demo.noop" if i % 2 else "demo.fail", "details": {} } for i in range(25)
    ]})["tasks"]
    for t in created:
        sidecar.wait_status(t["id"], "COMPLETED", "FAILED")
    seen: list[str] = []
    cursor = None
    while True:
        page = sidecar.call("tasks.list", {"limit": 7, **({"cursor": cursor} if cursor else {})})
        seen += [t["id"] for t in page["tasks"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == [t["id"] for t in reversed(created)]
    failed = sidecar.call("tasks.list", {"status": ["FAILED"], "limit": 100})["tasks"]
    assert len(failed) == 13 and all(t["type"] == "demo.fail" for t in failed)
    assert sidecar.call("tasks.list", {"type": ["demo.noop"]})["tasks"][0]["type"] == "demo.noop"
    for bad in ({"limit": 0}, {"limit": 1001}, {"cursor": "not-a-cursor"}, {"status": ["DONE"]}):
        err = sidecar.error("tasks.list", bad)
        assert err.code == -32602 and err.data["field"] in ("limit", "cursor", "status[0]")


def test_stats_delete_and_prune(sidecar: SidecarProcess) -> None:
    a = sidecar.call("tasks.create", {"type": "demo.noop"})
    b = sidecar.call("tasks.create", {"type": "demo.fail"})
    long = sidecar.call("tasks.create", {"type": "demo.sleep", "details": {"seconds": 30}})
    sidecar.wait_status(a["id"], "COMPLETED")
    sidecar.wait_status(b["id"], "FAILED")
    sidecar.wait_status(long["id"], "RUNNING")
    stats = sidecar.call("tasks.stats")
    assert stats["total"] == 3
    assert stats["byStatus"]["COMPLETED"] == 1 and stats["byStatus"]["FAILED"] == 1 and stats["byStatus"]["RUNNING"] == 1
    assert stats["byType"]["demo.fail"] == {"FAILED": 1}
    assert sidecar.error("tasks.delete", {"id": long["id"]}).code == -32002
    assert sidecar.call("tasks.delete", {"id": a["id"]}) == {"deleted": 1}
    assert sidecar.error("tasks.get", {"id": a["id"]}).code == -32001
    deleted = sidecar.wait_notification(lambda m: m["method"] == "task.deleted")
    assert deleted["params"] == {"ids": [a["id"]]}
    assert sidecar.call("tasks.prune", {"olderThanMs": 3_600_000}) == {"deleted": 0}
    assert sidecar.call("tasks.prune", {}) == {"deleted": 1}
    assert sidecar.call("tasks.stats")["total"] == 1


def test_clearing_finished_tasks_takes_one_that_just_finished(sidecar: SidecarProcess) -> None:
    # An Activity Center's "clear finished" pressed the moment a task ends: the prune often runs in
    # the very millisecond the task finished in, and must still take it
    for _ in range(40):
        task = sidecar.call("tasks.create", {"type": "demo.noop"})
        sidecar.wait_status(task["id"], "COMPLETED")
        assert sidecar.call("tasks.prune", {}) == {"deleted": 1}
    assert sidecar.call("tasks.stats")["total"] == 0


@pytest.mark.parametrize("n", [1, 50])
def test_concurrency_is_respected(start_sidecar, n: int) -> None:
    sidecar = start_sidecar("--concurrency", "2")
    tasks = sidecar.call("tasks.createMany", {"tasks": [
        {"type": "demo.sleep", "details": {"seconds": 0.05, "steps": 1}} for _ in range(n)
    ]})["tasks"]
    for t in tasks:
        sidecar.wait_status(t["id"], "COMPLETED")
    running = peak = 0
    for u in sidecar.updates():
        if u["status"] == "RUNNING" and u["version"] == 2:
            running += 1
        elif u["status"] == "COMPLETED":
            running -= 1
        peak = max(peak, running)
    assert peak <= 2


def _answer_precedes_announcements(sidecar: SidecarProcess, ident: Any) -> str:
    """Index order in the stdout stream: the answer to ``ident``, then its task's QUEUED, RUNNING."""
    answer = sidecar.response(ident)
    task_id = answer["result"]["id"]
    sidecar.wait_status(task_id, "COMPLETED")
    with sidecar._cond:
        messages = list(sidecar.messages)
    at = messages.index(answer)
    statuses = [(i, m["params"]["task"]["status"]) for i, m in enumerate(messages)
                if m.get("method") == "task.updated" and m["params"]["task"]["id"] == task_id]
    assert statuses[0][1] == "QUEUED" and statuses[1][1] == "RUNNING", statuses
    assert at < statuses[0][0], (at, statuses)
    return task_id


def test_an_idle_create_is_answered_before_its_task_is_announced(sidecar: SidecarProcess) -> None:
    # a lone request: the reader runs its transaction itself (docs/protocol.md, Notifications)
    for _ in range(5):
        _answer_precedes_announcements(sidecar, sidecar.request("tasks.create", {"type": "demo.noop"}))


def test_a_burst_of_creates_is_answered_before_each_task_is_announced(sidecar: SidecarProcess) -> None:
    # many lines in one write: the engine thread group-commits them
    requests = [{"jsonrpc": "2.0", "id": f"b{i}", "method": "tasks.create", "params": {"type": "demo.noop"}}
                for i in range(50)]
    sidecar.send_raw(b"".join(orjson.dumps(r) + b"\n" for r in requests))
    ids = {_answer_precedes_announcements(sidecar, f"b{i}") for i in range(50)}
    assert len(ids) == 50


def test_a_list_cursor_survives_a_restart_and_is_refused_by_another_database(start_sidecar, db_path, tmp_path) -> None:
    # a renderer's store paging through the list when the sidecar crashed goes on after the restart
    first = start_sidecar()
    created = first.call("tasks.createMany", {"tasks": [{"type": "demo.noop"} for _ in range(9)]})["tasks"]
    for t in created:
        first.wait_status(t["id"], "COMPLETED")
    page = first.call("tasks.list", {"limit": 4})
    first.kill()
    again = start_sidecar()
    rest = again.call("tasks.list", {"limit": 100, "cursor": page["nextCursor"]})
    assert [t["id"] for t in page["tasks"] + rest["tasks"]] == [t["id"] for t in reversed(created)]
    other = start_sidecar(db=tmp_path / "other.db")
    err = other.error("tasks.list", {"cursor": page["nextCursor"]})
    assert err.code == -32602 and err.data["field"] == "cursor"


def test_a_backtracking_parser_regex_does_not_freeze_the_sidecar(start_sidecar) -> None:
    # In tests/blackbox so that the frozen binary runs it too: the regex package must be bundled.
    # The renderer chooses both the pattern and (through args) the line. With re, a 60-character
    # line held the GIL for hours: no answer, no other task's progress, no cancel.
    sidecar = start_sidecar("--allow-program", f"python={sys.executable}")
    task = sidecar.call("tasks.create", {"type": "process.run", "details": {
        "program": "python", "args": ["-c", "import sys, time; print(sys.argv[1], flush=True); time.sleep(0.5); print('50%')",
                                      "a" * 60 + "!"],
        "parser": {"regex": r"^(?P<percent>(a|aa)+)$"}}})
    sidecar.wait_notification(lambda m: m["method"] == "task.updated" and m["params"]["task"]["id"] == task["id"]
                              and m["params"]["task"]["status"] == "RUNNING", timeout=30)
    assert sidecar.call("system.ping", timeout=10) == "pong"
    done = sidecar.wait_status(task["id"], "COMPLETED", timeout=30)
    assert done["result"]["exitCode"] == 0 and done["progress"] == 100
