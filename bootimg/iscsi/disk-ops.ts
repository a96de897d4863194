// Runs the iSCSI target's disk operations (DiskOp) on an engine Backend and reports each result to the connection that asked.
//
// Usage (the portal):
//
//   const runner = new DiskOpRunner(backend);            // one per target, shared by all its connections
//   for (const op of step.ops) runner.run(op, state, (next) => send(next));
//   runner.kick();                                       // ends the batch (AsyncBackend.kick)
//
// run() starts `op` on the backend; when it ends, the runner calls state.completeOp(op, result) and hands the Step to
// `done`: send its PDUs, then close if `close` is set. The Step of an aborted task (or a closed connection) is empty.
// `done` may be called before run() returns (synchronous backends: FileBackend, MemoryBackend) or later, from inside the
// backend's poll() (an AsyncBackend, e.g. the replicated backend). The caller keeps polling an AsyncBackend as before;
// submissions the runner makes from inside a completion (the write of a COMPARE AND WRITE, the next piece of a WRITE SAME
// or VERIFY, an op waiting for the range lock) are kicked by the runner itself.
// execute(op, cb) is the same without a ConnectionState: cb gets the DiskOpResult.
//
// Writes (WRITE, WRITE SAME, UNMAP, COMPARE AND WRITE, WRITE AND VERIFY, ORWRITE) take an exclusive lock on their block
// range, granted in arrival order among overlapping ranges, so COMPARE AND WRITE's read, compare and write (and ORWRITE's
// read, OR and write, WRITE AND VERIFY's write and read-back) are atomic with respect to every other write made through
// this runner (SBC-3 5.3). Reads, VERIFY and SYNCHRONIZE CACHE take no lock.
// Memory per op is bounded: WRITE SAME and VERIFY go through pieces of at most CHUNK_BYTES; READ, WRITE and COMPARE AND
// WRITE hold one command's data (bounded by the VPD Block Limits the target reports).
import { isAsyncBackend, type Backend, type Completion, type IoStatus } from '../../engine/backend.js';
import { IoVector } from '../../engine/iovec.js';
import type { ConnectionState, DiskOp, DiskOpResult, Step } from './connection-state.js';
import { miscompareAt, readErrorAt, type CheckCondition } from './scsi.js';
import type { CompareAndWriteOp, CompareOp, OrWriteOp, TrimOp, WriteSameOp, WriteVerifyOp } from './tasks.js';

/** Largest piece WRITE SAME writes and VERIFY reads at a time. */
export const CHUNK_BYTES = 1 << 20;

/** Byte ranges [start, end) held exclusively, granted in arrival order among overlapping ones. */
export class RangeLock {
  private readonly held: { start: number; end: number }[] = [];
  private readonly waiting: { start: number; end: number; grant: () => void }[] = [];

  /** Calls `grant` once [start, end) overlaps no held range and no earlier waiter (possibly before returning). */
  acquire(start: number, end: number, grant: () => void): void {
    this.waiting.push({ start, end, grant });
    this.pump();
  }

  /** Releases a range `grant` was called for. */
  release(start: number, end: number): void {
    const i = this.held.findIndex((r) => r.start === start && r.end === end);
    if (i < 0) throw new Error(`RangeLock: release of [${start}, ${end}) not held`);
    this.held.splice(i, 1);
    this.pump();
  }

  /** Ranges held and waiting (for tests). */
  get counts(): { held: number; waiting: number } { return { held: this.held.length, waiting: this.waiting.length }; }

  private pump(): void {
    for (;;) {
      const i = this.waiting.findIndex((w, k) => !this.held.some((h) => overlap(h, w)) && !this.waiting.slice(0, k).some((e) => overlap(e, w)));
      if (i < 0) return;
      const [w] = this.waiting.splice(i, 1);
      this.held.push({ start: w!.start, end: w!.end });
      w!.grant(); // may release synchronously and pump again: the state is consistent here
    }
  }
}

function overlap(a: { start: number; end: number }, b: { start: number; end: number }): boolean {
  return a.start < b.end && b.start < a.end;
}

/** An errno status as the Error a ConnectionState turns into a MEDIUM ERROR. */
function ioError(what: string, st: IoStatus): Error {
  return new Error(`${what} failed: errno ${-st}`);
}

/** Offset of the first byte where `a` and `b` differ over `n` bytes, or -1. */
function firstDifference(a: Uint8Array, b: Uint8Array, n: number): number {
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return -1;
}

/**
 * Executes DiskOps on one Backend (see the top of this file). The backend's block size must be the ScsiDisk's; LBAs have
 * been checked against the disk by the state machine, and the backend checks again.
 */
export class DiskOpRunner {
  private readonly lock = new RangeLock();
  private depth = 0; // > 0 inside run()/execute(): the caller kicks; 0 inside a completion: the runner kicks

  constructor(readonly backend: Backend) {}

  /** Runs `op` and reports its result to `state` (completeOp); `done` gets the Step to send. */
  run(op: DiskOp, state: ConnectionState, done: (step: Step) => void): void {
    this.execute(op, (result) => {
      let step: Step;
      try {
        step = state.completeOp(op, result);
      } catch (e) {
        step = { pdus: [], ops: [], close: `disk op ${op.kind} not accepted by its connection: ${(e as Error).message}`, log: [] };
      }
      done(step);
    });
  }

  /** Runs `op` and gives its result to `cb` exactly once (possibly before returning). */
  execute(op: DiskOp, cb: (result: DiskOpResult) => void): void {
    let called = false;
    const once = (r: DiskOpResult): void => {
      if (called) return;
      called = true;
      cb(r);
    };
    this.depth++;
    try {
      this.dispatch(op, once);
    } catch (e) {
      once(e instanceof Error ? e : new Error(String(e)));
    } finally {
      this.depth--;
    }
  }

  /** Ends a batch: sends what was submitted since the last kick (AsyncBackend); nothing to do for synchronous backends. */
  kick(): void {
    if (isAsyncBackend(this.backend)) this.backend.kick();
  }

  /** Ranges held and waiting in the write lock (for tests and status). */
  get lockCounts(): { held: number; waiting: number } { return this.lock.counts; }

  private dispatch(op: DiskOp, cb: (r: DiskOpResult) => void): void {
    const bs = this.backend.info.blockSize;
    switch (op.kind) {
      case 'read': {
        // Not zeroed: the backend fills all of it or the read fails (and the buffer is dropped unsent).
        const raw = Buffer.allocUnsafe(op.blocks * bs);
        const buf = new Uint8Array(raw.buffer, raw.byteOffset, raw.length);
        this.read(buf, Number(op.lba) * bs, (st) => cb(st < 0 ? ioError('read', st) : buf));
        return;
      }
      case 'write':
        this.locked(op.lba, op.blocks, cb, (release) => {
          this.write(op.data, Number(op.lba) * bs, op.fua, (st) => release(st < 0 ? ioError('write', st) : 'ok'));
        });
        return;
      case 'sync':
        this.submit((c) => this.backend.flush(c), (st) => cb(st < 0 ? ioError('flush', st) : 'ok'));
        return;
      case 'trim': this.trim(op, cb); return;
      case 'write-same': this.locked(op.lba, op.blocks, cb, (release) => this.writeSame(op, release)); return;
      case 'compare': this.compare(op, cb); return;
      case 'compare-and-write': this.locked(op.lba, op.blocks, cb, (release) => this.compareAndWrite(op, release)); return;
      case 'write-verify': this.locked(op.lba, op.blocks, cb, (release) => this.writeAndVerify(op, release)); return;
      case 'or-write': this.locked(op.lba, op.blocks, cb, (release) => this.orWrite(op, release)); return;
    }
  }

  /** Runs `body` holding the write lock on [lba, lba + blocks); `body` ends by calling release(result). */
  private locked(lba: bigint, blocks: number, cb: (r: DiskOpResult) => void, body: (release: (r: DiskOpResult) => void) => void): void {
    const bs = this.backend.info.blockSize;
    const start = Number(lba) * bs;
    const end = start + blocks * bs;
    this.lock.acquire(start, end, () => {
      let released = false;
      const release = (r: DiskOpResult): void => {
        if (released) return;
        released = true;
        this.lock.release(start, end);
        cb(r);
      };
      try {
        body(release);
      } catch (e) {
        release(e instanceof Error ? e : new Error(String(e)));
      }
    });
  }

  /** One backend call; kicked at once when made from a completion (no caller batch to end it). */
  private submit(call: (c: Completion) => void, then: (st: IoStatus) => void): void {
    call({ complete: then });
    if (this.depth === 0) this.kick();
  }

  private read(buf: Uint8Array, offset: number, then: (st: IoStatus) => void): void {
    const v = new IoVector(1);
    v.push(buf, 0, buf.length, 0);
    this.submit((c) => this.backend.read(v, offset, c), then);
  }

  private write(buf: Uint8Array, offset: number, fua: boolean, then: (st: IoStatus) => void): void {
    const v = new IoVector(1);
    v.push(buf, 0, buf.length, 0);
    this.submit((c) => this.backend.write(v, offset, fua, c), then);
  }

  /**
   * UNMAP ranges one after the other: discarded when the backend can (else left alone: SBC-3 5.28 makes deallocation
   * advisory). With `zero` (WRITE SAME UNMAP) they must read back as zeroes: writeZeroes with mayUnmap, or written zeroes.
   */
  private trim(op: TrimOp, cb: (r: DiskOpResult) => void): void {
    const bs = this.backend.info.blockSize;
    const info = this.backend.info;
    const next = (i: number): void => {
      if (i === op.ranges.length) { cb('ok'); return; }
      const r = op.ranges[i]!;
      this.locked(r.lba, r.blocks, (res) => (res === 'ok' ? next(i + 1) : cb(res)), (release) => {
        const offset = Number(r.lba) * bs;
        const length = r.blocks * bs;
        const end = (st: IoStatus): void => release(st < 0 ? ioError(op.zero ? 'write zeroes' : 'discard', st) : 'ok');
        if (op.zero && info.canWriteZeroes) this.submit((c) => this.backend.writeZeroes(offset, length, true, c), end);
        else if (op.zero) this.writePattern(new Uint8Array(bs), offset, r.blocks, false, release);
        else if (info.canDiscard) this.submit((c) => this.backend.discard(offset, length, c), end);
        else release('ok');
      });
    };
    next(0);
  }

  /** WRITE SAME (lock held): zeroes through writeZeroes when the pattern is all zero and the backend can, else pieces. */
  private writeSame(op: WriteSameOp, release: (r: DiskOpResult) => void): void {
    const bs = this.backend.info.blockSize;
    const offset = Number(op.lba) * bs;
    if (op.pattern.length !== bs) { release(new Error(`write same: pattern of ${op.pattern.length} bytes for ${bs}-byte blocks`)); return; }
    if (this.backend.info.canWriteZeroes && op.pattern.every((b) => b === 0)) {
      this.submit((c) => this.backend.writeZeroes(offset, op.blocks * bs, false, c), (st) => release(st < 0 ? ioError('write zeroes', st) : 'ok'));
      return;
    }
    this.writePattern(op.pattern, offset, op.blocks, false, release);
  }

  /** Writes `pattern` (one block) to `blocks` blocks from `offset`, at most CHUNK_BYTES per write, one write at a time. */
  private writePattern(pattern: Uint8Array, offset: number, blocks: number, fua: boolean, cb: (r: DiskOpResult) => void): void {
    const bs = pattern.length;
    const per = Math.max(1, Math.min(blocks, Math.floor(CHUNK_BYTES / bs)));
    const chunk = new Uint8Array(per * bs);
    for (let i = 0; i < per; i++) chunk.set(pattern, i * bs);
    const next = (done: number): void => {
      if (done === blocks) { cb('ok'); return; }
      const n = Math.min(per, blocks - done);
      this.write(chunk.subarray(0, n * bs), offset + done * bs, fua, (st) => (st < 0 ? cb(ioError('write same', st)) : next(done + n)));
    };
    next(0);
  }

  /**
   * VERIFY: reads the range in pieces; with `expected` compares each byte (one block of `expected` against every block
   * when it is one block long) and reports the first difference as MISCOMPARE with its offset from the range's start.
   */
  private compare(op: CompareOp, cb: (r: DiskOpResult) => void): void {
    const bs = this.backend.info.blockSize;
    const total = op.blocks * bs;
    const e = op.expected;
    if (e && e.length !== total && e.length !== bs) { cb(new Error(`verify: ${e.length} bytes of data for ${op.blocks} blocks`)); return; }
    const pattern = e !== null && e.length === bs && op.blocks > 1;
    const buf = new Uint8Array(Math.min(total, Math.max(bs, Math.floor(CHUNK_BYTES / bs) * bs)));
    const base = Number(op.lba) * bs;
    const next = (pos: number): void => {
      if (pos === total) { cb('ok'); return; }
      const n = Math.min(buf.length, total - pos);
      const piece = buf.subarray(0, n);
      this.read(piece, base + pos, (st) => {
        if (st < 0) { cb(ioError('verify read', st)); return; }
        if (e) {
          const at = pattern ? firstPatternDifference(piece, e) : firstDifference(piece, e.subarray(pos, pos + n), n);
          if (at >= 0) { cb(miscompareAt(pos + at)); return; }
        }
        next(pos + n);
      });
    };
    next(0);
  }

  /**
   * COMPARE AND WRITE (lock held): reads the range, compares it with the verify data and writes the write data only when
   * they are equal. SBC-3 5.3: a difference is "CHECK CONDITION status with the sense key set to MISCOMPARE and the
   * additional sense code set to MISCOMPARE DURING VERIFY OPERATION", INFORMATION being "the offset from the start of
   * the Data-Out Buffer to the first byte of data that was not equal".
   */
  private compareAndWrite(op: CompareAndWriteOp, release: (r: DiskOpResult) => void): void {
    const bs = this.backend.info.blockSize;
    const offset = Number(op.lba) * bs;
    const n = op.blocks * bs;
    if (op.verify.length !== n || op.write.length !== n) { release(new Error(`compare and write: data of ${op.verify.length}+${op.write.length} bytes for ${op.blocks} blocks`)); return; }
    const current = new Uint8Array(n);
    this.read(current, offset, (st) => {
      if (st < 0) { release(ioError('compare and write read', st)); return; }
      const at = firstDifference(current, op.verify, n);
      if (at >= 0) { release(miscompareAt(at) satisfies CheckCondition); return; }
      this.write(op.write, offset, op.fua, (st2) => release(st2 < 0 ? ioError('compare and write write', st2) : 'ok'));
    });
  }

  /**
   * WRITE AND VERIFY (lock held): SBC-3 r36 5.38 asks the device server to "write them to the medium, and then verify that
   * they are correctly written", so the data is written through (FUA: on the medium, not in a cache) and read back. A
   * failed read-back is UNRECOVERED READ ERROR; with BYTCHK 01b a difference is MISCOMPARE DURING VERIFY OPERATION with
   * the offset of the first differing byte in the Data-Out buffer.
   */
  private writeAndVerify(op: WriteVerifyOp, release: (r: DiskOpResult) => void): void {
    const bs = this.backend.info.blockSize;
    const offset = Number(op.lba) * bs;
    const n = op.blocks * bs;
    if (op.data.length !== n) { release(new Error(`write and verify: ${op.data.length} bytes of data for ${op.blocks} blocks`)); return; }
    this.write(op.data, offset, true, (st) => {
      if (st < 0) { release(ioError('write and verify write', st)); return; }
      const back = new Uint8Array(n);
      this.read(back, offset, (st2) => {
        if (st2 < 0) { release(readErrorAt(op.lba)); return; }
        const at = op.bytchk ? firstDifference(back, op.data, n) : -1;
        release(at >= 0 ? miscompareAt(at) : 'ok');
      });
    });
  }

  /** ORWRITE (16) (lock held): reads the range, ORs the Data-Out into it and writes the result (SBC-3 r36 5.5). */
  private orWrite(op: OrWriteOp, release: (r: DiskOpResult) => void): void {
    const bs = this.backend.info.blockSize;
    const offset = Number(op.lba) * bs;
    const n = op.blocks * bs;
    if (op.data.length !== n) { release(new Error(`orwrite: ${op.data.length} bytes of data for ${op.blocks} blocks`)); return; }
    const current = new Uint8Array(n);
    this.read(current, offset, (st) => {
      if (st < 0) { release(readErrorAt(op.lba)); return; }
      for (let i = 0; i < n; i++) current[i] = current[i]! | op.data[i]!;
      this.write(current, offset, op.fua, (st2) => release(st2 < 0 ? ioError('orwrite write', st2) : 'ok'));
    });
  }
}

/** First byte of `data` (whole blocks) that differs from the one-block `pattern` repeated, or -1. */
function firstPatternDifference(data: Uint8Array, pattern: Uint8Array): number {
  const bs = pattern.length;
  for (let b = 0; b < data.length; b += bs) {
    const at = firstDifference(data.subarray(b, b + bs), pattern, bs);
    if (at >= 0) return b + at;
  }
  return -1;
}
