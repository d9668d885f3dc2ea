"""Protocol error codes, one exception class each (raised anywhere, answered by the protocol layer)."""

from __future__ import annotations

from typing import Any

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
TASK_NOT_FOUND = -32001
INVALID_TRANSITION = -32002
UNKNOWN_TASK_TYPE = -32003
DEPENDENCY_CYCLE = -32004
SHUTTING_DOWN = -32005
STORAGE_ERROR = -32006


class SidecarError(Exception):
    """Base of every error answered with an application or params code."""

    code: int = INTERNAL_ERROR

    def __init__(self, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.message, self.data = message, data

    def to_error(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


class InvalidParams(SidecarError):
    code = INVALID_PARAMS

    def __init__(self, field: str, reason: str) -> None:
        label = field or "params"
        super().__init__(f"Invalid params: {label}: {reason}", {"field": label, "reason": reason})


class TaskNotFound(SidecarError):
    code = TASK_NOT_FOUND

    def __init__(self, task_id: Any) -> None:
        super().__init__(f"Task not found: {task_id}", {"id": task_id})


class InvalidTransition(SidecarError):
    code = INVALID_TRANSITION

    def __init__(self, task_id: str, current: str, target: str, why: str | None = None) -> None:
        text = why or f"cannot move from {current} to {target}"
        super().__init__(
            f"Invalid transition for task {task_id}: {text}",
            {"id": task_id, "from": current, "to": target},
        )


class UnknownTaskType(SidecarError):
    code = UNKNOWN_TASK_TYPE

    def __init__(self, type: str, field: str = "type") -> None:
        super().__init__(f"Unknown task type: {type!r} ({field})", {"type": type, "field": field})


class DependencyCycle(SidecarError):
    code = DEPENDENCY_CYCLE

    def __init__(self, cycle: list[Any]) -> None:
        super().__init__("Dependency cycle: " + " -> ".join(map(str, cycle)), {"cycle": cycle})


class ShuttingDown(SidecarError):
    code = SHUTTING_DOWN

    def __init__(self) -> None:
        super().__init__("The sidecar is shutting down")


class StorageError(SidecarError):
    code = STORAGE_ERROR

    def __init__(self, reason: str) -> None:
        super().__init__(f"Storage error: {reason}", {"reason": reason})
