import { test } from 'node:test';
import assert from 'node:assert/strict';

import { LineDecoder, encodeMessage } from '../src/framing';

function collect(opts?: ConstructorParameters<typeof LineDecoder>[1]): { lines: string[]; decoder: LineDecoder; oversize: number[] } {
  const lines: string[] = [];
  const oversize: number[] = [];
  const decoder = new LineDecoder((l) => lines.push(l), { ...opts, onOversize: (n) => oversize.push(n) });
  return { lines, decoder, oversize };
}

test('a multi-byte message survives being split at every byte position', () => {
  const msg = { jsonrpc: '2.0', method: 'task.updated', params: { message: 'ünïcødé ✓ 😀 下载', n: 1 } };
  const bytes = Buffer.from(encodeMessage(msg) + encodeMessage({ ...msg, params: { ...msg.params, n: 2 } }), 'utf8');
  for (let cut = 1; cut < bytes.length; cut++) {
    const { lines, decoder } = collect();
    decoder.push(bytes.subarray(0, cut));
    decoder.push(bytes.subarray(cut));
    assert.equal(lines.length, 2, `cut at ${cut}`);
    assert.deepEqual(JSON.parse(lines[0]!), msg);
    assert.equal((JSON.parse(lines[1]!) as { params: { n: number } }).params.n, 2);
  }
});

test('one byte at a time, CRLF endings and blank lines', () => {
  const { lines, decoder } = collect();
  const text = '{"a":"é"}\r\n\n  \n{"b":2}\n';
  for (const byte of Buffer.from(text)) decoder.push(Buffer.from([byte]));
  assert.deepEqual(lines, ['{"a":"é"}', '{"b":2}']);
});

test('a 20 MB line in odd-sized chunks arrives whole', () => {
  const big = 'x'.repeat(20 * 1024 * 1024) + '€';
  const bytes = Buffer.from(JSON.stringify({ big }) + '\n{"after":true}\n');
  const { lines, decoder } = collect();
  for (let i = 0; i < bytes.length; i += 65_537) decoder.push(bytes.subarray(i, i + 65_537));
  assert.equal(lines.length, 2);
  assert.equal((JSON.parse(lines[0]!) as { big: string }).big, big);
  assert.equal(lines[1], '{"after":true}');
});

test('a line over the limit is dropped and the stream resynchronises', () => {
  const { lines, decoder, oversize } = collect({ maxLineBytes: 100 });
  decoder.push('{"small":1}\n' + 'y'.repeat(70));
  decoder.push('y'.repeat(70) + '\n{"small":2}\n');
  assert.deepEqual(lines, ['{"small":1}', '{"small":2}']);
  assert.deepEqual(oversize, [140]);
});

test('a last line without newline is delivered at end of stream', () => {
  const { lines, decoder } = collect();
  decoder.push('{"a":1}\n{"b":');
  assert.deepEqual(lines, ['{"a":1}']);
  decoder.push('2}');
  decoder.end();
  assert.deepEqual(lines, ['{"a":1}', '{"b":2}']);
});

test('encodeMessage writes exactly one line even for strings with newlines', () => {
  const line = encodeMessage({ s: 'a\nb\r\nc\u2028' });
  assert.equal(line.indexOf('\n'), line.length - 1);
});

test('a line over the limit inside one chunk is dropped, and the lines around it arrive', () => {
  const { lines, decoder, oversize } = collect({ maxLineBytes: 10 });
  decoder.push('{"a":1}\n' + 'z'.repeat(25) + '\n{"b":2}\r\n\n');
  assert.deepEqual(lines, ['{"a":1}', '{"b":2}']);
  assert.deepEqual(oversize, [25]);
});

test('a line is decoded before the chunk it came in is reused', () => {
  const { lines, decoder } = collect();
  const chunk = Buffer.from('{"n":1}\n{"n":');
  decoder.push(chunk);
  chunk.fill(0x20); // a stream may hand the same memory back with other bytes
  decoder.push(Buffer.from('2}\n'));
  assert.deepEqual(lines, ['{"n":1}', '{"n":2}']);
});

test('a dropped line reports its first and last 128 bytes, in one chunk or in many', () => {
  const line = '{"jsonrpc":"2.0","result":"' + 'a'.repeat(100) + 'm'.repeat(300) + 'z'.repeat(100) + '","id":42}';
  for (const pieces of [1, 3, 7, line.length]) {
    const ends: Array<{ bytes: number; head: string; tail: string }> = [];
    const decoder = new LineDecoder(() => undefined, {
      maxLineBytes: 200,
      onOversize: (bytes, e) => ends.push({ bytes, head: e.head.toString('utf8'), tail: e.tail.toString('utf8') }),
    });
    const size = Math.ceil((line.length + 1) / pieces);
    const text = line + '\n';
    for (let i = 0; i < text.length; i += size) decoder.push(Buffer.from(text.slice(i, i + size)));
    assert.deepEqual(ends, [{ bytes: line.length, head: line.slice(0, 128), tail: line.slice(-128) }], `${pieces} pieces`);
  }
});
