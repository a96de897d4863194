// What every RAID job shares: the array's geometry, members and their states, the lock on stripes or byte ranges, staging buffers and pooled member I/O.
//
// RaidBackend (raid-backend.ts) owns one RaidCore and hands it to every job (stripe-jobs.ts,
// mirror-jobs.ts, rebuild-scrub.ts). Jobs reach members only through it: io() takes a pooled MemberIo,
// submit() sends it, never outside the member's data window, and memberDone() counts errors and
// returns it to the pool. State changes go through setState() and fail().
import type { Backend, Completion } from '../backend.js';
import { IoVector } from '../iovec.js';
import { EIO } from '../os.js';
import { mdArraySectors, mdDataDisks, mdStripeMap, raid10FindPhys, type MdGeometry, type MdRaidLevel, type StripeMap } from './geometry.js';
import type { MemberCounters, MemberState, WriteIntent } from './raid-backend.js';
import { RangeLock } from './range-lock.js';

// ------------------------------------------------------------------------------------------ constants

export const SECTOR = 512;
/** Scrub compares in pages of this size, as md's stripe cache does (its mismatch_cnt counts them in sectors). */
export const PAGE = 4096;
/** Staging bytes kept for reuse once freed. */
const STAGING_KEEP = 64 * 1024 * 1024;
/** Largest write used to zero a member that cannot writeZeroes itself. */
const ZERO_CHUNK = 1024 * 1024;

export const OP_READ = 0;
export const OP_WRITE = 1;
export const OP_ZERO = 2;
export const OP_DISCARD = 3;
export const OP_FLUSH = 4;
export type MemberOp = typeof OP_READ | typeof OP_WRITE | typeof OP_ZERO | typeof OP_DISCARD | typeof OP_FLUSH;

const ROLE_P = -1;
const ROLE_Q = -2;

/** Where a job is: idle, a direct (unlocked) read, a round of reads, a round of writes. */
export const PH_IDLE = 0;
export const PH_DIRECT = 1;
export const PH_READ = 2;
export const PH_WRITE = 3;

// ------------------------------------------------------------------------------------------ small parts

/** Zeroes that are only ever read (sources of zero writes, zero blocks in a parity delta). */
let zeroBlock = new Uint8Array(ZERO_CHUNK);
export function zeroes(len: number): Uint8Array {
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
export interface StripePattern {
  /** mdStripeMap of a stripe with the same placement (its `stripe` and chunk numbers are not this one's). */
  map: StripeMap;
  /** Member of each data chunk, in array order. */
  dataDisk: Int32Array;
  /** Per member: its data index, ROLE_P or ROLE_Q. */
  role: Int32Array;
}

/** Receives a job's outcome. */
export interface JobParent {
  jobDone(status: number, reachedAll: boolean): void;
}

export interface MemberIoOwner {
  memberDone(io: MemberIo, status: number): void;
}

/** One operation on one member: the Completion handed to it. Pooled by the core. */
export class MemberIo implements Completion {
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
export class RaidCore {
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

// ------------------------------------------------------------------------------------------ mirror copies

export interface Copy {
  disk: number;
  /** Byte offset in the member's data area. */
  offset: number;
}

export function raid1Copies(core: RaidCore, arrayOffset: number): Copy[] {
  return Array.from({ length: core.n }, (_, disk) => ({ disk, offset: arrayOffset }));
}

/** Every copy of the chunk piece starting at array byte `pos` (contiguous up to the chunk's end). */
export function raid10Copies(core: RaidCore, pos: number): Copy[] {
  return raid10FindPhys(core.g, pos / SECTOR).map((a) => ({ disk: a.disk, offset: a.sector * SECTOR }));
}
