// Linux md's version-1 superblock (struct mdp_superblock_1): a pure codec with the kernel's load checks; no I/O.
//
// Layout (byte offsets, all integers little-endian; md_p.h):
//
//     0 u32 magic 0xa92b4efc   4 u32 major_version 1   8 u32 feature_map   12 u32 pad0 (0)
//    16 u8[16] set_uuid        32 char[32] set_name
//    64 u64 ctime   72 s32 level   76 u32 layout   80 u64 size (sectors used on each member)
//    88 u32 chunksize (sectors)    92 u32 raid_disks
//    96 s32 bitmap_offset (sectors from the superblock), or with the PPL features s16 ppl.offset, u16 ppl.size
//   100 s32 new_level  104 u64 reshape_position  112 s32 delta_disks  116 u32 new_layout  120 u32 new_chunk
//   124 s32 new_offset
//   128 u64 data_offset  136 u64 data_size  144 u64 super_offset  152 u64 recovery_offset (or journal_tail)
//   160 u32 dev_number  164 u32 cnt_corrected_read  168 u8[16] device_uuid  184 u8 devflags  185 u8 bblog_shift
//   186 u16 bblog_size  188 s32 bblog_offset
//   192 u64 utime  200 u64 events  208 u64 resync_offset  216 u32 sb_csum  220 u32 max_dev  224 u8[32] pad3 (0)
//   256 u16 dev_roles[max_dev]: a slot number, 0xffff spare, 0xfffe faulty, 0xfffd journal
//
// A 1.2 superblock sits 8 sectors (4 KiB) from the member's start, 1.1 at 0, 1.0 8-12 KiB from the end.
// The kernel reads 4 KiB and writes `256 + 2 * max_dev` bytes rounded up to the logical block size; mdadm
// writes the same rounded to 512 bytes with the unused role slots 0xff. `encodeMdSuperblock` produces
// exactly what mdadm writes (or, with `blockSize: 4096`, what either writes on a 4 KiB-sector device).
//
// Number types: every 64-bit field (sector counts and offsets, events, times) is a bigint, because
// `resync_offset` uses 2^64-1 and `events` is a full u64; every 8-, 16- and 32-bit field is a number.
import {
  MD_DEVFLAG_FAILFAST, MD_DEVFLAG_WRITEMOSTLY, MD_DISK_ROLE_FAULTY, MD_DISK_ROLE_JOURNAL, MD_DISK_ROLE_MAX,
  MD_DISK_ROLE_SPARE, MD_FEATURE_ALL, MD_FEATURE_BAD_BLOCKS, MD_FEATURE_BITMAP_OFFSET, MD_FEATURE_JOURNAL,
  MD_FEATURE_MULTIPLE_PPLS, MD_FEATURE_NAMES, MD_FEATURE_NEW_OFFSET, MD_FEATURE_PPL, MD_FEATURE_RAID0_LAYOUT,
  MD_FEATURE_RESHAPE_ACTIVE, MD_SB_1_2_OFFSET, MD_SB_1_HEADER_BYTES, MD_SB_1_MAX_DEV, MD_SB_1_READ_BYTES,
  MD_SB_MAGIC, MD_SB_MAJOR_VERSION, SECTOR,
} from './md-constants.js';

// ------------------------------------------------------------------------------------------- offsets

const O_MAGIC = 0;
const O_MAJOR = 4;
const O_FEATURES = 8;
const O_PAD0 = 12;
const O_SET_UUID = 16;
const O_SET_NAME = 32;
const SET_NAME_BYTES = 32;
const O_CTIME = 64;
const O_LEVEL = 72;
const O_LAYOUT = 76;
const O_SIZE = 80;
const O_CHUNK = 88;
const O_RAID_DISKS = 92;
const O_BITMAP_OFFSET = 96; // union with ppl { s16 offset; u16 size }
const O_NEW_LEVEL = 100;
const O_RESHAPE_POS = 104;
const O_DELTA_DISKS = 112;
const O_NEW_LAYOUT = 116;
const O_NEW_CHUNK = 120;
const O_NEW_OFFSET = 124;
const O_DATA_OFFSET = 128;
const O_DATA_SIZE = 136;
const O_SUPER_OFFSET = 144;
const O_RECOVERY_OFFSET = 152;
const O_DEV_NUMBER = 160;
const O_CNT_CORRECTED = 164;
const O_DEVICE_UUID = 168;
const O_DEVFLAGS = 184;
const O_BBLOG_SHIFT = 185;
const O_BBLOG_SIZE = 186;
const O_BBLOG_OFFSET = 188;
const O_UTIME = 192;
const O_EVENTS = 200;
const O_RESYNC_OFFSET = 208;
const O_SB_CSUM = 216;
const O_MAX_DEV = 220;
const O_PAD3 = 224;
const PAD3_BYTES = 32;
const O_DEV_ROLES = MD_SB_1_HEADER_BYTES;

/** Largest bad-block log the kernel loads: one page, 8 sectors (super_1_load). */
const BBLOG_MAX_SECTORS = 8;
/** super_1_load refuses a member whose data_size is below this many sectors. */
const MIN_DATA_SIZE = 10n;
const U64_END = 1n << 64n;

// ---------------------------------------------------------------------------------------------- types

/** Why a superblock was refused; `code` is stable for callers and tests, the message says what to do. */
export type MdFormatErrorCode =
  | 'short-buffer' | 'bad-magic' | 'bad-version' | 'max-dev' | 'super-offset' | 'unknown-features'
  | 'unsupported-features' | 'bad-checksum' | 'data-size' | 'padding' | 'data-offset' | 'bblog'
  | 'raid0-layout' | 'ppl' | 'journal-role' | 'device-too-small' | 'bad-field'
  // bitmap superblock (md-bitmap.ts)
  | 'bitmap-magic' | 'bitmap-version' | 'bitmap-chunk' | 'bitmap-daemon-sleep' | 'bitmap-write-behind'
  | 'bitmap-uuid';

/** A refused or unencodable md superblock or bitmap superblock. */
export class MdFormatError extends Error {
  override readonly name = 'MdFormatError';
  constructor(readonly code: MdFormatErrorCode, message: string) {
    super(message);
  }
}

/** The PPL (partial parity log) location that shares bytes 96..99 with `bitmap_offset`. */
export interface MdPpl {
  /** Sectors from the superblock to the log (signed). */
  offset: number;
  /** Sectors reserved for the log. */
  size: number;
}

/** The fields of a version-1 superblock; `encodeMdSuperblock` takes these and computes the checksum. */
export interface MdSuperblockFields {
  /** `feature_map`: MD_FEATURE_* bits. */
  featureMap: number;
  /** `set_uuid`, 16 bytes: the array's identity (mdadm's "Array UUID"). */
  setUuid: Uint8Array;
  /** `set_name`: up to 32 bytes, one character per byte (mdadm writes "homehost:name", ASCII, NUL-padded). */
  setName: string;
  /** `ctime`: low 40 bits seconds since the epoch, top 24 bits microseconds (see mdTime). */
  ctime: bigint;
  /** `level`: 1, 4, 5, 6, 10, 0, -1 linear, -4 multipath. */
  level: number;
  /** `layout`: ALGORITHM_* for raid4/5/6, near/far/offset bits for raid10, 0 for raid1. */
  layout: number;
  /** `size`: sectors of each member used for the array (mdadm's "Used Dev Size"). */
  size: bigint;
  /** `chunksize`, in sectors (0 for raid1). */
  chunkSectors: number;
  /** `raid_disks`: slots in the array (the larger count during a reshape). */
  raidDisks: number;
  /** `bitmap_offset`: signed sectors from the superblock to the bitmap; meaningful with MD_FEATURE_BITMAP_OFFSET. */
  bitmapOffset: number;
  /** With MD_FEATURE_PPL or MD_FEATURE_MULTIPLE_PPLS the same bytes hold this instead of `bitmapOffset`. */
  ppl: MdPpl | null;
  /** Reshape fields, meaningful with MD_FEATURE_RESHAPE_ACTIVE. */
  newLevel: number;
  reshapePosition: bigint;
  deltaDisks: number;
  newLayout: number;
  newChunk: number;
  /** Signed sectors added to `dataOffset` in the new layout (MD_FEATURE_NEW_OFFSET). */
  newOffset: number;
  /** `data_offset`: the sector of this member where array data starts. */
  dataOffset: bigint;
  /** `data_size`: sectors of this member usable for data. */
  dataSize: bigint;
  /** `super_offset`: the sector of this member where this superblock sits (8 for 1.2). */
  superOffset: bigint;
  /** `recovery_offset` (or a journal device's `journal_tail`): sectors from `dataOffset` already recovered. */
  recoveryOffset: bigint;
  /** `dev_number`: this member's permanent index into `devRoles` (not its slot). */
  devNumber: number;
  /** `cnt_corrected_read`: read errors corrected by rewriting. */
  cntCorrectedRead: number;
  /** `device_uuid`, 16 bytes (mdadm's "Device UUID"; the kernel ignores it). */
  deviceUuid: Uint8Array;
  /** `devflags`: MD_DEVFLAG_WRITEMOSTLY, MD_DEVFLAG_FAILFAST. */
  devflags: number;
  /** Bad-block log: `bblog_shift` (sectors to block size), `bblog_size` (sectors), `bblog_offset` (signed sectors from the superblock). */
  bblogShift: number;
  bblogSize: number;
  bblogOffset: number;
  /** `utime`: last update, in the same format as `ctime`. */
  utime: bigint;
  /** `events`: incremented at every superblock update; the freshest member has the most. */
  events: bigint;
  /** `resync_offset`: sectors (from `dataOffset`) known in sync; MD_MAX_SECTOR means clean. */
  resyncOffset: bigint;
  /** `dev_roles[max_dev]`: the role of each dev_number; `max_dev` is this array's length. */
  devRoles: number[];
}

/** A decoded superblock: the fields plus the checksum that was on disk (it matched). */
export interface MdSuperblock extends MdSuperblockFields {
  sbCsum: number;
}

/** Context for decodeMdSuperblock: which minor version is expected, and what the kernel would know. */
export interface MdDecodeOptions {
  /** 2 (default): 1.2, superblock at sector 8. 1: at sector 0. 0: near the end (needs `deviceSectors`). */
  minorVersion?: 0 | 1 | 2;
  /** The member's size in sectors: enables the kernel's "device too small for data_size" check. */
  deviceSectors?: bigint;
  /** The member's logical block size (the kernel rounds the superblock to it); 512 by default. */
  logicalBlockSize?: number;
  /** Feature bits the caller handles; a superblock with others is refused. MD_FEATURE_ALL by default. */
  supportedFeatures?: number;
}

// --------------------------------------------------------------------------------------------- helpers

/** `seconds` (and microseconds) since the epoch in md's time format: seconds in bits 0-39, microseconds above. */
export function mdTime(seconds: number, micros = 0): bigint {
  if (!Number.isSafeInteger(seconds) || seconds < 0 || seconds >= 2 ** 40) throw new RangeError(`md time: ${seconds} seconds is out of range`);
  if (!Number.isInteger(micros) || micros < 0 || micros >= 2 ** 24) throw new RangeError(`md time: ${micros} microseconds is out of range`);
  return (BigInt(micros) << 40n) | BigInt(seconds);
}

/** The seconds part of an md time (what mdadm prints). */
export function mdTimeSeconds(t: bigint): number {
  return Number(t & ((1n << 40n) - 1n));
}

/** A UUID as mdadm prints it: four groups of 8 hex digits joined by ':', bytes in on-disk order. */
export function mdUuidString(uuid: Uint8Array): string {
  const hex = Array.from(uuid, (b) => b.toString(16).padStart(2, '0')).join('');
  return [0, 8, 16, 24].map((i) => hex.slice(i, i + 8)).join(':');
}

/** Parses a UUID written as 32 hex digits with any ':', '-' or '.' separators (mdadm's and the usual forms). */
export function parseMdUuid(s: string): Uint8Array {
  const hex = s.replace(/[:.-]/g, '');
  if (!/^[0-9a-fA-F]{32}$/.test(hex)) throw new MdFormatError('bad-field', `"${s}" is not a UUID: write 32 hex digits, optionally grouped with ':' or '-'`);
  return Uint8Array.from({ length: 16 }, (_, i) => parseInt(hex.slice(2 * i, 2 * i + 2), 16));
}

/** Names of the bits set in `featureMap` (unknown bits as "0x..."), for messages and tools. */
export function mdFeatureNames(featureMap: number): string[] {
  const out: string[] = [];
  for (let bit = 1; bit !== 0 && bit <= featureMap >>> 0; bit = (bit << 1) >>> 0) {
    if ((featureMap & bit) !== 0) out.push(MD_FEATURE_NAMES.get(bit) ?? `0x${bit.toString(16)}`);
  }
  return out;
}

/** This member's role: its `devRoles` entry, or spare when `devNumber` is past `max_dev` (as the kernel and mdadm read it). */
export function mdDeviceRole(sb: Pick<MdSuperblockFields, 'devNumber' | 'devRoles'>): number {
  return sb.devNumber < sb.devRoles.length ? sb.devRoles[sb.devNumber]! : MD_DISK_ROLE_SPARE;
}

/** A role as words: "active device N", "spare", "faulty", "journal". */
export function mdRoleName(role: number): string {
  if (role === MD_DISK_ROLE_SPARE) return 'spare';
  if (role === MD_DISK_ROLE_FAULTY) return 'faulty';
  if (role === MD_DISK_ROLE_JOURNAL) return 'journal';
  if (role <= MD_DISK_ROLE_MAX) return `active device ${role}`;
  return `unknown role 0x${role.toString(16)}`;
}

/** Bytes a superblock with `maxDev` roles occupies on disk: `256 + 2 * maxDev` rounded up to `blockSize`. */
export function mdSuperblockBytes(maxDev: number, blockSize = 512): number {
  const raw = MD_SB_1_HEADER_BYTES + 2 * maxDev;
  return Math.ceil(raw / blockSize) * blockSize;
}

/**
 * The sector where a 1.`minor` superblock sits on a member of `deviceSectors` sectors: 1.2 at 8, 1.1 at 0,
 * 1.0 at least 8 KiB and less than 12 KiB before the end, 4 KiB-aligned (super_1_load, store_super1).
 */
export function mdSuperOffset(minor: 0 | 1 | 2, deviceSectors?: bigint): bigint {
  if (minor === 2) return BigInt(MD_SB_1_2_OFFSET);
  if (minor === 1) return 0n;
  if (deviceSectors === undefined) throw new RangeError('a 1.0 superblock sits near the end of the member: pass its size in sectors');
  return (deviceSectors - 16n) & ~7n;
}

/**
 * `calc_sb_1_csum` (drivers/md/md.c): the sum of the little-endian u32 words of the first
 * `256 + 2 * max_dev` bytes with `sb_csum` taken as zero (a trailing half word, when max_dev is odd, added
 * as a u16), then the 64-bit sum folded once: low 32 bits plus the carry, truncated to 32 bits.
 * `max_dev` is read from `sb`, which must hold that many bytes.
 */
export function mdSuperblockChecksum(sb: Uint8Array): number {
  const dv = new DataView(sb.buffer, sb.byteOffset, sb.byteLength);
  let size = MD_SB_1_HEADER_BYTES + 2 * dv.getUint32(O_MAX_DEV, true);
  if (size > sb.length) throw new MdFormatError('short-buffer', `checksum: ${size} bytes of superblock needed, ${sb.length} given`);
  let sum = 0; // at most 1024 words of < 2^32 each: < 2^42, exact in a double
  let off = 0;
  for (; size >= 4; size -= 4, off += 4) {
    if (off !== O_SB_CSUM) sum += dv.getUint32(off, true);
  }
  if (size === 2) sum += dv.getUint16(off, true);
  const lo = sum % 2 ** 32;
  const hi = Math.floor(sum / 2 ** 32);
  return (lo + hi) >>> 0;
}

/**
 * The data offset mdadm chooses for a new 1.1/1.2 member of `deviceSectors` sectors with chunk
 * `chunkSectors` (0 for raid1): room for the superblock, bad-block log and bitmap space, plus reshape
 * headroom of up to 128 MiB (about 0.1% of the member, at least two chunks), rounded up to 1 MiB
 * (validate_geometry1 in super1.c). `bitmapSectors` defaults to mdadm's choose_bm_space.
 */
export function mdadmDataOffset(deviceSectors: bigint, chunkSectors: number, bitmapSectors = mdadmBitmapSpace(deviceSectors)): bigint {
  let headroom = 128n * 1024n * 2n;
  const chunk = BigInt(chunkSectors);
  while ((headroom << 10n) > deviceSectors && (chunk === 0n || headroom / 2n >= chunk * 2n)) headroom >>= 1n;
  const raw = 24n + BigInt(bitmapSectors) + headroom;
  const oneMeg = 2048n;
  return ((raw + oneMeg - 1n) / oneMeg) * oneMeg;
}

/**
 * Sectors mdadm leaves for an internal bitmap on a new member of `sectors` sectors (choose_bm_space):
 * 0 below 64 KiB, 4 KiB up to 8 GiB, 64 KiB up to 200 GiB, 128 KiB above.
 */
export function mdadmBitmapSpace(sectors: bigint): number {
  if (sectors < 64n * 2n) return 0;
  if (sectors - 64n * 2n >= 200n * 1024n * 1024n * 2n) return 128 * 2;
  if (sectors - 4n * 2n > 8n * 1024n * 1024n * 2n) return 64 * 2;
  return 4 * 2;
}

/**
 * Why two members cannot belong to one array as the kernel's super_1_load sees it (different set UUID,
 * level, layout or chunk size), or null when they may. The member with more `events` is the fresher.
 */
export function mdArrayMismatch(a: MdSuperblockFields, b: MdSuperblockFields): string | null {
  if (!bytesEqual(a.setUuid, b.setUuid)) {
    return `different array UUIDs (${mdUuidString(a.setUuid)} and ${mdUuidString(b.setUuid)}): they are members of different arrays`;
  }
  const differs = (what: string, x: number, y: number): string =>
    `same array UUID but different ${what} (${x} and ${y}): one superblock is damaged or stale; examine both and assemble from the fresher`;
  if (a.level !== b.level) return differs('levels', a.level, b.level);
  if (a.layout !== b.layout) return differs('layouts', a.layout, b.layout);
  if (a.chunkSectors !== b.chunkSectors) return differs('chunk sizes (sectors)', a.chunkSectors, b.chunkSectors);
  return null;
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

// ---------------------------------------------------------------------------------------------- decode

/**
 * Decodes the version-1 superblock at the start of `bytes` (what was read at the superblock's sector;
 * the kernel reads 4 KiB) and applies every check of the kernel's super_1_load, and those of
 * super_1_validate that need no other member, in this order, each refusal an MdFormatError whose message
 * names the fault: too few bytes, magic, major version, max_dev, super_offset against `minorVersion`,
 * feature bits unknown to the kernel, checksum, data_size < 10, non-zero padding, data_offset (and the
 * reshape's new offset) overlapping the superblock, bad-block log too large or without offset,
 * raid0-layout on another level, PPL with a bitmap or journal or both PPL kinds, a journal role without
 * the journal feature, data_size beyond `deviceSectors`; last, a valid superblock using features outside
 * `supportedFeatures` (the caller's policy, not the kernel's).
 */
export function decodeMdSuperblock(bytes: Uint8Array, opts: MdDecodeOptions = {}): MdSuperblock {
  const minor = opts.minorVersion ?? 2;
  if (bytes.length < MD_SB_1_HEADER_BYTES) {
    throw new MdFormatError(
      'short-buffer',
      `an md superblock needs at least ${MD_SB_1_HEADER_BYTES} bytes, ${bytes.length} given: read ${MD_SB_1_READ_BYTES} bytes at the superblock's offset`,
    );
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const u32 = (o: number): number => dv.getUint32(o, true);
  const s32 = (o: number): number => dv.getInt32(o, true);
  const u64 = (o: number): bigint => dv.getBigUint64(o, true);

  // super_1_load: "sb->magic != cpu_to_le32(MD_SB_MAGIC) || sb->major_version != cpu_to_le32(1) ||
  // le32_to_cpu(sb->max_dev) > (4096-256)/2 || le64_to_cpu(sb->super_offset) != rdev->sb_start ||
  // (le32_to_cpu(sb->feature_map) & ~MD_FEATURE_ALL) != 0" -> -EINVAL, one check at a time here.
  const magic = u32(O_MAGIC);
  if (magic !== MD_SB_MAGIC) {
    throw new MdFormatError(
      'bad-magic',
      `no md superblock here: magic is 0x${hex32(magic)}, not 0x${hex32(MD_SB_MAGIC)} (wrong offset, not an md member, or 0.90 metadata at the end of the device)`,
    );
  }
  const major = u32(O_MAJOR);
  if (major !== MD_SB_MAJOR_VERSION) {
    throw new MdFormatError('bad-version', `md superblock major version ${major} is not supported: only version-1 superblocks (1.0, 1.1, 1.2) are read`);
  }
  const maxDev = u32(O_MAX_DEV);
  if (maxDev > MD_SB_1_MAX_DEV) {
    throw new MdFormatError(
      'max-dev',
      `md superblock max_dev ${maxDev} exceeds the kernel's limit of ${MD_SB_1_MAX_DEV} (roles must fit in 4 KiB): the superblock is corrupt`,
    );
  }
  const needed = MD_SB_1_HEADER_BYTES + 2 * maxDev;
  if (bytes.length < needed) {
    throw new MdFormatError(
      'short-buffer',
      `md superblock with max_dev ${maxDev} needs ${needed} bytes, ${bytes.length} given: read ${MD_SB_1_READ_BYTES} bytes at the superblock's offset`,
    );
  }
  const superOffset = u64(O_SUPER_OFFSET);
  const expected = mdSuperOffset(minor, opts.deviceSectors);
  if (superOffset !== expected) {
    throw new MdFormatError(
      'super-offset',
      `md superblock says it sits at sector ${superOffset}, but a 1.${minor} superblock sits at sector ${expected}: this is a copy from elsewhere (or another minor version); do not assemble from it`,
    );
  }
  const featureMap = u32(O_FEATURES);
  const unknown = (featureMap & ~MD_FEATURE_ALL) >>> 0;
  if (unknown !== 0) {
    throw new MdFormatError(
      'unknown-features',
      `md superblock has feature bits 0x${unknown.toString(16)} that the kernel does not know (feature_map 0x${featureMap.toString(16)}): it was written by something newer, or is corrupt`,
    );
  }
  // "if (calc_sb_1_csum(sb) != sb->sb_csum) ... invalid superblock checksum"
  const onDisk = u32(O_SB_CSUM);
  const csum = mdSuperblockChecksum(bytes);
  if (csum !== onDisk) {
    throw new MdFormatError(
      'bad-checksum',
      `md superblock checksum is 0x${hex32(onDisk)} but the contents sum to 0x${hex32(csum)}: the superblock is torn or corrupt; use another member's`,
    );
  }
  // "if (le64_to_cpu(sb->data_size) < 10) ... data_size too small"
  const dataSize = u64(O_DATA_SIZE);
  if (dataSize < MIN_DATA_SIZE) {
    throw new MdFormatError(
      'data-size',
      `md superblock data_size is ${dataSize} sectors, below the kernel's minimum of ${MIN_DATA_SIZE}: the superblock is corrupt`,
    );
  }
  // "if (sb->pad0 || sb->pad3[0] || memcmp(sb->pad3, sb->pad3+1, ...)) /* Some padding is non-zero, might be a new feature */"
  const pad3 = bytes.subarray(O_PAD3, O_PAD3 + PAD3_BYTES);
  if (u32(O_PAD0) !== 0 || pad3.some((b) => b !== 0)) {
    throw new MdFormatError(
      'padding',
      'md superblock has non-zero padding (pad0 or pad3), which the kernel takes for a feature it does not know: it was written by something newer, or is corrupt',
    );
  }
  const dataOffset = u64(O_DATA_OFFSET);
  const newOffset = s32(O_NEW_OFFSET);
  // "if (minor_version && rdev->data_offset < sb_start + (rdev->sb_size/512)) return -EINVAL", and the same for
  // new_data_offset; sb_size is 256 + 2 * max_dev rounded up to the logical block size.
  if (minor !== 0) {
    const lbs = opts.logicalBlockSize ?? 512;
    const end = superOffset + BigInt(mdSuperblockBytes(maxDev, lbs) / SECTOR);
    if (dataOffset < end) {
      throw new MdFormatError(
        'data-offset',
        `md superblock data_offset ${dataOffset} overlaps the superblock (sectors ${superOffset}..${end - 1n}): the superblock is corrupt`,
      );
    }
    if ((featureMap & MD_FEATURE_RESHAPE_ACTIVE) !== 0 && (featureMap & MD_FEATURE_NEW_OFFSET) !== 0 && dataOffset + BigInt(newOffset) < end) {
      throw new MdFormatError(
        'data-offset',
        `md superblock reshape moves data to sector ${dataOffset + BigInt(newOffset)}, over the superblock (sectors ${superOffset}..${end - 1n}): the superblock is corrupt`,
      );
    }
  }
  const bblogSize = dv.getUint16(O_BBLOG_SIZE, true);
  const bblogOffset = s32(O_BBLOG_OFFSET);
  // bad blocks: "if (sectors > (PAGE_SIZE / 512)) return -EINVAL; ... if (offset == 0) return -EINVAL"
  if ((featureMap & MD_FEATURE_BAD_BLOCKS) !== 0) {
    if (bblogSize > BBLOG_MAX_SECTORS) {
      throw new MdFormatError(
        'bblog',
        `md superblock bad-block log is ${bblogSize} sectors, more than the kernel loads (${BBLOG_MAX_SECTORS}): the superblock is corrupt`,
      );
    }
    if (bblogOffset === 0) {
      throw new MdFormatError('bblog', 'md superblock says there are bad blocks but the bad-block log offset is 0: the superblock is corrupt');
    }
  }
  const level = s32(O_LEVEL);
  // "if ((le32_to_cpu(sb->feature_map) & MD_FEATURE_RAID0_LAYOUT) && sb->level != 0) return -EINVAL"
  if ((featureMap & MD_FEATURE_RAID0_LAYOUT) !== 0 && level !== 0) {
    throw new MdFormatError('raid0-layout', `md superblock has the raid0-layout feature on a level ${level} array: the superblock is corrupt`);
  }
  const anyPpl = (featureMap & (MD_FEATURE_PPL | MD_FEATURE_MULTIPLE_PPLS)) !== 0;
  // super_1_validate: PPL "& (MD_FEATURE_BITMAP_OFFSET | MD_FEATURE_JOURNAL)" -> -EINVAL; PPL with MULTIPLE_PPLS -> -EINVAL.
  if (anyPpl) {
    if ((featureMap & (MD_FEATURE_BITMAP_OFFSET | MD_FEATURE_JOURNAL)) !== 0) {
      throw new MdFormatError(
        'ppl',
        'md superblock has a partial parity log together with a bitmap or journal, which the kernel refuses: the superblock is corrupt',
      );
    }
    if ((featureMap & MD_FEATURE_PPL) !== 0 && (featureMap & MD_FEATURE_MULTIPLE_PPLS) !== 0) {
      throw new MdFormatError(
        'ppl',
        'md superblock has both the single and the multiple partial-parity-log features, which the kernel refuses: the superblock is corrupt',
      );
    }
  }
  // super_1_validate: "case MD_DISK_ROLE_JOURNAL: if (!(feature_map & MD_FEATURE_JOURNAL)) ... return -EINVAL".
  const devRoles = Array.from({ length: maxDev }, (_, i) => dv.getUint16(O_DEV_ROLES + 2 * i, true));
  const devNumber = u32(O_DEV_NUMBER);
  if (mdDeviceRole({ devNumber, devRoles }) === MD_DISK_ROLE_JOURNAL && (featureMap & MD_FEATURE_JOURNAL) === 0) {
    throw new MdFormatError(
      'journal-role',
      'md superblock says this member is a journal but the array has no journal feature; the kernel ignores such a device: remove it from the array',
    );
  }
  // "sectors = i_size >> 9; sectors -= rdev->data_offset" (1.0: sb_start); "if (sectors < le64_to_cpu(sb->data_size)) return -EINVAL".
  if (opts.deviceSectors !== undefined) {
    const room = minor === 0 ? superOffset : opts.deviceSectors - dataOffset;
    if (room < dataSize) {
      throw new MdFormatError(
        'device-too-small',
        `md superblock says ${dataSize} sectors of data, but the member has room for ${room < 0n ? 0n : room} from data_offset ${dataOffset}: the member was truncated, or belongs to a larger device`,
      );
    }
  }
  const supported = opts.supportedFeatures ?? MD_FEATURE_ALL;
  const unsupported = (featureMap & ~supported) >>> 0;
  if (unsupported !== 0) {
    throw new MdFormatError(
      'unsupported-features',
      `md superblock uses ${mdFeatureNames(unsupported).join(', ')}, which this build does not handle: assemble the array with the kernel (mdadm) instead, or finish/undo that operation there first`,
    );
  }
  return {
    featureMap,
    setUuid: bytes.slice(O_SET_UUID, O_SET_UUID + 16),
    setName: decodeName(bytes.subarray(O_SET_NAME, O_SET_NAME + SET_NAME_BYTES)),
    ctime: u64(O_CTIME),
    level,
    layout: u32(O_LAYOUT),
    size: u64(O_SIZE),
    chunkSectors: u32(O_CHUNK),
    raidDisks: u32(O_RAID_DISKS),
    bitmapOffset: s32(O_BITMAP_OFFSET),
    ppl: anyPpl ? { offset: dv.getInt16(O_BITMAP_OFFSET, true), size: dv.getUint16(O_BITMAP_OFFSET + 2, true) } : null,
    newLevel: s32(O_NEW_LEVEL),
    reshapePosition: u64(O_RESHAPE_POS),
    deltaDisks: s32(O_DELTA_DISKS),
    newLayout: u32(O_NEW_LAYOUT),
    newChunk: u32(O_NEW_CHUNK),
    newOffset,
    dataOffset,
    dataSize,
    superOffset,
    recoveryOffset: u64(O_RECOVERY_OFFSET),
    devNumber,
    cntCorrectedRead: u32(O_CNT_CORRECTED),
    deviceUuid: bytes.slice(O_DEVICE_UUID, O_DEVICE_UUID + 16),
    devflags: bytes[O_DEVFLAGS]!,
    bblogShift: bytes[O_BBLOG_SHIFT]!,
    bblogSize,
    bblogOffset,
    utime: u64(O_UTIME),
    events: u64(O_EVENTS),
    resyncOffset: u64(O_RESYNC_OFFSET),
    sbCsum: onDisk,
    devRoles,
  };
}

function hex32(n: number): string {
  return (n >>> 0).toString(16).padStart(8, '0');
}

/** `set_name`: the bytes before the first NUL, one character per byte. */
function decodeName(b: Uint8Array): string {
  const end = b.indexOf(0);
  return String.fromCharCode(...(end < 0 ? b : b.subarray(0, end)));
}

// ---------------------------------------------------------------------------------------------- encode

/** Options for encodeMdSuperblock. */
export interface MdEncodeOptions {
  /** Round the output up to this many bytes: 512 (default, what mdadm writes) or the device's logical block size. */
  blockSize?: number;
}

/**
 * Encodes `sb` as the bytes written at the superblock's sector: `256 + 2 * devRoles.length` rounded up to
 * `blockSize` (512 by default, as mdadm's store_super1), the role slots past `max_dev` filled with 0xff as
 * mdadm leaves them, `pad0`/`pad3` zero, and `sb_csum` computed (any `sbCsum` on `sb` is ignored).
 * Throws MdFormatError ('bad-field') naming the first field out of its on-disk range.
 */
export function encodeMdSuperblock(sb: MdSuperblockFields, opts: MdEncodeOptions = {}): Uint8Array {
  const blockSize = opts.blockSize ?? 512;
  if (!Number.isInteger(blockSize) || blockSize < 512 || (blockSize & (blockSize - 1)) !== 0) {
    throw new MdFormatError('bad-field', `block size ${blockSize} is invalid: use 512 or a larger power of two`);
  }
  const maxDev = sb.devRoles.length;
  if (maxDev > MD_SB_1_MAX_DEV) {
    throw new MdFormatError(
      'bad-field',
      `${maxDev} device roles do not fit: a version-1 superblock holds at most ${MD_SB_1_MAX_DEV}`,
    );
  }
  const out = new Uint8Array(mdSuperblockBytes(maxDev, blockSize));
  const dv = new DataView(out.buffer);
  const u8 = (o: number, v: number, name: string): void => { dv.setUint8(o, checkInt(v, 0, 0xff, name)); };
  const u16 = (o: number, v: number, name: string): void => { dv.setUint16(o, checkInt(v, 0, 0xffff, name), true); };
  const u32 = (o: number, v: number, name: string): void => { dv.setUint32(o, checkInt(v, 0, 0xffffffff, name), true); };
  const s32 = (o: number, v: number, name: string): void => { dv.setInt32(o, checkInt(v, -(2 ** 31), 2 ** 31 - 1, name), true); };
  const u64 = (o: number, v: bigint, name: string): void => {
    if (typeof v !== 'bigint' || v < 0n || v >= U64_END) throw new MdFormatError('bad-field', `${name} ${String(v)} is not a u64 bigint`);
    dv.setBigUint64(o, v, true);
  };
  u32(O_MAGIC, MD_SB_MAGIC, 'magic');
  u32(O_MAJOR, MD_SB_MAJOR_VERSION, 'major_version');
  u32(O_FEATURES, sb.featureMap, 'featureMap');
  out.set(checkBytes(sb.setUuid, 16, 'setUuid'), O_SET_UUID);
  out.set(encodeName(sb.setName), O_SET_NAME);
  u64(O_CTIME, sb.ctime, 'ctime');
  s32(O_LEVEL, sb.level, 'level');
  u32(O_LAYOUT, sb.layout, 'layout');
  u64(O_SIZE, sb.size, 'size');
  u32(O_CHUNK, sb.chunkSectors, 'chunkSectors');
  u32(O_RAID_DISKS, sb.raidDisks, 'raidDisks');
  if ((sb.featureMap & (MD_FEATURE_PPL | MD_FEATURE_MULTIPLE_PPLS)) !== 0) {
    if (sb.ppl === null) throw new MdFormatError('bad-field', 'featureMap has a PPL feature but ppl is null: give the log\'s offset and size');
    dv.setInt16(O_BITMAP_OFFSET, checkInt(sb.ppl.offset, -32768, 32767, 'ppl.offset'), true);
    u16(O_BITMAP_OFFSET + 2, sb.ppl.size, 'ppl.size');
  } else {
    s32(O_BITMAP_OFFSET, sb.bitmapOffset, 'bitmapOffset');
  }
  s32(O_NEW_LEVEL, sb.newLevel, 'newLevel');
  u64(O_RESHAPE_POS, sb.reshapePosition, 'reshapePosition');
  s32(O_DELTA_DISKS, sb.deltaDisks, 'deltaDisks');
  u32(O_NEW_LAYOUT, sb.newLayout, 'newLayout');
  u32(O_NEW_CHUNK, sb.newChunk, 'newChunk');
  s32(O_NEW_OFFSET, sb.newOffset, 'newOffset');
  u64(O_DATA_OFFSET, sb.dataOffset, 'dataOffset');
  u64(O_DATA_SIZE, sb.dataSize, 'dataSize');
  u64(O_SUPER_OFFSET, sb.superOffset, 'superOffset');
  u64(O_RECOVERY_OFFSET, sb.recoveryOffset, 'recoveryOffset');
  u32(O_DEV_NUMBER, sb.devNumber, 'devNumber');
  u32(O_CNT_CORRECTED, sb.cntCorrectedRead, 'cntCorrectedRead');
  out.set(checkBytes(sb.deviceUuid, 16, 'deviceUuid'), O_DEVICE_UUID);
  u8(O_DEVFLAGS, sb.devflags, 'devflags');
  u8(O_BBLOG_SHIFT, sb.bblogShift, 'bblogShift');
  u16(O_BBLOG_SIZE, sb.bblogSize, 'bblogSize');
  s32(O_BBLOG_OFFSET, sb.bblogOffset, 'bblogOffset');
  u64(O_UTIME, sb.utime, 'utime');
  u64(O_EVENTS, sb.events, 'events');
  u64(O_RESYNC_OFFSET, sb.resyncOffset, 'resyncOffset');
  u32(O_MAX_DEV, maxDev, 'max_dev');
  sb.devRoles.forEach((r, i) => u16(O_DEV_ROLES + 2 * i, r, `devRoles[${i}]`));
  out.fill(0xff, O_DEV_ROLES + 2 * maxDev);
  dv.setUint32(O_SB_CSUM, mdSuperblockChecksum(out), true);
  return out;
}

function checkInt(v: number, min: number, max: number, name: string): number {
  if (!Number.isInteger(v) || v < min || v > max) throw new MdFormatError('bad-field', `${name} ${v} does not fit its on-disk field (${min}..${max})`);
  return v;
}

function checkBytes(b: Uint8Array, n: number, name: string): Uint8Array {
  if (!(b instanceof Uint8Array) || b.length !== n) throw new MdFormatError('bad-field', `${name} must be ${n} bytes`);
  return b;
}

function encodeName(name: string): Uint8Array {
  if (name.length > SET_NAME_BYTES) {
    throw new MdFormatError(
      'bad-field',
      `set name "${name}" is ${name.length} bytes: md keeps at most ${SET_NAME_BYTES} (mdadm writes at most 31)`,
    );
  }
  const out = new Uint8Array(SET_NAME_BYTES);
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (c === 0 || c > 0xff) {
      throw new MdFormatError(
        'bad-field',
        `set name "${name}" has character U+${c.toString(16).padStart(4, '0')}: use bytes 1..255 (ASCII in practice)`,
      );
    }
    out[i] = c;
  }
  return out;
}

/** Flags of `devflags` as words, for tools: "write-mostly", "failfast". */
export function mdDevflagNames(devflags: number): string[] {
  const out: string[] = [];
  if ((devflags & MD_DEVFLAG_WRITEMOSTLY) !== 0) out.push('write-mostly');
  if ((devflags & MD_DEVFLAG_FAILFAST) !== 0) out.push('failfast');
  return out;
}
