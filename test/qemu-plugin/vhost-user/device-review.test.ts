// Review findings of the vhost-user state machine, against a mock ring host: error fds, RESET_DEVICE and REPLY_ACK, queue sizes, a removal the host refuses.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Logger, setSink } from '../../../engine/log.js';
import { EFD_CLOEXEC, eventfd } from '../../../engine/os.js';
import { fdIsOpen } from '../../../qemu-plugin/os.js';
import type { DeviceSettings } from '../../../qemu-plugin/virtio/queue-handler.js';
import { Feature, HEADER_SIZE, ProtocolFeature, Req, bit } from '../../../qemu-plugin/vhost-user/constants.js';
import { RequestFailed, VhostUserDevice, type HandlerResult, type VhostUserBackend } from '../../../qemu-plugin/vhost-user/device.js';
import { ProtocolError, decodeHeader, decodeMessage, encodeRequest, statePayload, u64Payload } from '../../../qemu-plugin/vhost-user/message.js';
import type { InflightArea, RegionMsg, RingHost, RingMsg } from '../../../qemu-plugin/vhost-user/ring-host.js';
import { memTableBytes, regionBytes } from '../../../qemu-plugin/testing/vhost-user-frontend.js';

setSink(() => undefined);

class OneQueue implements VhostUserBackend {
  readonly numQueues = 1;
  readonly features = 0n;
  getConfig(): Uint8Array {
    return new Uint8Array(8);
  }
  setConfig(): DeviceSettings | null {
    return null;
  }
}

/** A ring host that records, for each error fd handed over, whether the fd it replaces was still open. */
class Rings implements RingHost {
  readonly running = new Map<number, RingMsg>();
  memory: RegionMsg[] = [];
  refuseMemory = false;
  readonly errHandovers: { fd: number; oldStillOpen: boolean }[] = [];
  async setMemory(regions: RegionMsg[]): Promise<void> {
    if (this.refuseMemory) throw new Error('a running ring is in that region');
    this.memory = [...regions];
  }
  async startRing(ring: RingMsg): Promise<void> {
    this.running.set(ring.index, { ...ring });
  }
  async stopRing(index: number): Promise<number | undefined> {
    return this.running.delete(index) ? 0 : undefined;
  }
  async setCallFd(index: number, fd: number): Promise<void> {
    this.running.get(index)!.callFd = fd;
  }
  async setErrFd(index: number, fd: number): Promise<void> {
    const r = this.running.get(index)!;
    this.errHandovers.push({ fd, oldStillOpen: r.errFd < 0 || fdIsOpen(r.errFd) });
    r.errFd = fd;
  }
  async setInflight(_area: InflightArea | null): Promise<void> {}
  async setDirtyLog(): Promise<void> {}
  async configure(_settings: DeviceSettings): Promise<void> {}
}

function setup() {
  const rings = new Rings();
  const sm = new VhostUserDevice(new OneQueue(), rings as unknown as RingHost, new Logger('test'));
  const msg = (req: number, payload?: Uint8Array, fds: number[] = [], needReply = false) => {
    const bytes = encodeRequest(req, payload, needReply);
    return decodeMessage(decodeHeader(bytes.subarray(0, HEADER_SIZE)), bytes.subarray(HEADER_SIZE), fds);
  };
  const send = (req: number, payload?: Uint8Array, fds: number[] = [], needReply = false): Promise<HandlerResult> => sm.handle(msg(req, payload, fds, needReply));
  return { rings, sm, msg, send };
}

const fd = () => eventfd(0, EFD_CLOEXEC);

/** A region of the memory table at mmap offset 0. */
const region = (gpa: number, size: number, addr: number): Buffer => regionBytes({ gpa, size, addr, mmapOffset: 0 });

/** Negotiates PROTOCOL_FEATURES + REPLY_ACK, maps one region and starts queue 0; returns its fds. */
async function running(t: ReturnType<typeof setup>) {
  await t.send(Req.SET_FEATURES, u64Payload(bit(Feature.VERSION_1) | bit(Feature.PROTOCOL_FEATURES)));
  await t.send(Req.SET_PROTOCOL_FEATURES, u64Payload(bit(ProtocolFeature.REPLY_ACK) | bit(ProtocolFeature.CONFIGURE_MEM_SLOTS)));
  const table = memTableBytes([region(0, 1 << 20, 0x7f0000000000)]);
  await t.send(Req.SET_MEM_TABLE, table, [fd()]);
  await t.send(Req.SET_VRING_NUM, statePayload(0, 64));
  const addr = Buffer.alloc(40);
  addr.writeBigUInt64LE(0x7f0000000000n, 8);
  addr.writeBigUInt64LE(0x7f0000002000n, 16);
  addr.writeBigUInt64LE(0x7f0000001000n, 24);
  await t.send(Req.SET_VRING_ADDR, addr);
  const err = fd();
  await t.send(Req.SET_VRING_ERR, u64Payload(0), [err]);
  await t.send(Req.SET_VRING_KICK, u64Payload(0), [fd()]);
  await t.send(Req.SET_VRING_ENABLE, statePayload(0, 1));
  assert.ok(t.rings.running.has(0));
  return { err };
}

test('SET_VRING_ERR on a running ring: the ring gets the new fd before the old one is closed', async () => {
  const t = setup();
  const { err } = await running(t);
  assert.equal(t.rings.running.get(0)!.errFd, err);
  const err2 = fd();
  await t.send(Req.SET_VRING_ERR, u64Payload(0), [err2]);
  assert.equal(t.rings.running.get(0)!.errFd, err2, 'the running ring writes errors to the new fd');
  assert.deepEqual(t.rings.errHandovers, [{ fd: err2, oldStillOpen: true }], 'handed over while the old fd was still open');
  assert.equal(fdIsOpen(err), false, 'then the old fd is closed');
  await t.sm.reset();
});

test('RESET_DEVICE keeps the negotiated protocol features: REPLY_ACK still acknowledges', async () => {
  const t = setup();
  await running(t);
  assert.equal(t.sm.wantsAck(t.msg(Req.SET_VRING_NUM, statePayload(0, 64), [], true)), true);
  await t.send(Req.RESET_DEVICE);
  assert.equal(t.rings.running.size, 0, 'rings are stopped');
  assert.equal(t.sm.wantsAck(t.msg(Req.SET_VRING_NUM, statePayload(0, 64), [], true)), true, 'REPLY_ACK survives the reset');
  assert.equal(t.sm.wantsAck(t.msg(Req.GET_FEATURES, undefined, [], true)), false);
  // The device starts again from scratch: a new table and ring.
  await running(t);
  await t.sm.reset();
});

test('SET_VRING_NUM: sizes that are not a power of 2 are refused; 1 to 32768 in powers of 2 are taken', async () => {
  const t = setup();
  for (const n of [3, 100, 255, 257, 1000, 32767]) {
    await assert.rejects(t.send(Req.SET_VRING_NUM, statePayload(0, n)), (e: Error) => e instanceof ProtocolError && /power of 2/.test(e.message), `size ${n}`);
  }
  for (const n of [1, 2, 64, 256, 1024, 32768]) assert.equal(await t.send(Req.SET_VRING_NUM, statePayload(0, n)), null, `size ${n}`);
});

test('REM_MEM_REG the ring host refuses: the region stays in the table and its fd open', async () => {
  const t = setup();
  await running(t);
  const add = fd();
  await t.send(Req.ADD_MEM_REG, Buffer.concat([Buffer.alloc(8), region(1 << 20, 1 << 20, 0x7e0000000000)]), [add]);
  assert.equal(t.rings.memory.length, 2);
  t.rings.refuseMemory = true;
  await assert.rejects(t.send(Req.REM_MEM_REG, Buffer.concat([Buffer.alloc(8), region(1 << 20, 1 << 20, 0x7e0000000000)])), RequestFailed);
  assert.equal(fdIsOpen(add), true, 'the region was not dropped');
  t.rings.refuseMemory = false;
  await t.send(Req.REM_MEM_REG, Buffer.concat([Buffer.alloc(8), region(1 << 20, 1 << 20, 0x7e0000000000)]));
  assert.equal(t.rings.memory.length, 1, 'a later removal finds it');
  assert.equal(fdIsOpen(add), false);
  await t.sm.reset();
});
