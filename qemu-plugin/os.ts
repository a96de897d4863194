// Unix sockets with fd passing, mmap, eventfd and poll for the vhost-user transport, through koffi.
//
// Node cannot receive SCM_RIGHTS fds, map shared memory or wait on eventfds; koffi (FFI to libc,
// prebuilt) can, from TypeScript. Blocking calls run either in worker threads (queue workers) or as
// koffi async calls on libuv's thread pool (the control socket), never on the main loop.
import fs from 'node:fs';
import koffi from 'koffi';
import {
  EFD_CLOEXEC, EFD_NONBLOCK, MAP_SHARED, MFD_CLOEXEC, NativeBuffer, POLLIN, PROT_READ, PROT_WRITE, close, errno, eventfd, ftruncate,
  mapShared, memfdCreate, mmapPtr, munmap, poll, read, unmap, write, type Mapping,
} from '../engine/os.js';

export {
  EFD_CLOEXEC, EFD_NONBLOCK, MAP_SHARED, MFD_CLOEXEC, NativeBuffer, POLLIN, PROT_READ, PROT_WRITE, close, errno, eventfd, ftruncate,
  mapShared, memfdCreate, mmapPtr, munmap, poll, read, unmap, write, type Mapping,
};

const libc = koffi.load('libc.so.6');

export const socket = libc.func('int socket(int domain, int type, int protocol)');
export const bind = libc.func('int bind(int fd, uintptr_t addr, uint32_t len)');
export const listen = libc.func('int listen(int fd, int backlog)');
export const accept4 = libc.func('int accept4(int fd, uintptr_t addr, uintptr_t len, int flags)');
export const connect = libc.func('int connect(int fd, uintptr_t addr, uint32_t len)');
export const shutdown = libc.func('int shutdown(int fd, int how)');
export const recvmsg = libc.func('intptr_t recvmsg(int fd, uintptr_t msg, int flags)');
export const sendmsg = libc.func('intptr_t sendmsg(int fd, uintptr_t msg, int flags)');
export const fcntl = libc.func('int fcntl(int fd, int cmd, int arg)');

export const AF_UNIX = 1;
export const SOCK_STREAM = 1;
export const SOCK_CLOEXEC = 0o2000000;
export const SOL_SOCKET = 1;
export const SCM_RIGHTS = 1;
export const MSG_CTRUNC = 0x8;
export const MSG_CMSG_CLOEXEC = 0x40000000;
export const MSG_NOSIGNAL = 0x4000;
export const SHUT_RDWR = 2;
export const F_GETFD = 1;

/** Fills a sockaddr_un for `path` into `buf` at `off`; returns its length. */
export function sockaddrUn(buf: NativeBuffer, off: number, path: string): number {
  const p = Buffer.from(path);
  if (p.length > 107) throw new Error(`socket path ${path} is ${p.length} bytes long; Unix sockets allow 107: use a shorter path`);
  buf.u8.fill(0, off, off + 110);
  buf.dv.setUint16(off, AF_UNIX, true);
  buf.u8.set(p, off + 2);
  return 2 + p.length + 1;
}

/** Is `fd` an open descriptor? */
export function fdIsOpen(fd: number): boolean {
  return fcntl(fd, F_GETFD, 0) >= 0;
}

const CMSG_HDR = 16;

/**
 * Message buffers for one Unix stream socket: a msghdr, one iovec, room for `maxFds` fds, and a data
 * buffer. `prepareRecv` and `prepareSend` set them up for one recvmsg / sendmsg (blocking, or through
 * `callAsync` on the thread pool), which fills or reads them in place.
 */
export class MsgBuffers {
  private readonly hdr: NativeBuffer;
  readonly data: NativeBuffer;
  private readonly ctrlOff = 128;
  private readonly ctrlLen: number;

  constructor(dataSize: number, readonly maxFds: number) {
    this.ctrlLen = CMSG_HDR + ((maxFds * 4 + 7) & ~7);
    this.hdr = new NativeBuffer(this.ctrlOff + this.ctrlLen);
    this.data = new NativeBuffer(dataSize);
  }

  private prepare(len: number, withControl: boolean): void {
    const h = this.hdr;
    h.u8.fill(0, 0, this.ctrlOff + this.ctrlLen);
    h.setU64(64, this.data.addr); // iov_base
    h.setU64(72, len); // iov_len
    h.setU64(16, h.addr + 64); // msg_iov
    h.setU64(24, 1); // msg_iovlen
    if (withControl) {
      h.setU64(32, h.addr + this.ctrlOff); // msg_control
      h.setU64(40, this.ctrlLen); // msg_controllen
    }
  }

  /** Sets up a receive of up to `len` bytes; returns the msghdr address for recvmsg. */
  prepareRecv(len: number): number {
    this.prepare(len, true);
    return this.hdr.addr;
  }

  /** After recvmsg: the fds received (ownership passes to the caller) and whether some were cut. */
  receivedFds(): { fds: number[]; truncated: boolean } {
    const h = this.hdr;
    const flags = h.dv.getInt32(48, true);
    const fds: number[] = [];
    const controllen = h.getU64(40);
    let off = 0;
    while (off + CMSG_HDR <= controllen) {
      const base = this.ctrlOff + off;
      const cmsgLen = h.getU64(base);
      if (cmsgLen < CMSG_HDR || off + cmsgLen > controllen) break;
      const level = h.dv.getInt32(base + 8, true);
      const type = h.dv.getInt32(base + 12, true);
      if (level === SOL_SOCKET && type === SCM_RIGHTS) {
        for (let p = CMSG_HDR; p + 4 <= cmsgLen; p += 4) fds.push(h.dv.getInt32(base + p, true));
      }
      off += (cmsgLen + 7) & ~7;
    }
    return { fds, truncated: (flags & MSG_CTRUNC) !== 0 };
  }

  /** Sets up a send of `len` bytes from `data` with `fds` attached; returns the msghdr address. */
  prepareSend(len: number, fds: number[]): number {
    if (fds.length > this.maxFds) throw new Error(`cannot send ${fds.length} fds (at most ${this.maxFds})`);
    this.prepare(len, false);
    const h = this.hdr;
    if (fds.length > 0) {
      const cl = CMSG_HDR + fds.length * 4;
      h.setU64(32, h.addr + this.ctrlOff);
      h.setU64(40, (cl + 7) & ~7);
      const base = this.ctrlOff;
      h.setU64(base, cl);
      h.dv.setInt32(base + 8, SOL_SOCKET, true);
      h.dv.setInt32(base + 12, SCM_RIGHTS, true);
      fds.forEach((fd, i) => h.dv.setInt32(base + CMSG_HDR + i * 4, fd, true));
    }
    return h.addr;
  }

  free(): void {
    this.hdr.free();
    this.data.free();
  }
}

/**
 * Maps `length` bytes of `fd` from byte `offset` (any offset: the mapping starts at the page below it),
 * read-write and shared, without viewing them. Returns the address of byte `offset` and what to pass
 * to munmap. Throws, with nothing mapped, when the fd is a file shorter than the range (touching the
 * missing part would raise SIGBUS) or mmap fails.
 */
export function mapRange(fd: number, offset: number, length: number): { addr: number; base: number; mapped: number } {
  const st = fs.fstatSync(fd);
  if (st.isFile() && st.size < offset + length) throw new Error(`fd ${fd} holds ${st.size} bytes; bytes ${offset} to ${offset + length} were to be mapped`);
  const start = offset - (offset % PAGE);
  const mapped = offset - start + length;
  const p = mmapPtr(null, mapped, PROT_READ | PROT_WRITE, MAP_SHARED, fd, start);
  const base = Number(koffi.address(p));
  if (p === null || base === 0 || base >= 2 ** 63) throw new Error(`mmap of ${mapped} bytes of fd ${fd} failed: errno ${errno()}`);
  return { addr: base + offset - start, base, mapped };
}

const PAGE = 4096;

/** An ArrayBuffer over `len` bytes of native memory at `addr`, which the caller keeps mapped (at most 4 GiB: Node 20's limit, beyond which koffi aborts). */
export function viewAt(addr: number, len: number): ArrayBuffer {
  if (!(len > 0 && len <= 2 ** 32)) throw new Error(`cannot view ${len} bytes at once (1 byte to 4 GiB)`);
  return koffi.view(addr, len) as ArrayBuffer;
}

/** Runs a koffi async call and resolves with its integer result. */
export function callAsync(fn: { async: (...a: unknown[]) => void }, ...args: unknown[]): Promise<number> {
  return new Promise((resolve, reject) => {
    fn.async(...args, (err: unknown, res: number) => (err ? reject(err) : resolve(Number(res))));
  });
}
