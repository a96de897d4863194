// Tests of dirty page logging: the bitmap alone against a per-page reference, then a virtio-blk queue marking what it writes.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MemoryBackend } from '../../../engine/memory-backend.js';
import { BlkDriver } from '../../../qemu-plugin/testing/blk-driver.js';
import { layoutRing } from '../../../qemu-plugin/testing/split-ring-driver.js';
import { BlkHandler } from '../../../qemu-plugin/virtio/blk.js';
import { VIRTIO_BLK_S_OK, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT } from '../../../qemu-plugin/virtio/constants.js';
import { DirtyLog, LOG_PAGE_SIZE, VringLog, logBytesFor } from '../../../qemu-plugin/virtio/dirty-log.js';
import { serveQueue } from '../../../qemu-plugin/virtio/queue-handler.js';
import { ringSizes } from '../../../qemu-plugin/virtio/virtqueue.js';
import { mockGuest } from './mock.js';

/** The spec's pseudo-code, one page at a time: "log[page / 8] |= 1 << page % 8". */
function referenceMark(bits: Uint8Array, gpa: number, len: number): void {
  if (len <= 0) return;
  for (let p = Math.floor(gpa / LOG_PAGE_SIZE); p <= Math.floor((gpa + len - 1) / LOG_PAGE_SIZE); p++) {
    if (p < bits.length * 8) bits[p >> 3]! |= 1 << (p & 7);
  }
}

/** Pages marked in `log`, as a sorted list. */
function marked(log: DirtyLog): number[] {
  const out: number[] = [];
  for (let p = 0; p < log.bits.length * 8; p++) if (log.isMarked(p * LOG_PAGE_SIZE)) out.push(p);
  return out;
}

/** Pages under [gpa, gpa + len). */
function pages(gpa: number, len: number): number[] {
  const out: number[] = [];
  for (let p = Math.floor(gpa / LOG_PAGE_SIZE); p <= Math.floor((gpa + len - 1) / LOG_PAGE_SIZE); p++) out.push(p);
  return out;
}

test('marking sets the bit of every page a range touches, and nothing else', () => {
  const log = new DirtyLog(new Uint8Array(8));
  log.mark(0, 1);
  assert.deepEqual(marked(log), [0]);
  log.mark(LOG_PAGE_SIZE - 1, 2);
  assert.deepEqual(marked(log), [0, 1], 'two bytes across a page boundary mark both pages');
  log.mark(5 * LOG_PAGE_SIZE, LOG_PAGE_SIZE);
  assert.deepEqual(marked(log), [0, 1, 5], 'exactly one page');
  log.mark(9 * LOG_PAGE_SIZE, 0);
  assert.deepEqual(marked(log), [0, 1, 5], 'an empty range marks nothing');
  log.mark(7 * LOG_PAGE_SIZE + 100, 20 * LOG_PAGE_SIZE);
  assert.deepEqual(marked(log), [0, 1, 5, ...pages(7 * LOG_PAGE_SIZE + 100, 20 * LOG_PAGE_SIZE)]);
  assert.equal(log.outside, 0);
  assert.equal(logBytesFor(64 * LOG_PAGE_SIZE), 8, '64 pages take 8 bytes of log');
  assert.equal(logBytesFor(64 * LOG_PAGE_SIZE + 1), 9);
});

test('marks agree with the spec\'s per-page pseudo-code on random ranges, and keep bits others set', () => {
  let seed = 12345;
  const rnd = (n: number) => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  for (let round = 0; round < 300; round++) {
    const size = 1 + rnd(40);
    const a = new Uint8Array(size);
    const b = new Uint8Array(size);
    // Bits already there (QEMU's, or other queues') stay.
    for (let i = 0; i < size; i++) a[i] = b[i] = rnd(4) === 0 ? rnd(256) : 0;
    const log = new DirtyLog(a);
    for (let k = 0; k < 5; k++) {
      const span = size * 8 * LOG_PAGE_SIZE;
      const gpa = rnd(span);
      const len = rnd(4) === 0 ? rnd(64 * LOG_PAGE_SIZE) : rnd(3 * LOG_PAGE_SIZE);
      log.mark(gpa, len);
      referenceMark(b, gpa, len);
    }
    assert.deepEqual([...a], [...b], `round ${round}`);
  }
});

test('a range past the end of the log is clipped and counted, never written beyond', () => {
  const backing = new Uint8Array(6).fill(0);
  const log = new DirtyLog(backing.subarray(1, 5)); // 32 pages
  log.mark(30 * LOG_PAGE_SIZE, 10 * LOG_PAGE_SIZE);
  assert.deepEqual(marked(log), [30, 31]);
  assert.equal(log.outside, 1);
  log.mark(100 * LOG_PAGE_SIZE, 1);
  assert.equal(log.outside, 2);
  assert.equal(backing[0], 0, 'the byte before the log is untouched');
  assert.equal(backing[5], 0, 'the byte after the log is untouched');
});

/** A virtio-blk queue over guest memory at guest-physical `base`, with a log covering it. */
function queue(opts: { splitAt?: number } = {}) {
  const memSize = 4 << 20;
  const size = 16;
  const g = mockGuest({ memSize, size, ...opts });
  const be = new MemoryBackend({ memory: MemoryBackend.allocate(1 << 20) });
  const h = new BlkHandler(be, g.vq, g.gm, () => undefined, { serial: 'twindisk-dirty-log', writeback: true });
  const blk = new BlkDriver(g.driver, g.data, 4, 64 * 1024);
  const log = new DirtyLog(new Uint8Array(logBytesFor(memSize)));
  const used = layoutRing(0, size).layout.used;
  const usedPages = pages(used, ringSizes(size).used);
  const run = (type: number, sector: number, len: number, segments = 1) => {
    blk.submit(0, type, sector, len, segments);
    g.driver.publish();
    serveQueue(h, g.vq, true, () => undefined);
    const c = blk.reap();
    assert.ok(c);
    return c;
  };
  const logOn = () => {
    g.vq.dirtyLog = new VringLog(log, g.gm, used, ringSizes(size).used);
  };
  // The status byte sits 16 bytes after slot 0's header (BlkDriver's layout).
  const statusPage = Math.floor((g.data + 16) / LOG_PAGE_SIZE);
  return { g, h, blk, log, run, logOn, usedPages, statusPage };
}

test('with logging off nothing is marked', () => {
  const q = queue();
  assert.equal(q.run(VIRTIO_BLK_T_IN, 0, 8192).status, VIRTIO_BLK_S_OK);
  assert.deepEqual(marked(q.log), []);
});

test('a read marks its data buffers, its status byte and the used ring; a write only the status byte and the ring', () => {
  const q = queue();
  q.logOn();
  const data = q.blk.dataGpa(0);
  assert.equal(q.run(VIRTIO_BLK_T_IN, 8, 3 * LOG_PAGE_SIZE + 512, 3).status, VIRTIO_BLK_S_OK);
  const want = new Set([...pages(data, 3 * LOG_PAGE_SIZE + 512), q.statusPage, ...q.usedPages]);
  assert.deepEqual(marked(q.log), [...want].sort((a, b) => a - b));
  q.log.bits.fill(0); // as QEMU's sync takes the bits
  assert.equal(q.run(VIRTIO_BLK_T_OUT, 8, 2 * LOG_PAGE_SIZE).status, VIRTIO_BLK_S_OK);
  assert.deepEqual(marked(q.log), [...new Set([q.statusPage, ...q.usedPages])].sort((a, b) => a - b), 'the device only read the write\'s data');
  q.log.bits.fill(0);
  assert.equal(q.run(VIRTIO_BLK_T_GET_ID, 0, 20).status, VIRTIO_BLK_S_OK);
  assert.deepEqual(marked(q.log), [...new Set([...pages(data, 20), q.statusPage, ...q.usedPages])].sort((a, b) => a - b));
});

test('a buffer that crosses two memory regions is marked at its guest-physical addresses in both', () => {
  const splitAt = 2 << 20;
  const q = queue({ splitAt });
  q.logOn();
  // Slot 0's data buffer starts below the split: move the request so it straddles it.
  const data = q.blk.dataGpa(0);
  assert.ok(data < splitAt);
  const g = q.g;
  // A hand-made chain: header and status in slot 0, 8 KiB of data across the region boundary.
  const hdr = data - 64;
  const dv = new DataView(g.mem.buffer);
  dv.setUint32(hdr, VIRTIO_BLK_T_IN, true);
  dv.setUint32(hdr + 4, 0, true);
  dv.setBigUint64(hdr + 8, 0n, true);
  const buf = splitAt - LOG_PAGE_SIZE - 100;
  const status = hdr + 32;
  g.driver.add([{ gpa: hdr, len: 16, write: false }, { gpa: buf, len: 2 * LOG_PAGE_SIZE, write: true }, { gpa: status, len: 1, write: true }], false);
  g.driver.publish();
  serveQueue(q.h, g.vq, true, () => undefined);
  assert.ok(g.driver.reap());
  assert.equal(g.mem[status], VIRTIO_BLK_S_OK);
  const want = new Set([...pages(buf, 2 * LOG_PAGE_SIZE), Math.floor(status / LOG_PAGE_SIZE), ...q.usedPages]);
  assert.deepEqual(marked(q.log), [...want].sort((a, b) => a - b));
});

test('the used ring is logged at the front-end\'s log address, not the ring\'s own', () => {
  const q = queue();
  const elsewhere = 300 * LOG_PAGE_SIZE;
  q.g.vq.dirtyLog = new VringLog(q.log, q.g.gm, elsewhere, ringSizes(16).used);
  q.run(VIRTIO_BLK_T_OUT, 0, 512);
  const m = marked(q.log);
  assert.ok(m.includes(300), 'log_guest_addr page marked');
  for (const p of q.usedPages) if (p !== q.statusPage) assert.ok(!m.includes(p), `ring page ${p} not marked by its own address`);
});
