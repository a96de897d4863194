// A node's on-disk replication metadata (DRBD's meta-data): superblock, out-of-sync bitmaps and activity log, crash-safe.
//
// The metadata area is a run of 4 KiB units. Internal metadata ends at the last 4 KiB boundary of the
// backing file; external metadata fills its own file (created exactly `metadataSize(...)` bytes long).
//
//   area offset                              units                  content
//   0                                        alSlots                activity-log ring (2 units per transaction)
//   alSlots * 4096                           peers * pagesPerPeer   out-of-sync bitmap pages, peer by peer
//   areaSize - 8192                          1                      superblock slot A
//   areaSize - 4096                          1                      superblock slot B
//
// Superblocks sit at the end so that open() finds them from the file size alone, before it knows the
// geometry. Every unit starts with a 64-byte header:
//
//   0 u32 magic 'TWMD' | 4 u16 kind | 6 u16 format version | 8 u64 seq | 16 u64 metadata id
//   24 u32 CRC32C over bytes [0, 24) and [28, 4096) | 28 u32 a | 32 u32 b | 36 u32 c | 40..63 zero
//
// (a, b, c) are: superblock (slot, 0, 0); bitmap page (peer id, page index, 0); AL unit (unit index in
// the transaction, extent count, transaction slot). The metadata id is random per create(): a unit left
// over from an earlier create-md over the same bytes fails the check like a torn one. All integers are
// little-endian.
import crypto from 'node:crypto';
import fs from 'node:fs';
import { clearRange, countSet, crc32c, setRange } from '../../wasm/index.js';
import { DISK_CODES, MAX_NODES, type DiskState, type Generations } from './frames.js';

// ------------------------------------------------------------------------------------------ constants

/** Every metadata structure is made of 4 KiB units, each written with one pwrite. */
export const MD_UNIT = 4096;

/** A bitmap page encoded by captureBitmaps(). */
interface CapturedPage {
  i: number;
  page: number;
  bytes: Uint8Array;
  changedAt: number;
  writtenAt: number;
}

/** Bitmap pages captured at one moment (Metadata.captureBitmaps). */
export interface CapturedBitmaps {
  readonly pages: readonly CapturedPage[];
}
/** Bytes of header at the start of every unit. */
const HDR = 64;
/** 'TWMD' read as a little-endian u32. */
const MAGIC = 0x444d5754;
/** On-disk format version written by this build (the only one it reads). */
export const MD_FORMAT_VERSION = 1;
const KIND_SUPER = 1;
const KIND_BITMAP = 2;
const KIND_AL = 3;

const H_MAGIC = 0;
const H_KIND = 4;
const H_VERSION = 6;
const H_SEQ = 8;
const H_MDID = 16;
const H_CRC = 24;
const H_A = 28;
const H_B = 32;
const H_C = 36;

/** Generation history entries kept in the superblock. */
const MAX_HISTORY = 4;

/** Superblock body (after the header). */
const SB_NODE = 64;
const SB_FLAGS = 68;
const SB_DATA_SIZE = 72;
const SB_GRANULARITY = 80;
const SB_AL_EXTENT_SIZE = 84;
const SB_AL_EXTENTS = 88;
const SB_AL_SLOTS = 92;
const SB_DISK = 96;
const SB_PEER_COUNT = 100;
const SB_PEERS = 104; // MAX_NODES bytes
const SB_PROMOTED_AT = 136;
const SB_AREA_OFFSET = 144;
const SB_AREA_SIZE = 152;
const SB_GEN_CURRENT = 160;
const SB_GEN_BITMAP = 168; // MAX_NODES u64
const SB_HISTORY_COUNT = SB_GEN_BITMAP + MAX_NODES * 8; // 424
const SB_GEN_HISTORY = SB_HISTORY_COUNT + 8; // 432, MAX_HISTORY u64
const SB_RESYNC_FROM = SB_GEN_HISTORY + 8 * MAX_HISTORY; // 464: u64, 0 when no resync is owed (older superblocks have 0 here)
const SB_RESYNC_TOTAL = SB_RESYNC_FROM + 8; // 472: u64 bits

/** Superblock flag: the node is Primary; still set on open means it crashed as Primary. */
const FLAG_PRIMARY = 1;
/** Superblock flag: the metadata was closed cleanly (close()). */
const FLAG_CLEAN = 2;

/** Bitmap bytes carried by one page (the rest of the unit is the header). */
export const BITMAP_PAGE_BYTES = MD_UNIT - HDR;
const BITMAP_PAGE_BITS = BITMAP_PAGE_BYTES * 8;
/**
 * Units per activity-log transaction. A transaction lists every active extent as a u32, and the default
 * cap of 1237 extents (4948 bytes) does not fit one unit, so each transaction spans two units, each with
 * its own header; it is valid only when both are, with the same seq.
 */
const AL_TX_UNITS = 2;
/** Most extents one transaction can list: the cap on `alExtents`. */
export const AL_MAX_EXTENTS = (AL_TX_UNITS * (MD_UNIT - HDR)) / 4; // 2016
const AL_PER_UNIT = (MD_UNIT - HDR) / 4; // 1008

export const DEFAULT_GRANULARITY = 4096;
export const DEFAULT_AL_EXTENT_SIZE = 4 << 20;
export const DEFAULT_AL_EXTENTS = 1237;
/** 4 KiB units in the activity-log ring (32 two-unit transactions). */
export const DEFAULT_AL_SLOTS = 64;

/** Units coalesced into one read or write of bitmap pages. */
const IO_UNITS = 64;
const MAX_U64 = (1n << 64n) - 1n;

// ---------------------------------------------------------------------------------------------- types

/** Refusals and corruption the operator must act on; the message says what to do. */
export class MetadataError extends Error {
  override readonly name = 'MetadataError';
}

/** Where a node's metadata lives. */
export interface MetadataLocation {
  backingFile: string;
  /** A separate metadata file, or null for internal metadata at the end of the backing file. */
  metaFile: string | null;
}

/** What create() needs beyond the location. */
export interface CreateOptions extends MetadataLocation {
  nodeId: number;
  /** Node ids of the other nodes of the resource: one bitmap each. */
  peerIds: number[];
  /** Bytes of data per bitmap bit: a power of two >= 4096 (default 4096). */
  granularity?: number;
  /** Bytes of data per activity-log extent: a power of two >= 4096 (default 4 MiB). */
  alExtentSize?: number;
  /** Most extents active at once (default 1237, at most AL_MAX_EXTENTS = 2016). */
  alExtents?: number;
  /** 4 KiB units in the activity-log ring: even, >= 4 (default 64, i.e. 32 transactions). */
  alSlots?: number;
  /** Overwrite valid metadata found at the location. */
  force?: boolean;
}

/** Disk states that are persisted; Diskless and Failed exist only at runtime. */
export type PersistedDiskState = Extract<DiskState, 'UpToDate' | 'Inconsistent' | 'Outdated'>;

/** What open() found: what the caller must repair before serving I/O. */
export interface OpenReport {
  /** The primary flag was still set: the node crashed (or was killed) while Primary. */
  crashedPrimary: boolean;
  /** Bitmap pages that failed their check and were read as all ones (they are rewritten at the next flush). */
  badPages: number;
  /** Extents active in the newest valid activity-log transaction, ascending. */
  alExtentsRecovered: number[];
  /** The previous user called close(). */
  cleanShutdown: boolean;
  /** No activity-log transaction was valid: applyAlToBitmaps() marks everything out of sync. */
  alLost: boolean;
  /**
   * A superblock slot that holds something but failed its check (a torn or corrupted write), while the
   * other slot was used; null when both are valid or the other was never written. The caller logs it.
   */
  badSuperblock: BadSuperblock | null;
}

/** See OpenReport.badSuperblock. */
export interface BadSuperblock {
  slot: 0 | 1;
  /** "checksum mismatch", "no superblock header", "holds slot N's superblock". */
  reason: string;
  /** The slot used instead, and its sequence number. */
  used: 0 | 1;
  usedSeq: number;
}

/** Where each structure sits (byte offsets in `file`); for tools and tests. */
export interface MetadataLayout {
  file: string;
  areaOffset: number;
  areaSize: number;
  superblocks: readonly [number, number];
  alOffset: number;
  alSlots: number;
  /** Start of each peer's pages, in `peerIds` order. */
  bitmapOffsets: readonly number[];
  pagesPerPeer: number;
}

/** Counters of metadata writes, for tests and statistics. */
export interface MetadataStats {
  alWrites: number;
  superblockWrites: number;
  bitmapPageWrites: number;
  syncs: number;
}

interface Superblock {
  seq: number;
  mdId: bigint;
  nodeId: number;
  flags: number;
  dataSize: number;
  granularity: number;
  alExtentSize: number;
  alExtents: number;
  alSlots: number;
  disk: PersistedDiskState;
  peerIds: number[];
  promotedAt: number;
  areaOffset: number;
  areaSize: number;
  gens: Generations;
  resyncFrom: bigint;
  resyncTotal: number;
}

interface Init {
  fd: number;
  file: string;
  sb: Superblock;
  sbSlot: 0 | 1;
  bitmaps: Uint8Array[];
  dirty: Uint8Array[];
  alSeq: number;
  alSet: number[];
  report: OpenReport;
}

// ---------------------------------------------------------------------------------------- pure helpers

/**
 * A fresh generation identifier: a random nonzero u64 with the lowest bit cleared. As in DRBD, the
 * lowest bit of a UUID is reserved for flags, and 0 (none, or "just created") and 1 can never be produced.
 */
export function newGeneration(): bigint {
  for (;;) {
    const g = crypto.randomBytes(8).readBigUInt64LE(0) & ~1n;
    if (g !== 0n) return g;
  }
}

function isPow2(n: number): boolean {
  return Number.isInteger(n) && n > 0 && Number.isInteger(Math.log2(n));
}

function floorUnit(n: number): number {
  return Math.floor(n / MD_UNIT) * MD_UNIT;
}

function checkGranularity(g: number, what: string): void {
  if (!isPow2(g) || g < 4096 || g > 2 ** 31) {
    throw new MetadataError(`${what} ${g} is invalid: use a power of two from 4096 to 2 GiB`);
  }
}

function checkAlSlots(n: number): void {
  if (!Number.isInteger(n) || n < 2 * AL_TX_UNITS || n % AL_TX_UNITS !== 0 || n > 1 << 20) {
    throw new MetadataError(`alSlots ${n} is invalid: use an even number of 4 KiB units, at least 4`);
  }
}

/** Bitmap pages per peer for `dataSize` bytes at `granularity` (at least one). */
function pagesPerPeer(dataSize: number, granularity: number): number {
  const bytes = Math.ceil(Math.ceil(dataSize / granularity) / 8);
  return Math.max(1, Math.ceil(bytes / BITMAP_PAGE_BYTES));
}

/**
 * Bytes of metadata needed for `dataSize` bytes of data with bitmaps toward `peerIds` peers (a count),
 * `granularity` bytes per bit and an activity-log ring of `alSlots` units: always a multiple of 4096.
 */
export function metadataSize(
  dataSize: number, peerIds: number, granularity = DEFAULT_GRANULARITY, alSlots = DEFAULT_AL_SLOTS,
): number {
  if (!Number.isSafeInteger(dataSize) || dataSize < 0) throw new MetadataError(`data size ${dataSize} is invalid`);
  if (!Number.isInteger(peerIds) || peerIds < 0 || peerIds > MAX_NODES - 1) {
    throw new MetadataError(`${peerIds} peers: a resource has at most ${MAX_NODES} nodes`);
  }
  checkGranularity(granularity, 'bitmap granularity');
  checkAlSlots(alSlots);
  return MD_UNIT * (alSlots + peerIds * pagesPerPeer(dataSize, granularity) + 2);
}

/** The largest 4096-aligned data size that leaves room for the metadata within `end` bytes (0 if none). */
function internalDataSize(end: number, peers: number, granularity: number, alSlots: number): number {
  let lo = 0;
  let hi = end / MD_UNIT;
  if (metadataSize(0, peers, granularity, alSlots) > end) return 0;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    const d = mid * MD_UNIT;
    if (d + metadataSize(d, peers, granularity, alSlots) <= end) lo = mid;
    else hi = mid - 1;
  }
  return lo * MD_UNIT;
}

function unitCrc(u: Uint8Array): number {
  return crc32c(u.subarray(H_CRC + 4, MD_UNIT), crc32c(u.subarray(0, H_CRC)));
}

/** Fills the header of unit `u` (viewed by `dv`, header bytes zeroed first) and its CRC; the body must be in place. */
function sealUnit(u: Uint8Array, dv: DataView, kind: number, seq: number, mdId: bigint, a: number, b: number, c: number): void {
  u.fill(0, 0, HDR);
  dv.setUint32(H_MAGIC, MAGIC, true);
  dv.setUint16(H_KIND, kind, true);
  dv.setUint16(H_VERSION, MD_FORMAT_VERSION, true);
  dv.setBigUint64(H_SEQ, BigInt(seq), true);
  dv.setBigUint64(H_MDID, mdId, true);
  dv.setUint32(H_A, a, true);
  dv.setUint32(H_B, b, true);
  dv.setUint32(H_C, c, true);
  dv.setUint32(H_CRC, unitCrc(u), true);
}

/** True when `u` is an intact unit of `kind` and this format (and of metadata `mdId`, when given). */
function unitValid(u: Uint8Array, dv: DataView, kind: number, mdId: bigint | null): boolean {
  if (dv.getUint32(H_MAGIC, true) !== MAGIC || dv.getUint16(H_KIND, true) !== kind) return false;
  if (dv.getUint16(H_VERSION, true) !== MD_FORMAT_VERSION) return false;
  if (mdId !== null && dv.getBigUint64(H_MDID, true) !== mdId) return false;
  return dv.getUint32(H_CRC, true) === unitCrc(u);
}

function view(u: Uint8Array): DataView {
  return new DataView(u.buffer, u.byteOffset, u.byteLength);
}

function getU64(dv: DataView, at: number): number {
  const v = dv.getBigUint64(at, true);
  return v > BigInt(Number.MAX_SAFE_INTEGER) ? Number.NaN : Number(v);
}

/** Writes all of `buf` at `pos`. */
function pwriteAll(fd: number, buf: Uint8Array, pos: number): void {
  let done = 0;
  while (done < buf.length) done += fs.writeSync(fd, buf, done, buf.length - done, pos + done);
}

/** Reads `buf.length` bytes at `pos`; bytes past the end of the file read as zero. */
function preadAll(fd: number, buf: Uint8Array, pos: number): void {
  let done = 0;
  while (done < buf.length) {
    const n = fs.readSync(fd, buf, done, buf.length - done, pos + done);
    if (n === 0) break;
    done += n;
  }
  buf.fill(0, done);
}

function sizeOf(path: string, what: string): number {
  try {
    return fs.statSync(path).size;
  } catch (e) {
    throw new MetadataError(`cannot stat ${what} ${path}: ${(e as Error).message}`);
  }
}

function encodeSuperblock(u: Uint8Array, dv: DataView, sb: Superblock, slot: 0 | 1): void {
  u.fill(0);
  dv.setUint32(SB_NODE, sb.nodeId, true);
  dv.setUint32(SB_FLAGS, sb.flags, true);
  dv.setBigUint64(SB_DATA_SIZE, BigInt(sb.dataSize), true);
  dv.setUint32(SB_GRANULARITY, sb.granularity, true);
  dv.setUint32(SB_AL_EXTENT_SIZE, sb.alExtentSize, true);
  dv.setUint32(SB_AL_EXTENTS, sb.alExtents, true);
  dv.setUint32(SB_AL_SLOTS, sb.alSlots, true);
  dv.setUint32(SB_DISK, DISK_CODES.indexOf(sb.disk), true);
  dv.setUint32(SB_PEER_COUNT, sb.peerIds.length, true);
  sb.peerIds.forEach((p, i) => { u[SB_PEERS + i] = p; });
  dv.setBigUint64(SB_PROMOTED_AT, BigInt(sb.promotedAt), true);
  dv.setBigUint64(SB_AREA_OFFSET, BigInt(sb.areaOffset), true);
  dv.setBigUint64(SB_AREA_SIZE, BigInt(sb.areaSize), true);
  dv.setBigUint64(SB_GEN_CURRENT, sb.gens.current, true);
  for (let i = 0; i < MAX_NODES; i++) dv.setBigUint64(SB_GEN_BITMAP + 8 * i, sb.gens.bitmap[i]!, true);
  dv.setUint32(SB_HISTORY_COUNT, sb.gens.history.length, true);
  sb.gens.history.forEach((h, i) => dv.setBigUint64(SB_GEN_HISTORY + 8 * i, h, true));
  dv.setBigUint64(SB_RESYNC_FROM, sb.resyncFrom, true);
  dv.setBigUint64(SB_RESYNC_TOTAL, BigInt(sb.resyncTotal), true);
  sealUnit(u, dv, KIND_SUPER, sb.seq, sb.mdId, slot, 0, 0);
}

/** The superblock in `u` if it is intact and sits in `slot`; 'version' for one of another format. */
function decodeSuperblock(u: Uint8Array, slot: 0 | 1): Superblock | 'version' | null {
  const dv = view(u);
  if (dv.getUint32(H_MAGIC, true) === MAGIC && dv.getUint16(H_KIND, true) === KIND_SUPER
    && dv.getUint16(H_VERSION, true) !== MD_FORMAT_VERSION) {
    return dv.getUint32(H_CRC, true) === unitCrc(u) ? 'version' : null;
  }
  if (!unitValid(u, dv, KIND_SUPER, null) || dv.getUint32(H_A, true) !== slot) return null;
  const peerCount = Math.min(dv.getUint32(SB_PEER_COUNT, true), MAX_NODES);
  const history: bigint[] = [];
  const nh = Math.min(dv.getUint32(SB_HISTORY_COUNT, true), MAX_HISTORY);
  for (let i = 0; i < nh; i++) history.push(dv.getBigUint64(SB_GEN_HISTORY + 8 * i, true));
  const bitmap: bigint[] = [];
  for (let i = 0; i < MAX_NODES; i++) bitmap.push(dv.getBigUint64(SB_GEN_BITMAP + 8 * i, true));
  return {
    seq: getU64(dv, H_SEQ),
    mdId: dv.getBigUint64(H_MDID, true),
    nodeId: dv.getUint32(SB_NODE, true),
    flags: dv.getUint32(SB_FLAGS, true),
    dataSize: getU64(dv, SB_DATA_SIZE),
    granularity: dv.getUint32(SB_GRANULARITY, true),
    alExtentSize: dv.getUint32(SB_AL_EXTENT_SIZE, true),
    alExtents: dv.getUint32(SB_AL_EXTENTS, true),
    alSlots: dv.getUint32(SB_AL_SLOTS, true),
    disk: (DISK_CODES[dv.getUint32(SB_DISK, true)] ?? 'Failed') as PersistedDiskState,
    peerIds: Array.from(u.subarray(SB_PEERS, SB_PEERS + peerCount)),
    promotedAt: getU64(dv, SB_PROMOTED_AT),
    areaOffset: getU64(dv, SB_AREA_OFFSET),
    areaSize: getU64(dv, SB_AREA_SIZE),
    gens: { current: dv.getBigUint64(SB_GEN_CURRENT, true), bitmap, history },
    resyncFrom: dv.getBigUint64(SB_RESYNC_FROM, true),
    resyncTotal: getU64(dv, SB_RESYNC_TOTAL),
  };
}

/** Why a superblock slot that decodeSuperblock refused is damaged, or null when it was never written (all zero). */
function superblockDamage(u: Uint8Array, slot: 0 | 1): string | null {
  if (u.every((b) => b === 0)) return null;
  const dv = view(u);
  if (dv.getUint32(H_MAGIC, true) !== MAGIC || dv.getUint16(H_KIND, true) !== KIND_SUPER) return 'no superblock header';
  if (dv.getUint32(H_CRC, true) !== unitCrc(u)) return 'checksum mismatch';
  if (dv.getUint32(H_A, true) !== slot) return `holds slot ${dv.getUint32(H_A, true)}'s superblock`;
  return 'unreadable';
}

/**
 * Reads both superblock slots at the end of `fd`'s file; the valid one with the highest seq wins.
 * `bad` is the other slot when it holds something that failed its check (see OpenReport.badSuperblock).
 */
function readSuperblock(fd: number, end: number): { sb: Superblock; slot: 0 | 1; bad: BadSuperblock | null } | 'version' | null {
  if (end < 2 * MD_UNIT) return null;
  const u = new Uint8Array(MD_UNIT);
  let best: { sb: Superblock; slot: 0 | 1 } | null = null;
  let otherVersion = false;
  const damage: (string | null)[] = [null, null];
  for (const slot of [0, 1] as const) {
    preadAll(fd, u, end - (2 - slot) * MD_UNIT);
    const sb = decodeSuperblock(u, slot);
    if (sb === 'version') otherVersion = true;
    else if (sb === null) damage[slot] = superblockDamage(u, slot);
    else if (!best || sb.seq > best.sb.seq) best = { sb, slot };
  }
  if (!best) return otherVersion ? 'version' : null;
  const other: 0 | 1 = best.slot === 0 ? 1 : 0;
  const reason = damage[other];
  const bad = reason ? { slot: other, reason, used: best.slot, usedSeq: best.sb.seq } : null;
  return { ...best, bad };
}

/** Why `sb` cannot describe metadata ending at `end` of a file, or null when it is consistent. */
function superblockProblem(sb: Superblock, end: number): string | null {
  if (!Number.isSafeInteger(sb.seq)) return 'sequence number out of range';
  if (sb.nodeId >= MAX_NODES) return `node id ${sb.nodeId} out of range`;
  if (!['UpToDate', 'Inconsistent', 'Outdated'].includes(sb.disk)) return 'unknown disk state';
  if (!isPow2(sb.granularity) || sb.granularity < 4096) return `bad granularity ${sb.granularity}`;
  if (!isPow2(sb.alExtentSize) || sb.alExtentSize < 4096) return `bad AL extent size ${sb.alExtentSize}`;
  if (sb.alExtents < 1 || sb.alExtents > AL_MAX_EXTENTS) return `bad AL extent count ${sb.alExtents}`;
  if (sb.alSlots < 2 * AL_TX_UNITS || sb.alSlots % AL_TX_UNITS !== 0) return `bad AL ring size ${sb.alSlots}`;
  if (sb.peerIds.length > MAX_NODES - 1 || new Set(sb.peerIds).size !== sb.peerIds.length
    || sb.peerIds.some((p) => p >= MAX_NODES || p === sb.nodeId)) return 'bad peer list';
  if (!Number.isSafeInteger(sb.dataSize) || sb.dataSize <= 0 || sb.dataSize % MD_UNIT !== 0) return `bad data size ${sb.dataSize}`;
  if (!Number.isSafeInteger(sb.promotedAt)) return 'bad promotion time';
  if (!Number.isSafeInteger(sb.resyncTotal)) return 'bad resync total';
  const size = metadataSize(sb.dataSize, sb.peerIds.length, sb.granularity, sb.alSlots);
  if (sb.areaSize !== size) return `metadata area of ${sb.areaSize} bytes, expected ${size}`;
  if (sb.areaOffset !== end - size) return `metadata area recorded at ${sb.areaOffset}, found ending at ${end}`;
  return null;
}

function checkPeers(nodeId: number, peerIds: readonly number[]): void {
  if (!Number.isInteger(nodeId) || nodeId < 0 || nodeId >= MAX_NODES) {
    throw new MetadataError(`node id ${nodeId} is invalid: use 0..${MAX_NODES - 1}`);
  }
  const seen = new Set<number>();
  for (const p of peerIds) {
    if (!Number.isInteger(p) || p < 0 || p >= MAX_NODES) throw new MetadataError(`peer id ${p} is invalid: use 0..${MAX_NODES - 1}`);
    if (p === nodeId) throw new MetadataError(`peer id ${p} is this node's own id`);
    if (seen.has(p)) throw new MetadataError(`peer id ${p} is listed twice`);
    seen.add(p);
  }
}

function emptyReport(): OpenReport {
  return { crashedPrimary: false, badPages: 0, alExtentsRecovered: [], cleanShutdown: true, alLost: false, badSuperblock: null };
}

// ------------------------------------------------------------------------------------------- Metadata

/**
 * One node's replication metadata, held in memory and written back on request. Not thread-safe, and two
 * objects must never have the same metadata open. All writes are synchronous and fdatasync'ed before the
 * method returns.
 */
export class Metadata {
  readonly nodeId: number;
  readonly dataSize: number;
  readonly granularity: number;
  readonly peerIds: readonly number[];
  /** Bits per bitmap: ceil(dataSize / granularity). */
  readonly bits: number;
  readonly alExtentSize: number;
  /** Most extents active at once. */
  readonly alExtents: number;
  readonly openReport: OpenReport;
  readonly layout: MetadataLayout;
  readonly stats: MetadataStats = { alWrites: 0, superblockWrites: 0, bitmapPageWrites: 0, syncs: 0 };

  /** Generation identifiers; persisted by writeSuperblock(). */
  gens: Generations;
  disk: PersistedDiskState;
  /**
   * Set while the node is Primary. open() loads it as persisted: still true after a crash as Primary
   * (openReport.crashedPrimary), and stays so on disk until the caller clears it and writes the
   * superblock (on demote, or once the crash is resolved with a peer). close() clears it.
   */
  primary: boolean;
  /** When the node last became Primary, ms since the epoch (0: never). */
  promotedAt: number;
  /**
   * While this node is a SyncTarget: the generation it resyncs to (its SyncSource's current one), and
   * the bits that were out of sync when the resync first started (for its progress). Persisted by
   * writeSuperblock() after the bitmaps, so a resync interrupted by a crash resumes from them. 0: none.
   */
  resyncFrom: bigint;
  resyncTotal: number;

  private readonly fd: number;
  private closed = false;
  private readonly mdId: bigint;
  private sbSlot: 0 | 1;
  private sbSeq: number;
  private onDiskClean: boolean;
  private readonly alSlots: number;
  private readonly maps: Uint8Array[];
  private readonly dirty: Uint8Array[];
  private readonly peerIndex = new Int8Array(MAX_NODES).fill(-1);
  private bmSeq = 1;
  // The active extents: a Map for lookup and an intrusive LRU list in typed arrays (head = most recent).
  private readonly alMap = new Map<number, number>();
  private readonly alExt: Uint32Array;
  private readonly alPrev: Int32Array;
  private readonly alNext: Int32Array;
  private readonly alFree: Int32Array;
  private alFreeTop: number;
  private alHead = -1;
  private alTail = -1;
  private alSeq: number;
  private readonly unit = new Uint8Array(MD_UNIT);
  private readonly unitView = view(this.unit);
  private readonly tx = new Uint8Array(AL_TX_UNITS * MD_UNIT);
  private readonly txViews: DataView[];
  private readonly io = new Uint8Array(IO_UNITS * MD_UNIT);

  private constructor(init: Init) {
    const sb = init.sb;
    this.fd = init.fd;
    this.mdId = sb.mdId;
    this.nodeId = sb.nodeId;
    this.dataSize = sb.dataSize;
    this.granularity = sb.granularity;
    this.peerIds = Object.freeze([...sb.peerIds]);
    this.peerIds.forEach((p, i) => { this.peerIndex[p] = i; });
    this.bits = Math.ceil(sb.dataSize / sb.granularity);
    this.alExtentSize = sb.alExtentSize;
    this.alExtents = sb.alExtents;
    this.alSlots = sb.alSlots;
    this.gens = sb.gens;
    this.disk = sb.disk;
    this.promotedAt = sb.promotedAt;
    this.resyncFrom = sb.resyncFrom;
    this.resyncTotal = sb.resyncTotal;
    this.primary = (sb.flags & FLAG_PRIMARY) !== 0;
    this.sbSlot = init.sbSlot;
    this.sbSeq = sb.seq;
    this.onDiskClean = (sb.flags & FLAG_CLEAN) !== 0;
    this.maps = init.bitmaps;
    this.dirty = init.dirty;
    for (const d of this.dirty) {
      this.changedAt.push(new Uint32Array(d.length));
      this.writtenAt.push(new Uint32Array(d.length));
    }
    this.openReport = init.report;
    const ppp = pagesPerPeer(sb.dataSize, sb.granularity);
    const bmBase = sb.areaOffset + sb.alSlots * MD_UNIT;
    this.layout = Object.freeze({
      file: init.file,
      areaOffset: sb.areaOffset,
      areaSize: sb.areaSize,
      superblocks: [sb.areaOffset + sb.areaSize - 2 * MD_UNIT, sb.areaOffset + sb.areaSize - MD_UNIT] as const,
      alOffset: sb.areaOffset,
      alSlots: sb.alSlots,
      bitmapOffsets: Object.freeze(sb.peerIds.map((_, i) => bmBase + i * ppp * MD_UNIT)),
      pagesPerPeer: ppp,
    });
    const cap = sb.alExtents;
    this.alExt = new Uint32Array(cap);
    this.alPrev = new Int32Array(cap);
    this.alNext = new Int32Array(cap);
    this.alFree = new Int32Array(cap);
    for (let i = 0; i < cap; i++) this.alFree[i] = cap - 1 - i;
    this.alFreeTop = cap;
    this.alSeq = init.alSeq;
    this.txViews = Array.from({ length: AL_TX_UNITS }, (_, k) => view(this.tx.subarray(k * MD_UNIT, (k + 1) * MD_UNIT)));
    for (const e of init.alSet) this.alInsert(e); // oldest first: the last one ends up most recent
  }

  // ------------------------------------------------------------------------------------------ create

  /**
   * Writes fresh metadata: generations all 0n (DRBD's "just created"), disk Inconsistent, bitmaps all
   * clear, flags clean, activity log empty. External: the metadata file is created or overwritten.
   * Internal: the backing file must exist and hold at least 4 KiB of data plus the metadata. Refuses
   * when valid metadata already exists there, unless `opts.force`.
   */
  static create(opts: CreateOptions): Metadata {
    const granularity = opts.granularity ?? DEFAULT_GRANULARITY;
    const alExtentSize = opts.alExtentSize ?? DEFAULT_AL_EXTENT_SIZE;
    const alExtents = opts.alExtents ?? DEFAULT_AL_EXTENTS;
    const alSlots = opts.alSlots ?? DEFAULT_AL_SLOTS;
    checkPeers(opts.nodeId, opts.peerIds);
    checkGranularity(granularity, 'bitmap granularity');
    checkGranularity(alExtentSize, 'activity-log extent size');
    checkAlSlots(alSlots);
    if (!Number.isInteger(alExtents) || alExtents < 1 || alExtents > AL_MAX_EXTENTS) {
      throw new MetadataError(`alExtents ${alExtents} is invalid: use 1..${AL_MAX_EXTENTS} (one transaction must list them all)`);
    }
    const peers = opts.peerIds.length;
    const backingSize = sizeOf(opts.backingFile, 'backing file');
    const file = opts.metaFile ?? opts.backingFile;
    let dataSize: number;
    let areaSize: number;
    let areaOffset: number;
    if (opts.metaFile === null) {
      const end = floorUnit(backingSize);
      dataSize = internalDataSize(end, peers, granularity, alSlots);
      if (dataSize === 0) {
        throw new MetadataError(`backing file ${opts.backingFile} (${backingSize} bytes) is too small for internal metadata:`
          + ` it needs at least ${MD_UNIT + metadataSize(MD_UNIT, peers, granularity, alSlots)} bytes`);
      }
      areaSize = metadataSize(dataSize, peers, granularity, alSlots);
      areaOffset = end - areaSize;
    } else {
      dataSize = floorUnit(backingSize);
      if (dataSize === 0) throw new MetadataError(`backing file ${opts.backingFile} holds less than 4 KiB`);
      areaSize = metadataSize(dataSize, peers, granularity, alSlots);
      areaOffset = 0;
    }
    if (Math.ceil(dataSize / alExtentSize) > 0xffffffff) {
      throw new MetadataError(`activity-log extent size ${alExtentSize} is too small for ${dataSize} bytes`);
    }
    if (!opts.force) Metadata.refuseExisting(file);

    let fd: number;
    try {
      if (opts.metaFile === null) {
        fd = fs.openSync(file, 'r+');
      } else {
        if (fs.existsSync(file) && !fs.statSync(file).isFile()) {
          throw new MetadataError(`external metadata ${file} must be a regular file`);
        }
        fd = fs.openSync(file, 'w+');
        fs.ftruncateSync(fd, areaSize);
      }
    } catch (e) {
      if (e instanceof MetadataError) throw e;
      throw new MetadataError(`cannot open ${file} for writing: ${(e as Error).message}`);
    }
    try {
      const sb: Superblock = {
        seq: 1,
        mdId: crypto.randomBytes(8).readBigUInt64LE(0),
        nodeId: opts.nodeId,
        flags: FLAG_CLEAN,
        dataSize,
        granularity,
        alExtentSize,
        alExtents,
        alSlots,
        disk: 'Inconsistent',
        peerIds: [...opts.peerIds],
        promotedAt: 0,
        areaOffset,
        areaSize,
        gens: { current: 0n, bitmap: new Array<bigint>(MAX_NODES).fill(0n), history: [] },
        resyncFrom: 0n,
        resyncTotal: 0,
      };
      Metadata.writeFresh(fd, sb);
      const bytes = Math.ceil(Math.ceil(dataSize / granularity) / 8);
      const ppp = pagesPerPeer(dataSize, granularity);
      return new Metadata({
        fd, file, sb, sbSlot: 0,
        bitmaps: sb.peerIds.map(() => new Uint8Array(bytes)),
        dirty: sb.peerIds.map(() => new Uint8Array(ppp)),
        alSeq: 1, alSet: [], report: emptyReport(),
      });
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
  }

  /** Throws when `file` already holds valid metadata (of any geometry). */
  private static refuseExisting(file: string): void {
    let fd: number;
    try {
      fd = fs.openSync(file, 'r');
    } catch {
      return; // no file, no metadata
    }
    try {
      const found = readSuperblock(fd, floorUnit(fs.fstatSync(fd).size));
      if (found !== null) {
        throw new MetadataError(`${file} already holds twindisk metadata: pass force to overwrite it`
          + ' (this discards the bitmaps and generations)');
      }
    } finally {
      fs.closeSync(fd);
    }
  }

  /**
   * Lays down fresh metadata in an order that survives a crash: both superblock slots are invalidated
   * first, then the activity log and bitmaps are written, then superblock A; an interrupted create
   * leaves no valid metadata rather than a mix.
   */
  private static writeFresh(fd: number, sb: Superblock): void {
    const zero = new Uint8Array(2 * MD_UNIT);
    pwriteAll(fd, zero, sb.areaOffset + sb.areaSize - 2 * MD_UNIT);
    fs.fdatasyncSync(fd);
    const chunk = new Uint8Array(IO_UNITS * MD_UNIT);
    // Activity log: transaction 0 (seq 1) is empty and valid, the other slots are zero (invalid).
    for (let first = 0; first < sb.alSlots; first += IO_UNITS) {
      const n = Math.min(IO_UNITS, sb.alSlots - first);
      chunk.fill(0);
      for (let k = 0; k < n; k++) {
        const unitNo = first + k;
        if (unitNo >= AL_TX_UNITS) break;
        const u = chunk.subarray(k * MD_UNIT, (k + 1) * MD_UNIT);
        sealUnit(u, view(u), KIND_AL, 1, sb.mdId, unitNo, 0, 0);
      }
      pwriteAll(fd, chunk.subarray(0, n * MD_UNIT), sb.areaOffset + first * MD_UNIT);
    }
    // Bitmaps: every page written, all clear.
    const ppp = pagesPerPeer(sb.dataSize, sb.granularity);
    const bmBase = sb.areaOffset + sb.alSlots * MD_UNIT;
    sb.peerIds.forEach((peer, i) => {
      for (let first = 0; first < ppp; first += IO_UNITS) {
        const n = Math.min(IO_UNITS, ppp - first);
        chunk.fill(0);
        for (let k = 0; k < n; k++) {
          const u = chunk.subarray(k * MD_UNIT, (k + 1) * MD_UNIT);
          sealUnit(u, view(u), KIND_BITMAP, 1, sb.mdId, peer, first + k, 0);
        }
        pwriteAll(fd, chunk.subarray(0, n * MD_UNIT), bmBase + (i * ppp + first) * MD_UNIT);
      }
    });
    fs.fdatasyncSync(fd);
    const u = new Uint8Array(MD_UNIT);
    encodeSuperblock(u, view(u), sb, 0);
    pwriteAll(fd, u, sb.areaOffset + sb.areaSize - 2 * MD_UNIT);
    fs.fdatasyncSync(fd);
  }

  // -------------------------------------------------------------------------------------------- open

  /**
   * Opens and validates existing metadata: the newest valid superblock, every bitmap page (a damaged
   * page reads as all ones) and the newest valid activity-log transaction, whose extents stay active.
   * Writes nothing. Throws MetadataError saying what to do when there is no usable metadata.
   */
  static open(loc: MetadataLocation): Metadata {
    const file = loc.metaFile ?? loc.backingFile;
    let fd: number;
    try {
      fd = fs.openSync(file, 'r+');
    } catch (e) {
      throw new MetadataError(`cannot open ${loc.metaFile === null ? 'backing file' : 'metadata file'} ${file}: ${(e as Error).message}`);
    }
    try {
      return Metadata.load(fd, file, loc);
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
  }

  private static load(fd: number, file: string, loc: MetadataLocation): Metadata {
    const end = floorUnit(fs.fstatSync(fd).size);
    const found = readSuperblock(fd, end);
    const hint = loc.metaFile === null
      ? ' (internal metadata is found at the end of the backing file; was it resized?)' : '';
    if (found === 'version') {
      throw new MetadataError(`metadata on ${file} has a format other than version ${MD_FORMAT_VERSION}:`
        + ' use the twindisk release that wrote it, or run `twindisk create-md ...` to start over');
    }
    if (found === null) {
      throw new MetadataError(`no valid twindisk metadata on ${file}${hint}: run \`twindisk create-md ...\``);
    }
    const { sb, slot, bad } = found;
    const problem = superblockProblem(sb, end);
    if (problem !== null) {
      throw new MetadataError(`twindisk metadata on ${file} is inconsistent (${problem})${hint}: run \`twindisk create-md ...\``);
    }
    if (loc.metaFile === null) {
      if (sb.dataSize > sb.areaOffset) {
        throw new MetadataError(`twindisk metadata on ${file} overlaps its data: run \`twindisk create-md ...\``);
      }
    } else {
      const backing = floorUnit(sizeOf(loc.backingFile, 'backing file'));
      if (backing < sb.dataSize) {
        throw new MetadataError(`backing file ${loc.backingFile} holds ${backing} bytes but the metadata on ${file}`
          + ` describes ${sb.dataSize}: restore the backing file's size or run \`twindisk create-md ...\``);
      }
    }
    const report: OpenReport = {
      crashedPrimary: (sb.flags & FLAG_PRIMARY) !== 0,
      badPages: 0,
      alExtentsRecovered: [],
      cleanShutdown: (sb.flags & FLAG_CLEAN) !== 0,
      alLost: false,
      badSuperblock: bad,
    };

    // Activity log: the newest transaction whose units are all intact.
    const nExtents = Math.ceil(sb.dataSize / sb.alExtentSize);
    const ring = new Uint8Array(sb.alSlots * MD_UNIT);
    preadAll(fd, ring, sb.areaOffset);
    let alSeq = 0;
    let alSet: number[] = [];
    for (let t = 0; t < sb.alSlots / AL_TX_UNITS; t++) {
      const set = Metadata.decodeTransaction(ring.subarray(t * AL_TX_UNITS * MD_UNIT, (t + 1) * AL_TX_UNITS * MD_UNIT), t, sb, nExtents);
      if (set && set.seq > alSeq) {
        alSeq = set.seq;
        alSet = set.extents;
      }
    }
    report.alLost = alSeq === 0;
    report.alExtentsRecovered = [...alSet].sort((a, b) => a - b);

    // Bitmaps: damaged pages read as all ones and are rewritten at the next flush.
    const bits = Math.ceil(sb.dataSize / sb.granularity);
    const bytes = Math.ceil(bits / 8);
    const ppp = pagesPerPeer(sb.dataSize, sb.granularity);
    const bmBase = sb.areaOffset + sb.alSlots * MD_UNIT;
    const chunk = new Uint8Array(IO_UNITS * MD_UNIT);
    const bitmaps: Uint8Array[] = [];
    const dirty: Uint8Array[] = [];
    sb.peerIds.forEach((peer, i) => {
      const map = new Uint8Array(bytes);
      const dirt = new Uint8Array(ppp);
      for (let first = 0; first < ppp; first += IO_UNITS) {
        const n = Math.min(IO_UNITS, ppp - first);
        preadAll(fd, chunk.subarray(0, n * MD_UNIT), bmBase + (i * ppp + first) * MD_UNIT);
        for (let k = 0; k < n; k++) {
          const page = first + k;
          const u = chunk.subarray(k * MD_UNIT, (k + 1) * MD_UNIT);
          const dv = view(u);
          const from = page * BITMAP_PAGE_BYTES;
          const to = Math.min(from + BITMAP_PAGE_BYTES, bytes);
          if (unitValid(u, dv, KIND_BITMAP, sb.mdId) && dv.getUint32(H_A, true) === peer && dv.getUint32(H_B, true) === page) {
            map.set(u.subarray(HDR, HDR + (to - from)), from);
          } else {
            setRange(map, Math.min(from * 8, bits), Math.min(to * 8, bits));
            dirt[page] = 1;
            report.badPages++;
          }
        }
      }
      if (bits % 8 !== 0) map[bytes - 1]! &= (1 << (bits % 8)) - 1; // bits past the end stay clear
      bitmaps.push(map);
      dirty.push(dirt);
    });

    return new Metadata({ fd, file, sb, sbSlot: slot, bitmaps, dirty, alSeq, alSet, report });
  }

  /** The extents (oldest first) and seq of transaction slot `t` in `tx`, or null if it is not intact. */
  private static decodeTransaction(tx: Uint8Array, t: number, sb: Superblock, nExtents: number): { seq: number; extents: number[] } | null {
    let seq = -1;
    let count = -1;
    for (let k = 0; k < AL_TX_UNITS; k++) {
      const u = tx.subarray(k * MD_UNIT, (k + 1) * MD_UNIT);
      const dv = view(u);
      if (!unitValid(u, dv, KIND_AL, sb.mdId) || dv.getUint32(H_A, true) !== k || dv.getUint32(H_C, true) !== t) return null;
      const s = getU64(dv, H_SEQ);
      const c = dv.getUint32(H_B, true);
      if (k === 0) { seq = s; count = c; } else if (s !== seq || c !== count) return null;
    }
    if (!Number.isSafeInteger(seq) || count > sb.alExtents) return null;
    const extents: number[] = [];
    for (let i = 0; i < count; i++) {
      const k = Math.floor(i / AL_PER_UNIT);
      const e = view(tx).getUint32(k * MD_UNIT + HDR + 4 * (i % AL_PER_UNIT), true);
      if (e >= nExtents) return null;
      extents.push(e);
    }
    return { seq, extents };
  }

  // -------------------------------------------------------------------------------------- superblock

  /** Persists gens, disk, primary, promotedAt and resync progress: to the slot not holding the newest copy, seq + 1, fdatasync'ed. */
  writeSuperblock(): void {
    this.checkOpen();
    this.writeSb(false);
  }

  /** The sequence number of the newest superblock on disk. */
  get superblockSeq(): number {
    return this.sbSeq;
  }

  private writeSb(clean: boolean): void {
    const g = this.gens;
    const inRange = (v: bigint): boolean => typeof v === 'bigint' && v >= 0n && v <= MAX_U64;
    if (!inRange(g.current) || g.bitmap.length !== MAX_NODES || !g.bitmap.every(inRange)
      || g.history.length > MAX_HISTORY || !g.history.every(inRange)) {
      throw new MetadataError(`generations are malformed: ${MAX_NODES} bitmap entries and at most ${MAX_HISTORY} history entries, all u64`);
    }
    if (!['UpToDate', 'Inconsistent', 'Outdated'].includes(this.disk)) {
      throw new MetadataError(`disk state ${String(this.disk)} is not persisted: use UpToDate, Inconsistent or Outdated`);
    }
    if (!Number.isSafeInteger(this.promotedAt) || this.promotedAt < 0) {
      throw new MetadataError(`promotedAt ${this.promotedAt} is not a time in ms`);
    }
    if (!inRange(this.resyncFrom) || !Number.isSafeInteger(this.resyncTotal) || this.resyncTotal < 0) {
      throw new MetadataError('resync progress is malformed: a u64 generation and a bit count');
    }
    const slot: 0 | 1 = this.sbSlot === 0 ? 1 : 0;
    const seq = this.sbSeq + 1;
    encodeSuperblock(this.unit, this.unitView, {
      seq, mdId: this.mdId, nodeId: this.nodeId,
      flags: (this.primary ? FLAG_PRIMARY : 0) | (clean ? FLAG_CLEAN : 0),
      dataSize: this.dataSize, granularity: this.granularity, alExtentSize: this.alExtentSize,
      alExtents: this.alExtents, alSlots: this.alSlots, disk: this.disk, peerIds: [...this.peerIds],
      promotedAt: this.promotedAt, areaOffset: this.layout.areaOffset, areaSize: this.layout.areaSize, gens: g,
      resyncFrom: this.resyncFrom, resyncTotal: this.resyncTotal,
    }, slot);
    pwriteAll(this.fd, this.unit, this.layout.superblocks[slot]);
    this.sync();
    this.stats.superblockWrites++;
    this.sbSlot = slot;
    this.sbSeq = seq;
    this.onDiskClean = clean;
  }

  /** Before the first write after a clean open: the superblock stops saying "clean". */
  private markInUse(): void {
    if (this.onDiskClean) this.writeSb(false);
  }

  // ----------------------------------------------------------------------------------------- bitmaps

  /** The in-memory bitmap toward `peerId` (live; change it through the methods so pages get flushed). */
  bitmap(peerId: number): Uint8Array {
    return this.maps[this.indexOf(peerId)]!;
  }

  /** Marks every block touching [offset, offset + length) out of sync toward `peerId`. */
  setOutOfSync(peerId: number, offset: number, length: number): void {
    const i = this.indexOf(peerId);
    this.checkRange(offset, length);
    if (length === 0) return;
    const from = Math.floor(offset / this.granularity);
    const end = Math.ceil((offset + length) / this.granularity);
    setRange(this.maps[i]!, from, end);
    this.markDirty(i, from, end);
  }

  /**
   * Marks in sync only the blocks wholly inside [offset, offset + length); the last block, shorter when
   * the data size is not a multiple of the granularity, counts as whole when the range reaches the end.
   */
  clearInSync(peerId: number, offset: number, length: number): void {
    const i = this.indexOf(peerId);
    this.checkRange(offset, length);
    const from = Math.ceil(offset / this.granularity);
    const stop = offset + length;
    const end = stop === this.dataSize ? this.bits : Math.floor(stop / this.granularity);
    if (from >= end) return;
    clearRange(this.maps[i]!, from, end);
    this.markDirty(i, from, end);
  }

  /** Blocks out of sync toward `peerId`. */
  outOfSyncBits(peerId: number): number {
    return countSet(this.maps[this.indexOf(peerId)]!, 0, this.bits);
  }

  /** Marks the whole volume out of sync toward `peerId` (full resync). */
  setAll(peerId: number): void {
    const i = this.indexOf(peerId);
    setRange(this.maps[i]!, 0, this.bits);
    this.markDirty(i, 0, this.bits);
  }

  /** Marks the whole volume in sync toward `peerId`. */
  clearAll(peerId: number): void {
    const i = this.indexOf(peerId);
    this.maps[i]!.fill(0);
    this.markDirty(i, 0, this.bits);
  }

  /**
   * Records that bits [fromBit, endBit) of `bitmap(peerId)` were changed in place (e.g. a peer's bitmap
   * OR-ed in), so the next flushBitmaps() writes their pages.
   */
  markBitmapDirty(peerId: number, fromBit = 0, endBit = this.bits): void {
    const i = this.indexOf(peerId);
    if (!(Number.isInteger(fromBit) && Number.isInteger(endBit) && fromBit >= 0 && endBit <= this.bits)) {
      throw new RangeError(`bits [${fromBit}, ${endBit}) are outside the ${this.bits}-bit bitmap`);
    }
    if (fromBit < endBit) this.markDirty(i, fromBit, endBit);
  }

  /**
   * Writes every page changed since the last flush (each with seq and CRC), then fdatasync unless
   * `sync` is false (the periodic write-back: bits a crash loses there are covered by the activity
   * log, whose evictions flush with sync, or only make a later resync larger).
   */
  flushBitmaps(sync = true): void {
    this.checkOpen();
    if (!this.dirty.some((d) => d.includes(1))) {
      // Pages written by an earlier flush without sync still need one before anything relies on them.
      if (sync && this.unsyncedPages) {
        this.sync();
        this.unsyncedPages = false;
      }
      return;
    }
    this.markInUse();
    this.bmSeq++;
    const ppp = this.layout.pagesPerPeer;
    for (let i = 0; i < this.maps.length; i++) {
      const dirt = this.dirty[i]!;
      let page = dirt.indexOf(1);
      while (page !== -1 && page < ppp) {
        // One write per run of consecutive dirty pages (up to IO_UNITS).
        let n = 0;
        while (page + n < ppp && n < IO_UNITS && dirt[page + n] === 1) {
          this.encodePage(i, page + n, this.io.subarray(n * MD_UNIT, (n + 1) * MD_UNIT));
          n++;
        }
        pwriteAll(this.fd, this.io.subarray(0, n * MD_UNIT), this.layout.bitmapOffsets[i]! + page * MD_UNIT);
        dirt.fill(0, page, page + n);
        this.writtenAt[i]!.fill(this.nextEpoch(), page, page + n);
        this.stats.bitmapPageWrites += n;
        page = dirt.indexOf(1, page + n);
      }
    }
    if (sync) this.sync();
    this.unsyncedPages = !sync;
  }

  /** Bitmap pages were written by a flush without fdatasync and are not known to be durable yet. */
  private unsyncedPages = false;
  /** A counter that orders page changes and page writes (wraps; only compared for equality). */
  private epoch = 0;
  /** Per peer and page: the epoch of its last change in memory, and of its last write to disk. */
  private readonly changedAt: Uint32Array[] = [];
  private readonly writtenAt: Uint32Array[] = [];

  private nextEpoch(): number {
    this.epoch = (this.epoch + 1) >>> 0;
    return this.epoch;
  }

  /**
   * Encodes the dirty bitmap pages as they are now, to be written by `writeCaptured` once the data
   * they describe is durable: how a SyncTarget persists resync progress without an fdatasync on the
   * event loop (it captures, syncs its data asynchronously, then writes the capture). The pages stay
   * dirty until then, so every flushBitmaps() in between (activity-log evictions) still writes them.
   */
  captureBitmaps(): CapturedBitmaps {
    this.checkOpen();
    this.bmSeq++;
    const pages: CapturedPage[] = [];
    for (let i = 0; i < this.maps.length; i++) {
      const dirt = this.dirty[i]!;
      for (let page = dirt.indexOf(1); page !== -1; page = dirt.indexOf(1, page + 1)) {
        const bytes = new Uint8Array(MD_UNIT);
        this.encodePage(i, page, bytes);
        pages.push({ i, page, bytes, changedAt: this.changedAt[i]![page]!, writtenAt: this.writtenAt[i]![page]! });
      }
    }
    return { pages };
  }

  /**
   * Writes captured pages (without fdatasync): each unless a newer copy was written since the
   * capture; a page unchanged since its capture is clean afterwards.
   */
  writeCaptured(c: CapturedBitmaps): void {
    this.checkOpen();
    let first = true;
    for (const p of c.pages) {
      if (this.writtenAt[p.i]![p.page] !== p.writtenAt) continue;
      if (first) this.markInUse();
      first = false;
      pwriteAll(this.fd, p.bytes, this.layout.bitmapOffsets[p.i]! + p.page * MD_UNIT);
      this.writtenAt[p.i]![p.page] = this.nextEpoch();
      this.stats.bitmapPageWrites++;
      this.unsyncedPages = true;
      if (this.changedAt[p.i]![p.page] === p.changedAt) this.dirty[p.i]![p.page] = 0;
    }
  }

  private encodePage(i: number, page: number, u: Uint8Array): void {
    const map = this.maps[i]!;
    const from = page * BITMAP_PAGE_BYTES;
    const to = Math.min(from + BITMAP_PAGE_BYTES, map.length);
    u.fill(0);
    if (to > from) u.set(map.subarray(from, to), HDR);
    sealUnit(u, view(u), KIND_BITMAP, this.bmSeq, this.mdId, this.peerIds[i]!, page, 0);
  }

  private markDirty(i: number, fromBit: number, endBit: number): void {
    const from = Math.floor(fromBit / BITMAP_PAGE_BITS);
    const end = Math.floor((endBit - 1) / BITMAP_PAGE_BITS) + 1;
    this.dirty[i]!.fill(1, from, end);
    this.changedAt[i]!.fill(this.nextEpoch(), from, end);
  }

  private indexOf(peerId: number): number {
    const i = Number.isInteger(peerId) && peerId >= 0 && peerId < MAX_NODES ? this.peerIndex[peerId]! : -1;
    if (i < 0) throw new MetadataError(`node ${peerId} has no bitmap slot on node ${this.nodeId} (peers: ${this.peerIds.join(', ') || 'none'})`);
    return i;
  }

  private checkRange(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.dataSize) {
      throw new RangeError(`range [${offset}, +${length}) is outside the ${this.dataSize}-byte volume`);
    }
  }

  // ---------------------------------------------------------------------------------------- activity log

  /**
   * Makes sure the extents covering [offset, offset + length) are active; when any was not, writes one
   * activity-log transaction listing every active extent (the least recently used ones beyond alExtents
   * are evicted; callers flush bitmaps themselves) and fdatasyncs it. Returns true if a transaction was
   * written. When all extents are already active it only refreshes their LRU position: no allocation, no I/O.
   */
  alActivate(offset: number, length: number): boolean {
    if (length === 0) return false;
    if (!(offset >= 0 && length > 0 && offset + length <= this.dataSize)) this.checkRange(offset, length);
    const first = Math.floor(offset / this.alExtentSize);
    const last = Math.floor((offset + length - 1) / this.alExtentSize);
    let missing = 0;
    for (let e = first; e <= last; e++) {
      const s = this.alMap.get(e);
      if (s === undefined) missing++;
      else this.alTouch(s);
    }
    if (missing === 0) return false;
    this.checkOpen();
    if (last - first + 1 > this.alExtents) {
      throw new MetadataError(`a request over ${last - first + 1} activity-log extents exceeds alExtents (${this.alExtents}): split it`);
    }
    let flushed = false;
    for (let e = first; e <= last; e++) {
      if (this.alMap.has(e)) continue;
      if (this.alFreeTop === 0) {
        // An evicted extent is no longer covered by the log after a crash: its out-of-sync bits
        // must be on disk before the transaction that drops it.
        if (!flushed) this.flushBitmaps();
        flushed = true;
        this.alEvict();
      }
      this.alInsert(e);
    }
    this.markInUse();
    this.writeTransaction();
    return true;
  }

  /** The active extents, ascending. */
  activeExtents(): number[] {
    return [...this.alMap.keys()].sort((a, b) => a - b);
  }

  /**
   * Applies a crash: marks every extent of openReport.alExtentsRecovered out of sync toward every peer
   * (everything, when openReport.alLost). Call it after a crashed primary, then flushBitmaps().
   */
  applyAlToBitmaps(): void {
    for (const peer of this.peerIds) {
      if (this.openReport.alLost) {
        this.setAll(peer);
        continue;
      }
      for (const e of this.openReport.alExtentsRecovered) {
        const off = e * this.alExtentSize;
        this.setOutOfSync(peer, off, Math.min(this.alExtentSize, this.dataSize - off));
      }
    }
  }

  /** Writes the next transaction (seq + 1, next slot of the ring) with the active set, oldest first. */
  private writeTransaction(): void {
    this.tx.fill(0);
    let n = 0;
    for (let s = this.alTail; s !== -1; s = this.alPrev[s]!) {
      const k = (n / AL_PER_UNIT) | 0;
      this.txViews[k]!.setUint32(HDR + 4 * (n - k * AL_PER_UNIT), this.alExt[s]!, true);
      n++;
    }
    const seq = this.alSeq + 1;
    const t = (seq - 1) % (this.alSlots / AL_TX_UNITS);
    for (let k = 0; k < AL_TX_UNITS; k++) {
      sealUnit(this.tx.subarray(k * MD_UNIT, (k + 1) * MD_UNIT), this.txViews[k]!, KIND_AL, seq, this.mdId, k, n, t);
    }
    pwriteAll(this.fd, this.tx, this.layout.alOffset + t * AL_TX_UNITS * MD_UNIT);
    this.sync();
    this.alSeq = seq;
    this.stats.alWrites++;
  }

  private alInsert(e: number): void {
    const s = this.alFree[--this.alFreeTop]!;
    this.alExt[s] = e;
    this.alMap.set(e, s);
    this.alLinkHead(s);
  }

  private alEvict(): void {
    const s = this.alTail;
    this.alUnlink(s);
    this.alMap.delete(this.alExt[s]!);
    this.alFree[this.alFreeTop++] = s;
  }

  private alTouch(s: number): void {
    if (s === this.alHead) return;
    this.alUnlink(s);
    this.alLinkHead(s);
  }

  private alLinkHead(s: number): void {
    this.alPrev[s] = -1;
    this.alNext[s] = this.alHead;
    if (this.alHead !== -1) this.alPrev[this.alHead] = s;
    this.alHead = s;
    if (this.alTail === -1) this.alTail = s;
  }

  private alUnlink(s: number): void {
    const p = this.alPrev[s]!;
    const n = this.alNext[s]!;
    if (p !== -1) this.alNext[p] = n; else this.alHead = n;
    if (n !== -1) this.alPrev[n] = p; else this.alTail = p;
  }

  /**
   * Empties the activity log once no write is in flight (a clean demotion), in close()'s crash-safe
   * order: the bitmaps first, then a transaction with no extents. The caller has synced the data.
   */
  clearActivityLog(): void {
    this.checkOpen();
    this.flushBitmaps();
    if (this.alHead === -1) return;
    while (this.alHead !== -1) this.alEvict();
    this.writeTransaction();
  }

  // ------------------------------------------------------------------------------------------- close

  /**
   * Clean close. In crash-safe order: flushes the bitmaps, then clears the activity log (one transaction
   * with no extents), then writes the superblock with primary cleared and the clean flag set; closes the fd.
   */
  close(): void {
    if (this.closed) return;
    this.flushBitmaps();
    while (this.alHead !== -1) this.alEvict();
    this.writeTransaction();
    this.primary = false;
    this.writeSb(true);
    this.closed = true;
    fs.closeSync(this.fd);
  }

  /** Closes the fd without writing anything, as a crash would leave the metadata (error paths, tests). */
  abandon(): void {
    if (this.closed) return;
    this.closed = true;
    fs.closeSync(this.fd);
  }

  private sync(): void {
    fs.fdatasyncSync(this.fd);
    this.stats.syncs++;
  }

  private checkOpen(): void {
    if (this.closed) throw new MetadataError(`metadata on ${this.layout.file} is closed`);
  }
}
