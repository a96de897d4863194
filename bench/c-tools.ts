// The benchmarks' child processes (killed with this one), and the C load clients (bench/iscsi-load.c, bench/vhost-load.c): built once per source version, run once per workload.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
/** The header every client includes: part of each client's version. */
const COMMON_HEADER = path.join(root, 'bench', 'load-common.h');

/** Child processes started here that have not exited yet (withScratch in iscsi.ts kills them on a signal). */
export const live = new Set<ChildProcess>();
let exitHooked = false;

/** Tracks `child` until it exits; whatever is still running when Node exits is killed. */
function track(child: ChildProcess): ChildProcess {
  live.add(child);
  child.once('exit', () => live.delete(child));
  if (!exitHooked) {
    exitHooked = true;
    process.once('exit', () => {
      for (const c of live) c.kill('SIGKILL');
    });
  }
  return child;
}

let pdeathsig: boolean | undefined;

/**
 * Spawns `cmd` so that it is killed when this process dies, even by SIGKILL (util-linux `setpriv
 * --pdeathsig KILL`, which execs the command, so the child's pid is the command's own), and tracks it.
 */
export function spawnTracked(cmd: string, args: string[], env?: NodeJS.ProcessEnv): ChildProcess {
  pdeathsig ??= spawnSync('setpriv', ['--help'], { encoding: 'utf8' }).stdout?.includes('--pdeathsig') ?? false;
  const [file, argv] = pdeathsig ? ['setpriv', ['--pdeathsig', 'KILL', '--', cmd, ...args]] : [cmd, args];
  return track(spawn(file, argv as string[], { stdio: ['ignore', 'pipe', 'pipe'], env: env ?? process.env }));
}

/** Where compiled helpers are kept (by source hash, so an edited source is rebuilt). */
export function cacheDir(): string {
  return process.env.TWINDISK_CACHE_DIR ?? path.join(root, 'node_modules', '.cache', 'twindisk');
}

/**
 * The path of bench/`name`.c compiled (`gcc -O2 -Wall`, linked with `libs`), building it first when
 * its source or bench/load-common.h changed. `hint(stderr)` may name a missing package from gcc's
 * complaint; `setup` says how to install what is missing.
 */
export function buildCTool(name: string, o: { libs?: string[]; setup: string; hint?: (stderr: string) => string | null }): string {
  const src = path.join(root, 'bench', `${name}.c`);
  if (!fs.existsSync(src)) throw new Error(`${src} is missing: the load client's source comes with the repository`);
  const hash = createHash('sha256').update(fs.readFileSync(src)).update(fs.readFileSync(COMMON_HEADER));
  const bin = path.join(cacheDir(), `${name}-${hash.digest('hex').slice(0, 16)}`);
  if (fs.existsSync(bin)) return bin;
  if (spawnSync('gcc', ['--version'], { stdio: 'ignore' }).error) throw new Error(`gcc is not installed, so bench/${name}.c cannot be built: ${o.setup}`);
  fs.mkdirSync(cacheDir(), { recursive: true });
  const tmp = `${bin}.${process.pid}.tmp`;
  const r = spawnSync('gcc', ['-O2', '-Wall', '-o', tmp, src, ...(o.libs ?? [])], { encoding: 'utf8' });
  if (r.status !== 0) {
    fs.rmSync(tmp, { force: true });
    const missing = o.hint?.(r.stderr ?? '');
    if (missing) throw new Error(`${missing}: ${o.setup}`);
    throw new Error(`building bench/${name}.c failed (gcc exited ${r.status ?? r.signal}):\n${(r.stderr || String(r.error ?? '')).trim()}`);
  }
  fs.renameSync(tmp, bin);
  return bin;
}

/**
 * Runs a load client and resolves to the JSON line it prints last; rejects with its stderr when it
 * fails, prints no result, or outlives `limitMs` (then it is killed). `label` names the run in errors.
 */
export function runJsonTool<T>(bin: string, args: string[], label: string, limitMs: number): Promise<T> {
  const child = spawnTracked(bin, args);
  const tool = path.basename(bin).replace(/-[0-9a-f]{16}$/, '');
  let out = '';
  let err = '';
  child.stdout!.on('data', (d: Buffer) => (out += d));
  child.stderr!.on('data', (d: Buffer) => (err += d));
  return new Promise((resolve, reject) => {
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, limitMs);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`${label}: cannot run ${bin}: ${e.message}`));
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      if (timedOut) return reject(new Error(`${label}: ${tool} did not finish within ${limitMs / 1000} s and was killed: ${err.trim()}`));
      if (code !== 0) return reject(new Error(`${label}: ${tool} exited (${code ?? signal}): ${err.trim() || '(nothing on stderr)'}`));
      try {
        resolve(JSON.parse(out.trim().split('\n').pop()!) as T);
      } catch {
        reject(new Error(`${label}: ${tool} printed no result: ${out.trim()} ${err.trim()}`));
      }
    });
  });
}
