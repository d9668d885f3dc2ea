"""Start-up, shutdown, crash recovery and exclusivity, observed from outside the process."""

from __future__ import annotations

import ctypes
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.sidecar_client import ROOT, SidecarProcess, db_rows, sidecar_command


def test_ready_is_the_first_line(sidecar: SidecarProcess, db_path: Path) -> None:
    first = orjson.loads(sidecar.lines[0])
    assert first["method"] == "sidecar.ready" and "id" not in first
    params = first["params"]
    assert params["protocolVersion"] == "1" and params["pid"] == sidecar.proc.pid
    assert params["dbPath"] == str(db_path) and params["recovered"] == {"requeued": 0, "failed": 0, "cancelled": 0, "paused": 0}
    assert sidecar.call("system.ping") == "pong"


def test_info_lists_handlers_with_their_details_schema(sidecar: SidecarProcess) -> None:
    info = sidecar.call("system.info")
    assert info["protocolVersion"] == "1" and info["pid"] == sidecar.proc.pid
    handlers = {h["type"]: h for h in info["handlers"]}
    assert {"demo.noop", "demo.sleep", "demo.fail"} <= set(handlers)
    sleep = handlers["demo.sleep"]
    assert sleep["maxAttempts"] == 3 and sleep["detailsSchema"]["properties"]["seconds"]["default"] == 1


def test_stdin_eof_requeues_running_tasks_and_exits_zero(start_sidecar, db_path: Path) -> None:
    sidecar = start_sidecar("--grace-seconds", "0.5")
    task = sidecar.call("tasks.create", {"type": "demo.sleep", "details": {"seconds": 60, "steps": 600}})
    sidecar.wait_notification(lambda m: m["method"] == "task.updated" and m["params"]["task"]["progress"] > 0)
    sidecar.close_stdin()
    assert sidecar.wait_exit() == 0
    (status, attempt, checkpoint), = db_rows(db_path, "SELECT status, attempt, checkpoint FROM tasks WHERE id=?", task["id"])
    # the run the shutdown stopped gives its attempt back: the next start is attempt 1 again
    assert status == "QUEUED" and attempt == 0 and orjson.loads(checkpoint)["step"] >= 1
    assert not Path(str(db_path) + ".lock").exists() or _lock_is_free(db_path)


def _lock_is_free(db_path: Path) -> bool:
    from filelock import FileLock

    lock = FileLock(str(db_path) + ".lock")
    lock.acquire(timeout=1)
    lock.release()
    return True


def test_system_shutdown_answers_then_exits_zero(sidecar: SidecarProcess) -> None:
    assert sidecar.call("system.shutdown") is None
    assert sidecar.wait_exit() == 0


def test_sigterm_stops_gracefully(sidecar: SidecarProcess) -> None:
    task = sidecar.call("tasks.create", {"type": "demo.sleep", "details": {"seconds": 60}})
    sidecar.wait_status(task["id"], "RUNNING")
    sidecar.proc.send_signal(signal.SIGTERM)
    assert sidecar.wait_exit() == 0
    last = sidecar.updates(task["id"])[-1]
    assert last["status"] == "QUEUED"  # announced before exit


def _tgkill() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    return getattr(ctypes.CDLL(None, use_errno=True), "tgkill", None)  # glibc >= 2.30


@pytest.mark.skipif(_tgkill() is None, reason="needs Linux's tgkill to aim a signal at one thread")
def test_sigterm_handed_to_a_thread_other_than_the_reader_still_stops_the_sidecar(
    sidecar: SidecarProcess,
) -> None:
    # The OS may deliver a process-wide SIGTERM to any thread; Python runs the handler only in
    # the main thread, which sits in a read of stdin. Aim it at another thread on purpose.
    task = sidecar.call("tasks.create", {"type": "demo.sleep", "details": {"seconds": 60}})
    sidecar.wait_status(task["id"], "RUNNING")
    pid = sidecar.proc.pid
    others = sorted(int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid)
    assert others, "the sidecar runs threads besides the reader"
    assert _tgkill()(pid, others[-1], signal.SIGTERM) == 0
    assert sidecar.wait_exit() == 0
    assert sidecar.updates(task["id"])[-1]["status"] == "QUEUED"


def test_sigkill_mid_task_then_restart_resumes_from_the_checkpoint(start_sidecar, db_path: Path) -> None:
    first = start_sidecar()
    task = first.call("tasks.create", {"type": "demo.sleep", "details": {"seconds": 2, "steps": 20}})
    done = first.call("tasks.create", {"type": "demo.noop"})
    first.wait_status(done["id"], "COMPLETED")
    first.wait_notification(
        lambda m: m["method"] == "task.updated" and m["params"]["task"]["id"] == task["id"]
        and m["params"]["task"]["progress"] >= 30
    )
    first.kill()
    assert db_rows(db_path, "SELECT status FROM tasks WHERE id=?", task["id"]) == [("RUNNING",)]

    second = start_sidecar()
    assert second.ready["recovered"] == {"requeued": 1, "failed": 0, "cancelled": 0, "paused": 0}
    finished = second.wait_status(task["id"], "COMPLETED", timeout=10)
    assert finished["attempt"] == 2
    assert finished["result"]["resumedFrom"] >= 5  # resumed, not restarted
    # the completed task did not run again
    assert all(u["id"] != done["id"] for u in second.updates())
    assert second.call("tasks.get", {"id": done["id"]})["status"] == "COMPLETED"
    assert db_rows(db_path, "PRAGMA integrity_check") == [("ok",)]


def test_out_of_attempts_after_crash_fails_the_task(start_sidecar, db_path: Path) -> None:
    first = start_sidecar()
    task = first.call("tasks.create", {"type": "demo.sleep", "details": {"seconds": 30}, "maxAttempts": 1})
    first.wait_status(task["id"], "RUNNING")
    first.kill()
    second = start_sidecar()
    assert second.ready["recovered"] == {"requeued": 0, "failed": 1, "cancelled": 0, "paused": 0}
    failed = second.call("tasks.get", {"id": task["id"]})
    assert failed["status"] == "FAILED" and "interrupted" in failed["error"]


def test_a_second_sidecar_on_the_same_database_refuses_to_start(sidecar: SidecarProcess, db_path: Path) -> None:
    task = sidecar.call("tasks.create", {"type": "demo.sleep", "details": {"seconds": 1}})
    second = subprocess.run(
        [*sidecar_command(), "--db", str(db_path)],
        cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, timeout=30,
    )
    assert second.returncode == 3
    assert second.stdout == b""
    assert b"another task-sidecar already uses" in second.stderr
    assert sidecar.wait_status(task["id"], "COMPLETED", timeout=10)["attempt"] == 1


def test_stray_output_never_reaches_the_protocol_stream(start_sidecar) -> None:
    sidecar = start_sidecar("--handlers", "fixture_handlers")
    task = sidecar.call("tasks.create", {"type": "test.noisy"})
    sidecar.wait_status(task["id"], "COMPLETED")
    sidecar.call("system.shutdown")
    sidecar.wait_exit()
    assert all(line.startswith(b"{") or line.startswith(b"[") for line in sidecar.lines)
    for text in ("stray print from a handler", "stray sys.stdout write", "raw write to fd 1", "child process output"):
        assert text in sidecar.stderr


def test_the_sidecar_exits_when_its_parent_dies(tmp_path: Path) -> None:
    # A middle process spawns the sidecar with a pipe it keeps open, then is SIGKILLed.
    script = (
        "import subprocess, sys, time;"
        f"p = subprocess.Popen({[*sidecar_command(), '--db', str(tmp_path / 'o.db')]!r}, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, cwd={str(ROOT)!r});"
        "print(p.pid, flush=True); time.sleep(60)"
    )
    middle = subprocess.Popen([os.sys.executable, "-c", script], stdout=subprocess.PIPE)
    child_pid = int(middle.stdout.readline())
    time.sleep(1.0)
    middle.kill()
    middle.wait()
    middle.stdout.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child_pid, 0)
        except ProcessLookupError:
            return
        # reap if it became our child's zombie (it is re-parented to init, so just poll)
        with open(f"/proc/{child_pid}/stat") as f:
            if f.read().split()[2] == "Z":
                return
        time.sleep(0.2)
    raise AssertionError("sidecar outlived its parent")


def test_an_old_release_database_is_upgraded_in_place(tmp_path: Path, start_sidecar) -> None:
    db = tmp_path / "old.db"
    conn = sqlite3.connect(db)
    from sidecar.persistence.migrations import MIGRATIONS  # the v1 schema exactly as it shipped

    class Shim:
        def execute_sql(self, sql: str, params=()):
            return conn.execute(sql, params)

    MIGRATIONS[0](Shim())
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO tasks (id, type, status, progress, details, priority, created_at, updated_at) "
        "VALUES ('11111111-1111-1111-1111-111111111111', 'demo.noop', 'QUEUED', 0, '{}', 0, 1000, 1000)"
    )
    conn.commit()
    conn.close()
    sidecar = start_sidecar(db=db)
    done = sidecar.wait_status("11111111-1111-1111-1111-111111111111", "COMPLETED")
    assert done["attempt"] == 1 and done["maxAttempts"] == 3
    assert db_rows(db, "PRAGMA user_version")[0][0] >= 3


def test_a_corrupt_database_is_a_clear_start_up_error(tmp_path: Path) -> None:
    db = tmp_path / "corrupt.db"
    db.write_bytes(b"this is not a database" * 100)
    result = subprocess.run(
        [*sidecar_command(), "--db", str(db)], cwd=ROOT, stdin=subprocess.DEVNULL,
        capture_output=True, timeout=30,
    )
    assert result.returncode == 4 and result.stdout == b""
    assert b"--move-aside-corrupt-db" in result.stderr
    assert db.read_bytes() == b"this is not a database" * 100  # never silently replaced


def test_a_corrupt_database_can_be_moved_aside_explicitly(tmp_path: Path, start_sidecar) -> None:
    db = tmp_path / "corrupt.db"
    db.write_bytes(b"this is not a database" * 100)
    sidecar = start_sidecar("--move-aside-corrupt-db", db=db)
    moved = Path(sidecar.ready["recovered"]["movedAside"])
    assert moved.name.startswith("corrupt.db.corrupt-") and moved.read_bytes() == b"this is not a database" * 100
    task = sidecar.call("tasks.create", {"type": "demo.noop"})
    assert sidecar.wait_status(task["id"], "COMPLETED")["id"] == task["id"]


APP_HANDLERS_FILE = """
from sidecar.handlers import handler
from myapp_settings_beside_handlers import GREETING  # a module beside the file, as `python FILE` finds it


@handler("myapp.greet")
def greet(ctx):
    return {"text": f"{GREETING}, {ctx.details['name']}"}
"""


FROM_SOURCE = pytest.mark.skipif(
    bool(os.environ.get("TASK_SIDECAR_CMD")),
    reason="a frozen build never loads a handler file (tests/blackbox/test_frozen.py checks that it refuses)",
)


@FROM_SOURCE
def test_handlers_can_be_given_as_the_path_of_a_file(tmp_path: Path, start_sidecar) -> None:
    app = tmp_path / "my app"  # a space, as in "Application Support"
    app.mkdir()
    (app / "myapp_task_handlers.py").write_text(APP_HANDLERS_FILE)
    (app / "myapp_settings_beside_handlers.py").write_text('GREETING = "hello"\n')
    sidecar = start_sidecar("--handlers", str(app / "myapp_task_handlers.py"))
    assert "myapp.greet" in {h["type"] for h in sidecar.call("system.info")["handlers"]}
    task = sidecar.call("tasks.create", {"type": "myapp.greet", "details": {"name": "Ada"}})
    assert sidecar.wait_status(task["id"], "COMPLETED")["result"] == {"text": "hello, Ada"}


BROKEN_SCHEMA_FILE = """
from sidecar.handlers import handler


@handler("myapp.fetch", details_schema={"type": "object", "properties": {"url": {"type": "strng"}}})
def fetch(ctx):
    return {}
"""


@pytest.mark.parametrize("kind", [
    "missing module", pytest.param("missing file", marks=FROM_SOURCE), pytest.param("module that raises", marks=FROM_SOURCE),
    pytest.param("broken details schema", marks=FROM_SOURCE),
])
def test_handlers_that_cannot_be_loaded_are_a_clear_start_up_error(tmp_path: Path, kind: str) -> None:
    broken = tmp_path / "broken_app_handlers.py"
    broken.write_text('raise RuntimeError("the app\'s handler module is broken")\n')
    bad_schema = tmp_path / "bad_schema_app_handlers.py"
    bad_schema.write_text(BROKEN_SCHEMA_FILE)
    given, says = {
        "missing module": ("no_such_app.handlers", "no module named 'no_such_app'"),
        "missing file": (str(tmp_path / "absent.py"), "no such file"),
        "module that raises": (str(broken), "loading it raised RuntimeError: the app's handler module is broken"),
        "broken details schema": (str(bad_schema), "loading it raised SchemaError: 'strng' is not valid"),
    }[kind]
    result = subprocess.run(
        [*sidecar_command(), "--db", str(tmp_path / "t.db"), "--handlers", given], cwd=ROOT,
        stdin=subprocess.DEVNULL, capture_output=True, timeout=30,
    )
    assert result.returncode == 5 and result.stdout == b""
    stderr = result.stderr.decode()
    assert f"--handlers {given}: {says}" in stderr
    if kind == "module that raises":  # the developer gets the traceback into their own file
        assert 'broken_app_handlers.py", line 1' in stderr
    elif kind == "broken details schema":  # and the spot in the schema
        assert "On schema['properties']['url']['type']" in stderr and 'bad_schema_app_handlers.py", line 5' in stderr
    else:
        assert "Traceback" not in stderr
    assert not (tmp_path / "t.db").exists(), "nothing is created before the handlers load"


SLOW_IMPORT = "import time\ntime.sleep(float(__import__('os').environ.get('SLOW_IMPORT_S', '1.5')))\n"


@FROM_SOURCE
@pytest.mark.skipif(os.name != "posix", reason="SIGTERM")
def test_sigterm_during_start_up_is_a_clean_stop(tmp_path: Path, start_sidecar) -> None:
    slow = tmp_path / "slow_to_import_handlers.py"
    slow.write_text(SLOW_IMPORT)
    sidecar = start_sidecar("--handlers", str(slow), wait_ready=False)
    time.sleep(0.5)  # importing the handlers
    sidecar.proc.send_signal(signal.SIGTERM)
    assert sidecar.wait_exit() == 0  # not killed by the signal (-15)


@FROM_SOURCE
@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="reads /proc to see the orphan")
def test_a_parent_that_dies_during_start_up_is_noticed(tmp_path: Path, db_path: Path) -> None:
    from tests.handlers.test_process_run import alive, wait_for

    slow = tmp_path / "slow_to_import_handlers.py"
    slow.write_text(SLOW_IMPORT)
    stdin_r, stdin_w = os.pipe()  # this test holds the write end: the sidecar never sees EOF
    launcher = subprocess.run(
        [sys.executable, "-c",
         "import subprocess, sys, time; fd = int(sys.argv[1]); print(subprocess.Popen(sys.argv[2:], stdin=fd, "
         "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=(fd,)).pid); time.sleep(0.5)",
         str(stdin_r), *sidecar_command(), "--db", str(db_path), "--handlers", str(slow)],
        cwd=ROOT, pass_fds=(stdin_r,), capture_output=True, text=True, timeout=30,
    )
    os.close(stdin_r)
    try:
        orphan = int(launcher.stdout)  # its parent, the launcher, died while it imported its handlers
        wait_for(lambda: not alive(orphan), timeout=15)
    finally:
        os.close(stdin_w)


def test_rpc_discover_describes_every_method(sidecar: SidecarProcess) -> None:
    doc = sidecar.call("rpc.discover")
    names = {m["name"] for m in doc["methods"]}
    assert {
        "system.ping", "system.info", "system.shutdown", "tasks.create", "tasks.createMany", "tasks.get",
        "tasks.list", "tasks.stats", "tasks.cancel", "tasks.retry", "tasks.delete", "tasks.prune",
        "tasks.tree", "tasks.pause", "tasks.resume", "queue.pause", "queue.resume", "queue.setConcurrency",
    } <= names
    create = next(m for m in doc["methods"] if m["name"] == "tasks.create")
    params = {p["name"]: p for p in create["params"]}
    assert params["type"]["required"] is True and params["details"]["required"] is False
    assert {"parentId", "dependsOn", "idempotencyKey", "runAt", "maxAttempts", "priority"} <= set(params)
    assert set(doc["components"]["schemas"]["Task"]["required"]) >= {"id", "status", "version", "progress"}
    assert any(n["name"] == "task.updated" for n in doc["x-notifications"])


def test_queue_changes_are_announced(sidecar: SidecarProcess) -> None:
    sidecar.call("queue.pause", {"type": "demo.sleep"})
    note = sidecar.wait_notification(lambda m: m["method"] == "queue.updated")
    assert note["params"]["pausedTypes"] == ["demo.sleep"]


def test_a_full_disk_is_a_storage_error_and_the_sidecar_recovers(start_sidecar) -> None:
    sidecar = start_sidecar("--max-db-pages", "60")
    big = {"blob": "x" * 20_000}
    created = []
    error = None
    for _ in range(40):
        try:
            created.append(sidecar.call("tasks.create", {"type": "demo.noop", "details": big}))
        except Exception as exc:  # noqa: BLE001 - the RpcError we are looking for
            error = exc
            break
    assert error is not None and getattr(error, "code", None) == -32006, error
    assert "full" in error.data["reason"]
    assert sidecar.call("system.ping") == "pong"  # still serving
    for task in created:  # nothing acknowledged was lost
        assert sidecar.call("tasks.get", {"id": task["id"]})["id"] == task["id"]
    # space returns: pruning finished tasks frees pages, so a completion the full file refused
    # (the engine keeps retrying it) is written then, and new writes work again
    deleted = sidecar.call("tasks.prune", {})["deleted"]
    for task in created:
        sidecar.wait_status(task["id"], "COMPLETED", timeout=20)
    deleted += sidecar.call("tasks.prune", {})["deleted"]
    assert deleted == len(created)
    again = sidecar.call("tasks.create", {"type": "demo.noop", "details": big})
    assert sidecar.wait_status(again["id"], "COMPLETED", timeout=10)["id"] == again["id"]


def test_requests_after_shutdown_in_the_same_batch_get_shutting_down(sidecar: SidecarProcess) -> None:
    sidecar.send([
        {"jsonrpc": "2.0", "id": "bye", "method": "system.shutdown"},
        {"jsonrpc": "2.0", "id": "late", "method": "tasks.create", "params": {"type": "demo.noop"}},
    ])
    batch = sidecar.wait_message(lambda m: isinstance(m, list))
    assert batch[0]["result"] is None and batch[1]["error"]["code"] == -32005
    assert sidecar.wait_exit() == 0



def test_a_cancel_or_pause_answered_before_a_crash_is_kept_after_it(start_sidecar, db_path: Path) -> None:
    first = start_sidecar("--handlers", "fixture_handlers")
    stubborn = {"type": "test.ignores_cancel", "details": {"seconds": 60}}
    to_cancel, to_pause, untouched = (first.call("tasks.create", stubborn)["id"] for _ in range(3))
    for task_id in (to_cancel, to_pause, untouched):
        first.wait_status(task_id, "RUNNING")
    assert first.call("tasks.cancel", {"id": to_cancel})["message"] == "cancelling"
    assert first.call("tasks.pause", {"id": to_pause})["message"] == "pausing"
    first.kill()  # before either handler stopped

    second = start_sidecar("--handlers", "fixture_handlers", "--concurrency", "1")
    assert second.ready["recovered"] == {"requeued": 1, "failed": 0, "cancelled": 1, "paused": 1}
    assert second.call("tasks.get", {"id": to_cancel})["status"] == "CANCELLED"
    paused = second.call("tasks.get", {"id": to_pause})
    assert paused["status"] == "PAUSED" and paused["attempt"] == 0  # a pause uses up no attempt
    assert second.wait_status(untouched, "RUNNING")["attempt"] == 2  # interrupted, so run again


def test_pausing_uses_up_no_attempts_so_a_later_crash_still_retries(start_sidecar) -> None:
    first = start_sidecar()
    task = first.call("tasks.create", {"type": "demo.sleep", "details": {"seconds": 60}, "maxAttempts": 2})
    seen = 0  # the version last looked at: each wait is for a newer announcement

    def next_update(status: str) -> dict:
        nonlocal seen
        found = first.wait_notification(lambda m: m["method"] == "task.updated"
                                        and m["params"]["task"]["id"] == task["id"]
                                        and m["params"]["task"]["status"] == status
                                        and m["params"]["task"]["version"] > seen)["params"]["task"]
        seen = found["version"]
        return found

    for _ in range(3):
        assert next_update("RUNNING")["attempt"] == 1
        first.call("tasks.pause", {"id": task["id"]})
        assert next_update("PAUSED")["attempt"] == 0
        first.call("tasks.resume", {"id": task["id"]})
    next_update("RUNNING")
    first.kill()  # the first attempt of two is interrupted: one is left

    second = start_sidecar()
    assert second.ready["recovered"]["requeued"] == 1
    assert second.wait_status(task["id"], "RUNNING")["attempt"] == 2


def test_a_cancel_then_a_pause_in_one_transaction_stays_a_cancel_through_a_crash(start_sidecar) -> None:
    first = start_sidecar("--handlers", "fixture_handlers")
    task = first.call("tasks.create", {"type": "test.ignores_cancel", "details": {"seconds": 60}})
    first.wait_status(task["id"], "RUNNING")
    first.send([{"jsonrpc": "2.0", "id": 1, "method": "tasks.cancel", "params": {"id": task["id"]}},
                {"jsonrpc": "2.0", "id": 2, "method": "tasks.pause", "params": {"id": task["id"]}}])
    first.wait_message(lambda m: isinstance(m, list))
    first.kill()  # before the handler stopped: the stored stop decides
    second = start_sidecar("--handlers", "fixture_handlers")
    assert second.ready["recovered"]["cancelled"] == 1
    assert second.call("tasks.get", {"id": task["id"]})["status"] == "CANCELLED"


def test_quitting_while_a_handler_is_slow_to_stop_uses_up_no_attempt(start_sidecar, db_path: Path) -> None:
    sidecar = start_sidecar("--handlers", "fixture_handlers", "--grace-seconds", "0.3")
    task = sidecar.call("tasks.create", {"type": "test.ignores_cancel", "details": {"seconds": 60}, "maxAttempts": 1})
    sidecar.wait_status(task["id"], "RUNNING")
    sidecar.call("system.shutdown")  # the handler outlasts the grace: requeued without it
    assert sidecar.wait_exit() == 0
    assert db_rows(db_path, "SELECT status, attempt FROM tasks WHERE id = ?", task["id"]) == [("QUEUED", 0)]


def test_children_spawned_while_a_parent_was_being_cancelled_are_cancelled_with_it(start_sidecar) -> None:
    sidecar = start_sidecar("--handlers", "fixture_handlers")
    parent = sidecar.call("tasks.create", {"type": "test.spawn_late", "details": {"fetch": 0.8, "n": 2}})
    sidecar.wait_status(parent["id"], "RUNNING")
    assert sidecar.call("tasks.cancel", {"id": parent["id"]})["message"] == "cancelling"
    sidecar.wait_status(parent["id"], "CANCELLED")
    children = sidecar.call("tasks.list", {"parentId": parent["id"]})["tasks"]
    assert len(children) == 2
    for child in children:
        assert sidecar.wait_status(child["id"], "CANCELLED", "COMPLETED")["status"] == "CANCELLED"


@pytest.mark.skipif(os.name != "posix", reason="process groups and /proc are POSIX here")
@pytest.mark.parametrize("delay", ["0.05", "100"], ids=["program-dies-on-the-broken-pipe", "program-lives-on"])
def test_programs_a_killed_sidecar_left_running_are_killed_by_the_next_start(start_sidecar, tmp_path, delay):
    # Nothing runs in a process killed with SIGKILL: the program's tree ran on beside the copy the
    # requeued task started, and a cancel stopped only the new one. The next start kills it first.
    from tests.handlers.test_process_run import SCRIPT, alive, read_pids, wait_for

    allow = ("--allow-program", f"python={sys.executable}")
    first = start_sidecar(*allow)
    task = first.call("tasks.create", {"type": "process.run", "maxAttempts": 3, "details": {
        "program": "python", "args": [SCRIPT, str(tmp_path / "pids"), "--delay", delay]}})
    pids = read_pids(tmp_path / "pids")  # the program and its grandchild
    first.kill()
    time.sleep(0.3)
    assert alive(pids[1]), "the grandchild should outlive the sidecar's SIGKILL (the case under test)"
    second = start_sidecar(*allow)
    wait_for(lambda: not any(alive(p) for p in pids), timeout=10)
    second.wait_status(task["id"], "RUNNING", timeout=15)  # the next attempt, alone
    second.call("tasks.cancel", {"id": task["id"]})
    second.wait_status(task["id"], "CANCELLED", timeout=15)
