// The replicated-resource commands of the CLI: create-md, up, down, status, primary, secondary, connect, disconnect, verify.
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { controlCall, type ControlRequest } from '../daemon/control.js';
import { Node, lockNodeDisks } from '../daemon/node.js';
import { loadResource, nodeByName, parseSize, type NodeConfig } from '../engine/replication/config.js';
import { Metadata, metadataSize } from '../engine/replication/metadata.js';
import type { PeerStatus, ResourceStatus } from '../engine/replication/resource.js';
import { CommandError, UsageError } from './errors.js';

// Errors: UsageError (and the ConfigError of a bad resource file) exit 2; CommandError, MetadataError
// and DiskLockError (run-time failures) exit 1; see cli/errors.ts.

export const RESOURCE_USAGE = `
Replicated resources (DRBD-style; FILE is the resource file, NAME this node's name in it):
  twindisk create-md --config FILE --node NAME [--size SIZE] [--force] [--assume-clean]
      Initialise the node's metadata (internal: at the end of its backing file; --size creates the
      backing file with SIZE usable bytes). --assume-clean marks the data UpToDate with the same first
      generation on every node (only when all backing files are new and zeroed: no initial sync).
  twindisk up --config FILE --node NAME
      Run the node in the foreground: replication links, control socket, vhost-user socket (QEMU
      connecting promotes the node to Primary when no other node is Primary and it has quorum).
  twindisk down --config FILE --node NAME
  twindisk status --config FILE --node NAME [--json]
  twindisk primary --config FILE --node NAME [--force]
  twindisk secondary --config FILE --node NAME
  twindisk connect --config FILE --node NAME [--peer PEER] [--discard-my-data]
  twindisk disconnect --config FILE --node NAME [--peer PEER]
  twindisk attach --config FILE --node NAME
      Take the node's disk back after an I/O error detached it; it resyncs fully from a peer.
  twindisk verify --config FILE --node NAME [--resync] [--wait]
      Compare every block with the connected peers by hash; --resync then resyncs what differs.
  twindisk wait-sync --config FILE --node NAME [--timeout S]
      Show resync progress until every connected peer is in sync.
`;

interface Target { file: string; node: NodeConfig }

function target(values: { config?: string | undefined; node?: string | undefined }, cmd: string): Target {
  if (!values.config) throw new UsageError(`${cmd} needs --config FILE (the resource file)`);
  if (!values.node) throw new UsageError(`${cmd} needs --node NAME (this node's name in ${values.config})`);
  const cfg = loadResource(values.config);
  return { file: values.config, node: nodeByName(cfg, values.node) };
}

const common = { config: { type: 'string' }, node: { type: 'string' } } as const;

/** Runs a resource command; returns the exit code, or null when `cmd` is not one of them. */
export async function runResourceCommand(cmd: string, args: string[]): Promise<number | null> {
  switch (cmd) {
    case 'create-md': return createMd(args);
    case 'up': return await up(args);
    case 'down': return await simple(args, 'down', { cmd: 'down' });
    case 'status': return await status(args);
    case 'primary': {
      const { values } = parseArgs({ args, strict: true, options: { ...common, force: { type: 'boolean' } } });
      return await call(target(values, 'primary'), { cmd: 'primary', force: !!values.force });
    }
    case 'secondary': return await simple(args, 'secondary', { cmd: 'secondary' });
    case 'attach': return await simple(args, 'attach', { cmd: 'attach' });
    case 'connect': {
      const { values } = parseArgs({ args, strict: true, options: { ...common, peer: { type: 'string' }, 'discard-my-data': { type: 'boolean' } } });
      return await call(target(values, 'connect'), { cmd: 'connect', ...(values.peer ? { peer: values.peer } : {}), discardMyData: !!values['discard-my-data'] });
    }
    case 'disconnect': {
      const { values } = parseArgs({ args, strict: true, options: { ...common, peer: { type: 'string' } } });
      return await call(target(values, 'disconnect'), { cmd: 'disconnect', ...(values.peer ? { peer: values.peer } : {}) });
    }
    case 'verify': return await verify(args);
    case 'wait-sync': return await waitSync(args);
    default: return null;
  }
}

async function simple(args: string[], name: string, req: ControlRequest): Promise<number> {
  const { values } = parseArgs({ args, strict: true, options: common });
  return call(target(values, name), req);
}

async function call(t: Target, req: ControlRequest): Promise<number> {
  try {
    const r = await controlCall(t.node.control, req);
    if (req.cmd === 'down') process.stdout.write(`${t.node.name}: stopping\n`);
    else if (r && typeof r === 'object' && 'role' in r) process.stdout.write(formatStatus(r as ResourceStatus));
    else process.stdout.write(JSON.stringify(r) + '\n');
    return 0;
  } catch (e) {
    throw new CommandError(`${t.node.name}: ${(e as Error).message}`);
  }
}

function createMd(args: string[]): number {
  const { values } = parseArgs({ args, strict: true, options: { ...common, size: { type: 'string' }, force: { type: 'boolean' }, 'assume-clean': { type: 'boolean' } } });
  const t = target(values, 'create-md');
  const cfg = loadResource(t.file);
  const me = t.node;
  if (!me.disk) throw new UsageError(`${me.name} is diskless ("disk": null): it has no metadata to create`);
  const peerIds = cfg.nodes.filter((n) => n.id !== me.id).map((n) => n.id);
  const external = me.metaDisk !== 'internal';
  // Everything that can be checked without touching a file first, so that a mistake changes nothing.
  const size = values.size ? parseSize(values.size) : null;
  if (size !== null && size % 4096 !== 0) throw new UsageError(`--size ${values.size} is not a multiple of 4096`);
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
      if (values['assume-clean']) {
        // Every node derives the same first generation from the resource and the size, so they start in sync.
        md.setInitialGeneration(cleanGeneration(cfg.resource, md.dataSize));
        md.disk = 'UpToDate';
        md.writeSuperblock();
      }
      process.stdout.write(`${me.name}: metadata created on ${external ? me.metaDisk : `${me.disk} (internal)`}; ${md.dataSize} usable bytes, ${md.disk}\n`);
    } finally {
      md.close();
    }
  } finally {
    for (const l of locks) l.release();
  }
  return 0;
}

/** The generation every node starts at with --assume-clean: a hash of the resource name and size. */
function cleanGeneration(resource: string, size: number): bigint {
  let h = 0xcbf29ce484222325n;
  for (const b of Buffer.from(`${resource}:${size}`)) h = ((h ^ BigInt(b)) * 0x100000001b3n) & 0xffffffffffffffffn;
  return (h | 4n) & ~1n;
}

async function up(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, strict: true, options: common });
  const t = target(values, 'up');
  const node = new Node({ config: t.file, node: t.node.name });
  await node.start();
  process.stdout.write(`twindisk: ${node.cfg.resource}/${node.me.name} is up (control socket ${node.me.control})\n`);
  const stop = (sig: string) => {
    node.log.info(`${sig} received: shutting down`);
    void node.stop();
  };
  process.once('SIGINT', () => stop('SIGINT'));
  process.once('SIGTERM', () => stop('SIGTERM'));
  await node.stopped;
  return 0;
}

async function status(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, strict: true, options: { ...common, json: { type: 'boolean' } } });
  const t = target(values, 'status');
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
    process.stdout.write(formatStatus(s));
  }
  return 0;
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

/** The human form of `status`, like `drbdadm status`. */
export function formatStatus(s: ResourceStatus): string {
  let out = `${s.resource} node:${s.node} role:${s.role} disk:${s.disk} size:${humanBytes(s.size)} quorum:${s.quorum ? 'yes' : 'no'} (${s.votes.have}/${s.votes.needed || 'off'})\n`;
  for (const [name, p] of Object.entries(s.peers)) out += peerLine(name, p);
  const l = s.links;
  if (l && (l.handshakesFailed || l.handshakesTimedOut || l.handshakesAbandoned || l.connectionsRefused)) {
    out += `  strangers: ${l.handshakesFailed ?? 0} handshakes refused (${l.authFailed ?? 0} failed authentication), ${l.handshakesTimedOut ?? 0} timed out, ${l.handshakesAbandoned ?? 0} abandoned, ${l.connectionsRefused ?? 0} connections refused\n`;
  }
  if (s.stats.framesRefused > 0) out += `  protocol violations: ${s.stats.framesRefused} frames refused (links closed; see the log)\n`;
  return out;
}

async function poll(t: Target): Promise<ResourceStatus> {
  return (await controlCall(t.node.control, { cmd: 'status' })) as ResourceStatus;
}

/**
 * Polls the node's status and shows `progress(status)` (one line, redrawn on a terminal) until it
 * returns null; then prints `done(status)`. Throws after `timeoutMs` with the last line.
 */
async function follow(t: Target, progress: (s: ResourceStatus) => string | null, done: (s: ResourceStatus) => string, timeoutMs = Infinity): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const tty = process.stdout.isTTY;
  for (;;) {
    const s = await poll(t).catch((e: Error) => { throw new CommandError(`${t.node.name}: ${e.message}`); });
    const line = progress(s);
    if (line === null) {
      if (tty) process.stdout.write('\r\x1b[K');
      process.stdout.write(done(s));
      return;
    }
    if (tty) process.stdout.write(`\r\x1b[K${line}`);
    else process.stdout.write(line + '\n');
    if (Date.now() > deadline) throw new CommandError(`${t.node.name}: still busy after --timeout: ${line}`);
    await new Promise((r) => setTimeout(r, tty ? 250 : 2000));
  }
}

async function waitSync(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, strict: true, options: { ...common, timeout: { type: 'string' } } });
  const t = target(values, 'wait-sync');
  const timeout = Number(values.timeout ?? 3600);
  if (!(timeout > 0)) throw new UsageError(`--timeout ${values.timeout}: expected a number of seconds above 0`);
  await follow(t, (s) => {
    const busy = Object.entries(s.peers).filter(([, p]) => p.connection === 'Connected' && p.replication !== 'Established');
    if (busy.length === 0) return null;
    return busy.map(([n, p]) => `${n} ${p.replication}${p.resync ? ' ' + progressBar(p.resync.percent) + ` ${humanBytes(p.resync.rateBytesPerSec)}/s` : ''}`).join('  ');
  }, formatStatus, timeout * 1000);
  return 0;
}

async function verify(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, strict: true, options: { ...common, resync: { type: 'boolean' }, wait: { type: 'boolean' } } });
  const t = target(values, 'verify');
  let started: { peers: string[] };
  try {
    started = (await controlCall(t.node.control, { cmd: 'verify', resync: !!values.resync })) as { peers: string[] };
  } catch (e) {
    throw new CommandError(`${t.node.name}: ${(e as Error).message}`);
  }
  process.stdout.write(`${t.node.name}: verifying against ${started.peers.join(', ')}\n`);
  if (!values.wait) return 0;
  await follow(t, (s) => {
    const running = started.peers.filter((n) => s.peers[n]?.verify?.running);
    return running.length === 0 ? null : running.map((n) => `${n} ${progressBar(s.peers[n]!.verify!.percent)}`).join('  ');
  }, (s) => started.peers.map((n) => {
    const v = s.peers[n]?.verify;
    return `${n}: ${v ? `${v.outOfSyncBlocks} blocks (${humanBytes(v.outOfSyncBytes)}) out of sync` : 'verify did not finish (link lost?)'}\n`;
  }).join(''));
  return 0;
}
