// An md array at work: the RAID layer over its members with the array's bitmap, failures recorded in the superblocks, dirty and clean, resync, rebuild.
//
// array.ts owns the superblocks and raid-backend.ts moves the data; this file joins them the way md's
// core joins a personality to its metadata, for `twindisk raid ...` and `twindisk serve --raid`:
//
//   - The array's write-intent bitmap is the RAID layer's WriteIntent, behind one more step: the first
//     write waits until the superblocks say dirty (md's md_write_start), so a crash is always followed
//     by a resync of what the bitmap says (or of everything, without a bitmap). The array stays dirty
//     until close() records it clean (md would also go clean after an idle safe-mode delay: not done).
//   - A member the RAID layer fails (an I/O error, fail()) is failed in every superblock through the
//     array's one door (MdArray.markFaulty, as MdArray.memberFailed does), and I/O goes on degraded;
//     a member whose metadata write fails is failed in the RAID layer too.
//   - Resync is md's: a "repair" of each dirty region (the bitmap's, or from resync_offset on without
//     one), in slices with a turn of the event loop between them, so a served array keeps serving.
//     Each region is marked in sync in the bitmap as it is done; at the end resync_offset is MaxSector.
//     A stopped resync without a bitmap records how far it got.
//   - Rebuild onto a new member: its superblock and bitmap are written (MdArray.addMember), the RAID
//     layer copies the slot's data onto it (under a rate limit: PacedBackend), then recovery is recorded
//     done. An interrupted rebuild leaves the member "recovering" from 0; rebuilding onto it again
//     starts over.
import { PacedBackend } from '../paced-backend.js';
import {
  MdArrayError, assembleArray, createArray, type AssembleArrayOptions, type CreateArrayOptions, type MdArray, type MemberIo,
} from './array.js';
import { mdDataDisks } from './geometry.js';
import { MD_MAX_SECTOR, SECTOR } from './md-constants.js';
import { RaidBackend, type ScrubRange, type WriteIntent } from './raid-backend.js';

/** What a volume tells its owner. */
export interface RaidVolumeEvents {
  /** The RAID layer failed the member in `slot` (an I/O error, or fail()); the superblocks are being updated. */
  onMemberFailed?(slot: number, member: string, reason: string): void;
  /** The superblocks now record that member as faulty (events + 1 on the others). */
  onFailureRecorded?(slot: number, member: string): void;
  /** A metadata update the volume made on its own failed (the array may have stopped). */
  onError?(error: Error): void;
}

/** Progress of long work: bytes done of total (array bytes for scrub and resync, member bytes for a rebuild). */
export type WorkProgress = (done: number, total: number) => void;

export interface WorkOptions {
  progress?: WorkProgress;
  /** Bytes a second: read by a scrub or resync, written to the new member by a rebuild; 0 or absent: no limit. */
  bytesPerSecond?: number;
  /** Asked between slices of a scrub or resync: true stops it there. */
  stopped?(): boolean;
}

export interface ScrubReport {
  /** md's mismatch_cnt: sectors found inconsistent (and rewritten, in a repair or resync). */
  mismatches: number;
  /** Array bytes covered. */
  arrayBytes: number;
  /** Member bytes read. */
  bytesRead: number;
  /** It stopped early (WorkOptions.stopped). */
  stopped: boolean;
}

export interface ResyncReport extends ScrubReport {
  /** Dirty regions (runs of bitmap chunks, or the one region from resync_offset on). */
  regions: number;
}

/** How often a rebuild records how far it got (md's recovery_offset), so a clean shutdown does not throw it away. */
export const CHECKPOINT_MS = 1000;

/** md's safe_mode_delay: an array with no write in flight for this long is recorded clean. */
export const SAFE_MODE_MS = 200;

/** Array bytes a scrub or resync covers between two turns of the event loop (at least one unit). */
const SLICE_BYTES = 4 << 20;

/** An assembled (or created) md array serving I/O through `backend`; see the file comment. */
export class RaidVolume {
  readonly backend: RaidBackend;
  /** What runs in the background now, with its progress (for status). */
  work: { action: 'resync' | 'check' | 'repair' | 'rebuild'; done: number; total: number } | null = null;
  private dirtyState: 'clean' | 'marking' | 'dirty' | 'cleaning' = 'clean';
  /** Writes between the intent's begin and end. */
  private writing = 0;
  private safeTimer: NodeJS.Timeout | null = null;
  /** Times the array went clean while idle (md's safe mode). */
  safeModeCleans = 0;
  private readonly held: (() => void)[] = [];
  private failure: Error | null = null;
  private closing = false;
  private running: Promise<unknown> | null = null;

  /** Assembles the array on `members` (nothing written; see assembleArray) and puts the RAID layer over it. */
  static async assemble(members: readonly MemberIo[], opts: AssembleArrayOptions & RaidVolumeEvents = {}): Promise<RaidVolume> {
    let vol: RaidVolume | null = null;
    const array = await assembleArray(members, { ...opts, onMemberFailed: (slot, m, reason) => vol?.metadataFailed(slot, m.name, reason) });
    vol = new RaidVolume(array, opts);
    return vol;
  }

  /** Creates the array on `members` (null: missing; see createArray) and puts the RAID layer over it. */
  static async create(members: readonly (MemberIo | null)[], opts: CreateArrayOptions & RaidVolumeEvents): Promise<RaidVolume> {
    let vol: RaidVolume | null = null;
    const array = await createArray(members, { ...opts, onMemberFailed: (slot, m, reason) => vol?.metadataFailed(slot, m.name, reason) });
    vol = new RaidVolume(array, opts);
    return vol;
  }

  private constructor(readonly array: MdArray, private readonly events: RaidVolumeEvents) {
    this.backend = new RaidBackend({
      geometry: array.geometry,
      members: array.slots.map((m) => m?.backend ?? null),
      dataOffset: array.dataOffset,
      componentBytes: array.componentBytes,
      intent: this.intent,
      name: `md:${array.name}`,
      onMemberFailed: (slot, reason) => this.memberFailed(slot, reason),
    });
    this.guardUnsynced(array.resyncRegions().map((r) => ({ offset: r.arrayOffset, length: r.arrayLength })));
  }

  /** Regions a resync has still to reach; mirror reads there take the first copy (RaidBackend.setUnsynced). */
  private unsynced: ScrubRange[] = [];

  private guardUnsynced(ranges: ScrubRange[]): void {
    this.unsynced = ranges;
    this.backend.setUnsynced(ranges.length === 0 ? null : (offset, length) => this.unsynced.some((r) => offset < r.offset + r.length && r.offset < offset + length));
  }

  /** The last metadata update that failed (here, in the array, or in its bitmap), or null. */
  get lastError(): Error | null {
    return this.failure ?? this.array.lastError ?? this.array.bitmap?.lastError ?? null;
  }

  // ------------------------------------------------------------------------------------ member changes

  /** Fails the member in `slot` (mdadm --fail): recorded in every superblock, then no longer read or written. */
  async fail(slot: number, reason = 'failed on request'): Promise<void> {
    const st = this.array.states[slot];
    if (st !== undefined && st.state !== 'missing') this.failedNames.set(slot, st.member.name);
    await this.array.markFaulty(slot);
    if (this.backend.memberStates()[slot] !== 'faulty') this.backend.failMember(slot, reason);
  }

  /** Removes the failed member of `slot` from the superblocks (mdadm --remove). */
  remove(slot: number): Promise<void> {
    return this.array.markRemoved(slot);
  }

  /**
   * Rebuilds `slot` onto `member` (mdadm --add or --replace, then md's recovery): written to its
   * superblock and bitmap, the slot's data copied onto it, recovery recorded done. `member` may be
   * the member already recovering in that slot (an interrupted rebuild: it starts over). Once no slot
   * is missing and no resync is pending, every bitmap bit is cleared: the members hold the same data.
   */
  /**
   * Member sectors a rebuild of `slot` resumes after (its recovery checkpoint), or 0: the slot is not
   * being rebuilt, the array was not stopped clean (writes below the checkpoint may not have reached
   * the member), or this level keeps no checkpoint (raid10).
   */
  resumeSectors(slot: number): number {
    const st = this.array.states[slot];
    if (st?.state !== 'recovering' || !this.array.clean || this.backend.rebuiltSectors(1) === null) return 0;
    return st.recoveryOffset;
  }

  async rebuild(slot: number, member: MemberIo, o: WorkOptions = {}): Promise<{ stopped: boolean }> {
    const st = this.array.states[slot];
    if (st === undefined) throw new MdArrayError('options', `slot ${slot} is not in this ${this.array.geometry.raidDisks}-member array`);
    const resume = st.state === 'recovering' && st.member === member;
    // md's recovery_offset: a rebuild stopped by a clean shutdown goes on from its checkpoint. After a
    // crash (the array dirty) writes below it may not have reached the member: it starts over.
    const from = resume ? this.backend.rebuildUnitAt(this.resumeSectors(slot)) : 0;
    const target: MemberIo = o.bytesPerSecond ? { name: member.name, backend: new PacedBackend(member.backend, { bytesPerSecond: o.bytesPerSecond }) } : member;
    if (!resume) await this.array.addMember(slot, target);
    const total = this.array.componentBytes;
    this.work = { action: 'rebuild', done: 0, total };
    // Over synchronous members a whole rebuild would run inside one call: the paced target hands each
    // completion back on a later turn, so progress is shown and signals are taken.
    const paced = target.backend instanceof PacedBackend ? target.backend : new PacedBackend(target.backend);
    // The checkpoint: every CHECKPOINT_MS, the units done so far are flushed on the new member and then
    // recorded as its recovery offset (never ahead of what is durable there).
    let lastCheckpoint = Date.now();
    let checkpointing: Promise<void> = Promise.resolve();
    const checkpoint = (units: number): Promise<void> => {
      const sectors = this.backend.rebuiltSectors(units);
      if (sectors === null || sectors === 0) return checkpointing;
      checkpointing = checkpointing
        .then(() => new Promise<void>((resolve, reject) => paced.flush({ complete: (st2) => (st2 === 0 ? resolve() : reject(new Error(`flush failed (${st2})`))) })))
        .then(() => this.array.recordRecovery(slot, sectors))
        .catch((e: unknown) => this.reportError(e));
      return checkpointing;
    };
    let outcome;
    try {
      outcome = await this.backend.rebuild(slot, paced, (done, units) => {
        this.work = { action: 'rebuild', done: Math.round((done / units) * total), total };
        o.progress?.(this.work.done, total);
        if (Date.now() - lastCheckpoint >= CHECKPOINT_MS && done < units) {
          lastCheckpoint = Date.now();
          void checkpoint(done);
        }
      }, { fromUnit: from, ...(o.stopped ? { stopped: o.stopped } : {}) });
    } catch (e) {
      throw new MdArrayError('io', `rebuilding slot ${slot} onto ${member.name} failed: ${(e as Error).message}`, member.name);
    } finally {
      this.work = null;
    }
    if (outcome.stopped) {
      await checkpoint(outcome.unitsDone);
      return { stopped: true };
    }
    await checkpointing;
    await this.array.recordRecovery(slot, 'done');
    const bm = this.array.bitmap;
    if (bm !== null && this.backend.degraded === 0 && this.array.resyncOffset === MD_MAX_SECTOR) {
      bm.markInSync({ start: 0, end: bm.syncSectors });
      await bm.flushClean();
    }
    return { stopped: false };
  }

  // ------------------------------------------------------------------------------ scrub and resync

  /** md's check or repair over the whole array, in slices; refused while degraded. */
  scrub(mode: 'check' | 'repair', o: WorkOptions = {}): Promise<ScrubReport> {
    return this.background(this.sliced(mode, mode, [{ offset: 0, length: this.backend.info.size }], o));
  }

  /**
   * Resyncs what may be out of sync (MdArray.resyncRegions: the dirty bitmap regions, or everything
   * from resync_offset on without a bitmap): a repair of each region, marked in sync as it is done;
   * resync_offset becomes MaxSector at the end. Refused while degraded (md resyncs a whole array only;
   * a rebuild brings the missing member back from the others). Nothing to do resolves at once.
   */
  resync(o: WorkOptions = {}): Promise<ResyncReport> {
    return this.background(this.resyncNow(o));
  }

  private async resyncNow(o: WorkOptions): Promise<ResyncReport> {
    const regions = this.array.resyncRegions();
    const none: ResyncReport = { regions: 0, arrayBytes: 0, bytesRead: 0, mismatches: 0, stopped: false };
    if (regions.length === 0) {
      if (this.array.resyncOffset !== MD_MAX_SECTOR) await this.array.recordResync(MD_MAX_SECTOR);
      return none;
    }
    const degraded = this.backend.degraded;
    if (degraded > 0) {
      throw new MdArrayError(
        'state',
        `the array is degraded (${degraded} of ${this.array.geometry.raidDisks} members not in sync): a resync needs every member; rebuild the missing one first (twindisk raid add)`,
      );
    }
    const bm = this.array.bitmap;
    const ranges = regions.map((r) => ({ offset: r.arrayOffset, length: r.arrayLength }));
    this.guardUnsynced(ranges.slice());
    const report = await this.sliced('resync', 'repair', ranges, o, (i) => {
      bm?.markInSync(regions[i]!);
      this.guardUnsynced(this.unsynced.filter((r) => r !== ranges[i]));
    });
    if (report.stopped) {
      if (bm === null && report.doneTo !== null) await this.array.recordResync(BigInt(this.syncSectorOf(report.doneTo)));
    } else {
      await this.array.recordResync(MD_MAX_SECTOR);
      await bm?.flushClean();
    }
    return { regions: regions.length, arrayBytes: report.arrayBytes, bytesRead: report.bytesRead, mismatches: report.mismatches, stopped: report.stopped };
  }

  /** Runs `p` as the volume's background work (close() waits for it). */
  private background<T>(p: Promise<T>): Promise<T> {
    this.running = p.catch(() => undefined);
    return p;
  }

  /**
   * Scrubs `ranges` in slices of SLICE_BYTES (cut at unit boundaries), yielding to the event loop and
   * keeping under the rate between slices; `regionDone(i)` after range i. `doneTo`: where a stopped
   * run got to in its first unfinished range (null when none was started).
   */
  private async sliced(
    action: 'check' | 'repair' | 'resync',
    mode: 'check' | 'repair',
    ranges: readonly ScrubRange[],
    o: WorkOptions,
    regionDone?: (i: number) => void,
  ): Promise<ScrubReport & { doneTo: number | null }> {
    const unit = this.unitBytes();
    const slice = Math.max(unit, Math.floor(SLICE_BYTES / unit) * unit);
    const total = ranges.reduce((n, r) => n + r.length, 0);
    const out = { mismatches: 0, arrayBytes: 0, bytesRead: 0, stopped: false, doneTo: null as number | null };
    const t0 = performance.now();
    this.work = { action, done: 0, total };
    try {
      for (let i = 0; i < ranges.length; i++) {
        const r = ranges[i]!;
        const end = r.offset + r.length;
        for (let pos = r.offset; pos < end;) {
          if (this.closing || o.stopped?.()) {
            out.stopped = true;
            out.doneTo = pos;
            return out;
          }
          const next = Math.min(end, (Math.floor(pos / slice) + 1) * slice);
          const res = await this.backend.scrub(mode, undefined, { offset: pos, length: next - pos });
          out.mismatches += res.mismatches;
          out.bytesRead += res.bytesRead;
          out.arrayBytes += next - pos;
          pos = next;
          this.work = { action, done: out.arrayBytes, total };
          o.progress?.(out.arrayBytes, total);
          // A turn of the event loop (guest requests, signals, timers), longer when over the rate.
          const due = o.bytesPerSecond ? t0 + (out.bytesRead * 1000) / o.bytesPerSecond - performance.now() : 0;
          await new Promise<void>((resolve) => (due >= 1 ? setTimeout(resolve, due) : setImmediate(resolve)));
        }
        regionDone?.(i);
      }
      return out;
    } finally {
      this.work = null;
    }
  }

  /** Array bytes of one scrub unit: a stripe's data (raid4/5/6), a chunk (raid10), 64 KiB (raid1). */
  private unitBytes(): number {
    const g = this.array.geometry;
    if (g.level === 4 || g.level === 5 || g.level === 6) return g.chunkSectors * SECTOR * mdDataDisks(g);
    if (g.level === 10) return g.chunkSectors * SECTOR;
    return 64 * 1024;
  }

  /** The sync sector (md's resync position) at array byte `pos`, a unit boundary. */
  private syncSectorOf(pos: number): number {
    const g = this.array.geometry;
    if (g.level === 4 || g.level === 5 || g.level === 6) return Math.floor(pos / (mdDataDisks(g) * SECTOR));
    return Math.floor(pos / SECTOR);
  }

  // -------------------------------------------------------------------------------------------- close

  /**
   * Stops background work, flushes, and records the array clean (idle bitmap bits cleared first);
   * then closes the members. The superblocks say dirty afterwards only if that last update failed.
   */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    if (this.safeTimer !== null) clearTimeout(this.safeTimer);
    await this.running;
    try {
      await new Promise<void>((resolve) => this.backend.flush({ complete: () => resolve() }));
      await this.array.recordClean();
    } finally {
      this.array.close();
      this.backend.close();
    }
  }

  // ------------------------------------------------------------------------------------------ inside

  /** The RAID layer's write intent: the superblocks say dirty first, then the bitmap's bits. */
  private readonly intent: WriteIntent = {
    begin: (offset, length, ready) => {
      this.writing++;
      if (this.safeTimer !== null) {
        clearTimeout(this.safeTimer);
        this.safeTimer = null;
      }
      if (this.dirtyState === 'dirty') return this.beginWrite(offset, length, ready);
      this.held.push(() => this.beginWrite(offset, length, ready));
      if (this.dirtyState === 'clean') this.markDirty();
    },
    end: (offset, length, reachedAll) => {
      this.array.bitmap?.end(offset, length, reachedAll);
      if (--this.writing === 0 && this.dirtyState === 'dirty' && !this.closing) this.armSafeMode();
    },
  };

  /**
   * md's safe mode: once no write has been in flight for SAFE_MODE_MS, the members are flushed and the
   * superblocks say clean again, so a crash of an idle array needs no resync (the bitmap's bits are left
   * to its own lazy clearing: they describe regions whose writes are now on every member); the next
   * write marks it dirty again (markDirty). Not while a resync or rebuild runs: it
   * records its own progress, and clean at its end.
   */
  private armSafeMode(): void {
    this.safeTimer = setTimeout(() => {
      this.safeTimer = null;
      if (this.writing !== 0 || this.dirtyState !== 'dirty' || this.closing || this.work !== null) return;
      this.dirtyState = 'cleaning';
      new Promise<void>((resolve) => this.backend.flush({ complete: () => resolve() }))
        .then(() => (this.writing === 0 && this.held.length === 0 ? this.array.recordClean(true).then(() => { this.safeModeCleans++; }) : undefined))
        .catch((e: unknown) => this.reportError(e))
        .finally(() => {
          this.dirtyState = this.array.markedDirty ? 'dirty' : 'clean';
          if (this.held.length > 0) {
            if (this.dirtyState === 'dirty') for (const go of this.held.splice(0)) go();
            else this.markDirty();
          }
        });
    }, SAFE_MODE_MS);
    this.safeTimer.unref();
  }

  private beginWrite(offset: number, length: number, ready: () => void): void {
    const bm = this.array.bitmap;
    if (bm === null) ready();
    else bm.begin(offset, length, ready);
  }

  /**
   * md_write_start: the first write waits for the superblocks to say dirty. Should no member take that
   * update, the array has failed (its members' writes fail as well): the writes are let go to meet
   * their errors, and the failure is reported.
   */
  private markDirty(): void {
    this.dirtyState = 'marking';
    this.array.recordDirty().catch((e: unknown) => this.reportError(e)).finally(() => {
      this.dirtyState = 'dirty';
      for (const go of this.held.splice(0)) go();
    });
  }

  /** Members failed on request (fail()), by slot: already out of the superblocks when the RAID layer reports them. */
  private readonly failedNames = new Map<number, string>();

  /** The RAID layer failed `slot`: recorded in the superblocks through the array's door. */
  private memberFailed(slot: number, reason: string): void {
    const st = this.array.states[slot];
    const name = st !== undefined && st.state !== 'missing' ? st.member.name : this.failedNames.get(slot) ?? `slot ${slot}`;
    this.failedNames.delete(slot);
    this.events.onMemberFailed?.(slot, name, reason);
    this.array.markFaulty(slot).then(
      () => this.events.onFailureRecorded?.(slot, name),
      (e: unknown) => this.reportError(e),
    );
  }

  /** The array failed a member because its metadata I/O to it failed: the RAID layer stops using it too. */
  private metadataFailed(slot: number, name: string, reason: string): void {
    if (slot < 0) return;
    this.failedNames.set(slot, name);
    const s = this.backend.memberStates()[slot];
    if (s === 'in-sync' || s === 'rebuilding') this.backend.failMember(slot, `metadata write failed: ${reason}`);
  }

  private reportError(e: unknown): void {
    this.failure = e instanceof Error ? e : new Error(String(e));
    this.events.onError?.(this.failure);
  }
}
