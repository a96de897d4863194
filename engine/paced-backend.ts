// A layer that completes operations on a later turn of the event loop, at most `bytesPerSecond` of data a second (as nbdkit's rate filter).
//
// Long offline work (a RAID rebuild) over synchronous back-ends would otherwise run to its end inside
// one call: no timer, signal or progress bar gets a turn, and nothing limits its speed. Over this layer
// each operation is passed on at once and its completion is handed back later: on the next turn
// (setImmediate) while under the rate, or when the bytes moved so far are due (a token bucket without
// burst). Reads and writes count their bytes; flush, discard and write-zeroes pass unpaced.
import type { Backend, BackendInfo, Completion } from './backend.js';
import type { IoVector } from './iovec.js';

export interface PacedBackendOptions {
  /** Data bytes a second (reads and writes together); 0 or absent: no limit, only the deferral. */
  bytesPerSecond?: number;
}

export class PacedBackend implements Backend {
  private readonly rate: number;
  /** When (ms, performance.now) the bytes accepted so far are due. */
  private due = 0;

  constructor(readonly next: Backend, o: PacedBackendOptions = {}) {
    const rate = o.bytesPerSecond ?? 0;
    if (!Number.isFinite(rate) || rate < 0) throw new RangeError(`a rate of ${rate} bytes a second is not a rate`);
    this.rate = rate;
  }

  get info(): BackendInfo {
    return this.next.info;
  }

  read(iov: IoVector, offset: number, done: Completion): void {
    const bytes = iov.bytes;
    this.next.read(iov, offset, { complete: (st) => this.later(bytes, done, st) });
  }

  write(iov: IoVector, offset: number, fua: boolean, done: Completion): void {
    const bytes = iov.bytes;
    this.next.write(iov, offset, fua, { complete: (st) => this.later(bytes, done, st) });
  }

  flush(done: Completion): void {
    this.next.flush({ complete: (st) => this.later(0, done, st) });
  }

  discard(offset: number, length: number, done: Completion): void {
    this.next.discard(offset, length, { complete: (st) => this.later(0, done, st) });
  }

  writeZeroes(offset: number, length: number, mayUnmap: boolean, done: Completion): void {
    this.next.writeZeroes(offset, length, mayUnmap, { complete: (st) => this.later(0, done, st) });
  }

  close(): void {
    this.next.close();
  }

  /** Completes `done` with `st` on a later turn, once `bytes` more are due under the rate. */
  private later(bytes: number, done: Completion, st: number): void {
    if (this.rate === 0 || bytes === 0) {
      setImmediate(() => done.complete(st));
      return;
    }
    const now = performance.now();
    this.due = Math.max(this.due, now) + (bytes * 1000) / this.rate;
    const wait = this.due - now;
    if (wait < 1) setImmediate(() => done.complete(st));
    else setTimeout(() => done.complete(st), wait);
  }
}
