"""``http.download``: a resumable, verified HTTP(S) download into an allowed directory.

Only the standard library (``http.client``): it gives us the connection's socket, so a cancel can
interrupt a blocked read at once, and lets every redirect be checked against ``--allow-host``.

Apps can call :func:`download` from their own handlers (see ``docs/examples/playlistify_handlers.py``).
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sidecar.handlers.context import TaskContext, TaskError

if TYPE_CHECKING:
    import http.client
from sidecar.handlers.formatting import clock, human_bytes
from sidecar.handlers.registry import AppOptions, DetailsError, handler

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
CHECKPOINT_BYTES = 1024 * 1024  # checkpoint at least every MiB ...
CHECKPOINT_S = 1.0  # ... or every second, whichever comes first
STALL_TIMEOUT_S = 30.0  # no byte for this long: a (retryable) network error
MAX_REDIRECTS = 10
RETRYABLE_4XX = {408, 425, 429}  # "try again later" answers: retried like 5xx
# Managed by the download itself; an app cannot set them.
RESERVED_HEADERS = {"range", "if-range", "host", "content-length", "transfer-encoding", "connection",
                    "accept-encoding"}
USER_AGENT = "task-sidecar http.download"

DETAILS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["url", "dest"],
    "properties": {
        "url": {"type": "string", "minLength": 1, "maxLength": 8192, "pattern": "^[hH][tT][tT][pP][sS]?://"},
        "dest": {"type": "string", "minLength": 1, "maxLength": 4096},
        "sha256": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"},
        "size": {"type": "integer", "minimum": 0},
        "headers": {
            "type": "object",
            "maxProperties": 64,
            "additionalProperties": {"type": "string", "maxLength": 8192},
        },
    },
    "additionalProperties": False,
}


# ------------------------------------------------------------------ policy: where and from where


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _same_origin(was: urllib.parse.SplitResult, now: urllib.parse.SplitResult) -> bool:
    """Whether a redirect may carry the Authorization and Cookie headers on: the same scheme, host
    and port (as browsers scope credentials), or the same host moving from http:80 to https:443. A
    move to another port or down to http drops them, as a move to another host does."""
    def origin(parts: urllib.parse.SplitResult) -> tuple[str, str | None, int | None]:
        scheme = parts.scheme.lower()
        return scheme, parts.hostname, parts.port or _DEFAULT_PORTS.get(scheme)

    before, after = origin(was), origin(now)
    return before == after or (before == ("http", after[1], 80) and after[0] == "https" and after[2] == 443)


def check_dest(dest: str, allow_dirs: list[str]) -> str:
    """The real path ``dest`` will be written to; ValueError(reason) when it is not allowed."""
    if not isinstance(dest, str) or not dest:
        raise ValueError("must be a non-empty path")
    if "\x00" in dest:
        raise ValueError("must not contain NUL")
    if not os.path.isabs(dest):
        raise ValueError("must be an absolute path")
    parts = dest.replace("\\", "/").split("/")
    if ".." in parts:
        raise ValueError("must not contain '..'")
    if not allow_dirs:
        raise ValueError("no download directory is allowed (start the sidecar with --allow-dir DIR)")
    if parts[-1] in ("", "."):
        raise ValueError("must name a file, not a directory")
    real = os.path.realpath(dest)  # resolves every symlink that exists, including dest itself
    for allowed in allow_dirs:
        root = os.path.realpath(allowed)
        if real == root:
            raise ValueError("is an allowed directory itself, not a file in it")
        try:
            inside = os.path.commonpath([root, real]) == root
        except ValueError:  # different drives on Windows
            inside = False
        if inside:
            if os.path.isdir(real):
                raise ValueError("is a directory")
            return real
    raise ValueError("is outside the allowed directories" + (" (through a symlink)" if _has_link(dest) else ""))


def _has_link(path: str) -> bool:
    return os.path.realpath(path) != os.path.normpath(os.path.abspath(path))


def host_allowed(host: str | None, allow_hosts: list[str]) -> bool:
    """No ``--allow-host``: any host. Otherwise the exact host, or ``*.example.com`` for subdomains."""
    if not allow_hosts:
        return True
    if not host:
        return False
    host = host.lower().rstrip(".")
    for entry in allow_hosts:
        entry = entry.lower().rstrip(".")
        if entry.startswith("*."):
            if host.endswith(entry[1:]) or host == entry[2:]:
                return True
        elif host == entry:
            return True
    return False


def check_url(url: str, allow_hosts: list[str]) -> urllib.parse.SplitResult:
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise ValueError(f"is not a valid URL ({exc})") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http(s) URL with a host")
    if not host_allowed(parts.hostname, allow_hosts):
        raise ValueError(f"host {parts.hostname!r} is not allowed (--allow-host)")
    return parts


def check_details(details: dict[str, Any], options: AppOptions) -> None:
    """At ``tasks.create``: refuse a destination or host the app did not allow (-32602)."""
    try:
        check_url(details.get("url", ""), options.allow_hosts)
    except ValueError as exc:
        raise DetailsError("url", str(exc)) from None
    try:
        check_dest(details.get("dest", ""), options.allow_dirs)
    except ValueError as exc:
        raise DetailsError("dest", str(exc)) from None
    for name, value in (details.get("headers") or {}).items():
        if name.lower() in RESERVED_HEADERS:
            raise DetailsError(f"headers.{name}", "is managed by the download and cannot be set")
        if any(c in name + value for c in "\r\n\x00") or not name or any(c in name for c in " :\t"):
            raise DetailsError(f"headers.{name}", "is not a valid header")


# ------------------------------------------------------------------ helpers


def progress_message(done: int, total: int | None, speed: float | None) -> str:
    """``12.0 MiB of 30.0 MiB · 2.0 MiB/s · ETA 0:09`` (bytes only when the size is unknown)."""
    text = human_bytes(done) if total is None else f"{human_bytes(done)} of {human_bytes(total)}"
    if speed:
        text += f" · {human_bytes(speed)}/s"
        if total is not None and total > done:
            text += f" · ETA {clock((total - done) / speed)}"
    return text


class _Speed:
    """Bytes per second over the last few seconds."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, int]] = []

    def add(self, now: float, done: int) -> float | None:
        self.samples.append((now, done))
        while len(self.samples) > 2 and now - self.samples[0][0] > 5.0:
            self.samples.pop(0)
        t0, b0 = self.samples[0]
        return (done - b0) / (now - t0) if now - t0 >= 0.2 else None


def _parse_content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """``bytes 100-199/1000`` → (100, 199, 1000); total None for ``*``."""
    if not value or not value.lower().startswith("bytes "):
        return None
    try:
        span, _, total = value[6:].strip().partition("/")
        first, _, last = span.partition("-")
        return int(first), int(last), None if total.strip() == "*" else int(total)
    except ValueError:
        return None


def _validator(etag: str | None, last_modified: str | None) -> str | None:
    """The If-Range value: a strong ETag, else Last-Modified (RFC 9110 §13.1.5)."""
    if etag and not etag.startswith("W/"):
        return etag
    return last_modified


class _StopWatch:
    """Interrupts a blocked socket read as soon as the task is asked to stop."""

    def __init__(self, ctx: TaskContext) -> None:
        self.ctx = ctx
        self.sock: socket.socket | None = None
        # Called about once a second while set: the body's progress and checkpoint, kept current
        # while a read waits on a silent server (the reading thread can only act between blocks).
        self.idle: Callable[[], None] | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"download-watch-{ctx.id[:8]}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        shut: socket.socket | None = None
        idle_at = time.monotonic() + 1.0
        while not self._done.wait(0.1):
            idle = self.idle
            if idle is not None and time.monotonic() >= idle_at:
                idle_at = time.monotonic() + 1.0
                try:
                    idle()
                except Exception:  # a report that failed must not end the watch over the socket
                    log.warning("download progress report failed", exc_info=True)
            sock = self.sock
            if self.ctx.cancelled and sock is not None and sock is not shut:
                # Every socket set after the stop too: the TCP socket is replaced by its TLS one.
                # socket.socket's own shutdown, at the descriptor: SSLSocket.shutdown would also
                # drop the TLS state a handshake in progress on the other thread is using.
                try:
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)
                except OSError:
                    pass
                shut = sock

    def close(self) -> None:
        self._done.set()
        self._thread.join(1)


_CONNECTING = {0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN, 10035}  # 10035: WSAEWOULDBLOCK


def _connect(ctx: TaskContext, host: str, port: int) -> socket.socket:
    """A TCP connection to ``host:port``, given up within 0.1 s of a stop (a blocking connect
    cannot be interrupted from another thread) or after ``STALL_TIMEOUT_S``."""
    import select

    last: OSError = OSError(f"{host}: no address")
    for family, type_, proto, _, address in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        sock = socket.socket(family, type_, proto)
        try:
            sock.setblocking(False)
            code = sock.connect_ex(address)
            if code not in _CONNECTING:
                raise OSError(code, os.strerror(code))
            deadline = time.monotonic() + STALL_TIMEOUT_S
            while True:
                _, writable, failed = select.select([], [sock], [sock], 0.1)
                if writable or failed:
                    break
                ctx.raise_if_cancelled()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{host}:{port}: no connection after {STALL_TIMEOUT_S:g}s")
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                raise OSError(code, os.strerror(code))
            sock.settimeout(STALL_TIMEOUT_S)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
        except BaseException:
            sock.close()
            raise
    raise last


def _connection(parts: urllib.parse.SplitResult) -> http.client.HTTPConnection:
    """The scheme's connection class even though the socket is ours (see _open): its default port
    keeps a `Host: h:443`, which some servers and CDNs refuse, out of a request to https://h/."""
    import http.client

    cls = http.client.HTTPSConnection if parts.scheme.lower() == "https" else http.client.HTTPConnection
    return cls(parts.hostname, parts.port, timeout=STALL_TIMEOUT_S)  # type: ignore[arg-type]


@dataclass
class _Response:
    conn: http.client.HTTPConnection
    resp: http.client.HTTPResponse
    url: str


def _open(ctx: TaskContext, url: str, headers: dict[str, str], options: AppOptions, watch: _StopWatch) -> _Response:
    """GET ``url`` following redirects (each one checked against the allowed hosts)."""
    import http.client  # here, not at import: http.client and ssl cost ~30 ms of start-up
    import ssl

    for _ in range(MAX_REDIRECTS + 1):
        try:
            parts = check_url(url, options.allow_hosts)
        except ValueError as exc:
            raise TaskError(f"{url}: {exc}", retryable=False) from None
        https = parts.scheme.lower() == "https"
        conn = _connection(parts)
        port = conn.port
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        try:
            # Connected here rather than by http.client, so that a stop interrupts the connect and
            # the TLS handshake too, not only reads (a server that accepts and then never answers
            # the handshake held a cancel for the whole grace period).
            raw = _connect(ctx, parts.hostname, port)  # type: ignore[arg-type]
            watch.sock = raw
            if https:
                try:
                    tls = ssl.create_default_context().wrap_socket(
                        raw, server_hostname=parts.hostname, do_handshake_on_connect=False
                    )
                    watch.sock = conn.sock = tls
                    ctx.raise_if_cancelled()
                    tls.do_handshake()
                except ssl.SSLCertVerificationError as exc:
                    raw.close()
                    ctx.raise_if_cancelled()
                    raise TaskError(f"{url}: certificate verification failed: {exc.verify_message}",
                                    retryable=False) from None
                except BaseException:
                    raw.close()
                    raise
            else:
                conn.sock = raw
            ctx.raise_if_cancelled()
            conn.request("GET", target, headers=headers)
            resp = conn.getresponse()
        except BaseException:
            conn.close()
            raise
        if resp.status in (301, 302, 303, 307, 308) and resp.getheader("Location"):
            location = urllib.parse.urljoin(url, resp.getheader("Location", ""))
            resp.close()
            conn.close()
            if not _same_origin(parts, urllib.parse.urlsplit(location)):  # credentials stay with their origin
                headers = {k: v for k, v in headers.items() if k.lower() not in ("authorization", "cookie")}
            url = location
            continue
        return _Response(conn, resp, url)
    raise TaskError(f"too many redirects (more than {MAX_REDIRECTS})", retryable=False)


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except (FileNotFoundError, NotADirectoryError):
        pass


def _open_part(part: str, dest: str, options: AppOptions) -> int:
    """Open the partial file for writing, re-checking the destination at the last moment."""
    try:
        real = check_dest(dest, options.allow_dirs)
    except ValueError as exc:
        raise TaskError(f"dest {dest}: {exc}", retryable=False) from None
    try:
        os.makedirs(os.path.dirname(real), exist_ok=True)
        try:  # the directory may have been swapped for a symlink while we were creating it
            check_dest(dest, options.allow_dirs)
        except ValueError as exc:
            raise TaskError(f"dest {dest}: {exc}", retryable=False) from None
        flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
        return os.open(part, flags, 0o644)
    except (FileExistsError, NotADirectoryError, IsADirectoryError) as exc:
        # a file where a directory must be: no retry fixes it. (A PermissionError stays retryable:
        # on Windows it is also a file held open by another program, e.g. a virus scanner.)
        raise TaskError(f"dest {dest}: {exc.strerror}: {exc.filename}", retryable=False) from None


# ------------------------------------------------------------------ the download


def download(
    ctx: TaskContext,
    url: str,
    dest: str,
    *,
    sha256: str | None = None,
    size: int | None = None,
    headers: dict[str, str] | None = None,
    options: AppOptions | None = None,
) -> dict[str, Any]:
    """Download ``url`` to ``dest`` (an absolute path inside an allowed directory), resumably.

    Checkpoints ``{"download": {...}}`` (other keys of ``ctx.state`` are kept), so a re-run resumes
    with a Range request. Returns ``{"path", "bytes", "sha256", "url" (after redirects), "resumedFrom"}``.
    """
    options = options or ctx.options or AppOptions()
    try:
        real_dest = check_dest(dest, options.allow_dirs)
    except ValueError as exc:
        raise TaskError(f"dest {dest}: {exc}", retryable=False) from None
    part = f"{real_dest}.{ctx.id[:8]}.part"
    saved = (ctx.state or {}).get("download") if isinstance(ctx.state, dict) else None
    if not isinstance(saved, dict) or saved.get("url") != url or saved.get("part") != part:
        saved = None

    base_headers = {"User-Agent": USER_AGENT, **(headers or {}), "Accept-Encoding": "identity"}
    offset = 0
    if saved is not None and os.path.exists(part):
        offset = min(int(saved.get("bytes", 0)), os.path.getsize(part))
    watch = _StopWatch(ctx)
    fd = -1
    remove_part = False
    try:
        fd = _open_part(part, dest, options)
        resumed_from = 0
        for _ in range(3):  # a refused or stale resume restarts from zero (once, normally)
            request_headers = dict(base_headers)
            validator = _validator(saved.get("etag"), saved.get("lastModified")) if saved and offset else None
            if offset:
                request_headers["Range"] = f"bytes={offset}-"
                if validator:
                    request_headers["If-Range"] = validator
            opened = _open(ctx, url, request_headers, options, watch)
            resp = opened.resp
            try:
                status = resp.status
                etag, last_modified = resp.getheader("ETag"), resp.getheader("Last-Modified")
                if offset and status == 416:
                    offset, saved = 0, None  # our partial no longer fits the resource: start over
                    continue
                if status >= 500 or status in RETRYABLE_4XX:
                    raise ConnectionError(f"HTTP {status} {resp.reason} from {opened.url}")  # retried
                if status >= 400:
                    raise TaskError(f"HTTP {status} {resp.reason}: {opened.url}", retryable=False)
                if status not in (200, 206):
                    raise TaskError(f"unexpected HTTP {status} {resp.reason} from {opened.url}", retryable=False)
                if status == 206:
                    span = _parse_content_range(resp.getheader("Content-Range"))
                    changed = (
                        span is None
                        or span[0] != offset
                        or (saved is not None and saved.get("total") is not None and span[2] != saved["total"])
                        or (saved is not None and saved.get("etag") and etag and etag != saved["etag"])
                        or (saved is not None and saved.get("lastModified") and last_modified
                            and last_modified != saved["lastModified"])
                    )
                    if not offset or changed:
                        offset, saved = 0, None  # a range we did not ask for, or another resource
                        continue
                    total = span[2] if span is not None else None
                    resumed_from = offset
                else:
                    length = resp.getheader("Content-Length")
                    total = int(length) if length and length.isdigit() else None
                    offset = 0  # no range support, or the resource changed (If-Range): restart
                    resumed_from = 0
                if size is not None and total is not None and total != size:
                    raise TaskError(f"size mismatch: the server announces {total} bytes, expected {size}",
                                    retryable=False)
                result = _stream(ctx, opened, fd, part, url, offset, total, etag, last_modified, sha256, size, watch)
                break
            finally:
                resp.close()
                opened.conn.close()
        else:
            raise ConnectionError(f"{url}: the server kept answering ranges that do not fit; retrying later")
        os.close(fd)
        fd = -1
        try:  # the last check before the file appears under its name
            final = check_dest(dest, options.allow_dirs)
        except ValueError as exc:
            raise TaskError(f"dest {dest}: {exc}", retryable=False) from None
        # A stop that came while the last bytes were checked: no file under dest for a task that
        # will not end COMPLETED. After the rename it completes (the engine lets a handler that
        # returned before a stop reached it finish).
        ctx.raise_if_cancelled()
        os.replace(part, final)
        ctx.progress(100.0, progress_message(result["bytes"], result["bytes"], None))
        return {"path": final, **result, "resumedFrom": resumed_from}
    except TaskError as exc:
        remove_part = not exc.retryable or ctx.attempt >= ctx.max_attempts  # fails for good: leave nothing
        raise
    except BaseException:
        if ctx.cancelled:
            # cancel removes the partial; pause, shutdown and a timeout that will be retried keep it
            remove_part = ctx.stop_reason == "cancel" or (
                ctx.stop_reason == "timeout" and ctx.attempt >= ctx.max_attempts
            )
            ctx.raise_if_cancelled()
        remove_part = ctx.attempt >= ctx.max_attempts  # the last attempt failed: the task fails for good
        raise
    finally:
        if fd >= 0:
            os.close(fd)
        # An abandoned run (it outlived the grace period) was already ended by the engine, whose end
        # hook removed the partial then; a retry may own the file by now.
        if remove_part and not ctx.abandoned:
            _remove(part)
        watch.close()


def _stream(
    ctx: TaskContext,
    opened: _Response,
    fd: int,
    part: str,
    url: str,
    offset: int,
    total: int | None,
    etag: str | None,
    last_modified: str | None,
    sha256: str | None,
    size: int | None,
    watch: _StopWatch,
) -> dict[str, Any]:
    """Write the body from ``offset``, then verify; returns ``{bytes, sha256, url}``."""
    digest = hashlib.sha256()
    os.ftruncate(fd, offset)
    if offset:  # hash what is already there
        with open(part, "rb") as existing:
            left = offset
            while left > 0:
                block = existing.read(min(left, 1024 * 1024))
                if not block:
                    raise OSError(f"partial file {part} shrank while resuming")
                digest.update(block)
                left -= len(block)
    os.lseek(fd, offset, os.SEEK_SET)

    done = offset
    speed = _Speed()
    started = time.monotonic()
    speed.add(started, done)
    last_ckpt_t, last_ckpt_b = started, done
    last_report = started

    def checkpoint() -> None:
        state = dict(ctx.state) if isinstance(ctx.state, dict) else {}
        state["download"] = {"url": url, "part": part, "bytes": done, "total": total, "etag": etag,
                             "lastModified": last_modified}
        ctx.checkpoint(state)

    def report(now: float) -> None:
        rate = speed.add(now, done)
        percent = done * 100.0 / total if total else 0.0
        ctx.progress(min(percent, 99.9) if total and done < total else percent,
                     progress_message(done, total, rate))

    checkpoint()  # the validators, so a resume can tell whether the resource changed
    report(started)
    lock = threading.Lock()  # the watcher's thread reports too, while a read waits

    def keep_current(now: float, report_every: float) -> None:
        nonlocal last_ckpt_t, last_ckpt_b, last_report
        if done != last_ckpt_b and (done - last_ckpt_b >= CHECKPOINT_BYTES or now - last_ckpt_t >= CHECKPOINT_S):
            checkpoint()
            last_ckpt_t, last_ckpt_b = now, done
        if now - last_report >= report_every:
            report(now)
            last_report = now

    def on_idle() -> None:
        with lock:
            keep_current(time.monotonic(), 1.0)

    watch.idle = on_idle
    resp = opened.resp
    while True:
        if ctx.cancelled:
            checkpoint()
            ctx.raise_if_cancelled()
        try:
            block = resp.read1(CHUNK)  # what has arrived (up to CHUNK), not a wait for a full CHUNK
        except (TimeoutError, socket.timeout) as exc:
            checkpoint()  # keep what arrived before the silence: the retry resumes from here
            raise ConnectionError(f"no data for {STALL_TIMEOUT_S:g}s from {opened.url}") from exc
        except OSError:
            checkpoint()  # the same for a reset connection
            ctx.raise_if_cancelled()
            raise
        if not block:
            watch.idle = None
            break
        _write_all(fd, block)
        digest.update(block)
        with lock:
            done += len(block)
            keep_current(time.monotonic(), 0.25)
        if total is not None and done > total:
            raise TaskError(f"size mismatch: received more than the announced {total} bytes", retryable=False)
    if ctx.cancelled:
        checkpoint()
        ctx.raise_if_cancelled()
    if total is not None and done < total:
        checkpoint()  # keep what arrived: the retry resumes from here
        raise ConnectionError(f"connection closed after {done} of {total} bytes")
    if size is not None and done != size:
        raise TaskError(f"size mismatch: received {done} bytes, expected {size}", retryable=False)
    got = digest.hexdigest()
    if sha256 is not None and got != sha256.lower():
        raise TaskError(f"sha256 mismatch: got {got}, expected {sha256.lower()}", retryable=False)
    os.fsync(fd)
    return {"bytes": done, "sha256": got, "url": opened.url}


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def remove_partial(task_id: str, details: dict[str, Any], options: AppOptions) -> None:
    """The end hook: a download cancelled while paused or waiting out a retry's backoff, or failed
    by crash recovery, leaves no partial file (as one whose handler was running does not)."""
    try:
        real_dest = check_dest(details.get("dest"), options.allow_dirs)  # type: ignore[arg-type]
    except ValueError:
        return  # never a path outside the allowed directories
    _remove(f"{real_dest}.{task_id[:8]}.part")


@handler(
    "http.download",
    max_attempts=5,
    retry_base_s=1.0,
    retry_max_s=60.0,
    details_schema=DETAILS_SCHEMA,
    check_details=check_details,
    on_end=remove_partial,
    trusted=True,
)
def http_download(ctx: TaskContext) -> dict[str, Any]:
    """``{url, dest, sha256?, size?, headers?}`` → ``{path, bytes, sha256, resumedFrom, url}``."""
    d = ctx.details
    return download(ctx, d["url"], d["dest"], sha256=d.get("sha256"), size=d.get("size"), headers=d.get("headers"))
