"""Coverage-guided fuzzing (atheris) of the real server loop: see fuzz_protocol.py for what is
checked on every input. Runs for a bounded time in its own process; the database it leaves must be
consistent. Skipped where atheris is not installed (it ships wheels for Linux x86-64 only)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.reliability.common import consistency_problems, record, scaled
from tests.sidecar_client import ROOT

pytest.importorskip("atheris")


def test_coverage_guided_fuzzing_finds_no_crash_hang_or_inconsistency(tmp_path: Path) -> None:
    seconds = scaled(20, 600)
    db = tmp_path / "fuzz.db"
    result = subprocess.run(
        [sys.executable, "-m", "tests.reliability.fuzz_protocol", f"-max_total_time={seconds}",
         "-rss_limit_mb=4096", f"-artifact_prefix={tmp_path}/", "-print_final_stats=1"],
        cwd=ROOT, env=dict(os.environ, FUZZ_DB=str(db)), capture_output=True, text=True,
        timeout=seconds + 120,
    )
    log = result.stderr
    # atheris prints an uncaught exception (a failed check) on stdout, libFuzzer's log is stderr
    assert result.returncode == 0, f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{log[-3000:]}"
    runs = int(re.search(r"Done (\d+) runs", log).group(1))  # type: ignore[union-attr]
    coverage = [int(c) for c in re.findall(r"cov: (\d+)", log)]
    assert runs > 0 and coverage
    problems = consistency_problems(db)
    assert not problems, problems
    record("hostile_input_atheris", seconds=seconds, runs=runs, edges_covered=max(coverage),
           crashes=len(list(tmp_path.glob("crash-*"))))
