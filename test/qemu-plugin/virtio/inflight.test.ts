// Tests of inflight tracking: what a restarted back-end serves again, and the used index it resumes from.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { InflightRegion, inflightQueueSize } from '../../../qemu-plugin/virtio/inflight.js';

test('a fresh region starts empty and keeps the front-end base', () => {
  const mem = new Uint8Array(inflightQueueSize(8)).fill(0xee);
  const r = new InflightRegion(mem, 8);
  assert.deepEqual(r.recover(5, () => 0), { resubmit: [], lastAvail: -1 });
  assert.equal(mem[16], 0, 'entries zeroed');
});

test('popped but unfinished requests are served again, oldest first; published ones are not', () => {
  const mem = new Uint8Array(inflightQueueSize(8));
  const a = new InflightRegion(mem, 8);
  a.recover(0, () => 0);
  for (const h of [3, 1, 6, 2]) a.popped(h);
  a.completed(1);
  a.published(1); // head 1 done, used index 1
  // A new back-end over the same memory: 3, 6, 2 are still in flight, in that order.
  const b = new InflightRegion(mem, 8);
  assert.deepEqual(b.recover(1, () => 1), { resubmit: [3, 6, 2], lastAvail: 4 });
});

test('a crash after publishing the used index but before clearing is repaired from the used ring', () => {
  const mem = new Uint8Array(inflightQueueSize(8));
  const a = new InflightRegion(mem, 8);
  a.recover(10, () => 0);
  for (const h of [4, 5, 7]) a.popped(h);
  // The used ring got heads 4 and 5 (index 10 -> 12), the region was never told.
  const usedRing = [0, 0, 4, 5, 0, 0, 0, 0]; // elements 10 % 8 = 2 and 11 % 8 = 3
  const b = new InflightRegion(mem, 8);
  assert.deepEqual(b.recover(12, (i) => usedRing[i]!), { resubmit: [7], lastAvail: 13 });
});

test('heads beyond the ring are ignored rather than written out of bounds', () => {
  const mem = new Uint8Array(inflightQueueSize(4));
  const r = new InflightRegion(mem, 4);
  r.recover(0, () => 0);
  r.completed(60000);
  r.published(1);
  assert.throws(() => new InflightRegion(new Uint8Array(8), 4), /too small/);
});
