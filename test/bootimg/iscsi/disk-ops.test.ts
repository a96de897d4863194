// Tests of the DiskOpRunner: every DiskOp kind on MemoryBackend, FileBackend and the io_uring back-end, the write range lock
// (COMPARE AND WRITE atomic against overlapping writes) on a back-end that completes later, and the run() path into ConnectionState.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import type { AsyncBackend, Backend, BackendInfo, Completion } from '../../../engine/backend.js';
import { FileBackend } from '../../../engine/file-backend.js';
import { copyFromVector, copyToVector, type IoVector } from '../../../engine/iovec.js';
import { MemoryBackend } from '../../../engine/memory-backend.js';
import { UringFileBackend } from '../../../engine/uring-file-backend.js';
import { Opcode, ScsiStatus } from '../../../bootimg/iscsi/constants.js';
import type { DiskOp, DiskOpResult } from '../../../bootimg/iscsi/connection-state.js';
import { CHUNK_BYTES, DiskOpRunner, RangeLock } from '../../../bootimg/iscsi/disk-ops.js';
import { Initiator, makeTarget, one, out, senseOf } from './connection-harness.js';

const BLOCKS = 8192; // 4 MiB of 512-byte blocks: WRITE SAME of the whole disk takes several CHUNK_BYTES pieces
const base = { itt: 1, target: 'iqn.2026-12.org.twindisk:r0' };

function tempImage(bytes: number): string {
  const img = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'twindisk-diskops-')), 'd.img');
  fs.writeFileSync(img, Buffer.alloc(bytes));
  return img;
}

/** Runs `op` to its end (draining an AsyncBackend) and returns its result. */
function exec(runner: DiskOpRunner, op: DiskOp): DiskOpResult {
  let result: DiskOpResult | undefined;
  runner.execute(op, (r) => { result = r; });
  runner.kick();
  const be = runner.backend as Partial<AsyncBackend>;
  while (result === undefined && be.waitOne && be.inFlight!() > 0) be.waitOne();
  assert.ok(result !== undefined, `${op.kind} did not complete`);
  return result;
}

function filled(n: number, f: (i: number) => number): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => f(i) & 0xff);
}

function miscompareOffset(r: DiskOpResult): number {
  assert.ok(typeof r === 'object' && !(r instanceof Uint8Array) && !(r instanceof Error), `expected a CHECK CONDITION, got ${String(r)}`);
  assert.deepEqual([r.condition.key, r.condition.asc], [0xe, 0x1d]);
  return Number(r.condition.information);
}

const backends: [string, () => Backend][] = [
  ['MemoryBackend', () => new MemoryBackend({ memory: MemoryBackend.allocate(BLOCKS * 512) })],
  ['FileBackend', () => new FileBackend({ path: tempImage(BLOCKS * 512) })],
  ['UringFileBackend (async)', () => new UringFileBackend({ path: tempImage(BLOCKS * 512), depth: 8 })],
];

for (const [name, make] of backends) {
  test(`${name}: write, read back, sync; errors become Error`, () => {
    const runner = new DiskOpRunner(make());
    const data = filled(4 * 512, (i) => i * 3 + 1);
    assert.equal(exec(runner, { kind: 'write', ...base, lba: 10n, blocks: 4, data, fua: true }), 'ok');
    assert.deepEqual(exec(runner, { kind: 'read', ...base, lba: 10n, blocks: 4, fua: false }), data);
    assert.equal(exec(runner, { kind: 'sync', ...base }), 'ok');
    assert.ok(exec(runner, { kind: 'read', ...base, lba: BigInt(BLOCKS), blocks: 1, fua: false }) instanceof Error);
    runner.backend.close();
  });

  test(`${name}: WRITE SAME in pieces over the whole disk; a zero pattern; trims that zero`, () => {
    const runner = new DiskOpRunner(make());
    const pattern = filled(512, (i) => i + 7);
    assert.ok(BLOCKS * 512 > 2 * CHUNK_BYTES);
    assert.equal(exec(runner, { kind: 'write-same', ...base, lba: 0n, blocks: BLOCKS, pattern }), 'ok');
    const all = exec(runner, { kind: 'read', ...base, lba: 0n, blocks: BLOCKS, fua: false }) as Uint8Array;
    for (let b = 0; b < BLOCKS; b += 997) assert.deepEqual(all.subarray(b * 512, b * 512 + 512), pattern, `block ${b}`);
    assert.deepEqual(all.subarray((BLOCKS - 1) * 512), pattern);
    assert.equal(exec(runner, { kind: 'write-same', ...base, lba: 5n, blocks: 3, pattern: new Uint8Array(512) }), 'ok');
    const z = exec(runner, { kind: 'read', ...base, lba: 4n, blocks: 5, fua: false }) as Uint8Array;
    assert.deepEqual([z.subarray(0, 512), z.subarray(512, 2048).every((x) => x === 0), z.subarray(2048)], [pattern, true, pattern]);
    assert.equal(exec(runner, { kind: 'trim', ...base, ranges: [{ lba: 100n, blocks: 2 }, { lba: 300n, blocks: 1 }], zero: true }), 'ok');
    const t = exec(runner, { kind: 'read', ...base, lba: 100n, blocks: 3, fua: false }) as Uint8Array;
    assert.ok(t.subarray(0, 1024).every((x) => x === 0));
    assert.deepEqual(t.subarray(1024), pattern);
    assert.ok((exec(runner, { kind: 'read', ...base, lba: 300n, blocks: 1, fua: false }) as Uint8Array).every((x) => x === 0));
    assert.equal(exec(runner, { kind: 'trim', ...base, ranges: [{ lba: 400n, blocks: 8 }], zero: false }), 'ok');
    runner.backend.close();
  });

  test(`${name}: VERIFY compares data, one block against each, or only reads; the miscompare offset is from the range start`, () => {
    const runner = new DiskOpRunner(make());
    const data = filled(3 * 512, (i) => i ^ 0x5a);
    exec(runner, { kind: 'write', ...base, lba: 20n, blocks: 3, data, fua: false });
    assert.equal(exec(runner, { kind: 'compare', ...base, lba: 20n, blocks: 3, expected: data.slice() }), 'ok');
    const wrong = data.slice();
    wrong[1100] = wrong[1100]! ^ 1;
    assert.equal(miscompareOffset(exec(runner, { kind: 'compare', ...base, lba: 20n, blocks: 3, expected: wrong })), 1100);
    assert.equal(exec(runner, { kind: 'compare', ...base, lba: 20n, blocks: 3, expected: null }), 'ok');
    const block = filled(512, (i) => i * 5);
    exec(runner, { kind: 'write-same', ...base, lba: 40n, blocks: 4, pattern: block });
    assert.equal(exec(runner, { kind: 'compare', ...base, lba: 40n, blocks: 4, expected: block }), 'ok');
    assert.equal(miscompareOffset(exec(runner, { kind: 'compare', ...base, lba: 39n, blocks: 4, expected: block })), 1);
    assert.ok(exec(runner, { kind: 'compare', ...base, lba: BigInt(BLOCKS - 1), blocks: 2, expected: null }) instanceof Error);
    runner.backend.close();
  });

  test(`${name}: COMPARE AND WRITE writes only when the verify data matches`, () => {
    const runner = new DiskOpRunner(make());
    const before = filled(1024, (i) => i);
    const after = filled(1024, (i) => 255 - i);
    exec(runner, { kind: 'write', ...base, lba: 50n, blocks: 2, data: before, fua: false });
    const verify = before.slice();
    verify[600] = 0xee;
    const r = exec(runner, { kind: 'compare-and-write', ...base, lba: 50n, blocks: 2, verify, write: after, fua: false });
    assert.equal(miscompareOffset(r), 600);
    assert.deepEqual(exec(runner, { kind: 'read', ...base, lba: 50n, blocks: 2, fua: false }), before);
    assert.equal(exec(runner, { kind: 'compare-and-write', ...base, lba: 50n, blocks: 2, verify: before, write: after, fua: true }), 'ok');
    assert.deepEqual(exec(runner, { kind: 'read', ...base, lba: 50n, blocks: 2, fua: false }), after);
    assert.deepEqual(runner.lockCounts, { held: 0, waiting: 0 });
    runner.backend.close();
  });

  test(`${name}: WRITE AND VERIFY writes then reads back; ORWRITE ORs the data into the blocks`, () => {
    const runner = new DiskOpRunner(make());
    const data = filled(2 * 512, (i) => i * 7 + 3);
    assert.equal(exec(runner, { kind: 'write-verify', ...base, lba: 60n, blocks: 2, data, bytchk: true }), 'ok');
    assert.deepEqual(exec(runner, { kind: 'read', ...base, lba: 60n, blocks: 2, fua: false }), data);
    assert.equal(exec(runner, { kind: 'write-verify', ...base, lba: 62n, blocks: 1, data: data.subarray(0, 512), bytchk: false }), 'ok');
    assert.ok(exec(runner, { kind: 'write-verify', ...base, lba: BigInt(BLOCKS - 1), blocks: 2, data, bytchk: true }) instanceof Error);
    exec(runner, { kind: 'write', ...base, lba: 70n, blocks: 2, data: filled(1024, (i) => (i & 1 ? 0x0f : 0x00)), fua: false });
    assert.equal(exec(runner, { kind: 'or-write', ...base, lba: 70n, blocks: 2, data: filled(1024, () => 0xa0), fua: true }), 'ok');
    assert.deepEqual(exec(runner, { kind: 'read', ...base, lba: 70n, blocks: 2, fua: false }), filled(1024, (i) => (i & 1 ? 0xaf : 0xa0)));
    assert.deepEqual(runner.lockCounts, { held: 0, waiting: 0 });
    runner.backend.close();
  });
}

/** A memory disk whose operations complete only at poll(), in submission order; counts kicks. */
class LaterBackend implements AsyncBackend {
  readonly info: BackendInfo;
  readonly eventFd = -1;
  readonly mem: Uint8Array;
  private queue: (() => void)[] = [];
  submitted: string[] = [];
  kicks = 0;

  constructor(blocks: number) {
    this.mem = new Uint8Array(blocks * 512);
    this.info = { size: this.mem.length, blockSize: 512, readOnly: false, canFlush: true, canDiscard: true, canWriteZeroes: true, name: 'later' };
  }

  read(iov: IoVector, offset: number, done: Completion): void {
    this.submitted.push(`read ${offset / 512}`);
    this.queue.push(() => { copyToVector(this.mem, iov, 0, iov.bytes, offset); done.complete(0); });
  }
  write(iov: IoVector, offset: number, _fua: boolean, done: Completion): void {
    this.submitted.push(`write ${offset / 512}`);
    this.queue.push(() => { copyFromVector(iov, 0, this.mem, iov.bytes, offset); done.complete(0); });
  }
  flush(done: Completion): void { this.queue.push(() => done.complete(0)); }
  discard(offset: number, length: number, done: Completion): void { this.writeZeroes(offset, length, true, done); }
  writeZeroes(offset: number, length: number, _mayUnmap: boolean, done: Completion): void {
    this.submitted.push(`zero ${offset / 512}`);
    this.queue.push(() => { this.mem.fill(0, offset, offset + length); done.complete(0); });
  }
  close(): void {}
  kick(): void { this.kicks++; }
  /** Completes what is queued now (completions may queue more, for the next poll). */
  poll(): void {
    const q = this.queue;
    this.queue = [];
    for (const f of q) f();
  }
  inFlight(): number { return this.queue.length; }
  waitOne(): void { this.poll(); }
}

test('range lock: a write overlapping a COMPARE AND WRITE waits for it; a disjoint one does not; follow-ups are kicked by the runner', () => {
  const be = new LaterBackend(64);
  be.mem.fill(1, 0, 512);
  const runner = new DiskOpRunner(be);
  const results: string[] = [];
  const op = (o: DiskOp): void => runner.execute(o, (r) => results.push(`${o.kind}@${(o as { lba: bigint }).lba}: ${r instanceof Uint8Array ? 'data' : typeof r === 'string' ? r : 'check'}`));
  op({ kind: 'compare-and-write', ...base, lba: 0n, blocks: 1, verify: new Uint8Array(512).fill(1), write: new Uint8Array(512).fill(2), fua: false });
  op({ kind: 'write', ...base, lba: 0n, blocks: 1, data: new Uint8Array(512).fill(3), fua: false });
  op({ kind: 'write', ...base, lba: 8n, blocks: 1, data: new Uint8Array(512).fill(4), fua: false });
  runner.kick();
  assert.deepEqual(be.submitted, ['read 0', 'write 8']); // the overlapping write waits for the lock
  assert.deepEqual(runner.lockCounts, { held: 2, waiting: 1 });
  const kicks = be.kicks;
  be.poll(); // the read completes: CAW compares and submits its write from inside the completion
  assert.deepEqual(be.submitted, ['read 0', 'write 8', 'write 0']);
  assert.ok(be.kicks > kicks, 'a submission made in a completion is kicked');
  be.poll(); // CAW's write completes: the lock passes to the waiting write
  assert.deepEqual(be.submitted, ['read 0', 'write 8', 'write 0', 'write 0']);
  be.poll();
  assert.deepEqual(results, ['write@8: ok', 'compare-and-write@0: ok', 'write@0: ok']);
  assert.equal(be.mem[0], 3); // CAW's data first, then the write that waited
  assert.deepEqual(runner.lockCounts, { held: 0, waiting: 0 });
});

test('RangeLock: grants in arrival order among overlapping ranges; a later disjoint range may pass', () => {
  const l = new RangeLock();
  const got: string[] = [];
  l.acquire(0, 10, () => got.push('a'));
  l.acquire(5, 15, () => got.push('b'));
  l.acquire(12, 20, () => got.push('c')); // overlaps b (waiting): waits behind it
  l.acquire(30, 40, () => got.push('d'));
  assert.deepEqual(got, ['a', 'd']);
  l.release(0, 10);
  assert.deepEqual(got, ['a', 'd', 'b']);
  l.release(5, 15);
  assert.deepEqual(got, ['a', 'd', 'b', 'c']);
  assert.throws(() => l.release(0, 10));
});

test('run(): the op goes to the disk and its result through ConnectionState into the PDUs to send; an aborted op sends nothing', () => {
  const be = new MemoryBackend({ memory: MemoryBackend.allocate(2048 * 512) });
  const runner = new DiskOpRunner(be);
  const i = new Initiator(makeTarget());
  const steps: ReturnType<Initiator['send']>[] = [];
  const cdb = [0x2a, 0, 0, 0, 0, 9, 0, 0, 1, 0];
  const w = i.send(cdb, { write: true, edtl: 512, data: new Uint8Array(512).fill(9) });
  for (const op of w.ops) runner.run(op, i.c, (s) => steps.push(s));
  runner.kick();
  assert.equal(one(steps.pop()!, Opcode.ScsiResponse).status, ScsiStatus.Good);
  const caw = i.send([0x89, 0, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 1, 0, 0], { write: true, edtl: 1024, data: new Uint8Array(1024).fill(8) });
  for (const op of caw.ops) runner.run(op, i.c, (s) => steps.push(s));
  const m = one(steps.pop()!, Opcode.ScsiResponse);
  assert.deepEqual(senseOf(m.data), [0xe, 0x1d, 0x00]);
  // an op of an aborted task: its Step is empty
  const later = new LaterBackend(2048);
  const slow = new DiskOpRunner(later);
  const itt = 0x5150;
  const cmdSN = i.cmdSN;
  const r = i.send([0x28, 0, 0, 0, 0, 9, 0, 0, 1, 0], { read: true, edtl: 512, itt });
  for (const op of r.ops) slow.run(op, i.c, (s) => steps.push(s));
  one(i.c.receive(i.tmf(1, { ref: itt, refCmdSN: cmdSN })), Opcode.TaskMgmtResponse);
  later.poll();
  const s = steps.pop()!;
  assert.deepEqual([out(s).length, s.close], [0, null]);
});

test('WRITE AND VERIFY: written through (FUA), read back under the range lock; a changed byte is a MISCOMPARE with BYTCHK only', () => {
  class FuaBackend extends LaterBackend {
    fua: boolean[] = [];
    override write(iov: IoVector, offset: number, fua: boolean, done: Completion): void { this.fua.push(fua); super.write(iov, offset, fua, done); }
  }
  const be = new FuaBackend(64);
  const runner = new DiskOpRunner(be);
  const results: string[] = [];
  const op = (o: DiskOp): void => runner.execute(o, (r) => results.push(`${o.kind}: ${typeof r === 'string' ? r : r instanceof Uint8Array || r instanceof Error ? 'other' : `check ${r.condition.asc.toString(16)} at ${r.condition.information}`}`));
  const data = filled(1024, (i) => i + 1);
  op({ kind: 'write-verify', ...base, lba: 4n, blocks: 2, data, bytchk: true });
  op({ kind: 'write', ...base, lba: 5n, blocks: 1, data: new Uint8Array(512), fua: false });
  runner.kick();
  assert.deepEqual(be.submitted, ['write 4']);
  be.poll(); // the write is in: the read-back goes out, the overlapping write still waits
  assert.deepEqual(be.submitted, ['write 4', 'read 4']);
  be.mem[4 * 512 + 700] = 0; // the medium does not hold what was written
  be.poll();
  be.poll();
  assert.deepEqual(results, ['write-verify: check 1d at 700', 'write: ok']);
  assert.deepEqual(be.fua, [true, false]);
  // BYTCHK 0: the read-back only checks that the blocks can be read
  op({ kind: 'write-verify', ...base, lba: 4n, blocks: 2, data, bytchk: false });
  runner.kick();
  be.poll();
  be.mem[4 * 512 + 700] = 0;
  be.poll();
  assert.equal(results[2], 'write-verify: ok');
});

test('WRITE AND VERIFY and ORWRITE: a failed read is MEDIUM ERROR / UNRECOVERED READ ERROR at the first LBA', () => {
  class NoReads extends LaterBackend {
    override read(_iov: IoVector, _offset: number, done: Completion): void { done.complete(-5); }
  }
  const runner = new DiskOpRunner(new NoReads(16));
  for (const o of [
    { kind: 'write-verify', ...base, lba: 3n, blocks: 1, data: new Uint8Array(512), bytchk: true },
    { kind: 'or-write', ...base, lba: 3n, blocks: 1, data: new Uint8Array(512), fua: false },
  ] as DiskOp[]) {
    const r = exec(runner, o);
    assert.ok(typeof r === 'object' && 'condition' in r);
    assert.deepEqual([r.condition.key, r.condition.asc, r.condition.information], [0x3, 0x11, 3n]);
  }
  assert.deepEqual(runner.lockCounts, { held: 0, waiting: 0 });
});
