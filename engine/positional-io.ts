// Positional file I/O that finishes what it starts: full-length pread/pwrite (short transfers and EINTR retried), fdatasync, zeroing a range.
//
// Every function returns 0 (or a byte count) on success and a negative errno on failure, and
// allocates nothing: the queue workers call them per request. Callers that prefer exceptions wrap
// the status (LocalDisk throws DiskIoError).
import fs from 'node:fs';
import {
  EINTR, EINVAL, EIO, EOPNOTSUPP, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE, errno, fallocateRaw,
  NativeBuffer, RWF_DSYNC, fdatasyncRaw, preadRaw, pwriteRaw, pwritev2Raw,
} from './os.js';

/** Largest write of zeroes issued at once when a file system cannot zero a range itself. */
const ZERO_CHUNK = 1 << 20;
/** Shared, never written: the source of `zeroRange`'s fallback writes. */
let zeroes: Uint8Array | null = null;

/** A thrown fs error as a negative errno (-EIO when it carries none). */
function negErrno(e: unknown): number {
  const n = (e as NodeJS.ErrnoException).errno;
  return n ? -Math.abs(n) : -EIO;
}

/**
 * Moves up to `length` bytes between `buf[offset..]` and the file at `position` (write with
 * `toFile`, read otherwise), retrying short transfers and EINTR until the file ends. Returns the
 * bytes moved (fewer than `length` only when the file ended) or -errno.
 */
function transferUpTo(fd: number, buf: Uint8Array, offset: number, length: number, position: number, toFile: boolean): number {
  let done = 0;
  while (done < length) {
    let r: number;
    try {
      r = toFile
        ? fs.writeSync(fd, buf, offset + done, length - done, position + done)
        : fs.readSync(fd, buf, offset + done, length - done, position + done);
    } catch (e) {
      const st = negErrno(e);
      if (st === -EINTR) continue;
      return st;
    }
    if (r === 0) break;
    done += r;
  }
  return done;
}

/** Reads up to `length` bytes at `position` into `buf[offset..]`: the bytes read (fewer only at end of file) or -errno. */
export function preadUpTo(fd: number, buf: Uint8Array, offset: number, length: number, position: number): number {
  return transferUpTo(fd, buf, offset, length, position, false);
}

/**
 * Moves exactly `length` bytes between `buf[offset..]` and the file at `position` (pwrite with
 * `toFile`, pread otherwise). Returns 0 or -errno; -EIO when the file ends first.
 */
export function transferFull(fd: number, buf: Uint8Array, offset: number, length: number, position: number, toFile: boolean): number {
  const n = transferUpTo(fd, buf, offset, length, position, toFile);
  return n < 0 ? n : n < length ? -EIO : 0;
}

/** Reads exactly `length` bytes at `position` into `buf[offset..]`. Returns 0 or -errno; -EIO when the file ends first. */
export function preadFull(fd: number, buf: Uint8Array, offset: number, length: number, position: number): number {
  return transferFull(fd, buf, offset, length, position, false);
}

/** Writes `length` bytes of `buf[offset..]` at `position`. Returns 0 or -errno. */
export function pwriteFull(fd: number, buf: Uint8Array, offset: number, length: number, position: number): number {
  return transferFull(fd, buf, offset, length, position, true);
}

/**
 * Moves `length` bytes between the process address `addr` (guest memory, a NativeBuffer) and the
 * file at `position`: pwrite with `toFile`, pread otherwise. Retries short transfers and EINTR;
 * returns 0 or -errno, -EIO when the file ends first (an image that shrank: fail rather than invent bytes).
 */
export function transferFullAt(fd: number, addr: number, length: number, position: number, toFile: boolean): number {
  while (length > 0) {
    const r = toFile ? pwriteRaw(fd, addr, length, position) : preadRaw(fd, addr, length, position);
    if (r < 0) {
      const e = errno();
      if (e === EINTR) continue;
      return -e;
    }
    if (r === 0) return -EIO;
    addr += r;
    position += r;
    length -= r;
  }
  return 0;
}

/** fdatasync, retrying EINTR. Returns 0 or -errno. */
export function syncData(fd: number): number {
  for (;;) {
    if (fdatasyncRaw(fd) === 0) return 0;
    const e = errno();
    if (e !== EINTR) return -e;
  }
}

/** fallocate, retrying EINTR. Returns 0 or -errno. */
export function fallocate(fd: number, mode: number, offset: number, length: number): number {
  for (;;) {
    if (fallocateRaw(fd, mode, offset, length) === 0) return 0;
    const e = errno();
    if (e !== EINTR) return -e;
  }
}

/**
 * Makes [offset, offset + length) read back as zeroes. With `mayUnmap` it punches a hole (frees the
 * space); otherwise it keeps the blocks allocated (ZERO_RANGE). Where the file system supports
 * neither (EOPNOTSUPP, EINVAL), it writes zeroes. Returns 0 or -errno.
 */
export function zeroRange(fd: number, offset: number, length: number, mayUnmap: boolean): number {
  const mode = mayUnmap ? FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE : FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;
  const st = fallocate(fd, mode, offset, length);
  if (st !== -EOPNOTSUPP && st !== -EINVAL) return st;
  const z = (zeroes ??= new Uint8Array(ZERO_CHUNK));
  for (let pos = 0; pos < length; pos += z.length) {
    const w = pwriteFull(fd, z, 0, Math.min(z.length, length - pos), offset + pos);
    if (w !== 0) return w;
  }
  return 0;
}

/** Native staging for `pwriteDurable`: an iovec, then the bytes (grown on demand; metadata writes are small). */
let durableStage: NativeBuffer | null = null;

/**
 * Writes `buf` at `position` and returns once it is durable (pwritev2 with RWF_DSYNC, as O_DSYNC):
 * unlike fdatasync, only this range is flushed, not every dirty page of the file, which matters when
 * the file also holds a volume's data (internal metadata). Returns 0, or -errno; -EOPNOTSUPP when
 * the kernel or file system has no RWF_DSYNC (the caller then writes and fdatasyncs).
 */
export function pwriteDurable(fd: number, buf: Uint8Array, position: number): number {
  if (durableStage === null || durableStage.size < 16 + buf.length) {
    durableStage?.free();
    durableStage = new NativeBuffer(16 + Math.max(buf.length, 64 << 10));
  }
  const st = durableStage;
  st.u8.set(buf, 16);
  let done = 0;
  while (done < buf.length) {
    st.setU64(0, st.addr + 16 + done);
    st.setU64(8, buf.length - done);
    const r = pwritev2Raw(fd, st.addr, 1, position + done, RWF_DSYNC);
    if (r < 0) {
      const e = errno();
      if (e === EINTR) continue;
      return e === EINVAL || e === EOPNOTSUPP ? -EOPNOTSUPP : -e;
    }
    done += r;
  }
  return 0;
}
