// A raw image file as a Backend: positional vectored I/O straight between the file and the caller's memory.
import fs from 'node:fs';
import type { Backend, BackendInfo, Completion } from './backend.js';
import { BackendError } from './backend.js';
import type { IoVector } from './iovec.js';
import { EINTR, EINVAL, EROFS, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, NativeBuffer, errno, preadvRaw, pwritevRaw } from './os.js';
import { fallocate, syncData, transferFull, transferFullAt, zeroRange } from './positional-io.js';

export interface FileBackendOptions {
  path: string;
  readOnly?: boolean;
  /** 512 (default) or 4096. */
  blockSize?: number;
  /** Largest number of segments one request may carry (sizes the iovec array). Default 1024. */
  maxSegments?: number;
  /** Serve at most this many bytes from the start of the file (the rest holds metadata). */
  limit?: number;
}

/**
 * Serves a raw image file. Reads and writes go through preadv/pwritev on the addresses in the
 * request's IoVector, so guest memory and the page cache exchange data with no copy in between.
 * Every call is synchronous and completes before it returns: use it from a worker thread.
 */
export class FileBackend implements Backend {
  /** Replaced (never mutated) by resize(). */
  info: BackendInfo;
  /** The open image; the io_uring back-end submits on it. */
  readonly fd: number;
  private readonly iov: NativeBuffer;
  private closed = false;

  constructor(readonly options: FileBackendOptions) {
    const blockSize = options.blockSize ?? 512;
    if (blockSize !== 512 && blockSize !== 4096) {
      throw new BackendError(`block size ${blockSize} is not supported: use 512 or 4096`);
    }
    const readOnly = options.readOnly ?? false;
    try {
      this.fd = fs.openSync(options.path, readOnly ? 'r' : 'r+');
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      const hint = err.code === 'ENOENT' ? ' (create it first, e.g. `truncate -s 1G FILE`, or pass --size)'
        : err.code === 'EACCES' || err.code === 'EROFS' ? ' (check its permissions, or serve it with --read-only)' : '';
      throw new BackendError(`cannot open image ${options.path}: ${err.message}${hint}`);
    }
    const st = fs.fstatSync(this.fd);
    if (!st.isFile() && !st.isBlockDevice()) {
      fs.closeSync(this.fd);
      throw new BackendError(`${options.path} is neither a regular file nor a block device`);
    }
    const size = Math.floor(Math.min(st.size, options.limit ?? Infinity) / blockSize) * blockSize;
    if (size === 0) {
      fs.closeSync(this.fd);
      throw new BackendError(`image ${options.path} is smaller than one ${blockSize}-byte block: give it a size (truncate -s 1G ${options.path})`);
    }
    this.iov = new NativeBuffer(16 * (options.maxSegments ?? 1024));
    this.info = {
      size, blockSize, readOnly, name: `file:${options.path}`,
      canFlush: true, canDiscard: !readOnly && st.isFile(), canWriteZeroes: !readOnly,
    };
  }

  read(iov: IoVector, offset: number, done: Completion): void {
    done.complete(this.transfer(iov, offset, false));
  }

  write(iov: IoVector, offset: number, fua: boolean, done: Completion): void {
    if (this.info.readOnly) return done.complete(-EROFS);
    let st = this.transfer(iov, offset, true);
    if (st === 0 && fua) st = syncData(this.fd);
    done.complete(st);
  }

  flush(done: Completion): void {
    done.complete(syncData(this.fd));
  }

  discard(offset: number, length: number, done: Completion): void {
    if (this.info.readOnly) return done.complete(-EROFS);
    if (!this.inRange(offset, length)) return done.complete(-EINVAL);
    done.complete(fallocate(this.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length));
  }

  writeZeroes(offset: number, length: number, mayUnmap: boolean, done: Completion): void {
    if (this.info.readOnly) return done.complete(-EROFS);
    if (!this.inRange(offset, length)) return done.complete(-EINVAL);
    done.complete(zeroRange(this.fd, offset, length, mayUnmap));
  }

  /** Takes the image's new size (online resize): refused past the end of the file or off the block size. */
  resize(size: number): void {
    const bs = this.info.blockSize;
    if (!Number.isSafeInteger(size) || size < bs || size % bs !== 0) throw new BackendError(`size ${size} is not a positive multiple of the ${bs}-byte block size`);
    const st = fs.fstatSync(this.fd);
    const avail = st.isBlockDevice() ? Infinity : st.size;
    if (size > Math.min(avail, this.options.limit ?? Infinity)) throw new BackendError(`${this.options.path} holds ${st.size} bytes, less than ${size}: grow it first`);
    this.info = { ...this.info, size };
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    fs.closeSync(this.fd);
    this.iov.free();
  }

  private inRange(offset: number, length: number): boolean {
    return offset >= 0 && length >= 0 && offset + length <= this.info.size;
  }

  /** Moves the vector's bytes to or from the file at `offset`; returns 0 or -errno. */
  private transfer(v: IoVector, offset: number, toFile: boolean): number {
    if (!this.inRange(offset, v.bytes)) return -EINVAL;
    const n = v.count;
    if (n === 1 && v.addrs[0] !== 0) {
      return transferFullAt(this.fd, v.addrs[0]!, v.lens[0]!, offset, toFile);
    }
    let direct = n <= this.iov.size >>> 4;
    for (let i = 0; direct && i < n; i++) if (v.addrs[i] === 0) direct = false;
    if (direct) {
      const iov = this.iov;
      for (let i = 0; i < n; i++) {
        iov.setU64(i * 16, v.addrs[i]!);
        iov.setU64(i * 16 + 8, v.lens[i]!);
      }
      const r = toFile ? pwritevRaw(this.fd, iov.addr, n, offset) : preadvRaw(this.fd, iov.addr, n, offset);
      if (r === v.bytes) return 0;
      if (r < 0 && errno() !== EINTR) return -errno();
      // Short or interrupted: finish segment by segment from where it stopped.
      return this.segments(v, offset, toFile, r < 0 ? 0 : r);
    }
    return this.segments(v, offset, toFile, 0);
  }

  /**
   * Segment-wise transfer that skips the first `skip` bytes (already transferred): the fallback
   * for short reads and writes, also used by the io_uring back-end. Returns 0 or -errno.
   */
  segments(v: IoVector, offset: number, toFile: boolean, skip: number): number {
    let pos = offset;
    for (let i = 0; i < v.count; i++) {
      let len = v.lens[i]!;
      let o = 0;
      if (skip >= len) { skip -= len; pos += len; continue; }
      o = skip; len -= skip; pos += skip; skip = 0;
      const st = v.addrs[i] !== 0
        ? transferFullAt(this.fd, v.addrs[i]! + o, len, pos, toFile)
        : transferFull(this.fd, v.bufs[i]!, v.offs[i]! + o, len, pos, toFile);
      if (st !== 0) return st;
      pos += len;
    }
    return 0;
  }
}
