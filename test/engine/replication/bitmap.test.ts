// Tests of the out-of-sync bitmaps: set/clear/count/find, page write-back and damage, capture, merge, wasm memory.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { OutOfSyncBitmaps } from '../../../engine/replication/bitmap.js';
import type { MetadataIo, MetadataStats } from '../../../engine/replication/md-format.js';
import { BITMAP_PAGE_BYTES, MD_UNIT, Metadata } from '../../../engine/replication/metadata.js';
import { allocBuffer, kernelImpl, setRuns } from '../../../wasm/index.js';
import { MiB, PAGE_BITS, bit, corrupt, external, readAt, rng, withDir, writeAt } from './md-fixtures.js';

test('bitmap: set covers partial blocks, clear only whole ones, bit order as the kernels', () => {
  withDir((dir) => {
    const md = Metadata.create(external(dir, MiB));
    assert.equal(md.bits, 256);
    md.setOutOfSync(1, 4095, 2);
    assert.equal(md.outOfSyncBits(1), 2);
    assert.equal(md.bitmap(1)[0], 0b11);
    md.clearInSync(1, 1, 8190);
    assert.equal(md.outOfSyncBits(1), 2, 'no whole block inside');
    md.clearInSync(1, 0, 8191);
    assert.equal(md.bitmap(1)[0], 0b10, 'only block 0 was whole');
    md.clearInSync(1, 4096, 4096);
    assert.equal(md.outOfSyncBits(1), 0);
    md.setOutOfSync(1, 9 * 4096, 1);
    assert.equal(md.bitmap(1)[1], 0b10, 'bit 9 is bit 1 of byte 1');
    md.setOutOfSync(1, 100, 0);
    assert.equal(md.outOfSyncBits(1), 1);
    md.setOutOfSync(1, MiB - 1, 1);
    assert.ok(bit(md.bitmap(1), 255));
    assert.equal(md.outOfSyncBits(2), 0, 'other peer untouched');
    md.setAll(2);
    assert.equal(md.outOfSyncBits(2), 256);
    md.clearAll(2);
    assert.equal(md.outOfSyncBits(2), 0);
    md.close();
  });
  withDir((dir) => {
    // 16 KiB granularity over 1 MiB + 4 KiB: 65 bits, the last block only 4 KiB long.
    const md = Metadata.create(external(dir, MiB + 4096, { granularity: 16384 }));
    assert.equal(md.bits, 65);
    md.setAll(1);
    assert.equal(md.outOfSyncBits(1), 65);
    assert.equal(md.bitmap(1)[8], 1, 'bits past the end stay clear');
    md.clearInSync(1, MiB, 2048);
    assert.equal(md.outOfSyncBits(1), 65, 'half the short block');
    md.clearInSync(1, MiB, 4096);
    assert.equal(md.outOfSyncBits(1), 64, 'the short block is whole when the range reaches the end');
    md.clearInSync(1, 63 * 16384 - 1, 16384 + 1);
    assert.equal(md.outOfSyncBits(1), 63);
    md.setOutOfSync(1, MiB + 4095, 1);
    assert.equal(md.outOfSyncBits(1), 64);
    md.close();
  });
});

test('bitmap: changes made in place are flushed after markBitmapDirty', () => {
  withDir((dir) => {
    const opts = external(dir, 256 * MiB);
    const md = Metadata.create(opts);
    const peerBits = new Uint8Array(md.bitmap(1).length);
    peerBits[0] = 0x0f;
    peerBits[BITMAP_PAGE_BYTES * 2 + 1] = 0x80;
    md.bitmap(1).set(peerBits); // as a peer's bitmap OR-ed in
    md.markBitmapDirty(1, 0, 8);
    md.markBitmapDirty(1, (BITMAP_PAGE_BYTES * 2 + 1) * 8, (BITMAP_PAGE_BYTES * 2 + 2) * 8);
    assert.throws(() => md.markBitmapDirty(1, 0, md.bits + 1), RangeError);
    md.flushBitmaps();
    assert.equal(md.stats.bitmapPageWrites, 2);
    md.abandon();
    const back = Metadata.open(opts);
    assert.equal(back.outOfSyncBits(1), 5);
    back.abandon();
  });
});

test('bitmap: a damaged page reads as all ones and is rewritten at the next flush', () => {
  withDir((dir) => {
    const opts = external(dir, 256 * MiB);
    const md = Metadata.create(opts);
    assert.equal(md.bits, 65536);
    assert.equal(md.layout.pagesPerPeer, 3);
    md.setOutOfSync(1, 0, 10 * 4096);
    md.setOutOfSync(1, (2 * PAGE_BITS + 5) * 4096, 1);
    md.setOutOfSync(2, PAGE_BITS * 4096, 4096);
    md.flushBitmaps();
    assert.equal(md.stats.bitmapPageWrites, 3, 'only the dirty pages');
    md.close();
    corrupt(opts.metaFile!, md.layout.bitmapOffsets[0]! + MD_UNIT + 1000);

    const back = Metadata.open(opts);
    assert.equal(back.openReport.badPages, 1);
    assert.equal(back.outOfSyncBits(1), 10 + 1 + PAGE_BITS);
    const map = back.bitmap(1);
    assert.ok(!bit(map, 10) && bit(map, PAGE_BITS) && bit(map, 2 * PAGE_BITS - 1) && !bit(map, 2 * PAGE_BITS));
    assert.equal(back.outOfSyncBits(2), 1, 'the other peer is unaffected');
    back.close();
    const again = Metadata.open(opts);
    assert.equal(again.openReport.badPages, 0);
    assert.equal(again.outOfSyncBits(1), 10 + 1 + PAGE_BITS);
    again.close();
  });
});

test('bitmap: a page left over from an earlier create-md is detected as stale', () => {
  withDir((dir) => {
    const opts = external(dir, 8 * MiB, { peerIds: [1] });
    const old = Metadata.create(opts);
    old.clearAll(1);
    old.setOutOfSync(1, 0, 4096);
    old.close();
    const page = readAt(opts.metaFile!, old.layout.bitmapOffsets[0]!, MD_UNIT);
    Metadata.create({ ...opts, force: true }).close();
    writeAt(opts.metaFile!, old.layout.bitmapOffsets[0]!, page); // valid CRC, other metadata id
    const md = Metadata.open(opts);
    assert.equal(md.openReport.badPages, 1);
    assert.equal(md.outOfSyncBits(1), md.bits);
    md.abandon();
  });
});

test('bitmap: random set/clear sequences match a boolean model across flush and reopen', () => {
  for (const [dataSize, granularity, seed] of [[160 * MiB, 4096, 7], [100 * 8192 + 4096, 8192, 99]] as const) {
    withDir((dir) => {
      const opts = external(dir, dataSize, { granularity });
      let md = Metadata.create(opts);
      const bits = md.bits;
      const models = new Map<number, Uint8Array>([[1, new Uint8Array(bits)], [2, new Uint8Array(bits)]]);
      const r = rng(seed);
      for (let round = 0; round < 4; round++) {
        for (let op = 0; op < 400; op++) {
          const peer = 1 + r(2);
          const model = models.get(peer)!;
          const kind = r(100);
          if (kind === 0) {
            md.setAll(peer);
            model.fill(1);
            continue;
          }
          if (kind === 1) {
            md.clearAll(peer);
            model.fill(0);
            continue;
          }
          const offset = r(100) < 10 ? dataSize - r(3 * granularity) : r(dataSize);
          const length = Math.min(dataSize - offset, r(100) < 20 ? r(64 * granularity) : r(4 * granularity));
          if (kind < 55) {
            md.setOutOfSync(peer, offset, length);
            if (length > 0) model.fill(1, Math.floor(offset / granularity), Math.ceil((offset + length) / granularity));
          } else {
            md.clearInSync(peer, offset, length);
            const end = offset + length === dataSize ? bits : Math.floor((offset + length) / granularity);
            const from = Math.ceil(offset / granularity);
            if (from < end) model.fill(0, from, end);
          }
          if (r(50) === 0) md.flushBitmaps();
        }
        md.flushBitmaps();
        if (round % 2 === 0) md.abandon(); else md.close();
        md = Metadata.open(opts);
        assert.equal(md.openReport.badPages, 0);
        for (const [peer, model] of models) {
          const map = md.bitmap(peer);
          let count = 0;
          for (let i = 0; i < bits; i++) {
            count += model[i]!;
            if (bit(map, i) !== (model[i] === 1)) assert.fail(`seed ${seed} round ${round} peer ${peer} bit ${i}`);
          }
          assert.equal(md.outOfSyncBits(peer), count);
        }
      }
      md.close();
    });
  }
});

test('bitmap capture: written later as captured, never over a newer copy; pages stay dirty for flushes in between', () => {
  withDir((dir) => {
    const opts = external(dir, 256 * MiB);
    const md = Metadata.create(opts);
    const g = md.granularity;
    md.setOutOfSync(1, 0, 4 * g); // page 0 of peer 1
    md.setOutOfSync(1, PAGE_BITS * g, g); // page 1
    md.flushBitmaps();
    // A SyncTarget clears bits of resynced blocks, captures, ...
    md.clearInSync(1, 0, 2 * g);
    md.clearInSync(1, PAGE_BITS * g, g);
    const cap = md.captureBitmaps();
    assert.equal(cap.pages.length, 2);
    // ... meanwhile a write marks page 1 again and an activity-log eviction flushes (sync) ...
    md.setOutOfSync(1, PAGE_BITS * g + g, g);
    const before = md.stats.bitmapPageWrites;
    md.flushBitmaps();
    assert.equal(md.stats.bitmapPageWrites - before, 2, 'captured pages are still dirty: the flush writes them');
    // ... and the data sync completes: the capture must not put the older page 1 back.
    md.writeCaptured(cap);
    assert.equal(md.stats.bitmapPageWrites - before, 2, 'both pages were written after the capture: nothing older goes over them');
    md.abandon();
    const back = Metadata.open(opts);
    assert.equal(back.outOfSyncBits(1), 3, 'page 0: bits 2 and 3; page 1: the newer mark');
    back.abandon();
  });
});

test('bitmap capture: a page unchanged since its capture is clean once written; a changed one stays dirty', () => {
  withDir((dir) => {
    const opts = external(dir, 256 * MiB);
    const md = Metadata.create(opts);
    const g = md.granularity;
    md.setOutOfSync(1, 0, 8 * g);
    md.setOutOfSync(2, 0, 8 * g);
    md.flushBitmaps();
    md.clearInSync(1, 0, 8 * g);
    md.clearInSync(2, 0, 4 * g);
    const cap = md.captureBitmaps();
    md.setOutOfSync(2, 0, g); // changes peer 2's page after the capture
    const before = md.stats.bitmapPageWrites;
    md.writeCaptured(cap);
    assert.equal(md.stats.bitmapPageWrites - before, 2);
    md.flushBitmaps();
    assert.equal(md.stats.bitmapPageWrites - before, 3, 'only the page changed since the capture is written again');
    md.abandon();
    const back = Metadata.open(opts);
    assert.equal(back.outOfSyncBits(1), 0);
    assert.equal(back.outOfSyncBits(2), 5);
    back.abandon();
  });
});

/** A metadata "file" in memory for the bitmap store: positional reads and writes over a growable array. */
class MemoryFile implements MetadataIo {
  bytes = new Uint8Array(0);
  readonly stats: MetadataStats = { alWrites: 0, superblockWrites: 0, bitmapPageWrites: 0, syncs: 0 };
  inUse = 0;
  pread(buf: Uint8Array, pos: number): void {
    buf.fill(0);
    buf.set(this.bytes.subarray(pos, pos + buf.length));
  }
  pwrite(buf: Uint8Array, pos: number): void {
    if (pos + buf.length > this.bytes.length) {
      const grown = new Uint8Array(pos + buf.length);
      grown.set(this.bytes);
      this.bytes = grown;
    }
    this.bytes.set(buf, pos);
  }
  sync(): void {
    this.stats.syncs++;
  }
  pwriteDurable(buf: Uint8Array, pos: number): void {
    this.pwrite(buf, pos);
    this.stats.syncs++;
  }
  markInUse(): void {
    this.inUse++;
  }
}

/** A bitmap store over `file` for peers 1 and 2 of node 0, `bits` blocks of 4 KiB. */
function store(file: MemoryFile, bits: number): OutOfSyncBitmaps {
  const dataSize = bits * 4096;
  const ppp = Math.max(1, Math.ceil(Math.ceil(bits / 8) / BITMAP_PAGE_BYTES));
  return new OutOfSyncBitmaps({
    mdId: 9n, nodeId: 0, peerIds: [1, 2], dataSize, granularity: 4096, pagesPerPeer: ppp,
    bitmapOffsets: [0, ppp * MD_UNIT],
  }, file);
}

test('bitmap store in memory: never-written pages load as all ones; a flush makes them load as written', () => {
  const file = new MemoryFile();
  const bits = 2 * PAGE_BITS + 13;
  const a = store(file, bits);
  assert.equal(a.load(), 6, 'three pages per peer, none valid');
  assert.equal(a.outOfSyncBits(1), bits);
  assert.equal(a.bitmap(1)[a.bytes - 1], (1 << (bits % 8)) - 1, 'bits past the end stay clear');
  a.clearAll(1);
  a.setOutOfSync(1, 4096 * PAGE_BITS, 3 * 4096);
  a.flush(true);
  assert.equal(file.inUse, 1);
  assert.equal(file.stats.bitmapPageWrites, 6, 'the damaged pages of peer 2 too');
  assert.equal(file.stats.syncs, 1);
  const b = store(file, bits);
  assert.equal(b.load(), 0);
  assert.equal(b.outOfSyncBits(1), 3);
  assert.equal(b.outOfSyncBits(2), bits);
  assert.deepEqual(b.bitmap(1), a.bitmap(1));
  a.dispose();
  b.dispose();
});

test('mergeBitmap ORs a peer\'s frame in place, masks the tail, and writes only the pages it touched', () => {
  withDir((dir) => {
    const opts = external(dir, 3 * PAGE_BITS * 4096 + 5 * 4096); // 3 pages and 5 bits
    const md = Metadata.create(opts);
    assert.equal(md.bits % 8, 5);
    const nbytes = md.bitmap(1).length;
    md.setOutOfSync(1, 0, 4096);
    md.flushBitmaps();
    const expected = md.bitmap(1).slice();
    const frame = new Uint8Array(nbytes - BITMAP_PAGE_BYTES).fill(0);
    frame[0] = 0x81;
    frame[frame.length - 1] = 0xff; // three bits past the end of the volume
    for (let i = 0; i < frame.length; i++) expected[BITMAP_PAGE_BYTES + i]! |= frame[i]!;
    expected[nbytes - 1]! &= 0x1f;
    const before = md.stats.bitmapPageWrites;
    md.mergeBitmap(1, BITMAP_PAGE_BYTES, frame);
    assert.deepEqual(md.bitmap(1), expected);
    assert.equal(md.outOfSyncBits(1), 1 + 2 + 5);
    md.flushBitmaps();
    assert.equal(md.stats.bitmapPageWrites - before, 3, 'pages 1, 2 and 3; page 0 is untouched');
    // A frame that stops short of the end leaves the last byte alone; one past the end is refused.
    md.mergeBitmap(1, 0, new Uint8Array([0xf0]));
    assert.equal(md.bitmap(1)[0], 0xf1);
    assert.throws(() => md.mergeBitmap(1, nbytes - 1, new Uint8Array(2)), RangeError);
    assert.throws(() => md.mergeBitmap(3, 0, new Uint8Array(1)), /no bitmap slot/);
    md.close();
    const back = Metadata.open(opts);
    assert.equal(back.outOfSyncBits(1), 4 + 1 + 2 + 5);
    back.abandon();
  });
});

test('nextOutOfSync walks runs of out-of-sync blocks, cut at maxBits; anyOutOfSync tests a byte range', () => {
  withDir((dir) => {
    const md = Metadata.create(external(dir, 8 * MiB)); // 2048 blocks
    const r = rng(3);
    for (let k = 0; k < 60; k++) {
      const at = r(2000);
      md.setOutOfSync(1, at * 4096, Math.min(1 + r(40), md.bits - at) * 4096);
    }
    md.setOutOfSync(1, 8 * MiB - 4096, 4096); // a run that ends at the end of the volume
    const runs = [...setRuns(md.bitmap(1).slice(), 0, md.bits)];
    const walked: { start: number; end: number }[] = [];
    for (let at = 0, run = md.nextOutOfSync(1, 0); run; at = run.end, run = md.nextOutOfSync(1, at)) walked.push(run);
    assert.deepEqual(walked, runs.map((x) => ({ start: x.start, end: x.end })));
    // Cut at 3 blocks: the same blocks, in pieces of at most 3.
    const cut: number[] = [];
    for (let run = md.nextOutOfSync(1, 0, 3); run; run = md.nextOutOfSync(1, run.end, 3)) {
      assert.ok(run.end - run.start <= 3 && run.end > run.start);
      for (let b = run.start; b < run.end; b++) cut.push(b);
    }
    assert.equal(cut.length, md.outOfSyncBits(1));
    assert.equal(md.nextOutOfSync(2, 0), null);
    assert.throws(() => md.nextOutOfSync(1, md.bits + 1), RangeError);
    assert.throws(() => md.nextOutOfSync(1, 0, 0), RangeError);
    md.clearAll(1);
    md.setOutOfSync(1, 10 * 4096, 1);
    assert.equal(md.anyOutOfSync(1, 10 * 4096 + 100, 1), true);
    assert.equal(md.anyOutOfSync(1, 9 * 4096, 4096), false);
    assert.equal(md.anyOutOfSync(1, 9 * 4096, 4097), true, 'touching block 10');
    assert.equal(md.anyOutOfSync(1, 10 * 4096, 0), false, 'an empty range');
    assert.equal(md.anyOutOfSync(1), true, 'the whole volume');
    assert.equal(md.anyOutOfSync(2), false);
    assert.throws(() => md.anyOutOfSync(1, 8 * MiB, 1), RangeError);
    md.close();
  });
});

test(`bitmaps live in kernel memory (${kernelImpl()}), survive its growth, and are readable after close`, () => {
  withDir((dir) => {
    const md = Metadata.create(external(dir, 64 * MiB));
    md.setOutOfSync(2, 5 * 4096, 3 * 4096);
    const probe = allocBuffer(64);
    const old = md.bitmap(2);
    if (kernelImpl() === 'wasm') assert.equal(old.buffer, probe.bytes.buffer, 'a view of wasm memory: kernels run in place');
    // Growing wasm memory detaches every view taken before; the store takes its views afresh.
    const big = allocBuffer(64 * MiB);
    if (kernelImpl() === 'wasm') assert.equal(old.length, 0, 'the old view is detached');
    assert.equal(md.bitmap(2).length, md.bits / 8);
    assert.equal(md.outOfSyncBits(2), 3);
    md.setOutOfSync(2, 0, 4096);
    assert.equal(md.nextOutOfSync(2, 0)?.start, 0);
    big.release();
    probe.release();
    md.close();
    assert.equal(md.outOfSyncBits(2), 4, 'copied out of kernel memory at close');
    const after = allocBuffer(1);
    if (kernelImpl() === 'wasm') assert.notEqual(md.bitmap(2).buffer, after.bytes.buffer);
    after.release();
  });
});
