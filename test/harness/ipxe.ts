// Boots stock iPXE (Debian's ipxe.lkrn) under QEMU with an iPXE script, on user-mode networking, and times what the console prints.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** Debian's iPXE as a Linux kernel image: QEMU's -kernel boots it and its -initrd is run as the script. */
export const IPXE_LKRN = '/usr/lib/ipxe/ipxe.lkrn';

/** From inside a QEMU user-mode network, the host's loopback is this address (slirp's gateway). */
export const USER_NET_HOST = '10.0.2.2';

export interface IpxeBootOptions {
  /** The iPXE script (`#!ipxe` ...), given to ipxe.lkrn as its initrd. */
  script: string;
  /** The NIC QEMU gives the guest; iPXE and the guest kernel both drive it (default e1000). */
  nic?: 'e1000' | 'virtio-net-pci';
  memoryMiB?: number;
  /** Kill QEMU and reject after this long (default 300 s: TCG, and every boot sector read over iSCSI). */
  timeoutMs?: number;
  extraArgs?: string[];
  /** Each console line as it arrives. */
  log?: (line: string) => void;
  /** Console lines that mean the boot has failed and will not finish: QEMU is killed at once (default BOOT_FAILURES). */
  failOn?: RegExp[];
}

/**
 * Lines after which nothing more will happen but a shell or a prompt waiting for a keyboard: the
 * failures the iPXE script (bootimg/ipxe.ts) names, the BIOS and SYSLINUX giving up. Firmware text
 * reaches the serial port through SeaBIOS's 80-column screen, so a long line arrives cut in two:
 * match its start.
 */
export const BOOT_FAILURES: RegExp[] = [
  /twindisk: (sanboot |dhcp failed)/,
  /No bootable device|Boot failed: /,
  /Could not find kernel image|Invalid or corrupt kernel image|Boot error/,
];

/** A console line and when it arrived, in ms since QEMU started. */
export interface ConsoleLine {
  ms: number;
  text: string;
}

export interface IpxeBootResult {
  /** The guest script's exit code (TWINDISK-EXIT N). */
  exitCode: number;
  output: string;
  lines: ConsoleLine[];
  durationMs: number;
}

/** The steps of the diskless chain, each named by the first console line that shows it. */
export const BOOT_MILESTONES: { name: string; re: RegExp }[] = [
  { name: 'ipxe', re: /iPXE \d[^ ]* -- Open Source Network Boot Firmware/ },
  { name: 'dhcp', re: /Configuring \(net0 [^)]*\)\.* ok/ },
  { name: 'sanboot', re: /Registered SAN device|Booting from SAN device/ },
  { name: 'syslinux', re: /SYSLINUX \d/ },
  { name: 'syslinux-cfg', re: /TWINDISK-SYSLINUX/ },
  { name: 'init', re: /TWINDISK-INIT/ },
  { name: 'ibft', re: /TWINDISK-IBFT/ },
  { name: 'net', re: /TWINDISK-NET/ },
  { name: 'login', re: /TWINDISK-LOGIN/ },
  { name: 'disk', re: /TWINDISK-DISK/ },
  { name: 'mark', re: /TWINDISK-MARK-(OK|FAIL)/ },
  { name: 'exit', re: /TWINDISK-EXIT/ },
];

/**
 * When each milestone's line arrived (ms since QEMU started); milestones not reached are left out.
 * `kernel`, when the init printed its uptime, is when the kernel started (the init's line less the
 * kernel's uptime): what lies between `syslinux` and it is SYSLINUX reading the kernel and initramfs
 * over INT 13h. Pure.
 */
export function milestones(lines: ConsoleLine[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const m of BOOT_MILESTONES) {
    const l = lines.find((x) => m.re.test(x.text));
    if (l) out[m.name] = l.ms;
    const up = m.name === 'init' && l ? /uptime=([0-9.]+)/.exec(l.text) : null;
    if (up) out.kernel = Math.max(0, l!.ms - Math.round(Number(up[1]) * 1000));
  }
  return out;
}

/** QEMU's arguments (pure). The NIC's own option ROM is left out (romfile=) so ipxe.lkrn, not the ROM, boots. */
export function ipxeQemuCommandLine(o: IpxeBootOptions & { scriptFile: string }): string[] {
  return [
    // -nographic: SeaBIOS mirrors the BIOS text console (iPXE's and SYSLINUX's output) to the serial port.
    '-accel', 'tcg', '-nographic', '-no-user-config', '-no-reboot',
    '-m', `${o.memoryMiB ?? 512}M`,
    '-kernel', IPXE_LKRN, '-initrd', o.scriptFile,
    '-netdev', 'user,id=n0', '-device', `${o.nic ?? 'e1000'},netdev=n0,romfile=`,
    ...(o.extraArgs ?? []),
  ];
}

/** A QEMU machine running iPXE and whatever it boots. */
export class IpxeGuest {
  output = '';
  readonly lines: ConsoleLine[] = [];
  /** The console line that ended the boot as failed (see IpxeBootOptions.failOn). */
  failure?: string;
  private readonly exited: Promise<IpxeBootResult>;
  private readonly t0 = Date.now();

  private constructor(readonly child: ChildProcess, private readonly dir: string, o: IpxeBootOptions) {
    let partial = '';
    const onData = (d: Buffer) => {
      // Terminal escapes (iPXE's colours, SeaBIOS's screen clears) would only get in the patterns' way.
      const s = d.toString('latin1').replace(/\r/g, '').replace(/\x1b\[[0-9;?]*[A-Za-z]|\x1bc/g, '');
      this.output += s;
      partial += s;
      const parts = partial.split('\n');
      partial = parts.pop()!;
      for (const text of parts) {
        this.lines.push({ ms: Date.now() - this.t0, text });
        o.log?.(text);
        if (!this.failure && (o.failOn ?? BOOT_FAILURES).some((re) => re.test(text))) {
          this.failure = text;
          child.kill('SIGKILL');
        }
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    const timeout = o.timeoutMs ?? 300_000;
    this.exited = new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`the iPXE guest did not finish within ${timeout} ms; console so far:\n${this.output}`));
      }, timeout);
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        if (partial) this.lines.push({ ms: Date.now() - this.t0, text: partial });
        fs.rmSync(this.dir, { recursive: true, force: true });
        const m = /TWINDISK-EXIT (\d+)/.exec(this.output);
        if (this.failure) {
          reject(new Error(`the boot failed ("${this.failure}"); console:\n${this.output}`));
          return;
        }
        if (!m) {
          reject(new Error(`QEMU exited (${code ?? signal}) before the guest script finished; console:\n${this.output}`));
          return;
        }
        resolve({ exitCode: Number(m[1]), output: this.output, lines: this.lines, durationMs: Date.now() - this.t0 });
      });
    });
    this.exited.catch(() => undefined);
  }

  /** Starts QEMU with ipxe.lkrn and the script. */
  static launch(o: IpxeBootOptions): IpxeGuest {
    if (spawnSync('qemu-system-x86_64', ['--version']).status !== 0) {
      throw new Error('qemu-system-x86_64 is not installed: apt-get install qemu-system-x86');
    }
    if (!fs.existsSync(IPXE_LKRN)) throw new Error(`${IPXE_LKRN} is missing: apt-get install ipxe`);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'twindisk-ipxe-'));
    const scriptFile = path.join(dir, 'boot.ipxe');
    fs.writeFileSync(scriptFile, o.script);
    const child = spawn('qemu-system-x86_64', ipxeQemuCommandLine({ ...o, scriptFile }), { stdio: ['ignore', 'pipe', 'pipe'] });
    return new IpxeGuest(child, dir, o);
  }

  /** Resolves when the console output matches `re`. */
  async waitFor(re: RegExp, timeoutMs = 120_000): Promise<RegExpMatchArray> {
    const t0 = Date.now();
    for (;;) {
      const m = re.exec(this.output);
      if (m) return m;
      if (this.child.exitCode !== null || this.child.signalCode !== null) throw new Error(`the iPXE guest exited before printing ${re}:\n${this.output}`);
      if (Date.now() - t0 > timeoutMs) throw new Error(`the iPXE guest did not print ${re} within ${timeoutMs} ms:\n${this.output}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Waits for the guest's script to finish and QEMU to exit. */
  wait(): Promise<IpxeBootResult> {
    return this.exited;
  }

  /** Kills QEMU. */
  async kill(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.kill('SIGKILL');
    await new Promise((r) => this.child.once('exit', r));
  }
}

/** Boots iPXE with `script` and returns the guest script's exit code, the console and its timing. */
export async function bootIpxe(o: IpxeBootOptions): Promise<IpxeBootResult> {
  const g = IpxeGuest.launch(o);
  try {
    return await g.wait();
  } finally {
    await g.kill();
  }
}
