// A node's iSCSI front-end: the resource's volume as LUN 0 of an iSCSI target on the node's "iscsi" portal.
//
// The portal runs on the node's main thread beside the Resource. Its disk operations go through a ReplicatedBackend
// over a channel of their own, exactly as a vhost-user queue worker's do (the engine cannot tell the two apart); the
// channel's completions are delivered by a callback instead of an eventfd, since both ends share this thread.
//
// Who serves: a login to a node that is not Primary is redirected to the Primary's portal when a peer is Primary;
// otherwise the node promotes itself once the session is authenticated (as a vhost-user connection does) and demotes
// when the last session ends. A node that cannot promote (no quorum, a newer peer) refuses the login with the reason.
import { DiskOpRunner } from '../bootimg/iscsi/disk-ops.js';
import type { LoginDecision } from '../bootimg/iscsi/connection-state.js';
import { IscsiPortal, type PortalStats } from '../bootimg/iscsi/portal.js';
import { capacityChanged, makeScsiDisk } from '../bootimg/iscsi/scsi.js';
import type { ScsiDisk } from '../bootimg/iscsi/scsi-vpd.js';
import { iscsiNameProblem } from '../bootimg/ipxe.js';
import type { Logger } from '../engine/log.js';
import { EFD_CLOEXEC, EFD_NONBLOCK, close, eventfd } from '../engine/os.js';
import { ChannelHost } from '../engine/replication/channel.js';
import { ConfigError } from '../engine/replication/config.js';
import type { NodeConfig, ResourceConfig } from '../engine/replication/config.js';
import { ReplicatedBackend } from '../engine/replication/replicated-backend.js';
import type { Resource } from '../engine/replication/resource.js';
import { serialFor } from '../engine/serial.js';
import type { BlkQueueStats } from '../qemu-plugin/virtio/blk-stats.js';
import { countedBackend } from './counted-backend.js';

function show(hp: { host: string; port: number }): string {
  return hp.host.includes(':') ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`;
}

/** The iSCSI target of one node. */
export class NodeIscsi {
  private portal: IscsiPortal | null = null;
  private channel: ChannelHost | null = null;
  private backend: ReplicatedBackend | null = null;
  private eventFd = -1;
  private sessions = 0;
  private disk: ScsiDisk | null = null;
  /** Set before start() to count the target's disk operations (`--metrics`). */
  requestStats: BlkQueueStats | null = null;

  constructor(private readonly cfg: ResourceConfig, private readonly me: NodeConfig, private readonly resource: Resource, private readonly log: Logger) {
    const problem = iscsiNameProblem(cfg.iscsiTarget);
    if (problem) throw new ConfigError([`${cfg.file}: "iscsi-target": ${problem}`]);
  }

  /** Portal counters (null until started). */
  get stats(): Readonly<PortalStats> | null {
    return this.portal?.stats ?? null;
  }

  /** Opens the channel and listens on the node's portal; call once the volume's size is known. */
  async start(): Promise<void> {
    const portalAt = this.me.iscsi!;
    this.eventFd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (this.eventFd < 0) throw new Error('eventfd() failed: out of file descriptors?');
    // Completions are posted by the Resource on this thread; the channel calls wake() once per turn with them all.
    this.channel = new ChannelHost(this.eventFd, () => this.backend?.poll());
    void this.resource.serveChannel(this.channel);
    this.backend = new ReplicatedBackend({
      kind: 'replicated', channel: this.channel.spec, size: this.resource.size, blockSize: this.cfg.blockSize,
      local: this.me.disk && !this.me.raid ? { path: this.me.disk } : null, hot: this.resource.hotSpec(), name: `replicated:${this.cfg.resource}`,
    });
    const disk = makeScsiDisk({
      id: `resource:${this.cfg.resource}`, blocks: BigInt(this.resource.size / this.cfg.blockSize), blockSize: this.cfg.blockSize,
      serial: serialFor({ resource: this.cfg.resource }),
    });
    this.disk = disk;
    this.portal = new IscsiPortal({
      host: portalAt.host, port: portalAt.port, log: this.log,
      targets: [{ name: this.cfg.iscsiTarget, disk, addresses: [show(this.me.iscsiAdvertise ?? portalAt)], runner: new DiskOpRunner(this.requestStats ? countedBackend(this.backend, this.requestStats) : this.backend) }],
      decideLogin: () => this.decideLogin(),
      onSessionStart: () => this.sessionStart(),
      onSessionEnd: () => this.sessionEnd(),
    });
    await this.portal.start();
  }

  /** Before authentication: redirect to a Primary peer's portal, or accept (promotion waits for an authenticated session). */
  private decideLogin(): LoginDecision {
    if (this.resource.role === 'Primary') return 'accept';
    const primary = this.resource.peers.find((p) => p.link && p.state?.role === 'Primary');
    if (primary) {
      const node = this.cfg.nodes.find((n) => n.name === primary.name);
      if (node?.iscsiAdvertise) {
        this.log.info(`redirecting an iSCSI login to ${primary.name}, the Primary, at ${show(node.iscsiAdvertise)}`);
        return { redirect: show(node.iscsiAdvertise) };
      }
      return { refuse: `${primary.name} is Primary and has no iSCSI portal: give it an "iscsi" portal, or demote it` };
    }
    return 'accept';
  }

  /** An authenticated session: promote (auto-promote, as for vhost-user) unless already Primary. */
  private sessionStart(): string | null {
    try {
      this.resource.clientOpened();
    } catch (e) {
      return `cannot become Primary: ${(e as Error).message}`;
    }
    this.sessions++;
    return null;
  }

  /** The last session's end releases the Primary role (the next boot may log in anywhere). */
  private sessionEnd(): void {
    this.sessions = Math.max(0, this.sessions - 1);
    this.resource.clientClosed();
  }

  /**
   * Online resize (the size every node agreed on): requests are checked against it, READ CAPACITY reports it from the
   * next command on, and every session gets a CAPACITY DATA HAS CHANGED unit attention on its next command (see README:
   * Growing a volume).
   */
  resize(size: number): void {
    this.backend?.resize(size);
    if (this.disk) capacityChanged(this.disk, BigInt(size / this.cfg.blockSize));
  }

  /** Closes the portal (initiators see their connection drop) and the channel. */
  async stop(): Promise<void> {
    await this.portal?.close();
    this.portal = null;
    this.channel?.stop();
    this.backend?.close();
    this.channel?.close();
    if (this.eventFd >= 0) close(this.eventFd);
    this.eventFd = -1;
  }
}
