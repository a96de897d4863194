// Progress bars for the commands that wait on a resync or a verify (wait-sync, verify --wait, the
// demo's initial sync): one bar per peer, drawn by cli-progress. On a terminal the bars are redrawn in
// place; anywhere else (a log, a pipe, CI) every bar is printed as a plain line at each update.
import cliProgress from 'cli-progress';

/** One peer's line: `beta [=========           ] 45.3% SyncTarget 112.0 MiB/s`. */
export interface ProgressRow {
  name: string;
  /** 0..100. */
  percent: number;
  /** What follows the percentage: state, rate, ETA. */
  detail: string;
}

export interface ProgressOptions {
  /** Where the bars go (default stdout). */
  stream?: NodeJS.WritableStream;
  /** How often the bars are printed when the stream is not a terminal, in ms (default 2000). */
  plainEveryMs?: number;
}

interface Payload { name: string; detail: string }

/** `[=========           ] 45.3%` and the detail: cli-progress draws the bar, the percentage keeps a decimal. */
const format: cliProgress.GenericFormatter = (options, params, payload: Payload) =>
  `${payload.name} [${cliProgress.Format.BarFormat(params.progress, options)}] ${(params.progress * 100).toFixed(1)}% ${payload.detail}`.trimEnd();

export class ProgressBars {
  private readonly multi: cliProgress.MultiBar;
  private readonly bars = new Map<string, cliProgress.SingleBar>();
  private stopped = false;

  constructor(o: ProgressOptions = {}) {
    this.multi = new cliProgress.MultiBar({
      stream: o.stream ?? process.stdout,
      format,
      barsize: 20,
      barCompleteChar: '=',
      barIncompleteChar: ' ',
      // A crashed or interrupted command must not leave the terminal's cursor hidden.
      hideCursor: false,
      clearOnComplete: true,
      noTTYOutput: true,
      notTTYSchedule: o.plainEveryMs ?? 2000,
    });
  }

  /** Shows these rows (a peer not listed keeps its last line). */
  update(rows: readonly ProgressRow[]): void {
    if (this.stopped) return;
    for (const r of rows) {
      const percent = Math.max(0, Math.min(100, r.percent));
      const payload: Payload = { name: r.name, detail: r.detail };
      const bar = this.bars.get(r.name);
      if (bar === undefined) this.bars.set(r.name, this.multi.create(100, percent, payload));
      else bar.update(percent, payload);
    }
  }

  /** Removes the bars from a terminal (the caller prints the outcome); idempotent. */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.multi.stop();
  }
}
