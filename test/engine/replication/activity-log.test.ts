// Tests of the activity log: crash recovery of the active set, torn transactions, the ring, LRU eviction.
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { ActivityLog, ExtentLru } from '../../../engine/replication/activity-log.js';
import type { MetadataIo } from '../../../engine/replication/md-format.js';
import { MD_UNIT, Metadata } from '../../../engine/replication/metadata.js';
import { MiB, bit, corrupt, external, reportOf, withDir } from './md-fixtures.js';

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

test('ExtentLru: touch, insert and evict keep least-recently-used order without allocating slots', () => {
  const lru = new ExtentLru(3);
  assert.ok(lru.empty && !lru.full);
  for (const e of [7, 3, 9]) lru.insert(e);
  assert.ok(lru.full);
  assert.deepEqual([...lru.oldestFirst()], [7, 3, 9]);
  assert.equal(lru.touch(7), true);
  assert.equal(lru.touch(8), false);
  assert.deepEqual([...lru.oldestFirst()], [3, 9, 7]);
  lru.evict();
  assert.equal(lru.has(3), false);
  lru.insert(1);
  assert.deepEqual([...lru.oldestFirst()], [9, 7, 1]);
  assert.deepEqual(lru.sorted(), [1, 7, 9]);
  while (!lru.empty) lru.evict();
  assert.deepEqual([...lru.oldestFirst()], []);
});

/** An in-memory ring for ActivityLog: reads and writes of a fixed array, syncs and in-use marks counted. */
function memoryRing(units: number): MetadataIo & { bytes: Uint8Array; inUse: number } {
  const f = {
    bytes: new Uint8Array(units * MD_UNIT),
    inUse: 0,
    stats: { alWrites: 0, superblockWrites: 0, bitmapPageWrites: 0, syncs: 0 },
    pread: (buf: Uint8Array, pos: number) => { buf.set(f.bytes.subarray(pos, pos + buf.length)); },
    pwrite: (buf: Uint8Array, pos: number) => { f.bytes.set(buf, pos); },
    sync: () => { f.stats.syncs++; },
    pwriteDurable: (buf: Uint8Array, pos: number) => { f.bytes.set(buf, pos); f.stats.syncs++; },
    markInUse: () => { f.inUse++; },
  };
  return f;
}

test('ActivityLog over memory: a lost ring recovers nothing; transactions are written, synced and recovered oldest first', () => {
  const geom = { mdId: 3n, dataSize: 64 * MiB, alExtentSize: 4 * MiB, alExtents: 2, alSlots: 8, alOffset: 0 };
  const file = memoryRing(8);
  const lost = ActivityLog.recover(geom, file);
  assert.deepEqual(lost, { seq: 0, extents: [] }, 'no intact transaction');
  let evictions = 0;
  const log = new ActivityLog(geom, file, lost, () => { evictions++; });
  assert.equal(log.touch(0, 1), 2);
  log.activate(0, 1);
  assert.deepEqual([file.stats.alWrites, file.stats.syncs, file.inUse], [1, 1, 1]);
  assert.equal(log.touch(0, 0), 0, 'extent 0 is now the most recent');
  log.activate(5, 5); // evicts extent 1
  assert.equal(evictions, 1);
  assert.deepEqual(log.activeExtents(), [0, 5]);
  assert.throws(() => log.activate(0, 2), /exceeds alExtents/);
  assert.deepEqual(ActivityLog.recover(geom, file), { seq: 2, extents: [0, 5] });
  log.clear();
  assert.ok(log.empty);
  assert.deepEqual(ActivityLog.recover(geom, file), { seq: 3, extents: [] });
});
