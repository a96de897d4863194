// Tests of the RAID layer: random I/O against a shadow copy for every level and layout, with the member bytes checked against md's placement and parity; degraded arrays, rebuilds, read-error repair, write errors, concurrency, planning, write intent, scrub.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Backend, BackendInfo, Completion } from '../../../engine/backend.js';
import { FaultyBackend } from '../../../engine/faulty-backend.js';
import { IoVector } from '../../../engine/iovec.js';
import { MemoryBackend } from '../../../engine/memory-backend.js';
import { EINVAL, EIO, EROFS } from '../../../engine/os.js';
import { mdArraySectors, mdDataDisks, mdStripeMap, raid10FindPhys, raid5ComputeSector, type MdGeometry } from '../../../engine/raid/geometry.js';
import {
  ALGORITHM_LEFT_ASYMMETRIC, ALGORITHM_LEFT_SYMMETRIC, ALGORITHM_LEFT_SYMMETRIC_6, ALGORITHM_PARITY_0, ALGORITHM_PARITY_N,
  ALGORITHM_RIGHT_ASYMMETRIC, ALGORITHM_RIGHT_SYMMETRIC, ALGORITHM_ROTATING_N_CONTINUE, ALGORITHM_ROTATING_ZERO_RESTART,
  RAID10_OFFSET_BIT,
} from '../../../engine/raid/md-constants.js';
import { computeParity } from '../../../engine/raid/parity.js';
import { RaidBackend, type WriteIntent } from '../../../engine/raid/raid-backend.js';
import { RangeLock, type RangeLockHolder } from '../../../engine/raid/range-lock.js';
import { seededRandom } from '../../harness/random.js';

const SENTINEL = 0xa5;
const TAIL = 4096;

// ------------------------------------------------------------------------------------------ test members

/**
 * Sits on top of each member: counts what the array asks of it, logs writes, and in async mode runs
 * every operation (the transfer itself, not just its completion) later, in a random order.
 */
class Probe implements Backend {
  reads = 0;
  readBytes = 0;
  writes = 0;
  writeBytes = 0;
  zeroes = 0;
  discards = 0;
  flushes = 0;
  /** Operations that completed before one submitted earlier. */
  reordered = 0;
  private seq = 0;
  private maxDone = -1;
  private queue: (() => void)[] = [];
  private scheduled = false;

  constructor(readonly next: Backend, readonly slot: number, private readonly log: string[] | null, private rnd: (() => number) | null = null) {}

  get info(): BackendInfo {
    return this.next.info;
  }

  setAsync(rnd: (() => number) | null): void {
    this.rnd = rnd;
  }

  resetCounts(): void {
    this.reads = this.readBytes = this.writes = this.writeBytes = this.zeroes = this.discards = this.flushes = 0;
  }

  read(iov: IoVector, offset: number, done: Completion): void {
    this.reads++;
    this.readBytes += iov.bytes;
    this.run((d) => this.next.read(iov, offset, d), done);
  }

  write(iov: IoVector, offset: number, fua: boolean, done: Completion): void {
    this.writes++;
    this.writeBytes += iov.bytes;
    this.log?.push(`write ${this.slot}`);
    this.run((d) => this.next.write(iov, offset, fua, d), done);
  }

  flush(done: Completion): void {
    this.flushes++;
    this.run((d) => this.next.flush(d), done);
  }

  discard(offset: number, length: number, done: Completion): void {
    this.discards++;
    this.log?.push(`discard ${this.slot}`);
    this.run((d) => this.next.discard(offset, length, d), done);
  }

  writeZeroes(offset: number, length: number, mayUnmap: boolean, done: Completion): void {
    this.zeroes++;
    this.log?.push(`zero ${this.slot}`);
    this.run((d) => this.next.writeZeroes(offset, length, mayUnmap, d), done);
  }

  close(): void {
    this.next.close();
  }

  private run(op: (d: Completion) => void, done: Completion): void {
    const seq = this.seq++;
    const finish: Completion = {
      complete: (st) => {
        if (seq < this.maxDone) this.reordered++;
        this.maxDone = Math.max(this.maxDone, seq);
        done.complete(st);
      },
    };
    if (this.rnd === null) return op(finish);
    this.queue.push(() => op(finish));
    this.schedule();
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      const rnd = this.rnd ?? Math.random;
      const batch = this.queue;
      this.queue = [];
      for (let i = batch.length - 1; i > 0; i--) {
        const j = Math.floor(rnd() * (i + 1));
        [batch[i], batch[j]] = [batch[j]!, batch[i]!];
      }
      for (const op of batch) {
        if (rnd() < 0.3) this.queue.push(op); // some wait another round
        else op();
      }
      if (this.queue.length > 0) this.schedule();
    });
  }
}

interface Rig {
  raid: RaidBackend;
  g: MdGeometry;
  /** Whole member bytes (data area at dataOffset), by slot. */
  mem: Uint8Array[];
  shared: SharedArrayBuffer[];
  faulty: FaultyBackend[];
  probes: Probe[];
  dataOffset: number;
  componentBytes: number;
  failed: [number, string][];
  log: string[];
}

interface RigOptions {
  componentBytes?: number;
  dataOffset?: number;
  missing?: number[];
  /** Reuse these member bytes (a second array over the same disks). */
  shared?: SharedArrayBuffer[];
  async?: () => number;
  intent?: WriteIntent;
  blockSize?: number;
  readOnly?: boolean;
}

function memberBytes(dataOffset: number, componentBytes: number): SharedArrayBuffer {
  const sab = MemoryBackend.allocate(dataOffset + componentBytes + TAIL);
  const u8 = new Uint8Array(sab);
  u8.fill(SENTINEL, 0, dataOffset);
  u8.fill(SENTINEL, dataOffset + componentBytes);
  return sab;
}

function rig(g: MdGeometry, o: RigOptions = {}): Rig {
  const dataOffset = o.dataOffset ?? 8192;
  const componentBytes = o.componentBytes ?? 64 * 1024;
  const shared = o.shared ?? Array.from({ length: g.raidDisks }, () => memberBytes(dataOffset, componentBytes));
  const log: string[] = [];
  const faulty = shared.map((sab) => new FaultyBackend(new MemoryBackend({ memory: sab, blockSize: o.blockSize ?? 512, readOnly: o.readOnly ?? false })));
  const probes = faulty.map((f, slot) => new Probe(f, slot, log, o.async ?? null));
  const failed: [number, string][] = [];
  const raid = new RaidBackend({
    geometry: g,
    members: probes.map((p, slot) => (o.missing?.includes(slot) ? null : p)),
    dataOffset,
    componentBytes,
    intent: o.intent,
    name: 'test-array',
    onMemberFailed: (slot, reason) => failed.push([slot, reason]),
  });
  return { raid, g: raid.geometry, mem: shared.map((s) => new Uint8Array(s)), shared, faulty, probes, dataOffset, componentBytes, failed, log };
}

/** A fresh member (bytes, fault layer, probe) for slot `slot`, e.g. for a rebuild; its data area starts as garbage. */
function freshMember(r: Rig, slot: number, async: (() => number) | null = null): Probe {
  const sab = memberBytes(r.dataOffset, r.componentBytes);
  new Uint8Array(sab).fill(0x3c, r.dataOffset, r.dataOffset + r.componentBytes);
  r.shared[slot] = sab;
  r.mem[slot] = new Uint8Array(sab);
  r.faulty[slot] = new FaultyBackend(new MemoryBackend({ memory: sab }));
  r.probes[slot] = new Probe(r.faulty[slot]!, slot, r.log, async);
  return r.probes[slot]!;
}

// ------------------------------------------------------------------------------------------ I/O helpers

/** Runs an operation that must complete synchronously (synchronous members); returns its status. */
function now(op: (d: Completion) => void): number {
  let status: number | null = null;
  op({
    complete: (s) => {
      assert.equal(status, null, 'completed twice');
      status = s;
    },
  });
  assert.notEqual(status, null, 'completed synchronously');
  return status!;
}

/** Runs an operation that may complete later. */
function later(op: (d: Completion) => void): Promise<number> {
  return new Promise((resolve, reject) => {
    let calls = 0;
    op({ complete: (s) => (calls++ === 0 ? resolve(s) : reject(new Error('completed twice'))) });
  });
}

/** A vector over `buf` cut into a few segments at random byte positions. */
function vecOf(buf: Uint8Array, rnd: () => number): IoVector {
  const cuts = new Set<number>();
  const k = Math.floor(rnd() * 4);
  for (let i = 0; i < k && buf.length > 1; i++) cuts.add(1 + Math.floor(rnd() * (buf.length - 1)));
  const points = [0, ...[...cuts].sort((a, b) => a - b), buf.length];
  const v = new IoVector(points.length);
  for (let i = 0; i + 1 < points.length; i++) v.push(buf, points[i]!, points[i + 1]! - points[i]!, 0);
  return v;
}

function randomBytes(len: number, rnd: () => number): Uint8Array {
  const b = new Uint8Array(len);
  const w = new Uint32Array(b.buffer, 0, len >>> 2);
  for (let i = 0; i < w.length; i++) w[i] = Math.floor(rnd() * 2 ** 32);
  for (let i = w.length * 4; i < len; i++) b[i] = Math.floor(rnd() * 256);
  return b;
}

/** A random block-aligned range of the array: small, chunk-sized, multi-stripe, or whole stripes. */
function randomRange(r: Rig, rnd: () => number): [number, number] {
  const size = r.raid.info.size;
  const bs = r.raid.info.blockSize;
  const chunk = r.g.level === 1 ? 8192 : r.g.chunkSectors * 512;
  const stripe = r.g.level === 4 || r.g.level === 5 || r.g.level === 6 ? chunk * mdDataDisks(r.g) : chunk * 2;
  const kind = rnd();
  let off: number;
  let len: number;
  if (kind < 0.35) {
    len = bs * (1 + Math.floor(rnd() * 8));
    off = bs * Math.floor(rnd() * (size / bs));
  } else if (kind < 0.6) {
    len = bs * (1 + Math.floor(rnd() * ((2 * chunk) / bs)));
    off = bs * Math.floor(rnd() * (size / bs));
  } else if (kind < 0.8) {
    len = bs * (1 + Math.floor(rnd() * ((3 * stripe) / bs)));
    off = bs * Math.floor(rnd() * (size / bs));
  } else {
    const stripes = Math.max(1, Math.floor(size / stripe));
    const s = Math.floor(rnd() * stripes);
    off = s * stripe;
    len = stripe * (1 + Math.floor(rnd() * 2));
  }
  len = Math.min(len, size - off);
  if (len === 0) {
    off = 0;
    len = bs;
  }
  return [off, len];
}

function readArray(r: Rig, off: number, len: number, rnd: () => number): { status: number; buf: Uint8Array } {
  const buf = new Uint8Array(len).fill(0xee);
  const status = now((d) => r.raid.read(vecOf(buf, rnd), off, d));
  return { status, buf };
}

function writeArray(r: Rig, shadow: Uint8Array, off: number, data: Uint8Array, rnd: () => number): number {
  const st = now((d) => r.raid.write(vecOf(data, rnd), off, rnd() < 0.2, d));
  if (st === 0) shadow.set(data, off);
  return st;
}

/** Compares bytes, failing with the first differing offset rather than a giant diff. */
function sameBytes(actual: Uint8Array, expected: Uint8Array, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  if (Buffer.compare(actual, expected) === 0) return;
  let i = 0;
  while (actual[i] === expected[i]) i++;
  assert.fail(`${what}: byte ${i} is ${actual[i]}, expected ${expected[i]}`);
}

/** One random operation (read, write, zeroes, discard) on a synchronous rig, checked against the shadow. */
function randomOp(r: Rig, shadow: Uint8Array, rnd: () => number, what: string): void {
  const [off, len] = randomRange(r, rnd);
  const kind = rnd();
  if (kind < 0.4) {
    const { status, buf } = readArray(r, off, len, rnd);
    assert.equal(status, 0, `${what}: read ${off}+${len}`);
    sameBytes(buf, shadow.subarray(off, off + len), `${what}: read ${off}+${len}`);
  } else if (kind < 0.9) {
    assert.equal(writeArray(r, shadow, off, randomBytes(len, rnd), rnd), 0, `${what}: write ${off}+${len}`);
  } else if (kind < 0.95) {
    assert.equal(now((d) => r.raid.writeZeroes(off, len, rnd() < 0.5, d)), 0, `${what}: zeroes ${off}+${len}`);
    shadow.fill(0, off, off + len);
  } else if (r.raid.info.canDiscard) {
    assert.equal(now((d) => r.raid.discard(off, len, d)), 0, `${what}: discard ${off}+${len}`);
    shadow.fill(0, off, off + len);
  }
}

/** Reads the whole array back and compares it with the shadow. */
function readAll(r: Rig, shadow: Uint8Array, what: string): void {
  const { status, buf } = readArray(r, 0, r.raid.info.size, Math.random);
  assert.equal(status, 0, `${what}: read everything`);
  sameBytes(buf, shadow, `${what}: whole array`);
}

// ------------------------------------------------------------------------------------------ member-byte checks

/**
 * Checks the members' raw bytes: the bytes outside each data area untouched; every data chunk where
 * geometry.ts puts it (raid5ComputeSector, raid10FindPhys) holding the shadow's bytes; every stripe's
 * P (and Q) equal to computeParity over its data (and, raid4/5, to a plain XOR); mirror copies equal.
 * Slots in `skip` are not looked at (missing, faulty, stale).
 */
function checkMembers(r: Rig, shadow: Uint8Array, what: string, skip: number[] = []): void {
  const g = r.g;
  const n = g.raidDisks;
  const used = (m: number): boolean => !skip.includes(m);
  for (let m = 0; m < n; m++) {
    if (!used(m)) continue;
    const mem = r.mem[m]!;
    const out = mem.subarray(0, r.dataOffset).every((b) => b === SENTINEL) && mem.subarray(r.dataOffset + r.componentBytes).every((b) => b === SENTINEL);
    assert.ok(out, `${what}: member ${m} bytes outside its data area were touched`);
  }
  const data = (m: number, off: number, len: number): Uint8Array => r.mem[m]!.subarray(r.dataOffset + off, r.dataOffset + off + len);
  const size = r.raid.info.size;
  if (g.level === 1) {
    for (let m = 0; m < n; m++) if (used(m)) sameBytes(data(m, 0, size), shadow, `${what}: raid1 member ${m}`);
    return;
  }
  const C = g.chunkSectors * 512;
  if (g.level === 10) {
    for (let c = 0; c < size / C; c++) {
      for (const copy of raid10FindPhys(g, c * g.chunkSectors)) {
        if (used(copy.disk)) sameBytes(data(copy.disk, copy.sector * 512, C), shadow.subarray(c * C, (c + 1) * C), `${what}: raid10 chunk ${c} on member ${copy.disk}`);
      }
    }
    return;
  }
  const D = mdDataDisks(g);
  for (let s = 0; s < size / (C * D); s++) {
    const map = mdStripeMap(g, s);
    for (const c of map.data) {
      const loc = raid5ComputeSector(g, c.chunk * g.chunkSectors);
      assert.equal(loc.dataDisk, c.disk, `${what}: chunk ${c.chunk}'s member`);
      assert.equal(loc.diskSector, s * g.chunkSectors, `${what}: chunk ${c.chunk}'s sector`);
      if (used(c.disk)) sameBytes(data(c.disk, s * C, C), shadow.subarray(c.chunk * C, (c.chunk + 1) * C), `${what}: chunk ${c.chunk} on member ${c.disk}`);
    }
    if (!Array.from({ length: n }, (_, m) => m).every(used)) continue;
    const blocks = Array.from({ length: n }, (_, m) => Uint8Array.from(data(m, s * C, C)));
    blocks[map.pDisk]!.fill(0);
    if (map.qDisk !== null) blocks[map.qDisk]!.fill(0);
    computeParity(g, map, blocks);
    sameBytes(data(map.pDisk, s * C, C), blocks[map.pDisk]!, `${what}: P of stripe ${s} on member ${map.pDisk}`);
    if (map.qDisk !== null) sameBytes(data(map.qDisk, s * C, C), blocks[map.qDisk]!, `${what}: Q of stripe ${s} on member ${map.qDisk}`);
    if (g.level !== 6) {
      const x = new Uint8Array(C);
      for (const c of map.data) {
        const d = data(c.disk, s * C, C);
        for (let i = 0; i < C; i++) x[i]! ^= d[i]!;
      }
      sameBytes(data(map.pDisk, s * C, C), x, `${what}: P of stripe ${s} as a plain XOR`);
    }
  }
}

// ------------------------------------------------------------------------------------------ geometries

const LS = ALGORITHM_LEFT_SYMMETRIC;
const geometries: [string, MdGeometry][] = [
  ['raid1, 2 members', { level: 1, layout: 0, raidDisks: 2, chunkSectors: 0 }],
  ['raid1, 3 members', { level: 1, layout: 0, raidDisks: 3, chunkSectors: 0 }],
  ['raid4, 4 members', { level: 4, layout: ALGORITHM_PARITY_N, raidDisks: 4, chunkSectors: 8 }],
  ['raid5 left-asymmetric, 4 members', { level: 5, layout: ALGORITHM_LEFT_ASYMMETRIC, raidDisks: 4, chunkSectors: 8 }],
  ['raid5 right-asymmetric, 4 members', { level: 5, layout: ALGORITHM_RIGHT_ASYMMETRIC, raidDisks: 4, chunkSectors: 16 }],
  ['raid5 left-symmetric, 3 members', { level: 5, layout: LS, raidDisks: 3, chunkSectors: 8 }],
  ['raid5 left-symmetric, 5 members', { level: 5, layout: LS, raidDisks: 5, chunkSectors: 8 }],
  ['raid5 right-symmetric, 4 members', { level: 5, layout: ALGORITHM_RIGHT_SYMMETRIC, raidDisks: 4, chunkSectors: 8 }],
  ['raid5 parity-first, 4 members', { level: 5, layout: ALGORITHM_PARITY_0, raidDisks: 4, chunkSectors: 8 }],
  ['raid6 left-symmetric, 6 members', { level: 6, layout: LS, raidDisks: 6, chunkSectors: 8 }],
  ['raid6 rotating-n-continue (ddf), 6 members', { level: 6, layout: ALGORITHM_ROTATING_N_CONTINUE, raidDisks: 6, chunkSectors: 8 }],
  ['raid6 rotating-zero-restart (ddf), 5 members', { level: 6, layout: ALGORITHM_ROTATING_ZERO_RESTART, raidDisks: 5, chunkSectors: 8 }],
  ['raid6 left-symmetric-6, 5 members', { level: 6, layout: ALGORITHM_LEFT_SYMMETRIC_6, raidDisks: 5, chunkSectors: 8 }],
  ['raid6 parity-last, 4 members', { level: 6, layout: ALGORITHM_PARITY_N, raidDisks: 4, chunkSectors: 16 }],
  ['raid10 near-2, 4 members', { level: 10, layout: 0x102, raidDisks: 4, chunkSectors: 8 }],
  ['raid10 near-2, 3 members', { level: 10, layout: 0x102, raidDisks: 3, chunkSectors: 8 }],
  ['raid10 far-2, 4 members', { level: 10, layout: 0x201, raidDisks: 4, chunkSectors: 8 }],
  ['raid10 offset-2, 4 members', { level: 10, layout: RAID10_OFFSET_BIT | 0x201, raidDisks: 4, chunkSectors: 8 }],
];

/** Slot sets the level survives losing: each member, and for raid6 each pair. */
function survivable(g: MdGeometry): number[][] {
  const n = g.raidDisks;
  const singles = Array.from({ length: n }, (_, m) => [m]);
  if (g.level === 6) {
    const pairs: number[][] = [];
    for (let a = 0; a < n; a++) for (let b = a + 1; b < n; b++) pairs.push([a, b]);
    return [...singles, ...pairs];
  }
  if (g.level === 1 && n === 3) return [...singles, [0, 2]];
  if (g.level === 10 && g.layout === 0x102 && n === 4) return [...singles, [0, 2], [1, 3]];
  return singles;
}

// ------------------------------------------------------------------------------------------ tests

for (const [name, g] of geometries) {
  test(`${name}: random reads and writes match a shadow copy; member bytes hold md's placement and parity`, () => {
    const r = rig(g);
    assert.equal(r.raid.info.size, Math.floor((mdArraySectors(r.g, r.componentBytes / 512) * 512) / 512) * 512);
    const shadow = new Uint8Array(r.raid.info.size);
    const rnd = seededRandom(1000 + g.level * 31 + g.layout + g.raidDisks);
    for (let i = 0; i < 300; i++) {
      randomOp(r, shadow, rnd, `op ${i}`);
      if (i % 100 === 99) checkMembers(r, shadow, `after op ${i}`);
    }
    readAll(r, shadow, 'end');
    checkMembers(r, shadow, 'end');
    assert.equal(r.raid.degraded, 0);
    assert.deepEqual(r.failed, []);
  });

  test(`${name}: degraded (every survivable set of missing members): I/O matches the shadow, and rebuilt members make the array consistent`, async () => {
    const base = rig(g);
    const shadow = new Uint8Array(base.raid.info.size);
    const rnd = seededRandom(2000 + g.level * 17 + g.layout + g.raidDisks);
    for (let i = 0; i < 60; i++) writeArray(base, shadow, ...randomWrite(base, rnd));
    checkMembers(base, shadow, 'before');
    for (const missing of survivable(g)) {
      const r = rig(g, { shared: base.shared, missing });
      const what = `missing ${missing.join('+')}`;
      assert.equal(r.raid.degraded, missing.length);
      assert.deepEqual(r.raid.memberStates(), Array.from({ length: g.raidDisks }, (_, i) => (missing.includes(i) ? 'missing' : 'in-sync')));
      readAll(r, shadow, `${what}, before writes`);
      for (let i = 0; i < 60; i++) randomOp(r, shadow, rnd, `${what} op ${i}`);
      readAll(r, shadow, `${what}, after writes`);
      checkMembers(r, shadow, `${what}, present members`, missing);
      for (const slot of missing) {
        const fresh = freshMember(r, slot);
        let progress = 0;
        await r.raid.rebuild(slot, fresh, (done, total) => {
          assert.ok(done <= total);
          progress = done;
        });
        assert.ok(progress > 0, 'progress reported');
        assert.equal(r.raid.memberStates()[slot], 'in-sync');
      }
      assert.equal(r.raid.degraded, 0);
      checkMembers(r, shadow, `${what}, rebuilt`);
      readAll(r, shadow, `${what}, rebuilt`);
      base.shared.splice(0, base.shared.length, ...r.shared); // the next round starts from these disks
    }
  });
}

function randomWrite(r: Rig, rnd: () => number): [number, Uint8Array, () => number] {
  const [off, len] = randomRange(r, rnd);
  return [off, randomBytes(len, rnd), rnd];
}

test('the array reports md\'s size, the members\' block size, and refuses to run without enough members', () => {
  const g: MdGeometry = { level: 5, layout: LS, raidDisks: 4, chunkSectors: 8 };
  const r = rig(g, { componentBytes: 64 * 1024 + 3 * 512 });
  assert.equal(r.raid.info.size, 3 * 64 * 1024, 'whole chunks only, times three data members');
  assert.equal(r.raid.info.blockSize, 512);
  assert.equal(r.raid.info.name, 'test-array');
  assert.equal(r.raid.info.canDiscard, true);
  assert.equal(r.raid.info.canWriteZeroes, true);
  const big = rig(g, { blockSize: 4096 });
  assert.equal(big.raid.info.blockSize, 4096);
  assert.equal(now((d) => big.raid.read(vecOf(new Uint8Array(512), Math.random), 0, d)), -EINVAL, '512-byte reads on 4096-byte members');
  assert.throws(() => rig(g, { missing: [0, 1] }), /cannot run/);
  assert.throws(() => rig({ level: 10, layout: 0x102, raidDisks: 4, chunkSectors: 8 }, { missing: [0, 1] }), /cannot run/);
  assert.doesNotThrow(() => rig({ level: 10, layout: 0x102, raidDisks: 4, chunkSectors: 8 }, { missing: [0, 3] }));
  assert.throws(() => rig(g, { dataOffset: 100 }), /dataOffset/);
  const ro = rig(g, { readOnly: true });
  assert.equal(ro.raid.info.readOnly, true);
  assert.equal(now((d) => ro.raid.write(vecOf(new Uint8Array(512), Math.random), 0, false, d)), -EROFS);
});

test('requests off the block size or past the end fail with EINVAL and touch nothing', () => {
  const r = rig({ level: 5, layout: LS, raidDisks: 4, chunkSectors: 8 });
  const size = r.raid.info.size;
  const buf = new Uint8Array(1024);
  const bad: [number, number][] = [[100, 512], [0, 100], [size - 512, 1024], [size, 512], [-512, 512]];
  for (const [off, len] of bad) {
    assert.equal(now((d) => r.raid.read(vecOf(buf.subarray(0, len), Math.random), off, d)), -EINVAL, `read ${off}+${len}`);
    assert.equal(now((d) => r.raid.write(vecOf(buf.subarray(0, len), Math.random), off, false, d)), -EINVAL, `write ${off}+${len}`);
    assert.equal(now((d) => r.raid.writeZeroes(off, len, false, d)), -EINVAL, `zeroes ${off}+${len}`);
    assert.equal(now((d) => r.raid.discard(off, len, d)), -EINVAL, `discard ${off}+${len}`);
  }
  assert.equal(r.probes.reduce((s, p) => s + p.reads + p.writes + p.zeroes + p.discards, 0), 0);
  assert.equal(now((d) => r.raid.read(new IoVector(1), 0, d)), 0, 'an empty read');
  checkMembers(r, new Uint8Array(size), 'untouched');
});

test('a full-stripe write reads nothing; small writes use read-modify-write or reconstruct-write, whichever reads less', () => {
  const rnd = seededRandom(7);
  const totalRead = (r: Rig): number => r.probes.reduce((s, p) => s + p.readBytes, 0);
  const reset = (r: Rig): void => r.probes.forEach((p) => p.resetCounts());
  for (const g of [
    { level: 5, layout: LS, raidDisks: 4, chunkSectors: 16 },
    { level: 6, layout: LS, raidDisks: 6, chunkSectors: 16 },
    { level: 6, layout: ALGORITHM_ROTATING_N_CONTINUE, raidDisks: 5, chunkSectors: 16 },
  ] as MdGeometry[]) {
    const r = rig(g);
    const shadow = new Uint8Array(r.raid.info.size);
    const SB = 8192 * mdDataDisks(g);
    for (const [off, len] of [[0, SB], [SB, 2 * SB], [3 * SB, 3 * SB]]) {
      reset(r);
      assert.equal(writeArray(r, shadow, off!, randomBytes(len!, rnd), rnd), 0);
      assert.equal(totalRead(r), 0, `raid${g.level}: writing stripes ${off! / SB}.. reads nothing`);
      assert.equal(r.probes.reduce((s, p) => s + p.writeBytes, 0), (len! / SB) * 8192 * g.raidDisks, 'and writes every chunk once');
    }
    checkMembers(r, shadow, `raid${g.level} full stripes`);
  }

  // raid5, 5 members (4 data), 8 KiB chunks.
  const g5: MdGeometry = { level: 5, layout: LS, raidDisks: 5, chunkSectors: 16 };
  const r = rig(g5);
  const shadow = new Uint8Array(r.raid.info.size);
  const map0 = mdStripeMap(g5, 0);
  reset(r);
  writeArray(r, shadow, 4096, randomBytes(4096, rnd), rnd); // half of chunk 0
  assert.equal(totalRead(r), 8192, 'RMW: old data 4 KiB + old parity 4 KiB (RCW would read 12 KiB)');
  assert.equal(r.probes[map0.pDisk]!.readBytes, 4096, 'parity read');
  assert.equal(r.probes[map0.data[0]!.disk]!.readBytes, 4096, 'old data read');
  reset(r);
  writeArray(r, shadow, 0, randomBytes(3 * 8192, rnd), rnd); // chunks 0-2 of 4
  assert.equal(totalRead(r), 8192, 'RCW: only the untouched chunk (RMW would read 32 KiB)');
  assert.equal(r.probes[map0.data[3]!.disk]!.readBytes, 8192);
  assert.equal(r.probes[map0.pDisk]!.readBytes, 0, 'parity not read');
  reset(r);
  writeArray(r, shadow, 8192 - 1024, randomBytes(2048, rnd), rnd); // the end of chunk 0 and the start of chunk 1
  // Columns [0,1K) and [7K,8K): RMW reads 1K + 1K old data and 8K parity (10K); RCW reads 7K + 7K of chunks 0/1 and 16K of 2/3 (30K).
  assert.equal(totalRead(r), 10 * 1024, 'RMW across a chunk boundary');
  checkMembers(r, shadow, 'raid5 partial writes');

  // raid5, 3 members: a small write reads the other data chunk, not parity.
  const g3: MdGeometry = { level: 5, layout: LS, raidDisks: 3, chunkSectors: 16 };
  const r3 = rig(g3);
  const s3 = new Uint8Array(r3.raid.info.size);
  reset(r3);
  writeArray(r3, s3, 4096, randomBytes(4096, rnd), rnd);
  assert.equal(totalRead(r3), 4096, 'RCW: 4 KiB of the other data member (RMW would read 8 KiB)');
  assert.equal(r3.probes[mdStripeMap(g3, 0).pDisk]!.readBytes, 0);
  checkMembers(r3, s3, 'raid5 3 members');

  // raid6, 8 members (6 data): RMW reads data + P + Q (12K) rather than the five other chunks' columns (20K).
  const g6: MdGeometry = { level: 6, layout: LS, raidDisks: 8, chunkSectors: 16 };
  const r6 = rig(g6);
  const s6 = new Uint8Array(r6.raid.info.size);
  writeArray(r6, s6, 0, randomBytes(r6.raid.info.size, rnd), rnd);
  reset(r6);
  writeArray(r6, s6, 8192 * 6 * 2 + 4096, randomBytes(4096, rnd), rnd);
  assert.equal(totalRead(r6), 12 * 1024, 'raid6 RMW');
  const m6 = mdStripeMap(g6, 2);
  assert.equal(r6.probes[m6.qDisk!]!.readBytes, 4096, 'Q read');
  checkMembers(r6, s6, 'raid6 RMW');
  // raid6, 6 members (4 data): equal costs (12K each): RCW, as md prefers.
  const g66: MdGeometry = { level: 6, layout: LS, raidDisks: 6, chunkSectors: 16 };
  const r66 = rig(g66);
  const s66 = new Uint8Array(r66.raid.info.size);
  writeArray(r66, s66, 0, randomBytes(r66.raid.info.size, rnd), rnd);
  reset(r66);
  writeArray(r66, s66, 4096, randomBytes(4096, rnd), rnd);
  assert.equal(totalRead(r66), 12 * 1024);
  assert.equal(r66.probes[mdStripeMap(g66, 0).pDisk]!.readBytes, 0, 'a tie goes to RCW: parity not read');
  checkMembers(r66, s66, 'raid6 RCW');
});

test('degraded whole-stripe reads read every other member once per stripe (raid5, raid6)', () => {
  for (const g of [{ level: 5, layout: LS, raidDisks: 5, chunkSectors: 16 }, { level: 6, layout: LS, raidDisks: 6, chunkSectors: 16 }] as MdGeometry[]) {
    const rnd = seededRandom(31);
    const base = rig(g);
    const shadow = new Uint8Array(base.raid.info.size);
    writeArray(base, shadow, 0, randomBytes(shadow.length, rnd), rnd);
    const d0 = mdStripeMap(g, 0).data[0]!.disk;
    const r = rig(g, { shared: base.shared, missing: [d0] });
    r.probes.forEach((p) => p.resetCounts());
    const chunk = g.chunkSectors * 512;
    const dataDisks = g.raidDisks - (g.level === 6 ? 2 : 1);
    const stripes = 3;
    const { status, buf } = readArray(r, 0, stripes * dataDisks * chunk, rnd);
    assert.equal(status, 0);
    sameBytes(buf, shadow.subarray(0, stripes * dataDisks * chunk), `raid${g.level}: degraded whole stripes`);
    // raid5: the four others; raid6: the data and P, Q not needed for one missing data member.
    const perStripe = (g.level === 6 ? g.raidDisks - 2 : g.raidDisks - 1) * chunk;
    assert.equal(r.probes.reduce((s, p) => s + p.readBytes, 0), stripes * perStripe, `raid${g.level}: each stripe read once`);
  }
});

test('degraded writes: a missing data member forces reconstruct-write, a missing parity member writes data only; both leave the stripe consistent', async () => {
  const rnd = seededRandom(8);
  const g: MdGeometry = { level: 5, layout: LS, raidDisks: 5, chunkSectors: 16 };
  const base = rig(g);
  const shadow = new Uint8Array(base.raid.info.size);
  writeArray(base, shadow, 0, randomBytes(shadow.length, rnd), rnd);
  const map = mdStripeMap(g, 0);
  const d0 = map.data[0]!.disk;
  // The touched chunk's member is missing: RCW reads the other three data chunks' columns.
  const r = rig(g, { shared: base.shared, missing: [d0] });
  writeArray(r, shadow, 4096, randomBytes(4096, rnd), rnd);
  assert.equal(r.probes.reduce((s, p) => s + p.readBytes, 0), 3 * 4096);
  assert.equal(r.probes[map.pDisk]!.writeBytes, 4096, 'parity written');
  readAll(r, shadow, 'degraded data');
  await r.raid.rebuild(d0, freshMember(r, d0));
  checkMembers(r, shadow, 'after rebuilding the data member');
  // Parity missing: nothing read, only the data written.
  const r2 = rig(g, { shared: r.shared, missing: [map.pDisk] });
  r2.probes.forEach((p) => p.resetCounts());
  writeArray(r2, shadow, 4096, randomBytes(4096, rnd), rnd);
  assert.equal(r2.probes.reduce((s, p) => s + p.readBytes, 0), 0);
  assert.equal(r2.probes.reduce((s, p) => s + p.writeBytes, 0), 4096);
  readAll(r2, shadow, 'degraded parity');
  await r2.raid.rebuild(map.pDisk, freshMember(r2, map.pDisk));
  checkMembers(r2, shadow, 'after rebuilding parity');
});

test('read errors are served from the other members and repaired: the member is rewritten and correctedReads counts it', () => {
  const rnd = seededRandom(9);
  const cases: MdGeometry[] = [
    { level: 5, layout: LS, raidDisks: 4, chunkSectors: 8 },
    { level: 6, layout: ALGORITHM_ROTATING_N_CONTINUE, raidDisks: 6, chunkSectors: 8 },
    { level: 1, layout: 0, raidDisks: 3, chunkSectors: 0 },
    { level: 10, layout: 0x102, raidDisks: 4, chunkSectors: 8 },
  ];
  for (const g of cases) {
    const r = rig(g);
    const shadow = new Uint8Array(r.raid.info.size);
    writeArray(r, shadow, 0, randomBytes(shadow.length, rnd), rnd);
    // A bad 1 KiB in array chunk 5 on (one of) its member(s): stale bytes that fail to read until rewritten.
    const arrayOff = 5 * 4096 + 1024;
    const places = g.level === 1 ? [{ disk: 1, at: arrayOff }]
      : g.level === 10 ? [{ disk: raid10FindPhys(g, arrayOff / 512)[1]!.disk, at: raid10FindPhys(g, arrayOff / 512)[1]!.sector * 512 }]
      : [{ disk: raid5ComputeSector(g, arrayOff / 512).dataDisk, at: raid5ComputeSector(g, arrayOff / 512).diskSector * 512 }];
    if (g.level === 6) {
      // raid6 survives two: also fail the chunk next to it in the same stripe.
      const other = raid5ComputeSector(g, (arrayOff + 4096) / 512);
      places.push({ disk: other.dataDisk, at: other.diskSector * 512 });
    }
    for (const p of places) {
      r.mem[p.disk]!.fill(0x77, r.dataOffset + p.at, r.dataOffset + p.at + 1024);
      r.faulty[p.disk]!.inject({ op: 'read', offset: r.dataOffset + p.at, length: 1024, healOnWrite: true });
    }
    // Mirrors read round robin: read until the bad copy has been tried.
    for (let i = 0; i < 4 && r.faulty[places[0]!.disk]!.failed.read === 0; i++) {
      const { status, buf } = readArray(r, 4 * 4096, 3 * 4096, rnd);
      assert.equal(status, 0, `raid${g.level}: read over the bad block`);
      sameBytes(buf, shadow.subarray(4 * 4096, 7 * 4096), `raid${g.level}: the right data`);
    }
    if (g.level === 6) {
      const { status, buf } = readArray(r, 4 * 4096, 3 * 4096, rnd);
      assert.equal(status, 0);
      sameBytes(buf, shadow.subarray(4 * 4096, 7 * 4096), 'raid6: both bad blocks in one stripe');
    }
    for (const p of places) {
      assert.equal(r.faulty[p.disk]!.failed.read, 1, `raid${g.level}: member ${p.disk} failed one read`);
      const c = r.raid.memberCounters(p.disk);
      assert.equal(c.readErrors, 1);
      assert.equal(c.correctedReads, 1, `raid${g.level}: member ${p.disk} repaired`);
      assert.equal(r.faulty[p.disk]!.active.length, 0, 'the rewrite healed the bad block');
    }
    assert.equal(r.raid.degraded, 0, 'nobody failed');
    checkMembers(r, shadow, `raid${g.level} after repair`);
  }
});

test('a read error met by a read-modify-write is rebuilt and rewritten too', () => {
  const rnd = seededRandom(10);
  const g: MdGeometry = { level: 5, layout: LS, raidDisks: 5, chunkSectors: 16 };
  const r = rig(g);
  const shadow = new Uint8Array(r.raid.info.size);
  writeArray(r, shadow, 0, randomBytes(shadow.length, rnd), rnd);
  const map = mdStripeMap(g, 1);
  const pAt = r.dataOffset + 8192;
  r.faulty[map.pDisk]!.inject({ op: 'read', offset: pAt + 2048, length: 1024, healOnWrite: true }); // inside the columns the write touches
  assert.equal(writeArray(r, shadow, 4 * 8192 + 2048, randomBytes(2048, rnd), rnd), 0);
  assert.equal(r.raid.memberCounters(map.pDisk).correctedReads, 1);
  assert.equal(r.faulty[map.pDisk]!.active.length, 0);
  checkMembers(r, shadow, 'after the RMW with a read error');
});

test('write errors fail the member (onMemberFailed), the request still succeeds and the data stays readable; a rebuild restores it', async () => {
  const rnd = seededRandom(11);
  for (const g of [
    { level: 5, layout: LS, raidDisks: 4, chunkSectors: 8 },
    { level: 6, layout: LS, raidDisks: 5, chunkSectors: 8 },
    { level: 1, layout: 0, raidDisks: 2, chunkSectors: 0 },
    { level: 10, layout: 0x102, raidDisks: 4, chunkSectors: 8 },
  ] as MdGeometry[]) {
    const r = rig(g);
    const shadow = new Uint8Array(r.raid.info.size);
    writeArray(r, shadow, 0, randomBytes(shadow.length, rnd), rnd);
    r.faulty[1]!.inject({ op: 'write', offset: 0, length: r.mem[1]!.length, times: 1 });
    assert.equal(writeArray(r, shadow, 0, randomBytes(shadow.length, rnd), rnd), 0, `raid${g.level}: the write succeeds`);
    assert.deepEqual(r.failed.map(([s]) => s), [1], 'member 1 reported once');
    assert.equal(r.raid.memberStates()[1], 'faulty');
    assert.equal(r.raid.degraded, 1);
    assert.equal(r.raid.memberCounters(1).writeErrors, 1);
    readAll(r, shadow, `raid${g.level} degraded by a write error`);
    for (let i = 0; i < 40; i++) randomOp(r, shadow, rnd, `raid${g.level} degraded op ${i}`);
    r.faulty[1]!.clear();
    await r.raid.rebuild(1, r.probes[1]!); // re-add the same disk
    checkMembers(r, shadow, `raid${g.level} rebuilt`);
    readAll(r, shadow, `raid${g.level} rebuilt`);
  }
});

test('beyond the level\'s redundancy requests fail with EIO, never with wrong data', () => {
  const rnd = seededRandom(12);
  // raid5: a member missing and a read error on another.
  {
    const g: MdGeometry = { level: 5, layout: LS, raidDisks: 4, chunkSectors: 8 };
    const r = rig(g);
    const shadow = new Uint8Array(r.raid.info.size);
    writeArray(r, shadow, 0, randomBytes(shadow.length, rnd), rnd);
    r.raid.failMember(0, 'test');
    assert.deepEqual(r.failed, [[0, 'test']]);
    r.faulty[1]!.inject({ op: 'read', offset: 0, length: r.mem[1]!.length });
    const { status } = readArray(r, 0, shadow.length, rnd);
    assert.equal(status, -EIO, 'a chunk of member 0 or 1 cannot be read');
    // Chunks on members 2 and 3 still read (stripe 0: chunks 0,1,2 on 0,1,2; chunk 2 on member 2).
    const ok = readArray(r, 2 * 4096, 4096, rnd);
    assert.equal(ok.status, 0);
    sameBytes(ok.buf, shadow.subarray(2 * 4096, 3 * 4096), 'an unaffected chunk');
    // Writes that need member 1's old data fail before touching anything.
    r.probes.forEach((p) => p.resetCounts());
    assert.equal(now((d) => r.raid.write(vecOf(new Uint8Array(4096), rnd), 2 * 4096, false, d)), 0, 'chunk 2 (member 2): RMW with parity, no member 1 needed');
    shadow.fill(0, 2 * 4096, 3 * 4096);
    r.probes.forEach((p) => p.resetCounts());
    assert.equal(now((d) => r.raid.write(vecOf(new Uint8Array(1024), rnd), 4096, false, d)), -EIO, 'chunk 1 (member 1): its old data is unreadable');
    assert.equal(r.probes.reduce((s, p) => s + p.writes, 0), 0, 'and nothing was written');
    r.raid.failMember(1, 'second');
    assert.equal(r.raid.operational, false);
    r.probes.forEach((p) => p.resetCounts());
    assert.equal(now((d) => r.raid.write(vecOf(new Uint8Array(3 * 4096), rnd), 0, false, d)), -EIO);
    assert.equal(now((d) => r.raid.writeZeroes(0, shadow.length, false, d)), -EIO);
    assert.equal(r.probes.reduce((s, p) => s + p.writes + p.zeroes, 0), 0, 'a failed array is not written');
    assert.equal(now((d) => r.raid.flush(d)), -EIO);
  }
  // raid6: three failures.
  {
    const g: MdGeometry = { level: 6, layout: LS, raidDisks: 6, chunkSectors: 8 };
    const r = rig(g);
    const shadow = new Uint8Array(r.raid.info.size);
    writeArray(r, shadow, 0, randomBytes(shadow.length, rnd), rnd);
    r.raid.failMember(0, 'a');
    r.raid.failMember(1, 'b');
    readAll(r, shadow, 'raid6 with two gone');
    r.faulty[2]!.inject({ op: 'read', offset: 0, length: r.mem[2]!.length });
    assert.equal(readArray(r, 0, shadow.length, rnd).status, -EIO);
  }
  // raid1: every copy fails to read; raid10: both copies of a chunk gone.
  {
    const r = rig({ level: 1, layout: 0, raidDisks: 2, chunkSectors: 0 });
    r.faulty[0]!.inject({ op: 'read', offset: 0, length: 1 << 20 });
    r.faulty[1]!.inject({ op: 'read', offset: 0, length: 1 << 20 });
    assert.equal(readArray(r, 0, 4096, rnd).status, -EIO);
    assert.equal(r.raid.memberCounters(0).readErrors + r.raid.memberCounters(1).readErrors, 2);
  }
  {
    const g: MdGeometry = { level: 10, layout: 0x102, raidDisks: 4, chunkSectors: 8 };
    const r = rig(g);
    const shadow = new Uint8Array(r.raid.info.size);
    writeArray(r, shadow, 0, randomBytes(shadow.length, rnd), rnd);
    r.raid.failMember(0, 'a');
    r.faulty[1]!.inject({ op: 'read', offset: 0, length: r.mem[1]!.length });
    assert.equal(readArray(r, 0, 4096, rnd).status, -EIO, 'chunk 0 lives on members 0 and 1');
    const ok = readArray(r, 4096, 4096, rnd);
    assert.equal(ok.status, 0, 'chunk 1 lives on members 2 and 3');
    sameBytes(ok.buf, shadow.subarray(4096, 8192), 'chunk 1');
    r.faulty[1]!.clear();
    r.faulty[1]!.inject({ op: 'write', offset: 0, length: r.mem[1]!.length });
    assert.equal(now((d) => r.raid.write(vecOf(new Uint8Array(4096), rnd), 0, false, d)), -EIO, 'the last copy of chunk 0 failed to write');
  }
});

test('flush reaches every member; a failed flush fails its member and the array flushes while it still holds the data', () => {
  const r = rig({ level: 1, layout: 0, raidDisks: 2, chunkSectors: 0 });
  assert.equal(now((d) => r.raid.flush(d)), 0);
  assert.deepEqual(r.probes.map((p) => p.flushes), [1, 1]);
  r.faulty[0]!.inject({ op: 'flush', offset: 0, length: 0 });
  assert.equal(now((d) => r.raid.flush(d)), 0);
  assert.equal(r.raid.memberStates()[0], 'faulty');
  assert.deepEqual(r.probes.map((p) => p.flushes), [2, 2]);
  r.faulty[1]!.inject({ op: 'flush', offset: 0, length: 0 });
  assert.equal(now((d) => r.raid.flush(d)), -EIO);
  assert.deepEqual(r.probes.map((p) => p.flushes), [2, 3], 'faulty members are not flushed');
});

test('write-zeroes and discard: whole stripes become member write-zeroes, the ends ordinary writes; mirrors pass discard through', () => {
  const rnd = seededRandom(13);
  const g: MdGeometry = { level: 6, layout: LS, raidDisks: 5, chunkSectors: 8 };
  const r = rig(g);
  const shadow = new Uint8Array(r.raid.info.size);
  writeArray(r, shadow, 0, randomBytes(shadow.length, rnd), rnd);
  const SB = 3 * 4096;
  r.probes.forEach((p) => p.resetCounts());
  assert.equal(now((d) => r.raid.writeZeroes(SB - 1024, 3 * SB + 2048, false, d)), 0);
  shadow.fill(0, SB - 1024, 4 * SB + 1024);
  assert.deepEqual(r.probes.map((p) => p.zeroes), [1, 1, 1, 1, 1], 'one member zeroing for the three whole stripes');
  assert.equal(r.probes.reduce((s, p) => s + p.writes, 0) > 0, true, 'the partial stripes were written');
  r.probes.forEach((p) => p.resetCounts());
  assert.equal(now((d) => r.raid.discard(6 * SB, SB, d)), 0);
  shadow.fill(0, 6 * SB, 7 * SB);
  assert.deepEqual(r.probes.map((p) => p.zeroes), [1, 1, 1, 1, 1], 'raid6 discard: zeroes');
  readAll(r, shadow, 'zeroed');
  checkMembers(r, shadow, 'zeroed');

  const m = rig({ level: 10, layout: 0x102, raidDisks: 4, chunkSectors: 8 });
  const ms = new Uint8Array(m.raid.info.size);
  writeArray(m, ms, 0, randomBytes(ms.length, rnd), rnd);
  assert.equal(m.raid.info.canDiscard, true);
  assert.equal(now((d) => m.raid.discard(4096, 10 * 4096, d)), 0);
  ms.fill(0, 4096, 11 * 4096);
  assert.deepEqual(m.probes.map((p) => p.discards), [1, 1, 1, 1], 'each member\'s copies as one contiguous discard');
  readAll(m, ms, 'raid10 discard');
  checkMembers(m, ms, 'raid10 discard');
});

test('WriteIntent: begin() before any member write, writes wait for ready(), end() after the last one and before completion', () => {
  const events: string[] = [];
  let pending = null as (() => void) | null;
  const intent: WriteIntent = {
    begin: (off, len, ready) => {
      events.push(`begin ${off}+${len}`);
      pending = ready;
    },
    end: (off, len, all) => {
      events.push(`end ${off}+${len} ${all}`);
    },
  };
  for (const g of [
    { level: 5, layout: LS, raidDisks: 4, chunkSectors: 8 },
    { level: 1, layout: 0, raidDisks: 2, chunkSectors: 0 },
    { level: 10, layout: 0x102, raidDisks: 4, chunkSectors: 8 },
  ] as MdGeometry[]) {
    events.length = 0;
    const r = rig(g, { intent });
    r.log.length = 0;
    const logOf = (): string[] => events.concat(r.log);
    let status: number | null = null;
    r.raid.write(vecOf(new Uint8Array(3 * 4096).fill(1), Math.random), 4096, false, { complete: (s) => { status = s; events.push('complete'); } });
    assert.deepEqual(events, ['begin 4096+12288']);
    assert.deepEqual(r.log, [], 'no member write before ready()');
    assert.equal(status, null);
    const ready = pending!;
    ready();
    assert.equal(status, 0);
    assert.ok(r.log.length > 0, 'members written after ready()');
    assert.deepEqual(events, ['begin 4096+12288', 'end 4096+12288 true', 'complete']);
    // Zeroing and discards announce themselves too; reads do not.
    events.length = 0;
    r.raid.writeZeroes(0, 4096, false, { complete: () => events.push('complete') });
    pending!();
    r.raid.discard(0, 4096, { complete: () => events.push('complete') });
    pending!();
    now((d) => r.raid.read(vecOf(new Uint8Array(4096), Math.random), 0, d));
    assert.deepEqual(events, ['begin 0+4096', 'end 0+4096 true', 'complete', 'begin 0+4096', 'end 0+4096 true', 'complete']);
    assert.equal(logOf().length > 0, true);
    // A degraded write reports that it did not reach every member.
    events.length = 0;
    r.raid.failMember(0, 'test');
    r.raid.write(vecOf(new Uint8Array(4096), Math.random), 0, false, { complete: () => events.push('complete') });
    pending!();
    assert.deepEqual(events, ['begin 0+4096', 'end 0+4096 false', 'complete']);
  }
});

test('a synchronous intent lets the write complete inside the call', () => {
  const intent: WriteIntent = { begin: (_o, _l, ready) => ready(), end: () => {} };
  const r = rig({ level: 6, layout: LS, raidDisks: 4, chunkSectors: 8 }, { intent });
  assert.equal(now((d) => r.raid.write(vecOf(new Uint8Array(4096).fill(9), Math.random), 0, true, d)), 0);
});

for (const [name, g] of geometries.filter(([n]) => /raid1, 2|raid5 left-symmetric, 5|raid6 left-symmetric|raid6 rotating-n|raid10 near-2, 4|raid10 far/.test(n))) {
  test(`${name}: concurrent overlapping writes on asynchronous members (random completion order) end consistent, in submission order`, async () => {
    const rnd = seededRandom(3000 + g.level + g.layout + g.raidDisks);
    const r = rig(g, { async: rnd });
    const size = r.raid.info.size;
    const shadow = new Uint8Array(size);
    const hot = Math.min(size, 3 * (g.level === 1 ? 8192 : g.chunkSectors * 512 * Math.max(2, g.level >= 4 && g.level <= 6 ? mdDataDisks(g) : 2)));
    const inflight: Promise<number>[] = [];
    for (let i = 0; i < 120; i++) {
      // Mostly small writes into a few stripes, some spanning them.
      const len = 512 * (1 + Math.floor(rnd() * (rnd() < 0.8 ? 8 : 40)));
      const off = Math.min(512 * Math.floor((rnd() * hot) / 512), size - len);
      const data = randomBytes(len, rnd);
      shadow.set(data, off); // the lock keeps each stripe's writes in submission order
      inflight.push(later((d) => r.raid.write(vecOf(data, rnd), off, false, d)));
    }
    assert.deepEqual(await Promise.all(inflight), inflight.map(() => 0));
    assert.ok(r.probes.some((p) => p.reordered > 0), 'members completed out of order');
    // Concurrent reads of everything, in pieces.
    const reads: Promise<void>[] = [];
    for (let off = 0; off < size;) {
      const len = Math.min(size - off, 512 * (1 + Math.floor(rnd() * 40)));
      const buf = new Uint8Array(len);
      const at = off;
      reads.push(later((d) => r.raid.read(vecOf(buf, rnd), at, d)).then((st) => {
        assert.equal(st, 0);
        sameBytes(buf, shadow.subarray(at, at + len), `read ${at}+${len}`);
      }));
      off += len;
    }
    await Promise.all(reads);
    checkMembers(r, shadow, 'after concurrent writes');
  });
}

test('a member failing while writes are in flight, and a rebuild while I/O goes on, leave the array consistent', async () => {
  for (const g of [
    { level: 5, layout: LS, raidDisks: 4, chunkSectors: 8 },
    { level: 6, layout: ALGORITHM_ROTATING_N_CONTINUE, raidDisks: 6, chunkSectors: 8 },
    { level: 1, layout: 0, raidDisks: 2, chunkSectors: 0 },
    { level: 10, layout: 0x201, raidDisks: 4, chunkSectors: 8 },
  ] as MdGeometry[]) {
    const rnd = seededRandom(4000 + g.level);
    const r = rig(g, { async: rnd });
    const size = r.raid.info.size;
    const shadow = new Uint8Array(size);
    const writes = (count: number): Promise<number>[] => Array.from({ length: count }, () => {
      const [off, len] = randomRange(r, rnd);
      const data = randomBytes(len, rnd);
      shadow.set(data, off);
      return later((d) => r.raid.write(vecOf(data, rnd), off, false, d));
    });
    const first = writes(40);
    r.raid.failMember(1, 'pulled');
    const second = writes(40);
    assert.deepEqual(await Promise.all([...first, ...second]), Array(80).fill(0), `raid${g.level}: writes around the failure`);
    const rebuilt = r.raid.rebuild(1, freshMember(r, 1, rnd));
    assert.equal(r.raid.memberStates()[1], 'rebuilding');
    const during = writes(60);
    const reads = Array.from({ length: 30 }, () => {
      const [off, len] = randomRange(r, rnd);
      return later((d) => r.raid.read(vecOf(new Uint8Array(len), rnd), off, d));
    });
    assert.deepEqual(await Promise.all([...during, ...reads]), Array(90).fill(0), `raid${g.level}: I/O during the rebuild`);
    await rebuilt;
    assert.equal(r.raid.degraded, 0);
    checkMembers(r, shadow, `raid${g.level}: after the rebuild`);
    for (const p of r.probes) p.setAsync(null);
    readAll(r, shadow, `raid${g.level}: after the rebuild`);
  }
});

test('a rebuild that cannot read enough members fails and leaves the slot faulty', async () => {
  const g: MdGeometry = { level: 5, layout: LS, raidDisks: 3, chunkSectors: 8 };
  const r = rig(g);
  r.raid.failMember(0, 'gone');
  r.faulty[1]!.inject({ op: 'read', offset: r.dataOffset + 4 * 4096, length: 4096 });
  await assert.rejects(r.raid.rebuild(0, freshMember(r, 0)), /unit 4/);
  assert.equal(r.raid.memberStates()[0], 'faulty');
  await assert.rejects(r.raid.rebuild(1, freshMember(r, 1)), /in-sync/);
});

test('scrub: check counts parity and mirror mismatches (in sectors, per 4 KiB page), repair rewrites them', async () => {
  const rnd = seededRandom(14);
  for (const g of [
    { level: 5, layout: LS, raidDisks: 4, chunkSectors: 16 },
    { level: 6, layout: ALGORITHM_ROTATING_ZERO_RESTART, raidDisks: 5, chunkSectors: 8 },
    { level: 1, layout: 0, raidDisks: 3, chunkSectors: 0 },
    { level: 10, layout: RAID10_OFFSET_BIT | 0x201, raidDisks: 4, chunkSectors: 8 },
  ] as MdGeometry[]) {
    const r = rig(g);
    const shadow = new Uint8Array(r.raid.info.size);
    writeArray(r, shadow, 0, randomBytes(shadow.length, rnd), rnd);
    assert.deepEqual(await r.raid.scrub('check'), { mismatches: 0, units: unitsOf(r), bytesRead: readOf(r) });
    // Corrupt one byte of a parity block (raid6: of Q) or of a second copy.
    let disk: number;
    let at: number;
    if (g.level === 1) {
      disk = 2;
      at = 5000;
    } else if (g.level === 10) {
      const c = raid10FindPhys(g, 9 * 8)[1]!;
      disk = c.disk;
      at = c.sector * 512 + 100;
    } else {
      const map = mdStripeMap(g, 2);
      disk = g.level === 6 ? map.qDisk! : map.pDisk;
      const C = g.chunkSectors * 512;
      at = 2 * C + (C > 4096 ? 4096 : 0) + 7;
    }
    r.mem[disk]![r.dataOffset + at]! ^= 0xff;
    const units: number[] = [];
    assert.deepEqual(await r.raid.scrub('check', (done) => units.push(done)), { mismatches: 8, units: unitsOf(r), bytesRead: readOf(r) }, `raid${g.level} check`);
    assert.equal(units.length, unitsOf(r));
    assert.deepEqual(await r.raid.scrub('repair'), { mismatches: 8, units: unitsOf(r), bytesRead: readOf(r) }, `raid${g.level} repair`);
    assert.deepEqual(await r.raid.scrub('check'), { mismatches: 0, units: unitsOf(r), bytesRead: readOf(r) }, `raid${g.level} after repair`);
    checkMembers(r, shadow, `raid${g.level} repaired`);
  }
  const d = rig({ level: 5, layout: LS, raidDisks: 3, chunkSectors: 8 }, { missing: [1] });
  await assert.rejects(d.raid.scrub('check'), /degraded/);
});

function unitsOf(r: Rig): number {
  const g = r.g;
  if (g.level === 1) return Math.ceil(r.raid.info.size / (256 * 1024));
  if (g.level === 10) return r.raid.info.size / (g.chunkSectors * 512);
  return r.raid.info.size / (g.chunkSectors * 512 * mdDataDisks(g));
}

/** Member bytes a scrub of array bytes [offset, offset + length) reads: every copy of a mirror's bytes, every member's chunk of each stripe touched. */
function readOf(r: Rig, offset = 0, length = r.raid.info.size): number {
  const g = r.g;
  if (g.level === 1) return length * g.raidDisks;
  if (g.level === 10) return length * raid10FindPhys(g, 0).length;
  const stripe = g.chunkSectors * 512 * mdDataDisks(g);
  const stripes = Math.ceil((offset + length) / stripe) - Math.floor(offset / stripe);
  return stripes * g.chunkSectors * 512 * g.raidDisks;
}

test('scrub of a range: only the stripes (raid4/5/6) or the bytes (mirrors) it covers are read and compared', async () => {
  const rnd = seededRandom(16);
  for (const g of [
    { level: 5, layout: LS, raidDisks: 4, chunkSectors: 16 },
    { level: 6, layout: ALGORITHM_ROTATING_ZERO_RESTART, raidDisks: 5, chunkSectors: 8 },
    { level: 1, layout: 0, raidDisks: 3, chunkSectors: 0 },
    { level: 10, layout: 0x102, raidDisks: 3, chunkSectors: 8 },
  ] as MdGeometry[]) {
    const r = rig(g, { componentBytes: 256 * 1024 });
    const shadow = new Uint8Array(r.raid.info.size);
    writeArray(r, shadow, 0, randomBytes(shadow.length, rnd), rnd);
    // A mismatch at array byte 40 KiB + 100: a second copy of it, or its stripe's parity.
    const target = 40 * 1024 + 100;
    let disk: number;
    let at: number;
    if (g.level === 1) {
      disk = 1;
      at = target;
    } else if (g.level === 10) {
      const c = raid10FindPhys(g, Math.floor(target / 512))[1]!;
      disk = c.disk;
      at = c.sector * 512 + (target % 512);
    } else {
      const C = g.chunkSectors * 512;
      const s = Math.floor(target / (C * mdDataDisks(g)));
      const map = mdStripeMap(g, s);
      disk = map.pDisk;
      at = s * C + (target % C);
    }
    r.mem[disk]![r.dataOffset + at]! ^= 0xff;
    const away = { offset: 128 * 1024, length: 64 * 1024 };
    const near = { offset: 36 * 1024, length: 8 * 1024 };
    const a = await r.raid.scrub('check', undefined, away);
    assert.deepEqual([a.mismatches, a.bytesRead], [0, readOf(r, away.offset, away.length)], `raid${g.level}: the range without the mismatch`);
    const b = await r.raid.scrub('check', undefined, near);
    assert.deepEqual([b.mismatches, b.bytesRead], [8, readOf(r, near.offset, near.length)], `raid${g.level}: the range with it`);
    await r.raid.scrub('repair', undefined, near);
    assert.equal((await r.raid.scrub('check')).mismatches, 0, `raid${g.level}: repaired`);
    assert.equal((await r.raid.scrub('check', undefined, { offset: 0, length: 0 })).units, 0);
    await assert.rejects(r.raid.scrub('check', undefined, { offset: r.raid.info.size, length: 512 }), /not inside/);
  }
});

test('members that cannot write zeroes or discard are zeroed with ordinary writes', () => {
  const rnd = seededRandom(15);
  class Plain implements Backend {
    constructor(readonly next: Backend) {}
    get info(): BackendInfo {
      return { ...this.next.info, canDiscard: false, canWriteZeroes: false };
    }
    read(iov: IoVector, offset: number, done: Completion): void { this.next.read(iov, offset, done); }
    write(iov: IoVector, offset: number, fua: boolean, done: Completion): void { this.next.write(iov, offset, fua, done); }
    flush(done: Completion): void { this.next.flush(done); }
    discard(_o: number, _l: number, done: Completion): void { done.complete(-EIO); }
    writeZeroes(_o: number, _l: number, _m: boolean, done: Completion): void { done.complete(-EIO); }
    close(): void {}
  }
  const g: MdGeometry = { level: 5, layout: LS, raidDisks: 3, chunkSectors: 8 };
  const mems = Array.from({ length: 3 }, () => memberBytes(8192, 4 << 20));
  const raid = new RaidBackend({
    geometry: g, dataOffset: 8192, componentBytes: 4 << 20,
    members: mems.map((m) => new Plain(new MemoryBackend({ memory: m }))),
  });
  const shadow = new Uint8Array(raid.info.size);
  const data = randomBytes(shadow.length, rnd);
  assert.equal(now((d) => raid.write(vecOf(data, rnd), 0, false, d)), 0);
  shadow.set(data);
  assert.equal(now((d) => raid.discard(4096, shadow.length - 8192, d)), 0);
  shadow.fill(0, 4096, shadow.length - 4096);
  const back = new Uint8Array(shadow.length);
  assert.equal(now((d) => raid.read(vecOf(back, rnd), 0, d)), 0);
  sameBytes(back, shadow, 'zeroed by writes');
  const mirror = new RaidBackend({
    geometry: { level: 1, layout: 0, raidDisks: 2, chunkSectors: 0 }, dataOffset: 8192, componentBytes: 4 << 20,
    members: mems.slice(0, 2).map((m) => new Plain(new MemoryBackend({ memory: m }))),
  });
  assert.equal(mirror.info.canDiscard, false, 'mirrors advertise discard only when every member can');
  assert.equal(now((d) => mirror.writeZeroes(0, 2 << 20, true, d)), 0);
  assert.ok(new Uint8Array(mems[1]!).subarray(8192, 8192 + (2 << 20)).every((b) => b === 0));
});

test('the range lock grants non-overlapping ranges at once and overlapping ones in arrival order', () => {
  const lock = new RangeLock();
  const order: string[] = [];
  const holder = (name: string, lo: number, hi: number): RangeLockHolder => ({ lockLo: lo, lockHi: hi, lockGranted: () => order.push(name) });
  const a = holder('a', 0, 2);
  const b = holder('b', 2, 4);
  const c = holder('c', 1, 3);
  const d = holder('d', 3, 5);
  const e = holder('e', 5, 6);
  lock.acquire(a);
  lock.acquire(b);
  lock.acquire(c);
  lock.acquire(d); // overlaps b (held) and c (waiting before it)
  lock.acquire(e);
  assert.deepEqual(order, ['a', 'b', 'e']);
  lock.release(a);
  assert.deepEqual(order, ['a', 'b', 'e'], 'c still overlaps b');
  lock.release(b);
  assert.deepEqual(order, ['a', 'b', 'e', 'c', 'd']);
  assert.equal(lock.waitingCount, 0);
  assert.throws(() => lock.release(a), /not held/);
  for (const h of [c, d, e]) lock.release(h);
  assert.equal(lock.heldCount, 0);
  // A chain of holders that release inside lockGranted does not deepen the stack.
  let depth = 0;
  let maxDepth = 0;
  const chain: RangeLockHolder[] = [];
  for (let i = 0; i < 2000; i++) {
    const h: RangeLockHolder = {
      lockLo: 0, lockHi: 1,
      lockGranted: () => {
        depth++;
        maxDepth = Math.max(maxDepth, depth);
        if (i > 0) lock.release(h);
        depth--;
      },
    };
    chain.push(h);
  }
  for (const h of chain) lock.acquire(h);
  lock.release(chain[0]!);
  assert.equal(lock.heldCount, 0);
  assert.ok(maxDepth <= 2, `grant depth ${maxDepth}`);
});
