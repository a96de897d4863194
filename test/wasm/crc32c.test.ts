// CRC32C kernel: known vectors (RFC 3720 B.4), and wasm vs the TypeScript reference at every alignment.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { crc32c as nodeRsCrc32c } from '@node-rs/crc32';
import { crc32c, allocBuffer, kernelImpl } from '../../wasm/index.js';
import * as ref from '../../wasm/src/reference/crc32c.js';
import { randomBytes } from './random.js';


const LENGTHS = [0, 1, 15, 16, 17, 1023, 1024, 1025, 2047, 2048, 4095, 4096, 65536 + 7, (1 << 20) + 3];

test('crc32c: known vectors', () => {
  const ascii = new TextEncoder().encode('123456789');
  assert.equal(crc32c(ascii), 0xe3069283);
  assert.equal(crc32c(new Uint8Array(0)), 0);
  assert.equal(crc32c(new Uint8Array(32)), 0x8a9136aa);
  assert.equal(crc32c(new Uint8Array(32).fill(0xff)), 0x62a8ab43);
  assert.equal(crc32c(Uint8Array.from({ length: 32 }, (_, i) => i)), 0x46dd794e);
  assert.equal(crc32c(Uint8Array.from({ length: 32 }, (_, i) => 31 - i)), 0x113fdb5c);
  assert.equal(ref.crc32c(ascii), 0xe3069283);
});

test(`crc32c: ${kernelImpl()} matches the reference at all lengths and alignments`, () => {
  for (const len of LENGTHS) {
    const aligns = len > 70000 ? [0, 1, 3, 13] : Array.from({ length: 16 }, (_, i) => i);
    const data = randomBytes(len + 16, len + 1);
    for (const a of aligns) {
      const view = data.subarray(a, a + len);
      assert.equal(crc32c(view), ref.crc32c(view), `len ${len} align ${a}`);
    }
  }
});

test('crc32c: buffers in wasm memory give the same result as plain arrays', () => {
  for (const len of LENGTHS) {
    const data = randomBytes(len, 7 * len + 3);
    const buf = allocBuffer(len + 16);
    for (const a of [0, 1, 7, 15]) {
      const view = buf.bytes.subarray(a, a + len);
      view.set(data);
      assert.equal(crc32c(view), ref.crc32c(data), `len ${len} align ${a}`);
    }
    buf.release();
  }
});

test('crc32c: continuing from a previous CRC equals the CRC of the concatenation', () => {
  const data = randomBytes(9000, 99);
  for (const cut of [0, 1, 16, 1000, 1024, 4096, 8999, 9000]) {
    assert.equal(crc32c(data.subarray(cut), crc32c(data.subarray(0, cut))), crc32c(data), `cut ${cut}`);
  }
  assert.equal(crc32c(data, 0x12345678), ref.crc32c(data, 0x12345678));
});

test('crc32c: agrees with @node-rs/crc32 on random data', () => {
  for (const len of [5, 4096, 100_003]) {
    const data = randomBytes(len, len);
    assert.equal(crc32c(data), nodeRsCrc32c(Buffer.from(data)) >>> 0);
  }
});
