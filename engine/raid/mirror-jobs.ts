// raid1/raid10 jobs: a read from one in-sync copy (with md's read-error repair), and a write, zeroing or discard of every copy.
//
// Guest data stays in the caller's vector: members get sub-vectors of it (RaidCore.slice), no copy.
// Writes hold the array byte range's lock (range-lock.ts); healthy reads take none.
import { EIO } from '../os.js';
import type { RangeLockHolder } from './range-lock.js';
import type { ArrayRequest } from './raid-backend.js';
import {
  OP_READ, OP_WRITE, PH_DIRECT, PH_IDLE, PH_READ, PH_WRITE, raid10Copies, type Copy, type MemberIo, type MemberIoOwner, type RaidCore,
} from './raid-core.js';

/**
 * One piece of a raid1/raid10 read: from one in-sync copy (round robin) straight into the caller's
 * vector; on a read error from the next copy, and then, under the range lock, the good copy is read
 * again and written over the failed ones (md's fix_read_error).
 */
export class MirrorReadJob implements RangeLockHolder, MemberIoOwner {
  lockLo: number;
  lockHi: number;
  private readonly tried: Uint8Array;
  private readonly errored: number[] = [];
  private next: number;
  private good = -1;
  private phase = PH_DIRECT;
  private outstanding = 0;
  private staging: Uint8Array | null = null;

  constructor(
    private readonly core: RaidCore,
    private readonly req: ArrayRequest,
    arrayOffset: number,
    private readonly len: number,
    private readonly iovPos: number,
    private readonly copies: Copy[],
  ) {
    this.lockLo = arrayOffset;
    this.lockHi = arrayOffset + len;
    this.tried = new Uint8Array(copies.length);
    this.next = core.unsynced?.(arrayOffset, len) ? 0 : core.rr++ % copies.length;
  }

  start(): void {
    this.tryNext();
  }

  private tryNext(): void {
    const k = this.copies.length;
    for (let j = 0; j < k; j++) {
      const i = (this.next + j) % k;
      if (this.tried[i] !== 0 || !this.core.readable(this.copies[i]!.disk)) continue;
      this.tried[i] = 1;
      this.next = i + 1;
      const io = this.core.io(this, OP_READ, this.copies[i]!.disk, this.copies[i]!.offset, this.len);
      io.tag = i;
      this.core.slice(io, this.req.iov!, this.iovPos, this.len);
      return this.core.submit(io);
    }
    this.req.jobDone(-EIO, false);
  }

  memberDone(io: MemberIo, status: number): void {
    if (this.phase === PH_DIRECT) {
      if (status !== 0) {
        this.errored.push(io.tag);
        return this.tryNext();
      }
      this.good = io.tag;
      if (this.errored.length === 0) return this.req.jobDone(0, true);
      this.phase = PH_IDLE;
      return this.core.lock.acquire(this);
    }
    if (this.phase === PH_READ) {
      if (status !== 0) return this.finish(); // the good copy failed too: the caller has its data; leave the repair
      this.phase = PH_WRITE;
      this.outstanding = 1;
      for (const i of this.errored) {
        const c = this.copies[i]!;
        if (!this.core.writable(c.disk)) continue;
        const w = this.core.io(this, OP_WRITE, c.disk, c.offset, this.len);
        w.iov.push(this.staging!, 0, this.len, 0);
        this.outstanding++;
        this.core.submit(w);
      }
      if (--this.outstanding === 0) this.finish();
      return;
    }
    if (status !== 0) this.core.fail(io.slot, `read error not repaired: rewrite failed with ${status}`);
    else this.core.counters[io.slot]!.correctedReads++;
    if (--this.outstanding === 0) this.finish();
  }

  lockGranted(): void {
    this.phase = PH_READ;
    this.staging = this.core.staging.take(this.len);
    const c = this.copies[this.good]!;
    const io = this.core.io(this, OP_READ, c.disk, c.offset, this.len);
    io.iov.push(this.staging, 0, this.len, 0);
    this.core.submit(io);
  }

  private finish(): void {
    if (this.staging !== null) this.core.staging.give(this.staging);
    this.staging = null;
    this.core.lock.release(this);
    this.req.jobDone(0, true);
  }
}

/** A raid1/raid10 write, zeroing or discard: every copy on a member that takes writes, under the range lock. */
export class MirrorWriteJob implements RangeLockHolder, MemberIoOwner {
  lockLo: number;
  lockHi: number;
  private outstanding = 0;
  private reachedAll = true;

  constructor(private readonly core: RaidCore, private readonly req: ArrayRequest) {
    this.lockLo = req.offset;
    this.lockHi = req.offset + req.length;
  }

  start(): void {
    this.core.lock.acquire(this);
  }

  lockGranted(): void {
    const core = this.core;
    const req = this.req;
    this.outstanding = 1;
    if (core.level === 1) {
      for (let m = 0; m < core.n; m++) this.issue(m, req.offset, req.length, 0);
    } else if (req.op === OP_WRITE) {
      const C = core.chunkBytes;
      const end = req.offset + req.length;
      for (let pos = req.offset; pos < end;) {
        const len = Math.min(C - (pos % C), end - pos);
        for (const c of raid10Copies(core, pos)) this.issue(c.disk, c.offset, len, pos - req.offset);
        pos += len;
      }
    } else {
      for (const [m, lo, hi] of this.zeroRanges()) this.issue(m, lo, hi - lo, 0);
    }
    if (--this.outstanding === 0) this.finish();
  }

  /** raid10 zeroing/discard: each member's copies as few contiguous ranges as possible. */
  private zeroRanges(): [number, number, number][] {
    const core = this.core;
    const C = core.chunkBytes;
    const end = this.req.offset + this.req.length;
    const per: [number, number][][] = Array.from({ length: core.n }, () => []);
    for (let pos = this.req.offset; pos < end;) {
      const len = Math.min(C - (pos % C), end - pos);
      for (const c of raid10Copies(core, pos)) per[c.disk]!.push([c.offset, c.offset + len]);
      pos += len;
    }
    const out: [number, number, number][] = [];
    per.forEach((ranges, m) => {
      ranges.sort((x, y) => x[0] - y[0]);
      let cur: [number, number, number] | null = null;
      for (const [lo, hi] of ranges) {
        if (cur !== null && cur[2] === lo) cur[2] = hi;
        else out.push((cur = [m, lo, hi]));
      }
    });
    return out;
  }

  private issue(m: number, memberOffset: number, len: number, iovPos: number): void {
    const core = this.core;
    if (!core.readable(m)) this.reachedAll = false;
    if (!core.writable(m)) return;
    const io = core.io(this, this.req.op, m, memberOffset, len);
    if (this.req.op === OP_WRITE) {
      io.fua = this.req.fua;
      core.slice(io, this.req.iov!, iovPos, len);
    } else {
      io.mayUnmap = this.req.mayUnmap;
    }
    this.outstanding++;
    core.submit(io);
  }

  memberDone(io: MemberIo, status: number): void {
    if (status !== 0) {
      this.reachedAll = false;
      this.core.fail(io.slot, `write error ${status}`);
    }
    if (--this.outstanding === 0) this.finish();
  }

  /** Succeeds when every piece still has an in-sync copy (every write to one succeeded, or it would be faulty). */
  private finish(): void {
    const core = this.core;
    let ok = true;
    if (core.level === 1) {
      ok = core.states.some((s) => s === 'in-sync');
    } else {
      const C = core.chunkBytes;
      const end = this.req.offset + this.req.length;
      for (let pos = this.req.offset; pos < end && ok;) {
        const len = Math.min(C - (pos % C), end - pos);
        ok = raid10Copies(core, pos).some((c) => core.readable(c.disk));
        pos += len;
      }
    }
    core.lock.release(this);
    this.req.jobDone(ok ? 0 : -EIO, this.reachedAll);
  }
}
