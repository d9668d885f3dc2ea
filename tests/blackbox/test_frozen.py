"""The frozen sidecar (build/freeze.py): starts without Python, says ready, answers system.info.

Which binaries: ``TASK_SIDECAR_FROZEN`` (paths joined with os.pathsep; .ci/frozen sets it after
building, and then every one must exist), else those of build/dist/ that exist, else the module is
skipped. The handler checks need a build with ``--handlers fixture_handlers frozen_handlers``
(as .ci/frozen makes); with ``TASK_SIDECAR_FROZEN`` set they are required, otherwise skipped.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from sidecar import PROTOCOL_VERSION, __version__
from tests.sidecar_client import ROOT, SidecarProcess

EXE = "task-sidecar.exe" if sys.platform == "win32" else "task-sidecar"
DEFAULTS = [ROOT / "build" / "dist" / "task-sidecar" / EXE, ROOT / "build" / "dist" / "onefile" / EXE]
REQUIRED = os.environ.get("TASK_SIDECAR_FROZEN", "")


def binaries() -> list[Path]:
    if REQUIRED:
        return [Path(p).resolve() for p in REQUIRED.split(os.pathsep) if p]
    return [p for p in DEFAULTS if p.exists()]


pytestmark = pytest.mark.skipif(not binaries(), reason="no frozen build (python build/freeze.py) and TASK_SIDECAR_FROZEN unset")


@pytest.fixture(params=binaries(), ids=lambda p: p.parent.name)
def binary(request) -> Path:
    path = request.param
    assert path.is_file(), f"TASK_SIDECAR_FROZEN names {path}, which does not exist"
    assert os.access(path, os.X_OK), f"{path} is not executable"
    return path


@pytest.fixture
def frozen(binary: Path, tmp_path: Path, monkeypatch):
    """Start the binary as an app does: no Python on PYTHONPATH, cwd elsewhere."""
    started: list[SidecarProcess] = []
    monkeypatch.setenv("TASK_SIDECAR_CMD", str(binary))
    # PYTHONPATH/PYTHONHOME would point a non-frozen interpreter at this source tree; the frozen
    # bootloader ignores them. Drop them anyway so the binary has nothing but itself.
    env = {"PYTHONPATH": "", "PYTHONHOME": ""}

    def start(*args: str, db: Path | None = None) -> SidecarProcess:
        sidecar = SidecarProcess(db or tmp_path / "tasks.db", *args, env=env)
        started.append(sidecar)
        return sidecar

    yield start
    for sidecar in started:
        sidecar.stop()


def needs_handlers(sidecar: SidecarProcess, *types: str) -> None:
    have = {h["type"] for h in sidecar.call("system.info")["handlers"]}
    missing = set(types) - have
    if missing:
        if REQUIRED:
            pytest.fail(f"the frozen build lacks handlers {sorted(missing)}: build it with "
                        "--handlers fixture_handlers frozen_handlers --path tests")
        pytest.skip("binary built without --handlers fixture_handlers frozen_handlers")


def test_first_line_is_sidecar_ready(frozen, tmp_path: Path) -> None:
    db = tmp_path / "ready.db"
    sidecar = frozen(db=db)
    assert sidecar.lines[0].startswith(b'{"jsonrpc":"2.0","method":"sidecar.ready"')
    ready = sidecar.ready
    assert ready["version"] == __version__
    assert ready["protocolVersion"] == PROTOCOL_VERSION
    assert isinstance(ready["pid"], int)
    assert Path(ready["dbPath"]).resolve() == db.resolve()
    assert ready["recovered"] == {"requeued": 0, "failed": 0, "cancelled": 0, "paused": 0}
    assert db.exists()


def test_system_info_and_a_task_round_trip(frozen) -> None:
    sidecar = frozen()
    info = sidecar.call("system.info")
    assert info["version"] == __version__
    assert info["protocolVersion"] == PROTOCOL_VERSION
    assert info["pid"] == sidecar.ready["pid"]
    handlers = {h["type"]: h for h in info["handlers"]}
    assert {"demo.noop", "demo.sleep", "demo.fail"} <= set(handlers)
    assert handlers["demo.sleep"]["detailsSchema"]["type"] == "object"  # jsonschema data made it in
    assert sidecar.call("system.ping") == "pong"
    task = sidecar.call("tasks.create", {"type": "demo.sleep", "details": {"seconds": 0.2, "steps": 2}})
    assert sidecar.wait_status(task["id"], "COMPLETED")["result"] == {"steps": 2, "resumedFrom": 0}
    sidecar.call("system.shutdown")
    assert sidecar.wait_exit() == 0


def test_app_handler_modules_frozen_in_load_with_dash_dash_handlers(frozen, binary: Path) -> None:
    sidecar = frozen("--handlers", "fixture_handlers", "--handlers", "frozen_handlers")
    needs_handlers(sidecar, "frozen.env", "test.noisy", "test.pymalloc_blocks")
    task = sidecar.call("tasks.create", {"type": "frozen.env"})
    env = sidecar.wait_status(task["id"], "COMPLETED")["result"]
    assert env["frozen"] is True
    # only the bundle on sys.path: PYTHONPATH (this client sets it to the source tree and tests/)
    # is ignored by the bootloader, and --handlers does not add the working directory when frozen
    assert not {Path(p).resolve() for p in env["path"]} & {ROOT.resolve(), (ROOT / "tests").resolve()}, env["path"]
    assert env["utf8Mode"] == 1  # --python-option "X utf8"
    assert env["stdoutRaw"] == "FileIO" and env["stdoutBuffer"] == "FileIO"  # --python-option u
    assert env["multiprocessing"] is False  # excluded: no runtime hook at start-up
    if sys.platform.startswith("linux"):  # the bootloader ignores PYTHONMALLOC; the sidecar switches
        task = sidecar.call("tasks.create", {"type": "test.pymalloc_blocks"})
        assert sidecar.wait_status(task["id"], "COMPLETED")["result"]["blocks"] < 10_000  # 100,000 with pymalloc


def test_stray_output_of_a_frozen_handler_and_its_child_goes_to_stderr(frozen) -> None:
    sidecar = frozen("--handlers", "frozen_handlers")
    needs_handlers(sidecar, "frozen.noisy")
    task = sidecar.call("tasks.create", {"type": "frozen.noisy"})
    sidecar.wait_status(task["id"], "COMPLETED")
    sidecar.call("system.shutdown")
    assert sidecar.wait_exit() == 0
    assert all(line.startswith(b"{") or line.startswith(b"[") for line in sidecar.lines)
    for text in ("stray print from a frozen handler", "stray sys.stdout write", "raw write to fd 1",
                 f"task-sidecar {__version__}"):
        assert text in sidecar.stderr


def test_a_handler_module_not_frozen_in_fails_loudly(binary: Path, tmp_path: Path) -> None:
    done = subprocess.run([str(binary), "--db", str(tmp_path / "t.db"), "--handlers", "not_frozen_in_here"],
                          stdin=subprocess.DEVNULL, capture_output=True, cwd=tmp_path, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "tests")})
    assert done.returncode == 5
    assert done.stdout == b""
    assert b"--handlers not_frozen_in_here: no module named 'not_frozen_in_here'" in done.stderr


def test_a_frozen_sidecar_refuses_a_handler_file(binary: Path, tmp_path: Path) -> None:
    # from source --handlers takes a .py path; a shipped binary must never turn a file into code
    (tmp_path / "dropped_handlers.py").write_text(
        "from sidecar.handlers import handler\n"
        "@handler('dropped.file')\n"
        "def dropped(ctx):\n    return {}\n"
    )
    done = subprocess.run([str(binary), "--db", str(tmp_path / "t.db"), "--handlers", str(tmp_path / "dropped_handlers.py")],
                          stdin=subprocess.DEVNULL, capture_output=True, cwd=tmp_path, timeout=60)
    assert done.returncode == 5 and done.stdout == b""
    assert b"a frozen build loads only handler modules frozen into it, never a file" in done.stderr
    assert not (tmp_path / "t.db").exists()


def test_a_frozen_sidecar_does_not_import_from_its_working_directory(binary: Path, tmp_path: Path) -> None:
    # An app's sidecar inherits whatever cwd the app has; a stray .py there must not become code.
    (tmp_path / "frozen_handlers.py").write_text(
        "from sidecar.handlers import handler\n"
        "@handler('shadow.from_cwd')\n"
        "def shadow(ctx):\n    return {}\n"
    )
    proc = subprocess.Popen([str(binary), "--db", str(tmp_path / "t.db"), "--handlers", "frozen_handlers"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=tmp_path)
    try:
        ready = proc.stdout.readline()
        assert b"sidecar.ready" in ready
        proc.stdin.write(b'{"jsonrpc":"2.0","id":1,"method":"system.info"}\n')
        proc.stdin.flush()
        info = orjson.loads(proc.stdout.readline())["result"]
    finally:
        proc.stdin.close()
        proc.wait(30)
        proc.stdout.close()
    types = {h["type"] for h in info["handlers"]}
    assert "shadow.from_cwd" not in types
