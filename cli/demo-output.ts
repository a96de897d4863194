// The demo's terminal: its own steps stand out; the three nodes' full log goes to a file, and of it the
// terminal shows only what tells the story (role changes, peers, resyncs, QEMU coming and going) and every
// warning and error, one short line per event, named by node.
import fs from 'node:fs';
import { formatText, paint, type Fields, type Level, type Sink } from '../engine/log.js';

/** One node log line as the demo's terminal shows it. */
export interface NodeEvent {
  /** The node that logged it (or the whole component, when it names no node). */
  node: string;
  level: Level;
  text: string;
}

const GiB = 2 ** 30;
const MiB = 2 ** 20;
const bytes = (n: number): string => (n >= GiB ? `${(n / GiB).toFixed(1)} GiB` : `${(n / MiB).toFixed(1)} MiB`);

/**
 * The INFO messages that tell what happens, each with how the terminal says it (`null`: the message as is).
 * The rest of INFO (disk attached, listening, retries, queue workers...) stays in the log file.
 */
const STORY: [RegExp, ((msg: string, f: Fields) => string) | null][] = [
  [/^node up$/, null],
  [/^node down$/, null],
  [/^connected to \S+$/, null],
  [/^promoted to Primary$/, (m, f) => (f.force === true ? `${m} (--force)` : m)],
  [/^demoted to Secondary$/, null],
  [/^resync with .*: this node is /, (m, f) => (f.full === true ? `${m}, full` : m)],
  [/^resync with .* finished$/, (m, f) => {
    const moved = Number(f.as === 'SyncTarget' ? f.bytesReceived : f.bytesSent);
    return Number.isFinite(moved) && f.seconds !== undefined ? `${m}: ${bytes(moved)} in ${String(f.seconds)} s` : m;
  }],
  [/^resuming the resync /, null],
  [/^online verify with /, null],
  [/^resyncing the blocks verify found/, null],
  [/^quorum regained/, null],
  [/^volume resized$/, null],
  [/^front-end connected$/, () => 'QEMU connected (vhost-user front-end)'],
  [/^front-end disconnected/, () => 'QEMU disconnected'],
];

/**
 * What the demo's terminal shows of one node log line, or null to keep it in the file only: warnings
 * and errors always (with their fields), INFO only when it is a step of the story, DEBUG never.
 * The node is the first segment of `component` that names one of `nodes` (`r0/alpha/link` is alpha's).
 */
export function demoEvent(level: Level, component: string, msg: string, fields: Fields, nodes: readonly string[]): NodeEvent | null {
  const node = component.split('/').find((s) => nodes.includes(s)) ?? component;
  if (level === 'warn' || level === 'error') {
    let text = msg;
    for (const [k, v] of Object.entries(fields)) if (v !== undefined) text += ` ${k}=${String(v)}`;
    return { node, level, text };
  }
  if (level !== 'info') return null;
  for (const [re, say] of STORY) if (re.test(msg)) return { node, level, text: say === null ? msg : say(msg, fields) };
  return null;
}

const NODE_COLORS = ['cyan', 'magenta', 'blue', 'green'] as const;

export interface DemoOutputOptions {
  /** The terminal (the demo writes to stderr; stdout carries its result). */
  stream: NodeJS.WritableStream & { isTTY?: boolean };
  /** The nodes' names, in the order their colours are given. */
  nodes: readonly string[];
  /** Where every node log line goes, as text (truncated when the demo starts). */
  logFile: string;
  /** Terminal colours (default: when the stream is a terminal and NO_COLOR is not set). */
  color?: boolean;
}

/** The demo's output: steps, notes, and a log sink that files everything and shows the story. */
export class DemoOutput {
  private readonly fd: number;
  private readonly color: boolean;
  private readonly width: number;
  private held: string[] | null = null;
  private stopping = false;

  constructor(private readonly o: DemoOutputOptions) {
    this.fd = fs.openSync(o.logFile, 'w');
    this.color = o.color ?? (o.stream.isTTY === true && process.env.NO_COLOR === undefined);
    this.width = Math.max(...o.nodes.map((n) => n.length));
  }

  /** A step of the demo: `==> starting the three nodes`, bold on a terminal. */
  step(text: string): void {
    this.write(this.color ? paint('bold', `==> ${text}`) : `==> ${text}`);
  }

  /** A detail of the current step, indented under it. */
  note(text: string): void {
    this.write(`    ${text}`);
  }

  /** The log sink: every line to the file (written at once, so nothing is lost at exit), the story to the terminal. */
  readonly sink: Sink = (level, component, msg, fields) => {
    fs.writeSync(this.fd, formatText(new Date(), level, component, msg, fields) + '\n');
    const e = demoEvent(level, component, msg, fields, this.o.nodes);
    if (e === null) return;
    // Stopping every node makes each warn of its peers leaving: the file has those; the terminal, errors and the end.
    if (this.stopping && e.level !== 'error' && e.text !== 'node down') return;
    this.write(this.eventLine(e));
  };

  /** The nodes are being stopped: from now on the terminal shows only their errors and `node down`. */
  stopAll(): void {
    this.stopping = true;
  }

  /** `    alpha | promoted to Primary`; a warning or error says so, in colour on a terminal. */
  eventLine(e: NodeEvent): string {
    const i = this.o.nodes.indexOf(e.node);
    const name = e.node.padEnd(this.width);
    const tag = e.level === 'warn' ? 'warning: ' : e.level === 'error' ? 'error: ' : '';
    if (!this.color) return `    ${name} | ${tag}${e.text}`;
    const who = paint(NODE_COLORS[(i < 0 ? 0 : i) % NODE_COLORS.length]!, name);
    const what = e.level === 'info' ? e.text : paint(e.level === 'warn' ? 'yellow' : 'red', `${tag}${e.text}`);
    return `    ${who} ${paint('gray', '|')} ${what}`;
  }

  /** Keeps terminal lines back while progress bars are drawn in place (they would be drawn over). */
  hold(): void {
    this.held ??= [];
  }

  /** Prints what was held back. */
  release(): void {
    const lines = this.held ?? [];
    this.held = null;
    for (const l of lines) this.write(l);
  }

  /** Closes the log file (the sink must have been replaced before). */
  close(): void {
    this.release();
    fs.closeSync(this.fd);
  }

  private write(line: string): void {
    if (this.held !== null) this.held.push(line);
    else this.o.stream.write(line + '\n');
  }
}
