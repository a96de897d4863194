// What a QEMU guest needs to get a twindisk vhost-user-blk disk: command-line options, QMP hot-plug
// arguments and libvirt domain XML. Pure: strings in, strings out; the commands that run QEMU or talk
// QMP are in qemu-commands.ts.
import path from 'node:path';

/** Guest RAM when no size is given. */
export const DEFAULT_MEMORY = 1 << 30;
/**
 * Seconds between QEMU's attempts to reconnect the vhost-user socket: a node restart (or `up` after
 * QEMU) costs the guest a pause, not its disk.
 */
export const RECONNECT_SECONDS = 1;
/** The id of the shared guest-RAM backend. */
export const MEMORY_BACKEND_ID = 'twindisk-mem';
/** The device id of a disk attached by --socket (no resource to name it after). */
export const STANDALONE_DISK_ID = 'twindisk0';
/** Chassis number of the first PCIe root port `qemu run` adds for hot-plug (high, to stay clear of the user's own). */
export const HOTPLUG_CHASSIS = 200;

/** One vhost-user-blk disk: QEMU's device id names it; its chardev is `<id>-sock`. */
export interface VhostDisk {
  /** The vhost-user socket (made absolute). */
  socket: string;
  queues: number;
  /** QEMU device id; also what `qemu detach` names. */
  id: string;
  /** Boot from this disk (firmware boot order), for --disk-boot. */
  bootIndex?: number;
}

/** QEMU's rule for ids (qdev, chardev, object): a letter, then letters, digits, '-', '.', '_'. */
export function qemuIdProblem(id: string): string | null {
  return /^[A-Za-z][A-Za-z0-9._-]{0,127}$/.test(id) ? null
    : `"${id}" is not a QEMU id: it must start with a letter and hold only letters, digits, '-', '.' and '_'`;
}

/** The device id of a resource's disk: `twindisk-r0`. */
export function diskIdFor(resource: string): string {
  return `twindisk-${resource}`;
}

/** The chardev id of a disk. */
export function chardevIdFor(diskId: string): string {
  return `${diskId}-sock`;
}

/** Where `qemu run` puts QEMU's QMP socket unless told: beside the vhost-user socket, `r0.sock` -> `r0.qmp`. */
export function defaultQmpSocket(vhostSocket: string): string {
  const abs = path.resolve(vhostSocket);
  return path.join(path.dirname(abs), `${path.basename(abs).replace(/\.sock$/, '')}.qmp`);
}

/** A value inside a QEMU option list: a comma is written twice (`path=/a,,b` for /a,b). */
export function qemuOptValue(v: string): string {
  return v.replace(/,/g, ',,');
}

/**
 * A byte count as QEMU's -m reads it: `1G`, `1536M`. QEMU reads a bare number as MiB, so sizes are
 * always written with a suffix; the size must be a whole number of MiB (throws otherwise).
 */
export function qemuSize(bytes: number): string {
  const MiB = 1 << 20;
  if (!Number.isSafeInteger(bytes) || bytes <= 0 || bytes % MiB !== 0) throw new Error(`${bytes} bytes is not a whole number of MiB`);
  return bytes % (1 << 30) === 0 ? `${bytes / (1 << 30)}G` : `${bytes / MiB}M`;
}

/**
 * Guest RAM shared with the back-end: vhost-user maps it, so it must be a shared memfd (or file)
 * backend, and -m must match its size.
 */
export function sharedMemoryArgs(bytes: number): string[] {
  const size = qemuSize(bytes);
  return [
    '-m', size,
    '-object', `memory-backend-memfd,id=${MEMORY_BACKEND_ID},size=${size},share=on`,
    '-machine', `q35,memory-backend=${MEMORY_BACKEND_ID}`,
  ];
}

/** The chardev (a client socket that reconnects) and the vhost-user-blk-pci device of one disk. */
export function vhostUserBlkArgs(d: VhostDisk): string[] {
  const chardev = chardevIdFor(d.id);
  return [
    '-chardev', `socket,id=${chardev},path=${qemuOptValue(path.resolve(d.socket))},reconnect=${RECONNECT_SECONDS}`,
    '-device', `vhost-user-blk-pci,id=${d.id},chardev=${chardev},num-queues=${d.queues}${d.bootIndex !== undefined ? `,bootindex=${d.bootIndex}` : ''}`,
  ];
}

/** A QMP socket QEMU listens on without waiting for a client. */
export function qmpArgs(socket: string): string[] {
  return ['-qmp', `unix:${qemuOptValue(path.resolve(socket))},server=on,wait=off`];
}

/** `count` free PCIe root ports (`twindisk-hp0`, ...) for `qemu attach` to hot-plug into (q35's root bus cannot). */
export function hotplugPortArgs(count: number): string[] {
  const args: string[] = [];
  for (let i = 0; i < count; i++) args.push('-device', `pcie-root-port,id=twindisk-hp${i},chassis=${HOTPLUG_CHASSIS + i},slot=0`);
  return args;
}

/** Everything a disk needs at QEMU's start: shared RAM, the disk, and a QMP socket when given. */
export function qemuDiskArgs(o: { disk: VhostDisk; memory: number; qmp?: string }): string[] {
  return [...sharedMemoryArgs(o.memory), ...vhostUserBlkArgs(o.disk), ...(o.qmp ? qmpArgs(o.qmp) : [])];
}

/** The QEMU options that attach a vhost-user-blk disk served on `socket` (serve's and the demo's banner). */
export function qemuAttachArgs(socket: string, queues: number, memory = DEFAULT_MEMORY): string[] {
  return qemuDiskArgs({ disk: { socket, queues, id: STANDALONE_DISK_ID }, memory });
}

/** QMP `chardev-add` arguments: a client socket to the back-end that reconnects. */
export function chardevAddArgs(d: VhostDisk): Record<string, unknown> {
  return {
    id: chardevIdFor(d.id),
    backend: {
      type: 'socket',
      data: { addr: { type: 'unix', data: { path: path.resolve(d.socket) } }, server: false, reconnect: RECONNECT_SECONDS },
    },
  };
}

/** QMP `device_add` arguments for the disk (on `bus`, a free PCIe root port, when given). */
export function deviceAddArgs(d: VhostDisk, bus?: string): Record<string, unknown> {
  return { driver: 'vhost-user-blk-pci', id: d.id, chardev: chardevIdFor(d.id), 'num-queues': d.queues, ...(bus ? { bus } : {}) };
}

/** Quotes an argument for a POSIX shell when it needs it. */
export function shellQuote(arg: string): string {
  return /^[A-Za-z0-9_./:=,@%+-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`;
}

/** An argument list as one shell line. */
export function shellLine(args: readonly string[]): string {
  return args.map(shellQuote).join(' ');
}

function xmlAttr(v: string): string {
  return v.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/'/g, '&apos;').replace(/"/g, '&quot;');
}

/** libvirt's shared guest RAM, which a vhostuser disk requires. */
export function libvirtMemoryBacking(indent = ''): string {
  return [
    `${indent}<memoryBacking>`,
    `${indent}  <source type='memfd'/>`,
    `${indent}  <access mode='shared'/>`,
    `${indent}</memoryBacking>`,
  ].join('\n');
}

/** libvirt's `<disk type='vhostuser'>` for a vhost-user socket (libvirt >= 7.1). */
export function libvirtDisk(o: { socket: string; queues: number; targetDev: string }, indent = ''): string {
  return [
    `${indent}<disk type='vhostuser' device='disk'>`,
    `${indent}  <driver name='qemu' type='raw' queues='${o.queues}'/>`,
    `${indent}  <source type='unix' path='${xmlAttr(path.resolve(o.socket))}'>`,
    `${indent}    <reconnect enabled='yes' timeout='${RECONNECT_SECONDS}'/>`,
    `${indent}  </source>`,
    `${indent}  <target dev='${xmlAttr(o.targetDev)}' bus='virtio'/>`,
    `${indent}</disk>`,
  ].join('\n');
}

/** A minimal whole domain around the disk (a starting point for `virsh define`), with an OS to install or boot from the disk. */
export function libvirtDomain(o: { name: string; memory: number; cpus: number; socket: string; queues: number; targetDev: string }): string {
  return [
    `<domain type='kvm'>`,
    `  <name>${xmlAttr(o.name)}</name>`,
    `  <memory unit='KiB'>${o.memory / 1024}</memory>`,
    libvirtMemoryBacking('  '),
    `  <vcpu>${o.cpus}</vcpu>`,
    `  <os>`,
    `    <type arch='x86_64' machine='q35'>hvm</type>`,
    `    <boot dev='hd'/>`,
    `  </os>`,
    `  <features><acpi/><apic/></features>`,
    `  <devices>`,
    libvirtDisk(o, '    '),
    `    <serial type='pty'/>`,
    `    <console type='pty'/>`,
    `  </devices>`,
    `</domain>`,
    '',
  ].join('\n');
}
