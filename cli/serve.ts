// `twindisk serve`: one image served to QEMU over vhost-user, to iSCSI initiators (iPXE, open-iscsi, Windows), or both at once.
import fs from 'node:fs';
import path from 'node:path';
import { Option, type Command } from 'commander';
import { ISCSI_DEFAULT_PORT, iscsiNameProblem } from '../bootimg/ipxe.js';
import { ChapConfigError, validateChapConfig, type ChapConfig, type ChapCredentials } from '../bootimg/iscsi/chap.js';
import { DiskOpRunner } from '../bootimg/iscsi/disk-ops.js';
import { ControlServer, type ControlRequest } from '../daemon/control.js';
import { countedBackend } from '../daemon/counted-backend.js';
import { MetricsServer, TwindiskMetrics, addFrontendMetrics, parseMetricsAddress } from '../daemon/metrics.js';
import { IscsiPortal } from '../bootimg/iscsi/portal.js';
import { capacityChanged, makeScsiDisk } from '../bootimg/iscsi/scsi.js';
import type { ScsiDisk } from '../bootimg/iscsi/scsi-vpd.js';
import { DiskLockError, lockDisk, type DiskLock } from '../engine/disk-lock.js';
import { FileBackend } from '../engine/file-backend.js';
import { Logger } from '../engine/log.js';
import { parseHostPort, type HostPort } from '../engine/replication/config/address.js';
import { MAX_QUEUES } from '../engine/replication/limits.js';
import { serialFor } from '../engine/serial.js';
import { DEFAULT_POLL_US, VhostUserServer } from '../qemu-plugin/vhost-user/server.js';
import { BlkQueueStats } from '../qemu-plugin/virtio/blk-stats.js';
import { countArg, sizeArg } from './args.js';
import { CommandError, UsageError } from './errors.js';
import { qemuAttachArgs } from './qemu-args.js';
import { serveRaid } from './serve-raid.js';

/** The prefix of target names twindisk makes up (RFC 3720 iqn. form; override with --target-name / "iscsi-target"). */
export const DEFAULT_IQN_PREFIX = 'iqn.2026-12.io.twindisk:';

/** A target name from a free-form name (an image's base name, a resource name): lower case, only the characters IQNs allow. */
export function defaultTargetName(name: string): string {
  const cleaned = name.toLowerCase().replace(/[^a-z0-9.:-]+/g, '-').replace(/^[-.:]+|[-.:]+$/g, '') || 'volume';
  return DEFAULT_IQN_PREFIX + cleaned.slice(0, 223 - DEFAULT_IQN_PREFIX.length);
}

/** Parses USER:SECRET or @FILE (a file holding USER:SECRET, so the secret stays out of `ps`). */
export function parseChap(value: string, option: string): ChapCredentials {
  let text = value;
  if (value.startsWith('@')) {
    try {
      text = fs.readFileSync(value.slice(1), 'utf8').trim();
    } catch (e) {
      throw new UsageError(`${option} ${value}: cannot read ${value.slice(1)}: ${(e as Error).message}`);
    }
  }
  const colon = text.indexOf(':');
  if (colon <= 0 || colon === text.length - 1) {
    throw new UsageError(`${option} expects USER:SECRET (or @FILE holding USER:SECRET), e.g. ${option} boot:$(twindisk gen-secret)`);
  }
  return { user: text.slice(0, colon), secret: text.slice(colon + 1) };
}

interface ServeArgs {
  image: string;
  socket: string | null;
  iscsi: HostPort | null;
  iscsiAdvertise: HostPort | null;
  targetName: string;
  chap: ChapConfig | null;
  queues: number;
  readOnly: boolean;
  blockSize: 512 | 4096;
  size?: number;
  pollUs: number;
  /** Poll for exactly pollUs after work instead of adaptively (`--poll-mode fixed`). */
  pollFixed: boolean;
  aio: 'sync' | 'io_uring';
  /** The control socket (`twindisk resize --control`), or null. */
  control: string | null;
  /** Serve Prometheus metrics here (`--metrics`), or null. */
  metrics: HostPort | null;
}

/** What is being served, for the banner (and for `resize`: the iSCSI LUN's back-end and capacity). */
interface Serving {
  vhost: VhostUserServer | null; portal: IscsiPortal | null; iscsi?: { backend: FileBackend; disk: ScsiDisk };
  metrics?: MetricsServer;
  /** With --metrics: the iSCSI target's disk operations, counted. */
  iscsiStats?: BlkQueueStats;
}

function hostPortArg(option: string): (v: string) => HostPort {
  return (v) => {
    const r = parseHostPort(v, ISCSI_DEFAULT_PORT, ISCSI_DEFAULT_PORT);
    if (typeof r === 'string') throw new UsageError(`${option}: ${r}`);
    return r;
  };
}

function metricsArg(v: string): HostPort {
  const r = parseMetricsAddress(v);
  if (typeof r === 'string') throw new UsageError(`--metrics: ${r}`);
  return r;
}

function showHostPort(hp: HostPort): string {
  return hp.host.includes(':') ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`;
}

/** Declares `twindisk serve` on the program. */
export function addServeCommand(program: Command): void {
  program.command('serve')
    .summary('serve an image over vhost-user (QEMU) and/or iSCSI (iPXE, open-iscsi, Windows)')
    .description('Serve FILE as a virtio-blk disk over vhost-user on PATH (--socket) and print the QEMU options that attach it,\n'
      + 'and/or as LUN 0 of an iSCSI target on HOST:PORT (--iscsi), which stock iPXE can sanboot. Both at once serve one disk.\n'
      + 'With --size, FILE is created (sparse) when it does not exist. --raid serves an md array (twindisk raid create) instead.')
    .option('--image <file>', 'the raw image to serve (this or --raid is required)')
    .option('--raid <members>', 'serve the md array on these members instead (comma-separated files or block devices; a missing one is left out)')
    .option('--start-dirty-degraded', 'with --raid: start a raid4/5/6 that is degraded and was not shut down cleanly')
    .option('--socket <path>', 'serve over vhost-user: where QEMU connects')
    .addOption(new Option('--iscsi <host:port>', `serve over iSCSI on this portal (port ${ISCSI_DEFAULT_PORT} when omitted)`).argParser(hostPortArg('--iscsi')))
    .option('--target-name <iqn>', `the iSCSI target name (default ${DEFAULT_IQN_PREFIX}<image base name>)`)
    .addOption(new Option('--iscsi-advertise <host:port>', 'the portal address discovery reports, when initiators reach the target by another address (NAT, QEMU user networking)')
      .argParser(hostPortArg('--iscsi-advertise')))
    .option('--chap <user:secret>', 'require CHAP from initiators (or @FILE holding user:secret; a secret of 12 to 16+ characters)')
    .option('--mutual-chap <user:secret>', 'with --chap: the target also proves itself to the initiator with these credentials')
    .addOption(new Option('--queues <n>', `virtqueues, one worker thread each (1..${MAX_QUEUES})`).argParser(countArg(1, MAX_QUEUES)).default(1))
    .option('--read-only', 'offer a read-only disk; writes fail with an I/O error (iSCSI: WRITE PROTECTED)')
    .addOption(new Option('--block-size <bytes>', 'logical block size the guest sees').choices(['512', '4096']).default('512'))
    .addOption(new Option('--size <size>', 'create FILE with this size when missing, e.g. 1G').argParser(sizeArg))
    .addOption(new Option('--poll-us <us>', 'the longest a queue worker polls its ring after work before it sleeps, in µs (0: never polls)')
      .argParser(countArg(0, Number.MAX_SAFE_INTEGER, 'a whole number of microseconds, 0 or more')).default(DEFAULT_POLL_US))
    .addOption(new Option('--poll-mode <mode>', 'adaptive: poll only as long as the next request recently came that soon (QEMU\'s poll-grow/poll-shrink); fixed: always --poll-us')
      .choices(['adaptive', 'fixed']).default('adaptive'))
    .option('--control <path>', 'a control socket for `twindisk resize --control PATH` (online resize); with --raid, for `twindisk raid status|fail|add --control PATH`')
    .addOption(new Option('--metrics <host:port>', 'serve Prometheus metrics at http://HOST:PORT/metrics (port 0: a free one, printed)').argParser(metricsArg))
    .addOption(new Option('--aio <mode>', 'io_uring keeps many requests per queue in flight (disks slower than the page cache); sync reads and writes in the queue\'s thread')
      .choices(['sync', 'io_uring']).default('sync'))
    .action(async (o: {
      image?: string; socket?: string; iscsi?: HostPort; iscsiAdvertise?: HostPort; targetName?: string; chap?: string; mutualChap?: string;
      queues: number; readOnly?: boolean; blockSize: string; size?: number; pollUs: number; pollMode: 'adaptive' | 'fixed'; aio: 'sync' | 'io_uring'; control?: string;
      raid?: string; metrics?: HostPort; startDirtyDegraded?: boolean;
    }) => {
      // Checked here, not declared mandatory: an unknown option is reported first (see resource-commands.ts target()).
      if (o.raid !== undefined) {
        if (o.image) throw new UsageError('serve takes --image FILE or --raid MEMBER,..., not both');
        if (o.readOnly || o.size !== undefined || o.aio !== 'sync') {
          throw new UsageError('--read-only, --size and --aio io_uring are not available with --raid (the array runs on the main thread; create it with twindisk raid create)');
        }
      } else if (o.startDirtyDegraded) {
        throw new UsageError('--start-dirty-degraded goes with --raid MEMBER,...');
      } else if (!o.image) {
        throw new UsageError('serve needs --image FILE (the raw image to serve) or --raid MEMBER,... (an md array)');
      }
      // What the default iSCSI target name is made from: the image, or the array's first member.
      const named = o.raid !== undefined ? `md-${path.basename(o.raid.split(',')[0] ?? '')}` : o.image!;
      if (!o.socket && !o.iscsi) throw new UsageError('serve needs --socket PATH (vhost-user, for QEMU) or --iscsi HOST:PORT (iSCSI), or both');
      if (!o.iscsi && (o.targetName || o.chap || o.mutualChap || o.iscsiAdvertise)) {
        throw new UsageError('--target-name, --chap, --mutual-chap and --iscsi-advertise go with --iscsi HOST:PORT');
      }
      if (o.mutualChap && !o.chap) throw new UsageError('--mutual-chap needs --chap too (the initiator proves itself first)');
      const targetName = o.targetName ?? defaultTargetName(path.basename(named).replace(/\.[^.]*$/, ''));
      const problem = iscsiNameProblem(targetName);
      if (problem) throw new UsageError(`--target-name: ${problem}`);
      let chap: ChapConfig | null = null;
      if (o.chap) {
        const mine = parseChap(o.chap, '--chap');
        chap = o.mutualChap ? { ...mine, mutual: parseChap(o.mutualChap, '--mutual-chap') } : mine;
        try {
          for (const w of validateChapConfig(chap, '--chap')) process.stderr.write(`twindisk: warning: ${w}\n`);
        } catch (e) {
          if (e instanceof ChapConfigError) throw new UsageError(e.message);
          throw e;
        }
      }
      if (o.raid !== undefined) {
        const members = o.raid.split(',').filter((m) => m !== '');
        if (members.length === 0) throw new UsageError('--raid needs the array\'s members, comma-separated: --raid a.img,b.img,c.img');
        await serveRaid({
          members, socket: o.socket ?? null, iscsi: o.iscsi ?? null, iscsiAdvertise: o.iscsiAdvertise ?? null, targetName, chap,
          queues: o.queues, blockSize: Number(o.blockSize) as 512 | 4096, pollUs: o.pollUs, pollFixed: o.pollMode === 'fixed',
          startDirtyDegraded: !!o.startDirtyDegraded, control: o.control ?? null, metrics: o.metrics ?? null,
        }, new Logger('twindisk'));
        return;
      }
      await serve({
        image: o.image!, socket: o.socket ?? null, iscsi: o.iscsi ?? null, iscsiAdvertise: o.iscsiAdvertise ?? null, targetName,
        chap,
        queues: o.queues, readOnly: !!o.readOnly, blockSize: Number(o.blockSize) as 512 | 4096,
        pollUs: o.pollUs, pollFixed: o.pollMode === 'fixed', aio: o.aio, control: o.control ?? null, metrics: o.metrics ?? null,
        ...(o.size !== undefined ? { size: o.size } : {}),
      }, (s) => {
        if (s.vhost) process.stdout.write(`twindisk: serving ${o.image} on ${o.socket}; attach it with:\n  ${qemuAttachArgs(o.socket!, o.queues).join(' ')}\n`);
        if (s.portal) {
          const a = o.iscsiAdvertise ?? s.portal.address;
          process.stdout.write(`twindisk: serving ${o.image} as iSCSI target ${targetName} LUN 0 on ${showHostPort(s.portal.address)}; boot it with:\n`
            + `  twindisk ipxe --target iscsi://${showHostPort(a)}/${targetName}\n`);
        }
        if (s.metrics) process.stdout.write(`twindisk: metrics on ${s.metrics.url}\n`);
      });
    });
}

async function serve(a: ServeArgs, banner: (s: Serving) => void): Promise<void> {
  const log = new Logger('twindisk');
  const create = a.size !== undefined && !fs.existsSync(a.image);
  if (create) {
    if (a.size! % a.blockSize !== 0) throw new UsageError(`--size ${a.size} is not a multiple of the ${a.blockSize}-byte block size`);
    fs.mkdirSync(path.dirname(path.resolve(a.image)), { recursive: true });
  }
  // The image has one owner: refused (before it is opened) while a node or another serve holds it.
  // --read-only shares the image with other read-only serves.
  let lock: DiskLock;
  try {
    lock = lockDisk(path.resolve(a.image), `serve ${a.image}`, { shared: a.readOnly, create });
  } catch (e) {
    if (e instanceof DiskLockError && e.code === 'missing' && !create) {
      throw new CommandError(`${e.message} (create it first, e.g. \`truncate -s 1G ${a.image}\`, or pass --size)`);
    }
    throw e;
  }
  try {
    if (create && fs.statSync(a.image).size === 0) {
      fs.truncateSync(a.image, a.size!);
      log.info('created image', { image: a.image, size: a.size });
    }
    await serveLocked(a, log, banner);
  } finally {
    lock.release();
  }
}

async function serveLocked(a: ServeArgs, log: Logger, banner: (s: Serving) => void): Promise<void> {
  const image = path.resolve(a.image);
  const serving: Serving = { vhost: null, portal: null };
  let iscsiBackend: FileBackend | null = null;
  let control: ControlServer | null = null;
  const closeAll = async (): Promise<void> => {
    await serving.metrics?.close();
    await control?.close();
    await serving.portal?.close();
    await serving.vhost?.close();
    iscsiBackend?.close();
  };
  try {
    // First: a taken metrics port is refused before any socket is made.
    if (a.metrics) {
      const metrics = new TwindiskMetrics();
      const base = { image };
      addFrontendMetrics(metrics, base, () => serving.vhost,
        () => (serving.portal ? { portal: serving.portal.stats, requests: serving.iscsiStats ?? null } : null));
      const server = new MetricsServer(a.metrics, metrics, log.child('metrics'));
      await server.start();
      serving.metrics = server;
    }
    if (a.socket) {
      const server = new VhostUserServer({
        socketPath: a.socket,
        backend: { kind: 'file', path: image, readOnly: a.readOnly, blockSize: a.blockSize, aio: a.aio },
        numQueues: a.queues,
        serial: serialFor({ image: a.image }),
        pollUs: a.pollUs,
        pollFixed: a.pollFixed,
        // Live migration on this host: the destination QEMU connects while the source still runs.
        maxFrontEnds: 2,
        stats: a.metrics !== null,
      });
      await server.start();
      serving.vhost = server;
    }
    if (a.iscsi) {
      // The iSCSI target runs on this (main) thread: its disk operations are synchronous positional I/O of a few µs
      // each, the same calls a vhost-user queue worker makes.
      iscsiBackend = new FileBackend({ path: image, readOnly: a.readOnly, blockSize: a.blockSize });
      if (a.metrics) serving.iscsiStats = new BlkQueueStats(BlkQueueStats.allocate());
      const info = iscsiBackend.info;
      const disk = makeScsiDisk({
        id: `image:${image}`, blocks: BigInt(info.size / info.blockSize), blockSize: a.blockSize, readOnly: a.readOnly,
        serial: serialFor({ image: a.image }), unmapReadsZero: info.canDiscard,
      });
      // Filled once the portal listens (port 0 picks one): discovery reports the advertised address, else the real one.
      const addresses: string[] = [];
      const portal = new IscsiPortal({
        host: a.iscsi.host, port: a.iscsi.port, log: log.child('iscsi'),
        targets: [{
          name: a.targetName, disk, addresses, runner: new DiskOpRunner(serving.iscsiStats ? countedBackend(iscsiBackend, serving.iscsiStats) : iscsiBackend),
          ...(a.chap ? { chap: a.chap } : {}),
        }],
      });
      await portal.start();
      addresses.push(showHostPort(a.iscsiAdvertise ?? portal.address));
      serving.portal = portal;
      serving.iscsi = { backend: iscsiBackend, disk };
    }
    if (a.control) {
      const resizer = new ImageResizer(image, a, serving, log);
      control = new ControlServer(a.control, (r) => serveCommand(r, resizer, serving));
      await control.start();
    }
  } catch (e) {
    await closeAll();
    throw e instanceof Error && /^cannot listen/.test(e.message) ? new CommandError(e.message) : e;
  }
  banner(serving);
  await new Promise<void>((resolve) => {
    const stop = (sig: string) => {
      log.info(`${sig} received: shutting down`);
      closeAll().then(resolve, (e) => {
        log.error(`shutdown failed: ${e}`);
        resolve();
      });
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
  });
}

/** The control socket's requests for a standalone `serve`: status and resize. */
async function serveCommand(r: ControlRequest, resizer: ImageResizer, serving: Serving): Promise<unknown> {
  switch (r.cmd) {
    case 'status':
      return { image: resizer.image, size: resizer.size, vhostConnected: serving.vhost?.connected ?? false, iscsiSessions: serving.portal?.stats.sessions ?? 0 };
    case 'resize':
      return resizer.resize(r.size, !!r.allowShrink);
    default:
      throw new Error(`${r.cmd} is a command for a replicated node (twindisk up); serve takes status and resize`);
  }
}

/**
 * Online resize of a served image (`twindisk resize --control`). Growing: the file is extended (sparse:
 * the new blocks read as zeroes and take no space until written), then every front-end takes the new
 * size: the vhost-user queue workers check requests against it, the config space says it and QEMU is
 * told (BACKEND_CONFIG_CHANGE_MSG); the iSCSI LUN's READ CAPACITY reports it and every iSCSI session
 * gets a CAPACITY DATA HAS CHANGED unit attention. Shrinking (--allow-shrink) is refused while a
 * front-end is connected (a guest may hold data past the new end, and a guest's kernel does not expect
 * its disk to lose blocks under it); with none, the front-ends take the smaller size first and the file
 * is cut after. One resize at a time.
 */
class ImageResizer {
  private queue: Promise<unknown> = Promise.resolve();

  constructor(readonly image: string, private readonly a: ServeArgs, private readonly serving: Serving, private readonly log: Logger) {}

  /** The size served now. */
  get size(): number {
    return this.serving.vhost?.info.size ?? this.serving.iscsi?.backend.info.size ?? 0;
  }

  resize(size: number, allowShrink: boolean): Promise<unknown> {
    const run = this.queue.catch(() => undefined).then(() => this.resizeNow(size, allowShrink));
    this.queue = run;
    return run;
  }

  private async resizeNow(size: number, allowShrink: boolean): Promise<unknown> {
    const bs = this.a.blockSize;
    const old = this.size;
    if (size % bs !== 0) throw new Error(`size ${size} is not a multiple of the ${bs}-byte block size`);
    if (this.a.readOnly) throw new Error(`${this.image} is served read-only: it cannot be resized`);
    if (size === old) return { size, oldSize: old, changed: false };
    const st = fs.statSync(this.image);
    if (size < old) {
      if (!allowShrink) throw new Error(`${size} bytes is smaller than the ${old} served: shrinking loses the data past the new end; pass --allow-shrink to do it anyway`);
      const busy = (this.serving.vhost?.connected ? 1 : 0) + (this.serving.portal?.stats.sessions ?? 0);
      if (busy > 0) throw new Error('a front-end is connected (a guest or an iSCSI session): shrinking under it would cut off blocks it may use; stop it first');
    } else if (st.isBlockDevice()) {
      const fd = fs.openSync(this.image, 'r');
      const devSize = (() => { try { return fs.fstatSync(fd).size; } finally { fs.closeSync(fd); } })();
      if (devSize > 0 && devSize < size) throw new Error(`${this.image} is a block device of ${devSize} bytes: grow it first (e.g. lvextend), then resize to its size`);
    }
    if (size > old && st.isFile() && st.size < size) fs.truncateSync(this.image, size); // sparse: the new blocks read as zeroes
    let notified = false;
    if (this.serving.vhost) notified = (await this.serving.vhost.resize(size)).notified;
    if (this.serving.iscsi) {
      this.serving.iscsi.backend.resize(size);
      // READ CAPACITY answers from here on, and every session gets a CAPACITY DATA HAS CHANGED unit attention on its
      // next command (see README: Growing a volume).
      capacityChanged(this.serving.iscsi.disk, BigInt(size / bs));
    }
    if (size < old && st.isFile()) fs.truncateSync(this.image, size);
    this.log.info('image resized', { image: this.image, from: old, to: size, guestNotified: notified });
    return { size, oldSize: old, changed: true, guestNotified: notified };
  }
}
