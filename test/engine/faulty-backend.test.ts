// Tests of the fault-injecting back-end: failures where and as often as asked, healing on rewrite, a vanished device, everything else passed through.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Backend } from '../../engine/backend.js';
import { FaultyBackend } from '../../engine/faulty-backend.js';
import { IoVector } from '../../engine/iovec.js';
import { MemoryBackend } from '../../engine/memory-backend.js';
import { EIO, ENODEV, ENOSPC } from '../../engine/os.js';

const SIZE = 1 << 20;

function vec(buf: Uint8Array): IoVector {
  const v = new IoVector(1);
  v.push(buf, 0, buf.length, 0);
  return v;
}

/** Runs one operation and returns its status (the memory back-end completes at once). */
function run(op: (done: { complete(s: number): void }) => void): number {
  let status: number | null = null;
  op({ complete: (s) => { status = s; } });
  assert.notEqual(status, null, 'completed');
  return status!;
}

const read = (b: Backend, off: number, len: number) => {
  const buf = new Uint8Array(len);
  return { status: run((d) => b.read(vec(buf), off, d)), buf };
};
const write = (b: Backend, off: number, len: number, fill: number) => run((d) => b.write(vec(new Uint8Array(len).fill(fill)), off, false, d));

test('a fault fails only the operations and ranges it names; the rest pass through to the back-end', () => {
  const f = new FaultyBackend(new MemoryBackend({ memory: MemoryBackend.allocate(SIZE) }));
  assert.equal(f.info.size, SIZE);
  assert.equal(write(f, 0, 8192, 7), 0);
  f.inject({ op: 'read', offset: 4096, length: 512 });
  assert.equal(read(f, 0, 4096).status, 0, 'before the bad range');
  assert.equal(read(f, 4096 + 512, 512).status, 0, 'after it');
  assert.equal(read(f, 4000, 200).status, -EIO, 'overlapping it');
  assert.equal(write(f, 4096, 512, 9), 0, 'a read fault lets writes through');
  f.inject({ op: 'write', offset: 0, length: SIZE, errno: ENOSPC });
  assert.equal(write(f, 100 * 512, 512, 1), -ENOSPC);
  assert.equal(run((d) => f.flush(d)), 0, 'flush is another operation');
  f.inject({ op: 'flush', offset: 0, length: 0 });
  assert.equal(run((d) => f.flush(d)), -EIO, 'a flush fault applies to every flush');
  assert.deepEqual(f.failed, { read: 1, write: 1, flush: 1, discard: 0 });
  f.clear();
  const back = read(f, 4096, 512);
  assert.equal(back.status, 0);
  assert.equal(back.buf[0], 9, 'the write that passed reached the back-end');
});

test('a fault can fail a few times and stop, or stay until the range is rewritten (a bad sector md repairs)', () => {
  const f = new FaultyBackend(new MemoryBackend({ memory: MemoryBackend.allocate(SIZE) }));
  f.inject({ op: 'read', offset: 0, length: 512, times: 2 });
  assert.equal(read(f, 0, 512).status, -EIO);
  assert.equal(read(f, 0, 512).status, -EIO);
  assert.equal(read(f, 0, 512).status, 0, 'used up');
  f.inject({ op: 'read', offset: 8192, length: 4096, healOnWrite: true });
  assert.equal(read(f, 8192, 512).status, -EIO);
  assert.equal(write(f, 8192, 512, 3), 0);
  assert.equal(read(f, 8192, 512).status, -EIO, 'a partial rewrite does not heal it');
  assert.equal(write(f, 8192, 4096, 4), 0);
  const healed = read(f, 8192, 4096);
  assert.equal(healed.status, 0, 'rewritten whole: healed');
  assert.equal(healed.buf[4095], 4);
  assert.equal(f.active.length, 0);
  assert.throws(() => f.inject({ op: 'read', offset: -1, length: 1 }), /non-negative/);
  assert.throws(() => f.inject({ op: 'read', offset: 0, length: 1, times: 0 }), /at least 1/);
});

test('a vanished member fails everything with ENODEV until it is brought back', () => {
  const f = new FaultyBackend(new MemoryBackend({ memory: MemoryBackend.allocate(SIZE) }));
  assert.equal(write(f, 0, 512, 5), 0);
  f.vanish();
  assert.equal(read(f, 0, 512).status, -ENODEV);
  assert.equal(write(f, 0, 512, 6), -ENODEV);
  assert.equal(run((d) => f.discard(0, 4096, d)), -ENODEV);
  assert.equal(run((d) => f.writeZeroes(0, 4096, false, d)), -ENODEV);
  f.clear();
  const r = read(f, 0, 512);
  assert.equal(r.status, 0);
  assert.equal(r.buf[0], 5, 'nothing written while it was gone');
});
