// A Backend that fails on purpose: errors on chosen ranges and operations, or a member that vanishes, over any other Backend (as nbdkit's error filter and dm-flakey do).
//
// RAID tests need members that fail the way disks do: a bad sector that reads with EIO (once, or
// until rewritten, as md's read-error repair expects), a write that fails, a device pulled out. This
// layer injects those in front of a real back-end (a file, memory) without root, loop devices or
// device-mapper; what it does not fail it passes on unchanged, completion included.
import type { Backend, BackendInfo, Completion } from './backend.js';
import type { IoVector } from './iovec.js';
import { EIO, ENODEV } from './os.js';

/** Which operations a fault applies to. */
export type FaultOp = 'read' | 'write' | 'flush' | 'discard' | 'any';

/** An injected fault: operations of `op` touching [offset, offset + length) fail with -errno. */
export interface InjectedFault {
  op: FaultOp;
  offset: number;
  length: number;
  /** Positive errno; EIO by default. */
  errno?: number;
  /** Fail this many matching operations, then stop (default: until cleared). */
  times?: number;
  /** A successful write over the whole range clears a read fault (a bad sector remapped on rewrite). */
  healOnWrite?: boolean;
}

/** Counts of what was failed, per operation. */
export interface FaultStats {
  read: number;
  write: number;
  flush: number;
  discard: number;
}

export class FaultyBackend implements Backend {
  private faults: (InjectedFault & { left: number })[] = [];
  private vanished = false;
  readonly failed: FaultStats = { read: 0, write: 0, flush: 0, discard: 0 };

  constructor(readonly next: Backend) {}

  get info(): BackendInfo {
    return this.next.info;
  }

  /** Adds a fault (see InjectedFault). */
  inject(f: InjectedFault): void {
    if (!Number.isSafeInteger(f.offset) || !Number.isSafeInteger(f.length) || f.offset < 0 || f.length < 0) {
      throw new RangeError(`a fault needs a whole, non-negative offset and length (got ${f.offset}+${f.length})`);
    }
    if (f.times !== undefined && (!Number.isInteger(f.times) || f.times < 1)) throw new RangeError(`a fault's times must be at least 1 (got ${f.times})`);
    this.faults.push({ ...f, left: f.times ?? Infinity });
  }

  /** Removes every fault, and brings a vanished device back. */
  clear(): void {
    this.faults = [];
    this.vanished = false;
  }

  /** The device is gone: every operation fails with ENODEV until `clear()`. */
  vanish(): void {
    this.vanished = true;
  }

  /** Faults still active. */
  get active(): readonly InjectedFault[] {
    return this.faults;
  }

  read(iov: IoVector, offset: number, done: Completion): void {
    const st = this.check('read', offset, iov.bytes);
    if (st !== 0) return done.complete(st);
    this.next.read(iov, offset, done);
  }

  write(iov: IoVector, offset: number, fua: boolean, done: Completion): void {
    const st = this.check('write', offset, iov.bytes);
    if (st !== 0) return done.complete(st);
    this.next.write(iov, offset, fua, this.healing(offset, iov.bytes, done));
  }

  flush(done: Completion): void {
    const st = this.check('flush', 0, 0);
    if (st !== 0) return done.complete(st);
    this.next.flush(done);
  }

  discard(offset: number, length: number, done: Completion): void {
    const st = this.check('discard', offset, length);
    if (st !== 0) return done.complete(st);
    this.next.discard(offset, length, done);
  }

  writeZeroes(offset: number, length: number, mayUnmap: boolean, done: Completion): void {
    const st = this.check('write', offset, length);
    if (st !== 0) return done.complete(st);
    this.next.writeZeroes(offset, length, mayUnmap, this.healing(offset, length, done));
  }

  close(): void {
    this.next.close();
  }

  resize(size: number): void {
    this.next.resize?.(size);
  }

  /** 0, or the -errno of the first fault that matches (and is used up by) this operation. */
  private check(op: Exclude<FaultOp, 'any'>, offset: number, length: number): number {
    if (this.vanished) {
      this.failed[op]++;
      return -ENODEV;
    }
    for (let i = 0; i < this.faults.length; i++) {
      const f = this.faults[i]!;
      if (f.op !== op && f.op !== 'any') continue;
      // A flush touches everything; other operations their range.
      if (op !== 'flush' && !(offset < f.offset + f.length && f.offset < offset + Math.max(1, length))) continue;
      if (--f.left <= 0) this.faults.splice(i, 1);
      this.failed[op]++;
      return -(f.errno ?? EIO);
    }
    return 0;
  }

  /** Completes `done`; a successful write first drops the read faults it rewrote whole (healOnWrite). */
  private healing(offset: number, length: number, done: Completion): Completion {
    if (!this.faults.some((f) => f.healOnWrite)) return done;
    return {
      complete: (st: number) => {
        if (st === 0) this.faults = this.faults.filter((f) => !(f.healOnWrite && f.op === 'read' && offset <= f.offset && f.offset + f.length <= offset + length));
        done.complete(st);
      },
    };
  }
}
