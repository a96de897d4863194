// Which activity-log extents are active, in shared memory, so queue workers can write the local disk without asking the engine.
//
// One Int32 word per extent: bit 30 (HOT) says the extent is in the activity log (its transaction is
// durable), the low bits count the workers' writes into it whose out-of-sync marks the engine has not
// applied yet (pins). A worker pins every extent of a write and keeps the pins only if all were HOT;
// the engine evicts an extent only by turning HOT|0 into 0 in one compare-exchange, so an extent with a
// pinned write is never evicted, and a write never starts in an extent that is being evicted. The
// activity log therefore covers every write on the local disk whose marks are not in the bitmaps yet:
// after a crash those extents are resynced (DRBD's al_begin_io/lc_get reference counts, shared).

const HOT = 1 << 30;
const COUNT = HOT - 1;

/** What a worker needs to reach the map (survives postMessage). */
export interface HotExtentsSpec {
  sab: SharedArrayBuffer;
  /** Bytes per activity-log extent. */
  extentSize: number;
}

export class HotExtents {
  private readonly words: Int32Array;
  readonly extentSize: number;

  constructor(readonly spec: HotExtentsSpec) {
    this.words = new Int32Array(spec.sab);
    this.extentSize = spec.extentSize;
  }

  /** A map for a volume of `dataSize` bytes: extents beyond it (after a resize) are never hot. */
  static create(dataSize: number, extentSize: number): HotExtents {
    const n = Math.max(1, Math.ceil(dataSize / extentSize));
    return new HotExtents({ sab: new SharedArrayBuffer(n * 4), extentSize });
  }

  /** Extents in the map. */
  get extents(): number {
    return this.words.length;
  }

  // ------------------------------------------------------------------------------------ worker side

  /**
   * Pins every extent of [offset, offset + length) if all are hot; otherwise pins nothing and returns
   * false (the write goes through the engine, which activates them).
   */
  tryPin(offset: number, length: number): boolean {
    const first = Math.floor(offset / this.extentSize);
    const last = Math.floor((offset + length - 1) / this.extentSize);
    if (last >= this.words.length) return false;
    for (let e = first; e <= last; e++) {
      if ((Atomics.add(this.words, e, 1) & HOT) === 0) {
        for (let u = first; u <= e; u++) Atomics.sub(this.words, u, 1);
        return false;
      }
    }
    return true;
  }

  /** Releases the pins of a write (the engine has applied its marks, or the worker gave up on it). */
  unpin(offset: number, length: number): void {
    const first = Math.floor(offset / this.extentSize);
    const last = Math.min(Math.floor((offset + length - 1) / this.extentSize), this.words.length - 1);
    for (let e = first; e <= last; e++) Atomics.sub(this.words, e, 1);
  }

  // ------------------------------------------------------------------------------------ engine side

  /** Extent `e` is in the activity log now (its transaction is durable). */
  markHot(e: number): void {
    if (e < this.words.length) Atomics.or(this.words, e, HOT);
  }

  /**
   * Takes extent `e` out of the map for an eviction: true when it had no pinned write (it is no longer
   * hot, so no new one starts), false when a write is pinned in it (choose another extent).
   */
  tryEvict(e: number): boolean {
    if (e >= this.words.length) return true;
    const old = Atomics.compareExchange(this.words, e, HOT, 0);
    return old === HOT || (old & HOT) === 0;
  }

  /** Extent `e` left the activity log without an eviction choice (the log was cleared); its pins stay counted. */
  cool(e: number): void {
    if (e < this.words.length) Atomics.and(this.words, e, COUNT);
  }

  /** Writes pinned in extent `e` (tests, status). */
  pins(e: number): number {
    return Atomics.load(this.words, e) & COUNT;
  }

  /** Whether extent `e` is hot. */
  isHot(e: number): boolean {
    return (Atomics.load(this.words, e) & HOT) !== 0;
  }
}
