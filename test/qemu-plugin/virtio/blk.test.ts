// Tests of the virtio-blk request handler over memory and file back-ends, driven through a mock ring.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import type { Backend } from '../../../engine/backend.js';
import { FileBackend } from '../../../engine/file-backend.js';
import { MemoryBackend } from '../../../engine/memory-backend.js';
import { BlkHandler } from '../../../qemu-plugin/virtio/blk.js';
import { encodeBlkConfig } from '../../../qemu-plugin/virtio/blk-config.js';
import { serveQueue } from '../../../qemu-plugin/virtio/queue-handler.js';
import { BlkDriver } from '../../../qemu-plugin/testing/blk-driver.js';
import {
  VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_WRITE_ZEROES, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE,
} from '../../../qemu-plugin/virtio/constants.js';
import { mockGuest } from './mock.js';

function setup(backend: Backend) {
  const g = mockGuest({ memSize: 4 << 20, size: 16 });
  const rejected: string[] = [];
  const h = new BlkHandler(backend, g.vq, g.gm, (r) => rejected.push(r), { serial: 'twindisk-test-serial-xyz', writeback: true });
  let signals = 0;
  /** Serves the ring as a queue worker does: drain, publish, signal. */
  const serve = () => serveQueue(h, g.vq, true, () => signals++);
  const blk = new BlkDriver(g.driver, g.data, 8, 128 * 1024);
  /** Runs one request in slot 0 and returns its completion. */
  const run = (type: number, sector: number, len: number, segments = 1, indirect = false) => {
    blk.submit(0, type, sector, len, segments, indirect);
    g.driver.publish();
    serve();
    const c = blk.reap();
    assert.ok(c, 'request completed');
    return c;
  };
  const data = (len: number) => g.mem.subarray(blk.dataGpa(0), blk.dataGpa(0) + len);
  return { g, h, blk, run, data, rejected, serve, signals: () => signals };
}

function tmpImage(size: number): string {
  const p = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'twindisk-blk-')), 'disk.img');
  fs.writeFileSync(p, Buffer.alloc(size));
  return p;
}

for (const kind of ['memory', 'file'] as const) {
  test(`${kind}: writes land at the right offset and read back, over direct and indirect chains`, () => {
    const img = kind === 'file' ? tmpImage(1 << 20) : '';
    const be = kind === 'file' ? new FileBackend({ path: img }) : new MemoryBackend({ memory: MemoryBackend.allocate(1 << 20) });
    const t = setup(be);
    for (let i = 0; i < 8192; i++) t.data(8192)[i] = (i * 7 + 3) & 255;
    const w = t.run(VIRTIO_BLK_T_OUT, 16, 8192, 4, true);
    assert.equal(w.status, VIRTIO_BLK_S_OK);
    assert.equal(w.len, 1, 'a write returns only the status byte');
    t.data(8192).fill(0);
    const r = t.run(VIRTIO_BLK_T_IN, 16, 8192, 3);
    assert.equal(r.status, VIRTIO_BLK_S_OK);
    assert.equal(r.len, 8193, 'a read returns data and status');
    for (let i = 0; i < 8192; i++) assert.equal(t.data(8192)[i], (i * 7 + 3) & 255);
    if (kind === 'file') {
      const f = fs.readFileSync(img);
      assert.equal(f[16 * 512 + 5], (5 * 7 + 3) & 255);
      assert.equal(f[16 * 512 - 1], 0, 'byte before the write untouched');
      assert.equal(f[16 * 512 + 8192], 0, 'byte after the write untouched');
    }
    assert.deepEqual(t.rejected, []);
    be.close();
  });
}

test('requests past the end, misaligned or at absurd sectors fail with IOERR and touch nothing', () => {
  const disk = MemoryBackend.allocate(1 << 20);
  const be = new MemoryBackend({ memory: disk, blockSize: 4096 });
  const t = setup(be);
  t.data(4096).fill(0xaa);
  const cases: [number, number, number][] = [
    [VIRTIO_BLK_T_IN, 2048 - 8, 8192], // runs past the end (1 MiB = 2048 sectors)
    [VIRTIO_BLK_T_IN, 2048, 4096],
    [VIRTIO_BLK_T_OUT, 1, 4096], // not 4 KiB aligned
    [VIRTIO_BLK_T_OUT, 0, 512],
    [VIRTIO_BLK_T_IN, 2 ** 60, 4096],
  ];
  for (const [type, sector, len] of cases) {
    const c = t.run(type, sector, len);
    assert.equal(c.status, VIRTIO_BLK_S_IOERR, `type ${type} sector ${sector} len ${len}`);
  }
  assert.ok(t.data(4096).every((b) => b === 0xaa), 'guest buffer untouched');
  assert.ok(new Uint8Array(disk).every((b) => b === 0), 'disk untouched');
  assert.equal(t.rejected.length, cases.length);
  assert.match(t.rejected[0]!, /past the end/);
  assert.match(t.rejected[2]!, /not aligned/);
});

test('a read-only disk refuses writes, discards and write-zeroes', () => {
  const img = tmpImage(1 << 20);
  const be = new FileBackend({ path: img, readOnly: true });
  const t = setup(be);
  t.data(512).fill(9);
  assert.equal(t.run(VIRTIO_BLK_T_OUT, 0, 512).status, VIRTIO_BLK_S_IOERR);
  assert.equal(t.run(VIRTIO_BLK_T_IN, 0, 512).status, VIRTIO_BLK_S_OK);
  discardSegment(t, 0, 8, 0);
  assert.equal(t.run(VIRTIO_BLK_T_DISCARD, 0, 16).status, VIRTIO_BLK_S_IOERR);
  discardSegment(t, 0, 8, 0);
  assert.equal(t.run(VIRTIO_BLK_T_WRITE_ZEROES, 0, 16).status, VIRTIO_BLK_S_IOERR);
  assert.ok(fs.readFileSync(img).every((b) => b === 0));
  assert.equal(t.rejected.length, 3);
  for (const r of t.rejected) assert.match(r, /read-only/);
  be.close();
});

test('FLUSH, GET_ID and unknown types', () => {
  const t = setup(new MemoryBackend({ memory: MemoryBackend.allocate(1 << 20) }));
  assert.equal(t.run(VIRTIO_BLK_T_FLUSH, 0, 0).status, VIRTIO_BLK_S_OK);
  const id = t.run(VIRTIO_BLK_T_GET_ID, 0, 20);
  assert.equal(id.status, VIRTIO_BLK_S_OK);
  assert.equal(Buffer.from(t.data(20)).toString(), 'twindisk-test-serial');
  assert.equal(t.run(12345, 0, 0).status, VIRTIO_BLK_S_UNSUPP);
});

function discardSegment(t: ReturnType<typeof setup>, sector: number, num: number, flags: number): void {
  const dv = new DataView(t.g.mem.buffer, t.blk.dataGpa(0), 16);
  dv.setUint32(0, sector, true);
  dv.setUint32(4, 0, true);
  dv.setUint32(8, num, true);
  dv.setUint32(12, flags, true);
}

test('file: DISCARD punches a hole, WRITE_ZEROES zeroes with and without UNMAP', () => {
  const img = tmpImage(4 << 20);
  fs.writeFileSync(img, Buffer.alloc(4 << 20, 0x5a));
  const be = new FileBackend({ path: img });
  const t = setup(be);
  const blocksBefore = fs.statSync(img).blocks;
  discardSegment(t, 0, 2048, 0);
  assert.equal(t.run(VIRTIO_BLK_T_DISCARD, 0, 16).status, VIRTIO_BLK_S_OK);
  assert.ok(fs.statSync(img).blocks < blocksBefore, 'discard deallocated space');
  discardSegment(t, 2048, 8, 0);
  assert.equal(t.run(VIRTIO_BLK_T_WRITE_ZEROES, 0, 16).status, VIRTIO_BLK_S_OK);
  discardSegment(t, 4096, 8, 1);
  assert.equal(t.run(VIRTIO_BLK_T_WRITE_ZEROES, 0, 16).status, VIRTIO_BLK_S_OK);
  const f = fs.readFileSync(img);
  assert.ok(f.subarray(0, 1 << 20).every((b) => b === 0), 'discarded range reads zero');
  assert.ok(f.subarray(2048 * 512, 2056 * 512).every((b) => b === 0), 'zeroed without unmap');
  assert.ok(f.subarray(4096 * 512, 4104 * 512).every((b) => b === 0), 'zeroed with unmap');
  assert.equal(f[2056 * 512], 0x5a, 'byte after the zeroed range untouched');
  assert.equal(f[4104 * 512], 0x5a);
  discardSegment(t, 0, 8, 1);
  assert.equal(t.run(VIRTIO_BLK_T_DISCARD, 0, 16).status, VIRTIO_BLK_S_UNSUPP, 'discard with the unmap flag');
  discardSegment(t, 8190, 8, 0);
  assert.equal(t.run(VIRTIO_BLK_T_DISCARD, 0, 16).status, VIRTIO_BLK_S_IOERR, 'discard past the end');
  assert.equal(t.run(VIRTIO_BLK_T_DISCARD, 0, 32).status, VIRTIO_BLK_S_IOERR, 'two segments (max 1)');
  be.close();
});

test('a header split across descriptors is read; malformed chains get IOERR where the status byte is safe', () => {
  const be = new MemoryBackend({ memory: MemoryBackend.allocate(1 << 20) });
  const t = setup(be);
  const { g } = t;
  const d = g.data + 64 * 1024;
  const hdr = new DataView(g.mem.buffer, d, 16);
  hdr.setUint32(0, VIRTIO_BLK_T_IN, true);
  hdr.setUint32(8, 1, true);
  g.driver.setDesc(0, d, 6, VIRTQ_DESC_F_NEXT, 1);
  g.driver.setDesc(1, d + 6, 10, VIRTQ_DESC_F_NEXT, 2);
  g.driver.setDesc(2, d + 512, 512, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 3);
  g.driver.setDesc(3, d + 2000, 1, VIRTQ_DESC_F_WRITE, 0);
  g.mem[d + 2000] = 0xff;
  g.driver.pushAvailRaw(0);
  // A chain whose data descriptor points outside memory, with a valid status byte.
  g.driver.setDesc(4, d, 16, VIRTQ_DESC_F_NEXT, 5);
  g.driver.setDesc(5, 0xfffff000, 512, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 6);
  g.driver.setDesc(6, d + 2001, 1, VIRTQ_DESC_F_WRITE, 0);
  g.mem[d + 2001] = 0xff;
  g.driver.pushAvailRaw(4);
  g.driver.publish();
  t.serve();
  assert.equal(g.mem[d + 2000], VIRTIO_BLK_S_OK);
  assert.equal(g.mem[d + 2001], VIRTIO_BLK_S_IOERR);
  assert.equal(t.rejected.length, 1);
  assert.match(t.rejected[0]!, /outside guest memory/);
});

test('config space: capacity, block size, queues, discard limits', () => {
  const info = new MemoryBackend({ memory: MemoryBackend.allocate(8 << 20), blockSize: 4096 }).info;
  const cfg = new DataView(encodeBlkConfig({ info, numQueues: 4, writeback: true }).buffer);
  assert.equal(cfg.getUint32(0, true), (8 << 20) / 512);
  assert.equal(cfg.getUint32(20, true), 4096);
  assert.equal(cfg.getUint8(32), 1);
  assert.equal(cfg.getUint16(34, true), 4);
  assert.equal(cfg.getUint32(44, true), 8, 'discard alignment in sectors');
  assert.ok(cfg.getUint32(36, true) > 0 && cfg.getUint32(48, true) > 0);
});
