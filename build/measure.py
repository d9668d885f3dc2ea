"""Measure a sidecar command: time from spawn to its first stdout line (``sidecar.ready``) and idle RSS.

    python build/measure.py [--runs N] [--json] -- COMMAND [ARG ...]

``--db`` pointing at a fresh temporary file is appended to COMMAND for every run. Each run spawns
the command with pipes (as an app does), reads the first stdout line, checks that it is
``sidecar.ready``, waits ``--idle`` seconds, reads the resident memory of the process *tree*
(a one-file build is a bootloader parent plus the Python child), then closes stdin and waits for
exit 0. Used by build/freeze.py after a build; the benchmark may call it for source and frozen forms.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(c) for c in text.split()]


def _rss_kib(pid: int) -> int | None:
    """VmRSS of pid and its descendants in KiB (Linux /proc); None where unavailable."""
    total, found, stack = 0, False, [pid]
    while stack:
        p = stack.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    found = True
        except OSError:
            continue
        stack.extend(_children(p))
    return total if found else None


def _cpu_ms(pid: int) -> float | None:
    """User + system CPU time of pid and its descendants so far, in ms (Linux /proc; 10 ms ticks)."""
    total, found, stack = 0, False, [pid]
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    while stack:
        p = stack.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
        found = True
        stack.extend(_children(p))
    return total * 1000 / tick if found else None


def run_once(command: list[str], idle_s: float = 1.0, timeout_s: float = 60.0) -> dict:
    with tempfile.TemporaryDirectory(prefix="sidecar-measure-") as tmp:
        db = os.path.join(tmp, "tasks.db")
        start = time.perf_counter()
        proc = subprocess.Popen([*command, "--db", db], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL)
        try:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            ready_s = time.perf_counter() - start
            cpu = _cpu_ms(proc.pid)
            if not line:
                raise RuntimeError(f"{command[0]} exited ({proc.wait(timeout_s)}) before sidecar.ready")
            message = json.loads(line)
            if message.get("method") != "sidecar.ready":
                raise RuntimeError(f"first line is not sidecar.ready: {line[:200]!r}")
            time.sleep(idle_s)
            rss = _rss_kib(proc.pid)
            proc.stdin.close()  # type: ignore[union-attr]  # EOF: the sidecar stops cleanly
            code = proc.wait(timeout_s)
            if code != 0:
                raise RuntimeError(f"{command[0]} exited {code} after EOF")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()  # type: ignore[union-attr]
    return {"ready_s": ready_s, "rss_kib": rss, "cpu_ms": cpu}


def measure(command: list[str], runs: int = 5, idle_s: float = 1.0) -> dict:
    samples = [run_once(command, idle_s=idle_s) for _ in range(runs)]
    ready = [s["ready_s"] for s in samples]
    rss = [s["rss_kib"] for s in samples if s["rss_kib"] is not None]
    cpu = [s["cpu_ms"] for s in samples if s["cpu_ms"] is not None]
    return {
        "command": command,
        "runs": runs,
        "first_ready_ms": round(ready[0] * 1000, 1),
        "median_ready_ms": round(statistics.median(ready) * 1000, 1),
        "min_ready_ms": round(min(ready) * 1000, 1),
        "median_cpu_ms": round(statistics.median(cpu)) if cpu else None,
        "ready_ms": [round(r * 1000, 1) for r in ready],
        "idle_rss_mib": round(statistics.median(rss) / 1024, 1) if rss else None,
    }


def describe(result: dict) -> str:
    rss = f"{result['idle_rss_mib']} MiB" if result["idle_rss_mib"] is not None else "n/a"
    return (f"spawn -> sidecar.ready: median {result['median_ready_ms']} ms over {result['runs']} runs "
            f"(min {result['min_ready_ms']}, first {result['first_ready_ms']} ms; "
            f"CPU to ready {result['median_cpu_ms']} ms); idle RSS {rss}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--idle", type=float, default=1.0, help="seconds to wait after ready before reading RSS")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a sentence")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARG ...]")
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        p.error("give the command after --, e.g. -- .venv/bin/python -m sidecar")
    result = measure(command, runs=args.runs, idle_s=args.idle)
    print(json.dumps(result) if args.json else describe(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
