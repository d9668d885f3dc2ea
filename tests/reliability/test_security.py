"""Security claims of docs/security.md, each proven here against the real process (or, for the
Electron side, by the electron-bridge tests named in that document).
"""

from __future__ import annotations

import http.server
import os
import re
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.common import ROOT, record, sidecar_via_shell
from tests.sidecar_client import SidecarProcess

# ---------------------------------------------------------------- no network listener


def sockets_of(pid: int) -> dict[str, list[tuple[str, str, str]]]:
    """The sockets process ``pid`` holds, by protocol: (local address, remote address, state)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        match = re.fullmatch(r"socket:\[(\d+)\]", target)
        if match:
            inodes.add(match.group(1))
    found: dict[str, list[tuple[str, str, str]]] = {}
    for proto in ("tcp", "tcp6", "udp", "udp6", "raw", "raw6"):
        path = Path(f"/proc/{pid}/net/{proto}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                found.setdefault(proto, []).append((fields[1], fields[2], fields[3]))
    unix = Path(f"/proc/{pid}/net/unix")
    for line in unix.read_text().splitlines()[1:]:
        fields = line.split()
        if fields[6] in inodes:
            listening = int(fields[3], 16) & 0x00010000  # __SO_ACCEPTCON
            found.setdefault("unix", []).append((fields[7] if len(fields) > 7 else "", "", "LISTEN" if listening else fields[5]))
    found["_inodes"] = [(i, "", "") for i in sorted(inodes)]
    return found


class SlowFile(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Length", str(20 * 4096))
        self.end_headers()
        for _ in range(20):
            self.wfile.write(b"x" * 4096)
            self.wfile.flush()
            time.sleep(0.1)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def slow_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowFile)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/file.bin"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_sidecar_has_no_listening_socket_even_while_it_downloads(start_sidecar, tmp_path: Path, slow_server: str) -> None:
    downloads = tmp_path / "dl"
    downloads.mkdir()
    sidecar = start_sidecar("--allow-dir", str(downloads), "--allow-host", "127.0.0.1",
                            "--allow-program", f"python={sys.executable}")
    pid = sidecar.proc.pid
    idle = sockets_of(pid)
    assert {k: v for k, v in idle.items() if k != "_inodes"} == {}, idle  # not one socket of any kind at rest
    task = sidecar.call("tasks.create", {"type": "http.download", "details": {"url": slow_server, "dest": str(downloads / "f.bin")}})
    sidecar.call("tasks.create", {"type": "demo.sleep", "details": {"seconds": 0.5, "steps": 5}})
    sidecar.call("tasks.create", {"type": "process.run", "details": {"program": "python", "args": ["-c", "import time; time.sleep(0.5)"]}})
    sidecar.wait_status(task["id"], "RUNNING")
    seen: list[dict] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        now = sockets_of(pid)
        seen.append(now)
        for proto in ("tcp", "tcp6"):
            for local, remote, state in now.get(proto, []):
                assert state != "0A", f"LISTEN socket {proto} {local}"
                assert remote.endswith(":%04X" % int(slow_server.split(":")[2].split("/")[0])), (proto, local, remote)
        assert not now.get("udp") and not now.get("udp6") and not now.get("raw") and not now.get("raw6"), now
        assert all(state != "LISTEN" for *_, state in now.get("unix", [])), now
        if sidecar.updates(task["id"])[-1]["status"] == "COMPLETED":
            break
        time.sleep(0.05)
    assert sidecar.updates(task["id"])[-1]["status"] == "COMPLETED"
    outgoing = sum(1 for s in seen if s.get("tcp"))
    ss = subprocess.run(["ss", "-lpnH"], capture_output=True, text=True) if _has("ss") else None
    if ss is not None and ss.returncode == 0:
        assert f"pid={pid}," not in ss.stdout, ss.stdout
    record("security_no_listener", samples=len(seen), samples_with_outgoing_tcp=outgoing, listening=0)


def _has(program: str) -> bool:
    from shutil import which

    return which(program) is not None


# ---------------------------------------------------------------- the database file's permissions


def modes(db: Path) -> dict[str, str]:
    found = {}
    for path in [db.parent, db, Path(f"{db}-wal"), Path(f"{db}-shm"), Path(f"{db}.lock")]:
        if path.exists():
            found[path.name if path != db.parent else "(directory)"] = oct(stat.S_IMODE(path.stat().st_mode))
    return found


def start_with_umask(umask: str, db: Path) -> tuple[SidecarProcess, dict[str, str]]:
    with sidecar_via_shell(f"umask {umask}"):
        sidecar = SidecarProcess(db, "--log-level", "WARNING")
    task = sidecar.call("tasks.create", {"type": "demo.noop"})
    sidecar.wait_status(task["id"], "COMPLETED")
    return sidecar, modes(db)


def test_database_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    """The database, its -wal/-shm and lock files are 0600 and a directory the sidecar creates is
    0700, under the usual umask 022 as under 077. (They followed the umask, so 0644/0755 under 022:
    world-readable; fixed in 86869a3.)"""
    results = {}
    for umask in ("022", "077", "000"):
        db = tmp_path / f"u{umask}" / "sub" / "tasks.db"  # the sidecar creates the missing "sub"
        sidecar, found = start_with_umask(umask, db)
        try:
            results[umask] = found
        finally:
            assert sidecar.stop() == 0
    record("security_db_permissions", **{f"umask_{k}": v for k, v in results.items()})
    for umask, found in results.items():
        assert {"tasks.db", "tasks.db-wal", "tasks.db-shm", "tasks.db.lock", "(directory)"} <= set(found), found
        for name, mode in found.items():
            assert int(mode, 8) & 0o077 == 0, f"umask {umask}: {name} is {mode}"


def test_an_existing_database_keeps_its_mode(tmp_path: Path) -> None:
    """The sidecar does not chmod a file the app created: an app that wants to share it may."""
    db = tmp_path / "shared.db"
    db.touch(mode=0o640)
    db.chmod(0o640)
    sidecar, found = start_with_umask("022", db)
    try:
        assert found["shared.db"] == "0o640", found
    finally:
        sidecar.stop()


# ---------------------------------------------------------------- what a renderer can ask for


def renderer_default_methods() -> tuple[list[str], list[str]]:
    text = (ROOT / "electron-bridge" / "src" / "ipc-contract.ts").read_text()

    def array(name: str) -> list[str]:
        body = re.search(rf"{name} = \[(.*?)\]", text, re.S)
        assert body, name
        return re.findall(r"'([a-zA-Z.]+)'", body.group(1))

    return array("DEFAULT_RENDERER_METHODS"), array("DESTRUCTIVE_RENDERER_METHODS")


def test_the_renderer_default_allow_list_is_task_methods_only(sidecar: SidecarProcess) -> None:
    default, destructive = renderer_default_methods()
    names = {m["name"] for m in sidecar.call("rpc.discover")["methods"]}
    assert set(default) <= names and set(destructive) <= names
    assert all(m.startswith("tasks.") for m in default + destructive)
    assert not {"system.shutdown", "rpc.discover", "queue.pause", "queue.setConcurrency", "tasks.delete", "tasks.prune"} & set(default)
    record("security_renderer_surface", default=default, opt_in=destructive)


def test_every_handler_declares_a_details_schema_and_it_is_enforced_before_storage(sidecar: SidecarProcess) -> None:
    handlers = sidecar.call("system.info")["handlers"]
    assert all(h["detailsSchema"] for h in handlers), [h["type"] for h in handlers if not h["detailsSchema"]]
    for h in handlers:
        err = sidecar.error("tasks.create", {"type": h["type"], "details": []})
        assert err.code == -32602 and err.data["field"] == "details", (h["type"], err)
        if h["detailsSchema"].get("additionalProperties") is False:
            err = sidecar.error("tasks.create", {"type": h["type"], "details": {"zzInjected": 1}})
            assert err.code == -32602 and err.data["field"].startswith("details"), (h["type"], err)
    assert sidecar.call("tasks.stats")["total"] == 0  # nothing refused reached the database


def test_process_run_takes_only_allow_listed_names_never_paths_or_shells(start_sidecar, tmp_path: Path) -> None:
    inside = tmp_path / "work"
    inside.mkdir()
    sidecar = start_sidecar("--allow-program", f"python={sys.executable}", "--allow-dir", str(inside))
    refused = [
        ({"program": sys.executable}, "details.program"),  # a path, even of an allowed program
        ({"program": "/bin/sh", "args": ["-c", "id"]}, "details.program"),
        ({"program": "python;id"}, "details.program"),
        ({"program": "python", "cwd": "/"}, "details.cwd"),
        ({"program": "python", "cwd": str(inside / ".." / "..")}, "details.cwd"),
        ({"program": "python", "cwd": "relative"}, "details.cwd"),
        ({"program": "python", "env": {"PATH": "/tmp"}}, "details.env.PATH"),
        ({"program": "python", "env": {"PYTHONSTARTUP": "/tmp/x.py"}}, "details.env.PYTHONSTARTUP"),
        ({"program": "python", "env": {"ld_preload": "/tmp/x.so"}}, "details.env.ld_preload"),
        ({"program": "python", "env": {"NODE_OPTIONS": "--require /tmp/x"}}, "details.env.NODE_OPTIONS"),
        ({"program": "python", "args": ["a\x00b"]}, "details.args"),
    ]
    for details, field in refused:
        err = sidecar.error("tasks.create", {"type": "process.run", "details": details})
        assert err.code == -32602 and err.data["field"] == field, (details, err.data)
    bare = start_sidecar(db=tmp_path / "bare.db")  # no --allow-program: process.run refuses everything
    err = bare.error("tasks.create", {"type": "process.run", "details": {"program": "python"}})
    assert err.code == -32602 and "--allow-program" in err.message
    assert sidecar.call("tasks.stats")["total"] == 0 and bare.call("tasks.stats")["total"] == 0


def test_http_download_refuses_other_schemes_and_hosts(start_sidecar, tmp_path: Path) -> None:
    downloads = tmp_path / "dl"
    downloads.mkdir()
    sidecar = start_sidecar("--allow-dir", str(downloads), "--allow-host", "media.example.com")
    dest = str(downloads / "x.bin")
    for url in ["file:///etc/passwd", "ftp://media.example.com/x", "gopher://media.example.com/", "http:///x",
                "https://example.com/x", "http://127.0.0.1/x", "http://169.254.169.254/latest/meta-data",
                "http://media.example.com.evil.test/x", "http://media.example.com:99999/x"]:
        err = sidecar.error("tasks.create", {"type": "http.download", "details": {"url": url, "dest": dest}})
        assert err.code == -32602 and err.data["field"] == "details.url", (url, err.data)
    for name in ["Host", "Range", "Content-Length", "X-Evil\r\nInjected"]:
        err = sidecar.error("tasks.create", {"type": "http.download", "details": {
            "url": "https://media.example.com/x", "dest": dest, "headers": {name: "v"}}})
        assert err.code == -32602 and err.data["field"].startswith("details.headers"), (name, err.data)
    assert sidecar.call("tasks.stats")["total"] == 0


def test_without_allow_host_a_download_may_target_loopback(start_sidecar, tmp_path: Path) -> None:
    """The documented default (no --allow-host: any http(s) host) includes 127.0.0.1 and link-local
    addresses: a renderer able to create http.download tasks can make the sidecar GET local services.
    docs/security.md recommends always passing --allow-host; this test pins the current behaviour."""
    downloads = tmp_path / "dl"
    downloads.mkdir()
    sidecar = start_sidecar("--allow-dir", str(downloads))
    for url in ["http://127.0.0.1:9/x", "http://169.254.169.254/latest/meta-data", "http://[::1]:9/x"]:
        task = sidecar.call("tasks.create", {"type": "http.download", "details": {"url": url, "dest": str(downloads / "x")}})
        assert task["status"] == "QUEUED"
        sidecar.call("tasks.cancel", {"id": task["id"]})

