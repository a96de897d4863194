// The QEMU options, QMP arguments and libvirt XML that attach a twindisk disk (pure).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  chardevAddArgs, defaultQmpSocket, deviceAddArgs, hotplugPortArgs, libvirtDisk, libvirtDomain, qemuAttachArgs, qemuDiskArgs,
  qemuIdProblem, qemuOptValue, qemuSize, shellLine, shellQuote,
} from '../../cli/qemu-args.js';

test('a disk: shared RAM sized like -m, a reconnecting chardev, vhost-user-blk-pci with the queues, and QMP', () => {
  const args = qemuDiskArgs({ disk: { socket: '/run/twindisk/r0.sock', queues: 4, id: 'twindisk-r0' }, memory: 2 * 2 ** 30, qmp: '/run/twindisk/r0.qmp' });
  assert.deepEqual(args, [
    '-m', '2G',
    '-object', 'memory-backend-memfd,id=twindisk-mem,size=2G,share=on',
    '-machine', 'q35,memory-backend=twindisk-mem',
    '-chardev', 'socket,id=twindisk-r0-sock,path=/run/twindisk/r0.sock,reconnect=1',
    '-device', 'vhost-user-blk-pci,id=twindisk-r0,chardev=twindisk-r0-sock,num-queues=4',
    '-qmp', 'unix:/run/twindisk/r0.qmp,server=on,wait=off',
  ]);
  // serve's and the demo's banner: the same, without QMP.
  assert.deepEqual(qemuAttachArgs('/tmp/s.sock', 2), [
    '-m', '1G', '-object', 'memory-backend-memfd,id=twindisk-mem,size=1G,share=on', '-machine', 'q35,memory-backend=twindisk-mem',
    '-chardev', 'socket,id=twindisk0-sock,path=/tmp/s.sock,reconnect=1', '-device', 'vhost-user-blk-pci,id=twindisk0,chardev=twindisk0-sock,num-queues=2',
  ]);
  assert.match(qemuDiskArgs({ disk: { socket: '/s', queues: 1, id: 'd', bootIndex: 1 }, memory: 1 << 30 }).join(' '), /num-queues=1,bootindex=1/);
});

test('sizes are written with a suffix (QEMU reads a bare -m number as MiB); only whole MiB', () => {
  assert.equal(qemuSize(1 << 30), '1G');
  assert.equal(qemuSize(1536 << 20), '1536M');
  assert.equal(qemuSize(256 << 20), '256M');
  assert.throws(() => qemuSize(1000));
  assert.throws(() => qemuSize(0));
});

test('commas in paths are doubled inside QEMU option lists; shell lines quote what needs it', () => {
  assert.equal(qemuOptValue('/a,b/c'), '/a,,b/c');
  assert.match(qemuDiskArgs({ disk: { socket: '/x,y.sock', queues: 1, id: 'd' }, memory: 1 << 30 }).join(' '), /path=\/x,,y\.sock,reconnect=1/);
  assert.equal(shellQuote('-m'), '-m');
  assert.equal(shellQuote('socket,id=a,path=/x'), 'socket,id=a,path=/x');
  assert.equal(shellQuote('/my disk'), `'/my disk'`);
  assert.equal(shellQuote(`it's`), `'it'\\''s'`);
  assert.equal(shellLine(['-append', 'console=ttyS0 quiet']), `-append 'console=ttyS0 quiet'`);
});

test('the QMP socket defaults to the vhost-user socket\'s name with .qmp', () => {
  assert.equal(defaultQmpSocket('/run/twindisk/r0.sock'), '/run/twindisk/r0.qmp');
  assert.equal(defaultQmpSocket('/tmp/vhost'), '/tmp/vhost.qmp');
});

test('QEMU ids: a letter first, then letters, digits, - . _', () => {
  assert.equal(qemuIdProblem('twindisk-r0'), null);
  assert.equal(qemuIdProblem('a.b_c-1'), null);
  assert.match(qemuIdProblem('0disk')!, /must start with a letter/);
  assert.match(qemuIdProblem('a b')!, /not a QEMU id/);
});

test('hot-plug: chardev-add (reconnecting client socket) and device_add arguments; free root ports for run', () => {
  const d = { socket: '/run/twindisk/r0.sock', queues: 2, id: 'twindisk-r0' };
  assert.deepEqual(chardevAddArgs(d), {
    id: 'twindisk-r0-sock',
    backend: { type: 'socket', data: { addr: { type: 'unix', data: { path: '/run/twindisk/r0.sock' } }, server: false, reconnect: 1 } },
  });
  assert.deepEqual(deviceAddArgs(d, 'rp0'), { driver: 'vhost-user-blk-pci', id: 'twindisk-r0', chardev: 'twindisk-r0-sock', 'num-queues': 2, bus: 'rp0' });
  assert.equal('bus' in deviceAddArgs(d), false);
  assert.deepEqual(hotplugPortArgs(2), [
    '-device', 'pcie-root-port,id=twindisk-hp0,chassis=200,slot=0', '-device', 'pcie-root-port,id=twindisk-hp1,chassis=201,slot=0',
  ]);
});

test('libvirt: a vhostuser disk with its queues and a reconnecting unix source; attribute values escaped', () => {
  const xml = libvirtDisk({ socket: `/run/a'&b.sock`, queues: 3, targetDev: 'vdb' });
  assert.match(xml, /^<disk type='vhostuser' device='disk'>/);
  assert.match(xml, /<driver name='qemu' type='raw' queues='3'\/>/);
  assert.match(xml, /<source type='unix' path='\/run\/a&apos;&amp;b\.sock'>/);
  assert.match(xml, /<reconnect enabled='yes' timeout='1'\/>/);
  assert.match(xml, /<target dev='vdb' bus='virtio'\/>/);
  const dom = libvirtDomain({ name: 'vm1', memory: 2 * 2 ** 30, cpus: 2, socket: '/s', queues: 1, targetDev: 'vda' });
  assert.match(dom, /<memory unit='KiB'>2097152<\/memory>/);
  assert.match(dom, /<memoryBacking>\n {4}<source type='memfd'\/>\n {4}<access mode='shared'\/>\n {2}<\/memoryBacking>/);
});
