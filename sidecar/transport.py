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
import contextlib
import logging
import os
import select
import stat
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson

log = logging.getLogger(__name__)


class TooLong:
    """Marker for a line over the size limit (its content is discarded)."""

    def __init__(self, size: int) -> None:
        self.size = size


class LineReader:
    """Reads lines from a file descriptor through its own buffer, so it can tell whether more
    whole lines are already waiting (:meth:`has_more`): the server lets a lone request skip the
    engine thread's wake-up, while a burst still goes to the engine to be group-committed."""

    CHUNK = 1 << 16

    def __init__(self, fd: int, max_bytes: int) -> None:
        self._fd = fd
        self._max = max_bytes
        self._buf = bytearray()
        self._eof = False
        # The read end of the pipe given to signal.set_wakeup_fd (POSIX): a blocking read
        # also returns to Python when a signal arrives, whichever thread the OS delivered it to.
        self.wake_fd: int | None = None

    def has_more(self) -> bool:
        """True when a whole line is already buffered (the next :meth:`read` will not block)."""
        return b"\n" in self._buf

    def read(self) -> bytes | TooLong | None:
        """The next line without its terminator, a :class:`TooLong`, or None at end of input."""
        while True:
            line = self._next_line()
            if line is None:
                return None
            if isinstance(line, TooLong):
                return line
            line = line.rstrip(b"\r")
            if line.strip():
                return line

    def _next_line(self) -> bytes | TooLong | None:
        scanned = 0
        while True:
            end = self._buf.find(b"\n", scanned)
            if end > self._max or (end < 0 and len(self._buf) > self._max):
                return TooLong(self._skip_line())
            if end >= 0:
                line = bytes(self._buf[:end])
                del self._buf[: end + 1]
                return line
            if self._eof:
                if not self._buf:
                    return None
                line = bytes(self._buf)  # a last line without its newline
                self._buf.clear()
                return line
            scanned = len(self._buf)
            self._fill()

    def _fill(self) -> None:
        if self.wake_fd is not None:
            self._wait_for_input()
        chunk = os.read(self._fd, self.CHUNK)
        if chunk:
            self._buf += chunk
        else:
            self._eof = True

    def _wait_for_input(self) -> None:
        """Block until the descriptor has input (or is at its end). Python runs signal handlers
        in the main thread only, between bytecodes; a SIGTERM the OS hands to another thread
        does not interrupt this thread's read, which would then wait for input that may never
        come. Each signal also writes a byte to ``wake_fd``: coming back here lets the handler
        run (and stop the server) before waiting again."""
        assert self.wake_fd is not None
        while True:
            ready, _, _ = select.select([self._fd, self.wake_fd], [], [])
            if self.wake_fd in ready:
                try:
                    os.read(self.wake_fd, 512)
                except (BlockingIOError, InterruptedError):
                    pass
            if self._fd in ready:
                return

    def _skip_line(self) -> int:
        """Drop the over-long line through its newline without keeping it; its size in bytes."""
        skipped = 0
        while True:
            end = self._buf.find(b"\n")
            if end >= 0:
                skipped += end
                del self._buf[: end + 1]
                return skipped
            skipped += len(self._buf)
            self._buf.clear()
            if self._eof:
                return skipped
            self._fill()


class _Written:
    """A place in the queue: its callback runs once every frame before it has been written."""

    __slots__ = ("callback",)

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback


class _Hold:
    """The block of :meth:`FrameWriter.held`. A class, not contextlib.contextmanager: it is
    entered for every request, and the generator machinery is four Python calls more each time.
    It keeps no state of its own (the count is the writer's), so one serves every thread."""

    __slots__ = ("_writer",)

    def __init__(self, writer: FrameWriter) -> None:
        self._writer = writer

    def __enter__(self) -> None:
        writer = self._writer
        with writer._lock:
            writer._holds += 1

    def __exit__(self, *exc: object) -> None:
        writer = self._writer
        with writer._lock:
            writer._holds -= 1
            if not writer._holds and (writer._held or writer._held_callbacks):
                messages, writer._held = writer._held, []
                callbacks, writer._held_callbacks = writer._held_callbacks, []
                writer._send(messages, callbacks)


DIRECT_MAX = 64  # a bigger batch (a createMany's announcements) is encoded by the writer thread


class FrameWriter:
    """Writes frames in order; callers never block on the pipe.

    When nothing is queued and the descriptor can be made non-blocking (a pipe or socket on POSIX),
    the caller writes its frames itself: an idle create's response and RUNNING notification then
    reach the pipe without waking another thread. Whatever the pipe does not take at once, and
    every message sent while earlier ones are still queued, goes to the writer thread.

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
        self._direct = _make_nonblocking(fd)
        self._busy = False  # the writer thread holds frames it has taken off the queue
        self._spill = b""  # what a direct write left unwritten (the pipe was full); goes first
        self._holds = 0
        self._held: list[tuple[Any, Any]] = []
        self._held_callbacks: list[Callable[[], None]] = []
        self._pending: collections.deque[list[Any]] = collections.deque()
        self._by_key: dict[Any, list[Any]] = {}
        # Taken directly (a C call) on the hot path; the condition over it only to wait and wake.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._closing = False
        self._broken = False
        self.coalesced = 0
        self._hold = _Hold(self)  # the same block every time: re-entrant, for any thread
        self._thread = threading.Thread(target=self._run, name="stdout-writer", daemon=True)
        self._thread.start()

    def send(self, message: Any, key: Any = None, on_written: Callable[[], None] | None = None) -> None:
        """Queue one message. ``on_written`` is called, in the writer thread, once the message and
        everything sent in the same hold have been written (or dropped, stdout being gone)."""
        self.send_many([(message, key)], () if on_written is None else (on_written,))

    def held(self) -> contextlib.AbstractContextManager[None]:
        """Messages sent (by any thread) inside the block are written together when it ends.

        The engine holds its output while it answers and announces a transaction, so a create's
        response and its QUEUED/RUNNING notifications leave in one write: one wake-up of the
        reader instead of two. Order is kept: held messages are numbered when written.
        """
        return self._hold

    def send_many(
        self, messages: list[tuple[Any, Any]], on_written: Sequence[Callable[[], None]] = ()
    ) -> None:
        """Queue ``(message, key)`` pairs in order, under one lock and one wake-up; then each of
        ``on_written`` as :meth:`send` does."""
        with self._lock:
            if self._holds:
                self._held.extend(messages)
                self._held_callbacks.extend(on_written)
            else:
                self._send(messages, on_written)

    def _send(self, messages: list[tuple[Any, Any]], callbacks: Sequence[Callable[[], None]] = ()) -> None:
        if (self._direct and len(messages) <= DIRECT_MAX and not self._pending and not self._busy
                and not self._spill and not self._broken):
            encode = self._encode
            self._write_now(b"".join([encode(message) for message, _ in messages]))
            if callbacks:  # called by the writer thread, after what the pipe did not take yet
                self._pending.extend([None, _Written(cb)] for cb in callbacks)
                self._cond.notify()
            return
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
        self._pending.extend([None, _Written(cb)] for cb in callbacks)
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
        with self._lock:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)
        if self._direct:  # leave the descriptor as it was given to us
            try:
                os.set_blocking(self._fd, True)
            except OSError:
                pass

    def _write_now(self, data: bytes) -> None:
        """In the caller's thread, under the lock: what the pipe takes now, the rest to the thread."""
        try:
            written = os.write(self._fd, data)
        except BlockingIOError:
            written = 0
        except OSError as exc:
            self._broken = True
            log.warning("stdout closed (%s); further messages are dropped", exc)
            return
        if written < len(data):
            self._spill = data[written:]
            self._cond.notify()

    def _run(self) -> None:
        while self._write_next_batch():
            pass

    def _write_next_batch(self) -> bool:
        """Wait for messages and write up to 512 of them; False once closing with nothing left.

        One call per batch, so nothing of a batch outlives it in this thread's locals while it
        waits for the next: the last tasks of a burst, kept alive here, would pin the memory the
        burst used (pymalloc hands back whole arenas only).
        """
        with self._lock:
            while not self._pending and not self._spill and not self._closing:
                self._cond.wait()
            if not self._pending and not self._spill:
                return False
            spill, self._spill = self._spill, b""
            batch = []
            written: list[Callable[[], None]] = []
            while self._pending and len(batch) < 512:
                entry = self._pending.popleft()
                if entry[0] is not None and self._by_key.get(entry[0]) is entry:
                    del self._by_key[entry[0]]
                if isinstance(entry[1], _Written):
                    written.append(entry[1].callback)
                else:
                    batch.append(entry[1])
            if not self._pending:
                self._by_key.clear()  # empty already; this drops the table a burst made it grow
            self._busy = True
        try:
            self._write(spill + b"".join(self._encode(m) for m in batch))
        finally:
            with self._lock:
                self._busy = False
            for callback in written:
                try:
                    callback()
                except Exception:  # noqa: BLE001 - the writer thread must outlive any callback
                    log.exception("on_written callback failed")
        return True

    def _encode(self, message: Any) -> bytes:
        # This thread must survive any message: one that cannot be encoded is replaced (a
        # response by an error for its id) or dropped, never allowed to stop the stream.
        try:
            if callable(message):
                message = message()
            if isinstance(message, bytes):
                return message + b"\n"
            # Not OPT_APPEND_NEWLINE: the bytes it returns are shrunk in place from orjson's
            # buffer, and after 100,000 tasks the sidecar kept 4 MB more (+12 % of idle RSS
            # against +3 %).
            return orjson.dumps(message) + b"\n"
        except Exception as exc:  # noqa: BLE001 - orjson raises TypeError/JSONEncodeError
            replacement = self._on_unencodable(message, exc)  # a dict (an error response) or None
            return orjson.dumps(replacement) + b"\n" if replacement is not None else b""

    def _write(self, data: bytes) -> None:
        if self._broken:
            return
        view = memoryview(data)
        try:
            while view:
                self._write_started = time.monotonic()
                try:
                    written = os.write(self._fd, view)
                except BlockingIOError:  # non-blocking descriptor, full pipe: wait until it drains
                    select.select([], [self._fd], [])
                    continue
                self._write_started = None
                view = view[written:]
        except OSError as exc:  # the reader went away; keep working, stdin EOF will follow
            self._broken = True
            log.warning("stdout closed (%s); further messages are dropped", exc)


def _make_nonblocking(fd: int) -> bool:
    """Make ``fd`` non-blocking if it is a pipe or socket (never a terminal or file shared with a
    shell); False where that is not possible (Windows pipes before Python 3.12, a tty, a file)."""
    if os.name != "posix":
        return False
    try:
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
            return False
        os.set_blocking(fd, False)
    except OSError:
        return False
    return True


class Transport:
    """Lines in from one descriptor, frames out to another."""

    def __init__(
        self, in_fd: int, out_fd: int, max_message_bytes: int,
        on_unencodable: Callable[[Any, Exception], Any] = lambda m, e: None,
    ) -> None:
        self.reader = LineReader(in_fd, max_message_bytes)
        self.writer = FrameWriter(out_fd, on_unencodable=on_unencodable)

    def send(self, message: Any, key: Any = None, on_written: Callable[[], None] | None = None) -> None:
        self.writer.send(message, key, on_written)

    def send_many(self, messages: list[tuple[Any, Any]]) -> None:
        self.writer.send_many(messages)

    def held(self) -> contextlib.AbstractContextManager[None]:
        return self.writer.held()

    def close(self) -> None:
        self.writer.close()


class StdioTransport(Transport):
    """The process's own stdin/stdout, guarded against stray output and stray reads."""

    def __init__(
        self, max_message_bytes: int, on_unencodable: Callable[[Any, Exception], Any] = lambda m, e: None
    ) -> None:
        # Keep private copies of the real stdin/stdout for the protocol ...
        out_fd = os.dup(1)
        in_fd = os.dup(0)
        # ... and point the public descriptors where they can do no harm.
        os.dup2(2, 1)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        sys.stdout = sys.stderr
        super().__init__(in_fd, out_fd, max_message_bytes, on_unencodable)
