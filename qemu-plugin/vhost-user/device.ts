// The vhost-user back-end for a virtio-blk device: one small handler per front-end request, one flat dispatcher.
import type { BackendInfo } from '../../engine/backend.js';
import type { Logger } from '../../engine/log.js';
import { blkFeatureBits, encodeBlkConfig } from '../virtio/blk.js';
import { CFG_WRITEBACK, MAX_QUEUE_SIZE } from '../virtio/constants.js';
import { MFD_CLOEXEC, close, ftruncate, memfdCreate } from '../os.js';
import { inflightQueueSize } from '../virtio/inflight.js';
import {
  Feature, MAX_CONFIG_SIZE, MAX_MEM_SLOTS, ProtocolFeature, Req, bit,
} from './constants.js';
import {
  ProtocolError, configPayload, requestName, statePayload, u64Payload, type MemRegion, type Message,
} from './message.js';
import type { QueueWorker } from './queue-pool.js';
import type { RegionMsg, RingMsg } from './queue-worker.js';

/**
 * A reply payload (with fds to pass along, which the caller closes after sending), or `null` for
 * "no reply".
 */
export type HandlerResult = Uint8Array | { payload: Uint8Array; fds: number[] } | null;

/** A request the back-end cannot carry out; answered with a failed REPLY_ACK where possible. */
export class RequestFailed extends Error {
  override readonly name = 'RequestFailed';
}

interface Vring {
  num: number;
  desc: number;
  avail: number;
  used: number;
  hasAddr: boolean;
  base: number;
  kickFd: number;
  /** Kick fd message received (fd or polling): the ring is started. */
  kicked: boolean;
  callFd: number;
  errFd: number;
  enabled: boolean;
  /** Running in its worker. */
  running: boolean;
}

interface Region extends MemRegion {
  fd: number;
}

const SUPPORTED_PROTOCOL = [
  ProtocolFeature.MQ, ProtocolFeature.REPLY_ACK, ProtocolFeature.CONFIG, ProtocolFeature.CONFIGURE_MEM_SLOTS,
  ProtocolFeature.RESET_DEVICE, ProtocolFeature.INFLIGHT_SHMFD,
];

/**
 * State of one front-end connection to a virtio-blk device served by queue workers. `handle` is
 * called for each decoded message in order and returns the reply payload; fds that come with
 * messages are owned (kept or closed) here.
 */
export class VhostUserBlkDevice {
  readonly features: bigint;
  readonly protocolFeatures: bigint;
  private ackedFeatures = 0n;
  private ackedProtocol = 0n;
  private regions: Region[] = [];
  private readonly vrings: Vring[];
  private writeback = true;
  private inflightSet = false;

  constructor(
    private readonly info: BackendInfo,
    private readonly workers: QueueWorker[],
    private readonly log: Logger,
  ) {
    let f = bit(Feature.VERSION_1) | bit(Feature.RING_INDIRECT_DESC) | bit(Feature.RING_EVENT_IDX) | bit(Feature.PROTOCOL_FEATURES);
    for (const b of blkFeatureBits(info, workers.length)) f |= bit(b);
    this.features = f;
    this.protocolFeatures = SUPPORTED_PROTOCOL.reduce((a, b) => a | bit(b), 0n);
    this.vrings = workers.map(() => freshVring());
  }

  get numQueues(): number {
    return this.workers.length;
  }

  private has(feature: number): boolean {
    return (this.ackedFeatures & bit(feature)) !== 0n;
  }

  private replyAck(): boolean {
    return (this.ackedProtocol & bit(ProtocolFeature.REPLY_ACK)) !== 0n;
  }

  /**
   * Handles one message. Returns the reply payload (or null). Throws ProtocolError when the
   * connection must be closed; RequestFailed for a request that fails but leaves the connection usable.
   */
  async handle(m: Message): Promise<HandlerResult> {
    const reply = await this.dispatch(m);
    return reply;
  }

  /** Whether a message with `needReply` gets a u64 acknowledgement (REPLY_ACK, and no reply of its own). */
  wantsAck(m: Message): boolean {
    return m.needReply && this.replyAck() && !HAS_REPLY.has(m.request);
  }

  private async dispatch(m: Message): Promise<HandlerResult> {
    const b = m.body;
    switch (m.request) {
      case Req.GET_FEATURES:
        return u64Payload(this.features);
      case Req.SET_FEATURES:
        return this.setFeatures(b.kind === 'u64' ? b.value : 0n);
      case Req.SET_OWNER:
        return null;
      case Req.RESET_OWNER:
      case Req.RESET_DEVICE:
        await this.reset();
        return null;
      case Req.GET_PROTOCOL_FEATURES:
        return u64Payload(this.protocolFeatures);
      case Req.SET_PROTOCOL_FEATURES:
        return this.setProtocolFeatures(b.kind === 'u64' ? b.value : 0n);
      case Req.GET_QUEUE_NUM:
        return u64Payload(this.numQueues);
      case Req.GET_MAX_MEM_SLOTS:
        return u64Payload(MAX_MEM_SLOTS);
      case Req.SET_MEM_TABLE:
        if (b.kind !== 'memTable') break;
        await this.setMemTable(b.regions.map((r, i) => ({ ...r, fd: m.fds[i]! })));
        return null;
      case Req.ADD_MEM_REG:
        if (b.kind !== 'memReg') break;
        await this.addMemReg({ ...b.region, fd: m.fds[0]! });
        return null;
      case Req.REM_MEM_REG:
        if (b.kind !== 'memReg') break;
        m.fds.forEach((fd) => close(fd));
        await this.remMemReg(b.region);
        return null;
      case Req.SET_VRING_NUM:
        if (b.kind !== 'state') break;
        return this.setVringNum(b.index, b.num);
      case Req.SET_VRING_ADDR:
        if (b.kind !== 'addr') break;
        return this.setVringAddr(b.index, b.desc, b.avail, b.used);
      case Req.SET_VRING_BASE:
        if (b.kind !== 'state') break;
        this.vring(b.index).base = b.num & 0xffff;
        return null;
      case Req.GET_VRING_BASE:
        if (b.kind !== 'state') break;
        return this.getVringBase(b.index);
      case Req.SET_VRING_KICK:
      case Req.SET_VRING_CALL:
      case Req.SET_VRING_ERR:
        if (b.kind !== 'vringFd') break;
        return this.setVringFd(m.request, b.index, b.noFd ? -1 : m.fds[0]!);
      case Req.SET_VRING_ENABLE:
        if (b.kind !== 'state') break;
        return this.setVringEnable(b.index, b.num);
      case Req.GET_INFLIGHT_FD:
        if (b.kind !== 'inflight') break;
        return this.getInflightFd(b.numQueues, b.queueSize);
      case Req.SET_INFLIGHT_FD:
        if (b.kind !== 'inflight') break;
        await this.setInflightFd(m.fds[0]!, b.mmapSize, b.mmapOffset, b.numQueues, b.queueSize);
        return null;
      case Req.GET_CONFIG:
        if (b.kind !== 'config') break;
        return this.getConfig(b.offset, b.size, b.flags);
      case Req.SET_CONFIG:
        if (b.kind !== 'config') break;
        return this.setConfig(b.offset, b.data);
      default:
        m.fds.forEach((fd) => close(fd));
        throw new RequestFailed(`${requestName(m.request)} is not supported by twindisk's vhost-user-blk back-end (not negotiated)`);
    }
    throw new ProtocolError(`${requestName(m.request)}: unexpected payload`);
  }

  private vring(index: number): Vring {
    const v = this.vrings[index];
    if (!v) throw new ProtocolError(`queue index ${index} is out of range: the device has ${this.numQueues} queues`);
    return v;
  }

  private setFeatures(f: bigint): null {
    const unknown = f & ~this.features;
    if (unknown) throw new RequestFailed(`SET_FEATURES acks features 0x${unknown.toString(16)} that were not offered`);
    this.ackedFeatures = f;
    if (!this.has(Feature.VERSION_1)) this.log.warn('front-end did not accept VIRTIO_F_VERSION_1; legacy virtio is served little-endian');
    return null;
  }

  private setProtocolFeatures(f: bigint): null {
    const unknown = f & ~this.protocolFeatures;
    if (unknown) throw new RequestFailed(`SET_PROTOCOL_FEATURES acks 0x${unknown.toString(16)} that were not offered`);
    this.ackedProtocol = f;
    return null;
  }

  private async setMemTable(regions: Region[]): Promise<void> {
    this.checkOverlap(regions);
    const old = this.regions;
    this.regions = regions;
    try {
      await this.pushMemory();
    } catch (e) {
      this.regions = old;
      regions.forEach((r) => close(r.fd));
      throw new RequestFailed(`cannot map guest memory: ${(e as Error).message}`);
    }
    old.forEach((r) => close(r.fd));
    this.log.info('guest memory mapped', { regions: regions.length, bytes: regions.reduce((a, r) => a + r.memorySize, 0) });
  }

  private async addMemReg(r: Region): Promise<void> {
    if (this.regions.length >= MAX_MEM_SLOTS) {
      close(r.fd);
      throw new RequestFailed(`ADD_MEM_REG: all ${MAX_MEM_SLOTS} memory slots are in use`);
    }
    // A ProtocolError closes the connection, and the server closes the message's fds.
    this.checkOverlap([...this.regions, r]);
    this.regions = [...this.regions, r];
    try {
      await this.pushMemory();
    } catch (e) {
      this.regions = this.regions.filter((x) => x !== r);
      close(r.fd);
      throw new RequestFailed(`cannot map the added memory region: ${(e as Error).message}`);
    }
  }

  private async remMemReg(r: MemRegion): Promise<void> {
    const i = this.regions.findIndex((x) => x.guestPhysAddr === r.guestPhysAddr && x.memorySize === r.memorySize && x.userspaceAddr === r.userspaceAddr);
    if (i < 0) throw new RequestFailed(`REM_MEM_REG: no region at guest address 0x${r.guestPhysAddr.toString(16)}`);
    const [gone] = this.regions.splice(i, 1);
    await this.pushMemory();
    close(gone!.fd);
  }

  private checkOverlap(rs: MemRegion[]): void {
    for (let i = 0; i < rs.length; i++) {
      for (let j = i + 1; j < rs.length; j++) {
        const a = rs[i]!;
        const b = rs[j]!;
        if (a.guestPhysAddr < b.guestPhysAddr + b.memorySize && b.guestPhysAddr < a.guestPhysAddr + a.memorySize) {
          throw new ProtocolError(`memory regions overlap at guest address 0x${Math.max(a.guestPhysAddr, b.guestPhysAddr).toString(16)}`);
        }
      }
    }
  }

  private async pushMemory(): Promise<void> {
    const regions: RegionMsg[] = this.regions.map((r) => ({
      fd: r.fd, guestPhysAddr: r.guestPhysAddr, memorySize: r.memorySize, userspaceAddr: r.userspaceAddr, mmapOffset: r.mmapOffset,
    }));
    await Promise.all(this.workers.map((w) => w.request({ op: 'mem', regions })));
  }

  private setVringNum(index: number, num: number): null {
    const v = this.vring(index);
    if (num < 1 || num > MAX_QUEUE_SIZE) throw new ProtocolError(`SET_VRING_NUM: queue size ${num} is outside 1..${MAX_QUEUE_SIZE}`);
    v.num = num;
    return null;
  }

  private setVringAddr(index: number, desc: number, avail: number, used: number): null {
    const v = this.vring(index);
    v.desc = desc;
    v.avail = avail;
    v.used = used;
    v.hasAddr = true;
    return null;
  }

  private async getVringBase(index: number): Promise<Uint8Array> {
    const v = this.vring(index);
    // "stop the vring and return the value of last_avail_idx"
    await this.stopRing(index);
    v.kicked = false;
    v.enabled = false;
    if (v.kickFd >= 0) close(v.kickFd);
    v.kickFd = -1;
    return statePayload(index, v.base);
  }

  private async setVringFd(req: number, index: number, fd: number): Promise<null> {
    // An index out of range is a ProtocolError: the server closes the message's fds with the connection.
    const v = this.vring(index);
    if (req === Req.SET_VRING_KICK) {
      await this.stopRing(index);
      if (v.kickFd >= 0) close(v.kickFd);
      v.kickFd = fd;
      v.kicked = true;
      // "If VHOST_USER_F_PROTOCOL_FEATURES has not been negotiated, the ring starts directly in the enabled state."
      if (!this.has(Feature.PROTOCOL_FEATURES)) v.enabled = true;
      if (fd < 0) this.log.warn(`queue ${index} has no kick fd: the ring is polled every millisecond`);
      await this.maybeStart(index);
    } else if (req === Req.SET_VRING_CALL) {
      const old = v.callFd;
      v.callFd = fd;
      if (v.running) await this.workers[index]!.request({ op: 'call', index, fd });
      if (old >= 0) close(old);
    } else {
      if (v.errFd >= 0) close(v.errFd);
      v.errFd = fd;
    }
    return null;
  }

  private async setVringEnable(index: number, enable: number): Promise<null> {
    const v = this.vring(index);
    v.enabled = enable !== 0;
    if (v.enabled) await this.maybeStart(index);
    else await this.stopRing(index);
    return null;
  }

  private async maybeStart(index: number): Promise<void> {
    const v = this.vring(index);
    if (v.running || !v.kicked || !v.enabled) return;
    if (!v.hasAddr || v.num === 0) throw new RequestFailed(`queue ${index} cannot start: its size or addresses were never set`);
    if (this.regions.length === 0) throw new RequestFailed(`queue ${index} cannot start: no guest memory table was sent`);
    const ring: RingMsg = {
      index, num: v.num, desc: v.desc, avail: v.avail, used: v.used, base: v.base, kickFd: v.kickFd, callFd: v.callFd,
      errFd: v.errFd, eventIdx: this.has(Feature.RING_EVENT_IDX), indirect: this.has(Feature.RING_INDIRECT_DESC),
    };
    await this.workers[index]!.request({ op: 'start', ring });
    v.running = true;
    this.log.info(`queue ${index} started`, { size: v.num, base: v.base });
  }

  private async stopRing(index: number): Promise<void> {
    const v = this.vring(index);
    if (!v.running) return;
    const r = await this.workers[index]!.request({ op: 'stop', index });
    v.running = false;
    if (r.lastAvail !== undefined) v.base = r.lastAvail;
    this.log.info(`queue ${index} stopped`, { lastAvail: v.base });
  }

  /** GET_INFLIGHT_FD: a zeroed shared area for the front-end to keep across back-end restarts. */
  private getInflightFd(numQueues: number, queueSize: number): HandlerResult {
    if (numQueues < 1 || numQueues > this.numQueues || queueSize < 1 || queueSize > MAX_QUEUE_SIZE) {
      throw new RequestFailed(`GET_INFLIGHT_FD for ${numQueues} queues of ${queueSize}: the device has ${this.numQueues} queues of at most ${MAX_QUEUE_SIZE}`);
    }
    const size = numQueues * inflightQueueSize(queueSize);
    const fd = memfdCreate('twindisk-inflight', MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, size) < 0) {
      if (fd >= 0) close(fd);
      throw new RequestFailed(`cannot allocate ${size} bytes of inflight memory`);
    }
    const p = Buffer.alloc(24);
    p.writeBigUInt64LE(BigInt(size), 0);
    p.writeUInt16LE(numQueues, 16);
    p.writeUInt16LE(queueSize, 18);
    return { payload: p, fds: [fd] };
  }

  /** SET_INFLIGHT_FD: the area to track requests in (given back by the front-end after a restart). */
  private async setInflightFd(fd: number, mmapSize: number, mmapOffset: number, numQueues: number, queueSize: number): Promise<void> {
    if (numQueues > this.numQueues || queueSize < 1 || queueSize > MAX_QUEUE_SIZE || mmapSize < numQueues * inflightQueueSize(queueSize) || mmapSize > 2 ** 32) {
      close(fd);
      throw new RequestFailed(`SET_INFLIGHT_FD: ${mmapSize} bytes do not fit ${numQueues} queues of ${queueSize}`);
    }
    try {
      await Promise.all(this.workers.map((w) => w.request({ op: 'inflight', fd, mmapOffset, mmapSize, queueSize })));
    } finally {
      close(fd); // the workers keep their own mappings
    }
    this.inflightSet = true;
  }

  private getConfig(offset: number, size: number, flags: number): Uint8Array {
    const cfg = encodeBlkConfig({ info: this.info, numQueues: this.numQueues, writeback: this.writeback });
    if (offset + size > MAX_CONFIG_SIZE) throw new ProtocolError(`GET_CONFIG: offset ${offset} + size ${size} exceeds ${MAX_CONFIG_SIZE}`);
    const out = new Uint8Array(size);
    if (offset < cfg.length) out.set(cfg.subarray(offset, Math.min(cfg.length, offset + size)));
    return configPayload(offset, flags, out);
  }

  private async setConfig(offset: number, data: Uint8Array): Promise<null> {
    // Only the writeback byte is writable (VIRTIO_BLK_F_CONFIG_WCE); other writes are ignored, as by QEMU's device.
    if (offset <= CFG_WRITEBACK && offset + data.length > CFG_WRITEBACK) {
      const wb = data[CFG_WRITEBACK - offset] !== 0;
      if (wb !== this.writeback) {
        this.writeback = wb;
        await Promise.all(this.workers.map((w) => w.request({ op: 'writeback', writeback: wb })));
        this.log.info(`guest switched the write cache to ${wb ? 'writeback' : 'writethrough'}`);
      }
    } else {
      this.log.warn('SET_CONFIG outside the writeback field ignored', { offset, size: data.length });
    }
    return null;
  }

  /** Stops every ring and drops the connection's fds and memory. Called on RESET and on disconnect. */
  async reset(): Promise<void> {
    for (let i = 0; i < this.vrings.length; i++) await this.stopRing(i).catch(() => undefined);
    for (const v of this.vrings) for (const fd of [v.kickFd, v.callFd, v.errFd]) if (fd >= 0) close(fd);
    this.vrings.forEach((_, i) => (this.vrings[i] = freshVring()));
    const old = this.regions;
    this.regions = [];
    await this.pushMemory().catch(() => undefined);
    old.forEach((r) => close(r.fd));
    if (this.inflightSet) {
      await Promise.all(this.workers.map((w) => w.request({ op: 'inflight', fd: -1, mmapOffset: 0, mmapSize: 0, queueSize: 0 }))).catch(() => undefined);
      this.inflightSet = false;
    }
    this.ackedFeatures = 0n;
    this.ackedProtocol = 0n;
  }
}

/** Requests whose normal reply makes a REPLY_ACK acknowledgement unnecessary. */
const HAS_REPLY = new Set<number>([
  Req.GET_FEATURES, Req.GET_PROTOCOL_FEATURES, Req.GET_QUEUE_NUM, Req.GET_VRING_BASE, Req.GET_CONFIG, Req.GET_MAX_MEM_SLOTS,
  Req.GET_INFLIGHT_FD, Req.GET_STATUS,
]);

function freshVring(): Vring {
  return { num: 0, desc: 0, avail: 0, used: 0, hasAddr: false, base: 0, kickFd: -1, kicked: false, callFd: -1, errFd: -1, enabled: false, running: false };
}
