// Structured logging: one line per event, `time level component message key=value...`, or JSON lines.

export type Level = 'debug' | 'info' | 'warn' | 'error';
export type Fields = Record<string, string | number | boolean | bigint | null | undefined>;

const ORDER: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

/** Where log lines go; replaceable (tests collect lines, workers forward them to the main thread). */
export type Sink = (level: Level, component: string, msg: string, fields: Fields) => void;

function fmtValue(v: unknown): string {
  const s = String(v);
  return /[\s"=]/.test(s) || s === '' ? JSON.stringify(s) : s;
}

/** Writes to stderr: logfmt-like text, or JSON when TWINDISK_LOG_FORMAT=json. */
export const stderrSink: Sink = (level, component, msg, fields) => {
  const time = new Date().toISOString();
  if (process.env.TWINDISK_LOG_FORMAT === 'json') {
    const o: Record<string, unknown> = { time, level, component, msg };
    for (const [k, v] of Object.entries(fields)) o[k] = typeof v === 'bigint' ? v.toString() : v;
    process.stderr.write(JSON.stringify(o) + '\n');
    return;
  }
  let line = `${time} ${level.toUpperCase().padEnd(5)} ${component}: ${msg}`;
  for (const [k, v] of Object.entries(fields)) if (v !== undefined) line += ` ${k}=${fmtValue(v)}`;
  process.stderr.write(line + '\n');
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
