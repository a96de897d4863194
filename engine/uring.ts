// A minimal io_uring: setup, shared submission/completion rings and io_uring_enter, from TypeScript through koffi.
//
// The rings are memory shared with the kernel; submission and completion indices are read and
// written with Atomics (acquire/release as liburing's smp_load_acquire/smp_store_release).
import koffi from 'koffi';
import { NativeBuffer, errno } from './os.js';

const libc = koffi.load('libc.so.6');
const syscall3 = libc.func('long syscall(long nr, ...)');
const mmapPtr = libc.func('void *mmap(void *addr, size_t len, int prot, int flags, int fd, int64_t off)');
const munmap = libc.func('int munmap(uintptr_t addr, size_t len)');
const closeFd = libc.func('int close(int fd)');

const SYS_io_uring_setup = 425;
const SYS_io_uring_enter = 426;
const IORING_OFF_SQ_RING = 0;
const IORING_OFF_CQ_RING = 0x8000000;
const IORING_OFF_SQES = 0x10000000;
const IORING_ENTER_GETEVENTS = 1;
const PROT_RW = 3;
const MAP_SHARED_POPULATE = 0x1 | 0x8000;

export const IORING_OP_READV = 1;
export const IORING_OP_WRITEV = 2;
export const IORING_OP_FSYNC = 3;
export const IORING_OP_FALLOCATE = 17;
export const IORING_OP_READ = 22;
export const IORING_OP_WRITE = 23;
export const IORING_FSYNC_DATASYNC = 1;
export const SQE_SIZE = 64;

function map(fd: number, len: number, off: number): { addr: number; ab: ArrayBuffer; len: number } {
  const p = mmapPtr(null, len, PROT_RW, MAP_SHARED_POPULATE, fd, off);
  const addr = Number(koffi.address(p));
  if (!p || addr === 2 ** 64 - 1 || addr > 2 ** 62) throw new Error(`io_uring mmap failed: errno ${errno()}`);
  return { addr, ab: koffi.view(p, len) as ArrayBuffer, len };
}

/** One io_uring instance. Submissions are written with `prep*`, made visible by `submit`, reaped by `reap`. */
export class IoUring {
  readonly fd: number;
  readonly entries: number;
  private readonly maps: { addr: number; len: number }[] = [];
  private readonly sq32: Uint32Array;
  private readonly cq32: Uint32Array;
  private readonly sqes: DataView;
  private readonly sqHead: number;
  private readonly sqTail: number;
  private readonly sqMask: number;
  private readonly sqArray: number;
  private readonly cqHead: number;
  private readonly cqTail: number;
  private readonly cqMask: number;
  private readonly cqes: number;
  private readonly cqDv: DataView;
  private tail = 0;

  /** Throws when the kernel refuses io_uring (old kernel, seccomp): callers fall back to synchronous I/O. */
  constructor(entries: number) {
    const p = new NativeBuffer(120);
    const fd = Number(syscall3(SYS_io_uring_setup, 'uint32', entries, 'uintptr_t', p.addr));
    if (fd < 0) {
      const e = errno();
      p.free();
      throw new Error(`io_uring_setup failed: errno ${e}`);
    }
    this.fd = fd;
    const dv = p.dv;
    const sqEntries = dv.getUint32(0, true);
    const cqEntries = dv.getUint32(4, true);
    this.entries = sqEntries;
    const so = 40;
    const co = 80;
    const sqRingLen = dv.getUint32(so + 24, true) + sqEntries * 4;
    const cqRingLen = dv.getUint32(co + 20, true) + cqEntries * 16;
    const sq = map(fd, sqRingLen, IORING_OFF_SQ_RING);
    const cq = map(fd, cqRingLen, IORING_OFF_CQ_RING);
    const se = map(fd, sqEntries * SQE_SIZE, IORING_OFF_SQES);
    this.maps.push(sq, cq, se);
    this.sq32 = new Uint32Array(sq.ab, 0, sq.len >>> 2);
    this.cq32 = new Uint32Array(cq.ab, 0, cq.len >>> 2);
    this.cqDv = new DataView(cq.ab);
    this.sqes = new DataView(se.ab);
    this.sqHead = dv.getUint32(so, true) >>> 2;
    this.sqTail = dv.getUint32(so + 4, true) >>> 2;
    this.sqMask = this.sq32[dv.getUint32(so + 8, true) >>> 2]!;
    this.sqArray = dv.getUint32(so + 24, true) >>> 2;
    this.cqHead = dv.getUint32(co, true) >>> 2;
    this.cqTail = dv.getUint32(co + 4, true) >>> 2;
    this.cqMask = this.cq32[dv.getUint32(co + 8, true) >>> 2]!;
    this.cqes = dv.getUint32(co + 20, true);
    this.tail = this.sq32[this.sqTail]!;
    p.free();
  }

  /** Submission slots free right now. */
  free(): number {
    return this.entries - ((this.tail - Atomics.load(this.sq32, this.sqHead)) >>> 0);
  }

  /** Fills the next SQE; returns false when the submission ring is full. */
  prep(op: number, fd: number, addr: number, len: number, off: number, rwFlags: number, userData: number): boolean {
    if (this.free() === 0) return false;
    const idx = this.tail & this.sqMask;
    const d = this.sqes;
    const b = idx * SQE_SIZE;
    d.setUint32(b, op, true); // opcode, flags=0, ioprio=0
    d.setInt32(b + 4, fd, true);
    setU64(d, b + 8, off);
    setU64(d, b + 16, addr);
    d.setUint32(b + 24, len, true);
    d.setUint32(b + 28, rwFlags, true);
    d.setUint32(b + 32, userData, true);
    d.setUint32(b + 36, 0, true);
    d.setBigUint64(b + 40, 0n, true);
    d.setBigUint64(b + 48, 0n, true);
    d.setBigUint64(b + 56, 0n, true);
    this.sq32[this.sqArray + idx] = idx;
    this.tail = (this.tail + 1) >>> 0;
    return true;
  }

  /** Publishes prepared SQEs and enters the kernel; with `wait`, blocks until one completion exists. */
  submit(wait = false): number {
    Atomics.store(this.sq32, this.sqTail, this.tail);
    // Everything the kernel has not consumed yet, including entries a failed enter left behind.
    const n = (this.tail - Atomics.load(this.sq32, this.sqHead)) >>> 0;
    if (n === 0 && !wait) return 0;
    for (;;) {
      const r = Number(syscall3(SYS_io_uring_enter, 'int', this.fd, 'uint32', n, 'uint32', wait ? 1 : 0, 'uint32', wait ? IORING_ENTER_GETEVENTS : 0, 'uintptr_t', 0, 'size_t', 0));
      if (r >= 0) return r;
      const e = errno();
      if (e !== 4 /* EINTR */ && e !== 11 /* EAGAIN */ && e !== 16 /* EBUSY */) throw new Error(`io_uring_enter failed: errno ${e}`);
      if (!wait) return 0;
    }
  }

  /** Calls `fn(userData, res)` for every completion and releases them; returns how many. */
  reap(fn: (userData: number, res: number) => void): number {
    let head = this.cq32[this.cqHead]!;
    const tail = Atomics.load(this.cq32, this.cqTail);
    let n = 0;
    while (head !== tail) {
      const c = this.cqes + (head & this.cqMask) * 16;
      const user = this.cqDv.getUint32(c, true);
      const res = this.cqDv.getInt32(c + 8, true);
      head = (head + 1) >>> 0;
      Atomics.store(this.cq32, this.cqHead, head);
      fn(user, res);
      n++;
    }
    return n;
  }

  close(): void {
    for (const m of this.maps) munmap(m.addr, m.len);
    closeFd(this.fd);
  }
}

function setU64(d: DataView, off: number, v: number): void {
  const hi = Math.floor(v / 4294967296);
  d.setUint32(off, v - hi * 4294967296, true);
  d.setUint32(off + 4, hi, true);
}
