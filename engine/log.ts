// Structured logging: one line per event, `time level component: message key=value...` text, or pino's JSON lines.

import fs from 'node:fs';
import { createRequire } from 'node:module';
import { inspect } from 'node:util';
import type pino from 'pino';

export type Level = 'debug' | 'info' | 'warn' | 'error';
export type Fields = Record<string, string | number | boolean | bigint | null | undefined>;
/** How stderr gets log lines: `text` for people and greps, `json` (pino's records) for log collectors. */
export type Format = 'text' | 'json';

const ORDER: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

/** Where log lines go; replaceable (tests collect lines, workers forward them to the main thread). */
export type Sink = (level: Level, component: string, msg: string, fields: Fields) => void;

function fmtValue(v: unknown): string {
  const s = String(v);
  return /[\s"=]/.test(s) || s === '' ? JSON.stringify(s) : s;
}

/**
 * `text` in one of util.inspect.colors' styles ('bold', 'red', 'gray'...). Callers decide whether to colour
 * (util.styleText would decide by process.stdout, and these lines go to stderr or a given stream).
 */
export function paint(style: string, text: string): string {
  const codes = inspect.colors[style];
  return codes === undefined ? text : `\x1b[${codes[0]}m${text}\x1b[${codes[1]}m`;
}

const LEVEL_STYLE: Record<Level, string> = { debug: 'gray', info: 'green', warn: 'yellow', error: 'red' };

/**
 * One text line (no newline): `2026-01-01T00:00:00.000Z INFO  r0/alpha: disk attached size=1073741824`.
 * Tests and operators match this shape (`component: message`, `key=value`); `color` only wraps the time and
 * level in terminal colours.
 */
export function formatText(time: Date, level: Level, component: string, msg: string, fields: Fields, color = false): string {
  const tag = level.toUpperCase().padEnd(5);
  let line = color
    ? `${paint('gray', time.toISOString())} ${paint(LEVEL_STYLE[level], tag)} ${component}: ${msg}`
    : `${time.toISOString()} ${tag} ${component}: ${msg}`;
  for (const [k, v] of Object.entries(fields)) if (v !== undefined) line += ` ${k}=${fmtValue(v)}`;
  return line;
}

/**
 * True when fd `fd` is systemd's journal: systemd sets JOURNAL_STREAM=DEV:INODE when it connects a service's
 * output to the journal, and a child whose stderr goes elsewhere inherits the variable, so the fd is compared.
 */
export function isJournal(journalStream: string | undefined, fd = 2): boolean {
  const m = /^(\d+):(\d+)$/.exec(journalStream ?? '');
  if (m === null) return false;
  try {
    const st = fs.fstatSync(fd, { bigint: true });
    return st.dev === BigInt(m[1]!) && st.ino === BigInt(m[2]!);
  } catch {
    return false;
  }
}

let journal: boolean | undefined;

/**
 * The format of stderr's lines: TWINDISK_LOG_FORMAT (`json` or `text`) when set, else JSON when stderr is
 * the journal (a service: `twindisk up` or `serve` under systemd), else text (a terminal, a pipe, a test).
 */
export function logFormat(env: NodeJS.ProcessEnv = process.env): Format {
  const f = env.TWINDISK_LOG_FORMAT;
  if (f === 'json' || f === 'text') return f;
  journal ??= isJournal(env.JOURNAL_STREAM);
  return journal ? 'json' : 'text';
}

let json: pino.Logger | undefined;

/**
 * pino, loaded on the first JSON line (a worker thread forwards its lines and never loads it), writing
 * synchronously to stderr so a line logged just before `process.exit` is not lost. The level filter is
 * Logger's; pino writes what it is given.
 */
function jsonLogger(): pino.Logger {
  if (json === undefined) {
    const p = createRequire(import.meta.url)('pino') as typeof pino;
    json = p({ level: 'debug', timestamp: p.stdTimeFunctions.isoTime }, p.destination({ dest: 2, sync: true }));
  }
  return json;
}

/** Writes to stderr in the format logFormat() chooses; text is coloured on a terminal unless NO_COLOR is set. */
export const stderrSink: Sink = (level, component, msg, fields) => {
  if (logFormat() === 'json') {
    jsonLogger()[level]({ component, ...fields }, msg);
    return;
  }
  const color = process.stderr.isTTY === true && process.env.NO_COLOR === undefined;
  process.stderr.write(formatText(new Date(), level, component, msg, fields, color) + '\n');
};

let sink: Sink = stderrSink;
let threshold = ORDER[(process.env.TWINDISK_LOG_LEVEL as Level) ?? 'info'] ?? ORDER.info;

/** Replaces the process's log sink (returns the previous one). */
export function setSink(s: Sink): Sink {
  const old = sink;
  sink = s;
  return old;
}

/** Sets the lowest level written. */
export function setLevel(l: Level): void {
  threshold = ORDER[l];
}

/** A logger for one component ("vhost-user", "queue 0", ...). */
export class Logger {
  constructor(readonly component: string) {}
  debug(msg: string, f: Fields = {}): void { if (threshold <= 10) sink('debug', this.component, msg, f); }
  info(msg: string, f: Fields = {}): void { if (threshold <= 20) sink('info', this.component, msg, f); }
  warn(msg: string, f: Fields = {}): void { if (threshold <= 30) sink('warn', this.component, msg, f); }
  error(msg: string, f: Fields = {}): void { sink('error', this.component, msg, f); }
  child(name: string): Logger { return new Logger(`${this.component}/${name}`); }
}

/**
 * Lets at most `perWindow` events through per `windowMs`; counts the rest and reports how many
 * were suppressed with the next event that passes. Guards logs an untrusted guest can trigger.
 */
export class RateLimit {
  private windowStart = 0;
  private count = 0;
  suppressed = 0;
  constructor(private readonly perWindow = 10, private readonly windowMs = 1000) {}
  allow(now = Date.now()): boolean {
    if (now - this.windowStart >= this.windowMs) {
      this.windowStart = now;
      this.count = 0;
    }
    if (this.count < this.perWindow) {
      this.count++;
      return true;
    }
    this.suppressed++;
    return false;
  }
  /** Returns and clears the number of suppressed events. */
  takeSuppressed(): number {
    const n = this.suppressed;
    this.suppressed = 0;
    return n;
  }
}
