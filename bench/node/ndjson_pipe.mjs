// The pipe ceiling: Node spawns a trivial Python NDJSON echo (bench/ceilings/echo.py) and measures
// sequential round trips (back to back, and after random idle gaps) and pipelined throughput.
// Prints one "BENCH-RESULT {json}" line.
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";

import { idleGap, now, parseArgs, pct, summary } from "./measure.mjs";

const args = parseArgs();
const python = args.python ?? "python3";
const SEQ = Number(args.seq ?? 2000);
const PIPE = Number(args.pipelined ?? 20000);
const IDLE = Number(args.idle ?? 100); // round trips after a random idle gap, as the latency probes meet the pipe

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
  await idleGap();
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
  sequential_rtt_us: summary(rtt),
  sequential_per_s: 1e6 / pct(rtt, 50),
  after_idle_rtt_us: IDLE ? summary(idleRtt) : null,
  pipelined_per_s: PIPE / (pipeMs / 1000),
}) + "\n");
