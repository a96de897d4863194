// Boots the test guest under QEMU with vhost-user-blk disks and collects what its script prints.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { writeCpio } from '../../bootimg/cpio.js';
import { GUEST_MODULES, buildGuestImage, defaultKernelVersion, scriptArchive } from '../../bootimg/guest.js';
import { initramfsOverlayEntries, missingModules, resolveModules, withLibraries } from '../../bootimg/initramfs.js';
import { QmpClient } from '../../qemu-plugin/qmp.js';

export interface VhostUserDisk {
  socket: string;
  numQueues?: number;
  /** QEMU's chardev reconnect interval in seconds (0: no reconnect). */
  reconnect?: number;
}

export interface GuestOptions {
  /** sh script the guest runs as /test.sh; its output goes to the serial console. */
  script: string;
  /** Each becomes -chardev socket + -device vhost-user-blk-pci: /dev/vda, /dev/vdb... in order. */
  disks?: VhostUserDisk[];
  /**
   * Raw image files attached as disks of one virtio-scsi controller, for tests that need more disks
   * than PCI slots: file i is SCSI target i, so the guest finds it as the sdX whose
   * /sys/block/sdX/device links to `0:0:i:0` (sd names are given in probe order, which may differ).
   * The guest's init does not wait for them: the script does.
   */
  scsiFiles?: string[];
  /** More kernel modules (with their dependencies) the guest loads after the standard ones. */
  modules?: string[];
  /** More host programs copied into the guest at their own paths, with their shared libraries. */
  programs?: string[];
  memoryMiB?: number;
  /** Memory hot-plug: DIMM slots and the most memory with DIMMs (`-m SIZE,slots=N,maxmem=M`). */
  memorySlots?: number;
  maxMemoryMiB?: number;
  cpus?: number;
  /** Kill QEMU and reject after this long (default 120 s). */
  timeoutMs?: number;
  extraArgs?: string[];
  /** Let a guest reboot stay inside QEMU (default false: a reboot ends QEMU, like poweroff). */
  allowReboot?: boolean;
  /** Open a QMP socket; `Guest.qmp` is then a connected client. */
  qmp?: boolean;
  log?: (line: string) => void;
}

export interface GuestResult {
  exitCode: number;
  output: string;
  durationMs: number;
}

/** QEMU's arguments for a guest (pure). */
export function qemuCommandLine(o: GuestOptions & { kernel: string; initrd: string; qmpSocket?: string }): string[] {
  const mem = o.memoryMiB ?? 256;
  const accel = process.env.TWINDISK_ACCEL === 'kvm' ? 'kvm' : 'tcg';
  const args = [
    '-accel', accel, '-nodefaults', '-no-user-config', '-display', 'none', ...(o.allowReboot ? [] : ['-no-reboot']), '-serial', 'stdio',
    '-m', `${mem}M${o.memorySlots ? `,slots=${o.memorySlots},maxmem=${o.maxMemoryMiB ?? mem * 4}M` : ''}`, '-smp', String(o.cpus ?? 1),
    '-object', `memory-backend-memfd,id=mem,size=${mem}M,share=on`, '-machine', 'q35,memory-backend=mem',
    '-kernel', o.kernel, '-initrd', o.initrd,
    '-append', `console=ttyS0 quiet panic=-1 twindisk.disks=${o.disks?.length ?? 0}`,
  ];
  (o.disks ?? []).forEach((d, i) => {
    args.push('-chardev', `socket,id=vu${i},path=${d.socket}${d.reconnect ? `,reconnect=${d.reconnect}` : ''}`);
    args.push('-device', `vhost-user-blk-pci,chardev=vu${i},num-queues=${d.numQueues ?? 1}`);
  });
  if (o.scsiFiles?.length) {
    args.push('-device', 'virtio-scsi-pci,id=scsi0');
    o.scsiFiles.forEach((f, i) => {
      args.push('-drive', `file=${f},format=raw,if=none,id=sd${i},cache=unsafe`);
      args.push('-device', `scsi-hd,bus=scsi0.0,channel=0,scsi-id=${i},lun=0,drive=sd${i}`);
    });
  }
  if (o.qmpSocket) args.push('-qmp', `unix:${o.qmpSocket},server=on,wait=off`);
  return [...args, ...(o.extraArgs ?? [])];
}

/**
 * The archive with a guest's extra modules and programs (empty when it asks for none), appended to
 * the shared image: its load-order lists the standard modules and then the extra ones.
 */
function overlayArchive(o: GuestOptions): Buffer {
  const extra = [...(o.modules ?? []), ...(o.scsiFiles?.length ? ['virtio_scsi'] : [])];
  const programs = o.programs ?? [];
  if (extra.length === 0 && programs.length === 0) return Buffer.alloc(0);
  const version = defaultKernelVersion();
  const missing = missingModules(version, extra);
  if (missing.length) throw new Error(`kernel ${version} has no module ${missing.join(', ')}: run scripts/setup.sh (it installs linux-image-amd64)`);
  for (const p of programs) if (!fs.existsSync(p)) throw new Error(`${p} is not installed: run scripts/setup.sh`);
  const base = new Set(resolveModules(version, GUEST_MODULES));
  const loadOrder = resolveModules(version, [...GUEST_MODULES, ...extra]);
  const cpio = writeCpio(initramfsOverlayEntries({
    kernelVersion: version, modules: loadOrder.filter((m) => !base.has(m)), loadOrder, files: [...new Set(programs.flatMap(withLibraries))],
  }));
  return Buffer.concat([cpio, Buffer.alloc((4 - (cpio.length % 4)) % 4)]);
}

/** A running guest. */
export class Guest {
  output = '';
  qmp?: QmpClient;
  private exited: Promise<GuestResult>;
  private readonly t0 = Date.now();

  private constructor(readonly child: ChildProcess, private readonly initrd: string, o: GuestOptions) {
    let line = '';
    child.stdout!.on('data', (d: Buffer) => {
      const s = d.toString().replace(/\r/g, '');
      this.output += s;
      if (o.log) {
        line += s;
        const lines = line.split('\n');
        line = lines.pop()!;
        lines.forEach(o.log);
      }
    });
    child.stderr!.on('data', (d: Buffer) => (this.output += d.toString()));
    const timeout = o.timeoutMs ?? 120_000;
    this.exited = new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`guest did not finish within ${timeout} ms; console so far:\n${this.output}`));
      }, timeout);
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        this.qmp?.close();
        fs.rmSync(path.dirname(this.initrd), { recursive: true, force: true });
        const m = /TWINDISK-EXIT (\d+)/.exec(this.output);
        if (!m) {
          reject(new Error(`QEMU exited (${code ?? signal}) before the guest script finished; console:\n${this.output}`));
          return;
        }
        resolve({ exitCode: Number(m[1]), output: this.output, durationMs: Date.now() - this.t0 });
      });
    });
    this.exited.catch(() => undefined);
  }

  /** Builds the guest if needed and starts QEMU. */
  static async launch(o: GuestOptions): Promise<Guest> {
    if (spawnSync('qemu-system-x86_64', ['--version']).status !== 0) {
      throw new Error('qemu-system-x86_64 is not installed: run `npm test` as root (it installs qemu-system-x86) or apt-get install qemu-system-x86');
    }
    const img = await buildGuestImage();
    const overlay = overlayArchive(o);
    const initrd = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'twindisk-guest-')), 'initrd');
    // The kernel finds an uncompressed archive after a compressed one only at a 4-byte boundary.
    const base = fs.readFileSync(img.initrd);
    fs.writeFileSync(initrd, Buffer.concat([base, Buffer.alloc((4 - (base.length % 4)) % 4), overlay, scriptArchive(o.script)]));
    const qmpSocket = o.qmp ? path.join(path.dirname(initrd), 'qmp.sock') : undefined;
    const child = spawn('qemu-system-x86_64', qemuCommandLine({ ...o, kernel: img.kernel, initrd, ...(qmpSocket ? { qmpSocket } : {}) }), { stdio: ['ignore', 'pipe', 'pipe'] });
    const g = new Guest(child, initrd, o);
    if (qmpSocket) {
      try {
        g.qmp = await QmpClient.connect(qmpSocket, 20_000);
      } catch (e) {
        await g.kill();
        throw new Error(`QEMU's QMP socket did not answer: ${(e as Error).message}\n${g.output}`);
      }
    }
    return g;
  }

  /** Resolves when the console output matches `re`. */
  async waitFor(re: RegExp, timeoutMs = 60_000): Promise<RegExpMatchArray> {
    const t0 = Date.now();
    for (;;) {
      const m = re.exec(this.output);
      if (m) return m;
      if (this.child.exitCode !== null || this.child.signalCode !== null) throw new Error(`guest exited before printing ${re}:\n${this.output}`);
      if (Date.now() - t0 > timeoutMs) throw new Error(`guest did not print ${re} within ${timeoutMs} ms:\n${this.output}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Waits for the script to finish and QEMU to exit. */
  wait(): Promise<GuestResult> {
    return this.exited;
  }

  /** Kills QEMU. */
  async kill(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.kill('SIGKILL');
    await new Promise((r) => this.child.once('exit', r));
  }
}

/** Boots a guest, runs its script and returns the script's exit code and the console output. */
export async function runGuest(o: GuestOptions): Promise<GuestResult> {
  return (await Guest.launch(o)).wait();
}
