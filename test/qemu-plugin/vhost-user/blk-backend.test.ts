// Tests of virtio-blk as a vhost-user device type: the features it offers, its config space and the one writable byte.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Logger, setSink } from '../../../engine/log.js';
import { MemoryBackend } from '../../../engine/memory-backend.js';
import { VhostUserBlkBackend, blkHandlerSpec } from '../../../qemu-plugin/vhost-user/blk-backend.js';
import { Feature, bit } from '../../../qemu-plugin/vhost-user/constants.js';
import { CFG_NUM_QUEUES, CFG_WRITEBACK } from '../../../qemu-plugin/virtio/constants.js';

const logs: string[] = [];
setSink((level, _c, msg) => logs.push(`${level} ${msg}`));

test('features follow the back-end: read-only, discard, write-zeroes, multiqueue', () => {
  const rw = new VhostUserBlkBackend(new MemoryBackend({ memory: MemoryBackend.allocate(1 << 20) }).info, 2, new Logger('t'));
  for (const f of [Feature.BLK_FLUSH, Feature.BLK_SEG_MAX, Feature.BLK_MQ, Feature.BLK_DISCARD, Feature.BLK_WRITE_ZEROES]) assert.ok(rw.features & bit(f), `feature ${f}`);
  assert.equal(rw.features & bit(Feature.BLK_RO), 0n);
  const ro = new VhostUserBlkBackend(new MemoryBackend({ memory: MemoryBackend.allocate(1 << 20), readOnly: true }).info, 1, new Logger('t'));
  assert.ok(ro.features & bit(Feature.BLK_RO));
  for (const f of [Feature.BLK_MQ, Feature.BLK_DISCARD, Feature.BLK_WRITE_ZEROES]) assert.equal(ro.features & bit(f), 0n, `no feature ${f}`);
});

test('the write cache byte is the one writable config byte; a change is handed to the queues once', () => {
  const b = new VhostUserBlkBackend(new MemoryBackend({ memory: MemoryBackend.allocate(1 << 20) }).info, 3, new Logger('t'));
  assert.equal(b.getConfig()[CFG_WRITEBACK], 1);
  assert.equal(new DataView(b.getConfig().buffer).getUint16(CFG_NUM_QUEUES, true), 3);
  assert.deepEqual(b.setConfig(CFG_WRITEBACK, Uint8Array.of(0)), { writeback: false });
  assert.equal(b.getConfig()[CFG_WRITEBACK], 0);
  assert.equal(b.setConfig(CFG_WRITEBACK - 2, Uint8Array.of(7, 7, 0)), null, 'no change, nothing to hand on');
  assert.deepEqual(b.setConfig(CFG_WRITEBACK, Uint8Array.of(1)), { writeback: true });
  assert.equal(b.setConfig(0, Uint8Array.of(1, 2, 3, 4)), null);
  assert.equal(b.getConfig()[0], 0, 'capacity is not writable');
  assert.match(logs.join('\n'), /write cache to writethrough[\s\S]*write cache to writeback[\s\S]*SET_CONFIG outside the writeback field ignored/);
});

test('the handler spec names a module exporting createQueueHandler, with the serial and the cache on', async () => {
  const spec = blkHandlerSpec('disk-7');
  assert.deepEqual(spec.settings, { serial: 'disk-7', writeback: true });
  const m = (await import(spec.module)) as { createQueueHandler?: unknown };
  assert.equal(typeof m.createQueueHandler, 'function');
});
