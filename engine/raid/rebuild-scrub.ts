// Rebuild and scrub: tasks that run an array's units (stripes, chunks, regions) one after the other, and the job for each unit.
//
// A rebuild writes one slot from the others while I/O goes on; a scrub is md's check or repair (a
// resync is a repair of the dirty regions). Each unit holds its stripe's or byte range's lock while it
// runs. raid4/5/6 units are StripeJobs (stripe-jobs.ts); mirror units read and write copies directly.
import { EIO } from '../os.js';
import { computeParity, reconstruct } from './parity.js';
import type { RangeLockHolder } from './range-lock.js';
import type { RaidProgress, ScrubResult } from './raid-backend.js';
import {
  OP_READ, OP_WRITE, PAGE, PH_READ, PH_WRITE, SECTOR, raid10Copies, raid1Copies, type Copy, type JobParent, type MemberIo, type MemberIoOwner,
  type RaidCore,
} from './raid-core.js';
import { StripeJob, TAG_FULL } from './stripe-jobs.js';

/** raid1 rebuild and scrub unit, in array bytes. */
const MIRROR_UNIT = 256 * 1024;

/** Runs units (stripes, chunks, regions) one after the other; a Promise of the outcome. */
abstract class ArrayTask<T> implements JobParent {
  protected next = 0;
  /** Asked between units: true ends the task there (settle's `stopped`). */
  stopWhen: (() => boolean) | null = null;
  protected stopped = false;
  private running = false;
  private looping = false;
  private settled = false;
  protected failure: string | null = null;
  private resolve!: (v: T) => void;
  private reject!: (e: Error) => void;
  readonly promise: Promise<T>;

  constructor(protected readonly core: RaidCore, readonly total: number, private readonly progress: RaidProgress | undefined) {
    this.promise = new Promise<T>((res, rej) => {
      this.resolve = res;
      this.reject = rej;
    });
  }

  run(): Promise<T> {
    this.pump();
    return this.promise;
  }

  /** Starts unit `i`; its job reports to jobDone. */
  protected abstract startUnit(i: number): void;
  /** The value to resolve with. */
  protected abstract result(): T;
  /** Called once at the end (before settling); `ok` false when a unit failed. */
  protected abstract settle(ok: boolean): void;

  jobDone(status: number): void {
    this.running = false;
    if (status !== 0 && this.failure === null) this.failure = `unit ${this.next - 1} of ${this.total} failed (${status})`;
    this.progress?.(this.next, this.total);
    this.pump();
  }

  private pump(): void {
    if (this.looping) return;
    this.looping = true;
    while (!this.running && this.next < this.total && this.failure === null && !this.stopped) {
      if (this.stopWhen?.()) {
        this.stopped = true;
        break;
      }
      this.running = true;
      this.startUnit(this.next++);
    }
    this.looping = false;
    if (this.running || this.settled || (this.next < this.total && this.failure === null && !this.stopped)) return;
    this.settled = true;
    const ok = this.failure === null;
    this.settle(ok);
    if (ok) this.resolve(this.result());
    else this.reject(new Error(this.failure!));
  }
}

/** raid4/5/6 rebuild of one stripe of `target`: read the others, rebuild its chunk, write it. */
class RebuildStripeJob extends StripeJob {
  private missing: number[] = [];

  constructor(core: RaidCore, parent: JobParent, stripe: number, private readonly target: number) {
    super(core, parent, stripe, 0, core.chunkBytes);
  }

  protected round(): void {
    const core = this.core;
    if (core.states[this.target] !== 'rebuilding') return this.end(-EIO, false);
    this.missing = this.unreadable();
    if (this.missing.length > core.tolerance) return this.end(-EIO, false);
    this.stripeBuffers();
    this.begin(PH_READ);
    for (let m = 0; m < core.n; m++) if (this.readable(m) && this.full[m] === 0) this.readInto(m, this.bufs[m]!, 0, 0, this.w, TAG_FULL);
    this.endIssue();
  }

  protected compute(): void {
    const core = this.core;
    reconstruct(core.g, this.pat.map, this.bufs, this.missing);
    this.begin(PH_WRITE);
    this.writeFrom(this.target, this.bufs[this.target]!, 0, 0, this.w);
    for (let m = 0; m < core.n; m++) if (m !== this.target && this.readErr[m] !== 0 && core.writable(m)) this.writeFrom(m, this.bufs[m]!, 0, 0, this.w);
    this.endIssue();
  }

  protected writesDone(): void {
    this.end(this.core.states[this.target] === 'rebuilding' ? 0 : -EIO, true);
  }
}

/** raid4/5/6 scrub of one stripe: recompute P (and Q) from the data and compare; repair rewrites them. */
class ScrubStripeJob extends StripeJob {
  constructor(core: RaidCore, private readonly task: ScrubTask, stripe: number) {
    super(core, task, stripe, 0, core.chunkBytes);
  }

  protected round(): void {
    const core = this.core;
    if (core.notInSync() > 0) return this.end(-EIO, false);
    if (this.unreadable().length > core.tolerance) return this.end(-EIO, false);
    this.stripeBuffers(2);
    this.begin(PH_READ);
    for (let m = 0; m < core.n; m++) {
      if (!this.readable(m) || this.full[m] !== 0) continue;
      this.task.bytesRead += this.w;
      this.readInto(m, this.bufs[m]!, 0, 0, this.w, TAG_FULL);
    }
    this.endIssue();
  }

  protected compute(): void {
    const core = this.core;
    const map = this.pat.map;
    const errs = this.notRead();
    this.begin(PH_WRITE);
    if (errs.length > 0) {
      // Read errors: rebuild those blocks from the rest and write them back (no comparison this time).
      reconstruct(core.g, map, this.bufs, errs);
      for (const m of errs) if (core.writable(m)) this.writeFrom(m, this.bufs[m]!, 0, 0, this.w);
      return this.endIssue();
    }
    const expected = this.bufs.slice();
    expected[map.pDisk] = this.extras[0]!;
    if (map.qDisk !== null) expected[map.qDisk] = this.extras[1]!;
    computeParity(core.g, map, expected);
    let pages = 0;
    for (let off = 0; off < this.w; off += PAGE) {
      const end = Math.min(this.w, off + PAGE);
      const differs = (m: number): boolean => Buffer.compare(this.bufs[m]!.subarray(off, end), expected[m]!.subarray(off, end)) !== 0;
      if (differs(map.pDisk) || (map.qDisk !== null && differs(map.qDisk))) pages++;
    }
    this.task.mismatches += pages * (PAGE / SECTOR);
    if (pages > 0 && this.task.repair) {
      this.writeFrom(map.pDisk, expected[map.pDisk]!, 0, 0, this.w);
      if (map.qDisk !== null) this.writeFrom(map.qDisk, expected[map.qDisk]!, 0, 0, this.w);
    }
    this.endIssue();
  }

  protected writesDone(): void {
    this.end(this.core.notInSync() > 0 ? -EIO : 0, true);
  }
}

/** raid1/raid10 rebuild of one region or chunk: read a good copy, write it to the target's copies. */
class MirrorRebuildJob implements RangeLockHolder, MemberIoOwner {
  lockLo: number;
  lockHi: number;
  private readonly tried: Uint8Array;
  private staging: Uint8Array | null = null;
  private phase = PH_READ;
  private outstanding = 0;

  constructor(
    private readonly core: RaidCore,
    private readonly parent: JobParent,
    arrayOffset: number,
    private readonly len: number,
    private readonly copies: Copy[],
    private readonly target: number,
  ) {
    this.lockLo = arrayOffset;
    this.lockHi = arrayOffset + len;
    this.tried = new Uint8Array(copies.length);
  }

  start(): void {
    this.core.lock.acquire(this);
  }

  lockGranted(): void {
    this.staging = this.core.staging.take(this.len);
    this.readNext();
  }

  private readNext(): void {
    for (let i = 0; i < this.copies.length; i++) {
      const c = this.copies[i]!;
      if (this.tried[i] !== 0 || c.disk === this.target || !this.core.readable(c.disk)) continue;
      this.tried[i] = 1;
      const io = this.core.io(this, OP_READ, c.disk, c.offset, this.len);
      io.iov.push(this.staging!, 0, this.len, 0);
      return this.core.submit(io);
    }
    this.finish(-EIO);
  }

  memberDone(io: MemberIo, status: number): void {
    if (this.phase === PH_READ) {
      if (status !== 0) return this.readNext();
      this.phase = PH_WRITE;
      this.outstanding = 1;
      for (const c of this.copies) {
        if (c.disk !== this.target) continue;
        const w = this.core.io(this, OP_WRITE, c.disk, c.offset, this.len);
        w.iov.push(this.staging!, 0, this.len, 0);
        this.outstanding++;
        this.core.submit(w);
      }
      if (--this.outstanding === 0) this.finish(0);
      return;
    }
    if (status !== 0) this.core.fail(io.slot, `rebuild write failed with ${status}`);
    if (--this.outstanding === 0) this.finish(0);
  }

  private finish(status: number): void {
    if (this.staging !== null) this.core.staging.give(this.staging);
    this.staging = null;
    this.core.lock.release(this);
    this.parent.jobDone(status !== 0 || this.core.states[this.target] !== 'rebuilding' ? -EIO : 0, true);
  }
}

/** raid1/raid10 scrub of one region or chunk: read every copy, compare with the first good one; repair copies it over. */
class MirrorScrubJob implements RangeLockHolder, MemberIoOwner {
  lockLo: number;
  lockHi: number;
  private slab: Uint8Array | null = null;
  private readonly failed: Uint8Array;
  private phase = PH_READ;
  private outstanding = 0;

  constructor(private readonly core: RaidCore, private readonly task: ScrubTask, arrayOffset: number, private readonly len: number, private readonly copies: Copy[]) {
    this.lockLo = arrayOffset;
    this.lockHi = arrayOffset + len;
    this.failed = new Uint8Array(copies.length);
  }

  start(): void {
    this.core.lock.acquire(this);
  }

  private view(i: number): Uint8Array {
    return this.slab!.subarray(i * this.len, (i + 1) * this.len);
  }

  lockGranted(): void {
    if (this.core.notInSync() > 0) return this.finish(-EIO);
    this.slab = this.core.staging.take(this.copies.length * this.len);
    this.outstanding = 1;
    this.copies.forEach((c, i) => {
      const io = this.core.io(this, OP_READ, c.disk, c.offset, this.len);
      io.tag = i;
      io.iov.push(this.view(i), 0, this.len, 0);
      this.outstanding++;
      this.task.bytesRead += this.len;
      this.core.submit(io);
    });
    if (--this.outstanding === 0) this.compare();
  }

  memberDone(io: MemberIo, status: number): void {
    if (this.phase === PH_READ) {
      if (status !== 0) this.failed[io.tag] = 1;
      if (--this.outstanding === 0) this.compare();
      return;
    }
    if (status !== 0) this.core.fail(io.slot, `scrub rewrite failed with ${status}`);
    else if (this.failed[io.tag] !== 0) this.core.counters[io.slot]!.correctedReads++;
    if (--this.outstanding === 0) this.finish(0);
  }

  private compare(): void {
    const ref = this.failed.indexOf(0);
    if (ref < 0) return this.finish(-EIO);
    const k = this.copies.length;
    const differs = new Uint8Array(k);
    let pages = 0;
    for (let off = 0; off < this.len; off += PAGE) {
      const end = Math.min(this.len, off + PAGE);
      const r = this.view(ref).subarray(off, end);
      let page = false;
      for (let i = 0; i < k; i++) {
        if (i === ref || this.failed[i] !== 0) continue;
        if (Buffer.compare(r, this.view(i).subarray(off, end)) !== 0) {
          differs[i] = 1;
          page = true;
        }
      }
      if (page) pages++;
    }
    this.task.mismatches += pages * (PAGE / SECTOR);
    this.phase = PH_WRITE;
    this.outstanding = 1;
    for (let i = 0; i < k; i++) {
      if (this.failed[i] === 0 && !(differs[i] !== 0 && this.task.repair)) continue;
      const c = this.copies[i]!;
      if (!this.core.writable(c.disk)) continue;
      const io = this.core.io(this, OP_WRITE, c.disk, c.offset, this.len);
      io.tag = i;
      io.iov.push(this.view(ref), 0, this.len, 0);
      this.outstanding++;
      this.core.submit(io);
    }
    if (--this.outstanding === 0) this.finish(0);
  }

  private finish(status: number): void {
    if (this.slab !== null) this.core.staging.give(this.slab);
    this.slab = null;
    this.core.lock.release(this);
    this.task.jobDone(status);
  }
}

/** Array bytes of one rebuild or scrub unit: a stripe's data (raid4/5/6), a chunk (raid10) or MIRROR_UNIT (raid1). */
export function unitBytes(core: RaidCore): number {
  if (core.parity) return core.chunkBytes * core.dataDisks;
  if (core.level === 10) return core.chunkBytes;
  return MIRROR_UNIT;
}

/** Units of the array for rebuild and scrub: stripes (raid4/5/6), chunks (raid10) or MIRROR_UNIT regions (raid1). */
export function unitCount(core: RaidCore): number {
  return Math.ceil(core.size / unitBytes(core));
}

/** Array bytes [lo, lo+len) of mirror unit `i` and its copies. */
function mirrorUnit(core: RaidCore, i: number): { lo: number; len: number; copies: Copy[] } {
  if (core.level === 10) {
    const lo = i * core.chunkBytes;
    return { lo, len: core.chunkBytes, copies: raid10Copies(core, lo) };
  }
  const lo = i * MIRROR_UNIT;
  return { lo, len: Math.min(MIRROR_UNIT, core.size - lo), copies: raid1Copies(core, lo) };
}

export class RebuildTask extends ArrayTask<RebuildOutcome> {
  /** From unit `first` on (a rebuild resumed from its checkpoint: the units before it are in sync). */
  constructor(core: RaidCore, private readonly target: number, progress: RaidProgress | undefined, first = 0) {
    super(core, unitCount(core), progress);
    this.next = Math.max(0, Math.min(first, this.total));
  }

  protected startUnit(i: number): void {
    const core = this.core;
    if (core.parity) return new RebuildStripeJob(core, this, i, this.target).start();
    const u = mirrorUnit(core, i);
    if (!u.copies.some((c) => c.disk === this.target)) return this.jobDone(0);
    new MirrorRebuildJob(core, this, u.lo, u.len, u.copies, this.target).start();
  }

  protected result(): RebuildOutcome {
    return { stopped: this.stopped, unitsDone: this.next };
  }

  protected settle(ok: boolean): void {
    this.core.background = false;
    // Stopped (a shutdown): the member stays out of the array's reads, with the units done so far
    // on it; the caller records them as its recovery checkpoint.
    if (ok && this.stopped) this.core.setState(this.target, 'missing', 'rebuild stopped');
    else if (ok) this.core.setState(this.target, 'in-sync', 'rebuilt');
    else this.core.fail(this.target, `rebuild aborted: ${this.failure}`);
  }
}

/** How a rebuild ended: whole, or stopped after `unitsDone` units (every unit before it is rebuilt). */
export interface RebuildOutcome {
  stopped: boolean;
  unitsDone: number;
}

/**
 * Member sectors (from the data offset) in sync once `units` units of a rebuild are done, for md's
 * recovery_offset; null where units do not map to a prefix of the member (raid10: its chunks
 * interleave copies across members), so no checkpoint is kept.
 */
export function rebuiltSectors(core: RaidCore, units: number): number | null {
  if (core.parity) return units * (core.chunkBytes / SECTOR);
  if (core.level === 1) return units * (MIRROR_UNIT / SECTOR);
  return null;
}

/** The unit a rebuild resumes at from a recovery checkpoint of `sectors` (the inverse of rebuiltSectors, rounded down). */
export function unitOfSectors(core: RaidCore, sectors: number): number {
  if (core.parity) return Math.floor(sectors / (core.chunkBytes / SECTOR));
  if (core.level === 1) return Math.floor(sectors / (MIRROR_UNIT / SECTOR));
  return 0;
}

/** Scrubs units [first, first + count); mirror units are cut to array bytes [lo, hi). */
export class ScrubTask extends ArrayTask<ScrubResult> {
  mismatches = 0;
  bytesRead = 0;

  constructor(
    core: RaidCore,
    readonly repair: boolean,
    progress: RaidProgress | undefined,
    private readonly first: number,
    count: number,
    private readonly lo: number,
    private readonly hi: number,
  ) {
    super(core, count, progress);
  }

  protected startUnit(i: number): void {
    const core = this.core;
    const unit = this.first + i;
    if (core.parity) return new ScrubStripeJob(core, this, unit).start();
    const u = mirrorUnit(core, unit);
    const a = Math.max(u.lo, this.lo);
    const b = Math.min(u.lo + u.len, this.hi);
    const copies = a === u.lo ? u.copies : core.level === 10 ? raid10Copies(core, a) : raid1Copies(core, a);
    new MirrorScrubJob(core, this, a, b - a, copies).start();
  }

  protected result(): ScrubResult {
    return { mismatches: this.mismatches, units: this.total, bytesRead: this.bytesRead };
  }

  protected settle(): void {
    this.core.background = false;
  }
}
