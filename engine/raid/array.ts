// An md array on twindisk members: create (what `mdadm --create --metadata=1.2` writes), assemble, and superblock updates.
//
// The members carry md's own format (version-1.2 superblock 4 KiB from the start, internal write-intent
// bitmap 8 sectors after it), so `mdadm --examine` reads members twindisk created and twindisk assembles
// members mdadm created. The codecs are md-superblock.ts and md-bitmap.ts; placement is geometry.ts; the
// run-time bitmap is write-intent-bitmap.ts; the RAID I/O layer over the assembled members is
// raid-backend.ts. This file owns the array's state: every change (a member fails, is removed or
// added, the array goes dirty or clean, resync or recovery progresses) goes through one door, commit():
// events + 1, the bitmap superblock written (md_bitmap_update_sb), then every superblock, each member
// flushed, before the change counts as made (md_update_sb).
//
// Choices, where md leaves one:
//   - A new array needs its initial resync, as with mdadm: resync_offset 0 and every bitmap bit set,
//     so the caller runs a resync (resyncRegions()) before trusting parity or mirrors. With
//     `assumeClean` it is in sync from the start (resync_offset MaxSector, bits clear); raid4/5/6
//     created with a missing member are written clean too (mdadm's "clean, but drive missing").
//   - The bitmap chunk is mdadm's default (mdadmBitmapChunk: at least 64 MiB, more when the bits would
//     not fit 128 KiB). Why twindisk keeps it: members stay byte-identical to mdadm's, so the kernel and
//     `mdadm -X` read them as their own; a bit is written only the first time a write lands in a new
//     64 MiB region, so a steady workload hits already-set bits and pays no bitmap write; and after a
//     crash each dirty bit costs at most 64 MiB of resync per member, seconds on any disk.
//     `bitmapChunkBytes` trades fewer resync bytes for more bitmap writes.
//   - Members in one array share one data offset (the RAID layer maps with one); assembly refuses others.
//   - Assembly follows the kernel and mdadm: a member one event behind the freshest is still current
//     (md writes clean/dirty changes lazily) but takes its role from the freshest superblock; further
//     behind it is stale and left out (no --force). A degraded raid4/5/6 that was not shut down cleanly
//     is refused unless `startDirtyDegraded` (md's start_dirty_degraded): its parity may be wrong.
//   - Nothing is written while assembling; the first change writes the superblocks.
import { randomBytes } from 'node:crypto';
import util from 'node:util';
import type { Backend, Completion } from '../backend.js';
import { isAsyncBackend } from '../backend.js';
import { IoVector } from '../iovec.js';
import {
  MD_DISK_ROLE_FAULTY, MD_DISK_ROLE_MAX, MD_DISK_ROLE_SPARE, MD_FEATURE_BITMAP_OFFSET, MD_FEATURE_RECOVERY_OFFSET,
  MD_MAX_SECTOR, MD_SB_1_2_OFFSET, MD_SB_1_MAX_DEV, MD_SB_MAGIC, MDADM_BITMAP_OFFSET_V1_2, MDADM_DEFAULT_BITMAP_DELAY,
  MDADM_DEFAULT_CHUNK_SECTORS, RAID10_DEFAULT_LAYOUT, ALGORITHM_LEFT_SYMMETRIC, SECTOR,
} from './md-constants.js';
import {
  MdGeometryError, checkMdGeometry, mdArraySectors, parseMdLayout, raid10Layout, type MdGeometry, type MdRaidLevel,
} from './geometry.js';
import {
  MdFormatError, decodeMdSuperblock, encodeMdSuperblock, mdArrayMismatch, mdDeviceRole, mdRoleName, mdTime, mdUuidString,
  mdadmBitmapSpace, mdadmDataOffset, parseMdUuid, type MdSuperblock, type MdSuperblockFields,
} from './md-superblock.js';
import {
  decodeMdBitmapSuper, encodeMdBitmapSuper, mdBitmapSector, mdBitmapSpace, mdBitmapSyncSize, mdadmBitmapChunk, newMdBitmapSuper,
} from './md-bitmap.js';
import { MdWriteIntentBitmap, mdSyncRegion, type MdBitmapRun, type MdBitmapStore, type MdSyncRegion } from './write-intent-bitmap.js';

// -------------------------------------------------------------------------------------------- types

/** One member device as the array sees it: a name for messages and the back-end holding its bytes. */
export interface MemberIo {
  /** What messages call it: a file name, a device path. */
  readonly name: string;
  readonly backend: Backend;
}

/** Why an array cannot be created, assembled or changed; `member` names the member at fault when there is one. */
export type MdArrayErrorCode =
  | 'options' | 'member-size' | 'not-member' | 'bad-superblock' | 'unsupported' | 'foreign' | 'mismatch' | 'duplicate'
  | 'too-few' | 'dirty-degraded' | 'bitmap' | 'io' | 'state' | 'array-failed';

export class MdArrayError extends Error {
  override readonly name = 'MdArrayError';
  constructor(readonly code: MdArrayErrorCode, message: string, readonly member?: string) {
    super(message);
  }
}

/** What one slot holds. */
export type MdSlotState =
  | { state: 'in-sync'; member: MemberIo }
  /** Being rebuilt: sectors below `recoveryOffset` (from the data offset) are in sync. */
  | { state: 'recovering'; member: MemberIo; recoveryOffset: number }
  | { state: 'missing'; reason: string };

/** A member found at assembly but left out of the array. */
export interface MdLeftOutMember {
  member: MemberIo;
  /** 'stale': its events are behind (it missed changes); 'faulty': the array failed it. */
  why: 'stale' | 'faulty';
  /** The slot its superblock claims, if any. */
  slot: number | null;
  /** Its superblock's dev_number (not given to a new member while it may come back). */
  devNumber: number;
  events: bigint;
  /** Its events are at least the bitmap's events_cleared: the bitmap's dirty chunks are all it missed. */
  bitmapRecoverable: boolean;
  reason: string;
}

/** Options shared by create and assemble. */
export interface MdArrayRunOptions {
  /** Milliseconds before idle bitmap chunks are cleared; the bitmap's daemon_sleep (5 s) by default. */
  bitmapClearDelayMs?: number;
  /** Called when the array fails a member because its own metadata or bitmap I/O to it failed. */
  onMemberFailed?(slot: number, member: MemberIo, reason: string): void;
}

/** What to create. */
export interface CreateArrayOptions extends MdArrayRunOptions {
  level: MdRaidLevel;
  /** mdadm's layout names ("left-symmetric", "ddf-N-continue", "n2", "o2", ...) or the number; mdadm's default when left out. */
  layout?: string | number;
  /** raid4/5/6/10 chunk in bytes: a power of two of at least 4 KiB; mdadm's 512 KiB by default. raid1 has none. */
  chunkBytes?: number;
  /** Members that get slots (the first ones); the others become spares. All of them by default. */
  raidDevices?: number;
  /** The array's name; stored as "homehost:name" when `homehost` is given (as mdadm does). */
  name?: string;
  homehost?: string;
  /** The array UUID (mdadm's "Array UUID"); random by default. */
  uuid?: string | Uint8Array;
  bitmap: 'internal' | 'none';
  /** Bytes one bitmap bit covers (a power of two of at least 4 KiB); mdadm's choice by default (see the file comment). */
  bitmapChunkBytes?: number;
  /** The bitmap's daemon_sleep: seconds before idle bits are cleared (5). */
  bitmapDelaySeconds?: number;
  /** Bytes of each member to use (mdadm --size): rounded down to the chunk; the most all members allow by default. */
  size?: number;
  /** Where data starts on each member, in bytes (mdadm --data-offset): a multiple of 4 KiB; mdadm's choice by default. */
  dataOffset?: number;
  /** The members hold the same data already (or it does not matter): no initial resync. */
  assumeClean?: boolean;
}

/** What to assemble. */
export interface AssembleArrayOptions extends MdArrayRunOptions {
  /** The array to assemble (members of others are refused); the first member's by default. */
  uuid?: string | Uint8Array;
  /** Start a raid4/5/6 that is both degraded and dirty (its parity may be wrong): md's start_dirty_degraded. */
  startDirtyDegraded?: boolean;
}

/** One present member and what its superblock says of it alone. */
interface MemberRecord {
  io: MemberIo;
  /** Its superblock as last read or written: the per-member fields (dev_number, device_uuid, data_size, ...) live here. */
  own: MdSuperblockFields;
  /** A slot, MD_DISK_ROLE_SPARE or MD_DISK_ROLE_FAULTY. */
  role: number;
  /** Slot members being rebuilt: sectors recovered so far; null when in sync. */
  recoveryOffset: bigint | null;
  /** The slot a failed member held. */
  lastSlot: number | null;
}

/** Feature bits twindisk handles; a superblock with others is refused (assemble those with mdadm). */
const SUPPORTED_FEATURES = MD_FEATURE_BITMAP_OFFSET | MD_FEATURE_RECOVERY_OFFSET;
/** Feature bits that describe one member, not the array. */
const MEMBER_FEATURES = MD_FEATURE_RECOVERY_OFFSET;
const SB_BYTE_OFFSET = MD_SB_1_2_OFFSET * SECTOR;
/** The bad-block log mdadm reserves (8 sectors) after the bitmap space. */
const BBLOG_SECTORS = 8;

// ------------------------------------------------------------------------------------ member I/O

/** Reads `length` bytes at `offset` of a member. */
function readMember(m: MemberIo, offset: number, length: number): Promise<Uint8Array> {
  const buf = new Uint8Array(length);
  const iov = new IoVector(1);
  iov.push(buf, 0, length, 0);
  return new Promise((resolve, reject) => {
    submit(m.backend, (done) => m.backend.read(iov, offset, done), (st) => {
      if (st === 0) resolve(buf);
      else reject(ioError(m, `reading ${length} bytes at ${offset}`, st));
    });
  });
}

/** Writes `bytes` at `offset` of a member and flushes it: durable when it resolves. */
function writeMemberDurably(m: MemberIo, offset: number, bytes: Uint8Array): Promise<void> {
  return new Promise((resolve, reject) => {
    writeRuns(m, offset, [{ offset: 0, bytes }], (err) => (err === null ? resolve() : reject(err)));
  });
}

/** Writes each run at `base + run.offset`, then flushes; `done(null)` once durable, or the first error. */
function writeRuns(m: MemberIo, base: number, runs: readonly MdBitmapRun[], done: (err: MdArrayError | null) => void): void {
  const b = m.backend;
  let i = 0;
  const next = (): void => {
    if (i === runs.length) {
      submit(b, (c) => b.flush(c), (st) => done(st === 0 ? null : ioError(m, 'flushing', st)));
      return;
    }
    const r = runs[i++]!;
    const iov = new IoVector(1);
    iov.push(r.bytes, 0, r.bytes.length, 0);
    submit(b, (c) => b.write(iov, base + r.offset, false, c), (st) => {
      if (st === 0) next();
      else done(ioError(m, `writing ${r.bytes.length} bytes at ${base + r.offset}`, st));
    });
  };
  next();
}

/** Submits one operation; an asynchronous back-end is kicked (its owner's loop polls it). */
function submit(b: Backend, op: (done: Completion) => void, cb: (st: number) => void): void {
  op({ complete: cb });
  if (isAsyncBackend(b)) b.kick();
}

function ioError(m: MemberIo, what: string, st: number): MdArrayError {
  let name = `errno ${-st}`;
  try {
    name = util.getSystemErrorName(st);
  } catch {
    // not a known errno
  }
  return new MdArrayError('io', `${m.name}: ${what} failed: ${name}`, m.name);
}

// ---------------------------------------------------------------------------------------- helpers

function sectorsOf(m: MemberIo): number {
  return Math.floor(m.backend.info.size / SECTOR);
}

function levelName(level: number): string {
  return `raid${level}`;
}

function uuidBytes(u: string | Uint8Array): Uint8Array {
  if (typeof u === 'string') return parseMdUuid(u);
  if (!(u instanceof Uint8Array) || u.length !== 16) throw new MdArrayError('options', 'an array UUID is 16 bytes');
  return u.slice();
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function isSlot(role: number): boolean {
  return role <= MD_DISK_ROLE_MAX;
}

/** mdadm's set_name: "homehost:name" when that fits in 31 bytes and the name has no ':', else the name (init_super1). */
function setNameOf(name: string, homehost: string | undefined): string {
  if (homehost !== undefined && homehost !== '' && !name.includes(':') && homehost.length + 1 + name.length < 32) return `${homehost}:${name}`;
  return name.slice(0, 31);
}

/** The part of set_name after "homehost:". */
function shortName(setName: string): string {
  const i = setName.indexOf(':');
  return i < 0 ? setName : setName.slice(i + 1);
}

/** The seconds-only time md and mdadm write (ktime_get_real_seconds, time(0)). */
function now(): bigint {
  return mdTime(Math.floor(Date.now() / 1000));
}

/**
 * Whether md would run the array with these slots in sync: raid1 one; raid4/5 all but one; raid6 all but
 * two; raid10 one of the copies of every chunk (raid10's _enough: each window of near*far slots, stepped
 * by near, holds one).
 */
function enough(g: MdGeometry, inSync: readonly boolean[]): boolean {
  const n = g.raidDisks;
  const missing = inSync.filter((x) => !x).length;
  if (g.level === 1) return missing < n;
  if (g.level === 4 || g.level === 5) return missing <= 1;
  if (g.level === 6) return missing <= 2;
  const l = raid10Layout(g.layout);
  const copies = l.near * l.far;
  let first = 0;
  do {
    let cnt = 0;
    for (let k = 0, s = first; k < copies; k++, s = (s + 1) % n) if (inSync[s]) cnt++;
    if (cnt === 0) return false;
    first = (first + l.near) % n;
  } while (first !== 0);
  return true;
}

/** Minimum members in sync, for messages. */
function needText(g: MdGeometry): string {
  if (g.level === 1) return 'at least 1';
  if (g.level === 4 || g.level === 5) return `at least ${g.raidDisks - 1}`;
  if (g.level === 6) return `at least ${g.raidDisks - 2}`;
  return 'a copy of every chunk';
}

// ----------------------------------------------------------------------------------------- create

/**
 * Creates an md array on `members` (null: a missing member) as `mdadm --create --metadata=1.2` lays it
 * out: data offset and size as mdadm picks them (the smallest member sets the size; a member too small
 * for the data offset is refused), a 1.2 superblock at 4 KiB of each with its slot (dev_number = its
 * position), a fresh device UUID and events 0, and with `bitmap: 'internal'` a bitmap 8 sectors after the
 * superblock. Everything is checked before the first byte is written. Unless `assumeClean`, the array
 * needs its initial resync (see the file comment and MdArray.resyncRegions).
 */
export async function createArray(members: readonly (MemberIo | null)[], opts: CreateArrayOptions): Promise<MdArray> {
  const level = opts.level;
  if (![1, 4, 5, 6, 10].includes(level)) throw new MdArrayError('options', `raid level ${String(level)} is not handled: use 1, 4, 5, 6 or 10`);
  const raidDisks = opts.raidDevices ?? members.length;
  if (!Number.isInteger(raidDisks) || raidDisks < 1 || raidDisks > members.length) {
    throw new MdArrayError('options', `raidDevices ${raidDisks} is not between 1 and the ${members.length} members given`);
  }
  if (members.length > MD_SB_1_MAX_DEV) throw new MdArrayError('options', `${members.length} members do not fit a 1.2 superblock (at most ${MD_SB_1_MAX_DEV})`);
  members.forEach((m, i) => {
    if (m === null && i >= raidDisks) throw new MdArrayError('options', `spare ${i} is missing: only slots can be missing`);
  });
  const present = members.filter((m): m is MemberIo => m !== null);
  if (present.length === 0) throw new MdArrayError('options', 'every member is missing: give at least one');
  for (let i = 0; i < present.length; i++) {
    for (let j = i + 1; j < present.length; j++) {
      const [a, b] = [present[i]!, present[j]!];
      if (a.backend === b.backend) throw new MdArrayError('options', `${a.name} and ${b.name} are the same device`, b.name);
    }
  }
  const layout = createLayout(level, opts.layout);
  const chunkSectors = createChunk(level, opts.chunkBytes);
  const shape: MdGeometry = { level, layout, raidDisks, chunkSectors };
  try {
    checkMdGeometry({ ...shape, componentSectors: 0 });
  } catch (e) {
    if (e instanceof MdGeometryError) throw new MdArrayError('options', `${levelName(level)} with ${raidDisks} members: ${e.message}`);
    throw e;
  }
  const inSync = members.slice(0, raidDisks).map((m) => m !== null);
  if (!enough(shape, inSync)) {
    const missing = inSync.flatMap((x, i) => (x ? [] : [i])).join(', ');
    throw new MdArrayError('too-few', `${levelName(level)} cannot run with slots ${missing} missing: it needs ${needText(shape)} of ${raidDisks}`);
  }
  for (const m of present) {
    const bs = m.backend.info.blockSize;
    if (bs !== 512 && bs !== 4096) throw new MdArrayError('member-size', `${m.name}: block size ${bs} is not 512 or 4096`, m.name);
    if (m.backend.info.readOnly) throw new MdArrayError('options', `${m.name} is read-only`, m.name);
  }

  // Data offset: mdadm's validate_geometry1 picks it for the first device and uses it for all.
  const first = present[0]!;
  let dataOffset: number;
  if (opts.dataOffset !== undefined) {
    if (!Number.isSafeInteger(opts.dataOffset) || opts.dataOffset % 4096 !== 0 || opts.dataOffset <= SB_BYTE_OFFSET + 4096) {
      throw new MdArrayError('options', `dataOffset ${opts.dataOffset} must be a multiple of 4 KiB past the superblock (more than 8 KiB)`);
    }
    dataOffset = opts.dataOffset / SECTOR;
  } else {
    dataOffset = Number(mdadmDataOffset(BigInt(sectorsOf(first)), level === 1 ? 0 : chunkSectors));
  }

  // Size: each member's room after the data offset, in KiB rounded down to the chunk (Create.c), the smallest;
  // raid1 rounded to 64 KiB "in case it is ever reshaped to RAID5".
  const chunkKiB = chunkSectors / 2;
  let minKiB = Infinity;
  let smallest = first;
  for (const m of present) {
    const s = sectorsOf(m);
    let kib = s > dataOffset ? Math.floor((s - dataOffset) / 2) : 0;
    if (chunkKiB > 0) kib -= kib % chunkKiB;
    if (kib <= 0) {
      throw new MdArrayError(
        'member-size',
        `${m.name} is too small: ${m.backend.info.size} bytes leave no ${chunkKiB > 0 ? `whole ${chunkKiB} KiB chunk` : 'room'} after the data offset of ${dataOffset * SECTOR} bytes`,
        m.name,
      );
    }
    if (kib < minKiB) {
      minKiB = kib;
      smallest = m;
    }
  }
  let sizeKiB: number;
  if (opts.size !== undefined) {
    if (!Number.isSafeInteger(opts.size) || opts.size < 1024) throw new MdArrayError('options', `size ${opts.size} is not a whole number of KiB`);
    sizeKiB = Math.floor(opts.size / 1024);
    if (chunkKiB > 0) sizeKiB -= sizeKiB % chunkKiB;
    if (sizeKiB === 0) throw new MdArrayError('options', `size ${opts.size} is smaller than one ${chunkKiB} KiB chunk`);
    if (sizeKiB > minKiB) {
      throw new MdArrayError('member-size', `${smallest.name} is smaller than the size asked for: ${minKiB} KiB < ${sizeKiB} KiB + metadata`, smallest.name);
    }
  } else {
    sizeKiB = minKiB;
    if (level === 1) sizeKiB -= sizeKiB % 64;
    if (sizeKiB === 0) throw new MdArrayError('member-size', `${smallest.name} is too small: less than 64 KiB after the data offset`, smallest.name);
  }
  const size = sizeKiB * 2;
  const g: MdGeometry = { ...shape, componentSectors: size };
  checkMdGeometry(g);

  // The bitmap: mdadm's add_internal_bitmap1, 8 sectors after the superblock.
  const setUuid = opts.uuid === undefined ? new Uint8Array(randomBytes(16)) : uuidBytes(opts.uuid);
  let bitmapImage: Uint8Array | null = null;
  let bmSpaceSectors = mdadmBitmapSpace(BigInt(size)); // what mdadm leaves when there is no bitmap
  const resyncOffset = opts.assumeClean || ((level === 4 || level === 5 || level === 6) && inSync.includes(false)) ? MD_MAX_SECTOR : 0n;
  if (opts.bitmap === 'internal') {
    const syncSize = mdBitmapSyncSize(g, size);
    let chunk: number;
    if (opts.bitmapChunkBytes !== undefined) {
      chunk = opts.bitmapChunkBytes;
      if (!Number.isSafeInteger(chunk) || chunk < 4096 || chunk > 2 ** 31 || (chunk & (chunk - 1)) !== 0) {
        throw new MdArrayError('options', `bitmapChunkBytes ${chunk} must be a power of two from 4 KiB to 2 GiB`);
      }
    } else {
      try {
        chunk = mdadmBitmapChunk(syncSize, mdadmBitmapSpace(BigInt(size)));
      } catch (e) {
        if (e instanceof MdFormatError) throw new MdArrayError('bitmap', `no internal bitmap on members this small: ${e.message}`);
        throw e;
      }
    }
    const space = mdBitmapSpace(syncSize, chunk);
    bmSpaceSectors = space / SECTOR;
    const end = MD_SB_1_2_OFFSET + MDADM_BITMAP_OFFSET_V1_2 + bmSpaceSectors + BBLOG_SECTORS;
    if (end > dataOffset) {
      throw new MdArrayError(
        'bitmap',
        `a bitmap of ${space / 1024} KiB (${chunk}-byte chunks) does not fit between the superblock and the data at ${dataOffset * SECTOR} bytes: use a larger bitmapChunkBytes, or a larger dataOffset`,
      );
    }
    const delay = opts.bitmapDelaySeconds ?? MDADM_DEFAULT_BITMAP_DELAY;
    if (!Number.isInteger(delay) || delay < 1) throw new MdArrayError('options', `bitmapDelaySeconds ${delay} must be a whole number of at least 1`);
    bitmapImage = new Uint8Array(space).fill(resyncOffset === 0n ? 0xff : 0); // mdadm writes every bit set: "resync whole device on initial assembly"
    bitmapImage.set(encodeMdBitmapSuper(newMdBitmapSuper({ setUuid, syncSize, chunkSize: chunk, daemonSleep: delay })), 0);
  } else if (opts.bitmapChunkBytes !== undefined) {
    throw new MdArrayError('options', 'bitmapChunkBytes needs bitmap: \'internal\'');
  }

  // Superblocks (init_super1, add_to_super1, write_init_super1): roles for max_dev = 256 + 2 * devices rounded to 512 bytes.
  const maxDev = (Math.ceil((256 + 2 * members.length) / 512) * 512 - 256) / 2;
  const devRoles = new Array<number>(maxDev).fill(MD_DISK_ROLE_SPARE);
  members.forEach((m, i) => {
    if (m !== null && i < raidDisks) devRoles[i] = i;
  });
  const bblogOffset = dataOffset >= MDADM_BITMAP_OFFSET_V1_2 + bmSpaceSectors + BBLOG_SECTORS + MD_SB_1_2_OFFSET
    ? MDADM_BITMAP_OFFSET_V1_2 + bmSpaceSectors
    : dataOffset - BBLOG_SECTORS - MD_SB_1_2_OFFSET;
  const ctime = now();
  const common: MdSuperblockFields = {
    featureMap: bitmapImage !== null ? MD_FEATURE_BITMAP_OFFSET : 0, setUuid, setName: setNameOf(opts.name ?? 'twindisk', opts.homehost),
    ctime, level, layout, size: BigInt(size), chunkSectors, raidDisks, bitmapOffset: bitmapImage !== null ? MDADM_BITMAP_OFFSET_V1_2 : 0,
    ppl: null, newLevel: 0, reshapePosition: 0n, deltaDisks: 0, newLayout: 0, newChunk: 0, newOffset: 0,
    dataOffset: BigInt(dataOffset), dataSize: 0n, superOffset: BigInt(MD_SB_1_2_OFFSET), recoveryOffset: 0n, devNumber: 0,
    cntCorrectedRead: 0, deviceUuid: new Uint8Array(16), devflags: 0, bblogShift: 0, bblogSize: BBLOG_SECTORS, bblogOffset,
    utime: ctime, events: 0n, resyncOffset, devRoles,
  };
  const records: MemberRecord[] = [];
  const writes: { m: MemberIo; sb: Uint8Array }[] = [];
  members.forEach((m, i) => {
    if (m === null) return;
    const own: MdSuperblockFields = { ...common, devNumber: i, deviceUuid: new Uint8Array(randomBytes(16)), dataSize: BigInt(sectorsOf(m) - dataOffset) };
    let sb: Uint8Array;
    try {
      sb = encodeMdSuperblock(own, { blockSize: m.backend.info.blockSize });
    } catch (e) {
      if (e instanceof MdFormatError) throw new MdArrayError('options', `${m.name}: ${e.message}`, m.name);
      throw e;
    }
    writes.push({ m, sb });
    records.push({ io: m, own, role: i < raidDisks ? i : MD_DISK_ROLE_SPARE, recoveryOffset: null, lastSlot: null });
  });

  // Bitmap first, then the superblock: a member with a superblock always has its bitmap.
  const bitmapBase = (MD_SB_1_2_OFFSET + MDADM_BITMAP_OFFSET_V1_2) * SECTOR;
  await Promise.all(writes.map(async ({ m, sb }) => {
    if (bitmapImage !== null) await writeMemberDurably(m, bitmapBase, bitmapImage);
    await writeMemberDurably(m, SB_BYTE_OFFSET, sb);
  }));
  return new MdArray({ common, records, leftOut: [], bitmapImage, bitmapBase, opts });
}

function createLayout(level: MdRaidLevel, layout: string | number | undefined): number {
  if (layout === undefined) return level === 5 || level === 6 ? ALGORITHM_LEFT_SYMMETRIC : level === 10 ? RAID10_DEFAULT_LAYOUT : 0;
  if (typeof layout === 'number') {
    if (!Number.isInteger(layout) || layout < 0) throw new MdArrayError('options', `layout ${layout} is not a layout number`);
    return layout;
  }
  try {
    return parseMdLayout(level, layout);
  } catch (e) {
    if (e instanceof MdGeometryError) throw new MdArrayError('options', e.message);
    throw e;
  }
}

function createChunk(level: MdRaidLevel, chunkBytes: number | undefined): number {
  if (level === 1) {
    if (chunkBytes !== undefined && chunkBytes !== 0) throw new MdArrayError('options', 'raid1 has no chunk size: leave chunkBytes out (mdadm forbids it too)');
    return 0;
  }
  if (chunkBytes === undefined) return MDADM_DEFAULT_CHUNK_SECTORS;
  if (!Number.isSafeInteger(chunkBytes) || chunkBytes < 4096 || (chunkBytes & (chunkBytes - 1)) !== 0 || chunkBytes > 2 ** 30) {
    throw new MdArrayError('options', `chunk of ${chunkBytes} bytes is invalid: use a power of two of at least 4 KiB (mdadm's default is 512 KiB)`);
  }
  return chunkBytes / SECTOR;
}

// --------------------------------------------------------------------------------------- assemble

/** A member's superblock, decoded, with the member it came from. */
interface Found {
  m: MemberIo;
  sb: MdSuperblock;
}

/** Reads and checks one member's 1.2 superblock; the error names the member. */
async function readSuperblock(m: MemberIo): Promise<MdSuperblock> {
  if (m.backend.info.size < 2 * SB_BYTE_OFFSET) {
    throw new MdArrayError('not-member', `${m.name}: not an md member (${m.backend.info.size} bytes is too small to hold a superblock at 4 KiB)`, m.name);
  }
  const head = await readMember(m, 0, 2 * SB_BYTE_OFFSET);
  const at4k = head.subarray(SB_BYTE_OFFSET);
  try {
    return decodeMdSuperblock(at4k, {
      minorVersion: 2, deviceSectors: BigInt(sectorsOf(m)), logicalBlockSize: m.backend.info.blockSize, supportedFeatures: SUPPORTED_FEATURES,
    });
  } catch (e) {
    if (!(e instanceof MdFormatError)) throw e;
    if (e.code === 'bad-magic') {
      const v11 = new DataView(head.buffer).getUint32(0, true) === MD_SB_MAGIC;
      throw new MdArrayError(
        'not-member',
        v11
          ? `${m.name}: not a 1.2 md member (its superblock is at the start: 1.1 metadata, which twindisk does not read)`
          : `${m.name}: not an md member (no superblock magic at 4 KiB)`,
        m.name,
      );
    }
    if (e.code === 'bad-checksum') throw new MdArrayError('bad-superblock', `${m.name}: bad superblock checksum (${e.message})`, m.name);
    if (e.code === 'unsupported-features') throw new MdArrayError('unsupported', `${m.name}: ${e.message}`, m.name);
    throw new MdArrayError('bad-superblock', `${m.name}: ${e.message}`, m.name);
  }
}

/**
 * Assembles the array on `members` from their superblocks, writing nothing: orders them by role, leaves
 * out stale members (events behind the freshest by more than one) and failed ones, takes spares, and
 * refuses, naming the member, a member that is not an md 1.2 member, has a bad or unsupported
 * superblock, belongs to another array, claims a slot another claims, or uses another data offset; and
 * refuses an array with too few members in sync (naming what is missing) or, for raid4/5/6, degraded and
 * dirty (unless `startDirtyDegraded`). With an internal bitmap, its bits are read from every member in
 * sync (a bit set on any is set).
 */
export async function assembleArray(members: readonly MemberIo[], opts: AssembleArrayOptions = {}): Promise<MdArray> {
  if (members.length === 0) throw new MdArrayError('options', 'no members given');
  const found: Found[] = [];
  for (const m of members) found.push({ m, sb: await readSuperblock(m) });
  for (const f of found) {
    if (![1, 4, 5, 6, 10].includes(f.sb.level)) {
      const kind = f.sb.level < 0 ? `level ${f.sb.level}` : levelName(f.sb.level);
      throw new MdArrayError('unsupported', `${f.m.name}: is a member of a ${kind} array, which twindisk does not run: use 1, 4, 5, 6 or 10`, f.m.name);
    }
  }
  const want = opts.uuid !== undefined ? uuidBytes(opts.uuid) : found[0]!.sb.setUuid;
  for (const f of found) {
    if (!sameBytes(f.sb.setUuid, want)) {
      throw new MdArrayError('foreign', `${f.m.name}: belongs to array ${mdUuidString(f.sb.setUuid)} not ${mdUuidString(want)}`, f.m.name);
    }
  }
  for (let i = 0; i < found.length; i++) {
    for (let j = i + 1; j < found.length; j++) {
      const a = found[i]!;
      const b = found[j]!;
      if (sameBytes(a.sb.deviceUuid, b.sb.deviceUuid) && a.sb.devNumber === b.sb.devNumber) {
        throw new MdArrayError(
          'duplicate',
          `${a.m.name} and ${b.m.name} are the same member (device UUID ${mdUuidString(a.sb.deviceUuid)}): give each device once`,
          b.m.name,
        );
      }
    }
  }
  let freshest = found[0]!;
  for (const f of found) if (f.sb.events > freshest.sb.events) freshest = f;
  const fsb = freshest.sb;
  for (const f of found) {
    const why = f === freshest ? null : mdArrayMismatch(fsb, f.sb);
    if (why !== null) throw new MdArrayError('mismatch', `${f.m.name} and ${freshest.m.name}: ${why}`, f.m.name);
  }

  // Roles (super_1_validate): from the member's own superblock, or the freshest one's when it is one event behind.
  const records: MemberRecord[] = [];
  const leftOut: MdLeftOutMember[] = [];
  for (const f of found) {
    const ev = f.sb.events;
    const own = mdDeviceRole(f.sb);
    let role = own;
    if (ev + 1n === fsb.events) role = f.sb.devNumber < fsb.devRoles.length ? fsb.devRoles[f.sb.devNumber]! : MD_DISK_ROLE_SPARE;
    if (isSlot(role) && role >= fsb.raidDisks) {
      throw new MdArrayError('bad-superblock', `${f.m.name}: claims slot ${role} of a ${fsb.raidDisks}-member array: its superblock is inconsistent`, f.m.name);
    }
    if (isSlot(role) && ev + 1n < fsb.events) {
      leftOut.push({
        member: f.m, why: 'stale', slot: role, events: ev, devNumber: f.sb.devNumber, bitmapRecoverable: false,
        reason: `${f.m.name} is stale: events ${ev}, the array is at ${fsb.events}`,
      });
      continue;
    }
    if (role === MD_DISK_ROLE_FAULTY || (!isSlot(role) && role !== MD_DISK_ROLE_SPARE)) {
      leftOut.push({
        member: f.m, why: 'faulty', slot: isSlot(own) ? own : null, events: ev, devNumber: f.sb.devNumber, bitmapRecoverable: false,
        reason: `${f.m.name} is ${mdRoleName(role)} in the array`,
      });
      continue;
    }
    const recovering = isSlot(role) && (f.sb.featureMap & MD_FEATURE_RECOVERY_OFFSET) !== 0 && f.sb.recoveryOffset < fsb.size;
    records.push({ io: f.m, own: f.sb, role, recoveryOffset: recovering ? f.sb.recoveryOffset : null, lastSlot: null });
  }
  for (let i = 0; i < records.length; i++) {
    for (let j = i + 1; j < records.length; j++) {
      const a = records[i]!;
      const b = records[j]!;
      if (isSlot(a.role) && a.role === b.role) throw new MdArrayError('duplicate', `${a.io.name} and ${b.io.name} both claim slot ${a.role}`, b.io.name);
    }
  }
  for (const r of records) {
    if (r.own.dataOffset !== fsb.dataOffset) {
      throw new MdArrayError(
        'unsupported',
        `${r.io.name}: data starts at sector ${r.own.dataOffset}, on ${freshest.m.name} at ${fsb.dataOffset}: twindisk needs one data offset for all members (move it with mdadm --grow --data-offset, or re-add it)`,
        r.io.name,
      );
    }
    if (r.own.dataSize < fsb.size) {
      throw new MdArrayError('member-size', `${r.io.name}: holds ${r.own.dataSize} sectors of data, the array uses ${fsb.size} of each member`, r.io.name);
    }
  }

  const g: MdGeometry = {
    level: fsb.level as MdRaidLevel, layout: fsb.layout, raidDisks: fsb.raidDisks, chunkSectors: fsb.chunkSectors, componentSectors: Number(fsb.size),
  };
  try {
    checkMdGeometry(g);
  } catch (e) {
    if (e instanceof MdGeometryError) throw new MdArrayError('unsupported', `${freshest.m.name}: ${e.message}`, freshest.m.name);
    throw e;
  }
  const holder = (s: number): MemberRecord | undefined => records.find((r) => r.role === s);
  const inSync = Array.from({ length: g.raidDisks }, (_, s) => holder(s)?.recoveryOffset === null);
  const missingText = (): string => inSync.flatMap((ok, s) => {
    if (ok) return [];
    const h = holder(s);
    if (h !== undefined) return [`slot ${s} (${h.io.name} is being rebuilt: ${h.recoveryOffset} of ${fsb.size} sectors)`];
    const gone = leftOut.filter((l) => l.slot === s).map((l) => l.reason);
    return [`slot ${s} (${gone.length > 0 ? gone.join('; ') : 'no member'})`];
  }).join(', ');
  if (!enough(g, inSync)) {
    throw new MdArrayError(
      'too-few',
      `cannot assemble ${levelName(g.level)} ${mdUuidString(want)}: ${inSync.filter((x) => x).length} of ${g.raidDisks} members in sync, it needs ${needText(g)}; missing ${missingText()}`,
    );
  }
  const degraded = inSync.includes(false);
  // raid5.c run(): "cannot start dirty degraded array" (the write hole: parity of stripes being written may be wrong).
  if (degraded && fsb.resyncOffset !== MD_MAX_SECTOR && g.level !== 1 && g.level !== 10 && !opts.startDirtyDegraded) {
    throw new MdArrayError(
      'dirty-degraded',
      `${levelName(g.level)} ${mdUuidString(want)} is degraded (missing ${missingText()}) and was not shut down cleanly (resync offset ${fsb.resyncOffset}): parity may be wrong where writes were in flight, so rebuilding from it could corrupt data; start it anyway with startDirtyDegraded`,
    );
  }

  // The bitmap, from the members in sync: the freshest one's superblock, every member's bits.
  let bitmapImage: Uint8Array | null = null;
  let bitmapBase = 0;
  const at = mdBitmapSector(fsb);
  if (at !== null) {
    bitmapBase = Number(at) * SECTOR;
    const sources = records
      .filter((r) => r.recoveryOffset === null && isSlot(r.role))
      .sort((a, b) => (a.own.events < b.own.events ? 1 : a.own.events > b.own.events ? -1 : 0)); // freshest first
    const src = sources[0]!;
    const head = await readMember(src.io, bitmapBase, 4096);
    let bm;
    try {
      bm = decodeMdBitmapSuper(head, { setUuid: want, events: fsb.events });
    } catch (e) {
      if (e instanceof MdFormatError) throw new MdArrayError('bitmap', `${src.io.name}: ${e.message}`, src.io.name);
      throw e;
    }
    if (bm.nodes !== 0 || bm.version > 4) throw new MdArrayError('unsupported', `${src.io.name}: a clustered bitmap (version ${bm.version}) is not handled`, src.io.name);
    const space = mdBitmapSpace(mdBitmapSyncSize(g, Number(fsb.size)), bm.chunkSize);
    if (bitmapBase + space > Number(fsb.dataOffset) * SECTOR) {
      throw new MdArrayError(
        'bitmap',
        `${src.io.name}: a bitmap of ${space} bytes at byte ${bitmapBase} runs into the data at ${Number(fsb.dataOffset) * SECTOR}: the superblock is inconsistent`,
        src.io.name,
      );
    }
    bitmapImage = await readMember(src.io, bitmapBase, space);
    for (const r of sources.slice(1)) {
      const other = await readMember(r.io, bitmapBase, space);
      let ok = false;
      try {
        ok = decodeMdBitmapSuper(other, { setUuid: want, events: fsb.events }).chunkSize === bm.chunkSize;
      } catch {
        ok = false; // a member whose bitmap is damaged adds nothing
      }
      if (ok) for (let i = 256; i < space; i++) bitmapImage[i]! |= other[i]!;
    }
    for (const l of leftOut) l.bitmapRecoverable = l.why === 'stale' && l.events >= bm.eventsCleared;
  }
  return new MdArray({ common: fsb, records, leftOut, bitmapImage, bitmapBase, opts });
}

// ----------------------------------------------------------------------------------------- the array

/** What the constructor takes: the array's fields, its present members, and the bitmap image read or written. */
interface MdArrayInit {
  common: MdSuperblockFields;
  records: MemberRecord[];
  leftOut: MdLeftOutMember[];
  bitmapImage: Uint8Array | null;
  bitmapBase: number;
  opts: MdArrayRunOptions;
}

/**
 * An assembled (or just created) md array: its shape, which member holds which slot, and the one door
 * through which its superblocks change. Hand it to the RAID layer (raid-backend.ts) as
 * `{ geometry, members: slots.map((m) => m?.backend ?? null), dataOffset, componentBytes, intent: bitmap ?? undefined,
 * onMemberFailed: (slot, reason) => array.memberFailed(slot, reason) }`, and call recordDirty() before the first write.
 */
export class MdArray {
  readonly geometry: MdGeometry;
  /** Where data starts on every member, in bytes. */
  readonly dataOffset: number;
  /** Bytes of each member the array uses (the superblock's size). */
  readonly componentBytes: number;
  /** The array's size in bytes. */
  readonly arrayBytes: number;
  /** The array UUID as mdadm prints it, and its bytes. */
  readonly uuid: string;
  readonly uuidBytes: Uint8Array;
  /** The name without "homehost:", and set_name as stored. */
  readonly name: string;
  readonly setName: string;
  /** Members found at assembly and left out (stale, failed). */
  readonly leftOut: readonly MdLeftOutMember[];
  /** The internal write-intent bitmap (a WriteIntent for the RAID layer), or null. */
  readonly bitmap: MdWriteIntentBitmap | null;
  private readonly common: MdSuperblockFields;
  private records: MemberRecord[];
  private readonly bitmapBase: number;
  private readonly opts: MdArrayRunOptions;
  private dirty = false;
  /** md's recovery_cp: sync sectors known in sync from the start; MD_MAX_SECTOR when all are. */
  private recoveryCp: bigint;
  private queue: Promise<void> = Promise.resolve();
  private readonly failedIo = new Map<MemberRecord, string>();
  private failure: Error | null = null;
  private readonly usedDevNumbers: Set<number>;

  constructor(init: MdArrayInit) {
    const c = init.common;
    this.common = { ...c, featureMap: c.featureMap & ~MEMBER_FEATURES, devRoles: c.devRoles.slice() };
    this.records = init.records;
    this.leftOut = init.leftOut;
    this.opts = init.opts;
    this.bitmapBase = init.bitmapBase;
    this.geometry = { level: c.level as MdRaidLevel, layout: c.layout, raidDisks: c.raidDisks, chunkSectors: c.chunkSectors, componentSectors: Number(c.size) };
    this.dataOffset = Number(c.dataOffset) * SECTOR;
    this.componentBytes = Number(c.size) * SECTOR;
    this.arrayBytes = mdArraySectors(this.geometry, Number(c.size)) * SECTOR;
    this.uuidBytes = c.setUuid.slice();
    this.uuid = mdUuidString(c.setUuid);
    this.setName = c.setName;
    this.name = shortName(c.setName);
    this.recoveryCp = c.resyncOffset;
    this.usedDevNumbers = new Set([...init.records.map((r) => r.own.devNumber), ...init.leftOut.map((l) => l.devNumber)]);
    this.bitmap = init.bitmapImage === null ? null : new MdWriteIntentBitmap({
      geometry: this.geometry, componentSectors: Number(c.size), image: init.bitmapImage, store: this.bitmapStore,
      arrayEvents: c.events, degraded: this.degraded > 0, clearDelayMs: init.opts.bitmapClearDelayMs,
    });
  }

  // ----------------------------------------------------------------------------------- what it is

  /** The array's event count (the superblocks' `events`). */
  get events(): bigint {
    return this.common.events;
  }

  /** Sync sectors known in sync from the start (md's recovery_cp); MD_MAX_SECTOR: no resync needed. */
  get resyncOffset(): bigint {
    return this.recoveryCp;
  }

  /** Whether the superblocks are marked dirty (recordDirty, until recordClean). */
  get markedDirty(): boolean {
    return this.dirty;
  }

  /** Whether the superblocks say clean: in sync (resyncOffset MaxSector) and not marked dirty (recordDirty). */
  get clean(): boolean {
    return !this.dirty && this.recoveryCp === MD_MAX_SECTOR;
  }

  /** The member in sync in each slot, or null (missing, failed, or still being rebuilt: see states). */
  get slots(): (MemberIo | null)[] {
    return Array.from({ length: this.geometry.raidDisks }, (_, s) => {
      const r = this.holder(s);
      return r !== undefined && r.recoveryOffset === null ? r.io : null;
    });
  }

  /** What each slot holds. */
  get states(): MdSlotState[] {
    return Array.from({ length: this.geometry.raidDisks }, (_, s): MdSlotState => {
      const r = this.holder(s);
      if (r === undefined) return { state: 'missing', reason: this.missingReason(s) };
      if (r.recoveryOffset === null) return { state: 'in-sync', member: r.io };
      return { state: 'recovering', member: r.io, recoveryOffset: Number(r.recoveryOffset) };
    });
  }

  /** Spare members (no slot). */
  get spares(): MemberIo[] {
    return this.records.filter((r) => r.role === MD_DISK_ROLE_SPARE).map((r) => r.io);
  }

  /** Members failed since assembly and not yet removed. */
  get faulty(): MemberIo[] {
    return this.records.filter((r) => r.role === MD_DISK_ROLE_FAULTY).map((r) => r.io);
  }

  /** Slots without a member in sync (md's `degraded`). */
  get degraded(): number {
    let n = 0;
    for (let s = 0; s < this.geometry.raidDisks; s++) if (this.holder(s)?.recoveryOffset !== null) n++;
    return n;
  }

  /** The last failure of a change made on the array's own initiative (failing a member after an I/O error), or null. */
  get lastError(): Error | null {
    return this.failure;
  }

  /**
   * What a resync must cover, in sync sectors with their array bytes: nothing when in sync; with a bitmap
   * (not stale) its dirty chunks from resyncOffset on (md skips clean chunks); else everything from
   * resyncOffset. After resyncing a region, call bitmap.markInSync(region); when done, recordResync(MD_MAX_SECTOR).
   */
  resyncRegions(): MdSyncRegion[] {
    if (this.recoveryCp === MD_MAX_SECTOR) return [];
    const from = Number(this.recoveryCp);
    const syncSectors = Number(mdBitmapSyncSize(this.geometry, Number(this.common.size)));
    const arraySectors = this.arrayBytes / SECTOR;
    if (this.bitmap === null) return from < syncSectors ? [mdSyncRegion(this.geometry, arraySectors, from, syncSectors)] : [];
    return this.bitmap.dirtyRegions()
      .filter((r) => r.end > from)
      .map((r) => (r.start >= from ? r : mdSyncRegion(this.geometry, arraySectors, from, r.end)));
  }

  // ------------------------------------------------------------------------------------- changes

  /**
   * Fails the member in `slot` (md_error): its role becomes faulty in every other member's superblock,
   * events + 1, each written durably before this resolves. Nothing happens when the slot holds no member.
   * Refused (nothing written) when it would leave too few members in sync: the array stops instead.
   */
  markFaulty(slot: number): Promise<void> {
    return this.serial(async () => {
      this.checkSlot(slot);
      const r = this.holder(slot);
      if (r === undefined) return;
      this.fail(r, true);
      await this.commit();
    });
  }

  /** Removes the failed member that held `slot` from the array (mdadm --remove): it no longer appears in the superblocks. */
  markRemoved(slot: number): Promise<void> {
    return this.serial(async () => {
      this.checkSlot(slot);
      const r = this.records.find((x) => x.role === MD_DISK_ROLE_FAULTY && x.lastSlot === slot);
      if (r === undefined) throw new MdArrayError('state', `no failed member of slot ${slot} to remove: fail it first (markFaulty)`);
      this.records = this.records.filter((x) => x !== r);
      await this.commit();
    });
  }

  /**
   * The RAID layer's onMemberFailed: fails `slot` through markFaulty without waiting; a failure to do so
   * (the array would stop, or no member takes the update) is kept in lastError.
   */
  memberFailed(slot: number, reason: string): void {
    this.markFaulty(slot).catch((e: unknown) => {
      this.failure = e instanceof Error ? new MdArrayError('array-failed', `${e.message} (after: ${reason})`) : new Error(String(e));
    });
  }

  /**
   * Puts `member` in the empty `slot` to be rebuilt (mdadm --add, then md's recovery): a new superblock
   * (dev_number past the slots, fresh device UUID, recovery offset 0) and the bitmap are written to it,
   * then the new role to every member, events + 1. A spare of this array is taken as is. Its data is
   * not copied here: the recovery does that, reporting progress with recordRecovery().
   */
  addMember(slot: number, member: MemberIo): Promise<void> {
    return this.serial(async () => {
      this.checkSlot(slot);
      if (this.holder(slot) !== undefined) throw new MdArrayError('state', `slot ${slot} is held by ${this.holder(slot)!.io.name}: fail and remove it first`);
      if (this.records.some((r) => r.io.backend === member.backend && r.role !== MD_DISK_ROLE_SPARE)) {
        throw new MdArrayError('state', `${member.name} is already in the array`, member.name);
      }
      const need = Number(this.common.dataOffset) + Number(this.common.size);
      if (sectorsOf(member) < need) {
        throw new MdArrayError(
          'member-size',
          `${member.name} is too small: ${member.backend.info.size} bytes, the array needs ${need * SECTOR} (data offset and ${this.componentBytes} of data)`,
          member.name,
        );
      }
      const bs = member.backend.info.blockSize;
      if (bs !== 512 && bs !== 4096) throw new MdArrayError('member-size', `${member.name}: block size ${bs} is not 512 or 4096`, member.name);
      let r = this.records.find((x) => x.io.backend === member.backend);
      const added = r === undefined;
      if (r === undefined) {
        let devNumber = this.geometry.raidDisks;
        while (this.usedDevNumbers.has(devNumber)) devNumber++;
        if (devNumber >= MD_SB_1_MAX_DEV) throw new MdArrayError('state', `no device number left for ${member.name}`);
        const template = this.records[0]?.own ?? this.common;
        r = {
          io: member, role: slot, recoveryOffset: 0n, lastSlot: null,
          own: {
            ...template, devNumber, deviceUuid: new Uint8Array(randomBytes(16)), dataSize: BigInt(sectorsOf(member)) - this.common.dataOffset,
            devflags: 0, cntCorrectedRead: 0, recoveryOffset: 0n,
          },
        };
        this.usedDevNumbers.add(devNumber);
        this.records.push(r);
      }
      const spareRole = r.role;
      r.role = slot;
      r.recoveryOffset = 0n;
      // The member carries the bitmap from now on (bitmap writes include it); its copy starts as the array's.
      if (this.bitmap !== null) {
        try {
          await writeMemberDurably(member, this.bitmapBase, this.bitmap.snapshot());
        } catch (e) {
          if (added) this.records = this.records.filter((x) => x !== r);
          else { r.role = spareRole; r.recoveryOffset = null; }
          throw e;
        }
      }
      await this.commit();
    });
  }

  /**
   * Recovery of `slot` progressed to `sectors` (from the data offset), or finished ('done'): recorded in
   * the member's superblock (recovery_offset); when done the member is in sync, and once no slot is
   * missing the bitmap clears bits again.
   */
  recordRecovery(slot: number, sectors: number | 'done'): Promise<void> {
    return this.serial(async () => {
      this.checkSlot(slot);
      const r = this.holder(slot);
      if (r === undefined || r.recoveryOffset === null) throw new MdArrayError('state', `slot ${slot} is not being rebuilt`);
      if (sectors === 'done' || sectors >= Number(this.common.size)) r.recoveryOffset = null;
      else if (!Number.isSafeInteger(sectors) || sectors < 0) throw new MdArrayError('options', `recovery offset ${sectors} is not a sector count`);
      else r.recoveryOffset = BigInt(sectors);
      if (this.degraded === 0) this.bitmap?.setDegraded(false);
      await this.commit();
    });
  }

  /** Marks the array dirty (writes may be in flight: resync_offset 0) before the first write; nothing when already dirty. */
  recordDirty(): Promise<void> {
    return this.serial(async () => {
      if (this.dirty) return;
      this.dirty = true;
      await this.commit();
    });
  }

  /**
   * Marks the array clean (no write in flight; resync_offset back to how far resync got), after clearing
   * idle bitmap bits; `keepBitmap` (md's safe mode) leaves the bits to the bitmap's own lazy clearing.
   */
  recordClean(keepBitmap = false): Promise<void> {
    return this.serial(async () => {
      if (!this.dirty) return;
      if (!keepBitmap) await this.bitmap?.flushClean();
      this.dirty = false;
      await this.commit();
    });
  }

  /** Resync has reached sync sector `offset` (MD_MAX_SECTOR: finished): recorded as resync_offset once clean. */
  recordResync(offset: bigint): Promise<void> {
    return this.serial(async () => {
      if (offset < 0n || offset > MD_MAX_SECTOR) throw new MdArrayError('options', `resync offset ${offset} is out of range`);
      this.recoveryCp = offset;
      await this.commit();
    });
  }

  /** Stops the bitmap's timer; the members' back-ends are the caller's to close. */
  close(): void {
    this.bitmap?.close();
  }

  // ---------------------------------------------------------------------------------------- inside

  private holder(slot: number): MemberRecord | undefined {
    return this.records.find((r) => r.role === slot);
  }

  private checkSlot(slot: number): void {
    if (!Number.isInteger(slot) || slot < 0 || slot >= this.geometry.raidDisks) {
      throw new MdArrayError('options', `slot ${slot} is not in this ${this.geometry.raidDisks}-member array`);
    }
  }

  private missingReason(slot: number): string {
    const failed = this.records.find((r) => r.role === MD_DISK_ROLE_FAULTY && r.lastSlot === slot);
    if (failed !== undefined) return `${failed.io.name} failed`;
    const gone = this.leftOut.filter((l) => l.slot === slot).map((l) => l.reason);
    return gone.length > 0 ? gone.join('; ') : 'no member';
  }

  /** Runs metadata changes one at a time, in order. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn);
    this.queue = run.then(() => undefined, () => undefined);
    return run;
  }

  /** Fails `r` in memory; refuses (throws) when that would stop the array and `check` is set. */
  private fail(r: MemberRecord, check: boolean): void {
    if (isSlot(r.role)) {
      if (check && r.recoveryOffset === null) {
        const inSync = Array.from({ length: this.geometry.raidDisks }, (_, s) => s !== r.role && this.holder(s)?.recoveryOffset === null);
        if (!enough(this.geometry, inSync)) {
          throw new MdArrayError(
            'array-failed',
            `failing ${r.io.name} (slot ${r.role}) would leave ${levelName(this.geometry.level)} without enough members in sync: the array stops; its superblocks are left as they are`,
            r.io.name,
          );
        }
      }
      r.lastSlot = r.role;
    }
    r.role = MD_DISK_ROLE_FAULTY;
    r.recoveryOffset = null;
    this.bitmap?.setDegraded(this.degraded > 0);
  }

  /** `dev_roles[]` as md_update_sb writes it: every present member's role, absent device numbers spare. */
  private roles(): number[] {
    let maxDev = this.common.devRoles.length;
    for (const r of this.records) maxDev = Math.max(maxDev, r.own.devNumber + 1);
    const roles = new Array<number>(maxDev).fill(MD_DISK_ROLE_SPARE);
    for (const r of this.records) roles[r.own.devNumber] = r.role;
    return roles;
  }

  /**
   * The one door: events + 1, the bitmap superblock, then every present member's superblock (failed
   * ones excepted), each flushed. A member whose write fails is failed and the update repeated, so the
   * others record it (md_update_sb's rewrite).
   */
  private async commit(): Promise<void> {
    for (;;) {
      this.common.events += 1n;
      this.common.utime = now();
      this.common.resyncOffset = this.dirty ? 0n : this.recoveryCp;
      this.common.devRoles = this.roles();
      if (this.bitmap !== null) {
        this.bitmap.setArrayEvents(this.common.events);
        await this.bitmap.writeSuper();
      }
      const targets = this.records.filter((r) => r.role !== MD_DISK_ROLE_FAULTY && !this.failedIo.has(r));
      const results = await Promise.allSettled(targets.map((r) => this.writeSuperblock(r)));
      results.forEach((res, i) => {
        if (res.status === 'rejected') this.failedIo.set(targets[i]!, res.reason instanceof Error ? res.reason.message : String(res.reason));
      });
      if (this.failedIo.size === 0) return;
      this.takeFailures();
      if (!this.records.some((r) => r.role !== MD_DISK_ROLE_FAULTY)) {
        throw new MdArrayError('io', `no member took the superblock update (events ${this.common.events}): the array has failed`);
      }
    }
  }

  /** Fails the members whose I/O failed, telling onMemberFailed. */
  private takeFailures(): void {
    for (const [r, reason] of this.failedIo) {
      if (r.role === MD_DISK_ROLE_FAULTY) continue;
      const slot = isSlot(r.role) ? r.role : -1;
      this.fail(r, false);
      this.opts.onMemberFailed?.(slot, r.io, reason);
    }
    this.failedIo.clear();
  }

  private writeSuperblock(r: MemberRecord): Promise<void> {
    const recovering = r.recoveryOffset !== null;
    const fields: MdSuperblockFields = {
      ...this.common,
      featureMap: this.common.featureMap | (recovering ? MD_FEATURE_RECOVERY_OFFSET : 0),
      devNumber: r.own.devNumber, deviceUuid: r.own.deviceUuid, dataSize: r.own.dataSize, devflags: r.own.devflags,
      bblogShift: r.own.bblogShift, bblogSize: r.own.bblogSize, bblogOffset: r.own.bblogOffset, cntCorrectedRead: r.own.cntCorrectedRead,
      recoveryOffset: recovering ? r.recoveryOffset! : 0n,
    };
    const bytes = encodeMdSuperblock(fields, { blockSize: r.io.backend.info.blockSize });
    return writeMemberDurably(r.io, SB_BYTE_OFFSET, bytes).then(() => {
      r.own = fields;
    });
  }

  /** Writes bitmap blocks to every slot member not failed (md's next_active_rdev), each flushed. */
  private readonly bitmapStore: MdBitmapStore = {
    write: (runs, done) => {
      const targets = this.records.filter((r) => isSlot(r.role));
      if (targets.length === 0) {
        done(new MdArrayError('io', 'no member left to write the bitmap to'));
        return;
      }
      let left = targets.length;
      let ok = 0;
      for (const r of targets) {
        writeRuns(r.io, this.bitmapBase, runs, (err) => {
          if (err === null) ok++;
          else this.ioFailed(r, err.message);
          if (--left === 0) done(ok > 0 ? null : new MdArrayError('io', `no member took the bitmap write: ${err?.message ?? ''}`));
        });
      }
    },
  };

  /** A member's metadata I/O failed outside commit(): fail it through the door, after whatever runs now. */
  private ioFailed(r: MemberRecord, reason: string): void {
    this.failedIo.set(r, reason);
    this.serial(async () => {
      if (this.failedIo.size === 0) return;
      this.takeFailures();
      await this.commit();
    }).catch((e: unknown) => {
      this.failure = e instanceof Error ? e : new Error(String(e));
    });
  }
}
