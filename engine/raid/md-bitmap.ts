// md's internal write-intent bitmap: the bitmap superblock codec (bitmap_super_t), its placement and sizing; no I/O.
//
// Layout of the 256-byte superblock (drivers/md/md-bitmap.h; all integers little-endian):
//
//     0 u32 magic "bitm"    4 u32 version (3 host-endian bits, 4 little-endian bits, 5 clustered)
//     8 u8[16] uuid (the array's set_uuid)   24 u64 events   32 u64 events_cleared
//    40 u64 sync_size (sectors the bitmap covers)   48 u32 state (BITMAP_* bit numbers)
//    52 u32 chunksize (bytes per bit)   56 u32 daemon_sleep (seconds)   60 u32 write_behind
//    64 u32 sectors_reserved   68 u32 nodes   72 u8[64] cluster_name   136..255 zero
//
// The bits follow the superblock directly: bit i (array chunk i) is bit i % 8 of byte 256 + i / 8, a set
// bit meaning "this chunk may differ between members". For a 1.1/1.2 superblock mdadm puts the bitmap 8
// sectors (4 KiB) after the superblock (`bitmap_offset` = 8), so on a 1.2 member it starts at byte 8192.
// The sector a bit covers is an array sector for raid1 and raid10, and a member sector (the stripe's
// sector on each member) for raid4/5/6: `sync_size` is the size of that space.
import {
  BITMAP_COUNTER_MAX, BITMAP_MAGIC, BITMAP_MAJOR_CLUSTERED, BITMAP_MAJOR_HI, BITMAP_MAJOR_LO, BITMAP_STALE,
  BITMAP_SUPER_BYTES, MD_FEATURE_BITMAP_OFFSET, MDADM_BITMAP_OFFSET_V1_2, MDADM_DEFAULT_BITMAP_CHUNK,
  MDADM_DEFAULT_BITMAP_DELAY, SECTOR,
} from './md-constants.js';
import { mdArraySectors, type MdGeometry } from './geometry.js';
import { MdFormatError, mdUuidString, type MdSuperblockFields } from './md-superblock.js';

const O_MAGIC = 0;
const O_VERSION = 4;
const O_UUID = 8;
const O_EVENTS = 24;
const O_EVENTS_CLEARED = 32;
const O_SYNC_SIZE = 40;
const O_STATE = 48;
const O_CHUNKSIZE = 52;
const O_DAEMON_SLEEP = 56;
const O_WRITE_BEHIND = 60;
const O_SECTORS_RESERVED = 64;
const O_NODES = 68;
const O_CLUSTER_NAME = 72;
const CLUSTER_NAME_BYTES = 64;
const U64_END = 1n << 64n;

/** The bitmap superblock's fields; 64-bit fields are bigint, the rest numbers. */
export interface MdBitmapSuper {
  /** BITMAP_MAJOR_HI (4) for an ordinary bitmap; 3 (host-endian bits) and 5 (clustered) are read too. */
  version: number;
  /** Must equal the array superblock's `setUuid`. */
  uuid: Uint8Array;
  /** The array's `events` when the bitmap was last written; older than the array's means stale. */
  events: bigint;
  /** The array's `events` when bits were last cleared. */
  eventsCleared: bigint;
  /** Sectors the bitmap covers (the kernel's resync_max_sectors; see mdBitmapSyncSize). */
  syncSize: bigint;
  /** BITMAP_* state bits, as a mask of `1 << bit`. */
  state: number;
  /** Bytes covered by one bit: a power of two of at least 512. */
  chunkSize: number;
  /** Seconds between flushes of cleared bits (at least 1). */
  daemonSleep: number;
  /** Most outstanding writes to write-mostly members (0 = none), at most 16383. */
  writeBehind: number;
  /** Sectors reserved for the bitmap (0 when not recorded, as mdadm leaves it). */
  sectorsReserved: number;
  /** Cluster nodes (version 5), else 0. */
  nodes: number;
  /** Cluster name (version 5), up to 64 bytes, one character per byte. */
  clusterName: string;
}

/** What decodeMdBitmapSuper can compare the bitmap with. */
export interface MdBitmapArray {
  setUuid: Uint8Array;
  events: bigint;
}

/**
 * Decodes the 256-byte bitmap superblock at the start of `bytes` with the checks of md_bitmap_read_sb,
 * each refusal an MdFormatError: magic, version outside 3..5, chunk size below 512 or not a power of two,
 * daemon sleep of 0, write-behind above 16383; with `array`, a UUID that is not the array's. (The kernel
 * does not refuse an old bitmap: see mdBitmapStale.)
 */
export function decodeMdBitmapSuper(bytes: Uint8Array, array?: MdBitmapArray): MdBitmapSuper {
  if (bytes.length < BITMAP_SUPER_BYTES) {
    throw new MdFormatError(
      'short-buffer',
      `a bitmap superblock is ${BITMAP_SUPER_BYTES} bytes, ${bytes.length} given: read at the superblock's sector plus bitmap_offset`,
    );
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const u32 = (o: number): number => dv.getUint32(o, true);
  // md_bitmap_read_sb: "bad magic", "unrecognized superblock version" (< BITMAP_MAJOR_LO or > BITMAP_MAJOR_CLUSTERED),
  // "bitmap chunksize too small" (< 512), "not a power of 2", "daemon sleep period out of range" (daemon_sleep * HZ < 1),
  // "write-behind limit out of range (0 - 16383)"; then, for a persistent array, "bitmap superblock UUID mismatch".
  const magic = u32(O_MAGIC);
  if (magic !== BITMAP_MAGIC) {
    throw new MdFormatError(
      'bitmap-magic',
      `no md bitmap here: magic is 0x${magic.toString(16).padStart(8, '0')}, not 0x${BITMAP_MAGIC.toString(16)} ("bitm"): check bitmap_offset, or recreate the bitmap (mdadm --grow --bitmap=none, then =internal)`,
    );
  }
  const version = u32(O_VERSION);
  if (version < BITMAP_MAJOR_LO || version > BITMAP_MAJOR_CLUSTERED) {
    throw new MdFormatError(
      'bitmap-version',
      `md bitmap version ${version} is not readable: the kernel reads versions ${BITMAP_MAJOR_LO}..${BITMAP_MAJOR_CLUSTERED} (6 is mdadm's lockless bitmap, another kernel module)`,
    );
  }
  const chunkSize = u32(O_CHUNKSIZE);
  if (chunkSize < 512) throw new MdFormatError('bitmap-chunk', `md bitmap chunk size ${chunkSize} is too small: the kernel wants at least 512 bytes`);
  if ((chunkSize & (chunkSize - 1)) !== 0) {
    throw new MdFormatError(
      'bitmap-chunk',
      `md bitmap chunk size ${chunkSize} is not a power of 2: the bitmap superblock is corrupt`,
    );
  }
  const daemonSleep = u32(O_DAEMON_SLEEP);
  if (daemonSleep < 1) throw new MdFormatError('bitmap-daemon-sleep', 'md bitmap daemon sleep is 0 seconds: the kernel wants at least 1 (mdadm writes 5)');
  const writeBehind = u32(O_WRITE_BEHIND);
  if (writeBehind > BITMAP_COUNTER_MAX) {
    throw new MdFormatError('bitmap-write-behind', `md bitmap write-behind limit ${writeBehind} is out of range (0 - ${BITMAP_COUNTER_MAX})`);
  }
  const uuid = bytes.slice(O_UUID, O_UUID + 16);
  if (array !== undefined && !uuid.every((b, i) => b === array.setUuid[i])) {
    throw new MdFormatError(
      'bitmap-uuid',
      `md bitmap UUID ${mdUuidString(uuid)} is not the array's ${mdUuidString(array.setUuid)}: the bitmap belongs to another array; recreate it`,
    );
  }
  const nameBytes = bytes.subarray(O_CLUSTER_NAME, O_CLUSTER_NAME + CLUSTER_NAME_BYTES);
  const nameEnd = nameBytes.indexOf(0);
  return {
    version,
    uuid,
    events: dv.getBigUint64(O_EVENTS, true),
    eventsCleared: dv.getBigUint64(O_EVENTS_CLEARED, true),
    syncSize: dv.getBigUint64(O_SYNC_SIZE, true),
    state: u32(O_STATE),
    chunkSize,
    daemonSleep,
    writeBehind,
    sectorsReserved: u32(O_SECTORS_RESERVED),
    nodes: u32(O_NODES),
    clusterName: String.fromCharCode(...(nameEnd < 0 ? nameBytes : nameBytes.subarray(0, nameEnd))),
  };
}

/**
 * Whether the kernel would distrust the bits and resync everything: the superblock's stale flag is set,
 * or (outside clusters) the bitmap's `events` is older than the array's (md_bitmap_read_sb: "bitmap file
 * is out of date ... forcing full recovery").
 */
export function mdBitmapStale(bm: MdBitmapSuper, arrayEvents: bigint): boolean {
  if ((bm.state & (1 << BITMAP_STALE)) !== 0) return true;
  return bm.nodes === 0 && bm.events < arrayEvents;
}

/** Encodes `bm` as the 256-byte bitmap superblock (bytes 136..255 zero). Throws MdFormatError for a field out of range. */
export function encodeMdBitmapSuper(bm: MdBitmapSuper): Uint8Array {
  const out = new Uint8Array(BITMAP_SUPER_BYTES);
  const dv = new DataView(out.buffer);
  const u32 = (o: number, v: number, name: string): void => {
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new MdFormatError('bad-field', `bitmap ${name} ${v} does not fit a u32`);
    dv.setUint32(o, v, true);
  };
  const u64 = (o: number, v: bigint, name: string): void => {
    if (typeof v !== 'bigint' || v < 0n || v >= U64_END) throw new MdFormatError('bad-field', `bitmap ${name} ${String(v)} is not a u64 bigint`);
    dv.setBigUint64(o, v, true);
  };
  u32(O_MAGIC, BITMAP_MAGIC, 'magic');
  u32(O_VERSION, bm.version, 'version');
  if (!(bm.uuid instanceof Uint8Array) || bm.uuid.length !== 16) throw new MdFormatError('bad-field', 'bitmap uuid must be 16 bytes (the array\'s set_uuid)');
  out.set(bm.uuid, O_UUID);
  u64(O_EVENTS, bm.events, 'events');
  u64(O_EVENTS_CLEARED, bm.eventsCleared, 'eventsCleared');
  u64(O_SYNC_SIZE, bm.syncSize, 'syncSize');
  u32(O_STATE, bm.state, 'state');
  u32(O_CHUNKSIZE, bm.chunkSize, 'chunkSize');
  u32(O_DAEMON_SLEEP, bm.daemonSleep, 'daemonSleep');
  u32(O_WRITE_BEHIND, bm.writeBehind, 'writeBehind');
  u32(O_SECTORS_RESERVED, bm.sectorsReserved, 'sectorsReserved');
  u32(O_NODES, bm.nodes, 'nodes');
  if (bm.clusterName.length > CLUSTER_NAME_BYTES) {
    throw new MdFormatError(
      'bad-field',
      `cluster name is ${bm.clusterName.length} bytes: at most ${CLUSTER_NAME_BYTES}`,
    );
  }
  for (let i = 0; i < bm.clusterName.length; i++) {
    const c = bm.clusterName.charCodeAt(i);
    if (c === 0 || c > 0xff) throw new MdFormatError('bad-field', `cluster name has character U+${c.toString(16).padStart(4, '0')}: use bytes 1..255`);
    out[O_CLUSTER_NAME + i] = c;
  }
  return out;
}

// ---------------------------------------------------------------------------------- sizes and placement

/** Bits (chunks) of a bitmap over `syncSize` sectors at `chunkSize` bytes per bit: ceil(syncSize * 512 / chunkSize). */
export function mdBitmapBits(syncSize: bigint, chunkSize: number): number {
  const c = BigInt(chunkSize);
  return Number((syncSize * BigInt(SECTOR) + c - 1n) / c);
}

/** Bytes of bits for `bits` chunks. */
export function mdBitmapBytes(bits: number): number {
  return Math.ceil(bits / 8);
}

/**
 * Bytes the bitmap occupies on the member, superblock included, rounded up to `boundary` (mdadm's
 * calc_bitmap_size: 4096 unless bitmap_offset is not 4 KiB-aligned, then 512). Divide by 512 for sectors.
 */
export function mdBitmapSpace(syncSize: bigint, chunkSize: number, boundary = 4096): number {
  const bytes = mdBitmapBytes(mdBitmapBits(syncSize, chunkSize)) + BITMAP_SUPER_BYTES;
  return Math.ceil(bytes / boundary) * boundary;
}

/**
 * The bitmap's `sync_size` for an array: the kernel's resync_max_sectors. raid1: the member size;
 * raid4/5/6: the member size rounded down to whole chunks (bits cover member sectors); raid10: the
 * array's size (bits cover array sectors).
 */
export function mdBitmapSyncSize(g: MdGeometry, componentSectors: number): bigint {
  if (g.level === 10) return BigInt(mdArraySectors(g, componentSectors));
  if (g.level === 1) return BigInt(componentSectors);
  return BigInt(Math.floor(componentSectors / g.chunkSectors) * g.chunkSectors);
}

/** The bitmap chunk (bit index) covering `sector` (array sector for raid1/10, member sector for raid4/5/6). */
export function mdBitmapChunkOf(sector: number, chunkSize: number): number {
  return Math.floor((sector * SECTOR) / chunkSize);
}

/** Where bit `chunk` is, from the start of the bitmap (its superblock): byte and mask (little-endian bit order). */
export function mdBitmapBitAddress(chunk: number): { byte: number; mask: number } {
  return { byte: BITMAP_SUPER_BYTES + Math.floor(chunk / 8), mask: 1 << (chunk % 8) };
}

/**
 * The member sector where the bitmap superblock sits: the superblock's sector plus its signed
 * `bitmap_offset`; null when the superblock has no internal bitmap.
 */
export function mdBitmapSector(sb: Pick<MdSuperblockFields, 'featureMap' | 'superOffset' | 'bitmapOffset'>): bigint | null {
  if ((sb.featureMap & MD_FEATURE_BITMAP_OFFSET) === 0) return null;
  return sb.superOffset + BigInt(sb.bitmapOffset);
}

/**
 * The bitmap chunk mdadm picks when creating a 1.x array with no --bitmap-chunk (add_internal_bitmap1):
 * the smallest power of two from 4 KiB whose bits for `syncSize` sectors fit in `roomSectors` (capped at
 * 128 KiB, less the 256-byte superblock), but at least 64 MiB. `roomSectors` is mdadm's choose_bm_space of
 * the member size (mdadmBitmapSpace). Throws MdFormatError when there is no room for a bitmap.
 */
export function mdadmBitmapChunk(syncSize: bigint, roomSectors: number): number {
  const room = Math.min(roomSectors, 128 * 2);
  if (room <= 1) {
    throw new MdFormatError(
      'bad-field',
      `no room for a bitmap (${roomSectors} sectors): leave at least 1 KiB between the superblock and the data`,
    );
  }
  const maxBits = (room * SECTOR - BITMAP_SUPER_BYTES) * 8;
  let minChunk = 4096;
  let bits = (syncSize * BigInt(SECTOR)) / BigInt(minChunk) + 1n;
  while (bits > BigInt(maxBits)) {
    minChunk *= 2;
    bits = (bits + 1n) / 2n;
  }
  return Math.max(minChunk, MDADM_DEFAULT_BITMAP_CHUNK);
}

/** What a new internal bitmap needs: the array's UUID and the bitmap's coverage. */
export interface NewMdBitmapOptions {
  setUuid: Uint8Array;
  syncSize: bigint;
  chunkSize: number;
  daemonSleep?: number;
  writeBehind?: number;
}

/**
 * The bitmap superblock mdadm writes for a new internal bitmap (add_internal_bitmap1): version 4, events
 * and events_cleared 0 (the kernel then takes the bits as stale and resyncs once, as with mdadm), state 0,
 * daemon sleep 5 s, no write-behind, no cluster. mdadm also writes every bit set.
 */
export function newMdBitmapSuper(o: NewMdBitmapOptions): MdBitmapSuper {
  return {
    version: BITMAP_MAJOR_HI, uuid: o.setUuid.slice(), events: 0n, eventsCleared: 0n, syncSize: o.syncSize, state: 0,
    chunkSize: o.chunkSize, daemonSleep: o.daemonSleep ?? MDADM_DEFAULT_BITMAP_DELAY, writeBehind: o.writeBehind ?? 0,
    sectorsReserved: 0, nodes: 0, clusterName: '',
  };
}

export { MDADM_BITMAP_OFFSET_V1_2 };
