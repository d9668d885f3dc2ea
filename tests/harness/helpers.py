"""Helpers for the harness tests: how to start the harness, and where things are."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = REPO / "tests" / "scenarios"
FAKE_SIDECAR = Path(__file__).resolve().parent / "fake_sidecar.py"


def harness_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("TASK_SIDECAR_DB", None)
    env["PYTHONUTF8"] = "1"
    # this checkout's harness even when run from another directory (an editable install of the
    # package may point at a different checkout)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))])
    return env


def run_harness(
    *args: str, timeout: float = 60, stdin: str | None = None, cwd: str | os.PathLike[str] = REPO
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m sidecar.harness ARGS`` to the end, stdout and stderr captured (so not a tty)."""
    return subprocess.run(
        [sys.executable, "-m", "sidecar.harness", *args],
        cwd=cwd,
        env=harness_env(),
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=timeout,
    )
