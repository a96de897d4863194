// A raw image file served through io_uring: many requests in flight per queue, one system call per batch.
import type { AsyncBackend, BackendInfo, Completion } from './backend.js';
import { FileBackend, type FileBackendOptions } from './file-backend.js';
import type { IoVector } from './iovec.js';
import { EROFS, NativeBuffer } from './os.js';
import {
  IORING_FSYNC_DATASYNC, IORING_OP_FSYNC, IORING_OP_READ, IORING_OP_READV, IORING_OP_WRITE, IORING_OP_WRITEV, IoUring,
} from './uring.js';

/** pwritev2/io_uring per-write flag: data (and needed metadata) durable on completion. */
const RWF_DSYNC = 0x2;

interface Op {
  done: Completion | null;
  iov: IoVector | null;
  offset: number;
  write: boolean;
  fua: boolean;
  expect: number;
}

/**
 * Reads, writes and flushes go to io_uring (vectored, straight from the caller's addresses); their
 * completions arrive when the caller's loop sees `eventFd` readable and calls `poll()`. Discard and
 * write-zeroes, rare and short, are done synchronously by the wrapped FileBackend, as are the rare
 * short transfers' remainders. Call `kick()` to end a batch of submissions.
 */
export class UringFileBackend implements AsyncBackend {
  readonly eventFd: number;
  private readonly file: FileBackend;
  private readonly ring: IoUring;
  private readonly ops: Op[];
  private readonly freeOps: number[];
  private readonly iovs: NativeBuffer;
  private readonly maxSegs: number;
  private pending = 0;
  private readonly syncResult = { status: 0, complete(s: number) { this.status = s; } };
  private readonly onCqe = (user: number, res: number): void => this.completeOp(user, res);

  constructor(options: FileBackendOptions & { depth?: number }) {
    this.file = new FileBackend(options);
    const depth = options.depth ?? 256;
    this.ring = new IoUring(depth);
    this.eventFd = this.ring.fd;
    this.maxSegs = options.maxSegments ?? 1024;
    this.iovs = new NativeBuffer(depth * Math.min(this.maxSegs, 260) * 16);
    this.ops = Array.from({ length: depth }, () => ({ done: null, iov: null, offset: 0, write: false, fua: false, expect: 0 }));
    this.freeOps = Array.from({ length: depth }, (_, i) => depth - 1 - i);
  }

  /** The wrapped file's (resize() replaces it). */
  get info(): BackendInfo {
    return this.file.info;
  }

  /** Online resize, as FileBackend.resize. */
  resize(size: number): void {
    this.file.resize(size);
  }

  read(iov: IoVector, offset: number, done: Completion): void {
    this.rw(iov, offset, false, false, done);
  }

  write(iov: IoVector, offset: number, fua: boolean, done: Completion): void {
    if (this.info.readOnly) return done.complete(-EROFS);
    this.rw(iov, offset, true, fua, done);
  }

  flush(done: Completion): void {
    const id = this.take(done, null, 0, false, false, 0);
    if (id < 0) return this.file.flush(done);
    this.prep(IORING_OP_FSYNC, 0, 0, 0, IORING_FSYNC_DATASYNC, id);
  }

  discard(offset: number, length: number, done: Completion): void {
    this.file.discard(offset, length, done);
  }

  writeZeroes(offset: number, length: number, mayUnmap: boolean, done: Completion): void {
    this.file.writeZeroes(offset, length, mayUnmap, done);
  }

  private rw(v: IoVector, offset: number, write: boolean, fua: boolean, done: Completion): void {
    const segsPerOp = Math.min(this.maxSegs, 260);
    let direct = v.count <= segsPerOp && offset >= 0 && offset + v.bytes <= this.info.size;
    for (let i = 0; direct && i < v.count; i++) if (v.addrs[i] === 0) direct = false;
    const id = direct ? this.take(done, v, offset, write, fua, v.bytes) : -1;
    if (id < 0) {
      // Buffers without addresses, or no free slot: the synchronous path.
      return write ? this.file.write(v, offset, fua, done) : this.file.read(v, offset, done);
    }
    // FUA: RWF_DSYNC makes this one write durable before it completes (pwritev2 semantics).
    const rwFlags = fua ? RWF_DSYNC : 0;
    if (v.count === 1) {
      this.prep(write ? IORING_OP_WRITE : IORING_OP_READ, v.addrs[0]!, v.lens[0]!, offset, rwFlags, id);
      return;
    }
    const base = id * segsPerOp * 16;
    for (let i = 0; i < v.count; i++) {
      this.iovs.setU64(base + i * 16, v.addrs[i]!);
      this.iovs.setU64(base + i * 16 + 8, v.lens[i]!);
    }
    this.prep(write ? IORING_OP_WRITEV : IORING_OP_READV, this.iovs.addr + base, v.count, offset, rwFlags, id);
  }

  private take(done: Completion, iov: IoVector | null, offset: number, write: boolean, fua: boolean, expect: number): number {
    const id = this.freeOps.pop();
    if (id === undefined) return -1;
    const op = this.ops[id]!;
    op.done = done;
    op.iov = iov;
    op.offset = offset;
    op.write = write;
    op.fua = fua;
    op.expect = expect;
    return id;
  }

  private prep(opcode: number, addr: number, len: number, offset: number, flags: number, id: number): void {
    if (!this.ring.prep(opcode, this.file.fd, addr, len, offset, flags, id)) {
      this.ring.submit();
      this.pending = 0;
      this.ring.prep(opcode, this.file.fd, addr, len, offset, flags, id);
    }
    this.pending++;
  }

  private completeOp(id: number, res: number): void {
    const op = this.ops[id]!;
    const done = op.done!;
    op.done = null;
    let st = res < 0 ? res : 0;
    if (res >= 0 && res < op.expect && op.iov) {
      // Short transfer: finish the rest synchronously from where the kernel stopped.
      st = this.file.segments(op.iov, op.offset, op.write, res);
    }
    if (st === 0 && op.write && op.fua && res < op.expect) {
      // The synchronous remainder was not covered by RWF_DSYNC.
      this.file.flush(this.syncResult);
      st = this.syncResult.status;
    }
    op.iov = null;
    this.freeOps.push(id);
    done.complete(st);
  }

  /** Ends a batch: one io_uring_enter for every SQE prepared since the last call. */
  kick(): void {
    if (this.pending > 0) {
      this.ring.submit();
      this.pending = 0;
    }
  }

  /** Completes every operation whose CQE is there. */
  poll(): void {
    this.ring.reap(this.onCqe);
  }

  /** Operations submitted and not completed yet. */
  inFlight(): number {
    return this.ops.length - this.freeOps.length;
  }

  /** Submits what is prepared and blocks until one completion is there, then completes what is ready. */
  waitOne(): void {
    if (this.inFlight() === 0) return;
    this.pending = 0;
    this.ring.submit(true);
    this.poll();
  }

  close(): void {
    while (this.inFlight() > 0) this.waitOne();
    this.ring.close();
    this.iovs.free();
    this.file.close();
  }
}
