import { test } from 'node:test';
import assert from 'node:assert/strict';

import { IPC_EVENT_CHANNEL, type TaskApi, type TaskEvent } from '../src/ipc-contract';
import { exposeTaskApi } from '../src/preload';
import { ClientErrorCode, ErrorCode } from '../src/protocol';
import { registerTaskIpc } from '../src/relay';
import { SidecarError } from '../src/renderer';
import { SidecarError as MainSidecarError } from '../src/errors';
import { FakeClient, FakeContextBridge, FakeIpcMain, FakeIpcRenderer, FakeWindow } from './electron-standins';
import { makeTask } from './helpers';

function world(options: { legacy?: boolean; allowDestructive?: boolean } = {}) {
  const ipcMain = new FakeIpcMain();
  const client = new FakeClient();
  const win = new FakeWindow();
  registerTaskIpc({ ipcMain, client, getWindows: () => [win], allowDestructive: options.allowDestructive ?? false });
  const ipcRenderer = new FakeIpcRenderer(ipcMain, win.webContents);
  const contextBridge = new FakeContextBridge(!options.legacy);
  exposeTaskApi({ contextBridge, ipcRenderer, allowDestructive: options.allowDestructive ?? false });
  const tasks = contextBridge.window['tasks'] as TaskApi;
  return { client, win, ipcRenderer, contextBridge, tasks };
}

test('window.tasks has one function per allowed method, onUpdate and methods; nothing else', () => {
  const { tasks, contextBridge } = world();
  assert.deepEqual(Object.keys(tasks).sort(), [
    'cancel', 'create', 'createMany', 'get', 'list', 'methods', 'onUpdate', 'pause', 'resume', 'retry', 'stats', 'tree',
  ]);
  for (const [k, v] of Object.entries(tasks)) if (k !== 'methods') assert.equal(typeof v, 'function', k);
  assert.equal('ipcRenderer' in contextBridge.window, false);
  assert.equal('delete' in tasks, false);
  assert.equal('shutdown' in tasks, false);
  assert.ok(Object.isFrozen(tasks), 'the page cannot swap the functions');
  assert.throws(() => vmAssign(tasks));
  const withDelete = world({ allowDestructive: true }).tasks as unknown as Record<string, unknown>;
  assert.equal(typeof withDelete['delete'], 'function');
  assert.equal(typeof withDelete['prune'], 'function');
});

function vmAssign(tasks: TaskApi): void {
  'use strict';
  (tasks as unknown as Record<string, unknown>)['create'] = () => 'hijacked';
}

test('calls resolve to results (not envelopes)', async () => {
  const { tasks, client } = world();
  const task = makeTask();
  client.answer = (m) => (m === 'tasks.create' ? task : { tasks: [task], nextCursor: null });
  assert.deepEqual(await tasks.create({ type: 'demo.sleep', details: { seconds: 2 } }), task);
  assert.deepEqual(await tasks.list({ limit: 10 }), { tasks: [task], nextCursor: null });
  assert.deepEqual(await tasks.list(), { tasks: [task], nextCursor: null });
  assert.deepEqual(client.calls.map((c) => c.method), ['tasks.create', 'tasks.list', 'tasks.list']);
});

test('a sidecar error is rethrown in the page as SidecarError with code and data', async () => {
  const { tasks, client } = world();
  client.answer = () => {
    throw new MainSidecarError(ErrorCode.TaskNotFound, 'task not found', { id: 'nope' });
  };
  await assert.rejects(tasks.get({ id: 'nope' }), (err: unknown) => {
    assert.ok(err instanceof SidecarError, 'instanceof SidecarError (renderer entry)');
    assert.equal(err.name, 'SidecarError');
    assert.equal(err.code, ErrorCode.TaskNotFound);
    assert.equal(err.message, 'task not found');
    assert.deepEqual(err.data, { id: 'nope' });
    assert.equal(err.method, 'tasks.get');
    assert.equal(typeof err.stack, 'string');
    return true;
  });
});

test('rejected renderer input surfaces as SidecarError -32602 and never reaches the client', async () => {
  const { tasks, client } = world();
  const bad = tasks as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>;
  await assert.rejects(bad['create']!({ type: 'demo.sleep', script: 'rm -rf' }), (err: unknown) => {
    assert.ok(err instanceof SidecarError);
    assert.equal(err.code, ErrorCode.InvalidParams);
    assert.deepEqual(err.data, { field: 'script', reason: 'unknown field' });
    return true;
  });
  await assert.rejects(bad['cancel']!(), (err: unknown) => err instanceof SidecarError && err.code === ErrorCode.InvalidParams);
  // Extra arguments from the page are dropped by the preload, not forwarded.
  client.answer = () => ({ total: 0, byStatus: {}, byType: {} });
  await bad['stats']!(undefined, { smuggled: true });
  assert.deepEqual(client.calls, [{ method: 'tasks.stats', params: undefined }]);
});

test('a refused sender surfaces as SidecarError Forbidden', async () => {
  const { tasks, ipcRenderer } = world();
  ipcRenderer.frame = { url: 'https://evil.example/', parent: null };
  await assert.rejects(tasks.stats(), (err: unknown) => err instanceof SidecarError && err.code === ClientErrorCode.Forbidden);
});

test('onUpdate delivers the event payload only (no IPC event), and unsubscribe stops it', () => {
  const { tasks, win, ipcRenderer } = world();
  const got: unknown[][] = [];
  const off = tasks.onUpdate((...args: unknown[]) => got.push(args));
  const task = makeTask();
  win.webContents.send(IPC_EVENT_CHANNEL, { type: 'task.updated', params: { seq: 1, task } } satisfies TaskEvent);
  assert.deepEqual(got, [[{ type: 'task.updated', params: { seq: 1, task } }]]);
  assert.ok(!JSON.stringify(got).includes('ipcRenderer'));
  assert.equal(ipcRenderer.listenerCount(IPC_EVENT_CHANNEL), 1);
  off();
  off();
  assert.equal(ipcRenderer.listenerCount(IPC_EVENT_CHANNEL), 0);
  win.webContents.send(IPC_EVENT_CHANNEL, { type: 'task.deleted', params: { ids: [task.id] } } satisfies TaskEvent);
  assert.equal(got.length, 1);
  assert.throws(() => tasks.onUpdate('not a function' as never), /callback must be a function/);
});

test('without executeInMainWorld (older Electron) the API is exposed and errors keep code in the message', async () => {
  const { tasks, client, contextBridge } = world({ legacy: true });
  assert.ok(contextBridge.exposed['tasks']);
  client.answer = () => {
    throw new MainSidecarError(ErrorCode.UnknownTaskType, 'unknown task type', { type: 'nope' });
  };
  await assert.rejects(tasks.create({ type: 'nope' }), (err: unknown) => {
    assert.ok(err instanceof SidecarError);
    assert.equal(err.code, ErrorCode.UnknownTaskType);
    assert.match(err.message, /^\[-32003\] unknown task type$/);
    return true;
  });
});
