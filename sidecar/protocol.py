"""Protocol: JSON-RPC 2.0 messages, the method table, params validation and error answers.

Knows methods and errors, not pipes (that is :mod:`sidecar.transport`) nor tasks (the server's
methods do the work). Dispatch goes through jsonrpcserver; a method may return a
:class:`sidecar.future.Future`, whose outcome becomes the response once it resolves — that is how
writes wait for the engine's group commit without blocking the reader.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable
from functools import partial
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from sidecar.errors import (
    INTERNAL_ERROR,
    INVALID_REQUEST,
    PARSE_ERROR,
    InvalidParams,
    SidecarError,
)
from sidecar.future import Future
from sidecar.schema import Schema

log = logging.getLogger(__name__)


def warm_up(protocol: Protocol, registry: Iterable[Any] = ()) -> None:
    """Import and compile what requests need, off the start-up path (sidecar.ready is sent first).

    Compiled now, while the sidecar is idle, rather than at the first request that needs it: a
    validator compiled inside a 5,000-task createMany, after its params were parsed, lands among
    the request's short-lived objects and keeps the memory around it from being handed back.
    """
    _jsonrpcserver()

    from sidecar.memory import find_malloc_trim, freeze_start_up_objects

    protocol.prepare()
    for spec in registry:  # handlers' details schemas (sidecar.handlers.registry.HandlerSpec)
        if spec.validator is not None:
            spec.validator.prepare()
    find_malloc_trim()
    freeze_start_up_objects()


MAX_BATCH = 10_000
MAX_DEPTH = 64  # nesting allowed in params; orjson cannot write values nested past ~254 levels


def too_deep(value: Any, limit: int = MAX_DEPTH) -> str | None:
    """The path of the first spot nested deeper than ``limit`` levels, or None."""
    # First a walk of the containers alone, one level at a time (a 5,000-item createMany is
    # mostly scalars: no tuple, no path per container); the path is worked out only for params
    # that are too deep.
    level = [value] if type(value) is dict or type(value) is list else []
    depth = 0
    while level and depth < limit:
        below = []
        for item in level:
            for child in item.values() if type(item) is dict else item:
                if type(child) is dict or type(child) is list:
                    below.append(child)
        level = below
        depth += 1
    if not level:
        return None
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, dict):
            if depth >= limit:
                return path
            stack.extend((v, f"{path}.{k}" if path else str(k), depth + 1) for k, v in item.items())
        elif isinstance(item, list):
            if depth >= limit:
                return path
            stack.extend((v, f"{path}[{i}]", depth + 1) for i, v in enumerate(item))
    return None


def unserializable(message: Any, exc: Exception) -> Any:
    """What to write instead of a message that cannot be encoded: a response still answers its id."""
    log.error("cannot encode an outgoing message (%s); %s", exc,
              "answering with an internal error" if isinstance(message, dict) and "id" in message
              else "dropped")
    if isinstance(message, dict) and "id" in message and "method" not in message:
        return error_response(INTERNAL_ERROR, "Internal error", f"the result could not be encoded: {exc}",
                              message["id"])
    return None
Respond = Callable[[Any], None]


def parse_line(line: bytes) -> Any:
    """One JSON message. A string escape holding half of a UTF-16 surrogate pair (``"\\ud83c"``,
    what ``JSON.stringify`` writes for a string cut inside an emoji, e.g. a title cut to length)
    is valid JSON that orjson refuses, and the app's call would get a parse error without its id;
    such a message is read by the standard library instead, each lone half replaced by U+FFFD."""
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        if "surrogate" not in str(exc):
            raise
        import json  # only for this rare line: not on the start-up path

        def refuse_constant(name: str) -> Any:
            raise exc  # NaN and Infinity are not JSON, as orjson says

        try:  # strict UTF-8 first: json.loads(bytes) would let encoded surrogates through
            value = json.loads(line.decode("utf-8"), parse_constant=refuse_constant)
        except (ValueError, RecursionError):
            raise exc from None
        return _whole_surrogates(value)


def _whole_surrogates(value: Any) -> Any:
    if type(value) is str:
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if type(value) is list:
        return [_whole_surrogates(item) for item in value]
    if type(value) is dict:
        return {_whole_surrogates(key): _whole_surrogates(item) for key, item in value.items()}
    return value


@dataclass
class MethodSpec:
    """One protocol method: its name, params schema, result schema, and the function doing it."""

    name: str
    summary: str
    call: Callable[[dict[str, Any]], Any]
    params: dict[str, Any] = field(default_factory=lambda: {"type": "object", "additionalProperties": False})
    result: dict[str, Any] = field(default_factory=dict)
    errors: tuple[int, ...] = ()
    validator: Schema = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.validator = Schema(self.params)


_MEMBERS = frozenset(("jsonrpc", "method", "params", "id"))


def _validate_request(request: Any) -> Any:
    """Structural JSON-RPC 2.0 check; jsonrpcserver's jsonschema validator costs ~28 µs a call.
    Raises ValueError saying what is wrong, in JSON's words."""
    if not isinstance(request, dict):
        raise ValueError("a request must be a JSON object")
    if request.get("jsonrpc") != "2.0":
        raise ValueError('"jsonrpc" must be "2.0"')
    if not isinstance(request.get("method"), str):
        raise ValueError('"method" must be a string')
    if "params" in request and not isinstance(request["params"], (dict, list)):
        raise ValueError('"params" must be an object or an array')
    if "id" in request and not _valid_id(request["id"]):
        raise ValueError('"id" must be a string, a number or null')
    for key in request:
        if key not in _MEMBERS:
            raise ValueError(f"unknown member {orjson.dumps(key).decode()}")
    return request


def _valid_id(ident: Any) -> bool:
    return not isinstance(ident, bool) and isinstance(ident, (str, int, float, type(None)))


def readable_id(request: Any) -> Any:
    """The id of a request refused as invalid, when it has a usable one (JSON-RPC 2.0 asks for null
    only when the id cannot be made out), so the caller can tell which call failed."""
    if isinstance(request, dict) and _valid_id(request.get("id")):
        return request.get("id")
    return None


def error_response(code: int, message: str, data: Any = None, ident: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "error": error, "id": ident}


def _defer_package_init(name: str) -> None:
    """Make ``name`` importable piecewise: its submodules load on their own, and the package's
    ``__init__`` runs only when something asks the package for a name it defines there.

    jsonrpcserver's ``__init__`` imports its asyncio and jsonschema front ends (~100 ms, several
    MB) that the sidecar's dispatch never calls. A request sent right after ``sidecar.ready``
    waited for that import (warm_up runs it then); its own modules take a fraction of it.
    Anything that does ask for the package's names (``from jsonrpcserver import dispatch``)
    still gets them, at that moment, so the package behaves as if imported normally.
    """
    with _DEFERRING:  # the reader and the warm-up thread may both get here first
        if name in sys.modules:
            return
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or spec.submodule_search_locations is None:
            return  # not a package found on disk: the plain import says what is wrong
        loader = spec.loader
        package = importlib.util.module_from_spec(spec)
        # re-entrant: the __init__ itself may look a name up on its package while it runs;
        # another thread asking meanwhile waits for it to finish
        running_init = threading.RLock()
        started = False

        def run_init(attribute: str) -> Any:
            nonlocal started
            with running_init:
                if not started:
                    started = True
                    try:
                        loader.exec_module(package)
                    finally:
                        package.__dict__.pop("__getattr__", None)
            try:
                return package.__dict__[attribute]
            except KeyError:
                raise AttributeError(f"module {name!r} has no attribute {attribute!r}") from None

        package.__getattr__ = run_init  # type: ignore[attr-defined]  (PEP 562: missing names only)
        sys.modules[name] = package


_DEFERRING = threading.Lock()


@functools.cache
def _jsonrpcserver() -> Any:
    """Every jsonrpcserver name the protocol uses, imported off the start-up path (see warm_up)
    and without the rest of the package (see _defer_package_init): the one place it is imported."""
    from types import SimpleNamespace

    _defer_package_init("jsonrpcserver")

    from jsonrpcserver.dispatcher import call, create_request, get_method, to_response
    from jsonrpcserver.exceptions import JsonRpcError
    from jsonrpcserver.response import to_serializable_one
    from jsonrpcserver.result import Success
    from jsonrpcserver.sentinels import NOCONTEXT, NOID

    return SimpleNamespace(
        create_request=create_request, get_method=get_method, call=call, to_response=to_response,
        to_serializable_one=to_serializable_one, Success=Success, JsonRpcError=JsonRpcError,
        NOCONTEXT=NOCONTEXT, NOID=NOID,
    )


class Protocol:
    def __init__(self, methods: list[MethodSpec]) -> None:
        self.methods = {m.name: m for m in methods}
        self._table: dict[str, Callable[..., Any]] | None = None  # built at the first request

    def prepare(self) -> None:
        """Build the dispatch table and compile every method's params schema (see warm_up)."""
        self._dispatch_table()
        for spec in self.methods.values():
            spec.validator.prepare()
            time.sleep(0)  # let a request that came meanwhile have the GIL now, not in 5 ms

    def _dispatch_table(self) -> dict[str, Callable[..., Any]]:
        if self._table is None:
            self._table = {name: self._wrap(m) for name, m in self.methods.items()}
        return self._table

    @staticmethod
    def _wrap(spec: MethodSpec) -> Callable[..., Any]:
        rpc = _jsonrpcserver()
        Success, JsonRpcError = rpc.Success, rpc.JsonRpcError

        def method(*args: Any, **params: Any) -> Any:
            try:
                if args:
                    raise InvalidParams("params", "must be an object of named params")
                deep = too_deep(params)
                if deep is not None:
                    raise InvalidParams(deep, f"is nested deeper than {MAX_DEPTH} levels")
                spec.validator.check(params)
                return Success(spec.call(params))
            except SidecarError as exc:
                raise JsonRpcError(exc.code, exc.message, exc.data) from None

        method.__name__ = spec.name
        return method

    def handle(self, line: bytes, respond: Respond) -> bool:
        """Answer one line (a request, a notification or a batch) through ``respond``; False if
        it takes no answer (notifications only), so ``respond`` will never be called."""
        try:
            message = parse_line(line)
        except orjson.JSONDecodeError as exc:
            respond(error_response(PARSE_ERROR, "Parse error", str(exc)))
            return True
        if isinstance(message, list):
            return self._handle_batch(message, respond)
        answer = self._dispatch(message)
        if answer is None:
            return False
        if type(answer) is Later:
            future, ident = answer
            future.add_done_callback(lambda done: respond(_settled(done, ident)))
        else:
            respond(answer)
        return True

    def _handle_batch(self, batch: list[Any], respond: Respond) -> bool:
        if not batch:
            respond(error_response(INVALID_REQUEST, "Invalid request", "empty batch"))
            return True
        if len(batch) > MAX_BATCH:
            respond(error_response(INVALID_REQUEST, "Invalid request", f"batch of {len(batch)} exceeds {MAX_BATCH}"))
            return True
        answers = [a for a in (self._dispatch(item) for item in batch) if a is not None]
        pending = [a for a in answers if type(a) is Later]
        if not answers:
            return False
        if not pending:
            respond(answers)
            return True
        remaining = [len(pending)]
        lock = threading.Lock()

        def one_done(_: Future[Any]) -> None:
            with lock:
                remaining[0] -= 1
                if remaining[0]:
                    return
            respond([_settled(*a) if type(a) is Later else a for a in answers])

        for future, _ in pending:
            future.add_done_callback(one_done)
        return True

    def _dispatch(self, request: Any) -> dict[str, Any] | Later | None:
        """The response to one request, a :class:`Later` if it comes once the method's future
        resolves, or None for a notification."""
        # jsonrpcserver's own steps after parsing and request validation (both done here, once):
        # find the method, call it, shape the response. Entering its pipeline at the top would
        # run a parse-and-validate chain of monads first: ~60 µs of a ping when the CPU is cold,
        # which is how an idle sidecar meets each request.
        table = self._dispatch_table()
        rpc = _jsonrpcserver()
        try:
            _validate_request(request)
        except ValueError as exc:
            return error_response(INVALID_REQUEST, "Invalid request", str(exc), readable_id(request))
        # Its dispatch_request minus validate_args, which binds the params to the method's
        # signature: every method here takes (*args, **params) and checks its params against
        # its schema, so that bind cannot fail, and its ~15 Python calls were ~7 % of an idle
        # create's.
        call = rpc.create_request(request)
        result = rpc.get_method(table, call.method).bind(partial(rpc.call, call, rpc.NOCONTEXT))
        if call.id is rpc.NOID:
            return None  # a notification: never answered
        response: dict[str, Any] = rpc.to_serializable_one(rpc.to_response(call, result))
        error = response.get("error")
        if error is not None and "data" in error and error["data"] is None:
            del error["data"]
        value = response.get("result")
        if not isinstance(value, Future):
            return response
        return Later(value, response["id"])


class Later(NamedTuple):
    """A response that comes once ``future`` (what the method returned) resolves."""

    future: Future[Any]
    ident: Any


def _settled(done: Future[Any], ident: Any) -> dict[str, Any]:
    """The response to request ``ident`` whose method's future ``done`` has resolved."""
    exc = done.exception()
    if exc is None:
        return {"jsonrpc": "2.0", "result": done.result(), "id": ident}
    if isinstance(exc, SidecarError):
        return {"jsonrpc": "2.0", "error": exc.to_error(), "id": ident}
    log.error("method failed", exc_info=exc)
    return error_response(INTERNAL_ERROR, "Internal error", str(exc), ident)


class Notifier:
    """Sends notifications; numbers ``task.updated`` so that ``seq`` grows by exactly one each.

    The number is given when the frame is written (the writer calls back), so that updates merged
    under backpressure (see :class:`sidecar.transport.FrameWriter`) leave no gap.
    """

    def __init__(self, send: Callable[..., None], send_many: Callable[[list[tuple[Any, Any]]], None]) -> None:
        self._send = send
        self._send_many = send_many
        self._seq = 0

    def notify(self, method: str, params: Any) -> None:
        self._send({"jsonrpc": "2.0", "method": method, "params": params})

    def tasks_updated(self, tasks: list[dict[str, Any]]) -> None:
        """Announce a commit's changed tasks, in order, with one hand-off to the writer."""
        self._send_many([(partial(self._numbered, task), ("task", task["id"])) for task in tasks])

    def _numbered(self, task: dict[str, Any]) -> dict[str, Any]:
        self._seq += 1  # only the writer thread calls this
        return {"jsonrpc": "2.0", "method": "task.updated", "params": {"seq": self._seq, "task": task}}

    def task_deleted(self, ids: list[str]) -> None:
        for start in range(0, len(ids), 5000):
            self.notify("task.deleted", {"ids": ids[start : start + 5000]})
