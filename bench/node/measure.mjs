// What the Node measuring scripts share: their flags, a monotonic clock, percentiles, and the
// random idle gap the latency probes are sent after (as bench/sidecar_bench.py's _idle_gap).

/** `--name value` pairs of the command line, as an object of strings. */
export const parseArgs = (argv = process.argv.slice(2)) =>
  Object.fromEntries(argv.reduce((acc, v, i, arr) => (v.startsWith("--") ? [...acc, [v.slice(2), arr[i + 1]]] : acc), []));

/** Milliseconds, CLOCK_MONOTONIC. */
export const now = () => Number(process.hrtime.bigint()) / 1e6;

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Sleep a random 0.1–2× `gapMs` (5–100 ms by default): probes arrive at random phases. */
export const idleGap = (gapMs = 50) => sleep((0.1 + Math.random() * 1.9) * gapMs);

/** The `p`th percentile of `xs`, interpolated between the two nearest samples. */
export const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  const k = ((s.length - 1) * p) / 100, lo = Math.floor(k), hi = Math.min(lo + 1, s.length - 1);
  return s[lo] + (s[hi] - s[lo]) * (k - lo);
};

/** n, p50/p95/p99, min and max of `xs` (same unit as the samples). */
export const summary = (xs) =>
  xs.length ? { n: xs.length, p50: pct(xs, 50), p95: pct(xs, 95), p99: pct(xs, 99), max: Math.max(...xs), min: Math.min(...xs) } : { n: 0 };

/** Give up on the measurement: the runner shows the line; exit 2 = the system failed. */
export const fail = (msg, code = 2) => {
  process.stderr.write(`BENCH FAILURE: ${msg}\n`);
  process.exit(code);
};
