"""Handler registration: plain Python functions keyed by task type.

    from sidecar.handlers import handler, TaskError

    @handler("DOWNLOAD_VIDEO", concurrency=3, max_attempts=5, timeout_s=3600,
             details_schema={"type": "object", "required": ["url"],
                             "properties": {"url": {"type": "string"}}})
    def download_video(ctx):
        start = (ctx.state or {}).get("bytes", 0)
        ...
        ctx.progress(42.0, "12 MiB of 30 MiB")
        ctx.checkpoint({"bytes": written})
        ctx.raise_if_cancelled()
        return {"path": dest}
"""

from __future__ import annotations

from sidecar.handlers.context import TaskCancelled, TaskContext, TaskError
from sidecar.handlers.registry import (
    AppOptions,
    DetailsError,
    HandlerSpec,
    Registry,
    default_registry,
    handler,
)

__all__ = [
    "AppOptions",
    "DetailsError",
    "HandlerSpec",
    "Registry",
    "TaskCancelled",
    "TaskContext",
    "TaskError",
    "default_registry",
    "handler",
]
