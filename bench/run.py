"""The benchmark runner: every system in its own process, order rotated between rounds, then one
report (``bench/results.md``) and its JSON twin (``bench/results.json``).

    bash bench/run            # full run (installs first), < 20 min
    bash bench/run --quick    # small N, 50k-row scale DB, no DBOS; < 2 min once installed

Exit status: 0 when every sidecar measurement ran and the sidecar behaved (targets missed are
reported, never fatal); 1 when the sidecar misbehaved or crashed (a peer failing is only reported).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import BENCH, RESULT_PREFIX, ROOT, WORK, dist_version, machine_facts
from bench import report

PY = sys.executable
NODE_DIR = BENCH / "node"


class Plan:
    def __init__(self, quick: bool, with_dbos: bool) -> None:
        self.quick = quick
        self.n = 1000 if quick else 5000
        self.rounds = 2 if quick else 5  # medians of 5: one slow round on a shared host moves none
        self.peer_samples = 8 if quick else 20
        self.plainjob_samples = 4 if quick else 12
        self.dbos = with_dbos
        self.dbos_n = 200 if quick else 500
        self.latency_samples = 40 if quick else 300
        self.queued = 1000 if quick else 10_000
        self.fanout_seconds = 1.5 if quick else 3.0
        self.createmany_rounds = 1 if quick else 7  # 3 gave medians from 129 to 178 ms on the same code
        self.startup_runs = 3 if quick else 7
        self.rss_n = 3000 if quick else 100_000
        self.big_rows = 50_000 if quick else 1_000_000
        self.scale_samples = 30 if quick else 200
        self.deep = 5000 if quick else 100_000
        self.prune_calls = 5 if quick else 20
        self.pipe_seq = 1000 if quick else 5000
        self.pipe_idle = 30 if quick else 100
        self.idle_s = 1.0 if quick else 2.0  # each system's footprint while it waits for work
        self.pipe_n = 5000 if quick else 50_000


def measure(label: str, cmd: list[str], timeout: float, log: Path) -> dict[str, Any]:
    """Run one measuring process; its BENCH-RESULT line, or an error record."""
    t0 = time.monotonic()
    load = os.getloadavg()[0]
    sys.stderr.write(f"  {label} ... ")
    sys.stderr.flush()
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONDONTWRITEBYTECODE="1")
    try:
        proc = subprocess.run(cmd, cwd=str(ROOT), capture_output=True, text=True, timeout=timeout, env=env)
        out, err, rc = proc.stdout, proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = (exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")) + f"\ntimed out after {timeout}s"
        rc = -1
    wall = time.monotonic() - t0
    with open(log, "a") as f:
        f.write(f"===== {label}: {' '.join(cmd)} (rc {rc}, {wall:.1f}s)\n{out}\n{err}\n")
    result = None
    for line in out.splitlines():
        if line.startswith(RESULT_PREFIX):
            result = json.loads(line[len(RESULT_PREFIX):])
    if rc != 0 or result is None:
        tail = [l for l in err.strip().splitlines() if l.strip()][-3:]
        reason = next((l for l in reversed(tail) if "BENCH FAILURE" in l), tail[-1] if tail else f"exit {rc}")
        sys.stderr.write(f"FAILED ({wall:.1f}s): {reason}\n")
        return {"error": reason, "rc": rc, "wall_s": wall}
    sys.stderr.write(f"ok ({wall:.1f}s)\n")
    result["wall_s"] = wall
    result["loadavg_1m_before"] = load
    return result


PYMALLOC_VARIANT = report.PYMALLOC_VARIANT
ONE_CORE_VARIANT = report.ONE_CORE_VARIANT
STDIO_FLOOR = report.STDIO_FLOOR
CONTRACT_FLOOR = report.CONTRACT_FLOOR


def one_core() -> int | None:
    """The CPU for the one-core variant (the last this process may use), None on a one-CPU machine
    or where affinity cannot be set."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None
    return cpus[-1] if len(cpus) > 1 else None


def sb(*args: Any) -> list[str]:
    return [PY, "-m", "bench.sidecar_bench", *map(str, args)]


def peer_cmds(plan: Plan) -> dict[str, tuple[list[str], float]]:
    n, s = plan.n, plan.peer_samples
    common = ["--n", str(n), "--workers", "4", "--samples", str(s), "--idle-s", str(plan.idle_s)]
    drain = ("drain", "--n", n, "--samples", s, "--idle-s", plan.idle_s)
    cmds: dict[str, tuple[list[str], float]] = {
        "task-sidecar": (sb(*drain), 300),
        # the same sidecar keeping Python's own allocator: what its default (malloc) costs and buys
        PYMALLOC_VARIANT: (["env", "PYTHONMALLOC=pymalloc", *sb(*drain)], 300),
        "huey": ([PY, "-m", "bench.peers.huey_peer", *common], 300),
        "persist-queue": ([PY, "-m", "bench.peers.persistqueue_peer", *common], 300),
        "litequeue": ([PY, "-m", "bench.peers.litequeue_peer", *common], 300),
        "plainjob": (["node", str(NODE_DIR / "plainjob_peer.mjs"), "--n", str(n), "--workers", "4",
                      "--samples", str(plan.plainjob_samples), "--idle-ms", str(int(plan.idle_s * 1000)),
                      "--dir", str(WORK / "plainjob")], 300),
        "raw sqlite3": ([PY, "-m", "bench.ceilings.raw_sqlite", "--n", str(n)], 300),
        # the start latency's floor behind a pipe, probed like every system here (a ceiling, not a peer)
        STDIO_FLOOR: ([PY, "-m", "bench.ceilings.stdio_start", "--samples", str(s), "--idle-s", str(plan.idle_s)], 120),
        # the same floor with the sidecar's schema and frames (its child runs the sidecar's interpreter)
        CONTRACT_FLOOR: ([PY, "-m", "bench.ceilings.contract_start", "--samples", str(s),
                          "--idle-s", str(plan.idle_s)], 120),
    }
    cpu = one_core()
    if cpu is not None:
        # the same sidecar with all its threads on one CPU: what handing work between threads on
        # different CPUs costs it (the GIL runs one of them at a time either way)
        cmds[ONE_CORE_VARIANT] = (["env", f"BENCH_SIDECAR_CPU={cpu}", *sb(*drain)], 300)
    if plan.dbos:
        cmds["DBOS"] = ([PY, "-m", "bench.peers.dbos_peer", "--n", str(plan.dbos_n), "--workers", "4",
                         "--samples", str(s), "--idle-s", str(plan.idle_s)], 600)
    return cmds


def spread(values: list[float]) -> dict[str, Any]:
    if not values:
        return {}
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "values": values}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/run")
    p.add_argument("--quick", action="store_true", help="small N, 50k-row scale DB, no DBOS")
    p.add_argument("--with-dbos", action="store_true", help="include DBOS in --quick too")
    p.add_argument("--without-dbos", action="store_true")
    p.add_argument("--only", default="", help="comma list of parts: compare,sidecar,scale,ceilings")
    p.add_argument("--out", default=str(BENCH), help="directory for results.md / results.json")
    a = p.parse_args(argv)
    with_dbos = (not a.quick or a.with_dbos) and not a.without_dbos
    plan = Plan(a.quick, with_dbos)
    parts = set(filter(None, a.only.split(","))) or {"compare", "sidecar", "scale", "ceilings"}
    WORK.mkdir(parents=True, exist_ok=True)
    log = WORK / "bench.log"
    log.write_text("")
    started = time.time()
    facts = machine_facts()
    sidecar_python = os.environ.get("BENCH_SIDECAR_PYTHON", PY)
    facts["sidecar_python"] = sidecar_python
    facts["sidecar_commit"] = _git("rev-parse", "--short", "HEAD")
    facts["sidecar_tree_dirty"] = bool(_git("status", "--porcelain", "--", "sidecar"))
    versions = {"task-sidecar": dist_version("task-sidecar"), "huey": dist_version("huey"),
                "persist-queue": dist_version("persist-queue"), "litequeue": dist_version("litequeue"),
                "DBOS": dist_version("dbos") if with_dbos else None}
    res: dict[str, Any] = {"meta": {"mode": "quick" if a.quick else "full", "machine": facts,
                                    "versions": versions, "plan": vars(plan),
                                    "started_utc": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(started))},
                           "rounds": [], "compare": {}, "sidecar": {}, "ceilings": {}}
    sidecar_failures: list[str] = []

    def sidecar_part(key: str, label: str, cmd: list[str], timeout: float) -> dict[str, Any]:
        r = measure(label, cmd, timeout, log)
        res["sidecar"][key] = r
        if "error" in r:
            sidecar_failures.append(f"{label}: {r['error']}")
        return r

    # ---- rounds: the peer comparison plus the sidecar's throughput, order rotated
    if "compare" in parts:
        systems = peer_cmds(plan)
        systems["sidecar tasks.create x N"] = (sb("throughput", "--n", plan.n, "--mode", "single"), 300)
        systems["sidecar tasks.createMany"] = (sb("throughput", "--n", plan.n, "--mode", "many", "--chunk", 500), 300)
        names = list(systems)
        for r in range(plan.rounds):
            order = names[r % len(names):] + names[: r % len(names)]
            if r % 2:
                order.reverse()
            sys.stderr.write(f"round {r + 1}/{plan.rounds}: {', '.join(order)}\n")
            rr: dict[str, Any] = {"order": order, "results": {}}
            for name in order:
                cmd, timeout = systems[name]
                out = measure(name, cmd, timeout, log)
                rr["results"][name] = out
                if name.startswith("task-sidecar") or name.startswith("sidecar "):
                    if "error" in out:
                        sidecar_failures.append(f"{name} (round {r + 1}): {out['error']}")
            res["rounds"].append(rr)
        for name in names:
            outs = [rr["results"][name] for rr in res["rounds"]]
            ok = [o for o in outs if "error" not in o]
            entry: dict[str, Any] = {"ok_rounds": len(ok), "rounds": len(outs)}
            if not ok:
                entry["error"] = outs[0].get("error")
            for k in ("drain_per_s", "enqueue_per_s", "creates_per_s", "completions_per_s", "cycle_per_s",
                      "insert_1tx_per_s", "insert_batch_per_s", "claim_complete_1tx_per_s"):
                vals = [o[k] for o in ok if o.get(k) is not None]
                if vals:
                    entry[k] = spread(vals)
            starts = [o["latency"]["start_ms"]["p50"] for o in ok if o.get("latency")]
            if starts:
                entry["start_p50_ms"] = spread(starts)
                entry["start_p99_ms"] = spread([o["latency"]["start_ms"]["p99"] for o in ok])
            awake = [o["latency"]["start_awake_ms"]["p50"] for o in ok
                     if (o.get("latency") or {}).get("start_awake_ms", {}).get("p50") is not None]
            if awake:
                entry["start_awake_p50_ms"] = spread(awake)
            idles = [o["idle"] for o in ok if o.get("idle")]
            if idles:
                entry["idle_cpu_pct"] = spread([i["cpu_pct"] for i in idles])
                entry["idle_wakeups_per_s"] = spread([i["wakeups_per_s"] for i in idles])
            for k in ("version", "storage", "notes", "n"):
                if ok and ok[0].get(k) is not None:
                    entry[k] = ok[0][k]
            res["compare"][name] = entry

    # ---- the sidecar on its own
    if "sidecar" in parts:
        sidecar_part("latency_idle", "latency idle", sb("latency", "--samples", plan.latency_samples), 300)
        sidecar_part("latency_queued", f"latency with {plan.queued} queued",
                     sb("latency", "--samples", plan.latency_samples // 2, "--queued", plan.queued,
                        "--busy", plan.queued, "--held", plan.queued), 600)
        sidecar_part("fanout", "progress fan-out", sb("fanout", "--rate", 1000, "--seconds", plan.fanout_seconds), 120)
        sidecar_part("createmany", "createMany 5000 children",
                     sb("createmany", "--children", 5000, "--rounds", plan.createmany_rounds), 600)
        sidecar_part("startup_new", "start-up, new DB", sb("startup", "--runs", plan.startup_runs), 300)
        sidecar_part("startup_existing", "start-up, existing empty DB",
                     sb("startup", "--runs", plan.startup_runs + 1, "--existing"), 300)
        for form in ("onedir", "onefile"):  # the frozen forms (issue 8), when built
            sidecar_part(f"startup_frozen_{form}", f"start-up, frozen {form}",
                         [PY, "-m", "bench.frozen_startup", "--form", form, "--runs", str(plan.startup_runs)], 300)
        sidecar_part("rss", f"RSS idle and after {plan.rss_n} tasks", sb("rss", "--n", plan.rss_n), 900)
        sidecar_part("rss_pymalloc", f"RSS idle and after {plan.rss_n} tasks, PYTHONMALLOC=pymalloc",
                     ["env", "PYTHONMALLOC=pymalloc", *sb("rss", "--n", plan.rss_n)], 900)
        # through electron-bridge's client, as an Electron main process sees it (exit 3: not built)
        r = measure("through electron-bridge (Node)",
                    ["node", str(NODE_DIR / "bridge_client.mjs"), "--python", sidecar_python, "--root", str(ROOT),
                     "--samples", str(plan.latency_samples), "--n", str(plan.n), "--workers", "4"], 300, log)
        res["sidecar"]["bridge"] = r
        if "error" in r and r.get("rc") != 3:
            sidecar_failures.append(f"through electron-bridge: {r['error']}")

    if "scale" in parts:
        big = WORK / f"big-{plan.big_rows}.db"
        stamp = WORK / f"big-{plan.big_rows}.schema"
        schema_sig = _schema_signature()
        if not big.exists() or not stamp.exists() or stamp.read_text() != schema_sig:
            r = sidecar_part("bigdb", f"build {plan.big_rows}-task DB", sb("bigdb", "--rows", plan.big_rows, "--out", big), 900)
            if "error" not in r:
                stamp.write_text(schema_sig)
        else:
            res["sidecar"]["bigdb"] = {"rows": plan.big_rows, "cached": True, "bytes": big.stat().st_size,
                                       "bytes_per_task": big.stat().st_size / plan.big_rows}
        if big.exists():
            sidecar_part("startup_big", f"start-up, {plan.big_rows}-task DB",
                         sb("startup", "--runs", max(3, plan.startup_runs - 2), "--db", _copy(big)), 300)
            sidecar_part("scale", f"scale on {plan.big_rows} tasks",
                         sb("scale", "--db", big, "--samples", plan.scale_samples, "--deep", plan.deep,
                            "--prune-calls", plan.prune_calls), 900)

    if "ceilings" in parts:
        res["ceilings"]["ndjson"] = measure(
            "NDJSON pipe Node<->Python",
            ["node", str(NODE_DIR / "ndjson_pipe.mjs"), "--python", PY, "--cwd", str(ROOT),
             "--seq", str(plan.pipe_seq), "--pipelined", str(plan.pipe_n), "--idle", str(plan.pipe_idle)],
            300, log)
        if "raw sqlite3" in res["compare"]:
            res["ceilings"]["raw_sqlite"] = res["compare"]["raw sqlite3"]

    res["meta"]["duration_s"] = time.time() - started
    res["meta"]["machine"]["loadavg_at_end"] = os.getloadavg()
    res["meta"]["sidecar_failures"] = sidecar_failures
    res["ratios"], res["targets"] = report.evaluate(res)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(res, indent=1, default=str) + "\n")
    (out / "results.md").write_text(report.markdown(res))
    sys.stderr.write(f"wrote {out / 'results.md'} and {out / 'results.json'} "
                     f"in {res['meta']['duration_s']:.0f}s (log: {log})\n")
    for t in res["targets"]:
        sys.stderr.write(f"  [{t['verdict']:>6}] {t['name']}: {t['measured']} (target {t['target']})\n")
    if sidecar_failures:
        sys.stderr.write("the sidecar misbehaved:\n  " + "\n  ".join(sidecar_failures) + "\n")
        return 1
    return 0


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=str(ROOT), capture_output=True, text=True,
                              timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _schema_signature() -> str:
    """Rebuild the big DB when the sidecar's migrations or the way the bench builds it change."""
    import hashlib
    import inspect

    from bench.sidecar_bench import cmd_bigdb

    src = (ROOT / "sidecar" / "persistence" / "migrations.py").read_bytes() + inspect.getsource(cmd_bigdb).encode()
    return hashlib.sha256(src).hexdigest()


def _copy(big: Path) -> str:
    dst = WORK / "startup-big" / "big.db"
    shutil.rmtree(dst.parent, ignore_errors=True)
    dst.parent.mkdir(parents=True)
    shutil.copyfile(big, dst)
    return str(dst)


if __name__ == "__main__":
    sys.exit(main())
