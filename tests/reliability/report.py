"""Run the reliability battery and write its results table to docs/reliability.md.

    .venv/bin/python -m tests.reliability.report            # full size (about an hour: 30-minute soak)
    .venv/bin/python -m tests.reliability.report --scale ci # the reduced CI size (about 3 minutes)
    .venv/bin/python -m tests.reliability.report --merge -k load   # re-run one part, keep the rest

Runs ``pytest tests/reliability`` with ``RELIABILITY_SCALE`` set and ``RELIABILITY_RESULTS`` pointing
at a JSON-lines file the tests append their numbers to, then renders that file, the pass/xfail
counts and the known bugs (strict-xfail reasons) as Markdown, with the raw numbers beside it in
docs/reliability.json. Extra arguments go to pytest (e.g. ``-k crash_loop``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "reliability.md"
RAW = ROOT / "docs" / "reliability.json"  # the numbers behind the table, for --merge and for diffs


def run(scale: str, extra: list[str]) -> tuple[int, list[dict[str, Any]], str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "results.jsonl"
        junit = Path(tmp) / "junit.xml"
        env = {**os.environ, "RELIABILITY_SCALE": scale, "RELIABILITY_RESULTS": str(results)}
        timeout = ["-o", "timeout=7200"] if scale == "full" else []
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-rxXfs", "-p", "no:cacheprovider", *timeout,
             f"--junitxml={junit}", "tests/reliability", *extra],
            cwd=ROOT, env=env, text=True, capture_output=True,
        )
        elapsed = time.monotonic() - started
        sys.stdout.write(proc.stdout[-6000:])
        sys.stderr.write(proc.stderr[-3000:])
        entries = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    return proc.returncode, entries, proc.stdout, elapsed


def fmt(value: Any) -> str:
    if isinstance(value, float):
        if abs(value) < 10:
            return f"{value:.3g}"
        return f"{value:,.1f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, (dict, list)):
        return "`" + json.dumps(value, separators=(", ", ": ")) + "`"
    return str(value)


def latest(entries: list[dict[str, Any]], test: str) -> dict[str, Any] | None:
    found = [e for e in entries if e["test"] == test]
    return found[-1] if found else None


def kv_table(entry: dict[str, Any], skip: tuple[str, ...] = ("test", "scale", "at")) -> list[str]:
    lines = ["| measure | value |", "|---|---:|"]
    for key, value in entry.items():
        if key in skip or isinstance(value, dict) and {"p50_ms", "p99_ms"} <= set(value):
            continue
        lines.append(f"| {key.replace('_', ' ')} | {fmt(value)} |")
    return lines


def current_commit() -> str:
    # the last commit that changed the sidecar (what the battery measures), not HEAD
    head = subprocess.run(["git", "log", "-1", "--format=%h", "--", "sidecar"], cwd=ROOT, capture_output=True,
                          text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "sidecar"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return head + (" + uncommitted sidecar/ changes" if dirty else "")


def run_record(scale: str, code: int, output: str, elapsed: float, extra: list[str], commit: str = "?") -> dict[str, Any]:
    summary = next((line for line in reversed(output.splitlines()) if re.search(r"\d+ (passed|failed)", line)), "")
    return {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": commit,
        "scale": scale,
        "args": extra,
        "exit_code": code,
        "summary": summary.strip("= "),
        "minutes": round(elapsed / 60, 1),
        "findings": [line for line in output.splitlines() if line.startswith(("XFAIL", "XPASS", "FAILED", "ERROR", "SKIPPED"))],
    }


def render(entries: list[dict[str, Any]], runs: list[dict[str, Any]], notes: list[str] | None = None) -> str:
    scale = runs[-1]["scale"]
    out = [
        "# Reliability results",
        "",
        f"Written by `python -m tests.reliability.report{'' if scale == 'full' else ' --scale ' + scale}` "
        f"on {platform.machine()} with {os.cpu_count()} CPUs, Python {platform.python_version()} (a shared, "
        "loaded 2-core machine: treat timings as upper bounds). Client-side timings over the real stdio "
        "pipes, JSON encoding and decoding included. Raw numbers: [reliability.json](reliability.json).",
        "",
        "| finished | sidecar/ at | scale | selection | pytest | minutes |",
        "|---|---|---|---|---|---:|",
    ]
    for run_ in runs:
        selection = " ".join(run_["args"]) or "all"
        out.append(f"| {run_['when']} | {run_.get('commit', '?')} | {run_['scale']} | `{selection}` | `{run_['summary']}` (exit {run_['exit_code']}) | {run_['minutes']} |")
    out.append("")
    crash = latest(entries, "crash_loop")
    if crash:
        out += ["## Crash loop (SIGKILL at random moments)", "", *kv_table(crash), ""]
    faults = [e for e in entries if e["test"].startswith("fault_")]
    if faults:
        out += ["## Faults", "", "| fault | numbers |", "|---|---|"]
        for e in faults:
            out.append(f"| {e['test'][6:].replace('_', ' ')} | "
                       + ", ".join(f"{k.replace('_', ' ')} {fmt(v)}" for k, v in e.items() if k not in ("test", "scale", "at"))
                       + " |")
        out.append("")
    hostile = [e for e in entries if e["test"].startswith("hostile")]
    if hostile:
        out += ["## Hostile input", ""]
        for e in hostile:
            out += [f"**{e['test'].replace('_', ' ')}**", "", *kv_table(e), ""]
    load = latest(entries, "load")
    if load:
        out += [f"## Load ({load['tasks']:,} tasks in the database)", "", *kv_table(load), "",
                "| operation | samples | p50 ms | p99 ms | max ms |", "|---|---:|---:|---:|---:|"]
        for key, value in load.items():
            if isinstance(value, dict) and "p50_ms" in value:
                out.append(f"| {key.replace('_', ' ')} | {value['n']} | {value['p50_ms']} | {value['p99_ms']} | {value['max_ms']} |")
        for extra in (e for e in entries if e["test"].startswith("load_")):
            for key, value in extra.items():
                if isinstance(value, dict) and "p50_ms" in value:
                    out.append(f"| {extra['test'][5:].replace('_', ' ')}: {key.replace('_', ' ')} "
                               f"({extra.get('tasks', 0):,} tasks) | {value['n']} | {value['p50_ms']} | {value['p99_ms']} | {value['max_ms']} |")
        out.append("")
    soak = latest(entries, "soak")
    if soak:
        out += ["## Memory soak (VmRSS of the sidecar)", "", *kv_table(soak), ""]
    security = [e for e in entries if e["test"].startswith("security")]
    if security:
        out += ["## Security checks", "", "See [security.md](security.md) for the claims these back.", ""]
        for e in security:
            out += [f"**{e['test'].replace('_', ' ')}**", "", *kv_table(e), ""]
    if notes:  # written by hand into the raw file ("notes": [...]); kept by --merge
        out += ["## Notes", ""]
        for note in notes:
            out += [note, ""]
    findings = list(dict.fromkeys(line for run_ in runs for line in run_["findings"]))
    if findings:
        out += ["## Known bugs and findings", "",
                "Strict xfail tests: each turns into a failure (XPASS) once fixed. FAILED lines are failures of the run.", ""]
        out += [f"* {line}" for line in findings]
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=("full", "ci"), default="full")
    parser.add_argument("--output", type=Path, default=DOC)
    parser.add_argument("--raw", type=Path, default=RAW, help="where the raw numbers go (JSON)")
    parser.add_argument("--render-only", action="store_true", help="only re-render the table from the raw file")
    parser.add_argument("--merge", action="store_true",
                        help="keep the numbers (and run lines) of tests not re-run from the existing raw file")
    args, extra = parser.parse_known_args(argv)
    if args.render_only:
        raw = json.loads(args.raw.read_text())
        args.output.write_text(render(raw["entries"], raw["runs"], raw.get("notes")) + "\n")
        print(f"wrote {args.output}")
        return 0
    commit = current_commit()
    code, entries, output, elapsed = run(args.scale, extra)
    after = current_commit()
    if after != commit:  # sidecar processes are spawned from the work tree: say that it moved
        commit = f"{commit} → {after} (changed during the run)"
    runs = [run_record(args.scale, code, output, elapsed, extra, commit)]
    notes = None
    if args.merge and args.raw.exists():
        old = json.loads(args.raw.read_text())
        notes = old.get("notes")
        fresh = {e["test"] for e in entries}
        entries = [e for e in old["entries"] if e["test"] not in fresh] + entries
        runs = old["runs"] + runs
    raw_out: dict[str, Any] = {"entries": entries, "runs": runs}
    if notes:
        raw_out["notes"] = notes
    args.raw.write_text(json.dumps(raw_out, indent=1) + "\n")
    args.output.write_text(render(entries, runs, notes) + "\n")
    print(f"wrote {args.output} and {args.raw}")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
