"""Coverage-guided fuzzing of the sidecar's input path with atheris (libFuzzer for Python).

The real server loop (``Sidecar._run``: line framing, JSON-RPC dispatch, params validation, the
engine and the store) runs in a thread of this process, fed through a pipe; its code is
instrumented, so libFuzzer keeps the inputs that reach new branches and mutates them further. Half
the inputs are raw lines, half requests built from the fuzzer's bytes (a method of the contract,
params with its field names and values of every JSON type). After each input a sync request (a
write, so it is answered only after every earlier write) collects what the line produced, and:

* every message is a JSON-RPC 2.0 response or a notification of the contract;
* no answer is an internal error (-32603) or a server error (-32000);
* the sidecar keeps serving (a ``system.shutdown`` the fuzzer finds restarts it on the same file);
* every 500 inputs, and at the end, the database passes ``consistency_problems``.

A breach raises, which libFuzzer reports with the input that caused it (saved as ``crash-*``).

    python -m tests.reliability.fuzz_protocol -atheris_runs=20000 [-max_total_time=S] [CORPUS_DIR]

FUZZ_DB (default: a temporary file) names the database; the pytest wrapper is test_fuzz_atheris.py.
"""

from __future__ import annotations

import atexit
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import atheris
import orjson

with atheris.instrument_imports(include=["sidecar"]):
    from sidecar.server import Config, Sidecar
    from sidecar.transport import Transport

from tests.reliability.common import consistency_problems

METHODS = [
    "system.ping", "system.info", "rpc.discover", "tasks.create", "tasks.createMany", "tasks.get",
    "tasks.list", "tasks.stats", "tasks.cancel", "tasks.retry", "tasks.delete", "tasks.prune",
    "tasks.tree", "tasks.pause", "tasks.resume", "queue.pause", "queue.resume", "queue.setConcurrency",
    "queue.status", "no.such.method",
]
FIELDS = [
    "type", "details", "parentId", "priority", "maxAttempts", "runAt", "idempotencyKey", "dependsOn",
    "ref", "onChildFailure", "weight", "tasks", "id", "include", "status", "limit", "cursor",
    "olderThanMs", "concurrency", "seconds", "steps", "message", "retryable", "statuses",
]
WORDS = ["demo.noop", "demo.sleep", "demo.fail", "QUEUED", "COMPLETED", "children", "fail", "continue", ""]
NOTIFICATIONS = {"sidecar.ready", "task.updated", "task.deleted", "queue.updated"}
BAD_CODES = {-32603, -32000}
MAX_LINE = 1 << 20


class Harness:
    """One in-process sidecar over two pipes, and the client side of those pipes."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.messages: list[Any] = []
        self.cond = threading.Condition()
        self.inputs = 0
        self.starts = 0
        self._start()

    def _start(self) -> None:
        in_r, self.in_w = os.pipe()
        self.out_r, out_w = os.pipe()
        transport = Transport(in_r, out_w, MAX_LINE)
        # short grace: a demo.sleep the fuzzer started must not hold a restart for long
        sidecar = Sidecar(Config(db_path=str(self.db), concurrency=8, grace_s=0.2, max_message_bytes=MAX_LINE))

        def serve() -> None:
            try:
                sidecar._run(transport)
            finally:
                transport.close()
                os.close(out_w)
                os.close(in_r)

        self.server = threading.Thread(target=serve, name="fuzzed-sidecar", daemon=True)
        self.reader = threading.Thread(target=self._read, args=(self.out_r,), name="fuzz-reader", daemon=True)
        self.server.start()
        self.reader.start()
        self.starts += 1
        self.wait(lambda: any(isinstance(m, dict) and m.get("method") == "sidecar.ready" for m in self.messages))

    def _read(self, fd: int) -> None:
        buf = b""
        while chunk := os.read(fd, 1 << 16):
            buf += chunk
            *lines, buf = buf.split(b"\n")
            parsed = [orjson.loads(line) for line in lines]  # not JSON: raises, the run stops
            with self.cond:
                self.messages.extend(parsed)
                self.cond.notify_all()
        os.close(fd)

    def wait(self, done: Any, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not done():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"the sidecar stopped answering; last messages {self.messages[-3:]}")
                self.cond.wait(left)

    def exchange(self, line: bytes) -> list[Any]:
        """Send one line and a sync request; what the sidecar wrote until the sync's answer."""
        if not self.server.is_alive():  # the fuzzer found system.shutdown: start again, same file
            self.server.join()
            self.reader.join()
            os.close(self.in_w)
            with self.cond:
                self.messages.clear()
            self._start()
        with self.cond:
            start = len(self.messages)
        sync = f"sync-{uuid.uuid4()}"
        request = {"jsonrpc": "2.0", "id": sync, "method": "tasks.cancel", "params": {"id": sync}}
        try:
            os.write(self.in_w, line + b"\n" + orjson.dumps(request) + b"\n")
        except BrokenPipeError:  # it stopped reading after a shutdown in this very line
            return []
        self.wait(lambda: any(isinstance(m, dict) and m.get("id") == sync for m in self.messages[start:])
                  or not self.server.is_alive())
        with self.cond:
            produced = [m for m in self.messages[start:] if not (isinstance(m, dict) and m.get("id") == sync)]
            self.messages.clear()  # (a late message is checked with the next input's)
            return produced


def check(message: Any) -> None:
    items = message if isinstance(message, list) else [message]
    assert items, "an empty batch answer"
    for item in items:
        assert isinstance(item, dict) and item.get("jsonrpc") == "2.0", item
        if "method" in item:
            assert item["method"] in NOTIFICATIONS and "id" not in item, item
            continue
        assert "id" in item and ("result" in item) != ("error" in item), item
        assert set(item) <= {"jsonrpc", "id", "result", "error"}, item
        if "error" in item:
            error = item["error"]
            assert isinstance(error.get("code"), int) and isinstance(error.get("message"), str), error
            assert error["code"] not in BAD_CODES, f"an internal error: {error}"


def value(fdp: atheris.FuzzedDataProvider, depth: int = 0) -> Any:
    kind = fdp.ConsumeIntInRange(0, 9 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return fdp.ConsumeBool()
    if kind == 2:
        return fdp.ConsumeIntInRange(-(2**63), 2**63 - 1)
    if kind == 3:
        return fdp.ConsumeRegularFloat()
    if kind == 4:
        return fdp.PickValueInList(WORDS)
    if kind == 5:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 40))
    if kind == 6:
        return fdp.ConsumeIntInRange(-2, 2_000_000_000_000)
    if kind == 7:
        return [value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 4))]
    return params(fdp, depth + 1)


def params(fdp: atheris.FuzzedDataProvider, depth: int = 0) -> dict[str, Any]:
    return {fdp.PickValueInList(FIELDS): value(fdp, depth) for _ in range(fdp.ConsumeIntInRange(0, 5))}


def request_line(fdp: atheris.FuzzedDataProvider) -> bytes:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": fdp.PickValueInList(METHODS)}
    if fdp.ConsumeBool():
        message["id"] = fdp.ConsumeIntInRange(0, 1_000_000)
    if fdp.ConsumeIntInRange(0, 7):
        message["params"] = params(fdp)
    if fdp.ConsumeIntInRange(0, 9) == 0:
        return orjson.dumps([message, message])  # a batch
    return orjson.dumps(message)


harness: Harness | None = None


def test_one_input(data: bytes) -> None:
    assert harness is not None
    fdp = atheris.FuzzedDataProvider(data)
    if fdp.ConsumeBool():
        line = fdp.ConsumeBytes(fdp.remaining_bytes()).replace(b"\n", b" ")
    else:
        line = request_line(fdp)
    for message in harness.exchange(line):
        check(message)
    harness.inputs += 1
    if harness.inputs % 500 == 0:
        problems = consistency_problems(harness.db)
        assert not problems, problems


def _final_check() -> None:
    if harness is None:
        return
    problems = consistency_problems(harness.db)
    print(f"fuzz_protocol: {harness.inputs} inputs, {harness.starts} sidecar start(s), "
          f"database {'consistent' if not problems else problems}", file=sys.stderr)
    if problems:
        os._exit(3)


def main() -> None:
    global harness
    db = Path(os.environ.get("FUZZ_DB") or Path(tempfile.mkdtemp(prefix="fuzz-")) / "fuzz.db")
    harness = Harness(db)
    atexit.register(_final_check)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
