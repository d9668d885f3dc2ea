"""Garbage collection pauses while a big request is in flight, and always comes back on.

The pause ends when the request's answer has been written; a request that gets no answer (a
notification) or is refused must end it too, or the sidecar would never collect again.
"""

from __future__ import annotations

import os
import sys
import time

import orjson
import pytest

ITEMS = 2000  # well over the 16 KB at which a request counts as big


def children() -> list[dict]:
    return [{"type": "demo.noop", "details": {"url": f"https://example.invalid/v/{i}"}} for i in range(ITEMS)]


def collection_enabled(sidecar) -> bool:
    """Ask a handler, a few times: the pause ends just after the answer is written, which may be
    a moment after the client has read it."""
    for _ in range(20):
        task = sidecar.call("tasks.create", {"type": "test.gc_state"})
        done = sidecar.wait_status(task["id"], "COMPLETED")
        if done["result"]["enabled"]:
            return True
        time.sleep(0.05)
    return False


def big_request(sidecar) -> None:
    result = sidecar.call("tasks.createMany", {"tasks": children()}, timeout=30)
    assert len(result["tasks"]) == ITEMS


def big_notification(sidecar) -> None:
    sidecar.send({"jsonrpc": "2.0", "method": "tasks.createMany", "params": {"tasks": children()}})
    assert sidecar.call("system.ping") == "pong"


def big_refused_request(sidecar) -> None:
    items = children()
    items[-1]["priority"] = "high"
    error = sidecar.error("tasks.createMany", {"tasks": items})
    assert "priority" in str(error)


def big_unparseable_line(sidecar) -> None:
    line = orjson.dumps({"jsonrpc": "2.0", "id": "x", "method": "tasks.createMany",
                         "params": {"tasks": children()}})
    sidecar.send_raw(line[:-1] + b"\n")  # the closing brace cut off
    assert sidecar.response(None)["error"]["code"] == -32700


def big_batch(sidecar) -> None:
    sidecar.send([{"jsonrpc": "2.0", "id": f"b{k}", "method": "tasks.createMany",
                   "params": {"tasks": children()[:500]}} for k in range(3)])
    batch = sidecar.wait_message(lambda m: isinstance(m, list), timeout=30)
    assert sorted(len(answer["result"]["tasks"]) for answer in batch) == [500, 500, 500]


@pytest.mark.parametrize("send", [big_request, big_notification, big_refused_request,
                                  big_unparseable_line, big_batch])
def test_collection_is_back_on_after_a_big_request(start_sidecar, send) -> None:
    sidecar = start_sidecar("--handlers", "fixture_handlers")
    assert collection_enabled(sidecar)
    send(sidecar)
    assert collection_enabled(sidecar)


def _database_descriptors(pid: int, db_name: str) -> int:
    fd_dir = f"/proc/{pid}/fd"
    return sum(1 for fd in os.listdir(fd_dir) if os.path.basename(_readlink(f"{fd_dir}/{fd}")).startswith(db_name))


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:  # closed in the meantime
        return ""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_quiet_periods_leave_the_sidecar_working_with_no_more_open_database_files(start_sidecar, db_path) -> None:
    """Each time the writes stop, the sidecar hands back memory and renews its engine's database
    connection: work goes on as before, and the connection it replaced is closed."""
    sidecar = start_sidecar()
    counts = []
    for _ in range(3):
        result = sidecar.call("tasks.createMany", {"tasks": [{"type": "demo.noop"}] * 200}, timeout=30)
        for task in result["tasks"]:
            sidecar.wait_status(task["id"], "COMPLETED")
        time.sleep(2.5)  # a checkpointer round (1 s) with no write: quiet
        counts.append(_database_descriptors(sidecar.proc.pid, db_path.name))
    task = sidecar.call("tasks.create", {"type": "demo.noop"})
    assert sidecar.wait_status(task["id"], "COMPLETED")["status"] == "COMPLETED"
    assert counts[0] > 0 and counts[2] == counts[0], counts


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sidecar switches to malloc on glibc only")
def test_the_sidecar_allocates_new_objects_with_malloc_so_a_burst_leaves_no_pymalloc_arenas(start_sidecar) -> None:
    if os.environ.get("PYTHONMALLOC") and not os.environ.get("TASK_SIDECAR_FROZEN"):
        pytest.skip("PYTHONMALLOC is set: the sidecar keeps the allocator it chose")
    sidecar = start_sidecar("--handlers", "fixture_handlers")
    task = sidecar.call("tasks.create", {"type": "test.pymalloc_blocks"})
    assert sidecar.wait_status(task["id"], "COMPLETED")["result"]["blocks"] < 10_000  # ~100,000 with pymalloc


def test_creating_and_running_tasks_leaves_no_reference_cycles_for_the_collector(start_sidecar) -> None:
    sidecar = start_sidecar("--handlers", "fixture_handlers")

    def workload() -> None:
        created = [sidecar.call("tasks.create", {"type": "demo.noop"}) for _ in range(50)]
        created += sidecar.call("tasks.createMany", {"tasks": [
            {"ref": "p", "type": "demo.noop"}, {"type": "demo.noop", "parentId": "p"},
            {"type": "demo.noop", "dependsOn": ["p"]},
        ]})["tasks"]
        for task in created:
            sidecar.wait_status(task["id"], "COMPLETED")

    workload()  # once first, and a pause: what is done once (the warm-up thread compiling schemas,
    time.sleep(1.0)  # ~0.2 s after ready) is over before the collector's finds are kept
    keep = sidecar.call("tasks.create", {"type": "test.gc_keep_garbage"})
    sidecar.wait_status(keep["id"], "COMPLETED")
    workload()
    report = sidecar.call("tasks.create", {"type": "test.gc_garbage"})
    assert sidecar.wait_status(report["id"], "COMPLETED")["result"]["types"] == {}


def test_the_collector_runs_less_often_and_leaves_start_up_objects_alone(start_sidecar) -> None:
    sidecar = start_sidecar("--handlers", "fixture_handlers")
    deadline = time.monotonic() + 10
    while True:  # the warm-up thread freezes what start-up made, shortly after ready
        task = sidecar.call("tasks.create", {"type": "test.gc_state"})
        state = sidecar.wait_status(task["id"], "COMPLETED")["result"]
        # not merely nonzero: CPython 3.12 starts with a few hundred objects frozen already
        if state["frozen"] > 10_000 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert state["threshold"][0] == 10_000  # Python's default: 700
    assert state["frozen"] > 10_000  # modules, functions, classes, compiled schemas
