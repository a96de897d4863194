// Tests of the disk lock: exclusive and shared flocks, the holder named from /proc/locks, release, replaced files.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { DiskLockError, describeHolders, lockDisk, lockHolders } from '../../engine/disk-lock.js';

function tmp(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'twindisk-lock-'));
  process.on('exit', () => fs.rmSync(d, { recursive: true, force: true }));
  return d;
}

const moduleUrl = pathToFileURL(path.resolve(path.dirname(new URL(import.meta.url).pathname), '../../engine/disk-lock.js')).href;

/** A child process holding a lock on `file` until killed. */
async function holder(file: string, shared = false): Promise<{ pid: number; kill: () => Promise<void> }> {
  const code = `import { lockDisk } from ${JSON.stringify(moduleUrl)}; lockDisk(${JSON.stringify(file)}, 'hold', { shared: ${shared} }); console.log('locked'); setInterval(() => {}, 1000);`;
  const c = spawn(process.execPath, ['--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    c.stdout!.on('data', (d) => { if (String(d).includes('locked')) resolve(); });
    c.once('exit', (code) => reject(new Error(`holder exited (${code})`)));
  });
  return { pid: c.pid!, kill: () => new Promise<void>((r) => { c.once('exit', () => r()); c.kill('SIGKILL'); }) };
}

test('an exclusive lock refuses a second one, in this process or another, naming the holder; release frees it', async () => {
  const file = path.join(tmp(), 'r0.img');
  fs.writeFileSync(file, 'data');
  const lock = lockDisk(file, 'start r0/alpha');
  assert.throws(() => lockDisk(file, 'start r0/alpha'), (e: unknown) => {
    assert.ok(e instanceof DiskLockError);
    assert.equal(e.code, 'busy');
    assert.deepEqual(e.holders.map((h) => h.pid), [process.pid]);
    assert.ok(e.message.startsWith(`cannot start r0/alpha: ${file} is in use by `));
    assert.match(e.message, new RegExp(`\\(pid ${process.pid}\\): stop it first$`));
    return true;
  });
  lock.release();
  lock.release(); // idempotent
  const h = await holder(file);
  try {
    const holders = lockHolders(file);
    assert.equal(holders.length, 1);
    assert.equal(holders[0]!.pid, h.pid);
    assert.equal(holders[0]!.argv![0], process.execPath);
    assert.throws(() => lockDisk(file, 'x'), new RegExp(`is in use by .*--input-type=module -e .*\\(pid ${h.pid}\\)`));
    assert.throws(() => lockDisk(file, 'x', { shared: true }), /is in use by/);
  } finally {
    await h.kill();
  }
  lockDisk(file, 'again').release(); // gone with its process
  assert.equal(fs.readFileSync(file, 'utf8'), 'data', 'locking never writes');
});

test('shared locks coexist and keep an exclusive one out, which names every holder', async () => {
  const file = path.join(tmp(), 'ro.img');
  fs.writeFileSync(file, '');
  const a = lockDisk(file, 'serve', { shared: true });
  const h = await holder(file, true);
  try {
    assert.throws(() => lockDisk(file, 'serve'), (e: unknown) => {
      assert.ok(e instanceof DiskLockError);
      assert.deepEqual(e.holders.map((x) => x.pid).sort(), [process.pid, h.pid].sort());
      assert.match(e.message, /stop them first$/);
      return true;
    });
  } finally {
    await h.kill();
    a.release();
  }
});

test('missing files, created files, and a file replaced under its lock', () => {
  const dir = tmp();
  const file = path.join(dir, 'new.img');
  assert.throws(() => lockDisk(file, 'start r0/alpha'), (e: unknown) => e instanceof DiskLockError && e.code === 'missing' && e.message === `cannot start r0/alpha: ${file} does not exist`);
  assert.throws(() => lockDisk(path.join(dir, 'no', 'such', 'x.img'), 'create-md', { create: true }),
    new RegExp(`cannot create-md: the directory ${dir}/no/such does not exist \\(create it first: mkdir -p ${dir}/no/such\\)`));
  const lock = lockDisk(file, 'create-md', { create: true });
  assert.equal(fs.statSync(file).size, 0);
  assert.equal(lock.stillNames(), true);
  fs.renameSync(file, `${file}.old`);
  assert.equal(lock.stillNames(), false, 'renamed away');
  fs.writeFileSync(file, '');
  assert.equal(lock.stillNames(), false, 'another file at the path');
  lockDisk(file, 'the new file is free').release();
  assert.throws(() => lockDisk(`${file}.old`, 'x'), /is in use/);
  lock.release();
});

test('describeHolders: twindisk command lines shortened, with the way to stop each', () => {
  const node = '/usr/bin/node';
  const script = '/opt/twindisk/dist/cli/twindisk.js';
  assert.equal(describeHolders([{ pid: 42, argv: [node, script, 'up', '--config', 'r0.json', '--node', 'alpha'], cwd: '/etc/twindisk' }]),
    'twindisk up --config r0.json --node alpha (pid 42): stop that node first (twindisk down --config /etc/twindisk/r0.json --node alpha)');
  assert.equal(describeHolders([{ pid: 7, argv: [node, '--cpu-prof', script, 'up', '--config=/r/r0.json', '--node', 'b'], cwd: null }]),
    'twindisk up --config=/r/r0.json --node b (pid 7): stop that node first (twindisk down --config /r/r0.json --node b)');
  assert.equal(describeHolders([{ pid: 9, argv: ['/usr/local/bin/twindisk', 'serve', '--image', 'my disk.img', '--socket', 's'], cwd: '/' }]),
    "twindisk serve --image 'my disk.img' --socket s (pid 9): stop it first (Ctrl-C in its terminal, or kill 9)");
  assert.equal(describeHolders([{ pid: 5, argv: [node, script, 'create-md', '--config', 'r0.json', '--node', 'a'], cwd: '/' }]),
    'twindisk create-md --config r0.json --node a (pid 5): let it finish first');
  assert.equal(describeHolders([{ pid: 3, argv: ['qemu-img', 'convert', 'a', 'b'], cwd: '/' }]), 'qemu-img convert a b (pid 3): stop it first');
  assert.equal(describeHolders([{ pid: 3, argv: null, cwd: null }]), 'a process (pid 3): stop it first');
  assert.match(describeHolders([]), /^another process/);
});
