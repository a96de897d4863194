// A node's replication metadata (DRBD's drbd_main.c meta-data part): open/create/close, the superblock and generations.
//
// The format (layout, units, superblock fields) is md-format.ts, the file I/O md-file.ts; the
// out-of-sync bitmaps are bitmap.ts and the activity log activity-log.ts. A Metadata owns the file and the
// superblock, composes the two, and orders their writes so that a crash at any point leaves
// metadata that open() accepts and that over-reports (never under-reports) what is out of sync.
import crypto from 'node:crypto';
import fs from 'node:fs';
import type { BitRun } from '../../wasm/index.js';
import { ActivityLog, type ActivityLogGeometry, type RecoveredLog } from './activity-log.js';
import { OutOfSyncBitmaps, type CapturedBitmaps } from './bitmap.js';
import type { HotExtents } from './hot-extents.js';
import { MAX_NODES, advanceGenerations, type Generations, type ReadonlyGenerations } from './frames.js';
import { MetadataFile, moveMetadata, readMoveMarker, readSuperblock, writeFreshMetadata, zeroStale, type MoveStep } from './md-file.js';
import {
  FLAG_CLEAN, FLAG_PRIMARY, MAX_HISTORY, MD_FORMAT_VERSION, MD_UNIT, MetadataError, checkGenerations, checkResyncProgress,
  checkGeometryOptions, encodeSuperblock, floorUnit, freshSuperblock, grownSuperblock, layoutOf, superblockProblem, unitView,
  type MetadataIo, type MetadataLayout, type MetadataStats, type OpenReport, type PersistedDiskState, type Superblock,
} from './md-format.js';

export {
  AL_MAX_EXTENTS, BITMAP_PAGE_BYTES, DEFAULT_AL_EXTENTS, DEFAULT_AL_EXTENT_SIZE, DEFAULT_AL_SLOTS, DEFAULT_GRANULARITY,
  MAX_HISTORY, MD_FORMAT_VERSION, MD_UNIT, MetadataError, metadataSize,
  type BadSuperblock, type MetadataLayout, type MetadataStats, type OpenReport, type PersistedDiskState,
} from './md-format.js';
export type { MoveStep } from './md-file.js';
export type { CapturedBitmaps } from './bitmap.js';

// ---------------------------------------------------------------------------------------------- types

/** Where a node's metadata lives. */
export interface MetadataLocation {
  backingFile: string;
  /** A separate metadata file, or null for internal metadata at the end of the backing file. */
  metaFile: string | null;
  /** The data device's bytes when it is no file to stat (an md array); external metadata only. */
  backingSize?: number;
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

interface Init {
  loc: MetadataLocation;
  file: MetadataFile;
  layout: MetadataLayout;
  sb: Superblock;
  sbSlot: 0 | 1;
  /** All clear (create) or as read from disk (open). */
  bitmaps: OutOfSyncBitmaps;
  /** The activity log as found: its extents are active. */
  log: RecoveredLog;
  report: OpenReport;
}

// ---------------------------------------------------------------------------------------- helpers

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

function sizeOf(path: string, what: string): number {
  try {
    return fs.statSync(path).size;
  } catch (e) {
    throw new MetadataError(`cannot stat ${what} ${path}: ${(e as Error).message}`);
  }
}

function emptyReport(): OpenReport {
  return { crashedPrimary: false, badPages: 0, alExtentsRecovered: [], cleanShutdown: true, alLost: false, badSuperblock: null, staleRange: null };
}

/** Throws unless `g` is a u64 generation identifier. */
function checkGeneration(g: bigint, what: string): void {
  if (typeof g !== 'bigint' || g < 0n || g >= 1n << 64n) throw new MetadataError(`${what} ${String(g)} is not a u64 generation`);
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
  readonly stats: MetadataStats;

  /**
   * Generation identifiers, read-only: change them through setInitialGeneration(), rotateGeneration(),
   * adoptGenerations() and setBitmapBase(); writeSuperblock() persists them.
   */
  get gens(): ReadonlyGenerations {
    return this.g;
  }

  private g: Generations;
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

  /** Where the metadata lives (the backing file, and the metadata file when external). */
  readonly location: MetadataLocation;
  private readonly file: MetadataFile;
  private closed = false;
  /** See Superblock.staleFrom: set after an interrupted move until finishMove(). */
  private staleFrom: number;
  private staleTo: number;
  private readonly mdId: bigint;
  private sbSlot: 0 | 1;
  private sbSeq: number;
  private onDiskClean: boolean;
  private readonly alSlots: number;
  private readonly bitmaps: OutOfSyncBitmaps;
  private readonly al: ActivityLog;
  private readonly unit = new Uint8Array(MD_UNIT);
  private readonly unitView = unitView(this.unit);

  private constructor(init: Init) {
    const sb = init.sb;
    this.location = init.loc;
    this.staleFrom = sb.staleFrom;
    this.staleTo = sb.staleTo;
    this.file = init.file;
    this.stats = init.file.stats;
    this.file.onMarkInUse = () => this.markInUse();
    this.mdId = sb.mdId;
    this.nodeId = sb.nodeId;
    this.dataSize = sb.dataSize;
    this.granularity = sb.granularity;
    this.peerIds = Object.freeze([...sb.peerIds]);
    this.bits = Math.ceil(sb.dataSize / sb.granularity);
    this.alExtentSize = sb.alExtentSize;
    this.alExtents = sb.alExtents;
    this.alSlots = sb.alSlots;
    this.g = sb.gens;
    this.disk = sb.disk;
    this.promotedAt = sb.promotedAt;
    this.resyncFrom = sb.resyncFrom;
    this.resyncTotal = sb.resyncTotal;
    this.primary = (sb.flags & FLAG_PRIMARY) !== 0;
    this.sbSlot = init.sbSlot;
    this.sbSeq = sb.seq;
    this.onDiskClean = (sb.flags & FLAG_CLEAN) !== 0;
    this.openReport = init.report;
    this.layout = init.layout;
    this.bitmaps = init.bitmaps;
    this.al = new ActivityLog(Metadata.alGeometry(sb, init.layout), this.file, init.log, () => this.flushBitmaps());
  }

  /** The bitmap store (all clear) of the metadata described by `sb` at `layout`. */
  private static bitmapsOf(sb: Superblock, layout: MetadataLayout, file: MetadataIo): OutOfSyncBitmaps {
    return new OutOfSyncBitmaps({
      mdId: sb.mdId, nodeId: sb.nodeId, peerIds: sb.peerIds, dataSize: sb.dataSize, granularity: sb.granularity,
      pagesPerPeer: layout.pagesPerPeer, bitmapOffsets: layout.bitmapOffsets,
    }, file);
  }

  /** The activity log's view of the metadata described by `sb` at `layout`. */
  private static alGeometry(sb: Superblock, layout: MetadataLayout): ActivityLogGeometry {
    return {
      mdId: sb.mdId, dataSize: sb.dataSize, alExtentSize: sb.alExtentSize, alExtents: sb.alExtents,
      alSlots: sb.alSlots, alOffset: layout.alOffset,
    };
  }

  // ------------------------------------------------------------------------------------------ create

  /**
   * Writes fresh metadata: generations all 0n (DRBD's "just created"), disk Inconsistent, bitmaps all
   * clear, flags clean, activity log empty. External: the metadata file is created or overwritten.
   * Internal: the backing file must exist and hold at least 4 KiB of data plus the metadata. Refuses
   * when valid metadata already exists there, unless `opts.force`.
   */
  static create(opts: CreateOptions): Metadata {
    checkGeometryOptions(opts);
    if (opts.backingSize !== undefined && opts.metaFile === null) throw new MetadataError('internal metadata lives in the backing file: give a file, not a size');
    const backingSize = opts.backingSize ?? sizeOf(opts.backingFile, 'backing file');
    const path = opts.metaFile ?? opts.backingFile;
    const sb = freshSuperblock(opts, opts.metaFile === null, backingSize, crypto.randomBytes(8).readBigUInt64LE(0));
    if (!opts.force) Metadata.refuseExisting(path);

    let fd: number;
    try {
      if (opts.metaFile === null) {
        fd = fs.openSync(path, 'r+');
      } else {
        if (fs.existsSync(path) && !fs.statSync(path).isFile()) {
          throw new MetadataError(`external metadata ${path} must be a regular file`);
        }
        fd = fs.openSync(path, 'w+');
        fs.ftruncateSync(fd, sb.areaSize);
      }
    } catch (e) {
      if (e instanceof MetadataError) throw e;
      throw new MetadataError(`cannot open ${path} for writing: ${(e as Error).message}`);
    }
    try {
      writeFreshMetadata(fd, sb, path);
      const file = new MetadataFile(fd, path);
      const layout = layoutOf(sb, path);
      return new Metadata({
        loc: { backingFile: opts.backingFile, metaFile: opts.metaFile }, file, layout, sb, sbSlot: 0, bitmaps: Metadata.bitmapsOf(sb, layout, file), // all clear, as written
        log: { seq: 1, extents: [] }, report: emptyReport(),
      });
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
  }

  /** Throws when `path` already holds valid metadata (of any geometry). */
  private static refuseExisting(path: string): void {
    let fd: number;
    try {
      fd = fs.openSync(path, 'r');
    } catch {
      return; // no file, no metadata
    }
    try {
      const end = floorUnit(fs.fstatSync(fd).size);
      const found = readSuperblock(fd, end, path) ?? readMoveMarker(fd, end, path);
      if (found !== null) {
        throw new MetadataError(`${path} already holds twindisk metadata: pass force to overwrite it`
          + ' (this discards the bitmaps and generations)');
      }
    } finally {
      fs.closeSync(fd);
    }
  }

  // -------------------------------------------------------------------------------------------- open

  /**
   * Opens and validates existing metadata: the newest valid superblock, every bitmap page (a damaged
   * page reads as all ones) and the newest valid activity-log transaction, whose extents stay active.
   * Writes nothing. Throws MetadataError saying what to do when there is no usable metadata.
   */
  static open(loc: MetadataLocation): Metadata {
    const path = loc.metaFile ?? loc.backingFile;
    let fd: number;
    try {
      fd = fs.openSync(path, 'r+');
    } catch (e) {
      throw new MetadataError(`cannot open ${loc.metaFile === null ? 'backing file' : 'metadata file'} ${path}: ${(e as Error).message}`);
    }
    try {
      return Metadata.load(fd, path, loc);
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
  }

  private static load(fd: number, path: string, loc: MetadataLocation): Metadata {
    let end = floorUnit(fs.fstatSync(fd).size);
    let found = readSuperblock(fd, end, path);
    if (found === null) {
      // An online resize grew the file and stopped before its switch: the metadata in force ends where
      // the move marker says (the same metadata: same id).
      const moved = readMoveMarker(fd, end, path);
      if (moved !== null && moved.end < end) {
        const there = readSuperblock(fd, moved.end, path);
        if (there !== null && there !== 'version' && there.sb.mdId === moved.mdId) {
          end = moved.end;
          found = there;
        }
      }
    }
    const hint = loc.metaFile === null
      ? ' (internal metadata is found at the end of the backing file; was it resized?)' : '';
    if (found === 'version') {
      throw new MetadataError(`metadata on ${path} has a format other than version ${MD_FORMAT_VERSION}:`
        + ' use the twindisk release that wrote it, or run `twindisk create-md ...` to start over');
    }
    if (found === null) {
      throw new MetadataError(`no valid twindisk metadata on ${path}${hint}: run \`twindisk create-md ...\``);
    }
    const { sb, slot, bad } = found;
    const problem = superblockProblem(sb, end);
    if (problem !== null) {
      throw new MetadataError(`twindisk metadata on ${path} is inconsistent (${problem})${hint}: run \`twindisk create-md ...\``);
    }
    if (loc.metaFile === null) {
      if (sb.dataSize > sb.areaOffset) {
        throw new MetadataError(`twindisk metadata on ${path} overlaps its data: run \`twindisk create-md ...\``);
      }
    } else {
      const backing = loc.backingSize ?? floorUnit(sizeOf(loc.backingFile, 'backing file'));
      if (backing < sb.dataSize) {
        throw new MetadataError(`backing ${loc.backingSize !== undefined ? 'disk' : 'file'} ${loc.backingFile} holds ${backing} bytes but the metadata on ${path}`
          + ` describes ${sb.dataSize}: restore the backing file's size or run \`twindisk create-md ...\``);
      }
    }
    const file = new MetadataFile(fd, path);
    const layout = layoutOf(sb, path);
    // Activity log: the newest transaction whose units are all intact.
    const log = ActivityLog.recover(Metadata.alGeometry(sb, layout), file);
    // Bitmaps: damaged pages read as all ones and are rewritten at the next flush.
    const bitmaps = Metadata.bitmapsOf(sb, layout, file);
    let badPages: number;
    try {
      badPages = bitmaps.load();
    } catch (e) {
      bitmaps.dispose();
      throw e;
    }
    const report: OpenReport = {
      crashedPrimary: (sb.flags & FLAG_PRIMARY) !== 0,
      badPages,
      alExtentsRecovered: [...log.extents].sort((a, b) => a - b),
      cleanShutdown: (sb.flags & FLAG_CLEAN) !== 0,
      alLost: log.seq === 0,
      badSuperblock: bad,
      staleRange: sb.staleTo > sb.staleFrom ? [sb.staleFrom, sb.staleTo] : null,
    };
    return new Metadata({ loc, file, layout, sb, sbSlot: slot, bitmaps, log, report });
  }

  // -------------------------------------------------------------------------------------- superblock

  /** Persists gens, disk, primary, promotedAt and resync progress: to the slot not holding the newest copy, seq + 1, fdatasync'ed. */
  writeSuperblock(): void {
    this.checkOpen();
    this.writeSb(false);
  }

  /** False once closed, abandoned or replaced by grow(). */
  get isOpen(): boolean {
    return !this.closed;
  }

  /** The sequence number of the newest superblock on disk. */
  get superblockSeq(): number {
    return this.sbSeq;
  }

  private writeSb(clean: boolean): void {
    checkGenerations(this.g);
    if (!['UpToDate', 'Inconsistent', 'Outdated'].includes(this.disk)) {
      throw new MetadataError(`disk state ${String(this.disk)} is not persisted: use UpToDate, Inconsistent or Outdated`);
    }
    if (!Number.isSafeInteger(this.promotedAt) || this.promotedAt < 0) {
      throw new MetadataError(`promotedAt ${this.promotedAt} is not a time in ms`);
    }
    checkResyncProgress(this.resyncFrom, this.resyncTotal);
    const slot: 0 | 1 = this.sbSlot === 0 ? 1 : 0;
    const seq = this.sbSeq + 1;
    encodeSuperblock(this.unit, this.unitView, {
      seq, mdId: this.mdId, nodeId: this.nodeId,
      flags: (this.primary ? FLAG_PRIMARY : 0) | (clean ? FLAG_CLEAN : 0),
      dataSize: this.dataSize, granularity: this.granularity, alExtentSize: this.alExtentSize,
      alExtents: this.alExtents, alSlots: this.alSlots, disk: this.disk, peerIds: [...this.peerIds],
      promotedAt: this.promotedAt, areaOffset: this.layout.areaOffset, areaSize: this.layout.areaSize, gens: this.g,
      resyncFrom: this.resyncFrom, resyncTotal: this.resyncTotal, staleFrom: this.staleFrom, staleTo: this.staleTo,
    }, slot);
    this.file.pwrite(this.unit, this.layout.superblocks[slot]);
    this.file.sync();
    this.stats.superblockWrites++;
    this.sbSlot = slot;
    this.sbSeq = seq;
    this.onDiskClean = clean;
  }

  /** Before the first write after a clean open: the superblock stops saying "clean". */
  private markInUse(): void {
    if (this.onDiskClean) this.writeSb(false);
  }

  // ------------------------------------------------------------------------------------- generations
  // These change the generations in memory; writeSuperblock() persists them (callers batch several
  // changes into one superblock write).

  /**
   * Gives metadata without a data generation (current 0n: just created) its first one: `create-md
   * --assume-clean`, or the first `primary --force`. Throws when it already has one (use rotateGeneration).
   */
  setInitialGeneration(gen: bigint): void {
    checkGeneration(gen, 'generation');
    if (gen === 0n) throw new MetadataError('the initial generation must not be 0');
    if (this.g.current !== 0n) {
      throw new MetadataError(`metadata on ${this.layout.file} already has data generation ${this.g.current.toString(16)}: rotate it instead`);
    }
    this.g.current = gen;
  }

  /**
   * Starts data generation `newCurrent` (DRBD's new current UUID): the current one moves to the front
   * of the history, which keeps the newest MAX_HISTORY entries. Each peer of `basePeers` that has no
   * bitmap base yet gets the old current one as its base: this node's bitmap toward it records the
   * writes since then. (A peer that already has a base keeps it: its bitmap covers more.)
   */
  rotateGeneration(newCurrent: bigint, basePeers: readonly number[]): void {
    checkGeneration(newCurrent, 'generation');
    const old = this.g.current;
    this.baseOn(old, basePeers);
    advanceGenerations(this.g, newCurrent);
  }

  /** Gives each peer of `peers` without a bitmap base the base `gen` (none when `gen` is 0n). */
  private baseOn(gen: bigint, peers: readonly number[]): void {
    for (const p of peers) this.checkGenerationSlot(p);
    if (gen !== 0n) for (const p of peers) if (this.g.bitmap[p] === 0n) this.g.bitmap[p] = gen;
  }

  /**
   * Takes another node's current generation and history (copied) as this node's own: a SyncTarget whose
   * resync finished holds its source's data. As in rotateGeneration, each peer of `basePeers` without a
   * bitmap base gets this node's old current generation as its base; other bases stay as they are.
   */
  adoptGenerations(gens: { readonly current: bigint; readonly history: readonly bigint[] }, basePeers: readonly number[] = []): void {
    checkGeneration(gens.current, 'generation');
    if (gens.history.length > MAX_HISTORY) {
      throw new MetadataError(`${gens.history.length} history generations: at most ${MAX_HISTORY} are kept`);
    }
    gens.history.forEach((h) => checkGeneration(h, 'history generation'));
    this.baseOn(this.g.current, basePeers);
    this.g.current = gens.current;
    this.g.history = [...gens.history];
  }

  /**
   * Sets the base of this node's bitmap toward `peerId`: the generation since which it tracks the
   * writes that peer misses, or 0n when it tracks none (the peer is in sync).
   */
  setBitmapBase(peerId: number, gen: bigint): void {
    this.checkGenerationSlot(peerId);
    checkGeneration(gen, 'bitmap generation');
    this.g.bitmap[peerId] = gen;
  }

  /** Throws unless `peerId` names another node (a slot of gens.bitmap). */
  private checkGenerationSlot(peerId: number): void {
    if (!Number.isInteger(peerId) || peerId < 0 || peerId >= MAX_NODES || peerId === this.nodeId) {
      throw new MetadataError(`node ${peerId} is not a peer of node ${this.nodeId}`);
    }
  }

  // ----------------------------------------------------------------------------------------- bitmaps
  // The full contracts are on OutOfSyncBitmaps (bitmap.ts).

  /** The bitmap toward `peerId`: a live view of wasm memory, to use at once and never keep (see bitmap.ts). */
  bitmap(peerId: number): Uint8Array {
    return this.bitmaps.bitmap(peerId);
  }

  /** Marks every block touching [offset, offset + length) out of sync toward `peerId`. */
  setOutOfSync(peerId: number, offset: number, length: number): void {
    this.bitmaps.setOutOfSync(peerId, offset, length);
  }

  /** Marks in sync only the blocks wholly inside [offset, offset + length) (a short last block: when the range reaches the end). */
  clearInSync(peerId: number, offset: number, length: number): void {
    this.bitmaps.clearInSync(peerId, offset, length);
  }

  /** Blocks out of sync toward `peerId`. */
  outOfSyncBits(peerId: number): number {
    return this.bitmaps.outOfSyncBits(peerId);
  }

  /** Whether any block touching [offset, offset + length) is out of sync toward `peerId` (false for length 0). */
  anyOutOfSync(peerId: number, offset = 0, length = this.dataSize - offset): boolean {
    return this.bitmaps.anyOutOfSync(peerId, offset, length);
  }

  /** The first run of out-of-sync blocks at or after block `fromBit`, at most `maxBits` long, as [start, end); or null. */
  nextOutOfSync(peerId: number, fromBit: number, maxBits?: number): BitRun | null {
    return this.bitmaps.nextOutOfSync(peerId, fromBit, maxBits);
  }

  /** Marks the whole volume out of sync toward `peerId` (full resync). */
  setAll(peerId: number): void {
    this.bitmaps.setAll(peerId);
  }

  /** Marks the whole volume in sync toward `peerId`. */
  clearAll(peerId: number): void {
    this.bitmaps.clearAll(peerId);
  }

  /**
   * ORs a peer's bitmap frame (its bytes from byte `byteOffset`) into the bitmap toward it, in place; bits
   * past the volume stay clear, touched pages are written at the next flush; RangeError past the bitmap.
   */
  mergeBitmap(peerId: number, byteOffset: number, bits: Uint8Array): void {
    this.bitmaps.merge(peerId, byteOffset, bits);
  }

  /** Records that bits [fromBit, endBit) of `bitmap(peerId)` were changed in place: the next flush writes their pages. */
  markBitmapDirty(peerId: number, fromBit = 0, endBit = this.bits): void {
    this.bitmaps.markDirty(peerId, fromBit, endBit);
  }

  /** Writes every page changed since the last flush, then fdatasync unless `sync` is false (the periodic write-back). */
  flushBitmaps(sync = true): void {
    this.checkOpen();
    this.bitmaps.flush(sync);
  }

  /** Encodes the dirty pages as they are now, for writeCaptured() once the data they describe is durable (a SyncTarget's progress). */
  captureBitmaps(): CapturedBitmaps {
    this.checkOpen();
    return this.bitmaps.capture();
  }

  /** Writes captured pages (no fdatasync), each unless a newer copy was written since the capture. */
  writeCaptured(c: CapturedBitmaps): void {
    this.checkOpen();
    this.bitmaps.writeCaptured(c);
  }

  // ---------------------------------------------------------------------------------------- activity log

  /**
   * Makes sure the extents covering [offset, offset + length) are active; when any was not, writes one
   * activity-log transaction listing every active extent (the least recently used ones beyond alExtents
   * are evicted, after a bitmap flush) and fdatasyncs it. Returns true if a transaction was written.
   * When all extents are already active it only refreshes their LRU position: no allocation, no I/O.
   */
  alActivate(offset: number, length: number): boolean {
    if (length === 0) return false;
    if (!(offset >= 0 && length > 0 && offset + length <= this.dataSize)) this.checkRange(offset, length);
    const first = Math.floor(offset / this.alExtentSize);
    const last = Math.floor((offset + length - 1) / this.alExtentSize);
    if (this.al.touch(first, last) === 0) return false;
    this.checkOpen();
    this.al.activate(first, last);
    return true;
  }

  /**
   * alActivate for several ranges at once (a batch of writes): one transaction for all the extents
   * that are not active (more than alExtents: one per alExtents of them). Returns the transactions written.
   */
  alActivateAll(ranges: readonly { offset: number; length: number }[]): number {
    const want = new Set<number>();
    for (const { offset, length } of ranges) {
      if (length === 0) continue;
      this.checkRange(offset, length);
      const last = Math.floor((offset + length - 1) / this.alExtentSize);
      for (let e = Math.floor(offset / this.alExtentSize); e <= last; e++) if (!this.al.isActive(e)) want.add(e);
    }
    if (want.size === 0) return 0;
    this.checkOpen();
    const all = [...want].sort((a, b) => a - b);
    let n = 0;
    for (let i = 0; i < all.length; i += this.alExtents, n++) this.al.activateAll(all.slice(i, i + this.alExtents));
    return n;
  }

  /**
   * Refreshes the LRU position of the extents covering [offset, offset + length) and says whether all
   * of them are active (no allocation, no I/O): false means a write there needs a transaction first
   * (alActivate, alActivateAll), or, for a write a queue worker made in extents it had pinned, a bug.
   */
  alTouch(offset: number, length: number): boolean {
    if (length === 0 || offset < 0 || offset + length > this.dataSize) return true;
    return this.al.touch(Math.floor(offset / this.alExtentSize), Math.floor((offset + length - 1) / this.alExtentSize)) === 0;
  }

  /**
   * Lets queue workers write the local disk in active extents (see hot-extents.ts); `releasePins`
   * applies the marks they posted. Ends when the metadata is closed.
   */
  useHotExtents(hot: HotExtents, releasePins: () => void): void {
    if (hot.extentSize !== this.alExtentSize) throw new MetadataError(`the hot-extent map has ${hot.extentSize}-byte extents and this activity log ${this.alExtentSize}`);
    this.al.useHot(hot, releasePins);
  }

  /** The active extents, ascending. */
  activeExtents(): number[] {
    return this.al.activeExtents();
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

  /**
   * Empties the activity log once no write is in flight (a clean demotion), in close()'s crash-safe
   * order: the bitmaps first, then a transaction with no extents. The caller has synced the data.
   */
  clearActivityLog(): void {
    this.checkOpen();
    this.flushBitmaps();
    if (this.al.empty) return;
    this.al.clear();
  }

  // ------------------------------------------------------------------------------------ online resize

  /** The superblock as it would be written now (for a move). */
  private currentSuperblock(): Superblock {
    return {
      seq: this.sbSeq, mdId: this.mdId, nodeId: this.nodeId,
      flags: (this.primary ? FLAG_PRIMARY : 0) | (this.onDiskClean ? FLAG_CLEAN : 0),
      dataSize: this.dataSize, granularity: this.granularity, alExtentSize: this.alExtentSize,
      alExtents: this.alExtents, alSlots: this.alSlots, disk: this.disk, peerIds: [...this.peerIds],
      promotedAt: this.promotedAt, areaOffset: this.layout.areaOffset, areaSize: this.layout.areaSize,
      gens: { current: this.g.current, bitmap: [...this.g.bitmap], history: [...this.g.history] },
      resyncFrom: this.resyncFrom, resyncTotal: this.resyncTotal, staleFrom: this.staleFrom, staleTo: this.staleTo,
    };
  }

  /**
   * Online resize: moves the metadata to cover `dataSize` bytes of data (more than now) and returns it
   * opened anew; this object is closed (its fd passes to the new one). Internal metadata moves to the
   * new end of the backing file, which grows; external metadata is appended to its file, and the caller
   * has grown the backing file first. The new blocks are in sync toward every peer (clear bits): they
   * read as zeroes on every node (the files grow sparse, and the old area is zeroed before the switch
   * completes), so only a resize every disk node takes part in may use this (see Resource.growDisk).
   * Crash-safe: see moveMetadata (md-file.ts); `onStep` is for crash tests. Throws MetadataError (nothing
   * switched) or the I/O error; after a failure this object stays usable unless the switch happened,
   * in which case reopen the metadata.
   */
  grow(dataSize: number, onStep?: (s: MoveStep) => void): Metadata {
    this.checkOpen();
    if (this.staleTo > this.staleFrom) this.finishMove();
    const internal = this.location.metaFile === null;
    const cur = this.currentSuperblock();
    const next = grownSuperblock(cur, dataSize, internal);
    next.flags &= ~FLAG_CLEAN;
    if (!internal) {
      const backing = floorUnit(sizeOf(this.location.backingFile, 'backing file'));
      if (backing < dataSize) throw new MetadataError(`backing file ${this.location.backingFile} holds ${backing} bytes, less than ${dataSize}: grow it first`);
    }
    // Everything in memory on disk first: the new area is made from it.
    this.flushBitmaps(true);
    const bytes = Math.ceil(Math.ceil(dataSize / this.granularity) / 8);
    const bitmaps = this.peerIds.map((p) => {
      const m = new Uint8Array(bytes);
      m.set(this.bitmap(p)); // bits past the old end are clear, and stay clear: the new blocks are in sync
      return m;
    });
    let switched = false;
    try {
      moveMetadata(this.file.fd, this.layout.file, cur, next, { bitmaps, alExtents: this.activeExtents() }, (step) => {
        if (step === 'switched') switched = true;
        onStep?.(step);
      });
    } catch (e) {
      // Past the switch this object describes a layout no longer in force: it must write nothing more.
      if (switched) this.closed = true;
      throw e;
    }
    this.closed = true;
    this.bitmaps.dispose();
    return Metadata.load(this.file.fd, this.layout.file, this.location);
  }

  /**
   * Finishes a move that a crash interrupted after its switch (openReport.staleRange): zeroes the old area,
   * which lies in the data (internal) or in the metadata file (external), then records it done. Call it
   * before the data is served (Resource.attach does).
   */
  finishMove(): void {
    this.checkOpen();
    if (this.staleTo <= this.staleFrom) return;
    zeroStale(this.file.fd, this.staleFrom, this.staleTo, this.layout.file);
    this.staleFrom = this.staleTo = 0;
    this.writeSb(false);
  }

  // ------------------------------------------------------------------------------------------- close

  /**
   * Clean close. In crash-safe order: flushes the bitmaps, then clears the activity log (one transaction
   * with no extents), then writes the superblock with primary cleared and the clean flag set; closes the
   * fd and gives the bitmaps' kernel memory back (they stay readable).
   */
  close(): void {
    if (this.closed) return;
    this.flushBitmaps();
    this.al.clear();
    this.primary = false;
    this.writeSb(true);
    this.release();
  }

  /** Closes the fd without writing anything, as a crash would leave the metadata (error paths, tests). */
  abandon(): void {
    if (this.closed) return;
    this.release();
  }

  private release(): void {
    this.al.dropHot();
    this.closed = true;
    this.bitmaps.dispose();
    fs.closeSync(this.file.fd);
  }

  private checkOpen(): void {
    if (this.closed) throw new MetadataError(`metadata on ${this.layout.file} is closed`);
  }

  private checkRange(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.dataSize) {
      throw new RangeError(`range [${offset}, +${length}) is outside the ${this.dataSize}-byte volume`);
    }
  }
}
