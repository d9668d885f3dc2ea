"""Built-in handlers, always present, for demos, tests and benchmarks."""

from __future__ import annotations

from typing import Any

from sidecar.handlers.context import TaskContext, TaskError
from sidecar.handlers.registry import handler


@handler("demo.noop", details_schema={"type": "object"}, trusted=True)
def noop(ctx: TaskContext) -> dict[str, Any]:
    return {}


@handler(
    "demo.sleep",
    details_schema={
        "type": "object",
        "properties": {
            "seconds": {"type": "number", "minimum": 0, "maximum": 86400, "default": 1},
            "steps": {"type": "integer", "minimum": 1, "maximum": 100000, "default": 10},
        },
        "additionalProperties": False,
    },
    trusted=True,
)
def sleep(ctx: TaskContext) -> dict[str, Any]:
    """Sleeps ``seconds`` in ``steps``, reporting progress and checkpointing each step reached."""
    seconds = float(ctx.details.get("seconds", 1))
    steps = int(ctx.details.get("steps", 10))
    start = int((ctx.state or {}).get("step", 0))
    for step in range(start, steps):
        ctx.sleep(seconds / steps)
        ctx.checkpoint({"step": step + 1})
        ctx.progress((step + 1) * 100.0 / steps, f"step {step + 1}/{steps}")
    return {"steps": steps, "resumedFrom": start}


@handler(
    "demo.fail",
    details_schema={
        "type": "object",
        "properties": {
            "message": {"type": "string", "default": "demo failure"},
            "retryable": {"type": "boolean", "default": False},
        },
        "additionalProperties": False,
    },
    trusted=True,
)
def fail(ctx: TaskContext) -> None:
    raise TaskError(
        str(ctx.details.get("message", "demo failure")),
        retryable=bool(ctx.details.get("retryable", False)),
    )

from sidecar.handlers import http_download as _http_download  # noqa: E402,F401  http.download
from sidecar.handlers import process_run as _process_run  # noqa: E402,F401  process.run
