// The pipe ceiling: Node spawns a trivial Python NDJSON echo (bench/ceilings/echo.py) and measures
// sequential round trips (back to back, and after random idle gaps) and pipelined throughput.
// Prints one "BENCH-RESULT {json}" line.
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, v, i, arr) => (v.startsWith("--") ? [...acc, [v.slice(2), arr[i + 1]]] : acc), [])
);
const python = args.python ?? "python3";
const SEQ = Number(args.seq ?? 2000);
const PIPE = Number(args.pipelined ?? 20000);
const IDLE = Number(args.idle ?? 100); // round trips after a random idle gap, as the latency probes meet the pipe
const now = () => Number(process.hrtime.bigint()) / 1e6;
const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  const k = ((s.length - 1) * p) / 100, lo = Math.floor(k), hi = Math.min(lo + 1, s.length - 1);
  return s[lo] + (s[hi] - s[lo]) * (k - lo);
};

const child = spawn(python, ["-m", "bench.ceilings.echo"], { cwd: args.cwd, stdio: ["pipe", "pipe", "inherit"] });
child.stdin.on("error", () => {});
const rl = createInterface({ input: child.stdout, crlfDelay: Infinity });
const waiting = new Map();
rl.on("line", (line) => {
  const msg = JSON.parse(line);
  const done = waiting.get(msg.id);
  if (done) { waiting.delete(msg.id); done(now()); }
});
let nextId = 1;
const call = () => new Promise((resolve) => {
  const id = nextId++;
  waiting.set(id, resolve);
  child.stdin.write(JSON.stringify({ jsonrpc: "2.0", id, method: "system.ping" }) + "\n");
});

await call(); // warm up (interpreter start)
const rtt = [];
for (let i = 0; i < SEQ; i++) { const t = now(); const t1 = await call(); rtt.push((t1 - t) * 1000); }
const idleRtt = [];
for (let i = 0; i < IDLE; i++) {
  await new Promise((r) => setTimeout(r, 5 + Math.random() * 95));
  const t = now(); const t1 = await call(); idleRtt.push((t1 - t) * 1000);
}
const t0 = now();
const all = [];
for (let i = 0; i < PIPE; i++) all.push(call());
await Promise.all(all);
const pipeMs = now() - t0;
child.stdin.end();
await new Promise((r) => child.on("exit", r));
process.stdout.write("BENCH-RESULT " + JSON.stringify({
  system: "NDJSON pipe Node<->Python", node: process.version, sequential: SEQ, pipelined: PIPE,
  sequential_rtt_us: { p50: pct(rtt, 50), p95: pct(rtt, 95), p99: pct(rtt, 99) },
  sequential_per_s: 1e6 / pct(rtt, 50),
  after_idle_rtt_us: IDLE ? { n: IDLE, p50: pct(idleRtt, 50), p95: pct(idleRtt, 95), p99: pct(idleRtt, 99) } : null,
  pipelined_per_s: PIPE / (pipeMs / 1000),
}) + "\n");
