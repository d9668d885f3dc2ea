"""Crash loop: create work, SIGKILL the sidecar at a random moment, restart; N times.

After every kill the database is read directly (the process is dead) and checked:
* every acknowledged task (a response was received) exists;
* every announced change is durable (the row's ``version`` is at least the last one announced);
* no COMPLETED task ran again: its row is unchanged from the snapshot that first saw it COMPLETED,
  and no later process announced it in any other status;
* the tasks left RUNNING are exactly what the next start reports as recovered (requeued + failed),
  and they resume: their ``attempt`` grows, and demo.sleep reports ``resumedFrom`` > 0;
* ``PRAGMA integrity_check`` is ok, task_counts match, no orphans.
At the end one more sidecar drains everything: no task is left stuck in a non-terminal status.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import orjson

from tests.reliability.common import connect, consistency_problems, record, scaled
from tests.sidecar_client import SidecarProcess

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}


class KilledSidecar(SidecarProcess):
    """SIGKILL may land inside a write of several frames: the last line can be cut short. Only that
    one (no newline, at end of output) is forgiven; any other line that is not JSON still fails."""

    def _read_stdout(self) -> None:
        import orjson

        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if not line.endswith(b"\n"):
                try:
                    orjson.loads(line)
                except orjson.JSONDecodeError:
                    self.truncated = line
                    break
            self._record(line.rstrip(b"\n"))
        with self._cond:
            self._cond.notify_all()


SNAP_COLS = "id, status, version, attempt, started_at, completed_at, result, checkpoint"


def snapshot(db: Path) -> dict[str, tuple[Any, ...]]:
    conn = connect(db)
    try:
        return {row[0]: row for row in conn.execute(f"SELECT {SNAP_COLS} FROM tasks")}
    finally:
        conn.close()


def key_counts(db: Path) -> dict[str, int]:
    """Tasks per createMany call (idempotency key prefix ``k<tag>.<n>.``)."""
    conn = connect(db)
    try:
        counts: dict[str, int] = {}
        for (key,) in conn.execute("SELECT idempotency_key FROM tasks WHERE idempotency_key LIKE 'k%'"):
            prefix = key[: key.rindex(".") + 1]
            counts[prefix] = counts.get(prefix, 0) + 1
        return counts
    finally:
        conn.close()


def make_work(rng: random.Random, sidecar: SidecarProcess, known: list[str], tag: str,
              batches: dict[str, tuple[Any, int]]) -> dict[Any, str]:
    """Pipeline a random mix of requests; returns request id -> method.

    Every createMany item gets the idempotency key ``k<tag>.<n>.<i>``; ``batches`` maps each
    call's key prefix to (request id, item count), so that after a kill the call can be checked
    to be all there or not there at all.
    """
    sent: dict[Any, str] = {}
    for n in range(rng.randint(2, 6)):
        kind = rng.random()
        if kind < 0.08:  # a big batch: its commit takes long enough for kills to land inside it
            params: dict[str, Any] = {"tasks": [{"type": "demo.noop", "details": {"i": i}}
                                                 for i in range(rng.randint(200, 800))]}
            method = "tasks.createMany"
        elif kind < 0.3:
            params = {"type": "demo.noop", "details": {"n": rng.randint(0, 10**6)}}
            method = "tasks.create"
        elif kind < 0.65:
            params = {
                "type": "demo.sleep",
                "details": {"seconds": round(rng.uniform(0.1, 0.8), 2), "steps": rng.randint(3, 12)},
                "maxAttempts": rng.choice([3, 10]),
                "priority": rng.randint(-2, 2),
            }
            if known and rng.random() < 0.3:
                params["dependsOn"] = rng.sample(known, k=min(len(known), rng.randint(1, 2)))
            method = "tasks.create"
        else:
            children = []
            for i in range(rng.randint(2, 6)):
                child: dict[str, Any] = {"ref": f"c{i}", "parentId": "p"}
                if rng.random() < 0.5:
                    child.update(type="demo.noop")
                else:
                    child.update(type="demo.sleep", details={"seconds": round(rng.uniform(0.05, 0.5), 2), "steps": 4},
                                 maxAttempts=10)
                if i and rng.random() < 0.4:
                    child["dependsOn"] = [f"c{rng.randrange(i)}"]
                children.append(child)
            parent = {"ref": "p", "type": "demo.sleep", "details": {"seconds": 0.1, "steps": 2},
                      "onChildFailure": rng.choice(["fail", "continue"]), "maxAttempts": 10}
            params = {"tasks": [parent, *children]}
            method = "tasks.createMany"
        if method == "tasks.createMany":
            prefix = f"k{tag}.{n}."
            for i, item in enumerate(params["tasks"]):
                item["idempotencyKey"] = f"{prefix}{i}"
        ident = sidecar.request(method, params)
        sent[ident] = method
        if method == "tasks.createMany":
            batches[prefix] = (ident, len(params["tasks"]))
    return sent


def acknowledged_ids(sidecar: SidecarProcess, sent: dict[Any, str]) -> list[str]:
    ids: list[str] = []
    for ident in sent:
        answer = sidecar.responses.get(ident)
        if answer is None:
            continue
        assert "error" not in answer, answer
        result = answer["result"]
        if "tasks" in result:
            ids.extend(t["id"] for t in result["tasks"])
        else:
            ids.append(result["id"])
    return ids


def run_crash_loop(db: Path, cycles: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    acked: set[str] = set()
    announced_version: dict[str, int] = {}
    completed_rows: dict[str, tuple[Any, ...]] = {}  # frozen at the first snapshot that saw COMPLETED
    prev_running: set[str] = set()
    prev_attempt: dict[str, int] = {}
    counts = {"cycles": cycles, "killed_before_ready": 0, "requests_sent": 0, "requests_acknowledged": 0,
              "tasks_acknowledged": 0, "running_at_kill": 0, "recovered_requeued": 0, "recovered_failed": 0,
              "resumed_with_higher_attempt": 0, "batches": 0, "batches_committed_unanswered": 0,
              "batches_absent_after_kill": 0}
    start = time.monotonic()
    for cycle in range(cycles):
        early_kill = cycle > 0 and rng.random() < 0.1
        sidecar = KilledSidecar(db, "--concurrency", "8", "--log-level", "WARNING", wait_ready=not early_kill)
        try:
            if early_kill:  # kill during start-up / recovery: recovery itself must be crash-safe
                counts["killed_before_ready"] += 1
                time.sleep(rng.uniform(0.0, 0.4))
                sidecar.kill()
            else:
                recovered = sidecar.ready["recovered"]
                assert sum(recovered[k] for k in ("requeued", "failed", "cancelled", "paused")) == len(prev_running), (cycle, recovered, len(prev_running))
                counts["recovered_requeued"] += recovered["requeued"]
                counts["recovered_failed"] += recovered["failed"]
                known = list(acked)
                batches: dict[str, tuple[Any, int]] = {}
                sent = make_work(rng, sidecar, known, f"{cycle}a", batches)
                time.sleep(rng.uniform(0.0, 1.0))
                if rng.random() < 0.5:  # a second wave, so kills land mid-request as well
                    sent.update(make_work(rng, sidecar, known, f"{cycle}b", batches))
                    time.sleep(rng.uniform(0.0, 0.2))
                sidecar.kill()
                ids = acknowledged_ids(sidecar, sent)
                counts["requests_sent"] += len(sent)
                counts["requests_acknowledged"] += sum(1 for i in sent if i in sidecar.responses)
                counts["tasks_acknowledged"] += len(ids)
                acked.update(ids)
                for task in sidecar.updates():
                    assert task["id"] not in completed_rows or task["status"] == "COMPLETED", (
                        f"cycle {cycle}: COMPLETED task {task['id']} announced again as {task['status']}"
                    )
                    announced_version[task["id"]] = max(announced_version.get(task["id"], 0), task["version"])
        finally:
            sidecar.stop()

        rows = snapshot(db)
        if not early_kill:  # createMany is all or nothing, even when the kill lands inside its commit
            keys = key_counts(db)
            for prefix, (ident, size) in batches.items():
                present = keys.get(prefix, 0)
                answered = ident in sidecar.responses
                assert present in (0, size), f"cycle {cycle}: createMany {prefix} half there: {present} of {size}"
                assert present == size or not answered, f"cycle {cycle}: acknowledged createMany {prefix} lost"
                counts["batches"] += 1
                if present and not answered:
                    counts["batches_committed_unanswered"] += 1
                if not present:
                    counts["batches_absent_after_kill"] += 1
        missing = acked - set(rows)
        assert not missing, f"cycle {cycle}: acknowledged tasks lost: {sorted(missing)[:5]}"
        for task_id, version in announced_version.items():
            assert rows[task_id][2] >= version, f"cycle {cycle}: announced version {version} of {task_id} not durable"
        for task_id, frozen in completed_rows.items():
            assert rows[task_id] == frozen, f"cycle {cycle}: COMPLETED task changed: {frozen} -> {rows[task_id]}"
        for task_id, row in rows.items():
            if row[1] == "COMPLETED" and task_id not in completed_rows:
                completed_rows[task_id] = row
            if task_id in prev_attempt and row[3] > prev_attempt[task_id]:
                counts["resumed_with_higher_attempt"] += 1
        # (after a kill during start-up, recovery may or may not have committed: the rows say which)
        prev_running = {task_id for task_id, row in rows.items() if row[1] == "RUNNING"}
        counts["running_at_kill"] += len(prev_running)
        prev_attempt = {task_id: rows[task_id][3] for task_id in prev_running}
        problems = consistency_problems(db)
        assert not problems, f"cycle {cycle}: {problems}"

    # drain: one last sidecar runs everything to a terminal status
    sidecar = SidecarProcess(db, "--concurrency", "8", "--log-level", "WARNING")
    try:
        deadline = time.monotonic() + scaled(90, 600)
        while True:
            stats = sidecar.call("tasks.stats")
            open_ = {s: n for s, n in stats["byStatus"].items() if s not in TERMINAL and n}
            if not open_:
                break
            assert time.monotonic() < deadline, f"tasks stuck after the crash loop: {open_}"
            time.sleep(0.5)
        for task in sidecar.updates():
            assert task["id"] not in completed_rows or task["status"] == "COMPLETED", task
        by_status = stats["byStatus"]
    finally:
        assert sidecar.stop() == 0
    rows = snapshot(db)
    assert acked <= set(rows)
    for task_id, frozen in completed_rows.items():
        assert rows[task_id] == frozen
    assert not consistency_problems(db)
    conn = connect(db)
    try:
        resumed_from = [
            orjson.loads(r)["resumedFrom"]
            for (r,) in conn.execute("SELECT result FROM tasks WHERE type='demo.sleep' AND status='COMPLETED'")
        ]
        interrupted_failures = conn.execute("SELECT COUNT(*) FROM tasks WHERE error LIKE '%interrupted%'").fetchone()[0]
        max_attempt = conn.execute("SELECT MAX(attempt) FROM tasks").fetchone()[0]
    finally:
        conn.close()
    counts.update(
        tasks_in_db=len(rows),
        completed=by_status.get("COMPLETED", 0),
        failed=by_status.get("FAILED", 0),
        cancelled=by_status.get("CANCELLED", 0),
        sleep_resumed_from_checkpoint=sum(1 for r in resumed_from if r > 0),
        failed_as_interrupted=interrupted_failures,
        max_attempt=max_attempt,
        seconds=round(time.monotonic() - start, 1),
    )
    return counts


def test_crash_loop(tmp_path: Path) -> None:
    cycles = scaled(20, 200)
    counts = run_crash_loop(tmp_path / "crash.db", cycles, seed=cycles)
    record("crash_loop", **counts)
    assert counts["tasks_acknowledged"] > cycles
    assert counts["running_at_kill"] > 0, "no kill landed while a task ran: the loop proves nothing"
    assert counts["resumed_with_higher_attempt"] > 0
    assert counts["sleep_resumed_from_checkpoint"] > 0
