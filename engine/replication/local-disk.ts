// The node's own backing disk as the replication engine uses it: synchronous positional I/O, with injectable faults.
import fs from 'node:fs';
import { EINVAL, EIO, EOPNOTSUPP, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE, errno, fallocateRaw } from '../os.js';

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

/**
 * The data area of a backing file (its first `size` bytes; internal metadata follows). Calls are
 * synchronous: they run on the engine's thread, where each is one system call on the page cache.
 * Faults injected with `inject` (tests, `twindisk inject-fault`) make matching calls fail with EIO,
 * the way a failing medium does.
 */
export class LocalDisk {
  private readonly fd: number;
  private faults: Fault[] = [];
  private closed = false;

  constructor(readonly path: string, readonly size: number) {
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

  read(buf: Uint8Array, length: number, offset: number): void {
    this.check('read', offset, length);
    let done = 0;
    while (done < length) {
      const n = this.io(() => fs.readSync(this.fd, buf, done, length - done, offset + done), 'read', offset, length);
      if (n === 0) throw new DiskIoError('read', EIO, offset, length);
      done += n;
    }
  }

  write(buf: Uint8Array, length: number, offset: number): void {
    this.check('write', offset, length);
    let done = 0;
    while (done < length) {
      done += this.io(() => fs.writeSync(this.fd, buf, done, length - done, offset + done), 'write', offset, length);
    }
  }

  /** Makes completed writes durable. */
  sync(): void {
    this.io(() => fs.fdatasyncSync(this.fd), 'flush', 0, 0);
  }

  /** `sync()` on libuv's thread pool: `done` gets null once the writes completed before the call are durable. */
  syncAsync(done: (err: Error | null) => void): void {
    fs.fdatasync(this.fd, (err) => done(err ? new DiskIoError('flush', err.errno ? -err.errno : 5, 0, 0) : null));
  }

  /** Deallocates (`unmap`) or zeroes a range; both read back as zeroes. */
  trim(offset: number, length: number, unmap: boolean): void {
    this.check('write', offset, length);
    const mode = unmap ? FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE : FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;
    if (fallocateRaw(this.fd, mode, offset, length) === 0) return;
    const e = errno();
    if (e !== EOPNOTSUPP && e !== EINVAL) throw new DiskIoError('trim', e, offset, length);
    // File systems without ZERO_RANGE: write zeroes.
    const zero = new Uint8Array(Math.min(length, 1 << 20));
    for (let pos = 0; pos < length; pos += zero.length) {
      const n = Math.min(zero.length, length - pos);
      this.io(() => fs.writeSync(this.fd, zero, 0, n, offset + pos), 'write', offset, length);
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    fs.closeSync(this.fd);
  }

  private check(kind: 'read' | 'write', offset: number, length: number): void {
    if (offset < 0 || length < 0 || offset + length > this.size) throw new DiskIoError(kind, 22, offset, length);
    for (const f of this.faults) {
      if (f.kind === kind && offset < f.offset + f.length && f.offset < offset + length) throw new DiskIoError(kind, EIO, offset, length);
    }
  }

  private io<T>(fn: () => T, op: string, offset: number, length: number): T {
    try {
      return fn();
    } catch (e) {
      const n = (e as NodeJS.ErrnoException).errno;
      throw new DiskIoError(op, n ? Math.abs(n) : EIO, offset, length);
    }
  }
}
