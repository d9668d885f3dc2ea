"""http.download in-process (a real TaskContext, no engine) against a local HTTP server."""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from pathlib import Path

import pytest

from sidecar.handlers import AppOptions, DetailsError, TaskCancelled, TaskError, http_download
from sidecar.handlers.http_download import (
    _parse_content_range,
    check_dest,
    check_details,
    download,
    host_allowed,
    progress_message,
)

BODY = os.urandom(3 * 1024 * 1024 + 123)
SHA = hashlib.sha256(BODY).hexdigest()


@pytest.fixture
def opts(tmp_path: Path) -> AppOptions:
    (tmp_path / "dl").mkdir()
    return AppOptions(allow_dirs=[str(tmp_path / "dl")])


def part_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.part"))


def download_in_thread(rec, url: str, dest: str) -> tuple[threading.Thread, dict]:
    """Run ``download`` on a thread of its own, as the engine's handler thread would; ``box`` gets
    the exception it ends with."""
    box: dict = {}

    def run():
        try:
            download(rec.ctx, url, dest)
        except BaseException as exc:  # noqa: BLE001
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, box


def test_full_download_with_progress_and_checksum(http_server, recorder, opts, tmp_path):
    url = http_server.add("/v.bin", BODY, chunk=256 * 1024, delay=0.01)
    dest = tmp_path / "dl" / "sub" / "v.bin"
    rec = recorder(options=opts)
    result = download(rec.ctx, url, str(dest), sha256=SHA)
    assert dest.read_bytes() == BODY
    assert result == {"path": str(dest), "bytes": len(BODY), "sha256": SHA, "url": url, "resumedFrom": 0}
    assert not part_files(dest.parent)
    percents = [p for p, _ in rec.progress]
    assert percents == sorted(percents) and percents[-1] == 100.0 and len(percents) >= 2
    assert "of 3.0 MiB" in rec.progress[-1][1]
    assert any("/s" in (m or "") for _, m in rec.progress[1:-1]) or len(rec.progress) == 2
    last = rec.checkpoints[-1]["download"]
    assert last["etag"] == '"v1"' and last["total"] == len(BODY) and 0 < last["bytes"] <= len(BODY)


def test_no_content_length_reports_bytes_only(http_server, recorder, opts, tmp_path):
    url = http_server.add("/n.bin", BODY[:300_000], length=False, ranges=False)
    rec = recorder(options=opts)
    download(rec.ctx, url, str(tmp_path / "dl" / "n.bin"))
    assert (tmp_path / "dl" / "n.bin").read_bytes() == BODY[:300_000]
    assert all(p == 0.0 for p, _ in rec.progress[:-1]) and " of " not in (rec.progress[0][1] or "")


def test_dropped_connection_keeps_partial_then_resumes_with_range(http_server, recorder, opts, tmp_path):
    url = http_server.add("/d.bin", BODY, drop_at=1_500_000, drops=1)
    dest = tmp_path / "dl" / "d.bin"
    first = recorder(options=opts)
    with pytest.raises(ConnectionError, match="closed after 1500000"):
        download(first.ctx, url, str(dest))
    assert first.checkpoints[-1]["download"]["bytes"] == 1_500_000
    assert [p.stat().st_size for p in part_files(dest.parent)] == [1_500_000]
    second = recorder(options=opts, state=first.checkpoints[-1], attempt=2)
    result = download(second.ctx, url, str(dest), sha256=SHA)
    assert result["resumedFrom"] == 1_500_000 and dest.read_bytes() == BODY
    headers = http_server.got("/d.bin")[-1]
    assert headers["range"] == "bytes=1500000-" and headers["if-range"] == '"v1"'
    assert headers["accept-encoding"] == "identity"


def test_a_silent_server_keeps_what_arrived_for_the_resume(http_server, recorder, opts, tmp_path, monkeypatch):
    monkeypatch.setattr(http_download, "STALL_TIMEOUT_S", 0.5)
    url = http_server.add("/s.bin", BODY, stall_at=300_000, chunk=100_000)
    dest = tmp_path / "dl" / "s.bin"
    first = recorder(options=opts)
    with pytest.raises(ConnectionError, match="no data for 0.5s"):
        download(first.ctx, url, str(dest))
    # under the 1 MiB / 1 s checkpoint rhythm: kept only because the stall checkpointed what the
    # partial file holds (the blocks read whole before the silence)
    saved = first.checkpoints[-1]["download"]["bytes"]
    assert saved > 0 and [p.stat().st_size for p in part_files(dest.parent)] == [saved]
    http_server.resources["/s.bin"].stall_at = None
    second = recorder(options=opts, state=first.checkpoints[-1], attempt=2)
    result = download(second.ctx, url, str(dest), sha256=SHA)
    assert result["resumedFrom"] == saved and dest.read_bytes() == BODY


def test_what_arrived_before_a_silence_is_reported_and_checkpointed_during_it(
    http_server, recorder, opts, tmp_path, monkeypatch
):
    # 300 kB in a burst, then nothing: the reading thread waits in its read, so the watcher's
    # once-a-second call keeps the progress and the checkpoint current ("at least every second").
    monkeypatch.setattr(http_download, "STALL_TIMEOUT_S", 20.0)
    url = http_server.add("/b.bin", BODY, stall_at=300_000, chunk=100_000)
    rec = recorder(options=opts)
    thread, box = download_in_thread(rec, url, str(tmp_path / "dl" / "b.bin"))
    try:
        deadline = time.monotonic() + 10  # well inside the 20 s stall timeout
        while time.monotonic() < deadline:
            saved = rec.checkpoints[-1]["download"]["bytes"] if rec.checkpoints else 0
            if saved == 300_000 and rec.progress and "293.0 KiB of" in (rec.progress[-1][1] or ""):
                break
            time.sleep(0.05)
        assert rec.checkpoints[-1]["download"]["bytes"] == 300_000, rec.checkpoints[-1]
        assert rec.progress[-1][0] == pytest.approx(300_000 * 100 / len(BODY), abs=0.01), rec.progress[-1]
        assert "error" not in box  # still waiting on the silent server
    finally:
        rec.ctx.request_stop("pause")
        thread.join(10)


def test_server_without_range_support_restarts(http_server, recorder, opts, tmp_path):
    url = http_server.add("/r.bin", BODY, ranges=False, drop_at=1_000_000, drops=1)
    dest = tmp_path / "dl" / "r.bin"
    first = recorder(options=opts)
    with pytest.raises(ConnectionError):
        download(first.ctx, url, str(dest))
    second = recorder(options=opts, state=first.checkpoints[-1], attempt=2)
    result = download(second.ctx, url, str(dest), sha256=SHA)
    assert result["resumedFrom"] == 0 and dest.read_bytes() == BODY  # 200 to a Range request: start over


def test_changed_resource_restarts(http_server, recorder, opts, tmp_path):
    url = http_server.add("/c.bin", BODY, drop_at=1_000_000, drops=1)
    dest = tmp_path / "dl" / "c.bin"
    first = recorder(options=opts)
    with pytest.raises(ConnectionError):
        download(first.ctx, url, str(dest))
    new_body = os.urandom(2_000_000)
    res = http_server.resources["/c.bin"]
    res.body, res.etag, res.last_modified = new_body, '"v2"', "Thu, 22 Oct 2026 07:28:00 GMT"
    second = recorder(options=opts, state=first.checkpoints[-1], attempt=2)
    result = download(second.ctx, url, str(dest), sha256=hashlib.sha256(new_body).hexdigest())
    assert result["resumedFrom"] == 0 and dest.read_bytes() == new_body  # If-Range failed: full 200


def test_changed_resource_detected_without_if_range_support(http_server, recorder, opts, tmp_path):
    # A server that ignores If-Range answers 206 for the new resource: its ETag gives it away.
    url = http_server.add("/e.bin", BODY, drop_at=1_000_000, drops=1, if_range=False)
    dest = tmp_path / "dl" / "e.bin"
    first = recorder(options=opts)
    with pytest.raises(ConnectionError):
        download(first.ctx, url, str(dest))
    new_body = os.urandom(len(BODY))
    res = http_server.resources["/e.bin"]
    res.body, res.etag = new_body, '"v2"'
    second = recorder(options=opts, state=first.checkpoints[-1], attempt=2)
    result = download(second.ctx, url, str(dest))
    assert dest.read_bytes() == new_body and result["resumedFrom"] == 0
    ranges = [h.get("range") for h in http_server.got("/e.bin")]
    assert ranges == [None, "bytes=1000000-", None]  # resume refused by us, then a fresh request


def test_checksum_mismatch_fails_at_once_and_removes_partial(http_server, recorder, opts, tmp_path):
    url = http_server.add("/s.bin", BODY)
    dest = tmp_path / "dl" / "s.bin"
    rec = recorder(options=opts)
    with pytest.raises(TaskError, match="sha256 mismatch") as err:
        download(rec.ctx, url, str(dest), sha256="0" * 64)
    assert err.value.retryable is False
    assert not dest.exists() and not part_files(dest.parent)


def test_size_mismatch_fails_at_once(http_server, recorder, opts, tmp_path):
    url = http_server.add("/z.bin", BODY)
    rec = recorder(options=opts)
    with pytest.raises(TaskError, match="size mismatch") as err:
        download(rec.ctx, url, str(tmp_path / "dl" / "z.bin"), size=len(BODY) + 1)
    assert err.value.retryable is False and not part_files(tmp_path / "dl")
    url2 = http_server.add("/z2.bin", BODY[:1000], length=False)
    with pytest.raises(TaskError, match="received 1000 bytes, expected 999"):
        download(recorder(options=opts).ctx, url2, str(tmp_path / "dl" / "z2.bin"), size=999)
    assert not part_files(tmp_path / "dl")


def test_404_is_not_retried_503_is(http_server, recorder, opts, tmp_path):
    rec = recorder(options=opts)
    with pytest.raises(TaskError, match="HTTP 404") as err:
        download(rec.ctx, http_server.base + "/missing", str(tmp_path / "dl" / "m.bin"))
    assert err.value.retryable is False and not part_files(tmp_path / "dl")
    url = http_server.add("/busy.bin", BODY[:1000], statuses=[503])
    with pytest.raises(ConnectionError, match="HTTP 503"):  # a plain exception: the engine retries it
        download(recorder(options=opts).ctx, url, str(tmp_path / "dl" / "busy.bin"))
    download(recorder(options=opts, attempt=2).ctx, url, str(tmp_path / "dl" / "busy.bin"))
    assert (tmp_path / "dl" / "busy.bin").read_bytes() == BODY[:1000]


def test_last_attempt_failure_removes_partial(http_server, recorder, opts, tmp_path):
    url = http_server.add("/l.bin", BODY, drop_at=500_000, drops=1)
    rec = recorder(options=opts, attempt=5, max_attempts=5)
    with pytest.raises(ConnectionError):
        download(rec.ctx, url, str(tmp_path / "dl" / "l.bin"))
    assert not part_files(tmp_path / "dl")


@pytest.mark.parametrize("reason, kept", [("cancel", False), ("pause", True), ("shutdown", True)])
def test_stop_mid_download(http_server, recorder, opts, tmp_path, reason, kept):
    url = http_server.add("/slow.bin", BODY, chunk=64 * 1024, delay=0.05)
    rec = recorder(options=opts)
    thread, box = download_in_thread(rec, url, str(tmp_path / "dl" / "slow.bin"))
    deadline = time.monotonic() + 20
    while not any(p > 0 for p, _ in rec.progress) and time.monotonic() < deadline:
        time.sleep(0.02)
    rec.ctx.request_stop(reason)
    thread.join(20)
    assert isinstance(box.get("error"), TaskCancelled)
    parts = part_files(tmp_path / "dl")
    assert bool(parts) is kept
    if kept:
        assert parts[0].stat().st_size >= rec.checkpoints[-1]["download"]["bytes"] > 0
    assert not (tmp_path / "dl" / "slow.bin").exists()


@pytest.mark.parametrize("reason, kept", [("cancel", False), ("pause", True)])
def test_a_stop_after_the_last_byte_but_before_the_rename_leaves_no_file_at_dest(
    http_server, recorder, opts, tmp_path, monkeypatch, reason, kept
):
    # The handler's last check: a task that will not end COMPLETED must not leave its file in place.
    url = http_server.add("/e.bin", BODY[:200_000])
    rec = recorder(options=opts)
    checked = check_dest

    def stop_once_the_body_is_in(dest, allow_dirs):
        if rec.progress:  # the body was streamed: this is the check right before the rename
            rec.ctx.request_stop(reason)
        return checked(dest, allow_dirs)

    monkeypatch.setattr(http_download, "check_dest", stop_once_the_body_is_in)
    with pytest.raises(TaskCancelled):
        download(rec.ctx, url, str(tmp_path / "dl" / "e.bin"))
    assert not (tmp_path / "dl" / "e.bin").exists()
    assert bool(part_files(tmp_path / "dl")) is kept


def test_an_abandoned_run_leaves_the_partial_to_the_run_that_retried_it(http_server, recorder, opts, tmp_path):
    # A run stuck past the grace period is abandoned and its task ends at once (the end hook
    # removes the partial then). When the stuck run finally stops, a retry may be writing the same
    # <dest>.<id8>.part: the stale run must not delete it.
    url = http_server.add("/a.bin", BODY, stall_at=300_000, chunk=100_000)
    rec = recorder(options=opts)
    thread, box = download_in_thread(rec, url, str(tmp_path / "dl" / "a.bin"))
    deadline = time.monotonic() + 20
    while not part_files(tmp_path / "dl") and time.monotonic() < deadline:
        time.sleep(0.02)
    [part] = part_files(tmp_path / "dl")
    rec.ctx.abandoned = True  # what the engine sets when it gives up waiting
    rec.ctx.request_stop("cancel")
    thread.join(20)
    assert isinstance(box.get("error"), TaskCancelled)
    assert part.exists()


def test_redirects_are_followed_and_checked_against_hosts(http_server, recorder, opts, tmp_path):
    target = http_server.add("/target.bin", BODY[:5000]).replace("127.0.0.1", "localhost")
    url = http_server.add("/go", b"", redirect=target)
    options = AppOptions(allow_dirs=opts.allow_dirs, allow_hosts=["127.0.0.1"])
    with pytest.raises(TaskError, match="'localhost' is not allowed"):
        download(recorder(options=options).ctx, url, str(tmp_path / "dl" / "t.bin"), headers={"Authorization": "x"})
    options.allow_hosts.append("localhost")
    result = download(recorder(options=options).ctx, url, str(tmp_path / "dl" / "t.bin"),
                      headers={"Authorization": "secret", "X-Keep": "1"})
    assert (tmp_path / "dl" / "t.bin").read_bytes() == BODY[:5000] and result["url"] == target
    sent = http_server.got("/target.bin")[-1]
    assert "authorization" not in sent and sent["x-keep"] == "1"  # credentials stay with their host
    assert http_server.got("/go")[-1]["authorization"] == "secret"


def test_credentials_do_not_follow_a_redirect_to_another_port_or_down_to_http(http_server, recorder, opts, tmp_path):
    from tests.handlers.conftest import serving

    with serving() as other:
        target = other.add("/t.bin", BODY[:5000])
        url = http_server.add("/go-port", b"", redirect=target)  # the same host, another port
        download(recorder(options=opts).ctx, url, str(tmp_path / "dl" / "p.bin"),
                 headers={"Authorization": "secret", "Cookie": "s=1", "X-Keep": "1"})
        sent = other.got("/t.bin")[-1]
        assert "authorization" not in sent and "cookie" not in sent and sent["x-keep"] == "1"
        assert http_server.got("/go-port")[-1]["authorization"] == "secret"
    split = http_download.urllib.parse.urlsplit
    same = http_download._same_origin
    assert same(split("http://h/a"), split("http://h:80/b")) and same(split("http://h/a"), split("https://h/b"))
    assert not same(split("https://h/a"), split("http://h/b"))  # never down to cleartext
    assert not same(split("http://h:8080/a"), split("https://h/b"))
    assert not same(split("https://h/a"), split("https://h:8443/b"))


class _SilentTLSServer:
    """Accepts TCP connections and never answers: a TLS handshake against it blocks."""

    def __init__(self) -> None:
        import socket

        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted: list = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        try:
            while True:
                self.accepted.append(self.sock.accept()[0])
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


@pytest.mark.parametrize("reason", ["cancel", "pause"])
def test_a_stop_interrupts_a_tls_handshake_the_server_never_answers(recorder, opts, tmp_path, reason):
    # Before, only reads were interrupted: the task stayed RUNNING until the grace period abandoned
    # it, and the handler thread lived on for the 30 s stall timeout.
    server = _SilentTLSServer()
    rec = recorder(options=opts)
    thread, box = download_in_thread(rec, f"https://127.0.0.1:{server.port}/v.bin", str(tmp_path / "dl" / "v.bin"))
    try:
        deadline = time.monotonic() + 10
        while not server.accepted and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.accepted, "the download never connected"
        rec.ctx.request_stop(reason)
        thread.join(5)  # the stall timeout is 30 s: ending within 5 s means the stop did it
        assert not thread.is_alive() and isinstance(box.get("error"), TaskCancelled), box
    finally:
        server.close()


def test_a_certificate_that_fails_verification_fails_at_once(recorder, opts, tmp_path):
    import ssl
    import socket

    tls = Path(__file__).parent / "tls"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls / "self-signed-cert.pem", tls / "self-signed-key.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve():
        try:
            conn, _ = listener.accept()
            with contextlib.suppress(OSError, ssl.SSLError):
                context.wrap_socket(conn, server_side=True).close()
        except OSError:
            pass

    threading.Thread(target=serve, daemon=True).start()
    try:
        with pytest.raises(TaskError, match="certificate verification failed") as raised:
            download(recorder(options=opts).ctx, f"https://127.0.0.1:{port}/v.bin", str(tmp_path / "dl" / "v.bin"))
        assert raised.value.retryable is False
    finally:
        listener.close()


def test_a_dest_under_a_regular_file_fails_at_once(http_server, recorder, opts, tmp_path):
    url = http_server.add("/f.bin", BODY[:1000])
    (tmp_path / "dl" / "file").write_bytes(b"not a directory")
    with pytest.raises(TaskError, match="dest .*file/sub/f.bin") as raised:
        download(recorder(options=opts).ctx, url, str(tmp_path / "dl" / "file" / "sub" / "f.bin"))
    assert raised.value.retryable is False


@pytest.mark.parametrize("url, host", [
    ("https://media.example/v.mp4", b"media.example"), ("http://media.example/v.mp4", b"media.example"),
    ("https://media.example:8443/v.mp4", b"media.example:8443"),
])
def test_the_host_header_names_a_port_only_when_it_is_not_the_schemes_default(url, host):
    # The download connects the socket itself; the request on the wire must still say what
    # http.client says for that URL (a `Host: h:443` is refused by some servers and CDNs).
    import socket

    ours, theirs = socket.socketpair()
    with ours, theirs:
        conn = http_download._connection(http_download.urllib.parse.urlsplit(url))
        conn.sock = ours  # plain bytes: what a TLS socket would encrypt
        conn.request("GET", "/v.mp4")
        sent = theirs.recv(65536).split(b"\r\n")
    assert [line for line in sent if line.startswith(b"Host:")] == [b"Host: " + host]


# ------------------------------------------------------------------ destinations and hosts


def test_refused_destinations(tmp_path):
    allowed = tmp_path / "allowed"
    (allowed / "inner").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (allowed / "escape").symlink_to(outside)
    (allowed / "file-link").symlink_to(outside / "f.bin")
    dirs = [str(allowed)]
    assert check_dest(str(allowed / "inner" / "a.bin"), dirs) == str(allowed / "inner" / "a.bin")
    assert check_dest(str(allowed / "new" / "deeper" / "a.bin"), dirs)  # created when opened
    cases = {
        str(outside / "a.bin"): "outside",
        str(allowed / ".." / "outside" / "a.bin"): "'..'",
        str(allowed / "inner" / ".." / "a.bin"): "'..'",
        str(allowed / "escape" / "a.bin"): "symlink",
        str(allowed / "file-link"): "symlink",
        "relative/a.bin": "absolute",
        str(allowed): "allowed directory itself",
        str(allowed / "inner"): "directory",
        str(allowed) + "/": "file",
    }
    for dest, reason in cases.items():
        with pytest.raises(ValueError, match=reason):
            check_dest(dest, dirs)
    with pytest.raises(ValueError, match="--allow-dir"):
        check_dest(str(allowed / "a.bin"), [])
    # a sibling whose name merely starts like the allowed directory
    (tmp_path / "allowed2").mkdir()
    with pytest.raises(ValueError, match="outside"):
        check_dest(str(tmp_path / "allowed2" / "a.bin"), dirs)


def test_check_details_names_the_field(tmp_path):
    options = AppOptions(allow_dirs=[str(tmp_path)], allow_hosts=["example.com", "*.cdn.example.org"])
    ok = {"url": "https://example.com/a", "dest": str(tmp_path / "a")}
    check_details(ok, options)
    check_details({**ok, "url": "http://x.cdn.example.org/a"}, options)
    for details, field in [
        ({**ok, "dest": "/etc/passwd"}, "dest"),
        ({**ok, "url": "https://evil.test/a"}, "url"),
        ({**ok, "url": "ftp://example.com/a"}, "url"),
        ({**ok, "headers": {"Range": "bytes=0-"}}, "headers.Range"),
        ({**ok, "headers": {"X-A": "b\r\nHost: x"}}, "headers.X-A"),
    ]:
        with pytest.raises(DetailsError) as err:
            check_details(details, options)
        assert err.value.field == field
    with pytest.raises(DetailsError) as err:
        check_details(ok, AppOptions())
    assert err.value.field == "dest"


def test_small_pure_helpers():
    assert host_allowed("anything.test", [])
    assert host_allowed("a.b.example.com", ["*.example.com"]) and host_allowed("example.com", ["*.example.com"])
    assert not host_allowed("badexample.com", ["*.example.com"])
    assert _parse_content_range("bytes 100-199/1000") == (100, 199, 1000)
    assert _parse_content_range("bytes 0-9/*") == (0, 9, None)
    assert _parse_content_range("garbage") is None
    assert progress_message(1024 * 1024, 4 * 1024 * 1024, 1024 * 1024) == "1.0 MiB of 4.0 MiB · 1.0 MiB/s · ETA 0:03"
    assert progress_message(500, None, None) == "500 B"
