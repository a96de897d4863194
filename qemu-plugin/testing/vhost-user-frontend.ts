// A vhost-user front-end written in TypeScript (QEMU's role): guest memory in a memfd, rings, kicks and calls.
// The benchmark drives twindisk and qemu-storage-daemon through it; tests use it to send good and bad messages.
import {
  EFD_CLOEXEC, EFD_NONBLOCK, MFD_CLOEXEC, MsgBuffers, NativeBuffer, POLLIN, AF_UNIX, SOCK_CLOEXEC, SOCK_STREAM, close, connect,
  errno, eventfd, ftruncate, mapRange, mapShared, memfdCreate, munmap, poll, read, recvmsg, sendmsg, sockaddrUn, socket, unmap,
  viewAt, write, type Mapping, MSG_NOSIGNAL,
} from '../os.js';
import { Feature, HEADER_SIZE, MAX_PAYLOAD, ProtocolFeature, Req, VRING_NOFD_MASK, bit } from '../vhost-user/constants.js';
import { decodeReplyHeader, encodeRequest, statePayload, u64Payload } from '../vhost-user/message.js';
import { SplitRingDriver, layoutRing } from './split-ring-driver.js';

export interface FrontendQueue {
  index: number;
  driver: SplitRingDriver;
  kickFd: number;
  callFd: number;
}

export interface SetupOptions {
  numQueues: number;
  queueSize: number;
  /** Guest memory size in bytes (rings + data buffers). */
  memSize: number;
  /** Negotiate EVENT_IDX (default true) and INDIRECT_DESC (default true). */
  eventIdx?: boolean;
  indirect?: boolean;
  /** Longest indirect table the driver may build (default 32). */
  maxIndirect?: number;
  /**
   * A second region as q35 makes for guests above ~3 GiB: `size` bytes at guest-physical `gpa` (4 GiB
   * or more), from the same memfd right after the first region (its mmap offset is `memSize`).
   */
  highMem?: { gpa: number; size: number };
  /** Protocol features to negotiate besides MQ, REPLY_ACK and CONFIG (when offered). */
  protocolFeatures?: bigint;
}

/** A guest memory region the front-end shared: `size` bytes at guest-physical `gpa`, mapped here at `addr` (its user address). */
export interface FrontendRegion {
  gpa: number;
  size: number;
  fd: number;
  mmapOffset: number;
  addr: number;
  /** What munmap needs (0: the first region, unmapped with the front-end's own mapping). */
  base: number;
  mapped: number;
}

const RING_SLOT = 1 << 20;

/** A region as SET_MEM_TABLE and ADD/REM_MEM_REG carry it: guest address, size, user address, mmap offset. */
export function regionBytes(r: Pick<FrontendRegion, 'gpa' | 'size' | 'addr' | 'mmapOffset'>): Buffer {
  const b = Buffer.alloc(32);
  b.writeBigUInt64LE(BigInt(r.gpa), 0);
  b.writeBigUInt64LE(BigInt(r.size), 8);
  b.writeBigUInt64LE(BigInt(r.addr), 16);
  b.writeBigUInt64LE(BigInt(r.mmapOffset), 24);
  return b;
}

/** SET_MEM_TABLE's payload: the number of regions (u32, then 4 bytes of padding), then each region (regionBytes). */
export function memTableBytes(regions: Buffer[]): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32LE(regions.length, 0);
  return Buffer.concat([head, ...regions]);
}
const GPA_BASE = 0;

/**
 * A synchronous vhost-user front-end: every call blocks until the back-end answered, so run it in
 * a process (or worker) other than the back-end's.
 */
export class VhostUserFrontend {
  readonly fd: number;
  private readonly out = new MsgBuffers(HEADER_SIZE + MAX_PAYLOAD, 8);
  private readonly inb = new MsgBuffers(HEADER_SIZE + MAX_PAYLOAD, 8);
  private readonly one = new NativeBuffer(8);
  private readonly pfd = new NativeBuffer(8);
  memFd = -1;
  mapping: Mapping | null = null;
  mem: Uint8Array = new Uint8Array(0);
  features = 0n;
  protocolFeatures = 0n;
  queues: FrontendQueue[] = [];
  /** First guest-physical address free for data buffers (after the rings). */
  dataBase = 0;
  /** Every region shared with the back-end, the first one first. */
  regions: FrontendRegion[] = [];

  private constructor(fd: number) {
    this.fd = fd;
    this.one.u8[0] = 1;
  }

  /** Connects to a back-end's socket. */
  static connect(path: string): VhostUserFrontend {
    const fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const sa = new NativeBuffer(112);
    const ok = connect(fd, sa.addr, sockaddrUn(sa, 0, path)) === 0;
    const e = errno();
    sa.free();
    if (!ok) {
      close(fd);
      throw new Error(`cannot connect to ${path}: errno ${e} (is the back-end running?)`);
    }
    return new VhostUserFrontend(fd);
  }

  /** Sends raw bytes (with fds), for tests of malformed input. */
  sendRaw(bytes: Uint8Array, fds: number[] = []): void {
    this.out.data.u8.set(bytes, 0);
    const n = sendmsg(this.fd, this.out.prepareSend(bytes.length, fds), MSG_NOSIGNAL);
    if (n !== bytes.length) throw new Error(`send failed (${n}, errno ${errno()})`);
  }

  /** Sends a request; returns the reply payload when one is expected (`reply` or need-reply). */
  request(req: number, payload?: Uint8Array, fds: number[] = [], opts: { reply?: boolean; needReply?: boolean } = {}): Buffer | null {
    this.sendRaw(encodeRequest(req, payload, opts.needReply ?? false), fds);
    if (!opts.reply && !opts.needReply) return null;
    return this.readReply(req);
  }

  /** Reads one reply (blocking), checking it answers `req`. Returns null when the connection closed. */
  readReply(req: number): Buffer {
    const h = this.readExact(HEADER_SIZE);
    if (h === null) throw new Error(`back-end closed the connection instead of answering request ${req}`);
    const hdr = decodeReplyHeader(h);
    if (hdr.request !== req) throw new Error(`reply to request ${hdr.request}, expected ${req}`);
    return hdr.size ? (this.readExact(hdr.size) ?? Buffer.alloc(0)) : Buffer.alloc(0);
  }

  /** Reads exactly `n` bytes or returns null at end of connection. */
  readExact(n: number): Buffer | null {
    const out = Buffer.alloc(n);
    let got = 0;
    while (got < n) {
      const r = recvmsg(this.fd, this.inb.prepareRecv(n - got), 0);
      if (r === 0) return null;
      if (r < 0) throw new Error(`receive failed: errno ${errno()}`);
      out.set(this.inb.data.u8.subarray(0, r), got);
      got += r;
    }
    return out;
  }

  /** Reads exactly `n` bytes and the fds that came with them (a reply that passes fds: GET_INFLIGHT_FD). */
  readWithFds(n: number): { bytes: Buffer; fds: number[] } {
    const bytes = Buffer.alloc(n);
    const fds: number[] = [];
    let got = 0;
    while (got < n) {
      const r = recvmsg(this.fd, this.inb.prepareRecv(n - got), 0);
      if (r <= 0) throw new Error(`receive failed (${r}, errno ${errno()})`);
      fds.push(...this.inb.receivedFds().fds);
      bytes.set(this.inb.data.u8.subarray(0, r), got);
      got += r;
    }
    return { bytes, fds };
  }

  /** Whether the back-end has closed the connection (waits up to `ms`). */
  closedByPeer(ms: number): boolean {
    this.pfd.dv.setInt32(0, this.fd, true);
    this.pfd.dv.setInt16(4, POLLIN, true);
    this.pfd.dv.setInt16(6, 0, true);
    if (poll(this.pfd.addr, 1, ms) <= 0) return false;
    const r = recvmsg(this.fd, this.inb.prepareRecv(1), 0x40 /* MSG_DONTWAIT */ | 0x2 /* MSG_PEEK */);
    return r === 0;
  }

  private u64(req: number): bigint {
    const b = this.request(req, undefined, [], { reply: true })!;
    return b.readBigUInt64LE(0);
  }

  /**
   * Negotiates features, shares guest memory and starts `numQueues` rings, as QEMU does when the
   * guest driver comes up. Kick fds are blocking eventfds the caller writes; call fds are polled.
   */
  setup(o: SetupOptions): void {
    const offered = this.u64(Req.GET_FEATURES);
    let want = bit(Feature.VERSION_1) | bit(Feature.PROTOCOL_FEATURES) | bit(Feature.BLK_FLUSH) | bit(Feature.BLK_BLK_SIZE)
      | bit(Feature.BLK_SEG_MAX) | bit(Feature.BLK_MQ) | bit(Feature.BLK_DISCARD) | bit(Feature.BLK_WRITE_ZEROES) | bit(Feature.BLK_RO)
      | bit(Feature.BLK_CONFIG_WCE) | bit(Feature.BLK_TOPOLOGY);
    if (o.eventIdx ?? true) want |= bit(Feature.RING_EVENT_IDX);
    if (o.indirect ?? true) want |= bit(Feature.RING_INDIRECT_DESC);
    this.features = offered & want;
    if (offered & bit(Feature.PROTOCOL_FEATURES)) {
      const pf = this.u64(Req.GET_PROTOCOL_FEATURES);
      this.protocolFeatures = pf & (bit(ProtocolFeature.MQ) | bit(ProtocolFeature.REPLY_ACK) | bit(ProtocolFeature.CONFIG) | (o.protocolFeatures ?? 0n));
      this.request(Req.SET_PROTOCOL_FEATURES, u64Payload(this.protocolFeatures));
      if (pf & bit(ProtocolFeature.MQ)) {
        const n = Number(this.u64(Req.GET_QUEUE_NUM));
        if (n < o.numQueues) throw new Error(`back-end has ${n} queues, ${o.numQueues} wanted`);
      }
    }
    this.request(Req.SET_OWNER);
    this.request(Req.SET_FEATURES, u64Payload(this.features));
    // Guest memory: one memfd region at guest-physical 0, mapped here too.
    // (A memfd is sparse: only the pages touched take memory, so a high region of gigabytes is cheap.)
    const total = o.memSize + (o.highMem?.size ?? 0);
    this.memFd = memfdCreate('twindisk-guest', MFD_CLOEXEC);
    if (this.memFd < 0 || ftruncate(this.memFd, total) < 0) throw new Error(`cannot create ${total} bytes of guest memory: errno ${errno()}`);
    this.mapping = mapShared(this.memFd, o.memSize);
    this.mem = new Uint8Array(this.mapping.ab);
    this.regions = [{ gpa: GPA_BASE, size: o.memSize, fd: this.memFd, mmapOffset: 0, addr: this.mapping.addr, base: 0, mapped: 0 }];
    if (o.highMem) {
      const m = mapRange(this.memFd, o.memSize, o.highMem.size);
      this.regions.push({ gpa: o.highMem.gpa, size: o.highMem.size, fd: this.memFd, mmapOffset: o.memSize, ...m });
    }
    this.ackedRequest(Req.SET_MEM_TABLE, memTableBytes(this.regions.map(regionBytes)), this.regions.map((r) => r.fd));
    const maxIndirect = o.maxIndirect ?? 32;
    const indirect = (this.features & bit(Feature.RING_INDIRECT_DESC)) !== 0n;
    for (let q = 0; q < o.numQueues; q++) {
      const base = q * RING_SLOT;
      const { layout, bytes } = layoutRing(base, o.queueSize);
      const indirectArea = indirect ? (base + bytes + 15) & ~15 : 0;
      if ((indirectArea || base + bytes) + o.queueSize * maxIndirect * 16 > base + RING_SLOT) throw new Error('queue too large for its ring slot');
      const driver = new SplitRingDriver(this.mem, layout, (this.features & bit(Feature.RING_EVENT_IDX)) !== 0n, indirectArea, maxIndirect);
      this.request(Req.SET_VRING_NUM, statePayload(q, o.queueSize));
      this.request(Req.SET_VRING_BASE, statePayload(q, 0));
      const addr = Buffer.alloc(40);
      addr.writeUInt32LE(q, 0);
      addr.writeBigUInt64LE(BigInt(this.mapping.addr + layout.desc), 8);
      addr.writeBigUInt64LE(BigInt(this.mapping.addr + layout.used), 16);
      addr.writeBigUInt64LE(BigInt(this.mapping.addr + layout.avail), 24);
      this.request(Req.SET_VRING_ADDR, addr);
      const kickFd = eventfd(0, EFD_CLOEXEC);
      const callFd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
      this.request(Req.SET_VRING_CALL, u64Payload(q), [callFd]);
      this.request(Req.SET_VRING_KICK, u64Payload(q), [kickFd]);
      if (this.protocolFeatures !== 0n || (this.features & bit(Feature.PROTOCOL_FEATURES))) {
        this.ackedRequest(Req.SET_VRING_ENABLE, statePayload(q, 1));
      }
      this.queues.push({ index: q, driver, kickFd, callFd });
    }
    this.dataBase = o.numQueues * RING_SLOT;
  }

  /**
   * Bytes of guest memory at guest-physical `gpa`, in whichever region holds them (a new view each
   * call: for setting up and checking buffers, not for hot loops).
   */
  view(gpa: number, len: number): Uint8Array {
    for (const r of this.regions) {
      if (gpa >= r.gpa && gpa + len <= r.gpa + r.size) return new Uint8Array(viewAt(r.addr + gpa - r.gpa, len));
    }
    throw new Error(`guest memory has no ${len} bytes at 0x${gpa.toString(16)}`);
  }

  /**
   * Hot-plugs `size` bytes at guest-physical `gpa` (ADD_MEM_REG; CONFIGURE_MEM_SLOTS must be
   * negotiated): a new memfd, or `fd` from `mmapOffset` when given. Returns the region, or throws
   * when the back-end refused it (the region is then not kept).
   */
  addRegion(gpa: number, size: number, o: { fd?: number; mmapOffset?: number; name?: string } = {}): FrontendRegion {
    let fd = o.fd ?? -1;
    if (fd < 0) {
      fd = memfdCreate(o.name ?? 'twindisk-guest-dimm', MFD_CLOEXEC);
      if (fd < 0 || ftruncate(fd, size) < 0) throw new Error(`cannot create ${size} bytes of guest memory: errno ${errno()}`);
    }
    const mmapOffset = o.mmapOffset ?? 0;
    let m: { addr: number; base: number; mapped: number };
    try {
      m = mapRange(fd, mmapOffset, size);
    } catch {
      // A region the front-end itself cannot map (the tests' bad regions): announce an address anyway.
      m = { addr: 0x7e0000000000 + gpa, base: 0, mapped: 0 };
    }
    const r: FrontendRegion = { gpa, size, fd, mmapOffset, ...m };
    try {
      this.ackedRequest(Req.ADD_MEM_REG, Buffer.concat([Buffer.alloc(8), regionBytes(r)]), [fd]);
    } catch (e) {
      this.dropRegion(r);
      throw e;
    }
    this.regions.push(r);
    return r;
  }

  /** Hot-unplugs a region added with addRegion (REM_MEM_REG); throws when the back-end refused (the region stays). */
  removeRegion(r: FrontendRegion): void {
    this.ackedRequest(Req.REM_MEM_REG, Buffer.concat([Buffer.alloc(8), regionBytes(r)]));
    this.regions = this.regions.filter((x) => x !== r);
    this.dropRegion(r);
  }

  private dropRegion(r: FrontendRegion): void {
    if (r.mapped > 0) munmap(r.base, r.mapped);
    if (r.fd !== this.memFd) close(r.fd);
  }

  /** Sends a request with NEED_REPLY when REPLY_ACK was negotiated, and checks the ack. */
  ackedRequest(req: number, payload: Uint8Array, fds: number[] = []): void {
    const ack = (this.protocolFeatures & bit(ProtocolFeature.REPLY_ACK)) !== 0n;
    const r = this.request(req, payload, fds, { needReply: ack });
    if (r && r.readBigUInt64LE(0) !== 0n) throw new Error(`back-end failed request ${req}`);
  }

  /** Reads `size` bytes of the device's config space. */
  getConfig(size: number): Buffer {
    const p = Buffer.alloc(12 + size);
    p.writeUInt32LE(0, 0);
    p.writeUInt32LE(size, 4);
    return this.request(Req.GET_CONFIG, p, [], { reply: true })!.subarray(12);
  }

  /** Stops a ring and returns its last available index. */
  getVringBase(q: number): number {
    return this.request(Req.GET_VRING_BASE, statePayload(q, 0), [], { reply: true })!.readUInt32LE(4);
  }

  /** Kicks queue `q`. */
  kick(q: FrontendQueue): void {
    write(q.kickFd, this.one.addr, 8);
  }

  /** Waits until queue `q`'s call eventfd fires (or `ms` passes); returns whether it fired. */
  waitCall(q: FrontendQueue, ms: number): boolean {
    this.pfd.dv.setInt32(0, q.callFd, true);
    this.pfd.dv.setInt16(4, POLLIN, true);
    this.pfd.dv.setInt16(6, 0, true);
    const n = poll(this.pfd.addr, 1, ms);
    if (n <= 0) return false;
    read(q.callFd, this.pfd.addr, 8);
    return true;
  }

  /** The "no fd" flag for SET_VRING_KICK/CALL payloads. */
  static readonly NOFD = VRING_NOFD_MASK;

  /** Closes the connection and frees guest memory. */
  close(): void {
    close(this.fd);
    for (const q of this.queues) {
      close(q.kickFd);
      close(q.callFd);
    }
    this.queues = [];
    for (const r of this.regions.slice(1)) this.dropRegion(r);
    this.regions = [];
    if (this.mapping) unmap(this.mapping);
    this.mapping = null;
    if (this.memFd >= 0) close(this.memFd);
    this.memFd = -1;
    this.out.free();
    this.inb.free();
    this.one.free();
    this.pfd.free();
  }
}
