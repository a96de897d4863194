// The replicated-resource commands of the CLI: create-md, up, down, status, primary, secondary, connect,
// disconnect, attach, verify, wait-sync. Each names the resource file and this node (--config, --node).
import fs from 'node:fs';
import path from 'node:path';
import { Option, type Command } from 'commander';
import type { PortalStats } from '../bootimg/iscsi/portal.js';
import { controlCall, type ControlRequest } from '../daemon/control.js';
import { parseMetricsAddress } from '../daemon/metrics.js';
import { parseHttpAddress } from '../daemon/http/status-server.js';
import type { HostPort } from '../engine/replication/config/address.js';
import { Node, lockNodeDisks } from '../daemon/node.js';
import { loadResource, nodeByName, type NodeConfig } from '../engine/replication/config.js';
import { Metadata, metadataSize } from '../engine/replication/metadata.js';
import type { PeerStatus, ResourceStatus } from '../engine/replication/resource.js';
import type { ServedRaidStatus } from '../engine/raid/membership.js';
import { secondsArg, sizeArg } from './args.js';
import { CommandError, UsageError } from './errors.js';
import { ProgressBars, type ProgressRow } from './progress.js';
import { createRaidDiskMd } from './raid-disk.js';

// Errors: UsageError, commander's usage errors and the ConfigError of a bad resource file exit 2;
// CommandError, MetadataError and DiskLockError (run-time failures) exit 1; see cli/errors.ts.

interface Target { file: string; node: NodeConfig }
interface TargetOptions { config?: string; node?: string }

/**
 * The resource file and this node in it. --config and --node are checked here rather than declared
 * mandatory: commander reports a missing mandatory option before an unknown one, and `--confg r0.json`
 * deserves "unknown option '--confg' (Did you mean --config?)", not "--config not specified".
 */
function target(o: TargetOptions, cmd: Command): Target {
  if (!o.config) throw new UsageError(`${cmd.name()} needs --config FILE (the resource file)`);
  if (!o.node) throw new UsageError(`${cmd.name()} needs --node NAME (this node's name in ${o.config})`);
  const cfg = loadResource(o.config);
  return { file: o.config, node: nodeByName(cfg, o.node) };
}

/** Declares a resource command: --config FILE and --node NAME, then its own options. */
function resourceCommand(program: Command, name: string, summary: string, description = ''): Command {
  return program.command(name)
    .summary(summary)
    .description(description || `${summary[0]!.toUpperCase()}${summary.slice(1)}.`)
    .option('--config <file>', 'the resource file (required)')
    .option('--node <name>', 'this node\'s name in the resource file (required)');
}

/** Adds the resource commands to the program. */
export function addResourceCommands(program: Command): void {
  resourceCommand(program, 'create-md', 'initialise the node\'s metadata',
    'Initialise the node\'s metadata (internal: at the end of its backing file).\n'
    + '--assume-clean marks the data UpToDate with the same first generation on every node (only when all\n'
    + 'backing files are new and zeroed: no initial sync).')
    .addOption(new Option('--size <size>', 'create the backing file with SIZE usable bytes (a multiple of 4096, e.g. 100G); for an md array disk, each missing member file with SIZE bytes').argParser(sizeArg))
    .option('--force', 'overwrite existing metadata')
    .option('--assume-clean', 'start every node UpToDate without an initial sync (all disks new and zeroed)')
    .action((o: TargetOptions & { size?: number; force?: boolean; assumeClean?: boolean }, cmd: Command) => createMd(o, cmd));
  resourceCommand(program, 'up', 'run the node in the foreground',
    'Run the node in the foreground: replication links, control socket, vhost-user socket (QEMU connecting\n'
    + 'promotes the node to Primary when no other node is Primary and it has quorum).')
    .addOption(new Option('--metrics <host:port>', 'serve Prometheus metrics at http://HOST:PORT/metrics (instead of the node\'s "metrics" key; port 0: a free one, printed)')
      .argParser((v: string) => {
        const r = parseMetricsAddress(v);
        if (typeof r === 'string') throw new UsageError(`--metrics: ${r}`);
        return r;
      }))
    .addOption(new Option('--http <host:port>', 'serve the live status page at http://HOST:PORT/ (instead of the node\'s "http" key; port 0: a free one, printed)')
      .argParser((v: string) => {
        const r = parseHttpAddress(v);
        if (typeof r === 'string') throw new UsageError(`--http: ${r}`);
        return r;
      }))
    .option('--http-admin', 'allow primary, secondary, verify, connect and disconnect from the status page, signed with the resource secret (or the node\'s "http-admin" key)')
    .action((o: TargetOptions & { metrics?: HostPort; http?: HostPort; httpAdmin?: boolean }, cmd: Command) => up(o, cmd));
  resourceCommand(program, 'down', 'stop a running node')
    .action((o: TargetOptions, cmd: Command) => call(target(o, cmd), { cmd: 'down' }));
  resourceCommand(program, 'status', 'show the node\'s role, disk, peers and resync progress')
    .option('--json', 'print the status as JSON')
    .action((o: TargetOptions & { json?: boolean }, cmd: Command) => status(o, cmd));
  resourceCommand(program, 'primary', 'promote the node to Primary')
    .option('--force', 'promote even without an UpToDate peer (a new resource, or the last survivor)')
    .action((o: TargetOptions & { force?: boolean }, cmd: Command) => call(target(o, cmd), { cmd: 'primary', force: !!o.force }));
  resourceCommand(program, 'secondary', 'demote the node to Secondary')
    .action((o: TargetOptions, cmd: Command) => call(target(o, cmd), { cmd: 'secondary' }));
  resourceCommand(program, 'connect', 'connect to the peers (or one peer)')
    .option('--peer <name>', 'only this peer')
    .option('--discard-my-data', 'resolve a split brain: this node\'s changes go, it resyncs from the peer')
    .action((o: TargetOptions & { peer?: string; discardMyData?: boolean }, cmd: Command) =>
      call(target(o, cmd), { cmd: 'connect', ...(o.peer ? { peer: o.peer } : {}), discardMyData: !!o.discardMyData }));
  resourceCommand(program, 'disconnect', 'disconnect from the peers (or one peer)')
    .option('--peer <name>', 'only this peer')
    .action((o: TargetOptions & { peer?: string }, cmd: Command) => call(target(o, cmd), { cmd: 'disconnect', ...(o.peer ? { peer: o.peer } : {}) }));
  resourceCommand(program, 'attach', 'take the node\'s disk back after an I/O error detached it',
    'Take the node\'s disk back after an I/O error detached it; it resyncs fully from a peer.')
    .action((o: TargetOptions, cmd: Command) => call(target(o, cmd), { cmd: 'attach' }));
  resourceCommand(program, 'verify', 'compare every block with the connected peers by hash')
    .option('--resync', 'then resync what differs')
    .option('--wait', 'show progress until the verify is done, then the blocks out of sync')
    .action((o: TargetOptions & { resync?: boolean; wait?: boolean }, cmd: Command) => verify(o, cmd));
  resourceCommand(program, 'wait-sync', 'show resync progress until every connected peer is in sync')
    .addOption(new Option('--timeout <s>', 'give up (exit 1) after this many seconds').argParser(secondsArg).default(3600))
    .action((o: TargetOptions & { timeout: number }, cmd: Command) => waitSync(o, cmd));
}

async function call(t: Target, req: ControlRequest): Promise<void> {
  try {
    const r = await controlCall(t.node.control, req);
    if (req.cmd === 'down') process.stdout.write(`${t.node.name}: stopping\n`);
    else if (r && typeof r === 'object' && 'role' in r) process.stdout.write(formatStatus(r as ResourceStatus, t.node.control));
    else process.stdout.write(JSON.stringify(r) + '\n');
  } catch (e) {
    throw new CommandError(`${t.node.name}: ${(e as Error).message}`);
  }
}

function createMd(values: TargetOptions & { size?: number; force?: boolean; assumeClean?: boolean }, cmd: Command): void | Promise<void> {
  const t = target(values, cmd);
  const cfg = loadResource(t.file);
  const me = t.node;
  if (!me.disk) throw new UsageError(`${me.name} is diskless ("disk": null): it has no metadata to create`);
  const peerIds = cfg.nodes.filter((n) => n.id !== me.id).map((n) => n.id);
  const external = me.metaDisk !== 'internal';
  // Everything that can be checked without touching a file first, so that a mistake changes nothing.
  const size = values.size ?? null;
  if (size !== null && size % 4096 !== 0) throw new UsageError(`--size ${values.size} is not a multiple of 4096`);
  const assumeClean = (md: Metadata): void => {
    // Every node derives the same first generation from the resource and the size, so they start in sync.
    md.setInitialGeneration(cleanGeneration(cfg.resource, md.dataSize));
    md.disk = 'UpToDate';
    md.writeSuperblock();
  };
  if (me.raid) {
    return createRaidDiskMd(cfg, me, {
      ...(size !== null ? { size } : {}), force: !!values.force, ...(values.assumeClean ? { initialGeneration: assumeClean } : {}),
    });
  }
  const existed = fs.existsSync(me.disk);
  if (!existed && size === null) throw new CommandError(`backing file ${me.disk} does not exist: create it (truncate -s 1G ${me.disk}) or pass --size`);
  for (const file of [me.disk, ...(external ? [me.metaDisk] : [])]) {
    const dir = path.dirname(file);
    if (!fs.existsSync(file) && !fs.existsSync(dir)) throw new CommandError(`cannot create ${file}: the directory ${dir} does not exist (create it first: mkdir -p ${dir})`);
  }
  // The disk has one owner: refused while a node (or another create-md) holds it, before anything is written.
  const metaExisted = external && fs.existsSync(me.metaDisk);
  const locks = lockNodeDisks(cfg, me, `create-md for ${cfg.resource}/${me.name}`, { disk: !existed, meta: true });
  try {
    if (!existed && fs.statSync(me.disk).size === 0) {
      fs.truncateSync(me.disk, external ? size! : size! + metadataSize(size!, peerIds.length, cfg.bitmapGranularity));
    }
    let md: Metadata;
    try {
      md = Metadata.create({
        backingFile: me.disk, metaFile: external ? me.metaDisk : null, nodeId: me.id, peerIds,
        granularity: cfg.bitmapGranularity, alExtents: cfg.alExtents, force: !!values.force,
      });
    } catch (e) {
      if (external && !metaExisted) fs.rmSync(me.metaDisk, { force: true }); // the empty file the lock created
      throw e;
    }
    try {
      if (values.assumeClean) assumeClean(md);
      process.stdout.write(`${me.name}: metadata created on ${external ? me.metaDisk : `${me.disk} (internal)`}; ${md.dataSize} usable bytes, ${md.disk}\n`);
    } finally {
      md.close();
    }
  } finally {
    for (const l of locks) l.release();
  }
}

/** The generation every node starts at with --assume-clean: a hash of the resource name and size. */
function cleanGeneration(resource: string, size: number): bigint {
  let h = 0xcbf29ce484222325n;
  for (const b of Buffer.from(`${resource}:${size}`)) h = ((h ^ BigInt(b)) * 0x100000001b3n) & 0xffffffffffffffffn;
  return (h | 4n) & ~1n;
}

async function up(values: TargetOptions & { metrics?: HostPort; http?: HostPort; httpAdmin?: boolean }, cmd: Command): Promise<void> {
  const t = target(values, cmd);
  if (values.httpAdmin && !values.http && !t.node.http) throw new UsageError(`--http-admin needs a status page: add --http HOST:PORT (or the node's "http" key)`);
  const node = new Node({
    config: t.file, node: t.node.name, ...(values.metrics ? { metrics: values.metrics } : {}),
    ...(values.http ? { http: values.http } : {}), ...(values.httpAdmin ? { httpAdmin: true } : {}),
  });
  await node.start();
  process.stdout.write(`twindisk: ${node.cfg.resource}/${node.me.name} is up (control socket ${node.me.control})\n`);
  if (node.metrics) process.stdout.write(`twindisk: metrics on ${node.metrics.url}\n`);
  if (node.statusPage) process.stdout.write(`twindisk: status page on ${node.statusPage.url} (${node.statusPage.admin ? 'admin: actions signed with the resource secret' : 'read-only'})\n`);
  const stop = (sig: string) => {
    node.log.info(`${sig} received: shutting down`);
    void node.stop();
  };
  process.once('SIGINT', () => stop('SIGINT'));
  process.once('SIGTERM', () => stop('SIGTERM'));
  await node.stopped;
}

async function status(values: TargetOptions & { json?: boolean }, cmd: Command): Promise<void> {
  const t = target(values, cmd);
  let s: ResourceStatus;
  try {
    s = (await controlCall(t.node.control, { cmd: 'status' })) as ResourceStatus;
  } catch (e) {
    throw new CommandError(`${t.node.name}: ${(e as Error).message}`);
  }
  if (values.json) {
    const peers: Record<string, unknown> = {};
    for (const [name, p] of Object.entries(s.peers)) peers[name] = p;
    process.stdout.write(JSON.stringify({ ...s, peers }) + '\n');
  } else {
    process.stdout.write(formatStatus(s, t.node.control));
  }
}

const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
/** 1536 -> "1.5 KiB". */
export function humanBytes(n: number): string {
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
}

/** A resync progress bar: `[=======>            ] 35.2%`. */
export function progressBar(percent: number, width = 20): string {
  const full = Math.max(0, Math.min(width, Math.floor((percent / 100) * width)));
  return `[${'='.repeat(full)}${full < width ? '>' : ''}${' '.repeat(Math.max(0, width - full - 1))}] ${percent.toFixed(1)}%`;
}

function peerLine(name: string, p: PeerStatus): string {
  let s = `  ${name} connection:${p.connection}`;
  if (p.connection === 'Connected') s += ` role:${p.role} peer-disk:${p.disk} replication:${p.replication}`;
  s += ` out-of-sync:${humanBytes(p.outOfSyncBytes)}`;
  if (p.splitBrain) s += `\n    split brain: ${p.splitBrain}`;
  if (p.resync) {
    const r = p.resync;
    s += `\n    ${r.asTarget ? 'receiving' : 'sending'} ${progressBar(r.percent)} ${humanBytes(r.rateBytesPerSec)}/s`;
    if (r.etaSeconds !== null) s += ` ETA ${r.etaSeconds}s`;
  }
  if (p.verify) s += `\n    verify ${p.verify.running ? progressBar(p.verify.percent) : 'done'} out-of-sync:${p.verify.outOfSyncBlocks} blocks`;
  return s + '\n';
}

/** `status` as a node answers it: the resource's, plus its iSCSI portal's counters when it has one (daemon/iscsi.ts). */
type NodeStatus = ResourceStatus & { iscsi?: PortalStats; raid?: ServedRaidStatus };

/** The human form of `status`, like `drbdadm status`. */
export function formatStatus(s: NodeStatus, control = 'CONTROL-SOCKET'): string {
  let out = `${s.resource} node:${s.node} role:${s.role} disk:${s.disk} size:${humanBytes(s.size)} quorum:${s.quorum ? 'yes' : 'no'} (${s.votes.have}/${s.votes.needed || 'off'})\n`;
  for (const [name, p] of Object.entries(s.peers)) out += peerLine(name, p);
  const l = s.links;
  if (l && (l.handshakesFailed || l.handshakesTimedOut || l.handshakesAbandoned || l.connectionsRefused)) {
    out += `  strangers: ${l.handshakesFailed ?? 0} handshakes refused (${l.authFailed ?? 0} failed authentication), ${l.handshakesTimedOut ?? 0} timed out, ${l.handshakesAbandoned ?? 0} abandoned, ${l.connectionsRefused ?? 0} connections refused\n`;
  }
  if (s.stats.framesRefused > 0) out += `  protocol violations: ${s.stats.framesRefused} frames refused (links closed; see the log)\n`;
  if (s.raid) {
    const r = s.raid;
    const work = r.work ? `, ${r.work.action} ${r.work.percent}%${r.work.slot !== undefined ? ` of slot ${r.work.slot}` : ''}` : '';
    out += `  md array: ${r.level} ${r.mdstat} ${r.degraded > 0 ? `degraded (${r.degraded} of ${r.raidDevices} slots out)` : 'in sync'}${work}`
      + `${r.degraded > 0 && !r.work ? ` (rebuild it while serving: twindisk raid add --control ${control} --slot N NEW-MEMBER)` : ''}\n`;
  }
  if (s.iscsi) {
    const i = s.iscsi;
    out += `  iscsi: ${i.sessions} session${i.sessions === 1 ? '' : 's'}, ${i.connections} connection${i.connections === 1 ? '' : 's'}`
      + `${i.protocolErrors > 0 ? `, ${i.protocolErrors} closed for protocol errors` : ''}${i.refused > 0 ? `, ${i.refused} refused (too many)` : ''}\n`;
  }
  return out;
}

async function poll(t: Target): Promise<ResourceStatus> {
  return (await controlCall(t.node.control, { cmd: 'status' })) as ResourceStatus;
}

/**
 * Polls the node's status and shows `progress(status)` as progress bars (cli-progress: redrawn on a
 * terminal, a plain line per update elsewhere) until it returns null; then prints `done(status)`.
 * Throws after `timeoutMs`, saying what was still running.
 */
async function follow(t: Target, progress: (s: ResourceStatus) => ProgressRow[] | null, done: (s: ResourceStatus) => string, timeoutMs = Infinity): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const tty = process.stdout.isTTY === true;
  const bars = new ProgressBars();
  try {
    for (;;) {
      const s = await poll(t).catch((e: Error) => { throw new CommandError(`${t.node.name}: ${e.message}`); });
      const rows = progress(s);
      if (rows === null) {
        bars.stop();
        process.stdout.write(done(s));
        return;
      }
      bars.update(rows);
      if (Date.now() > deadline) {
        throw new CommandError(`${t.node.name}: still busy after --timeout: ${rows.map((r) => `${r.name} ${r.percent.toFixed(1)}% ${r.detail}`.trim()).join(', ')}`);
      }
      await new Promise((r) => setTimeout(r, tty ? 250 : 2000));
    }
  } finally {
    bars.stop();
  }
}

async function waitSync(o: TargetOptions & { timeout: number }, cmd: Command): Promise<void> {
  const t = target(o, cmd);
  await follow(t, (s) => {
    const busy = Object.entries(s.peers).filter(([, p]) => p.connection === 'Connected' && p.replication !== 'Established');
    if (busy.length === 0) return null;
    return busy.map(([name, p]) => ({
      name,
      percent: p.resync?.percent ?? 0,
      detail: `${p.replication}${p.resync ? ` ${humanBytes(p.resync.rateBytesPerSec)}/s${p.resync.etaSeconds !== null ? ` ETA ${p.resync.etaSeconds}s` : ''}` : ''}`,
    }));
  }, formatStatus, o.timeout * 1000);
}

async function verify(o: TargetOptions & { resync?: boolean; wait?: boolean }, cmd: Command): Promise<void> {
  const t = target(o, cmd);
  let started: { peers: string[] };
  try {
    started = (await controlCall(t.node.control, { cmd: 'verify', resync: !!o.resync })) as { peers: string[] };
  } catch (e) {
    throw new CommandError(`${t.node.name}: ${(e as Error).message}`);
  }
  process.stdout.write(`${t.node.name}: verifying against ${started.peers.join(', ')}\n`);
  if (!o.wait) return;
  await follow(t, (s) => {
    const running = started.peers.filter((n) => s.peers[n]?.verify?.running);
    return running.length === 0 ? null : running.map((n) => ({
      name: n, percent: s.peers[n]!.verify!.percent, detail: `verify, ${s.peers[n]!.verify!.outOfSyncBlocks} blocks out of sync so far`,
    }));
  }, (s) => started.peers.map((n) => {
    const v = s.peers[n]?.verify;
    return `${n}: ${v ? `${v.outOfSyncBlocks} blocks (${humanBytes(v.outOfSyncBytes)}) out of sync` : 'verify did not finish (link lost?)'}\n`;
  }).join(''));
}
