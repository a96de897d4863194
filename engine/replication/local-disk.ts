// The node's own backing disk as the replication engine uses it: synchronous positional I/O, with injectable faults.
import fs from 'node:fs';
import { EINVAL, EIO } from '../os.js';
import { preadFull, pwriteFull, syncData, zeroRange } from '../positional-io.js';

/** An injected fault: I/O of `kind` touching [offset, offset + length) fails with EIO. */
export interface Fault {
  kind: 'read' | 'write';
  offset: number;
  length: number;
}

/** Thrown by LocalDisk operations; `errno` is positive. */
export class DiskIoError extends Error {
  constructor(readonly op: string, readonly errno: number, readonly offset: number, readonly length: number) {
    super(`${op} of ${length} bytes at ${offset} failed: errno ${errno}`);
  }
}

/** A failed `fs` callback as a DiskIoError (EIO when it carries no errno). */
function fsError(op: string, err: NodeJS.ErrnoException, offset: number, length: number): DiskIoError {
  return new DiskIoError(op, err.errno ? Math.abs(err.errno) : EIO, offset, length);
}

/**
 * The data area of a backing file (its first `size` bytes; internal metadata follows). Calls are
 * synchronous: they run on the engine's thread, where each is one system call on the page cache.
 * Faults injected with `inject` (tests, and the control socket's `fault` request) make matching
 * calls fail with EIO, the way a failing medium does.
 */
export class LocalDisk {
  private readonly fd: number;
  private faults: Fault[] = [];
  private closed = false;

  /** `size`: the data area's bytes; an online resize grows it (Resource.resizer). */
  constructor(readonly path: string, public size: number) {
    this.fd = fs.openSync(path, 'r+');
  }

  /** Adds a fault; `clearFaults` removes them all. */
  inject(f: Fault): void {
    this.faults.push(f);
  }

  clearFaults(): void {
    this.faults = [];
  }

  get hasFaults(): boolean {
    return this.faults.length > 0;
  }

  /** Reads `length` bytes at `offset` into the start of `buf`. */
  read(buf: Uint8Array, length: number, offset: number): void {
    this.check('read', offset, length);
    this.status(preadFull(this.fd, buf, 0, length, offset), 'read', offset, length);
  }

  /** Writes the first `length` bytes of `buf` at `offset`. */
  write(buf: Uint8Array, length: number, offset: number): void {
    this.check('write', offset, length);
    this.status(pwriteFull(this.fd, buf, 0, length, offset), 'write', offset, length);
  }

  /** Makes completed writes durable. */
  sync(): void {
    this.status(syncData(this.fd), 'flush', 0, 0);
  }

  /**
   * `write()` on libuv's thread pool: `done` gets null once all `length` bytes are written (the buffer
   * must stay untouched until then), or the error. An injected fault fails it at once.
   */
  writeAsync(buf: Uint8Array, length: number, offset: number, done: (err: Error | null) => void): void {
    try {
      this.check('write', offset, length);
    } catch (e) {
      return done(e as Error);
    }
    LocalDisk.pendingWrites++;
    const finish = (err: Error | null) => {
      LocalDisk.pendingWrites--;
      done(err);
    };
    const step = (at: number): void => {
      fs.write(this.fd, buf, at, length - at, offset + at, (err, n) => {
        if (err) return finish(fsError('write', err, offset, length));
        if (at + n < length && n > 0) return step(at + n);
        finish(at + n === length ? null : new DiskIoError('write', EIO, offset, length));
      });
    };
    step(0);
  }

  /** writeAsync calls not finished yet, in this process (scenario tests with simulated time wait for them). */
  static pendingWrites = 0;

  /** `sync()` on libuv's thread pool: `done` gets null once the writes completed before the call are durable. */
  syncAsync(done: (err: Error | null) => void): void {
    fs.fdatasync(this.fd, (err) => done(err ? fsError('flush', err, 0, 0) : null));
  }

  /** Deallocates (`unmap`) or zeroes a range; both read back as zeroes. */
  trim(offset: number, length: number, unmap: boolean): void {
    this.check('write', offset, length);
    this.status(zeroRange(this.fd, offset, length, unmap), 'trim', offset, length);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    fs.closeSync(this.fd);
  }

  private check(kind: 'read' | 'write', offset: number, length: number): void {
    if (offset < 0 || length < 0 || offset + length > this.size) throw new DiskIoError(kind, EINVAL, offset, length);
    for (const f of this.faults) {
      if (f.kind === kind && offset < f.offset + f.length && f.offset < offset + length) throw new DiskIoError(kind, EIO, offset, length);
    }
  }

  /** Throws DiskIoError for a failed positional-io status (a negative errno). */
  private status(st: number, op: string, offset: number, length: number): void {
    if (st < 0) throw new DiskIoError(op, -st, offset, length);
  }
}
