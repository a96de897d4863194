// The resource file of a replicated volume (JSON or drbd.conf-like text): read (config/json.ts,
// config/text.ts), checked against the schema (config/schema.ts), then the rules between keys and
// nodes, and the defaults filled in. Every mistake is reported at once, each with its path.
import { readFileSync } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import type * as z from 'zod';
import { parseMdLayout, type MdRaidLevel } from '../raid/geometry.js';
import { MAX_NODES } from './frames.js';
import { endpointKeys, isLoopback, isUnspecified, type HostPort } from './config/address.js';
import { parseJson } from './config/json.js';
import { ConfigError, Report, SyntaxAt, didYouMean, isObj, keysOf, listOf, quote, type Obj, type Path } from './config/messages.js';
import {
  FIRST_PORT, KEYS, NodeSchema, TopSchema, eg, inContext, nodeNameProblem, textGrammar, type NodeFields, type SchemaContext, type TopFields,
} from './config/schema.js';
import { parseText } from './config/text.js';

export { ConfigError } from './config/messages.js';
export { MIN_SECRET_BITS, secretProblem } from './config/secret.js';
export { parseSize } from './config/size.js';
export { resourceJsonSchema } from './config/schema.js';

export type Protocol = 'A' | 'B' | 'C';

export interface NodeConfig {
  name: string;
  /** Node id 0..31, unique in the resource. */
  id: number;
  /** Host without IPv6 brackets, ready for net.connect. */
  host: string;
  port: number;
  /** "host:port" as written in the file. */
  address: string;
  /**
   * Absolute path of the backing file or device; for an md array (`raid`), a description of it
   * ("raid5 of /a.img,/b.img,..."), never opened as a file; null for a diskless node.
   */
  disk: string | null;
  /** The md array that is the node's disk (its members' absolute paths), or null for a file disk or none. */
  raid: RaidDiskConfig | null;
  /** 'internal', or the absolute path of external metadata. */
  metaDisk: 'internal' | string;
  /** Absolute path of the vhost-user socket, or null for none. */
  socket: string | null;
  iscsi: { host: string; port: number } | null;
  /** The address initiators and other nodes' redirects use for this node's portal: "iscsi-advertise", else "iscsi". */
  iscsiAdvertise: { host: string; port: number } | null;
  /** Absolute path of the node's control socket. */
  control: string;
  queues: number;
  /** Where the node serves Prometheus metrics ("metrics"); null or absent: nowhere. */
  metrics?: { host: string; port: number } | null;
  /** Where the node serves its live status page ("http"), and whether its actions are on ("http-admin"). */
  http?: { host: string; port: number } | null;
  httpAdmin?: boolean;
}

/**
 * A checked resource file. The file's `verify-alg` (always xxh3) and `on-io-error` (always detach) have
 * one value each, what the engine does, so they are checked but not carried here.
 */
/** A node's disk that is an md array (the resource file's `"disk": { "raid": ... }`). */
export interface RaidDiskConfig {
  level: MdRaidLevel;
  /** mdadm's layout name, or undefined for mdadm's default. */
  layout: string | undefined;
  /** Chunk bytes (raid4/5/6/10), or undefined for 512 KiB. */
  chunkBytes: number | undefined;
  bitmap: 'internal' | 'none';
  /** Absolute paths, in slot order. */
  members: string[];
}

export interface ResourceConfig {
  file: string;
  dir: string;
  resource: string;
  protocol: Protocol;
  secret: string;
  quorum: 'off' | 'majority' | number;
  onNoQuorum: 'io-error' | 'suspend-io';
  allowTwoPrimaries: boolean;
  /** The volume's iSCSI target name on every node's portal ("iscsi-target"; default iqn.2026-12.io.twindisk:RESOURCE). */
  iscsiTarget: string;
  afterSb0pri: string;
  afterSb1pri: string;
  afterSb2pri: string;
  /** Bytes per second, 0 = unlimited. */
  resyncRate: number;
  cMinRate: number;
  csumsAlg: 'xxh3' | null;
  bitmapGranularity: number;
  alExtents: number;
  blockSize: 512 | 4096;
  tls: { cert: string; key: string; ca: string } | null;
  /** Ordered by id. */
  nodes: NodeConfig[];
  warnings: string[];
}

/** sun_path holds 108 bytes including the terminating NUL. */
const MAX_SOCKET_PATH = 107;
/** Plain resync rates below this are probably DRBD-style KiB/s numbers: warn. */
const SLOW_RATE = 65536;

// ---------------------------------------------------------------------------------------------------------
// Unknown keys

const NO_DEVICE = 'twindisk has no kernel block device: guests reach the volume through a node\'s "socket" (vhost-user) or "iscsi" portal';
type Scope = keyof typeof KEYS;
/** Hints for keys that a user may well write in the wrong place, or under DRBD's name. */
const HINTS: Record<Scope, Map<string, string>> = {
  top: new Map<string, string>([
    ...KEYS.node.map((k): [string, string] => [k, `"${k}" is a per-node setting: put it under nodes.<name>`]),
    ['node-id', '"node-id" is a per-node setting: put it under nodes.<name> (as "id" in JSON)'],
    ['shared-secret', 'twindisk calls it "secret"'],
    ['device', NO_DEVICE],
    ['minor', NO_DEVICE],
    ['name', 'the resource name goes in "resource"'],
    ['net', 'JSON has no sections: put these settings at the top level'],
    ['options', 'JSON has no sections: put these settings at the top level'],
    ['on', 'list the nodes as "nodes": { "<name>": { ... } }'],
    ['volume', 'a twindisk resource has exactly one volume; give its disk in each node'],
    ['volumes', 'a twindisk resource has exactly one volume; give its disk in each node'],
  ]),
  node: new Map<string, string>([
    ...KEYS.top.filter((k) => k !== 'nodes').map((k): [string, string] => [k, `"${k}" is a resource-wide setting: put it at the top level`]),
    ['node-id', 'in JSON the node id is written "id"'],
    ['device', NO_DEVICE],
    ['minor', NO_DEVICE],
    ['host', 'host and port go together in "address", as host:port'],
    ['port', 'host and port go together in "address", as host:port'],
    ['name', 'a node\'s name is its key under "nodes"'],
  ]),
  tls: new Map(),
};

function unknownKey(key: string, scope: Scope, form: Report['form']): string {
  const shown = form === 'text' ? KEYS[scope].map((k) => (k === 'id' ? 'node-id' : k)) : KEYS[scope];
  const hint = HINTS[scope].get(key);
  const mean = didYouMean(key, shown);
  return `unknown key${hint !== undefined ? `; ${hint}` : mean !== '' ? mean : `; the keys here are ${listOf(shown, true, 'and')}`}`;
}

/** Reports the schema's issues under `at`: unknown keys first (the likeliest cause of what follows), then the rest in schema order. */
function reportIssues(rep: Report, issues: readonly z.core.$ZodIssue[], at: Path, scope: 'top' | 'node'): void {
  const unknown = issues.filter((i) => i.code === 'unrecognized_keys');
  for (const iss of [...unknown, ...issues.filter((i) => i.code !== 'unrecognized_keys')]) {
    const path = [...at, ...iss.path.map(String)];
    if (iss.code === 'unrecognized_keys') {
      const s: Scope = scope === 'top' && iss.path[0] === 'tls' ? 'tls' : scope;
      for (const k of iss.keys) rep.error([...path, k], unknownKey(k, s, rep.form));
    } else {
      rep.error(path, iss.message);
    }
  }
}

/** Each field of `raw` that passes its own schema, for the rules between fields while others are wrong. */
function validFields<T>(shape: Record<string, z.ZodType>, raw: Obj): Partial<T> {
  const out: Record<string, unknown> = {};
  for (const [k, field] of Object.entries(shape)) {
    const r = field.safeParse(raw[k]);
    if (r.success) out[k] = r.data;
  }
  return out as Partial<T>;
}

// ---------------------------------------------------------------------------------------------------------
// Rules between nodes

interface Draft {
  name: string;
  at: Path;
  id: number | null;
  hp: HostPort | null;
  address: string;
  /** Absolute path (or an array's description); null for diskless, and while the disk is missing or wrong. */
  disk: string | null;
  raid: RaidDiskConfig | null;
  /** The file says `disk: null`. */
  diskless: boolean;
  metaDisk: string;
  socket: string | null;
  iscsi: HostPort | null;
  iscsiAdvertise: HostPort | null;
  control: string;
  queues: number;
  metrics: HostPort | null;
  http: HostPort | null;
  httpAdmin: boolean;
}

function draft(name: string, f: Partial<NodeFields>, dir: string, resource: string): Draft {
  const raid: RaidDiskConfig | null = typeof f.disk === 'object' && f.disk !== null
    ? {
      level: Number(f.disk.raid.slice(4)) as MdRaidLevel, layout: f.disk.layout, chunkBytes: f.disk.chunk, bitmap: f.disk.bitmap,
      members: f.disk.members.map((m) => resolve(dir, m)),
    }
    : null;
  const disk = typeof f.disk === 'string' ? resolve(dir, f.disk) : raid !== null ? `raid${raid.level} of ${raid.members.join(',')}` : null;
  const meta = f['meta-disk'];
  return {
    name,
    at: ['nodes', name],
    id: f.id ?? null,
    hp: f.address ? { host: f.address.host, port: f.address.port } : null,
    address: f.address?.address ?? '',
    disk,
    raid,
    diskless: f.disk === null,
    metaDisk: disk !== null && typeof meta === 'string' && meta !== 'internal' ? resolve(dir, meta) : 'internal',
    socket: typeof f.socket === 'string' ? resolve(dir, f.socket) : null,
    iscsi: f.iscsi ? { host: f.iscsi.host, port: f.iscsi.port } : null,
    iscsiAdvertise: f['iscsi-advertise'] ? { host: f['iscsi-advertise'].host, port: f['iscsi-advertise'].port } : null,
    control: resolve(dir, f.control ?? `.${resource}.${name}.ctl`),
    queues: f.queues ?? 1,
    metrics: f.metrics ? { host: f.metrics.host, port: f.metrics.port } : null,
    http: f.http ? { host: f.http.host, port: f.http.port } : null,
    httpAdmin: f['http-admin'] ?? false,
  };
}

/** An md array disk: its layout and chunk fit its level, and its replication metadata has a file of its own. */
function raidRules(rep: Report, d: Draft, r: RaidDiskConfig): void {
  const at = [...d.at, 'disk'];
  if (d.metaDisk === 'internal') {
    rep.error([...d.at, 'meta-disk'], `an md array disk keeps its replication metadata in a file of its own: add ${eg('meta-disk', `"${d.name}.md"`, rep.form)}`);
  }
  if (r.layout !== undefined) {
    if (r.level === 1) rep.error([...at, 'layout'], 'raid1 has no layout: remove it');
    else {
      try {
        parseMdLayout(r.level, r.layout);
      } catch (e) {
        rep.error([...at, 'layout'], (e as Error).message);
      }
    }
  }
  if (r.level === 1 && r.chunkBytes !== undefined) rep.error([...at, 'chunk'], 'raid1 has no chunk size: remove it');
  const least = r.level === 6 ? 4 : 2;
  if (r.members.length < least) rep.error([...at, 'members'], `raid${r.level} needs at least ${least} members, got ${r.members.length}`);
  const seen = new Set<string>();
  for (const m of r.members) {
    if (seen.has(m)) rep.error([...at, 'members'], `${m} is given twice: give each member once`);
    seen.add(m);
  }
}

/** Two nodes whose files may collide: same host, both loopback, or a host that did not parse. */
function sameMachine(a: Draft, b: Draft): boolean {
  if (a.hp === null || b.hp === null) return true;
  const x = a.hp.host.toLowerCase();
  const y = b.hp.host.toLowerCase();
  return x === y || (isLoopback(x) && isLoopback(y));
}

/** Cross-node rules: unique ids, addresses, portals and files (disks, metadata, sockets) on one machine. */
function crossCheck(rep: Report, drafts: Draft[]): void {
  const ids = new Map<number, string>();
  for (const d of drafts) {
    if (d.id === null) continue;
    const other = ids.get(d.id);
    if (other !== undefined) rep.error([...d.at, 'id'], `${d.id} is already the id of node ${other}`);
    else ids.set(d.id, d.name);
  }

  // Endpoints by every socket they may bind (endpointKeys): `localhost:P` and `127.0.0.1:P` collide.
  const endpoints = new Map<string, { hp: HostPort; what: string }>();
  const show = (hp: HostPort): string => (hp.host.includes(':') ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`);
  const claim = (d: Draft, hp: HostPort, key: 'address' | 'iscsi' | 'metrics' | 'http', what: string): void => {
    const keys = endpointKeys(hp);
    const other = keys.map((k) => endpoints.get(k)).find((o) => o !== undefined);
    if (other === undefined) {
      for (const k of keys) endpoints.set(k, { hp, what });
    } else if (show(other.hp).toLowerCase() === show(hp).toLowerCase()) {
      rep.error([...d.at, key], `${show(hp)} is already ${other.what}`);
    } else {
      rep.error([...d.at, key], `${show(hp)} is the same endpoint as ${show(other.hp)}, already ${other.what}`
        + ' (both would listen on one address and port: give each its own port)');
    }
  };
  for (const d of drafts) if (d.hp !== null) claim(d, d.hp, 'address', `the address of node ${d.name}`);
  for (const d of drafts) if (d.iscsi !== null) claim(d, d.iscsi, 'iscsi', `the iscsi portal of node ${d.name}`);
  for (const d of drafts) if (d.metrics !== null) claim(d, d.metrics, 'metrics', `the metrics endpoint of node ${d.name}`);
  for (const d of drafts) if (d.http !== null) claim(d, d.http, 'http', `the status page of node ${d.name}`);
  for (const d of drafts) {
    if (d.iscsiAdvertise !== null && d.iscsi === null) {
      rep.error([...d.at, 'iscsi-advertise'], 'is set but the node has no "iscsi" portal to advertise; add "iscsi": "host:port" or remove it');
    } else if (d.iscsi !== null && d.iscsiAdvertise === null && isUnspecified(d.iscsi.host)) {
      rep.error([...d.at, 'iscsi'], `${show(d.iscsi)} listens on every address, which initiators and other nodes' redirects cannot use: `
        + 'add "iscsi-advertise": "ADDRESS:PORT" with the address initiators reach this node by');
    }
  }

  // Identical paths on different machines are normal (drbd.conf usually names the same device on every
  // host); on one machine two nodes would share a file.
  const files: { d: Draft; what: string; path: string }[] = [];
  for (const d of drafts) {
    const mine: [string, string | null][] = [
      ...(d.raid === null ? [['disk', d.disk] as [string, string | null]] : d.raid.members.map((m): [string, string | null] => ['disk', m])),
      ['meta-disk', d.metaDisk === 'internal' ? null : d.metaDisk], ['socket', d.socket], ['control', d.control],
    ];
    for (const [what, path] of mine) {
      if (path === null) continue;
      const clash = files.find((f) => f.path === path && (f.d === d || sameMachine(f.d, d)));
      if (clash !== undefined) rep.error([...d.at, what], `${path} is already the ${clash.what} of node ${clash.d.name}${clash.d === d ? ' (this node)' : ''}`);
      else files.push({ d, what, path });
      if ((what === 'socket' || what === 'control') && Buffer.byteLength(path) > MAX_SOCKET_PATH) {
        rep.warn([...d.at, what], `${path} is ${Buffer.byteLength(path)} bytes long; Unix socket paths are limited to ${MAX_SOCKET_PATH}, so binding it will fail: use a shorter path`);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// Checking and building

/** Checks the parsed file and builds the ResourceConfig, or returns null with errors in `rep`. */
function build(raw: unknown, file: string, rep: Report): ResourceConfig | null {
  const absFile = resolve(file);
  const dir = dirname(absFile);
  const rawNodes = isObj(raw) && isObj(raw.nodes) ? raw.nodes : null;
  const nodeNames = rawNodes === null ? [] : keysOf(rawNodes);
  const ports = new Set<number>();
  for (const n of nodeNames) {
    const node = rawNodes![n];
    const m = isObj(node) && typeof node.address === 'string' ? /:([0-9]{1,5})$/.exec(node.address) : null;
    if (m) ports.add(Number(m[1]));
  }
  let suggestPort = FIRST_PORT;
  while (ports.has(suggestPort)) suggestPort++;
  const context: SchemaContext = { form: rep.form, suggestPort, nodeNames, node: '' };

  // zod words an issue when its message is first read: read them while the context is set.
  const top = inContext(context, () => {
    const r = TopSchema.safeParse(raw);
    if (!r.success) reportIssues(rep, r.error.issues, [], 'top');
    return r;
  });
  if (!isObj(raw)) return null;
  const t: Partial<TopFields> = top.success ? top.data : inContext(context, () => validFields<TopFields>(TopSchema.shape, raw));
  const resource = t.resource ?? 'resource';

  const drafts: Draft[] = [];
  if (rawNodes !== null) {
    if (nodeNames.length === 0) rep.error(['nodes'], 'is empty; a resource needs at least one node');
    if (nodeNames.length > MAX_NODES) rep.error(['nodes'], `${nodeNames.length} nodes; a resource has at most ${MAX_NODES}`);
    for (const name of nodeNames) {
      const at = ['nodes', name];
      const v = rawNodes[name];
      const badName = nodeNameProblem(name);
      if (badName !== null) rep.error(at, badName);
      const nodeContext = { ...context, node: name };
      const r = inContext(nodeContext, () => {
        const parsed = NodeSchema.safeParse(v);
        if (!parsed.success) reportIssues(rep, parsed.error.issues, at, 'node');
        return parsed;
      });
      if (!isObj(v)) continue;
      const f = r.success ? r.data : inContext(nodeContext, () => validFields<NodeFields>(NodeSchema.shape, v));
      if (f.disk === null && f['meta-disk'] !== undefined && f['meta-disk'] !== null) rep.error([...at, 'meta-disk'], 'a diskless node has no meta-disk; remove it');
      const d = draft(name, f, dir, resource);
      if (d.raid !== null) raidRules(rep, d, d.raid);
      drafts.push(d);
    }
    crossCheck(rep, drafts);
    if (drafts.length > 0 && drafts.length === nodeNames.length && drafts.every((d) => d.diskless)) {
      rep.error(['nodes'], `no node has a disk; at least one node needs one, e.g. ${eg('disk', '"alpha.img"', rep.form)}`);
    }
  }

  // Rules between resource-wide settings and the nodes.
  if (t['allow-two-primaries'] === true && t.protocol !== undefined && t.protocol !== 'C') {
    rep.error(['allow-two-primaries'], `two primaries need protocol C (the protocol is ${t.protocol}), as in DRBD`);
  }
  const sb0 = t['after-sb-0pri'];
  if (sb0 !== undefined && sb0.startsWith('discard-node-') && !nodeNames.includes(sb0.slice('discard-node-'.length))) {
    const all = nodeNames.map((n) => `discard-node-${n}`);
    rep.error(['after-sb-0pri'], `${quote(sb0)} names no node of the resource; the nodes are ${listOf(nodeNames, false, 'and')}${didYouMean(sb0, all)}`);
  }
  const q = t.quorum;
  if (typeof q === 'number' && nodeNames.length > 0 && q > nodeNames.length) {
    rep.error(['quorum'], `${q} is more than the ${nodeNames.length} nodes of the resource; expected "off", "majority" or a number of nodes 1..${nodeNames.length}`);
  }
  if (q === 'majority' && nodeNames.length === 2) {
    rep.warn(['quorum'], 'a majority of 2 nodes is both of them: losing either one loses quorum; add a diskless third node as a tie-breaker');
  }
  const rate = t['resync-rate'];
  const cMin = t['c-min-rate'];
  if (rate !== undefined && rate > 0 && rate < SLOW_RATE) {
    rep.warn(['resync-rate'], `${rate} bytes/s is very slow; plain numbers are bytes per second (DRBD's are KiB/s): write e.g. "100M"`);
  }
  if (rate !== undefined && cMin !== undefined && rate > 0 && cMin > rate) {
    rep.warn(['c-min-rate'], `${cMin} bytes/s is above resync-rate (${rate} bytes/s); set c-min-rate at or below resync-rate`);
  }

  if (rep.errors.length > 0 || !top.success) return null;
  const f = top.data;

  // Ids: explicit ones first, then by order of appearance, skipping ids taken explicitly.
  const taken = new Set(drafts.flatMap((d) => (d.id === null ? [] : [d.id])));
  let nextId = 0;
  const nodeConfigs: NodeConfig[] = drafts.map((d) => {
    let id = d.id;
    if (id === null) {
      while (taken.has(nextId)) nextId++;
      id = nextId++;
    }
    return {
      name: d.name, id, host: d.hp!.host, port: d.hp!.port, address: d.address, disk: d.disk, raid: d.raid, metaDisk: d.metaDisk,
      socket: d.socket, iscsi: d.iscsi, iscsiAdvertise: d.iscsi === null ? null : d.iscsiAdvertise ?? d.iscsi, control: d.control, queues: d.queues,
      ...(d.metrics ? { metrics: d.metrics } : {}),
      ...(d.http ? { http: d.http } : {}), ...(d.httpAdmin ? { httpAdmin: true } : {}),
    };
  });
  nodeConfigs.sort((a, b) => a.id - b.id);
  const tls = f.tls ? { cert: resolve(dir, f.tls.cert), key: resolve(dir, f.tls.key), ca: resolve(dir, f.tls.ca) } : null;

  return {
    file: absFile, dir, resource: f.resource, protocol: f.protocol, secret: f.secret, quorum: f.quorum, onNoQuorum: f['on-no-quorum'],
    allowTwoPrimaries: f['allow-two-primaries'], iscsiTarget: f['iscsi-target'] ?? `iqn.2026-12.io.twindisk:${f.resource.toLowerCase().replace(/[^a-z0-9.-]/g, '-')}`, afterSb0pri: f['after-sb-0pri'], afterSb1pri: f['after-sb-1pri'], afterSb2pri: f['after-sb-2pri'],
    resyncRate: f['resync-rate'], cMinRate: f['c-min-rate'], csumsAlg: f['csums-alg'], bitmapGranularity: f['bitmap-granularity'],
    alExtents: f['al-extents'], blockSize: f['block-size'] as 512 | 4096, tls, nodes: nodeConfigs, warnings: rep.warnings,
  };
}

// ---------------------------------------------------------------------------------------------------------
// Public API

/** Parses and validates resource-file text (JSON or the text form). Pure: no file access. `file` is used for messages and to resolve relative paths. */
export function parseResource(text: string, file: string): ResourceConfig {
  const base = basename(file) || file;
  const src = text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
  const json = /^\s*\{/.test(src);
  const rep = new Report(base, json ? 'json' : 'text');
  if (src.trim() === '') throw new ConfigError([`${base}: the file is empty; it should hold a resource, e.g. { "resource": "r0", ... } or resource r0 { ... }`]);
  let raw: unknown;
  try {
    raw = json ? parseJson(src, rep) : parseText(src, rep, textGrammar());
  } catch (e) {
    if (e instanceof SyntaxAt) throw new ConfigError([...rep.errors, `${base}: ${e.where}: ${e.message}`]);
    throw e;
  }
  const cfg = build(raw, file, rep);
  if (cfg === null || rep.errors.length > 0) throw new ConfigError(rep.errors);
  return cfg;
}

/** Reads the file and parses it; a missing file gives a ConfigError saying so. */
export function loadResource(file: string): ResourceConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new ConfigError([`${file}: no such file (looked for ${resolve(file)})`]);
    if (code === 'EISDIR') throw new ConfigError([`${file}: is a directory, not a resource file`]);
    if (code === 'EACCES') throw new ConfigError([`${file}: permission denied`]);
    throw new ConfigError([`${file}: cannot read: ${(e as Error).message}`]);
  }
  return parseResource(text, file);
}

/** The node named `name`, or a ConfigError listing the node names. */
export function nodeByName(cfg: ResourceConfig, name: string): NodeConfig {
  const node = cfg.nodes.find((n) => n.name === name);
  if (node !== undefined) return node;
  const names = cfg.nodes.map((n) => n.name);
  throw new ConfigError([`${basename(cfg.file)}: resource ${cfg.resource} has no node ${quote(name)}; its nodes are ${listOf(names, false, 'and')}${didYouMean(name, names)}`]);
}

/** Quorum: how many votes (nodes, counting this one) a partition needs; Infinity never, 0 when quorum is off. */
export function quorumVotes(cfg: ResourceConfig): number {
  const n = cfg.nodes.length;
  if (cfg.quorum === 'off') return 0;
  // Majority over all nodes: diskless nodes vote too, which is what makes them tie-breakers.
  const votes = cfg.quorum === 'majority' ? Math.floor(n / 2) + 1 : cfg.quorum;
  return Number.isInteger(votes) && votes >= 1 && votes <= n ? votes : Infinity;
}
