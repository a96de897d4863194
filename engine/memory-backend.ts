// A volatile in-memory disk as a Backend; its bytes live in a SharedArrayBuffer so queue workers share it.
import type { Backend, BackendInfo, Completion } from './backend.js';
import { BackendError } from './backend.js';
import { copyFromVector, copyToVector, type IoVector } from './iovec.js';
import { EINVAL, EROFS } from './os.js';

export interface MemoryBackendOptions {
  /** The disk's bytes; pass the same buffer to every worker that serves the disk. */
  memory: SharedArrayBuffer;
  readOnly?: boolean;
  blockSize?: number;
}

/** Serves a SharedArrayBuffer as a disk. Flush is a no-op: nothing here survives the process. */
export class MemoryBackend implements Backend {
  readonly info: BackendInfo;
  private readonly mem: Buffer;

  constructor(options: MemoryBackendOptions) {
    const blockSize = options.blockSize ?? 512;
    if (blockSize !== 512 && blockSize !== 4096) throw new BackendError(`block size ${blockSize} is not supported: use 512 or 4096`);
    const size = Math.floor(options.memory.byteLength / blockSize) * blockSize;
    if (size === 0) throw new BackendError(`a memory disk needs at least one ${blockSize}-byte block`);
    this.mem = Buffer.from(options.memory, 0, size);
    const readOnly = options.readOnly ?? false;
    this.info = { size, blockSize, readOnly, name: 'memory', canFlush: false, canDiscard: !readOnly, canWriteZeroes: !readOnly };
  }

  /** Allocates the shared bytes for a memory disk of `size` bytes. */
  static allocate(size: number): SharedArrayBuffer {
    return new SharedArrayBuffer(size);
  }

  read(iov: IoVector, offset: number, done: Completion): void {
    if (!this.inRange(offset, iov.bytes)) return done.complete(-EINVAL);
    copyToVector(this.mem, iov, 0, iov.bytes, offset);
    done.complete(0);
  }

  write(iov: IoVector, offset: number, _fua: boolean, done: Completion): void {
    if (this.info.readOnly) return done.complete(-EROFS);
    if (!this.inRange(offset, iov.bytes)) return done.complete(-EINVAL);
    copyFromVector(iov, 0, this.mem, iov.bytes, offset);
    done.complete(0);
  }

  flush(done: Completion): void {
    done.complete(0);
  }

  discard(offset: number, length: number, done: Completion): void {
    this.writeZeroes(offset, length, true, done);
  }

  writeZeroes(offset: number, length: number, _mayUnmap: boolean, done: Completion): void {
    if (this.info.readOnly) return done.complete(-EROFS);
    if (!this.inRange(offset, length)) return done.complete(-EINVAL);
    this.mem.fill(0, offset, offset + length);
    done.complete(0);
  }

  close(): void {}

  private inRange(offset: number, length: number): boolean {
    return offset >= 0 && length >= 0 && offset + length <= this.info.size;
  }
}
