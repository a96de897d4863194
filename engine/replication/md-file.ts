// The metadata file: whole-buffer positional I/O that throws errno errors, counted fdatasync, the superblock slots.
//
// Everything that reads or writes the metadata goes through here (via MetadataFile for an open
// Metadata, its bitmaps and activity log; directly for create and open), so a failed pread, pwrite or
// fdatasync always surfaces as the same kind of error: an Error with `code` and `errno`, as fs throws,
// on which the engine detaches the disk.
import util from 'node:util';
import fs from 'node:fs';
import { EOPNOTSUPP } from '../os.js';
import { preadUpTo, pwriteDurable, pwriteFull, syncData, zeroRange } from '../positional-io.js';
import {
  AL_TX_UNITS, BITMAP_PAGE_BYTES, IO_UNITS, KIND_AL, KIND_BITMAP, MD_UNIT, decodeMoveMarker, decodeSuperblock, encodeBitmapPage,
  encodeMoveMarker, encodeSuperblock, encodeTransaction, pagesPerPeer, sealUnit, superblockDamage, unitView,
  type BadSuperblock, type MetadataIo, type MetadataStats, type Superblock,
} from './md-format.js';

/** A failed metadata read, write or fdatasync as the errno error fs would throw (the engine detaches on it). */
function ioError(op: string, st: number, path: string): Error {
  const code = util.getSystemErrorName(st);
  return Object.assign(new Error(`${code}: metadata ${op} failed on ${path}`), { errno: st, code, syscall: op });
}

/** Writes all of `buf` at `pos` of `fd`. */
function pwriteAll(fd: number, buf: Uint8Array, pos: number, path: string): void {
  const st = pwriteFull(fd, buf, 0, buf.length, pos);
  if (st < 0) throw ioError('write', st, path);
}

/** Reads `buf.length` bytes at `pos` of `fd`; bytes past the end of the file read as zero. */
function preadAll(fd: number, buf: Uint8Array, pos: number, path: string): void {
  const n = preadUpTo(fd, buf, 0, buf.length, pos);
  if (n < 0) throw ioError('read', n, path);
  buf.fill(0, n);
}

/** fdatasync of `fd`. */
function fdatasync(fd: number, path: string): void {
  const st = syncData(fd);
  if (st < 0) throw ioError('fdatasync', st, path);
}

/** The open metadata file: positional I/O, counted fdatasync, and the owner's "in use" mark. */
export class MetadataFile implements MetadataIo {
  readonly stats: MetadataStats = { alWrites: 0, superblockWrites: 0, bitmapPageWrites: 0, syncs: 0 };
  /** Set by the Metadata that owns the file. */
  onMarkInUse: () => void = () => undefined;

  constructor(readonly fd: number, readonly path: string) {}

  pread(buf: Uint8Array, pos: number): void {
    preadAll(this.fd, buf, pos, this.path);
  }

  pwrite(buf: Uint8Array, pos: number): void {
    pwriteAll(this.fd, buf, pos, this.path);
  }

  sync(): void {
    fdatasync(this.fd, this.path);
    this.stats.syncs++;
  }

  /**
   * A durable write of just this range (RWF_DSYNC): an fdatasync would also flush every dirty page of
   * the file, which with internal metadata is the volume's data; falls back to write + fdatasync.
   */
  pwriteDurable(buf: Uint8Array, pos: number): void {
    this.stats.syncs++;
    if (!this.noDsync) {
      const st = pwriteDurable(this.fd, buf, pos);
      if (st === 0) return;
      if (st !== -EOPNOTSUPP) throw ioError('durable write', st, this.path);
      this.noDsync = true;
    }
    pwriteAll(this.fd, buf, pos, this.path);
    fdatasync(this.fd, this.path);
  }

  /** The system refused RWF_DSYNC once: write + fdatasync from then on. */
  private noDsync = false;

  markInUse(): void {
    this.onMarkInUse();
  }
}

/**
 * Reads both superblock slots at the end of `fd`'s file; the valid one with the highest seq wins.
 * `bad` is the other slot when it holds something that failed its check (see OpenReport.badSuperblock).
 */
export function readSuperblock(fd: number, end: number, path: string): { sb: Superblock; slot: 0 | 1; bad: BadSuperblock | null } | 'version' | null {
  if (end < 2 * MD_UNIT) return null;
  const u = new Uint8Array(MD_UNIT);
  let best: { sb: Superblock; slot: 0 | 1 } | null = null;
  let otherVersion = false;
  const damage: (string | null)[] = [null, null];
  for (const slot of [0, 1] as const) {
    preadAll(fd, u, end - (2 - slot) * MD_UNIT, path);
    const sb = decodeSuperblock(u, slot);
    if (sb === 'version') otherVersion = true;
    else if (sb === null) damage[slot] = slot === 1 && decodeMoveMarker(u) ? null : superblockDamage(u, slot);
    else if (!best || sb.seq > best.sb.seq) best = { sb, slot };
  }
  if (!best) return otherVersion ? 'version' : null;
  const other: 0 | 1 = best.slot === 0 ? 1 : 0;
  const reason = damage[other];
  const bad = reason ? { slot: other, reason, used: best.slot, usedSeq: best.sb.seq } : null;
  return { ...best, bad };
}

/**
 * Lays down fresh metadata in an order that survives a crash: both superblock slots are invalidated
 * first, then the activity log and bitmaps are written, then superblock A; an interrupted create
 * leaves no valid metadata rather than a mix.
 */
export function writeFreshMetadata(fd: number, sb: Superblock, path: string): void {
  const zero = new Uint8Array(2 * MD_UNIT);
  pwriteAll(fd, zero, sb.areaOffset + sb.areaSize - 2 * MD_UNIT, path);
  fdatasync(fd, path);
  const chunk = new Uint8Array(IO_UNITS * MD_UNIT);
  // Activity log: transaction 0 (seq 1) is empty and valid, the other slots are zero (invalid).
  for (let first = 0; first < sb.alSlots; first += IO_UNITS) {
    const n = Math.min(IO_UNITS, sb.alSlots - first);
    chunk.fill(0);
    for (let k = 0; k < n; k++) {
      const unitNo = first + k;
      if (unitNo >= AL_TX_UNITS) break;
      const u = chunk.subarray(k * MD_UNIT, (k + 1) * MD_UNIT);
      sealUnit(u, unitView(u), KIND_AL, 1, sb.mdId, unitNo, 0, 0);
    }
    pwriteAll(fd, chunk.subarray(0, n * MD_UNIT), sb.areaOffset + first * MD_UNIT, path);
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
        sealUnit(u, unitView(u), KIND_BITMAP, 1, sb.mdId, peer, first + k, 0);
      }
      pwriteAll(fd, chunk.subarray(0, n * MD_UNIT), bmBase + (i * ppp + first) * MD_UNIT, path);
    }
  });
  fdatasync(fd, path);
  const u = new Uint8Array(MD_UNIT);
  encodeSuperblock(u, unitView(u), sb, 0);
  pwriteAll(fd, u, sb.areaOffset + sb.areaSize - 2 * MD_UNIT, path);
  fdatasync(fd, path);
}

/** The move marker in superblock slot B at `end` of `fd`'s file (see KIND_MOVED), or null. */
export function readMoveMarker(fd: number, end: number, path: string): { end: number; mdId: bigint } | null {
  if (end < 2 * MD_UNIT) return null;
  const u = new Uint8Array(MD_UNIT);
  preadAll(fd, u, end - MD_UNIT, path);
  return decodeMoveMarker(u);
}

/** Zeroes [from, to) of `fd`'s file (a hole where the file system can punch one) and syncs it. */
export function zeroStale(fd: number, from: number, to: number, path: string): void {
  if (to <= from) return;
  const st = zeroRange(fd, from, to - from, true);
  if (st < 0) throw ioError('write', st, path);
  fdatasync(fd, path);
}

/** The steps of a metadata move, in order, for crash tests (`onStep` may throw to stop there, as a crash would). */
export type MoveStep = 'truncated' | 'marker' | 'area' | 'switched' | 'zeroed' | 'done';

/** What the new area holds: each peer's bitmap bytes (old bits, new bits clear) and the active extents. */
export interface GrownContent {
  bitmaps: readonly Uint8Array[];
  alExtents: readonly number[];
}

/**
 * Moves metadata to the layout `next` (grownSuperblock) in an order that survives a crash at any point:
 * after one, open() finds either the metadata in force before (`cur`) or the new one, whole.
 *
 *   1. the file is cut back to the end of the area in force (a leftover of an earlier attempt goes);
 *   2. the file is grown by one write of the new superblock slots at its new end: slot A empty, slot B
 *      a move marker naming the end of the area in force, which open() follows while slot A is empty;
 *   3. the new area's activity log (one transaction: the active extents) and bitmap pages are written;
 *   4. the new superblock goes to slot A: from here open() uses the new layout (the switch);
 *   5. the stale range (the old area, now inside the data or unused) is zeroed;
 *   6. a second superblock write (slot B, replacing the marker) clears the stale range.
 * Each step is fdatasync'ed before the next. A crash between 4 and 6 leaves the stale range recorded:
 * Metadata.finishMove() zeroes it at the next attach, before any data is served.
 */
export function moveMetadata(fd: number, path: string, cur: Superblock, next: Superblock, content: GrownContent, onStep: (s: MoveStep) => void = () => undefined): void {
  const curEnd = cur.areaOffset + cur.areaSize;
  const end = next.areaOffset + next.areaSize;
  if (fs.fstatSync(fd).size !== curEnd) {
    fs.ftruncateSync(fd, curEnd);
    fdatasync(fd, path);
  }
  onStep('truncated');
  const two = new Uint8Array(2 * MD_UNIT);
  encodeMoveMarker(two.subarray(MD_UNIT), cur.mdId, cur.seq, curEnd);
  pwriteAll(fd, two, end - 2 * MD_UNIT, path);
  fdatasync(fd, path);
  onStep('marker');
  // Activity log: transaction seq 1 in ring slot 0 lists the active extents; the other slots stay empty.
  const tx = new Uint8Array(AL_TX_UNITS * MD_UNIT);
  const views = Array.from({ length: AL_TX_UNITS }, (_, k) => unitView(tx.subarray(k * MD_UNIT, (k + 1) * MD_UNIT)));
  encodeTransaction(tx, views, content.alExtents, 1, 0, next.mdId);
  pwriteAll(fd, tx, next.areaOffset, path);
  const ppp = pagesPerPeer(next.dataSize, next.granularity);
  const bmBase = next.areaOffset + next.alSlots * MD_UNIT;
  const chunk = new Uint8Array(IO_UNITS * MD_UNIT);
  next.peerIds.forEach((peer, i) => {
    const map = content.bitmaps[i]!;
    if (map.length > ppp * BITMAP_PAGE_BYTES) throw new RangeError(`bitmap of ${map.length} bytes does not fit ${ppp} pages`);
    for (let first = 0; first < ppp; first += IO_UNITS) {
      const n = Math.min(IO_UNITS, ppp - first);
      for (let k = 0; k < n; k++) encodeBitmapPage(chunk.subarray(k * MD_UNIT, (k + 1) * MD_UNIT), map, peer, first + k, 1, next.mdId);
      pwriteAll(fd, chunk.subarray(0, n * MD_UNIT), bmBase + (i * ppp + first) * MD_UNIT, path);
    }
  });
  fdatasync(fd, path);
  onStep('area');
  const u = new Uint8Array(MD_UNIT);
  encodeSuperblock(u, unitView(u), next, 0);
  pwriteAll(fd, u, end - 2 * MD_UNIT, path);
  fdatasync(fd, path);
  onStep('switched');
  zeroStale(fd, next.staleFrom, next.staleTo, path);
  onStep('zeroed');
  encodeSuperblock(u, unitView(u), { ...next, seq: next.seq + 1, staleFrom: 0, staleTo: 0 }, 1);
  pwriteAll(fd, u, end - MD_UNIT, path);
  fdatasync(fd, path);
  onStep('done');
}
