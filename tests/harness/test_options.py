"""The harness's own options: where the sidecar runs, and clear errors for ones that cannot work."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import pytest

from .helpers import FAKE_SIDECAR, REPO, run_harness

HANDLERS = '''
from sidecar.handlers import handler

@handler("myapp.hello")
def hello(ctx):
    return {"hi": True}
'''


def test_relative_paths_resolve_in_the_users_directory(tmp_path: Path) -> None:
    (tmp_path / "myh.py").write_text(HANDLERS, encoding="utf-8")
    script = "create myapp.hello\nlist --type=myapp.hello\n"
    for handlers in ("myh.py", "myh"):  # a file, and a module importable from the directory
        db = f"rel-{handlers.replace('.', '-')}.db"
        proc = run_harness("--db", db, f"--sidecar-arg=--handlers={handlers}", stdin=script, cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "created" in proc.stdout and "1 task(s)" in proc.stdout
        assert (tmp_path / db).exists()
        assert not (REPO / db).exists()


def test_a_relative_cmd_is_relative_to_the_users_directory(tmp_path: Path) -> None:
    shutil.copy(FAKE_SIDECAR, tmp_path / "fake.py")
    proc = run_harness("--cmd", f"{sys.executable} fake.py", stdin="ping\n", cwd=tmp_path)
    assert proc.returncode == 0 and "pong" in proc.stdout, proc.stdout + proc.stderr
    prog = tmp_path / "bin" / "fake"
    prog.parent.mkdir()
    prog.write_text(f"#!{sys.executable}\n" + FAKE_SIDECAR.read_text(encoding="utf-8"), encoding="utf-8")
    prog.chmod(0o755)
    proc = run_harness("--cmd", "bin/fake", stdin="ping\n", cwd=tmp_path)
    assert proc.returncode == 0 and "pong" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "cmd, reason",
    [
        ("/nonexistent/prog", "cannot start /nonexistent/prog: No such file or directory"),
        (str(REPO / "README.md"), "README.md: Permission denied"),
        ("python3 -c 'x", "cannot split it like a shell would"),
    ],
)
def test_a_cmd_that_cannot_start_is_one_line_and_exit_3(cmd: str, reason: str) -> None:
    proc = run_harness("--cmd", cmd, stdin="ping\n")
    assert proc.returncode == 3, proc.stderr
    assert reason in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("option", ["--record", "--stderr-log"])
def test_an_output_file_that_cannot_be_written_is_a_usage_error(tmp_path: Path, option: str) -> None:
    path = tmp_path / "nodir" / "x.out"
    proc = run_harness(option, str(path), stdin="ping\n")
    assert proc.returncode == 2, proc.stderr
    assert f"{option} {path}: cannot write it" in proc.stderr and "Traceback" not in proc.stderr


def test_a_sidecar_that_never_gets_ready_is_stopped_at_once() -> None:
    never_ready = f"{sys.executable} -c 'import time; time.sleep(60)'"
    started = time.monotonic()
    proc = run_harness("--cmd", never_ready, "--ready-timeout", "1", stdin="ping\n")
    elapsed = time.monotonic() - started
    assert proc.returncode == 3 and "no sidecar.ready within 1 s" in proc.stderr
    assert elapsed < 6, f"took {elapsed:.1f} s: it waited for a sidecar that was never ready"
