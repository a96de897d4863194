// Parity kernels: XOR of N sources and RAID-6 P+Q generation and recovery, wasm vs the reference.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { xorInto, raid6GenPQ, raid6Recover, allocBuffer, reserveKernelMemory, kernelImpl, type KernelBuffer } from '../../wasm/index.js';
import * as ref from '../../wasm/src/reference/parity.js';
import { randomBytes } from './random.js';

// Room for every buffer these tests allocate, so no allocation grows memory and detaches a view.
reserveKernelMemory(96 << 20);


const LENGTHS = [0, 1, 15, 16, 31, 33, 4095, 4096, 8192 + 5];

/** Copies `src` into wasm memory at byte offset `align`, keeping the buffer for release. */
function inWasm(src: Uint8Array, align: number, keep: KernelBuffer[]): Uint8Array {
  const b = allocBuffer(src.length + align);
  keep.push(b);
  const v = b.bytes.subarray(align, align + src.length);
  v.set(src);
  return v;
}

test(`parity: ${kernelImpl()} XOR of 1..9 sources matches the reference`, () => {
  for (const len of LENGTHS) {
    for (let n = 1; n <= 9; n++) {
      const srcs = Array.from({ length: n }, (_, i) => randomBytes(len, 100 * n + i + len));
      const expected = new Uint8Array(len);
      ref.xorInto(expected, srcs);
      const plain = new Uint8Array(len);
      xorInto(plain, srcs);
      assert.deepEqual(plain, expected, `plain n ${n} len ${len}`);
      const keep: KernelBuffer[] = [];
      const dst = inWasm(new Uint8Array(len), 5, keep);
      xorInto(dst, srcs.map((s, i) => (i % 2 ? inWasm(s, i, keep) : s)));
      assert.deepEqual(dst, expected, `mixed n ${n} len ${len}`);
      keep.forEach((b) => b.release());
    }
  }
});

test('parity: 1 MiB + 3 and every alignment match the reference', () => {
  for (const [len, aligns] of [[(1 << 20) + 3, [0, 5]], [4096 + 1, Array.from({ length: 16 }, (_, i) => i)]] as const) {
    const data = Array.from({ length: 4 }, (_, i) => randomBytes(len, i + 1000 + len));
    const ex = new Uint8Array(len);
    const ep = new Uint8Array(len);
    const eq = new Uint8Array(len);
    ref.xorInto(ex, data);
    ref.raid6GenPQ(data, ep, eq, len);
    for (const a of aligns) {
      const keep: KernelBuffer[] = [];
      const srcs = data.map((d, i) => (i === 2 ? d : inWasm(d, (a + i) % 16, keep)));
      const x = inWasm(new Uint8Array(len), a, keep);
      const p = inWasm(new Uint8Array(len), (a + 7) % 16, keep);
      const q = new Uint8Array(len + 16).subarray(a, a + len);
      xorInto(x, srcs);
      raid6GenPQ(srcs, p, q);
      assert.deepEqual(x, ex, `xor len ${len} align ${a}`);
      assert.deepEqual(p, ep, `P len ${len} align ${a}`);
      assert.deepEqual(q, eq, `Q len ${len} align ${a}`);
      keep.forEach((b) => b.release());
    }
  }
});

test('parity: XOR rebuilds one missing block from parity and survivors, 1 MiB + 3', () => {
  const len = (1 << 20) + 3;
  const data = Array.from({ length: 4 }, (_, i) => randomBytes(len, i + 1));
  const p = new Uint8Array(len);
  xorInto(p, data);
  const rebuilt = new Uint8Array(len);
  xorInto(rebuilt, [p, data[0]!, data[1]!, data[3]!]);
  assert.deepEqual(rebuilt, data[2]);
});

test('parity: RAID-6 P and Q match the reference (generator 2, polynomial 0x11d)', () => {
  // One data block: P = Q = D0. Two: Q = D0 ^ 2 * D1.
  const d0 = Uint8Array.from([1, 0x80, 0xff, 0]);
  const d1 = Uint8Array.from([1, 0x80, 0xff, 3]);
  const p = new Uint8Array(4);
  const q = new Uint8Array(4);
  raid6GenPQ([d0], p, q);
  assert.deepEqual([...p], [...d0]);
  assert.deepEqual([...q], [...d0]);
  raid6GenPQ([d0, d1], p, q);
  assert.deepEqual([...q], [1 ^ 2, 0x80 ^ 0x1d, 0xff ^ 0xe3, 6]);
  for (const len of LENGTHS) {
    for (const n of [1, 2, 3, 4, 7]) {
      const data = Array.from({ length: n }, (_, i) => randomBytes(len, 7 * n + i + len));
      const ep = new Uint8Array(len);
      const eq = new Uint8Array(len);
      ref.raid6GenPQ(data, ep, eq, len);
      const keep: KernelBuffer[] = [];
      const gp = inWasm(new Uint8Array(len), 0, keep);
      const gq = new Uint8Array(len);
      raid6GenPQ(data.map((d, i) => (i % 2 ? d : inWasm(d, i + 1, keep))), gp, gq);
      assert.deepEqual(gp, ep, `P n ${n} len ${len}`);
      assert.deepEqual(gq, eq, `Q n ${n} len ${len}`);
      keep.forEach((b) => b.release());
    }
  }
});

test('parity: RAID-6 recovers every single and double failure', () => {
  for (const n of [1, 2, 4, 5]) {
    for (const len of [1, 33, 4096 + 7]) {
      const data = Array.from({ length: n }, (_, i) => randomBytes(len, 31 * n + i + len));
      const p = new Uint8Array(len);
      const q = new Uint8Array(len);
      raid6GenPQ(data, p, q);
      const good = [...data, p, q];
      const failures: number[][] = [];
      for (let x = 0; x < n + 2; x++) {
        failures.push([x]);
        for (let y = x + 1; y < n + 2; y++) failures.push([y, x]);
      }
      for (const failed of failures) {
        for (const where of ['plain', 'wasm'] as const) {
          const keep: KernelBuffer[] = [];
          const stripe = good.map((b, i) => (where === 'wasm' ? inWasm(b, i % 4, keep) : b.slice()));
          for (const f of failed) stripe[f]!.fill(0xa5);
          raid6Recover(stripe, failed);
          stripe.forEach((b, i) => assert.deepEqual(b, good[i], `${where} n ${n} len ${len} failed ${failed} block ${i}`));
          keep.forEach((b) => b.release());
        }
      }
    }
  }
});

test('parity: RAID-6 recovery on the reference agrees with the façade', () => {
  const n = 4;
  const len = 1000;
  const data = Array.from({ length: n }, (_, i) => randomBytes(len, i + 77));
  const p = new Uint8Array(len);
  const q = new Uint8Array(len);
  ref.raid6GenPQ(data, p, q, len);
  const a = [...data, p, q].map((b) => b.slice());
  const b = [...data, p, q].map((x) => x.slice());
  a[1]!.fill(0); a[3]!.fill(0); b[1]!.fill(0); b[3]!.fill(0);
  raid6Recover(a, [1, 3]);
  ref.raid6Recover(b, [1, 3]);
  assert.deepEqual(a, b);
  assert.deepEqual(a[1], data[1]);
  assert.throws(() => raid6Recover(a, [0, 1, 2]), RangeError);
});
