/**
 * SidecarClient supervision against a scriptable Node stand-in sidecar (test/fixtures/fake-sidecar):
 * the edge cases the real sidecar cannot be made to show on demand.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { SidecarClient, stderrLevel, type ClientEvents, type LogEntry, type SidecarClientOptions } from '../src/client';
import { SidecarError } from '../src/errors';
import { ClientErrorCode } from '../src/protocol';
import { frozenSidecarName, resolveSidecarCommand } from '../src/resolve';
import { pidAlive, tempDir, until } from './helpers';

const FAKE = path.join(__dirname, 'fixtures', 'fake-sidecar.js');
const clients: SidecarClient[] = [];
after(async () => {
  await Promise.all(clients.map((c) => c.close()));
});

async function startFake(env: Record<string, string> = {}, extra: Partial<SidecarClientOptions> = {}) {
  const logs: LogEntry[] = [];
  const client = await SidecarClient.start({
    command: process.execPath,
    args: [FAKE],
    dbPath: '/nonexistent/fake.db',
    env,
    logger: (e) => logs.push(e),
    ...extra,
  });
  clients.push(client);
  return { client, logs };
}

function record<E extends keyof ClientEvents>(client: SidecarClient, ...events: E[]): Array<[E, ClientEvents[E]]> {
  const seen: Array<[E, ClientEvents[E]]> = [];
  for (const e of events) client.on(e, (p) => seen.push([e, p]));
  return seen;
}

test('the command line: program, args, then --db, --handlers per module, extra args', () => {
  const opts = { command: '/usr/bin/python3', args: ['-m', 'sidecar'], dbPath: '/tmp/x.db', handlers: ['app.handlers', 'app.more'], extraArgs: ['--concurrency', '2'] };
  const c = new (SidecarClient as unknown as new (o: SidecarClientOptions) => SidecarClient)(opts);
  assert.deepEqual(c.commandLine, {
    command: '/usr/bin/python3',
    args: ['-m', 'sidecar', '--db', '/tmp/x.db', '--handlers', 'app.handlers', '--handlers', 'app.more', '--concurrency', '2'],
    cwd: undefined,
  });
  const dflt = new (SidecarClient as unknown as new (o: SidecarClientOptions) => SidecarClient)({ dbPath: '/tmp/y.db', env: { TASK_SIDECAR_PYTHON: '/opt/py' }, cwd: '/src' });
  assert.deepEqual(dflt.commandLine, { command: '/opt/py', args: ['-m', 'sidecar', '--db', '/tmp/y.db'], cwd: '/src' });
});

test('resolveSidecarCommand: frozen binary in a packaged app, python -m sidecar in development', () => {
  assert.deepEqual(resolveSidecarCommand({ isPackaged: true, resourcesPath: '/opt/App/resources', platform: 'linux' }), {
    command: '/opt/App/resources/sidecar/task-sidecar',
    args: [],
  });
  assert.equal(
    resolveSidecarCommand({ isPackaged: true, resourcesPath: 'C:\\App\\resources', platform: 'win32' }).command,
    'C:\\App\\resources\\sidecar\\task-sidecar.exe',
  );
  assert.equal(frozenSidecarName('darwin'), 'task-sidecar');
  assert.deepEqual(resolveSidecarCommand({ isPackaged: false, env: {}, platform: 'linux', sourceRoot: '/repo' }), {
    command: 'python3',
    args: ['-m', 'sidecar'],
    cwd: '/repo',
  });
  assert.equal(resolveSidecarCommand({ isPackaged: false, env: { TASK_SIDECAR_PYTHON: '/venv/bin/python' } }).command, '/venv/bin/python');
  assert.equal(resolveSidecarCommand({ isPackaged: false, env: {}, platform: 'win32' }).command, 'python');
  // set but empty (a blank line in a .env file) is "not set", not a program named ''
  assert.equal(resolveSidecarCommand({ isPackaged: false, env: { TASK_SIDECAR_PYTHON: '' }, platform: 'linux' }).command, 'python3');
  assert.throws(() => new (SidecarClient as unknown as new (o: object) => SidecarClient)({}), /dbPath is required/);
});

test('non-protocol stdout lines before ready are skipped and logged; stderr goes to the logger', async () => {
  const { client, logs } = await startFake({ FAKE_NOISE: '1' });
  assert.equal(await client.system.ping(), 'pong');
  assert.ok(logs.some((l) => l.source === 'stdout' && /Welcome banner/.test(l.message)));
  assert.ok(logs.some((l) => l.source === 'stderr' && /fake sidecar spawn/.test(l.message) && l.pid === client.pid));
});

test('a sidecar that never reports ready: start rejects after startTimeoutMs with the stderr tail, nothing left running', async () => {
  const spawned: number[] = [];
  const started = Date.now();
  await assert.rejects(
    SidecarClient.start({
      command: process.execPath,
      args: [FAKE],
      dbPath: 'x',
      env: { FAKE_NEVER_READY: '1' },
      startTimeoutMs: 2000,
      logger: (e) => {
        const m = /pid (\d+)/.exec(e.message);
        if (e.source === 'stderr' && m) spawned.push(Number(m[1]));
      },
    }),
    (err: unknown) => {
      assert.ok(err instanceof SidecarError);
      assert.equal(err.code, ClientErrorCode.StartFailed);
      assert.match(err.message, /did not report sidecar\.ready within 2000 ms/);
      assert.match(err.message, /fake sidecar spawn #1/);
      return true;
    },
  );
  assert.ok(Date.now() - started < 6000);
  assert.equal(spawned.length, 1);
  await until(() => !pidAlive(spawned[0]), 10_000, 'the unready sidecar to be killed');
});

test('a program that cannot be spawned or exits before ready rejects start with a clear error', async () => {
  await assert.rejects(
    SidecarClient.start({ command: '/nonexistent/task-sidecar', dbPath: 'x' }),
    (err: unknown) => err instanceof SidecarError && err.code === ClientErrorCode.StartFailed && /could not be started \(spawn \/nonexistent\/task-sidecar ENOENT\)/.test(err.message),
  );
  const dir = tempDir();
  const counter = path.join(dir, 'count');
  fs.writeFileSync(counter, '1');
  await assert.rejects(
    SidecarClient.start({ command: process.execPath, args: [FAKE], dbPath: 'x', env: { FAKE_COUNTER_FILE: counter, FAKE_DIE_AFTER_FIRST: '1' } }),
    (err: unknown) => err instanceof SidecarError && err.code === ClientErrorCode.StartFailed && /exit code 3/.test(err.message) && /database is locked by another sidecar/.test(err.message),
  );
});

test('restarts are capped: attempts are reported, then restart-failed, and calls fail clearly', async () => {
  const dir = tempDir();
  const { client } = await startFake(
    { FAKE_COUNTER_FILE: path.join(dir, 'count'), FAKE_DIE_AFTER_FIRST: '1' },
    { restart: { maxAttempts: 3, initialDelayMs: 10, maxDelayMs: 40 } },
  );
  const seen = record(client, 'exit', 'restarting', 'restart-attempt-failed', 'restart-failed', 'restarted');
  const pending = (client as unknown as { call(m: string, p: unknown): Promise<unknown> }).call('test.exit', undefined);
  await assert.rejects(pending, (err: unknown) => err instanceof SidecarError && err.code === ClientErrorCode.SidecarExited && /exited unexpectedly \(exit code 7\)/.test(err.message));
  await until(() => client.state === 'failed', 20_000, 'restart-failed');
  assert.deepEqual(
    seen.map(([e]) => e),
    ['exit', 'restarting', 'restart-attempt-failed', 'restarting', 'restart-attempt-failed', 'restarting', 'restart-attempt-failed', 'restart-failed'],
  );
  assert.deepEqual(seen.filter(([e]) => e === 'restarting').map(([, p]) => (p as ClientEvents['restarting']).attempt), [1, 2, 3]);
  const failed = seen.at(-1)![1] as ClientEvents['restart-failed'];
  assert.equal(failed.attempts, 3);
  assert.match(failed.error.message, /could not be restarted after 3 attempts/);
  await assert.rejects(client.system.ping(), (err: unknown) => err instanceof SidecarError && err.code === ClientErrorCode.NotRunning);
  await client.close();
  assert.equal(client.state, 'closed');
});

test('a call made while the sidecar restarts waits for the new one', async () => {
  const { client } = await startFake({}, { restart: { initialDelayMs: 50 } });
  const seen = record(client, 'exit', 'restarted');
  const oldPid = client.pid!;
  process.kill(oldPid, 'SIGKILL');
  await until(() => client.state === 'restarting', 10_000, 'restarting');
  assert.equal(await client.system.ping(), 'pong');
  assert.notEqual(client.pid, oldPid);
  assert.deepEqual(seen.map(([e]) => e), ['exit', 'restarted']);
  assert.deepEqual(seen[0]![1], { pid: oldPid, code: null, signal: 'SIGKILL', expected: false });
  assert.equal((seen[1]![1] as ClientEvents['restarted']).pid, client.pid);
  assert.equal(client.readyInfo!.pid, client.pid);
});

test('a call made inside an exit listener waits for the restarted sidecar', async () => {
  const { client } = await startFake({}, { restart: { initialDelayMs: 50 } });
  const oldPid = client.pid!;
  let inListener: Promise<unknown> | undefined;
  let stateInListener: string | undefined;
  client.once('exit', () => {
    stateInListener = client.state;
    inListener = client.system.ping();
  });
  const restarted = new Promise<ClientEvents['restarted']>((resolve) => client.once('restarted', resolve));
  process.kill(oldPid, 'SIGKILL');
  const info = await restarted;
  assert.equal(await inListener, 'pong');
  assert.equal(stateInListener, 'restarting');
  assert.notEqual(info.pid, oldPid);
});

test('with restarts disabled, a call made inside an exit listener rejects at once: restarts are disabled', async () => {
  const { client } = await startFake({}, { restart: false });
  let inListener: Promise<unknown> | undefined;
  client.once('exit', () => {
    inListener = client.system.ping({ timeoutMs: 0 });
    inListener.catch(() => undefined); // asserted below
  });
  process.kill(client.pid!, 'SIGKILL');
  await until(() => inListener !== undefined, 10_000, 'the exit event');
  await assert.rejects(inListener!, (err: unknown) => err instanceof SidecarError && err.code === ClientErrorCode.StartFailed && /restarts are disabled/.test(err.message));
  assert.equal(client.state, 'failed');
});

test('close() escalates: system.shutdown ignored, SIGTERM ignored, SIGKILL; no process left', async () => {
  const { client, logs } = await startFake({ FAKE_IGNORE_SHUTDOWN: '1', FAKE_IGNORE_SIGTERM: '1' }, { shutdownTimeoutMs: 300, killTimeoutMs: 300 });
  const pid = client.pid!;
  const exits = record(client, 'exit', 'closed');
  await client.close();
  assert.equal(pidAlive(pid), false);
  assert.ok(logs.some((l) => /sending SIGTERM/.test(l.message)));
  assert.ok(logs.some((l) => /sending SIGKILL/.test(l.message)));
  assert.deepEqual(exits.map(([e]) => e), ['exit', 'closed']);
  assert.equal((exits[0]![1] as ClientEvents['exit']).expected, true);
  await client.close(); // idempotent
  await assert.rejects(client.tasks.list(), (err: unknown) => err instanceof SidecarError && err.code === ClientErrorCode.NotRunning);
});

test('a throwing event listener is logged and does not break the client', async () => {
  const { client, logs } = await startFake({}, { restart: { initialDelayMs: 10 } });
  client.on('restarted', () => {
    throw new Error('listener bug');
  });
  const ok: number[] = [];
  client.on('restarted', (info) => ok.push(info.pid));
  process.kill(client.pid!, 'SIGKILL');
  await until(() => ok.length === 1, 20_000, 'restarted');
  assert.ok(logs.some((l) => /listener for 'restarted' threw: Error: listener bug/.test(l.message)));
  assert.equal(await client.system.ping(), 'pong');
});

test('an app that exits without close() still leaves no sidecar behind (exit hook)', async () => {
  const out = execFileSync(process.execPath, [path.join(__dirname, 'fixtures', 'exit-without-close.js'), FAKE], { encoding: 'utf8', timeout: 20_000 });
  const pid = Number(out.trim());
  assert.ok(pid > 0, out);
  await until(() => !pidAlive(pid), 10_000, `sidecar ${pid} to be gone`);
});

test('system.shutdown, even through call(), closes the client instead of triggering a restart', async () => {
  const { client } = await startFake({}, { restart: { initialDelayMs: 10 } });
  const seen = record(client, 'exit', 'restarting', 'closed');
  const pid = client.pid;
  assert.equal(await client.call('system.shutdown', undefined), null);
  assert.equal(client.state, 'closed');
  assert.equal(pidAlive(pid), false);
  assert.deepEqual(seen.map(([e]) => e), ['exit', 'closed']);
});

test('stderr lines get a log level from Python logging prefixes', () => {
  assert.equal(stderrLevel('2026-11-25 18:30:56,598 INFO sidecar.persistence: migrating'), 'info');
  assert.equal(stderrLevel('2026-11-25 18:30:56,598 WARNING sidecar: slow handler'), 'warn');
  assert.equal(stderrLevel('2026-11-25 18:36:40,406 ERROR sidecar: another task-sidecar already uses x'), 'error');
  assert.equal(stderrLevel('Traceback (most recent call last):'), 'error');
  assert.equal(stderrLevel('DEBUG claim took 2 ms'), 'debug');
  assert.equal(stderrLevel('some print() from a handler'), 'info');
});

test('the sidecar gets PYTHONUTF8=1, the caller\'s env, and --db / --handlers after its args', async () => {
  // a caller's PYTHONUTF8=0 does not turn UTF-8 mode off
  const { client } = await startFake({ FAKE_EXTRA: 'yes', PYTHONUTF8: '0' }, { handlers: ['app.handlers'] });
  const info = client.readyInfo as unknown as { argv: string[]; env: Record<string, string | null> };
  assert.deepEqual(info.env, { PYTHONUTF8: '1', FAKE_EXTRA: 'yes' });
  assert.deepEqual(info.argv, ['--db', '/nonexistent/fake.db', '--handlers', 'app.handlers']);
});
