// Builds the diskless test disk: an MBR, a FAT partition with SYSLINUX, the Debian kernel and an initramfs that logs in to its own iSCSI disk.
//
// The chain this disk proves, from power-on to a write on the target:
//
//   1. iPXE (ipxe.lkrn, or a NIC's option ROM) gets an address by DHCP and runs `sanboot
//      iscsi:HOST::PORT:LUN:IQN` (bootimg/ipxe.ts). It logs in to the target, hooks the BIOS disk
//      service (INT 13h) so the LUN is drive 0x80, writes an iBFT (iSCSI Boot Firmware Table: its
//      initiator name, the target's address and name, the NIC's MAC and address) into base memory,
//      and reads sector 0 to 0x7c00.
//   2. Sector 0 is SYSLINUX's mbr.bin: it finds the active partition and loads that partition's
//      first sector, SYSLINUX's FAT boot sector, which loads ldlinux.sys, all through INT 13h, so
//      every sector comes over iSCSI.
//   3. SYSLINUX reads syslinux.cfg, then /vmlinuz and /initrd.img from the FAT file system (still
//      INT 13h, still iSCSI), and boots the kernel with the APPEND line as its command line.
//   4. The kernel finds the iBFT (CONFIG_ISCSI_IBFT_FIND scans 512 KiB..1 MiB for it); the
//      initramfs's /init loads iscsi_ibft, which shows it as /sys/firmware/ibft/, prints it, and
//      configures the NIC whose MAC it names with the address iPXE had.
//   5. `iscsistart -b` logs in to the target the iBFT names, with the initiator name it names: the
//      kernel's iSCSI initiator now serves the same LUN as /dev/sdX, the disk the machine booted from.
//   6. /test.sh runs against that disk: by default it writes a marker at the sector
//      `twindisk.mark=SECTOR:HEX` names and reads it back with O_DIRECT (so the bytes come from the
//      target, not the page cache), prints TWINDISK-MARK-OK, and the init powers off.
//
// Layout (512-byte sectors): sector 0 the MBR; sectors PARTITION_START.. the FAT16 partition
// (PARTITION_SECTORS long, marked active, type 0x0e); from FREE_AREA_START to the end nothing at all,
// so marker writes there never touch the file system the next boot reads.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { writeCpio, type CpioEntry } from './cpio.js';
import { defaultKernelVersion, guestCacheDir } from './guest.js';
import { BUSYBOX, initramfsEntries, inputKey, resolveModules, withLibraries } from './initramfs.js';

/** Bytes per sector: the BIOS's, the MBR's and the iSCSI LUN's. */
export const SECTOR_BYTES = 512;
/** The whole disk: 64 MiB. */
export const DISK_SECTORS = (64 << 20) / SECTOR_BYTES;
/** The FAT partition starts at 1 MiB, where partitioning tools align it. */
export const PARTITION_START = 2048;
/** The FAT partition is 40 MiB (FAT16: the kernel and initramfs take about 15 MiB of it). */
export const PARTITION_SECTORS = (40 << 20) / SECTOR_BYTES;
/** The first sector after the partition: from here to DISK_SECTORS, sectors the tests may write. */
export const FREE_AREA_START = PARTITION_START + PARTITION_SECTORS;
/** Where the default test writes its marker (about 48.8 MiB into the disk, in the free area). */
export const DEFAULT_MARK_SECTOR = 100_000;
/** The default marker: 32 bytes that no zeroed or FAT sector holds. */
export const DEFAULT_MARK = Buffer.from('twindisk iscsi boot-chain marker', 'ascii');

/** MBR partition type 0x0e: FAT16 addressed by LBA. */
const PART_TYPE_FAT16_LBA = 0x0e;
/** MBR partition status: bootable ("active"); mbr.bin boots the partition carrying it. */
const PART_ACTIVE = 0x80;

/** SYSLINUX's MBR boot code (440 bytes: it stops before the disk signature and the table). */
export const SYSLINUX_MBR = '/usr/lib/syslinux/mbr/mbr.bin';

/** Modules the boot disk's initramfs loads (dependencies added from modules.dep). */
export const BOOTDISK_MODULES = [
  'e1000', 'virtio_pci', 'virtio_net', 'crc32c_generic', 'scsi_transport_iscsi', 'libiscsi', 'libiscsi_tcp', 'iscsi_tcp', 'iscsi_ibft', 'sd_mod',
];

/** open-iscsi's boot-time initiator: logs in once with the iBFT's values, without iscsid. */
export const ISCSISTART = '/usr/sbin/iscsistart';

/**
 * The boot disk's /init: mount, load modules, read the iBFT, bring up its NIC, `iscsistart -b`, wait
 * for the disk, run /test.sh with DISK=/dev/sdX, report its exit code, power off. Console lines
 * starting TWINDISK- are what the tests wait for; each failure prints TWINDISK-FAIL and why.
 */
export const BOOTDISK_INIT = `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /tmp /mnt /run /var/lock /etc/iscsi
up() { cut -d' ' -f1 /proc/uptime; }
echo "TWINDISK-INIT uptime=$(up)"
finish() {
  echo "TWINDISK-EXIT $1"
  sync
  poweroff -f
}
fail() {
  echo "TWINDISK-FAIL $*"
  finish 1
}
while read -r m; do insmod "/lib/modules/$m" 2>/dev/null; done < /lib/modules/load-order
ibft=/sys/firmware/ibft
[ -d $ibft/target0 ] || fail "no iBFT under $ibft: the firmware left none (was this booted by iPXE sanboot?) or iscsi_ibft did not load"
rd() { cat "$ibft/$1" 2>/dev/null; }
mac=$(rd ethernet0/mac)
ip=$(rd ethernet0/ip-addr)
mask=$(rd ethernet0/subnet-mask)
gw=$(rd ethernet0/gateway)
echo "TWINDISK-IBFT initiator=$(rd initiator/initiator-name) target=$(rd target0/target-name) target-ip=$(rd target0/ip-addr) port=$(rd target0/port) lun=$(rd target0/lun) nic-mac=$mac nic-ip=$ip/$mask gateway=$gw"
ifc=
i=0
while [ -z "$ifc" ] && [ $i -lt 50 ]; do
  for n in /sys/class/net/*; do [ "$(cat $n/address)" = "$mac" ] && ifc=$(basename $n); done
  [ -n "$ifc" ] || { sleep 0.1; i=$((i+1)); }
done
[ -n "$ifc" ] || fail "no network interface has the iBFT's MAC $mac: $(cat /sys/class/net/*/address | tr '\\n' ' ')"
ip link set lo up
ifconfig $ifc $ip netmask $mask up || fail "ifconfig $ifc $ip netmask $mask failed"
[ -n "$gw" ] && [ "$gw" != 0.0.0.0 ] && route add default gw $gw
# Until the link is up, the login's first TCP SYN is lost and retried only a second later.
i=0
while [ "$(cat /sys/class/net/$ifc/carrier 2>/dev/null)" != 1 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
echo "TWINDISK-NET $ifc $ip/$mask gateway $gw carrier=$(cat /sys/class/net/$ifc/carrier 2>/dev/null) uptime=$(up)"
iscsistart -b || fail "iscsistart -b could not log in to the target the iBFT names"
echo "TWINDISK-LOGIN uptime=$(up)"
disk=
i=0
while [ -z "$disk" ] && [ $i -lt 300 ]; do
  disk=$(ls /sys/block | grep '^sd' | head -n 1)
  [ -n "$disk" ] || { sleep 0.1; i=$((i+1)); }
done
[ -n "$disk" ] || fail "logged in, but no /dev/sd* appeared within 30 s"
i=0
while [ ! -b /dev/$disk ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
export DISK=/dev/$disk
echo "TWINDISK-DISK $DISK sectors=$(cat /sys/block/$disk/size) vendor=$(cat /sys/block/$disk/device/vendor) model=$(cat /sys/block/$disk/device/model) uptime=$(up)"
echo "TWINDISK-READY"
/test.sh
finish $?
`;

/**
 * The default /test.sh: writes the `twindisk.mark=SECTOR:HEX` bytes (zero-padded to a sector) at
 * SECTOR of $DISK with O_DIRECT, reads the sector back the same way and compares.
 */
export const MARK_SCRIPT = `#!/bin/sh
mark=$(sed -n 's/.*twindisk\\.mark=\\([0-9]*:[0-9a-f]*\\).*/\\1/p' /proc/cmdline)
[ -n "$mark" ] || { echo "TWINDISK-MARK-FAIL no twindisk.mark=SECTOR:HEX on the kernel command line"; exit 1; }
sector=\${mark%%:*}
hex=\${mark#*:}
dd if=/dev/zero of=/tmp/mark bs=512 count=1 2>/dev/null
printf "$(echo $hex | sed 's/../\\\\x&/g')" | dd of=/tmp/mark conv=notrunc 2>/dev/null
dd if=/tmp/mark of=$DISK bs=512 seek=$sector count=1 oflag=direct conv=fsync 2>/dev/null || { echo "TWINDISK-MARK-FAIL writing sector $sector of $DISK failed"; exit 1; }
dd if=$DISK of=/tmp/back bs=512 skip=$sector count=1 iflag=direct 2>/dev/null || { echo "TWINDISK-MARK-FAIL reading sector $sector of $DISK failed"; exit 1; }
if cmp -s /tmp/mark /tmp/back; then
  echo "TWINDISK-MARK-OK sector=$sector bytes=$((\${#hex} / 2))"
else
  echo "TWINDISK-MARK-FAIL sector $sector read back differs from what was written:"
  hexdump -C /tmp/back | head -n 4
  exit 1
fi
`;

/** One MBR partition entry (LBA addressing; CHS written from it for BIOSes that look). */
export interface MbrPartition {
  start: number;
  sectors: number;
  type: number;
  active?: boolean;
}

/** CHS of an LBA in the 255-head, 63-sector geometry, as the 3 bytes an MBR entry holds; past cylinder 1023, the maximum. */
function chs(lba: number): [number, number, number] {
  const c = Math.floor(lba / (255 * 63));
  if (c > 1023) return [254, 0xff, 0xff];
  const h = Math.floor(lba / 63) % 255;
  const s = (lba % 63) + 1;
  return [h, s | ((c >> 2) & 0xc0), c & 0xff];
}

/** Sector 0 of a disk: `bootCode` (at most 440 bytes), a disk signature, up to four partitions, 0x55 0xAA. Pure. */
export function mbrSector(bootCode: Uint8Array, partitions: MbrPartition[], diskSignature = 0x7d15c0de): Buffer {
  if (bootCode.length > 440) throw new Error(`MBR boot code is ${bootCode.length} bytes; it must fit in 440`);
  if (partitions.length > 4) throw new Error(`an MBR holds 4 partitions, not ${partitions.length}`);
  const b = Buffer.alloc(SECTOR_BYTES);
  b.set(bootCode, 0);
  b.writeUInt32LE(diskSignature >>> 0, 440);
  partitions.forEach((p, i) => {
    if (p.start < 1 || p.sectors < 1 || p.start + p.sectors > 2 ** 32) throw new Error(`partition ${i + 1}: start ${p.start}, ${p.sectors} sectors does not fit an MBR`);
    const e = 446 + i * 16;
    b[e] = p.active ? PART_ACTIVE : 0;
    b.set(chs(p.start), e + 1);
    b[e + 4] = p.type;
    b.set(chs(p.start + p.sectors - 1), e + 5);
    b.writeUInt32LE(p.start, e + 8);
    b.writeUInt32LE(p.sectors, e + 12);
  });
  b[510] = 0x55;
  b[511] = 0xaa;
  return b;
}

/** The kernel command line argument that tells the default test where to write what. Throws when the marker would not fit the free area. */
export function markArgument(sector: number, mark: Uint8Array): string {
  if (!Number.isInteger(sector) || sector < FREE_AREA_START || sector >= DISK_SECTORS) {
    throw new Error(`mark sector ${sector} is outside the free area ${FREE_AREA_START}..${DISK_SECTORS - 1}: a marker must not touch the FAT partition the disk boots from`);
  }
  if (mark.length < 1 || mark.length > SECTOR_BYTES) throw new Error(`a marker is 1..${SECTOR_BYTES} bytes, not ${mark.length}`);
  return `twindisk.mark=${sector}:${Buffer.from(mark).toString('hex')}`;
}

/** SYSLINUX's configuration: boot /vmlinuz with /initrd.img at once (no menu, no prompt). */
export function syslinuxConfig(append: string): string {
  return [
    'DEFAULT twindisk',
    'PROMPT 0',
    'TIMEOUT 0',
    'SAY TWINDISK-SYSLINUX loading /vmlinuz and /initrd.img through INT 13h',
    'LABEL twindisk',
    '  KERNEL /vmlinuz',
    '  INITRD /initrd.img',
    `  APPEND ${append}`,
    '',
  ].join('\n');
}

export interface BootDiskOptions {
  /** Where the disk image is written (a fresh copy of the cached build; replaced if it exists). */
  out: string;
  /** Where the default test writes its marker (a sector in the free area; default DEFAULT_MARK_SECTOR). */
  markSector?: number;
  /** The marker's bytes (1..512; default DEFAULT_MARK). */
  mark?: Uint8Array;
  /** A /test.sh to run instead of the marker test (DISK names the iSCSI disk; its exit code is reported). */
  script?: string;
  /** More kernel arguments (default `quiet`). */
  kernelArgs?: string;
  kernelVersion?: string;
  /** Where built disks are kept (default build/guest/, beside the test guest's initramfs). */
  cacheDir?: string;
  log?: (line: string) => void;
}

export interface BootDisk {
  image: string;
  /** The cached build `image` was copied from (never written to: compare with it to see what a boot changed). */
  built: string;
  markSector: number;
  mark: Buffer;
  /** The kernel command line SYSLINUX passes. */
  append: string;
  /** True when the cached build was reused. */
  cached: boolean;
}

function need(file: string, pkg: string): void {
  if (!fs.existsSync(file)) throw new Error(`${file} is missing: apt-get install ${pkg}`);
}

function tool(cmd: string, pkg: string): string {
  for (const dir of ['/usr/sbin', '/usr/bin', '/sbin', '/bin']) if (fs.existsSync(path.join(dir, cmd))) return path.join(dir, cmd);
  throw new Error(`${cmd} is not installed: apt-get install ${pkg} (needed to build the iSCSI boot disk)`);
}

function run(cmd: string, args: string[]): void {
  try {
    execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, MTOOLS_SKIP_CHECK: '1' } });
  } catch (e) {
    const err = e as { stderr?: Buffer; stdout?: Buffer; message: string };
    throw new Error(`${cmd} ${args.join(' ')} failed: ${err.stderr?.toString().trim() || err.stdout?.toString().trim() || err.message}`);
  }
}

/**
 * Builds (or reuses) the boot disk and copies it to `o.out`. The build is cached as
 * build/guest/bootdisk-<hash>.img, the hash covering the kernel, every file copied in, the init and
 * test scripts and the kernel command line, so changing any of them rebuilds it.
 */
export async function buildBootDisk(o: BootDiskOptions): Promise<BootDisk> {
  const log = o.log ?? (() => {});
  const version = o.kernelVersion ?? defaultKernelVersion();
  const kernel = `/boot/vmlinuz-${version}`;
  need(kernel, 'linux-image-amd64');
  need(BUSYBOX, 'busybox-static');
  need(SYSLINUX_MBR, 'syslinux-common');
  need(ISCSISTART, 'open-iscsi');
  const mkfs = tool('mkfs.vfat', 'dosfstools');
  const syslinux = tool('syslinux', 'syslinux');
  const mcopy = tool('mcopy', 'mtools');
  const markSector = o.markSector ?? DEFAULT_MARK_SECTOR;
  const mark = Buffer.from(o.mark ?? DEFAULT_MARK);
  const append = ['console=ttyS0', 'panic=-1', o.kernelArgs ?? 'quiet', markArgument(markSector, mark)].join(' ');
  const script = o.script === undefined ? MARK_SCRIPT : o.script.startsWith('#!') ? o.script : `#!/bin/sh\n${o.script}`;
  const modules = resolveModules(version, BOOTDISK_MODULES);
  const files = withLibraries(ISCSISTART);
  const cfg = syslinuxConfig(append);
  const key = inputKey(['bootdisk-1', version, BOOTDISK_INIT, script, cfg, modules.join(',')], [kernel, BUSYBOX, SYSLINUX_MBR, syslinux, ...files]);
  const cacheDir = o.cacheDir ?? guestCacheDir();
  const cachedImage = path.join(cacheDir, `bootdisk-${key}.img`);
  const cached = fs.existsSync(cachedImage);
  if (!cached) {
    const t0 = Date.now();
    log(`building the iSCSI boot disk (kernel ${version}, ${modules.length} modules, iscsistart with ${files.length - 1} libraries)`);
    fs.mkdirSync(cacheDir, { recursive: true });
    const work = fs.mkdtempSync(path.join(cacheDir, 'bootdisk-build-'));
    try {
      const entries: CpioEntry[] = initramfsEntries({ kernelVersion: version, modules, files, init: BOOTDISK_INIT, dirs: ['run', 'var/lock', 'var/lib/iscsi', 'etc/iscsi'] });
      entries.push({ type: 'file', path: 'test.sh', data: Buffer.from(script), mode: 0o755 });
      const initrd = gzipSync(writeCpio(entries), { level: 6 });
      fs.writeFileSync(path.join(work, 'initrd.img'), initrd);
      fs.writeFileSync(path.join(work, 'syslinux.cfg'), cfg);
      log(`  initramfs ${(initrd.length / 2 ** 20).toFixed(1)} MiB; kernel ${(fs.statSync(kernel).size / 2 ** 20).toFixed(1)} MiB`);
      // The partition is built as a file of its own, then spliced in at PARTITION_START. Its boot
      // sector's hidden-sectors field says where it starts, for SYSLINUX's boot sector.
      const fat = path.join(work, 'fat.img');
      run(mkfs, ['-F', '16', '-h', String(PARTITION_START), '-n', 'TWINDISK', '-i', '7d15c0de', '-C', fat, String((PARTITION_SECTORS * SECTOR_BYTES) / 1024)]);
      run(syslinux, ['--install', fat]);
      log('  FAT16 partition made, SYSLINUX installed; copying the kernel and initramfs in');
      run(mcopy, ['-i', fat, path.join(work, 'syslinux.cfg'), '::syslinux.cfg']);
      run(mcopy, ['-i', fat, kernel, '::vmlinuz']);
      run(mcopy, ['-i', fat, path.join(work, 'initrd.img'), '::initrd.img']);
      const disk = path.join(work, 'disk.img');
      const fd = fs.openSync(disk, 'w');
      try {
        fs.ftruncateSync(fd, DISK_SECTORS * SECTOR_BYTES);
        const mbr = mbrSector(fs.readFileSync(SYSLINUX_MBR), [{ start: PARTITION_START, sectors: PARTITION_SECTORS, type: PART_TYPE_FAT16_LBA, active: true }]);
        fs.writeSync(fd, mbr, 0, mbr.length, 0);
        const part = fs.readFileSync(fat);
        if (part.length !== PARTITION_SECTORS * SECTOR_BYTES) throw new Error(`mkfs.vfat made ${part.length} bytes, not ${PARTITION_SECTORS * SECTOR_BYTES}`);
        fs.writeSync(fd, part, 0, part.length, PARTITION_START * SECTOR_BYTES);
        fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
      }
      fs.renameSync(disk, cachedImage);
      log(`wrote ${cachedImage} in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    } finally {
      fs.rmSync(work, { recursive: true, force: true });
    }
  }
  fs.mkdirSync(path.dirname(path.resolve(o.out)), { recursive: true });
  fs.rmSync(o.out, { force: true });
  fs.copyFileSync(cachedImage, o.out, fs.constants.COPYFILE_FICLONE);
  return { image: o.out, built: cachedImage, markSector, mark, append, cached };
}

/** Reads the sector a marker was written to from a disk image (for the host-side check). */
export function readSector(image: string, sector: number, dataOffset = 0): Buffer {
  return readRange(image, dataOffset + sector * SECTOR_BYTES, SECTOR_BYTES);
}

/** `length` bytes of `image` from `offset` (zeros past its end). */
export function readRange(image: string, offset: number, length: number): Buffer {
  const fd = fs.openSync(image, 'r');
  try {
    const b = Buffer.alloc(length);
    fs.readSync(fd, b, 0, length, offset);
    return b;
  } finally {
    fs.closeSync(fd);
  }
}
