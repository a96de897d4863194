// The node's own backing file or device as the replication engine uses it: synchronous positional I/O, with injectable faults.
import fs from 'node:fs';
import { EIO, NativeBuffer } from '../os.js';
import { preadFull, pwriteFull, syncData, zeroRange } from '../positional-io.js';
import { DiskIoError, FaultInjectable, type IoDone, type NodeDisk } from './node-disk.js';

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
export class LocalDisk extends FaultInjectable implements NodeDisk {
  private readonly fd: number;
  readonly resizable = true;
  private closed = false;
  /**
   * A second descriptor with O_DIRECT for writeAsync (resync answers): null when the file system
   * refuses it, undefined until first needed. Direct writes skip the page cache, so a resync of a
   * whole disk is not held in the kernel's dirty-page throttling and leaves no writeback for the final
   * fdatasync; here they ran at 1.5-1.8x of buffered writes + fdatasync (bench/RESULTS.md).
   */
  private directFd: number | null | undefined;
  /** Page-aligned staging buffers for direct writes (O_DIRECT wants aligned memory), reused. */
  private readonly directBufs: Uint8Array[] = [];
  private readonly directNative: NativeBuffer[] = [];
  /** Direct writes on the pool: their buffers and descriptor stay until they finish. */
  private directBusy = 0;
  /** writeAsync calls that went O_DIRECT, and through the page cache. */
  readonly asyncWrites = { direct: 0, buffered: 0 };

  /** `size`: the data area's bytes; an online resize grows it (Resource.resizer). */
  constructor(readonly path: string, public size: number) {
    super();
    this.fd = fs.openSync(path, 'r+');
  }

  /** Queue workers open the same file for their fast paths. */
  get workerFile(): string {
    return this.path;
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
  writeAsync(buf: Uint8Array, length: number, offset: number, done: IoDone): void {
    try {
      this.check('write', offset, length);
    } catch (e) {
      return done(e as Error);
    }
    LocalDisk.pendingIo++;
    const finish = (err: Error | null) => {
      LocalDisk.pendingIo--;
      done(err);
    };
    const staged = this.directStage(buf, length, offset);
    if (staged) this.directBusy++;
    if (staged) this.asyncWrites.direct++;
    else this.asyncWrites.buffered++;
    const fd = staged ? this.directFd! : this.fd;
    const src = staged ?? buf;
    const step = (at: number): void => {
      fs.write(fd, src, at, length - at, offset + at, (err, n) => {
        if (err && staged && err.code === 'EINVAL') {
          // The file system takes O_DIRECT opens but not these writes: buffered from now on.
          LocalDisk.directRefused = true;
          return fs.write(this.fd, buf, 0, length, offset, (e2, n2) => after(e2, n2, 0, false));
        }
        after(err, n, at, staged !== null);
      });
    };
    const after = (err: NodeJS.ErrnoException | null, n: number, at: number, direct: boolean): void => {
      if (!err && at + n < length && n > 0) {
        if (direct) return step(at + n);
        return fs.write(this.fd, buf, at + n, length - at - n, offset + at + n, (e, m) => after(e, m, at + n, false));
      }
      if (staged) {
        this.directBufs.push(staged);
        this.directBusy--;
        if (this.closed || LocalDisk.directRefused) this.releaseDirect();
      }
      if (err) return finish(fsError('write', err, offset, length));
      finish(at + n === length ? null : new DiskIoError('write', EIO, offset, length));
    };
    step(0);
  }

  /**
   * `read()` on libuv's thread pool: `done` gets null once `length` bytes at `offset` are in `buf` (which
   * must stay untouched until then), or the error. Verify reads this way, so a cold disk does not hold
   * the engine's thread (and every guest write behind it) for each megabyte.
   */
  readAsync(buf: Uint8Array, length: number, offset: number, done: IoDone): void {
    try {
      this.check('read', offset, length);
    } catch (e) {
      return done(e as Error);
    }
    LocalDisk.pendingIo++;
    const step = (at: number): void => {
      fs.read(this.fd, buf, at, length - at, offset + at, (err, n) => {
        if (!err && n > 0 && at + n < length) return step(at + n);
        LocalDisk.pendingIo--;
        if (err) return done(fsError('read', err, offset, length));
        done(at + n === length ? null : new DiskIoError('read', EIO, offset, length));
      });
    };
    step(0);
  }

  /**
   * Writes of this many bytes and up to DIRECT_MAX go direct; others through the page cache. A small
   * direct write waits for the device on a pool thread, while small buffered ones merge in writeback:
   * the 1 % partial resync of scattered 4 KiB blocks took 2.2 s direct and 0.55 s buffered here.
   */
  static readonly DIRECT_MIN = 64 << 10;
  static readonly DIRECT_MAX = 1 << 20;
  /** Staging buffers at most (16 MiB): more direct writes than the pool runs at once only queue. */
  static readonly DIRECT_BUFFERS = 16;

  /** A page-aligned copy of `buf` for an O_DIRECT write, or null when this write goes buffered. */
  private directStage(buf: Uint8Array, length: number, offset: number): Uint8Array | null {
    if (!LocalDisk.directWrites || LocalDisk.directRefused || this.closed || length < LocalDisk.DIRECT_MIN || length > LocalDisk.DIRECT_MAX || length % 4096 !== 0 || offset % 4096 !== 0) return null;
    if (this.directFd === undefined) {
      try {
        this.directFd = fs.openSync(this.path, fs.constants.O_WRONLY | fs.constants.O_DIRECT);
      } catch {
        this.directFd = null; // tmpfs and others: buffered writes
      }
    }
    if (this.directFd === null) return null;
    let b = this.directBufs.pop();
    if (!b) {
      if (this.directNative.length >= LocalDisk.DIRECT_BUFFERS) return null; // all busy: this one goes buffered
      const nb = new NativeBuffer(LocalDisk.DIRECT_MAX + 4096);
      const skew = (4096 - (nb.addr % 4096)) % 4096;
      this.directNative.push(nb);
      b = nb.u8.subarray(skew, skew + LocalDisk.DIRECT_MAX);
    }
    b.set(length === buf.length ? buf : buf.subarray(0, length));
    return b;
  }

  /** Whether writeAsync may use O_DIRECT (tests and benchmarks compare both). */
  static directWrites = process.env.TWINDISK_DIRECT_RESYNC !== '0';
  /** A direct write failed with EINVAL: this process writes buffered from then on. */
  private static directRefused = false;

  /** writeAsync and readAsync calls not finished yet, in this process (scenario tests with simulated time wait for them). */
  static pendingIo = 0;

  /** `sync()` on libuv's thread pool: `done` gets null once the writes completed before the call are durable. */
  syncAsync(done: IoDone): void {
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
    this.releaseDirect();
  }

  /** Closes the direct descriptor and frees the staging buffers once no direct write is on the pool. */
  private releaseDirect(): void {
    if (this.directBusy > 0) return; // the last one to finish calls this again
    if (this.directFd !== null && this.directFd !== undefined) fs.closeSync(this.directFd);
    this.directFd = null;
    for (const nb of this.directNative) nb.free();
    this.directNative.length = 0;
    this.directBufs.length = 0;
  }

  private check(kind: 'read' | 'write', offset: number, length: number): void {
    this.faults.check(kind, offset, length, this.size);
  }

  /** Throws DiskIoError for a failed positional-io status (a negative errno). */
  private status(st: number, op: string, offset: number, length: number): void {
    if (st < 0) throw new DiskIoError(op, -st, offset, length);
  }
}
