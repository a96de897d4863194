// The resource file of a replicated volume (JSON or drbd.conf-like text): parsed, validated, defaults filled in.
import { readFileSync } from 'node:fs';
import { isIPv4, isIPv6 } from 'node:net';
import { basename, dirname, resolve } from 'node:path';
import { MAX_NODES } from './frames.js';

/** A resource file with mistakes. `errors` holds every one found, each prefixed by the file name and JSON path. */
export class ConfigError extends Error {
  readonly errors: string[];
  constructor(errors: string[]) {
    super(errors.join('\n'));
    this.name = 'ConfigError';
    this.errors = errors;
  }
}

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
  /** Absolute path of the backing file or device; null for a diskless node. */
  disk: string | null;
  /** 'internal', or the absolute path of external metadata. */
  metaDisk: 'internal' | string;
  /** Absolute path of the vhost-user socket, or null for none. */
  socket: string | null;
  iscsi: { host: string; port: number } | null;
  /** Absolute path of the node's control socket. */
  control: string;
  queues: number;
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
  afterSb0pri: string;
  afterSb1pri: string;
  afterSb2pri: string;
  /** Bytes per second, 0 = unlimited. */
  resyncRate: number;
  cMinRate: number;
  csumsAlg: 'xxh3' | null;
  verifyAlg: 'xxh3';
  onIoError: 'detach' | 'pass_on';
  bitmapGranularity: number;
  alExtents: number;
  blockSize: 512 | 4096;
  tls: { cert: string; key: string; ca: string } | null;
  /** Ordered by id. */
  nodes: NodeConfig[];
  warnings: string[];
}

/** DRBD's customary first replication port; used in examples and suggested for a missing port. */
const FIRST_PORT = 7789;
/** The well-known iSCSI port, used when an iscsi portal gives none. */
const ISCSI_PORT = 3260;
/** The least estimated strength of a secret, in bits (see secretProblem). */
export const MIN_SECRET_BITS = 128;
/** sun_path holds 108 bytes including the terminating NUL. */
const MAX_SOCKET_PATH = 107;
/** Plain resync rates below this are probably DRBD-style KiB/s numbers: warn. */
const SLOW_RATE = 65536;
/** JSON nesting beyond this is refused (a resource file needs 3 levels). */
const MAX_DEPTH = 64;
const NAME_RE = /^[A-Za-z0-9_.-]{1,64}$/;

const TOP_KEYS = [
  'resource', 'protocol', 'secret', 'quorum', 'on-no-quorum', 'allow-two-primaries', 'after-sb-0pri',
  'after-sb-1pri', 'after-sb-2pri', 'resync-rate', 'c-min-rate', 'csums-alg', 'verify-alg', 'on-io-error',
  'bitmap-granularity', 'al-extents', 'block-size', 'tls', 'nodes',
] as const;
const NODE_KEYS = ['address', 'disk', 'meta-disk', 'socket', 'iscsi', 'id', 'control', 'queues'] as const;
const TLS_KEYS = ['cert', 'key', 'ca'] as const;

const AFTER_SB_0PRI = ['disconnect', 'discard-zero-changes', 'discard-younger-primary', 'discard-older-primary', 'discard-least-changes'] as const;
const AFTER_SB_1PRI = ['disconnect', 'discard-secondary', 'consensus'] as const;
const NO_DEVICE = 'twindisk has no kernel block device: guests reach the volume through a node\'s "socket" (vhost-user) or "iscsi" portal';

/** Hints for keys that are not resource-level keys but that a user may well write there. */
const TOP_HINTS = new Map<string, string>([
  ...NODE_KEYS.map((k): [string, string] => [k, `"${k}" is a per-node setting: put it under nodes.<name>`]),
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
]);
/** Hints for keys written in a node that belong elsewhere. */
const NODE_HINTS = new Map<string, string>([
  ...TOP_KEYS.filter((k) => k !== 'nodes').map((k): [string, string] => [k, `"${k}" is a resource-wide setting: put it at the top level`]),
  ['node-id', 'in JSON the node id is written "id"'],
  ['device', NO_DEVICE],
  ['minor', NO_DEVICE],
  ['host', 'host and port go together in "address", as host:port'],
  ['port', 'host and port go together in "address", as host:port'],
  ['name', 'a node\'s name is its key under "nodes"'],
]);
/** DRBD values twindisk does not implement, with what to write instead. */
const UNSUPPORTED = new Map<string, string>([
  ['after-sb-2pri', 'twindisk never resolves a split brain between two primaries automatically; the only value is "disconnect"'],
  ['csums-alg', 'the only checksum is "xxh3" (or null for no checksum-based resync)'],
  ['verify-alg', 'the only verify algorithm is "xxh3"'],
]);

// ---------------------------------------------------------------------------------------------------------
// Messages

type Path = readonly string[];
type Obj = Record<string, unknown>;
type Form = 'json' | 'text';

/** "nodes.beta.address"; segments that are not plain words are bracketed: nodes["a b"]. */
function pathText(p: Path): string {
  let s = '';
  for (const seg of p) s += /^[A-Za-z0-9_-]+$/.test(seg) ? (s === '' ? '' : '.') + seg : `[${JSON.stringify(seg)}]`;
  return s;
}

function quote(s: string): string {
  return JSON.stringify(s.length > 80 ? s.slice(0, 77) + '...' : s);
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  switch (typeof v) {
    case 'string': return `the string ${quote(v)}`;
    case 'number': return `the number ${v}`;
    case 'boolean': return String(v);
    case 'object': return 'an object';
    default: return typeof v;
  }
}

/** `"a", "b" or "c"` */
function listOf(values: readonly string[], q = true, conj = 'or'): string {
  const vs = values.map((v) => (q ? JSON.stringify(v) : v));
  return vs.length <= 1 ? vs.join('') : `${vs.slice(0, -1).join(', ')} ${conj} ${vs[vs.length - 1]}`;
}

/** Lower case, `_` and camelCase folded into `-`: "metaDisk", "META_DISK" and "meta-disk" compare equal. */
function fold(s: string): string {
  return s.replace(/([a-z0-9])([A-Z])/g, '$1-$2').toLowerCase().replace(/_/g, '-');
}

/** Optimal string alignment distance (Levenshtein plus adjacent transpositions). */
function distance(a: string, b: string): number {
  if (Math.abs(a.length - b.length) > 3) return 99;
  const d: number[][] = [];
  for (let i = 0; i <= a.length; i++) {
    d.push([i]);
    for (let j = 1; j <= b.length; j++) {
      if (i === 0) { d[0]!.push(j); continue; }
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, d[i - 2]![j - 2]! + 1);
      d[i]!.push(v);
    }
  }
  return d[a.length]![b.length]!;
}

/** The closest candidate to `s`, if one is close enough to be a likely typo. */
function closest(s: string, candidates: readonly string[]): string | null {
  const f = fold(s);
  const limit = Math.min(3, Math.max(1, Math.floor(f.length / 3)));
  let best: string | null = null;
  let bestD = Infinity;
  for (const c of candidates) {
    const d = f === fold(c) ? 0 : distance(f, fold(c));
    if (d <= limit && d < bestD) {
      best = c;
      bestD = d;
    }
  }
  return best;
}

function didYouMean(s: string, candidates: readonly string[]): string {
  const c = closest(s, candidates);
  return c === null ? '' : `; did you mean ${JSON.stringify(c)}?`;
}

/** Collects errors and warnings, each prefixed by the file name and path (and a line number in the text form). */
class Report {
  readonly errors: string[] = [];
  readonly warnings: string[] = [];
  readonly lines = new Map<string, number>();
  constructor(readonly base: string, readonly form: Form) {}

  error(path: Path, msg: string, line?: number): void {
    this.errors.push(this.format(path, msg, line));
  }

  warn(path: Path, msg: string): void {
    this.warnings.push(this.format(path, msg));
  }

  /** How `key: value` is written in this file's form: `"secret": "x"` in JSON, `"secret x;"` in text. */
  eg(key: string, json: string): string {
    if (this.form === 'json') return `"${key}": ${json}`;
    let v = json;
    if (json === 'null') v = 'none';
    else if (json === 'true') v = 'yes';
    else if (/^"[A-Za-z0-9_.:/\[\]-]+"$/.test(json)) v = json.slice(1, -1);
    return `"${key === 'id' ? 'node-id' : key} ${v};"`;
  }

  private format(path: Path, msg: string, line?: number): string {
    let at = line;
    for (let p = path; at === undefined && p.length > 0; p = p.slice(0, -1)) at = this.lines.get(pathText(p));
    const where = path.length > 0 ? `${pathText(path)}: ` : '';
    return `${this.base}: ${where}${msg}${at === undefined || this.form === 'json' ? '' : ` (line ${at})`}`;
  }
}

/** A syntax error that stops parsing: `where` is "line 3" or "line 3, column 7". */
class SyntaxAt extends Error {
  constructor(readonly where: string, message: string) {
    super(message);
  }
}

// ---------------------------------------------------------------------------------------------------------
// JSON, with positions for syntax errors and detection of keys given twice

/** Keys in the order written: JS objects list integer-like keys ("1", "2") first, and node ids follow file order. */
const KEY_ORDER = new WeakMap<Obj, string[]>();

function newObj(): Obj {
  const o = Object.create(null) as Obj;
  KEY_ORDER.set(o, []);
  return o;
}

/** Stores `o[key] = v`, remembering the order in which keys were first written. */
function put(o: Obj, key: string, v: unknown): void {
  if (!Object.hasOwn(o, key)) KEY_ORDER.get(o)?.push(key);
  o[key] = v;
}

function keysOf(o: Obj): string[] {
  return KEY_ORDER.get(o) ?? Object.keys(o);
}

const JSON_ESCAPES = new Map([['"', '"'], ['\\', '\\'], ['/', '/'], ['b', '\b'], ['f', '\f'], ['n', '\n'], ['r', '\r'], ['t', '\t']]);

/** Parses JSON text into plain values; objects have no prototype. Keys given twice are reported to `rep`. */
function parseJson(text: string, rep: Report): unknown {
  let i = 0;
  const n = text.length;
  const fail = (pos: number, msg: string): never => {
    let line = 1;
    let lineStart = 0;
    for (let k = 0; k < pos && k < n; k++) if (text.charCodeAt(k) === 10) { line++; lineStart = k + 1; }
    throw new SyntaxAt(`line ${line}, column ${pos - lineStart + 1}`, msg);
  };
  const found = (pos: number): string => {
    if (pos >= n) return 'the end of the file';
    if (text[pos] === '"') return /^"[^"\n]{0,40}"?/.exec(text.slice(pos, pos + 42))![0];
    const m = /^[A-Za-z0-9_$.+-]+/.exec(text.slice(pos, pos + 40));
    return m ? quote(m[0]) : quote(text[pos]!);
  };
  const ws = (): void => {
    for (; i < n; i++) {
      const c = text.charCodeAt(i);
      if (c === 0x2f && (text[i + 1] === '/' || text[i + 1] === '*')) fail(i, 'JSON has no comments');
      if (c !== 32 && c !== 9 && c !== 10 && c !== 13) return;
    }
  };
  const str = (): string => {
    const start = i++;
    let out = '';
    for (;;) {
      if (i >= n) fail(start, 'unterminated string');
      const c = text[i]!;
      if (c === '"') { i++; return out; }
      if (c === '\n' || c === '\r') fail(start, 'unterminated string (a string cannot span lines)');
      if (c.charCodeAt(0) < 0x20) fail(i, 'control character in a string; escape it');
      if (c !== '\\') { out += c; i++; continue; }
      const e = text[i + 1];
      const esc = e === undefined ? undefined : JSON_ESCAPES.get(e);
      if (esc !== undefined) { out += esc; i += 2; continue; }
      if (e === 'u' && /^[0-9a-fA-F]{4}$/.test(text.slice(i + 2, i + 6))) {
        out += String.fromCharCode(parseInt(text.slice(i + 2, i + 6), 16));
        i += 6;
        continue;
      }
      fail(i, `invalid escape ${quote(text.slice(i, i + 2))} in a string`);
    }
  };
  const value = (path: string[], depth: number): unknown => {
    ws();
    if (depth > MAX_DEPTH) fail(i, 'nested too deeply');
    if (i >= n) fail(i, 'unexpected end of the file; expected a value');
    const c = text[i]!;
    if (c === '{') return object(path, depth);
    if (c === '[') {
      const start = i++;
      const out: unknown[] = [];
      ws();
      if (text[i] === ']') { i++; return out; }
      for (;;) {
        out.push(value([...path, String(out.length)], depth + 1));
        ws();
        if (text[i] === ',') {
          i++;
          ws();
          if (text[i] === ']') fail(i, 'trailing comma before "]"');
          continue;
        }
        if (text[i] === ']') { i++; return out; }
        if (i >= n) fail(start, 'unterminated array: missing "]"');
        fail(i, `expected "," or "]" after an array element, found ${found(i)}`);
      }
    }
    if (c === '"') return str();
    if (c === "'") fail(i, 'JSON strings take double quotes');
    for (const [word, v] of [['true', true], ['false', false], ['null', null]] as const) {
      if (text.startsWith(word, i) && !/[A-Za-z0-9_]/.test(text[i + word.length] ?? '')) { i += word.length; return v; }
    }
    const num = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;
    num.lastIndex = i;
    const m = num.exec(text);
    if (m && !/[A-Za-z0-9_.]/.test(text[i + m[0].length] ?? '')) { i += m[0].length; return Number(m[0]); }
    if (/[A-Za-z]/.test(c)) fail(i, `unexpected ${found(i)}; JSON strings take double quotes`);
    return fail(i, `unexpected ${found(i)}; expected a value`);
  };
  const object = (path: string[], depth: number): Obj => {
    const start = i++;
    const out = newObj();
    ws();
    if (text[i] === '}') { i++; return out; }
    for (;;) {
      ws();
      if (text[i] !== '"') {
        if (i >= n) fail(start, 'unterminated object: missing "}"');
        if (/[A-Za-z_']/.test(text[i]!)) fail(i, `property names take double quotes, found ${found(i)}`);
        fail(i, `expected a property name in double quotes, found ${found(i)}`);
      }
      const key = str();
      ws();
      if (text[i] !== ':') fail(i, `expected ":" after the property name ${quote(key)}, found ${found(i)}`);
      i++;
      const v = value([...path, key], depth + 1);
      if (Object.hasOwn(out, key)) rep.error([...path, key], 'given twice; JSON would silently keep the last one');
      put(out, key, v);
      ws();
      if (text[i] === ',') {
        i++;
        ws();
        if (text[i] === '}') fail(i, 'trailing comma before "}"');
        continue;
      }
      if (text[i] === '}') { i++; return out; }
      if (i >= n) fail(start, 'unterminated object: missing "}"');
      if (text[i] === '"') fail(i, `missing "," before ${found(i)}`);
      fail(i, `expected "," or "}" after a property value, found ${found(i)}`);
    }
  };
  const root = value([], 0);
  ws();
  if (i < n) fail(i, `unexpected ${found(i)} after the end of the JSON object`);
  return root;
}

// ---------------------------------------------------------------------------------------------------------
// The drbd.conf-like text form

interface Token { t: 'word' | 'string' | '{' | '}' | ';' | 'eof'; v: string; line: number }

/** Words, "quoted strings", braces and semicolons; `#` starts a comment to the end of the line. */
function tokenize(text: string): Token[] {
  const out: Token[] = [];
  let line = 1;
  let i = 0;
  const n = text.length;
  while (i < n) {
    const c = text[i]!;
    if (c === '\n') { line++; i++; continue; }
    if (c === ' ' || c === '\t' || c === '\r' || c === '\f' || c === '\v') { i++; continue; }
    if (c === '#') { while (i < n && text[i] !== '\n') i++; continue; }
    if (c === '{' || c === '}' || c === ';') { out.push({ t: c, v: c, line }); i++; continue; }
    if (c === '"') {
      const startLine = line;
      let v = '';
      i++;
      for (;;) {
        if (i >= n || text[i] === '\n') throw new SyntaxAt(`line ${startLine}`, 'unterminated string: missing closing \'"\'');
        const d = text[i]!;
        if (d === '"') { i++; break; }
        if (d === '\\' && i + 1 < n && text[i + 1] !== '\n') {
          const e = text[i + 1]!;
          v += e === 'n' ? '\n' : e === 't' ? '\t' : e;
          i += 2;
          continue;
        }
        v += d;
        i++;
      }
      out.push({ t: 'string', v, line: startLine });
      continue;
    }
    let j = i;
    while (j < n && !/[\s{};#"]/.test(text[j]!)) j++;
    out.push({ t: 'word', v: text.slice(i, j), line });
    i = j;
  }
  out.push({ t: 'eof', v: '', line });
  return out;
}

type Scope = 'resource' | 'section' | 'node' | 'tls';
/** How a text value maps to JSON: numbers, yes/no, and `none` for null are typed by the key they follow. */
const TEXT_KINDS = new Map<string, 'int' | 'bool' | 'nullable' | 'quorum'>([
  ['allow-two-primaries', 'bool'], ['al-extents', 'int'], ['block-size', 'int'], ['quorum', 'quorum'],
  ['csums-alg', 'nullable'], ['id', 'int'], ['queues', 'int'], ['disk', 'nullable'], ['meta-disk', 'nullable'],
  ['socket', 'nullable'], ['iscsi', 'nullable'],
]);
/** DRBD's section names, accepted as transparent groupings of resource-level settings. */
const SECTIONS = ['net', 'disk', 'options'];
const KNOWN_SECTIONS = ['on', 'tls', ...SECTIONS];

function textValue(key: string, tok: Token): unknown {
  const kind = TEXT_KINDS.get(key);
  const v = tok.v;
  if ((kind === 'int' || kind === 'quorum') && /^-?[0-9]+$/.test(v)) return Number(v);
  if (kind === 'bool') {
    if (v === 'yes' || v === 'true') return true;
    if (v === 'no' || v === 'false') return false;
  }
  if (kind === 'nullable' && tok.t === 'word' && v === 'none') return null;
  return v;
}

/** Parses the text form into the same plain object as the JSON form; lines of keys go to `rep.lines`. */
function parseText(text: string, rep: Report): Obj {
  const toks = tokenize(text);
  let i = 0;
  const peek = (): Token => toks[i]!;
  const next = (): Token => toks[Math.min(i++, toks.length - 1)]!;
  const show = (t: Token): string => (t.t === 'eof' ? 'the end of the file' : t.t === 'string' ? quote(t.v) : `"${t.v}"`);
  const known = (scope: Scope): readonly string[] =>
    scope === 'node' ? NODE_KEYS : scope === 'tls' ? TLS_KEYS : TOP_KEYS.filter((k) => k !== 'nodes' && k !== 'tls');

  const skipBlock = (open: Token): void => {
    next(); // '{'
    for (let depth = 1; depth > 0;) {
      const t = next();
      if (t.t === 'eof') throw new SyntaxAt(`line ${open.line}`, `missing "}" to close the section opened here`);
      if (t.t === '{') depth++;
      if (t.t === '}') depth--;
    }
  };

  const twice = (first: number | undefined, line: number): string =>
    first === undefined || first === line ? 'given twice' : `given twice; first at line ${first}`;

  const statement = (obj: Obj, at: string[], scope: Scope, keyTok: Token): void => {
    const vals: Token[] = [];
    while (peek().t === 'word' || peek().t === 'string') vals.push(next());
    const end = peek();
    const written = [keyTok.v, ...vals.map((v) => (v.t === 'string' ? quote(v.v) : v.v))].join(' ');
    if (end.t !== ';') {
      const last = vals.length > 0 ? vals[vals.length - 1]! : keyTok;
      throw new SyntaxAt(`line ${last.line}`, `missing ";" after "${written}"${end.t === '{' ? ` (${quote(keyTok.v)} is not a section)` : ''}`);
    }
    next();
    const key = scope === 'node' && keyTok.v === 'node-id' ? 'id' : keyTok.v;
    if (scope !== 'node' && scope !== 'tls' && key === 'nodes') throw new SyntaxAt(`line ${keyTok.line}`, '"nodes" is not a setting here: give each node as "on NAME { ... }"');
    let value: unknown;
    if (!known(scope).includes(key)) {
      value = vals.length === 0 ? true : vals.map((v) => v.v).join(' ');
    } else {
      let vs = vals;
      if (key === 'address' && vs.length === 2 && (vs[0]!.v === 'ipv4' || vs[0]!.v === 'ipv6')) {
        const v6 = vs[1]!.v.startsWith('[');
        if (v6 !== (vs[0]!.v === 'ipv6')) throw new SyntaxAt(`line ${keyTok.line}`, `"${written}": the address does not match its family ${vs[0]!.v}`);
        vs = [vs[1]!];
      }
      if (vs.length > 1 && vs[1]!.line !== keyTok.line) throw new SyntaxAt(`line ${keyTok.line}`, `missing ";" after "${keyTok.v} ${vs[0]!.v}"`);
      const nextKey = vs.findIndex((v, k) => k > 0 && v.t === 'word' && (known(scope).includes(v.v) || v.v === 'node-id'));
      if (nextKey > 0) throw new SyntaxAt(`line ${vs[nextKey]!.line}`, `missing ";" before "${vs[nextKey]!.v}" in "${written}"`);
      if (vs.length > 1) throw new SyntaxAt(`line ${keyTok.line}`, `"${keyTok.v}" takes one value, found ${vs.length}: ${written}`);
      if (vs.length === 0) {
        if (TEXT_KINDS.get(key) !== 'bool') throw new SyntaxAt(`line ${keyTok.line}`, `"${keyTok.v}" needs a value`);
        value = true;
      } else {
        value = textValue(key, vs[0]!);
      }
    }
    const p = [...at, key];
    if (Object.hasOwn(obj, key)) {
      rep.error(p, twice(rep.lines.get(pathText(p)), keyTok.line), keyTok.line);
      return;
    }
    put(obj, key, value);
    rep.lines.set(pathText(p), keyTok.line);
  };

  const body = (obj: Obj, at: string[], scope: Scope, open: Token, opener: string): void => {
    for (;;) {
      const t = next();
      if (t.t === '}') return;
      if (t.t === 'eof') throw new SyntaxAt(`line ${open.line}`, `missing "}" to close "${opener} {" opened here`);
      if (t.t === ';') continue;
      if (t.t === '{') throw new SyntaxAt(`line ${t.line}`, 'unexpected "{"; a section starts with its name, e.g. "on alpha {"');
      if (t.v === 'on' && t.t === 'word') {
        if (scope !== 'resource') throw new SyntaxAt(`line ${t.line}`, `"on NAME { ... }" belongs directly inside "resource", not inside "${opener}"`);
        const name = next();
        if (name.t !== 'word' && name.t !== 'string') throw new SyntaxAt(`line ${t.line}`, `expected a node name after "on", found ${show(name)}`);
        const brace = next();
        if (brace.t !== '{') {
          throw new SyntaxAt(`line ${brace.line}`, `expected "{" after "on ${name.v}", found ${show(brace)}${brace.t === 'word' ? '; one node per "on" section' : ''}`);
        }
        let nodes: Obj;
        if (isObj(obj.nodes)) nodes = obj.nodes;
        else {
          nodes = newObj();
          put(obj, 'nodes', nodes);
          rep.lines.set('nodes', t.line);
        }
        const node = newObj();
        body(node, ['nodes', name.v], 'node', t, `on ${name.v}`);
        if (peek().t === ';') next();
        const p = pathText(['nodes', name.v]);
        if (Object.hasOwn(nodes, name.v)) {
          rep.error(['nodes', name.v], twice(rep.lines.get(p), t.line), t.line);
          continue;
        }
        put(nodes, name.v, node);
        rep.lines.set(p, t.line);
        continue;
      }
      if (peek().t === '{') {
        if (t.v === 'tls' && (scope === 'resource' || scope === 'section')) {
          next();
          const tls = newObj();
          body(tls, ['tls'], 'tls', t, 'tls');
          if (peek().t === ';') next();
          if (Object.hasOwn(obj, 'tls')) rep.error(['tls'], twice(rep.lines.get('tls'), t.line), t.line);
          else {
            put(obj, 'tls', tls);
            rep.lines.set('tls', t.line);
          }
          continue;
        }
        if (scope === 'resource' && SECTIONS.includes(t.v)) {
          next();
          body(obj, at, 'section', t, t.v);
          if (peek().t === ';') next();
          continue;
        }
        const where = scope === 'resource' ? 'the sections are on NAME, tls, net, disk and options' : `"${opener}" holds settings, not sections`;
        rep.error([...at, t.v], `unknown section "${t.v} { }": ${where}${scope === 'resource' ? didYouMean(t.v, KNOWN_SECTIONS) : ''}`, t.line);
        skipBlock(t);
        if (peek().t === ';') next();
        continue;
      }
      statement(obj, at, scope, t);
    }
  };

  const first = next();
  if (first.t !== 'word' || first.v !== 'resource') {
    throw new SyntaxAt(`line ${first.line}`, `expected "resource NAME {" (or a JSON object), found ${show(first)}`);
  }
  const name = next();
  if (name.t !== 'word' && name.t !== 'string') throw new SyntaxAt(`line ${name.line}`, `expected the resource name after "resource", found ${show(name)}`);
  const brace = next();
  if (brace.t !== '{') throw new SyntaxAt(`line ${brace.line}`, `expected "{" after "resource ${name.v}", found ${show(brace)}`);
  const root = newObj();
  put(root, 'resource', name.v);
  rep.lines.set('resource', first.line);
  body(root, [], 'resource', first, `resource ${name.v}`);
  if (peek().t === ';') next();
  const extra = peek();
  if (extra.t !== 'eof') throw new SyntaxAt(`line ${extra.line}`, `unexpected ${show(extra)} after the end of resource ${name.v}; a file holds one resource`);
  return root;
}

// ---------------------------------------------------------------------------------------------------------
// Validation

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function has(o: Obj, k: string): boolean {
  return Object.hasOwn(o, k) && o[k] !== undefined;
}

function checkKeys(rep: Report, o: Obj, at: Path, allowed: readonly string[], hints: Map<string, string>): void {
  const shown = rep.form === 'text' ? allowed.map((k) => (k === 'id' ? 'node-id' : k)) : allowed;
  for (const k of keysOf(o)) {
    if (allowed.includes(k)) continue;
    const hint = hints.get(k);
    const mean = didYouMean(k, shown);
    const rest = hint !== undefined ? `; ${hint}` : mean !== '' ? mean : `; the keys here are ${listOf(shown, true, 'and')}`;
    rep.error([...at, k], `unknown key${rest}`);
  }
}

function oneOf<T extends string>(rep: Report, o: Obj, at: Path, key: string, values: readonly T[], dflt: T): T {
  if (!has(o, key)) return dflt;
  const v = o[key];
  if (typeof v === 'string' && (values as readonly string[]).includes(v)) return v as T;
  const p = [...at, key];
  if (typeof v !== 'string') rep.error(p, `expected ${listOf(values)}, got ${describe(v)}`);
  else {
    const unsupported = UNSUPPORTED.get(key);
    const mean = didYouMean(v, values);
    rep.error(p, `${quote(v)} is not ${values.length === 1 ? 'supported' : `one of ${listOf(values)}`}${mean !== '' ? mean : unsupported !== undefined ? `; ${unsupported}` : ''}`);
  }
  return dflt;
}

function intIn(rep: Report, o: Obj, at: Path, key: string, min: number, max: number, dflt: number): number {
  if (!has(o, key)) return dflt;
  const v = o[key];
  const p = [...at, key];
  if (typeof v === 'string' && /^-?[0-9]+$/.test(v.trim())) rep.error(p, `expected an integer ${min}..${max}, got ${describe(v)}; write it without quotes`);
  else if (typeof v !== 'number') rep.error(p, `expected an integer ${min}..${max}, got ${describe(v)}`);
  else if (!Number.isInteger(v)) rep.error(p, `${v} is not an integer; expected ${min}..${max}`);
  else if (v < min || v > max) rep.error(p, `${v} is out of range ${min}..${max}`);
  else return v;
  return dflt;
}

function boolOf(rep: Report, o: Obj, at: Path, key: string, dflt: boolean): boolean {
  if (!has(o, key)) return dflt;
  const v = o[key];
  if (typeof v === 'boolean') return v;
  rep.error([...at, key], `expected ${rep.form === 'json' ? 'true or false' : 'yes or no'}, got ${describe(v)}`);
  return dflt;
}

/** A size in bytes; rates may end in "/s". Returns null (after reporting) on a bad value. */
function sizeOf(rep: Report, o: Obj, at: Path, key: string, dflt: number, rate: boolean): number | null {
  if (!has(o, key)) return dflt;
  let v = o[key];
  if (rate && typeof v === 'string') v = v.replace(/\s*\/\s*s(ec)?$/, '');
  if (typeof v !== 'string' && typeof v !== 'number') {
    rep.error([...at, key], `expected a size such as 4096, 512K or 100M${rate ? ' (bytes per second)' : ''}, got ${describe(v)}`);
    return null;
  }
  try {
    return parseSize(v);
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    rep.error([...at, key], e.errors[0]!);
    return null;
  }
}

/** A path string resolved against the resource file's directory; undefined when absent, null when null. */
function pathOf(rep: Report, o: Obj, at: Path, key: string, dir: string, nullMeans: string): string | null | undefined {
  if (!Object.hasOwn(o, key) || o[key] === undefined) return undefined;
  const v = o[key];
  if (v === null) return null;
  const p = [...at, key];
  if (typeof v !== 'string') rep.error(p, `expected a path string${nullMeans}, got ${describe(v)}`);
  else if (v.trim() === '') rep.error(p, `is empty; give a path${nullMeans}`);
  else if (v.includes('\0')) rep.error(p, 'a path cannot contain a NUL character');
  else return resolve(dir, v);
  return undefined;
}

interface HostPort { host: string; port: number }

function isHostname(h: string): boolean {
  return h.length <= 253 && h.split('.').every((l) => /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/.test(l));
}

/** Parses "host:port" ("[v6]:port" for IPv6); returns a message saying what is wrong instead when it is not. */
function parseHostPort(s: string, suggestPort: number, defaultPort: number | null): HostPort | string {
  if (s === '') return `is empty; write it as host:port, e.g. 127.0.0.1:${suggestPort}`;
  if (/\s/.test(s)) return `${quote(s)} contains spaces; write it as host:port, e.g. 127.0.0.1:${suggestPort}`;
  let host: string;
  let shown: string;
  let portText: string | null;
  if (s.startsWith('[')) {
    const close = s.indexOf(']');
    if (close < 0) return `${quote(s)} has no closing "]"; write IPv6 addresses as [address]:port, e.g. [::1]:${suggestPort}`;
    host = s.slice(1, close);
    shown = `[${host}]`;
    const rest = s.slice(close + 1);
    if (!isIPv6(host)) return `${quote(host)} in brackets is not an IPv6 address`;
    if (rest === '') portText = null;
    else if (rest.startsWith(':')) portText = rest.slice(1);
    else return `${quote(s)}: expected ":port" after "]"`;
  } else {
    const colon = s.lastIndexOf(':');
    if (s.indexOf(':') !== colon) {
      const head = s.slice(0, colon);
      const tail = s.slice(colon + 1);
      const fix = isIPv6(head) && /^[0-9]{1,5}$/.test(tail) ? `[${head}]:${tail}` : isIPv6(s) ? `[${s}]:${suggestPort}` : `[::1]:${suggestPort}`;
      return `${quote(s)}: write IPv6 addresses in brackets, e.g. ${fix}`;
    }
    host = colon < 0 ? s : s.slice(0, colon);
    shown = host;
    portText = colon < 0 ? null : s.slice(colon + 1);
    if (host === '') return `${quote(s)} has no host; write it as host:port, e.g. 127.0.0.1:${portText || suggestPort}`;
    if (/^[0-9.]+$/.test(host)) {
      if (!isIPv4(host)) return `${quote(host)} is not a valid IPv4 address`;
    } else if (!isHostname(host)) {
      return `${quote(host)} is not an IPv4 address, [IPv6] address or hostname`;
    }
  }
  if (portText === null) {
    if (defaultPort !== null) return { host, port: defaultPort };
    return `${quote(s)} has no port; write it as host:port, e.g. ${shown}:${suggestPort}`;
  }
  if (!/^[0-9]{1,5}$/.test(portText)) return `port ${quote(portText)} is not a number 1..65535`;
  const port = Number(portText);
  if (port < 1 || port > 65535) return `port ${port} is out of range 1..65535`;
  return { host, port };
}

/**
 * Why `secret` is too weak to authenticate nodes, or null. The handshake proves the secret with an
 * HMAC over nonces both sides see, so anyone who records one handshake can test guesses offline, as
 * fast as they can compute HMACs: the secret must not be guessable at all. The rule, an estimate of the
 * most a string of its kind can carry (it cannot tell a random string from a chosen one):
 * bits = length x log2(alphabet), where the alphabet is 16 when every character is a hex digit, and
 * otherwise the sum over the kinds of characters used (a-z 26, A-Z 26, 0-9 10, anything else 33); it
 * needs MIN_SECRET_BITS (128), and no character may make up more than a third of the secret. So: 32
 * hex digits, or 22 to 28 characters mixing letters, digits and symbols; `twindisk gen-secret` prints
 * 32 random bytes in base64url (256 bits).
 */
export function secretProblem(secret: string): string | null {
  const chars = [...secret];
  let alphabet: number;
  if (/^[0-9a-fA-F]+$/.test(secret)) alphabet = 16;
  else {
    alphabet = 0;
    if (/[a-z]/.test(secret)) alphabet += 26;
    if (/[A-Z]/.test(secret)) alphabet += 26;
    if (/[0-9]/.test(secret)) alphabet += 10;
    if (/[^a-zA-Z0-9]/.test(secret)) alphabet += 33;
  }
  const bits = Math.floor(chars.length * Math.log2(alphabet));
  const how = 'make one with `twindisk gen-secret` (32 random bytes; or `openssl rand -base64 32`)';
  if (bits < MIN_SECRET_BITS) {
    return `too weak: ${chars.length} characters of ${alphabet === 16 ? 'hex digits' : `an alphabet of ${alphabet}`} carry at most ${bits} bits,`
      + ` and a secret needs ${MIN_SECRET_BITS} (anyone who records a handshake can test guesses offline): ${how}`;
  }
  const counts = new Map<string, number>();
  for (const c of chars) counts.set(c, (counts.get(c) ?? 0) + 1);
  const [most, n] = [...counts].reduce((a, b) => (b[1] > a[1] ? b : a));
  if (n * 3 > chars.length) return `too weak: ${quote(most)} makes up ${n} of its ${chars.length} characters: ${how}`;
  return null;
}

function isUnspecified(host: string): boolean {
  return host === '0.0.0.0' || (isIPv6(host) && /^[0:]+$/.test(host));
}

function isLoopback(host: string): boolean {
  const h = host.toLowerCase();
  return h === 'localhost' || h === '::1' || (isIPv4(h) && h.startsWith('127.')) || h.startsWith('::ffff:127.');
}

interface Draft {
  name: string;
  at: Path;
  id: number | null;
  hp: HostPort | null;
  address: string;
  disk: string | null;
  metaDisk: string;
  socket: string | null;
  iscsi: HostPort | null;
  control: string;
  queues: number;
}

/** The canonical form of an IP literal (IPv4-mapped IPv6 as IPv4, IPv6 compressed and lower case), or null for a host name. */
function canonicalIp(host: string): string | null {
  if (isIPv4(host)) return host;
  if (!isIPv6(host)) return null;
  let h: string;
  try {
    h = new URL(`http://[${host}]/`).hostname.slice(1, -1);
  } catch {
    return host.toLowerCase(); // a zone index (fe80::1%eth0): compared as written
  }
  const mapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(h);
  if (mapped) {
    const a = parseInt(mapped[1]!, 16);
    const b = parseInt(mapped[2]!, 16);
    return `${a >> 8}.${a & 255}.${b >> 8}.${b & 255}`;
  }
  return h;
}

/**
 * The sockets an endpoint can bind, as "ip|port" keys: two endpoints sharing a key collide (two nodes
 * on one machine cannot both listen there). Host names are NOT resolved (no DNS, no /etc/hosts):
 * loading a resource file is synchronous and pure, and must give the same verdict on every machine
 * whatever the resolver's state (a peer's name may resolve only on its own network, and a blocking
 * lookup would stall every command while DNS is down). What is certain without a resolver is used:
 * IP literals compare in canonical form (::0:1 is ::1, ::ffff:127.0.0.1 is 127.0.0.1); `localhost`
 * and `*.localhost` (RFC 6761) are loopback, and Node binds whichever of 127.0.0.1 and ::1 the OS
 * resolver returns first, so they collide with both; other names compare by name, ignoring case. 0.0.0.0 and :: are refused as node addresses (peers cannot dial them).
 */
function endpointKeys(hp: HostPort): string[] {
  const ip = canonicalIp(hp.host);
  if (ip !== null) return [`${ip}|${hp.port}`];
  const name = hp.host.toLowerCase();
  if (name === 'localhost' || name.endsWith('.localhost')) return [`127.0.0.1|${hp.port}`, `::1|${hp.port}`];
  return [`${name}|${hp.port}`];
}

/** Two nodes whose files may collide: same host, both loopback, or a host that did not parse. */
function sameMachine(a: Draft, b: Draft): boolean {
  if (a.hp === null || b.hp === null) return true;
  const x = a.hp.host.toLowerCase();
  const y = b.hp.host.toLowerCase();
  return x === y || (isLoopback(x) && isLoopback(y));
}

function validateNode(rep: Report, name: string, v: unknown, dir: string, resource: string, suggestPort: () => number): Draft | null {
  const at = ['nodes', name];
  if (!NAME_RE.test(name)) rep.error(at, `node name ${quote(name)} is not 1..64 characters of A-Z a-z 0-9 _ . -`);
  if (!isObj(v)) {
    rep.error(at, `expected an object with the node's address and disk, got ${describe(v)}`);
    return null;
  }
  checkKeys(rep, v, at, NODE_KEYS, NODE_HINTS);

  let hp: HostPort | null = null;
  let address = '';
  if (!has(v, 'address')) rep.error([...at, 'address'], `missing; give the node's replication address, e.g. ${rep.eg('address', `"127.0.0.1:${suggestPort()}"`)}`);
  else if (typeof v.address !== 'string') rep.error([...at, 'address'], `expected a "host:port" string, got ${describe(v.address)}`);
  else {
    address = v.address;
    const r = parseHostPort(address, suggestPort(), null);
    if (typeof r === 'string') rep.error([...at, 'address'], r);
    else if (isUnspecified(r.host)) rep.error([...at, 'address'], `${quote(address)} is not an address peers can connect to; give this node's own address`);
    else hp = r;
  }

  let disk: string | null = null;
  if (!Object.hasOwn(v, 'disk') || v.disk === undefined) {
    rep.error([...at, 'disk'], `missing; give the backing file or device, e.g. ${rep.eg('disk', `"${name}.img"`)}, or ${rep.eg('disk', 'null')} for a diskless node`);
  } else {
    disk = pathOf(rep, v, at, 'disk', dir, rep.form === 'json' ? ' (or null for a diskless node)' : ' (or none for a diskless node)') ?? null;
  }

  let metaDisk = 'internal';
  if (has(v, 'meta-disk') && v['meta-disk'] !== null) {
    if (Object.hasOwn(v, 'disk') && v.disk === null) rep.error([...at, 'meta-disk'], 'a diskless node has no meta-disk; remove it');
    else if (v['meta-disk'] !== 'internal') {
      const m = pathOf(rep, v, at, 'meta-disk', dir, ' or "internal"');
      if (typeof m === 'string') metaDisk = m;
    }
  }

  const socket = pathOf(rep, v, at, 'socket', dir, rep.form === 'json' ? ' (or null for none)' : ' (or none)') ?? null;
  const control = pathOf(rep, v, at, 'control', dir, '') ?? resolve(dir, `.${resource}.${name}.ctl`);

  let iscsi: HostPort | null = null;
  if (has(v, 'iscsi') && v.iscsi !== null) {
    if (typeof v.iscsi !== 'string') rep.error([...at, 'iscsi'], `expected an iSCSI portal "host:port", got ${describe(v.iscsi)}`);
    else {
      const r = parseHostPort(v.iscsi, ISCSI_PORT, ISCSI_PORT);
      if (typeof r === 'string') rep.error([...at, 'iscsi'], r);
      else iscsi = r;
    }
  }

  const id = has(v, 'id') && v.id !== null ? intIn(rep, v, at, 'id', 0, MAX_NODES - 1, -1) : null;
  const queues = intIn(rep, v, at, 'queues', 1, 64, 1);
  return { name, at, id: id === -1 ? null : id, hp, address, disk, metaDisk, socket, iscsi, control, queues };
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
  const claim = (d: Draft, hp: HostPort, key: 'address' | 'iscsi', what: string): void => {
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

  // Identical paths on different machines are normal (drbd.conf usually names the same device on every
  // host); on one machine two nodes would share a file.
  const files: { d: Draft; what: string; path: string }[] = [];
  for (const d of drafts) {
    const mine: [string, string | null][] = [['disk', d.disk], ['meta-disk', d.metaDisk === 'internal' ? null : d.metaDisk], ['socket', d.socket], ['control', d.control]];
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

/** Validates the parsed object and builds the ResourceConfig, or returns null with errors in `rep`. */
function build(raw: unknown, file: string, rep: Report): ResourceConfig | null {
  if (!isObj(raw)) {
    rep.error([], `expected an object with "resource", "secret" and "nodes", got ${describe(raw)}`);
    return null;
  }
  const absFile = resolve(file);
  const dir = dirname(absFile);
  checkKeys(rep, raw, [], TOP_KEYS, TOP_HINTS);

  let resource = '';
  if (!has(raw, 'resource')) rep.error(['resource'], `missing; name the resource, e.g. ${rep.eg('resource', '"r0"')}`);
  else if (typeof raw.resource !== 'string') rep.error(['resource'], `expected a name string, got ${describe(raw.resource)}`);
  else if (!NAME_RE.test(raw.resource)) rep.error(['resource'], `${quote(raw.resource)} is not 1..64 characters of A-Z a-z 0-9 _ . -`);
  else resource = raw.resource;

  const protocol = oneOf<Protocol>(rep, raw, [], 'protocol', ['A', 'B', 'C'], 'C');

  let secret = '';
  if (!has(raw, 'secret')) rep.error(['secret'], `missing; nodes authenticate each other with a shared secret: make one with \`twindisk gen-secret\` and write it as ${rep.eg('secret', '"..."')}`);
  else if (typeof raw.secret !== 'string') rep.error(['secret'], `expected a string, got ${describe(raw.secret)}`);
  else if (raw.secret === '') rep.error(['secret'], 'is empty; nodes authenticate each other with it');
  else {
    const weak = secretProblem(raw.secret);
    if (weak !== null) rep.error(['secret'], weak);
    else secret = raw.secret;
  }

  const onNoQuorum = oneOf(rep, raw, [], 'on-no-quorum', ['io-error', 'suspend-io'] as const, 'io-error');
  const allowTwoPrimaries = boolOf(rep, raw, [], 'allow-two-primaries', false);
  const afterSb1pri = oneOf(rep, raw, [], 'after-sb-1pri', AFTER_SB_1PRI, 'disconnect');
  const afterSb2pri = oneOf(rep, raw, [], 'after-sb-2pri', ['disconnect'] as const, 'disconnect');
  const resyncRate = sizeOf(rep, raw, [], 'resync-rate', 250 * 2 ** 20, true);
  const cMinRate = sizeOf(rep, raw, [], 'c-min-rate', 4 * 2 ** 20, true);
  let csumsAlg: 'xxh3' | null = null;
  if (has(raw, 'csums-alg') && raw['csums-alg'] !== null) csumsAlg = oneOf(rep, raw, [], 'csums-alg', ['xxh3'] as const, 'xxh3');
  const verifyAlg = oneOf(rep, raw, [], 'verify-alg', ['xxh3'] as const, 'xxh3');
  const onIoError = oneOf(rep, raw, [], 'on-io-error', ['detach', 'pass_on'] as const, 'detach');
  const gran = sizeOf(rep, raw, [], 'bitmap-granularity', 4096, false);
  if (gran !== null && (gran < 4096 || (gran & (gran - 1)) !== 0 || gran > 2 ** 30)) {
    rep.error(['bitmap-granularity'], `${gran} is not a power of two from 4096 (4K) up to 1G`);
  }
  const alExtents = intIn(rep, raw, [], 'al-extents', 7, 65534, 1237);
  let blockSize: 512 | 4096 = 512;
  if (has(raw, 'block-size')) {
    const b = sizeOf(rep, raw, [], 'block-size', 512, false);
    if (b === 512 || b === 4096) blockSize = b;
    else if (b !== null) rep.error(['block-size'], `${b} is not a logical block size; expected 512 or 4096`);
  }

  if (allowTwoPrimaries && protocol !== 'C') {
    rep.error(['allow-two-primaries'], `two primaries need protocol C (the protocol is ${protocol}), as in DRBD`);
  }
  if (resyncRate !== null && resyncRate > 0 && resyncRate < SLOW_RATE) {
    rep.warn(['resync-rate'], `${resyncRate} bytes/s is very slow; plain numbers are bytes per second (DRBD's are KiB/s): write e.g. "100M"`);
  }
  if (resyncRate !== null && cMinRate !== null && resyncRate > 0 && cMinRate > resyncRate) {
    rep.warn(['c-min-rate'], `${cMinRate} bytes/s is above resync-rate (${resyncRate} bytes/s); set c-min-rate at or below resync-rate`);
  }

  let tls: ResourceConfig['tls'] = null;
  if (has(raw, 'tls') && raw.tls !== null) {
    if (!isObj(raw.tls)) rep.error(['tls'], `expected an object with "cert", "key" and "ca" paths, got ${describe(raw.tls)}`);
    else {
      checkKeys(rep, raw.tls, ['tls'], TLS_KEYS, new Map());
      const got: string[] = [];
      for (const k of TLS_KEYS) {
        if (!has(raw.tls, k) || raw.tls[k] === null) rep.error(['tls', k], `missing; tls needs all of "cert", "key" and "ca"`);
        else {
          const p = pathOf(rep, raw.tls, ['tls'], k, dir, '');
          if (typeof p === 'string') got.push(p);
        }
      }
      if (got.length === 3) tls = { cert: got[0]!, key: got[1]!, ca: got[2]! };
    }
  }

  // Nodes.
  const drafts: Draft[] = [];
  let nodeNames: string[] = [];
  if (!has(raw, 'nodes')) {
    rep.error(['nodes'], `missing; list the nodes, e.g. ${rep.form === 'json' ? '"nodes": { "alpha": { "address": "127.0.0.1:7789", "disk": "alpha.img" } }' : 'on alpha { address 127.0.0.1:7789; disk alpha.img; }'}`);
  } else if (!isObj(raw.nodes)) {
    rep.error(['nodes'], `expected an object keyed by node name, e.g. "nodes": { "alpha": { ... } }, got ${describe(raw.nodes)}`);
  } else {
    const nodes = raw.nodes;
    nodeNames = keysOf(nodes);
    if (nodeNames.length === 0) rep.error(['nodes'], 'is empty; a resource needs at least one node');
    if (nodeNames.length > MAX_NODES) rep.error(['nodes'], `${nodeNames.length} nodes; a resource has at most ${MAX_NODES}`);
    const ports = new Set<number>();
    for (const n of nodeNames) {
      const node = nodes[n];
      if (isObj(node) && typeof node.address === 'string') {
        const m = /:([0-9]{1,5})$/.exec(node.address);
        if (m) ports.add(Number(m[1]));
      }
    }
    const suggestPort = (): number => {
      let p = FIRST_PORT;
      while (ports.has(p)) p++;
      return p;
    };
    for (const n of nodeNames) {
      const d = validateNode(rep, n, nodes[n], dir, resource || 'resource', suggestPort);
      if (d !== null) drafts.push(d);
    }
    crossCheck(rep, drafts);
    if (drafts.length > 0 && drafts.length === nodeNames.length && drafts.every((d) => d.disk === null)) {
      rep.error(['nodes'], `no node has a disk; at least one node needs one, e.g. ${rep.eg('disk', '"alpha.img"')}`);
    }
  }

  // Settings that name nodes or depend on their number.
  let afterSb0pri = 'disconnect';
  if (has(raw, 'after-sb-0pri')) {
    const v = raw['after-sb-0pri'];
    const all = [...AFTER_SB_0PRI, ...nodeNames.map((n) => `discard-node-${n}`)];
    if (typeof v === 'string' && all.includes(v)) afterSb0pri = v;
    else if (typeof v === 'string' && v.startsWith('discard-node-')) {
      rep.error(['after-sb-0pri'], `${quote(v)} names no node of the resource; the nodes are ${listOf(nodeNames, false, 'and')}${didYouMean(v, all)}`);
    } else {
      oneOf(rep, raw, [], 'after-sb-0pri', [...AFTER_SB_0PRI, 'discard-node-NAME'], 'disconnect');
    }
  }

  let quorum: ResourceConfig['quorum'] = 'off';
  if (has(raw, 'quorum')) {
    const q = raw.quorum;
    const expected = `"off", "majority" or a number of nodes 1..${Math.max(1, nodeNames.length)}`;
    if (q === 'off' || q === 'majority') quorum = q;
    else if (typeof q === 'number') {
      if (!Number.isInteger(q) || q < 1) rep.error(['quorum'], `${q} is not a positive integer; expected ${expected} (use "off" to turn quorum off)`);
      else if (nodeNames.length > 0 && q > nodeNames.length) rep.error(['quorum'], `${q} is more than the ${nodeNames.length} nodes of the resource; expected ${expected}`);
      else quorum = q;
    } else if (typeof q === 'string' && /^[0-9]+$/.test(q)) {
      rep.error(['quorum'], `expected ${expected}, got ${describe(q)}; write the number without quotes`);
    } else if (q === 'all') {
      rep.error(['quorum'], `"all" is not supported; write the number of nodes (${nodeNames.length}) instead`);
    } else {
      rep.error(['quorum'], `expected ${expected}, got ${describe(q)}${typeof q === 'string' ? didYouMean(q, ['off', 'majority']) : ''}`);
    }
  }
  if (quorum === 'majority' && nodeNames.length === 2) {
    rep.warn(['quorum'], 'a majority of 2 nodes is both of them: losing either one loses quorum; add a diskless third node as a tie-breaker');
  }

  if (rep.errors.length > 0 || resyncRate === null || cMinRate === null || gran === null) return null;

  // Ids: explicit ones first, then by order of appearance, skipping ids taken explicitly.
  const taken = new Set(drafts.flatMap((d) => (d.id === null ? [] : [d.id])));
  let nextId = 0;
  const nodes: NodeConfig[] = drafts.map((d) => {
    let id = d.id;
    if (id === null) {
      while (taken.has(nextId)) nextId++;
      id = nextId++;
    }
    return {
      name: d.name, id, host: d.hp!.host, port: d.hp!.port, address: d.address, disk: d.disk, metaDisk: d.disk === null ? 'internal' : d.metaDisk,
      socket: d.socket, iscsi: d.iscsi, control: d.control, queues: d.queues,
    };
  });
  nodes.sort((a, b) => a.id - b.id);

  return {
    file: absFile, dir, resource, protocol, secret, quorum, onNoQuorum, allowTwoPrimaries, afterSb0pri, afterSb1pri, afterSb2pri,
    resyncRate, cMinRate, csumsAlg, verifyAlg, onIoError, bitmapGranularity: gran, alExtents, blockSize, tls, nodes,
    warnings: rep.warnings,
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
    raw = json ? parseJson(src, rep) : parseText(src, rep);
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

const UNITS: Record<string, number> = { K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40, P: 2 ** 50 };

/** Parses sizes like 4096, 512K, 100M, 1G (binary units; "512KiB" and "512KB" mean the same). */
export function parseSize(s: string | number): number {
  const bad = (why: string): never => {
    throw new ConfigError([why]);
  };
  if (typeof s === 'number') {
    if (!Number.isSafeInteger(s) || s < 0) bad(`${s} is not a size; sizes are whole numbers of bytes, 0 or more`);
    return s;
  }
  if (typeof s !== 'string') return bad(`expected a size such as 4096, 512K, 100M or 1G, got ${describe(s)}`);
  const m = /^([0-9]+(?:\.[0-9]+)?)\s*(?:([KkMmGgTtPp])(?:iB|B)?|B)?$/.exec(s.trim());
  if (m === null) return bad(`${quote(s)} is not a size; write a number of bytes or a number with K, M, G or T (binary units), e.g. 512K, 100M, 1G`);
  const bytes = Number(m[1]) * (m[2] === undefined ? 1 : UNITS[m[2].toUpperCase()]!);
  if (!Number.isInteger(bytes)) bad(`${quote(s)} is not a whole number of bytes`);
  if (!Number.isSafeInteger(bytes)) bad(`${quote(s)} is too large`);
  return bytes;
}

/** Quorum: how many votes (nodes, counting this one) a partition needs; Infinity never, 0 when quorum is off. */
export function quorumVotes(cfg: ResourceConfig): number {
  const n = cfg.nodes.length;
  if (cfg.quorum === 'off') return 0;
  // Majority over all nodes: diskless nodes vote too, which is what makes them tie-breakers.
  const votes = cfg.quorum === 'majority' ? Math.floor(n / 2) + 1 : cfg.quorum;
  return Number.isInteger(votes) && votes >= 1 && votes <= n ? votes : Infinity;
}
