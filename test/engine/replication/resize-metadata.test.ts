// Online resize of a node's metadata: the move to the new layout, and a crash at every step of it (open finds the old or the new layout, whole).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { Metadata, metadataSize, type MoveStep } from '../../../engine/replication/metadata.js';
import { MiB, external, readAt, sparse, withDir, writeAt } from './md-fixtures.js';

const STEPS: MoveStep[] = ['truncated', 'marker', 'area', 'switched', 'zeroed', 'done'];
const GEN = 0x1234n << 8n;

/** Internal metadata on a backing file holding 8 MiB of data, with marks, a generation and active extents. */
function internalMd(dir: string): Metadata {
  const file = sparse(path.join(dir, 'disk.img'), 8 * MiB + metadataSize(8 * MiB, 2));
  const md = Metadata.create({ backingFile: file, metaFile: null, nodeId: 0, peerIds: [1, 2] });
  return prepare(md);
}

function prepare(md: Metadata): Metadata {
  md.setInitialGeneration(GEN);
  md.disk = 'UpToDate';
  md.setOutOfSync(1, 0, 4096);
  md.setOutOfSync(2, 8 * MiB - 4096, 4096);
  md.alActivate(4 * MiB, 4096);
  md.writeSuperblock();
  md.flushBitmaps();
  return md;
}

/** The marks and state prepare() made, checked on `md` whatever its size. */
function checkState(md: Metadata, dataSize: number): void {
  assert.equal(md.dataSize, dataSize);
  assert.equal(md.gens.current, GEN);
  assert.equal(md.disk, 'UpToDate');
  assert.equal(md.outOfSyncBits(1), 1);
  assert.equal(md.outOfSyncBits(2), 1);
  assert.ok(md.anyOutOfSync(1, 0, 4096));
  assert.ok(md.anyOutOfSync(2, 8 * MiB - 4096, 4096));
  // The new blocks are in sync on every peer.
  if (dataSize > 8 * MiB) assert.ok(!md.anyOutOfSync(1, 8 * MiB, dataSize - 8 * MiB) && !md.anyOutOfSync(2, 8 * MiB, dataSize - 8 * MiB));
}

test('internal metadata grows: new size, marks and generations kept, new blocks in sync and zero, old area zeroed', () => {
  withDir((dir) => {
    const md = internalMd(dir);
    const file = md.layout.file;
    const oldArea = md.layout.areaOffset;
    writeAt(file, 100, Buffer.from('guest data'));
    const grown = md.grow(24 * MiB);
    checkState(grown, 24 * MiB);
    assert.deepEqual(grown.activeExtents(), [1]);
    assert.ok(grown.layout.areaOffset >= 24 * MiB);
    assert.equal(fs.statSync(file).size, grown.layout.areaOffset + grown.layout.areaSize);
    assert.equal(readAt(file, 100, 10).toString(), 'guest data');
    // The old area (now data) reads as zeroes.
    assert.ok(readAt(file, oldArea, 64 * 1024).every((b) => b === 0));
    grown.setOutOfSync(1, 20 * MiB, 4096); // the new area is usable
    grown.close();
    const again = Metadata.open({ backingFile: file, metaFile: null });
    assert.equal(again.dataSize, 24 * MiB);
    assert.equal(again.openReport.staleRange, null);
    assert.equal(again.openReport.badSuperblock, null);
    assert.ok(again.anyOutOfSync(1, 20 * MiB, 4096));
    again.close();
  });
});

test('internal metadata grows by less than its own area: the new area starts after the old one', () => {
  withDir((dir) => {
    const md = internalMd(dir);
    const oldEnd = md.layout.areaOffset + md.layout.areaSize;
    const grown = md.grow(8 * MiB + 4096);
    assert.ok(grown.layout.areaOffset >= oldEnd);
    checkState(grown, 8 * MiB + 4096);
    grown.close();
  });
});

test('external metadata grows once the backing file has, and refuses before', () => {
  withDir((dir) => {
    const opts = external(dir, 8 * MiB);
    const md = prepare(Metadata.create(opts));
    assert.throws(() => md.grow(16 * MiB), /grow it first/);
    fs.truncateSync(opts.backingFile, 16 * MiB);
    const grown = md.grow(16 * MiB);
    checkState(grown, 16 * MiB);
    grown.close();
    const again = Metadata.open(opts);
    assert.equal(again.dataSize, 16 * MiB);
    again.close();
  });
});

test('growing refuses a smaller or unaligned size and changes nothing', () => {
  withDir((dir) => {
    const md = internalMd(dir);
    const size = fs.statSync(md.layout.file).size;
    assert.throws(() => md.grow(4 * MiB), /larger multiple of 4096/);
    assert.throws(() => md.grow(16 * MiB + 1), /larger multiple of 4096/);
    assert.equal(fs.statSync(md.layout.file).size, size);
    md.close();
  });
});

for (const internal of [true, false]) {
  for (const step of STEPS) {
    test(`${internal ? 'internal' : 'external'} metadata: a crash after step "${step}" of the move opens a whole layout`, () => {
      withDir((dir) => {
        let md: Metadata;
        let loc: { backingFile: string; metaFile: string | null };
        if (internal) {
          md = internalMd(dir);
          loc = { backingFile: md.layout.file, metaFile: null };
        } else {
          const opts = external(dir, 8 * MiB);
          md = prepare(Metadata.create(opts));
          fs.truncateSync(opts.backingFile, 16 * MiB);
          loc = { backingFile: opts.backingFile, metaFile: opts.metaFile };
        }
        const oldArea = md.layout.areaOffset;
        const crash = new Error('crash');
        assert.throws(() => md.grow(16 * MiB, (s) => { if (s === step) throw crash; }), (e) => e === crash);
        // As after a crash: nothing more is written by the old process.
        md.abandon();
        const after = Metadata.open(loc);
        const switched = STEPS.indexOf(step) >= STEPS.indexOf('switched');
        checkState(after, switched ? 16 * MiB : 8 * MiB);
        assert.equal(after.openReport.badSuperblock, null);
        // The interrupted activity log is recovered either way.
        assert.deepEqual(after.openReport.alExtentsRecovered, [1]);
        if (step === 'switched' || step === 'zeroed') {
          // Switched, with the old area not known to be zeroed: finished (zeroed again) before data is served.
          assert.ok(after.openReport.staleRange !== null);
          after.finishMove();
          assert.ok(readAt(after.layout.file, oldArea, 64 * 1024).every((b) => b === 0));
        } else {
          assert.equal(after.openReport.staleRange, null);
        }
        // Whatever was opened can grow again (the leftover of the interrupted attempt is cut off).
        if (!internal) fs.truncateSync(loc.backingFile, 32 * MiB);
        const grown = after.grow(32 * MiB);
        checkState(grown, 32 * MiB);
        grown.close();
        const last = Metadata.open(loc);
        assert.equal(last.dataSize, 32 * MiB);
        last.close();
      });
    });
  }
}

test('a stale move marker of other metadata is not followed', () => {
  withDir((dir) => {
    const a = internalMd(dir);
    const file = a.layout.file;
    const end = a.layout.areaOffset + a.layout.areaSize;
    a.close();
    // Grow the file by hand and leave slot B as it is: no marker, no superblock at the new end.
    fs.truncateSync(file, end + 1 * MiB);
    assert.throws(() => Metadata.open({ backingFile: file, metaFile: null }), /no valid twindisk metadata/);
  });
});
