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
// With --control PATH, members are managed while serving, as `mdadm --manage` and md's sync_action do
// on a running array (engine/raid/membership.ts): one JSON request a line, one answer a line, as
// daemon/control.ts speaks: raid-status, raid-fail, raid-add, raid-remove, raid-replace (a rebuild in
// the background), raid-check, raid-repair (a scrub in the background), raid-resync.
import { DiskOpRunner } from '../bootimg/iscsi/disk-ops.js';
import { IscsiPortal } from '../bootimg/iscsi/portal.js';
import { makeScsiDisk } from '../bootimg/iscsi/scsi.js';
import type { ChapConfig } from '../bootimg/iscsi/chap.js';
import type { Logger } from '../engine/log.js';
import type { BackendSpec } from '../engine/open.js';
import { EFD_CLOEXEC, EFD_NONBLOCK, NativeBuffer, close, eventfd, write } from '../engine/os.js';
import { RaidMembership, type RaidControlRequest } from '../engine/raid/membership.js';
import { NoMembersError, assembleServed, resyncWhileServing, runChannelRequest, type ServedArray } from '../engine/raid/served-array.js';
import { ChannelHost } from '../engine/replication/channel.js';
import type { HostPort } from '../engine/replication/config/address.js';
import { serialFor } from '../engine/serial.js';
import { VhostUserServer } from '../qemu-plugin/vhost-user/server.js';
import { CommandError } from './errors.js';
import { qemuAttachArgs } from './qemu-args.js';
import { ControlServer, parseRaidControlRequest } from '../daemon/control.js';
import { MetricsServer, TwindiskMetrics, addFrontendMetrics, addRaidMetrics } from '../daemon/metrics.js';
import { cliError } from './raid.js';

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
  /** Serve Prometheus metrics here (`--metrics`): the front-ends' requests and the array's state, or null. */
  metrics: HostPort | null;
}

function showHostPort(hp: HostPort): string {
  return hp.host.includes(':') ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`;
}

/** Serves the array on `a.members` until SIGINT or SIGTERM. */
export async function serveRaid(a: RaidServeArgs, log: Logger): Promise<void> {
  let served: ServedArray;
  try {
    served = await assembleServed(a.members, 'serve --raid', log, { startDirtyDegraded: a.startDirtyDegraded });
  } catch (e) {
    throw e instanceof NoMembersError ? new CommandError(`none of the --raid members exists (${a.members.join(', ')}): create the array first (twindisk raid create)`) : cliError(e);
  }
  const { vol, members, locks } = served;
  const arr = vol.array;
  const info = vol.backend.info;
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
  let metrics: MetricsServer | null = null;
  const shutdown = async (): Promise<void> => {
    await metrics?.close().catch((e: Error) => log.error(`metrics shutdown: ${e.message}`));
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
    // First: a taken metrics port is refused before any socket is made.
    if (a.metrics) {
      const m = new TwindiskMetrics();
      const base = { array: arr.uuid };
      addFrontendMetrics(m, base, () => server, () => null);
      addRaidMetrics(m, base, () => membership.status());
      const ms = new MetricsServer(a.metrics, m, log.child('metrics'));
      await ms.start();
      metrics = ms;
      process.stdout.write(`twindisk: metrics on ${ms.url}\n`);
    }
    if (info.size % a.blockSize !== 0) throw new CommandError(`the array's ${info.size} bytes are not a whole number of ${a.blockSize}-byte blocks: serve it with --block-size 512`);
    if (a.socket) {
      for (let q = 0; q < a.queues; q++) {
        const fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (fd < 0) throw new CommandError('eventfd() failed: out of file descriptors?');
        eventFds.push(fd);
        const host = new ChannelHost(fd, wake);
        hosts.push(host);
        loops.push(host.serve((r) => runChannelRequest(vol.backend, r, log)));
      }
      const spec = (q: number): BackendSpec => ({ kind: 'raid', channel: hosts[q]!.spec, size: info.size, blockSize: a.blockSize, name: `md:${arr.name}` });
      // One front-end at a time: each queue's channel has one worker end (no second QEMU for a live migration on this host).
      const s = new VhostUserServer({ socketPath: a.socket, backend: spec, numQueues: a.queues, serial, pollUs: a.pollUs, pollFixed: a.pollFixed, stats: a.metrics !== null });
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
      const c = new ControlServer<RaidControlRequest>(a.control, (r) => membership.handle(r).catch((e: unknown) => { throw cliError(e); }), parseRaidControlRequest,
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
  resync = resyncWhileServing(vol, log);
  membership.resumeRecovery(); // a rebuild a shutdown stopped goes on from its checkpoint

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
