// Per-queue virtio-blk counters in shared memory: written by the queue's own thread with plain stores, read by the main thread on a scrape.
//
// One writer per buffer (the queue worker), so no Atomics: a reader sees each Float64 whole (aligned 8-byte
// stores are not torn on the machines Node runs on) and the set of them approximately, which is all a
// monitoring scrape needs. Nothing is allocated per request: a request costs a performance.now() call or
// two (about 60 ns each), a bucket search and a few stores. Requests a drain takes one after the other
// from a synchronous back-end share a clock reading: one's end is the next one's start.

/** The request types counted, in the order of their rows (`other`: GET_ID, unsupported and malformed requests). */
export const BLK_STAT_OPS = ['read', 'write', 'flush', 'discard', 'write_zeroes', 'other'] as const;
export type BlkStatOp = (typeof BLK_STAT_OPS)[number];
export const STAT_READ = 0;
export const STAT_WRITE = 1;
export const STAT_FLUSH = 2;
export const STAT_DISCARD = 3;
export const STAT_WRITE_ZEROES = 4;
export const STAT_OTHER = 5;

/**
 * Upper bounds of the latency histogram's buckets, in seconds: 1-2-5 steps from 10 µs to 100 ms (a
 * 4 KiB read from the page cache takes ~10 µs, a replicated write over a LAN ~100 µs to ms), then +Inf.
 */
export const LATENCY_BUCKETS = [
  10e-6, 20e-6, 50e-6, 100e-6, 200e-6, 500e-6, 1e-3, 2e-3, 5e-3, 10e-3, 20e-3, 50e-3, 100e-3,
];
/** The same bounds in milliseconds (performance.now()'s unit), for the request path. */
const BOUNDS_MS = LATENCY_BUCKETS.map((s) => s * 1000);
const NB = LATENCY_BUCKETS.length;

// One row of Float64 per op: started, completed, bytes (of completed, successful requests), errors
// (completed with a status other than OK), latency sum (seconds), then NB + 1 bucket counts (not cumulative; the last is +Inf).
const STARTED = 0;
const COMPLETED = 1;
const BYTES = 2;
const ERRORS = 3;
const LAT_SUM = 4;
const BUCKET0 = 5;
const ROW = BUCKET0 + NB + 1;

/** Bytes of shared memory one queue's counters take. */
export const BLK_STATS_BYTES = ROW * BLK_STAT_OPS.length * Float64Array.BYTES_PER_ELEMENT;

/** One op's counters as read. */
export interface BlkOpCounters {
  started: number;
  completed: number;
  bytes: number;
  errors: number;
  /** Sum of the completed requests' latencies, in seconds. */
  latencySum: number;
  /** Completed requests per bucket of LATENCY_BUCKETS (not cumulative), the last one past 100 ms. */
  buckets: number[];
}

/** A queue's counters over its shared buffer: the worker writes through `begin`/`end`, the main thread reads with `read`. */
export class BlkQueueStats {
  readonly f: Float64Array;
  /** When the last request ended, if the worker is still in the drain that took it (-1: not): the next request's start. */
  private last = -1;

  constructor(readonly buffer: SharedArrayBuffer) {
    if (buffer.byteLength < BLK_STATS_BYTES) throw new Error(`queue statistics need ${BLK_STATS_BYTES} bytes, got ${buffer.byteLength}`);
    this.f = new Float64Array(buffer, 0, ROW * BLK_STAT_OPS.length);
  }

  /** A zeroed buffer for one queue. */
  static allocate(): SharedArrayBuffer {
    return new SharedArrayBuffer(BLK_STATS_BYTES);
  }

  /**
   * A drain of the ring starts: the next request starts when it is taken, not when an earlier one ended
   * (it may have become available long after).
   */
  batch(): void {
    this.last = -1;
  }

  /**
   * A request of type `op` starts; returns its start time for `end`: now, or, when the request before it
   * in this drain has just completed, that completion's time (the same instant, read once).
   */
  begin(op: number): number {
    this.f[op * ROW + STARTED]!++;
    const t = this.last;
    if (t >= 0) {
      this.last = -1;
      return t;
    }
    return performance.now();
  }

  /** A request of type `op` that began at `t0` completed (at `now`); `bytes` moved (0 when it failed), `ok` its outcome. */
  end(op: number, t0: number, bytes: number, ok: boolean, now = performance.now()): void {
    const f = this.f;
    const row = op * ROW;
    this.last = now;
    const ms = now - t0;
    let b = 0;
    while (b < NB && ms > BOUNDS_MS[b]!) b++;
    f[row + BUCKET0 + b]!++;
    f[row + LAT_SUM]! += ms / 1000;
    f[row + COMPLETED]!++;
    if (ok) f[row + BYTES]! += bytes;
    else f[row + ERRORS]!++;
  }

  /** The counters of op row `op` as they stand (plain reads of another thread's stores: approximate, never torn). */
  read(op: number): BlkOpCounters {
    const f = this.f;
    const row = op * ROW;
    const buckets: number[] = [];
    for (let b = 0; b <= NB; b++) buckets.push(f[row + BUCKET0 + b]!);
    return { started: f[row + STARTED]!, completed: f[row + COMPLETED]!, bytes: f[row + BYTES]!, errors: f[row + ERRORS]!, latencySum: f[row + LAT_SUM]!, buckets };
  }

  /** Adds another queue's (or a stopped front-end's) counters into these: for a reader's own totals, never on a worker's buffer. */
  addFrom(other: BlkQueueStats): void {
    const a = this.f;
    const b = other.f;
    for (let i = 0; i < a.length; i++) a[i]! += b[i]!;
  }
}
