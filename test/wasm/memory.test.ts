// Kernel buffers in wasm memory: alignment, zero fill, views rebuilt after growth, reuse, slabs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { allocBuffer, Slab, crc32c, wasmDisabled } from '../../wasm/index.js';
import { kernelModule } from '../../wasm/src/memory.js';

test('memory: buffers are 64-byte aligned, zero-filled and in wasm memory unless disabled', () => {
  const a = allocBuffer(100);
  const b = allocBuffer(1);
  assert.equal(a.bytes.length, 100);
  assert.ok(a.bytes.every((x) => x === 0));
  assert.equal(a.inWasmMemory, !wasmDisabled);
  if (!wasmDisabled) {
    assert.equal(a.byteOffset % 64, 0);
    assert.equal(b.byteOffset % 64, 0);
    assert.ok(b.byteOffset >= a.byteOffset + 100 || b.byteOffset + 1 <= a.byteOffset);
  }
  a.release();
  b.release();
  assert.throws(() => a.bytes, /after release/);
});

test('memory: views are rebuilt when memory grows, contents kept', () => {
  const a = allocBuffer(4096);
  a.bytes.fill(7);
  const crc = crc32c(a.bytes);
  const big = allocBuffer(64 << 20); // forces growth
  assert.equal(a.bytes.length, 4096);
  assert.ok(a.bytes.every((x) => x === 7));
  assert.equal(crc32c(a.bytes), crc);
  big.bytes[big.length - 1] = 1;
  big.release();
  a.release();
});

test('memory: released space is reused and coalesced', () => {
  const mod = kernelModule();
  const before = mod?.allocatedBytes ?? 0;
  const bufs = Array.from({ length: 10 }, (_, i) => allocBuffer(1000 * (i + 1)));
  for (const b of bufs.filter((_, i) => i % 2 === 0)) b.release();
  for (const b of bufs.filter((_, i) => i % 2 === 1)) b.release();
  assert.equal(mod?.allocatedBytes ?? 0, before);
  if (mod) {
    const again = allocBuffer(50_000);
    assert.ok(again.byteOffset <= Math.max(...bufs.map((b) => b.byteOffset)), 'reuses the freed range');
    again.release();
  }
});

test('memory: a slab hands out fixed I/O buffers and takes them back', () => {
  const slab = new Slab(4096, 3);
  const a = slab.acquire()!;
  const b = slab.acquire()!;
  const c = slab.acquire()!;
  assert.equal(slab.acquire(), null);
  assert.equal(slab.available, 0);
  a.bytes.fill(1);
  b.bytes.fill(2);
  c.bytes.fill(3);
  assert.ok(a.bytes.every((x) => x === 1) && c.bytes.every((x) => x === 3));
  assert.equal(a.bytes.length, 4096);
  if (!wasmDisabled) assert.equal(b.byteOffset - a.byteOffset, 4096);
  b.release();
  assert.equal(slab.available, 1);
  const again = slab.acquire()!;
  assert.ok(again.bytes.every((x) => x === 2));
  again.release();
  a.release();
  c.release();
  assert.equal(slab.available, 3);
  slab.destroy();
});
