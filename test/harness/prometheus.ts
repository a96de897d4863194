// Scrapes a Prometheus endpoint and reads its text exposition format (version 0.0.4), for tests.
import assert from 'node:assert/strict';

export interface Series { name: string; labels: Record<string, string>; value: number }

/** The exposition's metadata and series. Throws on a line the format does not allow, so a malformed exposition fails the test. */
export interface Exposition {
  series: Series[];
  /** `# TYPE` per metric name. */
  types: Map<string, string>;
  help: Map<string, string>;
}

const NAME = '[a-zA-Z_:][a-zA-Z0-9_:]*';
const SERIES_RE = new RegExp(`^(${NAME})(?:\\{(.*)\\})? (\\S+)(?: (-?\\d+))?$`);
const LABEL_RE = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)/y;

/** Parses the text format: `# HELP`, `# TYPE`, comments, blank lines and `name{label="v",...} value [timestamp]`. */
export function parseExposition(text: string): Exposition {
  const out: Exposition = { series: [], types: new Map(), help: new Map() };
  for (const line of text.split('\n')) {
    if (line === '') continue;
    if (line.startsWith('#')) {
      const m = /^# (HELP|TYPE) (\S+) (.*)$/.exec(line);
      if (m) (m[1] === 'HELP' ? out.help : out.types).set(m[2]!, m[3]!);
      continue;
    }
    const m = SERIES_RE.exec(line);
    if (!m) throw new Error(`not an exposition line: ${JSON.stringify(line)}`);
    const labels: Record<string, string> = {};
    const body = m[2] ?? '';
    LABEL_RE.lastIndex = 0;
    while (LABEL_RE.lastIndex < body.length) {
      const l = LABEL_RE.exec(body);
      if (!l) throw new Error(`bad labels in ${JSON.stringify(line)}`);
      labels[l[1]!] = l[2]!.replace(/\\n/g, '\n').replace(/\\"/g, '"').replace(/\\\\/g, '\\');
    }
    const v = m[3]!;
    // Go's ParseFloat, which Prometheus uses, takes NaN and Inf in any case (prom-client writes "Nan").
    const lower = v.toLowerCase();
    const value = lower === '+inf' || lower === 'inf' ? Infinity : lower === '-inf' ? -Infinity : lower === 'nan' ? NaN : Number(v);
    if (Number.isNaN(value) && lower !== 'nan') throw new Error(`bad value in ${JSON.stringify(line)}`);
    out.series.push({ name: m[1]!, labels, value });
  }
  return out;
}

/** Fetches `url` and parses it, checking the status and content type. */
export async function scrape(url: string): Promise<Exposition> {
  const r = await fetch(url);
  assert.equal(r.status, 200, `GET ${url}`);
  assert.match(r.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  return parseExposition(await r.text());
}

/** The series of `name` whose labels include `labels`. */
export function find(e: Exposition, name: string, labels: Record<string, string> = {}): Series[] {
  return e.series.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
}

/** The value of the one series of `name` matching `labels`; fails when there is not exactly one. */
export function value(e: Exposition, name: string, labels: Record<string, string> = {}): number {
  const f = find(e, name, labels);
  assert.equal(f.length, 1, `${name}${JSON.stringify(labels)}: expected one series, found ${f.length}`);
  return f[0]!.value;
}
