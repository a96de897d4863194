// How the resource file's mistakes are worded: paths, values, lists, "did you mean", and the report
// that collects every error (each prefixed by the file name, its path, and in the text form its line).
import didYouMeanLib from 'didyoumean2';

/** A resource file with mistakes. `errors` holds every one found, each prefixed by the file name and JSON path. */
export class ConfigError extends Error {
  readonly errors: string[];
  constructor(errors: string[]) {
    super(errors.join('\n'));
    this.name = 'ConfigError';
    this.errors = errors;
  }
}

export type Path = readonly string[];
export type Obj = Record<string, unknown>;
/** JSON, or the drbd.conf-like text form. */
export type Form = 'json' | 'text';

/** "nodes.beta.address"; segments that are not plain words are bracketed: nodes["a b"]. */
export function pathText(p: Path): string {
  let s = '';
  for (const seg of p) s += /^[A-Za-z0-9_-]+$/.test(seg) ? (s === '' ? '' : '.') + seg : `[${JSON.stringify(seg)}]`;
  return s;
}

export function quote(s: string): string {
  return JSON.stringify(s.length > 80 ? s.slice(0, 77) + '...' : s);
}

/** What a value is, for "got ...": `the string "x"`, `the number 7`, `null`, `an array`. */
export function describe(v: unknown): string {
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
export function listOf(values: readonly string[], q = true, conj = 'or'): string {
  const vs = values.map((v) => (q ? JSON.stringify(v) : v));
  return vs.length <= 1 ? vs.join('') : `${vs.slice(0, -1).join(', ')} ${conj} ${vs[vs.length - 1]}`;
}

/** Lower case, `_` and camelCase folded into `-`: "metaDisk", "META_DISK" and "meta-disk" compare equal. */
function fold(s: string): string {
  return s.replace(/([a-z0-9])([A-Z])/g, '$1-$2').toLowerCase().replace(/_/g, '-');
}

/**
 * The candidate closest to `s`, if one is close enough to be a likely typo: Levenshtein similarity of
 * at least 0.5 (didyoumean2) after folding case, `_` and camelCase, so "allowTwoPrimaries" finds
 * "allow-two-primaries" and "btea" finds "beta".
 */
export function closest(s: string, candidates: readonly string[]): string | null {
  const items = candidates.map((c) => ({ folded: fold(c), c }));
  const hit = didYouMeanLib(fold(s), items, { matchPath: ['folded'], threshold: 0.5, caseSensitive: true });
  return hit === null ? null : hit.c;
}

/** `; did you mean "x"?`, or nothing when no candidate is close. */
export function didYouMean(s: string, candidates: readonly string[]): string {
  const c = closest(s, candidates);
  return c === null ? '' : `; did you mean ${JSON.stringify(c)}?`;
}

/** Collects errors and warnings, each prefixed by the file name and path (and a line number in the text form). */
export class Report {
  readonly errors: string[] = [];
  readonly warnings: string[] = [];
  /** Lines where the text form wrote each path ("nodes.beta.address" -> 8). */
  readonly lines = new Map<string, number>();
  constructor(readonly base: string, readonly form: Form) {}

  error(path: Path, msg: string, line?: number): void {
    this.errors.push(this.format(path, msg, line));
  }

  warn(path: Path, msg: string): void {
    this.warnings.push(this.format(path, msg));
  }

  private format(path: Path, msg: string, line?: number): string {
    let at = line;
    for (let p = path; at === undefined && p.length > 0; p = p.slice(0, -1)) at = this.lines.get(pathText(p));
    const where = path.length > 0 ? `${pathText(path)}: ` : '';
    return `${this.base}: ${where}${msg}${at === undefined || this.form === 'json' ? '' : ` (line ${at})`}`;
  }
}

/** A syntax error that stops parsing: `where` is "line 3" or "line 3, column 7". */
export class SyntaxAt extends Error {
  constructor(readonly where: string, message: string) {
    super(message);
  }
}

/** Keys in the order written: JS objects list integer-like keys ("1", "2") first, and node ids follow file order. */
const KEY_ORDER = new WeakMap<Obj, string[]>();

/** An object without a prototype (a key "__proto__" is a plain key) that remembers its key order. */
export function newObj(): Obj {
  const o = Object.create(null) as Obj;
  KEY_ORDER.set(o, []);
  return o;
}

/** Stores `o[key] = v`, remembering the order in which keys were first written. */
export function put(o: Obj, key: string, v: unknown): void {
  if (!Object.hasOwn(o, key)) KEY_ORDER.get(o)?.push(key);
  o[key] = v;
}

/** The keys of `o` in the order the file wrote them. */
export function keysOf(o: Obj): string[] {
  return KEY_ORDER.get(o) ?? Object.keys(o);
}

export function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
