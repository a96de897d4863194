// An md array while it serves: its members opened and locked, channel requests run on its RAID layer, the resync after an unclean stop in the background.
//
// Shared by the two owners of a served array: `twindisk serve --raid` (the array on the main thread,
// cli/serve-raid.ts) and a replicated node whose disk is an array (the array on its own thread,
// raid-disk-thread.ts). Both reach the RAID layer through shared-memory channels
// (engine/replication/channel.ts): one for each queue worker, or one for the replication engine.
import fs from 'node:fs';
import path from 'node:path';
import type { Backend, Completion } from '../backend.js';
import { DiskLockError, lockDisk, type DiskLock } from '../disk-lock.js';
import { FaultyBackend } from '../faulty-backend.js';
import { FileBackend } from '../file-backend.js';
import { IoVector } from '../iovec.js';
import type { Logger } from '../log.js';
import { EINVAL, EIO } from '../os.js';
import { CH_FUA, CH_UNMAP, ChannelOp, type ChannelRequest } from '../replication/channel.js';
import type { MemberIo } from './array.js';
import { MD_MAX_SECTOR } from './md-constants.js';
import { RaidVolume } from './raid-volume.js';

/** How often resync progress is logged. */
export const PROGRESS_LOG_MS = 2000;

/** Completes a channel slot; one per request (the data path of a RAID volume allocates this much anyway). */
class SlotCompletion implements Completion {
  constructor(private readonly r: ChannelRequest) {}
  complete(status: number): void {
    this.r.channel.complete(this.r.slot, status);
  }
}

/** Runs one channel request on the RAID layer `b`; its completion goes back on the channel. */
export function runChannelRequest(b: Backend, r: ChannelRequest, log: Logger): void {
  const done = new SlotCompletion(r);
  try {
    switch (r.op) {
      case ChannelOp.Read:
      case ChannelOp.Write: {
        if (r.length !== r.data.length) return done.complete(-EINVAL);
        const iov = new IoVector(1);
        iov.push(r.data, 0, r.data.length, 0);
        if (r.op === ChannelOp.Read) return b.read(iov, r.offset, done);
        return b.write(iov, r.offset, (r.flags & CH_FUA) !== 0, done);
      }
      case ChannelOp.Flush:
        return b.flush(done);
      case ChannelOp.Discard:
        return b.discard(r.offset, r.length, done);
      case ChannelOp.WriteZeroes:
        return b.writeZeroes(r.offset, r.length, (r.flags & CH_UNMAP) !== 0, done);
      default:
        return done.complete(-EINVAL);
    }
  } catch (e) {
    log.error(`internal error on request ${r.op} at ${r.offset}: ${(e as Error).stack ?? e}`);
    done.complete(-EIO);
  }
}

/** Thrown when no member of an array to serve exists. */
export class NoMembersError extends Error {
  override readonly name = 'NoMembersError';
}

/**
 * Locks and opens the members of an array to serve; a member file that does not exist is left out
 * (logged: the array is assembled without it, degraded if it held a slot). `purpose` completes
 * "cannot ..." in a lock refusal.
 */
export function openServedMembers(paths: readonly string[], purpose: string, log: Logger): { members: MemberIo[]; locks: DiskLock[] } {
  const locks: DiskLock[] = [];
  const members: MemberIo[] = [];
  try {
    for (const p of paths) {
      const abs = path.resolve(p);
      try {
        locks.push(lockDisk(abs, `${purpose} ${p}`));
      } catch (e) {
        if (e instanceof DiskLockError && e.code === 'missing') {
          log.warn(`member ${p} does not exist: the array is assembled without it (degraded if it held a slot)`);
          continue;
        }
        throw e;
      }
      // Behind a FaultyBackend, which passes everything on until `raid inject` asks it to fail (membership.ts).
      members.push({ name: p, backend: new FaultyBackend(new FileBackend({ path: abs })) });
    }
  } catch (e) {
    for (const m of members) m.backend.close();
    for (const l of locks) l.release();
    throw e;
  }
  if (members.length === 0) throw new NoMembersError(`none of the members exists (${paths.join(', ')}): create the array first (twindisk raid create)`);
  return { members, locks };
}

/**
 * After an unclean stop: resyncs the dirty regions (the bitmap's, or everything from resync_offset)
 * while the array serves, progress logged. A degraded array keeps them marked until its rebuild.
 */
export function resyncWhileServing(vol: RaidVolume, log: Logger): Promise<void> {
  const arr = vol.array;
  if (arr.resyncOffset === MD_MAX_SECTOR) return Promise.resolve();
  if (vol.backend.degraded > 0) {
    log.warn('the array was not shut down cleanly but is degraded: its dirty regions stay marked until the missing member is rebuilt (twindisk raid add), which rewrites them');
    return Promise.resolve();
  }
  const regions = arr.resyncRegions();
  const bytes = regions.reduce((n, r) => n + r.arrayLength, 0);
  log.info(`resync started while serving: ${regions.length} region(s), ${(bytes / 2 ** 20).toFixed(1)} MiB of the array`, {
    regions: regions.length, arrayBytes: bytes, bitmap: arr.bitmap !== null,
  });
  let last = Date.now();
  return vol.resync({
    progress: (done, total) => {
      if (Date.now() - last < PROGRESS_LOG_MS) return;
      last = Date.now();
      log.info('resync', { done, total, percent: total > 0 ? Math.floor((done / total) * 1000) / 10 : 100 });
    },
  }).then(
    (r) => log.info(r.stopped ? 'resync stopped by the shutdown: it goes on at the next start' : 'resync finished', {
      regions: r.regions, arrayBytes: r.arrayBytes, bytesRead: r.bytesRead, mismatches: r.mismatches,
    }),
    (e: Error) => log.error(`resync failed: ${e.message}`),
  );
}

/** A new member opened (and locked) for a rebuild while serving. */
export interface NewMember {
  member: MemberIo;
  /** The file, when this call created it (removed again if the rebuild does not start). */
  created: string[];
  close(): void;
}

/**
 * Locks and opens a new member `file` (shown as `name`) for a rebuild while serving; with `createSize`,
 * a missing file is created (sparse) with that size.
 */
export function openNewMember(file: string, name: string, purpose: string, createSize?: number): NewMember {
  const existed = fs.existsSync(file);
  if (!existed && createSize === undefined) {
    throw new NoMembersError(`${name}: no such file or device (a new member file: pass --size to create it)`);
  }
  if (!existed) fs.mkdirSync(path.dirname(file), { recursive: true });
  const lock = lockDisk(file, `${purpose} ${name}`, { create: !existed });
  try {
    if (createSize !== undefined && fs.statSync(file).isFile() && fs.statSync(file).size === 0) fs.truncateSync(file, createSize);
    const member: MemberIo = { name, backend: new FaultyBackend(new FileBackend({ path: file })) };
    return {
      member, created: existed ? [] : [file],
      close: () => {
        member.backend.close();
        lock.release();
      },
    };
  } catch (e) {
    lock.release();
    if (!existed) fs.rmSync(file, { force: true });
    throw e;
  }
}

/** An array assembled to be served, with its members' files and locks (the caller's to close and release). */
export interface ServedArray {
  vol: RaidVolume;
  members: MemberIo[];
  locks: DiskLock[];
}

/**
 * Opens and locks `paths` (openServedMembers) and assembles the array on them, as both owners of a
 * served array do: a member the array fails is logged (and `onMemberFailed` told), then logged again
 * once its failure is in the other superblocks; members left out and the array's shape are logged.
 * Nothing stays open or locked when it throws.
 */
export async function assembleServed(
  paths: readonly string[], purpose: string, log: Logger,
  o: { startDirtyDegraded: boolean; onMemberFailed?(slot: number, member: string): void },
): Promise<ServedArray> {
  const { members, locks } = openServedMembers(paths, purpose, log);
  let vol: RaidVolume;
  try {
    vol = await RaidVolume.assemble(members, {
      startDirtyDegraded: o.startDirtyDegraded,
      onMemberFailed: (slot, m, reason) => {
        const name = typeof m === 'string' ? m : m.name;
        log.error(`member ${name} (slot ${slot}) failed: ${reason}; the array goes on degraded`, { slot });
        o.onMemberFailed?.(slot, name);
      },
      onFailureRecorded: (slot, name) => log.warn(`member ${name} (slot ${slot}) is recorded faulty in the other members' superblocks`, {
        slot, events: vol.array.events, degraded: vol.backend.degraded,
      }),
      onError: (e) => log.error(`array metadata update failed: ${e.message}`),
    });
  } catch (e) {
    for (const m of members) m.backend.close();
    for (const l of locks) l.release();
    throw e;
  }
  const arr = vol.array;
  for (const l of arr.leftOut) log.warn(`left out ${l.reason}`);
  const slots = arr.states.map((st) => (st.state === 'in-sync' ? st.member.name : st.state === 'recovering' ? `${st.member.name}(rebuilding)` : '-')).join(',');
  log.info('array assembled', {
    level: `raid${arr.geometry.level}`, uuid: arr.uuid, size: vol.backend.info.size, slots, events: arr.events, clean: arr.clean, degraded: vol.backend.degraded,
  });
  return { vol, members, locks };
}
