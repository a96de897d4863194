// `twindisk qemu ...`: QEMU without libvirt. Print the options a guest needs (args), start QEMU with
// them (run), hot-plug and unplug the volume in a running QEMU over QMP (attach, detach), live-migrate
// (migrate), and print the libvirt domain XML of the disk (libvirt-xml).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { InvalidArgumentError, Option, type Command } from 'commander';
import { parseHostPort, type HostPort } from '../engine/replication/config/address.js';
import { loadResource, nodeByName } from '../engine/replication/config.js';
import { MAX_QUEUES } from '../engine/replication/limits.js';
import { QmpClient, QmpCommandError } from '../qemu-plugin/qmp.js';
import { countArg, secondsArg, sizeArg } from './args.js';
import { CommandError, UsageError } from './errors.js';
import { kvmProblem } from './kvm.js';
import { ProgressBars, type ProgressRow } from './progress.js';
import {
  DEFAULT_MEMORY, STANDALONE_DISK_ID, chardevAddArgs, chardevIdFor, defaultQmpSocket, deviceAddArgs, diskIdFor, hotplugPortArgs,
  libvirtDisk, libvirtDomain, libvirtMemoryBacking, qemuDiskArgs, qemuIdProblem, qmpArgs, sharedMemoryArgs, shellLine,
  vhostUserBlkArgs, type VhostDisk,
} from './qemu-args.js';
import { humanBytes } from './resource-commands.js';

/** The message `qemu migrate --config` refuses with when the resource allows one Primary only. */
export const NEEDS_TWO_PRIMARIES = 'migration between nodes needs a second Primary while both QEMUs run: set "allow-two-primaries": true';

/** Where QEMU's binary is looked up unless --qemu says otherwise. */
const QEMU_BINARY = 'qemu-system-x86_64';
/** How long a QMP command (or the greeting) may take before the command gives up. */
const QMP_TIMEOUT_MS = 30_000;

// ---------------------------------------------------------------------------------------------------------
// Options shared by the commands

interface VolumeOptions { config?: string; node?: string; socket?: string; queues?: number; id?: string }

/** The disk: the node's volume (--config, --node), or a standalone `serve` socket (--socket, --queues). */
interface Volume {
  disk: VhostDisk;
  /** For messages: `r0/alpha` or the socket path. */
  what: string;
  /** The command that starts the back-end, for "nothing listens" messages. */
  startHint: string;
}

function volumeOptions(c: Command): Command {
  return c
    .option('--config <file>', 'the resource file (with --node: that node\'s volume)')
    .option('--node <name>', 'the node whose vhost-user socket QEMU connects to')
    .option('--socket <path>', 'instead of --config/--node: the socket of a `twindisk serve`')
    .addOption(new Option('--queues <n>', `with --socket: virtqueues (1..${MAX_QUEUES}; default 1)`).argParser(countArg(1, MAX_QUEUES)))
    .addOption(new Option('--id <id>', `QEMU's device id of the disk (default twindisk-RESOURCE, or ${STANDALONE_DISK_ID} with --socket)`).argParser(idArg));
}

function idArg(v: string): string {
  const problem = qemuIdProblem(v);
  if (problem) throw new InvalidArgumentError(problem);
  return v;
}

/** A guest RAM size: a size QEMU can take (a whole number of MiB). */
function memoryArg(v: string): number {
  const bytes = sizeArg(v);
  if (bytes < 1 << 20 || bytes % (1 << 20) !== 0) throw new InvalidArgumentError('expected a whole number of MiB, e.g. 512M or 2G.');
  return bytes;
}

function volume(o: VolumeOptions, cmd: Command): Volume {
  const name = `qemu ${cmd.name()}`;
  if (o.socket !== undefined) {
    if (o.config !== undefined || o.node !== undefined) throw new UsageError(`${name}: give either --socket PATH or --config FILE --node NAME, not both`);
    return {
      disk: { socket: path.resolve(o.socket), queues: o.queues ?? 1, id: o.id ?? STANDALONE_DISK_ID },
      what: o.socket, startHint: `twindisk serve --image FILE --socket ${o.socket}`,
    };
  }
  if (!o.config) throw new UsageError(`${name} needs --config FILE --node NAME (a node's volume) or --socket PATH (a \`twindisk serve\`)`);
  if (!o.node) throw new UsageError(`${name} needs --node NAME (the node in ${o.config} whose socket QEMU connects to)`);
  if (o.queues !== undefined) throw new UsageError(`${name}: --queues goes with --socket; with --config the node's "queues" is used`);
  const cfg = loadResource(o.config);
  const me = nodeByName(cfg, o.node);
  if (!me.socket) {
    throw new UsageError(`${path.basename(cfg.file)}: node ${me.name} has no "socket", so QEMU cannot reach the volume there: `
      + `add "socket": "/run/twindisk/${cfg.resource}.sock" to nodes.${me.name}`);
  }
  const id = o.id ?? diskIdFor(cfg.resource);
  const problem = qemuIdProblem(id);
  if (problem) throw new UsageError(`${name}: resource ${cfg.resource} gives the device id ${problem}; pass --id`);
  return {
    disk: { socket: me.socket, queues: me.queues, id },
    what: `${cfg.resource}/${me.name}`, startHint: `twindisk up --config ${o.config} --node ${me.name}`,
  };
}

/** Whether some process listens on the Unix socket `file` (per /proc/net/unix; null when that cannot be read). */
export function socketListening(file: string, procNetUnix = '/proc/net/unix'): boolean | null {
  let table: string;
  try {
    table = fs.readFileSync(procNetUnix, 'utf8');
  } catch {
    return null;
  }
  const abs = path.resolve(file);
  // "Num RefCount Protocol Flags Type St Inode Path": flag __SO_ACCEPTCON (0x10000) marks a listening socket.
  return table.split('\n').some((line) => {
    const f = line.trim().split(/\s+/);
    return f.length >= 8 && f.slice(7).join(' ') === abs && (parseInt(f[3]!, 16) & 0x10000) !== 0;
  });
}

// ---------------------------------------------------------------------------------------------------------
// QMP

/** Opens QEMU's QMP socket, or says why not in words a user can act on. */
async function openQmp(sock: string): Promise<QmpClient> {
  const st = fs.statSync(sock, { throwIfNoEntry: false });
  if (!st) throw new CommandError(`no QMP socket at ${sock}: start QEMU with -qmp unix:${sock},server=on,wait=off (\`twindisk qemu run\` prints its QMP socket)`);
  if (!st.isSocket()) throw new CommandError(`${sock} is not a socket: --qmp names QEMU's QMP socket (-qmp unix:PATH,server=on,wait=off)`);
  try {
    return await QmpClient.connect(sock, 5000);
  } catch (e) {
    const m = (e as Error).message;
    if (/ECONNREFUSED/.test(m)) throw new CommandError(`nothing answers on ${sock}: the QEMU that made it has exited`);
    if (/EACCES|EPERM/.test(m)) throw new CommandError(`no permission to connect to ${sock}: run as the user who started QEMU (or root)`);
    if (/greeting/.test(m)) {
      throw new CommandError(`QEMU did not greet on ${sock} within 5 s: another client holds this QMP socket (QEMU serves one client per -qmp`
        + ' socket; a libvirt guest\'s monitor is libvirt\'s: use virsh)');
    }
    throw new CommandError(m);
  }
}

/** What to do about an error QEMU reported (its `desc`), or '' when there is nothing to add. */
export function qmpHint(command: string, desc: string): string {
  if (/does not support hotplugging|no hotplug|hotplug.*not supported/i.test(desc)) {
    return 'that bus cannot hot-plug: on q35 give QEMU a free PCIe root port (-device pcie-root-port,id=rp1,chassis=1,slot=1;'
      + ' `twindisk qemu run` adds --hotplug-ports of them) and pass its id as --bus';
  }
  if (/duplicate|already exists|in use/i.test(desc) && /add/.test(command)) {
    return 'that id is taken: QEMU has this disk already (detach it first: twindisk qemu detach ...), or pass another --id';
  }
  if (/LOG_SHMFD|VHOST_F_LOG_ALL|log_shmfd|dirty log/i.test(desc)) {
    return 'the vhost-user back-end serving this guest\'s disk does not log the guest memory it writes, which QEMU needs to migrate'
      + ' a guest with a vhost-user disk; run a twindisk with vhost-user dirty logging on the source, or shut the guest down and'
      + ' start it on the other node';
  }
  if (/DeviceNotFound|not found/i.test(desc) && command === 'device_del') {
    return 'QEMU has no device with that id: check --id (the default is twindisk-RESOURCE, or twindisk0 with --socket)';
  }
  if (/already in the process of unplug|unplug.*pending/i.test(desc)) {
    return 'an unplug of this disk is pending: the guest has not released it yet; run detach again to wait for it';
  }
  if (/busy/i.test(desc) && command === 'chardev-remove') return 'a device still uses the socket: wait until the guest has released the disk';
  if (/mem_table|memory table|shared memory|share=on/i.test(desc)) {
    return 'guest RAM must be shared with twindisk: start QEMU with -object memory-backend-memfd,id=mem,size=SIZE,share=on'
      + ' -machine memory-backend=mem (`twindisk qemu args` prints them)';
  }
  if (/migration is (already )?(in progress|active)|already.*migrat/i.test(desc)) return 'a migration is running already: wait for it, or cancel it (QMP migrate_cancel)';
  return '';
}

/** A QMP command that fails with QEMU's own words and what to do, and gives up after `ms`. */
async function qmpRun<T = unknown>(qmp: QmpClient, command: string, args?: Record<string, unknown>, ms = QMP_TIMEOUT_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      qmp.execute<T>(command, args),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new CommandError(`QEMU did not answer ${command} within ${ms / 1000} s`)), ms);
      }),
    ]);
  } catch (e) {
    if (e instanceof QmpCommandError) {
      const hint = qmpHint(command, `${e.klass} ${e.desc}`);
      throw new CommandError(`QEMU refused ${command}: ${e.desc}${hint ? `\n  ${hint}` : ''}`);
    }
    if (e instanceof CommandError) throw e;
    throw new CommandError(`${command}: ${(e as Error).message}`);
  } finally {
    clearTimeout(timer);
  }
}

interface PciDevice { qdev_id?: string; pci_bridge?: { bus?: { number?: number }; devices?: PciDevice[] } }

/** The id of a PCI(e) bridge or root port with nothing plugged in, for hot-plug; ours (twindisk-hp*) first. */
export function freeHotplugBus(pci: { bus: number; devices: PciDevice[] }[]): string | null {
  const free: string[] = [];
  const visit = (devices: PciDevice[]) => {
    for (const d of devices) {
      if (!d.pci_bridge) continue;
      if (d.qdev_id && (d.pci_bridge.devices ?? []).length === 0) free.push(d.qdev_id);
      visit(d.pci_bridge.devices ?? []);
    }
  };
  for (const bus of pci) visit(bus.devices);
  return free.find((id) => id.startsWith('twindisk-hp')) ?? free[0] ?? null;
}

// ---------------------------------------------------------------------------------------------------------
// Migration progress

/** What `query-migrate` answers (the fields shown). */
export interface MigrateInfo {
  status?: string;
  'total-time'?: number;
  downtime?: number;
  'expected-downtime'?: number;
  'error-desc'?: string;
  ram?: { transferred?: number; remaining?: number; total?: number; mbps?: number; 'dirty-pages-rate'?: number; 'dirty-sync-count'?: number };
}

const MIGRATION_RUNNING = new Set(['setup', 'active', 'pre-switchover', 'device', 'postcopy-active', 'postcopy-paused', 'postcopy-recover', 'wait-unplug']);

/** The progress bar's row for a running migration: how much of the guest's RAM is across. */
export function migrationRow(info: MigrateInfo): ProgressRow {
  const ram = info.ram ?? {};
  const total = ram.total ?? 0;
  const remaining = ram.remaining ?? total;
  const percent = total > 0 ? (100 * (total - remaining)) / total : 0;
  const parts = [info.status ?? 'setup'];
  if (ram.transferred !== undefined) parts.push(`${humanBytes(ram.transferred)} sent`);
  if (ram.remaining !== undefined) parts.push(`${humanBytes(ram.remaining)} left`);
  if (ram.mbps) parts.push(`${ram.mbps.toFixed(0)} Mbit/s`);
  if (ram['dirty-sync-count'] && ram['dirty-sync-count'] > 1) parts.push(`pass ${ram['dirty-sync-count']}`);
  return { name: 'migration', percent, detail: parts.join(', ') };
}

/** The line printed once the migration is over. */
export function migrationSummary(info: MigrateInfo, to: string): string {
  const ram = info.ram ?? {};
  const facts = [
    info['total-time'] !== undefined ? `in ${(info['total-time'] / 1000).toFixed(1)} s` : '',
    info.downtime !== undefined ? `downtime ${info.downtime} ms` : '',
    ram.transferred !== undefined ? `${humanBytes(ram.transferred)} transferred` : '',
  ].filter(Boolean);
  return `migrated to ${to}${facts.length ? ` (${facts.join(', ')})` : ''}; the guest runs there now and this QEMU is paused: quit it (QMP quit)\n`;
}

/** `tcp:HOST:PORT` for QEMU, IPv6 in brackets. */
function tcpUri(hp: HostPort): string {
  return `tcp:${hp.host.includes(':') ? `[${hp.host}]` : hp.host}:${hp.port}`;
}

function hostPortArg(option: string, defaultHost: string | null): (v: string) => HostPort {
  return (v) => {
    if (defaultHost !== null && /^[0-9]{1,5}$/.test(v)) v = `${defaultHost}:${v}`;
    const r = parseHostPort(v, 4444, null);
    if (typeof r === 'string') throw new InvalidArgumentError(`${option} ${r}.`);
    return r;
  };
}

// ---------------------------------------------------------------------------------------------------------
// The commands

/** Adds `twindisk qemu ...` to the program. */
export function addQemuCommands(program: Command): void {
  const qemu = program.command('qemu')
    .summary('run QEMU with a twindisk volume, hot-plug it, migrate (without libvirt); libvirt XML')
    .description('QEMU with a twindisk volume, for users who do not run libvirt: print the options (args), start QEMU (run),\n'
      + 'hot-plug and unplug the volume over QMP (attach, detach), live-migrate (migrate); and the libvirt domain XML\n'
      + 'of the volume (libvirt-xml). The volume is a node\'s (--config FILE --node NAME) or a `twindisk serve` socket (--socket).');

  volumeOptions(qemu.command('args'))
    .summary('print the QEMU options that attach the volume')
    .description('Print the QEMU options that attach the volume: guest RAM shared with twindisk (memory-backend-memfd,\n'
      + 'share=on, sized like -m), the vhost-user socket (a chardev that reconnects), vhost-user-blk-pci with the\n'
      + 'node\'s queues, and a QMP socket. Use as qemu-system-x86_64 $(twindisk qemu args ...) ... (or --json).')
    .addOption(new Option('--memory <size>', 'guest RAM (-m)').argParser(memoryArg).default(DEFAULT_MEMORY, '1G'))
    .option('--qmp <path>', 'QEMU\'s QMP socket (default: beside the vhost-user socket, NAME.qmp)')
    .option('--no-qmp', 'leave the QMP socket out')
    .option('--json', 'print the options as a JSON array')
    .action((o: VolumeOptions & { memory: number; qmp: string | boolean; json?: boolean }, cmd: Command) => {
      const v = volume(o, cmd);
      const qmp = o.qmp === false ? undefined : typeof o.qmp === 'string' ? path.resolve(o.qmp) : defaultQmpSocket(v.disk.socket);
      const args = qemuDiskArgs({ disk: v.disk, memory: o.memory, ...(qmp ? { qmp } : {}) });
      process.stdout.write(o.json ? `${JSON.stringify(args)}\n` : `${shellLine(args)}\n`);
    });

  volumeOptions(qemu.command('run'))
    .summary('start QEMU with the volume; exits with QEMU\'s status')
    .description('Start QEMU with the volume attached (the options `qemu args` prints), print its QMP socket, and exit with\n'
      + 'QEMU\'s status. Boot a kernel (--kernel, --initrd, --append) or the volume itself (--disk-boot); anything after\n'
      + '`--` goes to QEMU as it is. --incoming starts a paused destination for `twindisk qemu migrate`.\n'
      + 'QEMU waits (and reconnects) while no node listens on the socket.')
    .addOption(new Option('--memory <size>', 'guest RAM (-m)').argParser(memoryArg).default(DEFAULT_MEMORY, '1G'))
    .addOption(new Option('--cpus <n>', 'virtual CPUs (-smp)').argParser(countArg(1, 256)).default(1))
    .addOption(new Option('--accel <accel>', 'kvm, tcg (emulation: slow), or auto: kvm when /dev/kvm is usable, else tcg').choices(['auto', 'kvm', 'tcg']).default('auto'))
    .option('--kernel <file>', 'boot this kernel (-kernel)')
    .option('--initrd <file>', 'with --kernel: its initramfs (-initrd)')
    .option('--append <cmdline>', 'with --kernel: its command line (-append)')
    .option('--disk-boot', 'boot from the volume (bootindex=1)')
    .addOption(new Option('--incoming <[host:]port>', 'wait for a migration stream on this TCP port (default host 0.0.0.0)').argParser(hostPortArg('--incoming', '0.0.0.0')))
    .option('--qmp <path>', 'QEMU\'s QMP socket (default: beside the vhost-user socket, NAME.qmp)')
    .addOption(new Option('--console <mode>', 'serial: -nographic, the guest\'s serial console and QEMU\'s monitor here (Ctrl-A X quits); none: -display none; qemu: QEMU\'s own display')
      .choices(['serial', 'none', 'qemu']).default('serial'))
    .addOption(new Option('--hotplug-ports <n>', 'free PCIe root ports for `qemu attach`').argParser(countArg(0, 16)).default(1))
    .option('--qemu <binary>', 'the QEMU binary', QEMU_BINARY)
    .argument('[qemu-args...]', 'after --: more QEMU options, passed as they are')
    .action((extra: string[], o: RunOptions, cmd: Command) => run(extra, o, cmd));

  volumeOptions(qemu.command('attach'))
    .summary('hot-plug the volume into a running QEMU (QMP)')
    .description('Hot-plug the volume into a running QEMU over its QMP socket: chardev-add (a socket that reconnects), then\n'
      + 'device_add vhost-user-blk-pci, into a free PCIe root port (or --bus). The guest sees a new virtio disk.')
    .option('--qmp <path>', 'QEMU\'s QMP socket (required)')
    .addOption(new Option('--bus <id>', 'the bus (a PCIe root port\'s id) to plug into (default: a free one)').argParser(idArg))
    .action((o: VolumeOptions & { qmp?: string; bus?: string }, cmd: Command) => attach(o, cmd));

  volumeOptions(qemu.command('detach'))
    .summary('hot-unplug the volume from a running QEMU (QMP)')
    .description('Hot-unplug the volume from a running QEMU over its QMP socket: device_del, wait until the guest has released\n'
      + 'the disk (QEMU\'s DEVICE_DELETED event), then chardev-remove.')
    .option('--qmp <path>', 'QEMU\'s QMP socket (required)')
    .addOption(new Option('--timeout <s>', 'how long to wait for the guest to release the disk').argParser(secondsArg).default(60))
    .action((o: VolumeOptions & { qmp?: string; timeout: number }, cmd: Command) => detach(o, cmd));

  qemu.command('migrate')
    .summary('live-migrate a running QEMU to a destination QEMU (QMP), with progress')
    .description('Live-migrate the guest of the QEMU on --qmp to a destination QEMU waiting on --to (started with\n'
      + '`twindisk qemu run --incoming PORT` on the other node), showing how much of its RAM is across; at the end, the\n'
      + 'downtime. With --config, first checks that the resource allows two Primaries (both QEMUs hold the volume\n'
      + 'during the switch-over). Ctrl-C cancels the migration.')
    .option('--qmp <path>', 'the source QEMU\'s QMP socket (required)')
    .addOption(new Option('--to <host:port>', 'where the destination QEMU listens (required)').argParser(hostPortArg('--to', null)))
    .option('--config <file>', 'the resource file: refuse unless "allow-two-primaries" is on')
    .addOption(new Option('--timeout <s>', 'cancel the migration after this many seconds').argParser(secondsArg).default(3600))
    .action((o: { qmp?: string; to?: HostPort; config?: string; timeout: number }) => migrate(o));

  volumeOptions(qemu.command('libvirt-xml'))
    .summary('print the libvirt domain XML of the volume (a vhostuser disk)')
    .description('Print what a libvirt domain needs for the volume: <memoryBacking> (guest RAM shared with twindisk) for the\n'
      + '<domain>, and a <disk type=\'vhostuser\'> for its <devices>. With --domain, a whole minimal domain instead.')
    .option('--target-dev <dev>', 'the guest\'s device name', 'vda')
    .option('--domain <name>', 'print a whole domain of this name')
    .addOption(new Option('--memory <size>', 'with --domain: guest RAM').argParser(memoryArg).default(DEFAULT_MEMORY, '1G'))
    .addOption(new Option('--cpus <n>', 'with --domain: virtual CPUs').argParser(countArg(1, 256)).default(1))
    .action((o: VolumeOptions & { targetDev: string; domain?: string; memory: number; cpus: number }, cmd: Command) => {
      if (o.id !== undefined) throw new UsageError('qemu libvirt-xml: --id is for QEMU without libvirt; libvirt names its devices');
      const v = volume(o, cmd);
      if (!/^[a-z]+[0-9]*$/.test(o.targetDev)) throw new UsageError(`--target-dev ${o.targetDev}: expected a device name such as vda`);
      const disk = { socket: v.disk.socket, queues: v.disk.queues, targetDev: o.targetDev };
      if (o.domain !== undefined) {
        process.stdout.write(libvirtDomain({ name: o.domain, memory: o.memory, cpus: o.cpus, ...disk }));
        return;
      }
      process.stdout.write([
        `<!-- twindisk ${v.what}: memoryBacking goes in domain (vhost-user needs guest RAM shared with twindisk) -->`,
        libvirtMemoryBacking(),
        '<!-- and disk in devices -->',
        libvirtDisk(disk),
        '',
      ].join('\n'));
    });
}

interface RunOptions extends VolumeOptions {
  memory: number; cpus: number; accel: 'auto' | 'kvm' | 'tcg'; kernel?: string; initrd?: string; append?: string; diskBoot?: boolean;
  incoming?: HostPort; qmp?: string; console: 'serial' | 'none' | 'qemu'; hotplugPorts: number; qemu: string;
}

/** `-accel`, after probing KVM when asked to choose. */
function chooseAccel(accel: RunOptions['accel']): { args: string[]; note: string } {
  if (accel === 'tcg') return { args: ['-accel', 'tcg'], note: '' };
  const problem = kvmProblem();
  if (accel === 'kvm' && problem) throw new CommandError(`--accel kvm: ${problem}; use --accel tcg (emulation) instead`);
  if (problem) return { args: ['-accel', 'tcg'], note: `KVM is not usable: ${problem}; running under TCG, which is slow` };
  return { args: ['-accel', 'kvm', '-cpu', 'host'], note: '' };
}

/** Whether `binary` (a path, or a name looked up on PATH) is an executable file. */
function onPath(binary: string): boolean {
  const executable = (f: string) => {
    try {
      fs.accessSync(f, fs.constants.X_OK);
      return fs.statSync(f).isFile();
    } catch {
      return false;
    }
  };
  if (binary.includes('/')) return executable(binary);
  return (process.env.PATH ?? '').split(':').some((d) => d !== '' && executable(path.join(d, binary)));
}

/** Refuses a QMP path another QEMU listens on; removes a stale one (QEMU would unlink it anyway). */
function claimQmpSocket(qmp: string): void {
  const st = fs.lstatSync(qmp, { throwIfNoEntry: false });
  if (!st) {
    try {
      fs.accessSync(path.dirname(qmp), fs.constants.W_OK);
    } catch {
      throw new CommandError(`cannot create the QMP socket ${qmp}: ${path.dirname(qmp)} is not writable for this user; pass --qmp PATH`);
    }
    return;
  }
  if (!st.isSocket()) throw new CommandError(`--qmp ${qmp} exists and is not a socket: choose another path`);
  if (socketListening(qmp)) throw new CommandError(`another QEMU listens on ${qmp}: stop it, or pass --qmp PATH`);
  fs.unlinkSync(qmp);
}

async function run(extra: string[], o: RunOptions, cmd: Command): Promise<void> {
  const v = volume(o, cmd);
  if (o.diskBoot && o.kernel) throw new UsageError('qemu run: --disk-boot and --kernel are two ways to boot: give one');
  if (!o.kernel && (o.initrd !== undefined || o.append !== undefined)) throw new UsageError('qemu run: --initrd and --append go with --kernel FILE');
  for (const [opt, f] of [['--kernel', o.kernel], ['--initrd', o.initrd]] as const) {
    if (f !== undefined && !fs.existsSync(f)) throw new UsageError(`qemu run: ${opt} ${f}: no such file`);
  }
  if (!onPath(o.qemu)) throw new CommandError(`${o.qemu} is not installed: apt-get install qemu-system-x86 (or pass --qemu BINARY)`);
  const qmp = path.resolve(o.qmp ?? defaultQmpSocket(v.disk.socket));
  const accel = chooseAccel(o.accel);
  const sock = fs.statSync(v.disk.socket, { throwIfNoEntry: false });
  if (sock && sock.isSocket()) {
    try {
      fs.accessSync(v.disk.socket, fs.constants.R_OK | fs.constants.W_OK);
    } catch {
      throw new CommandError(`no permission to connect to ${v.disk.socket}: run QEMU as root or as a member of the socket's group (see README, systemd)`);
    }
  }
  claimQmpSocket(qmp);
  const disk: VhostDisk = { ...v.disk, ...(o.diskBoot ? { bootIndex: 1 } : {}) };
  const args = [
    ...accel.args,
    ...(o.console === 'serial' ? ['-nographic'] : o.console === 'none' ? ['-display', 'none'] : []),
    '-smp', String(o.cpus),
    ...sharedMemoryArgs(o.memory),
    ...hotplugPortArgs(o.hotplugPorts),
    ...vhostUserBlkArgs(disk),
    ...qmpArgs(qmp),
    ...(o.kernel ? ['-kernel', o.kernel] : []),
    ...(o.initrd !== undefined ? ['-initrd', o.initrd] : []),
    ...(o.append !== undefined ? ['-append', o.append] : []),
    ...(o.incoming ? ['-incoming', tcpUri(o.incoming)] : []),
    ...extra,
  ];
  const say = (s: string) => process.stderr.write(`twindisk: ${s}\n`);
  if (accel.note) say(accel.note);
  if (!sock || socketListening(v.disk.socket) === false) say(`nothing listens on ${v.disk.socket} yet: QEMU waits for it (start it: ${v.startHint})`);
  say(`starting ${o.qemu} ${shellLine(args)}`);
  say(`QMP socket: ${qmp}  (twindisk qemu attach|detach|migrate --qmp ${qmp})`);
  if (o.incoming) say(`waiting for the migration stream on ${tcpUri(o.incoming)} (twindisk qemu migrate --qmp SOURCE --to HOST:${o.incoming.port})`);

  // The handlers come first: a signal that arrives while QEMU starts is passed on once it exists.
  let child: ReturnType<typeof spawn> | null = null;
  let early: NodeJS.Signals | null = null;
  const forward = (sig: NodeJS.Signals) => () => {
    if (child) child.kill(sig);
    else early = sig;
  };
  const onInt = forward('SIGINT');
  const onTerm = forward('SIGTERM');
  process.on('SIGINT', onInt);
  process.on('SIGTERM', onTerm);
  const qemu = spawn(o.qemu, args, { stdio: 'inherit' });
  child = qemu;
  if (early) qemu.kill(early);
  const status = await new Promise<number>((resolve, reject) => {
    qemu.once('error', (e: NodeJS.ErrnoException) => {
      reject(e.code === 'ENOENT'
        ? new CommandError(`${o.qemu} is not installed: apt-get install qemu-system-x86 (or pass --qemu BINARY)`)
        : new CommandError(`cannot start ${o.qemu}: ${e.message}`));
    });
    qemu.once('exit', (code, signal) => resolve(code ?? 128 + (signal ? os.constants.signals[signal] : 0)));
  }).finally(() => {
    process.off('SIGINT', onInt);
    process.off('SIGTERM', onTerm);
  });
  // QEMU's status is ours; nothing else is left to run.
  process.exit(status);
}

async function attach(o: VolumeOptions & { qmp?: string; bus?: string }, cmd: Command): Promise<void> {
  if (!o.qmp) throw new UsageError('qemu attach needs --qmp PATH (QEMU\'s QMP socket)');
  const v = volume(o, cmd);
  // A reconnecting chardev makes device_add wait (QEMU's whole monitor with it) until something listens: check first.
  const st = fs.statSync(v.disk.socket, { throwIfNoEntry: false });
  if (!st) throw new CommandError(`no vhost-user socket at ${v.disk.socket}: start the back-end first (${v.startHint})`);
  if (socketListening(v.disk.socket) === false) {
    throw new CommandError(`nothing listens on ${v.disk.socket} (a socket left by a stopped back-end?): start it first (${v.startHint})`);
  }
  const qmp = await openQmp(o.qmp);
  try {
    const chardevs = await qmpRun<{ label: string }[]>(qmp, 'query-chardev');
    if (chardevs.some((c) => c.label === chardevIdFor(v.disk.id))) {
      throw new CommandError(`QEMU has ${v.disk.id} attached already (chardev ${chardevIdFor(v.disk.id)} exists): detach it first, or pass another --id`);
    }
    let bus = o.bus;
    if (bus === undefined) {
      const pci = await qmpRun<{ bus: number; devices: PciDevice[] }[]>(qmp, 'query-pci').catch(() => []);
      bus = freeHotplugBus(pci) ?? undefined;
    }
    await qmpRun(qmp, 'chardev-add', chardevAddArgs(v.disk));
    try {
      await qmpRun(qmp, 'device_add', deviceAddArgs(v.disk, bus), 120_000);
    } catch (e) {
      await qmp.execute('chardev-remove', { id: chardevIdFor(v.disk.id) }).catch(() => undefined);
      if (bus === undefined && e instanceof CommandError && /hotplug/i.test(e.message)) {
        throw new CommandError(`${e.message.split('\n')[0]}\n  QEMU has no free PCIe root port to plug the disk into: start it with one (-device pcie-root-port,id=rp1,chassis=1,slot=1;`
          + ' `twindisk qemu run` adds --hotplug-ports of them), or pass --bus');
      }
      throw e;
    }
    process.stdout.write(`attached ${v.what} as ${v.disk.id}${bus ? ` on ${bus}` : ''} (${v.disk.queues} queue${v.disk.queues === 1 ? '' : 's'}); the guest sees a new virtio disk\n`);
  } finally {
    qmp.close();
  }
}

async function detach(o: VolumeOptions & { qmp?: string; timeout: number }, cmd: Command): Promise<void> {
  if (!o.qmp) throw new UsageError('qemu detach needs --qmp PATH (QEMU\'s QMP socket)');
  let id: string;
  let what: string;
  if (o.config === undefined && o.socket === undefined && o.node === undefined) {
    if (!o.id) throw new UsageError('qemu detach needs --config FILE --node NAME, --socket PATH or --id ID (the disk to unplug)');
    id = o.id;
    what = o.id;
  } else {
    const v = volume(o, cmd);
    id = v.disk.id;
    what = v.what;
  }
  const chardev = chardevIdFor(id);
  const qmp = await openQmp(o.qmp);
  try {
    const deleted = qmp.waitEvent('DEVICE_DELETED', o.timeout * 1000, (d) => d.device === id);
    deleted.catch(() => undefined);
    let leftover = false;
    try {
      await qmpRun(qmp, 'device_del', { id });
    } catch (e) {
      // A detach that timed out earlier leaves the chardev once the guest lets go: finish that one.
      const chardevs = await qmp.execute<{ label: string }[]>('query-chardev').catch(() => []);
      if (!/not found/i.test((e as Error).message) || !chardevs.some((c) => c.label === chardev)) throw e;
      leftover = true;
    }
    if (!leftover) {
      try {
        await deleted;
      } catch {
        throw new CommandError(`the guest did not release ${id} within ${o.timeout} s (QEMU reports DEVICE_DELETED once the guest's OS has`
          + ' ejected the disk): is it running an OS that handles PCIe hot-unplug, and not using the disk? The unplug request stays'
          + ` pending: run detach again (or with a longer --timeout) to wait and finish, or shut the guest down`);
      }
    }
    await qmpRun(qmp, 'chardev-remove', { id: chardev });
    process.stdout.write(`detached ${what} (${id})${leftover ? ': its device was gone already, its socket is now released' : ''}\n`);
  } finally {
    qmp.close();
  }
}

async function migrate(o: { qmp?: string; to?: HostPort; config?: string; timeout: number }): Promise<void> {
  if (!o.qmp) throw new UsageError('qemu migrate needs --qmp PATH (the source QEMU\'s QMP socket)');
  if (!o.to) throw new UsageError('qemu migrate needs --to HOST:PORT (where the destination QEMU waits: twindisk qemu run --incoming PORT)');
  if (o.config !== undefined) {
    const cfg = loadResource(o.config);
    if (!cfg.allowTwoPrimaries) throw new CommandError(`${path.basename(cfg.file)}: resource ${cfg.resource}: ${NEEDS_TWO_PRIMARIES}`);
  }
  const uri = tcpUri(o.to);
  const qmp = await openQmp(o.qmp);
  const tty = !!(process.stdout as NodeJS.WriteStream).isTTY;
  const bars = new ProgressBars();
  let cancel: (() => void) | null = null;
  const onInt = () => cancel?.();
  process.on('SIGINT', onInt);
  try {
    const before = await qmpRun<MigrateInfo>(qmp, 'query-migrate');
    if (before.status && MIGRATION_RUNNING.has(before.status)) throw new CommandError(`a migration is running already (${before.status}): wait for it, or cancel it (QMP migrate_cancel)`);
    await qmpRun(qmp, 'migrate', { uri });
    let cancelled: string | null = null;
    cancel = () => {
      cancelled = 'interrupted';
      void qmp.execute('migrate_cancel').catch(() => undefined);
    };
    const deadline = Date.now() + o.timeout * 1000;
    for (;;) {
      const info = await qmpRun<MigrateInfo>(qmp, 'query-migrate');
      const status = info.status ?? 'none';
      if (status === 'completed') {
        bars.stop();
        process.stdout.write(migrationSummary(info, `${o.to.host}:${o.to.port}`));
        return;
      }
      if (status === 'failed') throw new CommandError(`migration failed: ${info['error-desc'] ?? 'QEMU gave no reason'}${hintLine('migrate', info['error-desc'] ?? '')}`);
      if (status === 'cancelled' || status === 'cancelling') {
        if (status === 'cancelled') throw new CommandError(`migration cancelled${cancelled ? ` (${cancelled})` : ''}: the guest runs on here`);
      } else if (MIGRATION_RUNNING.has(status)) {
        bars.update([migrationRow(info)]);
      }
      if (!cancelled && Date.now() > deadline) {
        cancelled = `--timeout ${o.timeout} s`;
        await qmp.execute('migrate_cancel').catch(() => undefined);
      }
      await new Promise((r) => setTimeout(r, tty ? 250 : 1000));
    }
  } finally {
    process.off('SIGINT', onInt);
    bars.stop();
    qmp.close();
  }
}

function hintLine(command: string, desc: string): string {
  const hint = qmpHint(command, desc);
  return hint ? `\n  ${hint}` : '';
}

