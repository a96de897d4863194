// The on-disk format of a node's replication metadata: layout arithmetic, constants and unit codecs; no I/O.
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
import { crc32c } from '../../wasm/index.js';
import { DISK_CODES, MAX_HISTORY, MAX_NODES, type DiskState, type Generations } from './frames.js';
import { MAX_GRANULARITY, MIN_GRANULARITY } from './limits.js';

// ------------------------------------------------------------------------------------------ constants

/** Every metadata structure is made of 4 KiB units, each written with one pwrite. */
export const MD_UNIT = 4096;
/** Bytes of header at the start of every unit. */
export const HDR = 64;
/** 'TWMD' read as a little-endian u32. */
const MAGIC = 0x444d5754;
/** On-disk format version written by this build (the only one it reads). */
export const MD_FORMAT_VERSION = 1;
export const KIND_SUPER = 1;
export const KIND_BITMAP = 2;
export const KIND_AL = 3;
/**
 * A move marker (online resize): written in superblock slot B at the end of a file that was just grown,
 * before the metadata there is valid; it says where the metadata in force ends (a = 1, body: u64 end).
 * open() follows it while slot A holds no valid superblock; the first superblock write there replaces it.
 */
export const KIND_MOVED = 4;
const MV_END = 64;

const H_MAGIC = 0;
const H_KIND = 4;
const H_VERSION = 6;
const H_SEQ = 8;
const H_MDID = 16;
const H_CRC = 24;
const H_A = 28;
const H_B = 32;
const H_C = 36;

export { MAX_HISTORY } from './frames.js';

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
/** 480, 488: u64 [from, to) of this file left over from before an online resize, zeroed before data is served; 0, 0 when none. */
const SB_STALE_FROM = SB_RESYNC_TOTAL + 8;
const SB_STALE_TO = SB_STALE_FROM + 8;

/** Superblock flag: the node is Primary; still set on open means it crashed as Primary. */
export const FLAG_PRIMARY = 1;
/** Superblock flag: the metadata was closed cleanly (close()). */
export const FLAG_CLEAN = 2;

/** Bitmap bytes carried by one page (the rest of the unit is the header). */
export const BITMAP_PAGE_BYTES = MD_UNIT - HDR;
/** Bitmap bits carried by one page. */
export const BITMAP_PAGE_BITS = BITMAP_PAGE_BYTES * 8;
/**
 * Units per activity-log transaction. A transaction lists every active extent as a u32, and the default
 * cap of 1237 extents (4948 bytes) does not fit one unit, so each transaction spans two units, each with
 * its own header; it is valid only when both are, with the same seq.
 */
export const AL_TX_UNITS = 2;
/** Most extents one transaction can list: the cap on `alExtents`. */
export const AL_MAX_EXTENTS = (AL_TX_UNITS * (MD_UNIT - HDR)) / 4; // 2016
const AL_PER_UNIT = (MD_UNIT - HDR) / 4; // 1008

export const DEFAULT_GRANULARITY = 4096;
export const DEFAULT_AL_EXTENT_SIZE = 4 << 20;
export const DEFAULT_AL_EXTENTS = 1237;
/** 4 KiB units in the activity-log ring (32 two-unit transactions). */
export const DEFAULT_AL_SLOTS = 64;

/** Units coalesced into one read or write of bitmap pages. */
export const IO_UNITS = 64;
const MAX_U64 = (1n << 64n) - 1n;

// ---------------------------------------------------------------------------------------------- types

/** Refusals and corruption the operator must act on; the message says what to do. */
export class MetadataError extends Error {
  override readonly name = 'MetadataError';
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
  /** An online resize was interrupted after its switch: [from, to) still holds the old area (Metadata.finishMove zeroes it). */
  staleRange: readonly [number, number] | null;
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

/**
 * The metadata file as the bitmap store and the activity log see it: whole-buffer positional I/O and
 * fdatasync (counted in the stats), and the superblock's "in use" mark, made before the first write
 * after a clean open.
 */
export interface MetadataIo {
  /** Reads `buf.length` bytes at `pos`; bytes past the end of the file read as zero. */
  pread(buf: Uint8Array, pos: number): void;
  /** Writes all of `buf` at `pos`. */
  pwrite(buf: Uint8Array, pos: number): void;
  /** fdatasync. */
  sync(): void;
  /** Writes all of `buf` at `pos`, durable when it returns; flushes only this range where the system can. */
  pwriteDurable(buf: Uint8Array, pos: number): void;
  /** Called before a write: the superblock stops saying "clean" (one superblock write, the first time). */
  markInUse(): void;
  /** Write counters, shared with the Metadata that owns this file. */
  readonly stats: MetadataStats;
}

/** A superblock as decoded (or to be encoded). */
export interface Superblock {
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
  /**
   * Bytes [staleFrom, staleTo) of the metadata file that an online resize left behind (the old metadata
   * area, and for internal metadata the slack before it): the new data area covers them, so they are
   * zeroed before any data is served (Metadata.finishMove). Both 0 when none.
   */
  staleFrom: number;
  staleTo: number;
}

// ----------------------------------------------------------------------------------- layout arithmetic

/** The geometry asked of new metadata (Metadata.create's options). */
export interface GeometryOptions {
  nodeId: number;
  peerIds: readonly number[];
  granularity?: number;
  alExtentSize?: number;
  alExtents?: number;
  alSlots?: number;
  /** For messages: the backing file whose size is `backingSize`. */
  backingFile: string;
}

export function isPow2(n: number): boolean {
  return Number.isInteger(n) && n > 0 && Number.isInteger(Math.log2(n));
}

/** `n` rounded down to a whole unit. */
export function floorUnit(n: number): number {
  return Math.floor(n / MD_UNIT) * MD_UNIT;
}

/** Throws unless `g` is a power of two from 4096 to 2 GiB (a bitmap granularity or AL extent size). */
export function checkGranularity(g: number, what: string): void {
  if (!isPow2(g) || g < MIN_GRANULARITY || g > MAX_GRANULARITY) {
    throw new MetadataError(`${what} ${g} is invalid: use a power of two from 4096 to 2 GiB`);
  }
}

/** Throws unless `n` is a valid activity-log ring size in units. */
export function checkAlSlots(n: number): void {
  if (!Number.isInteger(n) || n < 2 * AL_TX_UNITS || n % AL_TX_UNITS !== 0 || n > 1 << 20) {
    throw new MetadataError(`alSlots ${n} is invalid: use an even number of 4 KiB units, at least 4`);
  }
}

/** Bitmap pages per peer for `dataSize` bytes at `granularity` (at least one). */
export function pagesPerPeer(dataSize: number, granularity: number): number {
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
export function internalDataSize(end: number, peers: number, granularity: number, alSlots: number): number {
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

/** Throws unless `nodeId` and `peerIds` are distinct node ids. */
export function checkPeers(nodeId: number, peerIds: readonly number[]): void {
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

/** Throws MetadataError unless `o` is valid; returns its sizes with the defaults filled in. */
export function checkGeometryOptions(o: GeometryOptions): { granularity: number; alExtentSize: number; alExtents: number; alSlots: number } {
  const granularity = o.granularity ?? DEFAULT_GRANULARITY;
  const alExtentSize = o.alExtentSize ?? DEFAULT_AL_EXTENT_SIZE;
  const alExtents = o.alExtents ?? DEFAULT_AL_EXTENTS;
  const alSlots = o.alSlots ?? DEFAULT_AL_SLOTS;
  checkPeers(o.nodeId, o.peerIds);
  checkGranularity(granularity, 'bitmap granularity');
  checkGranularity(alExtentSize, 'activity-log extent size');
  checkAlSlots(alSlots);
  if (!Number.isInteger(alExtents) || alExtents < 1 || alExtents > AL_MAX_EXTENTS) {
    throw new MetadataError(`alExtents ${alExtents} is invalid: use 1..${AL_MAX_EXTENTS} (one transaction must list them all)`);
  }
  return { granularity, alExtentSize, alExtents, alSlots };
}

/**
 * The superblock (seq 1) of new metadata for `o` over a backing file of `backingSize` bytes: internal
 * metadata takes the end of it and leaves the largest 4 KiB-aligned data size that fits; external
 * metadata leaves all of it (rounded down to 4 KiB) as data. Generations all 0n (DRBD's "just
 * created"), disk Inconsistent, flags clean. Throws MetadataError for invalid options or a file too small.
 */
export function freshSuperblock(o: GeometryOptions, internal: boolean, backingSize: number, mdId: bigint): Superblock {
  const { granularity, alExtentSize, alExtents, alSlots } = checkGeometryOptions(o);
  const peers = o.peerIds.length;
  let dataSize: number;
  let areaOffset: number;
  if (internal) {
    const end = floorUnit(backingSize);
    dataSize = internalDataSize(end, peers, granularity, alSlots);
    if (dataSize === 0) {
      throw new MetadataError(`backing file ${o.backingFile} (${backingSize} bytes) is too small for internal metadata:`
        + ` it needs at least ${MD_UNIT + metadataSize(MD_UNIT, peers, granularity, alSlots)} bytes`);
    }
    areaOffset = end - metadataSize(dataSize, peers, granularity, alSlots);
  } else {
    dataSize = floorUnit(backingSize);
    if (dataSize === 0) throw new MetadataError(`backing file ${o.backingFile} holds less than 4 KiB`);
    areaOffset = 0;
  }
  if (Math.ceil(dataSize / alExtentSize) > 0xffffffff) {
    throw new MetadataError(`activity-log extent size ${alExtentSize} is too small for ${dataSize} bytes`);
  }
  return {
    seq: 1, mdId, nodeId: o.nodeId, flags: FLAG_CLEAN, dataSize, granularity, alExtentSize, alExtents, alSlots,
    disk: 'Inconsistent', peerIds: [...o.peerIds], promotedAt: 0,
    areaOffset, areaSize: metadataSize(dataSize, peers, granularity, alSlots),
    gens: { current: 0n, bitmap: new Array<bigint>(MAX_NODES).fill(0n), history: [] }, resyncFrom: 0n, resyncTotal: 0,
    staleFrom: 0, staleTo: 0,
  };
}

/**
 * Where grown metadata goes (online resize to `dataSize` bytes of data, more than `sb` describes): a new
 * area that overlaps neither the new data nor the area in force, so the area in force stays intact until
 * the switch. Internal: it starts at the larger of the new data size and the end of the area in force
 * (the file is grown to its end); external: right after the area in force. Returns the new superblock
 * (seq + 1, same generations and flags) whose stale range is what the new data area inherits from
 * the old layout (internal: the slack and the old area; external: the old area).
 */
export function grownSuperblock(sb: Superblock, dataSize: number, internal: boolean): Superblock {
  if (!Number.isSafeInteger(dataSize) || dataSize <= sb.dataSize || dataSize % MD_UNIT !== 0) {
    throw new MetadataError(`cannot grow metadata of ${sb.dataSize} bytes to ${dataSize}: give a larger multiple of 4096`);
  }
  if (Math.ceil(dataSize / sb.alExtentSize) > 0xffffffff) {
    throw new MetadataError(`activity-log extent size ${sb.alExtentSize} is too small for ${dataSize} bytes`);
  }
  const areaSize = metadataSize(dataSize, sb.peerIds.length, sb.granularity, sb.alSlots);
  const oldEnd = sb.areaOffset + sb.areaSize;
  const areaOffset = internal ? Math.max(dataSize, oldEnd) : oldEnd;
  return {
    ...sb, seq: sb.seq + 1, dataSize, areaOffset, areaSize, gens: { ...sb.gens, bitmap: [...sb.gens.bitmap], history: [...sb.gens.history] },
    peerIds: [...sb.peerIds],
    staleFrom: internal ? sb.dataSize : sb.areaOffset, staleTo: oldEnd,
  };
}

/** Encodes a move marker into unit `u` for superblock slot B: the metadata in force ends at `end`. */
export function encodeMoveMarker(u: Uint8Array, mdId: bigint, seq: number, end: number): void {
  u.fill(0);
  const dv = unitView(u);
  dv.setBigUint64(MV_END, BigInt(end), true);
  sealUnit(u, dv, KIND_MOVED, seq, mdId, 1, 0, 0);
}

/** The end of the metadata in force and its id if `u` is an intact move marker, else null. */
export function decodeMoveMarker(u: Uint8Array): { end: number; mdId: bigint } | null {
  const dv = unitView(u);
  if (!unitValid(u, dv, KIND_MOVED, null) || dv.getUint32(H_A, true) !== 1) return null;
  const end = getU64(dv, MV_END);
  if (!Number.isSafeInteger(end) || end % MD_UNIT !== 0) return null;
  return { end, mdId: dv.getBigUint64(H_MDID, true) };
}

/** Where each structure of the metadata described by `sb` sits in `file`. */
export function layoutOf(sb: Superblock, file: string): MetadataLayout {
  const ppp = pagesPerPeer(sb.dataSize, sb.granularity);
  const bmBase = sb.areaOffset + sb.alSlots * MD_UNIT;
  return Object.freeze({
    file,
    areaOffset: sb.areaOffset,
    areaSize: sb.areaSize,
    superblocks: [sb.areaOffset + sb.areaSize - 2 * MD_UNIT, sb.areaOffset + sb.areaSize - MD_UNIT] as const,
    alOffset: sb.areaOffset,
    alSlots: sb.alSlots,
    bitmapOffsets: Object.freeze(sb.peerIds.map((_, i) => bmBase + i * ppp * MD_UNIT)),
    pagesPerPeer: ppp,
  });
}

// ------------------------------------------------------------------------------------------ unit codec

/** A DataView over exactly the bytes of `u`. */
export function unitView(u: Uint8Array): DataView {
  return new DataView(u.buffer, u.byteOffset, u.byteLength);
}

function unitCrc(u: Uint8Array): number {
  return crc32c(u.subarray(H_CRC + 4, MD_UNIT), crc32c(u.subarray(0, H_CRC)));
}

/** Fills the header of unit `u` (viewed by `dv`, header bytes zeroed first) and its CRC; the body must be in place. */
export function sealUnit(u: Uint8Array, dv: DataView, kind: number, seq: number, mdId: bigint, a: number, b: number, c: number): void {
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
export function unitValid(u: Uint8Array, dv: DataView, kind: number, mdId: bigint | null): boolean {
  if (dv.getUint32(H_MAGIC, true) !== MAGIC || dv.getUint16(H_KIND, true) !== kind) return false;
  if (dv.getUint16(H_VERSION, true) !== MD_FORMAT_VERSION) return false;
  if (mdId !== null && dv.getBigUint64(H_MDID, true) !== mdId) return false;
  return dv.getUint32(H_CRC, true) === unitCrc(u);
}

function getU64(dv: DataView, at: number): number {
  const v = dv.getBigUint64(at, true);
  return v > BigInt(Number.MAX_SAFE_INTEGER) ? Number.NaN : Number(v);
}

// ------------------------------------------------------------------------------------ bitmap page codec

/** Encodes page `page` of `map` (the bitmap toward `peerId`) into unit `u`, sealed with `seq`. */
export function encodeBitmapPage(u: Uint8Array, map: Uint8Array, peerId: number, page: number, seq: number, mdId: bigint): void {
  const from = page * BITMAP_PAGE_BYTES;
  const to = Math.min(from + BITMAP_PAGE_BYTES, map.length);
  u.fill(0);
  if (to > from) u.set(map.subarray(from, to), HDR);
  sealUnit(u, unitView(u), KIND_BITMAP, seq, mdId, peerId, page, 0);
}

/** The bitmap bytes of unit `u` if it is an intact page `page` toward `peerId` of metadata `mdId`, else null. */
export function decodeBitmapPage(u: Uint8Array, peerId: number, page: number, mdId: bigint): Uint8Array | null {
  const dv = unitView(u);
  if (!unitValid(u, dv, KIND_BITMAP, mdId) || dv.getUint32(H_A, true) !== peerId || dv.getUint32(H_B, true) !== page) return null;
  return u.subarray(HDR, MD_UNIT);
}

// ------------------------------------------------------------------------------ activity-log codec

/**
 * Encodes transaction `seq` into `tx` (AL_TX_UNITS units, viewed by `views`) for ring slot `slot`,
 * listing `extents` in the order given (oldest first).
 */
export function encodeTransaction(tx: Uint8Array, views: readonly DataView[], extents: Iterable<number>, seq: number, slot: number, mdId: bigint): void {
  tx.fill(0);
  let n = 0;
  for (const e of extents) {
    const k = (n / AL_PER_UNIT) | 0;
    views[k]!.setUint32(HDR + 4 * (n - k * AL_PER_UNIT), e, true);
    n++;
  }
  for (let k = 0; k < AL_TX_UNITS; k++) {
    sealUnit(tx.subarray(k * MD_UNIT, (k + 1) * MD_UNIT), views[k]!, KIND_AL, seq, mdId, k, n, slot);
  }
}

/**
 * The extents (oldest first) and seq of the transaction in ring slot `slot` (its AL_TX_UNITS units in
 * `tx`), or null if it is not intact or lists more than `maxExtents` or an extent >= `nExtents`.
 */
export function decodeTransaction(
  tx: Uint8Array, slot: number, mdId: bigint, maxExtents: number, nExtents: number,
): { seq: number; extents: number[] } | null {
  let seq = -1;
  let count = -1;
  for (let k = 0; k < AL_TX_UNITS; k++) {
    const u = tx.subarray(k * MD_UNIT, (k + 1) * MD_UNIT);
    const dv = unitView(u);
    if (!unitValid(u, dv, KIND_AL, mdId) || dv.getUint32(H_A, true) !== k || dv.getUint32(H_C, true) !== slot) return null;
    const s = getU64(dv, H_SEQ);
    const c = dv.getUint32(H_B, true);
    if (k === 0) { seq = s; count = c; } else if (s !== seq || c !== count) return null;
  }
  if (!Number.isSafeInteger(seq) || count > maxExtents) return null;
  const extents: number[] = [];
  const dv = unitView(tx);
  for (let i = 0; i < count; i++) {
    const k = Math.floor(i / AL_PER_UNIT);
    const e = dv.getUint32(k * MD_UNIT + HDR + 4 * (i % AL_PER_UNIT), true);
    if (e >= nExtents) return null;
    extents.push(e);
  }
  return { seq, extents };
}

// ------------------------------------------------------------------------------------ superblock codec

/** True when `v` is a u64. */
function isU64(v: bigint): boolean {
  return typeof v === 'bigint' && v >= 0n && v <= MAX_U64;
}

/** Throws unless `g` can be persisted: all u64, MAX_NODES bitmap bases and at most MAX_HISTORY history entries. */
export function checkGenerations(g: Generations): void {
  if (!isU64(g.current) || g.bitmap.length !== MAX_NODES || !g.bitmap.every(isU64)
    || g.history.length > MAX_HISTORY || !g.history.every(isU64)) {
    throw new MetadataError(`generations are malformed: ${MAX_NODES} bitmap entries and at most ${MAX_HISTORY} history entries, all u64`);
  }
}

/** Throws unless the resync progress can be persisted: a u64 generation and a bit count. */
export function checkResyncProgress(from: bigint, total: number): void {
  if (!isU64(from) || !Number.isSafeInteger(total) || total < 0) {
    throw new MetadataError('resync progress is malformed: a u64 generation and a bit count');
  }
}

/** Encodes `sb` into unit `u` (viewed by `dv`) for superblock slot `slot`. */
export function encodeSuperblock(u: Uint8Array, dv: DataView, sb: Superblock, slot: 0 | 1): void {
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
  dv.setBigUint64(SB_STALE_FROM, BigInt(sb.staleFrom), true);
  dv.setBigUint64(SB_STALE_TO, BigInt(sb.staleTo), true);
  sealUnit(u, dv, KIND_SUPER, sb.seq, sb.mdId, slot, 0, 0);
}

/** The superblock in `u` if it is intact and sits in `slot`; 'version' for one of another format. */
export function decodeSuperblock(u: Uint8Array, slot: 0 | 1): Superblock | 'version' | null {
  const dv = unitView(u);
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
    staleFrom: getU64(dv, SB_STALE_FROM),
    staleTo: getU64(dv, SB_STALE_TO),
  };
}

/** Why a superblock slot that decodeSuperblock refused is damaged, or null when it was never written (all zero). */
export function superblockDamage(u: Uint8Array, slot: 0 | 1): string | null {
  if (u.every((b) => b === 0)) return null;
  const dv = unitView(u);
  if (dv.getUint32(H_MAGIC, true) !== MAGIC || dv.getUint16(H_KIND, true) !== KIND_SUPER) return 'no superblock header';
  if (dv.getUint32(H_CRC, true) !== unitCrc(u)) return 'checksum mismatch';
  if (dv.getUint32(H_A, true) !== slot) return `holds slot ${dv.getUint32(H_A, true)}'s superblock`;
  return 'unreadable';
}

/** Why `sb` cannot describe metadata ending at `end` of a file, or null when it is consistent. */
export function superblockProblem(sb: Superblock, end: number): string | null {
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
  if (!Number.isSafeInteger(sb.staleFrom) || !Number.isSafeInteger(sb.staleTo) || sb.staleFrom > sb.staleTo
    || sb.staleTo > sb.areaOffset) return `bad stale range [${sb.staleFrom}, ${sb.staleTo})`;
  const size = metadataSize(sb.dataSize, sb.peerIds.length, sb.granularity, sb.alSlots);
  if (sb.areaSize !== size) return `metadata area of ${sb.areaSize} bytes, expected ${size}`;
  if (sb.areaOffset !== end - size) return `metadata area recorded at ${sb.areaOffset}, found ending at ${end}`;
  return null;
}
