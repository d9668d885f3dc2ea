import { test } from 'node:test';
import assert from 'node:assert/strict';

import type { TaskEvent } from '../src/ipc-contract';
import type { ListTasksParams, Task, TaskList } from '../src/protocol';
import { TaskStore, type TaskStoreSource } from '../src/renderer';
import { makeTask, sleep, until } from './helpers';

/** A source backed by a "database" array, with a hook to delay list pages. */
class FakeSource implements TaskStoreSource {
  db = new Map<string, Task>();
  listCalls: ListTasksParams[] = [];
  listDelay = 0;
  failNext = false;
  private listeners = new Set<(e: TaskEvent) => void>();
  async list(params: ListTasksParams = {}): Promise<TaskList> {
    this.listCalls.push(params);
    if (this.failNext) {
      this.failNext = false;
      throw new Error('sidecar down');
    }
    const snapshot = [...this.db.values()].sort((a, b) => b.createdAt - a.createdAt);
    if (this.listDelay) await sleep(this.listDelay);
    const start = params.cursor ? Number(params.cursor) : 0;
    const limit = params.limit ?? 50;
    const page = snapshot.slice(start, start + limit);
    return { tasks: page, nextCursor: start + limit < snapshot.length ? String(start + limit) : null };
  }
  onUpdate(cb: (e: TaskEvent) => void): () => void {
    this.listeners.add(cb);
    return () => this.listeners.delete(cb);
  }
  emit(e: TaskEvent): void {
    for (const l of this.listeners) l(e);
  }
  put(task: Task): Task {
    this.db.set(task.id, task);
    return task;
  }
}

const bump = (t: Task, patch: Partial<Task>): Task => ({ ...t, ...patch, version: t.version + 1 });

test('initial load pages through tasks.list; updates apply by version, stale ones are ignored', async () => {
  const src = new FakeSource();
  for (let i = 0; i < 25; i++) src.put(makeTask());
  const store = new TaskStore(src, { pageSize: 10 });
  await store.start();
  assert.equal(store.size, 25);
  assert.equal(src.listCalls.length, 3);
  const t = store.all()[0]!;
  const v2 = bump(t, { status: 'RUNNING' });
  const v3 = bump(v2, { progress: 50 });
  src.emit({ type: 'task.updated', params: { seq: 1, task: v3 } });
  src.emit({ type: 'task.updated', params: { seq: 2, task: v2 } }); // late, older version
  assert.equal(store.get(t.id)!.version, v3.version);
  assert.equal(store.get(t.id)!.progress, 50);
  assert.equal(store.seq, 2);
  assert.equal(src.listCalls.length, 3, 'in-order seqs do not resync');
});

test('a gap in seq triggers a resync that brings the missed change', async () => {
  const src = new FakeSource();
  const a = src.put(makeTask());
  const store = new TaskStore(src);
  await store.start();
  src.emit({ type: 'task.updated', params: { seq: 1, task: a } });
  // seq 2 is lost: the task completed in the database
  const done = src.put({ ...a, status: 'COMPLETED', progress: 100, version: 5 });
  const b = src.put(makeTask());
  src.emit({ type: 'task.updated', params: { seq: 3, task: b } });
  await until(() => store.get(a.id)?.status === 'COMPLETED', 2000, 'resync');
  assert.equal(store.get(a.id)!.version, done.version);
  assert.equal(store.snapshot().resyncs, 2);
});

test('seq going backwards (a new sidecar) and a restarted event both resync', async () => {
  const src = new FakeSource();
  const store = new TaskStore(src);
  await store.start();
  const t = src.put(makeTask());
  src.emit({ type: 'task.updated', params: { seq: 7, task: t } });
  src.emit({ type: 'task.updated', params: { seq: 1, task: bump(t, {}) } });
  await until(() => store.snapshot().resyncs === 2, 2000, 'resync after seq reset');
  src.emit({ type: 'restarted', params: { version: '0.1.0', protocolVersion: '1', pid: 9, dbPath: '/x', recovered: { requeued: 1, failed: 0 } } });
  assert.equal(store.seq, null, 'the first seq after a restart is a new baseline');
  await until(() => store.snapshot().resyncs === 3, 2000, 'resync after restart');
});

test('task.deleted removes; a resync drops tasks gone from the database', async () => {
  const src = new FakeSource();
  const a = src.put(makeTask());
  const b = src.put(makeTask());
  const store = new TaskStore(src);
  await store.start();
  src.db.delete(a.id);
  src.emit({ type: 'task.deleted', params: { ids: [a.id] } });
  assert.equal(store.get(a.id), undefined);
  src.db.delete(b.id);
  await store.resync();
  assert.equal(store.size, 0);
});

test('updates arriving during a resync are not lost nor overwritten by the older list', async () => {
  const src = new FakeSource();
  const a = src.put(makeTask());
  const store = new TaskStore(src);
  await store.start();
  src.listDelay = 50;
  const sync = store.resync(); // the list snapshot is taken now: a at version 1
  const newer = bump(a, { status: 'RUNNING' });
  const created = makeTask();
  src.emit({ type: 'task.updated', params: { seq: 1, task: newer } });
  src.emit({ type: 'task.updated', params: { seq: 2, task: created } });
  await sync;
  assert.equal(store.get(a.id)!.status, 'RUNNING');
  assert.ok(store.get(created.id), 'a task created during the resync is kept');
});

test('concurrent resync requests are coalesced; a failed resync is reported and recovers', async () => {
  const src = new FakeSource();
  src.put(makeTask());
  const errors: unknown[] = [];
  const store = new TaskStore(src, { onError: (e) => errors.push(e) });
  await store.start();
  src.listCalls = [];
  src.listDelay = 20;
  await Promise.all([store.resync(), store.resync(), store.resync()]);
  await until(() => !store.snapshot().syncing, 2000);
  assert.ok(src.listCalls.length <= 2, `coalesced (${src.listCalls.length} list calls)`);
  src.failNext = true;
  await assert.rejects(store.resync(), /sidecar down/);
  assert.equal(errors.length, 1);
  await store.resync();
  assert.equal(store.size, 1);
});

test('a filtered store keeps only matching tasks and subscribers see snapshots', async () => {
  const src = new FakeSource();
  const running = src.put(makeTask({ status: 'RUNNING', version: 2 }));
  src.put(makeTask({ status: 'COMPLETED', version: 3 }));
  const store = new TaskStore(src, { filter: { status: ['QUEUED', 'RUNNING'] } });
  const snaps: number[] = [];
  store.subscribe((s) => snaps.push(s.tasks.length));
  // the fake source ignores filters; the store applies its own on events
  await store.start();
  assert.deepEqual(src.listCalls[0], { status: ['QUEUED', 'RUNNING'], limit: 1000 });
  src.emit({ type: 'task.updated', params: { seq: 1, task: bump(running, { status: 'COMPLETED', progress: 100 }) } });
  assert.equal(store.get(running.id), undefined, 'left the filter');
  assert.ok(snaps.length >= 2);
  store.stop();
  src.emit({ type: 'task.updated', params: { seq: 2, task: makeTask() } });
  assert.equal(store.seq, 1, 'stopped store ignores events');
});

test('a filtered store does not bring back, from a resync begun earlier, a task an update moved out of its filter', async () => {
  const src = new FakeSource();
  const running = src.put(makeTask({ status: 'RUNNING', version: 2 }));
  const queued = src.put(makeTask({ status: 'QUEUED', version: 1 }));
  const store = new TaskStore(src, { filter: { status: ['QUEUED', 'RUNNING'] } });
  await store.start();
  src.listDelay = 50;
  const sync = store.resync(); // the list snapshot is taken now: both tasks at their old versions
  const done = src.put(bump(running, { status: 'COMPLETED', progress: 100 }));
  src.emit({ type: 'task.updated', params: { seq: 1, task: done } });
  const started = src.put(bump(queued, { status: 'RUNNING' }));
  src.emit({ type: 'task.updated', params: { seq: 2, task: started } });
  const finished = src.put(bump(started, { status: 'FAILED' }));
  src.emit({ type: 'task.updated', params: { seq: 3, task: finished } });
  assert.equal(store.get(running.id), undefined, 'left the filter');
  await sync;
  assert.equal(store.get(running.id), undefined, 'the older list did not bring it back');
  assert.equal(store.get(queued.id), undefined, 'kept, then left the filter: not brought back either');
  // A later resync still takes what the list has when it is newer than any event seen.
  src.listDelay = 0;
  src.put(bump(finished, { status: 'QUEUED' })); // retried while nobody listened
  await store.resync();
  assert.equal(store.get(queued.id)?.version, finished.version + 1);
});
