// `twindisk serve --raid MEMBER,...`: an md array served over vhost-user and/or iSCSI, its RAID layer on the main thread.
//
// Where the array runs. An image's queue workers each open the file themselves; an array cannot be
// opened that way: its superblocks, its write-intent bitmap and its stripe locks must have one owner,
// or two queues would write parity of one stripe at once (the write hole, in-process) and race on
// the events counter and the bitmap blocks. So the array is assembled here, on the main thread
// (engine/raid/raid-volume.ts), and each queue worker reaches it through a shared-memory channel
// (engine/replication/channel.ts), as a diskless replica reaches its node's engine: the worker opens
// a `{ kind: 'raid' }` spec (engine/open.ts), copies each request into a slot, and the main thread
// runs it on the RAID layer. The iSCSI target already runs on the main thread and uses it directly.
// The price is one copy per request and a thread hop; member I/O is synchronous pread/pwrite here.
//
// What it does, in md's order: a missing member file is left out (the array runs degraded, as md
// assembles with a disk gone); a member that fails while serving is failed in every other member's
// superblock and I/O goes on; after an unclean shutdown the dirty bitmap regions (the whole array
// without a bitmap) are resynced in the background while serving, as md does, progress logged; a
// clean shutdown (SIGINT, SIGTERM) stops the resync where it is, and records the array clean.
//
// With --control PATH, members are failed and added while serving, as `mdadm --manage --fail/--add`
// does on a running array (RaidMembership below): one JSON request a line, one answer a line, as
// daemon/control.ts speaks: raid-status, raid-fail, raid-add (a rebuild in the background).
import fs from 'node:fs';
import path from 'node:path';
import { DiskOpRunner } from '../bootimg/iscsi/disk-ops.js';
import { IscsiPortal } from '../bootimg/iscsi/portal.js';
import { makeScsiDisk } from '../bootimg/iscsi/scsi.js';
import type { ChapConfig } from '../bootimg/iscsi/chap.js';
import type { Backend, BackendInfo, Completion } from '../engine/backend.js';
import { DiskLockError, lockDisk, type DiskLock } from '../engine/disk-lock.js';
import { FileBackend } from '../engine/file-backend.js';
import { IoVector } from '../engine/iovec.js';
import type { Logger } from '../engine/log.js';
import type { BackendSpec } from '../engine/open.js';
import { EFD_CLOEXEC, EFD_NONBLOCK, EINVAL, EIO, NativeBuffer, close, eventfd, write } from '../engine/os.js';
import type { MdSlotState, MemberIo } from '../engine/raid/array.js';
import { MD_MAX_SECTOR } from '../engine/raid/md-constants.js';
import { RaidVolume } from '../engine/raid/raid-volume.js';
import { CH_FUA, CH_UNMAP, ChannelHost, ChannelOp, type ChannelRequest } from '../engine/replication/channel.js';
import type { HostPort } from '../engine/replication/config/address.js';
import { serialFor } from '../engine/serial.js';
import { VhostUserServer } from '../qemu-plugin/vhost-user/server.js';
import { CommandError } from './errors.js';
import { qemuAttachArgs } from './qemu-args.js';
import { ControlServer, parseCommandObject } from '../daemon/control.js';
import {
  checkRebuildTarget, cliError, formatBytes, openMembers as openNewMember, raidStatus,
  type OpenMembers, type RaidControlRequest, type RaidWork, type ServedRaidStatus,
} from './raid.js';

export interface RaidServeArgs {
  members: string[];
  socket: string | null;
  iscsi: HostPort | null;
  iscsiAdvertise: HostPort | null;
  targetName: string;
  chap: ChapConfig | null;
  queues: number;
  blockSize: 512 | 4096;
  pollUs: number;
  pollFixed: boolean;
  startDirtyDegraded: boolean;
  /** The control socket (`twindisk raid status|fail|add --control PATH`), or null. */
  control: string | null;
}

/** How often resync progress is logged. */
const PROGRESS_LOG_MS = 2000;

function showHostPort(hp: HostPort): string {
  return hp.host.includes(':') ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`;
}

/** Completes a channel slot; one per request (the data path of a RAID volume allocates this much anyway). */
class SlotCompletion implements Completion {
  constructor(private readonly r: ChannelRequest) {}
  complete(status: number): void {
    this.r.channel.complete(this.r.slot, status);
  }
}

/** Runs one queue worker's request on the RAID layer; its completion goes back on the channel. */
function execute(b: Backend, r: ChannelRequest, log: Logger): void {
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

/** Locks and opens the members; a member file that does not exist is left out (logged). */
function openMembers(paths: readonly string[], log: Logger): { members: MemberIo[]; locks: DiskLock[] } {
  const locks: DiskLock[] = [];
  const members: MemberIo[] = [];
  try {
    for (const p of paths) {
      const abs = path.resolve(p);
      try {
        locks.push(lockDisk(abs, `serve --raid ${p}`));
      } catch (e) {
        if (e instanceof DiskLockError && e.code === 'missing') {
          log.warn(`member ${p} does not exist: the array is assembled without it (degraded if it held a slot)`);
          continue;
        }
        throw e;
      }
      members.push({ name: p, backend: new FileBackend({ path: abs }) });
    }
  } catch (e) {
    for (const m of members) m.backend.close();
    for (const l of locks) l.release();
    throw e;
  }
  if (members.length === 0) throw new CommandError(`none of the --raid members exists (${paths.join(', ')}): create the array first (twindisk raid create)`);
  return { members, locks };
}

/** Serves the array on `a.members` until SIGINT or SIGTERM. */
export async function serveRaid(a: RaidServeArgs, log: Logger): Promise<void> {
  const { members, locks } = openMembers(a.members, log);
  let vol: RaidVolume;
  try {
    vol = await RaidVolume.assemble(members, {
      startDirtyDegraded: a.startDirtyDegraded,
      onMemberFailed: (slot, name, reason) => log.error(`member ${name} (slot ${slot}) failed: ${reason}; serving goes on degraded`, { slot }),
      onFailureRecorded: (slot, name) => log.warn(`member ${name} (slot ${slot}) is recorded faulty in the other members' superblocks`, {
        slot, events: vol.array.events, degraded: vol.backend.degraded,
      }),
      onError: (e) => log.error(`array metadata update failed: ${e.message}`),
    });
  } catch (e) {
    for (const m of members) m.backend.close();
    for (const l of locks) l.release();
    throw cliError(e);
  }
  const arr = vol.array;
  const info = vol.backend.info;
  for (const l of arr.leftOut) log.warn(`left out ${l.reason}`);
  const slots = arr.states.map((s) => (s.state === 'in-sync' ? s.member.name : s.state === 'recovering' ? `${s.member.name}(rebuilding)` : '-')).join(',');
  log.info('array assembled', {
    level: `raid${arr.geometry.level}`, uuid: arr.uuid, size: info.size, slots, events: arr.events, clean: arr.clean, degraded: vol.backend.degraded,
  });
  if (vol.backend.degraded > 0) {
    log.warn(`serving degraded: ${vol.backend.degraded} of ${arr.geometry.raidDisks} slots not in sync; rebuild ${a.control !== null ? `while serving with twindisk raid add --control ${a.control}` : 'offline with twindisk raid add (or serve with --control and add while serving)'}`);
  }

  const one = new NativeBuffer(8);
  one.u8[0] = 1;
  const wake = (fd: number): void => { write(fd, one.addr, 8); };
  const hosts: ChannelHost[] = [];
  const eventFds: number[] = [];
  const loops: Promise<void>[] = [];
  let server: VhostUserServer | null = null;
  let portal: IscsiPortal | null = null;
  let resync: Promise<void> = Promise.resolve();
  let control: ControlServer<RaidControlRequest> | null = null;
  const membership = new RaidMembership(vol, a.members, a.control ?? '', log);
  const serial = serialFor({ resource: `md:${arr.uuid}` });
  const shutdown = async (): Promise<void> => {
    await control?.close().catch((e: Error) => log.error(`control socket shutdown: ${e.message}`));
    await server?.close().catch((e: Error) => log.error(`vhost-user shutdown: ${e.message}`));
    await portal?.close().catch((e: Error) => log.error(`iSCSI shutdown: ${e.message}`));
    for (const h of hosts) h.stop();
    await Promise.all(loops);
    try {
      await membership.stop(); // a rebuild running is stopped (its member recorded failed)
      await vol.close(); // stops the resync, flushes, records the array clean, closes the members
      await resync;
    } finally {
      // A member failed while serving and replaced by a rebuild is no longer the array's to close.
      for (const m of members) m.backend.close();
      membership.close();
      for (const l of locks) l.release();
      // The workers have exited (server.close) and unmapped their ends.
      for (const h of hosts) h.close();
      for (const fd of eventFds) close(fd);
      one.free();
    }
  };

  try {
    if (info.size % a.blockSize !== 0) throw new CommandError(`the array's ${info.size} bytes are not a whole number of ${a.blockSize}-byte blocks: serve it with --block-size 512`);
    if (a.socket) {
      for (let q = 0; q < a.queues; q++) {
        const fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (fd < 0) throw new CommandError('eventfd() failed: out of file descriptors?');
        eventFds.push(fd);
        const host = new ChannelHost(fd, wake);
        hosts.push(host);
        loops.push(host.serve((r) => execute(vol.backend, r, log)));
      }
      const spec = (q: number): BackendSpec => ({ kind: 'raid', channel: hosts[q]!.spec, size: info.size, blockSize: a.blockSize, name: `md:${arr.name}` });
      // One front-end at a time: each queue's channel has one worker end (no second QEMU for a live migration on this host).
      const s = new VhostUserServer({ socketPath: a.socket, backend: spec, numQueues: a.queues, serial, pollUs: a.pollUs, pollFixed: a.pollFixed });
      await s.start();
      server = s;
    }
    if (a.iscsi) {
      const disk = makeScsiDisk({ id: `md:${arr.uuid}`, blocks: BigInt(info.size / a.blockSize), blockSize: a.blockSize, readOnly: false, serial, unmapReadsZero: false });
      const addresses: string[] = [];
      const p = new IscsiPortal({
        host: a.iscsi.host, port: a.iscsi.port, log: log.child('iscsi'),
        targets: [{ name: a.targetName, disk, addresses, runner: new DiskOpRunner(vol.backend), ...(a.chap ? { chap: a.chap } : {}) }],
      });
      await p.start();
      addresses.push(showHostPort(a.iscsiAdvertise ?? p.address));
      portal = p;
    }
    if (a.control !== null) {
      const c = new ControlServer<RaidControlRequest>(a.control, (r) => membership.handle(r), parseRaidControlRequest,
        (p) => `another process is serving control socket ${p}: stop it first, or give another --control path`);
      await c.start();
      control = c;
      log.info('control socket listening', { control: a.control });
    }
  } catch (e) {
    await shutdown();
    throw e instanceof Error && /^(cannot listen|cannot create control socket|another process)/.test(e.message) ? new CommandError(e.message) : e;
  }

  const what = `raid${arr.geometry.level} array ${arr.uuid} (${a.members.join(',')})`;
  if (server) process.stdout.write(`twindisk: serving ${what} on ${a.socket}; attach it with:\n  ${qemuAttachArgs(a.socket!, a.queues).join(' ')}\n`);
  if (portal) {
    const at = a.iscsiAdvertise ?? portal.address;
    process.stdout.write(`twindisk: serving ${what} as iSCSI target ${a.targetName} LUN 0 on ${showHostPort(portal.address)}; boot it with:\n`
      + `  twindisk ipxe --target iscsi://${showHostPort(at)}/${a.targetName}\n`);
  }
  resync = startResync(vol, log);

  await new Promise<void>((resolve) => {
    const stop = (sig: string): void => {
      log.info(`${sig} received: shutting down`);
      shutdown().then(resolve, (e: Error) => {
        log.error(`shutdown failed: ${e.message}`);
        resolve();
      });
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
  });
}

/** After an unclean shutdown (or a create without --assume-clean): the resync, in the background, while serving. */
function startResync(vol: RaidVolume, log: Logger): Promise<void> {
  const arr = vol.array;
  if (arr.resyncOffset === MD_MAX_SECTOR) return Promise.resolve();
  if (vol.backend.degraded > 0) {
    log.warn('the array was not shut down cleanly but is degraded: its dirty regions stay marked until the missing member is rebuilt (twindisk raid add), which rewrites them');
    return Promise.resolve();
  }
  const regions = arr.resyncRegions();
  const bytes = regions.reduce((n, r) => n + r.arrayLength, 0);
  log.info(`resync started while serving: ${regions.length} region(s), ${formatBytes(bytes)} of the array`, {
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

// --------------------------------------------------------------------------- members while serving

/**
 * The new member of a rebuild while serving: passes I/O on, until the shutdown stops it; then its
 * I/O fails at once, so the rebuild ends within one unit (the member is then recorded failed).
 */
class StoppableMember implements Backend {
  stopped = false;

  constructor(private readonly next: Backend) {}

  get info(): BackendInfo {
    return this.next.info;
  }

  read(iov: IoVector, offset: number, done: Completion): void {
    if (this.stopped) return done.complete(-EIO);
    this.next.read(iov, offset, done);
  }

  write(iov: IoVector, offset: number, fua: boolean, done: Completion): void {
    if (this.stopped) return done.complete(-EIO);
    this.next.write(iov, offset, fua, done);
  }

  flush(done: Completion): void {
    if (this.stopped) return done.complete(-EIO);
    this.next.flush(done);
  }

  discard(offset: number, length: number, done: Completion): void {
    if (this.stopped) return done.complete(-EIO);
    this.next.discard(offset, length, done);
  }

  writeZeroes(offset: number, length: number, mayUnmap: boolean, done: Completion): void {
    if (this.stopped) return done.complete(-EIO);
    this.next.writeZeroes(offset, length, mayUnmap, done);
  }

  close(): void {
    this.next.close();
  }
}

/** A rebuild running while serving. */
interface OnlineRebuild { slot: number; member: string; io: StoppableMember; done: Promise<void> }

/**
 * Failing and adding members of the served array (mdadm --manage --fail/--add on a running array),
 * one change at a time: the control socket's requests, the rebuild in the background, and its stop at
 * shutdown. Every change goes through the volume (RaidVolume.fail, RaidVolume.rebuild), which records
 * it in the superblocks before I/O takes it.
 */
class RaidMembership {
  private rebuilding: OnlineRebuild | null = null;
  private lastRebuild: ServedRaidStatus['lastRebuild'] = null;
  /** New members opened (and locked) by raid-add: closed at shutdown. */
  private readonly added: OpenMembers[] = [];
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly vol: RaidVolume, private readonly served: readonly string[], private readonly control: string, private readonly log: Logger) {}

  /** One control request; changes run one after the other. */
  handle(r: RaidControlRequest): Promise<unknown> {
    if (r.cmd === 'raid-status') return Promise.resolve(this.status());
    const run = this.queue.catch(() => undefined).then(() => (r.cmd === 'raid-fail' ? this.fail(r.slot) : this.add(r)));
    this.queue = run;
    return run.catch((e: unknown) => { throw cliError(e); });
  }

  /** `raid status --json`'s object, with the work running (rebuild or resync) and the last rebuild's outcome. */
  status(): ServedRaidStatus {
    const w = this.vol.work;
    let work: RaidWork | null = null;
    if (w !== null) {
      work = { action: w.action, done: w.done, total: w.total, percent: w.total > 0 ? Math.floor((w.done / w.total) * 1000) / 10 : 100 };
      if (w.action === 'rebuild' && this.rebuilding) Object.assign(work, { slot: this.rebuilding.slot, member: this.rebuilding.member });
    }
    return { ...raidStatus(this.vol.array), work, lastRebuild: this.lastRebuild };
  }

  private slotState(slot: number): MdSlotState {
    const st = this.vol.array.states[slot];
    if (st === undefined) throw new CommandError(`slot ${slot}: this array has slots 0 to ${this.vol.array.geometry.raidDisks - 1}`);
    return st;
  }

  /** raid-fail: the slot's member is failed in the superblocks and no longer read or written (a rebuild onto it ends). */
  private async fail(slot: number): Promise<ServedRaidStatus> {
    const st = this.slotState(slot);
    if (st.state === 'missing') throw new CommandError(`slot ${slot} holds no member (${st.reason}): nothing to fail`);
    this.log.warn(`failing ${st.member.name} (slot ${slot}) on request`, { slot });
    await this.vol.fail(slot, 'failed with twindisk raid fail --control');
    return this.status();
  }

  /** raid-add: opens (or creates) the new member, checks it, writes its superblock and starts the rebuild in the background. */
  private async add(r: Extract<RaidControlRequest, { cmd: 'raid-add' }>): Promise<ServedRaidStatus> {
    const now = this.rebuilding;
    if (now !== null) {
      throw new CommandError(`a rebuild of slot ${now.slot} onto ${now.member} is running (${this.status().work?.percent ?? 0}%): one at a time; wait for it (twindisk raid status --control ${this.control})`);
    }
    if (this.vol.work !== null) throw new CommandError(`a ${this.vol.work.action} is running: wait for it to end (twindisk raid status --control ${this.control}), then add`);
    this.slotState(r.slot);
    const abs = path.resolve(r.member);
    const mine = this.served.find((m) => path.resolve(m) === abs);
    if (mine !== undefined) {
      throw new CommandError(`${r.member} is one of the members this serve --raid was started with (${mine}): adding it back while serving is not supported; give a new file or device, or stop serve and use twindisk raid add`);
    }
    const fresh = openNewMember([abs], 'serve --raid add', { readOnly: false, ...(r.size !== undefined ? { createSize: r.size } : {}) });
    const io = new StoppableMember(fresh.members[0]!.backend);
    const member: MemberIo = { name: r.member, backend: io };
    let started = false;
    try {
      checkRebuildTarget(this.vol, 'add', r.slot, fresh.members[0]!, r.member, !!r.force, this.control);
      let last = 0;
      const done = this.vol.rebuild(r.slot, member, {
        ...(r.rate !== undefined ? { bytesPerSecond: r.rate } : {}),
        progress: (d, total) => {
          if (Date.now() - last < PROGRESS_LOG_MS) return;
          last = Date.now();
          this.log.info('rebuild', { slot: r.slot, done: d, total, percent: total > 0 ? Math.floor((d / total) * 1000) / 10 : 100 });
        },
      });
      // The reply waits for the member's superblock and the new role in the others: the rebuild has started.
      const failed = await Promise.race([
        done.then(() => null, (e: unknown) => e),
        (async () => { while (this.vol.work?.action !== 'rebuild') await new Promise((res) => setTimeout(res, 2)); return null; })(),
      ]);
      if (failed !== null) throw failed;
      started = true;
      this.added.push(fresh);
      const t0 = Date.now();
      const job: OnlineRebuild = { slot: r.slot, member: r.member, io, done: Promise.resolve() };
      this.rebuilding = job;
      this.log.info(`rebuild of slot ${r.slot} onto ${r.member} started while serving (${formatBytes(this.vol.array.componentBytes)})`, { slot: r.slot, member: r.member });
      job.done = done.then(
        () => {
          const s = (Date.now() - t0) / 1000;
          this.lastRebuild = { slot: r.slot, member: r.member, ok: true };
          this.log.info(`rebuild of slot ${r.slot} onto ${r.member} finished in ${s.toFixed(1)} s`, {
            slot: r.slot, degraded: this.vol.backend.degraded, mdstat: raidStatus(this.vol.array).mdstat, events: this.vol.array.events,
          });
          // A dirty array served degraded kept its dirty regions for this moment: resync them now.
          if (this.vol.backend.degraded === 0 && this.vol.array.resyncOffset !== MD_MAX_SECTOR) void startResync(this.vol, this.log);
        },
        (e: Error) => {
          this.lastRebuild = { slot: r.slot, member: r.member, ok: false, error: e.message };
          this.log.error(`rebuild of slot ${r.slot} onto ${r.member} failed: ${e.message}`, { slot: r.slot });
        },
      ).finally(() => { if (this.rebuilding === job) this.rebuilding = null; });
      return this.status();
    } finally {
      if (!started) {
        fresh.close();
        for (const f of fresh.created) fs.rmSync(f, { force: true });
      }
    }
  }

  /** At shutdown (front-ends closed): a running rebuild is stopped; the new member ends recorded failed. */
  async stop(): Promise<void> {
    const job = this.rebuilding;
    if (job === null) return;
    this.log.warn(`shutdown stops the rebuild of slot ${job.slot} onto ${job.member} at ${this.status().work?.percent ?? 0}%: `
      + `it is recorded failed; add it again (twindisk raid add) to rebuild it from the start`);
    job.io.stopped = true;
    await job.done;
  }

  /** After the volume closed: the new members' files are closed and unlocked. */
  close(): void {
    for (const f of this.added.splice(0)) f.close();
  }
}

// ----------------------------------------------------------------------------------- control socket

/** Parses one control request line; an error string for anything malformed (the socket is local, but still checked). */
export function parseRaidControlRequest(line: string): RaidControlRequest | string {
  const o = parseCommandObject(line);
  if (typeof o === 'string') return o;
  const count = (x: unknown): boolean => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
  switch (o.cmd) {
    case 'raid-status':
      return { cmd: 'raid-status' };
    case 'raid-fail':
      if (!count(o.slot)) return 'raid-fail needs "slot": the slot number, 0 or more';
      return { cmd: 'raid-fail', slot: o.slot as number };
    case 'raid-add':
      if (!count(o.slot)) return 'raid-add needs "slot": the slot number, 0 or more';
      if (typeof o.member !== 'string' || o.member === '') return 'raid-add needs "member": the new member\'s file or device';
      if (o.size !== undefined && (!count(o.size) || o.size === 0)) return 'raid-add "size" is a whole number of bytes above 0';
      if (o.rate !== undefined && !(typeof o.rate === 'number' && o.rate > 0)) return 'raid-add "rate" is bytes a second, above 0';
      if (o.force !== undefined && typeof o.force !== 'boolean') return 'raid-add "force" is true or false';
      return {
        cmd: 'raid-add', slot: o.slot as number, member: o.member,
        ...(o.size !== undefined ? { size: o.size as number } : {}), ...(o.rate !== undefined ? { rate: o.rate as number } : {}), ...(o.force ? { force: true } : {}),
      };
    default:
      return `unknown command "${String(o.cmd)}": serve --raid takes raid-status, raid-fail and raid-add`;
  }
}

