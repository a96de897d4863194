// vhost-user message codec: bytes (and received fds) in, typed messages out; replies out. No I/O here.
import {
  BACKEND_REQ_NAMES, BackendReq, CONFIG_HEADER_SIZE, FLAG_NEED_REPLY, FLAG_REPLY, FLAG_VERSION_MASK, HEADER_SIZE, LOG_PAYLOAD_SIZE, MAX_CONFIG_SIZE,
  MAX_MEM_TABLE_REGIONS, MAX_PAYLOAD, MEM_REGION_SIZE, REQ_NAMES, Req, VERSION, VRING_IDX_MASK, VRING_NOFD_MASK,
} from './constants.js';

/** A message that breaks the protocol's syntax; the connection that sent it is closed. */
export class ProtocolError extends Error {
  override readonly name = 'ProtocolError';
}

export interface Header {
  request: number;
  flags: number;
  size: number;
}

export interface MemRegion {
  guestPhysAddr: number;
  memorySize: number;
  userspaceAddr: number;
  mmapOffset: number;
}

export type Body =
  | { kind: 'none' }
  | { kind: 'u64'; value: bigint }
  | { kind: 'state'; index: number; num: number }
  | { kind: 'addr'; index: number; flags: number; desc: number; used: number; avail: number; log: number }
  | { kind: 'vringFd'; index: number; noFd: boolean }
  | { kind: 'memTable'; regions: MemRegion[] }
  | { kind: 'memReg'; region: MemRegion }
  | { kind: 'config'; offset: number; size: number; flags: number; data: Uint8Array }
  | { kind: 'inflight'; mmapSize: number; mmapOffset: number; numQueues: number; queueSize: number }
  | { kind: 'log'; mmapSize: number; mmapOffset: number }
  | { kind: 'unknown'; payload: Uint8Array };

export interface Message {
  request: number;
  /** The front-end set NEED_REPLY (meaningful with REPLY_ACK). */
  needReply: boolean;
  body: Body;
  /** File descriptors that came with the message (the receiver owns them). */
  fds: number[];
}

/** Name of a request number, for logs. */
export function requestName(r: number): string {
  return REQ_NAMES[r] ?? `request ${r}`;
}

/** Decodes and checks the 12-byte header. */
export function decodeHeader(b: Uint8Array): Header {
  if (b.length < HEADER_SIZE) throw new ProtocolError(`header truncated: ${b.length} of ${HEADER_SIZE} bytes`);
  const dv = new DataView(b.buffer, b.byteOffset, HEADER_SIZE);
  const request = dv.getUint32(0, true);
  const flags = dv.getUint32(4, true);
  const size = dv.getUint32(8, true);
  if ((flags & FLAG_VERSION_MASK) !== VERSION) {
    throw new ProtocolError(`${requestName(request)}: protocol version ${flags & FLAG_VERSION_MASK}, expected ${VERSION}`);
  }
  if (flags & FLAG_REPLY) throw new ProtocolError(`${requestName(request)}: a reply sent as a request`);
  if (size > MAX_PAYLOAD) throw new ProtocolError(`${requestName(request)}: payload of ${size} bytes exceeds ${MAX_PAYLOAD}`);
  return { request, flags, size };
}

/** Reads a u64 that must fit in a double exactly (addresses, sizes). */
function u64(dv: DataView, off: number, what: string): number {
  const lo = dv.getUint32(off, true);
  const hi = dv.getUint32(off + 4, true);
  if (hi >= 0x200000) throw new ProtocolError(`${what} 0x${hi.toString(16)}${lo.toString(16).padStart(8, '0')} is out of range`);
  return hi * 4294967296 + lo;
}

function region(dv: DataView, off: number): MemRegion {
  const r = {
    guestPhysAddr: u64(dv, off, 'guest physical address'),
    memorySize: u64(dv, off + 8, 'memory region size'),
    userspaceAddr: u64(dv, off + 16, 'userspace address'),
    mmapOffset: u64(dv, off + 24, 'mmap offset'),
  };
  if (r.memorySize === 0) throw new ProtocolError('memory region of size 0');
  if (r.guestPhysAddr + r.memorySize > 2 ** 53 || r.userspaceAddr + r.memorySize > 2 ** 53) {
    throw new ProtocolError('memory region wraps the address space');
  }
  return r;
}

const NO_PAYLOAD = new Set<number>([
  Req.GET_FEATURES, Req.SET_OWNER, Req.RESET_OWNER, Req.GET_PROTOCOL_FEATURES, Req.GET_QUEUE_NUM,
  Req.RESET_DEVICE, Req.GET_MAX_MEM_SLOTS, Req.GET_STATUS, Req.POSTCOPY_ADVISE, Req.POSTCOPY_LISTEN, Req.POSTCOPY_END,
]);
const U64_PAYLOAD = new Set<number>([Req.SET_FEATURES, Req.SET_PROTOCOL_FEATURES, Req.SET_STATUS]);
const STATE_PAYLOAD = new Set<number>([
  Req.SET_VRING_NUM, Req.SET_VRING_BASE, Req.GET_VRING_BASE, Req.SET_VRING_ENABLE, Req.SET_VRING_ENDIAN, Req.VRING_KICK,
]);
const FD_PAYLOAD = new Set<number>([Req.SET_VRING_KICK, Req.SET_VRING_CALL, Req.SET_VRING_ERR]);

function expectSize(h: Header, n: number): void {
  if (h.size !== n) throw new ProtocolError(`${requestName(h.request)}: payload of ${h.size} bytes, expected ${n}`);
}

function expectFds(h: Header, fds: number[], n: number): void {
  if (fds.length !== n) throw new ProtocolError(`${requestName(h.request)}: came with ${fds.length} fds, expected ${n}`);
}

/**
 * Decodes a request's payload. Checks sizes before reading and the number of fds each request must
 * carry; throws ProtocolError for anything malformed. Requests twindisk does not know decode as
 * `unknown` (the caller answers or ignores them), never as an error.
 */
export function decodeMessage(h: Header, payload: Uint8Array, fds: number[]): Message {
  if (payload.length !== h.size) throw new ProtocolError(`${requestName(h.request)}: payload truncated: ${payload.length} of ${h.size} bytes`);
  const dv = new DataView(payload.buffer, payload.byteOffset, payload.length);
  const needReply = (h.flags & FLAG_NEED_REPLY) !== 0;
  const r = h.request;
  const msg = (body: Body): Message => ({ request: r, needReply, body, fds });
  if (NO_PAYLOAD.has(r)) {
    expectSize(h, 0);
    expectFds(h, fds, 0);
    return msg({ kind: 'none' });
  }
  if (U64_PAYLOAD.has(r)) {
    expectSize(h, 8);
    expectFds(h, fds, 0);
    return msg({ kind: 'u64', value: dv.getBigUint64(0, true) });
  }
  if (STATE_PAYLOAD.has(r)) {
    expectSize(h, 8);
    expectFds(h, fds, 0);
    return msg({ kind: 'state', index: dv.getUint32(0, true), num: dv.getUint32(4, true) });
  }
  if (FD_PAYLOAD.has(r)) {
    expectSize(h, 8);
    const word = dv.getBigUint64(0, true);
    if (word >> 9n !== 0n) throw new ProtocolError(`${requestName(r)}: reserved bits set in 0x${word.toString(16)}`);
    const w = Number(word);
    const noFd = (w & VRING_NOFD_MASK) !== 0;
    expectFds(h, fds, noFd ? 0 : 1);
    return msg({ kind: 'vringFd', index: w & VRING_IDX_MASK, noFd });
  }
  switch (r) {
    case Req.SET_VRING_ADDR: {
      expectSize(h, 40);
      expectFds(h, fds, 0);
      return msg({
        kind: 'addr', index: dv.getUint32(0, true), flags: dv.getUint32(4, true),
        desc: u64(dv, 8, 'descriptor table address'), used: u64(dv, 16, 'used ring address'),
        avail: u64(dv, 24, 'available ring address'), log: u64(dv, 32, 'log address'),
      });
    }
    case Req.SET_MEM_TABLE: {
      if (h.size < 8) throw new ProtocolError(`SET_MEM_TABLE: payload of ${h.size} bytes is too short`);
      const n = dv.getUint32(0, true);
      if (n === 0 || n > MAX_MEM_TABLE_REGIONS) throw new ProtocolError(`SET_MEM_TABLE: ${n} regions (1 to ${MAX_MEM_TABLE_REGIONS} allowed)`);
      expectSize(h, 8 + n * MEM_REGION_SIZE);
      expectFds(h, fds, n);
      const regions: MemRegion[] = [];
      for (let i = 0; i < n; i++) regions.push(region(dv, 8 + i * MEM_REGION_SIZE));
      return msg({ kind: 'memTable', regions });
    }
    case Req.ADD_MEM_REG:
    case Req.REM_MEM_REG: {
      expectSize(h, 8 + MEM_REGION_SIZE);
      // ADD_MEM_REG carries the region's fd. QEMU also sends one with REM_MEM_REG in some
      // versions; it is accepted and closed by the caller.
      if (r === Req.ADD_MEM_REG) expectFds(h, fds, 1);
      else if (fds.length > 1) expectFds(h, fds, 1);
      return msg({ kind: 'memReg', region: region(dv, 8) });
    }
    case Req.GET_CONFIG:
    case Req.SET_CONFIG: {
      if (h.size < CONFIG_HEADER_SIZE) throw new ProtocolError(`${requestName(r)}: payload of ${h.size} bytes is too short`);
      const offset = dv.getUint32(0, true);
      const size = dv.getUint32(4, true);
      const flags = dv.getUint32(8, true);
      if (size > MAX_CONFIG_SIZE) throw new ProtocolError(`${requestName(r)}: config size ${size} exceeds ${MAX_CONFIG_SIZE}`);
      expectSize(h, CONFIG_HEADER_SIZE + size);
      expectFds(h, fds, 0);
      return msg({ kind: 'config', offset, size, flags, data: payload.subarray(CONFIG_HEADER_SIZE) });
    }
    case Req.GET_INFLIGHT_FD:
    case Req.SET_INFLIGHT_FD: {
      expectSize(h, 24);
      expectFds(h, fds, r === Req.SET_INFLIGHT_FD ? 1 : 0);
      return msg({
        kind: 'inflight', mmapSize: u64(dv, 0, 'inflight mmap size'), mmapOffset: u64(dv, 8, 'inflight mmap offset'),
        numQueues: dv.getUint16(16, true), queueSize: dv.getUint16(18, true),
      });
    }
    case Req.SET_LOG_BASE: {
      // With LOG_SHMFD: "the log memory fd is provided in the ancillary data ... the size and offset
      // of shared memory area provided in the message" (VhostUserLog).
      expectSize(h, LOG_PAYLOAD_SIZE);
      expectFds(h, fds, 1);
      return msg({ kind: 'log', mmapSize: u64(dv, 0, 'log mmap size'), mmapOffset: u64(dv, 8, 'log mmap offset') });
    }
    case Req.SET_LOG_FD: {
      // "Sets the logging file descriptor, which is passed as ancillary data"; no payload (a u64 is tolerated).
      if (h.size !== 0) expectSize(h, 8);
      expectFds(h, fds, 1);
      return msg({ kind: 'none' });
    }
    case Req.SET_BACKEND_REQ_FD: {
      // "The fd is provided via VHOST_USER_SET_BACKEND_REQ_FD ancillary data": no payload, exactly one fd.
      expectSize(h, 0);
      expectFds(h, fds, 1);
      return msg({ kind: 'none' });
    }
    default:
      return msg({ kind: 'unknown', payload });
  }
}

/** Encodes a reply: header with REPLY set, then `payload`. */
export function encodeReply(request: number, payload: Uint8Array): Buffer {
  const b = Buffer.alloc(HEADER_SIZE + payload.length);
  b.writeUInt32LE(request, 0);
  b.writeUInt32LE(VERSION | FLAG_REPLY, 4);
  b.writeUInt32LE(payload.length, 8);
  b.set(payload, HEADER_SIZE);
  return b;
}

/** A u64 payload. */
export function u64Payload(v: bigint | number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(v), 0);
  return b;
}

/** A vring-state payload (index, num). */
export function statePayload(index: number, num: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32LE(index, 0);
  b.writeUInt32LE(num, 4);
  return b;
}

/** A config payload: the request's offset/size/flags echoed, then `data` (exactly `size` bytes). */
export function configPayload(offset: number, flags: number, data: Uint8Array): Buffer {
  const b = Buffer.alloc(CONFIG_HEADER_SIZE + data.length);
  b.writeUInt32LE(offset, 0);
  b.writeUInt32LE(data.length, 4);
  b.writeUInt32LE(flags, 8);
  b.set(data, CONFIG_HEADER_SIZE);
  return b;
}

/** Encodes a request, for the front-end side (the benchmark driver and tests). */
export function encodeRequest(request: number, payload: Uint8Array = new Uint8Array(0), needReply = false): Buffer {
  const b = Buffer.alloc(HEADER_SIZE + payload.length);
  b.writeUInt32LE(request, 0);
  b.writeUInt32LE(VERSION | (needReply ? FLAG_NEED_REPLY : 0), 4);
  b.writeUInt32LE(payload.length, 8);
  b.set(payload, HEADER_SIZE);
  return b;
}

/** Decodes a reply header (front-end side). */
export function decodeReplyHeader(b: Uint8Array): Header {
  if (b.length < HEADER_SIZE) throw new ProtocolError(`reply header truncated: ${b.length} of ${HEADER_SIZE} bytes`);
  const dv = new DataView(b.buffer, b.byteOffset, HEADER_SIZE);
  const h = { request: dv.getUint32(0, true), flags: dv.getUint32(4, true), size: dv.getUint32(8, true) };
  if ((h.flags & FLAG_VERSION_MASK) !== VERSION || !(h.flags & FLAG_REPLY)) throw new ProtocolError(`bad reply flags 0x${h.flags.toString(16)}`);
  if (h.size > MAX_PAYLOAD) throw new ProtocolError(`reply payload of ${h.size} bytes exceeds ${MAX_PAYLOAD}`);
  return h;
}

/**
 * Encodes a back-end request for the back-end channel (SET_BACKEND_REQ_FD): header (version 1, NEED_REPLY
 * when the back-end wants REPLY_ACK's answer) and `payload` (empty for CONFIG_CHANGE_MSG).
 */
export function encodeBackendRequest(request: BackendReq, payload: Uint8Array = new Uint8Array(0), needReply = false): Buffer {
  if (payload.length > MAX_PAYLOAD) throw new RangeError(`back-end request payload of ${payload.length} bytes exceeds ${MAX_PAYLOAD}`);
  return encodeRequest(request, payload, needReply);
}

/**
 * Decodes the front-end's answer to back-end request `request` sent with NEED_REPLY: "the front-end must
 * respond with zero when operation is successfully completed, or non-zero otherwise". Returns that u64
 * (0: success); throws ProtocolError for anything else (another request's reply, a missing REPLY flag, a
 * payload other than a u64).
 */
export function decodeBackendReply(b: Uint8Array, request: BackendReq): bigint {
  const h = decodeReplyHeader(b);
  const name = BACKEND_REQ_NAMES[request] ?? `back-end request ${request}`;
  if (h.request !== request) throw new ProtocolError(`${name}: the reply is for ${BACKEND_REQ_NAMES[h.request] ?? `request ${h.request}`}`);
  if (h.size !== 8) throw new ProtocolError(`${name}: reply payload of ${h.size} bytes, expected 8`);
  if (b.length < HEADER_SIZE + 8) throw new ProtocolError(`${name}: reply truncated: ${b.length} of ${HEADER_SIZE + 8} bytes`);
  return new DataView(b.buffer, b.byteOffset + HEADER_SIZE, 8).getBigUint64(0, true);
}
