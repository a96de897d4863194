// Tests of IoVector: trimming from either end across segments, and scatter/gather copies at any position.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { IoVector, copyFromVector, copyToVector } from '../../engine/iovec.js';

function vec(lens: number[]): { v: IoVector; buf: Uint8Array } {
  const buf = new Uint8Array(1024).map((_, i) => i & 255);
  const v = new IoVector(8);
  let off = 0;
  for (const l of lens) {
    v.push(buf, off, l, 0x1000 + off);
    off += l + 10;
  }
  return { v, buf };
}

test('consumeFront drops whole and partial segments and keeps addresses in step', () => {
  const { v } = vec([6, 10, 20]);
  v.consumeFront(16);
  assert.equal(v.count, 1);
  assert.equal(v.offs[0], 36);
  assert.equal(v.addrs[0], 0x1000 + 36);
  assert.equal(v.bytes, 20);
  const w = vec([16, 4]).v;
  w.consumeFront(16);
  assert.deepEqual([w.count, w.offs[0], w.bytes], [1, 26, 4]);
});

test('consumeBack trims the status byte off the last segment or drops it', () => {
  const a = vec([4096, 1]).v;
  a.consumeBack(1);
  assert.deepEqual([a.count, a.bytes], [1, 4096]);
  const b = vec([4097]).v;
  b.consumeBack(1);
  assert.deepEqual([b.count, b.lens[0], b.bytes], [1, 4096, 4096]);
});

test('push refuses past capacity; gather copies across segments', () => {
  const { v, buf } = vec([3, 3, 3]);
  for (let i = 3; i < 8; i++) assert.equal(v.push(buf, 0, 1, 0), true);
  assert.equal(v.push(buf, 0, 1, 0), false);
  assert.equal(v.count, 8);
  const out = new Uint8Array(7);
  assert.equal(copyFromVector(vec([3, 3, 3]).v, 0, out, 7), 7);
  assert.deepEqual([...out], [0, 1, 2, 13, 14, 15, 26]);
});

test('copyFromVector / copyToVector move the right bytes at any position and stop at the vector end', () => {
  const { v } = vec([3, 7, 20, 1]);
  const flat = new Uint8Array(31);
  assert.equal(copyFromVector(v, 0, flat, 31), 31);
  for (const [pos, len] of [[0, 31], [2, 5], [9, 15], [30, 1], [4, 0]] as const) {
    const out = new Uint8Array(len + 2);
    assert.equal(copyFromVector(v, pos, out, len, 2), len);
    assert.deepEqual([...out.subarray(2)], [...flat.subarray(pos, pos + len)], `gather ${pos}+${len}`);
    const dst = vec([3, 7, 20, 1]);
    dst.buf.fill(0);
    assert.equal(copyToVector(out, dst.v, pos, len, 2), len);
    const back = new Uint8Array(31);
    copyFromVector(dst.v, 0, back, 31);
    assert.deepEqual([...back.subarray(pos, pos + len)], [...out.subarray(2)], `scatter ${pos}+${len}`);
    assert.ok(back.subarray(0, pos).every((b) => b === 0) && back.subarray(pos + len).every((b) => b === 0), 'nothing else written');
  }
  assert.equal(copyFromVector(v, 28, new Uint8Array(10), 10), 3, 'a copy past the end stops there');
});
