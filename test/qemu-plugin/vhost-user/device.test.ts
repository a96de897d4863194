// Tests of the vhost-user message state machine alone: messages from the pure codec, a mock device type and a mock ring host, replies and state checked.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Logger, setSink } from '../../../engine/log.js';
import { EFD_CLOEXEC, close, eventfd } from '../../../engine/os.js';
import { fdIsOpen } from '../../../qemu-plugin/os.js';
import type { DeviceSettings } from '../../../qemu-plugin/virtio/queue-handler.js';
import { Feature, HEADER_SIZE, ProtocolFeature, Req, VRING_NOFD_MASK, bit } from '../../../qemu-plugin/vhost-user/constants.js';
import { RequestFailed, VhostUserDevice, type HandlerResult, type VhostUserBackend } from '../../../qemu-plugin/vhost-user/device.js';
import {
  ProtocolError, decodeHeader, decodeMessage, encodeRequest, statePayload, u64Payload,
} from '../../../qemu-plugin/vhost-user/message.js';
import type { InflightArea, LogArea, RegionMsg, RingHost, RingMsg } from '../../../qemu-plugin/vhost-user/ring-host.js';
import { memTableBytes, regionBytes } from '../../../qemu-plugin/testing/vhost-user-frontend.js';

const logs: string[] = [];
setSink((level, _component, msg) => logs.push(`${level} ${msg}`));

/** A device type with two queues, one feature bit of its own and 16 bytes of config space. */
class MockDevice implements VhostUserBackend {
  readonly numQueues = 2;
  readonly features = bit(Feature.BLK_FLUSH);
  readonly config = Uint8Array.from({ length: 16 }, (_, i) => i + 1);
  readonly writes: { offset: number; data: number[] }[] = [];
  getConfig(): Uint8Array {
    return this.config;
  }
  setConfig(offset: number, data: Uint8Array): DeviceSettings | null {
    this.writes.push({ offset, data: [...data] });
    return offset === 0 ? { mode: data[0]! } : null;
  }
}

/** A ring host that records what it is asked and answers like the queue workers. */
class MockRings implements RingHost {
  readonly calls: string[] = [];
  readonly running = new Map<number, RingMsg>();
  memory: RegionMsg[] = [];
  inflight: InflightArea | null = null;
  readonly settings: DeviceSettings[] = [];
  /** What a stopped ring reports as its last available index. */
  lastAvail = 0;
  failMemory = false;
  async setMemory(regions: RegionMsg[]): Promise<void> {
    if (this.failMemory) throw new Error('mmap failed');
    this.calls.push(`mem ${regions.length}`);
    this.memory = [...regions];
  }
  async startRing(ring: RingMsg): Promise<void> {
    this.calls.push(`start ${ring.index}`);
    this.running.set(ring.index, { ...ring });
  }
  async stopRing(index: number): Promise<number | undefined> {
    if (!this.running.delete(index)) return undefined;
    this.calls.push(`stop ${index}`);
    return this.lastAvail;
  }
  async setCallFd(index: number, fd: number): Promise<void> {
    this.calls.push(`call ${index}`);
    this.running.get(index)!.callFd = fd;
  }
  async setErrFd(index: number, fd: number): Promise<void> {
    this.calls.push(`err ${index}`);
    this.running.get(index)!.errFd = fd;
  }
  async setInflight(area: InflightArea | null): Promise<void> {
    this.calls.push(area ? 'inflight' : 'inflight none');
    this.inflight = area;
  }
  async configure(settings: DeviceSettings): Promise<void> {
    this.settings.push(settings);
  }
  dirtyLog: LogArea | null = null;
  async setDirtyLog(log: LogArea | null): Promise<void> {
    this.calls.push(log ? `log ${log.mmapSize}` : 'log off');
    this.dirtyLog = log;
  }
}

function setup() {
  const dev = new MockDevice();
  const rings = new MockRings();
  const sm = new VhostUserDevice(dev, rings, new Logger('test'));
  /** Encodes a request, decodes it as the server does, and hands it to the state machine. */
  const send = (req: number, payload?: Uint8Array, fds: number[] = [], needReply = false): Promise<HandlerResult> => {
    const bytes = encodeRequest(req, payload, needReply);
    return sm.handle(decodeMessage(decodeHeader(bytes.subarray(0, HEADER_SIZE)), bytes.subarray(HEADER_SIZE), fds));
  };
  const u64 = async (req: number) => Buffer.from((await send(req)) as Uint8Array).readBigUInt64LE(0);
  return { dev, rings, sm, send, u64 };
}

const fd = () => eventfd(0, EFD_CLOEXEC);

/** A region of the memory table at mmap offset 0. */
const region = (gpa: number, size: number, addr: number): Buffer => regionBytes({ gpa, size, addr, mmapOffset: 0 });

const memTable = (...regions: Buffer[]): Buffer => memTableBytes(regions);

function vringAddr(index: number, desc: number, used: number, avail: number): Buffer {
  const b = Buffer.alloc(40);
  b.writeUInt32LE(index, 0);
  b.writeBigUInt64LE(BigInt(desc), 8);
  b.writeBigUInt64LE(BigInt(used), 16);
  b.writeBigUInt64LE(BigInt(avail), 24);
  return b;
}

/** Negotiates `features` (with PROTOCOL_FEATURES and REPLY_ACK unless told otherwise) and maps one region. */
async function negotiate(t: ReturnType<typeof setup>, o: { protocol?: boolean } = {}): Promise<number> {
  let f = bit(Feature.VERSION_1) | bit(Feature.RING_EVENT_IDX) | bit(Feature.BLK_FLUSH);
  if (o.protocol ?? true) f |= bit(Feature.PROTOCOL_FEATURES);
  await t.send(Req.SET_FEATURES, u64Payload(f));
  if (o.protocol ?? true) await t.send(Req.SET_PROTOCOL_FEATURES, u64Payload(bit(ProtocolFeature.REPLY_ACK) | bit(ProtocolFeature.CONFIG)));
  const mfd = fd();
  await t.send(Req.SET_MEM_TABLE, memTable(region(0, 1 << 20, 0x7f0000000000)), [mfd]);
  return mfd;
}

/** Configures queue `q` (size, addresses, base, call and kick fds); returns the kick and call fds. */
async function configureRing(t: ReturnType<typeof setup>, q: number, base = 0): Promise<{ kick: number; call: number }> {
  await t.send(Req.SET_VRING_NUM, statePayload(q, 64));
  await t.send(Req.SET_VRING_ADDR, vringAddr(q, 0x7f0000000000, 0x7f0000002000, 0x7f0000001000));
  await t.send(Req.SET_VRING_BASE, statePayload(q, base));
  const call = fd();
  const kick = fd();
  await t.send(Req.SET_VRING_CALL, u64Payload(q), [call]);
  await t.send(Req.SET_VRING_KICK, u64Payload(q), [kick]);
  return { kick, call };
}

test('features: the transport adds its own to the device type\'s; unknown acks fail the request', async () => {
  const t = setup();
  const f = await t.u64(Req.GET_FEATURES);
  const transport = bit(Feature.VERSION_1) | bit(Feature.RING_INDIRECT_DESC) | bit(Feature.RING_EVENT_IDX) | bit(Feature.PROTOCOL_FEATURES)
    | bit(Feature.LOG_ALL);
  assert.equal(f, transport | bit(Feature.BLK_FLUSH));
  await assert.rejects(t.send(Req.SET_FEATURES, u64Payload(bit(Feature.BLK_DISCARD))), RequestFailed);
  assert.equal(await t.u64(Req.GET_QUEUE_NUM), 2n);
  assert.equal(await t.u64(Req.GET_MAX_MEM_SLOTS), 32n);
  const pf = await t.u64(Req.GET_PROTOCOL_FEATURES);
  for (const p of [ProtocolFeature.MQ, ProtocolFeature.REPLY_ACK, ProtocolFeature.CONFIG, ProtocolFeature.INFLIGHT_SHMFD]) assert.ok(pf & bit(p));
  assert.ok(pf & bit(ProtocolFeature.LOG_SHMFD), 'dirty logging in shared memory (live migration)');
  await assert.rejects(t.send(Req.SET_PROTOCOL_FEATURES, u64Payload(bit(ProtocolFeature.PAGEFAULT))), RequestFailed);
});

test('REPLY_ACK: acknowledged only once negotiated, and never for requests with a reply of their own', async () => {
  const t = setup();
  const m = (req: number, payload?: Uint8Array) => {
    const b = encodeRequest(req, payload, true);
    return decodeMessage(decodeHeader(b.subarray(0, HEADER_SIZE)), b.subarray(HEADER_SIZE), []);
  };
  assert.equal(t.sm.wantsAck(m(Req.SET_OWNER)), false, 'REPLY_ACK not negotiated yet');
  await t.send(Req.SET_FEATURES, u64Payload(bit(Feature.PROTOCOL_FEATURES)));
  await t.send(Req.SET_PROTOCOL_FEATURES, u64Payload(bit(ProtocolFeature.REPLY_ACK)));
  assert.equal(t.sm.wantsAck(m(Req.SET_OWNER)), true);
  assert.equal(t.sm.wantsAck(m(Req.GET_FEATURES)), false);
  assert.equal(t.sm.wantsAck(m(Req.GET_VRING_BASE, statePayload(0, 0))), false);
});

test('a ring starts when kicked and enabled, with everything the front-end set; GET_VRING_BASE stops it', async () => {
  const t = setup();
  const mfd = await negotiate(t);
  assert.deepEqual(t.rings.calls, ['mem 1']);
  assert.equal(t.rings.memory[0]!.fd, mfd);
  const { kick, call } = await configureRing(t, 1, 7);
  assert.equal(t.rings.running.size, 0, 'with PROTOCOL_FEATURES a ring waits for SET_VRING_ENABLE');
  await t.send(Req.SET_VRING_ENABLE, statePayload(1, 1), [], true);
  assert.deepEqual(t.rings.running.get(1), {
    index: 1, num: 64, desc: 0x7f0000000000, avail: 0x7f0000001000, used: 0x7f0000002000, base: 7,
    kickFd: kick, callFd: call, errFd: -1, eventIdx: true, indirect: false,
  });
  // A new call fd reaches the running ring; the old one is closed after.
  const call2 = fd();
  await t.send(Req.SET_VRING_CALL, u64Payload(1), [call2]);
  assert.equal(t.rings.running.get(1)!.callFd, call2);
  assert.equal(fdIsOpen(call), false);
  t.rings.lastAvail = 42;
  const base = Buffer.from((await t.send(Req.GET_VRING_BASE, statePayload(1, 0))) as Uint8Array);
  assert.deepEqual([base.readUInt32LE(0), base.readUInt32LE(4)], [1, 42], 'the ring\'s last available index comes back');
  assert.equal(t.rings.running.size, 0);
  assert.equal(fdIsOpen(kick), false, 'a stopped ring\'s kick fd is closed');
  assert.equal(fdIsOpen(call2), true, 'its call fd stays until replaced or reset');
  // Started again from where it stopped.
  const kick2 = fd();
  await t.send(Req.SET_VRING_KICK, u64Payload(1), [kick2]);
  await t.send(Req.SET_VRING_ENABLE, statePayload(1, 1));
  assert.equal(t.rings.running.get(1)!.base, 42);
  assert.deepEqual(t.rings.calls, ['mem 1', 'start 1', 'call 1', 'stop 1', 'start 1']);
  await t.sm.reset();
  assert.equal(t.rings.running.size, 0);
  for (const x of [mfd, kick2, call2]) assert.equal(fdIsOpen(x), false, 'reset closes every fd the connection gave');
  assert.equal(t.rings.memory.length, 0);
});

test('without PROTOCOL_FEATURES a ring starts enabled at its kick; a kick without fd means a polled ring', async () => {
  const t = setup();
  await negotiate(t, { protocol: false });
  await t.send(Req.SET_VRING_NUM, statePayload(0, 16));
  await t.send(Req.SET_VRING_ADDR, vringAddr(0, 0x7f0000000000, 0x7f0000002000, 0x7f0000001000));
  await t.send(Req.SET_VRING_KICK, u64Payload(VRING_NOFD_MASK));
  const r = t.rings.running.get(0)!;
  assert.equal(r.kickFd, -1);
  assert.equal(r.callFd, -1);
  assert.match(logs.join('\n'), /queue 0 has no kick fd/);
  await t.sm.reset();
});

test('bad ring requests: out-of-range queues and sizes close the connection; a ring that cannot start fails the request', async () => {
  const t = setup();
  await negotiate(t);
  await assert.rejects(t.send(Req.SET_VRING_NUM, statePayload(2, 64)), (e: Error) => e instanceof ProtocolError && /out of range/.test(e.message));
  await assert.rejects(t.send(Req.SET_VRING_NUM, statePayload(0, 0)), ProtocolError);
  await assert.rejects(t.send(Req.SET_VRING_NUM, statePayload(0, 65536)), ProtocolError);
  const kick = fd();
  await t.send(Req.SET_VRING_KICK, u64Payload(0), [kick]);
  await assert.rejects(t.send(Req.SET_VRING_ENABLE, statePayload(0, 1)), (e: Error) => e instanceof RequestFailed && /never set/.test(e.message));
  assert.equal(t.rings.running.size, 0);
  const other = fd();
  await assert.rejects(t.send(Req.GPU_SET_SOCKET, Buffer.alloc(0), [other]), RequestFailed);
  assert.equal(fdIsOpen(other), false, 'fds of a refused request are closed');
  await t.sm.reset();
  assert.equal(fdIsOpen(kick), false);
});

test('memory: a host that cannot map keeps the old table; overlaps close the connection; unknown removals fail', async () => {
  const t = setup();
  const mfd = await negotiate(t);
  t.rings.failMemory = true;
  const bad = fd();
  await assert.rejects(t.send(Req.SET_MEM_TABLE, memTable(region(0, 1 << 20, 0x7e0000000000)), [bad]), RequestFailed);
  assert.equal(fdIsOpen(bad), false, 'the refused table\'s fds are closed');
  assert.equal(fdIsOpen(mfd), true, 'the old table stays');
  t.rings.failMemory = false;
  const add = fd();
  await t.send(Req.ADD_MEM_REG, Buffer.concat([Buffer.alloc(8), region(1 << 20, 1 << 20, 0x7e0000000000)]), [add]);
  assert.deepEqual(t.rings.memory.map((r) => r.fd), [mfd, add]);
  const overlap = fd();
  await assert.rejects(t.send(Req.ADD_MEM_REG, Buffer.concat([Buffer.alloc(8), region(1 << 19, 1 << 20, 0x7d0000000000)]), [overlap]), ProtocolError);
  close(overlap); // the server closes a ProtocolError's fds
  await assert.rejects(t.send(Req.REM_MEM_REG, Buffer.concat([Buffer.alloc(8), region(4 << 20, 1 << 20, 0)])), RequestFailed);
  await t.send(Req.REM_MEM_REG, Buffer.concat([Buffer.alloc(8), region(1 << 20, 1 << 20, 0x7e0000000000)]));
  assert.deepEqual(t.rings.memory.map((r) => r.fd), [mfd]);
  assert.equal(fdIsOpen(add), false);
  await t.sm.reset();
});

test('config space: GET_CONFIG reads the device type\'s bytes, SET_CONFIG\'s settings reach every queue', async () => {
  const t = setup();
  const get = (offset: number, size: number) => {
    const p = Buffer.alloc(12 + size);
    p.writeUInt32LE(offset, 0);
    p.writeUInt32LE(size, 4);
    return t.send(Req.GET_CONFIG, p).then((r) => [...(r as Uint8Array).subarray(12)]);
  };
  assert.deepEqual(await get(0, 4), [1, 2, 3, 4]);
  assert.deepEqual(await get(14, 4), [15, 16, 0, 0], 'bytes past the device\'s config read as zero');
  await assert.rejects(get(250, 8), ProtocolError);
  const set = (offset: number, bytes: number[]) => {
    const p = Buffer.alloc(12 + bytes.length);
    p.writeUInt32LE(offset, 0);
    p.writeUInt32LE(bytes.length, 4);
    p.set(bytes, 12);
    return t.send(Req.SET_CONFIG, p);
  };
  assert.equal(await set(0, [9]), null);
  assert.equal(await set(5, [1, 2]), null);
  assert.deepEqual(t.dev.writes, [{ offset: 0, data: [9] }, { offset: 5, data: [1, 2] }]);
  assert.deepEqual(t.rings.settings, [{ mode: 9 }], 'only settings the device type returns are sent');
});

test('inflight: GET_INFLIGHT_FD hands out a sized area; SET_INFLIGHT_FD shares it with the host; reset withdraws it', async () => {
  const t = setup();
  const q = Buffer.alloc(24);
  q.writeUInt16LE(2, 16);
  q.writeUInt16LE(64, 18);
  const r = (await t.send(Req.GET_INFLIGHT_FD, q)) as { payload: Uint8Array; fds: number[] };
  const size = Buffer.from(r.payload).readBigUInt64LE(0);
  assert.ok(size >= 2n * (16n + 16n * 64n));
  assert.equal(r.fds.length, 1);
  const set = Buffer.from(r.payload);
  await t.send(Req.SET_INFLIGHT_FD, set, [r.fds[0]!]);
  assert.deepEqual(t.rings.inflight, { fd: r.fds[0], mmapOffset: 0, mmapSize: Number(size), queueSize: 64 });
  assert.equal(fdIsOpen(r.fds[0]!), false, 'the area\'s fd is closed once the host has it');
  const tooMany = Buffer.from(q);
  tooMany.writeUInt16LE(3, 16);
  await assert.rejects(t.send(Req.GET_INFLIGHT_FD, tooMany), RequestFailed);
  await t.sm.reset();
  assert.equal(t.rings.inflight, null);
  assert.equal(t.rings.calls.at(-1), 'inflight none');
});

/** SET_LOG_BASE's payload: u64 mmap_size, u64 mmap_offset. */
function logBase(size: number, offset = 0): Buffer {
  const b = Buffer.alloc(16);
  b.writeBigUInt64LE(BigInt(size), 0);
  b.writeBigUInt64LE(BigInt(offset), 8);
  return b;
}

test('dirty log: SET_LOG_BASE always gets a u64 reply; rings mark only while LOG_ALL is acknowledged and a log was given', async () => {
  const t = setup();
  await negotiate(t);
  const f = bit(Feature.VERSION_1) | bit(Feature.RING_EVENT_IDX) | bit(Feature.PROTOCOL_FEATURES);
  t.rings.calls.length = 0;
  const first = fd();
  const r = await t.send(Req.SET_LOG_BASE, logBase(4096), [first]);
  assert.equal(Buffer.from(r as Uint8Array).readBigUInt64LE(0), 0n, 'QEMU reads a reply after SET_LOG_BASE, REPLY_ACK or not');
  assert.deepEqual(t.rings.calls, [], 'no logging before LOG_ALL');
  assert.equal(fdIsOpen(first), true, 'the log fd is kept for when logging starts');
  await t.send(Req.SET_FEATURES, u64Payload(f | bit(Feature.LOG_ALL)), [], true);
  assert.deepEqual(t.rings.dirtyLog, { fd: first, mmapSize: 4096, mmapOffset: 0 });
  // A bigger log (memory hot-plug) replaces the first one, which is closed once the rings moved over.
  const second = fd();
  await t.send(Req.SET_LOG_BASE, logBase(8192, 64), [second]);
  assert.deepEqual(t.rings.dirtyLog, { fd: second, mmapSize: 8192, mmapOffset: 64 });
  assert.equal(fdIsOpen(first), false);
  await t.send(Req.SET_FEATURES, u64Payload(f));
  assert.equal(t.rings.dirtyLog, null, 'LOG_ALL cleared: logging off');
  assert.deepEqual(t.rings.calls, ['log 4096', 'log 8192', 'log off']);
  const m = (req: number, payload: Uint8Array) => {
    const b = encodeRequest(req, payload, true);
    return decodeMessage(decodeHeader(b.subarray(0, HEADER_SIZE)), b.subarray(HEADER_SIZE), [3]);
  };
  assert.equal(t.sm.wantsAck(m(Req.SET_LOG_BASE, logBase(4096))), false, 'its reply is the acknowledgement');
  const logFd = fd();
  assert.equal(await t.send(Req.SET_LOG_FD, new Uint8Array(0), [logFd]), null);
  await t.sm.reset();
  assert.equal(fdIsOpen(second), false, 'reset closes the log');
  assert.equal(fdIsOpen(logFd), false, 'and the log eventfd');
});

test('dirty log: a log that cannot be taken is answered non-zero, and turning logging on then fails', async () => {
  const t = setup();
  await negotiate(t);
  const r = await t.send(Req.SET_LOG_BASE, logBase(0), [fd()]);
  assert.equal(Buffer.from(r as Uint8Array).readBigUInt64LE(0), 1n);
  const f = bit(Feature.VERSION_1) | bit(Feature.PROTOCOL_FEATURES) | bit(Feature.LOG_ALL);
  await assert.rejects(t.send(Req.SET_FEATURES, u64Payload(f)), RequestFailed, 'QEMU must not migrate without the log');
  assert.equal(t.rings.dirtyLog, null);
  assert.throws(() => decodeMessage(decodeHeader(encodeRequest(Req.SET_LOG_BASE, logBase(4096)).subarray(0, HEADER_SIZE)), logBase(4096), []), ProtocolError,
    'SET_LOG_BASE without its fd');
});

test('dirty log: SET_VRING_ADDR with VHOST_VRING_F_LOG hands the ring its log address; the used ring\'s own address needs no restart', async () => {
  const t = setup();
  await negotiate(t);
  await configureRing(t, 0);
  await t.send(Req.SET_VRING_ENABLE, statePayload(0, 1));
  const withLog = (logAddr: number) => {
    const b = vringAddr(0, 0x7f0000000000, 0x7f0000002000, 0x7f0000001000);
    b.writeUInt32LE(1, 4); // VHOST_VRING_F_LOG
    b.writeBigUInt64LE(BigInt(logAddr), 32);
    return b;
  };
  t.rings.calls.length = 0;
  await t.send(Req.SET_VRING_ADDR, withLog(0x2000));
  assert.deepEqual(t.rings.calls, [], 'the used ring is at guest-physical 0x2000 already: the running ring is left alone');
  await t.send(Req.SET_VRING_ADDR, withLog(0x90000));
  assert.deepEqual(t.rings.calls, ['stop 0', 'start 0']);
  assert.equal(t.rings.running.get(0)!.logAddr, 0x90000);
});
