import { test } from 'node:test';
import assert from 'node:assert/strict';

import { SidecarError } from '../src/errors';
import { DEFAULT_RENDERER_METHODS, IPC_EVENT_CHANNEL, channelFor, type IpcEnvelope, type TaskEvent } from '../src/ipc-contract';
import { ClientErrorCode, ErrorCode } from '../src/protocol';
import { registerTaskIpc, type RegisterTaskIpcOptions } from '../src/relay';
import { FakeClient, FakeIpcMain, FakeIpcRenderer, FakeWindow } from './electron-standins';
import { makeTask } from './helpers';

function setup(extra: Partial<RegisterTaskIpcOptions> = {}) {
  const ipcMain = new FakeIpcMain();
  const client = new FakeClient();
  const windows = [new FakeWindow(), new FakeWindow()];
  const reg = registerTaskIpc({ ipcMain, client, getWindows: () => windows, ...extra });
  const page = new FakeIpcRenderer(ipcMain, windows[0]!.webContents);
  return { ipcMain, client, windows, reg, page };
}

test('registers exactly the default allow-list; never system.shutdown; delete/prune only on opt-in', () => {
  const { ipcMain, reg } = setup();
  assert.deepEqual([...ipcMain.handlers.keys()].sort(), DEFAULT_RENDERER_METHODS.map((m) => channelFor(m)).sort());
  assert.equal(ipcMain.handlers.has('task-sidecar:system.shutdown'), false);
  assert.equal(ipcMain.handlers.has('task-sidecar:tasks.delete'), false);
  reg.dispose();
  assert.equal(ipcMain.handlers.size, 0);

  const destructive = setup({ allowDestructive: true });
  assert.ok(destructive.ipcMain.handlers.has('task-sidecar:tasks.delete'));
  assert.ok(destructive.ipcMain.handlers.has('task-sidecar:tasks.prune'));

  const ipc = new FakeIpcMain();
  const base = { ipcMain: ipc, client: new FakeClient(), getWindows: () => [] };
  assert.throws(() => registerTaskIpc({ ...base, methods: ['system.shutdown' as never] }), /cannot be exposed/);
  assert.throws(() => registerTaskIpc({ ...base, methods: ['rpc.discover' as never] }), /cannot be exposed/);
  assert.throws(() => registerTaskIpc({ ...base, methods: ['tasks.delete'] }), /allowDestructive/);
});

test('a valid call reaches the client and the result comes back in an ok envelope', async () => {
  const { client, page } = setup();
  const task = makeTask();
  client.answer = () => task;
  const env = (await page.invoke('task-sidecar:tasks.create', { type: 'demo.sleep', details: { seconds: 1 } })) as IpcEnvelope<unknown>;
  assert.deepEqual(env, { ok: true, result: task });
  assert.deepEqual(client.calls, [{ method: 'tasks.create', params: { type: 'demo.sleep', details: { seconds: 1 } } }]);
});

test('methods without params accept nothing, and list defaults to {}', async () => {
  const { client, page } = setup();
  client.answer = (m) => (m === 'tasks.stats' ? { total: 0, byStatus: {}, byType: {} } : { tasks: [], nextCursor: null });
  assert.equal(((await page.invoke('task-sidecar:tasks.stats')) as IpcEnvelope<unknown>).ok, true);
  assert.equal(((await page.invoke('task-sidecar:tasks.list')) as IpcEnvelope<unknown>).ok, true);
  assert.deepEqual(client.calls, [
    { method: 'tasks.stats', params: undefined },
    { method: 'tasks.list', params: {} },
  ]);
});

test('a sidecar error crosses invoke with code, message and data', async () => {
  const { client, page } = setup();
  client.answer = () => {
    throw new SidecarError(ErrorCode.InvalidTransition, 'invalid transition COMPLETED -> CANCELLED', { id: 'x', from: 'COMPLETED', to: 'CANCELLED' });
  };
  const env = await page.invoke('task-sidecar:tasks.cancel', { id: 'x' });
  assert.deepEqual(env, {
    ok: false,
    error: { code: -32002, message: 'invalid transition COMPLETED -> CANCELLED', data: { id: 'x', from: 'COMPLETED', to: 'CANCELLED' } },
  });
  client.answer = () => {
    throw new Error('something else');
  };
  assert.deepEqual(await page.invoke('task-sidecar:tasks.get', { id: 'x' }), { ok: false, error: { code: ErrorCode.InternalError, message: 'something else' } });
});

const BAD_INPUT: Array<[method: string, args: unknown[], field: string, reason: RegExp]> = [
  ['tasks.create', [{ type: 'demo.sleep', evil: 1 }], 'evil', /unknown field/],
  ['tasks.create', [{ details: {} }], 'type', /required/],
  ['tasks.create', [{ type: 42 }], 'type', /string/],
  ['tasks.create', [{ type: '' }], 'type', /empty/],
  ['tasks.create', [{ type: 'x'.repeat(201) }], 'type', /at most 200/],
  ['tasks.create', [{ type: 'demo.sleep', details: [1, 2] }], 'details', /object/],
  ['tasks.create', [{ type: 'demo.sleep', details: { when: new Date(0) } }], 'details.when', /not a JSON value/],
  ['tasks.create', [{ type: 'demo.sleep', details: { n: Number.NaN } }], 'details.n', /finite/],
  ['tasks.create', [{ type: 'demo.sleep', details: { big: 'x'.repeat(1024 * 1024 + 1) } }], 'details', /at most 1048576 bytes/],
  ['tasks.create', [{ type: 'demo.sleep', priority: 1.5 }], 'priority', /integer/],
  ['tasks.create', [{ type: 'demo.sleep', maxAttempts: 0 }], 'maxAttempts', />= 1/],
  ['tasks.create', [{ type: 'demo.sleep', onChildFailure: 'explode' }], 'onChildFailure', /one of fail, continue/],
  ['tasks.create', [{ type: 'demo.sleep', weight: 0 }], 'weight', /> 0/],
  ['tasks.create', [{ type: 'demo.sleep', ref: 'a' }], 'ref', /unknown field/],
  ['tasks.create', [{ type: 'demo.sleep', dependsOn: 'abc' }], 'dependsOn', /array/],
  ['tasks.create', ['demo.sleep'], 'params', /must be an object/],
  ['tasks.create', [[{ type: 'demo.sleep' }]], 'params', /must be an object/],
  ['tasks.create', [{ type: 'demo.sleep' }, { extra: true }], 'params', /too many arguments/],
  ['tasks.createMany', [{ tasks: [] }], 'tasks', /at least 1/],
  ['tasks.createMany', [{ tasks: [{ type: 'a' }, { type: 'b', bogus: 1 }] }], 'tasks[1].bogus', /unknown field/],
  ['tasks.get', [{}], 'id', /required/],
  ['tasks.get', [{ id: { $ne: null } }], 'id', /string/],
  ['tasks.get', [{ id: 'x', include: ['secrets'] }], 'include[0]', /one of children/],
  ['tasks.list', [{ limit: 5000 }], 'limit', /<= 1000/],
  ['tasks.list', [{ status: ['BOGUS'] }], 'status[0]', /one of QUEUED/],
  ['tasks.list', [{ status: 'QUEUED' }], 'status', /array/],
  ['tasks.stats', [{ anything: 1 }], 'params', /takes no params/],
  ['tasks.cancel', [{ id: 'x', force: true }], 'force', /unknown field/],
];

test('rejected renderer input never reaches the sidecar and comes back as -32602 naming the field', async () => {
  const { client, page } = setup();
  for (const [method, args, field, reason] of BAD_INPUT) {
    const env = (await page.invoke(`task-sidecar:${method}`, ...args)) as IpcEnvelope<unknown>;
    assert.equal(env.ok, false, `${method} ${JSON.stringify(args).slice(0, 80)}`);
    if (env.ok) continue;
    assert.equal(env.error.code, ErrorCode.InvalidParams, method);
    assert.equal((env.error.data as { field: string }).field, field, `${method}: ${env.error.message}`);
    assert.match((env.error.data as { reason: string }).reason, reason, `${method}: ${env.error.message}`);
  }
  assert.deepEqual(client.calls, []);
});

test("params the sidecar's own schema refuses are refused by the relay too, before reaching it", async () => {
  const { client, page } = setup({ allowDestructive: true, methods: ['tasks.create', 'tasks.list', 'tasks.prune', 'queue.pause', 'queue.setConcurrency'] });
  const cases: Array<[method: string, params: unknown, field: string, reason: RegExp]> = [
    ['tasks.prune', { statuses: [] }, 'statuses', /at least 1 items/],
    ['tasks.prune', { olderThanMs: 253_402_300_800_000 }, 'olderThanMs', /<= 253402300799999/],
    ['tasks.list', { cursor: 'x'.repeat(201) }, 'cursor', /at most 200 characters/],
    ['queue.pause', { type: '' }, 'type', /must not be empty/],
    ['queue.setConcurrency', { type: '', limit: 2 }, 'type', /must not be empty/],
    ['tasks.create', { type: 'demo.noop', runAt: 253_402_300_800_000 }, 'runAt', /<= 253402300799999/],
    ['tasks.create', { type: 'demo.noop', dependsOn: [''] }, 'dependsOn[0]', /must not be empty/],
  ];
  for (const [method, params, field, reason] of cases) {
    const env = (await page.invoke(`task-sidecar:${method}`, params)) as IpcEnvelope<unknown>;
    assert.equal(env.ok, false, `${method} ${JSON.stringify(params).slice(0, 60)} was accepted`);
    if (env.ok) continue;
    assert.equal(env.error.code, ErrorCode.InvalidParams, method);
    assert.equal((env.error.data as { field: string }).field, field, `${method}: ${env.error.message}`);
    assert.match((env.error.data as { reason: string }).reason, reason, `${method}: ${env.error.message}`);
  }
  assert.deepEqual(client.calls, []);
  // the bounds themselves still pass
  client.answer = () => ({ tasks: [], nextCursor: null });
  assert.equal(((await page.invoke('task-sidecar:tasks.list', { cursor: 'x'.repeat(200) })) as IpcEnvelope<unknown>).ok, true);
});

test('a prototype-polluting key is passed on as plain data, never as a prototype', async () => {
  const { client, page } = setup();
  const details = JSON.parse('{"__proto__": {"polluted": true}, "ok": 1}') as Record<string, unknown>;
  await page.invoke('task-sidecar:tasks.create', { type: 'demo.noop', details });
  const sent = client.calls[0]!.params as { details: Record<string, unknown> };
  assert.equal(({} as Record<string, unknown>)['polluted'], undefined);
  assert.equal(Object.getPrototypeOf(sent.details), Object.prototype);
  assert.deepEqual(JSON.parse(JSON.stringify(sent.details)), { ['__proto__']: { polluted: true }, ok: 1 });
});

test('the sender frame is checked: unknown window, gone frame, subframe and foreign origin are refused', async () => {
  const { client, ipcMain, windows, page } = setup();
  const stranger = new FakeIpcRenderer(ipcMain, new FakeWindow().webContents);
  const cases: Array<[FakeIpcRenderer, RegExp]> = [[stranger, /not one of the app windows/]];
  const gone = new FakeIpcRenderer(ipcMain, windows[1]!.webContents);
  gone.frame = null;
  cases.push([gone, /frame is gone/]);
  const sub = new FakeIpcRenderer(ipcMain, windows[1]!.webContents);
  sub.frame = { url: 'file:///app/index.html', parent: { url: 'file:///app/index.html' } };
  cases.push([sub, /subframes/]);
  const evil = new FakeIpcRenderer(ipcMain, windows[1]!.webContents, 'https://evil.example/phish.html');
  cases.push([evil, /not allowed/]);
  for (const [renderer, why] of cases) {
    const env = (await renderer.invoke('task-sidecar:tasks.list', {})) as IpcEnvelope<unknown>;
    assert.equal(env.ok, false);
    if (env.ok) continue;
    assert.equal(env.error.code, ClientErrorCode.Forbidden);
    assert.match(env.error.message, why);
  }
  windows[0]!.destroyed = true;
  const env = (await page.invoke('task-sidecar:tasks.list', {})) as IpcEnvelope<unknown>;
  assert.equal(env.ok, false, 'a destroyed window is not an app window any more');
  assert.deepEqual(client.calls, []);
});

test('allowedOrigins and validateSender configure the origin check', async () => {
  const dev = setup({ allowedOrigins: ['http://localhost:5173', 'app://bundle'] });
  dev.client.answer = () => ({ tasks: [], nextCursor: null });
  const w = dev.windows[1]!.webContents;
  const vite = new FakeIpcRenderer(dev.ipcMain, w, 'http://localhost:5173/index.html');
  const custom = new FakeIpcRenderer(dev.ipcMain, w, 'app://bundle/index.html');
  const file = new FakeIpcRenderer(dev.ipcMain, w, 'file:///app/index.html');
  const otherPort = new FakeIpcRenderer(dev.ipcMain, w, 'http://localhost:5174/');
  assert.equal(((await vite.invoke('task-sidecar:tasks.list', {})) as IpcEnvelope<unknown>).ok, true);
  assert.equal(((await custom.invoke('task-sidecar:tasks.list', {})) as IpcEnvelope<unknown>).ok, true);
  assert.equal(((await file.invoke('task-sidecar:tasks.list', {})) as IpcEnvelope<unknown>).ok, false);
  assert.equal(((await otherPort.invoke('task-sidecar:tasks.list', {})) as IpcEnvelope<unknown>).ok, false);

  const custom2 = setup({ validateSender: (frame) => frame.url.startsWith('file:///app/') });
  custom2.client.answer = () => ({ tasks: [], nextCursor: null });
  const ok = new FakeIpcRenderer(custom2.ipcMain, custom2.windows[0]!.webContents, 'file:///app/x.html');
  const no = new FakeIpcRenderer(custom2.ipcMain, custom2.windows[0]!.webContents, 'file:///etc/x.html');
  assert.equal(((await ok.invoke('task-sidecar:tasks.list', {})) as IpcEnvelope<unknown>).ok, true);
  assert.equal(((await no.invoke('task-sidecar:tasks.list', {})) as IpcEnvelope<unknown>).ok, false);
});

test('task.updated, task.deleted, restarted and queue.updated are broadcast to every live window; dispose stops it', () => {
  const { client, windows, reg } = setup();
  const third = new FakeWindow();
  third.destroyed = true;
  windows.push(third);
  const task = makeTask();
  client.emit('task.updated', { seq: 1, task });
  client.emit('task.deleted', { ids: [task.id] });
  client.emit('restarted', { version: '0.1.0', protocolVersion: '1', pid: 2, dbPath: '/x', recovered: { requeued: 0, failed: 0 } });
  const queue = { paused: true, pausedTypes: [], concurrency: 4, typeConcurrency: {} };
  client.emit('queue.updated', queue);
  const expected: TaskEvent[] = [
    { type: 'task.updated', params: { seq: 1, task } },
    { type: 'task.deleted', params: { ids: [task.id] } },
    { type: 'restarted', params: { version: '0.1.0', protocolVersion: '1', pid: 2, dbPath: '/x', recovered: { requeued: 0, failed: 0 } } },
    { type: 'queue.updated', params: queue },
  ];
  for (const w of windows.slice(0, 2)) {
    assert.deepEqual(
      w.webContents.sent.map((s) => s.channel),
      [IPC_EVENT_CHANNEL, IPC_EVENT_CHANNEL, IPC_EVENT_CHANNEL, IPC_EVENT_CHANNEL],
    );
    assert.deepEqual(
      w.webContents.sent.map((s) => s.args[0]),
      expected,
    );
  }
  assert.equal(third.webContents.sent.length, 0);
  reg.dispose();
  assert.equal(client.listenerCount(), 0);
  client.emit('task.updated', { seq: 2, task });
  assert.equal(windows[0]!.webContents.sent.length, 4);
});

test('a window showing a page of an origin that may not call gets no events', () => {
  const { client, windows } = setup();
  windows[1]!.webContents.url = 'https://evil.example/phish.html'; // navigated away, or opened on it
  const task = makeTask();
  client.emit('task.updated', { seq: 1, task });
  assert.equal(windows[0]!.webContents.sent.length, 1);
  assert.equal(windows[1]!.webContents.sent.length, 0);

  const custom = setup({ validateSender: (frame) => frame.url.startsWith('file:///app/') });
  custom.windows[1]!.webContents.url = 'file:///etc/other.html';
  custom.client.emit('task.updated', { seq: 1, task });
  assert.equal(custom.windows[0]!.webContents.sent.length, 1);
  assert.equal(custom.windows[1]!.webContents.sent.length, 0);
});

test('registering twice on one ipcMain replaces the first registration: events once, handlers kept', async () => {
  const ipcMain = new FakeIpcMain();
  const client = new FakeClient();
  client.answer = () => ({ tasks: [], nextCursor: null });
  const windows = [new FakeWindow()];
  const first = registerTaskIpc({ ipcMain, client, getWindows: () => windows });
  const second = registerTaskIpc({ ipcMain, client, getWindows: () => windows });
  client.emit('task.updated', { seq: 1, task: makeTask() });
  assert.equal(windows[0]!.webContents.sent.length, 1, 'each event reaches a window once');
  first.dispose(); // late: must not take the second registration's handlers with it
  const page = new FakeIpcRenderer(ipcMain, windows[0]!.webContents);
  assert.equal(((await page.invoke('task-sidecar:tasks.list', {})) as IpcEnvelope<unknown>).ok, true);
  client.emit('task.updated', { seq: 2, task: makeTask() });
  assert.equal(windows[0]!.webContents.sent.length, 2);
  second.dispose();
  assert.equal(client.listenerCount(), 0);
});

test('a registration made by a re-evaluated copy of the module (a hot reload) still replaces the earlier one', async () => {
  // a bundled main process under HMR runs relay.ts again: a registry private to the module
  // would start empty and leave both registrations live
  const relayPath = require.resolve('../src/relay');
  const fresh = (): typeof import('../src/relay') => {
    delete require.cache[relayPath];
    return require(relayPath) as typeof import('../src/relay');
  };
  const ipcMain = new FakeIpcMain();
  const client = new FakeClient();
  client.answer = () => ({ tasks: [], nextCursor: null });
  const windows = [new FakeWindow()];
  const first = fresh().registerTaskIpc({ ipcMain, client, getWindows: () => windows });
  const second = fresh().registerTaskIpc({ ipcMain, client, getWindows: () => windows });
  client.emit('task.updated', { seq: 1, task: makeTask() });
  assert.equal(windows[0]!.webContents.sent.length, 1, 'each event reaches a window once');
  first.dispose();
  const page = new FakeIpcRenderer(ipcMain, windows[0]!.webContents);
  assert.equal(((await page.invoke('task-sidecar:tasks.list', {})) as IpcEnvelope<unknown>).ok, true);
  second.dispose();
  assert.equal(client.listenerCount(), 0);
});
