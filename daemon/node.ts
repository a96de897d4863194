// `twindisk up`: one node of a replicated resource — its metadata, replication links, control socket and vhost-user front-end.
import { DiskLockError, lockDisk, type DiskLock, type LockOptions } from '../engine/disk-lock.js';
import { Logger } from '../engine/log.js';
import { serialFor } from '../engine/serial.js';
import { EFD_CLOEXEC, EFD_NONBLOCK, NativeBuffer, close, eventfd, write } from '../engine/os.js';
import { ChannelHost } from '../engine/replication/channel.js';
import { loadResource, nodeByName, type NodeConfig, type ResourceConfig } from '../engine/replication/config.js';
import { Metadata } from '../engine/replication/metadata.js';
import { RaidNodeDisk } from '../engine/raid/raid-node-disk.js';
import type { ServedRaidStatus } from '../engine/raid/membership.js';
import type { ReplicatedSpec } from '../engine/replication/replicated-backend.js';
import { Resource, RoleError } from '../engine/replication/resource.js';
import { DEFAULT_POLL_US, VhostUserServer } from '../qemu-plugin/vhost-user/server.js';
import { BlkQueueStats } from '../qemu-plugin/virtio/blk-stats.js';
import { WsTransport } from '../transport/ws-link.js';
import type { HostPort } from '../engine/replication/config/address.js';
import { ControlServer, type ControlRequest } from './control.js';
import { MetricsServer, nodeMetrics } from './metrics.js';
import type { NodeStatus } from './http/events.js';
import { StatusPageServer } from './http/status-server.js';
import { NodeIscsi } from './iscsi.js';

export interface NodeOptions {
  config: string;
  node: string;
  log?: Logger;
  /** Serve Prometheus metrics here (`up --metrics`), instead of the node's "metrics" key. */
  metrics?: HostPort | null;
  /** Serve the live status page here (`up --http`), instead of the node's "http" key; `httpAdmin` (`--http-admin`) allows its actions. */
  http?: HostPort | null;
  httpAdmin?: boolean;
}

/** Opens the node's metadata, or says how to create it. The caller holds the node's disk locks (lockNodeDisks). */
export function openMetadata(me: NodeConfig, array: RaidNodeDisk | null = null): Metadata {
  return Metadata.open({
    backingFile: me.disk!, metaFile: me.metaDisk === 'internal' ? null : me.metaDisk, ...(array ? { backingSize: array.arrayBytes } : {}),
  });
}

/**
 * Locks the node's backing file and, with `meta-disk` a file, its metadata file (in that order), before
 * anything reads or writes them: a disk has one owner. `purpose` completes "cannot ...". Throws
 * DiskLockError (and holds nothing) when either is held elsewhere; `create` creates missing files empty.
 */
export function lockNodeDisks(cfg: ResourceConfig, me: NodeConfig, purpose: string, create: { disk?: boolean; meta?: boolean } = {}): DiskLock[] {
  // An md array's members are locked by the array's own thread when it opens them (RaidNodeDisk).
  const files: [string, string, LockOptions][] = me.raid ? [] : [['backing file', me.disk!, { create: !!create.disk }]];
  if (me.metaDisk !== 'internal') files.push(['metadata file', me.metaDisk, { create: !!create.meta }]);
  const locks: DiskLock[] = [];
  try {
    for (const [what, file, opts] of files) {
      try {
        locks.push(lockDisk(file, purpose, opts));
      } catch (e) {
        if (e instanceof DiskLockError && e.code === 'missing' && !opts.create) {
          throw new DiskLockError(`cannot ${purpose}: ${what} ${file} does not exist: create it with its metadata`
            + ` (twindisk create-md --config ${cfg.file} --node ${me.name} --size SIZE)`, 'missing');
        }
        throw e;
      }
    }
  } catch (e) {
    for (const l of locks) l.release();
    throw e;
  }
  return locks;
}

/** Logs what opening the metadata found that Resource.attach() does not report itself. */
export function logOpenReport(log: Logger, md: Metadata): void {
  const bad = md.openReport.badSuperblock;
  if (bad) {
    log.warn(`metadata superblock slot ${bad.slot} on ${md.layout.file} is damaged (${bad.reason}): using slot ${bad.used} (seq ${bad.usedSeq}); the next metadata update rewrites slot ${bad.slot}`);
  }
}

/** A running node; `stopped` resolves after `stop()` (or `down`) finished. */
export class Node {
  readonly cfg: ResourceConfig;
  readonly me: NodeConfig;
  readonly resource: Resource;
  private transport: WsTransport | null = null;
  private control: ControlServer | null = null;
  private vhost: VhostUserServer | null = null;
  private vhostStarting: Promise<void> | null = null;
  private iscsi: NodeIscsi | null = null;
  private iscsiStarting: Promise<void> | null = null;
  /** Where metrics are served (NodeOptions.metrics, else the node's "metrics"), and their endpoint once started. */
  private readonly metricsAt: HostPort | null;
  metrics: MetricsServer | null = null;
  /** Where the status page is served (NodeOptions.http, else the node's "http"), whether it takes actions, and the page's server once started. */
  private readonly httpAt: HostPort | null;
  private readonly httpAdmin: boolean;
  statusPage: StatusPageServer | null = null;
  private channels: ChannelHost[] = [];
  private eventFds: number[] = [];
  private readonly one = new NativeBuffer(8);
  /** The disk locks (lockNodeDisks), held from start() until stop() has closed the disk, attached or not. */
  private locks: DiskLock[] = [];
  private stopping: Promise<void> | null = null;
  private resolveStopped!: () => void;
  readonly stopped = new Promise<void>((r) => (this.resolveStopped = r));
  readonly log: Logger;

  constructor(opts: NodeOptions) {
    this.cfg = loadResource(opts.config);
    this.me = nodeByName(this.cfg, opts.node);
    this.log = opts.log ?? new Logger(`${this.cfg.resource}/${this.me.name}`);
    for (const w of this.cfg.warnings) this.log.warn(w);
    this.resource = new Resource({ cfg: this.cfg, me: this.me, log: this.log });
    this.resource.onResize = (size) => this.frontendsResized(size);
    this.one.u8[0] = 1;
    this.metricsAt = opts.metrics ?? this.me.metrics ?? null;
    this.httpAt = opts.http ?? this.me.http ?? null;
    this.httpAdmin = opts.httpAdmin ?? this.me.httpAdmin ?? false;
  }

  /** Attaches the disk, starts the control socket and the links, and (once the size is known) the vhost-user socket. */
  async start(): Promise<void> {
    // Nothing is opened before the lock: a refused start has nothing to undo, and writes nothing.
    if (this.me.disk) {
      try {
        this.locks = lockNodeDisks(this.cfg, this.me, `start ${this.cfg.resource}/${this.me.name}`);
      } catch (e) {
        this.stopping = Promise.resolve(); // stop() has nothing to do
        this.resolveStopped();
        throw e;
      }
    }
    try {
      if (this.me.disk) {
        const { md, array } = await this.openDisk();
        this.resource.attach(md, 0, array ?? undefined);
      }
      this.control = new ControlServer(this.me.control, (r) => this.command(r));
      await this.control.start();
      this.transport = new WsTransport({
        resource: this.cfg.resource, secret: this.cfg.secret, myId: this.me.id, myName: this.me.name,
        listen: { host: this.me.host, port: this.me.port },
        peers: this.cfg.nodes.filter((n) => n.id !== this.me.id).map((n) => ({ id: n.id, name: n.name, host: n.host, port: n.port })),
        ...(this.cfg.tls ? { tls: this.cfg.tls } : {}),
        handler: this.resource, log: this.log.child('link'),
      });
      this.resource.linkControl = this.transport;
      await this.transport.start();
      if (this.metricsAt) {
        const iscsi = () => (this.iscsi?.stats ? { portal: this.iscsi.stats, requests: this.iscsi.requestStats } : null);
        const parts = { transport: () => this.transport, vhost: () => this.vhost, iscsi, ...(this.me.raid ? { raid: () => this.raidStatusForMetrics() } : {}) };
        this.metrics = new MetricsServer(this.metricsAt, nodeMetrics(this.resource, parts), this.log.child('metrics'));
        await this.metrics.start();
      }
      if (this.httpAt) {
        this.statusPage = new StatusPageServer({
          at: this.httpAt, admin: this.httpAdmin, resource: this.resource, log: this.log.child('http'),
          status: () => this.command({ cmd: 'status' }) as Promise<NodeStatus>, command: (r) => this.command(r),
          queues: () => [...(this.vhost?.queueStats() ?? []).map((stats, i) => ({ name: `vhost-user ${i}`, stats })),
            ...(this.iscsi?.requestStats ? [{ name: 'iscsi', stats: this.iscsi.requestStats }] : [])],
        });
        await this.statusPage.start();
      }
    } catch (e) {
      await this.abortStart();
      throw e;
    }
    this.log.info('node up', { resource: this.cfg.resource, node: this.me.name, id: this.me.id, address: `${this.me.host}:${this.me.port}`, disk: this.me.disk ?? 'none (diskless)' });
    if (this.me.socket) void this.startVhost();
    if (this.me.iscsi) this.iscsiStarting = this.startIscsi();
  }

  /** Opens the disk (an md array: assembled first) and its metadata, logging what opening found; nothing stays open on failure. */
  private async openDisk(): Promise<{ md: Metadata; array: RaidNodeDisk | null }> {
    const array = await this.openArray();
    try {
      const md = openMetadata(this.me, array);
      logOpenReport(this.log, md);
      return { md, array };
    } catch (e) {
      array?.close();
      await array?.whenClosed();
      throw e;
    }
  }

  /**
   * A node whose disk is an md array: assembles it on its own thread (RaidNodeDisk), or returns null
   * for a file disk. A member the array fails later is logged there and the array goes on degraded;
   * only the array's own failure reaches the engine (which then detaches the disk).
   */
  private async openArray(): Promise<RaidNodeDisk | null> {
    if (!this.me.raid) return null;
    const array = await RaidNodeDisk.open({
      members: this.me.raid.members, log: this.log, blockSize: this.cfg.blockSize, purpose: `start ${this.cfg.resource}/${this.me.name}: member`,
      control: this.me.control,
      onMemberFailed: (slot, member) => this.log.warn(`the md array lost ${member} (slot ${slot}): it serves on degraded; replace the member (see twindisk status)`, { slot }),
    });
    this.array = array;
    return array;
  }

  /** The md array that is this node's disk while attached, or null. */
  private array: RaidNodeDisk | null = null;
  /** The array's status as the last scrape asked for it (it lives on the array's thread: asked now, shown at the next scrape). */
  private raidSeen: ServedRaidStatus | null = null;

  private raidStatusForMetrics(): ServedRaidStatus | null {
    const a = this.array;
    if (!a || this.resource.disk !== a) return null;
    a.arrayStatus().then((st) => { this.raidSeen = st; }, () => { this.raidSeen = null; });
    return this.raidSeen;
  }

  private async startIscsi(): Promise<void> {
    await this.resource.whenSized();
    if (this.stopping) return;
    const iscsi = new NodeIscsi(this.cfg, this.me, this.resource, this.log.child('iscsi'));
    if (this.metricsAt || this.httpAt) iscsi.requestStats = new BlkQueueStats(BlkQueueStats.allocate());
    try {
      await iscsi.start();
      this.iscsi = iscsi;
    } catch (e) {
      this.log.error(`cannot serve the volume over iSCSI: ${(e as Error).message}`);
      await iscsi.stop();
    }
  }

  private async startVhost(): Promise<void> {
    if (this.resource.size === 0) this.log.info('diskless: the vhost-user socket opens once a peer with a disk has told the volume size');
    await this.resource.whenSized();
    if (this.stopping) return;
    const queues = this.me.queues;
    const wake = (fd: number) => { write(fd, this.one.addr, 8); };
    for (let i = 0; i < queues; i++) {
      const fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
      if (fd < 0) throw new Error('eventfd() failed: out of file descriptors?');
      this.eventFds.push(fd);
      const ch = new ChannelHost(fd, wake);
      this.channels.push(ch);
      void this.resource.serveChannel(ch);
    }
    const spec = (q: number): ReplicatedSpec => ({
      kind: 'replicated', channel: this.channels[q]!.spec, size: this.resource.size, blockSize: this.cfg.blockSize,
      local: this.me.disk && !this.me.raid ? { path: this.me.disk } : null, hot: this.resource.hotSpec(), name: `replicated:${this.cfg.resource}`,
    });
    const server = new VhostUserServer({
      socketPath: this.me.socket!, backend: spec, numQueues: queues, serial: serialFor({ resource: this.cfg.resource }), pollUs: DEFAULT_POLL_US,
      stats: this.metricsAt !== null || this.httpAt !== null,
      log: this.log.child('vhost-user'),
      onOpen: () => this.resource.clientOpened(),
      onClose: () => this.resource.clientClosed(),
    });
    // stop() waits for this: a server half started would leave queue workers running.
    this.vhostStarting = server.start().then(
      () => { this.vhost = server; },
      (e: Error) => { this.log.error(`cannot serve the volume on ${this.me.socket}: ${e.message}`); },
    );
    await this.vhostStarting;
  }

  private async command(r: ControlRequest): Promise<unknown> {
    const res = this.resource;
    const peers = (name: string | undefined) => (name ? [res.peerByName(name)] : res.peers);
    switch (r.cmd) {
      case 'status':
        return {
          ...res.status(), ...(this.transport ? { links: { ...this.transport.stats } } : {}),
          ...(this.array && res.disk === this.array ? { raid: await this.array.arrayStatus() } : {}),
          ...(this.iscsi?.stats ? { iscsi: { ...this.iscsi.stats } } : {}),
        };
      case 'primary':
        res.promote(!!r.force);
        return res.status();
      case 'secondary':
        res.demote();
        return res.status();
      case 'connect':
        for (const p of peers(r.peer)) {
          if (r.discardMyData) res.discardMyData.add(p.id);
          res.setEnabled(p, true);
        }
        return res.status();
      case 'disconnect':
        for (const p of peers(r.peer)) res.setEnabled(p, false);
        return res.status();
      case 'verify':
        return { peers: res.startVerify(!!r.resync) };
      case 'fault':
        if (r.kind === 'clear') res.injectFault(null);
        else if (Number.isInteger(r.offset) && Number.isInteger(r.length)) res.injectFault({ kind: r.kind, offset: r.offset!, length: r.length! });
        else throw new RoleError('fault needs integer offset and length');
        return res.status();
      case 'attach':
        if (!this.me.disk) throw new RoleError(`${this.me.name} is diskless in ${this.cfg.resource}: it has no disk to attach`);
        if (res.disk) throw new RoleError('the local disk is attached already');
        this.relockReplaced();
        {
          // Under the node's own lock, held since start (a detached disk stays locked).
          await this.array?.whenClosed(); // the detached array's thread has let its members go
          const { md, array } = await this.openDisk();
          res.reattach(md, array ?? undefined);
        }
        return res.status();
      case 'resize':
        return res.resizer.resize(r.size);
      case 'down':
        setImmediate(() => void this.stop());
        return { stopping: true };
      case 'raid-status':
      case 'raid-fail':
      case 'raid-add':
      case 'raid-remove':
      case 'raid-replace':
      case 'raid-check':
      case 'raid-repair':
      case 'raid-resync':
      case 'raid-inject':
        if (!this.me.raid) throw new RoleError(`${this.me.name}'s disk in ${this.cfg.resource} is ${this.me.disk ?? 'none (diskless)'}, not an md array: the raid commands have nothing to act on`);
        if (!this.array || res.disk !== this.array) throw new RoleError(`${this.me.name}'s md array is detached: attach it first (twindisk attach)`);
        return this.array.control(r);
    }
  }

  /** The volume's size was agreed (online resize): the front-ends take it; a connected guest is told. */
  private async frontendsResized(size: number): Promise<void> {
    this.iscsi?.resize(size);
    const vhost = this.vhost;
    if (vhost && vhost.info.size !== size) {
      const { notified } = await vhost.resize(size);
      this.log.info('front-ends take the new size', { size, guestNotified: notified });
    }
  }

  /**
   * Before `attach`: a disk file replaced since start (a new file at the same path, prepared with
   * create-md) is locked anew, refused when someone else holds it; then the old file's lock is dropped.
   */
  private relockReplaced(): void {
    const stale = this.locks.filter((l) => !l.stillNames());
    if (stale.length === 0) return;
    const fresh: DiskLock[] = [];
    try {
      for (const l of stale) fresh.push(lockDisk(l.path, `attach ${this.cfg.resource}/${this.me.name}`));
    } catch (e) {
      for (const l of fresh) l.release();
      throw e;
    }
    for (const l of stale) l.release();
    this.locks = this.locks.map((l) => fresh[stale.indexOf(l)] ?? l);
  }

  /**
   * Undoes a start that failed part way (the port was taken, the metadata is missing, ...): closes what
   * was opened without writing anything (the node never served: its metadata stays exactly as found,
   * with no clean-shutdown superblock), releases the locks. No "node down": it never was up.
   */
  private abortStart(): Promise<void> {
    this.stopping ??= (async () => {
      try {
        await this.metrics?.close();
        await this.statusPage?.close();
        await this.transport?.close().catch((e: Error) => this.log.error(`link shutdown: ${e.message}`));
        await this.control?.close().catch((e: Error) => this.log.error(`control socket shutdown: ${e.message}`));
        try {
          this.resource.abandon(); // timers and the data fd; the metadata is left exactly as found
        } catch (e) {
          this.log.debug(`closing the disk after a failed start: ${(e as Error).message}`);
        }
        await this.array?.whenClosed();
      } finally {
        this.releaseLocks();
        this.resolveStopped();
      }
    })();
    return this.stopping;
  }

  private releaseLocks(): void {
    for (const l of this.locks) l.release();
    this.locks = [];
  }

  /** Stops the front-end, the links and the control socket, then closes the disk cleanly. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      await this.metrics?.close();
      await this.statusPage?.close();
      await this.vhostStarting;
      await this.vhost?.close().catch((e: Error) => this.log.error(`vhost-user shutdown: ${e.message}`));
      await this.iscsiStarting;
      await this.iscsi?.stop().catch((e: Error) => this.log.error(`iSCSI shutdown: ${e.message}`));
      for (const ch of this.channels) ch.stop();
      await this.transport?.close().catch((e: Error) => this.log.error(`link shutdown: ${e.message}`));
      await this.control?.close();
      try {
        this.resource.close();
        // The array's thread records it clean and lets its members go.
        await this.array?.whenClosed();
      } finally {
        // Only once the metadata is written and closed: until then the disk is this node's.
        this.releaseLocks();
      }
      // The workers have exited (vhost.close) and unmapped their ends.
      for (const ch of this.channels) ch.close();
      this.channels = [];
      for (const fd of this.eventFds) close(fd);
      this.eventFds = [];
      this.log.info('node down');
      this.resolveStopped();
    })();
    return this.stopping;
  }
}
