// Tests of md array create/assemble/update on memory and file members, cross-checked with the real `mdadm --examine` and `mdadm -X`.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { closeSync, ftruncateSync, mkdtempSync, openSync, readSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import type { Backend } from '../../../engine/backend.js';
import { FileBackend } from '../../../engine/file-backend.js';
import { IoVector } from '../../../engine/iovec.js';
import { MemoryBackend } from '../../../engine/memory-backend.js';
import {
  MdArrayError, assembleArray, createArray, type CreateArrayOptions, type MdArrayErrorCode, type MemberIo,
} from '../../../engine/raid/array.js';
import { mdArraySectors, mdLayoutName, type MdRaidLevel } from '../../../engine/raid/geometry.js';
import {
  BITMAP_SUPER_BYTES, MD_DISK_ROLE_FAULTY, MD_DISK_ROLE_SPARE, MD_FEATURE_BITMAP_OFFSET, MD_FEATURE_RECOVERY_OFFSET,
  MD_FEATURE_RESHAPE_ACTIVE, MD_MAX_SECTOR,
} from '../../../engine/raid/md-constants.js';
import {
  decodeMdBitmapSuper, encodeMdBitmapSuper, mdBitmapSpace, mdBitmapSyncSize, newMdBitmapSuper,
} from '../../../engine/raid/md-bitmap.js';
import {
  decodeMdSuperblock, encodeMdSuperblock, mdSuperblockChecksum, mdUuidString, mdadmDataOffset, parseMdUuid,
  type MdSuperblock,
} from '../../../engine/raid/md-superblock.js';
import { ARRAY_UUID, mdadm, needMdadm, patched, sampleSuperblock } from './md-fixtures.js';

const MiB = 1 << 20;

// ------------------------------------------------------------------------------------------ helpers

/** The memory behind each memory member, to compare its bytes without going through reads. */
const memoryOf = new WeakMap<Backend, SharedArrayBuffer>();

function memMember(name: string, bytes = 16 * MiB, blockSize = 512): MemberIo {
  const memory = MemoryBackend.allocate(bytes);
  const backend = new MemoryBackend({ memory, blockSize });
  memoryOf.set(backend, memory);
  return { name, backend };
}

function members(n: number, bytes = 16 * MiB, prefix = ''): MemberIo[] {
  return Array.from({ length: n }, (_, i) => memMember(`${prefix}${String.fromCharCode(97 + i)}.img`, bytes));
}

function readBytes(b: Backend, offset: number, length: number): Uint8Array {
  const buf = new Uint8Array(length);
  const iov = new IoVector(1);
  iov.push(buf, 0, length, 0);
  let st = 1;
  b.read(iov, offset, { complete: (s) => { st = s; } });
  assert.equal(st, 0, 'synchronous read');
  return buf;
}

function writeBytes(b: Backend, offset: number, bytes: Uint8Array): void {
  const iov = new IoVector(1);
  iov.push(bytes, 0, bytes.length, 0);
  let st = 1;
  b.write(iov, offset, false, { complete: (s) => { st = s; } });
  assert.equal(st, 0, 'synchronous write');
}

/** A copy of a member's whole content, to compare later (Buffer.equals). */
function digest(m: MemberIo): Buffer {
  const memory = memoryOf.get(m.backend);
  return memory !== undefined ? Buffer.from(new Uint8Array(memory).slice()) : Buffer.from(readBytes(m.backend, 0, m.backend.info.size));
}

function superblockOf(m: MemberIo): MdSuperblock {
  return decodeMdSuperblock(readBytes(m.backend, 4096, 4096));
}

/** Rewrites a member's superblock through `edit` (a DataView on a copy), checksum recomputed. */
function patchSuperblock(m: MemberIo, edit: (dv: DataView, b: Uint8Array) => void): void {
  writeBytes(m.backend, 4096, patched(readBytes(m.backend, 4096, 512), edit));
}

async function refuses(p: Promise<unknown>, code: MdArrayErrorCode, msg: RegExp): Promise<MdArrayError> {
  let caught: unknown = null;
  try {
    await p;
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof MdArrayError, `expected an MdArrayError, got ${String(caught)}`);
  assert.equal(caught.code, code, caught.message);
  assert.match(caught.message, msg);
  return caught;
}

/** Runs `fn`, which must fail, and checks it wrote nothing on any of `ms`. */
async function refusesUnchanged(ms: readonly (MemberIo | null)[], fn: () => Promise<unknown>, code: MdArrayErrorCode, msg: RegExp): Promise<MdArrayError> {
  const present = ms.filter((m): m is MemberIo => m !== null);
  const before = present.map(digest);
  const e = await refuses(fn(), code, msg);
  present.forEach((m, i) => assert.ok(digest(m).equals(before[i]!), `nothing written on ${m.name}`));
  return e;
}

const r5: CreateArrayOptions = { level: 5, bitmap: 'internal', name: 'r5', uuid: ARRAY_UUID };

// --------------------------------------------------------------------------------------- create

const shapes: { name: string; n: number; opts: CreateArrayOptions }[] = [
  { name: 'raid1, 2 members', n: 2, opts: { level: 1, bitmap: 'internal' } },
  { name: 'raid4, 3 members', n: 3, opts: { level: 4, bitmap: 'none', chunkBytes: 64 * 1024 } },
  { name: 'raid5, 4 members, defaults', n: 4, opts: { level: 5, bitmap: 'internal' } },
  { name: 'raid5 parity-first, 3 members', n: 3, opts: { level: 5, layout: 'parity-first', bitmap: 'internal', chunkBytes: 128 * 1024 } },
  { name: 'raid6 ddf-N-continue, 5 members', n: 5, opts: { level: 6, layout: 'ddf-N-continue', bitmap: 'internal', chunkBytes: 64 * 1024 } },
  { name: 'raid10 n2, 3 members', n: 3, opts: { level: 10, bitmap: 'internal' } },
  { name: 'raid10 f2, 4 members', n: 4, opts: { level: 10, layout: 'f2', bitmap: 'none', chunkBytes: 64 * 1024 } },
  { name: 'raid10 o2, 4 members', n: 4, opts: { level: 10, layout: 'o2', bitmap: 'internal', chunkBytes: 32 * 1024 } },
];

for (const { name, n, opts } of shapes) {
  test(`create then assemble gives the same array: ${name}`, async () => {
    const ms = members(n);
    const a = await createArray(ms, opts);
    const b = await assembleArray([...ms].reverse());
    const chunk = opts.level === 1 ? 0 : (opts.chunkBytes ?? 512 * 1024) / 512;
    assert.deepEqual(b.geometry, a.geometry);
    assert.equal(a.geometry.level, opts.level);
    assert.equal(a.geometry.chunkSectors, chunk);
    assert.equal(a.geometry.raidDisks, n);
    const doff = Number(mdadmDataOffset(BigInt(16 * MiB / 512), chunk));
    assert.equal(a.dataOffset, doff * 512, 'mdadm\'s data offset');
    // mdadm's size: the room after the data offset in KiB, rounded down to the chunk (raid1: to 64 KiB).
    const roomKiB = (16 * MiB / 512 - doff) / 2;
    const round = opts.level === 1 ? 64 : chunk / 2;
    assert.equal(a.componentBytes, (roomKiB - (roomKiB % round)) * 1024);
    assert.equal(a.arrayBytes, mdArraySectors(a.geometry, a.componentBytes / 512) * 512);
    for (const k of ['dataOffset', 'componentBytes', 'arrayBytes', 'uuid', 'name', 'events', 'resyncOffset'] as const) assert.equal(b[k], a[k], k);
    assert.deepEqual(b.slots.map((m) => m?.name), ms.map((m) => m.name), 'ordered by role, whatever order they were given in');
    assert.equal(b.degraded, 0);
    assert.equal(b.events, 0n, 'mdadm writes events 0');
    assert.equal(b.resyncOffset, 0n, 'a new array needs its initial resync');
    assert.equal((b.bitmap === null), opts.bitmap === 'none');
    if (b.bitmap !== null) {
      assert.equal(b.bitmap.chunkBytes, a.bitmap!.chunkBytes);
      assert.equal(b.bitmap.chunkBytes, 64 * MiB, 'mdadm\'s default bitmap chunk');
      assert.equal(b.bitmap.dirtyCount(), b.bitmap.bits, 'every bit set: the initial resync covers everything');
    }
    const whole = b.resyncRegions();
    assert.equal(whole.reduce((s, r) => s + r.arrayLength, 0), b.arrayBytes, 'the resync covers the whole array');
    b.close();
    a.close();
  });
}

test('create: every superblock field as mdadm writes it', async () => {
  const ms = members(4);
  const a = await createArray(ms, { ...r5, homehost: 'twin' });
  ms.forEach((m, i) => {
    const sb = superblockOf(m);
    assert.equal(sb.featureMap, MD_FEATURE_BITMAP_OFFSET);
    assert.equal(mdUuidString(sb.setUuid), ARRAY_UUID);
    assert.equal(sb.setName, 'twin:r5');
    assert.equal(sb.level, 5);
    assert.equal(sb.layout, 2);
    assert.equal(sb.chunkSectors, 1024);
    assert.equal(sb.raidDisks, 4);
    assert.equal(sb.size, BigInt(a.componentBytes / 512));
    assert.equal(sb.dataOffset, BigInt(a.dataOffset / 512));
    assert.equal(sb.dataSize, BigInt(16 * MiB / 512) - sb.dataOffset);
    assert.equal(sb.superOffset, 8n);
    assert.equal(sb.bitmapOffset, 8);
    assert.equal(sb.devNumber, i);
    assert.equal(sb.events, 0n);
    assert.equal(sb.resyncOffset, 0n);
    assert.equal(sb.bblogSize, 8);
    assert.equal(sb.bblogOffset, 16, 'after the 4 KiB bitmap, as mdadm puts it');
    assert.equal(sb.devRoles.length, 128, 'max_dev: 256 + 2 * devices rounded to 512 bytes');
    assert.deepEqual(sb.devRoles.slice(0, 5), [0, 1, 2, 3, MD_DISK_ROLE_SPARE]);
    assert.ok(sb.devRoles.slice(4).every((r) => r === MD_DISK_ROLE_SPARE));
    const bm = decodeMdBitmapSuper(readBytes(m.backend, 8192, 256), { setUuid: sb.setUuid, events: 0n });
    assert.equal(bm.chunkSize, 64 * MiB);
    assert.equal(bm.syncSize, BigInt(a.componentBytes / 512), 'raid5 bits cover member sectors');
    assert.equal(bm.daemonSleep, 5);
  });
  const uuids = new Set(ms.map((m) => mdUuidString(superblockOf(m).deviceUuid)));
  assert.equal(uuids.size, 4, 'a fresh device UUID each');
});

test('create: assumeClean writes clean superblocks and a clear bitmap; a degraded raid5 is clean too (mdadm)', async () => {
  const ms = members(3);
  const a = await createArray(ms, { ...r5, assumeClean: true });
  assert.equal(a.resyncOffset, MD_MAX_SECTOR);
  assert.deepEqual(a.resyncRegions(), []);
  assert.equal(superblockOf(ms[0]!).resyncOffset, MD_MAX_SECTOR);
  assert.equal(readBytes(ms[0]!.backend, 8192 + BITMAP_SUPER_BYTES, 1)[0], 0);
  const ds = members(3, 16 * MiB, 'd');
  const d = await createArray([ds[0]!, null, ds[2]!], r5);
  assert.equal(d.resyncOffset, MD_MAX_SECTOR, 'nothing to resync parity against');
  assert.equal(d.degraded, 1);
  assert.deepEqual(d.states.map((s) => s.state), ['in-sync', 'missing', 'in-sync']);
  assert.deepEqual(superblockOf(ds[2]!).devRoles.slice(0, 3), [0, MD_DISK_ROLE_SPARE, 2]);
  const r = await assembleArray([ds[0]!, ds[2]!]);
  assert.equal(r.degraded, 1);
  assert.deepEqual(r.slots.map((m) => m?.name ?? null), ['da.img', null, 'dc.img']);
});

test('create: spares beyond raidDevices, a 4 KiB-sector member, and --size', async () => {
  const ms = [memMember('a.img'), memMember('b.img', 16 * MiB, 4096), memMember('s.img')];
  const a = await createArray(ms, { level: 1, bitmap: 'internal', raidDevices: 2, size: 8 * MiB + 1000 });
  assert.equal(a.componentBytes, 8 * MiB, 'rounded down to whole KiB');
  assert.deepEqual(a.spares.map((m) => m.name), ['s.img']);
  assert.equal(superblockOf(ms[2]!).devRoles[2], MD_DISK_ROLE_SPARE);
  const b = await assembleArray(ms);
  assert.deepEqual(b.spares.map((m) => m.name), ['s.img']);
  assert.deepEqual(b.slots.map((m) => m?.name), ['a.img', 'b.img']);
  assert.equal(b.componentBytes, 8 * MiB);
});

test('create: members of different sizes use the smallest; a member too small is refused, nothing written', async () => {
  const ms = [memMember('a.img', 20 * MiB), memMember('b.img', 16 * MiB + 4096), memMember('c.img', 24 * MiB)];
  const a = await createArray(ms, { level: 5, bitmap: 'internal', chunkBytes: 64 * 1024 });
  const doff = Number(mdadmDataOffset(BigInt(20 * MiB / 512), 128)); // the first member's, as mdadm
  assert.equal(a.dataOffset, doff * 512);
  const roomKiB = Math.floor((16 * MiB / 512 + 8 - doff) / 2);
  assert.equal(a.componentBytes, (roomKiB - (roomKiB % 64)) * 1024);
  assert.equal(superblockOf(ms[2]!).dataSize, BigInt(24 * MiB / 512 - doff), 'data_size is each member\'s own');
  const small = [memMember('a.img'), memMember('tiny.img', MiB), memMember('c.img')];
  await refusesUnchanged(small, () => createArray(small, r5), 'member-size', /^tiny\.img is too small: 1048576 bytes/);
  const big = members(3);
  await refusesUnchanged(big, () => createArray(big, { ...r5, size: 64 * MiB }), 'member-size', /^a\.img is smaller than the size asked for/);
});

test('create: wrong counts, chunks and layouts are refused before anything is written', async () => {
  const three = members(3, 4 * MiB);
  await refusesUnchanged(three, () => createArray(three, { level: 6, bitmap: 'none' }), 'options', /raid6 needs at least 4 members, not 3/);
  const one = members(1, 4 * MiB);
  await refusesUnchanged(one, () => createArray(one, { level: 5, bitmap: 'none' }), 'options', /raid5 needs at least 2 members, not 1/);
  const two = members(2, 4 * MiB);
  await refusesUnchanged(two, () => createArray(two, { level: 10, layout: 'n3', bitmap: 'none' }), 'options', /makes 3 copies on 2 members/);
  await refusesUnchanged(three, () => createArray(three, { level: 5, chunkBytes: 3000, bitmap: 'none' }), 'options', /chunk of 3000 bytes is invalid/);
  await refusesUnchanged(three, () => createArray(three, { level: 5, chunkBytes: 2048, bitmap: 'none' }), 'options', /chunk of 2048 bytes is invalid/);
  await refusesUnchanged(two, () => createArray(two, { level: 1, chunkBytes: 65536, bitmap: 'none' }), 'options', /raid1 has no chunk size/);
  await refusesUnchanged(three, () => createArray(three, { level: 5, layout: 'sideways', bitmap: 'none' }), 'options', /"sideways" is not a raid5 layout/);
  await refusesUnchanged(three, () => createArray([three[0]!, null, null], { level: 5, bitmap: 'none' }), 'too-few', /raid5 cannot run with slots 1, 2 missing/);
  await refusesUnchanged(three, () => createArray([three[0]!, three[1]!, three[0]!], { level: 5, bitmap: 'none' }), 'options', /a\.img and a\.img are the same device/);
  await refusesUnchanged(three, () => createArray(three, { level: 0 as MdRaidLevel, bitmap: 'none' }), 'options', /raid level 0 is not handled/);
});

test('create: a bitmap that does not fit before the data is refused before anything is written', async () => {
  // 256 MiB sparse files: 4 KiB bits over ~255 MiB take 8 KiB, more than fits below data at 16 KiB.
  const ms = fileMembers('nofit', 2, 256 * MiB);
  const head = (m: MemberIo): string => createHash('sha256').update(readBytes(m.backend, 0, MiB)).digest('hex');
  const before = ms.map(head);
  await refuses(createArray(ms, { level: 1, bitmap: 'internal', bitmapChunkBytes: 4096, dataOffset: 16384 }), 'bitmap',
    /^a bitmap of 12 KiB \(4096-byte chunks\) does not fit between the superblock and the data at 16384 bytes/);
  await refuses(createArray(ms, { level: 1, bitmap: 'internal', bitmapChunkBytes: 3 * 4096 }), 'options', /bitmapChunkBytes 12288 must be a power of two/);
  assert.deepEqual(ms.map(head), before);
  const a = await createArray(ms, { level: 1, bitmap: 'internal', bitmapChunkBytes: 4096 });
  assert.equal(a.bitmap!.chunkBytes, 4096, 'fits below mdadm\'s data offset');
});

// ------------------------------------------------------------------------------------- assemble

test('assemble refuses, naming the member, and writes nothing: not a member, bad checksum, unknown or unsupported features', async () => {
  const ms = members(4);
  await createArray(ms, r5);
  const blank = memMember('b.img');
  await refusesUnchanged([...ms, blank], () => assembleArray([ms[0]!, blank, ms[2]!, ms[3]!]), 'not-member', /^b\.img: not an md member \(no superblock magic at 4 KiB\)$/);

  const torn = members(4, 16 * MiB, 't');
  await createArray(torn, r5);
  const sb = readBytes(torn[0]!.backend, 4096, 512);
  sb[40]! ^= 0x20; // a bit of the name, checksum left alone
  writeBytes(torn[0]!.backend, 4096, sb);
  await refusesUnchanged(torn, () => assembleArray(torn), 'bad-superblock', /^ta\.img: bad superblock checksum/);

  const newer = members(4, 16 * MiB, 'n');
  await createArray(newer, r5);
  patchSuperblock(newer[3]!, (dv) => dv.setUint32(8, dv.getUint32(8, true) | 0x4000, true));
  await refusesUnchanged(newer, () => assembleArray(newer), 'bad-superblock', /^nd\.img: md superblock has feature bits 0x4000 that the kernel does not know/);

  const reshaping = members(4, 16 * MiB, 'r');
  await createArray(reshaping, r5);
  patchSuperblock(reshaping[1]!, (dv) => dv.setUint32(8, dv.getUint32(8, true) | MD_FEATURE_RESHAPE_ACTIVE, true));
  await refusesUnchanged(reshaping, () => assembleArray(reshaping), 'unsupported', /^rb\.img: md superblock uses reshape-active, which this build does not handle/);
});

test('assemble refuses a member of another array, and two members claiming one slot', async () => {
  const ms = members(3);
  await createArray(ms, r5);
  const other = members(3, 16 * MiB, 'o');
  await createArray(other, { ...r5, uuid: '00000000:11111111:22222222:33333333' });
  const mixed = [ms[0]!, ms[1]!, { ...other[2]!, name: 'c.img' }];
  await refusesUnchanged([...ms, ...other], () => assembleArray(mixed), 'foreign', /^c\.img: belongs to array 00000000:11111111:22222222:33333333 not 01234567:89abcdef:00112233:44556677$/);

  // e.img: a copy of c.img (slot 2) under another device UUID and number.
  const e = memMember('e.img');
  writeBytes(e.backend, 0, readBytes(ms[2]!.backend, 0, 16 * MiB));
  patchSuperblock(e, (dv, b) => {
    b[168]! ^= 0xff; // device_uuid
    dv.setUint32(160, 7, true); // dev_number 7 ...
    dv.setUint16(256 + 2 * 7, 2, true); // ... in slot 2
  });
  await refusesUnchanged([...ms, e], () => assembleArray([ms[0]!, ms[1]!, ms[2]!, e]), 'duplicate', /^c\.img and e\.img both claim slot 2$/);
  await refusesUnchanged(ms, () => assembleArray([ms[0]!, ms[1]!, ms[1]!]), 'duplicate', /^b\.img and b\.img are the same member/);
});

test('assemble leaves out a stale member (events behind by more than one), keeps one just behind, and refuses too few', async () => {
  const ms = members(3);
  await createArray(ms, { ...r5, assumeClean: true });
  const setEvents = (m: MemberIo, ev: bigint): void => patchSuperblock(m, (dv) => dv.setBigUint64(200, ev, true));
  setEvents(ms[0]!, 10n);
  setEvents(ms[1]!, 9n); // one behind: md still takes it
  setEvents(ms[2]!, 8n);
  const before = ms.map(digest);
  const a = await assembleArray(ms);
  ms.forEach((m, i) => assert.ok(digest(m).equals(before[i]!), 'assembling writes nothing'));
  assert.equal(a.events, 10n);
  assert.deepEqual(a.slots.map((m) => m?.name ?? null), ['a.img', 'b.img', null]);
  assert.equal(a.degraded, 1);
  assert.equal(a.leftOut.length, 1);
  assert.equal(a.leftOut[0]!.why, 'stale');
  assert.equal(a.leftOut[0]!.slot, 2);
  assert.match(a.leftOut[0]!.reason, /^c\.img is stale: events 8, the array is at 10$/);
  assert.equal(a.leftOut[0]!.bitmapRecoverable, true, 'events_cleared is 0: the bitmap covers what it missed');
  assert.deepEqual(a.states[2], { state: 'missing', reason: 'c.img is stale: events 8, the array is at 10' });

  setEvents(ms[1]!, 7n);
  await refusesUnchanged(ms, () => assembleArray(ms), 'too-few',
    /^cannot assemble raid5 01234567:89abcdef:00112233:44556677: 1 of 3 members in sync, it needs at least 2; missing slot 1 \(b\.img is stale: events 7, the array is at 10\), slot 2 \(c\.img is stale: events 8, the array is at 10\)$/);
  await refusesUnchanged(ms, () => assembleArray([ms[0]!]), 'too-few', /missing slot 1 \(no member\), slot 2 \(no member\)/);
});

test('assemble refuses a dirty degraded raid5 unless startDirtyDegraded; a dirty degraded raid1 starts', async () => {
  const ms = members(3);
  const a = await createArray(ms, r5);
  await a.recordResync(MD_MAX_SECTOR);
  await a.recordDirty();
  await refusesUnchanged(ms, () => assembleArray([ms[0]!, ms[1]!]), 'dirty-degraded', /raid5 .* is degraded \(missing slot 2 \(no member\)\) and was not shut down cleanly/);
  const b = await assembleArray([ms[0]!, ms[1]!], { startDirtyDegraded: true });
  assert.equal(b.degraded, 1);
  const m1 = members(2, 16 * MiB, 'm');
  const c = await createArray(m1, { level: 1, bitmap: 'internal' });
  await c.recordDirty();
  assert.equal((await assembleArray([m1[1]!])).degraded, 1);
});

// -------------------------------------------------------------------------------------- updates

test('markFaulty: the role becomes faulty in the other members\' superblocks, events + 1; markRemoved, addMember, recovery', async () => {
  const ms = members(4);
  const a = await createArray(ms, { ...r5, assumeClean: true });
  const bBefore = digest(ms[1]!);
  await a.markFaulty(1);
  assert.equal(a.events, 1n);
  assert.equal(a.degraded, 1);
  assert.deepEqual(a.faulty.map((m) => m.name), ['b.img']);
  for (const m of [ms[0]!, ms[2]!, ms[3]!]) {
    const sb = superblockOf(m);
    assert.equal(sb.events, 1n);
    assert.deepEqual(sb.devRoles.slice(0, 4), [0, MD_DISK_ROLE_FAULTY, 2, 3]);
    assert.equal(decodeMdBitmapSuper(readBytes(m.backend, 8192, 256)).events, 1n, 'the bitmap superblock follows the array\'s events');
  }
  assert.ok(digest(ms[1]!).equals(bBefore), 'the failed member is not written');
  await a.markFaulty(1); // nothing left in the slot: no change
  assert.equal(a.events, 1n);
  await refusesUnchanged(ms, () => a.markFaulty(2), 'array-failed', /failing c\.img \(slot 2\) would leave raid5 without enough members in sync/);
  assert.equal(a.lastError, null);
  a.memberFailed(2, 'EIO on c.img'); // the RAID layer's callback: no promise to catch
  await a.markFaulty(1); // runs after it (a no-op)
  assert.match((a.lastError as Error | null)?.message ?? '', /would leave raid5 without enough members in sync.*\(after: EIO on c\.img\)$/);

  const back = await assembleArray(ms);
  assert.equal(back.leftOut[0]!.why, 'faulty', 'b.img is one event behind: its role comes from the freshest superblock');
  assert.deepEqual(back.slots.map((m) => m?.name ?? null), ['a.img', null, 'c.img', 'd.img']);

  await a.markRemoved(1);
  assert.equal(a.events, 2n);
  assert.equal(superblockOf(ms[0]!).devRoles[1], MD_DISK_ROLE_SPARE, 'an absent device number reads spare, as md writes it');
  await refuses(a.markRemoved(1), 'state', /no failed member of slot 1 to remove/);

  const e = memMember('e.img');
  await refuses(a.addMember(0, e), 'state', /slot 0 is held by a\.img/);
  await refuses(a.addMember(1, memMember('small.img', 4 * MiB)), 'member-size', /^small\.img is too small/);
  await a.addMember(1, e);
  assert.equal(a.events, 3n);
  assert.deepEqual(a.states[1], { state: 'recovering', member: e, recoveryOffset: 0 });
  assert.equal(a.slots[1], null, 'not in sync yet: the RAID layer must not read it');
  const esb = superblockOf(e);
  assert.equal(esb.devNumber, 4, 'a device number past the slots');
  assert.equal(esb.featureMap, MD_FEATURE_BITMAP_OFFSET | MD_FEATURE_RECOVERY_OFFSET);
  assert.equal(esb.recoveryOffset, 0n);
  assert.equal(esb.devRoles[4], 1);
  assert.equal(superblockOf(ms[0]!).devRoles[4], 1);
  assert.equal(superblockOf(ms[0]!).featureMap, MD_FEATURE_BITMAP_OFFSET, 'recovery is the new member\'s own feature');
  assert.deepEqual(readBytes(e.backend, 8192, 4096), readBytes(ms[0]!.backend, 8192, 4096), 'the new member carries the bitmap');

  await a.recordRecovery(1, 2048);
  assert.equal(superblockOf(e).recoveryOffset, 2048n);
  const mid = await assembleArray([ms[0]!, e, ms[2]!, ms[3]!]);
  assert.deepEqual(mid.states[1], { state: 'recovering', member: e, recoveryOffset: 2048 });
  await a.recordRecovery(1, 'done');
  assert.equal(superblockOf(e).featureMap, MD_FEATURE_BITMAP_OFFSET);
  assert.equal(a.degraded, 0);
  const whole = await assembleArray([ms[3]!, e, ms[0]!, ms[2]!, ms[1]!]);
  assert.deepEqual(whole.slots.map((m) => m?.name), ['a.img', 'e.img', 'c.img', 'd.img']);
  assert.equal(whole.leftOut[0]!.member, ms[1], 'b.img stays out: stale');
  assert.equal(whole.leftOut[0]!.why, 'stale');
});

test('recordDirty / recordClean / recordResync write resync_offset and bump events only on a change', async () => {
  const ms = members(2);
  const a = await createArray(ms, { level: 1, bitmap: 'internal' });
  await a.recordDirty();
  assert.equal(superblockOf(ms[0]!).resyncOffset, 0n);
  assert.equal(a.events, 1n);
  await a.recordDirty();
  assert.equal(a.events, 1n, 'already dirty');
  await a.recordResync(MD_MAX_SECTOR);
  assert.equal(superblockOf(ms[1]!).resyncOffset, 0n, 'still dirty: resync_offset stays 0');
  await a.recordClean();
  assert.equal(superblockOf(ms[1]!).resyncOffset, MD_MAX_SECTOR);
  assert.equal(a.events, 3n);
  const b = await assembleArray(ms);
  assert.equal(b.resyncOffset, MD_MAX_SECTOR);
  assert.deepEqual(b.resyncRegions(), []);
});

test('a member whose superblock write fails is failed and the others record it (onMemberFailed)', async () => {
  const { FaultyBackend } = await import('../../../engine/faulty-backend.js');
  const ms = members(3);
  await createArray(ms, { level: 1, bitmap: 'internal', assumeClean: true });
  const faulty = new FaultyBackend(ms[1]!.backend);
  const wrapped = [ms[0]!, { name: 'b.img', backend: faulty }, ms[2]!];
  const failed: string[] = [];
  const a = await assembleArray(wrapped, { onMemberFailed: (slot, m, reason) => failed.push(`${slot} ${m.name} ${reason}`) });
  faulty.inject({ op: 'write', offset: 4096, length: 512 });
  await a.recordDirty();
  assert.equal(failed.length, 1);
  assert.match(failed[0]!, /^1 b\.img b\.img: writing 512 bytes at 4096 failed: EIO$/);
  assert.deepEqual(a.states.map((s) => s.state), ['in-sync', 'missing', 'in-sync']);
  assert.equal(superblockOf(ms[0]!).devRoles[1], MD_DISK_ROLE_FAULTY);
  assert.equal(a.events, 2n, 'the update was repeated to record the failure');
});

// ---------------------------------------------------------------------- a member set as mdadm lays it out

test('a hand-written member set in mdadm\'s layout assembles: roles not dev numbers decide slots, a spare, bitmap bits', async () => {
  // sampleSuperblock: 4-member raid5 (left-symmetric, 512 KiB), data at 16 MiB, size 200704, internal bitmap;
  // here dev_number i holds role roles[i], and dev_number 4 is a spare.
  const roles = [3, 1, 2, 0, MD_DISK_ROLE_SPARE];
  const size = 200704n;
  const ms = roles.map((_, i) => memMember(`m${i}.img`, 128 * MiB));
  const bitmapSync = mdBitmapSyncSize({ level: 5, layout: 2, raidDisks: 4, chunkSectors: 1024 }, Number(size));
  ms.forEach((m, i) => {
    const fields = sampleSuperblock({ devNumber: i, devRoles: roles, size, events: 7n, resyncOffset: 0n, deviceUuid: parseMdUuid(`0000000${i}:00000000:00000000:00000000`) });
    writeBytes(m.backend, 4096, encodeMdSuperblock(fields));
    const bm = encodeMdBitmapSuper({ ...newMdBitmapSuper({ setUuid: fields.setUuid, syncSize: bitmapSync, chunkSize: 1 << 20 }), events: 7n });
    const area = new Uint8Array(mdBitmapSpace(bitmapSync, 1 << 20));
    area.set(bm, 0);
    if (i === 0) area[BITMAP_SUPER_BYTES] = 0b101; // chunks 0 and 2 dirty on one member only
    if (i === 2) area[BITMAP_SUPER_BYTES + 1] = 0b1; // chunk 8 on another
    writeBytes(m.backend, 8192, area);
  });
  const a = await assembleArray(ms);
  assert.deepEqual(a.slots.map((m) => m?.name), ['m3.img', 'm1.img', 'm2.img', 'm0.img']);
  assert.deepEqual(a.spares.map((m) => m.name), ['m4.img']);
  assert.equal(a.dataOffset, 16 * MiB);
  assert.equal(a.componentBytes, 200704 * 512);
  assert.equal(a.arrayBytes, 3 * 200704 * 512);
  assert.equal(a.uuid, ARRAY_UUID);
  assert.equal(a.name, 'r5');
  assert.equal(a.setName, 'twin:r5');
  assert.equal(a.bitmap!.chunkBytes, 1 << 20);
  const dirty = a.bitmap!.dirtyRegions().map((r) => [r.start, r.end]);
  assert.deepEqual(dirty, [[0, 2048], [4096, 6144], [16384, 18432]], 'bits set on any member in sync');
  // raid5: bitmap bits cover member sectors; chunk 0 (member sectors 0..2047) holds stripes 0 and 1, array bytes 0..3 MiB.
  assert.deepEqual(a.bitmap!.dirtyRegions()[0], { start: 0, end: 2048, arrayOffset: 0, arrayLength: 3 * MiB });
  assert.deepEqual(a.resyncRegions(), a.bitmap!.dirtyRegions(), 'dirty: resync the dirty chunks');
  // The superblock sitting there was checksummed as md does.
  const sb = readBytes(ms[0]!.backend, 4096, 512);
  assert.equal(new DataView(sb.buffer).getUint32(216, true), mdSuperblockChecksum(sb));
});

// ------------------------------------------------------------------------------------------ mdadm

const dir = mkdtempSync(join(tmpdir(), 'twindisk-array-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function fileMembers(tag: string, n: number, bytes = 64 * MiB): MemberIo[] {
  return Array.from({ length: n }, (_, i) => {
    const path = join(dir, `${tag}-${String.fromCharCode(97 + i)}.img`);
    const fd = openSync(path, 'w');
    ftruncateSync(fd, bytes);
    closeSync(fd);
    return { name: path, backend: new FileBackend({ path }) };
  });
}


/**
 * `mdadm -X` of a member's bitmap. mdadm 4.2 reads a regular file as a standalone bitmap file (only a
 * block device is searched for an internal one), so the bitmap area is copied out to a file first.
 */
function examineBitmap(m: MemberIo, at: number, bytes: number): Map<string, string> {
  const buf = Buffer.alloc(bytes);
  const fd = openSync(m.name, 'r');
  readSync(fd, buf, 0, bytes, at);
  closeSync(fd);
  const path = `${m.name}.bitmap`;
  writeFileSync(path, buf);
  return mdadm(['-X', path]);
}

const LEVEL_NAMES: Record<MdRaidLevel, string> = { 1: 'raid1', 4: 'raid4', 5: 'raid5', 6: 'raid6', 10: 'raid10' };

const examined: { name: string; n: number; opts: CreateArrayOptions }[] = [
  { name: 'raid5 defaults, bitmap', n: 4, opts: { level: 5, bitmap: 'internal', name: 'r5', homehost: 'twin' } },
  { name: 'raid6 left-symmetric-6, 64 KiB chunks', n: 5, opts: { level: 6, layout: 'left-symmetric-6', chunkBytes: 64 * 1024, bitmap: 'internal', name: 'r6' } },
  { name: 'raid10 near=2, no bitmap', n: 3, opts: { level: 10, bitmap: 'none', name: 'r10' } },
  { name: 'raid1, clean', n: 2, opts: { level: 1, bitmap: 'internal', name: 'm', assumeClean: true } },
];

for (const { name, n, opts } of examined) {
  test(`mdadm --examine reads members createArray wrote: ${name}`, async () => {
    needMdadm();
    const ms = fileMembers(name.replace(/\W+/g, '-'), n);
    const a = await createArray(ms, opts);
    ms.forEach((m, slot) => {
      const ex = mdadm(['--examine', m.name]);
      assert.equal(ex.get('Magic'), 'a92b4efc');
      assert.equal(ex.get('Version'), '1.2');
      assert.equal(ex.get('Feature Map'), opts.bitmap === 'internal' ? '0x1' : '0x0');
      assert.equal(ex.get('Array UUID'), a.uuid);
      assert.match(ex.get('Name') ?? '', new RegExp(`^${a.setName}( |$)`));
      assert.equal(ex.get('Raid Level'), LEVEL_NAMES[opts.level]);
      assert.equal(ex.get('Raid Devices'), String(n));
      assert.equal(ex.get('Data Offset'), `${a.dataOffset / 512} sectors`);
      assert.equal(ex.get('Super Offset'), '8 sectors');
      assert.equal(ex.get('Avail Dev Size')?.split(' ')[0], String((64 * MiB - a.dataOffset) / 512));
      assert.equal(ex.get('Array Size')?.split(' ')[0], String(a.arrayBytes / 1024));
      assert.equal(ex.get('State'), opts.assumeClean ? 'clean' : 'active', 'resync_offset 0 reads active');
      assert.equal(ex.get('Events'), '0');
      assert.match(ex.get('Checksum') ?? '', / - correct$/);
      assert.equal(ex.get('Device Role'), `Active device ${slot}`);
      assert.equal(ex.get('Array State')?.split(' ')[0], 'A'.repeat(n));
      if (opts.level === 5 || opts.level === 6 || opts.level === 10) assert.equal(ex.get('Layout'), mdLayoutName(opts.level, a.geometry.layout));
      if (opts.level !== 1) assert.equal(ex.get('Chunk Size'), `${a.geometry.chunkSectors / 2}K`);
      assert.equal(ex.get('Internal Bitmap'), opts.bitmap === 'internal' ? '8 sectors from superblock' : undefined);
      assert.match(ex.get('Bad Block Log') ?? '', /^512 entries available at offset \d+ sectors$/);
    });
    a.close();
  });
}

test('mdadm -X reads the bitmap: chunk size, bits, and the dirty count after begin(); mdadm sees a failed member', async () => {
  needMdadm();
  const ms = fileMembers('bits', 4);
  const a = await createArray(ms, { level: 5, bitmap: 'internal', bitmapChunkBytes: MiB, assumeClean: true, chunkBytes: 64 * 1024 });
  const bm = a.bitmap!;
  const space = mdBitmapSpace(BigInt(bm.syncSectors), MiB);
  await a.recordDirty();
  const begin = (off: number, len: number): Promise<void> => new Promise((resolve) => bm.begin(off, len, resolve));
  await begin(0, 4096); // member sectors 0.. : chunk 0
  await begin(3 * 64 * 1024, 4096); // stripe 1, still member chunk 0
  await begin(3 * 5 * MiB + 4096, 8192); // stripe 80: member sector 10248, chunk 5
  await begin(a.arrayBytes - 4096, 4096); // the last chunk
  for (const m of ms) {
    const x = examineBitmap(m, 8192, space);
    assert.equal(x.get('Magic'), '6d746962');
    assert.equal(x.get('Version'), '4');
    assert.equal(x.get('UUID'), a.uuid);
    assert.equal(x.get('Events'), '1');
    assert.equal(x.get('Events Cleared'), '0');
    assert.equal(x.get('State'), 'OK');
    assert.equal(x.get('Chunksize'), '1 MB');
    assert.equal(x.get('Daemon'), '5s flush period');
    assert.equal(x.get('Sync Size')?.split(' ')[0], String(a.componentBytes / 1024));
    assert.equal(x.get('Bitmap'), `${bm.bits} bits (chunks), 3 dirty (${(300 / bm.bits).toFixed(1)}%)`);
  }
  bm.end(0, 4096);
  bm.end(3 * 64 * 1024, 4096);
  await bm.flushClean();
  const x = examineBitmap(ms[2]!, 8192, space);
  assert.equal(x.get('Bitmap'), `${bm.bits} bits (chunks), 2 dirty (${(200 / bm.bits).toFixed(1)}%)`);
  assert.equal(x.get('Events Cleared'), '1', 'raised to the array\'s events when bits were cleared');

  await a.markFaulty(2);
  const ex = mdadm(['--examine', ms[0]!.name]);
  assert.equal(ex.get('Array State')?.split(' ')[0], 'AA.A');
  assert.equal(ex.get('Events'), '2');
  assert.equal(ex.get('State'), 'active');
  assert.equal(mdadm(['--examine', ms[2]!.name]).get('Events'), '1', 'the failed member keeps its old superblock');
  await a.recordClean();
  assert.equal(mdadm(['--examine', ms[3]!.name]).get('State'), 'clean');
  a.close();
});

// ------------------------------------------------------------------------------- with the RAID layer

test('the RAID layer runs over an assembled array, its bitmap as the write intent', async () => {
  const { RaidBackend } = await import('../../../engine/raid/raid-backend.js');
  const ms = members(4);
  const a = await createArray(ms, { level: 5, bitmap: 'internal', bitmapChunkBytes: 64 * 1024, chunkBytes: 64 * 1024, assumeClean: true });
  await a.recordDirty();
  const raid = new RaidBackend({
    geometry: a.geometry, members: a.slots.map((m) => m?.backend ?? null), dataOffset: a.dataOffset, componentBytes: a.componentBytes,
    intent: a.bitmap ?? undefined, onMemberFailed: (slot, reason) => a.memberFailed(slot, reason),
  });
  assert.equal(raid.info.size, a.arrayBytes);
  const at = 3 * 64 * 1024 * 7; // stripe 7: bitmap chunk 7
  const data = new Uint8Array(8192).fill(0xab);
  const iov = new IoVector(1);
  iov.push(data, 0, data.length, 0);
  const st = await new Promise<number>((resolve) => raid.write(iov, at, false, { complete: resolve }));
  assert.equal(st, 0);
  assert.equal(a.bitmap!.pending(7), 0, 'the write ended');
  assert.ok((readBytes(ms[0]!.backend, 8192 + BITMAP_SUPER_BYTES, 1)[0]! & 0x80) !== 0, 'chunk 7 dirty until cleared');
  await a.recordClean();
  assert.equal(a.bitmap!.dirtyCount(), 0);
  const b = await assembleArray(ms);
  assert.equal(b.clean, true);
  const again = new RaidBackend({ geometry: b.geometry, members: b.slots.map((m) => m?.backend ?? null), dataOffset: b.dataOffset, componentBytes: b.componentBytes });
  const out = new Uint8Array(8192);
  const rd = new IoVector(1);
  rd.push(out, 0, out.length, 0);
  assert.equal(await new Promise<number>((resolve) => again.read(rd, at, { complete: resolve })), 0);
  assert.ok(out.every((x) => x === 0xab));
});
