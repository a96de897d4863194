// raid4/5/6 stripe jobs: reads (direct, degraded, whole-stripe), writes (reconstruct-write, read-modify-write) and whole-stripe zeroing.
//
// Each job works on one stripe under its lock (range-lock.ts), in stripe buffers from the core's
// staging pool: rounds of member reads, a computation (parity.ts), one round of member writes. A member
// whose read fails is rebuilt from the rest of the stripe and rewritten (md's read-error repair).
// RaidBackend (raid-backend.ts) cuts requests into these jobs; rebuild-scrub.ts builds on StripeJob.
import { copyFromVector, copyToVector } from '../iovec.js';
import { EIO } from '../os.js';
import { xorInto } from '../../wasm/index.js';
import { computeParity, reconstruct } from './parity.js';
import type { RangeLockHolder } from './range-lock.js';
import type { ArrayRequest } from './raid-backend.js';
import {
  OP_READ, OP_WRITE, OP_ZERO, PH_DIRECT, PH_IDLE, PH_READ, PH_WRITE, zeroes, type JobParent, type MemberIo, type MemberIoOwner, type RaidCore,
  type StripePattern,
} from './raid-core.js';

/** A member read that covers only part of the job's column range, or all of it. */
export const TAG_PART = 0;
export const TAG_FULL = 1;

/**
 * Work on one raid4/5/6 stripe under its lock, over the column range [a, a+w) of its chunks:
 * rounds of member reads (a read error adds the member to the ones to rebuild and plans again),
 * a computation, one round of member writes.
 */
export abstract class StripeJob implements RangeLockHolder, MemberIoOwner {
  lockLo: number;
  lockHi: number;
  protected readonly pat: StripePattern;
  /** Per member: its bytes of the column range (after stripeBuffers()). */
  protected bufs: Uint8Array[] = [];
  /** Further column-sized buffers (stripeBuffers(extra)). */
  protected extras: Uint8Array[] = [];
  /** Members whose read failed in this job (they are rebuilt, and rewritten: md's read-error repair). */
  protected readonly readErr: Uint8Array;
  /** Members whose whole column range is in `bufs`. */
  protected readonly full: Uint8Array;
  protected phase = PH_IDLE;
  protected fua = false;
  private slab: Uint8Array | null = null;
  private outstanding = 0;
  private roundErr = false;
  private locked = false;

  constructor(
    protected readonly core: RaidCore,
    protected readonly parent: JobParent,
    readonly stripe: number,
    protected readonly a: number,
    protected readonly w: number,
  ) {
    this.lockLo = stripe;
    this.lockHi = stripe + 1;
    this.pat = core.pattern(stripe);
    this.readErr = new Uint8Array(core.n);
    this.full = new Uint8Array(core.n);
  }

  start(): void {
    this.core.lock.acquire(this);
  }

  lockGranted(): void {
    this.locked = true;
    this.round();
  }

  /** Plans and issues this round's reads (begin(PH_READ) .. endIssue()), or ends the job. */
  protected abstract round(): void;
  /** The reads are in: compute and issue the writes (begin(PH_WRITE) .. endIssue()), or end. */
  protected abstract compute(): void;
  /** The writes finished. */
  protected abstract writesDone(): void;
  /** A direct (unlocked) read finished; only StripeReadJob issues them. */
  protected directDone(_io: MemberIo, _status: number): void {}

  /** Member `m` can be read in this job. */
  protected readable(m: number): boolean {
    return this.core.readable(m) && this.readErr[m] === 0;
  }

  /** Members that cannot be read in this job. */
  protected unreadable(): number[] {
    const out: number[] = [];
    for (let m = 0; m < this.core.n; m++) if (!this.readable(m)) out.push(m);
    return out;
  }

  /** Members whose column range is not (wholly) in `bufs`. */
  protected notRead(): number[] {
    const out: number[] = [];
    for (let m = 0; m < this.core.n; m++) if (this.full[m] === 0) out.push(m);
    return out;
  }

  /** Allocates one column-sized buffer per member (and `extra` more), once. */
  protected stripeBuffers(extra = 0): void {
    if (this.slab !== null) return;
    const n = this.core.n;
    const w = this.w;
    this.slab = this.core.staging.take((n + extra) * w);
    for (let i = 0; i < n + extra; i++) (i < n ? this.bufs : this.extras).push(this.slab.subarray(i * w, (i + 1) * w));
  }

  protected begin(phase: number): void {
    this.phase = phase;
    this.outstanding = 1;
  }

  /** Reads member `m`'s chunk bytes [col, col+len) into `buf` at `bufOff`. */
  protected readInto(m: number, buf: Uint8Array, bufOff: number, col: number, len: number, tag: number): void {
    const io = this.core.io(this, OP_READ, m, this.stripe * this.core.chunkBytes + col, len);
    io.tag = tag;
    io.iov.push(buf, bufOff, len, 0);
    this.outstanding++;
    this.core.submit(io);
  }

  /** Writes `buf` [bufOff, bufOff+len) to member `m`'s chunk bytes [col, col+len). */
  protected writeFrom(m: number, buf: Uint8Array, bufOff: number, col: number, len: number): void {
    const io = this.core.io(this, OP_WRITE, m, this.stripe * this.core.chunkBytes + col, len);
    io.fua = this.fua;
    io.iov.push(buf, bufOff, len, 0);
    this.outstanding++;
    this.core.submit(io);
  }

  protected endIssue(): void {
    if (--this.outstanding === 0) this.phaseDone();
  }

  memberDone(io: MemberIo, status: number): void {
    if (this.phase === PH_DIRECT) return this.directDone(io, status);
    const m = io.slot;
    if (io.op === OP_READ) {
      if (status !== 0) {
        this.readErr[m] = 1;
        this.full[m] = 0;
        this.roundErr = true;
      } else if (io.tag === TAG_FULL) {
        this.full[m] = 1;
      }
    } else if (status !== 0) {
      this.core.fail(m, `write error ${status} in stripe ${this.stripe}`);
    } else if (this.readErr[m] !== 0) {
      this.readErr[m] = 0;
      this.core.counters[m]!.correctedReads++;
    }
    if (--this.outstanding === 0) this.phaseDone();
  }

  private phaseDone(): void {
    if (this.phase === PH_READ) {
      if (!this.roundErr) return this.compute();
      this.roundErr = false;
      return this.round();
    }
    if (this.phase === PH_WRITE) this.writesDone();
  }

  /** Frees the buffers and the lock and reports to the parent. */
  protected end(status: number, reachedAll: boolean): void {
    this.phase = PH_IDLE;
    if (this.slab !== null) this.core.staging.give(this.slab);
    this.slab = null;
    this.bufs = [];
    this.extras = [];
    if (this.locked) {
      this.locked = false;
      this.core.lock.release(this);
    }
    this.parent.jobDone(status, reachedAll);
  }
}

/**
 * A read that rebuilds members from the rest of its stripe: every readable member's column range is read
 * once, the missing ones are rebuilt, `copyOut` hands the data on, and members whose reads failed are
 * rewritten (md's read-error repair).
 */
abstract class RebuildingReadJob extends StripeJob {
  private missing: number[] = [];

  /** Members to rebuild besides those that cannot be read. */
  protected abstract needed(): readonly number[];
  protected abstract copyOut(): void;

  protected round(): void {
    const core = this.core;
    const missing = this.unreadable();
    for (const t of this.needed()) if (!missing.includes(t)) missing.push(t);
    if (missing.length > core.tolerance) return this.end(-EIO, false);
    // raid6 with one data member to rebuild: P suffices; Q is recomputed in place, not read.
    const map = this.pat.map;
    if (core.level === 6 && missing.length === 1 && missing[0] !== map.pDisk && missing[0] !== map.qDisk) missing.push(map.qDisk!);
    this.missing = missing;
    this.stripeBuffers();
    this.begin(PH_READ);
    for (let m = 0; m < core.n; m++) {
      if (!missing.includes(m) && this.full[m] === 0) this.readInto(m, this.bufs[m]!, 0, this.a, this.w, TAG_FULL);
    }
    this.endIssue();
  }

  protected compute(): void {
    const core = this.core;
    reconstruct(core.g, this.pat.map, this.bufs, this.missing);
    this.copyOut();
    this.begin(PH_WRITE);
    for (let m = 0; m < core.n; m++) if (this.readErr[m] !== 0 && core.writable(m)) this.writeFrom(m, this.bufs[m]!, 0, this.a, this.w);
    this.endIssue();
  }

  protected writesDone(): void {
    this.end(0, true);
  }
}

/**
 * One chunk piece of a raid4/5/6 read: straight from its member into the caller's vector, no lock;
 * when that member is not in sync or its read fails, under the stripe lock, rebuilt from the others
 * over the same byte range (and written back to a member whose read failed).
 */
export class StripeReadJob extends RebuildingReadJob {
  private readonly t: number;

  constructor(core: RaidCore, private readonly req: ArrayRequest, stripe: number, k: number, col: number, len: number, private readonly iovPos: number) {
    super(core, req, stripe, col, len);
    this.t = this.pat.dataDisk[k]!;
  }

  override start(): void {
    if (!this.core.readable(this.t)) return super.start();
    this.phase = PH_DIRECT;
    const io = this.core.io(this, OP_READ, this.t, this.stripe * this.core.chunkBytes + this.a, this.w);
    this.core.slice(io, this.req.iov!, this.iovPos, this.w);
    this.core.submit(io);
  }

  protected override directDone(_io: MemberIo, status: number): void {
    this.phase = PH_IDLE;
    if (status === 0) return this.parent.jobDone(0, true);
    this.readErr[this.t] = 1;
    super.start();
  }

  protected needed(): readonly number[] {
    return [this.t];
  }

  protected copyOut(): void {
    copyToVector(this.bufs[this.t]!, this.req.iov!, this.iovPos, this.w);
  }
}

/**
 * A degraded read of one whole stripe's data: every readable member's chunk is read once, the missing
 * ones are rebuilt from them, and the data chunks are copied out in array order (StripeReadJob per chunk
 * would read the stripe again for each missing chunk).
 */
export class StripeWholeReadJob extends RebuildingReadJob {
  constructor(core: RaidCore, private readonly req: ArrayRequest, stripe: number, private readonly iovPos: number) {
    super(core, req, stripe, 0, core.chunkBytes);
  }

  protected needed(): readonly number[] {
    return [];
  }

  protected copyOut(): void {
    const C = this.core.chunkBytes;
    for (let k = 0; k < this.core.dataDisks; k++) copyToVector(this.bufs[this.pat.dataDisk[k]!]!, this.req.iov!, this.iovPos + k * C, C);
  }
}

const PLAN_DATA_ONLY = 0;
const PLAN_RCW = 1;
const PLAN_RMW = 2;
const PLAN_RECON = 3;

/**
 * A raid4/5/6 write (or zeroing) of the bytes [x0, x1) of one stripe's data. Plans, like md's
 * handle_stripe_dirtying, whichever way reads fewer bytes:
 *   reconstruct-write (RCW): read the data the write leaves alone, compute parity from all the data
 *     (a full-stripe write reads nothing);
 *   read-modify-write (RMW): read the old data it replaces and the old parity, add the difference;
 *   when neither is possible (members missing, read errors): read everything readable, rebuild
 *     what is not, then compute as RCW;
 *   with no parity member left to write: write the data alone.
 */
export class StripeWriteJob extends StripeJob {
  /** Per data index: touched chunk bytes [ta, tb) (empty when ta === tb) and where they start in the request. */
  private readonly ta: Float64Array;
  private readonly tb: Float64Array;
  private readonly src: Float64Array;
  private plan = PLAN_RCW;
  private oldSlab: Uint8Array | null = null;
  private olds: Uint8Array[] = [];

  constructor(core: RaidCore, private readonly req: ArrayRequest, stripe: number, x0: number, x1: number) {
    const C = core.chunkBytes;
    const D = core.dataDisks;
    const ta = new Float64Array(D);
    const tb = new Float64Array(D);
    const src = new Float64Array(D);
    let a = C;
    let b = 0;
    for (let k = 0; k < D; k++) {
      const lo = Math.max(x0, k * C);
      const hi = Math.min(x1, (k + 1) * C);
      if (lo >= hi) continue;
      ta[k] = lo - k * C;
      tb[k] = hi - k * C;
      src[k] = stripe * C * D + lo - req.offset;
      a = Math.min(a, ta[k]!);
      b = Math.max(b, tb[k]!);
    }
    super(core, req, stripe, a, b - a);
    this.ta = ta;
    this.tb = tb;
    this.src = src;
    this.fua = req.fua;
  }

  protected round(): void {
    const core = this.core;
    let notWritable = 0;
    for (let m = 0; m < core.n; m++) if (!core.writable(m)) notWritable++;
    if (notWritable > core.tolerance) return this.end(-EIO, false);
    const afterError = this.readErr.some((e) => e !== 0);
    this.plan = afterError ? PLAN_RECON : this.choose();
    if (this.plan < 0 || (afterError && this.unreadable().length > core.tolerance)) return this.end(-EIO, false);
    this.stripeBuffers();
    const { a, w } = this;
    this.begin(PH_READ);
    if (this.plan === PLAN_RCW) {
      for (let k = 0; k < core.dataDisks; k++) {
        const m = this.pat.dataDisk[k]!;
        const ta = this.ta[k]!;
        const tb = this.tb[k]!;
        if (ta === tb) {
          this.readInto(m, this.bufs[m]!, 0, a, w, TAG_FULL);
        } else {
          if (ta > a) this.readInto(m, this.bufs[m]!, 0, a, ta - a, TAG_PART);
          if (tb < a + w) this.readInto(m, this.bufs[m]!, tb - a, tb, a + w - tb, TAG_PART);
        }
      }
    } else if (this.plan === PLAN_RMW) {
      if (this.oldSlab === null) {
        this.oldSlab = core.staging.take((core.n + 2) * w);
        for (let i = 0; i < core.n + 2; i++) this.olds.push(this.oldSlab.subarray(i * w, (i + 1) * w));
      }
      for (let k = 0; k < core.dataDisks; k++) {
        const ta = this.ta[k]!;
        const tb = this.tb[k]!;
        if (ta !== tb) this.readInto(this.pat.dataDisk[k]!, this.olds[this.pat.dataDisk[k]!]!, ta - a, ta, tb - ta, TAG_PART);
      }
      for (const pm of this.parityMembers()) if (core.writable(pm)) this.readInto(pm, this.olds[pm]!, 0, a, w, TAG_PART);
    } else if (this.plan === PLAN_RECON) {
      for (let m = 0; m < core.n; m++) if (this.readable(m) && this.full[m] === 0) this.readInto(m, this.bufs[m]!, 0, a, w, TAG_FULL);
    }
    this.endIssue();
  }

  private parityMembers(): number[] {
    const map = this.pat.map;
    return map.qDisk === null ? [map.pDisk] : [map.pDisk, map.qDisk];
  }

  /** The cheapest plan that can work now, or -1. Ties go to RCW, as in md. */
  private choose(): number {
    const core = this.core;
    let parityWritable = false;
    let rmwOk = true;
    let rmwCost = 0;
    for (const pm of this.parityMembers()) {
      if (!core.writable(pm)) continue;
      parityWritable = true;
      if (this.readable(pm)) rmwCost += this.w;
      else rmwOk = false; // being rebuilt: its old parity is unknown, so it cannot be updated by difference
    }
    if (!parityWritable) return PLAN_DATA_ONLY;
    let rcwOk = true;
    let rcwCost = 0;
    for (let k = 0; k < core.dataDisks; k++) {
      const m = this.pat.dataDisk[k]!;
      const touched = this.tb[k]! - this.ta[k]!;
      if (touched > 0) {
        rmwCost += touched;
        if (!this.readable(m)) rmwOk = false;
      }
      if (touched < this.w) {
        rcwCost += this.w - touched;
        if (!this.readable(m)) rcwOk = false;
      }
    }
    if (rmwOk && (!rcwOk || rmwCost < rcwCost)) return PLAN_RMW;
    if (rcwOk) return PLAN_RCW;
    return this.unreadable().length <= core.tolerance ? PLAN_RECON : -1;
  }

  /** Copies the new data of data index `k` into its member's buffer: the one copy of guest data. */
  private copyNew(k: number): void {
    const len = this.tb[k]! - this.ta[k]!;
    if (len === 0) return;
    const dst = this.bufs[this.pat.dataDisk[k]!]!;
    const off = this.ta[k]! - this.a;
    if (this.req.iov !== null) copyFromVector(this.req.iov, this.src[k]!, dst, len, off);
    else dst.fill(0, off, off + len);
  }

  protected compute(): void {
    const core = this.core;
    const map = this.pat.map;
    if (this.plan === PLAN_RECON) {
      // Rebuild what was not read (a member failed since is still good for this stripe: it was read).
      const lost = this.notRead();
      if (lost.length > 0) reconstruct(core.g, map, this.bufs, lost);
    }
    for (let k = 0; k < core.dataDisks; k++) this.copyNew(k);
    if (this.plan === PLAN_RCW || this.plan === PLAN_RECON) computeParity(core.g, map, this.bufs);
    else if (this.plan === PLAN_RMW) this.applyDifference();
    this.begin(PH_WRITE);
    for (let m = 0; m < core.n; m++) {
      if (!core.writable(m)) continue;
      const role = this.pat.role[m]!;
      if (this.readErr[m] !== 0) {
        this.writeFrom(m, this.bufs[m]!, 0, this.a, this.w); // rebuilt (and updated) whole: repairs the bad block
      } else if (role >= 0) {
        const ta = this.ta[role]!;
        const len = this.tb[role]! - ta;
        if (len > 0) this.writeFrom(m, this.bufs[m]!, ta - this.a, ta, len);
      } else if (this.plan !== PLAN_DATA_ONLY) {
        this.writeFrom(m, this.bufs[m]!, 0, this.a, this.w);
      }
    }
    this.endIssue();
  }

  /** RMW: new parity = old parity + the parity of (old data XOR new data) of the touched chunks. */
  private applyDifference(): void {
    const core = this.core;
    const map = this.pat.map;
    const w = this.w;
    for (let k = 0; k < core.dataDisks; k++) {
      if (this.ta[k] === this.tb[k]) continue;
      const m = this.pat.dataDisk[k]!;
      const lo = this.ta[k]! - this.a;
      const hi = this.tb[k]! - this.a;
      const d = this.olds[m]!.subarray(lo, hi);
      xorInto(d, [d, this.bufs[m]!.subarray(lo, hi)]);
    }
    if (core.level !== 6) {
      const P = map.pDisk;
      if (!core.writable(P)) return;
      const p = this.bufs[P]!;
      p.set(this.olds[P]!);
      for (let k = 0; k < core.dataDisks; k++) {
        if (this.ta[k] === this.tb[k]) continue;
        const lo = this.ta[k]! - this.a;
        const hi = this.tb[k]! - this.a;
        const part = p.subarray(lo, hi);
        xorInto(part, [part, this.olds[this.pat.dataDisk[k]!]!.subarray(lo, hi)]);
      }
      return;
    }
    // raid6: Q is not a plain XOR; the syndrome of the difference blocks (zero elsewhere) is the change.
    const blocks: Uint8Array[] = new Array<Uint8Array>(core.n);
    for (let m = 0; m < core.n; m++) blocks[m] = zeroes(w);
    for (let k = 0; k < core.dataDisks; k++) {
      if (this.ta[k] === this.tb[k]) continue;
      const m = this.pat.dataDisk[k]!;
      const d = this.olds[m]!;
      d.fill(0, 0, this.ta[k]! - this.a);
      d.fill(0, this.tb[k]! - this.a, w);
      blocks[m] = d;
    }
    const dp = this.olds[core.n]!;
    const dq = this.olds[core.n + 1]!;
    blocks[map.pDisk] = dp;
    blocks[map.qDisk!] = dq;
    computeParity(core.g, map, blocks);
    if (core.writable(map.pDisk)) xorInto(this.bufs[map.pDisk]!, [this.olds[map.pDisk]!, dp]);
    if (core.writable(map.qDisk!)) xorInto(this.bufs[map.qDisk!]!, [this.olds[map.qDisk!]!, dq]);
  }

  protected writesDone(): void {
    const lost = this.core.notInSync();
    this.end(lost > this.core.tolerance ? -EIO : 0, lost === 0);
  }

  protected override end(status: number, reachedAll: boolean): void {
    if (this.oldSlab !== null) this.core.staging.give(this.oldSlab);
    this.oldSlab = null;
    this.olds = [];
    super.end(status, reachedAll);
  }
}

/** Zeroes whole stripes [s0, s1) on every member: their parity is zero too. */
export class ZeroStripesJob implements RangeLockHolder, MemberIoOwner {
  private outstanding = 0;

  constructor(private readonly core: RaidCore, private readonly req: ArrayRequest, public lockLo: number, public lockHi: number) {}

  start(): void {
    this.core.lock.acquire(this);
  }

  lockGranted(): void {
    const core = this.core;
    let notWritable = 0;
    for (let m = 0; m < core.n; m++) if (!core.writable(m)) notWritable++;
    if (notWritable > core.tolerance) return this.finish();
    const C = core.chunkBytes;
    this.outstanding = 1;
    for (let m = 0; m < core.n; m++) {
      if (!core.writable(m)) continue;
      const io = core.io(this, OP_ZERO, m, this.lockLo * C, (this.lockHi - this.lockLo) * C);
      io.mayUnmap = this.req.mayUnmap;
      this.outstanding++;
      core.submit(io);
    }
    if (--this.outstanding === 0) this.finish();
  }

  memberDone(io: MemberIo, status: number): void {
    if (status !== 0) this.core.fail(io.slot, `zeroing failed with ${status}`);
    if (--this.outstanding === 0) this.finish();
  }

  private finish(): void {
    this.core.lock.release(this);
    const lost = this.core.notInSync();
    this.req.jobDone(lost > this.core.tolerance ? -EIO : 0, lost === 0);
  }
}
