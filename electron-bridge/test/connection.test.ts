import { test } from 'node:test';
import assert from 'node:assert/strict';

import { RpcConnection, type LogEntry } from '../src/connection';
import { SidecarError } from '../src/errors';
import { ClientErrorCode, ErrorCode } from '../src/protocol';
import { FakePeer, sleep } from './helpers';

function connect(): { peer: FakePeer; conn: RpcConnection; notes: Array<[string, unknown]>; logs: LogEntry[] } {
  const peer = new FakePeer();
  const notes: Array<[string, unknown]> = [];
  const logs: LogEntry[] = [];
  const conn = new RpcConnection({
    input: peer.toClient,
    output: peer.toPeer,
    onNotification: (m, p) => notes.push([m, p]),
    logger: (e) => logs.push(e),
  });
  return { peer, conn, notes, logs };
}

test('responses are matched to requests by id, in any order', async () => {
  const { peer, conn } = connect();
  const a = conn.request('tasks.get', { id: 'a' });
  const b = conn.request('tasks.get', { id: 'b' });
  const ra = await peer.nextRequest(0);
  const rb = await peer.nextRequest(1);
  assert.equal(ra.method, 'tasks.get');
  assert.deepEqual(ra.params, { id: 'a' });
  peer.send({ jsonrpc: '2.0', id: rb.id, result: 'B' });
  peer.send({ jsonrpc: '2.0', id: ra.id, result: 'A' });
  assert.deepEqual(await Promise.all([a, b]), ['A', 'B']);
  assert.equal(conn.pendingCount, 0);
});

test('a method without params sends no params member', async () => {
  const { peer, conn } = connect();
  const p = conn.request('system.ping', undefined);
  const req = await peer.nextRequest(0);
  assert.equal('params' in req, false);
  peer.send({ jsonrpc: '2.0', id: req.id, result: 'pong' });
  assert.equal(await p, 'pong');
});

test('an error response becomes a SidecarError with code, message and data', async () => {
  const { peer, conn } = connect();
  const p = conn.request('tasks.get', { id: 'nope' });
  const req = await peer.nextRequest(0);
  peer.send({ jsonrpc: '2.0', id: req.id, error: { code: -32001, message: 'task not found', data: { id: 'nope' } } });
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof SidecarError);
    assert.ok(err instanceof Error);
    assert.equal(err.code, ErrorCode.TaskNotFound);
    assert.equal(err.message, 'task not found');
    assert.deepEqual(err.data, { id: 'nope' });
    assert.equal(err.method, 'tasks.get');
    return true;
  });
});

test('a call times out with ClientErrorCode.Timeout and a late answer is ignored', async () => {
  const { peer, conn, logs } = connect();
  const started = Date.now();
  await assert.rejects(conn.request('tasks.list', {}, { timeoutMs: 50 }), (err: unknown) => {
    assert.ok(err instanceof SidecarError);
    assert.equal(err.code, ClientErrorCode.Timeout);
    assert.match(err.message, /tasks\.list.*50 ms/);
    return true;
  });
  assert.ok(Date.now() - started < 1000);
  const req = await peer.nextRequest(0);
  peer.send({ jsonrpc: '2.0', id: req.id, result: { late: true } });
  await sleep(20);
  assert.ok(logs.some((l) => /late or unknown response/.test(l.message)));
});

test('a timeout longer than a Node timer can hold still waits for the answer', async () => {
  const { peer, conn } = connect();
  const p = conn.request('tasks.list', {}, { timeoutMs: 5_000_000_000 });
  const req = await peer.nextRequest(0);
  await sleep(30);
  peer.send({ jsonrpc: '2.0', id: req.id, result: { tasks: [] } });
  assert.deepEqual(await p, { tasks: [] });
});

test('an AbortSignal cancels waiting (before and after sending)', async () => {
  const { conn } = connect();
  const ac = new AbortController();
  const p = conn.request('tasks.list', {}, { signal: ac.signal });
  ac.abort(new Error('user left the page'));
  await assert.rejects(p, (err: unknown) => err instanceof SidecarError && err.code === ClientErrorCode.Cancelled && /cancelled/.test(err.message));
  await assert.rejects(conn.request('tasks.list', {}, { signal: AbortSignal.abort() }), (err: unknown) => err instanceof SidecarError && err.code === ClientErrorCode.Cancelled);
  assert.equal(conn.pendingCount, 0);
});

test('close() rejects every pending call with a clear error, and later calls too', async () => {
  const { conn } = connect();
  const p1 = conn.request('tasks.get', { id: 'x' });
  const p2 = conn.request('tasks.stats', undefined);
  conn.close(new SidecarError(ClientErrorCode.SidecarExited, 'the sidecar exited unexpectedly (signal SIGKILL)', { signal: 'SIGKILL' }));
  for (const [p, method] of [
    [p1, 'tasks.get'],
    [p2, 'tasks.stats'],
  ] as const) {
    await assert.rejects(p, (err: unknown) => {
      assert.ok(err instanceof SidecarError);
      assert.equal(err.code, ClientErrorCode.SidecarExited);
      assert.match(err.message, new RegExp(`^${method.replace('.', '\\.')}: the sidecar exited unexpectedly`));
      assert.deepEqual(err.data, { method, signal: 'SIGKILL' });
      return true;
    });
  }
  await assert.rejects(conn.request('system.ping', undefined), (err: unknown) => err instanceof SidecarError && err.code === ClientErrorCode.SidecarExited);
});

test('notifications are delivered in order; non-JSON and foreign lines are logged and skipped', async () => {
  const { peer, notes, logs } = connect();
  peer.raw('Traceback (most recent call last): oops\n');
  for (let seq = 1; seq <= 50; seq++) peer.send({ jsonrpc: '2.0', method: 'task.updated', params: { seq } });
  peer.raw('{"not":"jsonrpc"}\n');
  peer.send({ jsonrpc: '2.0', method: 'task.deleted', params: { ids: ['a'] } });
  await sleep(20);
  assert.deepEqual(
    notes.filter(([m]) => m === 'task.updated').map(([, p]) => (p as { seq: number }).seq),
    Array.from({ length: 50 }, (_, i) => i + 1),
  );
  assert.deepEqual(notes.at(-1), ['task.deleted', { ids: ['a'] }]);
  assert.ok(logs.some((l) => l.source === 'stdout' && /Traceback/.test(l.message)));
  assert.ok(logs.some((l) => /non-JSON-RPC/.test(l.message)));
});

test('a batch answer (array) is routed item by item; an id-less error is logged', async () => {
  const { peer, conn, logs } = connect();
  const a = conn.request('system.ping', undefined);
  const b = conn.request('system.ping', undefined);
  const ra = await peer.nextRequest(0);
  const rb = await peer.nextRequest(1);
  peer.send([
    { jsonrpc: '2.0', id: ra.id, result: 'pong' },
    { jsonrpc: '2.0', id: rb.id, error: { code: -32603, message: 'boom' } },
  ]);
  peer.send({ jsonrpc: '2.0', id: null, error: { code: -32700, message: 'Parse error' } });
  assert.equal(await a, 'pong');
  await assert.rejects(b, /boom/);
  await sleep(10);
  assert.ok(logs.some((l) => /without id: -32700/.test(l.message)));
});

test('a request written after the output closed fails with SidecarExited, not an unhandled error', async () => {
  const { peer, conn } = connect();
  peer.toPeer.destroy();
  await assert.rejects(conn.request('system.ping', undefined), (err: unknown) => err instanceof SidecarError && err.code === ClientErrorCode.SidecarExited);
});

test('a huge request is written completely with backpressure', async () => {
  const { peer, conn } = connect();
  const details = { blob: 'z'.repeat(5 * 1024 * 1024) };
  const p = conn.request('tasks.create', { type: 'demo.noop', details });
  const req = await peer.nextRequest(0);
  assert.equal((req.params as { details: { blob: string } }).details.blob.length, details.blob.length);
  peer.send({ jsonrpc: '2.0', id: req.id, result: { ok: 1 } });
  assert.deepEqual(await p, { ok: 1 });
});

test("a request over the sidecar's line limit fails at once with -32600 naming its size, and is never written", async () => {
  // Same keys and values, same length: the size of the line the connection writes for these params.
  const base = Buffer.byteLength(JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tasks.create', params: { type: '' } }));
  const limit = base + 30;
  const peer = new FakePeer();
  const conn = new RpcConnection({ input: peer.toClient, output: peer.toPeer, onNotification: () => undefined, maxRequestBytes: limit });
  const over = { type: '€'.repeat(10) + 'x' }; // 11 characters, 31 bytes: one byte over
  await assert.rejects(conn.request('tasks.create', over, { timeoutMs: 0 }), (err: unknown) => {
    assert.ok(err instanceof SidecarError);
    assert.equal(err.code, ErrorCode.InvalidRequest);
    assert.equal(err.message, `tasks.create: the request is ${limit + 1} bytes as one line, over the sidecar's limit of ${limit} (maxMessageBytes); it was not sent`);
    assert.deepEqual(err.data, { method: 'tasks.create', bytes: limit + 1, limit });
    return true;
  });
  assert.equal(conn.pendingCount, 0);
  const atLimit = conn.request('tasks.create', { type: 'x'.repeat(30) });
  const req = await peer.nextRequest(0);
  assert.equal(peer.received.length, 1, 'only the request within the limit was written');
  assert.equal((req.params as { type: string }).type.length, 30);
  peer.send({ jsonrpc: '2.0', id: req.id, result: 'created' });
  assert.equal(await atLimit, 'created');
  // the default is the sidecar's 8 MiB
  const { conn: byDefault } = connect();
  await assert.rejects(
    byDefault.request('tasks.create', { type: 'x'.repeat(8 * 1024 * 1024) }, { timeoutMs: 0 }),
    (err: unknown) => err instanceof SidecarError && err.code === ErrorCode.InvalidRequest && /limit of 8388608/.test(err.message),
  );
});

test('an answer over maxLineBytes fails its call at once with ResponseTooLarge; other calls go on', async () => {
  const peer = new FakePeer();
  const logs: LogEntry[] = [];
  const conn = new RpcConnection({ input: peer.toClient, output: peer.toPeer, onNotification: () => undefined, logger: (e) => logs.push(e), maxLineBytes: 1000 });
  const first = conn.request('tasks.list', {}, { timeoutMs: 30_000 });
  const second = conn.request('tasks.get', { id: 'x' }, { timeoutMs: 30_000 });
  const third = conn.request('system.ping', undefined, { timeoutMs: 30_000 });
  const [r1, r2, r3] = [await peer.nextRequest(0), await peer.nextRequest(1), await peer.nextRequest(2)];
  const started = Date.now();
  const big = 'b'.repeat(5000);
  // The sidecar writes "id" last (a nested "id" must not be taken for it); other peers write it first.
  const lastId = `{"jsonrpc":"2.0","result":{"tasks":[{"id":9,"blob":"${big}"}],"nextCursor":null},"id":${r1.id!}}`;
  const firstId = `{"jsonrpc":"2.0","id":${r2.id!},"result":{"details":"${big}","id":7}}`;
  peer.raw(lastId + '\n');
  const pieces = firstId + '\n';
  for (let i = 0; i < pieces.length; i += 333) peer.raw(pieces.slice(i, i + 333)); // the line arrives in pieces
  for (const [p, method, bytes] of [
    [first, 'tasks.list', lastId.length],
    [second, 'tasks.get', firstId.length],
  ] as const) {
    await assert.rejects(p, (err: unknown) => {
      assert.ok(err instanceof SidecarError);
      assert.equal(err.code, ClientErrorCode.ResponseTooLarge, err.message);
      assert.equal(err.message, `${method}: the sidecar's answer is ${bytes} bytes, over the client's maxLineBytes of 1000; it was dropped`);
      assert.deepEqual(err.data, { method, bytes, limit: 1000 });
      return true;
    });
  }
  assert.ok(Date.now() - started < 2000, 'failed at once, not at the timeout');
  peer.send({ jsonrpc: '2.0', id: r3.id, result: 'pong' });
  assert.equal(await third, 'pong');
  assert.ok(logs.some((l) => /over the line limit of 1000\): the answer to tasks\.list/.test(l.message)));
});

test('a stalled pipe does not block timeouts, and a call aborted while queued is never sent', async () => {
  const { PassThrough } = await import('node:stream');
  const input = new PassThrough();
  const output = new PassThrough({ highWaterMark: 1024 }); // nobody reads: the pipe is "full"
  const conn = new RpcConnection({ input, output, onNotification: () => undefined });
  const started = Date.now();
  const big = conn.request('tasks.create', { type: 'demo.noop', details: { pad: 'p'.repeat(10_000) } }, { timeoutMs: 100 });
  const ac = new AbortController();
  const queued = conn.request('tasks.cancel', { id: 'never-sent' }, { signal: ac.signal });
  ac.abort();
  await assert.rejects(queued, (err: unknown) => err instanceof SidecarError && err.code === ClientErrorCode.Cancelled);
  await assert.rejects(big, (err: unknown) => err instanceof SidecarError && err.code === ClientErrorCode.Timeout);
  assert.ok(Date.now() - started < 1000, 'the timeout fired although the write never drained');
  const written = output.read()?.toString('utf8') ?? '';
  assert.match(written, /tasks\.create/);
  assert.doesNotMatch(written, /never-sent/);
  const more = conn.request('system.ping', undefined);
  await new Promise((r) => setImmediate(r));
  assert.match(output.read()?.toString('utf8') ?? '', /system\.ping/, 'the queue moves on after drain');
  input.write('{"jsonrpc":"2.0","id":3,"result":"pong"}\n');
  assert.equal(await more, 'pong');
});
