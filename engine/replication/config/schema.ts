// The resource file's schema (zod): every key, its type, its limits (shared with the engine: see
// limits.ts, metadata.ts AL_MAX_EXTENTS, frames.ts MAX_NODES) and the message for each way it can be
// wrong. Both forms of the file are checked by it (the text form is read into the same object first),
// the text form's reader learns from it which keys exist and how their values read, and `twindisk
// schema` prints it as JSON Schema for editors. Rules between keys (unique addresses, quorum against
// the number of nodes, ...) are in ../config.ts, which also turns the checked file into a ResourceConfig.
import * as z from 'zod';
import { DEFAULT_AL_EXTENTS, DEFAULT_GRANULARITY, AL_MAX_EXTENTS } from '../metadata.js';
import { MAX_NODES } from '../frames.js';
import { MAX_GRANULARITY, MAX_QUEUES, MIN_AL_EXTENTS, MIN_GRANULARITY } from '../limits.js';
import { isUnspecified, parseHostPort, type HostPort } from './address.js';
import { ConfigError, describe, didYouMean, listOf, quote, type Form } from './messages.js';
import { secretProblem } from './secret.js';
import { formatSize, parseSize } from './size.js';
import type { TextGrammar, TextKind } from './text.js';

/** DRBD's customary first replication port; used in examples and suggested for a missing port. */
export const FIRST_PORT = 7789;
/** The well-known iSCSI port, used when an iscsi portal gives none. */
const ISCSI_PORT = 3260;
const NAME_RE = /^[A-Za-z0-9_.-]{1,64}$/;
const NAME_RULE = 'is not 1..64 characters of A-Z a-z 0-9 _ . -';

const AFTER_SB_0PRI = ['disconnect', 'discard-zero-changes', 'discard-younger-primary', 'discard-older-primary', 'discard-least-changes'] as const;
const AFTER_SB_1PRI = ['disconnect', 'discard-secondary', 'consensus'] as const;

/**
 * What the messages need to know about the file being checked. The schema is built once; its messages
 * read the form and the file's nodes from here, set by inContext around a (synchronous) check AND the
 * reading of its issues: zod words an issue lazily, when its message is first read.
 */
export interface SchemaContext {
  form: Form;
  /** A free port to suggest in address examples. */
  suggestPort: number;
  /** The file's node names, for quorum's range and discard-node-NAME. */
  nodeNames: readonly string[];
  /** The node being checked, for its examples. */
  node: string;
}
const ctx: SchemaContext = { form: 'json', suggestPort: FIRST_PORT, nodeNames: [], node: 'alpha' };

export function inContext<T>(c: SchemaContext, fn: () => T): T {
  const saved = { ...ctx };
  Object.assign(ctx, c);
  try {
    return fn();
  } finally {
    Object.assign(ctx, saved);
  }
}

/** How `key: value` is written in this file's form: `"secret": "x"` in JSON, `"secret x;"` in text. */
export function eg(key: string, json: string, form: Form = ctx.form): string {
  if (form === 'json') return `"${key}": ${json}`;
  let v = json;
  if (json === 'null') v = 'none';
  else if (json === 'true') v = 'yes';
  else if (/^"[A-Za-z0-9_.:/\[\]-]+"$/.test(json)) v = json.slice(1, -1);
  return `"${key === 'id' ? 'node-id' : key} ${v};"`;
}

// ---------------------------------------------------------------------------------------------------------
// Field kinds, each with its messages

interface Issue { input?: unknown; code?: string }
/** A zod `error` option whose message is computed from the offending value. */
const says = (f: (v: unknown) => string) => ({ error: (iss: Issue) => f(iss.input) });
/** The same for an object, whose own issues also include unknown keys (worded by config.ts). */
const objectSays = (f: (v: unknown) => string) => ({ error: (iss: Issue) => (iss.code === 'invalid_type' ? f(iss.input) : undefined) });

/** `"D" is not one of "A", "B" or "C"`, with a did-you-mean, or `hint` for values twindisk lacks. */
function oneOfMessage(v: unknown, values: readonly string[], hint?: string): string {
  if (typeof v !== 'string') return `expected ${listOf(values)}, got ${describe(v)}`;
  const mean = didYouMean(v, values);
  return `${quote(v)} is not ${values.length === 1 ? 'supported' : `one of ${listOf(values)}`}${mean !== '' ? mean : hint !== undefined ? `; ${hint}` : ''}`;
}

function oneOf<const T extends readonly [string, ...string[]]>(values: T, hint?: string) {
  return z.enum(values, says((v) => oneOfMessage(v, values, hint)));
}

function bool() {
  return z.boolean(says((v) => `expected ${ctx.form === 'json' ? 'true or false' : 'yes or no'}, got ${describe(v)}`));
}

/** An integer min..max; `why` explains the upper limit. */
function intIn(min: number, max: number, why = '') {
  const wrong = (v: unknown): string => {
    if (typeof v === 'number') return `${v} is not an integer; expected ${min}..${max}`;
    const unquote = typeof v === 'string' && /^-?[0-9]+$/.test(v.trim()) ? '; write it without quotes' : '';
    return `expected an integer ${min}..${max}, got ${describe(v)}${unquote}`;
  };
  return z.int(says(wrong))
    .min(min, says((v) => `${v} is out of range ${min}..${max}`))
    .max(max, says((v) => `${v} is out of range ${min}..${max}${why}`));
}

/** A size in bytes (4096, "512K", "1G"; rates may end in "/s"); `check` adds a rule on the number. */
function size(o: { rate?: boolean; check?: (n: number) => string | null } = {}) {
  return z.union([z.string(), z.number()], says((v) => `expected a size such as 4096, 512K or 100M${o.rate ? ' (bytes per second)' : ''}, got ${describe(v)}`))
    .transform((v, c) => {
      const s = o.rate && typeof v === 'string' ? v.replace(/\s*\/\s*s(ec)?$/, '') : v;
      let n: number;
      try {
        n = parseSize(s);
      } catch (e) {
        if (!(e instanceof ConfigError)) throw e;
        c.addIssue({ code: 'custom', message: e.errors[0]! });
        return z.NEVER;
      }
      const problem = o.check?.(n) ?? null;
      if (problem !== null) {
        c.addIssue({ code: 'custom', message: problem });
        return z.NEVER;
      }
      return n;
    });
}

/**
 * A path (relative paths are relative to the resource file; resolved by config.ts). `orNull` ends the
 * type message (" (or null for none)"), `missing` words an absent key.
 */
function pathString(orNull: () => string, missing?: () => string) {
  return z.string(says((v) => (v === undefined && missing ? missing() : `expected a path string${orNull()}, got ${describe(v)}`)))
    .refine((s) => s.trim() !== '', says(() => `is empty; give a path${orNull()}`))
    .refine((s) => !s.includes('\0'), 'a path cannot contain a NUL character');
}
const noneWord = (): string => (ctx.form === 'json' ? 'null' : 'none');

/** "host:port" (`defaultPort` when the port may be left out), as a HostPort. */
function endpoint(defaultPort: number | null, typeMessage: (v: unknown) => string, refuseUnspecified: boolean) {
  return z.string(says(typeMessage)).transform((s, c) => {
    const r = parseHostPort(s, defaultPort ?? ctx.suggestPort, defaultPort);
    if (typeof r === 'string') c.addIssue({ code: 'custom', message: r });
    else if (refuseUnspecified && isUnspecified(r.host)) c.addIssue({ code: 'custom', message: `${quote(s)} is not an address peers can connect to; give this node's own address` });
    else return { ...r, address: s } as HostPort & { address: string };
    return z.NEVER;
  });
}

function isPow2(n: number): boolean {
  return Number.isInteger(Math.log2(n));
}

// ---------------------------------------------------------------------------------------------------------
// The file

const RAID_LEVELS = ['raid1', 'raid4', 'raid5', 'raid6', 'raid10'] as const;

/** A node's disk that is an md array (engine/raid): created by create-md, assembled by up. */
export const RaidDiskSchema = z.strictObject({
  raid: oneOf(RAID_LEVELS).meta({ description: 'The md level: raid1, raid4, raid5, raid6 or raid10.' }),
  layout: z.string(says((v) => `expected an md layout name such as "left-symmetric" (raid5/6) or "n2" (raid10), got ${describe(v)}`)).optional()
    .meta({ description: 'md layout (mdadm\'s names: left-symmetric, right-asymmetric, ..., n2); mdadm\'s default when left out.' }),
  chunk: size({ check: (n) => (isPow2(n) && n >= 4096 ? null : `${formatSize(n)} is not a power of two of at least 4K`) }).optional()
    .meta({ description: 'Chunk size (raid4/5/6/10), e.g. "512K" (the default).' }),
  bitmap: oneOf(['internal', 'none']).default('internal')
    .meta({ description: 'md\'s internal write-intent bitmap: after a crash only dirty regions are resynced.' }),
  members: z.array(pathString(() => ''), says((v) => `expected a list of member files or devices, got ${describe(v)}`))
    .min(2, says(() => 'an md array needs at least 2 members'))
    .meta({ description: 'The member files or devices (relative to the resource file), in slot order.' }),
}, objectSays((v) => `expected an md array object with "raid" and "members", got ${describe(v)}`));

/** One node under "nodes": where it listens, its disk, and its front-ends. */
export const NodeSchema = z.strictObject({
  address: endpoint(null, (v) => (v === undefined
    ? `missing; give the node's replication address, e.g. ${eg('address', `"127.0.0.1:${ctx.suggestPort}"`)}`
    : `expected a "host:port" string, got ${describe(v)}`), true)
    .meta({ description: 'Replication address, host:port ([IPv6]:port); the lower node id dials the higher one here.', examples: ['10.0.0.1:7789'] }),
  disk: z.union([
    pathString(() => ` (or ${noneWord()} for a diskless node)`,
      () => `missing; give the backing file or device, e.g. ${eg('disk', `"${ctx.node}.img"`)}, or ${eg('disk', 'null')} for a diskless node`),
    RaidDiskSchema,
  ], says((v) => (v === undefined
    ? `missing; give the backing file or device, e.g. ${eg('disk', `"${ctx.node}.img"`)}, or ${eg('disk', 'null')} for a diskless node`
    : `expected a path string, an md array ({ "raid": "raid5", "members": [...] }) or ${noneWord()} for a diskless node, got ${describe(v)}`))).nullable()
    .meta({ description: 'Backing file or device (relative to the resource file), an md array of member files or devices, or null for a diskless node (reads and writes go to its peers; it votes for quorum).' }),
  'meta-disk': pathString(() => ' or "internal"').nullable().optional()
    .meta({ description: '"internal" (default: metadata at the end of the disk) or a file for external metadata.' }),
  socket: pathString(() => ` (or ${noneWord()} for none)`).nullable().optional()
    .meta({ description: 'The vhost-user socket QEMU connects to (null: none).' }),
  iscsi: endpoint(ISCSI_PORT, (v) => `expected an iSCSI portal "host:port", got ${describe(v)}`, false).nullable().optional()
    .meta({ description: 'Serve the volume over iSCSI on this portal, host[:port] (port 3260 by default), as the target "iscsi-target".' }),
  'iscsi-advertise': endpoint(ISCSI_PORT, (v) => `expected an iSCSI portal "host:port", got ${describe(v)}`, true).optional()
    .meta({ description: 'The address initiators reach this node\'s portal by, when it differs from "iscsi" (NAT, QEMU user networking): '
      + 'discovery reports it and other nodes redirect logins to it.', examples: ['10.0.2.2:3261'] }),
  metrics: endpoint(null, (v) => `expected a "host:port" string for the metrics endpoint, got ${describe(v)}`, false).nullable().optional()
    .meta({ description: 'Serve Prometheus metrics at http://host:port/metrics (null: none).', examples: ['127.0.0.1:9942'] }),
  http: endpoint(null, (v) => `expected a "host:port" string for the status page, got ${describe(v)}`, false).nullable().optional()
    .meta({ description: 'Serve the live status page at http://host:port/ (null: none).', examples: ['127.0.0.1:9943'] }),
  'http-admin': bool().optional()
    .meta({ description: 'Allow actions (primary, secondary, verify, connect, disconnect) from the status page, authenticated with the resource secret (default false: read-only).' }),
  id: intIn(0, MAX_NODES - 1).nullable().optional()
    .meta({ description: `Node id 0..${MAX_NODES - 1}, unique in the resource; by default the next free id in file order.` }),
  control: pathString(() => '').optional()
    .meta({ description: 'The control socket of `twindisk` commands; default .RESOURCE.NODE.ctl beside the resource file.' }),
  queues: intIn(1, MAX_QUEUES).default(1)
    .meta({ description: 'Virtqueues, one worker thread each; give the guest as many as it has vCPUs.' }),
}, objectSays((v) => `expected an object with the node's address and disk, got ${describe(v)}`));

const tlsPath = pathString(() => '', () => 'missing; tls needs all of "cert", "key" and "ca"');
const TlsSchema = z.strictObject({
  cert: tlsPath.meta({ description: "This node's certificate (PEM)." }),
  key: tlsPath.meta({ description: "This node's private key (PEM)." }),
  ca: tlsPath.meta({ description: 'The CA that signed every node certificate (PEM).' }),
}, objectSays((v) => `expected an object with "cert", "key" and "ca" paths, got ${describe(v)}`));

function quorumMessage(q: unknown): string {
  const n = ctx.nodeNames.length;
  const expected = `"off", "majority" or a number of nodes 1..${Math.max(1, n)}`;
  if (typeof q === 'number') return `${q} is not a positive integer; expected ${expected} (use "off" to turn quorum off)`;
  if (typeof q === 'string' && /^[0-9]+$/.test(q)) return `expected ${expected}, got ${describe(q)}; write the number without quotes`;
  if (q === 'all') return `"all" is not supported; write the number of nodes (${n}) instead`;
  return `expected ${expected}, got ${describe(q)}${typeof q === 'string' ? didYouMean(q, ['off', 'majority']) : ''}`;
}

function afterSb0Message(v: unknown): string {
  const shown = [...AFTER_SB_0PRI, 'discard-node-NAME'];
  if (typeof v !== 'string') return `expected ${listOf(shown)}, got ${describe(v)}`;
  return `${quote(v)} is not one of ${listOf(shown)}${didYouMean(v, [...AFTER_SB_0PRI, ...ctx.nodeNames.map((n) => `discard-node-${n}`)])}`;
}

const granularityRule = `a power of two from ${MIN_GRANULARITY} (${formatSize(MIN_GRANULARITY)}) up to ${MAX_GRANULARITY} (${formatSize(MAX_GRANULARITY)})`;

/** The resource-wide settings. `nodes` is only checked to be an object here; each node is checked with NodeSchema. */
export const TopSchema = z.strictObject({
  resource: z.string(says((v) => (v === undefined ? `missing; name the resource, e.g. ${eg('resource', '"r0"')}` : `expected a name string, got ${describe(v)}`)))
    .regex(NAME_RE, says((v) => `${quote(String(v))} ${NAME_RULE}`))
    .meta({ description: 'The resource name (1..64 of A-Z a-z 0-9 _ . -).' }),
  protocol: oneOf(['A', 'B', 'C']).default('C')
    .meta({ description: 'C: a write completes on every connected peer\'s disk; B: when every peer has received it; A: when it is sent.' }),
  secret: z.string(says((v) => (v === undefined
    ? `missing; nodes authenticate each other with a shared secret: make one with \`twindisk gen-secret\` and write it as ${eg('secret', '"..."')}`
    : `expected a string, got ${describe(v)}`)))
    .superRefine((s, c) => {
      const problem = s === '' ? 'is empty; nodes authenticate each other with it' : secretProblem(s);
      if (problem !== null) c.addIssue({ code: 'custom', message: problem });
    })
    .meta({ description: 'Shared secret of the nodes, at least 128 bits: make one with `twindisk gen-secret`.' }),
  // Each member words its own failures too: zod reports the member that matched the value's type.
  quorum: z.union([z.enum(['off', 'majority'], says(quorumMessage)), z.int(says(quorumMessage)).min(1, says(quorumMessage))], says(quorumMessage)).default('off')
    .meta({ description: '"off", "majority" (of all nodes, diskless ones included) or a number of nodes.' }),
  'on-no-quorum': oneOf(['io-error', 'suspend-io']).default('io-error')
    .meta({ description: 'What a Primary that loses quorum does with new writes: fail them, or hold them until quorum returns.' }),
  // The name's syntax (RFC 3720) is the iSCSI front-end's to check: the daemon does when it starts the portal.
  'iscsi-target': z.string(says((v) => `expected an iSCSI name string such as "iqn.2026-12.com.example:vm1", got ${describe(v)}`)).min(1).optional()
    .meta({ description: 'The iSCSI target name of the volume on every node\'s portal; default iqn.2026-12.io.twindisk:RESOURCE.', examples: ['iqn.2026-12.com.example:vm1'] }),
  'allow-two-primaries': bool().default(false)
    .meta({ description: 'Allow two Primaries at once (protocol C, at most two nodes with disks).' }),
  'after-sb-0pri': z.union([z.enum(AFTER_SB_0PRI, says(afterSb0Message)), z.string(says(afterSb0Message)).regex(/^discard-node-/, says(afterSb0Message))], says(afterSb0Message))
    .default('disconnect')
    .meta({ description: 'Split-brain policy with no Primary: disconnect, or which side\'s changes to discard (discard-node-NAME names a node).' }),
  'after-sb-1pri': oneOf(AFTER_SB_1PRI).default('disconnect')
    .meta({ description: 'Split-brain policy with one Primary.' }),
  'after-sb-2pri': oneOf(['disconnect'], 'twindisk never resolves a split brain between two primaries automatically; the only value is "disconnect"').default('disconnect')
    .meta({ description: 'Split-brain policy with two Primaries: always disconnect.' }),
  'resync-rate': size({ rate: true }).default(250 * 2 ** 20)
    .meta({ description: 'Resync rate in bytes per second (e.g. "100M"; default 250M); 0 is unlimited.' }),
  'c-min-rate': size({ rate: true }).default(4 * 2 ** 20)
    .meta({ description: 'Resync rate while the guest writes, bytes per second (default 4M).' }),
  'csums-alg': oneOf(['xxh3'], 'the only checksum is "xxh3" (or null for no checksum-based resync)').nullable().default(null)
    .meta({ description: 'xxh3: a resync sends only blocks whose hashes differ; null: every out-of-sync block.' }),
  // The engine's verify always compares xxh3 hashes: the key is accepted with that one value (drbd.conf
  // files carry it), and nothing else.
  'verify-alg': oneOf(['xxh3'], 'twindisk\'s verify always compares xxh3 hashes: write "xxh3" or leave the key out').default('xxh3')
    .meta({ description: 'Always xxh3 (what `twindisk verify` compares); accepted for drbd.conf compatibility.' }),
  // A failed local write always detaches the disk (Resource's I/O error path): DRBD's pass_on and
  // call-local-io-error are not implemented, so only "detach" is accepted.
  'on-io-error': oneOf(['detach'], 'twindisk always detaches a disk whose write failed (the node goes on diskless through its peers and the guest sees no error): write "detach" or leave the key out').default('detach')
    .meta({ description: 'Always detach: a failed local write detaches the disk and the node goes on diskless.' }),
  'bitmap-granularity': size({ check: (g) => (isPow2(g) && g >= MIN_GRANULARITY && g <= MAX_GRANULARITY ? null : `${g} is not ${granularityRule}`) })
    .default(DEFAULT_GRANULARITY)
    .meta({ description: `Bytes per out-of-sync bit: ${granularityRule} (default ${formatSize(DEFAULT_GRANULARITY)}).` }),
  'al-extents': intIn(MIN_AL_EXTENTS, AL_MAX_EXTENTS, ' (one transaction must list them all)').default(DEFAULT_AL_EXTENTS)
    .meta({ description: `Hot 4 MiB extents in the activity log, ${MIN_AL_EXTENTS}..${AL_MAX_EXTENTS}: resynced after a Primary crash.` }),
  'block-size': size({ check: (b) => (b === 512 || b === 4096 ? null : `${b} is not a logical block size; expected 512 or 4096`) }).default(512)
    .meta({ description: 'The logical block size the guest sees: 512 (default) or 4096.' }),
  tls: TlsSchema.nullable().optional()
    .meta({ description: 'Mutual TLS between nodes (wss): PEM paths relative to the resource file.' }),
  nodes: z.record(z.string(), z.unknown(), objectSays((v) => (v === undefined
    ? `missing; list the nodes, e.g. ${ctx.form === 'json' ? '"nodes": { "alpha": { "address": "127.0.0.1:7789", "disk": "alpha.img" } }' : 'on alpha { address 127.0.0.1:7789; disk alpha.img; }'}`
    : `expected an object keyed by node name, e.g. "nodes": { "alpha": { ... } }, got ${describe(v)}`))),
}, objectSays((v) => `expected an object with "resource", "secret" and "nodes", got ${describe(v)}`));

export const NodeName = z.string().regex(NAME_RE);

/** Why a node name is refused, or null. */
export function nodeNameProblem(name: string): string | null {
  return NodeName.safeParse(name).success ? null : `node name ${quote(name)} ${NAME_RULE}`;
}

export type TopFields = z.output<typeof TopSchema>;
export type NodeFields = z.output<typeof NodeSchema>;
export type RaidDiskFields = z.output<typeof RaidDiskSchema>;
export type TlsFields = z.output<typeof TlsSchema>;

/** The keys of each object, in schema order (for "the keys here are ..."). */
export const KEYS = {
  top: Object.keys(TopSchema.shape),
  node: Object.keys(NodeSchema.shape),
  tls: Object.keys(TlsSchema.shape),
} as const;

/** The whole file as one schema, as published (`twindisk schema`). */
export const ResourceFileSchema = TopSchema.extend({
  nodes: z.record(NodeName, NodeSchema)
    .meta({ description: 'The nodes by name (1..64 of A-Z a-z 0-9 _ . -), at least one with a disk.', minProperties: 1, maxProperties: MAX_NODES }),
}).meta({ title: 'twindisk resource file', description: 'A replicated twindisk volume: its nodes and settings (README, "Replicated volumes").' });

type JsonSchema = Record<string, unknown>;

/** The resource file's JSON Schema (draft 2020-12), for editors; rules it cannot express are checked by twindisk. */
export function resourceJsonSchema(): JsonSchema {
  return z.toJSONSchema(ResourceFileSchema, { io: 'input', unrepresentable: 'any' }) as JsonSchema;
}

/** The JSON types a JSON Schema admits. */
function typesOf(s: unknown, out = new Set<string>()): Set<string> {
  if (typeof s !== 'object' || s === null) return out;
  const o = s as JsonSchema;
  if (typeof o.type === 'string') out.add(o.type);
  if (Array.isArray(o.type)) for (const t of o.type) out.add(String(t));
  if (Array.isArray(o.enum)) for (const v of o.enum) out.add(v === null ? 'null' : typeof v);
  for (const k of ['anyOf', 'oneOf', 'allOf']) if (Array.isArray(o[k])) for (const x of o[k] as unknown[]) typesOf(x, out);
  return out;
}

function kinds(shape: Record<string, z.ZodType>): Map<string, TextKind> {
  const m = new Map<string, TextKind>();
  for (const [key, field] of Object.entries(shape)) {
    const t = typesOf(z.toJSONSchema(field, { io: 'input', unrepresentable: 'any' }));
    m.set(key, { int: t.has('integer') || t.has('number'), bool: t.has('boolean'), nullable: t.has('null') });
  }
  return m;
}

let grammar: TextGrammar | null = null;
/** The text form's keys per scope and how their values read, from the schema. */
export function textGrammar(): TextGrammar {
  grammar ??= { resource: kinds(TopSchema.shape), node: kinds(NodeSchema.shape), tls: kinds(TlsSchema.shape) };
  return grammar;
}
