// Tests of the device side of a split virtqueue, driven by a mock driver over plain memory.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from '../../../qemu-plugin/virtio/constants.js';
import { Chain, RingBrokenError } from '../../../qemu-plugin/virtio/virtqueue.js';
import { mockGuest } from './mock.js';

const segs = (v: Chain['rd']) => Array.from({ length: v.count }, (_, i) => [v.offs[i], v.lens[i]]);

test('a direct chain pops into readable and writable segments', () => {
  const g = mockGuest();
  const head = g.driver.add([
    { gpa: g.data, len: 16, write: false },
    { gpa: g.data + 4096, len: 4096, write: true },
    { gpa: g.data + 16, len: 1, write: true },
  ]);
  g.driver.publish();
  const c = new Chain(8);
  assert.equal(g.vq.pop(c), true);
  assert.equal(c.head, head);
  assert.equal(c.error, null);
  assert.deepEqual(segs(c.rd), [[g.data, 16]]);
  assert.deepEqual(segs(c.wr), [[g.data + 4096, 4096], [g.data + 16, 1]]);
  assert.equal(g.vq.pop(c), false, 'ring is empty afterwards');
});

test('an indirect chain is followed into its table', () => {
  const g = mockGuest();
  g.driver.add([{ gpa: g.data, len: 16, write: false }, { gpa: g.data + 512, len: 512, write: false }, { gpa: g.data + 32, len: 1, write: true }], true);
  g.driver.publish();
  const c = new Chain(8);
  assert.equal(g.vq.pop(c), true);
  assert.equal(c.error, null);
  assert.deepEqual(segs(c.rd), [[g.data, 16], [g.data + 512, 512]]);
  assert.deepEqual(segs(c.wr), [[g.data + 32, 1]]);
});

test('a buffer crossing two memory regions becomes two segments', () => {
  const split = 512 * 1024;
  const g = mockGuest({ splitAt: split });
  g.driver.add([{ gpa: split - 100, len: 300, write: true }]);
  g.driver.publish();
  const c = new Chain(8);
  g.vq.pop(c);
  assert.equal(c.error, null);
  assert.deepEqual(segs(c.wr), [[split - 100, 100], [0, 200]]);
  assert.equal(c.wr.bufs[1], g.gm.regions[1]!.u8);
});

function rawChain(setup: (g: ReturnType<typeof mockGuest>) => void, opts = {}) {
  const g = mockGuest(opts);
  setup(g);
  g.driver.pushAvailRaw(0);
  g.driver.publish();
  const c = new Chain(8);
  g.vq.pop(c);
  return { g, c };
}

test('malformed chains are reported, never followed outside memory', () => {
  const cases: [string, (g: ReturnType<typeof mockGuest>) => void, RegExp, object?][] = [
    ['loop', (g) => { g.driver.setDesc(0, g.data, 16, VIRTQ_DESC_F_NEXT, 1); g.driver.setDesc(1, g.data, 16, VIRTQ_DESC_F_NEXT, 0); }, /loops/],
    ['index out of range', (g) => g.driver.setDesc(0, g.data, 16, VIRTQ_DESC_F_NEXT, 999), /out of range/],
    ['buffer outside memory', (g) => g.driver.setDesc(0, 0xfff00000, 16, 0, 0), /outside guest memory/],
    ['buffer running off the end', (g) => g.driver.setDesc(0, (1 << 20) - 8, 16, 0, 0), /outside guest memory/],
    ['address above 2^53', (g) => { g.driver.setDesc(0, 0, 16, 0, 0); g.driver.dv.setUint32(4, 0xffffffff, true); }, /outside guest memory/],
    ['readable after writable', (g) => { g.driver.setDesc(0, g.data, 1, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1); g.driver.setDesc(1, g.data, 16, 0, 0); }, /readable descriptor after/],
    ['indirect and next', (g) => g.driver.setDesc(0, g.data, 32, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, 1), /both INDIRECT and NEXT/],
    ['indirect of bad length', (g) => g.driver.setDesc(0, g.data, 24, VIRTQ_DESC_F_INDIRECT, 0), /length is invalid/],
    ['indirect table outside memory', (g) => g.driver.setDesc(0, 0xfff00000, 32, VIRTQ_DESC_F_INDIRECT, 0), /indirect table outside/],
    ['nested indirect', (g) => { g.driver.setDesc(0, g.data, 16, VIRTQ_DESC_F_INDIRECT, 0); g.driver.setDesc(0, g.data, 16, VIRTQ_DESC_F_INDIRECT, 0, g.data); }, /inside an indirect table/],
    ['indirect loop', (g) => { g.driver.setDesc(0, g.data, 32, VIRTQ_DESC_F_INDIRECT, 0); g.driver.setDesc(0, g.data + 4096, 8, VIRTQ_DESC_F_NEXT, 1, g.data); g.driver.setDesc(1, g.data + 4096, 8, VIRTQ_DESC_F_NEXT, 0, g.data); }, /loops/],
    ['indirect not negotiated', (g) => g.driver.setDesc(0, g.data, 32, VIRTQ_DESC_F_INDIRECT, 0), /not negotiated/, { indirect: false }],
  ];
  for (const [name, setup, re, opts] of cases) {
    const { c } = rawChain(setup, opts);
    assert.match(c.error ?? '', re, name);
  }
});

test('too many segments is an error, and the status byte is still found when it is safe', () => {
  const { c, g } = rawChain((g) => {
    for (let i = 0; i < 12; i++) g.driver.setDesc(i, g.data + i * 512, 512, VIRTQ_DESC_F_NEXT | (i === 11 ? VIRTQ_DESC_F_WRITE : 0), i + 1);
    g.driver.setDesc(11, g.data + 100000, 1, VIRTQ_DESC_F_WRITE, 0);
  });
  assert.match(c.error ?? '', /seg_max/);
  assert.equal(c.errRegion, 0);
  assert.equal(c.errOff, g.data + 100000);
});

test('an available index more than a ring ahead breaks the ring', () => {
  const g = mockGuest({ size: 8 });
  g.driver.setAvailIdxRaw(9);
  assert.throws(() => g.vq.pop(new Chain(4)), RingBrokenError);
});

test('EVENT_IDX: the device notifies only when the driver asked, and arms kicks', () => {
  const g = mockGuest({ size: 8 });
  const c = new Chain(4);
  for (let i = 0; i < 3; i++) g.driver.add([{ gpa: g.data, len: 1, write: true }]);
  assert.equal(g.driver.publishAndCheckKick(), true, 'first publish kicks');
  while (g.vq.pop(c)) g.vq.pushUsed(c.head, 1);
  g.vq.publish();
  assert.equal(g.vq.armKick(), false);
  assert.equal(g.vq.needsNotify(), true, 'used_event 0 is passed');
  // The driver reaps one of three: used_event becomes 1, which the device already passed.
  g.driver.reap();
  g.driver.add([{ gpa: g.data, len: 1, write: true }]);
  assert.equal(g.driver.publishAndCheckKick(), true, 'avail_event was armed at 3');
  g.vq.pop(c);
  g.vq.pushUsed(c.head, 1);
  g.vq.publish();
  assert.equal(g.vq.needsNotify(), false, 'driver still has two unreaped: used_event 1 was signalled already');
  g.driver.reap(); g.driver.reap(); g.driver.reap();
  g.driver.add([{ gpa: g.data, len: 1, write: true }]);
  g.vq.suppressKicks();
  assert.equal(g.driver.publishAndCheckKick(), false, 'no kick while avail_event is stale (device polling)');
  g.vq.pop(c);
  g.vq.pushUsed(c.head, 1);
  g.vq.publish();
  assert.equal(g.vq.needsNotify(), true, 'driver caught up: notify');
});

test('without EVENT_IDX, NO_INTERRUPT and NO_NOTIFY flags decide', () => {
  const g = mockGuest({ size: 8, eventIdx: false });
  const c = new Chain(4);
  g.driver.add([{ gpa: g.data, len: 1, write: true }]);
  g.driver.publish();
  g.vq.pop(c);
  g.vq.pushUsed(c.head, 1);
  g.vq.publish();
  g.driver.dv.setUint16(g.driver.layout.avail, 1, true); // VIRTQ_AVAIL_F_NO_INTERRUPT
  assert.equal(g.vq.needsNotify(), false);
  g.vq.suppressKicks();
  assert.equal(g.driver.dv.getUint16(g.driver.layout.used, true), 1, 'VIRTQ_USED_F_NO_NOTIFY set');
  g.vq.armKick();
  assert.equal(g.driver.dv.getUint16(g.driver.layout.used, true), 0);
});

test('fuzz: random descriptor tables never yield a segment outside guest memory', () => {
  let seed = 99;
  const rnd = (n: number) => {
    seed = (seed * 1103515245 + 12345) >>> 0;
    return seed % n;
  };
  const memSize = 1 << 20;
  let errors = 0;
  let ok = 0;
  for (let iter = 0; iter < 3000; iter++) {
    const g = mockGuest({ size: 16, memSize, splitAt: iter % 2 ? 600 * 1024 : undefined });
    const interesting = [0, g.data, memSize - 1, memSize, memSize - 16, 0xffffffff, 600 * 1024 - 8];
    for (let i = 0; i < 16; i++) {
      const addr = rnd(4) ? g.data + rnd(memSize - g.data) : interesting[rnd(interesting.length)]!;
      g.driver.setDesc(i, addr, rnd(3) ? rnd(8192) : rnd(100000), rnd(8), rnd(4) ? rnd(16) : rnd(65536));
    }
    // Some indirect tables with random content.
    for (let k = 0; k < 32; k++) g.mem[g.data + rnd(4096)] = rnd(256);
    g.driver.pushAvailRaw(rnd(4) ? rnd(16) : rnd(65536));
    g.driver.publish();
    const c = new Chain(8);
    try {
      g.vq.pop(c);
    } catch (e) {
      assert.ok(e instanceof RingBrokenError);
      continue;
    }
    if (c.error) errors++;
    else ok++;
    for (const v of [c.rd, c.wr]) {
      for (let i = 0; i < v.count; i++) {
        const buf = v.bufs[i]!;
        assert.ok(v.offs[i]! >= 0 && v.offs[i]! + v.lens[i]! <= buf.length, 'segment inside its region');
      }
    }
  }
  assert.ok(errors > 100 && ok > 10, `errors ${errors}, ok ${ok}`);
});
