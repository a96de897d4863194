// A vhost-user device's message state machine, for any device type: one small handler per front-end request, one flat dispatcher.
import type { Logger } from '../../engine/log.js';
import { MAX_QUEUE_SIZE } from '../virtio/constants.js';
import { MFD_CLOEXEC, close, ftruncate, memfdCreate } from '../os.js';
import { inflightQueueSize } from '../virtio/inflight.js';
import type { DeviceSettings } from '../virtio/queue-handler.js';
import {
  BackendReq, Feature, MAX_CONFIG_SIZE, MAX_LOG_SIZE, MAX_MEM_SLOTS, ProtocolFeature, Req, VRING_F_LOG, bit,
} from './constants.js';
import {
  ProtocolError, configPayload, requestName, statePayload, u64Payload, type MemRegion, type Message,
} from './message.js';
import type { LogArea, RegionMsg, RingHost, RingMsg } from './ring-host.js';
import { BackendChannel } from './backend-channel.js';

/**
 * The device type behind a vhost-user back-end, what QEMU's libvhost-user calls VuDevIface and
 * rust-vmm the VhostUserBackend trait: its queues, feature bits and config space. Its request
 * handler runs where the rings do (see HandlerSpec); the state machine only starts and stops rings.
 */
export interface VhostUserBackend {
  /** Queues the device has (GET_QUEUE_NUM; vring indices are below it). */
  readonly numQueues: number;
  /** Device-type feature bits offered (VIRTIO_BLK_F_*, ...); the transport's own (VERSION_1, EVENT_IDX, ...) are added. */
  readonly features: bigint;
  /** The config space as the driver reads it now (GET_CONFIG). */
  getConfig(): Uint8Array;
  /**
   * A driver's write of `data` at `offset` into the config space (SET_CONFIG). Returns the settings
   * every queue's request handler must take (the state machine hands them to the RingHost), or null.
   */
  setConfig(offset: number, data: Uint8Array): DeviceSettings | null;
}

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
  /** Kick fd message received (fd or polling): the ring may start once enabled. */
  kicked: boolean;
  callFd: number;
  errFd: number;
  enabled: boolean;
  /** Running in the ring host. */
  running: boolean;
  /** log_guest_addr of SET_VRING_ADDR with VHOST_VRING_F_LOG; -1 without. */
  logAddr: number;
  /** Where the running ring logs its used ring (-1: not known). */
  runningLogAddr: number;
}

/** Ring features every device gets, on top of its own. */
const TRANSPORT_FEATURES = bit(Feature.VERSION_1) | bit(Feature.RING_INDIRECT_DESC) | bit(Feature.RING_EVENT_IDX) | bit(Feature.PROTOCOL_FEATURES)
  | bit(Feature.LOG_ALL);

/** Protocol features offered. */
const SUPPORTED_PROTOCOL = [
  ProtocolFeature.MQ, ProtocolFeature.REPLY_ACK, ProtocolFeature.CONFIG, ProtocolFeature.CONFIGURE_MEM_SLOTS,
  ProtocolFeature.RESET_DEVICE, ProtocolFeature.INFLIGHT_SHMFD,
  // Dirty page logging in a shared log (SET_LOG_BASE with an fd): live migration.
  ProtocolFeature.LOG_SHMFD,
  // The back-end channel, for BACKEND_CONFIG_CHANGE_MSG (online resize). BACKEND_SEND_FD is not
  // offered: a config change carries no fd.
  ProtocolFeature.BACKEND_REQ,
];

/**
 * State of one front-end connection to a device: negotiated features, guest memory, and each vring
 * from configured to running. `handle` is called for each decoded message in order and returns the
 * reply payload; fds that come with messages are owned (kept or closed) here. What the device is
 * comes from `device`; where its rings run is `rings`' business.
 */
export class VhostUserDevice {
  readonly features: bigint;
  readonly protocolFeatures: bigint;
  private ackedFeatures = 0n;
  private ackedProtocol = 0n;
  private regions: RegionMsg[] = [];
  private readonly vrings: Vring[];
  private inflightSet = false;
  /** The dirty log the front-end gave (SET_LOG_BASE); its fd is ours until replaced or reset. */
  private logArea: LogArea | null = null;
  /** The log the rings mark in now (null: logging off). */
  private logPushed: LogArea | null = null;
  /** The last SET_LOG_BASE could not be taken: turning logging on must fail rather than log nothing. */
  private logFailed = false;
  /** SET_LOG_FD's eventfd (kept, never signalled: QEMU reads the log when it syncs). */
  private logFd = -1;
  /** The back-end request channel (SET_BACKEND_REQ_FD); kept across RESET_DEVICE, closed with the connection. */
  private backendChannel: BackendChannel | null = null;
  private backendConfig = false;

  constructor(
    private readonly device: VhostUserBackend,
    private readonly rings: RingHost,
    private readonly log: Logger,
  ) {
    this.features = TRANSPORT_FEATURES | device.features;
    this.protocolFeatures = SUPPORTED_PROTOCOL.reduce((a, b) => a | bit(b), 0n);
    this.vrings = Array.from({ length: device.numQueues }, freshVring);
  }

  get numQueues(): number {
    return this.device.numQueues;
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
    const b = m.body;
    switch (m.request) {
      case Req.GET_FEATURES:
        return u64Payload(this.features);
      case Req.SET_FEATURES:
        return this.setFeatures(b.kind === 'u64' ? b.value : 0n);
      case Req.SET_LOG_BASE:
        if (b.kind !== 'log') break;
        return this.setLogBase(m.fds[0]!, b.mmapSize, b.mmapOffset);
      case Req.SET_LOG_FD:
        if (m.fds.length !== 1) break;
        if (this.logFd >= 0) close(this.logFd);
        this.logFd = m.fds[0]!;
        return null;
      case Req.SET_OWNER:
        return null;
      case Req.RESET_OWNER:
      case Req.RESET_DEVICE: {
        // "reset all internal device state to the initial state, ready to be reinitialized. The
        // back-end retains ownership of the device": the connection's protocol features (REPLY_ACK
        // above all) were negotiated once for the session and stay; QEMU does not send them again.
        const protocol = this.ackedProtocol;
        await this.reset();
        this.ackedProtocol = protocol;
        return null;
      }
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
        return this.setVringAddr(b.index, b.desc, b.avail, b.used, (b.flags & VRING_F_LOG) !== 0 ? b.log : -1);
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
      case Req.SET_BACKEND_REQ_FD:
        return this.setBackendReqFd(m.fds[0]!);
      default:
        m.fds.forEach((fd) => close(fd));
        throw new RequestFailed(`${requestName(m.request)} is not supported by twindisk's vhost-user back-end (not negotiated)`);
    }
    throw new ProtocolError(`${requestName(m.request)}: unexpected payload`);
  }

  /** Whether a message with `needReply` gets a u64 acknowledgement (REPLY_ACK, and no reply of its own). */
  wantsAck(m: Message): boolean {
    return m.needReply && this.replyAck() && !HAS_REPLY.has(m.request);
  }

  /** Whether the front-end waits for a reply of the request's own to `m` (so a failure cannot be told with an ack). */
  hasOwnReply(m: Message): boolean {
    return HAS_REPLY.has(m.request);
  }

  private vring(index: number): Vring {
    const v = this.vrings[index];
    if (!v) throw new ProtocolError(`queue index ${index} is out of range: the device has ${this.numQueues} queues`);
    return v;
  }

  private async setFeatures(f: bigint): Promise<null> {
    const unknown = f & ~this.features;
    if (unknown) throw new RequestFailed(`SET_FEATURES acks features 0x${unknown.toString(16)} that were not offered`);
    if ((f & bit(Feature.LOG_ALL)) !== 0n && this.logFailed) {
      throw new RequestFailed('SET_FEATURES turns dirty logging on, but the last SET_LOG_BASE could not be taken');
    }
    this.ackedFeatures = f;
    if (!this.has(Feature.VERSION_1)) this.log.warn('front-end did not accept VIRTIO_F_VERSION_1; legacy virtio is served little-endian');
    // "To start/stop logging of data/used ring writes, the front-end may send messages
    // VHOST_USER_SET_FEATURES with VHOST_F_LOG_ALL"; QEMU waits for the REPLY_ACK before it goes on migrating.
    await this.syncDirtyLog();
    return null;
  }

  /**
   * SET_LOG_BASE: the dirty log's shared memory. With LOG_SHMFD QEMU waits for a reply whether or not
   * REPLY_ACK was negotiated (hw/virtio/vhost-user.c, vhost_user_set_log_base), so one is always sent:
   * a u64, 0 when the log was taken (libvhost-user answers a u64 too).
   */
  private async setLogBase(fd: number, mmapSize: number, mmapOffset: number): Promise<Uint8Array> {
    const old = this.logArea;
    try {
      if (mmapSize === 0 || mmapSize > MAX_LOG_SIZE) throw new Error(`a log of ${mmapSize} bytes (1 to ${MAX_LOG_SIZE} accepted)`);
      this.logArea = { fd, mmapSize, mmapOffset };
      await this.syncDirtyLog();
    } catch (e) {
      this.logArea = null;
      this.logFailed = true;
      await this.syncDirtyLog().catch(() => undefined);
      close(fd);
      if (old) close(old.fd);
      this.log.error(`SET_LOG_BASE refused: ${(e as Error).message}; live migration of this guest will fail`);
      return u64Payload(1);
    }
    this.logFailed = false;
    if (old) close(old.fd);
    this.log.info('dirty log received', { bytes: mmapSize, logging: this.has(Feature.LOG_ALL) });
    return u64Payload(0);
  }

  /** Hands the rings the log to mark in: the front-end's while LOG_ALL is acknowledged and a log was given, else none. */
  private async syncDirtyLog(): Promise<void> {
    const want = this.has(Feature.LOG_ALL) ? this.logArea : null;
    if (want === this.logPushed) return;
    try {
      await this.rings.setDirtyLog(want);
    } catch (e) {
      throw new RequestFailed(`cannot ${want ? 'map the dirty log' : 'stop dirty logging'}: ${(e as Error).message}`);
    }
    const was = this.logPushed;
    this.logPushed = want;
    if ((was === null) !== (want === null)) this.log.info(want ? 'dirty logging on (live migration)' : 'dirty logging off');
  }

  private setProtocolFeatures(f: bigint): null {
    const unknown = f & ~this.protocolFeatures;
    if (unknown) throw new RequestFailed(`SET_PROTOCOL_FEATURES acks 0x${unknown.toString(16)} that were not offered`);
    this.ackedProtocol = f;
    return null;
  }

  private async setMemTable(regions: RegionMsg[]): Promise<void> {
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

  private async addMemReg(r: RegionMsg): Promise<void> {
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
    this.log.info('memory region added', { gpa: `0x${r.guestPhysAddr.toString(16)}`, bytes: r.memorySize, regions: this.regions.length });
  }

  private async remMemReg(r: MemRegion): Promise<void> {
    const i = this.regions.findIndex((x) => x.guestPhysAddr === r.guestPhysAddr && x.memorySize === r.memorySize && x.userspaceAddr === r.userspaceAddr);
    if (i < 0) throw new RequestFailed(`REM_MEM_REG: no region at guest address 0x${r.guestPhysAddr.toString(16)}`);
    const old = this.regions;
    const gone = old[i]!;
    this.regions = old.filter((_, j) => j !== i);
    try {
      await this.pushMemory();
    } catch (e) {
      // Every queue still runs on the table with the region (the ring host switches all or none).
      this.regions = old;
      throw new RequestFailed(`cannot remove the memory region at guest address 0x${r.guestPhysAddr.toString(16)}: ${(e as Error).message}`);
    }
    close(gone.fd);
    this.log.info('memory region removed', { gpa: `0x${r.guestPhysAddr.toString(16)}`, bytes: r.memorySize, regions: this.regions.length });
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

  private pushMemory(): Promise<void> {
    return this.rings.setMemory(this.regions);
  }

  private setVringNum(index: number, num: number): null {
    const v = this.vring(index);
    if (num < 1 || num > MAX_QUEUE_SIZE) throw new ProtocolError(`SET_VRING_NUM: queue size ${num} is outside 1..${MAX_QUEUE_SIZE}`);
    // Split virtqueues: "Queue Size value is always a power of 2."
    if ((num & (num - 1)) !== 0) throw new ProtocolError(`SET_VRING_NUM: queue size ${num} is not a power of 2`);
    v.num = num;
    return null;
  }

  private async setVringAddr(index: number, desc: number, avail: number, used: number, logAddr: number): Promise<null> {
    const v = this.vring(index);
    v.desc = desc;
    v.avail = avail;
    v.used = used;
    v.hasAddr = true;
    v.logAddr = logAddr;
    // QEMU sends the addresses again with VHOST_VRING_F_LOG when migration starts, rings running. Its
    // log address is the used ring's guest-physical address, where a ring logs already; a ring told
    // another (a vIOMMU's) restarts with it.
    if (v.running && logAddr >= 0 && logAddr !== v.runningLogAddr) {
      await this.stopRing(index);
      await this.maybeStart(index);
    }
    return null;
  }

  /** The guest-physical address of front-end virtual address `uaddr` by the memory table, or -1. */
  private uaddrToGpa(uaddr: number): number {
    const r = this.regions.find((x) => uaddr >= x.userspaceAddr && uaddr < x.userspaceAddr + x.memorySize);
    return r ? r.guestPhysAddr + (uaddr - r.userspaceAddr) : -1;
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
      if (v.running) await this.rings.setCallFd(index, fd);
      if (old >= 0) close(old);
    } else {
      // The running ring is given the new fd before the old one is closed: a worker never writes to a
      // closed fd (whose number may already name another file).
      const old = v.errFd;
      v.errFd = fd;
      if (v.running) await this.rings.setErrFd(index, fd);
      if (old >= 0) close(old);
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
      ...(v.logAddr >= 0 ? { logAddr: v.logAddr } : {}),
    };
    await this.rings.startRing(ring);
    v.running = true;
    v.runningLogAddr = v.logAddr >= 0 ? v.logAddr : this.uaddrToGpa(v.used);
    this.log.info(`queue ${index} started`, { size: v.num, base: v.base });
  }

  private async stopRing(index: number): Promise<void> {
    const v = this.vring(index);
    if (!v.running) return;
    const lastAvail = await this.rings.stopRing(index);
    v.running = false;
    if (lastAvail !== undefined) v.base = lastAvail;
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
      await this.rings.setInflight({ fd, mmapOffset, mmapSize, queueSize });
    } finally {
      close(fd); // the ring host keeps its own mappings
    }
    this.inflightSet = true;
  }

  private getConfig(offset: number, size: number, flags: number): Uint8Array {
    if (offset + size > MAX_CONFIG_SIZE) throw new ProtocolError(`GET_CONFIG: offset ${offset} + size ${size} exceeds ${MAX_CONFIG_SIZE}`);
    const cfg = this.device.getConfig();
    const out = new Uint8Array(size);
    if (offset < cfg.length) out.set(cfg.subarray(offset, Math.min(cfg.length, offset + size)));
    return configPayload(offset, flags, out);
  }

  private async setConfig(offset: number, data: Uint8Array): Promise<null> {
    const settings = this.device.setConfig(offset, data);
    if (settings !== null) await this.rings.configure(settings);
    return null;
  }

  /** SET_BACKEND_REQ_FD: keeps the channel the back-end sends its own requests on (a second one replaces the first). */
  private setBackendReqFd(fd: number): null {
    if ((this.ackedProtocol & bit(ProtocolFeature.BACKEND_REQ)) === 0n) {
      close(fd);
      throw new RequestFailed('SET_BACKEND_REQ_FD without the BACKEND_REQ protocol feature negotiated');
    }
    this.backendChannel?.close();
    this.backendChannel = new BackendChannel(fd, this.replyAck(), this.log);
    this.backendConfig = (this.ackedProtocol & bit(ProtocolFeature.CONFIG)) !== 0n;
    this.log.debug('back-end channel set', { replyAck: this.replyAck() });
    return null;
  }

  /**
   * Tells the front-end that the config space changed (BACKEND_CONFIG_CHANGE_MSG): it reads it again with
   * GET_CONFIG and interrupts the driver. Resolves true once sent (and acknowledged, with REPLY_ACK),
   * false when the front-end gave no back-end channel (the guest sees the change after its next reset);
   * rejects when the front-end failed or did not answer.
   */
  async configChanged(): Promise<boolean> {
    const ch = this.backendChannel;
    if (!ch) return false;
    // "When VHOST_USER_PROTOCOL_F_CONFIG is negotiated, vhost-user back-end sends such messages to
    // notify that the virtio device's configuration space has changed"
    // (Negotiated when the channel was set: RESET_DEVICE does not negotiate again.)
    if (!this.backendConfig) return false;
    await ch.send(BackendReq.CONFIG_CHANGE_MSG);
    return true;
  }

  /** The connection ended: resets the device and closes the back-end channel. */
  async close(): Promise<void> {
    await this.reset();
    this.backendChannel?.close();
    this.backendChannel = null;
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
      await this.rings.setInflight(null).catch(() => undefined);
      this.inflightSet = false;
    }
    if (this.logPushed) await this.rings.setDirtyLog(null).catch(() => undefined);
    this.logPushed = null;
    if (this.logArea) close(this.logArea.fd);
    this.logArea = null;
    this.logFailed = false;
    if (this.logFd >= 0) close(this.logFd);
    this.logFd = -1;
    this.ackedFeatures = 0n;
    this.ackedProtocol = 0n;
  }
}

/** Requests whose normal reply makes a REPLY_ACK acknowledgement unnecessary. */
const HAS_REPLY = new Set<number>([
  Req.GET_FEATURES, Req.GET_PROTOCOL_FEATURES, Req.GET_QUEUE_NUM, Req.GET_VRING_BASE, Req.GET_CONFIG, Req.GET_MAX_MEM_SLOTS,
  Req.GET_INFLIGHT_FD, Req.GET_STATUS,
  // Answered with a u64 whether REPLY_ACK was negotiated or not (see setLogBase).
  Req.SET_LOG_BASE,
]);

function freshVring(): Vring {
  return {
    num: 0, desc: 0, avail: 0, used: 0, hasAddr: false, base: 0, kickFd: -1, kicked: false, callFd: -1, errFd: -1, enabled: false, running: false,
    logAddr: -1, runningLogAddr: -1,
  };
}
