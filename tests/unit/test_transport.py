"""The transport's line reader and frame writer over real pipes."""

from __future__ import annotations

import fcntl
import gc
import os
import threading
import time
import weakref

import orjson

from sidecar.transport import FrameWriter, LineReader, TooLong


def read_all(reader: LineReader) -> list[bytes | int]:
    out: list[bytes | int] = []
    while (line := reader.read()) is not None:
        out.append(line.size if isinstance(line, TooLong) else line)
    return out


def test_lines_split_across_reads_crlf_blank_and_over_long_lines() -> None:
    r, w = os.pipe()
    reader = LineReader(r, 20)
    reader.CHUNK = 7  # every line arrives in pieces
    os.write(w, b'{"a":1}\r\n\n   \n' + b"x" * 50 + b'\n{"b":2}\n' + b"y" * 20 + b"\nlast")
    os.close(w)
    assert read_all(reader) == [b'{"a":1}', 50, b'{"b":2}', b"y" * 20, b"last"]
    os.close(r)


def test_has_more_tells_whether_a_whole_line_is_already_buffered() -> None:
    r, w = os.pipe()
    reader = LineReader(r, 1000)
    os.write(w, b"one\ntwo\nthr")
    assert reader.read() == b"one"
    assert reader.has_more()  # "two" came in the same read
    assert reader.read() == b"two"
    assert not reader.has_more()  # "thr" is not a whole line yet
    os.write(w, b"ee\n")
    assert reader.read() == b"three"
    os.close(w)
    assert reader.read() is None
    os.close(r)


def drain(fd: int, into: bytearray) -> threading.Thread:
    def run() -> None:
        while chunk := os.read(fd, 1 << 16):
            into.extend(chunk)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_frames_keep_their_order_when_the_pipe_fills_and_the_writer_thread_takes_over() -> None:
    r, w = os.pipe()
    writer = FrameWriter(w)
    # Nobody reads yet: the first frames are written directly, the rest spill to the thread.
    for i in range(3000):
        writer.send({"i": i, "pad": "x" * 100})
    writer.send_many([({"i": 3000 + k}, None) for k in range(200)])  # a batch above DIRECT_MAX
    got = bytearray()
    thread = drain(r, got)
    writer.close()
    os.close(w)
    thread.join()
    os.close(r)
    assert [orjson.loads(line)["i"] for line in bytes(got).splitlines()] == list(range(3200))


def test_the_descriptor_is_left_blocking_as_it_was_given() -> None:
    r, w = os.pipe()
    writer = FrameWriter(w)
    writer.send({"x": 1})
    writer.close()
    assert os.get_blocking(w)
    assert os.read(r, 100) == b'{"x":1}\n'
    os.close(w)
    os.close(r)


def test_held_output_leaves_in_order_when_the_hold_ends() -> None:
    r, w = os.pipe()
    os.set_blocking(r, False)
    writer = FrameWriter(w)
    with writer.held():
        writer.send({"n": 1})
        other = threading.Thread(target=lambda: writer.send_many([({"n": 2}, None), ({"n": 3}, None)]))
        other.start()
        other.join()
        try:
            early = os.read(r, 100)
        except BlockingIOError:
            early = b""
        assert early == b""  # nothing written while held, whoever sent it
    writer.close()
    assert os.read(r, 1000) == b'{"n":1}\n{"n":2}\n{"n":3}\n'
    os.close(w)
    os.close(r)


def unread_at_most(fd: int) -> int:
    """What a drain() thread may not have appended yet when a write to ``fd`` returns: the
    pipe's capacity (still in the pipe) plus one read it holds in hand."""
    try:
        capacity = fcntl.fcntl(fd, 1032)  # F_GETPIPE_SZ (Linux)
    except OSError:
        capacity = 1 << 16  # the default everywhere else
    return capacity + (1 << 16)


def test_on_written_runs_after_everything_sent_in_the_same_hold_is_written() -> None:
    r, w = os.pipe()
    may_lag = unread_at_most(w)
    writer = FrameWriter(w)
    got = bytearray()
    thread = drain(r, got)
    read_when_called: list[int] = []
    done = threading.Event()

    def on_written() -> None:
        read_when_called.append(len(got))
        done.set()

    with writer.held():
        writer.send({"answer": 1}, on_written=on_written)
        # sent after the answer but in the same hold (a createMany's announcements): 440 KB,
        # far more than the pipe holds, so the callback must wait for the reader to take them
        writer.send_many([({"n": k, "pad": "x" * 200}, None) for k in range(2000)])
        assert not done.is_set()
    assert done.wait(10)
    writer.close()
    os.close(w)
    thread.join()
    os.close(r)
    lines = bytes(got).splitlines()
    assert len(lines) == 2001 and orjson.loads(lines[0]) == {"answer": 1}
    assert read_when_called[0] >= len(got) - may_lag


def test_on_written_outside_a_hold_waits_for_what_the_pipe_did_not_take() -> None:
    r, w = os.pipe()
    writer = FrameWriter(w)
    for i in range(1000):  # nobody reads yet: the pipe fills, the rest waits in the writer
        writer.send({"i": i, "pad": "x" * 200})
    done = threading.Event()
    writer.send({"i": 1000}, on_written=done.set)
    assert not done.wait(0.2)  # the pipe is full: not written yet
    got = bytearray()
    thread = drain(r, got)
    assert done.wait(10)
    writer.close()
    os.close(w)
    thread.join()
    os.close(r)
    assert orjson.loads(bytes(got).splitlines()[-1]) == {"i": 1000}


def test_on_written_is_still_called_when_stdout_is_gone() -> None:
    r, w = os.pipe()
    os.close(r)
    writer = FrameWriter(w)
    done = threading.Event()
    writer.send({"x": 1}, on_written=done.set)
    assert done.wait(10)
    writer.close()
    os.close(w)


def test_the_writer_keeps_nothing_it_has_written() -> None:
    """An idle writer must not hold its last batch: those would be the last tasks of a burst,
    alive for as long as the sidecar stays quiet (and pinning the memory the burst used)."""

    class Message:  # a message may be a callable that makes the frame at write time
        def __call__(self) -> dict:
            return {"x": 1}

    r, w = os.pipe()
    writer = FrameWriter(w)
    got = bytearray()
    thread = drain(r, got)
    messages = [Message() for _ in range(200)]  # more than DIRECT_MAX: the writer thread's work
    refs = [weakref.ref(m) for m in messages]
    written = threading.Event()
    writer.send_many([(m, None) for m in messages])
    writer.send({"last": True}, on_written=written.set)
    del messages
    assert written.wait(10)
    time.sleep(0.05)  # the writer is back to waiting for work
    gc.collect()
    alive = sum(ref() is not None for ref in refs)
    writer.close()
    os.close(w)
    thread.join()
    os.close(r)
    assert alive == 0
    assert len(bytes(got).splitlines()) == 201
