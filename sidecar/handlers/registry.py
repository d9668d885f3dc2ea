"""The handler registry and the ``@handler`` decorator."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any


from sidecar.handlers.context import TaskContext

HandlerFn = Callable[[TaskContext], Any]
# Checks beyond the JSON schema (e.g. a path inside an allowed directory). Raise
# DetailsError(field, reason), field relative to details ("dest"), to refuse with -32602.
DetailsCheck = Callable[[dict[str, Any], "AppOptions"], None]


class DetailsError(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field, self.reason = field, reason


@dataclass
class AppOptions:
    """What the app allowed at start-up (command line); the renderer cannot change it."""

    allow_dirs: list[str] = field(default_factory=list)
    allow_programs: dict[str, str] = field(default_factory=dict)
    allow_hosts: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class HandlerSpec:
    type: str
    fn: HandlerFn
    concurrency: int | None = None  # per-type limit; None: only the global limit applies
    max_attempts: int = 3
    timeout_s: float | None = None
    details_schema: dict[str, Any] | None = None
    retry_base_s: float = 0.5
    retry_max_s: float = 30.0
    check_details: DetailsCheck | None = field(default=None, compare=False, repr=False)
    validator: Any = field(default=None, compare=False, repr=False)  # sidecar.protocol.Schema

    def describe(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "concurrency": self.concurrency,
            "maxAttempts": self.max_attempts,
            "timeoutS": self.timeout_s,
            "detailsSchema": self.details_schema,
        }


class Registry:
    def __init__(self) -> None:
        self._specs: dict[str, HandlerSpec] = {}
        self.options = AppOptions()

    def register(self, spec: HandlerSpec, *, trusted: bool = False) -> HandlerSpec:
        """``trusted``: the schema ships with the sidecar (tested), so skip checking it at start-up."""
        if spec.details_schema is not None and spec.validator is None:
            from sidecar.protocol import Schema

            spec = HandlerSpec(**{**spec.__dict__, "validator": Schema(spec.details_schema, trusted=trusted)})
        self._specs[spec.type] = spec
        return spec

    def get(self, type: str) -> HandlerSpec | None:
        return self._specs.get(type)

    def types(self) -> list[str]:
        return list(self._specs)

    def __iter__(self) -> Iterator[HandlerSpec]:
        return iter(self._specs.values())

    def __contains__(self, type: object) -> bool:
        return type in self._specs

    def handler(
        self,
        type: str,
        *,
        concurrency: int | None = None,
        max_attempts: int = 3,
        timeout_s: float | None = None,
        details_schema: dict[str, Any] | None = None,
        retry_base_s: float = 0.5,
        retry_max_s: float = 30.0,
        check_details: DetailsCheck | None = None,
        trusted: bool = False,
    ) -> Callable[[HandlerFn], HandlerFn]:
        def register(fn: HandlerFn) -> HandlerFn:
            self.register(
                HandlerSpec(
                    type=type,
                    fn=fn,
                    concurrency=concurrency,
                    max_attempts=max_attempts,
                    timeout_s=timeout_s,
                    details_schema=details_schema,
                    retry_base_s=retry_base_s,
                    retry_max_s=retry_max_s,
                    check_details=check_details,
                ),
                trusted=trusted,
            )
            return fn

        return register


default_registry = Registry()
handler = default_registry.handler


def load_modules(names: list[str]) -> None:
    """Import the app's handler modules (``--handlers``); they register into the default registry.

    The working directory is importable (last, so it never shadows an installed module), so
    ``--handlers myapp.handlers`` works from the app's folder with the installed ``task-sidecar``
    script too. A frozen build imports only what was frozen into it.
    """
    if names and not getattr(sys, "frozen", False) and os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())
    for name in names:
        importlib.import_module(name)
