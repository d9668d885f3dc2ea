import { test } from 'node:test';
import assert from 'node:assert/strict';

import { OutgoingQueue } from '../src/outgoing';

const line = (id: number | undefined): { id: number | undefined; method: string; line: string } => ({ id, method: 'm', line: `${id}\n` });

test('lines come out in order; a dropped one is skipped and cannot be dropped twice', () => {
  const q = new OutgoingQueue();
  for (const id of [1, 2, undefined, 3]) q.push(line(id));
  assert.equal(q.size, 4);
  assert.equal(q.drop(2), true);
  assert.equal(q.drop(2), false);
  assert.equal(q.size, 3);
  assert.deepEqual([q.shift()?.id, q.shift()?.id, q.shift()?.id], [1, undefined, 3]);
  assert.equal(q.shift(), undefined);
  assert.equal(q.drop(1), false, 'a written line is not dropped');
  assert.equal(q.size, 0);
});

test('order and drops hold across many lines taken and added while the front is compacted', () => {
  const q = new OutgoingQueue();
  const expected: number[] = [];
  let next = 0;
  for (let round = 0; round < 20; round++) {
    for (let i = 0; i < 500; i++) q.push(line(next++));
    for (let id = next - 500; id < next; id++) {
      if (id % 7 === 0) assert.equal(q.drop(id), true);
      else expected.push(id);
    }
    for (let i = 0; i < 300; i++) {
      const taken = q.shift();
      assert.equal(taken?.id, expected.shift());
    }
  }
  assert.equal(q.size, expected.length);
  assert.deepEqual(q.takeAll().map((l) => l.id), expected);
  assert.equal(q.size, 0);
  assert.equal(q.shift(), undefined);
});
