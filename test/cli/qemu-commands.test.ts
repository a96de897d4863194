// `twindisk qemu ...` without a real QEMU: the options it prints, its usage errors, migrate's refusal without
// "allow-two-primaries", and attach/detach/migrate against a scripted QMP server (QEMU's errors passed
// through with what to do, the DEVICE_DELETED wait and its timeout, migration progress and summary).
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { NEEDS_TWO_PRIMARIES, freeHotplugBus, migrationRow, migrationSummary, qmpHint, socketListening } from '../../cli/qemu-commands.js';
import { TEST_SECRET } from '../harness/cluster.js';
import { cli, runCli, type CliRun } from '../harness/serve.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'twindisk-qemu-cli-'));
const servers: net.Server[] = [];
after(() => {
  for (const s of servers) s.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

type Run = CliRun;

function twindiskSync(...args: string[]): Run {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 30000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Runs the CLI without blocking this process's event loop (the scripted QMP server runs in it). */
const twindisk = runCli;

function resourceFile(name: string, edit: (o: Record<string, any>) => void = () => {}): string {
  const o: Record<string, any> = {
    resource: 'r0', secret: TEST_SECRET,
    nodes: {
      alpha: { address: '127.0.0.1:7789', disk: 'alpha.img', socket: 'alpha.sock', queues: 2 },
      beta: { address: '127.0.0.1:7790', disk: 'beta.img' },
    },
  };
  edit(o);
  const file = path.join(dir, name);
  fs.writeFileSync(file, JSON.stringify(o));
  return file;
}

type Reply = { return: unknown } | { error: { class: string; desc: string } };
type Script = (command: string, args: Record<string, any> | undefined, event: (name: string, data: unknown) => void) => Reply;

/** A QMP server that answers each command by `script` and records what it was asked. */
async function scriptedQmp(name: string, script: Script): Promise<{ socket: string; commands: { command: string; args?: Record<string, any> }[] }> {
  const socket = path.join(dir, name);
  const commands: { command: string; args?: Record<string, any> }[] = [];
  const server = net.createServer((c) => {
    c.write(JSON.stringify({ QMP: { version: { qemu: { major: 7, minor: 2, micro: 0 }, package: '' }, capabilities: [] } }) + '\n');
    let buf = '';
    c.on('data', (d) => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        const m = JSON.parse(line) as { execute: string; arguments?: Record<string, any>; id?: string };
        commands.push({ command: m.execute, ...(m.arguments ? { args: m.arguments } : {}) });
        const events: string[] = [];
        const reply = m.execute === 'qmp_capabilities' ? { return: {} } : script(m.execute, m.arguments, (ev, data) => {
          events.push(JSON.stringify({ event: ev, data, timestamp: { seconds: 0, microseconds: 0 } }));
        });
        c.write(JSON.stringify({ ...reply, id: m.id }) + '\n');
        for (const e of events) c.write(e + '\n');
      }
    });
    c.on('error', () => undefined);
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(socket, r));
  return { socket, commands };
}

/** A listening Unix socket standing in for a node's vhost-user socket. */
async function listeningSocket(file: string): Promise<void> {
  const server = net.createServer((c) => c.destroy());
  servers.push(server);
  await new Promise<void>((r) => server.listen(file, r));
}

test('qemu args: the node\'s socket and queues, shared RAM like -m, QMP beside the socket; --socket for serve; --json', () => {
  const file = resourceFile('args.json');
  const r = twindiskSync('qemu', 'args', '--config', file, '--node', 'alpha', '--memory', '512M');
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, `-m 512M -object memory-backend-memfd,id=twindisk-mem,size=512M,share=on -machine q35,memory-backend=twindisk-mem`
    + ` -chardev socket,id=twindisk-r0-sock,path=${dir}/alpha.sock,reconnect=1 -device vhost-user-blk-pci,id=twindisk-r0,chardev=twindisk-r0-sock,num-queues=2`
    + ` -qmp unix:${dir}/alpha.qmp,server=on,wait=off\n`);
  const j = twindiskSync('qemu', 'args', '--socket', '/tmp/s.sock', '--queues', '3', '--json', '--no-qmp', '--id', 'disk1');
  assert.equal(j.status, 0, j.stderr);
  assert.deepEqual(JSON.parse(j.stdout), [
    '-m', '1G', '-object', 'memory-backend-memfd,id=twindisk-mem,size=1G,share=on', '-machine', 'q35,memory-backend=twindisk-mem',
    '-chardev', 'socket,id=disk1-sock,path=/tmp/s.sock,reconnect=1', '-device', 'vhost-user-blk-pci,id=disk1,chardev=disk1-sock,num-queues=3',
  ]);
  const x = twindiskSync('qemu', 'libvirt-xml', '--config', file, '--node', 'alpha');
  assert.equal(x.status, 0, x.stderr);
  assert.match(x.stdout, /<source type='memfd'\/>\n {2}<access mode='shared'\/>/);
  assert.match(x.stdout, new RegExp(`<source type='unix' path='${dir}/alpha.sock'>`));
  assert.match(x.stdout, /queues='2'/);
});

test('exit 2: the command line or the resource file is wrong', () => {
  const file = resourceFile('usage.json');
  const cases: [string[], RegExp][] = [
    [['qemu', 'args'], /qemu args needs --config FILE --node NAME \(a node's volume\) or --socket PATH/],
    [['qemu', 'args', '--config', file], /qemu args needs --node NAME/],
    [['qemu', 'args', '--config', file, '--node', 'alpha', '--socket', '/tmp/s'], /give either --socket PATH or --config FILE --node NAME, not both/],
    [['qemu', 'args', '--config', file, '--node', 'alpha', '--queues', '2'], /--queues goes with --socket; with --config the node's "queues" is used/],
    [['qemu', 'args', '--config', file, '--node', 'beta'], /node beta has no "socket", so QEMU cannot reach the volume there: add "socket"/],
    [['qemu', 'args', '--config', file, '--node', 'gamma'], /has no node "gamma"/],
    [['qemu', 'args', '--socket', '/tmp/s', '--memory', '100K'], /--memory <size>' argument '100K' is invalid\. expected a whole number of MiB/],
    [['qemu', 'args', '--socket', '/tmp/s', '--id', '9lives'], /must start with a letter/],
    [['qemu', 'run', '--socket', '/tmp/s', '--accel', 'hvf'], /Allowed choices are auto, kvm, tcg/],
    [['qemu', 'run', '--socket', '/tmp/s', '--disk-boot', '--kernel', '/boot/vmlinuz'], /--disk-boot and --kernel are two ways to boot: give one/],
    [['qemu', 'run', '--socket', '/tmp/s', '--append', 'quiet'], /--initrd and --append go with --kernel FILE/],
    [['qemu', 'run', '--socket', '/tmp/s', '--kernel', path.join(dir, 'no-kernel')], /--kernel .*no-kernel: no such file/],
    [['qemu', 'run', '--socket', '/tmp/s', '--incoming', 'nowhere:'], /--incoming/],
    [['qemu', 'attach', '--socket', '/tmp/s'], /qemu attach needs --qmp PATH/],
    [['qemu', 'detach', '--qmp', '/tmp/q'], /qemu detach needs --config FILE --node NAME, --socket PATH or --id ID/],
    [['qemu', 'migrate', '--qmp', '/tmp/q'], /qemu migrate needs --to HOST:PORT/],
    [['qemu', 'migrate', '--qmp', '/tmp/q', '--to', '127.0.0.1'], /--to .*no port|--to/],
    [['qemu', 'migrte'], /unknown command 'migrte'\n\(Did you mean migrate\?\)/],
  ];
  for (const [args, message] of cases) {
    const r = twindiskSync(...args);
    assert.equal(r.status, 2, `twindisk ${args.join(' ')}: exit ${r.status}\n${r.stdout}${r.stderr}`);
    assert.match(r.stderr, message, `twindisk ${args.join(' ')}`);
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  }
});

test('qemu migrate --config refuses a resource without allow-two-primaries, before touching QEMU', async () => {
  const qmp = await scriptedQmp('refuse.qmp', () => ({ return: {} }));
  const one = await twindisk('qemu', 'migrate', '--qmp', qmp.socket, '--to', '127.0.0.1:4444', '--config', resourceFile('one.json'));
  assert.equal(one.status, 1, one.stderr);
  assert.equal(one.stderr, `twindisk: one.json: resource r0: ${NEEDS_TWO_PRIMARIES}\n`);
  assert.equal(qmp.commands.length, 0, 'QEMU was not asked anything');
  // Allowed: it goes on to QEMU (here: no QMP socket there).
  const two = await twindisk('qemu', 'migrate', '--qmp', path.join(dir, 'absent.qmp'), '--to', '127.0.0.1:4444',
    '--config', resourceFile('two.json', (o) => (o['allow-two-primaries'] = true)));
  assert.equal(two.status, 1);
  assert.match(two.stderr, /no QMP socket at .*absent\.qmp: start QEMU with -qmp unix:.*,server=on,wait=off/);
});

test('qemu migrate: QEMU\'s refusal is passed through with what to do (no vhost-user dirty logging)', async () => {
  const desc = 'Migration disabled: vhost-user backend lacks VHOST_USER_PROTOCOL_F_LOG_SHMFD feature.';
  const qmp = await scriptedQmp('blocked.qmp', (command) => command === 'migrate'
    ? { error: { class: 'GenericError', desc } }
    : { return: { } });
  const r = await twindisk('qemu', 'migrate', '--qmp', qmp.socket, '--to', '[::1]:4444');
  assert.equal(r.status, 1, r.stdout + r.stderr);
  assert.ok(r.stderr.includes(`QEMU refused migrate: ${desc}`), r.stderr);
  assert.match(r.stderr, /does not log the guest memory it writes/);
  assert.deepEqual(qmp.commands.find((c) => c.command === 'migrate')?.args, { uri: 'tcp:[::1]:4444' });
});

test('qemu migrate: progress from query-migrate, then the downtime; a failed migration says why', async () => {
  let polls = 0;
  const ram = (remaining: number) => ({ transferred: (1 << 30) - remaining, remaining, total: 1 << 30, mbps: 800 });
  const qmp = await scriptedQmp('progress.qmp', (command) => {
    if (command !== 'query-migrate') return { return: {} };
    polls++;
    if (polls === 1) return { return: {} };
    if (polls < 4) return { return: { status: 'active', ram: ram((1 << 30) >> polls) } };
    return { return: { status: 'completed', 'total-time': 1234, downtime: 42, ram: ram(0) } };
  });
  const r = await twindisk('qemu', 'migrate', '--qmp', qmp.socket, '--to', '10.0.0.2:4444');
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /migrated to 10\.0\.0\.2:4444 \(in 1\.2 s, downtime 42 ms, 1\.0 GiB transferred\)/);
  assert.deepEqual(qmp.commands.map((c) => c.command).filter((c) => c !== 'query-migrate'), ['qmp_capabilities', 'migrate']);

  let n = 0;
  const failing = await scriptedQmp('failing.qmp', (command) => (command === 'query-migrate' && n++ > 0
    ? { return: { status: 'failed', 'error-desc': 'Failed to connect socket: Connection refused' } }
    : { return: {} }));
  const f = await twindisk('qemu', 'migrate', '--qmp', failing.socket, '--to', '127.0.0.1:1');
  assert.equal(f.status, 1);
  assert.match(f.stderr, /migration failed: Failed to connect socket: Connection refused/);
});

test('qemu attach: chardev-add then device_add into a free root port; a refusal is passed through and the chardev removed', async () => {
  const file = resourceFile('attach.json');
  await listeningSocket(path.join(dir, 'alpha.sock'));
  const pci = [{ bus: 0, devices: [{ qdev_id: '' }, { qdev_id: 'rp-user', pci_bridge: { devices: [{ qdev_id: 'net0' }] } }, { qdev_id: 'twindisk-hp0', pci_bridge: { devices: [] } }] }];
  const ok = await scriptedQmp('attach-ok.qmp', (command) => ({ return: command === 'query-chardev' ? [{ label: 'serial0' }] : command === 'query-pci' ? pci : {} }));
  const r = await twindisk('qemu', 'attach', '--qmp', ok.socket, '--config', file, '--node', 'alpha');
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.equal(r.stdout, 'attached r0/alpha as twindisk-r0 on twindisk-hp0 (2 queues); the guest sees a new virtio disk\n');
  assert.deepEqual(ok.commands.slice(-2), [
    { command: 'chardev-add', args: { id: 'twindisk-r0-sock', backend: { type: 'socket', data: { addr: { type: 'unix', data: { path: path.join(dir, 'alpha.sock') } }, server: false, reconnect: 1 } } } },
    { command: 'device_add', args: { driver: 'vhost-user-blk-pci', id: 'twindisk-r0', chardev: 'twindisk-r0-sock', 'num-queues': 2, bus: 'twindisk-hp0' } },
  ]);

  const refused = await scriptedQmp('attach-refused.qmp', (command) => (command === 'device_add'
    ? { error: { class: 'GenericError', desc: 'Bus \'pcie.0\' does not support hotplugging' } }
    : { return: command === 'query-chardev' || command === 'query-pci' ? [] : {} }));
  const e = await twindisk('qemu', 'attach', '--qmp', refused.socket, '--config', file, '--node', 'alpha');
  assert.equal(e.status, 1);
  assert.match(e.stderr, /QEMU refused device_add: Bus 'pcie\.0' does not support hotplugging\n {2}QEMU has no free PCIe root port .*-device pcie-root-port/);
  assert.deepEqual(refused.commands.at(-1), { command: 'chardev-remove', args: { id: 'twindisk-r0-sock' } });

  const twice = await scriptedQmp('attach-twice.qmp', (command) => ({ return: command === 'query-chardev' ? [{ label: 'twindisk-r0-sock' }] : {} }));
  const t = await twindisk('qemu', 'attach', '--qmp', twice.socket, '--config', file, '--node', 'alpha');
  assert.equal(t.status, 1);
  assert.match(t.stderr, /QEMU has twindisk-r0 attached already/);
  assert.ok(!twice.commands.some((c) => c.command === 'chardev-add'));
});

test('qemu attach refuses a socket nobody serves (device_add would hang QEMU\'s monitor)', async () => {
  const qmp = await scriptedQmp('attach-dead.qmp', () => ({ return: {} }));
  const r = await twindisk('qemu', 'attach', '--qmp', qmp.socket, '--socket', path.join(dir, 'nobody.sock'));
  assert.equal(r.status, 1);
  assert.match(r.stderr, /no vhost-user socket at .*nobody\.sock: start the back-end first \(twindisk serve --image FILE --socket/);
  // A socket left by a back-end that was killed: the file is there, nothing listens.
  const stale = path.join(dir, 'stale.sock');
  const holder = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(stale)}, () => console.log('up'))`], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise((res) => holder.stdout.once('data', res));
  holder.kill('SIGKILL');
  await new Promise((res) => holder.once('exit', res));
  assert.ok(fs.statSync(stale).isSocket());
  const r2 = await twindisk('qemu', 'attach', '--qmp', qmp.socket, '--socket', stale);
  assert.equal(r2.status, 1);
  assert.match(r2.stderr, /nothing listens on .*stale\.sock \(a socket left by a stopped back-end\?\): start it first/);
  assert.equal(qmp.commands.length, 0);
});

test('qemu detach: device_del, DEVICE_DELETED, chardev-remove; a guest that never lets go times out with a clear message', async () => {
  const file = resourceFile('detach.json');
  const ok = await scriptedQmp('detach-ok.qmp', (command, args, event) => {
    if (command === 'device_del') event('DEVICE_DELETED', { device: args!.id, path: `/machine/peripheral/${args!.id}` });
    return { return: {} };
  });
  const r = await twindisk('qemu', 'detach', '--qmp', ok.socket, '--config', file, '--node', 'alpha');
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.equal(r.stdout, 'detached r0/alpha (twindisk-r0)\n');
  assert.deepEqual(ok.commands.slice(1), [{ command: 'device_del', args: { id: 'twindisk-r0' } }, { command: 'chardev-remove', args: { id: 'twindisk-r0-sock' } }]);

  const stuck = await scriptedQmp('detach-stuck.qmp', () => ({ return: {} }));
  const t = await twindisk('qemu', 'detach', '--qmp', stuck.socket, '--id', 'disk7', '--timeout', '1');
  assert.equal(t.status, 1);
  assert.match(t.stderr, /the guest did not release disk7 within 1 s .*run detach again/s);
  assert.ok(!stuck.commands.some((c) => c.command === 'chardev-remove'), 'the chardev stays while the device may still use it');

  const missing = await scriptedQmp('detach-missing.qmp', (command) => (command === 'device_del'
    ? { error: { class: 'DeviceNotFound', desc: 'Device \'twindisk0\' not found' } }
    : { return: [] }));
  const m = await twindisk('qemu', 'detach', '--qmp', missing.socket, '--socket', '/tmp/s.sock');
  assert.equal(m.status, 1);
  assert.match(m.stderr, /QEMU refused device_del: Device 'twindisk0' not found\n {2}QEMU has no device with that id: check --id/);

  // The guest let go after an earlier detach timed out: only the chardev is left, and detach removes it.
  const leftover = await scriptedQmp('detach-leftover.qmp', (command) => (command === 'device_del'
    ? { error: { class: 'DeviceNotFound', desc: 'Device \'disk7\' not found' } }
    : { return: command === 'query-chardev' ? [{ label: 'disk7-sock' }] : {} }));
  const l = await twindisk('qemu', 'detach', '--qmp', leftover.socket, '--id', 'disk7');
  assert.equal(l.status, 0, l.stderr);
  assert.match(l.stdout, /detached disk7 \(disk7\): its device was gone already, its socket is now released/);
});

test('QMP socket problems are said plainly', async () => {
  const notSocket = path.join(dir, 'plain-file');
  fs.writeFileSync(notSocket, '');
  const r = await twindisk('qemu', 'detach', '--qmp', notSocket, '--id', 'd');
  assert.equal(r.status, 1);
  assert.match(r.stderr, /plain-file is not a socket: --qmp names QEMU's QMP socket/);
});

test('pure parts: hints, progress rows, the summary, free root ports, listening sockets', () => {
  assert.match(qmpHint('device_add', "Bus 'pcie.0' does not support hotplugging"), /pcie-root-port/);
  assert.match(qmpHint('migrate', 'Migration disabled: vhost lacks VHOST_F_LOG_ALL feature.'), /dirty logging/);
  assert.equal(qmpHint('query-status', 'something else'), '');
  const row = migrationRow({ status: 'active', ram: { transferred: 768 << 20, remaining: 256 << 20, total: 1 << 30, mbps: 1000, 'dirty-sync-count': 2 } });
  assert.equal(row.percent, 75);
  assert.equal(row.detail, 'active, 768.0 MiB sent, 256.0 MiB left, 1000 Mbit/s, pass 2');
  assert.equal(migrationRow({ status: 'setup' }).percent, 0);
  assert.match(migrationSummary({ status: 'completed', downtime: 7 }, 'h:1'), /^migrated to h:1 \(downtime 7 ms\)/);
  assert.equal(freeHotplugBus([{ bus: 0, devices: [{ qdev_id: 'rp0', pci_bridge: { devices: [] } }, { qdev_id: 'twindisk-hp0', pci_bridge: { devices: [] } }] }]), 'twindisk-hp0');
  assert.equal(freeHotplugBus([{ bus: 0, devices: [{ qdev_id: 'rp0', pci_bridge: { devices: [{ qdev_id: 'x' }] } }] }]), null);
  const table = path.join(dir, 'unix');
  fs.writeFileSync(table, 'Num       RefCount Protocol Flags    Type St Inode Path\n'
    + '0000000000000000: 00000002 00000000 00010000 0001 01 1234 /run/a.sock\n'
    + '0000000000000000: 00000002 00000000 00000000 0001 03 1235 /run/b.sock\n');
  assert.equal(socketListening('/run/a.sock', table), true);
  assert.equal(socketListening('/run/b.sock', table), false);
  assert.equal(socketListening('/run/a.sock', path.join(dir, 'no-table')), null);
});

/** A stand-in QEMU: prints its arguments one per line, then runs `tail` (sh). */
function fakeQemu(name: string, tail: string): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, `#!/bin/sh\nprintf '%s\\n' "$@"\n${tail}\n`, { mode: 0o755 });
  return file;
}

test('qemu run: QEMU gets the options, the boot choice, --incoming and what follows --; its exit status is ours', async () => {
  const file = resourceFile('run.json');
  const qemu = fakeQemu('qemu-exit3', 'exit 3');
  const r = await twindisk('qemu', 'run', '--config', file, '--node', 'alpha', '--qemu', qemu, '--accel', 'tcg', '--memory', '512M', '--cpus', '2',
    '--disk-boot', '--incoming', '4444', '--hotplug-ports', '2', '--', '-no-reboot', '-name', 'guest one');
  assert.equal(r.status, 3, r.stderr);
  assert.deepEqual(r.stdout.trimEnd().split('\n'), [
    '-accel', 'tcg', '-nographic', '-smp', '2',
    '-m', '512M', '-object', 'memory-backend-memfd,id=twindisk-mem,size=512M,share=on', '-machine', 'q35,memory-backend=twindisk-mem',
    '-device', 'pcie-root-port,id=twindisk-hp0,chassis=200,slot=0', '-device', 'pcie-root-port,id=twindisk-hp1,chassis=201,slot=0',
    '-chardev', `socket,id=twindisk-r0-sock,path=${dir}/alpha.sock,reconnect=1`,
    '-device', 'vhost-user-blk-pci,id=twindisk-r0,chardev=twindisk-r0-sock,num-queues=2,bootindex=1',
    '-qmp', `unix:${dir}/alpha.qmp,server=on,wait=off`,
    '-incoming', 'tcp:0.0.0.0:4444',
    '-no-reboot', '-name', 'guest one',
  ]);
  assert.ok(r.stderr.includes(`twindisk: QMP socket: ${dir}/alpha.qmp`), r.stderr);
  assert.match(r.stderr, /waiting for the migration stream on tcp:0\.0\.0\.0:4444/);

  const k = await twindisk('qemu', 'run', '--socket', path.join(dir, 's.sock'), '--qemu', qemu, '--accel', 'tcg', '--console', 'none',
    '--hotplug-ports', '0', '--kernel', '/dev/null', '--initrd', '/dev/null', '--append', 'console=ttyS0 quiet');
  assert.equal(k.status, 3, k.stderr);
  assert.match(k.stdout, /^-accel\ntcg\n-display\nnone\n/);
  assert.match(k.stdout, /\n-kernel\n\/dev\/null\n-initrd\n\/dev\/null\n-append\nconsole=ttyS0 quiet\n$/);
  assert.doesNotMatch(k.stdout, /pcie-root-port/);

  const missing = await twindisk('qemu', 'run', '--socket', path.join(dir, 's.sock'), '--qemu', path.join(dir, 'no-qemu'));
  assert.equal(missing.status, 1);
  assert.match(missing.stderr, /no-qemu is not installed: apt-get install qemu-system-x86/);
});

test('qemu run passes SIGTERM on to QEMU and exits with what QEMU exits with', async () => {
  // The stand-in gives up by itself after 30 s, so it cannot outlive a failed test.
  const qemu = fakeQemu('qemu-trap', `trap 'echo got-term; exit 7' TERM\necho "ready $$"\ni=0; while [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done`);
  const c = spawn(process.execPath, [cli, 'qemu', 'run', '--socket', path.join(dir, 't.sock'), '--qmp', path.join(dir, 't.qmp'), '--qemu', qemu, '--accel', 'tcg'],
    { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  c.stdout.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((r) => c.once('exit', (code) => r(code)));
  let pid = 0;
  try {
    let ready: RegExpExecArray | null;
    while (!(ready = /^ready (\d+)$/m.exec(out))) {
      assert.equal(c.exitCode, null, `qemu run exited early: ${out}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    pid = Number(ready[1]);
    c.kill('SIGTERM');
    assert.equal(await exited, 7);
    assert.match(out, /got-term/);
  } finally {
    if (pid) try { process.kill(pid, 'SIGKILL'); } catch { /* gone, as it should be */ }
    c.stdout.destroy();
  }
});

test('qemu run refuses a QMP socket another QEMU listens on', async () => {
  const busy = path.join(dir, 'busy.qmp');
  await listeningSocket(busy);
  const r = await twindisk('qemu', 'run', '--socket', path.join(dir, 's.sock'), '--qmp', busy, '--qemu', fakeQemu('qemu-never', 'exit 0'), '--accel', 'tcg');
  assert.equal(r.status, 1);
  assert.match(r.stderr, /another QEMU listens on .*busy\.qmp: stop it, or pass --qmp PATH/);
  assert.equal(r.stdout, '', 'QEMU was not started');
});
