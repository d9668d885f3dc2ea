"""A tiny stand-in for the sidecar, speaking the same wire protocol (docs/protocol.md).

Used by the harness tests that check the harness itself rather than the core (a sidecar that
writes a stray line, one that dies): ``python tests/harness/fake_sidecar.py --db X [--die-after N]
[--stray-line]``. In-memory, demo.noop / demo.sleep / demo.fail only, no graphs.
"""

import argparse
import json
import os
import sys
import threading
import time
import uuid

LOCK = threading.Lock()
TASKS = {}
SEQ = [0]
TYPES = {"demo.noop": 3, "demo.sleep": 3, "demo.fail": 3}
CANCELLED = set()


def now():
    return int(time.time() * 1000)


def send(msg):
    with LOCK:
        sys.stdout.write(json.dumps(msg) + "\n")
        sys.stdout.flush()


def announce(task):
    SEQ[0] += 1
    send({"jsonrpc": "2.0", "method": "task.updated", "params": {"seq": SEQ[0], "task": dict(task)}})


def change(task, **fields):
    with LOCK:
        task.update(fields, updatedAt=now(), version=task["version"] + 1)
        snap = dict(task)
    SEQ_LOCK.acquire()
    try:
        SEQ[0] += 1
        send({"jsonrpc": "2.0", "method": "task.updated", "params": {"seq": SEQ[0], "task": snap}})
    finally:
        SEQ_LOCK.release()


SEQ_LOCK = threading.Lock()


def run(task):
    change(task, status="RUNNING", attempt=task["attempt"] + 1, startedAt=now())
    d = task["details"]
    try:
        if task["type"] == "demo.fail":
            raise RuntimeError(d.get("message", "demo failure"))
        if task["type"] == "demo.sleep":
            steps = int(d.get("steps", 10))
            for i in range(steps):
                time.sleep(float(d.get("seconds", 1)) / steps)
                if task["id"] in CANCELLED:
                    change(task, status="CANCELLED", completedAt=now())
                    return
                change(task, progress=round(100 * (i + 1) / steps, 1), message=f"step {i + 1}/{steps}")
        change(task, status="COMPLETED", progress=100, result={}, completedAt=now())
    except RuntimeError as exc:
        if d.get("retryable") and task["attempt"] < task["maxAttempts"]:
            change(task, status="QUEUED", error=str(exc))
            time.sleep(0.3)
            run(task)
        else:
            change(task, status="FAILED", error=str(exc), completedAt=now())


CREATE_FIELDS = {"type", "details", "parentId", "priority", "maxAttempts", "runAt", "idempotencyKey"}


def create(p):
    for k in p:
        if k not in CREATE_FIELDS:
            raise Err(-32602, f"{k}: unknown field", {"field": k, "reason": "unknown field"})
    if p.get("type") not in TYPES:
        raise Err(-32003, "unknown task type", {"type": p.get("type")})
    t = now()
    task = {
        "id": str(uuid.uuid4()), "type": p["type"], "status": "QUEUED", "parentId": p.get("parentId"),
        "progress": 0, "message": None, "details": p.get("details") or {}, "result": None, "error": None,
        "priority": p.get("priority", 0), "attempt": 0, "maxAttempts": p.get("maxAttempts", 3),
        "runAt": t, "idempotencyKey": p.get("idempotencyKey"), "createdAt": t, "updatedAt": t,
        "startedAt": None, "completedAt": None, "version": 1,
    }
    TASKS[task["id"]] = task
    SEQ_LOCK.acquire()
    SEQ[0] += 1
    send({"jsonrpc": "2.0", "method": "task.updated", "params": {"seq": SEQ[0], "task": dict(task)}})
    SEQ_LOCK.release()
    threading.Thread(target=run, args=(task,), daemon=True).start()
    return dict(task)


class Err(Exception):
    def __init__(self, code, message, data=None):
        self.code, self.message, self.data = code, message, data


def get(p):
    if p.get("id") not in TASKS:
        raise Err(-32001, "task not found", {"id": p.get("id")})
    return dict(TASKS[p["id"]])


def cancel(p):
    task = TASKS.get(p.get("id"))
    if task is None:
        raise Err(-32001, "task not found", {"id": p.get("id")})
    CANCELLED.add(task["id"])
    return dict(task)


METHODS = {
    "system.ping": lambda p: "pong",
    "system.info": lambda p: {"version": "0.0-fake", "protocolVersion": "1", "pid": os.getpid(), "dbPath": ARGS.db,
                              "handlers": [{"type": t, "concurrency": 4, "maxAttempts": 3, "timeoutS": None, "detailsSchema": {}} for t in TYPES]},
    "tasks.create": create,
    "tasks.createMany": lambda p: {"tasks": [create(dict(t)) for t in p["tasks"]]},
    "tasks.get": get,
    "tasks.cancel": cancel,
    "tasks.list": lambda p: {"tasks": sorted((dict(t) for t in TASKS.values()), key=lambda t: -t["createdAt"]), "nextCursor": None},
    "tasks.stats": lambda p: {"total": len(TASKS), "byStatus": {}, "byType": {}},
}


def main():
    send({"jsonrpc": "2.0", "method": "sidecar.ready", "params": {"version": "0.0-fake", "protocolVersion": "1", "pid": os.getpid(),
                                                                  "dbPath": ARGS.db, "recovered": {"requeued": 0, "failed": 0}}})
    if ARGS.stray_line:
        with LOCK:
            sys.stdout.write("this is not json\n")
            sys.stdout.flush()
    handled = 0
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            msg = json.loads(line)
        except json.JSONDecodeError as exc:
            send({"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "Parse error", "data": str(exc)}})
            continue
        handled += 1
        if ARGS.die_after is not None and handled > ARGS.die_after:
            os._exit(3)
        fn = METHODS.get(msg.get("method"))
        if "id" not in msg:
            continue
        if fn is None:
            send({"jsonrpc": "2.0", "id": msg["id"], "error": {"code": -32601, "message": "Method not found", "data": msg.get("method")}})
            continue
        try:
            send({"jsonrpc": "2.0", "id": msg["id"], "result": fn(msg.get("params") or {})})
        except Err as e:
            send({"jsonrpc": "2.0", "id": msg["id"], "error": {"code": e.code, "message": e.message, "data": e.data}})


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--db")
    ap.add_argument("--die-after", type=int)
    ap.add_argument("--stray-line", action="store_true")
    ARGS = ap.parse_args()
    main()
