"""The handler registry and the ``@handler`` decorator."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from sidecar.handlers.context import TaskContext

HandlerFn = Callable[[TaskContext], Any]
# Checks beyond the JSON schema (e.g. a path inside an allowed directory). Raise
# DetailsError(field, reason), field relative to details ("dest"), to refuse with -32602.
DetailsCheck = Callable[[dict[str, Any], "AppOptions"], None]
# Called after a task of this type ended FAILED or CANCELLED while its handler was not running (a
# paused task cancelled, a task cancelled during a retry's backoff, one failed by crash recovery):
# the handler's own clean-up never ran, so this does it. ``(task_id, details, options)``.
EndHook = Callable[[str, dict[str, Any], "AppOptions"], None]


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
    on_end: EndHook | None = field(default=None, compare=False, repr=False)
    validator: Any = field(default=None, compare=False, repr=False)  # sidecar.schema.Schema

    def describe(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "concurrency": self.concurrency,
            "maxAttempts": self.max_attempts,
            "timeoutS": self.timeout_s,
            "detailsSchema": self.details_schema,
        }


CHECKED_SCHEMAS = "checked_schemas.json"  # in a frozen bundle: sidecar/checked_schemas.json


def write_checked_schemas(names: list[str], folder: str) -> str:
    """For a frozen build (build/task-sidecar.spec): load the handler modules ``names`` as the
    sidecar does from source, which checks their schemas, and write the digests of those schemas
    to ``folder``/CHECKED_SCHEMAS, which the build bundles as sidecar/CHECKED_SCHEMAS for
    :func:`checked_at_build`. Raises HandlerLoadError as start-up would."""
    from sidecar.schema import schema_digest

    load_modules(names)
    digests = {schema_digest(spec.details_schema) for spec in default_registry if spec.details_schema is not None}
    path = os.path.join(folder, CHECKED_SCHEMAS)
    with open(path, "wb") as file:
        file.write(orjson.dumps(sorted(d for d in digests if d)))
    return path


@functools.cache
def checked_at_build() -> frozenset[str]:
    """Digests of the handler schemas a frozen build checked when it was built; none from source."""
    if not getattr(sys, "frozen", False):
        return frozenset()
    path = os.path.join(getattr(sys, "_MEIPASS", ""), "sidecar", CHECKED_SCHEMAS)
    try:
        with open(path, "rb") as file:
            return frozenset(orjson.loads(file.read()))
    except (OSError, ValueError, TypeError):  # a build without app handlers has none: check them all
        return frozenset()


class Registry:
    def __init__(self) -> None:
        self._specs: dict[str, HandlerSpec] = {}
        self.options = AppOptions()

    def register(self, spec: HandlerSpec, *, trusted: bool = False) -> HandlerSpec:
        """``trusted``: the schema ships with the sidecar (tested), so skip checking it at start-up.

        A frozen build also skips the schemas its build checked: build/task-sidecar.spec loads the
        handler modules from source (which checks them) and bundles their digests. Checking again
        would import jsonschema before every start-up (~40 ms)."""
        if spec.details_schema is not None and spec.validator is None:
            from sidecar.schema import Schema, schema_digest

            built = checked_at_build()  # empty from source: no digest to make
            checked = trusted or (bool(built) and schema_digest(spec.details_schema) in built)
            spec = HandlerSpec(**{**spec.__dict__, "validator": Schema(spec.details_schema, trusted=checked)})
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
        on_end: EndHook | None = None,
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
                    on_end=on_end,
                ),
                trusted=trusted,
            )
            return fn

        return register


default_registry = Registry()
handler = default_registry.handler


class HandlerLoadError(Exception):
    """A ``--handlers`` module or file that cannot be loaded; the message names it and says why."""


def load_modules(names: list[str]) -> None:
    """Load the app's handler modules (``--handlers``); they register into the default registry.

    Each is a module name or, from source, the path of a ``.py`` file. The working directory is
    importable (last, so it never shadows an installed module), so ``--handlers myapp.handlers``
    works from the app's folder with the installed ``task-sidecar`` script too. A frozen build runs
    only the modules frozen into it: no file, nothing from the working directory, because a shipped
    app's sidecar must never turn a ``.py`` file someone left on disk into code.
    """
    frozen = getattr(sys, "frozen", False)
    if names and not frozen and os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())
    for name in names:
        try:
            if _is_file_path(name):
                if frozen:
                    raise HandlerLoadError(
                        f"--handlers {name}: a frozen build loads only handler modules frozen into it, "
                        "never a file (freeze it in: build/freeze.py --handlers MODULE --path DIR)"
                    )
                _load_file(name)
            else:
                _import(name, frozen)
        except HandlerLoadError:
            raise
        except Exception as exc:  # noqa: BLE001 - the app's module raised while loading: say which
            raise HandlerLoadError(f"--handlers {name}: loading it raised {type(exc).__name__}: {exc}") from exc


def _is_file_path(name: str) -> bool:
    return name.endswith(".py") or os.sep in name or (os.altsep is not None and os.altsep in name)


def _import(name: str, frozen: bool) -> None:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        # only when the module named is what is missing; a module it imports that is missing is
        # a bug inside it, reported with its traceback like any other
        if exc.name is None or not (name == exc.name or name.startswith(exc.name + ".")):
            raise
        hint = ("a frozen build has only the modules frozen into it" if frozen
                else "give a module importable from the working directory, or the path of a .py file")
        raise HandlerLoadError(f"--handlers {name}: no module named {exc.name!r} ({hint})") from None


def _load_file(path: str) -> None:
    full = os.path.abspath(path)
    if not os.path.isfile(full):
        raise HandlerLoadError(f"--handlers {path}: no such file ({full})")
    name = os.path.splitext(os.path.basename(full))[0]
    loaded = sys.modules.get(name)
    if loaded is not None:
        if os.path.abspath(getattr(loaded, "__file__", "") or "") == full:
            return  # given twice
        raise HandlerLoadError(
            f"--handlers {path}: a module named {name!r} is loaded already ({getattr(loaded, '__file__', None) or 'built in'}); "
            "rename the file"
        )
    # as `python FILE` would: modules beside the file are importable (appended, never shadowing)
    folder = os.path.dirname(full)
    if folder not in sys.path:
        sys.path.append(folder)
    spec = importlib.util.spec_from_file_location(name, full)
    if spec is None or spec.loader is None:
        raise HandlerLoadError(f"--handlers {path}: not a Python source file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
