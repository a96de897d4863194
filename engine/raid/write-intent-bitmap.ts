// md's internal write-intent bitmap at run time: one bit per bitmap chunk, set durably before a write, cleared lazily after.
//
// What md does (drivers/md/md-bitmap.c), and this file with it:
//
//   - Bits cover "sync sectors", the space resync walks: array sectors for raid1 (= member sectors) and
//     raid10, member sectors (stripe rows) for raid4/5/6, where a write dirties the rows of the stripes
//     it touches on every member (data and parity alike). mdBitmapSyncRange maps array bytes to them.
//   - md_bitmap_startwrite: each chunk has a counter of writes in flight. A write whose chunks all have
//     their bit set on disk goes ahead at once; otherwise the bits are set in memory, the bitmap blocks
//     holding them are written to every member that carries the bitmap (md writes it on each active
//     member), and the write waits for that (md_bitmap_unplug). Writes arriving meanwhile join the next
//     block write, so concurrent first writes cost one bitmap write, not one each.
//   - md_bitmap_endwrite: the counter drops. At zero the chunk is clean, but its bit is cleared lazily by
//     the bitmap daemon, `daemon_sleep` seconds later (5 by default): here a timer, or flushClean().
//     A write that did not reach every member (end's `reachedAll` false), or ended while the array is
//     degraded, leaves its bit set until the chunk is resynced ("NEEDED"): the member that missed it
//     must get that chunk when it comes back (re-add, recovery).
//   - events_cleared: when a write ends on a whole (not degraded) array, events_cleared is raised to the
//     array's events (md_bitmap_endwrite); it reaches the disk with the next cleared bits (need_sync).
//     A member whose events are at least events_cleared can be brought back from the bitmap alone.
//   - The bitmap superblock's `events` follows the array's on every superblock update
//     (md_bitmap_update_sb, written before the array superblocks); an older one means the bits cannot be
//     trusted (mdBitmapStale), and every chunk is then taken as dirty.
//
// The bitmap owns no I/O: an MdBitmapStore (the array, engine/raid/array.ts) writes blocks of it to
// the members. Everything here runs on one thread; completions may arrive synchronously.
import { BITMAP_STALE, BITMAP_SUPER_BYTES, SECTOR } from './md-constants.js';
import { mdArraySectors, mdDataDisks, type MdGeometry } from './geometry.js';
import {
  decodeMdBitmapSuper, encodeMdBitmapSuper, mdBitmapBits, mdBitmapSpace, mdBitmapStale, mdBitmapSyncSize, type MdBitmapSuper,
} from './md-bitmap.js';

/**
 * A layer that must know about a write before it reaches the members, and after it completes (the RAID
 * back-end calls these; offsets and lengths in array bytes). `ready` runs once the intent is durable,
 * possibly before begin() returns.
 */
export interface WriteIntent {
  begin(offset: number, length: number, ready: () => void): void;
  /** `reachedAll` false: some member that should hold the data did not get it (md_bitmap_endwrite's !success). */
  end(offset: number, length: number, reachedAll?: boolean): void;
}

/** A stretch of the bitmap area to write: `offset` bytes from its start (the bitmap superblock). */
export interface MdBitmapRun {
  offset: number;
  bytes: Uint8Array;
}

/**
 * Where the bitmap lives: writes runs of it to every member that carries it and makes them durable
 * (flush) before `done`. `done(error)` only when no member could take them; a member that fails is the
 * store's to deal with (md fails it).
 */
export interface MdBitmapStore {
  write(runs: readonly MdBitmapRun[], done: (error: Error | null) => void): void;
}

/** A range of sync sectors, [start, end). */
export interface MdSyncRange {
  start: number;
  end: number;
}

/** A dirty stretch of the bitmap: sync sectors, and the array bytes whose data (and parity) lives there. */
export interface MdSyncRegion extends MdSyncRange {
  /** The array bytes stored in these sync sectors: for raid4/5/6 every data chunk of the rows, whole stripes. */
  arrayOffset: number;
  arrayLength: number;
}

/**
 * The sync sectors a write to array bytes [offset, offset + length) dirties, into `out` (returned).
 * raid1 and raid10: the array sectors themselves. raid4/5/6: on every member, the rows of the stripes
 * touched, from the first touched sector of the first stripe to the last of the last; a write that
 * touches two chunks of one stripe without covering the rows in between marks that whole row (more
 * than needed, never less).
 */
export function mdBitmapSyncRange(g: MdGeometry, offset: number, length: number, out: MdSyncRange = { start: 0, end: 0 }): MdSyncRange {
  const first = Math.floor(offset / SECTOR);
  const end = Math.ceil((offset + length) / SECTOR);
  if (g.level === 1 || g.level === 10 || length <= 0) {
    out.start = first;
    out.end = length <= 0 ? first : end;
    return out;
  }
  const c = g.chunkSectors;
  const d = mdDataDisks(g);
  const last = end - 1;
  const c0 = Math.floor(first / c);
  const c1 = Math.floor(last / c);
  const row0 = Math.floor(c0 / d);
  const row1 = Math.floor(c1 / d);
  if (c0 === c1) {
    out.start = row0 * c + (first % c);
    out.end = row0 * c + (last % c) + 1;
  } else if (row0 === row1) {
    // Two or more chunks of one stripe: their pieces span the row (one ends at c, the next starts at 0).
    out.start = row0 * c;
    out.end = row0 * c + c;
  } else {
    // The first chunk covers [first % c, c) of its row, the last [0, last % c + 1) of its own; another
    // chunk of either stripe that the write covers is whole, and the rows in between are whole.
    out.start = row0 * c + (Math.floor((c0 + 1) / d) === row0 ? 0 : first % c);
    out.end = row1 * c + (Math.floor((c1 - 1) / d) === row1 ? c : (last % c) + 1);
  }
  return out;
}

/**
 * Sync sectors [start, end) with the array bytes they hold: the same sectors for raid1 and raid10; for
 * raid4/5/6 the whole stripes of the rows they touch (a row of every member holds one stripe).
 */
export function mdSyncRegion(g: MdGeometry, arraySectors: number, start: number, end: number): MdSyncRegion {
  let a0 = start;
  let a1 = end;
  if (g.level !== 1 && g.level !== 10) {
    const c = g.chunkSectors;
    const d = mdDataDisks(g);
    a0 = Math.floor(start / c) * c * d;
    a1 = Math.ceil(end / c) * c * d;
  }
  a1 = Math.min(a1, arraySectors);
  return { start, end, arrayOffset: a0 * SECTOR, arrayLength: Math.max(0, a1 - a0) * SECTOR };
}

/** Options for MdWriteIntentBitmap. */
export interface MdWriteIntentBitmapOptions {
  geometry: MdGeometry;
  /** Sectors each member gives the array (the superblock's `size`). */
  componentSectors: number;
  /**
   * The bitmap area as it is on the members: the 256-byte bitmap superblock, then the bits, a whole
   * number of `blockBytes`. Kept (not copied) as the in-memory bitmap.
   */
  image: Uint8Array;
  store: MdBitmapStore;
  /** The array's events now: the bitmap is stale (every chunk dirty) when its own are older. */
  arrayEvents: bigint;
  /** A member is missing: writes leave their bits set (see the file comment). */
  degraded?: boolean;
  /** Milliseconds between a chunk going idle and its bit being cleared; the superblock's daemon_sleep by default. */
  clearDelayMs?: number;
  /** Unit of bitmap writes: 4096 (a page, as md writes it) by default. */
  blockBytes?: number;
}

/** md's internal write-intent bitmap over an in-memory image of it; see the file comment. */
export class MdWriteIntentBitmap implements WriteIntent {
  /** Bytes of data (sync sectors) one bit covers. */
  readonly chunkBytes: number;
  /** Number of bits (chunks). */
  readonly bits: number;
  /** Sectors the bitmap covers (its `sync_size`). */
  readonly syncSectors: number;
  /** The bitmap's superblock was older than the array's: every chunk was taken as dirty. */
  readonly wasStale: boolean;
  private readonly g: MdGeometry;
  private readonly arraySectors: number;
  private readonly chunkSectors: number;
  private readonly blockBytes: number;
  private readonly image: Uint8Array;
  private readonly store: MdBitmapStore;
  private readonly sb: MdBitmapSuper;
  private readonly clearDelayMs: number;
  /** Writes in flight per chunk (md's counters). */
  private readonly counts: Uint32Array;
  /** 1: the chunk must stay dirty until resynced (written while degraded, or dirty at assembly). */
  private readonly needed: Uint8Array;
  /** The block write that carries a chunk's bit; at most `durable`: on disk. */
  private readonly bitSeq: Uint32Array;
  /** Chunks whose counter reached zero since the last clearing, with a flag per chunk. */
  private readonly candidates: number[] = [];
  private readonly isCandidate: Uint8Array;
  private readonly dirtyBlocks = new Set<number>();
  private readonly waiters: { seq: number; ready: () => void }[] = [];
  private readonly range: MdSyncRange = { start: 0, end: 0 };
  private c0 = 0;
  private c1 = 0;
  private issued = 0;
  private durable = 0;
  private busy = false;
  private degraded: boolean;
  private needSync = false;
  private timer: NodeJS.Timeout | null = null;
  private error: Error | null = null;
  private arrayEvents: bigint;

  constructor(o: MdWriteIntentBitmapOptions) {
    this.g = o.geometry;
    this.image = o.image;
    this.store = o.store;
    this.blockBytes = o.blockBytes ?? 4096;
    this.sb = decodeMdBitmapSuper(o.image);
    this.syncSectors = Number(mdBitmapSyncSize(o.geometry, o.componentSectors));
    this.arraySectors = mdArraySectors(o.geometry, o.componentSectors);
    this.chunkBytes = this.sb.chunkSize;
    this.chunkSectors = this.chunkBytes / SECTOR;
    this.bits = mdBitmapBits(BigInt(this.syncSectors), this.chunkBytes);
    const space = mdBitmapSpace(BigInt(this.syncSectors), this.chunkBytes);
    if (o.image.length < space || o.image.length % this.blockBytes !== 0) {
      throw new RangeError(
        `the bitmap image is ${o.image.length} bytes: ${this.bits} bits of ${this.chunkBytes} bytes need ${space}, in whole ${this.blockBytes}-byte blocks`,
      );
    }
    // md_bitmap_read_sb keeps sync_size up to date in memory; it reaches the disk with the next update.
    this.sb.syncSize = BigInt(this.syncSectors);
    this.arrayEvents = o.arrayEvents;
    this.degraded = o.degraded ?? false;
    this.clearDelayMs = o.clearDelayMs ?? this.sb.daemonSleep * 1000;
    this.counts = new Uint32Array(this.bits);
    this.needed = new Uint8Array(this.bits);
    this.bitSeq = new Uint32Array(this.bits);
    this.isCandidate = new Uint8Array(this.bits);
    this.wasStale = mdBitmapStale(this.sb, o.arrayEvents);
    for (let c = 0; c < this.bits; c++) {
      // "bitmap file is out of date ... forcing full recovery": every chunk dirty.
      if (this.wasStale) this.setBit(c);
      // A bit set at assembly stays until the region is resynced (markInSync).
      if (this.bit(c)) this.needed[c] = 1;
    }
    if (this.wasStale) {
      // Every block goes out with the next bitmap write, and the bits are trusted again from then on.
      this.sb.state &= ~(1 << BITMAP_STALE);
      for (let b = 0; b * this.blockBytes < this.image.length; b++) this.dirtyBlocks.add(b);
      this.bitSeq.fill(1); // a write waits for that first block write, as for any bit not yet on disk
    }
    this.encodeSuper();
  }

  // ------------------------------------------------------------------------------------ write path

  /** Marks the chunks under a write dirty; `ready` runs once their bits are on every member (at once if they are). */
  begin(offset: number, length: number, ready: () => void): void {
    this.chunks(offset, length);
    const c0 = this.c0;
    const c1 = this.c1;
    let need = 0;
    for (let c = c0; c <= c1; c++) {
      this.counts[c]!++;
      if (!this.bit(c)) {
        this.setBit(c);
        this.bitSeq[c] = this.issued + 1;
        this.dirtyBlocks.add(this.blockOf(c));
        need = this.issued + 1;
      } else if (this.bitSeq[c]! > this.durable && this.bitSeq[c]! > need) {
        need = this.bitSeq[c]!;
      }
    }
    if (need === 0) {
      ready();
      return;
    }
    this.waiters.push({ seq: need, ready });
    this.kick();
  }

  /**
   * The write under [offset, offset + length) finished on every member it went to. With `reachedAll`
   * false (a member missed it), or while degraded, its chunks stay dirty until markInSync.
   */
  end(offset: number, length: number, reachedAll = true): void {
    const success = reachedAll && !this.degraded;
    this.chunks(offset, length);
    const c0 = this.c0;
    const c1 = this.c1;
    for (let c = c0; c <= c1; c++) {
      if (this.counts[c] === 0) throw new RangeError(`bitmap chunk ${c} ended more writes than began: end(${offset}, ${length}) has no begin`);
      // md_bitmap_endwrite: "if (!success && !NEEDED(*bmc)) *bmc |= NEEDED_MASK".
      if (!success) this.needed[c] = 1;
      if (--this.counts[c]! === 0 && this.needed[c] === 0) this.candidate(c);
    }
    // "if (success && !degraded && events_cleared < mddev->events) { events_cleared = events; need_sync = 1; }".
    if (success && this.sb.eventsCleared < this.arrayEvents) {
      this.sb.eventsCleared = this.arrayEvents;
      this.needSync = true;
    }
    this.arm();
  }

  // ------------------------------------------------------------------------------------- clearing

  /**
   * Clears now (instead of after the daemon delay) the bits of chunks with no write in flight and nothing
   * to resync, and writes them, with events_cleared, to the members; resolves once durable.
   */
  flushClean(): Promise<void> {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    for (const c of this.candidates) {
      this.isCandidate[c] = 0;
      if (this.counts[c] === 0 && this.needed[c] === 0 && this.bit(c)) {
        this.clearBit(c);
        this.dirtyBlocks.add(this.blockOf(c));
      }
    }
    this.candidates.length = 0;
    if (this.needSync) {
      this.needSync = false;
      this.encodeSuper();
      this.dirtyBlocks.add(0);
    }
    if (this.dirtyBlocks.size === 0) return Promise.resolve();
    return this.nextWrite();
  }

  /**
   * The sync sectors [start, end) are in sync on every member (resynced or recovered): their chunks no
   * longer need to stay dirty, and are cleared like idle ones (after the delay, or by flushClean).
   * Only chunks wholly inside the range are released.
   */
  markInSync(region: MdSyncRange): void {
    const first = Math.ceil(region.start / this.chunkSectors);
    const last = region.end >= this.syncSectors ? this.bits - 1 : Math.floor(region.end / this.chunkSectors) - 1;
    for (let c = Math.max(0, first); c <= last && c < this.bits; c++) {
      this.needed[c] = 0;
      if (this.counts[c] === 0 && this.bit(c)) this.candidate(c);
    }
    this.arm();
  }

  /** Runs of set bits: what must be resynced after a crash (or recovered onto a member that missed writes). */
  dirtyRegions(): MdSyncRegion[] {
    const out: MdSyncRegion[] = [];
    let c = 0;
    while (c < this.bits) {
      if (!this.bit(c)) {
        c++;
        continue;
      }
      const from = c;
      while (c < this.bits && this.bit(c)) c++;
      out.push(this.region(from * this.chunkSectors, Math.min(c * this.chunkSectors, this.syncSectors)));
    }
    return out;
  }

  /** The array bytes held by sync sectors [start, end), as an MdSyncRegion. */
  region(start: number, end: number): MdSyncRegion {
    return mdSyncRegion(this.g, this.arraySectors, start, end);
  }

  /** Bits set now. */
  dirtyCount(): number {
    let n = 0;
    for (let c = 0; c < this.bits; c++) if (this.bit(c)) n++;
    return n;
  }

  /** Writes in flight over chunk `c` (for tests and status). */
  pending(c: number): number {
    return this.counts[c] ?? 0;
  }

  /** A copy of the whole bitmap area as it stands in memory (for a member joining the array). */
  snapshot(): Uint8Array {
    this.encodeSuper();
    return this.image.slice();
  }

  /** A copy of the bitmap superblock as it stands in memory. */
  get superblock(): MdBitmapSuper {
    return { ...this.sb, uuid: this.sb.uuid.slice() };
  }

  /** The last bitmap write that reached no member, or null. */
  get lastError(): Error | null {
    return this.error;
  }

  /** Stops the clearing timer (bits already cleared in memory are written by a last flushClean). */
  close(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  // ----------------------------------------------------------------------- for the array (array.ts)

  /**
   * The array's events changed (a superblock update): the bitmap superblock follows, as
   * md_bitmap_update_sb does ("rocking back to read-only" lowers events_cleared with them).
   * The caller then writes it with writeSuper() before the array superblocks.
   */
  setArrayEvents(events: bigint): void {
    this.arrayEvents = events;
    this.sb.events = events;
    if (events < this.sb.eventsCleared) this.sb.eventsCleared = events;
    this.encodeSuper();
  }

  /** Writes the bitmap superblock block to the members; resolves once durable. */
  writeSuper(): Promise<void> {
    this.encodeSuper();
    this.dirtyBlocks.add(0);
    return this.nextWrite();
  }

  /**
   * A member went missing (true) or the array is whole again (false). Going degraded keeps the bits of
   * writes in flight set: their data may have missed the member that went.
   */
  setDegraded(degraded: boolean): void {
    if (degraded && !this.degraded) for (let c = 0; c < this.bits; c++) if (this.counts[c]! > 0) this.needed[c] = 1;
    this.degraded = degraded;
  }

  // ---------------------------------------------------------------------------------------- inside

  /** Sets c0 and c1 to the first and last chunk under array bytes [offset, offset + length) (no allocation). */
  private chunks(offset: number, length: number): void {
    if (!(length > 0) || offset < 0 || offset + length > this.arraySectors * SECTOR) {
      throw new RangeError(`write intent ${offset}+${length} is outside the array's ${this.arraySectors * SECTOR} bytes`);
    }
    const r = mdBitmapSyncRange(this.g, offset, length, this.range);
    this.c0 = Math.floor(r.start / this.chunkSectors);
    this.c1 = Math.floor((r.end - 1) / this.chunkSectors);
  }

  private bit(c: number): boolean {
    return (this.image[BITMAP_SUPER_BYTES + (c >>> 3)]! & (1 << (c & 7))) !== 0;
  }

  private setBit(c: number): void {
    this.image[BITMAP_SUPER_BYTES + (c >>> 3)]! |= 1 << (c & 7);
  }

  private clearBit(c: number): void {
    this.image[BITMAP_SUPER_BYTES + (c >>> 3)]! &= ~(1 << (c & 7));
  }

  private blockOf(c: number): number {
    return Math.floor((BITMAP_SUPER_BYTES + (c >>> 3)) / this.blockBytes);
  }

  private candidate(c: number): void {
    if (this.isCandidate[c] === 1) return;
    this.isCandidate[c] = 1;
    this.candidates.push(c);
  }

  /** Starts the daemon timer when there is something to clear. */
  private arm(): void {
    if (this.timer !== null || (this.candidates.length === 0 && !this.needSync)) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.flushClean().catch((e: unknown) => { this.error = e instanceof Error ? e : new Error(String(e)); });
    }, this.clearDelayMs);
    this.timer.unref();
  }

  private encodeSuper(): void {
    this.image.set(encodeMdBitmapSuper(this.sb), 0);
  }

  /** Resolves once the blocks dirty now are on the members. */
  private nextWrite(): Promise<void> {
    return new Promise((resolve) => {
      this.waiters.push({ seq: this.issued + 1, ready: resolve });
      this.kick();
    });
  }

  /** Starts a block write unless one is in flight (its completion starts the next). */
  private kick(): void {
    if (this.busy || this.dirtyBlocks.size === 0) return;
    const blocks = [...this.dirtyBlocks].sort((a, b) => a - b);
    this.dirtyBlocks.clear();
    const runs: MdBitmapRun[] = [];
    for (let i = 0; i < blocks.length;) {
      let j = i;
      while (j + 1 < blocks.length && blocks[j + 1] === blocks[j]! + 1) j++;
      const from = blocks[i]! * this.blockBytes;
      const to = Math.min((blocks[j]! + 1) * this.blockBytes, this.image.length);
      runs.push({ offset: from, bytes: this.image.slice(from, to) }); // a snapshot: later bit changes wait for the next write
      i = j + 1;
    }
    const seq = ++this.issued;
    this.busy = true;
    this.store.write(runs, (error) => {
      if (error !== null) this.error = error;
      this.busy = false;
      this.durable = seq;
      this.release();
      this.kick();
    });
  }

  /** Runs the waiters whose write is durable (taken off the list first: they may begin again). */
  private release(): void {
    const done: (() => void)[] = [];
    let k = 0;
    for (const w of this.waiters) {
      if (w.seq <= this.durable) done.push(w.ready);
      else this.waiters[k++] = w;
    }
    this.waiters.length = k;
    for (const r of done) r();
  }
}
