// XXH3-64 kernel: bit-exact with xxHash (hash-wasm's XXH3 and published values) and with the reference.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createXXHash3 } from 'hash-wasm';
import { xxh3, allocBuffer, kernelImpl } from '../../wasm/index.js';
import * as ref from '../../wasm/src/reference/xxh3.js';

function randomBytes(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed | 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

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
