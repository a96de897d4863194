// Builds the test guest: the Debian kernel plus a busybox initramfs with virtio, network and iSCSI modules.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { writeCpio, type CpioEntry } from './cpio.js';

/** Repository root (this file runs from dist/bootimg/). */
export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Modules the guest loads, with their dependencies resolved from modules.dep. */
export const GUEST_MODULES = [
  'virtio_pci', 'virtio_blk', 'virtio_net', 'e1000', 'qemu_fw_cfg', 'sd_mod', 'iscsi_tcp', 'iscsi_ibft', 'crc32c_generic', 'ext4',
];

/**
 * util-linux programs copied with their libraries: busybox's blkdiscard lacks -z, its fallocate lacks
 * --punch-hole. Debian's busybox shell prefers its own applets, so scripts call these by full path.
 */
export const EXTRA_BINARIES = ['/usr/sbin/blkdiscard', '/usr/bin/fallocate'];

/** The guest's /init: mount, load modules, run /test.sh, report its exit code, power off. */
export const INIT_SCRIPT = `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /tmp /mnt
while read -r m; do insmod "/lib/modules/$m" 2>/dev/null; done < /lib/modules/load-order
# Wait (up to 5 s) for the virtio disks the harness attached.
want=$(cat /proc/cmdline | sed -n 's/.*twindisk.disks=\\([0-9]*\\).*/\\1/p')
i=0
while [ -n "$want" ] && [ "$(ls /sys/block | grep -c '^vd')" -lt "$want" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
echo "TWINDISK-READY"
if [ -x /test.sh ]; then
  /test.sh
  echo "TWINDISK-EXIT $?"
  sync
  poweroff -f
fi
echo "no /test.sh: a shell on the console (poweroff -f to leave)"
exec setsid cttyhack sh
`;

/** Newest installed Debian kernel version (from /boot/vmlinuz-*). */
export function defaultKernelVersion(): string {
  const v = fs.readdirSync('/boot').filter((f) => f.startsWith('vmlinuz-')).map((f) => f.slice(8)).sort().pop();
  if (!v) throw new Error('no kernel in /boot: install one with `apt-get install linux-image-amd64` (npm test does it as root)');
  return v;
}

function resolveModules(version: string, names: string[]): string[] {
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

/** An ELF and the shared libraries ldd lists for it (with the dynamic loader). */
function withLibraries(bin: string): string[] {
  const out = execFileSync('ldd', [bin], { encoding: 'utf8' });
  const libs = [...out.matchAll(/(\/\S+\.so[.\d]*)/g)].map((m) => m[1]!);
  return [bin, ...new Set(libs)];
}

export interface BuildOptions {
  outDir?: string;
  kernelVersion?: string;
  log?: (line: string) => void;
}

/**
 * Builds (or reuses) build/guest/initrd-<hash>.cpio.gz. Rebuilt only when an input changes: the
 * kernel version, busybox, the module list, the init script or the extra programs.
 */
export async function buildGuestImage(o: BuildOptions = {}): Promise<{ kernel: string; initrd: string }> {
  const log = o.log ?? (() => {});
  const version = o.kernelVersion ?? defaultKernelVersion();
  const kernel = `/boot/vmlinuz-${version}`;
  if (!fs.existsSync(kernel)) throw new Error(`${kernel} is missing: apt-get install linux-image-amd64`);
  const busybox = '/bin/busybox';
  if (!fs.existsSync(busybox)) throw new Error('/bin/busybox is missing: apt-get install busybox-static');
  for (const b of EXTRA_BINARIES) if (!fs.existsSync(b)) throw new Error(`${b} is missing: apt-get install util-linux`);
  const modules = resolveModules(version, GUEST_MODULES);
  const files = [busybox, ...EXTRA_BINARIES.flatMap(withLibraries)];
  const h = createHash('sha256').update(version).update(INIT_SCRIPT).update(modules.join(','));
  for (const f of files) {
    const st = fs.statSync(f);
    h.update(`${f}:${st.size}:${st.mtimeMs}`);
  }
  const key = h.digest('hex').slice(0, 16);
  const outDir = o.outDir ?? path.join(repoRoot, 'build', 'guest');
  const initrd = path.join(outDir, `initrd-${key}.cpio.gz`);
  if (fs.existsSync(initrd)) return { kernel, initrd };
  log(`building the test guest's initramfs (kernel ${version}, ${modules.length} modules)`);
  const entries: CpioEntry[] = [];
  const dirs = new Set<string>();
  const mkdirs = (p: string) => {
    const parts = p.split('/').filter(Boolean);
    for (let i = 1; i <= parts.length; i++) {
      const d = parts.slice(0, i).join('/');
      if (!dirs.has(d)) {
        dirs.add(d);
        entries.push({ type: 'dir', path: d });
      }
    }
  };
  for (const d of ['bin', 'sbin', 'usr/bin', 'usr/sbin', 'proc', 'sys', 'dev', 'tmp', 'mnt', 'etc', 'lib/modules']) mkdirs(d);
  entries.push({ type: 'char', path: 'dev/console', major: 5, minor: 1 });
  entries.push({ type: 'char', path: 'dev/null', major: 1, minor: 3, mode: 0o666 });
  entries.push({ type: 'file', path: 'bin/busybox', data: fs.readFileSync(busybox), mode: 0o755 });
  entries.push({ type: 'symlink', path: 'bin/sh', target: 'busybox' });
  for (const f of files.slice(1)) {
    mkdirs(path.dirname(f));
    const real = fs.realpathSync(f);
    entries.push({ type: 'file', path: f, data: fs.readFileSync(real), mode: 0o755 });
  }
  for (const m of modules) {
    mkdirs(path.dirname(`lib/modules/${m}`));
    entries.push({ type: 'file', path: `lib/modules/${m}`, data: fs.readFileSync(`/lib/modules/${version}/${m}`) });
  }
  entries.push({ type: 'file', path: 'lib/modules/load-order', data: Buffer.from(modules.join('\n') + '\n') });
  entries.push({ type: 'file', path: 'init', data: Buffer.from(INIT_SCRIPT), mode: 0o755 });
  const archive = gzipSync(writeCpio(entries), { level: 6 });
  fs.mkdirSync(outDir, { recursive: true });
  const tmp = `${initrd}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, archive);
  fs.renameSync(tmp, initrd);
  log(`wrote ${initrd} (${(archive.length / 2 ** 20).toFixed(1)} MiB)`);
  return { kernel, initrd };
}

/** A second cpio archive holding /test.sh (and any extra files), appended to the initramfs per run. */
export function scriptArchive(script: string, extra: { path: string; data: Uint8Array; mode?: number }[] = []): Buffer {
  return writeCpio([
    { type: 'file', path: 'test.sh', data: Buffer.from(script.startsWith('#!') ? script : `#!/bin/sh\n${script}`), mode: 0o755 },
    ...extra.map((e) => ({ type: 'file' as const, ...e })),
  ]);
}
