"""Transport: bytes and lines on stdio. Knows nothing of JSON-RPC methods.

Design rules (after the MCP SDK's stdio server):
* The protocol owns a private duplicate of file descriptor 1. Descriptor 1 itself is pointed at
  stderr and descriptor 0 at /dev/null, so a stray ``print()``, a native library's banner or a child
  process can neither corrupt the output stream nor eat protocol input.
* Exactly one thread writes frames, each a whole line; many frames are joined into one write.
* Lines are read in binary (no locale decoding, no newline translation) with a size cap: an
  over-long line is skipped to its end without being parsed or kept in memory.
"""

from __future__ import annotations

import collections
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, BinaryIO

import orjson

log = logging.getLogger(__name__)


class TooLong:
    """Marker for a line over the size limit (its content is discarded)."""

    def __init__(self, size: int) -> None:
        self.size = size


class LineReader:
    def __init__(self, stream: BinaryIO, max_bytes: int) -> None:
        self._stream = stream
        self._max = max_bytes

    def read(self) -> bytes | TooLong | None:
        """The next line without its terminator, a :class:`TooLong`, or None at end of input."""
        while True:
            line = self._stream.readline(self._max + 1)
            if not line:
                return None
            if line.endswith(b"\n"):
                line = line[:-1]
            elif len(line) > self._max:
                return TooLong(len(line) + self._skip_rest())
            line = line.rstrip(b"\r")
            if line.strip():
                return line

    def _skip_rest(self) -> int:
        skipped = 0
        while True:
            chunk = self._stream.readline(1 << 16)
            skipped += len(chunk)
            if not chunk or chunk.endswith(b"\n"):
                return skipped


class FrameWriter:
    """One writer thread; callers enqueue messages and never block on the pipe.

    A message is a JSON-serialisable value or a callable producing one at write time (so numbering
    can follow the order of writing). When the reader has stopped reading — a write blocked for
    ``stall_s`` with more than ``coalesce_after`` frames waiting, or ``hard_limit`` frames waiting
    in any case — a message sent with a ``key`` replaces the pending one with the same key instead
    of queueing behind it: memory stays bounded by the number of distinct keys, not of messages.
    A reader that is merely slow (a burst of 5,000 creates) gets every message.
    """

    def __init__(
        self,
        fd: int,
        coalesce_after: int = 1000,
        stall_s: float = 1.0,
        hard_limit: int = 100_000,
        on_unencodable: Callable[[Any, Exception], Any] = lambda message, exc: None,
    ) -> None:
        self._fd = fd
        self._on_unencodable = on_unencodable
        self._coalesce_after = coalesce_after
        self._stall_s = stall_s
        self._hard_limit = hard_limit
        self._write_started: float | None = None
        self._pending: collections.deque[list[Any]] = collections.deque()
        self._by_key: dict[Any, list[Any]] = {}
        self._cond = threading.Condition()
        self._closing = False
        self._broken = False
        self.coalesced = 0
        self._thread = threading.Thread(target=self._run, name="stdout-writer", daemon=True)
        self._thread.start()

    def send(self, message: Any, key: Any = None) -> None:
        self.send_many([(message, key)])

    def send_many(self, messages: list[tuple[Any, Any]]) -> None:
        """Queue ``(message, key)`` pairs in order, under one lock and one wake-up."""
        with self._cond:
            stalled = self._reader_stalled()
            for message, key in messages:
                if key is not None and stalled:
                    entry = self._by_key.get(key)
                    if entry is not None:
                        entry[1] = message
                        self.coalesced += 1
                        continue
                entry = [key, message]
                self._pending.append(entry)
                if key is not None:
                    self._by_key[key] = entry
            self._cond.notify()

    def _reader_stalled(self) -> bool:
        waiting = len(self._pending)
        if waiting > self._hard_limit:
            return True
        started = self._write_started
        return (
            waiting > self._coalesce_after
            and started is not None
            and time.monotonic() - started > self._stall_s
        )

    def close(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                if not self._pending:
                    return
                batch = []
                while self._pending and len(batch) < 512:
                    entry = self._pending.popleft()
                    if entry[0] is not None and self._by_key.get(entry[0]) is entry:
                        del self._by_key[entry[0]]
                    batch.append(entry[1])
            self._write(b"".join(self._encode(m) for m in batch))

    def _encode(self, message: Any) -> bytes:
        # This thread must survive any message: one that cannot be encoded is replaced (a
        # response by an error for its id) or dropped, never allowed to stop the stream.
        try:
            if callable(message):
                message = message()
            return _frame(message)
        except Exception as exc:  # noqa: BLE001 - orjson raises TypeError/JSONEncodeError
            replacement = self._on_unencodable(message, exc)
            return _frame(replacement) if replacement is not None else b""

    def _write(self, data: bytes) -> None:
        if self._broken:
            return
        view = memoryview(data)
        try:
            while view:
                self._write_started = time.monotonic()
                written = os.write(self._fd, view)
                self._write_started = None
                view = view[written:]
        except OSError as exc:  # the reader went away; keep working, stdin EOF will follow
            self._broken = True
            log.warning("stdout closed (%s); further messages are dropped", exc)


def _frame(message: Any) -> bytes:
    if isinstance(message, bytes):
        return message + b"\n"
    return orjson.dumps(message) + b"\n"


class StdioTransport:
    def __init__(
        self, max_message_bytes: int, on_unencodable: Callable[[Any, Exception], Any] = lambda m, e: None
    ) -> None:
        # Keep private copies of the real stdin/stdout for the protocol ...
        self._out_fd = os.dup(1)
        self._in_fd = os.dup(0)
        # ... and point the public descriptors where they can do no harm.
        os.dup2(2, 1)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        sys.stdout = sys.stderr
        self.reader = LineReader(os.fdopen(self._in_fd, "rb", buffering=1 << 16), max_message_bytes)
        self.writer = FrameWriter(self._out_fd, on_unencodable=on_unencodable)

    def send(self, message: Any, key: Any = None) -> None:
        self.writer.send(message, key)

    def send_many(self, messages: list[tuple[Any, Any]]) -> None:
        self.writer.send_many(messages)

    def close(self) -> None:
        self.writer.close()
