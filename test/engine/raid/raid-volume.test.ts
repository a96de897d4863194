// Tests of an md array at work (RaidVolume): dirty before the first write and clean at close, a member failed in the superblocks while I/O goes on, a resync that reads only the dirty regions, a rate-limited rebuild.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import type { Backend } from '../../../engine/backend.js';
import { FaultyBackend } from '../../../engine/faulty-backend.js';
import { IoVector } from '../../../engine/iovec.js';
import { MemoryBackend } from '../../../engine/memory-backend.js';
import type { MemberIo } from '../../../engine/raid/array.js';
import { MD_DISK_ROLE_FAULTY, MD_MAX_SECTOR } from '../../../engine/raid/md-constants.js';
import { decodeMdSuperblock } from '../../../engine/raid/md-superblock.js';
import { RaidVolume, SAFE_MODE_MS } from '../../../engine/raid/raid-volume.js';

const KiB = 1024;
const MiB = 1 << 20;

function memMembers(n: number, bytes = 8 * MiB): { members: MemberIo[]; faulty: FaultyBackend[] } {
  const faulty: FaultyBackend[] = [];
  const members = Array.from({ length: n }, (_, i) => {
    const f = new FaultyBackend(new MemoryBackend({ memory: MemoryBackend.allocate(bytes) }));
    faulty.push(f);
    return { name: `m${i}.img`, backend: f };
  });
  return { members, faulty };
}

function io(b: Backend, write: boolean, offset: number, bytes: Uint8Array): Promise<number> {
  const iov = new IoVector(1);
  iov.push(bytes, 0, bytes.length, 0);
  return new Promise((resolve) => {
    const done = { complete: resolve };
    if (write) b.write(iov, offset, false, done);
    else b.read(iov, offset, done);
  });
}

async function readArray(b: Backend, offset: number, length: number): Promise<Buffer> {
  const buf = new Uint8Array(length);
  assert.equal(await io(b, false, offset, buf), 0, `read at ${offset}`);
  return Buffer.from(buf);
}

function superblock(m: MemberIo) {
  const buf = new Uint8Array(4096);
  const iov = new IoVector(1);
  iov.push(buf, 0, buf.length, 0);
  m.backend.read(iov, 4096, { complete: (st) => assert.equal(st, 0) });
  return decodeMdSuperblock(buf);
}

test('the first write marks the array dirty; close records it clean', async () => {
  const { members } = memMembers(3);
  const vol = await RaidVolume.create(members, { level: 5, chunkBytes: 64 * KiB, bitmap: 'internal', bitmapChunkBytes: 64 * KiB, assumeClean: true });
  assert.equal(superblock(members[0]!).resyncOffset, MD_MAX_SECTOR, 'created clean');
  assert.equal(await io(vol.backend, true, 0, randomBytes(4096)), 0);
  assert.equal(superblock(members[1]!).resyncOffset, 0n, 'dirty on disk once the first write is in');
  await vol.close();
  const sb = superblock(members[2]!);
  assert.equal(sb.resyncOffset, MD_MAX_SECTOR, 'clean after close');
});

test('md\'s safe mode: an array idle for SAFE_MODE_MS is recorded clean (bitmap bits kept), and the next write marks it dirty first', async () => {
  const { members } = memMembers(3);
  const vol = await RaidVolume.create(members, { level: 5, chunkBytes: 64 * KiB, bitmap: 'internal', bitmapChunkBytes: 64 * KiB, assumeClean: true });
  assert.equal(await io(vol.backend, true, 0, randomBytes(4096)), 0);
  assert.equal(superblock(members[0]!).resyncOffset, 0n, 'dirty while written');
  await new Promise((r) => setTimeout(r, SAFE_MODE_MS + 150));
  assert.equal(vol.safeModeCleans, 1);
  assert.equal(superblock(members[1]!).resyncOffset, MD_MAX_SECTOR, 'clean once idle: a crash now needs no resync');
  assert.ok(vol.array.bitmap!.dirtyCount() > 0, 'the written region\'s bit is left to the bitmap\'s lazy clearing');
  // Writes kept coming within the delay: it stays dirty, then goes clean once they stop.
  for (let i = 0; i < 4; i++) {
    assert.equal(await io(vol.backend, true, (i + 1) * 64 * KiB, randomBytes(4096)), 0);
    assert.equal(superblock(members[2]!).resyncOffset, 0n, 'marked dirty again before the write went to the members');
    await new Promise((r) => setTimeout(r, SAFE_MODE_MS / 4));
  }
  assert.equal(vol.safeModeCleans, 1);
  await new Promise((r) => setTimeout(r, SAFE_MODE_MS + 150));
  assert.equal(vol.safeModeCleans, 2);
  assert.equal(superblock(members[0]!).resyncOffset, MD_MAX_SECTOR);
  await vol.close();
});

test('a member whose writes fail is failed in every other superblock, and I/O goes on degraded', async () => {
  const { members, faulty } = memMembers(4);
  const failed: string[] = [];
  let recorded!: () => void;
  const recordedP = new Promise<void>((r) => { recorded = r; });
  const vol = await RaidVolume.create(members, {
    level: 5, chunkBytes: 64 * KiB, bitmap: 'internal', bitmapChunkBytes: 64 * KiB, assumeClean: true,
    onMemberFailed: (slot, name) => failed.push(`${slot}:${name}`),
    onFailureRecorded: () => recorded(),
  });
  const shadow = Buffer.alloc(vol.backend.info.size);
  const put = async (off: number, len: number): Promise<void> => {
    const b = randomBytes(len);
    assert.equal(await io(vol.backend, true, off, b), 0, `write at ${off}`);
    b.copy(shadow, off);
  };
  await put(0, 256 * KiB);
  faulty[1]!.inject({ op: 'write', offset: vol.array.dataOffset, length: 1 << 30 });
  await put(64 * KiB, 128 * KiB); // touches member 1: it fails, the write still succeeds
  await recordedP;
  assert.deepEqual(failed, ['1:m1.img']);
  for (const i of [0, 2, 3]) assert.equal(superblock(members[i]!).devRoles[1], MD_DISK_ROLE_FAULTY, `member ${i} records slot 1 faulty`);
  assert.equal(vol.backend.degraded, 1);
  await put(512 * KiB, 300 * KiB);
  assert.ok((await readArray(vol.backend, 0, MiB)).equals(shadow.subarray(0, MiB)), 'reads rebuild what member 1 held');
  await vol.close();
  assert.equal(superblock(members[0]!).resyncOffset, MD_MAX_SECTOR, 'clean, degraded');
});

test('resync after a crash reads only the dirty bitmap regions and repairs them', async () => {
  const { members } = memMembers(4);
  const chunk = 64 * KiB;
  const vol = await RaidVolume.create(members, { level: 5, chunkBytes: chunk, bitmap: 'internal', bitmapChunkBytes: chunk, assumeClean: true });
  const stripe = 3 * chunk;
  for (const s of [2, 3, 9, 40]) assert.equal(await io(vol.backend, true, s * stripe + 4096, randomBytes(8192)), 0);
  // Crash: no close. Tear one dirty stripe's parity (left-symmetric, 4 members: stripe s has P on 3 - s % 4).
  const dataOffset = vol.array.dataOffset;
  const p = 3 - (9 % 4);
  assert.equal(await io(members[p]!.backend, true, dataOffset + 9 * chunk, new Uint8Array(4096).fill(0xaa)), 0);
  const again = await RaidVolume.assemble(members);
  assert.equal(again.array.clean, false);
  const regions = again.array.resyncRegions();
  assert.deepEqual(regions.map((r) => [r.arrayOffset / stripe, r.arrayLength / stripe]), [[2, 2], [9, 1], [40, 1]]);
  const r = await again.resync();
  assert.equal(r.regions, 3);
  assert.equal(r.arrayBytes, 4 * stripe);
  assert.equal(r.bytesRead, 4 * 4 * chunk, 'every member\'s chunk of the 4 dirty stripes, nothing else');
  assert.equal(r.mismatches, 8, 'the torn 4 KiB of parity');
  assert.equal(again.array.resyncOffset, MD_MAX_SECTOR);
  assert.equal(again.array.bitmap!.dirtyCount(), 0, 'bits cleared');
  const check = await again.scrub('check');
  assert.equal(check.mismatches, 0);
  await again.close();
  vol.array.close(); // the crashed one: its timer only, nothing written
});

test('raid1 resync reads the dirty regions exactly, on every mirror', async () => {
  const { members } = memMembers(2);
  const vol = await RaidVolume.create(members, { level: 1, bitmap: 'internal', bitmapChunkBytes: 64 * KiB, assumeClean: true });
  assert.equal(await io(vol.backend, true, 3 * 64 * KiB + 512, randomBytes(512)), 0);
  const again = await RaidVolume.assemble(members);
  const r = await again.resync();
  assert.equal(r.bytesRead, 2 * 64 * KiB);
  await again.close();
  vol.array.close();
});

test('raid1 after a crash: a block the mirrors disagree on reads the same every time until the resync copies it', async () => {
  const { members } = memMembers(2);
  const vol = await RaidVolume.create(members, { level: 1, bitmap: 'internal', bitmapChunkBytes: 64 * KiB, assumeClean: true });
  const at = 5 * 64 * KiB;
  assert.equal(await io(vol.backend, true, at, new Uint8Array(4096).fill(1)), 0);
  // Crash in the middle of a later write: it reached member 1 only.
  assert.equal(await io(members[1]!.backend, true, vol.array.dataOffset + at, new Uint8Array(4096).fill(2)), 0);
  const again = await RaidVolume.assemble(members);
  const seen = new Set<number>();
  for (let i = 0; i < 6; i++) seen.add((await readArray(again.backend, at, 4096))[0]!);
  assert.deepEqual([...seen], [1], 'every read answers from the first mirror, not in turn from both');
  // Outside the dirty region the mirrors take turns as usual (both hold the same bytes there).
  const r = await again.resync();
  assert.equal(r.mismatches, 8, 'the torn 4 KiB');
  for (const m of members) assert.equal((await readArray(m.backend, again.array.dataOffset + at, 4096))[0], 1, `${m.name} holds what the reads returned`);
  await again.close();
  vol.array.close();
});

test('a resync without a bitmap covers the whole array; a stopped one records how far it got', async () => {
  const { members } = memMembers(3);
  const vol = await RaidVolume.create(members, { level: 5, chunkBytes: 64 * KiB, bitmap: 'none' });
  let n = 0;
  const r = await vol.resync({ stopped: () => n++ >= 1 });
  assert.equal(r.stopped, true);
  assert.ok(vol.array.resyncOffset > 0n && vol.array.resyncOffset < MD_MAX_SECTOR, `resync offset ${vol.array.resyncOffset}`);
  const rest = await vol.resync();
  assert.equal(rest.stopped, false);
  assert.equal(r.arrayBytes + rest.arrayBytes, vol.backend.info.size, 'the second run starts where the first stopped');
  assert.equal(vol.array.resyncOffset, MD_MAX_SECTOR);
  await vol.close();
});

test('rebuild onto a new member at a limited rate, then the array is whole and its bitmap clear', async () => {
  const { members } = memMembers(3, 4 * MiB);
  const vol = await RaidVolume.create(members, { level: 5, chunkBytes: 64 * KiB, bitmap: 'internal', bitmapChunkBytes: 64 * KiB, assumeClean: true });
  const data = randomBytes(MiB);
  assert.equal(await io(vol.backend, true, 0, data), 0);
  await vol.fail(1);
  assert.equal(await io(vol.backend, true, MiB, data), 0, 'a write while degraded');
  const fresh: MemberIo = { name: 'new.img', backend: new MemoryBackend({ memory: MemoryBackend.allocate(4 * MiB) }) };
  const t0 = Date.now();
  const seen: number[] = [];
  await vol.rebuild(1, fresh, { bytesPerSecond: 8 * MiB, progress: (done) => seen.push(done) });
  const ms = Date.now() - t0;
  const bytes = vol.array.componentBytes;
  assert.ok(ms >= (bytes / (8 * MiB)) * 1000 * 0.8, `${bytes} bytes at 8 MiB/s took ${ms} ms`);
  assert.ok(seen.length > 1 && seen[seen.length - 1] === bytes, 'progress reported');
  assert.equal(vol.backend.degraded, 0);
  assert.equal(vol.array.bitmap!.dirtyCount(), 0, 'the degraded write\'s bit is cleared once the member is rebuilt');
  assert.equal((await vol.scrub('check')).mismatches, 0);
  await vol.fail(0);
  assert.ok((await readArray(vol.backend, 0, 2 * MiB)).equals(Buffer.concat([data, data])), 'the rebuilt member serves reads');
  await vol.close();
});

test('a rebuild stopped between units records its checkpoint (md\'s recovery_offset); resumed on the clean array it rebuilds only the rest', async () => {
  const { members } = memMembers(3);
  const vol = await RaidVolume.create(members, { level: 5, chunkBytes: 64 * KiB, bitmap: 'internal', assumeClean: true });
  const size = vol.backend.info.size;
  const data = randomBytes(size);
  assert.equal(await io(vol.backend, true, 0, data), 0);
  await vol.fail(1);
  let written = 0;
  const counted = new MemoryBackend({ memory: MemoryBackend.allocate(8 * MiB) });
  const spy: Backend = {
    info: counted.info,
    read: (v, o, d) => counted.read(v, o, d),
    write: (v, o, f, d) => { written += v.bytes; counted.write(v, o, f, d); },
    flush: (d) => counted.flush(d),
    discard: (o, l, d) => counted.discard(o, l, d),
    writeZeroes: (o, l, u, d) => counted.writeZeroes(o, l, u, d),
    close: () => counted.close(),
  };
  const fresh: MemberIo = { name: 'new.img', backend: spy };
  let units = 0;
  const first = await vol.rebuild(1, fresh, { stopped: () => ++units > 20 });
  assert.equal(first.stopped, true);
  const st = vol.array.states[1]!;
  assert.equal(st.state, 'recovering');
  assert.equal(st.state === 'recovering' && st.recoveryOffset, 20 * (64 * KiB / 512), 'the checkpoint is the 20 stripes rebuilt');
  await vol.close();

  const again = await RaidVolume.assemble([members[0]!, fresh, members[2]!]);
  assert.equal(again.array.clean, true);
  const st2 = again.array.states[1]!;
  assert.ok(st2.state === 'recovering' && st2.member === fresh);
  written = 0;
  const second = await again.rebuild(1, fresh);
  assert.equal(second.stopped, false);
  const stripes = again.array.componentBytes / (64 * KiB);
  assert.ok(written >= (stripes - 20) * 64 * KiB && written < (stripes - 10) * 64 * KiB, `resumed at stripe 20: wrote ${written} bytes of ${stripes * 64 * KiB}`);
  const r = await again.scrub('check');
  assert.equal(r.mismatches, 0);
  await again.fail(0);
  assert.ok((await readArray(again.backend, 0, size)).equals(data), 'the rebuilt member holds its chunks: reads without slot 0 rebuild the data');
  await again.close();
});
