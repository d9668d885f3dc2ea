"""Targets, ratios and the Markdown report, from the runner's results dict."""

from __future__ import annotations

from typing import Any

PYTHON_PEERS = ("huey", "persist-queue", "litequeue", "DBOS")
PEERS = (*PYTHON_PEERS, "plainjob")
PYMALLOC_VARIANT = "task-sidecar, PYTHONMALLOC=pymalloc"  # not a peer: the same sidecar, other allocator
ONE_CORE_VARIANT = "task-sidecar, one core"  # not a peer: the same sidecar, its threads on one CPU
VARIANTS = (PYMALLOC_VARIANT, ONE_CORE_VARIANT)
# not a peer: a Python process with nothing but a pipe and SQLite (bench/ceilings/stdio_start.py),
# the least any queue behind stdio pays for create → RUNNING seen
STDIO_FLOOR = "raw sqlite3 over stdio"
# the same, writing what the sidecar writes: its schema, its counters, its three whole-task frames
# (bench/ceilings/contract_start.py)
CONTRACT_FLOOR = "sidecar schema over stdio"
CEILINGS = ("raw sqlite3", STDIO_FLOOR, CONTRACT_FLOOR)


def _get(d: Any, *path: Any) -> Any:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def _fmt(v: Any, digits: int = 0) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 100:
            return f"{v:.{min(digits, 1)}f}" if digits else f"{v:.0f}"
        return f"{v:.{max(digits, 1)}f}"
    return str(v)


def _idle_text(entry: Any) -> str:
    cpu, wakeups = _get(entry, "idle_cpu_pct", "median"), _get(entry, "idle_wakeups_per_s", "median")
    if cpu is None or wakeups is None:
        return "–"
    return f"{cpu:.1f} % · {wakeups:,.0f}/s"


def _after_idle(nd: dict[str, Any]) -> str:
    idle = nd.get("after_idle_rtt_us")
    if not idle:
        return ""
    return (f"after a random idle gap of 5–100 ms (as the latency probes meet it) p50 {_fmt(idle['p50'], 1)} µs "
            f"(p99 {_fmt(idle['p99'], 1)} µs); ")


def _start_latency_context(res: dict[str, Any], fastest: str) -> str:
    """What bounds the start latency of a service behind a pipe, next to what the fastest peer
    pays while idle for its own: measured in the same run."""
    parts = []
    echo = _get(res, "ceilings", "ndjson", "after_idle_rtt_us", "p50")
    if echo is not None:
        parts.append(f"a bare NDJSON echo round trip after an idle gap: {echo / 1000:.2f} ms")
    ping = _get(res, "sidecar", "latency_idle", "ping_random_ms", "p50")
    if ping is not None:
        parts.append(f"`system.ping` after an idle gap: {ping:.2f} ms")
    cmp_ = res.get("compare", {})
    for name, what in (
        (STDIO_FLOOR, "a queue with nothing but a pipe and SQLite (one transaction per create, no "
                      "JSON-RPC library, checks or state machine)"),
        (CONTRACT_FLOOR, "the same writing the sidecar's rows, counters and three whole-task frames"),
    ):
        floor = _get(cmp_, name, "start_p50_ms", "median")
        if floor is not None:
            floor_awake = _get(cmp_, name, "start_awake_p50_ms", "median")
            parts.append(f"{what}: {floor:.2f} ms"
                         + (f" ({floor_awake:.2f} ms with the CPUs awake)" if floor_awake is not None else ""))
    awake_mine = _get(cmp_, "task-sidecar", "start_awake_p50_ms", "median")
    awake_theirs = _get(cmp_, fastest, "start_awake_p50_ms", "median")
    if awake_mine is not None and awake_theirs is not None:
        parts.append(f"with probes 0.5–1.5 ms apart (the CPUs never halt): the sidecar "
                     f"{awake_mine:.2f} ms, {fastest} {awake_theirs:.2f} ms")
    theirs, mine = _idle_text(cmp_.get(fastest)), _idle_text(cmp_.get("task-sidecar"))
    if theirs != "–":
        parts.append(f"idle CPU · wake-ups: {fastest} {theirs}, the sidecar {mine}")
    return "; ".join(parts)


def _raw_drain_note(ratios: dict[str, Any], drain: Any, raw: Any) -> str:
    if not (drain and raw):
        return ""
    note = f"{_fmt(drain)}/s vs {_fmt(raw)}/s"
    one_core = ratios.get("one_core_over_raw_sqlite")
    if one_core:
        note += (f"; the same sidecar with its threads on one CPU: {_fmt(100 * one_core, 1)} % "
                 f"({_fmt(ratios['one_core_over_default_drain_per_s'], 2)}× its default)")
    return note


def _bridge_section(w: Any, res: dict[str, Any]) -> None:
    """What an Electron main process sees: the same measurements through electron-bridge's client."""
    sc, plan = res.get("sidecar", {}), res["meta"]["plan"]
    mine = res.get("compare", {}).get("task-sidecar") or {}
    b = sc.get("bridge")
    w("### Through electron-bridge (the Electron main process's client, in Node)\n")
    if not b or "error" in b:
        w(f"{'failed: ' + str(b.get('error')) if b else 'not run'}\n")
        return
    w("`SidecarClient` from `electron-bridge/dist` (json-rpc-2.0 correlation, its line framing and "
      "backpressure, the default call timeout) driving the same sidecar; Electron's IPC to "
      "renderers is not in it. Beside it, the Python bench client's numbers from this run.\n")
    w("| measurement | through electron-bridge | the Python bench client |\n|---|---|---|")

    def trio(d: Any) -> str:
        return f"{_fmt(d['p50'], 2)} / {_fmt(d['p95'], 2)} / {_fmt(d['p99'], 2)}" if d and "p50" in d else "–"

    lat = sc.get("latency_idle") or {}
    w(f"| spawn → `sidecar.ready`, ms | {_fmt(b.get('ready_ms'), 1)} (median of {len(b.get('ready_samples_ms') or [])}, new DB files) | "
      f"{_fmt(_get(sc, 'startup_new', 'ms', 'p50'), 1)} (median, new DB file) |")
    w(f"| `system.ping` back to back, p50 / p95 / p99 ms | {trio(b.get('ping_ms'))} | {trio(lat.get('ping_ms'))} |")
    w(f"| `system.ping` after an idle gap, p50 / p95 / p99 ms | {trio(b.get('ping_after_gap_ms'))} | "
      f"{trio(lat.get('ping_random_ms'))} |")
    w(f"| create → `RUNNING` event, idle, p50 / p95 / p99 ms | {trio(_get(b, 'latency', 'start_ms'))} | "
      f"{trio(lat.get('start_ms'))} |")
    w(f"| create → `COMPLETED` event, idle, p50 / p95 / p99 ms | {trio(_get(b, 'latency', 'complete_ms'))} | "
      f"{trio(lat.get('complete_ms'))} |")
    w(f"| {plan['n']:,} `tasks.create` calls, all in flight: creates/s | {_fmt(b.get('enqueue_per_s'))} | "
      f"{_spread(mine, 'enqueue_per_s')} (median of the rounds) |")
    w(f"| drain of those {plan['n']:,} by 4 workers, as its events report it: tasks/s | {_fmt(b.get('drain_per_s'))} | "
      f"{_spread(mine, 'drain_per_s')} (median of the rounds) |")
    w("")


def evaluate(res: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    cmp_ = res.get("compare", {})
    sc = res.get("sidecar", {})
    quick = res["meta"]["mode"] == "quick"
    drain = _get(cmp_, "task-sidecar", "drain_per_s", "median")
    peers = {name: _get(cmp_, name, "drain_per_s", "median") for name in PYTHON_PEERS}
    peers = {k: v for k, v in peers.items() if v}
    best_name = max(peers, key=lambda k: peers[k]) if peers else None
    best = peers.get(best_name) if best_name else None
    raw = _get(cmp_, "raw sqlite3", "claim_complete_1tx_per_s", "median")
    ratios: dict[str, Any] = {
        "drain_per_s": drain,
        "best_python_peer": best_name,
        "best_python_peer_drain_per_s": best,
        "sidecar_over_best_python_peer": drain / best if drain and best else None,
        "raw_sqlite_claim_complete_per_s": raw,
        "sidecar_over_raw_sqlite": drain / raw if drain and raw else None,
        "plainjob_drain_per_s": _get(cmp_, "plainjob", "drain_per_s", "median"),
    }
    if ratios["plainjob_drain_per_s"] and drain:
        ratios["sidecar_over_plainjob"] = drain / ratios["plainjob_drain_per_s"]
    for key in ("drain_per_s", "enqueue_per_s"):  # the default allocator (malloc) over pymalloc
        mine, kept = _get(cmp_, "task-sidecar", key, "median"), _get(cmp_, PYMALLOC_VARIANT, key, "median")
        if mine and kept:
            ratios[f"malloc_over_pymalloc_{key}"] = mine / kept
    one_core = _get(cmp_, ONE_CORE_VARIANT, "drain_per_s", "median")
    if one_core and drain:
        ratios["one_core_over_default_drain_per_s"] = one_core / drain
        if raw:
            ratios["one_core_over_raw_sqlite"] = one_core / raw
    targets: list[dict[str, Any]] = []

    def target(name: str, target_text: str, measured: Any, ok: bool | None, unit: str = "",
               note: str = "") -> None:
        verdict = "n/a" if ok is None else ("met" if ok else "missed")
        if isinstance(measured, str):
            shown = measured
        else:
            shown = (_fmt(measured, 2) + unit) if measured is not None else "not measured"
        targets.append({"name": name, "target": target_text, "measured": shown, "verdict": verdict,
                        "value": None if isinstance(measured, str) else measured, "note": note})

    r = ratios["sidecar_over_best_python_peer"]
    target("Drain of queued no-op tasks vs best Python peer", "≥ 2.0×", r,
           None if r is None else r >= 2.0, "×",
           f"{_fmt(drain)}/s vs {best_name} {_fmt(best)}/s" if drain and best else "")
    r = ratios["sidecar_over_raw_sqlite"]
    target("Drain vs raw SQLite claim+complete (1 tx/task)", "≥ 40 %",
           None if r is None else 100 * r, None if r is None else r >= 0.40, " %",
           _raw_drain_note(ratios, drain, raw))
    p50 = _get(sc, "latency_idle", "start_ms", "p50")
    p99 = _get(sc, "latency_idle", "start_ms", "p99")
    echo = _get(res, "ceilings", "ndjson", "after_idle_rtt_us", "p50")
    target("Create → RUNNING seen by the client, idle, p50", "≤ 1 ms", p50,
           None if p50 is None else p50 <= 1.0, " ms",
           # the machine's floor for this number, from the same run: it moves from day to day
           f"a bare NDJSON echo round trip after an idle gap: {echo / 1000:.2f} ms" if echo is not None else "")
    target("Create → RUNNING seen by the client, idle, p99", "≤ 5 ms", p99,
           None if p99 is None else p99 <= 5.0, " ms")
    mine = _get(cmp_, "task-sidecar", "start_p50_ms", "median")
    others = {n: _get(cmp_, n, "start_p50_ms", "median") for n in PEERS}
    others = {k: v for k, v in others.items() if v is not None}
    if mine is not None and others:
        fastest = min(others, key=lambda k: others[k])
        target("Start latency ahead of every peer (p50, in the side-by-side runs)", "< every peer",
               f"{_fmt(mine, 2)} ms vs {fastest} {_fmt(others[fastest], 2)} ms", mine < others[fastest],
               note=_start_latency_context(res, fastest))
    cm = _get(sc, "createmany", "request_ms", "p50")
    ping = _get(sc, "createmany", "ping_during_ms", "p50")
    cm_note = ["every child announced"] if _get(sc, "createmany", "all_announced") else []
    if cm is not None:
        rounds = _get(sc, "createmany", "rounds")
        by_round = _get(sc, "createmany", "request_ms_by_round")
        if by_round:  # in order: host noise comes and goes, a growing database would climb
            cm_note.append(f"{rounds} round{'' if rounds == 1 else 's'}, in order: "
                           f"{', '.join(_fmt(ms, 0) for ms in by_round)} ms")
        else:
            cm_note.append(f"{rounds} round{'' if rounds == 1 else 's'}, "
                           f"{_fmt(_get(sc, 'createmany', 'request_ms', 'min'), 1)}–"
                           f"{_fmt(_get(sc, 'createmany', 'request_ms', 'max'), 1)} ms")
    target("createMany of 5,000 children, request → response (p50)", "≤ 150 ms", cm,
           None if cm is None else cm <= 150, " ms", ", ".join(cm_note))
    target("Reader not stalled: a ping sent right behind that batch (p50)", "≤ 150 ms", ping,
           None if ping is None else ping <= 150, " ms")
    s_new = _get(sc, "startup_new", "ms", "p50")
    s_old = _get(sc, "startup_existing", "ms", "p50")
    target("Start-up to sidecar.ready, new DB file (median)", "≤ 200 ms", s_new,
           None if s_new is None else s_new <= 200, " ms")
    target("Start-up to sidecar.ready, existing empty DB (median)", "≤ 200 ms", s_old,
           None if s_old is None else s_old <= 200, " ms")
    rows = _get(sc, "bigdb", "rows") or res["meta"]["plan"]["big_rows"]
    big_label = f"{rows:,} tasks" + (" (quick: not the 1M of the target)" if quick else "")
    s_big = _get(sc, "startup_big", "ms", "p50")
    target(f"Start-up to sidecar.ready, {big_label} (median)", "≤ 300 ms", s_big,
           None if s_big is None else s_big <= 300, " ms")
    idle = _get(sc, "rss", "idle_mb")
    growth = _get(sc, "rss", "growth_percent")
    n_rss = _get(sc, "rss", "n")
    target("Idle RSS", "≤ 45 MB", idle, None if idle is None else idle <= 45, " MB")
    target(f"RSS after draining {_fmt(n_rss)} tasks vs idle", "≤ +10 %", growth,
           None if growth is None else growth <= 10, " %",
           f"{_fmt(idle, 1)} → {_fmt(_get(sc, 'rss', 'after_mb'), 1)} MB" if idle else "")
    for key, label in (("create_ms", "tasks.create round trip"),
                       ("claim_sql_ms", "claim (the UPDATE … RETURNING + commit, in-process)"),
                       ("create_to_running_ms", "create → RUNNING seen"),
                       ("list_first_page_ms", "tasks.list first page"),
                       ("stats_ms", "tasks.stats")):
        v = _get(sc, "scale", key, "p50")
        target(f"{big_label}: {label}, p50", "≤ 5 ms", v, None if v is None else v <= 5.0, " ms")
    dropped, looked = 0, 0
    for rr in res.get("rounds", []):
        for name, out in rr["results"].items():
            if name.startswith("sidecar ") and "error" not in out:
                looked += 1
                dropped += out.get("queued_not_announced", 0) + out.get("running_not_announced", 0)
    for key in ("latency_idle", "latency_queued"):
        out = sc.get(key) or {}
        if "start_ms" in out:
            looked += 1
            dropped += out.get("running_not_announced", 0) + sum(
                _get(out, part, "running_not_announced") or 0 for part in ("busy", "held"))
    if "queued_not_announced_max" in (sc.get("createmany") or {}):
        looked += 1
        dropped += sc["createmany"]["queued_not_announced_max"]
    ratios["transitions_not_announced"] = dropped
    target("Every transition announced (docs/protocol.md: 'transitions are never dropped')", "0 missing",
           f"{dropped:,} missing" if looked else "not measured", None if not looked else dropped == 0,
           note="QUEUED/RUNNING updates the client never saw: the stdout writer merges a task's pending "
                "updates once 1,000 frames are queued" if dropped else "")
    fan = _get(sc, "fanout")
    if fan and "error" not in fan:
        target("Progress at 1,000/s: the last value arrives", "always",
               "yes" if fan.get("last_value_arrived") else "no", bool(fan.get("last_value_arrived")))
    return ratios, targets


def _spread(entry: Any, key: str, digits: int = 0) -> str:
    s = _get(entry, key)
    if not s:
        return "–"
    if s["min"] == s["max"]:
        return _fmt(s["median"], digits)
    return f"{_fmt(s['median'], digits)} ({_fmt(s['min'], digits)}–{_fmt(s['max'], digits)})"


def markdown(res: dict[str, Any]) -> str:
    meta = res["meta"]
    m = meta["machine"]
    cmp_ = res.get("compare", {})
    sc = res.get("sidecar", {})
    plan = meta["plan"]
    lines: list[str] = []
    w = lines.append
    w("# task-sidecar benchmark results\n")
    w(f"Mode **{meta['mode']}**, started {meta['started_utc']}, took {meta['duration_s']:.0f} s. "
      "Generated by `bash bench/run" + (" --quick" if meta["mode"] == "quick" else "") + "`; "
      "raw data in `results.json`, every process's output in `bench/.work/bench.log`.\n")
    load = ", ".join(f"{x:.2f}" for x in m.get("loadavg_at_start", []))
    if m.get("loadavg_at_end"):
        load += " (at the end: " + ", ".join(f"{x:.2f}" for x in m["loadavg_at_end"]) + ")"
    w(f"Machine: {m.get('cpu')} · {m.get('cores')} cores · {m.get('memory_gb')} GB · {m.get('os')} · "
      f"Python {m.get('python')} (SQLite {m.get('sqlite_python')}) · Node {m.get('node')} · "
      f"load average at start {load}. Sidecar at commit {m.get('sidecar_commit')}"
      f"{' (sidecar/ had uncommitted changes)' if m.get('sidecar_tree_dirty') else ''}, run from "
      f"its own venv (`bench/.venv-sidecar`: only its own dependencies). The machine is shared and noisy: read the ratios (measured "
      "side by side, order rotated between rounds) rather than the absolute numbers.\n")
    if meta.get("sidecar_failures"):
        w("**The sidecar misbehaved in this run:**\n")
        for f in meta["sidecar_failures"]:
            w(f"- {f}")
        w("")

    w("## Targets (from the issue; checked here, never asserted in tests)\n")
    w("| goal | target | measured | verdict | note |\n|---|---|---|---|---|")
    for t in res.get("targets", []):
        verdict = {"met": "met", "missed": "**missed**", "n/a": "not measured"}[t["verdict"]]
        w(f"| {t['name']} | {t['target']} | {t['measured']} | {verdict} | {t.get('note', '')} |")
    w("")
    ra = res.get("ratios", {})
    w("## Ratios\n")
    w(f"- sidecar drain / best Python peer ({ra.get('best_python_peer')}): "
      f"**{_fmt(ra.get('sidecar_over_best_python_peer'), 2)}×**")
    w("- sidecar drain / raw SQLite claim+complete, one transaction per task: "
      f"**{_fmt(ra.get('sidecar_over_raw_sqlite'), 2)}×**")
    if ra.get("sidecar_over_plainjob"):
        w(f"- sidecar drain / plainjob (Node): **{_fmt(ra.get('sidecar_over_plainjob'), 2)}×**")
    if ra.get("malloc_over_pymalloc_drain_per_s"):
        w("- the sidecar's default allocator (malloc) / `PYTHONMALLOC=pymalloc`: drain "
          f"**{_fmt(ra['malloc_over_pymalloc_drain_per_s'], 2)}×**, enqueue "
          f"**{_fmt(ra.get('malloc_over_pymalloc_enqueue_per_s'), 2)}×**")
    if ra.get("one_core_over_default_drain_per_s"):
        of_raw = ra.get("one_core_over_raw_sqlite")
        w("- the sidecar with all its threads on one CPU / as the OS schedules it: drain "
          f"**{_fmt(ra['one_core_over_default_drain_per_s'], 2)}×**"
          + (f" ({_fmt(100 * of_raw, 1)} % of raw SQLite)" if of_raw else ""))
    w("")

    w(f"## Same work, side by side (N = {plan['n']:,} no-op jobs, 4 workers, {plan['rounds']} rounds)\n")
    w("Median over rounds (min–max). *enqueue/s*: one call per job. *drain/s*: queued jobs run to "
      "done by 4 workers. *start*: enqueue → the job starts, on an idle queue, probes at random "
      "moments 5–100 ms apart (the sidecar: `tasks.create` written → the read that brings the "
      "`RUNNING` notification returns in the client). *start, CPUs awake*: the same probes "
      "0.5–1.5 ms apart, too close for this host's virtual CPUs to halt between them, so waking "
      "a halted CPU is not part of the number. *idle*: CPU (% of one core) and thread wake-ups "
      "per second while the workers wait for work, after the probes.\n")
    w("| system | version | enqueue/s | drain/s | start p50 ms | start p99 ms | start, CPUs awake, p50 ms "
      "| idle CPU · wake-ups | storage | notes |")
    w("|---|---|---|---|---|---|---|---|---|---|")
    for name in ("task-sidecar", *VARIANTS, *PEERS, *CEILINGS):
        e = cmp_.get(name)
        if e is None:
            if name == "DBOS" and cmp_:
                w("| DBOS | – | – | – | – | – | – | – | – | not run (skipped in --quick: heaviest install, "
                  "slowest peer; `--with-dbos` adds it) |")
            continue
        if "error" in e:
            ver = meta["versions"].get(name) or e.get("version") or "–"
            w(f"| {name} | {ver} | failed | failed | – | – | – | – | – | {e['error']} |")
            continue
        version = e.get("version") or meta["versions"].get(name) or "–"
        n_note = f"N = {e['n']:,}. " if e.get("n") and e["n"] != plan["n"] else ""
        if name == PYMALLOC_VARIANT:
            version = meta["versions"].get("task-sidecar") or version
            n_note = ("the same sidecar keeping Python's allocator (the default allocates with malloc "
                      "on glibc, for its memory after a burst: see the RSS lines below). ")
        elif name == ONE_CORE_VARIANT:
            version = meta["versions"].get("task-sidecar") or version
            n_note = ("the same sidecar with every thread confined to one CPU (sched_setaffinity "
                      "before exec; the client is not): a measurement of what handing tasks between "
                      "threads on different CPUs costs, not a setting it uses. ")
        w(f"| {name} | {version} | {_spread(e, 'enqueue_per_s')} | {_spread(e, 'drain_per_s')} | "
          f"{_spread(e, 'start_p50_ms', 2)} | {_spread(e, 'start_p99_ms', 2)} | "
          f"{_spread(e, 'start_awake_p50_ms', 2)} | {_idle_text(e)} | "
          f"{e.get('storage', '')} | "
          f"{n_note}{e.get('notes', '')} |")
    w("")

    w("## The sidecar\n")
    w("### Throughput, end to end over stdio (no-op tasks)\n")
    w("| how created | creates/s | completions/s | whole cycle/s |\n|---|---|---|---|")
    for key, label in (("sidecar tasks.create x N", f"`tasks.create`, one call per task, {plan['n']:,} pipelined"),
                       ("sidecar tasks.createMany", f"`tasks.createMany`, {plan['n']:,} in chunks of 500")):
        e = cmp_.get(key)
        if not e or "error" in e:
            w(f"| {label} | {'failed: ' + str(e.get('error')) if e else 'not run'} | | |")
            continue
        w(f"| {label} | {_spread(e, 'creates_per_s')} | {_spread(e, 'completions_per_s')} | "
          f"{_spread(e, 'cycle_per_s')} |")
    w("")
    w("### Latency as the client sees it (ms)\n")
    w("| queue | create → RUNNING p50 / p95 / p99 | create → COMPLETED p50 / p95 / p99 |\n|---|---|---|")

    def lat_row(label: str, d: Any) -> None:
        if not d or "start_ms" not in d:
            w(f"| {label} | {'failed: ' + str(d.get('error')) if d else 'not run'} | |")
            return
        s, c = d["start_ms"], d["complete_ms"]
        w(f"| {label} | {_fmt(s['p50'], 2)} / {_fmt(s['p95'], 2)} / {_fmt(s['p99'], 2)} | "
          f"{_fmt(c['p50'], 2)} / {_fmt(c['p95'], 2)} / {_fmt(c['p99'], 2)} |")

    lat_row("idle", sc.get("latency_idle"))
    ping = _get(sc, "latency_idle", "ping_ms")
    if ping:
        w(f"| (for scale: `system.ping` round trip, back to back) | {_fmt(ping['p50'], 2)} / {_fmt(ping['p95'], 2)} / "
          f"{_fmt(ping['p99'], 2)} | |")
    ping = _get(sc, "latency_idle", "ping_random_ms")
    if ping:
        w(f"| (for scale: `system.ping` after an idle gap, as the probes are sent) | {_fmt(ping['p50'], 2)} / "
          f"{_fmt(ping['p95'], 2)} / {_fmt(ping['p99'], 2)} | |")
    q = sc.get("latency_queued") or {}
    lat_row(f"{plan['queued']:,} QUEUED, due tomorrow", q)
    lat_row(f"{plan['queued']:,} due no-op tasks draining; probe at priority 10", q.get("busy"))
    lat_row(f"{plan['queued']:,} QUEUED behind their type's concurrency limit (2 running)", q.get("held"))
    w("")
    _bridge_section(w, res)
    f = sc.get("fanout") or {}
    w("### Progress fan-out\n")
    if not f or "error" in f:
        w(f"{'failed: ' + str(f.get('error')) if f else 'not run'}\n")
    else:
        w(f"A handler reporting {_fmt(f['handler_rate_per_s'])} progress values/s for {f['seconds']} s: "
          f"{f['delivered']} updates reached the client ({_fmt(f['delivered_per_s'], 1)}/s, coalesced); "
          f"the last value arrived: **{'yes' if f['last_value_arrived'] else 'NO'}**; "
          f"sidecar CPU {_fmt(f['cpu_percent_of_core'], 1)} % of one core while it ran (idle: "
          f"{_fmt(f['idle_cpu_percent_of_core'], 1)} %); largest gap between two updates "
          f"{_fmt(f.get('max_gap_ms'), 1)} ms.\n")
    c = sc.get("createmany") or {}
    w("### createMany: a 5,000-child playlist\n")
    if not c or "error" in c:
        w(f"{'failed: ' + str(c.get('error')) if c else 'not run'}\n")
    else:
        w(f"Request → response p50 {_fmt(c['request_ms']['p50'], 1)} ms (max {_fmt(c['request_ms']['max'], 1)}) "
          f"over {c['rounds']} round(s); a `system.ping` sent right behind it was answered after p50 "
          f"{_fmt(c['ping_during_ms']['p50'], 1)} ms; every child was announced `QUEUED` "
          f"(at least {c['announced_before_response_min']:,} of 5,000 before the response arrived).\n")
    w("### Start-up and memory\n")
    w("| case | spawn → `sidecar.ready`, median (min–max) | RSS at ready | first `tasks.list` right after ready, median (max) | 1-min load average before |\n|---|---|---|---|---|")
    big_rows = _get(sc, "bigdb", "rows") or plan["big_rows"]
    for key, label in (("startup_new", "new DB file"), ("startup_existing", "existing empty DB"),
                       ("startup_big", f"{big_rows:,} tasks"),
                       ("startup_frozen_onedir", "frozen one-folder build, new DB file"),
                       ("startup_frozen_onefile", "frozen one-file build, new DB file")):
        e = sc.get(key)
        if not e or "error" in e:
            w(f"| {label} | {'failed: ' + str(e.get('error')) if e else 'not run'} | | | |")
            continue
        if "not_built" in e:
            w(f"| {label} | not built (`python build/freeze.py`{' --onefile' if 'onefile' in key else ''}) | | | |")
            continue
        first = e.get("first_request_ms")
        first_cell = f"{_fmt(first['p50'], 2)} ms ({_fmt(first['max'], 2)})" if first and first.get("n") else "–"
        w(f"| {label} | {_fmt(e['ms']['p50'], 1)} ms ({_fmt(e['ms']['min'], 1)}–{_fmt(e['ms']['max'], 1)}) | "
          f"{_fmt(e['rss_at_ready_mb']['p50'], 1)} MB | {first_cell} | {_fmt(e.get('loadavg_1m_before'), 2)} |")
    w("")
    for key, lead in (("rss", "RSS"), ("rss_pymalloc", "With `PYTHONMALLOC=pymalloc` (Python's own allocator kept): RSS")):
        r = sc.get(key) or {}
        if r and "error" not in r:
            w(f"{lead} idle {_fmt(r['idle_mb'], 1)} MB; after creating and draining {r['n']:,} tasks "
              f"{_fmt(r['after_mb'], 1)} MB ({_fmt(r['growth_percent'], 1)} %); peak {_fmt(r['peak_mb'], 1)} MB.\n")
        elif r:
            w(f"{lead}: failed: {r.get('error')}\n")
    s = sc.get("scale") or {}
    w(f"### Scale: {_fmt(s.get('rows') or big_rows)} tasks in the database (97 % COMPLETED, a year of history)\n")
    if not s or "error" in s:
        w(f"{'failed: ' + str(s.get('error')) if s else 'not run'}\n")
    else:
        w("| operation | p50 ms | p99 ms |\n|---|---|---|")
        for key, label in (("create_ms", "`tasks.create` round trip"),
                           ("create_to_running_ms", "create → `RUNNING` seen (includes the claim)"),
                           ("claim_sql_ms", "claim statement + commit, in-process (no protocol)"),
                           ("list_first_page_ms", "`tasks.list` first page (50)"),
                           ("list_active_ms", "`tasks.list` status = QUEUED/RUNNING/PAUSED/WAITING (50)"),
                           ("list_deep_cursor_ms", f"`tasks.list` at a cursor {s.get('deep_cursor_depth', 0):,} deep"),
                           ("stats_ms", "`tasks.stats`"),
                           ("prune_noop_ms", "`tasks.prune`, nothing old enough"),
                           ("prune_day_ms", f"`tasks.prune`, one day of history per call "
                                            f"(~{_fmt(s.get('prune_day_deleted_per_call'))} tasks)")):
            v = s.get(key) or {}
            w(f"| {label} | {_fmt(v.get('p50'), 2)} | {_fmt(v.get('p99'), 2)} |")
        b = sc.get("bigdb") or {}
        built = f"; built in {_fmt(b['build_s'], 1)} s by raw inserts into the schema the sidecar created" \
            if b.get("build_s") else ""
        w(f"\nDatabase file: {_fmt(s['db_bytes'])} bytes = **{_fmt(s['bytes_per_task'])} bytes per task**"
          f"{built}. Start-up on this file: {_fmt(s.get('startup_ms'), 1)} ms.\n")

    w("## Ceilings of this machine\n")
    raw = cmp_.get("raw sqlite3") or {}
    if raw and "error" not in raw:
        w(f"- Raw `sqlite3` from Python (WAL, synchronous=NORMAL, one thread, SQLite {raw.get('version')}): "
          f"insert, one transaction per row {_spread(raw, 'insert_1tx_per_s')}/s; "
          f"insert, batched in one transaction {_spread(raw, 'insert_batch_per_s')}/s; "
          f"claim + complete, one transaction per task **{_spread(raw, 'claim_complete_1tx_per_s')}/s**.")
    for name, what, after in (
        (STDIO_FLOOR,
         f"Create → RUNNING seen over a pipe with nothing else (`bench/ceilings/stdio_start.py`, "
         f"{(cmp_.get(STDIO_FLOOR) or {}).get('notes', '')}; the client blocked in `read`)",
         "The rest of the sidecar's start latency is its own work per create."),
        (CONTRACT_FLOOR,
         "The same, writing what the sidecar writes (`bench/ceilings/contract_start.py`: its database "
         "with its pragmas, indexes and counters, the row inserted RUNNING, the response and the QUEUED "
         "and RUNNING `task.updated` with whole tasks, in one write; no JSON-RPC library, checks, state "
         "machine, engine or threads)",
         "The sidecar's start latency minus this is what its machinery costs."),
    ):
        floor = cmp_.get(name) or {}
        if floor and "error" not in floor:
            w(f"- {what}: p50 **{_spread(floor, 'start_p50_ms', 2)} ms** with probes 5–100 ms apart, "
              f"{_spread(floor, 'start_awake_p50_ms', 2)} ms 0.5–1.5 ms apart. {after}")
    nd = res.get("ceilings", {}).get("ndjson") or {}
    if nd and "error" not in nd:
        w(f"- NDJSON over a pipe, Node ↔ Python (orjson echo): sequential round trip p50 "
          f"{_fmt(nd['sequential_rtt_us']['p50'], 1)} µs (p99 {_fmt(nd['sequential_rtt_us']['p99'], 1)} µs); "
          f"{_after_idle(nd)}pipelined {_fmt(nd['pipelined_per_s'])} messages/s.")
    elif nd:
        w(f"- NDJSON pipe: failed: {nd.get('error')}")
    w("")
    w("## Versions\n")
    for k, v in meta["versions"].items():
        w(f"- {k}: {v or 'not installed'}")
    pj = _get(cmp_, "plainjob", "version")
    if pj:
        w(f"- plainjob: {pj}")
    w("")
    return "\n".join(lines) + "\n"
