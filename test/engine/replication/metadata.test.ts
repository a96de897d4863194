// Tests of the replication metadata: layout sizes, superblock slots, bitmap pages, activity log and crash recovery.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import {
  AL_MAX_EXTENTS, BITMAP_PAGE_BYTES, MD_UNIT, Metadata, MetadataError, metadataSize, newGeneration,
  type CreateOptions,
} from '../../../engine/replication/metadata.js';
import { MAX_NODES } from '../../../engine/replication/frames.js';

const MiB = 1 << 20;
const PAGE_BITS = BITMAP_PAGE_BYTES * 8;

/** Runs `fn` with a fresh temporary directory, removed afterwards. */
function withDir(fn: (dir: string) => void): void {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'twindisk-md-'));
  try {
    fn(dir);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** A sparse file of `size` bytes. */
function sparse(file: string, size: number): string {
  fs.writeFileSync(file, '');
  fs.truncateSync(file, size);
  return file;
}

/** Flips `len` bytes at `pos` of `file`, as a torn or misdirected write would leave them. */
function corrupt(file: string, pos: number, len = 16): void {
  const fd = fs.openSync(file, 'r+');
  const b = Buffer.alloc(len);
  fs.readSync(fd, b, 0, len, pos);
  for (let i = 0; i < len; i++) b[i] = b[i]! ^ 0xa5;
  fs.writeSync(fd, b, 0, len, pos);
  fs.closeSync(fd);
}

function readAt(file: string, pos: number, len: number): Buffer {
  const fd = fs.openSync(file, 'r');
  const b = Buffer.alloc(len);
  fs.readSync(fd, b, 0, len, pos);
  fs.closeSync(fd);
  return b;
}

function writeAt(file: string, pos: number, data: Uint8Array): void {
  const fd = fs.openSync(file, 'r+');
  fs.writeSync(fd, data, 0, data.length, pos);
  fs.closeSync(fd);
}

/** External metadata for a `dataSize`-byte backing file in `dir`. */
function external(dir: string, dataSize: number, extra: Partial<CreateOptions> = {}): CreateOptions {
  return {
    backingFile: sparse(path.join(dir, 'data.img'), dataSize),
    metaFile: path.join(dir, 'data.md'),
    nodeId: 0,
    peerIds: [1, 2],
    ...extra,
  };
}

/** The open report of the metadata at `loc`, closing it again without writing. */
function reportOf(loc: { backingFile: string; metaFile: string | null }): Metadata['openReport'] {
  const md = Metadata.open(loc);
  md.abandon();
  return md.openReport;
}

function bit(map: Uint8Array, i: number): boolean {
  return ((map[i >> 3]! >> (i & 7)) & 1) === 1;
}

/** xorshift32 stream of integers in [0, n). */
function rng(seed: number): (n: number) => number {
  let x = seed | 1;
  return (n) => {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
    return (x >>> 0) % n;
  };
}

test('metadataSize counts units: AL ring, bitmap pages per peer, two superblocks', () => {
  assert.equal(metadataSize(64 * MiB, 2), MD_UNIT * (64 + 2 * 1 + 2));
  assert.equal(metadataSize(64 * MiB, 0), MD_UNIT * (64 + 2));
  const pages = Math.ceil(2 ** 40 / 4096 / 8 / BITMAP_PAGE_BYTES);
  assert.equal(pages, 8323);
  assert.equal(metadataSize(2 ** 40, 1), MD_UNIT * (64 + pages + 2));
  assert.equal(metadataSize(2 ** 40, 3, 65536, 8), MD_UNIT * (8 + 3 * Math.ceil(2 ** 40 / 65536 / 8 / BITMAP_PAGE_BYTES) + 2));
  assert.throws(() => metadataSize(MiB, 1, 2048), MetadataError);
  assert.throws(() => metadataSize(MiB, 1, 4096 * 3), MetadataError);
  assert.throws(() => metadataSize(MiB, 1, 4096, 5), MetadataError);
  assert.throws(() => metadataSize(MiB, MAX_NODES), MetadataError);
});

test('internal metadata: data size is the file size minus the metadata area, round trip', () => {
  withDir((dir) => {
    const mdSize = metadataSize(64 * MiB, 2);
    assert.equal(mdSize, 278528);
    const backingFile = sparse(path.join(dir, 'vol.img'), 64 * MiB + mdSize);
    const loc = { backingFile, metaFile: null };
    const md = Metadata.create({ ...loc, nodeId: 3, peerIds: [0, 7] });
    assert.equal(md.dataSize, 64 * MiB);
    assert.equal(md.bits, 16384);
    assert.equal(md.layout.areaOffset, 64 * MiB);
    assert.equal(md.layout.areaSize, mdSize);
    assert.deepEqual(md.layout.superblocks, [64 * MiB + mdSize - 8192, 64 * MiB + mdSize - 4096]);
    assert.equal(md.disk, 'Inconsistent');
    assert.equal(md.gens.current, 0n);
    assert.deepEqual(md.gens.bitmap, new Array(MAX_NODES).fill(0n));
    assert.equal(md.outOfSyncBits(0), 0);
    const g = newGeneration();
    md.gens = { current: g, bitmap: new Array(MAX_NODES).fill(0n), history: [5n << 1n, 6n << 1n] };
    md.gens.bitmap[7] = g ^ 2n;
    md.disk = 'UpToDate';
    md.promotedAt = 1_700_000_000_123;
    md.writeSuperblock();
    md.setOutOfSync(7, 10 * MiB, 3 * 4096);
    md.close();
    assert.equal(fs.statSync(backingFile).size, 64 * MiB + mdSize, 'the backing file keeps its size');

    const back = Metadata.open(loc);
    assert.deepEqual([back.nodeId, back.dataSize, back.granularity, [...back.peerIds]], [3, 64 * MiB, 4096, [0, 7]]);
    assert.equal(back.gens.current, g);
    assert.equal(back.gens.bitmap[7], g ^ 2n);
    assert.deepEqual(back.gens.history, [10n, 12n]);
    assert.equal(back.disk, 'UpToDate');
    assert.equal(back.promotedAt, 1_700_000_000_123);
    assert.equal(back.outOfSyncBits(7), 3);
    assert.equal(back.outOfSyncBits(0), 0);
    assert.deepEqual(back.openReport, { crashedPrimary: false, badPages: 0, alExtentsRecovered: [], cleanShutdown: true, alLost: false, badSuperblock: null });
    back.close();
  });
});

test('internal metadata: the data size is the largest that fits a file of any size', () => {
  withDir((dir) => {
    for (const size of [64 * MiB + 278528 - 1, 64 * MiB + 278528 + 5000, 1000 * MiB + 12345, 4096 + metadataSize(4096, 2)]) {
      const backingFile = sparse(path.join(dir, `v${size}.img`), size);
      const md = Metadata.create({ backingFile, metaFile: null, nodeId: 0, peerIds: [1, 2] });
      const end = Math.floor(size / 4096) * 4096;
      const d = md.dataSize;
      assert.equal(d % 4096, 0);
      assert.ok(d + metadataSize(d, 2) <= end, `${size}: fits`);
      assert.ok(d + 4096 + metadataSize(d + 4096, 2) > end, `${size}: maximal`);
      assert.equal(md.layout.areaOffset + md.layout.areaSize, end);
      md.close();
      const back = Metadata.open({ backingFile, metaFile: null });
      assert.equal(back.dataSize, d);
      back.abandon();
    }
    const tiny = sparse(path.join(dir, 'tiny.img'), metadataSize(4096, 2) + 4095);
    assert.throws(() => Metadata.create({ backingFile: tiny, metaFile: null, nodeId: 0, peerIds: [1, 2] }), /too small/);
  });
});

test('external metadata: the whole backing file is data, the metadata file is exactly metadataSize', () => {
  withDir((dir) => {
    const opts = external(dir, 10 * MiB + 100, { peerIds: [1] });
    const pattern = Buffer.alloc(4096, 0x5a);
    writeAt(opts.backingFile, 10 * MiB - 4096, pattern);
    const md = Metadata.create(opts);
    assert.equal(md.dataSize, 10 * MiB);
    assert.equal(fs.statSync(opts.metaFile!).size, metadataSize(10 * MiB, 1));
    assert.equal(md.layout.areaOffset, 0);
    md.setAll(1);
    md.close();
    assert.deepEqual(readAt(opts.backingFile, 10 * MiB - 4096, 4096), pattern, 'data untouched');
    const back = Metadata.open(opts);
    assert.equal(back.outOfSyncBits(1), 2560);
    assert.equal(back.dataSize, 10 * MiB);
    back.close();
  });
});

test('create refuses existing metadata unless forced; open writes nothing', () => {
  withDir((dir) => {
    const opts = external(dir, 8 * MiB);
    const md = Metadata.create(opts);
    md.setAll(1);
    md.close();
    assert.throws(() => Metadata.create(opts), /already holds twindisk metadata/);
    const internal = sparse(path.join(dir, 'int.img'), 32 * MiB);
    Metadata.create({ backingFile: internal, metaFile: null, nodeId: 1, peerIds: [0] }).close();
    assert.throws(() => Metadata.create({ backingFile: internal, metaFile: null, nodeId: 1, peerIds: [0] }), MetadataError);

    const before = fs.readFileSync(opts.metaFile!);
    Metadata.open(opts).abandon();
    assert.deepEqual(fs.readFileSync(opts.metaFile!), before, 'open alone changes no byte');

    const again = Metadata.create({ ...opts, force: true });
    assert.equal(again.outOfSyncBits(1), 0);
    again.close();
    const fresh = Metadata.open(opts);
    assert.equal(fresh.outOfSyncBits(1), 0);
    fresh.abandon();
  });
});

test('create validates ids and sizes', () => {
  withDir((dir) => {
    const opts = external(dir, 8 * MiB);
    assert.throws(() => Metadata.create({ ...opts, peerIds: [0] }), /own id/);
    assert.throws(() => Metadata.create({ ...opts, peerIds: [1, 1] }), /twice/);
    assert.throws(() => Metadata.create({ ...opts, nodeId: 32 }), MetadataError);
    assert.throws(() => Metadata.create({ ...opts, alExtents: AL_MAX_EXTENTS + 1 }), /alExtents/);
    assert.throws(() => Metadata.create({ ...opts, alExtentSize: 3 * MiB }), MetadataError);
    assert.throws(() => Metadata.open({ backingFile: opts.backingFile, metaFile: path.join(dir, 'none.md') }), MetadataError);
    const md = Metadata.create({ ...opts, alExtents: AL_MAX_EXTENTS });
    assert.throws(() => md.bitmap(5), /no bitmap slot/);
    assert.throws(() => md.setOutOfSync(1, 8 * MiB - 4096, 8192), RangeError);
    md.close();
  });
});

test('superblock: a torn write of the newer slot leaves the previous state', () => {
  withDir((dir) => {
    const opts = external(dir, 8 * MiB);
    const md = Metadata.create(opts); // slot A, seq 1
    const [slotA] = md.layout.superblocks;
    const seq1 = readAt(opts.metaFile!, slotA, MD_UNIT);
    md.disk = 'UpToDate';
    md.writeSuperblock(); // slot B, seq 2
    md.disk = 'Outdated';
    md.gens.current = 0x1234n << 4n;
    md.writeSuperblock(); // slot A, seq 3
    md.abandon();
    // A torn write: the header and the start of the new body over the old contents (the body is
    // shorter than a sector, so a real tear would have to fall inside it to matter).
    const seq3 = readAt(opts.metaFile!, slotA, MD_UNIT);
    writeAt(opts.metaFile!, slotA, Buffer.concat([seq3.subarray(0, 128), seq1.subarray(128)]));
    const back = Metadata.open(opts);
    assert.equal(back.superblockSeq, 2);
    assert.deepEqual(back.openReport.badSuperblock, { slot: 0, reason: 'checksum mismatch', used: 1, usedSeq: 2 }, 'the torn slot is reported');
    assert.equal(back.disk, 'UpToDate');
    assert.equal(back.gens.current, 0n);
    back.disk = 'Outdated';
    back.writeSuperblock(); // over the torn slot A, seq 3 again
    back.close(); // slot B, seq 4
    const again = Metadata.open(opts);
    assert.equal(again.superblockSeq, 4);
    assert.equal(again.openReport.badSuperblock, null, 'both slots rewritten');
    assert.equal(again.disk, 'Outdated');
    again.abandon();
  });
});

test('superblock: both slots damaged is a clear error', () => {
  withDir((dir) => {
    const opts = external(dir, 8 * MiB);
    const md = Metadata.create(opts);
    md.writeSuperblock();
    md.close();
    corrupt(opts.metaFile!, md.layout.superblocks[0] + 100);
    corrupt(opts.metaFile!, md.layout.superblocks[1] + 3000);
    assert.throws(() => Metadata.open(opts), (e: unknown) => {
      assert.ok(e instanceof MetadataError);
      assert.match(e.message, /no valid twindisk metadata on .*data\.md/);
      assert.match(e.message, /twindisk create-md/);
      return true;
    });
    const internal = sparse(path.join(dir, 'empty.img'), 64 * MiB);
    assert.throws(() => Metadata.open({ backingFile: internal, metaFile: null }), /no valid twindisk metadata.*resized/);
  });
});

test('superblock: writes alternate between the slots and the newest wins', () => {
  withDir((dir) => {
    const opts = external(dir, 8 * MiB);
    const md = Metadata.create(opts);
    for (let i = 1; i <= 3; i++) {
      md.promotedAt = i * 1000;
      md.writeSuperblock();
    }
    assert.equal(md.superblockSeq, 4);
    assert.equal(md.stats.superblockWrites, 3);
    md.abandon();
    const [a, b] = md.layout.superblocks;
    assert.equal(readAt(opts.metaFile!, a + 8, 8).readBigUInt64LE(0), 3n);
    assert.equal(readAt(opts.metaFile!, b + 8, 8).readBigUInt64LE(0), 4n);
    const newest = Metadata.open(opts);
    assert.deepEqual([newest.superblockSeq, newest.promotedAt], [4, 3000]);
    assert.equal(newest.openReport.badSuperblock, null);
    newest.abandon();
    corrupt(opts.metaFile!, b + 600);
    const older = Metadata.open(opts);
    assert.deepEqual([older.superblockSeq, older.promotedAt], [3, 2000], 'slot A is valid on its own');
    assert.deepEqual(older.openReport.badSuperblock, { slot: 1, reason: 'checksum mismatch', used: 0, usedSeq: 3 });
    older.abandon();
    // A slot overwritten by something else entirely, and one never written (fresh metadata) is not "bad".
    writeAt(opts.metaFile!, b, Buffer.alloc(MD_UNIT, 0x5a));
    const other = Metadata.open(opts);
    assert.deepEqual(other.openReport.badSuperblock, { slot: 1, reason: 'no superblock header', used: 0, usedSeq: 3 });
    other.abandon();
    Metadata.create({ ...opts, force: true }).abandon();
    const fresh = Metadata.open(opts);
    assert.equal(fresh.openReport.badSuperblock, null, 'slot B of fresh metadata is empty, not damaged');
    fresh.abandon();
  });
});

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

test('activity log: a crash recovers the active set and reports a crashed primary', () => {
  withDir((dir) => {
    const opts = external(dir, 64 * MiB);
    const md = Metadata.create(opts);
    assert.equal(md.alExtentSize, 4 * MiB);
    md.primary = true;
    md.promotedAt = Date.now();
    md.writeSuperblock();
    assert.equal(md.alActivate(0, 1), true);
    assert.equal(md.alActivate(5 * 4 * MiB + 100, 4 * MiB), true, 'one transaction for two new extents');
    assert.equal(md.stats.alWrites, 2);
    assert.deepEqual(md.activeExtents(), [0, 5, 6]);
    md.abandon(); // crash

    const back = Metadata.open(opts);
    assert.equal(back.openReport.crashedPrimary, true);
    assert.equal(back.openReport.cleanShutdown, false);
    assert.deepEqual(back.openReport.alExtentsRecovered, [0, 5, 6]);
    assert.deepEqual(back.activeExtents(), [0, 5, 6], 'recovered extents stay active');
    assert.equal(back.primary, true, 'the flag stays until the caller clears it');
    back.disk = 'Outdated';
    back.writeSuperblock();
    back.abandon();
    const still = Metadata.open(opts);
    assert.equal(still.openReport.crashedPrimary, true, 'a later superblock write keeps the crash on record');
    still.primary = false;
    still.writeSuperblock();
    still.abandon();
    assert.equal(reportOf(opts).crashedPrimary, false);

    // Without the primary flag the active set is still recovered, but no crashed primary is reported.
    const opts2 = { ...opts, metaFile: path.join(dir, 'secondary.md') };
    const secondary = Metadata.create(opts2);
    secondary.alActivate(8 * MiB, 1);
    secondary.abandon();
    const r = Metadata.open(opts2);
    assert.deepEqual([r.openReport.crashedPrimary, r.openReport.alExtentsRecovered], [false, [2]]);
    r.abandon();
  });
});

test('activity log: a torn newest transaction leaves the previous set; the ring wraps', () => {
  withDir((dir) => {
    const opts = external(dir, 64 * MiB, { alSlots: 8 }); // 4 transactions of 2 units
    const md = Metadata.create(opts); // empty transaction, seq 1, slot 0
    md.alActivate(0, 1); // seq 2, slot 1
    md.alActivate(4 * MiB, 1); // seq 3, slot 2
    md.alActivate(8 * MiB, 1); // seq 4, slot 3
    md.abandon();
    corrupt(opts.metaFile!, md.layout.alOffset + (3 * 2 + 1) * MD_UNIT + 500); // second unit of slot 3
    const back = Metadata.open(opts);
    assert.deepEqual(back.openReport.alExtentsRecovered, [0, 1]);
    back.alActivate(12 * MiB, 1); // seq 4 again, over the torn slot
    back.abandon();
    const again = Metadata.open(opts);
    assert.deepEqual(again.openReport.alExtentsRecovered, [0, 1, 3]);
    for (let e = 4; e < 14; e++) again.alActivate(e * 4 * MiB, 1); // around the ring twice more
    again.abandon();
    const wrapped = Metadata.open(opts);
    assert.deepEqual(wrapped.openReport.alExtentsRecovered, [0, 1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]);
    wrapped.close();
  });
});

test('activity log: least recently used extents are evicted beyond alExtents', () => {
  withDir((dir) => {
    const opts = external(dir, 64 * MiB, { alExtents: 3 });
    const md = Metadata.create(opts);
    for (const e of [0, 1, 2]) assert.equal(md.alActivate(e * 4 * MiB, 4096), true);
    assert.equal(md.alActivate(100, 1), false, 'touches extent 0');
    assert.equal(md.alActivate(3 * 4 * MiB, 1), true);
    assert.deepEqual(md.activeExtents(), [0, 2, 3], 'extent 1 was least recently used');
    assert.equal(md.alActivate(4 * MiB, 1), true);
    assert.deepEqual(md.activeExtents(), [0, 1, 3]);
    assert.throws(() => md.alActivate(0, 4 * 4 * MiB), /exceeds alExtents/);
    md.abandon();
    assert.deepEqual(reportOf(opts).alExtentsRecovered, [0, 1, 3]);
  });
});

test('activity log: activating active extents does no I/O', () => {
  withDir((dir) => {
    const md = Metadata.create(external(dir, 64 * MiB));
    assert.equal(md.alActivate(4 * MiB - 1, 2), true, 'extents 0 and 1');
    const before = { ...md.stats };
    for (let i = 0; i < 1000; i++) assert.equal(md.alActivate((i * 4096) % (8 * MiB), 4096), false);
    assert.equal(md.alActivate(0, 0), false);
    assert.deepEqual(md.stats, before);
    md.close();
  });
});

test('activity log: applyAlToBitmaps marks exactly the recovered extents', () => {
  withDir((dir) => {
    // Extent 2 is short: the volume is 8 MiB + 8 KiB with 4 MiB extents.
    const opts = external(dir, 8 * MiB + 8192);
    const md = Metadata.create(opts);
    md.primary = true;
    md.writeSuperblock();
    md.alActivate(4 * MiB + 7, 1);
    md.alActivate(8 * MiB, 8192);
    md.abandon();
    const back = Metadata.open(opts);
    assert.deepEqual(back.openReport.alExtentsRecovered, [1, 2]);
    back.applyAlToBitmaps();
    for (const peer of [1, 2]) {
      const map = back.bitmap(peer);
      assert.equal(back.outOfSyncBits(peer), 1024 + 2);
      for (let i = 0; i < back.bits; i++) assert.equal(bit(map, i), i >= 1024, `peer ${peer} bit ${i}`);
    }
    back.close();
    const closed = Metadata.open(opts);
    assert.equal(closed.outOfSyncBits(1), 1026, 'close flushed the bitmaps');
    closed.abandon();

    // With every transaction damaged the AL is lost: everything is marked.
    const lost = Metadata.open(opts);
    for (let u = 0; u < lost.layout.alSlots; u++) corrupt(opts.metaFile!, lost.layout.alOffset + u * MD_UNIT + 64);
    lost.abandon();
    const l = Metadata.open(opts);
    assert.equal(l.openReport.alLost, true);
    l.applyAlToBitmaps();
    assert.equal(l.outOfSyncBits(2), l.bits);
    l.abandon();
  });
});

test('a clean close leaves no crashed primary and an empty activity log', () => {
  withDir((dir) => {
    const opts = external(dir, 64 * MiB);
    const md = Metadata.create(opts);
    md.primary = true;
    md.writeSuperblock();
    md.alActivate(0, 3 * 4 * MiB);
    md.setOutOfSync(2, 0, 4096);
    md.close();
    assert.throws(() => md.writeSuperblock(), /closed/);
    const back = Metadata.open(opts);
    assert.equal(back.openReport.crashedPrimary, false);
    assert.equal(back.openReport.cleanShutdown, true);
    assert.deepEqual(back.openReport.alExtentsRecovered, []);
    assert.deepEqual(back.activeExtents(), []);
    assert.equal(back.outOfSyncBits(2), 1);
    // The first write after a clean open clears the clean flag first.
    back.alActivate(0, 1);
    back.abandon();
    const crashed = Metadata.open(opts);
    assert.equal(crashed.openReport.cleanShutdown, false);
    assert.equal(crashed.openReport.crashedPrimary, false);
    crashed.abandon();
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

test('newGeneration: random nonzero u64 with the lowest bit clear', () => {
  const seen = new Set<bigint>();
  for (let i = 0; i < 200; i++) {
    const g = newGeneration();
    assert.equal(typeof g, 'bigint');
    assert.ok(g > 1n && g < 1n << 64n);
    assert.equal(g & 1n, 0n);
    seen.add(g);
  }
  assert.equal(seen.size, 200);
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
