// The activity log (DRBD's drbd_actlog.c + lru_cache.c): the LRU of hot extents and its on-disk transactions.
//
// Before the first write to an extent that is not active, a transaction listing every active extent is
// written to the next slot of a ring and fdatasync'ed; after a crash as Primary only the extents of the
// newest intact transaction need a resync. The set is bounded: beyond `alExtents` the least recently
// used extent is evicted, and the out-of-sync bits of what it covered must be on disk before the
// transaction that drops it (the owner's `beforeEvict`).
import type { HotExtents } from './hot-extents.js';
import {
  AL_TX_UNITS, MD_UNIT, MetadataError, decodeTransaction, encodeTransaction, unitView,
  type MetadataIo,
} from './md-format.js';

/** A word nobody notifies: Atomics.wait on it sleeps for its timeout. */
const NAP = new Int32Array(new SharedArrayBuffer(4));

/**
 * A fixed-capacity set of extent numbers in least-recently-used order (DRBD's lru_cache): a Map for
 * lookup and an intrusive doubly linked list in typed arrays, so touching and inserting allocate nothing.
 */
export class ExtentLru {
  private readonly slotOf = new Map<number, number>();
  private readonly ext: Uint32Array;
  private readonly prev: Int32Array;
  private readonly next: Int32Array;
  private readonly free: Int32Array;
  private freeTop: number;
  /** Most recently used slot, and least recently used; -1 when empty. */
  private head = -1;
  private tail = -1;

  /** An empty set that holds at most `capacity` extents. */
  constructor(readonly capacity: number) {
    this.ext = new Uint32Array(capacity);
    this.prev = new Int32Array(capacity);
    this.next = new Int32Array(capacity);
    this.free = new Int32Array(capacity);
    for (let i = 0; i < capacity; i++) this.free[i] = capacity - 1 - i;
    this.freeTop = capacity;
  }

  /** Whether `e` is in the set. */
  has(e: number): boolean {
    return this.slotOf.has(e);
  }

  /** Makes `e` the most recently used if it is in the set; returns whether it was. */
  touch(e: number): boolean {
    const s = this.slotOf.get(e);
    if (s === undefined) return false;
    if (s !== this.head) {
      this.unlink(s);
      this.linkHead(s);
    }
    return true;
  }

  /** Whether the set holds `capacity` extents. */
  get full(): boolean {
    return this.freeTop === 0;
  }

  /** Whether the set is empty. */
  get empty(): boolean {
    return this.head === -1;
  }

  /** Adds `e` (not in the set, which is not full) as the most recently used. */
  insert(e: number): void {
    const s = this.free[--this.freeTop]!;
    this.ext[s] = e;
    this.slotOf.set(e, s);
    this.linkHead(s);
  }

  /** Removes the least recently used extent (the set is not empty). */
  evict(): void {
    this.remove(this.tail);
  }

  /**
   * Removes the least recently used extent that `may` accepts (asked from the oldest on, stopping at
   * the first yes) and returns it; -1 when it accepts none (nothing is removed).
   */
  evictWhere(may: (e: number) => boolean): number {
    for (let s = this.tail; s !== -1; s = this.prev[s]!) {
      const e = this.ext[s]!;
      if (!may(e)) continue;
      this.remove(s);
      return e;
    }
    return -1;
  }

  private remove(s: number): void {
    this.unlink(s);
    this.slotOf.delete(this.ext[s]!);
    this.free[this.freeTop++] = s;
  }

  /** The extents from the least recently used to the most recently used. */
  *oldestFirst(): Generator<number> {
    for (let s = this.tail; s !== -1; s = this.prev[s]!) yield this.ext[s]!;
  }

  /** The extents, ascending. */
  sorted(): number[] {
    return [...this.slotOf.keys()].sort((a, b) => a - b);
  }

  private linkHead(s: number): void {
    this.prev[s] = -1;
    this.next[s] = this.head;
    if (this.head !== -1) this.prev[this.head] = s;
    this.head = s;
    if (this.tail === -1) this.tail = s;
  }

  private unlink(s: number): void {
    const p = this.prev[s]!;
    const n = this.next[s]!;
    if (p !== -1) this.next[p] = n; else this.head = n;
    if (n !== -1) this.prev[n] = p; else this.tail = p;
  }
}

/** What the activity log needs to know of the metadata it belongs to. */
export interface ActivityLogGeometry {
  mdId: bigint;
  dataSize: number;
  alExtentSize: number;
  /** Most extents active at once. */
  alExtents: number;
  /** 4 KiB units in the ring (AL_TX_UNITS per transaction). */
  alSlots: number;
  /** File offset of the ring. */
  alOffset: number;
}

/** What recover() found in the ring. */
export interface RecoveredLog {
  /** Seq of the newest intact transaction; 0 when none is intact (the log is lost). */
  seq: number;
  /** Its extents, oldest first. */
  extents: number[];
}

/** The active extents and the ring of transactions that records them. */
export class ActivityLog {
  private readonly lru: ExtentLru;
  /** Seq of the newest transaction written (or recovered). */
  private seq: number;
  private readonly tx = new Uint8Array(AL_TX_UNITS * MD_UNIT);
  private readonly txViews: DataView[];
  /** The extents queue workers may write without the engine (see hot-extents.ts); null: none. */
  private hot: HotExtents | null = null;
  /**
   * Called when every extent that could be evicted has a worker's write pinned in it: applies the
   * marks the workers have posted (which releases their pins). Set with the hot-extent map.
   */
  private releasePins: () => void = () => undefined;

  /**
   * The log of `geom` as recovered (`recover()`), its extents active again; `beforeEvict` is called
   * once before a transaction that evicts extents (it flushes the bitmaps, with fdatasync).
   */
  constructor(
    private readonly geom: ActivityLogGeometry, private readonly file: MetadataIo,
    recovered: RecoveredLog, private readonly beforeEvict: () => void,
  ) {
    this.lru = new ExtentLru(geom.alExtents);
    this.seq = recovered.seq;
    this.txViews = Array.from({ length: AL_TX_UNITS }, (_, k) => unitView(this.tx.subarray(k * MD_UNIT, (k + 1) * MD_UNIT)));
    for (const e of recovered.extents) this.lru.insert(e); // oldest first: the last one ends up most recent
  }

  /**
   * Shares the active set with queue workers through `hot`: every active extent is hot from now on,
   * and an extent with a pinned write is never evicted (`releasePins` applies the workers' posted marks
   * when every candidate is pinned).
   */
  useHot(hot: HotExtents, releasePins: () => void): void {
    this.hot = hot;
    this.releasePins = releasePins;
    for (const e of this.lru.oldestFirst()) hot.markHot(e);
  }

  /** Stops sharing (the metadata is closing): no extent is hot any more. */
  dropHot(): void {
    for (const e of this.lru.oldestFirst()) this.hot?.cool(e);
    this.hot = null;
  }

  /** The newest intact transaction of the ring at `geom.alOffset` (read from `file`). */
  static recover(geom: ActivityLogGeometry, file: MetadataIo): RecoveredLog {
    const nExtents = Math.ceil(geom.dataSize / geom.alExtentSize);
    const ring = new Uint8Array(geom.alSlots * MD_UNIT);
    file.pread(ring, geom.alOffset);
    let seq = 0;
    let extents: number[] = [];
    const txBytes = AL_TX_UNITS * MD_UNIT;
    for (let t = 0; t < geom.alSlots / AL_TX_UNITS; t++) {
      const found = decodeTransaction(ring.subarray(t * txBytes, (t + 1) * txBytes), t, geom.mdId, geom.alExtents, nExtents);
      if (found && found.seq > seq) ({ seq, extents } = found);
    }
    return { seq, extents };
  }

  /**
   * Refreshes the LRU position of the extents first..last and returns how many of them are not active;
   * no allocation, no I/O. `activate` makes the missing ones active.
   */
  touch(first: number, last: number): number {
    let missing = 0;
    for (let e = first; e <= last; e++) if (!this.lru.touch(e)) missing++;
    return missing;
  }

  /**
   * Makes the extents first..last active (some are not: see touch()), evicting the least recently used
   * beyond alExtents (after `beforeEvict`), and writes one transaction listing them all, fdatasync'ed.
   */
  activate(first: number, last: number): void {
    if (last - first + 1 > this.geom.alExtents) {
      throw new MetadataError(`a request over ${last - first + 1} activity-log extents exceeds alExtents (${this.geom.alExtents}): split it`);
    }
    const extents: number[] = [];
    for (let e = first; e <= last; e++) extents.push(e);
    this.activateAll(extents);
  }

  /**
   * Makes every extent of `extents` active in one transaction (a batch of writes to cold extents
   * costs one durable write, as DRBD's transactions carry many updates), evicting least recently used
   * extents outside the list. At most alExtents of them.
   */
  activateAll(extents: readonly number[]): void {
    if (extents.length > this.geom.alExtents) {
      throw new MetadataError(`${extents.length} activity-log extents at once exceed alExtents (${this.geom.alExtents}): split them`);
    }
    const wanted = new Set(extents);
    let flushed = false;
    for (const e of extents) {
      if (this.lru.touch(e)) continue;
      if (this.lru.full) {
        // An evicted extent is no longer covered by the log after a crash: its out-of-sync bits
        // must be on disk before the transaction that drops it.
        if (!flushed) this.beforeEvict();
        flushed = true;
        this.evictOne(wanted);
      }
      this.lru.insert(e);
    }
    this.file.markInUse();
    this.writeTransaction();
    if (this.hot) for (const e of extents) this.hot.markHot(e);
  }

  /**
   * Evicts the least recently used extent outside `keep` that no worker's write is pinned in.
   * When all are pinned, the workers' posted marks are applied (their pins released), the bitmaps
   * flushed again and the choice retried; a write still between its pin and its post finishes within
   * a system call.
   */
  private evictOne(keep: ReadonlySet<number>): void {
    const hot = this.hot;
    const may = hot ? (e: number) => !keep.has(e) && hot.tryEvict(e) : (e: number) => !keep.has(e);
    if (this.lru.evictWhere(may) >= 0) return;
    if (!hot) throw new MetadataError('no activity-log extent can be evicted (a bug: more extents wanted at once than alExtents)');
    for (let waited = 0; waited < 50_000; waited++) {
      // The marks applied now must be on disk too before their extents can be dropped.
      this.releasePins();
      this.beforeEvict();
      if (this.lru.evictWhere(may) >= 0) return;
      Atomics.wait(NAP, 0, 0, 0.1);
      if (this.lru.evictWhere(may) >= 0) return;
    }
    throw new MetadataError(`every activity-log extent had a write pinned in it for 5 s (al-extents ${this.geom.alExtents} is too small for the writes in flight: raise it)`);
  }

  /** Whether extent `e` is active (no LRU change). */
  isActive(e: number): boolean {
    return this.lru.has(e);
  }

  /** The active extents, ascending. */
  activeExtents(): number[] {
    return this.lru.sorted();
  }

  /** Whether no extent is active. */
  get empty(): boolean {
    return this.lru.empty;
  }

  /** Deactivates every extent and writes the (empty) transaction. The caller has flushed the bitmaps. */
  clear(): void {
    for (const e of this.lru.oldestFirst()) this.hot?.cool(e);
    while (!this.lru.empty) this.lru.evict();
    this.writeTransaction();
  }

  /** Writes the next transaction (seq + 1, next slot of the ring) with the active set, oldest first. */
  private writeTransaction(): void {
    const seq = this.seq + 1;
    const t = (seq - 1) % (this.geom.alSlots / AL_TX_UNITS);
    encodeTransaction(this.tx, this.txViews, this.lru.oldestFirst(), seq, t, this.geom.mdId);
    // Durable before any write it covers goes out; only its own range is flushed (the file may hold the data too).
    this.file.pwriteDurable(this.tx, this.geom.alOffset + t * AL_TX_UNITS * MD_UNIT);
    this.seq = seq;
    this.file.stats.alWrites++;
  }
}
