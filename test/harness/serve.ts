// Starts `twindisk serve` as a child process for tests and collects its log.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const cli = path.join(repoRoot, 'dist', 'cli', 'twindisk.js');

export interface Served {
  child: ChildProcess;
  socket: string;
  image: string;
  dir: string;
  /** Everything the daemon logged so far. */
  log(): string;
  /** Resolves when the log matches `re`. */
  waitLog(re: RegExp, ms?: number): Promise<void>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** A temporary directory removed when the process exits. */
export function tmpDir(prefix = 'twindisk-test-'): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  process.on('exit', () => fs.rmSync(d, { recursive: true, force: true }));
  return d;
}

/** How a CLI run ended and what it printed. */
export interface CliRun {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the twindisk CLI without blocking this process's event loop (QMP servers, guests may run in it); resolves when it exits. */
export function runCli(...args: string[]): Promise<CliRun> {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, [cli, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    c.stdout!.on('data', (d) => (stdout += d));
    c.stderr!.on('data', (d) => (stderr += d));
    c.on('exit', (status) => resolve({ status, stdout, stderr }));
  });
}

/** Runs the twindisk CLI and returns what it printed on stdout; fails (with its output) unless it exits 0. */
export async function runCliOk(...args: string[]): Promise<string> {
  const r = await runCli(...args);
  assert.equal(r.status, 0, `twindisk ${args.join(' ')}: exit ${r.status}\n${r.stdout}${r.stderr}`);
  return r.stdout;
}

/** Starts `twindisk serve` with `args` and waits until it listens. */
export async function serve(opts: { image: string; socket: string; args?: string[]; dir: string }): Promise<Served> {
  const child = spawn(process.execPath, [cli, 'serve', '--image', opts.image, '--socket', opts.socket, ...(opts.args ?? [])], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  child.stdout!.on('data', (d) => (log += d));
  child.stderr!.on('data', (d) => (log += d));
  const s: Served = {
    child, socket: opts.socket, image: opts.image, dir: opts.dir,
    log: () => log,
    waitLog: async (re, ms = 10000) => {
      const t0 = Date.now();
      while (!re.test(log)) {
        if (Date.now() - t0 > ms) throw new Error(`daemon log did not show ${re} within ${ms} ms:\n${log}`);
        if (child.exitCode !== null) throw new Error(`daemon exited (${child.exitCode}) before showing ${re}:\n${log}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    },
    stop: async (signal = 'SIGTERM') => {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill(signal);
      return new Promise((r) => child.once('exit', (code) => r(code)));
    },
  };
  // Until the socket listens (or the daemon exits, which waitLog reports with its log): a loaded machine may take seconds.
  await s.waitLog(/listening/, 20000);
  return s;
}
