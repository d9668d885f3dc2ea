// What an Electron main process sees: electron-bridge's own SidecarClient (the compiled package in
// electron-bridge/dist) driving the real sidecar, with no Electron (its IPC to renderers is not
// measured). Spawn → ready through the client; `system.ping` back to back and after random idle
// gaps; create → the RUNNING / COMPLETED `task.updated` events after random idle gaps (the same
// 5–100 ms gaps as the Python probes); a drain of N queued no-op tasks created with one call each,
// as its events report them. Prints one "BENCH-RESULT {json}" line.
import { createRequire } from "node:module";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

import { fail, idleGap, now, parseArgs, pct, summary } from "./measure.mjs";

const args = parseArgs();
const ROOT = path.resolve(args.root ?? ".");
const PYTHON = args.python ?? "python3";
const SAMPLES = Number(args.samples ?? 200);
const N = Number(args.n ?? 5000);
const WORKERS = String(args.workers ?? 4);

const NOT_BUILT = 3; // the exit status bench/run.py shows as "not built" rather than as a failure
const require = createRequire(import.meta.url);
let SidecarClient;
try {
  ({ SidecarClient } = require(path.join(ROOT, "electron-bridge", "dist", "src", "main.js")));
} catch (err) {
  fail(`electron-bridge is not built (${err.message})`, NOT_BUILT);
}

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "bench-bridge-"));
process.on("exit", () => fs.rmSync(dir, { recursive: true, force: true }));
// first time each task was seen in each status, and who waits for which
const seen = new Map();
const waiters = [];
let lastSeq = 0;
let seqGaps = 0;
let closing = false;

const STARTS = 3; // spawn → ready through the client, each on a new DB file; the last one is measured on
const readyMs = [];
let client;
for (let i = 0; i < STARTS; i++) {
  const tSpawn = now();
  client = await SidecarClient.start({
    command: PYTHON,
    args: ["-m", "sidecar"],
    cwd: ROOT,
    env: { ...process.env, PYTHONPATH: ROOT },
    dbPath: path.join(dir, `t${i}.db`),
    handlers: ["bench.handlers"],
    extraArgs: ["--concurrency", WORKERS, "--log-level", "WARNING"],
    startTimeoutMs: 60_000,
    restart: { maxAttempts: 0 },
  });
  readyMs.push(now() - tSpawn);
  if (i < STARTS - 1) await client.close();
}
client.on("exit", (info) => { if (!closing) fail(`the sidecar exited: ${JSON.stringify(info)}`); });
client.on("task.updated", ({ seq, task }) => {
  const t = now();
  if (lastSeq && seq !== lastSeq + 1) seqGaps += 1;
  lastSeq = seq;
  let bySt = seen.get(task.id);
  if (!bySt) seen.set(task.id, (bySt = {}));
  if (bySt[task.status] === undefined) bySt[task.status] = t;
  for (let i = waiters.length - 1; i >= 0; i--) {
    const w = waiters[i];
    if (w.status === task.status && w.ids.delete(task.id) && w.ids.size === 0) {
      waiters.splice(i, 1);
      w.resolve(t);
    }
  }
});
const until = (ids, status, timeoutMs) => {
  const missing = new Set(ids.filter((id) => seen.get(id)?.[status] === undefined));
  if (missing.size === 0) return Promise.resolve(Math.max(...ids.map((id) => seen.get(id)[status])));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${missing.size} task(s) never ${status}`)), timeoutMs);
    waiters.push({ ids: missing, status, resolve: (t) => { clearTimeout(timer); resolve(t); } });
  });
};

try {
  for (let i = 0; i < 20; i++) await client.system.ping(); // warm up both ends

  const pingMs = [];
  for (let i = 0; i < 200; i++) { const t = now(); await client.system.ping(); pingMs.push(now() - t); }
  const pingIdleMs = [];
  for (let i = 0; i < Math.min(SAMPLES, 100); i++) {
    await idleGap();
    const t = now(); await client.system.ping(); pingIdleMs.push(now() - t);
  }

  const startMs = [], doneMs = [];
  let merged = 0;
  for (let i = 0; i < SAMPLES; i++) {
    await idleGap();
    const t0 = now();
    const task = await client.tasks.create({ type: "demo.noop" });
    await until([task.id], "COMPLETED", 30_000);
    const s = seen.get(task.id);
    if (s.RUNNING !== undefined) startMs.push(s.RUNNING - t0); else merged += 1;
    doneMs.push(s.COMPLETED - t0);
  }

  // the drain: N creates, one call each, all due at one moment ahead (queued before it comes)
  const leadMs = 1500 + N / 4;
  const dueWall = Date.now() + leadMs;
  const due = now() + (dueWall - Date.now());
  const t0 = now();
  const created = await Promise.all(Array.from({ length: N }, () => client.tasks.create({ type: "demo.noop", runAt: dueWall })));
  const tCreated = now();
  if (tCreated > due) console.error("warning: enqueue overlapped the drain (lead too short)");
  const ids = created.map((t) => t.id);
  const tLast = await until(ids, "COMPLETED", 120_000 + N * 10);
  const drainS = (tLast - Math.max(due, tCreated)) / 1000;
  if (seqGaps) fail(`${seqGaps} task.updated seq gap(s)`);

  console.log("BENCH-RESULT " + JSON.stringify({
    system: "electron-bridge SidecarClient (Node)",
    node: process.version,
    ready_ms: pct(readyMs, 50),
    ready_samples_ms: readyMs,
    ping_ms: summary(pingMs),
    ping_after_gap_ms: summary(pingIdleMs),
    latency: { start_ms: summary(startMs), complete_ms: summary(doneMs), running_not_announced: merged },
    n: N,
    enqueue_per_s: N / ((tCreated - t0) / 1000),
    drain_per_s: N / drainS,
  }));
} catch (err) {
  fail(err?.stack ?? String(err));
} finally {
  closing = true;
  await client.close().catch(() => {});
}
