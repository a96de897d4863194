// Tests of md's write-intent bitmap at run time: the array-to-bitmap mapping per level, begin/end/clear, durability, crashes.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Backend, BackendInfo, Completion } from '../../../engine/backend.js';
import { IoVector } from '../../../engine/iovec.js';
import { MemoryBackend } from '../../../engine/memory-backend.js';
import { assembleArray, createArray, type MemberIo } from '../../../engine/raid/array.js';
import { mdArraySectors, mdMapSector, type MdGeometry } from '../../../engine/raid/geometry.js';
import { BITMAP_SUPER_BYTES, MD_MAX_SECTOR } from '../../../engine/raid/md-constants.js';
import { decodeMdBitmapSuper, encodeMdBitmapSuper, mdBitmapSpace, mdBitmapSyncSize, newMdBitmapSuper } from '../../../engine/raid/md-bitmap.js';
import { parseMdUuid } from '../../../engine/raid/md-superblock.js';
import {
  MdWriteIntentBitmap, mdBitmapSyncRange, type MdBitmapRun, type MdBitmapStore, type WriteIntent,
} from '../../../engine/raid/write-intent-bitmap.js';
import { ARRAY_UUID, seededRandom } from './md-fixtures.js';

const MiB = 1 << 20;
const KiB = 1024;

// ----------------------------------------------------------------------------------------- mapping

/** The member sectors (rows) a write to array sectors [s, s + n) touches, from md's own placement. */
function touchedRows(g: MdGeometry, s: number, n: number): { min: number; max: number } {
  let min = Infinity;
  let max = -1;
  for (let x = s; x < s + n; x++) {
    const row = mdMapSector(g, x).copies[0]!.sector;
    min = Math.min(min, row);
    max = Math.max(max, row);
  }
  return { min, max };
}

const striped: { name: string; g: MdGeometry }[] = [
  { name: 'raid5 left-symmetric, 4 members', g: { level: 5, layout: 2, raidDisks: 4, chunkSectors: 8 } },
  { name: 'raid5 right-asymmetric, 2 members (one data chunk per stripe)', g: { level: 5, layout: 1, raidDisks: 2, chunkSectors: 16 } },
  { name: 'raid4, 3 members', g: { level: 4, layout: 0, raidDisks: 3, chunkSectors: 8 } },
  { name: 'raid6 ddf-N-restart, 5 members', g: { level: 6, layout: 9, raidDisks: 5, chunkSectors: 8 } },
  { name: 'raid6 left-symmetric-6, 6 members', g: { level: 6, layout: 18, raidDisks: 6, chunkSectors: 16 } },
];

for (const { name, g } of striped) {
  test(`mdBitmapSyncRange: a write dirties the member rows of the stripes it touches: ${name}`, () => {
    const rnd = seededRandom(1234 + g.raidDisks);
    const arraySectors = mdArraySectors(g, 40 * g.chunkSectors);
    for (let i = 0; i < 400; i++) {
      const s = Math.floor(rnd() * arraySectors);
      const n = 1 + Math.floor(rnd() * Math.min(arraySectors - s, rnd() < 0.5 ? 2 * g.chunkSectors : 12 * g.chunkSectors));
      const r = mdBitmapSyncRange(g, s * 512, n * 512);
      const t = touchedRows(g, s, n);
      assert.deepEqual([r.start, r.end], [t.min, t.max + 1], `write of sectors ${s}+${n}: every row touched, and no further`);
    }
    // Byte-granular writes round out to sectors.
    assert.deepEqual({ ...mdBitmapSyncRange(g, 100, 10) }, { start: 0, end: 1 });
  });
}

test('mdBitmapSyncRange: raid1 and raid10 bits cover array sectors', () => {
  for (const g of [{ level: 1, layout: 0, raidDisks: 3, chunkSectors: 0 }, { level: 10, layout: 0x102, raidDisks: 3, chunkSectors: 8 }] as MdGeometry[]) {
    assert.deepEqual({ ...mdBitmapSyncRange(g, 4096, 8192) }, { start: 8, end: 24 });
    assert.deepEqual({ ...mdBitmapSyncRange(g, 1000, 100) }, { start: 1, end: 3 });
  }
});

// -------------------------------------------------------------------------------- with a fake store

/** A store that keeps the last bytes written and holds completions until released. */
class HeldStore implements MdBitmapStore {
  readonly disk: Uint8Array;
  writes: MdBitmapRun[][] = [];
  private held: ((error: Error | null) => void)[] = [];
  hold = false;

  constructor(size: number, init: Uint8Array) {
    this.disk = init.slice(0, size);
  }

  write(runs: readonly MdBitmapRun[], done: (error: Error | null) => void): void {
    this.writes.push([...runs]);
    const land = (): void => {
      for (const r of runs) this.disk.set(r.bytes, r.offset);
      done(null);
    };
    if (this.hold) this.held.push(() => land());
    else land();
  }

  /** Lands the held writes, in order. */
  release(): void {
    const h = this.held;
    this.held = [];
    for (const f of h) f(null);
  }

  bit(c: number): boolean {
    return (this.disk[BITMAP_SUPER_BYTES + (c >>> 3)]! & (1 << (c & 7))) !== 0;
  }
}

const g1: MdGeometry = { level: 1, layout: 0, raidDisks: 2, chunkSectors: 0 };
const UUID = parseMdUuid(ARRAY_UUID);

/** A raid1 bitmap over 64 MiB members at 64 KiB per bit (1024 bits), events 5, on a HeldStore. */
function rig(over: { events?: bigint; arrayEvents?: bigint; bits?: number[]; degraded?: boolean; clearDelayMs?: number } = {}): { bm: MdWriteIntentBitmap; store: HeldStore } {
  const size = 64 * MiB / 512;
  const syncSize = mdBitmapSyncSize(g1, size);
  const image = new Uint8Array(mdBitmapSpace(syncSize, 64 * KiB));
  image.set(encodeMdBitmapSuper({ ...newMdBitmapSuper({ setUuid: UUID, syncSize, chunkSize: 64 * KiB }), events: over.events ?? 5n }), 0);
  for (const c of over.bits ?? []) image[BITMAP_SUPER_BYTES + (c >>> 3)]! |= 1 << (c & 7);
  const store = new HeldStore(image.length, image);
  const bm = new MdWriteIntentBitmap({
    geometry: g1, componentSectors: size, image, store, arrayEvents: over.arrayEvents ?? 5n, degraded: over.degraded, clearDelayMs: over.clearDelayMs ?? 60_000,
  });
  return { bm, store };
}

/** begin() with a flag that says when ready ran. */
function begin(bm: WriteIntent, offset: number, length: number): { ready: boolean } {
  const s = { ready: false };
  bm.begin(offset, length, () => { s.ready = true; });
  return s;
}

test('begin: ready at once, with no write, when the bits are already set on disk', () => {
  const { bm, store } = rig({ bits: [3] });
  assert.equal(bm.bits, 1024);
  const w = begin(bm, 3 * 64 * KiB + 512, 4096);
  assert.equal(w.ready, true);
  assert.equal(store.writes.length, 0);
  assert.equal(bm.pending(3), 1);
});

test('begin: ready only once the block holding the new bit is written; writes arriving meanwhile share the next one', () => {
  const { bm, store } = rig();
  store.hold = true;
  const a = begin(bm, 0, 4096);
  assert.equal(a.ready, false, 'not before the bitmap write lands');
  assert.equal(store.writes.length, 1);
  assert.equal(store.writes[0]![0]!.offset, 0);
  assert.equal(store.bit(0), false);
  const again = begin(bm, 4096, 4096); // same chunk, its bit is in the write in flight
  const b = begin(bm, 100 * 64 * KiB, 4096);
  const c = begin(bm, 900 * 64 * KiB, 3 * 64 * KiB); // chunks 900..902
  assert.equal(again.ready, false, 'set in memory is not durable');
  assert.equal(store.writes.length, 1, 'one write in flight at a time');
  store.release();
  assert.equal(a.ready, true);
  assert.equal(again.ready, true, 'its bit was in that write');
  assert.equal(b.ready, false);
  assert.equal(store.bit(0), true);
  assert.equal(store.writes.length, 2, 'b and c: one more write');
  assert.deepEqual(store.writes[1]!.map((r) => r.offset), [0], 'their bits share the first 4 KiB block');
  store.release();
  assert.equal(b.ready, true);
  assert.equal(c.ready, true);
  for (const ch of [0, 100, 900, 901, 902]) assert.equal(store.bit(ch), true, `chunk ${ch}`);
  assert.equal(bm.dirtyCount(), 5);
});

test('end + flushClean: idle chunks are cleared on disk with events_cleared raised; busy ones stay', async () => {
  const { bm, store } = rig({ arrayEvents: 9n, events: 9n });
  begin(bm, 0, 4096);
  begin(bm, 0, 4096);
  begin(bm, 64 * KiB, 4096);
  bm.end(0, 4096);
  bm.end(64 * KiB, 4096);
  assert.equal(store.bit(1), true, 'cleared lazily, not at end()');
  await bm.flushClean();
  assert.equal(store.bit(0), true, 'chunk 0 has a write in flight');
  assert.equal(store.bit(1), false);
  const sb = decodeMdBitmapSuper(store.disk);
  assert.equal(sb.eventsCleared, 9n);
  assert.equal(sb.events, 9n);
  bm.end(0, 4096);
  await bm.flushClean();
  assert.equal(store.bit(0), false);
  assert.equal(bm.dirtyCount(), 0);
  assert.throws(() => bm.end(0, 4096), /ended more writes than began/);
  const writes = store.writes.length;
  await bm.flushClean();
  assert.equal(store.writes.length, writes, 'nothing to clear: nothing written');
});

test('bits are cleared by the daemon after clearDelayMs without flushClean', async () => {
  const { bm, store } = rig({ clearDelayMs: 20 });
  begin(bm, 0, 4096);
  bm.end(0, 4096);
  assert.equal(store.bit(0), true);
  await new Promise((r) => setTimeout(r, 120));
  assert.equal(store.bit(0), false);
  bm.close();
});

test('degraded: writes leave their bits set (NEEDED) until markInSync; writes in flight when a member goes are kept too', async () => {
  const { bm, store } = rig();
  begin(bm, 0, 4096);
  bm.setDegraded(true); // chunk 0's write may have missed the member that went
  begin(bm, 10 * 64 * KiB, 4096);
  bm.end(0, 4096);
  bm.end(10 * 64 * KiB, 4096);
  const cleared = decodeMdBitmapSuper(store.disk).eventsCleared;
  await bm.flushClean();
  assert.equal(store.bit(0), true);
  assert.equal(store.bit(10), true);
  assert.equal(decodeMdBitmapSuper(store.disk).eventsCleared, cleared, 'events_cleared stays while degraded');
  bm.setDegraded(false);
  bm.markInSync({ start: 0, end: 128 + 64 }); // chunk 0 whole, chunk 1 half: only chunk 0 is released
  await bm.flushClean();
  assert.equal(store.bit(0), false);
  assert.equal(store.bit(10), true);
  assert.deepEqual(bm.dirtyRegions().map((r) => [r.start, r.end, r.arrayOffset, r.arrayLength]), [[1280, 1408, 1280 * 512, 64 * KiB]]);
  bm.markInSync({ start: 0, end: 2 ** 40 });
  await bm.flushClean();
  assert.equal(bm.dirtyCount(), 0);
});

test('a write that missed a member (end with reachedAll false) keeps its bit on a whole array', async () => {
  const { bm, store } = rig({ events: 7n, arrayEvents: 7n });
  begin(bm, 0, 4096);
  begin(bm, 64 * KiB, 4096);
  bm.end(0, 4096, false);
  assert.equal(decodeMdBitmapSuper(store.disk).eventsCleared, 0n);
  await bm.flushClean();
  assert.equal(decodeMdBitmapSuper(store.disk).eventsCleared, 0n, 'not raised by a write that failed somewhere');
  bm.end(64 * KiB, 4096, true);
  await bm.flushClean();
  assert.equal(store.bit(0), true);
  assert.equal(store.bit(1), false);
  assert.equal(decodeMdBitmapSuper(store.disk).eventsCleared, 7n);
});

test('a bitmap older than the array is stale: every chunk dirty, and written out with the next write', () => {
  const { bm, store } = rig({ events: 3n, arrayEvents: 5n });
  assert.equal(bm.wasStale, true);
  assert.equal(bm.dirtyCount(), bm.bits);
  assert.deepEqual(bm.dirtyRegions().map((r) => [r.start, r.end]), [[0, 64 * MiB / 512]]);
  store.hold = true;
  const w = begin(bm, 0, 512);
  assert.equal(w.ready, false, 'set in memory, not yet on disk');
  assert.deepEqual(store.writes[0]!.map((r) => [r.offset, r.bytes.length]), [[0, 4096]], 'every block goes out');
  store.release();
  assert.equal(w.ready, true);
  assert.equal(store.bit(1023), true);
  bm.setArrayEvents(6n);
  void bm.writeSuper();
  store.release();
  assert.equal(decodeMdBitmapSuper(store.disk).events, 6n);
  assert.equal(decodeMdBitmapSuper(store.disk).state, 0, 'no longer stale');
});

test('begin/end outside the array are refused', () => {
  const { bm } = rig();
  assert.throws(() => bm.begin(64 * MiB, 512, () => {}), /outside the array/);
  assert.throws(() => bm.begin(0, 0, () => {}), /outside the array/);
});

// --------------------------------------------------------------------------------- through an array

/** A back-end that holds writes and flushes until released, and counts them (to see what ready waits for). */
class HeldBackend implements Backend {
  hold = false;
  writes = 0;
  flushes = 0;
  private held: (() => void)[] = [];
  constructor(readonly next: Backend) {}
  get info(): BackendInfo {
    return this.next.info;
  }
  read(iov: IoVector, offset: number, done: Completion): void {
    this.next.read(iov, offset, done);
  }
  write(iov: IoVector, offset: number, fua: boolean, done: Completion): void {
    this.writes++;
    const go = (): void => this.next.write(iov, offset, fua, done);
    if (this.hold) this.held.push(go);
    else go();
  }
  flush(done: Completion): void {
    this.flushes++;
    const go = (): void => this.next.flush(done);
    if (this.hold) this.held.push(go);
    else go();
  }
  discard(offset: number, length: number, done: Completion): void {
    this.next.discard(offset, length, done);
  }
  writeZeroes(offset: number, length: number, mayUnmap: boolean, done: Completion): void {
    this.next.writeZeroes(offset, length, mayUnmap, done);
  }
  close(): void {}
  release(): void {
    while (this.held.length > 0) this.held.shift()!();
  }
}

function memMembers(n: number, bytes = 16 * MiB): { members: MemberIo[]; held: HeldBackend[] } {
  const held = Array.from({ length: n }, () => new HeldBackend(new MemoryBackend({ memory: MemoryBackend.allocate(bytes) })));
  return { held, members: held.map((b, i) => ({ name: `${String.fromCharCode(97 + i)}.img`, backend: b })) };
}

function readAt(b: Backend, offset: number, length: number): Uint8Array {
  const buf = new Uint8Array(length);
  const iov = new IoVector(1);
  iov.push(buf, 0, length, 0);
  b.read(iov, offset, { complete: (st) => assert.equal(st, 0) });
  return buf;
}

function diskBit(b: Backend, c: number): boolean {
  return (readAt(b, 8192 + BITMAP_SUPER_BYTES + (c >>> 3), 1)[0]! & (1 << (c & 7))) !== 0;
}

test('through the array: the bit is on every member in sync, each flushed, when ready fires', async () => {
  const { members, held } = memMembers(4);
  const a = await createArray(members, { level: 5, bitmap: 'internal', bitmapChunkBytes: 64 * KiB, assumeClean: true, chunkBytes: 64 * KiB });
  const bm = a.bitmap!;
  await a.markFaulty(3); // a member gone: the bitmap goes to the other three only
  const d3writes = held[3]!.writes;
  for (const h of held) h.hold = true;
  const flushesBefore = held.map((h) => h.flushes);
  let seen: boolean[] | null = null;
  bm.begin(3 * 64 * KiB * 7, 4096, () => {
    // stripe 7 of a 3-data-member raid5: member sectors 7 * 128.., bitmap chunk 7
    seen = members.slice(0, 3).map((m) => diskBit(m.backend, 7));
    held.slice(0, 3).forEach((h, i) => assert.ok(h.flushes > flushesBefore[i]!, `member ${i} flushed before ready`));
  });
  assert.equal(seen, null);
  for (const h of held) h.release(); // the writes land; the flushes are queued behind them
  for (let i = 0; i < 5 && seen === null; i++) for (const h of held) h.release();
  assert.deepEqual(seen, [true, true, true]);
  assert.equal(held[3]!.writes, d3writes, 'nothing written to the failed member');
  for (const h of held) h.hold = false;
  a.close();
});

test('through the array: after a crash, re-assembly reports the regions written and not yet cleared', async () => {
  const { members } = memMembers(4);
  const a = await createArray(members, { level: 5, bitmap: 'internal', bitmapChunkBytes: 64 * KiB, assumeClean: true, chunkBytes: 64 * KiB });
  const bm = a.bitmap!;
  await a.recordDirty();
  const done = (off: number, len: number): Promise<void> => new Promise((r) => bm.begin(off, len, r));
  const row = 3 * 64 * KiB; // one stripe of array data = one 64 KiB row of member sectors = one bitmap chunk
  await done(5 * row, 4096); // in flight at the crash
  await done(20 * row + 8192, 2 * row); // rows 20..22, in flight
  await done(40 * row, 4096);
  bm.end(40 * row, 4096); // completed, not yet cleared
  await done(60 * row, 4096);
  bm.end(60 * row, 4096);
  await bm.flushClean(); // 40 and 60 cleared
  await done(61 * row, 4096);
  bm.end(61 * row, 4096); // completed after the last clearing
  // Crash: no recordClean, no flushClean; assemble from what the members hold.
  const b = await assembleArray(members);
  assert.equal(b.resyncOffset, 0n, 'the superblocks said dirty: resync');
  assert.equal(b.clean, false);
  const regions = b.bitmap!.dirtyRegions();
  assert.deepEqual(regions.map((r) => [r.start / 128, r.end / 128]), [[5, 6], [20, 23], [61, 62]], 'rows (64 KiB of member sectors)');
  assert.deepEqual(regions.map((r) => [r.arrayOffset / row, r.arrayLength / row]), [[5, 1], [20, 3], [61, 1]], 'whole stripes of array data');
  assert.equal(superblockResync(members[0]!), 0n, 'the superblocks say dirty');
  assert.deepEqual(b.resyncRegions(), regions, 'dirty at the crash: resync what the bitmap says, nothing more');
  await b.recordResync(MD_MAX_SECTOR);
  assert.deepEqual(b.resyncRegions(), []);
  a.close();
});

function superblockResync(m: MemberIo): bigint {
  return new DataView(readAt(m.backend, 4096, 512).buffer).getBigUint64(208, true);
}

const levels: { name: string; n: number; level: 1 | 5 | 6 | 10; layout?: string }[] = [
  { name: 'raid1', n: 2, level: 1 },
  { name: 'raid5', n: 4, level: 5 },
  { name: 'raid6', n: 5, level: 6, layout: 'right-asymmetric' },
  { name: 'raid10 n2', n: 3, level: 10 },
  { name: 'raid10 f2', n: 4, level: 10, layout: 'f2' },
];

for (const { name, n, level, layout } of levels) {
  test(`through the array: begin() dirties exactly the bitmap chunks under the write: ${name}`, async () => {
    const { members } = memMembers(n, 8 * MiB);
    const chunk = 4 * KiB;
    const a = await createArray(members, { level, layout, bitmap: 'internal', bitmapChunkBytes: chunk, assumeClean: true, ...(level === 1 ? {} : { chunkBytes: 16 * KiB }) });
    const bm = a.bitmap!;
    const g = a.geometry;
    const rnd = seededRandom(77 + n);
    const sectors = a.arrayBytes / 512;
    for (let i = 0; i < 30; i++) {
      const s = Math.floor(rnd() * (sectors - 1));
      const len = 1 + Math.floor(rnd() * Math.min(sectors - s, 300));
      const expected = new Set<number>();
      if (level === 1 || level === 10) {
        for (let x = s; x < s + len; x++) expected.add(Math.floor(x / (chunk / 512))); // array sectors
      } else {
        const t = touchedRows(g, s, len); // member rows, hull of what the write touches
        for (let x = t.min; x <= t.max; x++) expected.add(Math.floor(x / (chunk / 512)));
      }
      await new Promise<void>((r) => bm.begin(s * 512, len * 512, r));
      const set = new Set<number>();
      for (let c = 0; c < bm.bits; c++) if (bm.pending(c) > 0) set.add(c);
      assert.deepEqual([...set].sort((x, y) => x - y), [...expected].sort((x, y) => x - y), `write ${s}+${len}`);
      for (const c of set) assert.equal(diskBit(members[0]!.backend, c), true);
      bm.end(s * 512, len * 512);
      await bm.flushClean();
      assert.equal(bm.dirtyCount(), 0);
    }
    assert.equal(bm.syncSectors, Number(mdBitmapSyncSize(g, a.componentBytes / 512)));
    a.close();
  });
}
