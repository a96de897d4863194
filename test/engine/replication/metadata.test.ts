// Tests of the Metadata object: create/open/close, the superblock slots, the generations API.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import {
  AL_MAX_EXTENTS, MAX_HISTORY, MD_UNIT, Metadata, MetadataError, metadataSize, newGeneration,
} from '../../../engine/replication/metadata.js';
import { MAX_NODES } from '../../../engine/replication/frames.js';
import { MiB, corrupt, external, readAt, sparse, withDir, writeAt } from './md-fixtures.js';

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
    md.setInitialGeneration(6n << 1n);
    md.rotateGeneration(5n << 1n, []);
    md.rotateGeneration(g, []);
    md.setBitmapBase(7, g ^ 2n);
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
    assert.deepEqual(back.openReport, { crashedPrimary: false, badPages: 0, alExtentsRecovered: [], cleanShutdown: true, alLost: false, badSuperblock: null, staleRange: null });
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
    md.setInitialGeneration(0x1234n << 4n);
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

test('generations: setInitialGeneration gives fresh metadata its first generation, once', () => {
  withDir((dir) => {
    const opts = external(dir, 8 * MiB);
    const md = Metadata.create(opts);
    assert.throws(() => md.setInitialGeneration(0n), MetadataError);
    md.setInitialGeneration(0x1234n);
    assert.equal(md.gens.current, 0x1234n);
    assert.deepEqual(md.gens.history, [], 'nothing moves to the history');
    assert.throws(() => md.setInitialGeneration(0x5678n), /already has data generation 1234/);
    md.writeSuperblock();
    md.abandon();
    const back = Metadata.open(opts);
    assert.equal(back.gens.current, 0x1234n);
    back.abandon();
  });
});

test('generations: rotateGeneration keeps MAX_HISTORY entries and bases only the listed peers without a base', () => {
  withDir((dir) => {
    const opts = external(dir, 8 * MiB, { nodeId: 0, peerIds: [1, 2, 3] });
    const md = Metadata.create(opts);
    md.rotateGeneration(10n, [1]);
    assert.equal(md.gens.current, 10n);
    assert.deepEqual(md.gens.history, [0n], 'the old current goes to the history even when it is 0');
    assert.equal(md.gens.bitmap[1], 0n, 'no base from generation 0');
    md.rotateGeneration(20n, [1, 2]);
    assert.deepEqual([md.gens.bitmap[1], md.gens.bitmap[2], md.gens.bitmap[3]], [10n, 10n, 0n]);
    md.rotateGeneration(30n, [2, 3]);
    assert.deepEqual([md.gens.bitmap[1], md.gens.bitmap[2], md.gens.bitmap[3]], [10n, 10n, 20n], 'a peer keeps its older base');
    for (let g = 40n; g <= 80n; g += 10n) md.rotateGeneration(g, []);
    assert.equal(md.gens.current, 80n);
    assert.equal(md.gens.history.length, MAX_HISTORY);
    assert.deepEqual(md.gens.history, [70n, 60n, 50n, 40n], 'newest first, the oldest dropped');
    assert.throws(() => md.rotateGeneration(90n, [0]), /not a peer/, 'its own id');
    assert.throws(() => md.rotateGeneration(90n, [MAX_NODES]), /not a peer/);
    assert.throws(() => md.rotateGeneration(1n << 64n, []), MetadataError);
    assert.equal(md.gens.current, 80n, 'a refused rotation changes nothing');
    md.writeSuperblock();
    md.abandon();
    const back = Metadata.open(opts);
    assert.deepEqual(back.gens.history, [70n, 60n, 50n, 40n]);
    assert.deepEqual([back.gens.bitmap[1], back.gens.bitmap[2], back.gens.bitmap[3]], [10n, 10n, 20n]);
    back.abandon();
  });
});

test('generations: adoptGenerations takes current and history (copied) and bases peers without a base; setBitmapBase sets one', () => {
  withDir((dir) => {
    const opts = external(dir, 8 * MiB);
    const md = Metadata.create(opts);
    md.setInitialGeneration(4n);
    md.rotateGeneration(6n, [1, 2]);
    const src = { current: 0x100n, bitmap: new Array<bigint>(MAX_NODES).fill(0x99n), history: [0x80n, 0x60n] };
    md.adoptGenerations(src);
    src.history.push(0x40n);
    assert.equal(md.gens.current, 0x100n);
    assert.deepEqual(md.gens.history, [0x80n, 0x60n], 'a copy of the source\'s history');
    assert.deepEqual([md.gens.bitmap[1], md.gens.bitmap[2]], [4n, 4n], 'this node\'s bitmap bases are its own');
    md.setBitmapBase(2, 0n);
    md.adoptGenerations({ current: 0x200n, history: [0x100n] }, [1, 2]);
    assert.deepEqual([md.gens.bitmap[1], md.gens.bitmap[2]], [4n, 0x100n], 'peers without a base get the old current one');
    assert.throws(() => md.adoptGenerations({ current: 0x300n, history: [] }, [0]), /not a peer/);
    assert.equal(md.gens.current, 0x200n, 'a refused adoption changes nothing');
    assert.throws(() => md.adoptGenerations({ current: 1n, history: new Array(MAX_HISTORY + 1).fill(2n) }), /at most 4/);
    md.setBitmapBase(1, 0n);
    md.setBitmapBase(2, 0x100n);
    assert.deepEqual([md.gens.bitmap[1], md.gens.bitmap[2]], [0n, 0x100n]);
    assert.throws(() => md.setBitmapBase(0, 1n), /not a peer/);
    assert.throws(() => md.setBitmapBase(1, -1n), MetadataError);
    md.writeSuperblock();
    md.close();
    const back = Metadata.open(opts);
    assert.deepEqual([back.gens.current, back.gens.history, back.gens.bitmap[1], back.gens.bitmap[2]], [0x200n, [0x100n], 0n, 0x100n]);
    back.abandon();
  });
});

test('a failed metadata write is an errno error naming the file (the engine detaches on it)', () => {
  withDir((dir) => {
    const opts = external(dir, 8 * MiB);
    const md = Metadata.create(opts);
    // The fd goes away behind the object's back (nothing opens a file before the write): EBADF.
    fs.closeSync((md as unknown as { file: { fd: number } }).file.fd);
    assert.throws(() => md.writeSuperblock(), (e: NodeJS.ErrnoException) => {
      assert.equal(e.code, 'EBADF');
      assert.ok(e.message.includes(opts.metaFile!), e.message);
      return true;
    });
    assert.throws(() => md.abandon(), /EBADF/, 'closing the fd again');
  });
});
