// Bitmap kernels: find next set/clear, count, set/clear ranges, OR and runs, wasm vs the reference.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  findNextSet, findNextClear, countSet, setRange, clearRange, orInto, setRuns, allocBuffer, reserveKernelMemory, kernelImpl,
} from '../../wasm/index.js';
import * as ref from '../../wasm/src/reference/bitmap.js';

// Room for every buffer these tests allocate, so no allocation grows memory and detaches a view.
reserveKernelMemory(96 << 20);

/** xorshift32 stream of integers in [0, n). */
function rng(seed: number): (n: number) => number {
  let x = seed | 1;
  return (n) => {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
    return (x >>> 0) % n;
  };
}

/** A bitmap of `nbytes` bytes with runs of set bits at density about `density`. */
function randomBitmap(nbytes: number, density: number, seed: number): Uint8Array {
  const r = rng(seed);
  const b = new Uint8Array(nbytes);
  const bits = nbytes * 8;
  const runs = Math.max(1, Math.floor((bits * density) / 40));
  for (let k = 0; k < runs && bits > 0; k++) {
    const start = r(bits);
    ref.setRange(b, start, Math.min(bits, start + 1 + r(80)));
  }
  return b;
}

let nextAlign = 0;

/** The same bitmap as a plain array and as a view of a wasm buffer, at byte offsets 0..15 in turn. */
function twoCopies(src: Uint8Array): { plain: Uint8Array; wasm: Uint8Array; release: () => void } {
  const align = nextAlign++ % 16;
  const buf = allocBuffer(src.length + align);
  const wasm = buf.bytes.subarray(align, align + src.length);
  wasm.set(src);
  return { plain: src.slice(), wasm, release: () => buf.release() };
}

const SIZES = [0, 1, 7, 8, 9, 15, 16, 63, 64, 65, 200, 4095, 4096, 70001, (1 << 20) + 3];

test(`bitmap: ${kernelImpl()} find/count match the reference on random maps and ranges`, () => {
  const r = rng(5);
  for (const nbytes of SIZES) {
    for (const density of [0, 0.001, 0.3, 0.97, 1]) {
      const base = density === 1 ? new Uint8Array(nbytes).fill(0xff) : randomBitmap(nbytes, density, nbytes + 17);
      const { plain, wasm, release } = twoCopies(base);
      const bits = nbytes * 8;
      for (let k = 0; k < 40; k++) {
        const from = k === 0 ? 0 : r(bits + 1);
        const end = k === 0 ? bits : from + r(bits - from + 1);
        const refSet = ref.findNextSet(base, from, end);
        const refClear = ref.findNextClear(base, from, end);
        const refCount = ref.countSet(base, from, end);
        for (const m of [plain, wasm]) {
          assert.equal(findNextSet(m, from, end), refSet, `set ${nbytes} ${density} [${from},${end})`);
          assert.equal(findNextClear(m, from, end), refClear, `clear ${nbytes} ${density} [${from},${end})`);
          assert.equal(countSet(m, from, end), refCount, `count ${nbytes} ${density} [${from},${end})`);
        }
      }
      release();
    }
  }
});

test('bitmap: set and clear ranges match the reference', () => {
  const r = rng(9);
  for (const nbytes of SIZES.filter((n) => n > 0)) {
    const base = randomBitmap(nbytes, 0.3, nbytes);
    const expected = base.slice();
    const { plain, wasm, release } = twoCopies(base);
    const bits = nbytes * 8;
    for (let k = 0; k < 60; k++) {
      const from = r(bits + 1);
      const end = from + r(Math.min(bits - from, k % 3 === 0 ? 20 : bits) + 1);
      const op = k % 2 === 0 ? 'set' : 'clear';
      (op === 'set' ? ref.setRange : ref.clearRange)(expected, from, end);
      for (const m of [plain, wasm]) (op === 'set' ? setRange : clearRange)(m, from, end);
      assert.deepEqual(plain, expected, `plain ${op} ${nbytes} [${from},${end})`);
      assert.deepEqual(wasm, expected, `wasm ${op} ${nbytes} [${from},${end})`);
    }
    release();
  }
});

test('bitmap: orInto and runs of set bits', () => {
  for (const nbytes of [1, 15, 64, 65, 1000, 70001]) {
    const a = randomBitmap(nbytes, 0.2, 1 + nbytes);
    const b = randomBitmap(nbytes, 0.2, 2 + nbytes);
    const expected = a.slice();
    ref.orInto(expected, b);
    const A = twoCopies(a);
    const B = twoCopies(b);
    orInto(A.plain, B.wasm);
    orInto(A.wasm, B.plain);
    assert.deepEqual(A.plain, expected);
    assert.deepEqual(A.wasm, expected);
    const runs = [...setRuns(A.wasm)];
    const rebuilt = new Uint8Array(nbytes);
    let prevEnd = -1;
    for (const run of runs) {
      assert.ok(run.start > prevEnd, 'runs are ordered and separated by a clear bit');
      assert.ok(run.end > run.start);
      ref.setRange(rebuilt, run.start, run.end);
      prevEnd = run.end;
    }
    assert.deepEqual(rebuilt, expected);
    assert.deepEqual([...setRuns(A.plain, 5, nbytes * 8 - 3)], [...setRuns(expected, 5, nbytes * 8 - 3)]);
    A.release();
    B.release();
  }
  const m = new Uint8Array(4);
  setRange(m, 3, 9);
  setRange(m, 20, 32);
  assert.deepEqual([...setRuns(m)], [{ start: 3, end: 9 }, { start: 20, end: 32 }]);
  assert.deepEqual([...setRuns(m, 4, 25)], [{ start: 4, end: 9 }, { start: 20, end: 25 }]);
});

test('bitmap: runs across kernel batches (512 runs per call) and up to the end of the map', () => {
  for (const nbytes of [127, 128, 129, 256, 1000]) {
    const src = new Uint8Array(nbytes).fill(0x55); // one run per even bit
    src[nbytes - 1] = 0xd5; // the last run ends at the map's end
    const { plain, wasm, release } = twoCopies(src);
    const expected: { start: number; end: number }[] = [];
    for (let b = 0; b < nbytes * 8; b += 2) expected.push({ start: b, end: b + 1 });
    expected.pop();
    expected.push({ start: nbytes * 8 - 2, end: nbytes * 8 });
    assert.deepEqual([...setRuns(wasm)], expected, `wasm ${nbytes}`);
    assert.deepEqual([...setRuns(plain)], expected, `plain ${nbytes}`);
    assert.deepEqual([...setRuns(wasm, 3, nbytes * 8 - 1)], [...setRuns(plain, 3, nbytes * 8 - 1)]);
    release();
  }
});

test('bitmap: a 32 MiB write-intent bitmap with one bit set at the end', () => {
  const nbytes = 32 << 20;
  const buf = allocBuffer(nbytes);
  const bits = nbytes * 8;
  setRange(buf.bytes, bits - 1, bits);
  assert.equal(findNextSet(buf.bytes), bits - 1);
  assert.equal(countSet(buf.bytes), 1);
  assert.equal(findNextClear(buf.bytes, bits - 1), -1);
  assert.deepEqual([...setRuns(buf.bytes)], [{ start: bits - 1, end: bits }]);
  const plain = new Uint8Array(3 << 20); // larger than the staging area: scanned in chunks
  plain[plain.length - 1] = 0x80;
  assert.equal(findNextSet(plain, 1), plain.length * 8 - 1);
  assert.equal(countSet(plain), 1);
  buf.release();
});

test('bitmap: ranges outside the map are refused', () => {
  const m = new Uint8Array(2);
  assert.throws(() => findNextSet(m, 0, 17), RangeError);
  assert.throws(() => setRange(m, -1, 3), RangeError);
  assert.equal(findNextSet(m, 16, 16), -1);
  assert.equal(countSet(m, 9, 3), 0);
});
