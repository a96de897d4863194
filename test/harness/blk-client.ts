// A virtio-blk "guest" for tests: the TypeScript vhost-user front-end attached to a back-end's socket, one request at a time.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { VhostUserFrontend } from '../../qemu-plugin/testing/vhost-user-frontend.js';
import { VIRTIO_BLK_S_OK, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT } from '../../qemu-plugin/virtio/constants.js';
import { BlkDriver } from '../../qemu-plugin/testing/blk-driver.js';

export type BlkClient = ReturnType<typeof attach>;

/**
 * Connects to `socket` and sets up `queues` queues with 8 slots of `maxData` bytes each. `run`
 * submits one request in slot 0 and waits (blocking) for it; `data` is that slot's buffer.
 */
export function attach(socket: string, queues = 1, maxData = 128 * 1024) {
  const fe = VhostUserFrontend.connect(socket);
  fe.setup({ numQueues: queues, queueSize: 64, memSize: 8 << 20 });
  const blks = fe.queues.map((q, i) => new BlkDriver(q.driver, fe.dataBase + i * (2 << 20), 8, maxData));
  /** Runs one request in slot 0 of queue `qi` and waits for it. */
  const run = (qi: number, type: number, sector: number, len: number) => {
    const q = fe.queues[qi]!;
    blks[qi]!.submit(0, type, sector, len, 2);
    if (q.driver.publishAndCheckKick()) fe.kick(q);
    for (let i = 0; i < 100; i++) {
      const c = blks[qi]!.reap();
      if (c) return c;
      fe.waitCall(q, 100);
    }
    throw new Error('request did not complete within 10 s');
  };
  const data = (qi: number, len: number) => fe.mem.subarray(blks[qi]!.dataGpa(0), blks[qi]!.dataGpa(0) + len);
  return { fe, run, data, blks };
}

/** Writes `len` random bytes at byte `offset` (asserting success) and returns them. */
export function writeRandom(g: BlkClient, offset: number, len: number): Buffer {
  const bytes = randomBytes(len);
  g.data(0, len).set(bytes);
  assert.equal(g.run(0, VIRTIO_BLK_T_OUT, offset / 512, len).status, VIRTIO_BLK_S_OK, `write at ${offset}`);
  return bytes;
}

/** Reads `len` bytes at byte `offset` (asserting success). */
export function readBack(g: BlkClient, offset: number, len: number): Buffer {
  assert.equal(g.run(0, VIRTIO_BLK_T_IN, offset / 512, len).status, VIRTIO_BLK_S_OK, `read at ${offset}`);
  return Buffer.from(g.data(0, len));
}
