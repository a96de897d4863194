// Builds the test guest: the Debian kernel plus a busybox initramfs with virtio, network and iSCSI modules.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { writeCpio } from './cpio.js';
import { BUSYBOX, initramfsEntries, inputKey, resolveModules, withLibraries, writeFileAtomic } from './initramfs.js';

/** Repository root (this file runs from dist/bootimg/). */
export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Where built guest images are cached (build/guest/), each under a hash of its inputs. */
export function guestCacheDir(): string {
  return path.join(repoRoot, 'build', 'guest');
}

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
  const busybox = BUSYBOX;
  if (!fs.existsSync(busybox)) throw new Error('/bin/busybox is missing: apt-get install busybox-static');
  for (const b of EXTRA_BINARIES) if (!fs.existsSync(b)) throw new Error(`${b} is missing: apt-get install util-linux`);
  const modules = resolveModules(version, GUEST_MODULES);
  const files = [busybox, ...EXTRA_BINARIES.flatMap(withLibraries)];
  const key = inputKey([version, INIT_SCRIPT, modules.join(',')], files);
  const outDir = o.outDir ?? guestCacheDir();
  const initrd = path.join(outDir, `initrd-${key}.cpio.gz`);
  if (fs.existsSync(initrd)) return { kernel, initrd };
  log(`building the test guest's initramfs (kernel ${version}, ${modules.length} modules)`);
  const entries = initramfsEntries({ kernelVersion: version, modules, files: files.slice(1), init: INIT_SCRIPT });
  const archive = gzipSync(writeCpio(entries), { level: 6 });
  writeFileAtomic(initrd, archive);
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
