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
import type { Backend, BackendInfo, Completion } from '../backend.js';
import { BackendError } from '../backend.js';
import { copyFromVector, copyToVector, IoVector } from '../iovec.js';
import { EINVAL, EIO, EROFS } from '../os.js';
import { xorInto } from '../../wasm/index.js';
import {
  checkMdGeometry, mdArraySectors, mdDataDisks, mdStripeMap, raid10FindPhys, type MdGeometry, type MdRaidLevel, type StripeMap,
} from './geometry.js';
import { computeParity, reconstruct } from './parity.js';
import { RangeLock, type RangeLockHolder } from './range-lock.js';

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

// ------------------------------------------------------------------------------------------ constants

const SECTOR = 512;
/** Scrub compares in pages of this size, as md's stripe cache does (its mismatch_cnt counts them in sectors). */
const PAGE = 4096;
/** raid1 rebuild and scrub unit, in array bytes. */
const MIRROR_UNIT = 256 * 1024;
/** Staging bytes kept for reuse once freed. */
const STAGING_KEEP = 64 * 1024 * 1024;
/** Largest write used to zero a member that cannot writeZeroes itself. */
const ZERO_CHUNK = 1024 * 1024;

const OP_READ = 0;
const OP_WRITE = 1;
const OP_ZERO = 2;
const OP_DISCARD = 3;
const OP_FLUSH = 4;
type MemberOp = typeof OP_READ | typeof OP_WRITE | typeof OP_ZERO | typeof OP_DISCARD | typeof OP_FLUSH;

const ROLE_P = -1;
const ROLE_Q = -2;

// ------------------------------------------------------------------------------------------ small parts

/** Zeroes that are only ever read (sources of zero writes, zero blocks in a parity delta). */
let zeroBlock = new Uint8Array(ZERO_CHUNK);
function zeroes(len: number): Uint8Array {
  if (zeroBlock.length < len) zeroBlock = new Uint8Array(len);
  return zeroBlock.subarray(0, len);
}

/** Staging slabs by power-of-two size, kept after use up to a limit. */
class StagingPool {
  private readonly free = new Map<number, Uint8Array[]>();
  private kept = 0;

  constructor(private readonly limit: number) {}

  /** A slab of at least `len` bytes (contents undefined). */
  take(len: number): Uint8Array {
    const size = Math.max(PAGE, 2 ** Math.ceil(Math.log2(Math.max(1, len))));
    const b = this.free.get(size)?.pop();
    if (b !== undefined) {
      this.kept -= size;
      return b;
    }
    return new Uint8Array(size);
  }

  give(b: Uint8Array): void {
    if (this.kept + b.length > this.limit) return;
    let list = this.free.get(b.length);
    if (list === undefined) this.free.set(b.length, (list = []));
    list.push(b);
    this.kept += b.length;
  }
}

/** One stripe shape: the StripeMap parity.ts takes, plus each member's role. */
interface StripePattern {
  /** mdStripeMap of a stripe with the same placement (its `stripe` and chunk numbers are not this one's). */
  map: StripeMap;
  /** Member of each data chunk, in array order. */
  dataDisk: Int32Array;
  /** Per member: its data index, ROLE_P or ROLE_Q. */
  role: Int32Array;
}

/** Receives a job's outcome. */
interface JobParent {
  jobDone(status: number, reachedAll: boolean): void;
}

interface MemberIoOwner {
  memberDone(io: MemberIo, status: number): void;
}

/** One operation on one member: the Completion handed to it. Pooled by the core. */
class MemberIo implements Completion {
  op: MemberOp = OP_READ;
  slot = 0;
  /** Relative to the member's data area. */
  memberOffset = 0;
  length = 0;
  fua = false;
  mayUnmap = false;
  tag = 0;
  owner: MemberIoOwner | null = null;
  iov = new IoVector(4);

  constructor(private readonly core: RaidCore) {}

  complete(status: number): void {
    this.core.memberDone(this, status);
  }
}

/** Zeroes a member range with ordinary writes, for members that cannot writeZeroes. */
class ZeroFill implements Completion {
  private readonly iov = new IoVector(1);
  private pos = 0;
  private cur = 0;
  private status = 0;
  private waiting = false;
  private looping = false;

  constructor(private readonly b: Backend, private readonly at: number, private readonly length: number, private readonly done: Completion) {}

  run(): void {
    this.looping = true;
    while (!this.waiting && this.pos < this.length && this.status === 0) {
      this.cur = Math.min(ZERO_CHUNK, this.length - this.pos);
      this.iov.reset();
      this.iov.push(zeroes(this.cur), 0, this.cur, 0);
      this.waiting = true;
      this.b.write(this.iov, this.at + this.pos, false, this);
    }
    this.looping = false;
    if (!this.waiting) this.done.complete(this.status);
  }

  complete(status: number): void {
    this.waiting = false;
    if (status !== 0) this.status = status;
    else this.pos += this.cur;
    if (!this.looping) this.run();
  }
}

// ------------------------------------------------------------------------------------------ the core

/** Everything the jobs share: geometry, members and their states, the lock, staging and member I/O. */
class RaidCore {
  readonly g: MdGeometry;
  readonly level: MdRaidLevel;
  readonly n: number;
  readonly parity: boolean;
  /** Chunk bytes (raid4/5/6/10); 0 for raid1. */
  readonly chunkBytes: number;
  /** Data members per stripe (raid4/5/6); 0 otherwise. */
  readonly dataDisks: number;
  /** Members a raid4/5/6 stripe can lose. */
  readonly tolerance: number;
  readonly size: number;
  readonly blockSize: number;
  readonly members: (Backend | null)[];
  readonly states: MemberState[];
  readonly counters: MemberCounters[];
  readonly lock = new RangeLock();
  readonly staging = new StagingPool(STAGING_KEEP);
  /** raid10: the member sets that hold copies of one chunk (the array survives while each keeps one). */
  private readonly copySets: number[][] = [];
  private readonly patterns = new Map<number, StripePattern>();
  private readonly period: number;
  private readonly ioPool: MemberIo[] = [];
  rr = 0;
  /**
   * Whether array bytes [offset, offset + length) may differ between mirror copies (a resync after an
   * unclean shutdown has not reached them): such reads go to the first readable copy only, as md's
   * read_balance does in a resync window, so a guest never reads two different versions of one block.
   */
  unsynced: ((offset: number, length: number) => boolean) | null = null;
  closed = false;
  /** A rebuild or scrub is running. */
  background = false;

  constructor(
    geometry: MdGeometry,
    members: (Backend | null)[],
    readonly dataOffset: number,
    readonly componentBytes: number,
    readonly intent: WriteIntent | null,
    private readonly onMemberFailed: ((slot: number, reason: string) => void) | null,
  ) {
    const componentSectors = componentBytes / SECTOR;
    this.g = geometry.level === 10 && geometry.componentSectors === undefined ? { ...geometry, componentSectors } : { ...geometry };
    const g = this.g;
    this.level = g.level;
    this.n = g.raidDisks;
    this.parity = g.level === 4 || g.level === 5 || g.level === 6;
    this.chunkBytes = g.level === 1 ? 0 : g.chunkSectors * SECTOR;
    this.dataDisks = this.parity ? mdDataDisks(g) : 0;
    this.tolerance = g.level === 6 ? 2 : 1;
    this.period = g.level === 6 ? this.n * (this.n - 1) : g.level === 5 ? this.n : 1;
    this.members = members.slice();
    this.states = members.map((m) => (m === null ? 'missing' : 'in-sync'));
    this.counters = members.map(() => ({ readErrors: 0, writeErrors: 0, correctedReads: 0 }));
    this.blockSize = members.some((m) => m !== null && m.info.blockSize === 4096) ? 4096 : 512;
    this.size = Math.floor((mdArraySectors(g, componentSectors) * SECTOR) / this.blockSize) * this.blockSize;
    if (g.level === 10) {
      for (let c = 0; c < this.n; c++) this.copySets.push(raid10FindPhys(g, c * g.chunkSectors).map((a) => a.disk));
    }
  }

  /** Member `m` may be read: in sync. */
  readable(m: number): boolean {
    return this.states[m] === 'in-sync';
  }

  /** Member `m` takes writes: in sync or being rebuilt. */
  writable(m: number): boolean {
    const s = this.states[m];
    return s === 'in-sync' || s === 'rebuilding';
  }

  /** Slots not in sync. */
  notInSync(): number {
    let k = 0;
    for (const s of this.states) if (s !== 'in-sync') k++;
    return k;
  }

  /** Whether every array byte still has a member holding it. */
  operational(): boolean {
    if (this.level === 1) return this.states.some((s) => s === 'in-sync');
    if (this.level === 10) return this.copySets.every((set) => set.some((d) => this.states[d] === 'in-sync'));
    return this.notInSync() <= this.tolerance;
  }

  /** The one door for state changes: a member turning faulty is reported once. */
  setState(slot: number, state: MemberState, reason: string): void {
    if (this.states[slot] === state) return;
    this.states[slot] = state;
    if (state === 'faulty') this.onMemberFailed?.(slot, reason);
  }

  /** Marks a member that is in use faulty (md_error). */
  fail(slot: number, reason: string): void {
    if (this.writable(slot)) this.setState(slot, 'faulty', reason);
  }

  /** The placement of stripe `stripe` (cached per residue of the layout's period). */
  pattern(stripe: number): StripePattern {
    const key = stripe % this.period;
    let p = this.patterns.get(key);
    if (p === undefined) {
      const map = mdStripeMap(this.g, key);
      const role = new Int32Array(this.n).fill(ROLE_P);
      map.data.forEach((c, k) => { role[c.disk] = k; });
      role[map.pDisk] = ROLE_P;
      if (map.qDisk !== null) role[map.qDisk] = ROLE_Q;
      p = { map, dataDisk: Int32Array.from(map.data.map((c) => c.disk)), role };
      this.patterns.set(key, p);
    }
    return p;
  }

  /** A member operation from the pool. */
  io(owner: MemberIoOwner, op: MemberOp, slot: number, memberOffset: number, length: number): MemberIo {
    const io = this.ioPool.pop() ?? new MemberIo(this);
    io.owner = owner;
    io.op = op;
    io.slot = slot;
    io.memberOffset = memberOffset;
    io.length = length;
    io.fua = false;
    io.mayUnmap = false;
    io.tag = 0;
    io.iov.reset();
    return io;
  }

  /** Points `io`'s vector at bytes [pos, pos+len) of `src` (addresses kept). */
  slice(io: MemberIo, src: IoVector, pos: number, len: number): void {
    if (io.iov.capacity < src.count) io.iov = new IoVector(src.count);
    const v = io.iov;
    v.reset();
    for (let i = 0; i < src.count && len > 0; i++) {
      const l = src.lens[i]!;
      if (pos >= l) {
        pos -= l;
        continue;
      }
      const take = Math.min(l - pos, len);
      const addr = src.addrs[i]!;
      v.push(src.bufs[i]!, src.offs[i]! + pos, take, addr !== 0 ? addr + pos : 0);
      len -= take;
      pos = 0;
    }
  }

  /** Sends `io` to its member; never outside the member's data area. */
  submit(io: MemberIo): void {
    const b = this.members[io.slot];
    if (b === null || b === undefined) return io.complete(-EIO);
    if (io.op !== OP_FLUSH) {
      const inside = io.memberOffset >= 0 && io.length >= 0 && io.memberOffset + io.length <= this.componentBytes;
      const sized = io.op !== OP_READ && io.op !== OP_WRITE ? true : io.iov.bytes === io.length;
      if (!inside || !sized) return io.complete(-EIO); // a bug here: refuse rather than touch other bytes
    }
    const at = this.dataOffset + io.memberOffset;
    switch (io.op) {
      case OP_READ:
        return b.read(io.iov, at, io);
      case OP_WRITE:
        return b.write(io.iov, at, io.fua, io);
      case OP_DISCARD:
        if (b.info.canDiscard) return b.discard(at, io.length, io);
        return this.zero(b, io, at, true);
      case OP_ZERO:
        return this.zero(b, io, at, io.mayUnmap);
      case OP_FLUSH:
        return b.flush(io);
    }
  }

  private zero(b: Backend, io: MemberIo, at: number, mayUnmap: boolean): void {
    if (b.info.canWriteZeroes) return b.writeZeroes(at, io.length, mayUnmap, io);
    new ZeroFill(b, at, io.length, io).run();
  }

  /** A member operation finished: count errors, tell its owner, return it to the pool. */
  memberDone(io: MemberIo, status: number): void {
    if (status !== 0) {
      const c = this.counters[io.slot]!;
      if (io.op === OP_READ) c.readErrors++;
      else c.writeErrors++;
    }
    const owner = io.owner!;
    owner.memberDone(io, status);
    io.owner = null;
    this.ioPool.push(io);
  }
}

// ------------------------------------------------------------------------------------------ requests

/** One array request: its jobs, its status, its write intent. */
class ArrayRequest implements JobParent {
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

interface Copy {
  disk: number;
  /** Byte offset in the member's data area. */
  offset: number;
}

function raid1Copies(core: RaidCore, arrayOffset: number): Copy[] {
  return Array.from({ length: core.n }, (_, disk) => ({ disk, offset: arrayOffset }));
}

/** Every copy of the chunk piece starting at array byte `pos` (contiguous up to the chunk's end). */
function raid10Copies(core: RaidCore, pos: number): Copy[] {
  return raid10FindPhys(core.g, pos / SECTOR).map((a) => ({ disk: a.disk, offset: a.sector * SECTOR }));
}

// ------------------------------------------------------------------------------------------ stripe jobs

const PH_IDLE = 0;
const PH_DIRECT = 1;
const PH_READ = 2;
const PH_WRITE = 3;
const TAG_PART = 0;
const TAG_FULL = 1;

/**
 * Work on one raid4/5/6 stripe under its lock, over the column range [a, a+w) of its chunks:
 * rounds of member reads (a read error adds the member to the ones to rebuild and plans again),
 * a computation, one round of member writes.
 */
abstract class StripeJob implements RangeLockHolder, MemberIoOwner {
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
class StripeReadJob extends RebuildingReadJob {
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
class StripeWholeReadJob extends RebuildingReadJob {
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
class StripeWriteJob extends StripeJob {
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
class ZeroStripesJob implements RangeLockHolder, MemberIoOwner {
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

// ------------------------------------------------------------------------------------------ mirror jobs

/**
 * One piece of a raid1/raid10 read: from one in-sync copy (round robin) straight into the caller's
 * vector; on a read error from the next copy, and then, under the range lock, the good copy is read
 * again and written over the failed ones (md's fix_read_error).
 */
class MirrorReadJob implements RangeLockHolder, MemberIoOwner {
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
class MirrorWriteJob implements RangeLockHolder, MemberIoOwner {
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

// ------------------------------------------------------------------------------------------ rebuild and scrub

/** Runs units (stripes, chunks, regions) one after the other; a Promise of the outcome. */
abstract class ArrayTask<T> implements JobParent {
  private next = 0;
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
    while (!this.running && this.next < this.total && this.failure === null) {
      this.running = true;
      this.startUnit(this.next++);
    }
    this.looping = false;
    if (this.running || this.settled || (this.next < this.total && this.failure === null)) return;
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
function unitBytes(core: RaidCore): number {
  if (core.parity) return core.chunkBytes * core.dataDisks;
  if (core.level === 10) return core.chunkBytes;
  return MIRROR_UNIT;
}

/** Units of the array for rebuild and scrub: stripes (raid4/5/6), chunks (raid10) or MIRROR_UNIT regions (raid1). */
function unitCount(core: RaidCore): number {
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

class RebuildTask extends ArrayTask<void> {
  constructor(core: RaidCore, private readonly target: number, progress: RaidProgress | undefined) {
    super(core, unitCount(core), progress);
  }

  protected startUnit(i: number): void {
    const core = this.core;
    if (core.parity) return new RebuildStripeJob(core, this, i, this.target).start();
    const u = mirrorUnit(core, i);
    if (!u.copies.some((c) => c.disk === this.target)) return this.jobDone(0);
    new MirrorRebuildJob(core, this, u.lo, u.len, u.copies, this.target).start();
  }

  protected result(): void {}

  protected settle(ok: boolean): void {
    this.core.background = false;
    if (ok) this.core.setState(this.target, 'in-sync', 'rebuilt');
    else this.core.fail(this.target, `rebuild aborted: ${this.failure}`);
  }
}

/** Scrubs units [first, first + count); mirror units are cut to array bytes [lo, hi). */
class ScrubTask extends ArrayTask<ScrubResult> {
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
   * Resolves when the slot is in sync; rejects, with the slot faulty, when a unit cannot be rebuilt
   * (too many other members failing) or written. The slot's previous Backend is not closed.
   */
  rebuild(slot: number, member: Backend, progress?: RaidProgress): Promise<void> {
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
    return new RebuildTask(core, slot, progress).run();
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
