"""Measurements of the sidecar itself, one sub-command per process.

    python -m bench.sidecar_bench drain --n 5000 --samples 50
    python -m bench.sidecar_bench throughput --n 5000 --mode single|many --chunk 500
    python -m bench.sidecar_bench latency --samples 300 --queued 10000 [--busy N] [--held N]
    python -m bench.sidecar_bench fanout --rate 1000 --seconds 3
    python -m bench.sidecar_bench createmany --children 5000 --rounds 5
    python -m bench.sidecar_bench startup --runs 7 [--db FILE]
    python -m bench.sidecar_bench rss --n 100000
    python -m bench.sidecar_bench bigdb --rows 1000000 --out FILE
    python -m bench.sidecar_bench scale --db FILE --samples 200

Each prints one ``BENCH-RESULT {json}`` line. Misbehaviour (a task that never completes, a
``seq`` gap, a missing announcement, a non-zero exit) fails the process with exit status 2.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import sys
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from bench.client import Sidecar
from bench.common import (WORK, clock, cpu_seconds, emit, fail, fresh_dir, idle_footprint, probe_gap, rss_mb,
                          summary)

NOOP = {"type": "demo.noop"}


def _finish(sc: Sidecar) -> None:
    sc.close()
    if sc.errors:
        fail("; ".join(sc.errors[:5]))


def _wall_to_clock(epoch_ms: int) -> float:
    return clock() + (epoch_ms / 1000.0 - time.time())


def _send_creates(sc: Sidecar, items: list[dict[str, Any]], block: int = 1000) -> list[int]:
    ids: list[int] = []
    for start in range(0, len(items), block):
        chunk, _ = sc.send_many([("tasks.create", it) for it in items[start : start + block]])
        ids += chunk
    return ids


def _collect(sc: Sidecar, rids: list[int], timeout: float) -> tuple[list[str], float]:
    """Task ids from create responses (single or createMany), and the last response time."""
    task_ids: list[str] = []
    last = 0.0
    for rid in rids:
        t, result = sc.result(rid, timeout)
        last = max(last, t)
        if "tasks" in result:
            task_ids += [task["id"] for task in result["tasks"]]
        else:
            task_ids.append(result["id"])
    return task_ids, last


def _wait_all(sc: Sidecar, ids: list[str], status: str, timeout: float, what: str) -> float:
    if not sc.wait_status(ids, status, timeout):
        missing = len(ids) - sc.count_status(ids, status)
        fail(f"{what}: {missing} of {len(ids)} tasks never reached {status} within {timeout}s "
             f"(sidecar exit {sc.proc.poll()}, errors {sc.errors[:3]})")
    return max(sc.first_seen[i][status] for i in ids)


def _started(sc: Sidecar, tid: str) -> float:
    """When the client learnt the task had started (RUNNING, or COMPLETED if RUNNING was merged)."""
    seen = sc.first_seen[tid]
    return seen.get("RUNNING", seen["COMPLETED"])


def awake_latency(sc: Sidecar, samples: int) -> dict[str, Any]:
    """Create → RUNNING seen, with probes 0.5-1.5 ms apart as every peer's ``awake`` probes (see
    bench.common.PROBE_GAPS_S): this host's CPUs do not halt between them."""
    return idle_latency(sc, samples, gap=partial(probe_gap, "awake"))


def idle_latency(
    sc: Sidecar, samples: int, gap: Callable[[], None] = partial(probe_gap, "idle"), **create: Any
) -> dict[str, Any]:
    start_ms: list[float] = []
    done_ms: list[float] = []
    missed = 0
    for _ in range(samples):
        rid, t0 = sc.send("tasks.create", {**NOOP, **create})
        _, task = sc.result(rid, 30)
        tid = task["id"]
        if not sc.wait_status([tid], "COMPLETED", 30):
            fail(f"latency probe {tid} never completed")
        seen = sc.first_seen[tid]
        if "RUNNING" in seen:  # else merged into COMPLETED under backpressure: counted, not timed
            start_ms.append((seen["RUNNING"] - t0) * 1000)
        else:
            missed += 1
        done_ms.append((seen["COMPLETED"] - t0) * 1000)
        gap()
    return {"start_ms": summary(start_ms), "complete_ms": summary(done_ms), "running_not_announced": missed}


# ---------------------------------------------------------------- the peer-comparable run


def cmd_drain(a: argparse.Namespace) -> None:
    """Same work as the peers: enqueue N no-op tasks (one call each), drain with 4 workers."""
    d = fresh_dir(f"drain-{os.getpid()}")
    sc = Sidecar(str(d / "t.db"), args=("--concurrency", str(a.workers)))
    # queue them with a common runAt in the future, so the drain starts on a full queue
    lead_ms = 1500 + a.n // 4
    due_ms = int(time.time() * 1000) + lead_ms
    t0 = clock()
    rids = _send_creates(sc, [{**NOOP, "runAt": due_ms} for _ in range(a.n)])
    ids, t_created = _collect(sc, rids, 120)
    due = _wall_to_clock(due_ms)
    if t_created > due:
        sys.stderr.write("warning: enqueue overlapped the drain (lead too short)\n")
    t_last = _wait_all(sc, ids, "COMPLETED", 120 + a.n / 100, "drain")
    t_first = min(_started(sc, i) for i in ids)
    drain_s = t_last - max(due, t_created)
    lat = idle_latency(sc, a.samples)
    lat["start_awake_ms"] = awake_latency(sc, a.samples)["start_ms"]
    idle = idle_footprint(sc.pid, a.idle_s)  # waiting for work, as the peers are measured
    _finish(sc)
    emit({
        "system": "task-sidecar", "n": a.n, "workers": a.workers, "idle": idle,
        "enqueue_per_s": a.n / (t_created - t0),
        "drain_per_s": a.n / drain_s,
        "first_start_after_due_ms": (t_first - due) * 1000,
        "latency": lat,
        "storage": "SQLite WAL, synchronous=NORMAL, group commit",
        "notes": f"over stdio: drain = common runAt → last COMPLETED notification read by the client; "
                 f"--concurrency {a.workers} handler threads; first start {(t_first - due) * 1000:.0f} ms after runAt",
    })


# ---------------------------------------------------------------- throughput


def cmd_throughput(a: argparse.Namespace) -> None:
    d = fresh_dir(f"tp-{os.getpid()}")
    sc = Sidecar(str(d / "t.db"))
    cpu0 = sc.cpu_seconds() or 0.0
    t0 = clock()
    if a.mode == "single":
        rids = _send_creates(sc, [dict(NOOP) for _ in range(a.n)])
    else:
        rids = []
        for start in range(0, a.n, a.chunk):
            count = min(a.chunk, a.n - start)
            rid, _ = sc.send("tasks.createMany", {"tasks": [dict(NOOP) for _ in range(count)]})
            rids.append(rid)
    ids, t_created = _collect(sc, rids, 120)
    if len(ids) != a.n or len(set(ids)) != a.n:
        fail(f"asked for {a.n} tasks, got {len(ids)} ({len(set(ids))} distinct)")
    t_done = _wait_all(sc, ids, "COMPLETED", 120 + a.n / 100, "throughput")
    t_first_run = min(_started(sc, i) for i in ids)
    missing_q = a.n - sc.count_status(ids, "QUEUED")
    missing_r = a.n - sc.count_status(ids, "RUNNING")
    cpu = (sc.cpu_seconds() or 0.0) - cpu0
    updates = sc.updates
    _finish(sc)
    emit({
        "mode": a.mode, "n": a.n, "chunk": a.chunk if a.mode == "many" else 1,
        "creates_per_s": a.n / (t_created - t0),
        "completions_per_s": a.n / (t_done - t_first_run),
        "cycle_per_s": a.n / (t_done - t0),
        "cycle_s": t_done - t0,
        "sidecar_cpu_s": cpu,
        "notifications": updates, "expected_notifications": 3 * a.n,
        "queued_not_announced": missing_q, "running_not_announced": missing_r,
        "merged_updates": sc.merged_updates,
    })


# ---------------------------------------------------------------- latency


def cmd_latency(a: argparse.Namespace) -> None:
    d = fresh_dir(f"lat-{os.getpid()}")
    sc = Sidecar(str(d / "t.db"))
    if a.queued:
        later = int(time.time() * 1000) + 86_400_000  # QUEUED, due tomorrow: a deep queue
        rids = [sc.send("tasks.createMany", {"tasks": [{**NOOP, "runAt": later}] * min(5000, a.queued - s)})[0]
                for s in range(0, a.queued, 5000)]
        ids, _ = _collect(sc, rids, 120)
        stats = sc.call("tasks.stats")
        if stats["byStatus"]["QUEUED"] != a.queued:
            fail(f"expected {a.queued} queued, stats say {stats['byStatus']}")
        time.sleep(0.5)
    for _ in range(20):  # not measured: the first requests after ready meet the warm-up (protocol.warm_up)
        sc.call("system.ping")
    ping = [sc.timed_call("system.ping")[0] for _ in range(1000)]  # the protocol floor, for scale
    ping_random = []  # the same floor met as the probes meet it: after an idle gap
    for _ in range(min(100, a.samples)):
        probe_gap("idle")
        ping_random.append(sc.timed_call("system.ping")[0])
    lat = idle_latency(sc, a.samples)
    busy = None
    if a.busy:
        # a backlog of `busy` due no-op tasks draining while high-priority probes are created
        rids = [sc.send("tasks.createMany", {"tasks": [dict(NOOP)] * min(5000, a.busy - s)})[0]
                for s in range(0, a.busy, 5000)]
        backlog, _ = _collect(sc, rids, 120)
        busy = idle_latency(sc, min(a.samples, 100), gap=partial(probe_gap, "busy"), priority=10)
        _wait_all(sc, backlog, "COMPLETED", 300, "busy backlog")
    held = None
    if a.held:
        # a playlist's downloads queued behind their type's limit while other work comes and goes:
        # each completion's claim must find the next task without walking the held ones
        sc.call("queue.setConcurrency", {"type": "bench.hold", "limit": 2})
        item = {"type": "bench.hold", "details": {"seconds": 600}}
        rids = [sc.send("tasks.createMany", {"tasks": [item] * min(5000, a.held - s)})[0]
                for s in range(0, a.held, 5000)]
        _collect(sc, rids, 120)
        stats = sc.call("tasks.stats")
        if stats["byType"]["bench.hold"].get("QUEUED") != a.held - 2:
            fail(f"expected {a.held - 2} held back, stats say {stats['byType']['bench.hold']}")
        time.sleep(0.5)
        held = idle_latency(sc, min(a.samples, 100))
    _finish(sc)
    emit({"queued": a.queued, "samples": a.samples, **lat, "ping_ms": summary(ping),
          "ping_random_ms": summary(ping_random),
          "busy": busy, "busy_backlog": a.busy, "held": held, "held_back": a.held})


# ---------------------------------------------------------------- progress fan-out


def cmd_fanout(a: argparse.Namespace) -> None:
    d = fresh_dir(f"fan-{os.getpid()}")
    sc = Sidecar(str(d / "t.db"))
    time.sleep(0.5)
    c0, w0 = sc.cpu_seconds(), clock()
    time.sleep(1.0)
    idle_cpu = ((sc.cpu_seconds() or 0) - (c0 or 0)) / (clock() - w0)
    progress_events: list[tuple[float, float, str]] = []

    def on_update(t: float, task: dict[str, Any]) -> None:
        if task["type"] == "bench.progress" and task["status"] == "RUNNING" and task["progress"] > 0:
            progress_events.append((t, task["progress"], task["message"]))

    sc.on_update = on_update
    c0, w0 = sc.cpu_seconds() or 0.0, clock()
    task = sc.call("tasks.create", {"type": "bench.progress",
                                    "details": {"rate": a.rate, "seconds": a.seconds}})
    tid = task["id"]
    if not sc.wait_status([tid], "COMPLETED", a.seconds + 30):
        fail("progress task never completed")
    c1, w1 = sc.cpu_seconds() or 0.0, clock()
    final = sc.last_task[tid]
    _finish(sc)
    n = int(a.rate * a.seconds)
    last_msg = progress_events[-1][2] if progress_events else None
    seen = sc.first_seen[tid]
    run_s = seen["COMPLETED"] - seen["RUNNING"]
    reported_rate = final["result"]["ticks"] / final["result"]["seconds"]
    if last_msg != f"tick {n}/{n}":
        fail(f"the last progress value did not arrive: last seen {last_msg!r}, expected 'tick {n}/{n}'")
    emit({
        "rate_asked": a.rate, "seconds": a.seconds, "ticks": n,
        "handler_rate_per_s": reported_rate,
        "delivered": len(progress_events),
        "delivered_per_s": len(progress_events) / run_s,
        "last_value_arrived": True,
        "cpu_percent_of_core": 100 * (c1 - c0) / (w1 - w0),
        "idle_cpu_percent_of_core": 100 * idle_cpu,
        "max_gap_ms": max((b[0] - a_[0]) * 1000 for a_, b in zip(progress_events, progress_events[1:]))
        if len(progress_events) > 1 else None,
    })


# ---------------------------------------------------------------- createMany playlist


def cmd_createmany(a: argparse.Namespace) -> None:
    d = fresh_dir(f"cm-{os.getpid()}")
    sc = Sidecar(str(d / "t.db"))
    later = int(time.time() * 1000) + 86_400_000
    parent = sc.call("tasks.create", {"type": "bench.hold", "runAt": later})  # a QUEUED playlist
    req_ms: list[float] = []
    ping_ms: list[float] = []
    announced_before: list[int] = []
    not_queued: list[int] = []
    for _ in range(a.rounds):
        children = [{"type": "demo.noop", "parentId": parent["id"],
                     "details": {"url": f"https://example.invalid/v/{i}", "index": i}}
                    for i in range(a.children)]
        rid, t0 = sc.send("tasks.createMany", {"tasks": children})
        pid_, tp = sc.send("system.ping")
        t1, result = sc.result(rid, 60)
        tpr, pong = sc.result(pid_, 60)
        if pong != "pong":
            fail("ping answered wrongly")
        ids = [t["id"] for t in result["tasks"]]
        if len(ids) != a.children:
            fail(f"createMany returned {len(ids)} of {a.children}")
        req_ms.append((t1 - t0) * 1000)
        ping_ms.append((tpr - tp) * 1000)
        announced_before.append(sum(1 for i in ids if "QUEUED" in sc.first_seen.get(i, {})
                                    and sc.first_seen[i]["QUEUED"] <= t1))
        _wait_all(sc, ids, "COMPLETED", 120, "playlist children")
        not_queued.append(a.children - sc.count_status(ids, "QUEUED"))
    _finish(sc)
    emit({"children": a.children, "rounds": a.rounds, "request_ms": summary(req_ms),
          "request_ms_by_round": [round(ms, 1) for ms in req_ms],
          "ping_during_ms": summary(ping_ms),
          "all_announced": True,  # every child reached COMPLETED as seen by the client (else: failed)
          "queued_not_announced_max": max(not_queued),
          "announced_before_response_min": min(announced_before)})


# ---------------------------------------------------------------- start-up and memory


def cmd_startup(a: argparse.Namespace) -> None:
    d = fresh_dir(f"start-{os.getpid()}")
    times: list[float] = []
    first: list[float] = []
    rss: list[float] = []
    for i in range(a.runs):
        if a.db:
            db = a.db
        elif a.existing:
            db = str(d / "t.db")  # created by the first run, reused after
        else:
            db = str(d / f"t{i}.db")
        sc = Sidecar(db, handlers=())
        assert sc.t_ready is not None
        rss.append(sc.rss_mb() or 0)
        # what an Activity Center asks first: answered while the sidecar still warms up after
        # ready (protocol.warm_up imports jsonrpcserver then), so slower than any later call
        first_ms = sc.timed_call("tasks.list", {"limit": 50})[0]
        if not (a.existing and i == 0):
            times.append((sc.t_ready - sc.t_spawn) * 1000)
            first.append(first_ms)
        _finish(sc)
    emit({"runs": len(times), "ms": summary(times, 1), "samples_ms": [round(t, 1) for t in times],
          "rss_at_ready_mb": summary(rss, 1), "first_request_ms": summary(first, 2),
          "db": "given" if a.db else ("existing" if a.existing else "new")})


def cmd_rss(a: argparse.Namespace) -> None:
    d = fresh_dir(f"rss-{os.getpid()}")
    sc = Sidecar(str(d / "t.db"))
    sc.call("system.ping")
    time.sleep(1.0)
    idle = sc.rss_mb()
    done = 0
    all_ids: list[str] = []
    while done < a.n:
        count = min(5000, a.n - done)
        rid, _ = sc.send("tasks.createMany", {"tasks": [dict(NOOP)] * count})
        ids, _ = _collect(sc, [rid], 60)
        all_ids += ids
        done += count
        # keep the backlog bounded, like an app would: wait until at most 20,000 are unfinished
        if done > 20000 and not sc.wait_status(all_ids[: done - 20000], "COMPLETED", 300):
            fail("rss: tasks never completed")
    _wait_all(sc, all_ids, "COMPLETED", 600, "rss drain")
    # measured once the sidecar has been quiet for a few seconds, as an app's would be between
    # jobs: its housekeeping (sidecar/memory.py) returns a burst's freed memory after 1-2 s
    time.sleep(float(os.environ.get("RSS_SETTLE_S", "3.0")))
    after = sc.rss_mb()
    sc.call("tasks.list", {"limit": 50})
    with open(f"/proc/{sc.pid}/status") as f:
        hwm = next((int(l.split()[1]) / 1024 for l in f if l.startswith("VmHWM:")), None)
    _finish(sc)
    emit({"n": a.n, "idle_mb": idle, "after_mb": after, "peak_mb": hwm,
          "growth_percent": 100 * (after - idle) / idle if idle and after else None})


# ---------------------------------------------------------------- a database with a year of history


TYPES = ("app.download", "app.convert", "app.import", "demo.noop", "demo.sleep")


def cmd_bigdb(a: argparse.Namespace) -> None:
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm", ".lock"):
        Path(str(out) + suffix).unlink(missing_ok=True)
    tmp = Path(str(out) + ".building")
    Path(str(tmp) + "-wal").unlink(missing_ok=True)
    tmp.unlink(missing_ok=True)
    t0 = clock()
    sc = Sidecar(str(tmp), handlers=())  # the sidecar creates and migrates the schema
    _finish(sc)
    conn = sqlite3.connect(str(tmp), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-400000")
    cols = [r[1] for r in conn.execute('PRAGMA table_info("tasks")')]
    now = int(time.time() * 1000) - 3_600_000
    year = 365 * 86_400_000
    step = year / a.rows

    def rows():
        for i in range(a.rows):
            created = int(now - year + i * step)
            r = i % 100
            status = "COMPLETED" if r < 97 else ("FAILED" if r < 99 else "CANCELLED")
            yield (
                str(uuid.uuid4()), TYPES[i % len(TYPES)], status, None,
                100.0 if status == "COMPLETED" else 40.0, "done" if status == "COMPLETED" else None,
                '{"url":"https://example.invalid/watch?v=%08d","quality":"1080p"}' % i,
                '{"path":"/home/u/Videos/%08d.mp4"}' % i if status == "COMPLETED" else None,
                "HTTP 404" if status == "FAILED" else None, 0, 1, 3, created, None, None,
                created, created + 5000, created + 10, created + 5000, 3,
            )

    order = ("id", "type", "status", "parent_id", "progress", "message", "details", "result", "error",
             "priority", "attempt", "max_attempts", "run_at", "idempotency_key", "checkpoint",
             "created_at", "updated_at", "started_at", "completed_at", "version")
    missing = [c for c in order if c not in cols]
    if missing:
        fail(f"schema changed: tasks lacks {missing} (has {cols}); update bench bigdb")
    # columns added by later migrations (task graphs): values of a finished top-level task
    extras = {"depends_on": None, "on_child_failure": "fail", "weight": 1.0, "handler_done": 1}
    info = {r[1]: r for r in conn.execute('PRAGMA table_info("tasks")')}
    unknown = [c for c in cols if c not in order and c not in extras and info[c][3] and info[c][4] is None]
    if unknown:
        fail(f"schema changed: NOT NULL columns {unknown} have no default; update bench bigdb")
    extra_cols = [c for c in extras if c in cols]
    extra_vals = tuple(extras[c] for c in extra_cols)
    order = order + tuple(extra_cols)
    base_rows = rows

    def rows():  # noqa: F811
        for r in base_rows():
            yield r + extra_vals
    sql = f'INSERT INTO "tasks" ({", ".join(order)}) VALUES ({", ".join("?" * len(order))})'
    conn.execute("BEGIN")
    conn.executemany(sql, rows())
    # the status counts the sidecar keeps beside every write (tasks.stats reads them)
    conn.execute('DELETE FROM "task_counts"')
    conn.execute('INSERT INTO "task_counts" ("type", "status", "n") '
                 'SELECT "type", "status", COUNT(*) FROM "tasks" GROUP BY "type", "status"')
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("ANALYZE") if a.analyze else None
    conn.close()
    os.replace(tmp, out)
    Path(str(tmp) + "-wal").unlink(missing_ok=True)
    Path(str(tmp) + "-shm").unlink(missing_ok=True)
    Path(str(tmp) + ".lock").unlink(missing_ok=True)
    size = out.stat().st_size
    emit({"rows": a.rows, "build_s": clock() - t0, "bytes": size, "bytes_per_task": size / a.rows})


def _copy_db(src: str, name: str) -> str:
    d = fresh_dir(name)
    dst = d / "big.db"
    shutil.copyfile(src, dst)
    return str(dst)


def _timed(sc: Sidecar, n: int, method: str, params: Any = None) -> list[float]:
    return [sc.timed_call(method, params)[0] for _ in range(n)]


def cmd_scale(a: argparse.Namespace) -> None:
    db = _copy_db(a.db, f"scale-{os.getpid()}")
    rows = sqlite3.connect(db).execute('SELECT COUNT(*) FROM "tasks"').fetchone()[0]
    size = os.path.getsize(db)
    t0 = clock()
    sc = Sidecar(db, track=True)
    start_ms = ((sc.t_ready or t0) - sc.t_spawn) * 1000
    res: dict[str, Any] = {"rows": rows, "db_bytes": size, "bytes_per_task": size / rows,
                           "startup_ms": start_ms, "samples": a.samples}
    # create (request -> response) and claim (create -> RUNNING seen), one at a time
    create_ms, claim_ms = [], []
    for _ in range(a.samples):
        rid, ts = sc.send("tasks.create", dict(NOOP))
        t1, task = sc.result(rid)
        create_ms.append((t1 - ts) * 1000)
        if not sc.wait_status([task["id"]], "COMPLETED", 30):
            fail("scale: a task never completed")
        claim_ms.append((_started(sc, task["id"]) - ts) * 1000)
    res["create_ms"] = summary(create_ms)
    res["create_to_running_ms"] = summary(claim_ms)
    res["list_first_page_ms"] = summary(_timed(sc, a.samples, "tasks.list", {"limit": 50}))
    res["list_active_ms"] = summary(_timed(sc, max(5, a.samples // 10), "tasks.list",
                                           {"limit": 50, "status": ["QUEUED", "RUNNING", "PAUSED", "WAITING"]}))
    cursor, depth = None, 0
    while depth < a.deep:
        page = sc.call("tasks.list", {"limit": 1000, **({"cursor": cursor} if cursor else {})})
        cursor = page["nextCursor"]
        depth += len(page["tasks"])
        if cursor is None:
            break
    res["deep_cursor_depth"] = depth
    res["list_deep_cursor_ms"] = summary(_timed(sc, a.samples, "tasks.list", {"limit": 50, "cursor": cursor}))
    res["stats_ms"] = summary(_timed(sc, max(5, a.samples // 4), "tasks.stats"))
    if sc.call("tasks.stats")["total"] < rows:  # the file must be one the sidecar could have written
        fail("scale: tasks.stats counts fewer tasks than the file holds (the counts were not built)")
    # prune with nothing due (the periodic call), then prune a day of history per call
    res["prune_noop_ms"] = summary(_timed(sc, 10, "tasks.prune", {"olderThanMs": 400 * 86_400_000}))
    day = 86_400_000
    age = int(time.time() * 1000) - sc.call("tasks.list", {"limit": 1, "cursor": None})["tasks"][0]["createdAt"]
    oldest = 366 * day
    prune_ms, deleted = [], 0
    for k in range(a.prune_calls):
        ms, r = sc.timed_call("tasks.prune", {"olderThanMs": oldest - (k + 1) * day})
        prune_ms.append(ms)
        deleted += r["deleted"]
    res["prune_day_ms"] = summary(prune_ms)
    res["prune_day_deleted_per_call"] = deleted / max(1, a.prune_calls)
    del age
    _finish(sc)
    # the claim statement itself, in-process, on this file (no protocol, no engine)
    res["claim_sql_ms"] = _claim_sql(db, a.samples)
    emit(res)


def _claim_sql(db: str, samples: int) -> dict[str, Any]:
    from sidecar.persistence import store

    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    times = []
    cols = {r[1] for r in conn.execute('PRAGMA table_info("tasks")')}
    types = ["demo.noop", "demo.sleep", "demo.fail", "bench.progress", "bench.hold"]
    for _ in range(samples):
        now = int(time.time() * 1000)
        conn.execute("BEGIN IMMEDIATE")
        row = {"id": str(uuid.uuid4()), "type": "demo.noop", "status": "QUEUED", "progress": 0,
               "details": "{}", "priority": 0, "attempt": 0, "max_attempts": 3, "run_at": now,
               "created_at": now, "updated_at": now, "version": 1, "on_child_failure": "fail",
               "weight": 1.0, "handler_done": 0}
        row = {k: v for k, v in row.items() if k in cols}
        conn.execute(f'INSERT INTO "tasks" ({", ".join(row)}) VALUES ({", ".join("?" * len(row))})',
                     tuple(row.values()))
        conn.execute("COMMIT")
        t0 = clock()
        conn.execute("BEGIN IMMEDIATE")
        row = store.claim(conn, types, now)
        conn.execute("COMMIT")
        times.append((clock() - t0) * 1000)
        if row is None:
            fail("claim SQL found nothing to claim")
    conn.close()
    return summary(times)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="bench.sidecar_bench")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("drain"); s.add_argument("--n", type=int, default=5000)
    s.add_argument("--workers", type=int, default=4); s.add_argument("--samples", type=int, default=50)
    s.add_argument("--idle-s", type=float, default=2.0)
    s = sub.add_parser("throughput"); s.add_argument("--n", type=int, default=5000)
    s.add_argument("--mode", choices=("single", "many"), default="single"); s.add_argument("--chunk", type=int, default=500)
    s = sub.add_parser("latency"); s.add_argument("--samples", type=int, default=300)
    s.add_argument("--queued", type=int, default=0); s.add_argument("--busy", type=int, default=0)
    s.add_argument("--held", type=int, default=0)
    s = sub.add_parser("fanout"); s.add_argument("--rate", type=float, default=1000); s.add_argument("--seconds", type=float, default=3)
    s = sub.add_parser("createmany"); s.add_argument("--children", type=int, default=5000); s.add_argument("--rounds", type=int, default=5)
    s = sub.add_parser("startup"); s.add_argument("--runs", type=int, default=7); s.add_argument("--db")
    s.add_argument("--existing", action="store_true")
    s = sub.add_parser("rss"); s.add_argument("--n", type=int, default=100_000)
    s = sub.add_parser("bigdb"); s.add_argument("--rows", type=int, default=1_000_000); s.add_argument("--out", required=True)
    s.add_argument("--analyze", action="store_true")
    s = sub.add_parser("scale"); s.add_argument("--db", required=True); s.add_argument("--samples", type=int, default=200)
    s.add_argument("--deep", type=int, default=100_000); s.add_argument("--prune-calls", type=int, default=20)
    a = p.parse_args(argv)
    globals()[f"cmd_{a.cmd}"](a)


if __name__ == "__main__":
    main()
