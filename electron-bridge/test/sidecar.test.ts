/**
 * Integration tests against the real Python sidecar process.
 *
 * The sidecar is `<python> -m sidecar` run in the repository root (the package's parent folder);
 * <python> is env TASK_SIDECAR_PYTHON, else the repo's .venv, else python3.
 * Graph methods (issue 4) and rpc.discover are tested when the sidecar has them and skipped
 * (with the reason) while it answers -32601.
 */
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { SidecarClient, type ClientEvents, type LogEntry, type SidecarClientOptions } from '../src/client';
import { SidecarError } from '../src/errors';
import { checkAgainstOpenRpc } from '../src/openrpc';
import { ClientErrorCode, ErrorCode, METHOD_SPECS, type MethodName, type Task, type TaskUpdatedParams } from '../src/protocol';
import { TaskStore, type TaskStoreSource } from '../src/renderer';
import { exposeTaskApi } from '../src/preload';
import { registerTaskIpc } from '../src/relay';
import type { TaskApi } from '../src/ipc-contract';
import { FakeContextBridge, FakeIpcMain, FakeIpcRenderer, FakeWindow } from './electron-standins';
import { frozenSidecarName, resolveSidecarCommand } from '../src/resolve';
import { REPO_ROOT, pidAlive, sidecarPython, sleep, tempDir, until } from './helpers';

const clients: SidecarClient[] = [];
after(async () => {
  await Promise.all(clients.map((c) => c.close()));
  for (const c of clients) assert.equal(pidAlive(c.pid), false, `sidecar ${String(c.pid)} left running`);
});

async function start(extra: Partial<SidecarClientOptions> = {}): Promise<{ client: SidecarClient; logs: LogEntry[]; dbPath: string }> {
  const logs: LogEntry[] = [];
  const dbPath = extra.dbPath ?? path.join(tempDir('eb-sidecar-'), 'tasks.db');
  const client = await SidecarClient.start({
    command: sidecarPython(),
    args: ['-m', 'sidecar'],
    cwd: REPO_ROOT,
    dbPath,
    startTimeoutMs: 30_000,
    logger: (e) => logs.push(e),
    ...extra,
  });
  clients.push(client);
  return { client, logs, dbPath };
}

/** Collect task.updated notifications; wait for a task to reach a status. */
function watch(client: SidecarClient) {
  const updates: TaskUpdatedParams[] = [];
  client.on('task.updated', (p) => updates.push(p));
  return {
    updates,
    of: (id: string) => updates.filter((u) => u.task.id === id).map((u) => u.task),
    until: (id: string, status: Task['status'], timeoutMs = 15_000) =>
      until(() => updates.find((u) => u.task.id === id && u.task.status === status)?.task, timeoutMs, `${id} ${status}`),
  };
}

/** A TaskStore fed straight from the client (what the renderer gets through the relay). */
function storeSource(client: SidecarClient): TaskStoreSource {
  return {
    list: (params) => client.tasks.list(params),
    onUpdate: (cb) => {
      const offs = [
        client.on('task.updated', (params) => cb({ type: 'task.updated', params })),
        client.on('task.deleted', (params) => cb({ type: 'task.deleted', params })),
        client.on('restarted', (params) => cb({ type: 'restarted', params })),
      ];
      return () => offs.forEach((o) => o());
    },
  };
}

async function isImplemented(client: SidecarClient, method: MethodName, params: unknown): Promise<boolean> {
  try {
    await (client.call as (m: string, p: unknown) => Promise<unknown>)(method, params);
    return true;
  } catch (err) {
    if (err instanceof SidecarError && err.code === ErrorCode.MethodNotFound) return false;
    return true; // implemented, refused these params
  }
}

let shared: { client: SidecarClient; logs: LogEntry[]; dbPath: string };
before(async () => {
  shared = await start();
});

test('start resolves on sidecar.ready: readyInfo, pid, stderr to the logger', async () => {
  const { client, logs, dbPath } = shared;
  const info = client.readyInfo!;
  assert.equal(info.protocolVersion, '1');
  assert.equal(typeof info.version, 'string');
  assert.equal(info.pid, client.pid);
  assert.equal(path.resolve(info.dbPath), path.resolve(dbPath));
  assert.deepEqual(info.recovered, { requeued: 0, failed: 0, cancelled: 0, paused: 0 });
  assert.ok(pidAlive(client.pid));
  assert.equal(client.state, 'ready');
  await until(() => logs.some((l) => l.source === 'stderr'), 5000, 'a stderr line');
  assert.equal(logs.filter((l) => l.source === 'stdout').length, 0, 'nothing but protocol on stdout');
});

test('system.ping and system.info', async () => {
  const { client } = shared;
  assert.equal(await client.system.ping(), 'pong');
  const info = await client.system.info();
  assert.equal(info.protocolVersion, '1');
  assert.equal(info.pid, client.pid);
  const types = info.handlers.map((h) => h.type);
  for (const t of ['demo.noop', 'demo.sleep', 'demo.fail']) assert.ok(types.includes(t), t);
  for (const h of info.handlers) {
    for (const k of ['type', 'concurrency', 'maxAttempts', 'timeoutS', 'detailsSchema']) assert.ok(k in h, `${h.type}.${k}`);
  }
});

test('tasks.create: task.updated notifications arrive in order with consecutive seq and growing version', async () => {
  const { client } = shared;
  const w = watch(client);
  const created = await Promise.all([1, 2, 3].map((i) => client.tasks.create({ type: 'demo.sleep', details: { seconds: 0.3 + i * 0.05, steps: 4 }, priority: i })));
  for (const t of created) {
    assert.equal(t.status, 'QUEUED');
    assert.equal(t.version, 1);
    assert.equal(t.type, 'demo.sleep');
  }
  for (const t of created) await w.until(t.id, 'COMPLETED');
  const seqs = w.updates.map((u) => u.seq);
  for (let i = 1; i < seqs.length; i++) assert.equal(seqs[i], seqs[i - 1]! + 1, `seq ${seqs[i - 1]} then ${seqs[i]}`);
  for (const t of created) {
    const history = w.of(t.id);
    const versions = history.map((h) => h.version);
    assert.deepEqual(versions, [...versions].sort((a, b) => a - b), 'versions only grow');
    assert.equal(new Set(versions).size, versions.length);
    assert.equal(history.at(-1)!.progress, 100);
    assert.ok(history.some((h) => h.status === 'RUNNING'));
    const done = await client.tasks.get({ id: t.id });
    assert.equal(done.status, 'COMPLETED');
    assert.equal(done.attempt, 1);
    assert.equal(done.version, history.at(-1)!.version, 'the last notification is the stored state');
  }
});

test('tasks.createMany, list (filters, cursor pagination) and stats', async () => {
  const { client } = await start();
  const { tasks } = await client.tasks.createMany({ tasks: Array.from({ length: 25 }, (_, i) => ({ type: 'demo.noop', details: { i } })) });
  assert.equal(tasks.length, 25);
  assert.deepEqual(tasks.map((t) => (t.details as { i: number }).i), Array.from({ length: 25 }, (_, i) => i), 'request order');
  const seen: string[] = [];
  let cursor: string | null = null;
  let pages = 0;
  do {
    const page = await client.tasks.list({ type: ['demo.noop'], limit: 10, ...(cursor ? { cursor } : {}) });
    seen.push(...page.tasks.map((t) => t.id));
    cursor = page.nextCursor;
    pages++;
  } while (cursor);
  assert.equal(pages, 3);
  assert.deepEqual(new Set(seen), new Set(tasks.map((t) => t.id)));
  for (;;) {
    const stats = await client.tasks.stats();
    if (stats.byStatus.COMPLETED === 25) {
      assert.equal(stats.total, 25);
      assert.equal(stats.byType['demo.noop']?.COMPLETED, 25);
      break;
    }
    await sleep(50);
  }
  const none = await client.tasks.list({ status: ['FAILED'] });
  assert.deepEqual(none, { tasks: [], nextCursor: null });
});

test('cancel a running task, retry it, delete and prune; task.deleted is announced', async () => {
  const { client } = shared;
  const w = watch(client);
  const deleted: string[][] = [];
  client.on('task.deleted', (p) => deleted.push(p.ids));
  const t = await client.tasks.create({ type: 'demo.sleep', details: { seconds: 30, steps: 30 } });
  await w.until(t.id, 'RUNNING');
  await client.tasks.cancel({ id: t.id });
  await w.until(t.id, 'CANCELLED');
  const retried = await client.tasks.retry({ id: t.id });
  assert.equal(retried.status, 'QUEUED');
  assert.equal(retried.error, null);
  await client.tasks.cancel({ id: t.id });
  await until(() => w.of(t.id).filter((x) => x.status === 'CANCELLED').length === 2, 15_000, 'cancelled again');
  assert.deepEqual(await client.tasks.delete({ id: t.id }), { deleted: 1 });
  await until(() => deleted.some((ids) => ids.includes(t.id)), 5000, 'task.deleted');
  await assert.rejects(client.tasks.get({ id: t.id }), (err: unknown) => err instanceof SidecarError && err.code === ErrorCode.TaskNotFound);
  const f = await client.tasks.create({ type: 'demo.fail', details: { message: 'boom' } });
  const failed = await w.until(f.id, 'FAILED');
  assert.match(failed.error ?? '', /boom/);
  const pruned = await client.tasks.prune({ statuses: ['FAILED'] });
  assert.ok(pruned.deleted >= 1);
});

test('idempotencyKey returns the existing task', async () => {
  const { client } = shared;
  const key = `k-${Date.now()}`;
  const a = await client.tasks.create({ type: 'demo.noop', idempotencyKey: key });
  const b = await client.tasks.create({ type: 'demo.noop', idempotencyKey: key });
  assert.equal(b.id, a.id);
});

test('errors are mapped to SidecarError with the protocol code and data', async () => {
  const { client } = shared;
  const expectError = async (p: Promise<unknown>, code: number, check: (e: SidecarError) => void = () => undefined) => {
    await assert.rejects(p, (err: unknown) => {
      assert.ok(err instanceof SidecarError, String(err));
      assert.equal(err.code, code, err.message);
      check(err);
      return true;
    });
  };
  await expectError(client.tasks.get({ id: 'no-such-task' }), ErrorCode.TaskNotFound, (e) => assert.equal((e.data as { id: string }).id, 'no-such-task'));
  await expectError(client.tasks.create({ type: 'no.such.type' }), ErrorCode.UnknownTaskType, (e) => assert.equal((e.data as { type: string }).type, 'no.such.type'));
  await expectError(client.tasks.create({ type: 'demo.sleep', details: { seconds: -1 } }), ErrorCode.InvalidParams, (e) => {
    assert.equal((e.data as { field: string }).field, 'details.seconds');
    assert.match(e.message, /details\.seconds/);
  });
  await expectError((client.call as (m: string, p: unknown) => Promise<unknown>)('tasks.get', { id: 'x', bogus: 1 }), ErrorCode.InvalidParams, (e) =>
    assert.equal((e.data as { field: string }).field, 'bogus'),
  );
  await expectError(client.tasks.create({ type: 'demo.noop', parentId: 'missing-parent' }), ErrorCode.InvalidParams, (e) =>
    assert.equal((e.data as { field: string }).field, 'parentId'),
  );
  await expectError(client.tasks.list({ limit: 0 }), ErrorCode.InvalidParams);
  await expectError((client.call as (m: string, p: unknown) => Promise<unknown>)('no.such.method', {}), ErrorCode.MethodNotFound);
  const running = await client.tasks.create({ type: 'demo.sleep', details: { seconds: 5, steps: 5 } });
  await expectError(client.tasks.delete({ id: running.id }), ErrorCode.InvalidTransition, (e) => {
    const d = e.data as { id: string; from: string; to: string };
    assert.equal(d.id, running.id);
    assert.ok(['QUEUED', 'RUNNING'].includes(d.from));
  });
  await client.tasks.cancel({ id: running.id });
});

test('giant lines both ways: a 3 MB multi-byte details object and a multi-MB list page arrive intact', async () => {
  const { client } = await start();
  const big = 'ü✓😀'.repeat(256 * 1024); // ~2.3 MB of multi-byte UTF-8, split across many pipe chunks
  const created = await client.tasks.create({ type: 'demo.noop', details: { big, nested: { emoji: '😀', cjk: '下载' } } }, { timeoutMs: 60_000 });
  const got = await client.tasks.get({ id: created.id });
  assert.equal((got.details as { big: string }).big, big);
  assert.deepEqual((got.details as { nested: unknown }).nested, { emoji: '😀', cjk: '下载' });
  const blob = 'x'.repeat(4000);
  await client.tasks.createMany({ tasks: Array.from({ length: 1000 }, (_, i) => ({ type: 'demo.noop', details: { i, blob } })) }, { timeoutMs: 60_000 });
  const page = await client.tasks.list({ limit: 1000 });
  assert.equal(page.tasks.length, 1000);
  assert.ok(JSON.stringify(page).length > 4_000_000);
});

test("a request over the sidecar's --max-message-bytes fails at once with -32600; maxMessageBytes is passed to the sidecar", async () => {
  const isTooLong = (limit: number) => (err: unknown) =>
    err instanceof SidecarError &&
    err.code === ErrorCode.InvalidRequest &&
    new RegExp(`^tasks\\.create: the request is \\d+ bytes as one line, over the sidecar's limit of ${limit} \\(maxMessageBytes\\); it was not sent$`).test(err.message);
  // The default: the sidecar's 8 MiB. Without the check the sidecar answers with id null and the call waits for its timeout.
  const { client } = await start();
  let started = Date.now();
  await assert.rejects(client.tasks.create({ type: 'demo.noop', details: { blob: 'x'.repeat(9 * 1024 * 1024) } }, { timeoutMs: 10_000 }), isTooLong(8 * 1024 * 1024));
  assert.ok(Date.now() - started < 5_000, 'failed at once, not at the timeout');
  assert.equal(await client.system.ping(), 'pong');
  // A limit given in extraArgs is the one enforced.
  const small = await start({ extraArgs: ['--max-message-bytes', '65536'] });
  started = Date.now();
  await assert.rejects(small.client.tasks.create({ type: 'demo.noop', details: { blob: 'x'.repeat(70_000) } }, { timeoutMs: 10_000 }), isTooLong(65536));
  assert.ok(Date.now() - started < 5_000, 'failed at once, not at the timeout');
  assert.equal((await small.client.tasks.create({ type: 'demo.noop', details: { blob: 'x'.repeat(60_000) } })).type, 'demo.noop');
  // maxMessageBytes is passed to the sidecar: a 9 MiB request within 12 MiB is accepted by both.
  const large = await start({ maxMessageBytes: 12 * 1024 * 1024 });
  assert.deepEqual(large.client.commandLine.args.slice(-2), ['--max-message-bytes', String(12 * 1024 * 1024)]);
  const created = await large.client.tasks.create({ type: 'demo.noop', details: { blob: 'x'.repeat(9 * 1024 * 1024) } }, { timeoutMs: 60_000 });
  assert.equal(created.type, 'demo.noop');
});

test('an answer over the client\'s maxLineBytes fails its call at once with ResponseTooLarge; the client goes on', async () => {
  const { client, logs } = await start({ maxLineBytes: 2 * 1024 * 1024 });
  for (let i = 0; i < 3; i++) await client.tasks.create({ type: 'demo.noop', details: { blob: 'y'.repeat(900 * 1024) } });
  const started = Date.now();
  await assert.rejects(client.tasks.list({}, { timeoutMs: 10_000 }), (err: unknown) => {
    assert.ok(err instanceof SidecarError);
    assert.equal(err.code, ClientErrorCode.ResponseTooLarge, err.message);
    assert.match(err.message, /^tasks\.list: the sidecar's answer is \d+ bytes, over the client's maxLineBytes of 2097152; it was dropped$/);
    return true;
  });
  assert.ok(Date.now() - started < 5_000, 'failed at once, not at the timeout');
  assert.ok(logs.some((l) => l.source === 'bridge' && /the answer to tasks\.list/.test(l.message)));
  assert.equal((await client.tasks.list({ limit: 1 })).tasks.length, 1);
});

test('per-call timeout and AbortSignal (sidecar frozen with SIGSTOP); late answers are ignored', async () => {
  const { client } = await start();
  process.kill(client.pid!, 'SIGSTOP');
  try {
    await assert.rejects(client.system.ping({ timeoutMs: 200 }), (err: unknown) => err instanceof SidecarError && err.code === ClientErrorCode.Timeout);
    const ac = new AbortController();
    const p = client.tasks.stats({ signal: ac.signal });
    setTimeout(() => ac.abort(), 50);
    await assert.rejects(p, (err: unknown) => err instanceof SidecarError && err.code === ClientErrorCode.Cancelled);
  } finally {
    process.kill(client.pid!, 'SIGCONT');
  }
  assert.equal(await client.system.ping(), 'pong');
  assert.equal(client.state, 'ready');
});

test('SIGKILL: pending calls fail clearly, the sidecar restarts, interrupted work resumes and a store resyncs', async () => {
  const { client } = await start({ restart: { initialDelayMs: 100 } });
  const w = watch(client);
  const events: Array<keyof ClientEvents> = [];
  for (const e of ['exit', 'restarting', 'restarted', 'restart-failed'] as const) client.on(e, () => events.push(e));
  const store = new TaskStore(storeSource(client));
  await store.start();
  const t = await client.tasks.create({ type: 'demo.sleep', details: { seconds: 2, steps: 20 } });
  await until(() => w.of(t.id).some((x) => x.progress >= 20), 10_000, 'progress');
  const oldPid = client.pid!;
  process.kill(oldPid, 'SIGSTOP');
  const pending = client.tasks.stats();
  await sleep(50);
  process.kill(oldPid, 'SIGKILL');
  await assert.rejects(pending, (err: unknown) => {
    assert.ok(err instanceof SidecarError);
    assert.equal(err.code, ClientErrorCode.SidecarExited);
    assert.match(err.message, /tasks\.stats: the sidecar exited unexpectedly \(signal SIGKILL\)/);
    return true;
  });
  const restarted = await until(() => (events.includes('restarted') ? client.readyInfo : null), 20_000, 'restarted');
  assert.notEqual(client.pid, oldPid);
  assert.equal(restarted.pid, client.pid);
  assert.equal(restarted.recovered.requeued, 1);
  assert.deepEqual(events, ['exit', 'restarting', 'restarted']);
  assert.equal(pidAlive(oldPid), false);
  const finished = await w.until(t.id, 'COMPLETED', 20_000);
  assert.equal(finished.attempt, 2, 'the interrupted run counted');
  await until(() => store.get(t.id)?.status === 'COMPLETED', 10_000, 'the store to see the task completed');
  assert.ok(store.snapshot().resyncs >= 2, 'the store resynced after the restart');
  const fromDb = await client.tasks.get({ id: t.id });
  assert.equal(store.get(t.id)!.version, fromDb.version);
  store.stop();
});

test('close() asks for shutdown and leaves no process; the database is free for the next sidecar', async () => {
  const { client, dbPath } = await start();
  const pid = client.pid!;
  const exits: ClientEvents['exit'][] = [];
  client.on('exit', (e) => exits.push(e));
  const w = watch(client);
  const t = await client.tasks.create({ type: 'demo.sleep', details: { seconds: 30, steps: 30 } });
  await w.until(t.id, 'RUNNING');
  const started = Date.now();
  await client.close();
  assert.equal(pidAlive(pid), false);
  assert.deepEqual(exits, [{ pid, code: 0, signal: null, expected: true }]);
  assert.ok(Date.now() - started < 10_000);
  await assert.rejects(client.system.ping(), (err: unknown) => err instanceof SidecarError && err.code === ClientErrorCode.NotRunning);
  const next = await start({ dbPath });
  const again = await next.client.tasks.get({ id: t.id });
  assert.ok(['QUEUED', 'RUNNING'].includes(again.status), `requeued after shutdown: ${again.status}`);
  await next.client.close();
});

test('a second sidecar on the same database is refused: start rejects with its stderr', async () => {
  await assert.rejects(start({ dbPath: shared.dbPath, restart: false }), (err: unknown) => {
    assert.ok(err instanceof SidecarError);
    assert.equal(err.code, ClientErrorCode.StartFailed);
    assert.match(err.message, /before it was ready/);
    assert.match(err.message, /another task-sidecar already uses|lock/i);
    return true;
  });
  assert.equal(await shared.client.system.ping(), 'pong', 'the first one is unharmed');
});

test('spawn errors Node throws at once (a cwd that is a file) reject start with StartFailed too', async () => {
  const file = path.join(tempDir('eb-cwd-'), 'not-a-dir');
  fs.writeFileSync(file, '');
  await assert.rejects(start({ cwd: file, restart: false }), (err: unknown) => {
    assert.ok(err instanceof SidecarError, `a SidecarError, not ${String(err)}`);
    assert.equal(err.code, ClientErrorCode.StartFailed);
    assert.match(err.message, /could not be started/);
    return true;
  });
});

test('a call made after a crash waits for the restarted sidecar while a tool it started still holds its stderr', async () => {
  const handlers = path.join(REPO_ROOT, 'electron-bridge', 'test', 'fixtures', 'inherit_stderr_handlers.py');
  const { client } = await start({ handlers: [handlers], restart: { initialDelayMs: 50 } });
  const w = watch(client);
  const t = await client.tasks.create({ type: 'fixture.inherit_stderr', details: {} });
  const toolPid = ((await w.until(t.id, 'COMPLETED')).result as { toolPid: number }).toolPid;
  try {
    process.kill(client.pid!, 'SIGKILL');
    await sleep(150); // the process is gone; its stderr stays open in the tool for seconds
    assert.equal(await client.system.ping(), 'pong');
  } finally {
    try {
      process.kill(toolPid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
});

test('handlers that cannot be loaded: start rejects with exit code 5 and the sidecar\'s reason', async () => {
  await assert.rejects(start({ handlers: ['no_such_app_handlers'], restart: false }), (err: unknown) => {
    assert.ok(err instanceof SidecarError);
    assert.equal(err.code, ClientErrorCode.StartFailed);
    assert.equal((err.data as { exitCode: number }).exitCode, 5);
    assert.match(err.message, /--handlers no_such_app_handlers: no module named 'no_such_app_handlers'/);
    return true;
  });
});

test('graph methods (issue 4): a batch tree, aggregate progress, dependencies, cycles, pause/resume, queue control', async (t) => {
  const { client } = await start();
  const probe = await client.tasks.create({ type: 'demo.noop' });
  if (!(await isImplemented(client, 'tasks.tree', { id: probe.id }))) {
    t.skip('the sidecar does not implement tasks.tree / pause / resume / queue.* yet (-32601)');
    return;
  }
  const w = watch(client);
  // A playlist-shaped batch: one parent, five children, created in one call with a client-side ref.
  const { tasks } = await client.tasks.createMany({
    tasks: [
      { ref: 'playlist', type: 'demo.noop', details: { title: 'playlist' } },
      ...Array.from({ length: 5 }, (_, i) => ({ type: 'demo.sleep', parentId: 'playlist', details: { seconds: 0.3 + i * 0.1, steps: 3 } })),
    ],
  });
  const parent = tasks[0]!;
  assert.ok(tasks.slice(1).every((c) => c.parentId === parent.id));
  const tree = await client.tasks.tree({ id: parent.id });
  assert.equal(tree.id, parent.id);
  assert.equal(tree.children?.length, 5);
  assert.equal(Object.values(tree.childCounts ?? {}).reduce((a, b) => a + b, 0), 5);
  const withChildren = await client.tasks.get({ id: parent.id, include: ['children'] });
  assert.equal(withChildren.children?.length, 5);
  const done = await w.until(parent.id, 'COMPLETED', 20_000);
  assert.equal(done.progress, 100);
  const parentProgress = w.of(parent.id).map((x) => x.progress);
  assert.ok(parentProgress.some((p) => p > 0 && p < 100), `aggregate progress announced: ${parentProgress.join(',')}`);

  // Dependencies and cycles.
  const a = await client.tasks.create({ type: 'demo.sleep', details: { seconds: 0.2, steps: 2 } });
  const b = await client.tasks.create({ type: 'demo.noop', dependsOn: [a.id] });
  assert.deepEqual(b.dependsOn, [a.id]);
  await w.until(b.id, 'COMPLETED', 15_000);
  assert.ok((await client.tasks.get({ id: a.id })).completedAt! <= (await client.tasks.get({ id: b.id })).startedAt!);
  await assert.rejects(
    client.tasks.createMany({ tasks: [{ ref: 'x', type: 'demo.noop', dependsOn: ['y'] }, { ref: 'y', type: 'demo.noop', dependsOn: ['x'] }] }),
    (err: unknown) => err instanceof SidecarError && err.code === ErrorCode.DependencyCycle && Array.isArray((err.data as { cycle: unknown }).cycle),
  );

  // Pause and resume a running task.
  const long = await client.tasks.create({ type: 'demo.sleep', details: { seconds: 10, steps: 100 } });
  await w.until(long.id, 'RUNNING');
  await client.tasks.pause({ id: long.id });
  await w.until(long.id, 'PAUSED');
  const resumed = await client.tasks.resume({ id: long.id });
  assert.ok(['QUEUED', 'RUNNING', 'WAITING'].includes(resumed.status), resumed.status);
  await client.tasks.cancel({ id: long.id });

  // Queue control (queue.updated announces every change).
  const queueEvents: ClientEvents['queue.updated'][] = [];
  client.on('queue.updated', (q) => queueEvents.push(q));
  const paused = await client.queue.pause({ type: 'demo.noop' });
  assert.deepEqual(paused.pausedTypes, ['demo.noop']);
  assert.equal(paused.paused, false);
  const limited = await client.queue.setConcurrency({ limit: 2 });
  assert.equal(limited.concurrency, 2);
  const status = await client.queue.status();
  assert.deepEqual(status, limited);
  await client.queue.resume({ type: 'demo.noop' });
  await client.queue.setConcurrency({ limit: null });
  assert.deepEqual((await client.queue.status()).pausedTypes, []);
  await until(() => queueEvents.length >= 4, 5000, 'queue.updated x4');
  assert.deepEqual(queueEvents[0], paused);
});

test("the bridge's types agree with the sidecar's rpc.discover document", async (t) => {
  const { client } = shared;
  let doc;
  try {
    doc = await client.rpc.discover();
  } catch (err) {
    if (err instanceof SidecarError && err.code === ErrorCode.MethodNotFound && process.env['TASK_SIDECAR_REQUIRE_DISCOVER'] !== '1') {
      t.skip('the sidecar does not answer rpc.discover yet (set TASK_SIDECAR_REQUIRE_DISCOVER=1 to make this a failure)');
      return;
    }
    throw err;
  }
  const graphNames = (Object.keys(METHOD_SPECS) as MethodName[]).filter((m) => METHOD_SPECS[m].graph);
  const hasGraph = doc.methods.some((m) => (graphNames as string[]).includes(m.name));
  const found = checkAgainstOpenRpc(doc, { allowMissingGraph: !hasGraph }).map((m) => m.detail);
  // Disagreements between the sidecar and docs/protocol.md (the contract the bridge follows),
  // reported to the sidecar's owner; listed here so they are visible without failing the suite.
  const known = new Map([
    [
      'tasks.create: the document has param "ref" the bridge does not type',
      'docs/protocol.md gives `ref` to tasks.createMany items only; the sidecar also accepts it on tasks.create',
    ],
  ]);
  for (const d of found) if (known.has(d)) t.diagnostic(`known sidecar/doc disagreement: ${d} (${known.get(d)!})`);
  assert.deepEqual(found.filter((d) => !known.has(d)), []);
});

test('packaged layout: the frozen binary under <resources>/sidecar/ is found and speaks the protocol', async (t) => {
  // build/freeze.py makes build/dist/task-sidecar/task-sidecar[.exe]; an app ships that folder as
  // extraResources "sidecar". Skipped when no frozen build is present.
  const bundle = path.join(REPO_ROOT, 'build', 'dist', 'task-sidecar');
  if (!fs.existsSync(path.join(bundle, frozenSidecarName()))) {
    t.skip('no frozen sidecar in build/dist/task-sidecar (run build/freeze.py)');
    return;
  }
  const resources = tempDir('eb-resources-');
  fs.symlinkSync(bundle, path.join(resources, 'sidecar'), 'dir');
  const program = resolveSidecarCommand({ isPackaged: true, resourcesPath: resources });
  assert.equal(program.command, path.join(resources, 'sidecar', frozenSidecarName()));
  const { client } = await start({ command: program.command, args: program.args });
  assert.equal(client.readyInfo!.protocolVersion, '1');
  const task = await client.tasks.create({ type: 'demo.noop' });
  assert.equal((await client.tasks.get({ id: task.id })).id, task.id);
  await client.close();
});

test('real sidecar output split into 1-7 byte pieces (multi-byte characters cut anywhere) decodes intact', async () => {
  const { client } = await start({
    command: process.execPath,
    args: [path.join(__dirname, 'fixtures', 'chunking-proxy.js'), sidecarPython(), '-m', 'sidecar'],
  });
  const w = watch(client);
  const details = { seconds: 0.2, steps: 4 };
  const task = await client.tasks.create({ type: 'demo.sleep', details, idempotencyKey: 'ünïcødé ✓ 😀 下载 — ok' });
  assert.equal(task.idempotencyKey, 'ünïcødé ✓ 😀 下载 — ok');
  const done = await w.until(task.id, 'COMPLETED');
  assert.equal(done.idempotencyKey, 'ünïcødé ✓ 😀 下载 — ok');
  const seqs = w.updates.map((u) => u.seq);
  assert.deepEqual(seqs, Array.from({ length: seqs.length }, (_, i) => seqs[0]! + i));
  assert.equal(await client.system.ping(), 'pong');
});

test('end to end: page -> preload -> relay -> real sidecar, and back to a TaskStore in the page', async () => {
  const { client } = await start({ restart: { initialDelayMs: 50 } });
  const ipcMain = new FakeIpcMain();
  const win = new FakeWindow();
  const reg = registerTaskIpc({ ipcMain, client, getWindows: () => [win] });
  const contextBridge = new FakeContextBridge();
  exposeTaskApi({ contextBridge, ipcRenderer: new FakeIpcRenderer(ipcMain, win.webContents) });
  const tasks = contextBridge.window['tasks'] as TaskApi;
  const store = new TaskStore(tasks);
  await store.start();
  const { tasks: created } = await tasks.createMany({
    tasks: [
      { ref: 'batch', type: 'demo.noop', details: {} },
      ...Array.from({ length: 4 }, () => ({ type: 'demo.sleep', parentId: 'batch', details: { seconds: 0.2, steps: 2 } })),
    ],
  });
  const parentId = created[0]!.id;
  await until(() => store.get(parentId)?.status === 'COMPLETED', 15_000, 'the batch to complete in the store');
  assert.equal(store.children(parentId).length, 4);
  assert.ok(store.children(parentId).every((c) => c.status === 'COMPLETED' && c.progress === 100));
  // The store equals the database.
  const fromDb = await tasks.list({ limit: 1000 });
  for (const t of fromDb.tasks) assert.equal(store.get(t.id)?.version, t.version, t.id);
  assert.equal(store.size, fromDb.tasks.length);
  // Errors arrive as SidecarError with code and data, through every layer.
  await assert.rejects(tasks.get({ id: 'no-such-task' }), (err: unknown) => err instanceof SidecarError && err.code === ErrorCode.TaskNotFound && (err.data as { id: string }).id === 'no-such-task');
  await assert.rejects(tasks.create({ type: 'demo.sleep', details: { seconds: -1 } }), (err: unknown) => err instanceof SidecarError && (err.data as { field: string }).field === 'details.seconds');
  // The sidecar dies: the relay forwards 'restarted', the page's store resyncs and keeps working.
  const resyncs = store.snapshot().resyncs;
  process.kill(client.pid!, 'SIGKILL');
  await until(() => store.snapshot().resyncs > resyncs && store.seq === null, 20_000, 'the store to resync after the restart');
  assert.ok(win.webContents.sent.some((m) => (m.args[0] as { type: string }).type === 'restarted'));
  const after = await tasks.create({ type: 'demo.noop' });
  await until(() => store.get(after.id)?.status === 'COMPLETED', 15_000, 'a task created after the restart');
  assert.equal(store.seq !== null && store.seq < 10, true, `seq restarted with the new sidecar (${String(store.seq)})`);
  store.stop();
  reg.dispose();
});
