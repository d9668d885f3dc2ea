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

import logging
import os
import queue
import sys
import threading
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
    """One writer thread; callers enqueue JSON-serialisable messages and never block on the pipe."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._broken = False
        self._thread = threading.Thread(target=self._run, name="stdout-writer", daemon=True)
        self._thread.start()

    def send(self, message: Any) -> None:
        self._queue.put(message)

    def close(self, timeout: float = 5.0) -> None:
        self._queue.put(_CLOSE)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            message = self._queue.get()
            frames: list[bytes] = []
            closing = False
            while True:
                if message is _CLOSE:
                    closing = True
                else:
                    frames.append(_frame(message))
                if len(frames) >= 512:
                    break
                try:
                    message = self._queue.get_nowait()
                except queue.Empty:
                    break
            if frames:
                self._write(b"".join(frames))
            if closing:
                return

    def _write(self, data: bytes) -> None:
        if self._broken:
            return
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError as exc:  # the reader went away; keep working, stdin EOF will follow
            self._broken = True
            log.warning("stdout closed (%s); further messages are dropped", exc)


_CLOSE = object()


def _frame(message: Any) -> bytes:
    if isinstance(message, bytes):
        return message + b"\n"
    return orjson.dumps(message) + b"\n"


class StdioTransport:
    def __init__(self, max_message_bytes: int) -> None:
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
        self.writer = FrameWriter(self._out_fd)

    def send(self, message: Any) -> None:
        self.writer.send(message)

    def close(self) -> None:
        self.writer.close()
