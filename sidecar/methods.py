"""The method table: every protocol method with its params schema and what it does.

Reads (get, list, stats) run on the reader thread's own connection (WAL readers never wait for the
writer); writes are ops submitted to the engine and answered after its commit.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from sidecar import PROTOCOL_VERSION, __version__
from sidecar.domain.graph import build_tree
from sidecar.domain.states import TERMINAL, Status
from sidecar.errors import (
    DEPENDENCY_CYCLE,
    INVALID_TRANSITION,
    SHUTTING_DOWN,
    STORAGE_ERROR,
    TASK_NOT_FOUND,
    UNKNOWN_TASK_TYPE,
    InvalidParams,
    ShuttingDown,
    TaskNotFound,
)
from sidecar.persistence import store
from sidecar.protocol import MethodSpec

if TYPE_CHECKING:
    from sidecar.server import Sidecar

ID = {"type": "string", "minLength": 1, "maxLength": 200}
MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z in epoch ms: dates and durations stay below it
STATUS = {"enum": [s.value for s in Status]}
TERMINAL_STATUS = {"enum": sorted(s.value for s in TERMINAL)}
CREATE_ITEM: dict[str, Any] = {
    "type": "object",
    "properties": {
        "type": {"type": "string", "minLength": 1, "maxLength": 200},
        "details": {"type": "object"},
        "parentId": {"type": ["string", "null"], "minLength": 1, "maxLength": 200},
        "priority": {"type": "integer", "minimum": -1_000_000, "maximum": 1_000_000},
        "maxAttempts": {"type": "integer", "minimum": 1, "maximum": 1000},
        "runAt": {"type": "integer", "minimum": 0, "maximum": MAX_MS},
        "idempotencyKey": {"type": ["string", "null"], "minLength": 1, "maxLength": 500},
        "dependsOn": {"type": "array", "items": ID, "maxItems": 10_000},
        "ref": {"type": "string", "minLength": 1, "maxLength": 200},
        "onChildFailure": {"enum": ["fail", "continue"]},
        "weight": {"type": "number", "exclusiveMinimum": 0, "maximum": 1_000_000},
    },
    "required": ["type"],
    "additionalProperties": False,
}
# tasks.create takes the same params as a createMany item, less `ref` (a name for other items)
CREATE_PARAMS: dict[str, Any] = {
    **CREATE_ITEM,
    "properties": {k: v for k, v in CREATE_ITEM["properties"].items() if k != "ref"},
}
TASK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "type": {"type": "string"},
        "status": STATUS,
        "parentId": {"type": ["string", "null"]},
        "progress": {"type": "number", "minimum": 0, "maximum": 100},
        "message": {"type": ["string", "null"]},
        "details": {"type": "object"},
        "result": {},
        "error": {"type": ["string", "null"]},
        "priority": {"type": "integer"},
        "attempt": {"type": "integer"},
        "maxAttempts": {"type": "integer"},
        "runAt": {"type": "integer"},
        "idempotencyKey": {"type": ["string", "null"]},
        "createdAt": {"type": "integer"},
        "updatedAt": {"type": "integer"},
        "startedAt": {"type": ["integer", "null"]},
        "completedAt": {"type": ["integer", "null"]},
        "version": {"type": "integer"},
        "dependsOn": {"type": "array", "items": {"type": "string"}},
        "onChildFailure": {"enum": ["fail", "continue"]},
        "weight": {"type": "number"},
    },
    "required": list(store._FIELD_NAMES),
}


TREE_SCHEMA: dict[str, Any] = {
    "allOf": [{"$ref": "#/components/schemas/Task"}],
    "properties": {
        "children": {"type": "array", "items": {"$ref": "#/components/schemas/TaskTree"}},
        "childCounts": {"type": "object", "additionalProperties": {"type": "integer"}},
    },
}
NOTIFICATIONS: list[dict[str, Any]] = [
    {"name": "sidecar.ready", "summary": "First line: the database is open, migrated and recovered.",
     "params": {"type": "object", "required": ["version", "protocolVersion", "pid", "dbPath", "recovered"]}},
    {"name": "task.updated", "summary": "A committed change of a task; seq +1 each.",
     "params": {"type": "object", "required": ["seq", "task"],
                "properties": {"seq": {"type": "integer"}, "task": {"$ref": "#/components/schemas/Task"}}}},
    {"name": "task.deleted", "summary": "Tasks removed by tasks.delete or tasks.prune.",
     "params": {"type": "object", "required": ["ids"]}},
    {"name": "queue.updated", "summary": "Claiming switches or limits changed.",
     "params": {"type": "object"}},
]


def openrpc_document(methods: list[MethodSpec]) -> dict[str, Any]:
    """The OpenRPC description of the method table (what rpc.discover answers)."""
    from sidecar.errors import SidecarError

    names = {cls.code: cls.__name__ for cls in SidecarError.__subclasses__()}
    described = []
    for m in methods:
        props = m.params.get("properties", {})
        required = set(m.params.get("required", []))
        described.append({
            "name": m.name,
            "summary": m.summary,
            "paramStructure": "by-name",
            "params": [{"name": k, "required": k in required, "schema": v} for k, v in props.items()],
            "result": {"name": "result", "schema": m.result},
            "errors": [{"code": c, "message": names.get(c, str(c))} for c in m.errors],
        })
    return {
        "openrpc": "1.2.6",
        "info": {"title": "task-sidecar", "version": __version__, "x-protocolVersion": PROTOCOL_VERSION},
        "methods": described,
        "components": {"schemas": {"Task": TASK_SCHEMA, "TaskTree": TREE_SCHEMA}},
        "x-notifications": NOTIFICATIONS,
    }


def _obj(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


def build_methods(sidecar: "Sidecar") -> list[MethodSpec]:
    engine = sidecar.engine
    registry = sidecar.registry

    def write(op: Any) -> Any:
        if sidecar.stopping:  # e.g. later items of a batch that asked for system.shutdown
            raise ShuttingDown()
        return engine.submit(op)

    check_create = engine.check_create

    graph = engine.graph

    def create(p: dict[str, Any]) -> Any:
        check_create(p)
        return write(lambda tx: graph.create_many(tx, [p], prefix_items=False)[0])

    def prune(p: dict[str, Any]) -> Any:
        if sidecar.stopping:
            raise ShuttingDown()
        return graph.prune_in_steps(p.get("olderThanMs", 0), p.get("statuses") or sorted(s.value for s in TERMINAL))

    def create_many(p: dict[str, Any]) -> Any:
        items = p["tasks"]
        for i, item in enumerate(items):
            check_create(item, f"tasks[{i}].")
        return write(lambda tx: {"tasks": graph.create_many(tx, items)})

    def get(p: dict[str, Any]) -> Any:
        conn = sidecar.read_conn()
        row = store.get(conn, p["id"])
        if row is None:
            raise TaskNotFound(p["id"])
        task = store.task_from_row(row)
        if "children" in p.get("include", ()):
            children, _ = store.list_tasks(conn, statuses=None, types=None, parent_id=p["id"],
                                          limit=100_000, after=None)
            task["children"] = [store.task_from_row(r) for r in reversed(children)]
            counts: dict[str, int] = {}
            for child in task["children"]:
                counts[child["status"]] = counts.get(child["status"], 0) + 1
            task["childCounts"] = counts
        return task

    def tree(p: dict[str, Any]) -> Any:
        conn = sidecar.read_conn()
        row = store.get(conn, p["id"])
        if row is None:
            raise TaskNotFound(p["id"])
        return build_tree(row, store.descendants(conn, p["id"]))

    def queue_change(**change: Any) -> Any:
        return write(lambda tx: engine.set_queue(tx, **change))

    def list_(p: dict[str, Any]) -> Any:
        after = None
        if p.get("cursor") is not None:
            after = sidecar.cursors.parse(p["cursor"])
            if after is None:
                raise InvalidParams("cursor", "was not issued by this sidecar")
        rows, last = store.list_tasks(
            sidecar.read_conn(),
            statuses=p.get("status"),
            types=p.get("type"),
            parent_id=p.get("parentId"),
            limit=p.get("limit", 50),
            after=after,
        )
        return {
            "tasks": [store.task_from_row(r) for r in rows],
            "nextCursor": sidecar.cursors.issue(*last) if last else None,
        }

    def stats(p: dict[str, Any]) -> Any:
        return store.stats(sidecar.read_conn())

    def info(p: dict[str, Any]) -> Any:
        return {
            "version": __version__,
            "protocolVersion": PROTOCOL_VERSION,
            "pid": os.getpid(),
            "dbPath": sidecar.db_path,
            "concurrency": engine.concurrency,
            "handlers": [spec.describe() for spec in registry],
        }

    def shutdown(p: dict[str, Any]) -> Any:
        sidecar.request_stop("system.shutdown")
        return None

    id_param = _obj({"id": ID}, ("id",))
    task_result = {"$ref": "#/components/schemas/Task"}
    tree_result = {"$ref": "#/components/schemas/TaskTree"}
    queue_result = _obj({
        "paused": {"type": "boolean"},
        "pausedTypes": {"type": "array", "items": {"type": "string"}},
        "concurrency": {"type": "integer"},
        "typeConcurrency": {"type": "object", "additionalProperties": {"type": "integer"}},
    })
    type_param = {"type": "string", "minLength": 1, "maxLength": 200}
    table = [
        MethodSpec("system.ping", "Liveness check.", lambda p: "pong", result={"const": "pong"}),
        MethodSpec("system.info", "Version, database path and the registered handlers.", info,
                   result={"type": "object"}),
        MethodSpec("system.shutdown", "Answer, then stop gracefully (running tasks are requeued).",
                   shutdown, result={"type": "null"}),
        MethodSpec("tasks.create", "Create one task.", create, params=CREATE_PARAMS, result=task_result,
                   errors=(UNKNOWN_TASK_TYPE, INVALID_TRANSITION, DEPENDENCY_CYCLE, SHUTTING_DOWN, STORAGE_ERROR)),
        MethodSpec("tasks.createMany", "Create many tasks in one transaction (all or nothing).",
                   create_many,
                   params=_obj({"tasks": {"type": "array", "minItems": 1, "maxItems": 10_000,
                                          "items": CREATE_ITEM}}, ("tasks",)),
                   result=_obj({"tasks": {"type": "array", "items": task_result}}),
                   errors=(UNKNOWN_TASK_TYPE, INVALID_TRANSITION, DEPENDENCY_CYCLE, SHUTTING_DOWN, STORAGE_ERROR)),
        MethodSpec("tasks.get", "One task by id; include: [\"children\"] adds its direct children.", get,
                   params=_obj({"id": ID, "include": {"type": "array", "items": {"enum": ["children"]}}},
                               ("id",)),
                   result=task_result, errors=(TASK_NOT_FOUND,)),
        MethodSpec("tasks.tree", "A task and its whole subtree, with per-status child counts.", tree,
                   params=id_param, result=tree_result, errors=(TASK_NOT_FOUND,)),
        MethodSpec("tasks.pause", "Pause a task and its subtree (running ones stop at their next check).",
                   lambda p: write(lambda tx: graph.pause(tx, p["id"])), params=id_param,
                   result=task_result, errors=(TASK_NOT_FOUND, INVALID_TRANSITION)),
        MethodSpec("tasks.resume", "Resume the paused tasks of a subtree.",
                   lambda p: write(lambda tx: graph.resume(tx, p["id"])), params=id_param,
                   result=task_result, errors=(TASK_NOT_FOUND, INVALID_TRANSITION)),
        MethodSpec("queue.pause", "Stop claiming (all types, or one); running tasks finish.",
                   lambda p: queue_change(paused=True, type=p.get("type")),
                   params=_obj({"type": type_param}), result=queue_result),
        MethodSpec("queue.resume", "Claim again (all types, or one).",
                   lambda p: queue_change(paused=False, type=p.get("type")),
                   params=_obj({"type": type_param}), result=queue_result),
        MethodSpec("queue.setConcurrency", "Change the global or a per-type limit (null: back to default).",
                   lambda p: queue_change(type=p.get("type"), limit=p["limit"]),
                   params=_obj({"type": type_param,
                                "limit": {"type": ["integer", "null"], "minimum": 1, "maximum": 256}},
                               ("limit",)),
                   result=queue_result),
        MethodSpec("queue.status", "Claiming switches and limits in force.",
                   lambda p: engine.queue.describe(), result=queue_result),
        MethodSpec("tasks.list", "Tasks newest first, filtered, cursor-paginated.", list_,
                   params=_obj({
                       "status": {"type": "array", "items": STATUS, "maxItems": 7},
                       "type": {"type": "array", "items": {"type": "string"}, "maxItems": 1000},
                       "parentId": ID,
                       "limit": {"type": "integer", "minimum": 1, "maximum": 1000},
                       "cursor": {"type": ["string", "null"], "maxLength": 200},
                   }),
                   result=_obj({"tasks": {"type": "array", "items": task_result},
                                "nextCursor": {"type": ["string", "null"]}})),
        MethodSpec("tasks.stats", "Counts by status and by type.", stats,
                   result=_obj({"total": {"type": "integer"}, "byStatus": {"type": "object"},
                                "byType": {"type": "object"}})),
        MethodSpec("tasks.cancel", "Cancel a task (a running one is signalled).",
                   lambda p: write(lambda tx: graph.cancel(tx, p["id"])), params=id_param,
                   result=task_result, errors=(TASK_NOT_FOUND, INVALID_TRANSITION)),
        MethodSpec("tasks.retry", "Queue a FAILED or CANCELLED task again (a new series of attempts).",
                   lambda p: write(lambda tx: graph.retry(tx, p["id"])), params=id_param,
                   result=task_result, errors=(TASK_NOT_FOUND, INVALID_TRANSITION)),
        MethodSpec("tasks.delete", "Delete a finished task and its subtree.",
                   lambda p: write(lambda tx: graph.delete(tx, p["id"])), params=id_param,
                   result=_obj({"deleted": {"type": "integer"}}),
                   errors=(TASK_NOT_FOUND, INVALID_TRANSITION)),
        MethodSpec("tasks.prune", "Delete finished tasks older than olderThanMs.",
                   prune,
                   params=_obj({"olderThanMs": {"type": "integer", "minimum": 0, "maximum": MAX_MS},
                                "statuses": {"type": "array", "items": TERMINAL_STATUS, "minItems": 1}}),
                   result=_obj({"deleted": {"type": "integer"}})),
    ]
    document = openrpc_document(table)
    table.append(MethodSpec("rpc.discover", "This OpenRPC document.", lambda p: document,
                            result={"type": "object"}))
    return table
