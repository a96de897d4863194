// The drbd.conf-like text form of a resource file, read into the same plain object as the JSON form
// (then checked by the same schema):
//
//   resource r0 { protocol C; secret "..."; net { after-sb-0pri disconnect; }
//                 on alpha { address 10.0.0.1:7789; disk /dev/vg/r0; } }
//
// A small hand-written tokenizer and recursive-descent reader: no npm package reads drbd.conf's grammar
// (DRBD's own parser is C inside drbd-utils), and the generic nginx-style config parsers on npm neither
// keep line numbers per key nor tell a section from a setting the way DRBD does (`on NAME { }`,
// `address ipv4 HOST:PORT;`, flags without a value). It knows no keys itself: which keys exist in each
// scope and how their values read (numbers, yes/no, `none`) come from the schema (schema.ts).
import { SyntaxAt, didYouMean, isObj, newObj, pathText, put, quote, type Obj, type Report } from './messages.js';

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

/** How a key's text value maps to the JSON value the schema checks (read off the schema: see schema.ts textGrammar). */
export interface TextKind {
  /** Digits are a number. */
  int: boolean;
  /** yes/no (and true/false) are booleans, and the key alone means yes. */
  bool: boolean;
  /** The word `none` is null. */
  nullable: boolean;
}
/** The keys of each scope of the text form and how their values read. */
export interface TextGrammar {
  resource: ReadonlyMap<string, TextKind>;
  node: ReadonlyMap<string, TextKind>;
  tls: ReadonlyMap<string, TextKind>;
}
/** DRBD's section names, accepted as transparent groupings of resource-level settings. */
const SECTIONS = ['net', 'disk', 'options'];
const KNOWN_SECTIONS = ['on', 'tls', ...SECTIONS];

function textValue(kind: TextKind | undefined, tok: Token): unknown {
  const v = tok.v;
  if (kind?.int && /^-?[0-9]+$/.test(v)) return Number(v);
  if (kind?.bool) {
    if (v === 'yes' || v === 'true') return true;
    if (v === 'no' || v === 'false') return false;
  }
  if (kind?.nullable && tok.t === 'word' && v === 'none') return null;
  return v;
}

/** Parses the text form into the same plain object as the JSON form; lines of keys go to `rep.lines`. */
export function parseText(text: string, rep: Report, grammar: TextGrammar): Obj {
  const toks = tokenize(text);
  let i = 0;
  const peek = (): Token => toks[i]!;
  const next = (): Token => toks[Math.min(i++, toks.length - 1)]!;
  const show = (t: Token): string => (t.t === 'eof' ? 'the end of the file' : t.t === 'string' ? quote(t.v) : `"${t.v}"`);
  const kinds = (scope: Scope): ReadonlyMap<string, TextKind> => (scope === 'node' ? grammar.node : scope === 'tls' ? grammar.tls : grammar.resource);
  /** Settings of a scope: `nodes` and `tls` are sections ("on NAME { }", "tls { }") in the text form. */
  const known = (scope: Scope): string[] => [...kinds(scope).keys()].filter((k) => k !== 'nodes' && k !== 'tls');

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
        if (!kinds(scope).get(key)?.bool) throw new SyntaxAt(`line ${keyTok.line}`, `"${keyTok.v}" needs a value`);
        value = true;
      } else {
        value = textValue(kinds(scope).get(key), vs[0]!);
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
