// plainjob (Node + better-sqlite3 v12): enqueue N no-op jobs, drain with W workers, then
// enqueue -> start latency on an idle queue. Prints one "BENCH-RESULT {json}" line.
import { mkdirSync, readdirSync, rmSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import Database from "better-sqlite3";
import { better, defineQueue, defineWorker } from "plainjob";
import { fail, idleGap, now, parseArgs, sleep, summary } from "./measure.mjs";

const require = createRequire(import.meta.url);
const args = parseArgs();
const N = Number(args.n ?? 5000);
const WORKERS = Number(args.workers ?? 4);
const SAMPLES = Number(args.samples ?? 20);
const TIMEOUT_MS = Number(args.timeout ?? 180) * 1000;
const dir = args.dir;
rmSync(dir, { recursive: true, force: true });
mkdirSync(dir, { recursive: true });

const silent = { error: (m) => process.stderr.write(`${m}\n`), warn: () => {}, info: () => {}, debug: () => {} };

const db = new Database(join(dir, "plainjob.db"));
const queue = defineQueue({ connection: better(db), logger: silent });
let done = 0, lastDone = 0, allDone;
const allDonePromise = new Promise((r) => (allDone = r));
const probes = new Map();
const workers = [];
for (let w = 0; w < WORKERS; w++) {
  workers.push(defineWorker("noop", (job) => {
    const t = now();
    const k = JSON.parse(job.data).k;
    if (k < 0) { probes.get(k)?.(t); return; }
    done++; lastDone = t;
    if (done === N) allDone();
  }, { queue, logger: silent }));
}

// as bench/common.py idle_footprint: CPU % of one core and thread switches per second while idle
function runAndWakeups() {
  let runNs = 0, switches = 0;
  for (const tid of readdirSync("/proc/self/task")) {
    try {
      runNs += Number(readFileSync(`/proc/self/task/${tid}/schedstat`, "utf8").split(" ")[0]);
      for (const m of readFileSync(`/proc/self/task/${tid}/status`, "utf8").matchAll(/ctxt_switches:\s+(\d+)/g)) switches += Number(m[1]);
    } catch { /* a thread that ended meanwhile */ }
  }
  return [runNs, switches];
}
async function idleFootprint(ms) {
  try {
    const [r0, s0] = runAndWakeups();
    await sleep(ms);
    const [r1, s1] = runAndWakeups();
    return { cpu_pct: (r1 - r0) / 1e9 / (ms / 1000) * 100, wakeups_per_s: (s1 - s0) / (ms / 1000) };
  } catch { return null; } // not Linux
}

const t0 = now();
for (let i = 0; i < N; i++) queue.add("noop", { k: i });
const t1 = now();
const tStart = now();
for (const w of workers) void w.start();
const timer = setTimeout(() => fail(`plainjob drained only ${done} of ${N}`), TIMEOUT_MS);
await allDonePromise;
clearTimeout(timer);
const drainMs = lastDone - tStart;
await sleep(200);
// as bench/common.py's PROBE_GAPS_S: idle probes 5-100 ms apart, awake ones 0.5-1.5 ms apart
const lat = { idle: [], awake: [] };
for (let k = 1; k <= 2 * SAMPLES; k++) {
  const kind = k <= SAMPLES ? "idle" : "awake";
  await (kind === "idle" ? idleGap() : sleep(0.5 + Math.random()));
  const started = new Promise((r) => probes.set(-k, r));
  const ts = now();
  queue.add("noop", { k: -k });
  const t = await Promise.race([started, new Promise((r) => setTimeout(() => r(null), 30000))]);
  if (t === null) fail(`plainjob latency probe ${k} never started`);
  lat[kind].push(t - ts);
}
const idle = await idleFootprint(Number(args["idle-ms"] ?? 2000)); // the workers wait for work: what that costs
await Promise.all(workers.map((w) => w.stop()));
const sqliteVersion = db.prepare("select sqlite_version() v").get().v;
queue.close();
const pkg = (name) => JSON.parse(readFileSync(require.resolve(`${name}/package.json`), "utf8")).version;
process.stdout.write("BENCH-RESULT " + JSON.stringify({
  system: "plainjob", version: `${pkg("plainjob")} (better-sqlite3 ${pkg("better-sqlite3")}, SQLite ${sqliteVersion}, Node ${process.version})`,
  n: N, workers: WORKERS,
  enqueue_per_s: N / ((t1 - t0) / 1000), drain_per_s: N / (drainMs / 1000),
  latency: { start_ms: summary(lat.idle), start_awake_ms: summary(lat.awake) }, idle,
  storage: "better-sqlite3: WAL, synchronous=NORMAL",
  notes: `${WORKERS} workers in one Node event loop; pollIntervall 1000 ms (default)`,
}) + "\n");
process.exit(0);
