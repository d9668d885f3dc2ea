"""Faults from the environment: a full disk, a foreign write lock, an unwritable database, a reader
that closes stdout.

Covered elsewhere and not repeated here: ``--max-db-pages`` disk-full
(tests/blackbox/test_lifecycle.py::test_a_full_disk_is_a_storage_error_and_the_sidecar_recovers),
corrupt database + ``--move-aside-corrupt-db`` (test_a_corrupt_database_*), a reader that stops
reading (tests/blackbox/test_backpressure.py), a second instance (test_a_second_sidecar_*).
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import orjson
import pytest

from tests.reliability.common import (
    ROOT,
    connect,
    consistency_problems,
    consistency_problems_in_namespace,
    record,
    sidecar_in_namespace,
    unshare_available,
)
from tests.sidecar_client import RpcError, SidecarProcess, sidecar_command, spawn_raw

NS_REASON = unshare_available()
needs_unshare = pytest.mark.skipif(NS_REASON is not None, reason=NS_REASON or "")


def create_until_error(sidecar: SidecarProcess, details: dict, limit: int = 500) -> tuple[list[dict], RpcError | None]:
    created = []
    for _ in range(limit):
        try:
            created.append(sidecar.call("tasks.create", {"type": "demo.noop", "details": details}, timeout=30))
        except RpcError as exc:
            return created, exc
    return created, None


def fill(path: Path) -> int:
    """Write ``path`` until the filesystem is full; returns the bytes written."""
    written = 0
    chunk = b"\0" * 65536
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            try:
                written += os.write(fd, chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 1:
                    return written
                chunk = chunk[: len(chunk) // 16 or 1]
    finally:
        os.close(fd)


# ---------------------------------------------------------------- disk full on a real filesystem


@needs_unshare
def test_a_real_full_filesystem_is_a_storage_error_and_the_sidecar_recovers(tmp_path: Path) -> None:
    mount = tmp_path / "small-fs"
    mount.mkdir()
    setup = f"mount -t tmpfs -o size=4m,mode=0700 tmpfs {mount}"
    with sidecar_in_namespace(setup):
        sidecar = SidecarProcess(mount / "tasks.db", "--log-level", "WARNING")
    try:
        # from outside, the sidecar's private mount is reachable through /proc/<pid>/root
        inside = Path(f"/proc/{sidecar.proc.pid}/root") / str(mount).lstrip("/")
        assert (inside / "tasks.db").exists()
        assert not (mount / "tasks.db").exists()  # the host never saw the tmpfs
        before = [sidecar.call("tasks.create", {"type": "demo.noop"}) for _ in range(5)]
        running = sidecar.call("tasks.create", {"type": "demo.sleep", "details": {"seconds": 3, "steps": 30}})
        sidecar.wait_status(running["id"], "RUNNING")

        filler = inside / "filler"
        fill(filler)
        created, error = create_until_error(sidecar, {"blob": "x" * 20_000})
        assert error is not None, "the filesystem never filled"
        assert error.code == -32006, error
        assert "full" in error.data["reason"], error.data
        started = time.monotonic()
        full_errors = 1
        for _ in range(5):  # it stays full: each write fails the same way, quickly
            try:
                sidecar.call("tasks.create", {"type": "demo.noop", "details": {"blob": "y" * 20_000}})
            except RpcError as exc:
                assert exc.code == -32006
                full_errors += 1
        assert sidecar.call("system.ping") == "pong"
        for task in before + created:  # nothing acknowledged was lost, reads still work
            assert sidecar.call("tasks.get", {"id": task["id"]})["id"] == task["id"]

        filler.unlink()  # space returns
        after = sidecar.call("tasks.create", {"type": "demo.noop", "details": {"blob": "z" * 20_000}})
        assert sidecar.wait_status(after["id"], "COMPLETED", timeout=20)["id"] == after["id"]
        # the task that ran through the full period finished: its reports were retried, not dropped
        done = sidecar.wait_status(running["id"], "COMPLETED", timeout=30)
        assert done["progress"] == 100
        assert not consistency_problems_in_namespace(sidecar.proc.pid, mount / "tasks.db")
        record("fault_disk_full_tmpfs", fs_size="4 MiB", acknowledged_before_full=len(before) + len(created),
               full_errors=full_errors, recovery_seconds=round(time.monotonic() - started, 2))
    finally:
        assert sidecar.stop() == 0
    assert not os.path.ismount(mount)


# ---------------------------------------------------------------- another process holds the write lock


def test_a_foreign_write_lock_waits_the_busy_timeout_then_fails_then_recovers(start_sidecar, db_path: Path) -> None:
    sidecar = start_sidecar("--log-level", "WARNING")
    first = sidecar.call("tasks.create", {"type": "demo.noop"})
    sidecar.wait_status(first["id"], "COMPLETED")
    holder = sqlite3.connect(db_path, isolation_level=None, timeout=1)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        held_at = time.monotonic()
        # reads do not wait for a writer (WAL)
        t0 = time.monotonic()
        assert sidecar.call("tasks.get", {"id": first["id"]})["status"] == "COMPLETED"
        assert sidecar.call("tasks.stats")["total"] == 1
        read_s = time.monotonic() - t0
        t0 = time.monotonic()
        with pytest.raises(RpcError) as caught:
            sidecar.call("tasks.create", {"type": "demo.noop"}, timeout=30)
        waited = time.monotonic() - t0
        assert caught.value.code == -32006
        assert "locked" in caught.value.data["reason"]
        assert 4.0 <= waited <= 15.0, f"busy timeout is 5 s, waited {waited:.1f}"
        assert sidecar.call("system.ping", timeout=15) == "pong"
        holder.execute("ROLLBACK")
        held_s = time.monotonic() - held_at
    finally:
        holder.close()
    t0 = time.monotonic()
    task = sidecar.call("tasks.create", {"type": "demo.noop"}, timeout=20)
    after_s = time.monotonic() - t0
    assert sidecar.wait_status(task["id"], "COMPLETED", timeout=20)["attempt"] == 1
    assert not consistency_problems(db_path)
    record("fault_write_lock", reads_while_locked_s=round(read_s, 3), write_waited_s=round(waited, 2),
           lock_held_s=round(held_s, 1), first_write_after_release_s=round(after_s, 3))


def test_a_write_lock_released_within_the_busy_timeout_is_waited_for(start_sidecar, db_path: Path) -> None:
    sidecar = start_sidecar("--log-level", "WARNING")
    holder = sqlite3.connect(db_path, isolation_level=None, timeout=1)
    try:
        holder.execute("BEGIN IMMEDIATE")
        ident = sidecar.request("tasks.create", {"type": "demo.noop"})
        time.sleep(1.5)
        holder.execute("COMMIT")
    finally:
        holder.close()
    answer = sidecar.response(ident, timeout=15)
    assert "result" in answer, answer  # it waited, it did not fail
    assert sidecar.wait_status(answer["result"]["id"], "COMPLETED", timeout=20)


def test_a_running_task_survives_a_foreign_write_lock(start_sidecar, db_path: Path) -> None:
    """Progress and finish reports that hit SQLITE_BUSY are retried, never dropped."""
    sidecar = start_sidecar("--log-level", "WARNING")
    task = sidecar.call("tasks.create", {"type": "demo.sleep", "details": {"seconds": 1.5, "steps": 10}})
    sidecar.wait_status(task["id"], "RUNNING")
    holder = sqlite3.connect(db_path, isolation_level=None, timeout=1)
    try:
        holder.execute("BEGIN IMMEDIATE")
        time.sleep(7)  # longer than the busy timeout: the handler finishes meanwhile
        holder.execute("ROLLBACK")
    finally:
        holder.close()
    done = sidecar.wait_status(task["id"], "COMPLETED", timeout=30)
    assert done["attempt"] == 1 and done["result"]["steps"] == 10
    assert not consistency_problems(db_path)


# ---------------------------------------------------------------- a database the process cannot write


def chattr_available(path: Path) -> str | None:
    if shutil.which("chattr") is None:
        return "chattr(1) is not available"
    probe = path / "chattr-probe"
    probe.write_bytes(b"")
    try:
        result = subprocess.run(["chattr", "+i", str(probe)], capture_output=True)
        if result.returncode != 0:
            return f"chattr +i not supported here: {result.stderr.decode(errors='replace').strip()}"
        subprocess.run(["chattr", "-i", str(probe)], check=True)
        return None
    finally:
        probe.unlink()


def test_a_database_that_becomes_immutable_is_a_storage_error_then_recovers(start_sidecar, db_path: Path) -> None:
    reason = chattr_available(db_path.parent)
    if reason:
        pytest.skip(reason)
    sidecar = start_sidecar("--log-level", "WARNING")
    kept = sidecar.call("tasks.create", {"type": "demo.noop"})
    sidecar.wait_status(kept["id"], "COMPLETED")
    files = [str(db_path), f"{db_path}-wal"]  # (the -shm index too: see the SIGBUS test below)
    subprocess.run(["chattr", "+i", *files], check=True)
    try:
        err = sidecar.error("tasks.create", {"type": "demo.noop"})
        assert err.code == -32006, err
        assert sidecar.call("tasks.get", {"id": kept["id"]})["status"] == "COMPLETED"
        assert sidecar.call("system.ping") == "pong"
    finally:
        subprocess.run(["chattr", "-i", *files], check=True)
    task = sidecar.call("tasks.create", {"type": "demo.noop"})
    assert sidecar.wait_status(task["id"], "COMPLETED")["attempt"] == 1
    assert not consistency_problems(db_path)


def test_an_immutable_wal_index_kills_the_process_but_loses_nothing(start_sidecar, db_path: Path) -> None:
    """A limitation, not a sidecar bug: SQLite maps DB-shm into memory; when that file turns
    immutable, the kernel answers the next write to the mapping with SIGBUS and the process dies
    (seen: exit -7). What must hold is crash safety: nothing acknowledged is lost and a restart
    (once the file is writable again) carries on."""
    reason = chattr_available(db_path.parent)
    if reason:
        pytest.skip(reason)
    sidecar = start_sidecar("--log-level", "WARNING")
    kept = sidecar.call("tasks.create", {"type": "demo.noop"})
    sidecar.wait_status(kept["id"], "COMPLETED")
    files = [str(db_path), f"{db_path}-wal", f"{db_path}-shm"]
    subprocess.run(["chattr", "+i", *files], check=True)
    try:
        ident = sidecar.request("tasks.create", {"type": "demo.noop"})
        try:
            answer = sidecar.response(ident, 10)
        except TimeoutError:
            answer = None
        outcome = "died" if sidecar.proc.poll() is not None else "answered"
        if answer is not None:
            assert answer.get("error", {}).get("code", -32006) == -32006, answer
    finally:
        subprocess.run(["chattr", "-i", *files], check=True)
    record("fault_immutable_wal_index", outcome=outcome, exit_code=sidecar.proc.poll())
    sidecar.stop()
    again = start_sidecar("--log-level", "WARNING")
    assert again.call("tasks.get", {"id": kept["id"]})["status"] == "COMPLETED"
    task = again.call("tasks.create", {"type": "demo.noop"})
    assert again.wait_status(task["id"], "COMPLETED")["attempt"] == 1
    assert not consistency_problems(db_path)


def test_starting_on_an_immutable_database_is_a_clear_start_up_error(tmp_path: Path) -> None:
    db = tmp_path / "ro.db"
    reason = chattr_available(tmp_path)
    if reason:
        pytest.skip(reason)
    seed = SidecarProcess(db, "--log-level", "WARNING")
    seed.call("tasks.create", {"type": "demo.noop"})
    assert seed.stop() == 0
    before = db.read_bytes()
    subprocess.run(["chattr", "+i", str(db)], check=True)
    try:
        result = subprocess.run([*sidecar_command(), "--db", str(db)], cwd=ROOT, stdin=subprocess.DEVNULL,
                                capture_output=True, timeout=60)
    finally:
        subprocess.run(["chattr", "-i", str(db)], check=True)
    assert result.returncode == 4, result.stderr
    assert result.stdout == b"" and b"Traceback" not in result.stderr
    assert b"readonly" in result.stderr or b"read-only" in result.stderr
    assert db.read_bytes() == before


@needs_unshare
def test_starting_on_a_read_only_mount_is_a_clear_start_up_error(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    db = data / "tasks.db"
    seed = SidecarProcess(db, "--log-level", "WARNING")
    seed.call("tasks.create", {"type": "demo.noop"})
    assert seed.stop() == 0
    before = db.read_bytes()
    inner = " ".join(sidecar_command())
    script = f"mount --bind {data} {data} && mount -o remount,bind,ro {data} && exec {inner} --db {db}"
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                            cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert db.read_bytes() == before
    assert result.stdout == b""
    assert b"Traceback" not in result.stderr, result.stderr.decode(errors="replace")[-600:]
    assert result.returncode == 4


def test_move_aside_never_moves_a_healthy_but_locked_database(tmp_path: Path) -> None:
    db = tmp_path / "tasks.db"
    seed = SidecarProcess(db, "--log-level", "WARNING")
    kept = seed.call("tasks.create", {"type": "demo.noop"})
    seed.wait_status(kept["id"], "COMPLETED")
    assert seed.stop() == 0
    holder = sqlite3.connect(db, isolation_level=None, timeout=1)
    holder.execute("BEGIN IMMEDIATE")  # e.g. a backup tool or a DB browser holding a write transaction
    try:
        sidecar = SidecarProcess(db, "--move-aside-corrupt-db", "--log-level", "WARNING", wait_ready=False)
        try:
            time.sleep(7)  # longer than the 5 s busy timeout of start-up recovery
            holder.execute("ROLLBACK")
            deadline = time.monotonic() + 20  # until it is ready or has exited, whichever it does
            while sidecar.proc.poll() is None and not sidecar.notifications and time.monotonic() < deadline:
                time.sleep(0.1)
            moved = list(tmp_path.glob("tasks.db.corrupt-*"))
            assert not moved, f"a healthy database was moved aside: {moved}; stderr: {sidecar.stderr}"
        finally:
            sidecar.stop()
    finally:
        holder.close()


# ---------------------------------------------------------------- stdout closed by the reader


def test_stdout_closed_by_the_reader_keeps_working_and_exits_at_stdin_eof(tmp_path: Path) -> None:
    db = tmp_path / "closed.db"
    proc = spawn_raw(db, stderr=subprocess.PIPE)
    try:
        assert b"sidecar.ready" in proc.stdout.readline()
        proc.stdout.close()  # the reader goes away: every later write gets EPIPE
        total = 300
        for i in range(3):
            proc.stdin.write(orjson.dumps({"jsonrpc": "2.0", "id": i, "method": "tasks.createMany",
                                           "params": {"tasks": [{"type": "demo.noop"}] * (total // 3)}}) + b"\n")
        proc.stdin.write(orjson.dumps({"jsonrpc": "2.0", "id": "s", "method": "tasks.create",
                                       "params": {"type": "demo.sleep", "details": {"seconds": 0.3, "steps": 3}}}) + b"\n")
        proc.stdin.flush()
        deadline = time.monotonic() + 60
        while True:
            conn = connect(db)
            try:
                done = conn.execute("SELECT COUNT(*) FROM tasks WHERE status = 'COMPLETED'").fetchone()[0]
            finally:
                conn.close()
            if done == total + 1:
                break
            assert time.monotonic() < deadline, f"work stalled at {done} of {total + 1}"
            assert proc.poll() is None, "the sidecar died when its stdout was closed"
            time.sleep(0.2)
        proc.stdin.close()
        t0 = time.monotonic()
        assert proc.wait(20) == 0  # no deadlock: a clean exit at stdin EOF
        exit_s = time.monotonic() - t0
        stderr = proc.stderr.read().decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if not stream.closed:
                stream.close()
    assert "stdout closed" in stderr and "Traceback" not in stderr
    assert not consistency_problems(db)
    record("fault_stdout_closed", tasks_completed_after_close=total + 1, exit_after_eof_s=round(exit_s, 2))


# ---------------------------------------------------------------- start-up with work waiting


def test_ready_is_the_first_line_even_with_work_waiting(tmp_path: Path) -> None:
    """Was: task.updated (RUNNING, seq 1) before sidecar.ready in 2 of 5 restarts (95d8e7c); fixed in fb770f9."""
    db = tmp_path / "waiting.db"
    seed = SidecarProcess(db, "--log-level", "WARNING")
    seed.call("queue.pause", {})
    seed.call("tasks.createMany", {"tasks": [{"type": "demo.sleep", "details": {"seconds": 5}}] * 50})
    assert seed.stop() == 0  # queue.pause persists: all 50 stay QUEUED
    conn = connect(db)
    try:
        conn.execute("DELETE FROM settings")  # unpause, so the next start claims at once
        conn.commit()
    finally:
        conn.close()
    firsts = []
    for _ in range(10):
        proc = spawn_raw(db)
        try:
            firsts.append(orjson.loads(proc.stdout.readline()).get("method"))
        finally:
            proc.kill()
            proc.wait()
            proc.stdout.close()
            proc.stdin.close()
    assert firsts == ["sidecar.ready"] * 10, firsts
