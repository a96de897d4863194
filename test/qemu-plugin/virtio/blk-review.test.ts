// Review findings of the virtio-blk handler: writethrough durability of discard and write-zeroes, and request slots that cost nothing per queue entry.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Backend, BackendInfo, Completion } from '../../../engine/backend.js';
import type { IoVector } from '../../../engine/iovec.js';
import { BlkDriver } from '../../../qemu-plugin/testing/blk-driver.js';
import { BlkHandler, MAX_SLOTS } from '../../../qemu-plugin/virtio/blk.js';
import { publishUsed, serveQueue } from '../../../qemu-plugin/virtio/queue-handler.js';
import {
  VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_WRITE_ZEROES,
} from '../../../qemu-plugin/virtio/constants.js';
import { mockGuest } from './mock.js';

/** A back-end whose operations wait until the test completes them, in order, recording what was asked. */
class HeldBackend implements Backend {
  readonly info: BackendInfo = { size: 1 << 20, blockSize: 512, readOnly: false, name: 'held', canFlush: true, canDiscard: true, canWriteZeroes: true };
  readonly held: { op: string; done: Completion }[] = [];
  read(_iov: IoVector, _offset: number, done: Completion): void {
    this.held.push({ op: 'read', done });
  }
  write(_iov: IoVector, _offset: number, fua: boolean, done: Completion): void {
    this.held.push({ op: fua ? 'write+fua' : 'write', done });
  }
  flush(done: Completion): void {
    this.held.push({ op: 'flush', done });
  }
  discard(_offset: number, _length: number, done: Completion): void {
    this.held.push({ op: 'discard', done });
  }
  writeZeroes(_offset: number, _length: number, _mayUnmap: boolean, done: Completion): void {
    this.held.push({ op: 'writeZeroes', done });
  }
  close(): void {}
  /** Completes the oldest held operation with `status`; returns its name. */
  completeNext(status = 0): string {
    const h = this.held.shift();
    assert.ok(h, 'an operation is held');
    h.done.complete(status);
    return h.op;
  }
}

function setup(writeback: boolean) {
  const g = mockGuest({ memSize: 4 << 20, size: 16 });
  const be = new HeldBackend();
  const h = new BlkHandler(be, g.vq, g.gm, () => undefined, { serial: 's', writeback });
  const blk = new BlkDriver(g.driver, g.data, 8, 64 * 1024);
  const segment = (slot: number, sector: number, sectors: number) => {
    const dv = new DataView(g.mem.buffer, blk.dataGpa(slot), 16);
    dv.setBigUint64(0, BigInt(sector), true);
    dv.setUint32(8, sectors, true);
    dv.setUint32(12, 0, true);
  };
  const publish = () => publishUsed(g.vq, () => undefined);
  const submit = (slot: number, type: number, len: number) => {
    blk.submit(slot, type, 0, len);
    g.driver.publish();
    serveQueue(h, g.vq, true, () => undefined);
  };
  return { g, be, h, blk, segment, publish, submit };
}

for (const [name, type, op] of [['discard', VIRTIO_BLK_T_DISCARD, 'discard'], ['write-zeroes', VIRTIO_BLK_T_WRITE_ZEROES, 'writeZeroes']] as const) {
  test(`writethrough: ${name} completes only after a flush made it durable; writeback: no flush`, () => {
    const t = setup(false);
    t.segment(0, 8, 16);
    t.submit(0, type, 16);
    assert.deepEqual(t.be.held.map((x) => x.op), [op]);
    assert.equal(t.be.completeNext(), op);
    t.publish();
    assert.equal(t.blk.reap(), null, 'not complete before the flush');
    assert.deepEqual(t.be.held.map((x) => x.op), ['flush'], 'the flush follows at once');
    t.be.completeNext();
    t.publish();
    assert.equal(t.blk.reap()?.status, VIRTIO_BLK_S_OK);
    // A failed operation is not flushed: it fails at once.
    t.segment(1, 8, 16);
    t.submit(1, type, 16);
    t.be.completeNext(-5);
    t.publish();
    assert.equal(t.blk.reap()?.status, VIRTIO_BLK_S_IOERR);
    assert.equal(t.be.held.length, 0);
    // Writes were already durable (FUA) in writethrough.
    t.submit(2, VIRTIO_BLK_T_OUT, 4096);
    assert.deepEqual(t.be.held.map((x) => x.op), ['write+fua']);
    t.be.completeNext();

    const wb = setup(true);
    wb.segment(0, 8, 16);
    wb.submit(0, type, 16);
    assert.equal(wb.be.completeNext(), op);
    wb.publish();
    assert.equal(wb.blk.reap()?.status, VIRTIO_BLK_S_OK, 'writeback: complete without a flush');
    assert.equal(wb.be.held.length, 0);
  });
}

test('request slots: made as requests in flight need them, up to MAX_SLOTS; the queue waits beyond', () => {
  const g = mockGuest({ memSize: 16 << 20, size: 1024 });
  const be = new HeldBackend();
  const h = new BlkHandler(be, g.vq, g.gm, () => undefined, { serial: 's', writeback: true });
  const blk = new BlkDriver(g.driver, g.data, MAX_SLOTS + 8, 4096);
  for (let i = 0; i < MAX_SLOTS + 8; i++) blk.submit(i, VIRTIO_BLK_T_OUT, (i % 128) * 8, 4096);
  g.driver.publish();
  serveQueue(h, g.vq, true, () => undefined);
  assert.equal(h.busyCount(), MAX_SLOTS, 'at most MAX_SLOTS requests are taken');
  assert.equal(g.vq.pending(), 8, 'the rest wait in the ring');
  for (let i = 0; i < MAX_SLOTS; i++) be.completeNext();
  serveQueue(h, g.vq, true, () => undefined);
  assert.equal(h.busyCount(), 8, 'completions made room for the rest');
  for (let i = 0; i < 8; i++) be.completeNext();
  publishUsed(g.vq, () => undefined);
  let n = 0;
  while (blk.reap()) n++;
  assert.equal(n, MAX_SLOTS + 8);
});
