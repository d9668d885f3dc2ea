"""The built-in handlers through a real sidecar process (stdio), as an app uses them."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pytest

from tests.handlers.test_process_run import SCRIPT, alive, read_pids, wait_for
from tests.sidecar_client import RpcError, db_rows

BODY = os.urandom(3 * 1024 * 1024 + 7)
SHA = hashlib.sha256(BODY).hexdigest()


def parts(directory: Path) -> list[Path]:
    return sorted(directory.rglob("*.part"))


@pytest.fixture
def dl(tmp_path: Path) -> Path:
    path = tmp_path / "downloads"
    path.mkdir()
    return path


def test_downloads_retry_resume_and_fail_as_they_should(start_sidecar, http_server, dl):
    sidecar = start_sidecar("--allow-dir", str(dl))
    create = lambda details: sidecar.call("tasks.create", {"type": "http.download", "details": details})  # noqa: E731
    full = create({"url": http_server.add("/full", BODY, chunk=128 * 1024, delay=0.02), "dest": str(dl / "full.bin"),
                   "sha256": SHA})
    dropped = create({"url": http_server.add("/drop", BODY, drop_at=2_000_000, drops=1), "dest": str(dl / "d.bin")})
    busy = create({"url": http_server.add("/busy", BODY[:1000], statuses=[503]), "dest": str(dl / "b.bin")})
    missing = create({"url": http_server.base + "/nope", "dest": str(dl / "m.bin")})
    wrong = create({"url": http_server.add("/wrong", BODY), "dest": str(dl / "w.bin"), "sha256": "ab" * 32})

    done = sidecar.wait_status(full["id"], "COMPLETED", timeout=30)
    assert done["result"]["bytes"] == len(BODY) and (dl / "full.bin").read_bytes() == BODY
    running = [u for u in sidecar.updates(full["id"]) if u["status"] == "RUNNING" and u["message"]]
    assert running and "of 3.0 MiB" in running[-1]["message"]
    assert [u["progress"] for u in running] == sorted(u["progress"] for u in running)

    done = sidecar.wait_status(dropped["id"], "COMPLETED", timeout=30)
    assert done["attempt"] == 2 and done["result"]["resumedFrom"] == 2_000_000
    assert (dl / "d.bin").read_bytes() == BODY
    assert http_server.got("/drop")[-1]["range"] == "bytes=2000000-"

    done = sidecar.wait_status(busy["id"], "COMPLETED", timeout=30)
    assert done["attempt"] == 2 and (dl / "b.bin").read_bytes() == BODY[:1000]

    failed = sidecar.wait_status(missing["id"], "FAILED", timeout=30)
    assert failed["attempt"] == 1 and "HTTP 404" in failed["error"]
    failed = sidecar.wait_status(wrong["id"], "FAILED", timeout=30)
    assert failed["attempt"] == 1 and "sha256 mismatch" in failed["error"]
    assert not (dl / "w.bin").exists() and parts(dl) == []


def test_cancel_removes_the_partial_pause_keeps_it_and_resume_continues(start_sidecar, http_server, dl):
    sidecar = start_sidecar("--allow-dir", str(dl))
    slow = dict(chunk=32 * 1024, delay=0.03)
    cancelled = sidecar.call("tasks.create", {"type": "http.download", "details": {
        "url": http_server.add("/c", BODY, **slow), "dest": str(dl / "c" / "c.bin")}})
    paused = sidecar.call("tasks.create", {"type": "http.download", "details": {
        "url": http_server.add("/p", BODY, **slow), "dest": str(dl / "p" / "p.bin"), "sha256": SHA}})
    for task in (cancelled, paused):
        sidecar.wait_notification(lambda m, t=task: m["method"] == "task.updated"
                                  and m["params"]["task"]["id"] == t["id"] and m["params"]["task"]["progress"] >= 5,
                                  timeout=30)
    sidecar.call("tasks.cancel", {"id": cancelled["id"]})
    sidecar.call("tasks.pause", {"id": paused["id"]})
    sidecar.wait_status(cancelled["id"], "CANCELLED", timeout=15)
    sidecar.wait_status(paused["id"], "PAUSED", timeout=15)
    assert parts(dl / "c") == [] and len(parts(dl / "p")) == 1
    http_server.resources["/p"].delay = 0
    sidecar.call("tasks.resume", {"id": paused["id"]})
    done = sidecar.wait_status(paused["id"], "COMPLETED", timeout=30)
    assert done["result"]["resumedFrom"] > 0 and (dl / "p" / "p.bin").read_bytes() == BODY
    assert parts(dl) == []


def test_a_download_that_ends_while_not_running_leaves_no_partial_file(start_sidecar, http_server, dl):
    sidecar = start_sidecar("--allow-dir", str(dl))
    slow = dict(chunk=32 * 1024, delay=0.03)
    paused = sidecar.call("tasks.create", {"type": "http.download", "details": {
        "url": http_server.add("/pc", BODY, **slow), "dest": str(dl / "pc" / "pc.bin")}})
    sidecar.wait_notification(lambda m: m["method"] == "task.updated" and m["params"]["task"]["id"] == paused["id"]
                              and m["params"]["task"]["progress"] >= 5, timeout=30)
    sidecar.call("tasks.pause", {"id": paused["id"]})
    sidecar.wait_status(paused["id"], "PAUSED", timeout=15)
    assert len(parts(dl / "pc")) == 1  # kept for the resume
    sidecar.call("tasks.cancel", {"id": paused["id"]})  # its handler is not running now
    assert sidecar.wait_status(paused["id"], "CANCELLED")["status"] == "CANCELLED"
    assert parts(dl / "pc") == []


def test_a_download_failed_by_crash_recovery_leaves_no_partial_file(start_sidecar, http_server, dl, db_path):
    url = http_server.add("/last", BODY, chunk=32 * 1024, delay=0.03)
    first = start_sidecar("--allow-dir", str(dl))
    task = first.call("tasks.create", {"type": "http.download", "maxAttempts": 1,
                                       "details": {"url": url, "dest": str(dl / "last.bin")}})
    first.wait_notification(lambda m: m["method"] == "task.updated" and m["params"]["task"]["id"] == task["id"]
                            and m["params"]["task"]["progress"] >= 5, timeout=30)
    first.kill()  # during its only attempt
    assert len(parts(dl)) == 1
    second = start_sidecar("--allow-dir", str(dl))
    assert second.ready["recovered"]["failed"] == 1
    assert parts(dl) == []


def test_sigkill_mid_download_then_restart_resumes_to_the_right_bytes(start_sidecar, http_server, dl, db_path):
    url = http_server.add("/k", BODY, chunk=32 * 1024, delay=0.03)
    first = start_sidecar("--allow-dir", str(dl))
    task = first.call("tasks.create", {"type": "http.download",
                                       "details": {"url": url, "dest": str(dl / "k.bin"), "sha256": SHA}})
    first.wait_notification(lambda m: m["method"] == "task.updated" and m["params"]["task"]["id"] == task["id"]
                            and m["params"]["task"]["progress"] >= 50, timeout=30)
    first.kill()  # past 1.5 MiB: at least one checkpoint (every MiB or second) has been committed
    assert len(parts(dl)) == 1 and not (dl / "k.bin").exists()
    http_server.resources["/k"].delay = 0
    second = start_sidecar("--allow-dir", str(dl))
    assert second.ready["recovered"]["requeued"] == 1
    done = second.wait_status(task["id"], "COMPLETED", timeout=30)
    assert done["attempt"] == 2 and done["result"]["resumedFrom"] >= 1024 * 1024
    assert (dl / "k.bin").read_bytes() == BODY and parts(dl) == []
    assert http_server.got("/k")[-1]["range"] == f"bytes={done['result']['resumedFrom']}-"


def test_refused_destinations_name_details_dest(start_sidecar, tmp_path, dl):
    outside = tmp_path / "outside"
    outside.mkdir()
    (dl / "escape").symlink_to(outside)
    sidecar = start_sidecar("--allow-dir", str(dl), "--allow-host", "127.0.0.1")
    url = "http://127.0.0.1:9/x"
    for dest in [str(outside / "x.bin"), str(dl / ".." / "outside" / "x.bin"), str(dl / "escape" / "x.bin"),
                 "x.bin", str(dl)]:
        err = sidecar.error("tasks.create", {"type": "http.download", "details": {"url": url, "dest": dest}})
        assert err.code == -32602 and err.data["field"] == "details.dest", (dest, err.message)
    err = sidecar.error("tasks.create", {"type": "http.download",
                                         "details": {"url": "https://example.com/x", "dest": str(dl / "x")}})
    assert err.code == -32602 and err.data["field"] == "details.url" and "not allowed" in err.message
    sidecar.stop()
    bare = start_sidecar(db=tmp_path / "other.db")  # no --allow-dir: every download is refused
    err = bare.error("tasks.create", {"type": "http.download", "details": {"url": url, "dest": str(dl / "x.bin")}})
    assert err.code == -32602 and err.data["field"] == "details.dest" and "--allow-dir" in err.message


@pytest.mark.skipif(os.name != "posix", reason="process groups are POSIX")
def test_process_run_through_the_sidecar(start_sidecar, tmp_path):
    sidecar = start_sidecar("--allow-program", f"python={sys.executable}", "--allow-dir", str(tmp_path))
    err = sidecar.error("tasks.create", {"type": "process.run", "details": {"program": "sh", "args": ["-c", "id"]}})
    assert err.code == -32602 and err.data["field"] == "details.program"
    err = sidecar.error("tasks.create", {"type": "process.run",
                                         "details": {"program": "python", "env": {"LD_PRELOAD": "x"}}})
    assert err.data["field"] == "details.env.LD_PRELOAD"

    quick = sidecar.call("tasks.create", {"type": "process.run", "details": {
        "program": "python", "args": [SCRIPT, str(tmp_path / "q"), "--steps", "4", "--delay", "0.05", "--no-child"],
        "parser": {"regex": r"(?P<percent>\d+)%"}, "cwd": str(tmp_path)}})
    done = sidecar.wait_status(quick["id"], "COMPLETED", timeout=30)
    assert done["result"] == {"exitCode": 0, "stdoutTail": [f"step {i}/4 {25 * i}%" for i in range(1, 5)]}

    failing = sidecar.call("tasks.create", {"type": "process.run", "details": {
        "program": "python", "args": [SCRIPT, str(tmp_path / "f"), "--steps", "1", "--delay", "0", "--exit", "2",
                                      "--no-child"]}})
    failed = sidecar.wait_status(failing["id"], "FAILED", timeout=30)
    assert failed["error"].startswith("python exited with code 2:") and "fatal: it broke" in failed["error"]

    long = sidecar.call("tasks.create", {"type": "process.run", "details": {
        "program": "python", "args": [SCRIPT, str(tmp_path / "pids")], "parser": {"regex": r"(?P<percent>\d+)%"}}})
    pids = read_pids(tmp_path / "pids")
    sidecar.wait_notification(lambda m: m["method"] == "task.updated" and m["params"]["task"]["id"] == long["id"]
                              and m["params"]["task"]["message"], timeout=30)
    sidecar.call("tasks.cancel", {"id": long["id"]})
    sidecar.wait_status(long["id"], "CANCELLED", timeout=15)
    wait_for(lambda: not any(alive(p) for p in pids))

    timed = sidecar.call("tasks.create", {"type": "process.run", "details": {
        "program": "python", "args": [SCRIPT, str(tmp_path / "pids2")], "timeoutS": 1}})
    failed = sidecar.wait_status(timed["id"], "FAILED", timeout=30)
    assert "timed out after 1s" in failed["error"]
    wait_for(lambda: not any(alive(p) for p in read_pids(tmp_path / "pids2")))


@pytest.mark.skipif(os.name != "posix", reason="process groups are POSIX")
def test_a_program_that_ignores_sigterm_does_not_outlive_a_sidecar_stopping_within_a_short_grace(
    start_sidecar, tmp_path, db_path
):
    # --grace-seconds 0.5 is shorter than the 3 s process.run waits between SIGTERM and SIGKILL
    sidecar = start_sidecar("--allow-program", f"python={sys.executable}", "--grace-seconds", "0.5")
    task = sidecar.call("tasks.create", {"type": "process.run", "details": {
        "program": "python", "args": [SCRIPT, str(tmp_path / "pids"), "--ignore-term"]}})
    pids = read_pids(tmp_path / "pids")
    sidecar.wait_status(task["id"], "RUNNING")
    sidecar.call("system.shutdown")
    assert sidecar.wait_exit() == 0
    wait_for(lambda: not any(alive(p) for p in pids), timeout=5)  # killed with the sidecar, not orphaned
    assert db_rows(db_path, "SELECT status FROM tasks WHERE id = ?", task["id"]) == [("QUEUED",)]


def test_info_lists_the_builtin_types(sidecar):
    types = {h["type"]: h for h in sidecar.call("system.info")["handlers"]}
    assert types["http.download"]["maxAttempts"] == 5
    assert types["http.download"]["detailsSchema"]["required"] == ["url", "dest"]
    assert "process.run" in types
    with pytest.raises(RpcError) as err:
        sidecar.call("tasks.create", {"type": "http.download", "details": {"url": "file:///etc/passwd", "dest": "/x"}})
    assert err.value.code == -32602 and err.value.data["field"] == "details.url"
