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
import path from 'node:path';
import { DiskOpRunner } from '../bootimg/iscsi/disk-ops.js';
import { IscsiPortal } from '../bootimg/iscsi/portal.js';
import { makeScsiDisk } from '../bootimg/iscsi/scsi.js';
import type { ChapConfig } from '../bootimg/iscsi/chap.js';
import type { Backend, Completion } from '../engine/backend.js';
import { DiskLockError, lockDisk, type DiskLock } from '../engine/disk-lock.js';
import { FileBackend } from '../engine/file-backend.js';
import { IoVector } from '../engine/iovec.js';
import type { Logger } from '../engine/log.js';
import type { BackendSpec } from '../engine/open.js';
import { EFD_CLOEXEC, EFD_NONBLOCK, EINVAL, EIO, NativeBuffer, close, eventfd, write } from '../engine/os.js';
import type { MemberIo } from '../engine/raid/array.js';
import { MD_MAX_SECTOR } from '../engine/raid/md-constants.js';
import { RaidVolume } from '../engine/raid/raid-volume.js';
import { CH_FUA, CH_UNMAP, ChannelHost, ChannelOp, type ChannelRequest } from '../engine/replication/channel.js';
import type { HostPort } from '../engine/replication/config/address.js';
import { serialFor } from '../engine/serial.js';
import { VhostUserServer } from '../qemu-plugin/vhost-user/server.js';
import { CommandError } from './errors.js';
import { qemuAttachArgs } from './qemu-args.js';
import { cliError, formatBytes } from './raid.js';

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
  if (vol.backend.degraded > 0) log.warn(`serving degraded: ${vol.backend.degraded} of ${arr.geometry.raidDisks} slots not in sync; rebuild offline with twindisk raid add`);

  const one = new NativeBuffer(8);
  one.u8[0] = 1;
  const wake = (fd: number): void => { write(fd, one.addr, 8); };
  const hosts: ChannelHost[] = [];
  const eventFds: number[] = [];
  const loops: Promise<void>[] = [];
  let server: VhostUserServer | null = null;
  let portal: IscsiPortal | null = null;
  let resync: Promise<void> = Promise.resolve();
  const serial = serialFor({ resource: `md:${arr.uuid}` });
  const shutdown = async (): Promise<void> => {
    await server?.close().catch((e: Error) => log.error(`vhost-user shutdown: ${e.message}`));
    await portal?.close().catch((e: Error) => log.error(`iSCSI shutdown: ${e.message}`));
    for (const h of hosts) h.stop();
    await Promise.all(loops);
    try {
      await vol.close(); // stops the resync, flushes, records the array clean, closes the members
      await resync;
    } finally {
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
  } catch (e) {
    await shutdown();
    throw e instanceof Error && /^cannot listen/.test(e.message) ? new CommandError(e.message) : e;
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
