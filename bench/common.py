"""Shared helpers for every bench process: clocks, percentiles, /proc readings, result lines.

Every measuring process prints exactly one line ``BENCH-RESULT {json}`` on stdout; the runner
parses it. A process that finds the system under test misbehaving exits non-zero (``fail``).
"""

from __future__ import annotations

import json
import os
import platform
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORK = BENCH / ".work"
RESULT_PREFIX = "BENCH-RESULT "

# CLOCK_MONOTONIC on Linux: comparable across processes (Node's process.hrtime uses it too).
clock = time.perf_counter


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary(values: list[float], digits: int = 3) -> dict[str, Any]:
    """p50/p95/p99/max of a list of samples (same unit as the samples)."""
    if not values:
        return {"n": 0}
    r = lambda v: None if v is None else round(v, digits)  # noqa: E731
    return {
        "n": len(values),
        "p50": r(percentile(values, 50)),
        "p95": r(percentile(values, 95)),
        "p99": r(percentile(values, 99)),
        "max": r(max(values)),
        "min": r(min(values)),
    }


def rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process (all its threads), in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / tick
    except OSError:
        return None


def _threads_run_and_wakeups(pid: int) -> tuple[int, int] | None:
    """Nanoseconds on a CPU and context switches so far, summed over a process's threads
    (schedstat, not :func:`cpu_seconds`: an idle process uses less than its 10 ms clock ticks)."""
    run_ns = switches = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                run_ns += int(f.read().split()[0])
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                        switches += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue  # a thread that ended meanwhile
    return run_ns, switches


def idle_footprint(pid: int, seconds: float = 2.0) -> dict[str, float] | None:
    """What a system costs while it waits for work: CPU (% of one core) and how often its threads
    are switched in (wake-ups per second) over ``seconds`` with nothing to do. A poll loop shows
    here (and also keeps the CPU's caches warm, which is part of how it starts jobs sooner).
    When ``pid`` is this process, the caller's own sleep counts for one wake-up."""
    before = _threads_run_and_wakeups(pid)
    time.sleep(seconds)
    after = _threads_run_and_wakeups(pid)
    if before is None or after is None:
        return None
    return {"cpu_pct": (after[0] - before[0]) / 1e9 / seconds * 100,
            "wakeups_per_s": (after[1] - before[1]) / seconds}


# Probes of the start latency, in every system's run: ``idle`` ones at random moments 5-100 ms
# apart, as an app's clicks meet a queue; ``awake`` ones 0.5-1.5 ms apart, which keeps this host's
# CPUs from halting between them. The pair separates what a system does from what waking a halted
# virtual CPU costs (a poll loop never lets its CPU halt: it pays that cost in idle CPU instead).
# ``busy``: the sidecar's own probes behind a 10,000-task backlog, 0.2-4 ms apart.
PROBE_GAPS_S = {"idle": (0.005, 0.1), "awake": (0.0005, 0.0015), "busy": (0.0002, 0.004)}


def probe_gap(kind: str) -> None:
    time.sleep(random.uniform(*PROBE_GAPS_S[kind]))


def emit(result: dict[str, Any]) -> None:
    sys.stdout.write(RESULT_PREFIX + json.dumps(result) + "\n")
    sys.stdout.flush()


class BenchFailure(Exception):
    """The system under test misbehaved (lost message, task never finished, crash)."""


def fail(message: str) -> None:
    sys.stderr.write(f"BENCH FAILURE: {message}\n")
    sys.stderr.flush()
    raise SystemExit(2)


def fresh_dir(name: str) -> Path:
    import shutil

    path = WORK / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def machine_facts() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    facts: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "sqlite_python": sqlite3.sqlite_version,
    }
    try:
        facts["loadavg_at_start"] = os.getloadavg()
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as f:
            facts["memory_gb"] = round(int(f.readline().split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    try:
        facts["node"] = subprocess.run(["node", "--version"], capture_output=True, text=True,
                                       timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        facts["node"] = None
    return facts


def dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None
