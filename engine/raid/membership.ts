// A served array managed while it serves (mdadm --manage --fail/--remove/--add/--replace, and md's sync_action check/repair): the checks, the background work, its stop at shutdown.
//
// Used by both owners of a served array (served-array.ts): `serve --raid --control PATH` and a
// replicated node whose disk is an array (its control socket). One background job runs at a time
// (a rebuild, a check or repair, or the resync): the others are refused, naming it. Errors a user
// can act on are RaidMembershipError, worded with what to do.
import fs from 'node:fs';
import path from 'node:path';
import { FaultyBackend } from '../faulty-backend.js';
import type { Logger } from '../log.js';
import { formatBytes, raidStatus, type RaidStatus } from './array-status.js';
import { MdArrayError, type MdSlotState, type MemberIo } from './array.js';
import { MD_MAX_SECTOR, MD_SB_1_2_OFFSET, MD_SB_MAGIC, SECTOR } from './md-constants.js';
import { mdUuidString } from './md-superblock.js';
import type { RaidVolume, WorkOptions } from './raid-volume.js';
import { PROGRESS_LOG_MS, openNewMember, resyncWhileServing, type NewMember } from './served-array.js';
import { IoVector } from '../iovec.js';

/** A refused membership change, or a member that cannot be read: the message says what to do. */
export class RaidMembershipError extends Error {
  override readonly name = 'RaidMembershipError';
}

/** Requests on a served array's control socket (`serve --raid --control PATH`, or a node's whose disk is an array): one JSON object a line, answered by one line ({ ok, result } or { ok: false, error }). */
export type RaidControlRequest =
  | { cmd: 'raid-status' }
  | { cmd: 'raid-fail'; slot: number }
  /** Drop the failed member of `slot` from the superblocks (mdadm --remove). */
  | { cmd: 'raid-remove'; slot: number }
  /** Rebuild the empty `slot` onto `member` while serving (mdadm --add). */
  | ({ cmd: 'raid-add' } & RaidRebuildRequest)
  /** Fail the member of `slot`, then rebuild it onto `member` (mdadm --replace, without reading the old member). */
  | ({ cmd: 'raid-replace' } & RaidRebuildRequest)
  /** md's `echo check > sync_action` (count mismatches) or `repair` (also rewrite them), in the background; `rate` in bytes a second. */
  | { cmd: 'raid-check'; rate?: number }
  | { cmd: 'raid-repair'; rate?: number }
  /** Asks for the resync of what an unclean stop left dirty: says whether it runs, is not needed, or waits for a rebuild. */
  | { cmd: 'raid-resync' }
  /**
   * Fault injection into the member of `slot` (a disk that fails, without root or device-mapper): reads or
   * writes of member bytes [offset, offset + length) fail with EIO (`times` times, or until cleared; a
   * read error heals once the range is rewritten, as a remapped bad sector does), the member vanishes
   * (every operation fails with ENODEV), or its faults are cleared.
   */
  | { cmd: 'raid-inject'; slot: number; kind: 'read-error' | 'write-error'; offset: number; length: number; times?: number }
  | { cmd: 'raid-inject'; slot: number; kind: 'vanish' | 'clear' };

/** A rebuild onto a new member: `member` an absolute path, `size` creates the file, `rate` in bytes a second written to it. */
export interface RaidRebuildRequest { slot: number; member: string; size?: number; rate?: number; force?: boolean }

/** The outcome of an online check or repair (md's mismatch_cnt is `mismatches`). */
export interface RaidCheckOutcome {
  /** Numbers the checks of this serve, from 1 (raid-check's answer gives it). */
  id: number;
  action: 'check' | 'repair';
  ok: boolean;
  /** A shutdown stopped it before the end. */
  stopped: boolean;
  /** Sectors found inconsistent (rewritten by a repair). */
  mismatches: number;
  arrayBytes: number;
  bytesRead: number;
  seconds: number;
  error?: string;
}

/** raid-check's and raid-repair's answer: the status, and the id the started job has in `work` and then in `lastCheck`. */
export type RaidCheckStarted = ServedRaidStatus & { checkId: number };

/** raid-resync's answer: the status and what the request found (a resync running, none needed, one waiting for a rebuild, one started). */
export type RaidResyncAnswer = ServedRaidStatus & { outcome: 'running' | 'in-sync' | 'after-rebuild' | 'started'; message: string };

/** Work running on a served array: a rebuild (with its slot and new member) or a resync. */
export interface RaidWork {
  action: 'resync' | 'check' | 'repair' | 'rebuild';
  done: number;
  total: number;
  percent: number;
  slot?: number;
  member?: string;
  /** A check or repair: its id (RaidCheckOutcome.id). */
  id?: number;
}

/** What raid-status answers: `raid status --json`'s object, the served members, and the running work. */
export interface ServedRaidStatus extends RaidStatus {
  work: RaidWork | null;
  /** The last online rebuild's outcome, once one has ended. */
  lastRebuild: { slot: number; member: string; ok: boolean; error?: string } | null;
  /** The last online check or repair's outcome, once one has ended. */
  lastCheck: RaidCheckOutcome | null;
  /** I/O errors met per slot while serving, and read errors repaired by rewriting the block (md's "read error corrected"). */
  memberErrors: { slot: number; readErrors: number; writeErrors: number; correctedReads: number }[];
}


/** The array UUID of the md superblock `m` holds at 4 KiB, or null when it holds none (no magic there). */
export function superblockUuid(m: MemberIo): string | null {
  if (m.backend.info.size < (MD_SB_1_2_OFFSET + 8) * SECTOR) return null;
  const buf = new Uint8Array(32);
  const iov = new IoVector(1);
  iov.push(buf, 0, 32, 0);
  let st = -1;
  m.backend.read(iov, MD_SB_1_2_OFFSET * SECTOR, { complete: (s) => { st = s; } });
  if (st !== 0) throw new RaidMembershipError(`${m.name}: reading its first 8 KiB failed (errno ${-st})`);
  if (new DataView(buf.buffer).getUint32(0, true) !== MD_SB_MAGIC) return null;
  return mdUuidString(buf.subarray(16, 32));
}


export function slotOf(vol: RaidVolume, slot: number): MdSlotState {
  const st = vol.array.states[slot];
  if (st === undefined) throw new RaidMembershipError(`--slot ${slot}: this array has slots 0 to ${vol.array.geometry.raidDisks - 1}`);
  return st;
}


/**
 * The checks before a rebuild onto `member` (offline add/replace, and the online add of a served array): the
 * slot exists; `member` holds no other array's superblock (unless `force`); for add, the slot is empty.
 * Returns the slot's state. `control`: the control socket the command came through (for the advice).
 */
export function checkRebuildTarget(vol: RaidVolume, kind: 'add' | 'replace', slot: number, member: MemberIo, newPath: string, force: boolean, control?: string): MdSlotState {
  const st = slotOf(vol, slot);
  const theirs = superblockUuid(member);
  if (theirs !== null && theirs !== vol.array.uuid && !force) {
    throw new RaidMembershipError(`${newPath} holds the md superblock of another array (${theirs}): rebuilding onto it destroys that array's member; give another device, or --force`);
  }
  if (kind === 'add' && st.state !== 'missing') {
    throw new RaidMembershipError(st.state === 'in-sync'
      ? control !== undefined
        ? `slot ${slot} is held by ${st.member.name}, in sync: fail it first (twindisk raid fail --control ${control} --slot ${slot}), then add`
        : `slot ${slot} is held by ${st.member.name}, in sync: replace it with twindisk raid replace --slot ${slot}, or fail it first (twindisk raid fail)`
      : control !== undefined
        ? `slot ${slot} is being rebuilt onto ${st.member.name}: wait for the rebuild (twindisk raid status --control ${control})`
        : `slot ${slot} is being rebuilt onto ${st.member.name} (interrupted): leave ${st.member.name} out of the members and add it (or another) again`);
  }
  return st;
}



/** A rebuild running while serving. */
/** A rebuild running while serving; `stop` asks it to end at its next unit (its progress is kept as md's recovery offset). */
interface OnlineRebuild { slot: number; member: string; stop: boolean; done: Promise<void> }

/** A check or repair running while serving; `stop` ends it at the next slice. */
interface OnlineCheck { id: number; action: 'check' | 'repair'; stop: boolean; done: Promise<void> }

/** Percent of `w` done, one decimal. */
function percentOf(w: { done: number; total: number }): number {
  return w.total > 0 ? Math.floor((w.done / w.total) * 1000) / 10 : 100;
}

/**
 * Managing the served array (mdadm --manage on a running array, and md's sync_action): failing,
 * removing, adding and replacing members, and checking or repairing it, one change at a time from the
 * control socket, the long work in the background, and its stop at shutdown. Every member change goes
 * through the volume (RaidVolume.fail, remove, rebuild), which records it in the superblocks before I/O
 * takes it.
 */
export class RaidMembership {
  private rebuilding: OnlineRebuild | null = null;
  private lastRebuild: ServedRaidStatus['lastRebuild'] = null;
  private checking: OnlineCheck | null = null;
  private lastCheck: RaidCheckOutcome | null = null;
  private checks = 0;
  /** New members opened (and locked) by raid-add and raid-replace: closed at shutdown. */
  private readonly added: NewMember[] = [];
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly vol: RaidVolume, private readonly served: readonly string[], private readonly control: string, private readonly log: Logger) {}

  /** One control request; changes run one after the other (status answers at once). */
  handle(r: RaidControlRequest): Promise<unknown> {
    if (r.cmd === 'raid-status') return Promise.resolve(this.status());
    const run = this.queue.catch(() => undefined).then(() => this.change(r));
    this.queue = run;
    return run;
  }

  private change(r: Exclude<RaidControlRequest, { cmd: 'raid-status' }>): Promise<unknown> {
    switch (r.cmd) {
      case 'raid-fail':
        return this.fail(r.slot);
      case 'raid-remove':
        return this.remove(r.slot);
      case 'raid-add':
        return this.rebuild('add', r);
      case 'raid-replace':
        return this.rebuild('replace', r);
      case 'raid-check':
        return this.check('check', r.rate);
      case 'raid-repair':
        return this.check('repair', r.rate);
      case 'raid-resync':
        return this.resync();
      case 'raid-inject':
        return Promise.resolve(this.inject(r));
    }
  }

  /** raid-inject: the fault goes into the slot's member (every served member is opened behind a FaultyBackend). */
  private inject(r: Extract<RaidControlRequest, { cmd: 'raid-inject' }>): { slot: number; member: string; faults: number; vanished: boolean } {
    const st = slotOf(this.vol, r.slot);
    if (st.state === 'missing') throw new RaidMembershipError(`slot ${r.slot} holds no member (${st.reason}): nothing to inject into`);
    const f = st.member.backend;
    if (!(f instanceof FaultyBackend)) throw new RaidMembershipError(`${st.member.name} (slot ${r.slot}) was not opened for fault injection`);
    switch (r.kind) {
      case 'read-error':
      case 'write-error':
        if (r.offset + r.length > f.info.size) throw new RaidMembershipError(`${r.offset}+${r.length} is past the end of ${st.member.name} (${f.info.size} bytes)`);
        f.inject({ op: r.kind === 'read-error' ? 'read' : 'write', offset: r.offset, length: r.length, healOnWrite: r.kind === 'read-error', ...(r.times !== undefined ? { times: r.times } : {}) });
        break;
      case 'vanish':
        f.vanish();
        break;
      case 'clear':
        f.clear();
        break;
    }
    this.log.warn(`fault injected into ${st.member.name} (slot ${r.slot}): ${r.kind}${'offset' in r ? ` at ${r.offset}+${r.length}${r.times !== undefined ? `, ${r.times} time(s)` : ''}` : ''}`, { slot: r.slot });
    return { slot: r.slot, member: st.member.name, faults: f.active.length, vanished: r.kind === 'vanish' };
  }

  /** `raid status --json`'s object, with the work running (rebuild, check, repair or resync) and the last rebuild's and check's outcomes. */
  status(): ServedRaidStatus {
    const w = this.vol.work;
    let work: RaidWork | null = null;
    if (w !== null) {
      work = { action: w.action, done: w.done, total: w.total, percent: percentOf(w) };
      if (w.action === 'rebuild' && this.rebuilding) Object.assign(work, { slot: this.rebuilding.slot, member: this.rebuilding.member });
      if ((w.action === 'check' || w.action === 'repair') && this.checking) work.id = this.checking.id;
    }
    const memberErrors = this.vol.array.states.map((_, slot) => ({ slot, ...this.vol.backend.memberCounters(slot) }));
    return { ...raidStatus(this.vol.array), work, lastRebuild: this.lastRebuild, lastCheck: this.lastCheck, memberErrors };
  }

  /** The refusal while background work runs (one job at a time), naming it; null when nothing runs. `then`: the command refused. */
  private busy(then: string): string | null {
    const wait = `wait for it to end (twindisk raid status --control ${this.control}), then ${then}`;
    const job = this.rebuilding;
    if (job !== null) return `a rebuild of slot ${job.slot} onto ${job.member} is running (${this.status().work?.percent ?? 0}%): one at a time (rebuild, check, repair, resync); ${wait}`;
    const w = this.vol.work;
    if (w !== null) return `a ${w.action} of the array is running (${percentOf(w)}%): one at a time (rebuild, check, repair, resync); ${wait}`;
    return null;
  }

  /** raid-fail: the slot's member is failed in the superblocks and no longer read or written (a rebuild onto it ends, and so does a check). */
  private async fail(slot: number): Promise<ServedRaidStatus> {
    const st = slotOf(this.vol, slot);
    if (st.state === 'missing') throw new RaidMembershipError(`slot ${slot} holds no member (${st.reason}): nothing to fail`);
    this.log.warn(`failing ${st.member.name} (slot ${slot}) on request`, { slot });
    await this.vol.fail(slot, 'failed with twindisk raid fail --control');
    return this.status();
  }

  /** raid-remove: the failed member of the slot is dropped from the superblocks (mdadm --remove); a member in the slot must be failed first. */
  private async remove(slot: number): Promise<ServedRaidStatus> {
    const st = slotOf(this.vol, slot);
    const failFirst = `fail it first (twindisk raid fail --control ${this.control} --slot ${slot}), then remove it`;
    if (st.state === 'in-sync') throw new RaidMembershipError(`slot ${slot} is held by ${st.member.name}, in sync: ${failFirst}`);
    if (st.state === 'recovering') throw new RaidMembershipError(`slot ${slot} is being rebuilt onto ${st.member.name}: ${failFirst} (failing it ends the rebuild)`);
    try {
      await this.vol.remove(slot);
    } catch (e) {
      if (e instanceof MdArrayError && e.code === 'state') {
        throw new RaidMembershipError(`slot ${slot} holds no failed member to remove (${st.reason}): nothing to do; the superblocks list none for it`);
      }
      throw e;
    }
    this.log.info(`removed the failed member of slot ${slot} from the superblocks on request (${st.reason})`, { slot, events: this.vol.array.events });
    return this.status();
  }

  /**
   * raid-add and raid-replace: opens (or creates) the new member and checks it; replace then fails the
   * slot's member; the new member's superblock is written and the rebuild starts in the background.
   */
  private async rebuild(kind: 'add' | 'replace', r: RaidRebuildRequest): Promise<ServedRaidStatus> {
    const busy = this.busy(kind);
    if (busy !== null) throw new RaidMembershipError(busy);
    const st0 = slotOf(this.vol, r.slot);
    if (kind === 'add' && st0.state === 'recovering') {
      throw new RaidMembershipError(`slot ${r.slot} holds ${st0.member.name}, whose rebuild was interrupted before this serve started: `
        + `replace it (twindisk raid replace --control ${this.control} --slot ${r.slot} NEW-MEMBER), or fail it (twindisk raid fail --control ${this.control} --slot ${r.slot}), then add`);
    }
    const abs = path.resolve(r.member);
    const mine = this.served.find((m) => path.resolve(m) === abs);
    if (mine !== undefined) {
      throw new RaidMembershipError(`${r.member} is one of the members the array was started with (${mine}): adding it back while serving is not supported; give a new file or device, or stop serving and use twindisk raid ${kind}`);
    }
    const fresh = openNewMember(abs, r.member, `${kind} while serving`, r.size);
    const member: MemberIo = { name: r.member, backend: fresh.member.backend };
    let started = false;
    try {
      const st = checkRebuildTarget(this.vol, kind, r.slot, fresh.member, r.member, !!r.force, this.control);
      const need = this.vol.array.dataOffset + this.vol.array.componentBytes;
      if (fresh.member.backend.info.size < need) {
        throw new RaidMembershipError(`${r.member} holds ${fresh.member.backend.info.size} bytes, less than the ${need} each member of this array needs: give a larger file or device`
          + `${fresh.created.length > 0 ? ` (--size ${need} or more)` : ''}`);
      }
      if (st.state !== 'missing') {
        // replace: md's --replace without reading the old member (see the README's "Not yet").
        this.log.warn(`replacing ${st.member.name} (slot ${r.slot}) with ${r.member} on request: ${st.member.name} is failed first; `
          + 'the array runs without its redundancy until the rebuild ends', { slot: r.slot });
        await this.vol.fail(r.slot, 'replaced with twindisk raid replace --control');
      }
      const job: OnlineRebuild = { slot: r.slot, member: r.member, stop: false, done: Promise.resolve() };
      const done = this.vol.rebuild(r.slot, member, this.rebuildOptions(job, r.rate));
      // The reply waits for the member's superblock and the new role in the others: the rebuild has started.
      const failed = await Promise.race([
        done.then(() => null, (e: unknown) => e),
        (async () => { while (this.vol.work?.action !== 'rebuild') await new Promise((res) => setTimeout(res, 2)); return null; })(),
      ]);
      if (failed !== null) {
        if (st.state !== 'missing') {
          throw new RaidMembershipError(`${st.member.name} (slot ${r.slot}) was failed, but the rebuild onto ${r.member} did not start: ${(failed as Error).message}; `
            + `the array runs degraded: add a member (twindisk raid add --control ${this.control} --slot ${r.slot} NEW-MEMBER)`);
        }
        throw failed;
      }
      started = true;
      this.added.push(fresh);
      this.log.info(`rebuild of slot ${r.slot} onto ${r.member} started while serving (${formatBytes(this.vol.array.componentBytes)})`, { slot: r.slot, member: r.member });
      this.follow(job, done);
      return this.status();
    } finally {
      if (!started) {
        fresh.close();
        for (const f of fresh.created) fs.rmSync(f, { force: true });
      }
    }
  }

  /** The options of an online rebuild: its rate, progress in the log, and `job.stop` asked between units. */
  private rebuildOptions(job: OnlineRebuild, rate: number | undefined): WorkOptions {
    let last = 0;
    return {
      ...(rate !== undefined ? { bytesPerSecond: rate } : {}),
      stopped: () => job.stop,
      progress: (d, total) => {
        if (Date.now() - last < PROGRESS_LOG_MS) return;
        last = Date.now();
        this.log.info('rebuild', { slot: job.slot, done: d, total, percent: total > 0 ? Math.floor((d / total) * 1000) / 10 : 100 });
      },
    };
  }

  /** Keeps `job` as the running rebuild until `done` settles, and logs and records how it ended. */
  private follow(job: OnlineRebuild, done: Promise<{ stopped: boolean }>): void {
    const t0 = Date.now();
    this.rebuilding = job;
    job.done = done.then(
      (o) => {
        if (o.stopped) {
          this.lastRebuild = { slot: job.slot, member: job.member, ok: false, error: 'stopped by the shutdown' };
          return;
        }
        const s = (Date.now() - t0) / 1000;
        this.lastRebuild = { slot: job.slot, member: job.member, ok: true };
        this.log.info(`rebuild of slot ${job.slot} onto ${job.member} finished in ${s.toFixed(1)} s`, {
          slot: job.slot, degraded: this.vol.backend.degraded, mdstat: raidStatus(this.vol.array).mdstat, events: this.vol.array.events,
        });
        // A dirty array served degraded kept its dirty regions for this moment: resync them now.
        if (this.vol.backend.degraded === 0 && this.vol.array.resyncOffset !== MD_MAX_SECTOR) void resyncWhileServing(this.vol, this.log);
      },
      (e: Error) => {
        this.lastRebuild = { slot: job.slot, member: job.member, ok: false, error: e.message };
        this.log.error(`rebuild of slot ${job.slot} onto ${job.member} failed: ${e.message}`, { slot: job.slot });
      },
    ).finally(() => { if (this.rebuilding === job) this.rebuilding = null; });
  }

  /**
   * At the start of serving: a member whose rebuild a shutdown stopped goes on being rebuilt, in the
   * background, from its recovery checkpoint (md does the same at assembly). Nothing when no slot is
   * being rebuilt.
   */
  resumeRecovery(): void {
    const slot = this.vol.array.states.findIndex((s) => s.state === 'recovering');
    if (slot < 0 || this.rebuilding !== null || this.vol.work !== null) return;
    const st = this.vol.array.states[slot] as Extract<MdSlotState, { state: 'recovering' }>;
    const from = this.vol.resumeSectors(slot);
    const job: OnlineRebuild = { slot, member: st.member.name, stop: false, done: Promise.resolve() };
    this.log.info(`the rebuild of slot ${slot} onto ${st.member.name} goes on while serving, from ${from > 0 ? `its checkpoint (${formatBytes(from * SECTOR)} done)` : 'the start'}`, {
      slot, member: st.member.name, recoveredBytes: from * SECTOR,
    });
    this.follow(job, this.vol.rebuild(slot, st.member, this.rebuildOptions(job, undefined)));
  }

  /**
   * raid-check and raid-repair (md's sync_action): a scrub of the whole array in the background while
   * it serves, progress in status and the log, the outcome in lastCheck and the log. Refused on a
   * degraded array (there is nothing to compare with) and while other work runs.
   */
  private check(action: 'check' | 'repair', rate?: number): Promise<RaidCheckStarted> {
    const busy = this.busy(action);
    if (busy !== null) return Promise.reject(new RaidMembershipError(busy));
    const degraded = this.vol.backend.degraded;
    if (degraded > 0) {
      const st = this.vol.array.states;
      const empty = st.findIndex((s) => s.state !== 'in-sync');
      return Promise.reject(new RaidMembershipError(`the array is degraded ${raidStatus(this.vol.array).mdstat}: a ${action} compares every member, so rebuild slot ${empty} first `
        + `(twindisk raid add --control ${this.control} --slot ${empty} NEW-MEMBER)`));
    }
    const id = ++this.checks;
    const job: OnlineCheck = { id, action, stop: false, done: Promise.resolve() };
    const total = this.vol.backend.info.size;
    const t0 = Date.now();
    let last = t0;
    let reached = 0;
    const p = this.vol.scrub(action, {
      ...(rate !== undefined ? { bytesPerSecond: rate } : {}),
      stopped: () => job.stop,
      progress: (done) => {
        reached = done;
        if (Date.now() - last < PROGRESS_LOG_MS) return;
        last = Date.now();
        this.log.info(action, { id, done, total, percent: percentOf({ done, total }) });
      },
    });
    this.checking = job;
    this.log.info(`${action} started while serving (${formatBytes(total)} of the array${rate !== undefined ? `, at most ${formatBytes(rate)}/s read` : ''})`, { id, action });
    const rewritten = action === 'repair' ? ' rewritten' : '';
    job.done = p.then(
      (r) => {
        const seconds = Math.round((Date.now() - t0) / 100) / 10;
        this.lastCheck = { id, action, ok: !r.stopped, stopped: r.stopped, mismatches: r.mismatches, arrayBytes: r.arrayBytes, bytesRead: r.bytesRead, seconds };
        const fields = { id, mismatches: r.mismatches, arrayBytes: r.arrayBytes, bytesRead: r.bytesRead };
        if (r.stopped) {
          this.log.warn(`shutdown stops the ${action} at ${percentOf({ done: r.arrayBytes, total })}% (${formatBytes(r.arrayBytes)} of ${formatBytes(total)}): `
            + `${r.mismatches} mismatched sectors${rewritten} so far; run it again once serving (twindisk raid ${action} --control ${this.control})`, fields);
          return;
        }
        this.log.info(`${action} finished in ${seconds.toFixed(1)} s: ${r.mismatches} mismatched sectors${rewritten} in ${formatBytes(r.arrayBytes)} of the array`, fields);
        if (action === 'check' && r.mismatches > 0) {
          this.log.warn(`the members disagree: twindisk raid repair --control ${this.control} rewrites ${this.mirrored() ? 'the other copies from the first' : 'parity from the data'}`);
        }
      },
      (e: Error) => {
        const seconds = Math.round((Date.now() - t0) / 100) / 10;
        this.lastCheck = { id, action, ok: false, stopped: false, mismatches: 0, arrayBytes: reached, bytesRead: 0, seconds, error: e.message };
        this.log.error(`${action} failed: ${e.message}${this.vol.backend.degraded > 0 ? ' (the array became degraded: rebuild the missing slot, then run it again)' : ''}`, { id });
      },
    ).finally(() => { if (this.checking === job) this.checking = null; });
    return Promise.resolve({ ...this.status(), checkId: id });
  }

  /** raid1 and raid10 compare copies; the others parity. */
  private mirrored(): boolean {
    const l = this.vol.array.geometry.level;
    return l === 1 || l === 10;
  }

  /**
   * raid-resync: a served array resyncs what an unclean stop left dirty on its own (at start, and after
   * the rebuild of a degraded one), so this says where that stands; it starts one only when one is
   * needed and none runs (an earlier one failed).
   */
  private async resync(): Promise<RaidResyncAnswer> {
    const follow = `follow it with twindisk raid status --control ${this.control}`;
    const w = this.vol.work;
    if (w?.action === 'resync') {
      return { ...this.status(), outcome: 'running', message: `a resync is running while serving (${percentOf(w)}%, ${formatBytes(w.done)} of ${formatBytes(w.total)}): nothing to start; ${follow}` };
    }
    if (this.vol.array.resyncOffset === MD_MAX_SECTOR) {
      return { ...this.status(), outcome: 'in-sync', message: 'nothing to resync: the array is in sync (a served array resyncs what an unclean stop left dirty on its own, at start)' };
    }
    if (this.vol.backend.degraded > 0) {
      const empty = this.vol.array.states.findIndex((s) => s.state !== 'in-sync');
      const how = this.rebuilding !== null
        ? `the rebuild of slot ${this.rebuilding.slot} running now rewrites them, and the resync follows it on its own`
        : `rebuild slot ${empty} (twindisk raid add --control ${this.control} --slot ${empty} NEW-MEMBER): the rebuild rewrites them, and the resync follows it on its own`;
      return { ...this.status(), outcome: 'after-rebuild', message: `the array is degraded, so its dirty regions wait for a rebuild: ${how}` };
    }
    const busy = this.busy('resync');
    if (busy !== null) throw new RaidMembershipError(busy);
    void resyncWhileServing(this.vol, this.log);
    return { ...this.status(), outcome: 'started', message: `resync started while serving (an earlier one did not finish); ${follow}` };
  }

  /** At shutdown (front-ends closed): a running check or repair stops where it is; a running rebuild is stopped and its new member ends recorded failed. */
  async stop(): Promise<void> {
    const check = this.checking;
    if (check !== null) {
      check.stop = true;
      await check.done;
    }
    const job = this.rebuilding;
    if (job === null) return;
    const kept = this.vol.backend.rebuiltSectors(1) !== null;
    this.log.warn(`shutdown stops the rebuild of slot ${job.slot} onto ${job.member} at ${this.status().work?.percent ?? 0}%: `
      + (kept ? 'its progress is recorded in the member\'s superblock (md\'s recovery offset) and it goes on from there at the next start'
        : 'it starts over at the next start (a raid10 rebuild keeps no checkpoint)'), { slot: job.slot });
    job.stop = true;
    await job.done;
  }

  /** After the volume closed: the new members' files are closed and unlocked. */
  close(): void {
    for (const f of this.added.splice(0)) f.close();
  }
}
