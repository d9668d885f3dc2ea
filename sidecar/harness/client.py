"""A small synchronous JSON-RPC client over a Transport: pending calls by id, notification listeners."""

from __future__ import annotations

import itertools
import threading
from typing import Any, Callable

from sidecar.harness.board import Board
from sidecar.harness.recorder import Recorder
from sidecar.harness.transport import Transport


class RpcError(Exception):
    def __init__(self, code: int, message: str, data: Any = None):
        super().__init__(f"{code} {message}" + (f" ({data})" if data is not None else ""))
        self.code = code
        self.message = message
        self.data = data


class SidecarGone(ConnectionError):
    pass


class _Pending:
    def __init__(self) -> None:
        self.event = threading.Event()
        self.response: dict[str, Any] | None = None


Listener = Callable[[str, Any], None]


class Client:
    """Spawns the sidecar (``argv``), waits for ``sidecar.ready``, and sends requests.

    ``request()`` returns the whole response object; ``call()`` returns the result or raises RpcError.
    Every notification is given to the Board and then to each listener (on the reader thread).
    """

    def __init__(
        self,
        argv: list[str],
        recorder: Recorder | None = None,
        cwd: str | None = None,
        stderr_log: str | None = None,
        echo_stderr: bool = False,
        env: dict[str, str] | None = None,
    ):
        self.board = Board()
        self.ready: dict[str, Any] | None = None
        self.bad_lines: list[str] = []
        self.exit_code: int | None = None
        self._ready_event = threading.Event()
        self._exited = threading.Event()
        self._ids = itertools.count(1)
        self._pending: dict[Any, _Pending] = {}
        # responses with id null (parse errors, over-long lines) for ``send_raw`` callers, in order
        self._null_id_responses: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []
        self.transport = Transport(
            argv,
            on_message=self._on_message,
            on_bad_line=self._on_bad_line,
            on_exit=self._on_exit,
            recorder=recorder,
            cwd=cwd,
            stderr_log=stderr_log,
            echo_stderr=echo_stderr,
            env=env,
        )

    # -- lifecycle -------------------------------------------------------------------------------

    def wait_ready(self, timeout: float = 30.0) -> dict[str, Any]:
        if not self._ready_event.wait(timeout) or self.ready is None:
            if self._exited.is_set():
                raise SidecarGone(f"the sidecar exited with code {self.exit_code} before sidecar.ready\n{self.stderr_text()}")
            raise SidecarGone(f"no sidecar.ready within {timeout:g} s\n{self.stderr_text()}")
        return self.ready

    def close(self, timeout: float = 10.0) -> int | None:
        return self.transport.close(timeout)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def alive(self) -> bool:
        return not self._exited.is_set()

    def stderr_text(self, lines: int = 30) -> str:
        self.transport.drain_stderr()
        tail = list(self.transport.stderr_tail)[-lines:]
        return "sidecar stderr (last lines):\n" + "\n".join("  " + line for line in tail) if tail else "(sidecar wrote nothing on stderr)"

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    # -- sending ---------------------------------------------------------------------------------

    def request(self, method: str, params: Any = None, timeout: float = 30.0, id: Any = None) -> dict[str, Any]:
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": next(self._ids) if id is None else id, "method": method}
        if params is not None:
            msg["params"] = params
        return self.send_message(msg, timeout)

    def send_message(self, msg: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
        """Send one request object (any shape with an ``id``) and wait for its response."""
        pending = _Pending()
        with self._lock:
            self._pending[msg["id"]] = pending
        try:
            if self._exited.is_set():
                raise SidecarGone(f"the sidecar has exited (code {self.exit_code})\n{self.stderr_text()}")
            self.transport.write(msg)
            if not pending.event.wait(timeout):
                raise TimeoutError(f"no response to {msg.get('method')} (id {msg['id']}) within {timeout:g} s")
        finally:
            with self._lock:
                self._pending.pop(msg["id"], None)
        if pending.response is None:
            raise SidecarGone(f"the sidecar exited (code {self.exit_code}) before answering {msg.get('method')}\n{self.stderr_text()}")
        return pending.response

    def call(self, method: str, params: Any = None, timeout: float = 30.0) -> Any:
        response = self.request(method, params, timeout)
        if "error" in response:
            err = response["error"] or {}
            raise RpcError(err.get("code", 0), err.get("message", ""), err.get("data"))
        return response.get("result")

    def notify(self, method: str, params: Any = None) -> None:
        msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            msg["params"] = params
        self.transport.write(msg)

    def send_raw(self, line: str, timeout: float = 10.0) -> Any:
        """Send a line as is. Returns the response: by id when the line is a request with an id,
        else the next response with id null (or a batch array), else None after ``timeout``."""
        import json

        try:
            parsed = json.loads(line)
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict) and "id" in parsed and parsed["id"] is not None and "method" in parsed:
            # Answered by id, or, when the sidecar could not read the id (an invalid request),
            # by a response with id null.
            pending = _Pending()
            with self._lock:
                self._pending[parsed["id"]] = pending
                start = len(self._null_id_responses)
            try:
                self.transport.write_line(line)
                self.board.wait_for(lambda: pending.event.is_set() or len(self._null_id_responses) > start, timeout)
            finally:
                with self._lock:
                    self._pending.pop(parsed["id"], None)
            if pending.response is None and len(self._null_id_responses) > start:
                return self._null_id_responses[start]
            return pending.response
        if isinstance(parsed, dict) and "method" in parsed and "id" not in parsed:
            self.transport.write_line(line)  # a notification: never answered
            return None
        with self._lock:
            start = len(self._null_id_responses)
        self.transport.write_line(line)
        got = self.board.wait_for(lambda: len(self._null_id_responses) > start, timeout)
        return self._null_id_responses[start] if got else None

    # -- receiving (reader thread) ---------------------------------------------------------------

    def _on_message(self, msg: Any) -> None:
        if isinstance(msg, list):  # a batch answer
            with self._lock:
                self._null_id_responses.append(msg)  # type: ignore[arg-type]
            for item in msg:
                if isinstance(item, dict) and "result" in item:
                    self.board.on_result(item["result"])
            self.board.notify_waiters()
            return
        if not isinstance(msg, dict):
            self.bad_lines.append(repr(msg))
            return
        if "method" in msg and "id" not in msg:
            method, params = msg["method"], msg.get("params")
            if method == "sidecar.ready":
                self.ready = params if isinstance(params, dict) else {}
                self._ready_event.set()
            self.board.on_notification(method, params)
            for listener in list(self._listeners):
                try:
                    listener(method, params)
                except Exception:  # a UI listener must never kill the reader
                    pass
            return
        if "result" in msg:
            self.board.on_result(msg["result"])
        with self._lock:
            pending = self._pending.get(msg.get("id"))
            if pending is None and msg.get("id") is None:
                self._null_id_responses.append(msg)
        if pending is not None:
            pending.response = msg
            pending.event.set()
        self.board.notify_waiters()

    def _on_bad_line(self, text: str) -> None:
        self.bad_lines.append(text)

    def _on_exit(self, code: int | None) -> None:
        self.exit_code = code
        self._exited.set()
        self._ready_event.set()
        with self._lock:
            pending = list(self._pending.values())
        for p in pending:
            p.event.set()
        self.board.notify_waiters()
