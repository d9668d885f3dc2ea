"""build/freeze.py refuses, before freezing anything, handler modules the sidecar would refuse.

Needs PyInstaller (.ci/frozen installs it before running tests/blackbox); skipped without it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.blackbox.test_lifecycle import BROKEN_SCHEMA_FILE
from tests.sidecar_client import ROOT

pytest.importorskip("PyInstaller")


def test_a_handler_module_with_a_broken_details_schema_fails_the_build(tmp_path: Path) -> None:
    # The frozen sidecar takes its handlers' schemas as checked (they were, here), so a broken one
    # must stop the build rather than ship.
    (tmp_path / "bad_schema_app_handlers.py").write_text(BROKEN_SCHEMA_FILE)
    result = subprocess.run(
        [sys.executable, str(ROOT / "build" / "freeze.py"), "--handlers", "bad_schema_app_handlers",
         "--path", str(tmp_path), "--distpath", str(tmp_path / "dist"), "--workpath", str(tmp_path / "work"),
         "--runs", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode != 0
    assert "the handler modules do not load" in result.stderr
    assert "--handlers bad_schema_app_handlers: loading it raised SchemaError: 'strng' is not valid" in result.stderr
    assert not list((tmp_path / "dist").rglob("task-sidecar*")), "nothing is frozen"
