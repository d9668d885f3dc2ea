import { PassThrough } from 'node:stream';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { LineDecoder, encodeMessage } from '../src/framing';
import type { Task, TaskStatus } from '../src/protocol';

/** The package directory (dist/test/.. /..) and the repository root above it. */
export const PACKAGE_DIR = path.resolve(__dirname, '..', '..');
export const REPO_ROOT = path.resolve(PACKAGE_DIR, '..');

/** Python for the real sidecar: env TASK_SIDECAR_PYTHON, else the repo's .venv, else python3. */
export function sidecarPython(): string {
  const fromEnv = process.env['TASK_SIDECAR_PYTHON'];
  if (fromEnv) return fromEnv;
  const venv = path.join(REPO_ROOT, '.venv', process.platform === 'win32' ? 'Scripts/python.exe' : 'bin/python');
  return fs.existsSync(venv) ? venv : 'python3';
}

const tempDirs: string[] = [];
process.once('exit', () => {
  for (const d of tempDirs) fs.rmSync(d, { recursive: true, force: true });
});

/** A fresh temporary directory, removed when the test process exits. */
export function tempDir(prefix = 'eb-test-'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  tempDirs.push(dir);
  return dir;
}

/** An in-memory peer: what the client writes arrives here as parsed messages; `send` writes back. */
export class FakePeer {
  /** client → peer */
  readonly toPeer = new PassThrough();
  /** peer → client */
  readonly toClient = new PassThrough();
  readonly received: Array<{ id?: number; method: string; params?: unknown }> = [];
  private waiters: Array<() => void> = [];

  constructor() {
    const decoder = new LineDecoder((line) => {
      this.received.push(JSON.parse(line) as { id?: number; method: string; params?: unknown });
      for (const w of this.waiters.splice(0)) w();
    });
    this.toPeer.on('data', (c: Buffer) => decoder.push(c));
  }

  send(message: unknown): void {
    this.toClient.write(encodeMessage(message));
  }

  raw(text: string | Buffer): void {
    this.toClient.write(text);
  }

  async nextRequest(index: number): Promise<{ id?: number; method: string; params?: unknown }> {
    while (this.received.length <= index) await new Promise<void>((r) => this.waiters.push(r));
    return this.received[index]!;
  }
}

let counter = 0;
export function makeTask(overrides: Partial<Task> = {}): Task {
  counter += 1;
  const now = 1_700_000_000_000 + counter;
  return {
    id: `00000000-0000-4000-8000-${String(counter).padStart(12, '0')}`,
    type: 'demo.sleep',
    status: 'QUEUED' as TaskStatus,
    parentId: null,
    progress: 0,
    message: null,
    details: {},
    result: null,
    error: null,
    priority: 0,
    attempt: 0,
    maxAttempts: 3,
    runAt: now,
    idempotencyKey: null,
    createdAt: now,
    updatedAt: now,
    startedAt: null,
    completedAt: null,
    version: 1,
    dependsOn: [],
    onChildFailure: 'fail',
    weight: 1,
    ...overrides,
  };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Poll until `check` returns truthy (or throw after timeoutMs). */
export async function until<T>(check: () => T | undefined | null | false, timeoutMs = 10_000, what = 'condition'): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = check();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

export function pidAlive(pid: number | undefined): boolean {
  if (!pid) return false;
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // A zombie still answers kill(0); look at /proc where it exists.
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return process.platform !== 'linux';
  }
}
