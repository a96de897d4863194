// The parts every test initramfs shares: modules resolved from modules.dep, host programs with their libraries, the cpio tree.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { CpioEntry } from './cpio.js';

/** Where busybox comes from (Debian's busybox-static: one static binary with every applet). */
export const BUSYBOX = '/bin/busybox';

/**
 * Module files (relative to /lib/modules/VERSION) for `names` and everything they depend on, in an
 * order that loads: each module after its dependencies. A name absent from modules.dep is built in.
 */
export function resolveModules(version: string, names: string[]): string[] {
  const dir = `/lib/modules/${version}`;
  const depFile = path.join(dir, 'modules.dep');
  if (!fs.existsSync(depFile)) throw new Error(`${depFile} is missing: reinstall linux-image-${version}`);
  const deps = new Map<string, string[]>();
  for (const line of fs.readFileSync(depFile, 'utf8').split('\n')) {
    const [mod, rest] = line.split(':');
    if (mod) deps.set(mod, (rest ?? '').trim().split(/\s+/).filter(Boolean));
  }
  const byName = new Map<string, string>();
  for (const m of deps.keys()) byName.set(path.basename(m).replace(/\.ko(\.xz|\.zst|\.gz)?$/, '').replace(/-/g, '_'), m);
  const order: string[] = [];
  const visit = (m: string) => {
    if (order.includes(m)) return;
    for (const d of deps.get(m) ?? []) visit(d);
    order.push(m);
  };
  for (const n of names) {
    const m = byName.get(n);
    if (m) visit(m); // built into this kernel when absent from modules.dep
  }
  for (const m of order) if (!m.endsWith('.ko')) throw new Error(`module ${m} is compressed; twindisk's guest builder expects plain .ko files`);
  return order;
}

/** Those of `names` this kernel has neither as a module (modules.dep) nor built in (modules.builtin). */
export function missingModules(version: string, names: string[]): string[] {
  const dir = `/lib/modules/${version}`;
  const known = new Set<string>();
  for (const f of ['modules.dep', 'modules.builtin']) {
    const file = path.join(dir, f);
    if (!fs.existsSync(file)) continue;
    for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
      const m = line.split(':')[0]!.trim();
      if (m) known.add(path.basename(m).replace(/\.ko(\.xz|\.zst|\.gz)?$/, '').replace(/-/g, '_'));
    }
  }
  return names.filter((n) => !known.has(n.replace(/-/g, '_')));
}

/** An ELF and the shared libraries ldd lists for it (with the dynamic loader). */
export function withLibraries(bin: string): string[] {
  const out = execFileSync('ldd', [bin], { encoding: 'utf8' });
  const libs = [...out.matchAll(/(\/\S+\.so[.\d]*)/g)].map((m) => m[1]!);
  return [bin, ...new Set(libs)];
}

/**
 * A cache key for a build: sha256 over `texts` and each file's path, size and mtime, cut to 16 hex
 * digits. Any input that changes makes a new key, so a stale build is never reused.
 */
export function inputKey(texts: string[], files: string[]): string {
  const h = createHash('sha256');
  for (const t of texts) h.update(t);
  for (const f of files) {
    const st = fs.statSync(f);
    h.update(`${f}:${st.size}:${st.mtimeMs}`);
  }
  return h.digest('hex').slice(0, 16);
}

/** What goes into an initramfs besides busybox. */
export interface InitramfsSpec {
  kernelVersion: string;
  /** Module files relative to /lib/modules/VERSION, in load order (from resolveModules). */
  modules: string[];
  /** Host files copied to the same path, with the contents of their real path, mode 0755. */
  files: string[];
  /** The /init script. */
  init: string;
  /** More directories to create (after the standard ones). */
  dirs?: string[];
}

/** Collects cpio entries, listing each parent directory once, before what it holds. */
class TreeEntries {
  readonly entries: CpioEntry[] = [];
  private readonly dirs = new Set<string>();

  mkdirs(p: string): void {
    const parts = p.split('/').filter(Boolean);
    for (let i = 1; i <= parts.length; i++) {
      const d = parts.slice(0, i).join('/');
      if (!this.dirs.has(d)) {
        this.dirs.add(d);
        this.entries.push({ type: 'dir', path: d });
      }
    }
  }

  /** Host files at their own paths (contents of their real path, mode 0755). */
  hostFiles(files: string[]): void {
    for (const f of files) {
      this.mkdirs(path.dirname(f));
      this.entries.push({ type: 'file', path: f, data: fs.readFileSync(fs.realpathSync(f)), mode: 0o755 });
    }
  }

  /** Module files (relative to /lib/modules/VERSION) and lib/modules/load-order listing `loadOrder`. */
  modules(kernelVersion: string, modules: string[], loadOrder: string[]): void {
    for (const m of modules) {
      this.mkdirs(path.dirname(`lib/modules/${m}`));
      this.entries.push({ type: 'file', path: `lib/modules/${m}`, data: fs.readFileSync(`/lib/modules/${kernelVersion}/${m}`) });
    }
    this.mkdirs('lib/modules');
    this.entries.push({ type: 'file', path: 'lib/modules/load-order', data: Buffer.from(loadOrder.join('\n') + '\n') });
  }
}

/**
 * The cpio entries of a busybox initramfs: the standard directories, /dev/console and /dev/null,
 * /bin/busybox (and /bin/sh), the host files, the modules with lib/modules/load-order listing
 * them, and /init.
 */
export function initramfsEntries(spec: InitramfsSpec): CpioEntry[] {
  const t = new TreeEntries();
  for (const d of ['bin', 'sbin', 'usr/bin', 'usr/sbin', 'proc', 'sys', 'dev', 'tmp', 'mnt', 'etc', 'lib/modules', ...(spec.dirs ?? [])]) t.mkdirs(d);
  t.entries.push({ type: 'char', path: 'dev/console', major: 5, minor: 1 });
  t.entries.push({ type: 'char', path: 'dev/null', major: 1, minor: 3, mode: 0o666 });
  t.entries.push({ type: 'file', path: 'bin/busybox', data: fs.readFileSync(BUSYBOX), mode: 0o755 });
  t.entries.push({ type: 'symlink', path: 'bin/sh', target: 'busybox' });
  t.hostFiles(spec.files);
  t.modules(spec.kernelVersion, spec.modules, spec.modules);
  t.entries.push({ type: 'file', path: 'init', data: Buffer.from(spec.init), mode: 0o755 });
  return t.entries;
}

/** What an overlay adds to a built initramfs. */
export interface InitramfsOverlaySpec {
  kernelVersion: string;
  /** Module files (relative to /lib/modules/VERSION) the base image lacks. */
  modules: string[];
  /** Every module the guest loads, base and added, in load order: replaces lib/modules/load-order. */
  loadOrder: string[];
  /** Host files copied to the same path (contents of their real path, mode 0755). */
  files: string[];
}

/**
 * The cpio entries of an archive appended to a built initramfs (the kernel unpacks both, a later
 * file replacing an earlier one): more host files and modules, with a new load-order, so a test
 * can bring programs and modules of its own without rebuilding the shared image.
 */
export function initramfsOverlayEntries(spec: InitramfsOverlaySpec): CpioEntry[] {
  const t = new TreeEntries();
  t.hostFiles(spec.files);
  t.modules(spec.kernelVersion, spec.modules, spec.loadOrder);
  return t.entries;
}

/** Writes `data` to `file` through a temporary name in the same directory, so readers never see half a file. */
export function writeFileAtomic(file: string, data: Uint8Array): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, data);
  fs.renameSync(tmp, file);
}
