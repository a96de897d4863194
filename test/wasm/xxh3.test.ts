// XXH3-64 kernel: bit-exact with xxHash (hash-wasm's XXH3 and published values) and with the reference.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createXXHash3 } from 'hash-wasm';
import { xxh3, Xxh3Stream, allocBuffer, kernelImpl } from '../../wasm/index.js';
import * as ref from '../../wasm/src/reference/xxh3.js';
import { randomBytes } from './random.js';


/** XXH3-64 from hash-wasm (a C build of xxHash), as a bigint. */
async function trusted(): Promise<(data: Uint8Array, seed?: bigint) => bigint> {
  const hashers = new Map<bigint, Awaited<ReturnType<typeof createXXHash3>>>();
  for (const s of [0n, 1n, 0x9e3779b97f4a7c15n]) {
    hashers.set(s, await createXXHash3(Number(s & 0xffffffffn), Number(s >> 32n)));
  }
  return (data, seed = 0n) => {
    const h = hashers.get(seed)!;
    h.init();
    h.update(data);
    return BigInt('0x' + h.digest());
  };
}

test('xxh3: published values', () => {
  assert.equal(xxh3(new Uint8Array(0)), 0x2d06800538d394c2n); // XXH3_64bits("", 0)
  assert.equal(ref.xxh3(new Uint8Array(0)), 0x2d06800538d394c2n);
});

test(`xxh3: ${kernelImpl()} is bit-exact with xxHash for every length class and seed`, async () => {
  const xxhash = await trusted();
  const lengths = [...Array.from({ length: 260 }, (_, i) => i), 1023, 1024, 1025, 2047, 2048, 4095, 4096, 65536 + 3];
  for (const seed of [0n, 1n, 0x9e3779b97f4a7c15n]) {
    for (const len of lengths) {
      const data = randomBytes(len, len * 3 + 1);
      assert.equal(xxh3(data, seed), xxhash(data, seed), `len ${len} seed ${seed}`);
    }
  }
});

test('xxh3: matches the reference at all alignments, in and out of wasm memory', () => {
  for (const len of [0, 1, 15, 16, 4095, 4096, (1 << 20) + 3]) {
    const data = randomBytes(len + 16, len + 5);
    const buf = allocBuffer(len + 16);
    buf.bytes.set(data);
    const aligns = len > 5000 ? [0, 3] : Array.from({ length: 16 }, (_, i) => i);
    for (const a of aligns) {
      const expected = ref.xxh3(data.subarray(a, a + len));
      assert.equal(xxh3(data.subarray(a, a + len)), expected, `plain len ${len} align ${a}`);
      assert.equal(xxh3(buf.bytes.subarray(a, a + len)), expected, `wasm len ${len} align ${a}`);
    }
    buf.release();
  }
});

test('xxh3: inputs larger than the staging area hash the same as in place', async () => {
  const xxhash = await trusted();
  for (const len of [(1 << 20) + 1, (1 << 20) + 64, (3 << 20) + 17]) {
    const data = randomBytes(len, 11);
    const buf = allocBuffer(len);
    buf.bytes.set(data);
    const expected = xxhash(data);
    assert.equal(xxh3(data), expected, `plain ${len}`);
    assert.equal(xxh3(buf.bytes), expected, `wasm ${len}`);
    buf.release();
  }
});

test('xxh3: a stream fed in pieces equals the one-shot hash', async () => {
  const xxhash = await trusted();
  const r = (() => { let x = 12345; return (n: number) => { x ^= x << 13; x ^= x >>> 17; x ^= x << 5; return (x >>> 0) % n; }; })();
  const hasher = new Xxh3Stream();
  const buf = allocBuffer(3 << 20);
  for (const len of [0, 1, 64, 240, 241, 1023, 1024, 1025, 1088, 2048, 2049, 5000, (1 << 20) + 3, (2 << 20) + 100]) {
    for (const seed of [0n, 0x9e3779b97f4a7c15n]) {
      const data = randomBytes(len, len + 3);
      const inWasm = buf.bytes.subarray(7, 7 + len);
      inWasm.set(data);
      for (const pieces of ['one', 'bytes', 'random', 'blocks'] as const) {
        if (len > 5000 && pieces !== 'random' && pieces !== 'blocks') continue;
        hasher.reset(seed);
        let off = 0;
        let k = 0;
        while (off < len || (len === 0 && k === 0)) {
          const step = pieces === 'one' ? len : pieces === 'bytes' ? 1 : pieces === 'blocks' ? 1024 : 1 + r(3000);
          const src = k++ % 2 === 0 ? data : inWasm; // alternate plain and in-wasm pieces
          hasher.update(src.subarray(off, Math.min(len, off + step)));
          off += step;
        }
        const expected = xxhash(data, seed);
        assert.equal(hasher.digest(), expected, `len ${len} seed ${seed} ${pieces}`);
        assert.equal(hasher.digest(), expected, 'digest leaves the state unchanged');
      }
    }
  }
  // Going on after a digest.
  const a = randomBytes(3000, 1);
  const b = randomBytes(2000, 2);
  hasher.reset().update(a);
  hasher.digest();
  hasher.update(b);
  const ab = new Uint8Array(5000);
  ab.set(a);
  ab.set(b, 3000);
  assert.equal(hasher.digest(), xxh3(ab));
  hasher.dispose();
  assert.throws(() => hasher.update(a), /dispose/);
  buf.release();
});
