// Tests of the worker-to-engine channel and the worker's ReplicatedBackend: splitting, ordering, slot exhaustion, reads back.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { IoVector, copyFromVector, copyToVector } from '../../../engine/iovec.js';
import { EAGAIN, EFD_CLOEXEC, EFD_NONBLOCK, NativeBuffer, close, errno, eventfd, read, write } from '../../../engine/os.js';
import { CHUNK, ChannelHost, ChannelOp, type ChannelRequest } from '../../../engine/replication/channel.js';
import { ReplicatedBackend } from '../../../engine/replication/replicated-backend.js';

const SIZE = 32 << 20;

/** An engine stand-in: a memory disk behind a ChannelHost; requests may be held to test slot exhaustion. */
function setup(slots = 8) {
  const fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  const one = new NativeBuffer(8);
  one.u8[0] = 1;
  const host = new ChannelHost(fd, (f) => { write(f, one.addr, 8); }, slots);
  const disk = Buffer.alloc(SIZE);
  const seen: { op: ChannelOp; offset: number; length: number }[] = [];
  let hold: ChannelRequest[] | null = null;
  const handle = (r: ChannelRequest) => {
    if (r.op === ChannelOp.Write) disk.set(r.data, r.offset);
    else if (r.op === ChannelOp.Read) r.data.set(disk.subarray(r.offset, r.offset + r.length));
    else if (r.op === ChannelOp.Discard || r.op === ChannelOp.WriteZeroes) disk.fill(0, r.offset, r.offset + r.length);
    r.channel.complete(r.slot, r.offset >= SIZE ? -5 : 0);
  };
  const serving = host.serve((r) => {
    seen.push({ op: r.op, offset: r.offset, length: r.length });
    if (hold) hold.push(r);
    else handle(r);
  });
  const be = new ReplicatedBackend({ kind: 'replicated', channel: host.spec, size: SIZE, blockSize: 512, local: null, hot: null, name: 'test' });
  const finish = async () => {
    host.stop();
    await serving;
    be.close();
    host.close();
    close(fd);
  };
  return {
    host, be, disk, seen, finish,
    holdAll: () => { hold = []; },
    release: () => { const h = hold!; hold = null; h.forEach(handle); },
  };
}

/** Waits (on the event loop) until `done` has a status, polling the backend like a queue worker. */
async function settle(be: ReplicatedBackend, done: { status: number | null }): Promise<number> {
  for (let i = 0; i < 2000 && done.status === null; i++) {
    await new Promise((r) => setImmediate(r));
    be.poll();
  }
  assert.notEqual(done.status, null, 'request completed');
  return done.status!;
}

const completion = () => ({ status: null as number | null, complete(s: number) { this.status = s; } });

/** A vector of several segments over one buffer. */
function vector(buf: Buffer, cuts: number[]): IoVector {
  const v = new IoVector(cuts.length + 1);
  let prev = 0;
  for (const c of [...cuts, buf.length]) {
    v.push(buf, prev, c - prev, 0);
    prev = c;
  }
  return v;
}

test('copyFromVector / copyToVector move the right bytes at any position', () => {
  const src = randomBytes(1000);
  const v = vector(src, [3, 10, 500, 999]);
  for (const [pos, len] of [[0, 1000], [2, 5], [9, 600], [999, 1]] as const) {
    const out = Buffer.alloc(len);
    copyFromVector(v, pos, out, len);
    assert.ok(out.equals(src.subarray(pos, pos + len)));
    const dst = Buffer.alloc(1000);
    copyToVector(out, vector(dst, [3, 10, 500, 999]), pos, len);
    assert.ok(dst.subarray(pos, pos + len).equals(out));
  }
});

test('a write larger than a slot is split, reaches the engine in order, and reads back through the channel', async () => {
  const t = setup();
  const data = randomBytes(CHUNK * 2 + 12345 - (12345 % 512) + 512);
  const w = completion();
  t.be.write(vector(data, [100, 70000, 300000]), 4096, false, w);
  t.be.kick();
  assert.equal(await settle(t.be, w), 0);
  assert.equal(t.seen.length, 3);
  assert.deepEqual(t.seen.map((s) => s.offset), [4096, 4096 + CHUNK, 4096 + 2 * CHUNK]);
  assert.ok(t.disk.subarray(4096, 4096 + data.length).equals(data));
  const back = Buffer.alloc(data.length);
  const r = completion();
  t.be.read(vector(back, [1, 2, 3, 262144]), 4096, r);
  t.be.kick();
  assert.equal(await settle(t.be, r), 0);
  assert.ok(back.equals(data));
  assert.equal(t.be.inFlight(), 0);
  await t.finish();
});

test('more pieces than slots wait for free slots and all complete', async () => {
  const t = setup(4);
  t.holdAll();
  const reqs = Array.from({ length: 10 }, (_, i) => {
    const buf = Buffer.alloc(4096, i + 1);
    const c = completion();
    t.be.write(vector(buf, []), i * 4096, false, c);
    return c;
  });
  t.be.kick();
  await new Promise((r) => setImmediate(r));
  assert.equal(t.seen.length, 4, 'only as many requests as slots are posted');
  assert.equal(t.be.inFlight(), 10);
  t.release();
  for (const c of reqs) assert.equal(await settle(t.be, c), 0);
  assert.equal(t.seen.length, 10);
  for (let i = 0; i < 10; i++) assert.equal(t.disk[i * 4096], i + 1);
  await t.finish();
});

test('flush, discard and write-zeroes travel without data; errors come back as the status', async () => {
  const t = setup();
  t.disk.fill(7, 0, 1 << 20);
  const d = completion();
  t.be.discard(0, 8192, d);
  const z = completion();
  t.be.writeZeroes(1 << 19, CHUNK * 2, true, z);
  const f = completion();
  t.be.flush(f);
  t.be.kick();
  assert.equal(await settle(t.be, d), 0);
  assert.equal(await settle(t.be, z), 0);
  assert.equal(await settle(t.be, f), 0);
  assert.deepEqual(t.seen.map((s) => s.op), [ChannelOp.Discard, ChannelOp.WriteZeroes, ChannelOp.Flush]);
  assert.equal(t.seen[1]!.length, CHUNK * 2, 'one slot carries the whole range');
  assert.equal(t.disk[0], 0);
  assert.equal(t.disk[8192], 7);
  assert.equal(t.disk[(1 << 19) + 5], 0);
  const bad = completion();
  t.be.read(vector(Buffer.alloc(512), []), SIZE, bad);
  t.be.kick();
  assert.equal(await settle(t.be, bad), -5);
  await t.finish();
});

test('an awake worker is not woken through the eventfd; a sleeping one is, and one about to sleep finds completions already posted', async () => {
  const fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  const one = new NativeBuffer(8);
  one.u8[0] = 1;
  let wakes = 0;
  const host = new ChannelHost(fd, (f) => { wakes++; write(f, one.addr, 8); }, 4);
  const serving = host.serve((r) => r.channel.complete(r.slot, 0));
  const be = new ReplicatedBackend({ kind: 'replicated', channel: host.spec, size: SIZE, blockSize: 512, local: null, hot: null, name: 'test' });
  try {
    const iov = new IoVector(1);
    const buf = Buffer.alloc(4096, 7);
    iov.push(buf, 0, 4096, 0);
    const round = async (): Promise<void> => {
      const done = completion();
      be.write(iov, 0, false, done);
      be.kick();
      assert.equal(await settle(be, done), 0);
    };
    // A consumer that never said it is awake is woken for every batch of completions.
    await round();
    assert.equal(wakes, 1, 'woken while not known to be awake');
    // Awake (it came back from poll()): completions are posted without a wake-up...
    be.idle(false);
    await round();
    assert.equal(wakes, 1, 'no eventfd write for an awake worker');
    // ...and before it blocks again it finds them itself: idle(true) answers false while one is pending.
    be.idle(false);
    const done = completion();
    be.write(iov, 4096, false, done);
    be.kick();
    // The engine's turn posts the completion (and, the worker being awake, writes nothing).
    for (let i = 0; i < 3; i++) await new Promise((r) => setImmediate(r));
    assert.equal(done.status, null, 'not taken yet: the worker has not polled');
    assert.equal(be.idle(true), false, 'a completion is pending: do not block');
    assert.equal(wakes, 1, 'still no eventfd write');
    assert.equal(await settle(be, done), 0);
    assert.equal(be.idle(true), true, 'nothing pending: block, and be woken');
    const last = completion();
    be.write(iov, 8192, false, last);
    be.kick();
    assert.equal(await settle(be, last), 0);
    assert.equal(wakes, 2, 'a sleeping worker is woken');
  } finally {
    host.stop();
    await serving;
    be.close();
    host.close();
    close(fd);
  }
});

test('a stale signal (the eventfd written after its completions were taken) is cleared by the poll it wakes, so it cannot wake the worker again', async () => {
  const t = setup();
  try {
    const one = new NativeBuffer(8);
    one.u8[0] = 1;
    const eight = new NativeBuffer(8);
    const fd = t.host.spec.eventFd;
    write(fd, one.addr, 8); // as the engine's once-per-turn write, landing after the worker took what it announced
    t.be.poll(); // a busy-polling worker's spin: nothing posted, the eventfd is left alone (no system call)
    assert.equal(read(fd, eight.addr, 8), 8, 'still set after a spin');
    write(fd, one.addr, 8);
    t.be.poll(true); // the worker woke on it: the back-end clears it
    assert.equal(read(fd, eight.addr, 8), -1, 'cleared by the signalled poll');
    assert.equal(errno(), EAGAIN);
    one.free();
    eight.free();
  } finally {
    await t.finish();
  }
});
