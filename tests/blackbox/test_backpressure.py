"""A client that stops reading stdout must not stall the scheduler or grow memory without bound."""

from __future__ import annotations

import time
from pathlib import Path

import orjson

from tests.sidecar_client import db_rows, spawn_raw


def count_completed(db: Path) -> int:
    return db_rows(db, "SELECT COUNT(*) FROM tasks WHERE status = 'COMPLETED'")[0][0]


def test_a_reader_that_stops_reading_does_not_stall_work(tmp_path: Path) -> None:
    db = tmp_path / "bp.db"
    proc = spawn_raw(db)
    try:
        assert b"sidecar.ready" in proc.stdout.readline()
        total = 6000
        for chunk in range(3):
            proc.stdin.write(orjson.dumps({
                "jsonrpc": "2.0", "id": chunk, "method": "tasks.createMany",
                # ~2 ms each: the work outlasts the writer's stall detection (1 s), whatever the speed
                "params": {"tasks": [{"type": "demo.sleep", "details": {"seconds": 0.002, "steps": 1}}] * (total // 3)},
            }) + b"\n")
        proc.stdin.flush()
        # Nobody reads stdout now: the pipe fills after ~64 KiB, yet every task must still run.
        deadline = time.monotonic() + 120
        while count_completed(db) < total:
            assert time.monotonic() < deadline, f"stalled at {count_completed(db)} of {total}"
            time.sleep(0.2)
        status = Path(f"/proc/{proc.pid}/status").read_text()
        rss_kib = int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1])
        assert rss_kib < 200_000
        # Now read everything: seq has no gap, every task's last word is COMPLETED.
        proc.stdin.close()
        out = proc.stdout.read()
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    messages = [orjson.loads(line) for line in out.splitlines()]
    updates = [m["params"] for m in messages if isinstance(m, dict) and m.get("method") == "task.updated"]
    assert [u["seq"] for u in updates] == list(range(1, len(updates) + 1))
    last: dict[str, str] = {}
    for u in updates:
        last[u["task"]["id"]] = u["task"]["status"]
    assert len(last) == total and set(last.values()) == {"COMPLETED"}
    assert len(updates) < 3 * total  # merged while the reader was away
    assert sum(1 for m in messages if isinstance(m, dict) and "result" in m) == 3


def test_a_reader_that_keeps_reading_gets_every_transition(start_sidecar) -> None:
    sidecar = start_sidecar()
    tasks = []
    for _ in range(3):
        tasks += sidecar.call("tasks.createMany", {"tasks": [{"type": "demo.noop"}] * 1500}, timeout=60)["tasks"]
    for t in tasks[-10:]:
        sidecar.wait_status(t["id"], "COMPLETED", timeout=60)
    deadline = time.monotonic() + 60
    while True:
        seen: dict[str, list[str]] = {}
        for u in sidecar.updates():
            seen.setdefault(u["id"], []).append(u["status"])
        if all(seen.get(t["id"], [""])[-1] == "COMPLETED" for t in tasks) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert all(seen[t["id"]] == ["QUEUED", "RUNNING", "COMPLETED"] for t in tasks)
