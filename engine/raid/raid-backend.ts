// md-compatible RAID 1/4/5/6/10 as a Backend layer over member Backends: md's placement (geometry.ts), md's parity (parity.ts), md's error handling.
//
// Layout. Member `slot` (md's role) holds the array's data from byte `dataOffset` (md's data_offset)
// for `componentBytes` (md's size); nothing outside that window is ever touched. Where each array
// byte lives comes from geometry.ts alone, so an array written here assembles under Linux md and
// the other way round.
//
// Where buffers live, and how many copies a request costs:
//   - Guest data stays in the caller's IoVector. Mirror (raid1/raid10) reads and writes, and
//     raid4/5/6 reads of healthy members, hand members sub-vectors of it (addresses kept, so a file
//     member does preadv/pwritev straight from guest memory): no copy.
//   - raid4/5/6 writes copy the new data ONCE from the caller's vector into a stripe buffer: parity
//     is computed there, and data and parity go to the members from it. Old data and parity that a
//     read-modify-write or reconstruct-write needs are read into the same buffers.
//   - Degraded reads read the other members' blocks (only the byte range of the chunk the request
//     needs) into a stripe buffer, rebuild the missing block there and copy it out once.
//   - Stripe buffers come from a pool of power-of-two staging slabs that are kept and reused (up to
//     STAGING_KEEP bytes); they are ordinary memory, not the wasm kernels' heap, because members may
//     hold views of them across asynchronous completions and growing wasm memory would detach those.
//     The parity kernels stream them through their own window.
//
// Concurrency. Members may complete inside the call or later, in any order; every job counts its
// outstanding member operations. Writes (and zeroing, discards, degraded reads, read-error repair,
// rebuild and scrub units) hold a lock on their stripes (raid4/5/6) or array byte range (mirrors),
// granted first come first served (range-lock.ts): a read-modify-write never races another request on
// the same stripe, and requests on different stripes run side by side. Healthy reads take no lock.
//
// Errors, as md handles them. A failed member write marks the member faulty (onMemberFailed); the
// request still succeeds while every stripe it touched can lose that many members. A failed member
// read is served by rebuilding the block from the others, and the rebuilt block is written back to
// the member (md's read-error repair: correctedReads, or faulty when that write fails too). Beyond
// the level's redundancy a request fails with -EIO: wrong data is never returned.
//
// Discard and write-zeroes. Mirrors pass discard to every member (advertised only when all members
// can discard). raid4/5/6 implement both as writes of zeroes through the stripe path, so parity
// stays right: whole stripes of zeroes have zero parity, so they become member writeZeroes calls
// (which may unmap), and the partial stripes at the ends are ordinary zero writes.
//
// Not implemented: reshape, write-behind/write-mostly, journals and PPL, bad-block lists (a
// failed repair fails the whole member), md's superblocks and bitmap (array.ts; a bitmap plugs in
// as the WriteIntent). Members that are AsyncBackends (io_uring) are not kicked or polled here: their
// owner drives them. During a rebuild the new member serves no reads, even of stripes already rebuilt.
// Member operations are pooled; the per-request job objects are not.
//
// Files. This one holds the public types, the requests and their dispatch, and RaidBackend;
// raid-core.ts what every job shares (members and their states, the lock, staging, member I/O);
// stripe-jobs.ts the raid4/5/6 reads and writes; mirror-jobs.ts the raid1/raid10 ones; rebuild-scrub.ts
// rebuild and scrub.
import type { Backend, BackendInfo, Completion } from '../backend.js';
import { BackendError } from '../backend.js';
import type { IoVector } from '../iovec.js';
import { EINVAL, EIO, EROFS } from '../os.js';
import { checkMdGeometry, type MdGeometry } from './geometry.js';
import { MirrorReadJob, MirrorWriteJob } from './mirror-jobs.js';
import {
  OP_DISCARD, OP_FLUSH, OP_READ, OP_WRITE, OP_ZERO, RaidCore, SECTOR, raid10Copies, raid1Copies, type JobParent, type MemberIo,
  type MemberIoOwner, type MemberOp,
} from './raid-core.js';
import { RebuildTask, type RebuildOutcome, ScrubTask, rebuiltSectors, unitBytes, unitCount, unitOfSectors } from './rebuild-scrub.js';
import { StripeReadJob, StripeWholeReadJob, StripeWriteJob, ZeroStripesJob } from './stripe-jobs.js';

// ------------------------------------------------------------------------------------------ public types

/** A member's standing in the array, as md reports it. */
export type MemberState =
  /** Holds current data; read and written. */
  | 'in-sync'
  /** Being rebuilt (md's "spare rebuilding"): written, never read, until its rebuild completes. */
  | 'rebuilding'
  /** Failed (an I/O error, or failMember): neither read nor written. */
  | 'faulty'
  /** No member in this slot. */
  | 'missing';

/** Error counts of one member. */
export interface MemberCounters {
  /** Member reads that failed. */
  readErrors: number;
  /** Member writes, zeroings, discards and flushes that failed. */
  writeErrors: number;
  /** Read errors repaired by writing the rebuilt block back (md's "read error corrected"). */
  correctedReads: number;
}

/**
 * Where a write-intent bitmap plugs in: every write, zeroing and discard is announced before it
 * reaches a member and retired after.
 */
export interface WriteIntent {
  /** Called before a write touching array bytes [offset, offset+length) reaches any member; call ready() once the intent is durable (may be synchronous). */
  begin(offset: number, length: number, ready: () => void): void;
  /**
   * Called after every member write of that request finished (success or not). `reachedAll` is false
   * when some member that should hold the data did not get it (missing, faulty, rebuilding, or its
   * write failed): a bitmap must then keep the range dirty, as md_bitmap_endwrite does.
   */
  end(offset: number, length: number, reachedAll?: boolean): void;
}

export interface RaidBackendOptions {
  geometry: MdGeometry;
  /** One entry per md role (slot); null where the member is missing. */
  members: (Backend | null)[];
  /** Byte offset of the array data on every member (md's data_offset). */
  dataOffset: number;
  /** Bytes of array data each member holds (md's `size`), a multiple of 512. */
  componentBytes: number;
  intent?: WriteIntent;
  /** For `info.name`; "raid<level>" by default. */
  name?: string;
  /** Told when a member turns faulty (after an I/O error, or failMember). */
  onMemberFailed?: (slot: number, reason: string) => void;
}

/** Called after each unit (stripe, chunk or region) of a rebuild or scrub. */
export type RaidProgress = (done: number, total: number) => void;

export interface ScrubResult {
  /** md's mismatch_cnt: sectors whose parity or mirror copies disagreed, counted per 4 KiB page. */
  mismatches: number;
  /** Units (stripes, chunks or regions) checked. */
  units: number;
  /** Member bytes read (what a resync of dirty regions costs). */
  bytesRead: number;
}

/** Array bytes [offset, offset + length) a scrub is limited to (raid4/5/6: the whole stripes it touches; mirrors: exactly). */
export interface ScrubRange {
  offset: number;
  length: number;
}

// ------------------------------------------------------------------------------------------ requests

/** One array request: its jobs, its status, its write intent. */
export class ArrayRequest implements JobParent {
  private pending = 1;
  private status = 0;
  private reachedAll = true;
  private readied = false;

  constructor(
    private readonly core: RaidCore,
    /** OP_READ, OP_WRITE, OP_ZERO or OP_DISCARD. */
    readonly op: MemberOp,
    /** The data (reads and writes); null for zeroing and discards. */
    readonly iov: IoVector | null,
    readonly offset: number,
    readonly length: number,
    readonly fua: boolean,
    readonly mayUnmap: boolean,
    private readonly done: Completion,
  ) {}

  /** The intent is durable: the request's writes may start. */
  readonly ready = (): void => {
    if (this.readied) return;
    this.readied = true;
    dispatchWrite(this.core, this);
  };

  /** Counts a job about to start. */
  add(): void {
    this.pending++;
  }

  /** Drops the count that kept the request open while its jobs were being started. */
  started(): void {
    this.jobDone(0, true);
  }

  jobDone(status: number, reachedAll: boolean): void {
    if (status !== 0 && this.status === 0) this.status = status;
    if (!reachedAll) this.reachedAll = false;
    if (--this.pending > 0) return;
    if (this.op !== OP_READ) this.core.intent?.end(this.offset, this.length, this.reachedAll);
    this.done.complete(this.status);
  }
}

/** Starts a read's jobs. */
function dispatchRead(core: RaidCore, req: ArrayRequest): void {
  const end = req.offset + req.length;
  if (core.level === 1) {
    req.add();
    new MirrorReadJob(core, req, req.offset, req.length, 0, raid1Copies(core, req.offset)).start();
  } else {
    const C = core.chunkBytes;
    for (let pos = req.offset; pos < end;) {
      const chunk = Math.floor(pos / C);
      const inChunk = pos - chunk * C;
      const len = Math.min(C - inChunk, end - pos);
      req.add();
      if (core.level === 10) {
        new MirrorReadJob(core, req, pos, len, pos - req.offset, raid10Copies(core, pos)).start();
      } else {
        const stripe = Math.floor(chunk / core.dataDisks);
        const k = chunk - stripe * core.dataDisks;
        const whole = C * core.dataDisks;
        if (k === 0 && inChunk === 0 && end - pos >= whole && core.pattern(stripe).dataDisk.some((d) => !core.readable(d))) {
          // A whole stripe with a data member gone: one read of every other member, then the rebuild,
          // instead of reading the stripe again for the missing chunk after reading the others directly.
          new StripeWholeReadJob(core, req, stripe, pos - req.offset).start();
          pos += whole;
          continue;
        }
        new StripeReadJob(core, req, stripe, k, inChunk, len, pos - req.offset).start();
      }
      pos += len;
    }
  }
  req.started();
}

/** Starts a write's (zeroing's, discard's) jobs, once its intent is durable. */
function dispatchWrite(core: RaidCore, req: ArrayRequest): void {
  if (!core.parity) {
    req.add();
    new MirrorWriteJob(core, req).start();
    return req.started();
  }
  const SB = core.chunkBytes * core.dataDisks;
  const off = req.offset;
  const end = off + req.length;
  const partial = (s: number, x0: number, x1: number): void => {
    req.add();
    new StripeWriteJob(core, req, s, x0, x1).start();
  };
  const fullLo = Math.ceil(off / SB);
  const fullHi = Math.floor(end / SB);
  if (req.op !== OP_WRITE && fullLo < fullHi) {
    // Whole stripes of zeroes have zero parity: zero every member there, no stripe buffers.
    if (off < fullLo * SB) partial(fullLo - 1, off - (fullLo - 1) * SB, SB);
    req.add();
    new ZeroStripesJob(core, req, fullLo, fullHi).start();
    if (end > fullHi * SB) partial(fullHi, 0, end - fullHi * SB);
  } else {
    const s0 = Math.floor(off / SB);
    const s1 = Math.floor((end - 1) / SB);
    for (let s = s0; s <= s1; s++) partial(s, Math.max(off, s * SB) - s * SB, Math.min(end, (s + 1) * SB) - s * SB);
  }
  req.started();
}

/** Flushes every member that takes writes; a failed flush fails its member. */
class FlushJob implements MemberIoOwner {
  private outstanding = 1;

  constructor(private readonly core: RaidCore, private readonly done: Completion) {}

  start(): void {
    for (let m = 0; m < this.core.n; m++) {
      if (!this.core.writable(m)) continue;
      this.outstanding++;
      this.core.submit(this.core.io(this, OP_FLUSH, m, 0, 0));
    }
    this.memberDone(null, 0);
  }

  memberDone(io: MemberIo | null, status: number): void {
    if (io !== null && status !== 0) this.core.fail(io.slot, `flush failed with ${status}`);
    if (--this.outstanding === 0) this.done.complete(this.core.operational() ? 0 : -EIO);
  }
}

// ------------------------------------------------------------------------------------------ the backend

/**
 * A RAID array as a Backend: md's raid1, raid4, raid5, raid6 and raid10 (near, far and offset
 * layouts) over member Backends, degraded operation, read-error repair, rebuild and scrub.
 */
export class RaidBackend implements Backend {
  readonly info: BackendInfo;
  /** The array's shape (raid10 far layouts get `componentSectors` from `componentBytes`). */
  readonly geometry: MdGeometry;
  private readonly core: RaidCore;

  constructor(options: RaidBackendOptions) {
    const { geometry: g, members, dataOffset, componentBytes } = options;
    checkMdGeometry(g.level === 10 && g.componentSectors === undefined ? { ...g, componentSectors: componentBytes / SECTOR } : g);
    if (members.length !== g.raidDisks) throw new BackendError(`a ${g.raidDisks}-member array needs ${g.raidDisks} member slots, not ${members.length}`);
    if (!Number.isSafeInteger(componentBytes) || componentBytes <= 0 || componentBytes % SECTOR !== 0) {
      throw new BackendError(`componentBytes ${componentBytes} is not a positive multiple of ${SECTOR}`);
    }
    const bs = members.some((m) => m !== null && m.info.blockSize === 4096) ? 4096 : 512;
    if (!Number.isSafeInteger(dataOffset) || dataOffset < 0 || dataOffset % bs !== 0) {
      throw new BackendError(`dataOffset ${dataOffset} is not a non-negative multiple of the ${bs}-byte block size`);
    }
    members.forEach((m, slot) => {
      if (m !== null && m.info.size < dataOffset + componentBytes) {
        throw new BackendError(`member ${slot} (${m.info.name}) holds ${m.info.size} bytes, less than data offset ${dataOffset} + ${componentBytes}`);
      }
    });
    this.core = new RaidCore(g, members, dataOffset, componentBytes, options.intent ?? null, options.onMemberFailed ?? null);
    this.geometry = this.core.g;
    const core = this.core;
    if (core.size === 0) throw new BackendError(`${componentBytes} bytes per member hold no whole chunk of this array`);
    if (!core.operational()) {
      throw new BackendError(`raid${g.level} cannot run with members ${core.states.flatMap((s, i) => (s === 'in-sync' ? [] : [i])).join(', ')} missing`);
    }
    const present = members.filter((m): m is Backend => m !== null);
    const readOnly = present.some((m) => m.info.readOnly);
    this.info = {
      size: core.size,
      blockSize: core.blockSize,
      readOnly,
      canFlush: present.some((m) => m.info.canFlush),
      canDiscard: !readOnly && (core.parity || present.every((m) => m.info.canDiscard)),
      canWriteZeroes: !readOnly,
      name: options.name ?? `raid${g.level}`,
    };
  }

  /** Reads from in-sync members (degraded: rebuilt from the others). */
  read(iov: IoVector, offset: number, done: Completion): void {
    const st = this.check(offset, iov.bytes, false);
    if (st !== 0 || iov.bytes === 0) return done.complete(st);
    dispatchRead(this.core, new ArrayRequest(this.core, OP_READ, iov, offset, iov.bytes, false, false, done));
  }

  /** Writes every copy (mirrors) or the data and parity (raid4/5/6), after the write intent is durable. */
  write(iov: IoVector, offset: number, fua: boolean, done: Completion): void {
    this.startWrite(new ArrayRequest(this.core, OP_WRITE, iov, offset, iov.bytes, fua, false, done), done);
  }

  /** Flushes every member that takes writes; succeeds while the array still holds all its data. */
  flush(done: Completion): void {
    if (this.core.closed) return done.complete(-EIO);
    new FlushJob(this.core, done).start();
  }

  /** Mirrors: every member discards (a member that cannot zeroes instead). raid4/5/6: writes zeroes. */
  discard(offset: number, length: number, done: Completion): void {
    const op = this.core.parity ? OP_ZERO : OP_DISCARD;
    this.startWrite(new ArrayRequest(this.core, op, null, offset, length, false, true, done), done);
  }

  /** Zeroes through the write path (whole raid4/5/6 stripes and mirror copies as member writeZeroes). */
  writeZeroes(offset: number, length: number, mayUnmap: boolean, done: Completion): void {
    this.startWrite(new ArrayRequest(this.core, OP_ZERO, null, offset, length, false, mayUnmap, done), done);
  }

  /** Closes every member. */
  close(): void {
    if (this.core.closed) return;
    this.core.closed = true;
    for (const m of this.core.members) m?.close();
  }

  /** Each slot's state, by slot. */
  memberStates(): MemberState[] {
    return this.core.states.slice();
  }

  /** Error counters of member `slot`. */
  memberCounters(slot: number): Readonly<MemberCounters> {
    return { ...this.counterOf(slot) };
  }

  /** Slots not in sync (md's "degraded"). */
  get degraded(): number {
    return this.core.notInSync();
  }

  /** Whether every array byte still has a member holding it (false: I/O fails with -EIO). */
  get operational(): boolean {
    return this.core.operational();
  }

  /** Marks member `slot` faulty, as `mdadm --fail` does; it is no longer read or written. */
  failMember(slot: number, reason: string): void {
    this.counterOf(slot);
    this.core.fail(slot, reason);
  }

  /**
   * Tells the layer which array bytes may still differ between mirror copies (null: none): reads there
   * take the first readable copy, not the next in turn (raid1, raid10; parity levels read one place).
   */
  setUnsynced(pred: ((offset: number, length: number) => boolean) | null): void {
    this.core.unsynced = pred;
  }

  /**
   * Rebuilds slot `slot` (faulty or missing) onto `member`: its whole data area, unit by unit under
   * the array's locks, while I/O goes on (writes reach it at once, reads avoid it until it is done).
   * Resolves when the slot is in sync, or when `o.stopped()` (asked between units) stopped it: then
   * the slot is out of reads again and `unitsDone` units are rebuilt on it. Rejects, with the slot
   * faulty, when a unit cannot be rebuilt (too many other members failing) or written. `o.fromUnit`
   * resumes a rebuild whose earlier units are in sync on `member` (md's recovery_offset). The slot's
   * previous Backend is not closed.
   */
  /** Member sectors in sync once `units` rebuild units are done (md's recovery_offset), or null: this level keeps no checkpoint. */
  rebuiltSectors(units: number): number | null {
    return rebuiltSectors(this.core, units);
  }

  /** The rebuild unit a recovery checkpoint of `sectors` resumes at. */
  rebuildUnitAt(sectors: number): number {
    return unitOfSectors(this.core, sectors);
  }

  rebuild(slot: number, member: Backend, progress?: RaidProgress, o: { fromUnit?: number; stopped?: () => boolean } = {}): Promise<RebuildOutcome> {
    const core = this.core;
    this.counterOf(slot);
    const st = core.states[slot];
    if (st !== 'faulty' && st !== 'missing') return Promise.reject(new BackendError(`member ${slot} is ${st}: only a faulty or missing slot can be rebuilt`));
    if (core.background) return Promise.reject(new BackendError('a rebuild or scrub is already running'));
    if (member.info.size < core.dataOffset + core.componentBytes) {
      return Promise.reject(new BackendError(`the new member holds ${member.info.size} bytes, less than ${core.dataOffset + core.componentBytes}`));
    }
    if (member.info.blockSize > core.blockSize) return Promise.reject(new BackendError(`the new member's ${member.info.blockSize}-byte blocks exceed the array's ${core.blockSize}`));
    if (member.info.readOnly) return Promise.reject(new BackendError('the new member is read-only'));
    core.background = true;
    core.members[slot] = member;
    core.setState(slot, 'rebuilding', 'rebuild started');
    const task = new RebuildTask(core, slot, progress, o.fromUnit ?? 0);
    if (o.stopped) task.stopWhen = o.stopped;
    return task.run();
  }

  /**
   * md's "check" (count mismatches) or "repair" (also rewrite parity, or copy the first in-sync
   * mirror over the others) over the whole array, or over `range` only (raid4/5/6: the whole stripes
   * it touches): a resync is a repair of the dirty regions, run in slices so guest I/O goes on between
   * them. Read errors met on the way are repaired in both modes. Refused on a degraded array, as md does.
   */
  scrub(mode: 'check' | 'repair', progress?: RaidProgress, range?: ScrubRange): Promise<ScrubResult> {
    const core = this.core;
    if (core.notInSync() > 0) return Promise.reject(new BackendError(`a degraded array cannot be scrubbed (${core.notInSync()} members not in sync)`));
    if (core.background) return Promise.reject(new BackendError('a rebuild or scrub is already running'));
    let first = 0;
    let count = unitCount(core);
    let lo = 0;
    let hi = core.size;
    if (range !== undefined) {
      const { offset, length } = range;
      if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > core.size) {
        return Promise.reject(new BackendError(`scrub range ${offset}+${length} is not inside the array's ${core.size} bytes`));
      }
      const ub = unitBytes(core);
      first = Math.floor(offset / ub);
      count = length === 0 ? 0 : Math.ceil((offset + length) / ub) - first;
      lo = offset;
      hi = offset + length;
    }
    core.background = true;
    return new ScrubTask(core, mode === 'repair', progress, first, count, lo, hi).run();
  }

  private counterOf(slot: number): MemberCounters {
    const c = this.core.counters[slot];
    if (!Number.isInteger(slot) || c === undefined) throw new RangeError(`slot ${slot} is not in this ${this.core.n}-member array`);
    return c;
  }

  private startWrite(req: ArrayRequest, done: Completion): void {
    const st = this.check(req.offset, req.length, true);
    if (st !== 0 || req.length === 0) return done.complete(st);
    if (this.core.intent === null) return req.ready();
    this.core.intent.begin(req.offset, req.length, req.ready);
  }

  /** 0, or -EINVAL for a request off the block size or the array, -EROFS for a write to a read-only array. */
  private check(offset: number, length: number, write: boolean): number {
    if (this.core.closed) return -EIO;
    if (write && this.info.readOnly) return -EROFS;
    const bs = this.info.blockSize;
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) return -EINVAL;
    if (offset % bs !== 0 || length % bs !== 0 || offset + length > this.info.size) return -EINVAL;
    return 0;
  }
}
