// Positional, vectored and allocation system calls for file back-ends, through koffi (FFI to libc).
//
// Why koffi and not fs.readSync: the data path passes guest-memory *addresses* (vectors of them, for
// preadv/pwritev), which fs cannot; koffi calls measured 0.66 µs per 4 KiB pread here against 0.79 µs
// for fs.readSync into the same memory, and koffi is also what the vhost-user transport needs for
// SCM_RIGHTS, mmap and eventfd. These calls block, so they belong in worker threads (the queue workers).
import fs from 'node:fs';
import koffi from 'koffi';

const libc = koffi.load('libc.so.6');

export const preadRaw = libc.func('intptr_t pread(int fd, uintptr_t buf, size_t count, int64_t offset)');
export const pwriteRaw = libc.func('intptr_t pwrite(int fd, uintptr_t buf, size_t count, int64_t offset)');
export const preadvRaw = libc.func('intptr_t preadv(int fd, uintptr_t iov, int iovcnt, int64_t offset)');
export const pwritevRaw = libc.func('intptr_t pwritev(int fd, uintptr_t iov, int iovcnt, int64_t offset)');
export const pwritev2Raw = libc.func('intptr_t pwritev2(int fd, uintptr_t iov, int iovcnt, int64_t offset, int flags)');
/** pwritev2 flag: this write is durable when it returns, as with O_DSYNC (and only its range is flushed). */
export const RWF_DSYNC = 2;
export const fallocateRaw = libc.func('int fallocate(int fd, int mode, int64_t offset, int64_t len)');
export const fdatasyncRaw = libc.func('int fdatasync(int fd)');
/** posix_fadvise: POSIX_FADV_DONTNEED drops a file's clean cached pages (benchmarks measure cold reads with it). */
export const posixFadvise = libc.func('int posix_fadvise(int fd, int64_t offset, int64_t len, int advice)');
export const POSIX_FADV_DONTNEED = 4;
// eventfds and poll: queue workers sleep on them; the replication channel wakes workers with them.
export const read = libc.func('intptr_t read(int fd, uintptr_t buf, size_t count)');
export const write = libc.func('intptr_t write(int fd, uintptr_t buf, size_t count)');
export const close = libc.func('int close(int fd)');
export const poll = libc.func('int poll(uintptr_t fds, uint64_t nfds, int timeout)');
export const eventfd = libc.func('int eventfd(unsigned int initval, int flags)');
export const EFD_CLOEXEC = 0o2000000;
export const EFD_NONBLOCK = 0o4000;
export const POLLIN = 0x1;
// Shared memory: guest RAM from QEMU, the replication channel's slots.
export const mmapPtr = libc.func('void *mmap(void *addr, size_t len, int prot, int flags, int fd, int64_t off)');
export const munmap = libc.func('int munmap(uintptr_t addr, size_t len)');
export const memfdCreate = libc.func('int memfd_create(const char *name, unsigned int flags)');
export const ftruncate = libc.func('int ftruncate(int fd, int64_t len)');
// Advisory whole-file locks: one owner per disk (engine/disk-lock.ts).
export const flock = libc.func('int flock(int fd, int operation)');
export const LOCK_SH = 1;
export const LOCK_EX = 2;
export const LOCK_NB = 4;
export const LOCK_UN = 8;
export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const MAP_SHARED = 1;
export const MFD_CLOEXEC = 1;

/** A mapping of a shared-memory fd; `ab` is an ArrayBuffer over the mapped bytes. */
export interface Mapping {
  addr: number;
  length: number;
  ab: ArrayBuffer;
}

/** Maps `length` bytes of `fd` from offset 0, read-write and shared. Throws with errno on failure. */
export function mapShared(fd: number, length: number): Mapping {
  // Touching a mapping past the end of its file raises SIGBUS: refuse such mappings up front.
  const st = fs.fstatSync(fd);
  if (st.isFile() && st.size < length) throw new Error(`fd ${fd} holds ${st.size} bytes, ${length} were to be mapped`);
  if (length > 2 ** 32) throw new Error(`a mapping of ${length} bytes exceeds 4 GiB, which twindisk cannot view yet`);
  const p = mmapPtr(null, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const addr = Number(koffi.address(p));
  if (addr === 0xffffffffffffffff || addr === 2 ** 64 - 1 || p === null || addr > 2 ** 62) {
    throw new Error(`mmap of fd ${fd} (${length} bytes) failed: errno ${errno()}`);
  }
  return { addr, length, ab: koffi.view(p, length) as ArrayBuffer };
}

/** Unmaps a mapping made by mapShared. */
export function unmap(m: Mapping): void {
  munmap(m.addr, m.length);
}

/** A new memfd of `length` bytes (close-on-exec). Throws with errno on failure. */
export function memfd(name: string, length: number): number {
  const fd = memfdCreate(name, MFD_CLOEXEC);
  if (fd < 0) throw new Error(`memfd_create failed: errno ${errno()}`);
  if (ftruncate(fd, length) < 0) {
    const e = errno();
    close(fd);
    throw new Error(`sizing a ${length}-byte memfd failed: errno ${e}`);
  }
  return fd;
}

/** The calling thread's errno after the last failed koffi call. */
export function errno(): number {
  return koffi.errno();
}

export const EINTR = 4;
export const EIO = 5;
export const ENODEV = 19;
export const EAGAIN = 11;
/** flock's "held by someone else" (EWOULDBLOCK is EAGAIN on Linux). */
export const EWOULDBLOCK = EAGAIN;
export const EINVAL = 22;
export const ENOSPC = 28;
export const EROFS = 30;
export const EOPNOTSUPP = 95;

export const FALLOC_FL_KEEP_SIZE = 0x01;
export const FALLOC_FL_PUNCH_HOLE = 0x02;
export const FALLOC_FL_ZERO_RANGE = 0x10;

/**
 * Native memory that never moves, for structures the kernel reads by address (iovec arrays,
 * pollfd arrays, msghdr). `u8`/`u32`/`f64` view it; `addr` is its address as a number.
 */
export class NativeBuffer {
  readonly ptr: unknown;
  readonly addr: number;
  readonly u8: Uint8Array;
  readonly u32: Uint32Array;
  readonly dv: DataView;
  private freed = false;

  constructor(readonly size: number) {
    this.ptr = koffi.alloc('uint8_t', size);
    this.addr = Number(koffi.address(this.ptr));
    const ab = koffi.view(this.ptr, size) as ArrayBuffer;
    this.u8 = new Uint8Array(ab);
    this.u32 = new Uint32Array(ab, 0, size >>> 2);
    this.dv = new DataView(ab);
    this.u8.fill(0);
  }

  /** Stores a 64-bit unsigned value (a pointer or size below 2^53) at byte offset `off`. */
  setU64(off: number, v: number): void {
    const hi = Math.floor(v / 4294967296);
    this.dv.setUint32(off, v - hi * 4294967296, true);
    this.dv.setUint32(off + 4, hi, true);
  }

  /** Reads a 64-bit unsigned value (below 2^53) at byte offset `off`. */
  getU64(off: number): number {
    return this.dv.getUint32(off, true) + this.dv.getUint32(off + 4, true) * 4294967296;
  }

  free(): void {
    if (!this.freed) koffi.free(this.ptr);
    this.freed = true;
  }
}
