// Prometheus metrics of a node (`twindisk up`) or a served image (`twindisk serve`): a prom-client registry read on scrape, and its HTTP endpoint.
//
// Nothing here is updated per request. Every twindisk metric is a collector that reads, when Prometheus
// scrapes, what the parts already count: the engine's plain fields (Resource.status(), the metadata's
// counters), the transport's per-peer traffic, the iSCSI portal's counters, and the queue workers'
// per-request counters in shared memory (qemu-plugin/virtio/blk-stats.ts). prom-client formats them
// and adds the process metrics (collectDefaultMetrics: CPU, memory, event-loop lag, handles).
import type { ServedRaidStatus } from '../engine/raid/membership.js';
import http from 'node:http';
import type net from 'node:net';
import { Registry, collectDefaultMetrics, type Metric } from 'prom-client';
import type { PortalStats } from '../bootimg/iscsi/portal.js';
import type { Logger } from '../engine/log.js';
import { parseHostPort, type HostPort } from '../engine/replication/config/address.js';
import type { DiskState, Role } from '../engine/replication/frames.js';
import type { Replication } from '../engine/replication/frame-rules.js';
import type { Connection } from '../engine/replication/peer.js';
import type { Resource } from '../engine/replication/resource.js';
import { BLK_STAT_OPS, LATENCY_BUCKETS, type BlkQueueStats } from '../qemu-plugin/virtio/blk-stats.js';
import type { VhostUserServer } from '../qemu-plugin/vhost-user/server.js';
import type { TransportStats, WsTransport } from '../transport/ws-link.js';

export type Labels = Record<string, string>;
/** One exposition line: a series' labels and value, and its name when it differs from the metric's (`_bucket`, `_sum`, `_count`). */
export interface Sample { labels: Labels; value: number; metricName?: string }
type MetricType = 'gauge' | 'counter' | 'histogram';

/** Where metrics are served unless told otherwise: none. Prometheus exporters of storage use ports near 9942 (drbd-reactor). */
export const EXAMPLE_METRICS_PORT = 9942;

/**
 * A metric whose series are read when scraped. prom-client's own Counter and Histogram keep their
 * values themselves and can only be incremented or observed; these report values other code keeps, so
 * they hand the registry what `get()` returns, in the shape its formatter reads (the one its metrics return).
 */
class ScrapedMetric {
  readonly aggregator = 'sum';
  constructor(readonly name: string, readonly help: string, readonly type: MetricType, private readonly read: () => Sample[]) {}

  get(): { name: string; help: string; type: MetricType; aggregator: string; values: Sample[] } {
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values: this.read() };
  }
}

/** The registry of one process's metrics, with the helpers that declare them. */
export class TwindiskMetrics {
  readonly registry = new Registry();

  constructor() {
    collectDefaultMetrics({ register: this.registry });
  }

  /** Declares a metric read on scrape. */
  add(name: string, help: string, type: MetricType, read: () => Sample[]): void {
    this.registry.registerMetric(new ScrapedMetric(name, help, type, read) as unknown as Metric);
  }

  /** The exposition text (Prometheus text format 0.0.4). */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}

/** Series `{...labels, [label]: s}` for every state of `states`: 1 for `current`, 0 for the others (as node exporters show states). */
function stateSeries(labels: Labels, label: string, states: readonly string[], current: string): Sample[] {
  return states.map((s) => ({ labels: { ...labels, [label]: s }, value: s === current ? 1 : 0 }));
}

/** Remembers `read()`'s result for the rest of this turn of the event loop: one scrape reads each source once. */
function perScrape<T>(read: () => T): () => T {
  let cached: { value: T } | null = null;
  return () => {
    if (cached === null) {
      cached = { value: read() };
      setImmediate(() => { cached = null; });
    }
    return cached.value;
  };
}

// ---------------------------------------------------------------------------------------------------------
// Front-ends: vhost-user queues, the iSCSI portal

/** One front-end queue's request counters and the labels that name it. */
export interface RequestCounters { labels: Labels; stats: BlkQueueStats }

/**
 * Per-queue request metrics (request counts, bytes, errors, in flight, latency histograms by type) of
 * every front-end `sources()` lists, each series labelled with its source's labels plus `op`.
 */
export function addRequestMetrics(m: TwindiskMetrics, sources: () => RequestCounters[]): void {
  const queues = perScrape(sources);
  /** Every (queue, op) pair with its counters. */
  const rows = () => queues().flatMap((q) => BLK_STAT_OPS.map((op, row) => ({ labels: { ...q.labels, op }, c: q.stats.read(row) })));
  m.add('twindisk_requests_total', 'Requests completed, by front-end, queue and type (read, write, flush, discard, write_zeroes, other: GET_ID, unsupported, malformed).',
    'counter', () => rows().map((r) => ({ labels: r.labels, value: r.c.completed })));
  m.add('twindisk_request_bytes_total', 'Bytes moved by successful requests, by front-end, queue and type (discard, write_zeroes: the range covered).',
    'counter', () => rows().map((r) => ({ labels: r.labels, value: r.c.bytes })));
  m.add('twindisk_request_errors_total', 'Requests completed with an error status (I/O error, unsupported), by front-end, queue and type.',
    'counter', () => rows().map((r) => ({ labels: r.labels, value: r.c.errors })));
  m.add('twindisk_requests_in_flight', 'Requests started and not completed yet, by front-end and queue.',
    'gauge', () => queues().map((q) => {
      let n = 0;
      for (let row = 0; row < BLK_STAT_OPS.length; row++) {
        const c = q.stats.read(row);
        n += c.started - c.completed;
      }
      return { labels: q.labels, value: Math.max(0, n) };
    }));
  m.add('twindisk_request_duration_seconds', 'Request latency in the back-end (vhost-user: from taking the request off the ring to its completion), by front-end, queue and type.',
    'histogram', () => rows().flatMap((r) => {
      const out: Sample[] = [];
      let cum = 0;
      r.c.buckets.forEach((n, b) => {
        cum += n;
        out.push({ metricName: 'twindisk_request_duration_seconds_bucket', labels: { ...r.labels, le: b < LATENCY_BUCKETS.length ? String(LATENCY_BUCKETS[b]) : '+Inf' }, value: cum });
      });
      out.push({ metricName: 'twindisk_request_duration_seconds_sum', labels: r.labels, value: r.c.latencySum });
      out.push({ metricName: 'twindisk_request_duration_seconds_count', labels: r.labels, value: cum });
      return out;
    }));
}

/** What an iSCSI target reports: its portal's counters and the counters of the requests it made of its disk (countedBackend). */
export interface IscsiCounters { portal: Readonly<PortalStats>; requests: BlkQueueStats | null }

/**
 * The front-ends' metrics, labelled `base`: requests per vhost-user queue (`frontend="vhost-user"`,
 * `queue` its index) and of the iSCSI target (`frontend="iscsi"`, `queue="0"`: its disk operations),
 * the vhost-user connection, and the iSCSI portal's counters. A source that is null (not started, or
 * started without counters) reports nothing.
 */
export function addFrontendMetrics(m: TwindiskMetrics, base: Labels, server: () => VhostUserServer | null, iscsi: () => IscsiCounters | null): void {
  addRequestMetrics(m, () => {
    const out: RequestCounters[] = (server()?.queueStats() ?? []).map((stats, i) => ({ labels: { ...base, frontend: 'vhost-user', queue: String(i) }, stats }));
    const t = iscsi()?.requests;
    if (t) out.push({ labels: { ...base, frontend: 'iscsi', queue: '0' }, stats: t });
    return out;
  });
  m.add('twindisk_vhost_frontend_connected', 'Whether a vhost-user front-end (QEMU) is connected.',
    'gauge', () => { const s = server(); return s ? [{ labels: base, value: s.connected ? 1 : 0 }] : []; });
  m.add('twindisk_vhost_frontend_connections_total', 'vhost-user front-end connections accepted.',
    'counter', () => { const s = server(); return s ? [{ labels: base, value: s.connections }] : []; });
  addIscsiMetrics(m, base, () => iscsi()?.portal ?? null);
}

/** The iSCSI portal's counters (connections, sessions, PDUs, protocol errors), labelled `base`. */
function addIscsiMetrics(m: TwindiskMetrics, base: Labels, stats: () => Readonly<PortalStats> | null): void {
  const one = (name: string, help: string, type: MetricType, pick: (s: Readonly<PortalStats>) => number) =>
    m.add(name, help, type, () => { const s = stats(); return s ? [{ labels: base, value: pick(s) }] : []; });
  one('twindisk_iscsi_connections', 'iSCSI connections open now.', 'gauge', (s) => s.connections);
  one('twindisk_iscsi_sessions', 'iSCSI sessions in full feature phase now.', 'gauge', (s) => s.sessions);
  one('twindisk_iscsi_connections_accepted_total', 'iSCSI connections accepted.', 'counter', (s) => s.accepted);
  one('twindisk_iscsi_connections_refused_total', 'iSCSI connections refused at accept (too many open).', 'counter', (s) => s.refused);
  one('twindisk_iscsi_pdus_received_total', 'iSCSI PDUs received.', 'counter', (s) => s.pdusIn);
  one('twindisk_iscsi_pdus_sent_total', 'iSCSI PDUs sent.', 'counter', (s) => s.pdusOut);
  one('twindisk_iscsi_protocol_errors_total', 'iSCSI connections closed because the initiator broke the protocol.', 'counter', (s) => s.protocolErrors);
}

// ---------------------------------------------------------------------------------------------------------
// The replicated resource

const ROLES: readonly Role[] = ['Primary', 'Secondary'];
const DISK_STATES: readonly DiskState[] = ['UpToDate', 'Inconsistent', 'Outdated', 'Diskless', 'Failed'];
const CONNECTIONS: readonly Connection[] = ['StandAlone', 'Connecting', 'Connected'];
const REPLICATIONS: readonly Replication[] = ['Off', 'Handshake', 'WFBitMap', 'Established', 'SyncSource', 'SyncTarget', 'SplitBrain'];

/** The transport's connection counters, as `twindisk_link_events_total{event}`. */
const LINK_EVENTS: [keyof TransportStats, string][] = [
  ['accepted', 'accepted'], ['dials', 'dialled'], ['dialsFailed', 'dial_failed'], ['linksUp', 'link_up'],
  ['handshakesFailed', 'handshake_failed'], ['authFailed', 'auth_failed'], ['handshakesDeclined', 'handshake_declined'],
  ['handshakesTimedOut', 'handshake_timed_out'], ['handshakesAbandoned', 'handshake_abandoned'], ['connectionsRefused', 'connection_refused'],
];

/**
 * The resource's metrics, labelled `resource` and `node` (and `peer` per peer): role, disk state, quorum,
 * the engine's counters (disk errors, self-healed reads, activity-log updates), and per peer the
 * connection and replication states, out-of-sync bytes, resync progress, traffic and round trip.
 */
export function addResourceMetrics(m: TwindiskMetrics, res: Resource, transport: () => WsTransport | null): void {
  const base: Labels = { resource: res.cfg.resource, node: res.me.name };
  const status = perScrape(() => res.status());
  const peerLabels = (name: string): Labels => ({ ...base, peer: name });
  const gauge = (name: string, help: string, value: () => number) => m.add(name, help, 'gauge', () => [{ labels: base, value: value() }]);
  const counter = (name: string, help: string, value: () => number) => m.add(name, help, 'counter', () => [{ labels: base, value: value() }]);

  m.add('twindisk_role', 'This node\'s role: 1 for the current one.', 'gauge', () => stateSeries(base, 'role', ROLES, status().role));
  m.add('twindisk_disk_state', 'This node\'s disk state: 1 for the current one.', 'gauge', () => stateSeries(base, 'state', DISK_STATES, status().disk));
  gauge('twindisk_quorum', 'Whether this node has quorum (1) or not (0).', () => (status().quorum ? 1 : 0));
  gauge('twindisk_quorum_votes', 'Votes this node counts now (itself and the peers it reaches).', () => status().votes.have);
  gauge('twindisk_quorum_votes_needed', 'Votes needed for quorum.', () => status().votes.needed);
  gauge('twindisk_size_bytes', 'The volume\'s usable size.', () => status().size);
  gauge('twindisk_clients', 'Front-end clients holding this node Primary (a vhost-user connection, iSCSI sessions).', () => status().clients);
  counter('twindisk_reads_total', 'Guest reads the engine served (a queue worker\'s local reads are not counted here).', () => status().stats.reads);
  counter('twindisk_writes_total', 'Guest writes the engine completed (replicated, or written by a worker on a Primary alone).', () => status().stats.writes);
  counter('twindisk_flushes_total', 'Guest flushes the engine completed.', () => status().stats.flushes);
  counter('twindisk_disk_read_errors_total', 'Failed local reads (each served by an UpToDate peer instead).', () => status().stats.localReadErrors);
  counter('twindisk_disk_write_errors_total', 'Failed local writes, trims, flushes and metadata updates (each detaches the disk).', () => status().stats.localWriteErrors);
  counter('twindisk_reads_repaired_total', 'Self-healed reads: blocks that failed locally, read from a peer and rewritten locally.', () => status().stats.readsRepaired);
  counter('twindisk_write_conflicts_total', 'Overlapping concurrent writes resolved (allow-two-primaries, resync overlaps).', () => status().stats.writeConflicts);
  counter('twindisk_frames_refused_total', 'Frames a peer sent outside the states that allow them (each closed the link).', () => status().stats.framesRefused);
  const md = (pick: (s: NonNullable<Resource['md']>['stats']) => number) => (): Sample[] => (res.md ? [{ labels: base, value: pick(res.md.stats) }] : []);
  m.add('twindisk_activity_log_updates_total', 'Activity-log transactions written (extents made hot before their first write); since the disk was attached.', 'counter', md((s) => s.alWrites));
  m.add('twindisk_metadata_superblock_writes_total', 'Superblock writes; since the disk was attached.', 'counter', md((s) => s.superblockWrites));
  m.add('twindisk_metadata_bitmap_page_writes_total', 'Out-of-sync bitmap pages written; since the disk was attached.', 'counter', md((s) => s.bitmapPageWrites));
  m.add('twindisk_metadata_syncs_total', 'fdatasync calls on the metadata; since the disk was attached.', 'counter', md((s) => s.syncs));

  // Per peer.
  const peers = () => Object.entries(status().peers);
  const perPeer = (name: string, help: string, type: MetricType, value: (p: ReturnType<typeof peers>[number][1], peer: string) => number | null) =>
    m.add(name, help, type, () => peers().flatMap(([peer, p]) => {
      const v = value(p, peer);
      return v === null ? [] : [{ labels: peerLabels(peer), value: v }];
    }));
  m.add('twindisk_peer_connection_state', 'The connection to each peer: 1 for the current state.', 'gauge',
    () => peers().flatMap(([peer, p]) => stateSeries(peerLabels(peer), 'state', CONNECTIONS, p.connection)));
  m.add('twindisk_peer_replication_state', 'The replication state toward each peer: 1 for the current state.', 'gauge',
    () => peers().flatMap(([peer, p]) => stateSeries(peerLabels(peer), 'state', REPLICATIONS, p.replication)));
  m.add('twindisk_peer_role', 'Each connected peer\'s role as it last said: 1 for the current one.', 'gauge',
    () => peers().flatMap(([peer, p]) => (p.role === 'Unknown' ? [] : stateSeries(peerLabels(peer), 'role', ROLES, p.role))));
  m.add('twindisk_peer_disk_state', 'Each connected peer\'s disk state as it last said: 1 for the current one.', 'gauge',
    () => peers().flatMap(([peer, p]) => (p.disk === 'DUnknown' ? [] : stateSeries(peerLabels(peer), 'state', DISK_STATES, p.disk))));
  perPeer('twindisk_peer_out_of_sync_bytes', 'Bytes marked out of sync toward each peer (what a resync would send).', 'gauge', (p) => p.outOfSyncBytes);
  perPeer('twindisk_peer_resync_bytes_per_second', 'Rate of the resync running with each peer (absent when none runs).', 'gauge', (p) => p.resync?.rateBytesPerSec ?? null);
  perPeer('twindisk_peer_resync_eta_seconds', 'Estimated time left of the resync running with each peer (absent when none runs or no rate is known yet).', 'gauge',
    (p) => p.resync?.etaSeconds ?? null);
  perPeer('twindisk_peer_resync_done_ratio', 'Fraction done of the resync running with each peer, 0 to 1.', 'gauge', (p) => (p.resync ? p.resync.percent / 100 : null));
  perPeer('twindisk_peer_data_sent_bytes_total', 'Replicated write data sent to each peer.', 'counter', (p) => p.stats.dataBytesSent);
  perPeer('twindisk_peer_data_received_bytes_total', 'Replicated write data received from each peer.', 'counter', (p) => p.stats.dataBytesReceived);
  perPeer('twindisk_peer_reads_served_total', 'Reads this node served for each peer (a diskless peer\'s, or one repairing a block).', 'counter', (p) => p.stats.readsServed);
  const traffic = (peer: string) => {
    const t = transport();
    const p = res.peers.find((x) => x.name === peer);
    return t && p ? t.peerTraffic(p.id) : null;
  };
  perPeer('twindisk_peer_sent_bytes_total', 'Bytes of frames sent to each peer after the handshake (all frame types).', 'counter', (_p, peer) => traffic(peer)?.bytesSent ?? null);
  perPeer('twindisk_peer_received_bytes_total', 'Bytes of frames received from each peer after the handshake.', 'counter', (_p, peer) => traffic(peer)?.bytesReceived ?? null);
  perPeer('twindisk_peer_sent_frames_total', 'Frames sent to each peer after the handshake.', 'counter', (_p, peer) => traffic(peer)?.framesSent ?? null);
  perPeer('twindisk_peer_received_frames_total', 'Frames received from each peer after the handshake.', 'counter', (_p, peer) => traffic(peer)?.framesReceived ?? null);
  perPeer('twindisk_peer_rtt_seconds', 'Round trip of the last keep-alive PING to each connected peer.', 'gauge', (p, peer) => {
    const rtt = traffic(peer)?.rttSeconds ?? 0;
    return p.connection === 'Connected' && rtt > 0 ? rtt : null;
  });
  m.add('twindisk_link_events_total', 'The transport\'s connection events since start: accepted, dialled, link_up, handshake failures and refusals.', 'counter', () => {
    const t = transport();
    if (!t) return [];
    const s = t.stats;
    return LINK_EVENTS.map(([k, event]) => ({ labels: { ...base, event }, value: s[k] }));
  });
}

// ---------------------------------------------------------------------------------------------------------
// The endpoint

/**
 * Parses `--metrics HOST:PORT` ("[v6]:port"; port 0 picks a free one, reported once listening). Returns
 * a message saying what is wrong instead when it does not read.
 */
export function parseMetricsAddress(s: string): HostPort | string {
  const zero = /:0$/.test(s);
  const r = parseHostPort(zero ? `${s.slice(0, -2)}:${EXAMPLE_METRICS_PORT}` : s, EXAMPLE_METRICS_PORT, null);
  if (typeof r === 'string') return r.replace('1..65535', '0..65535');
  return zero ? { host: r.host, port: 0 } : r;
}

function show(hp: HostPort): string {
  return hp.host.includes(':') ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`;
}

/** A small HTTP server answering GET /metrics with the registry's text; any other path is 404, any other method 405. */
export class MetricsServer {
  private server: http.Server | null = null;
  private bound: HostPort | null = null;

  constructor(private readonly at: HostPort, private readonly metrics: TwindiskMetrics, private readonly log: Logger) {}

  /** The address listened on (the real port when 0 was asked for). */
  get address(): HostPort {
    return this.bound ?? this.at;
  }

  /** The URL Prometheus scrapes. */
  get url(): string {
    return `http://${show(this.address)}/metrics`;
  }

  /** Listens; rejects with what to do when the address is taken or not this machine's. */
  async start(): Promise<void> {
    const server = http.createServer((req, res) => void this.answer(req, res));
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e: NodeJS.ErrnoException) => {
        const where = show(this.at);
        reject(new Error(e.code === 'EADDRINUSE'
          ? `cannot listen for metrics on ${where}: the port is in use (another twindisk node or serve, or another exporter?): choose another port for --metrics (or the node's "metrics" key)`
          : e.code === 'EADDRNOTAVAIL'
            ? `cannot listen for metrics on ${where}: that address is not one of this machine's: give one of its addresses, 127.0.0.1, or 0.0.0.0 for all`
            : e.code === 'EACCES'
              ? `cannot listen for metrics on ${where}: permission denied (ports below 1024 need root): choose a port of 1024 or more`
              : `cannot listen for metrics on ${where}: ${e.message}`));
      });
      server.listen(this.at.port, this.at.host, () => resolve());
    });
    server.on('error', (e) => this.log.warn(`metrics endpoint: ${e.message}`));
    const a = server.address() as net.AddressInfo;
    this.bound = { host: this.at.host, port: a.port };
    this.server = server;
    this.log.info('serving metrics', { url: this.url });
  }

  private async answer(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = (req.url ?? '/').split('?')[0];
    if (url !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end('not found: metrics are at /metrics\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { 'content-type': 'text/plain; charset=utf-8', allow: 'GET, HEAD' }).end('only GET and HEAD\n');
      return;
    }
    try {
      const body = await this.metrics.text();
      res.writeHead(200, { 'content-type': this.metrics.contentType }).end(req.method === 'HEAD' ? undefined : body);
    } catch (e) {
      this.log.error(`metrics scrape failed: ${(e as Error).stack ?? e}`);
      res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' }).end(`scrape failed: ${(e as Error).message}\n`);
    }
  }

  /** Stops listening and closes open scrape connections. */
  async close(): Promise<void> {
    const s = this.server;
    this.server = null;
    if (!s) return;
    s.closeAllConnections();
    await new Promise<void>((r) => s.close(() => r()));
  }
}

/** What a node (`twindisk up`) reports: its resource, and its front-ends once they run. */
export interface NodeParts {
  transport: () => WsTransport | null;
  vhost: () => VhostUserServer | null;
  iscsi: () => IscsiCounters | null;
  /** A node whose disk is an md array: its last status (refreshed by the node), or null. */
  raid?: () => ServedRaidStatus | null;
}

/** Every metric of a node, labelled with its resource and node name. */
export function nodeMetrics(res: Resource, parts: NodeParts): TwindiskMetrics {
  const m = new TwindiskMetrics();
  addResourceMetrics(m, res, parts.transport);
  const base: Labels = { resource: res.cfg.resource, node: res.me.name };
  addFrontendMetrics(m, base, parts.vhost, parts.iscsi);
  if (parts.raid) addRaidMetrics(m, base, parts.raid);
  return m;
}

// ---------------------------------------------------------------------------------------------------------
// An md array (serve --raid, or a node whose disk is one), as node_exporter's md collector shows it

const RAID_MEMBER_STATES = ['in-sync', 'recovering', 'missing'] as const;

/** The array's state, members and background work, from `status()` (the served array's raid-status object; null: no array now). */
export function addRaidMetrics(m: TwindiskMetrics, base: Labels, status: () => ServedRaidStatus | null): void {
  const st = perScrape(status);
  const one = (f: (s: ServedRaidStatus) => Sample[]) => () => { const s = st(); return s ? f(s) : []; };
  m.add('twindisk_raid_slots', 'Slots (raid devices) of the md array.', 'gauge', one((s) => [{ labels: { ...base, level: s.level }, value: s.raidDevices }]));
  m.add('twindisk_raid_degraded', 'Slots of the md array not in sync (md\'s degraded).', 'gauge', one((s) => [{ labels: base, value: s.degraded }]));
  m.add('twindisk_raid_member_state', 'Each slot\'s state: 1 for the current one.', 'gauge',
    one((s) => s.members.flatMap((mb) => stateSeries({ ...base, slot: String(mb.slot) }, 'state', RAID_MEMBER_STATES, mb.state))));
  m.add('twindisk_raid_sync_done_ratio', 'Progress of the running rebuild, check, repair or resync (0..1), by action.', 'gauge',
    one((s) => (s.work ? [{ labels: { ...base, action: s.work.action }, value: s.work.total > 0 ? s.work.done / s.work.total : 1 }] : [])));
  m.add('twindisk_raid_mismatch_sectors', 'Sectors the last check or repair found inconsistent (md\'s mismatch_cnt).', 'gauge',
    one((s) => (s.lastCheck ? [{ labels: base, value: s.lastCheck.mismatches }] : [])));
  m.add('twindisk_raid_member_errors_total', 'I/O errors per slot while serving (read, write) and read errors repaired by rewriting the block (corrected_read).', 'counter',
    one((s) => (s.memberErrors ?? []).flatMap((e) => [
      { labels: { ...base, slot: String(e.slot), kind: 'read' }, value: e.readErrors },
      { labels: { ...base, slot: String(e.slot), kind: 'write' }, value: e.writeErrors },
      { labels: { ...base, slot: String(e.slot), kind: 'corrected_read' }, value: e.correctedReads },
    ])));
}
