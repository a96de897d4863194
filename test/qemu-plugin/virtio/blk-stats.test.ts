// Tests of the per-queue virtio-blk counters (blk-stats.ts): what the handler records per request type, and the latency buckets.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MemoryBackend } from '../../../engine/memory-backend.js';
import { BlkHandler } from '../../../qemu-plugin/virtio/blk.js';
import {
  BLK_STATS_BYTES, BlkQueueStats, LATENCY_BUCKETS, STAT_DISCARD, STAT_FLUSH, STAT_OTHER, STAT_READ, STAT_WRITE, STAT_WRITE_ZEROES,
} from '../../../qemu-plugin/virtio/blk-stats.js';
import { serveQueue } from '../../../qemu-plugin/virtio/queue-handler.js';
import { BlkDriver } from '../../../qemu-plugin/testing/blk-driver.js';
import {
  VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
} from '../../../qemu-plugin/virtio/constants.js';
import { mockGuest } from './mock.js';

test('the handler counts requests, bytes and errors per type in the shared buffer, and a histogram entry per completion', () => {
  const g = mockGuest({ memSize: 4 << 20, size: 16 });
  const sab = BlkQueueStats.allocate();
  assert.equal(sab.byteLength, BLK_STATS_BYTES);
  const h = new BlkHandler(new MemoryBackend({ memory: MemoryBackend.allocate(1 << 20) }), g.vq, g.gm, () => undefined,
    { serial: 's', writeback: true }, new BlkQueueStats(sab));
  const blk = new BlkDriver(g.driver, g.data, 8, 128 * 1024);
  const run = (type: number, sector: number, len: number) => {
    blk.submit(0, type, sector, len, 2);
    g.driver.publish();
    serveQueue(h, g.vq, true, () => undefined);
    return blk.reap()!.status;
  };
  assert.equal(run(VIRTIO_BLK_T_OUT, 0, 8192), VIRTIO_BLK_S_OK);
  assert.equal(run(VIRTIO_BLK_T_OUT, 16, 4096), VIRTIO_BLK_S_OK);
  assert.equal(run(VIRTIO_BLK_T_IN, 0, 512), VIRTIO_BLK_S_OK);
  assert.equal(run(VIRTIO_BLK_T_IN, 2048, 4096), VIRTIO_BLK_S_IOERR, 'past the end');
  assert.equal(run(VIRTIO_BLK_T_FLUSH, 0, 0), VIRTIO_BLK_S_OK);
  assert.equal(run(VIRTIO_BLK_T_GET_ID, 0, 20), VIRTIO_BLK_S_OK);
  // The main thread reads the same memory through its own view.
  const s = new BlkQueueStats(sab);
  const w = s.read(STAT_WRITE);
  assert.deepEqual([w.started, w.completed, w.bytes, w.errors], [2, 2, 12288, 0]);
  const r = s.read(STAT_READ);
  assert.deepEqual([r.started, r.completed, r.bytes, r.errors], [2, 2, 512, 1]);
  assert.equal(s.read(STAT_FLUSH).completed, 1);
  assert.equal(s.read(STAT_OTHER).completed, 1);
  assert.equal(s.read(STAT_DISCARD).completed, 0);
  assert.equal(s.read(STAT_WRITE_ZEROES).completed, 0);
  // A request taken in a later drain starts when it is taken, not when the last one of the drain before ended.
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 60);
  assert.equal(run(VIRTIO_BLK_T_IN, 8, 512), VIRTIO_BLK_S_OK);
  const late = s.read(STAT_READ);
  assert.equal(late.completed, 3);
  assert.equal(late.buckets.slice(LATENCY_BUCKETS.indexOf(50e-3)).reduce((x, y) => x + y, 0), 0, 'no read took 50 ms or more');
  for (const row of [STAT_READ, STAT_WRITE, STAT_FLUSH, STAT_OTHER]) {
    const c = s.read(row);
    assert.equal(c.buckets.length, LATENCY_BUCKETS.length + 1);
    assert.equal(c.buckets.reduce((a, b) => a + b, 0), c.completed, 'one histogram entry per completion');
    assert.ok(c.latencySum >= 0 && c.latencySum < 1);
  }
});

test('latencies land in the first bucket whose bound they do not exceed; past 100 ms in +Inf', () => {
  const s = new BlkQueueStats(BlkQueueStats.allocate());
  // Latencies in ms, as performance.now() counts; each exactly at, or just past, a bound.
  for (const ms of [0.001, 0.010, 0.0100001, 0.030, 3, 100, 500]) s.end(STAT_READ, 1000, 0, true, 1000 + ms);
  const b = s.read(STAT_READ).buckets;
  const at = (sec: number) => b[LATENCY_BUCKETS.indexOf(sec)];
  assert.equal(b[0], 2, '1 µs and exactly 10 µs: the 10 µs bucket (le is inclusive)');
  assert.equal(at(20e-6), 1, 'just past 10 µs');
  assert.equal(at(50e-6), 1, '30 µs');
  assert.equal(at(5e-3), 1, '3 ms');
  assert.equal(at(0.1), 1, 'exactly 100 ms');
  assert.equal(b[LATENCY_BUCKETS.length], 1, '500 ms: +Inf');
  assert.equal(b.reduce((x, y) => x + y, 0), 7);
  assert.ok(Math.abs(s.read(STAT_READ).latencySum - 0.6030510001) < 1e-9);
  assert.equal(LATENCY_BUCKETS[0], 10e-6);
  assert.equal(LATENCY_BUCKETS[LATENCY_BUCKETS.length - 1], 0.1);
});
