// A node's disk has one owner: `twindisk up`, `create-md`, `attach` and `serve` lock it before they read or
// write it, and a refused or failed start leaves it byte for byte as it was. Processes on loopback, no guest.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, test } from 'node:test';
import { lockDisk } from '../../../engine/disk-lock.js';
import { Metadata, MD_UNIT } from '../../../engine/replication/metadata.js';
import { writeRandom } from '../../harness/blk-client.js';
import { clusterFactory, pairWithClient } from '../../harness/cluster.js';
import { cli, serve, tmpDir } from '../../harness/serve.js';

const cluster = clusterFactory(after);

/** Runs the CLI to completion: exit code and everything it printed. */
function twindisk(args: string[]): { status: number | null; out: string } {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 30000 });
  return { status: r.status, out: r.stdout + r.stderr };
}

function sha256(file: string): string {
  return createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

const re = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** The refusal for a file a running `up` of `node` in `config` holds. */
function heldByNode(file: string, config: string, node: string, pid: number): RegExp {
  return new RegExp(`${re(file)} is in use by twindisk up --config ${re(config)} --node ${node} \\(pid ${pid}\\): `
    + `stop that node first \\(twindisk down --config ${re(config)} --node ${node}\\)`);
}

test('a second `up` of a running Primary is refused before it opens the disk: nothing written, the holder named', async () => {
  const c = await cluster({ nodes: { alpha: { disk: true } } });
  const alpha = c.node('alpha');
  await alpha.start();
  c.cli(['primary', '--config', c.file, '--node', 'alpha']);
  await alpha.waitStatus((s) => s.role === 'Primary', 'alpha Primary');
  const before = sha256(alpha.image);
  const r = twindisk(['up', '--config', c.file, '--node', 'alpha']);
  assert.equal(r.status, 1, r.out);
  assert.match(r.out, /^twindisk: cannot start r0\/alpha: /m);
  assert.match(r.out, heldByNode(alpha.image, c.file, 'alpha', alpha.child!.pid!));
  assert.doesNotMatch(r.out, /crashed while Primary|disk attached|node down/, 'nothing of the disk was opened, nothing shut down');
  assert.equal(sha256(alpha.image), before, 'the running Primary\'s disk is byte-identical');
  const s = await alpha.status();
  assert.deepEqual([s.role, s.disk], ['Primary', 'UpToDate']);
  await alpha.stop();
});

test('`up` from a copy of the resource file in another directory is refused on the disk, not on the port', async () => {
  const c = await cluster({ nodes: { alpha: { disk: true }, beta: { disk: true } } });
  const alpha = c.node('alpha');
  await alpha.start();
  const cfg = JSON.parse(fs.readFileSync(c.file, 'utf8'));
  cfg.nodes.alpha.disk = alpha.image; // absolute: the same disk
  cfg.nodes.beta.disk = c.node('beta').image;
  const copy = path.join(tmpDir('twindisk-copy-'), 'r0.json');
  fs.writeFileSync(copy, JSON.stringify(cfg));
  const before = sha256(alpha.image);
  const r = twindisk(['up', '--config', copy, '--node', 'alpha']);
  assert.equal(r.status, 1, r.out);
  assert.match(r.out, heldByNode(alpha.image, c.file, 'alpha', alpha.child!.pid!));
  assert.doesNotMatch(r.out, /cannot listen|crashed while Primary|node down/);
  assert.equal(sha256(alpha.image), before);
  await alpha.stop();
});

test('create-md --force on a running node\'s disk is refused and changes nothing', async () => {
  const c = await cluster({ nodes: { alpha: { disk: true }, beta: { disk: true } } });
  const alpha = c.node('alpha');
  await alpha.start();
  const before = sha256(alpha.image);
  for (const extra of [['--force'], ['--force', '--assume-clean'], []]) {
    const r = twindisk(['create-md', '--config', c.file, '--node', 'alpha', ...extra]);
    assert.equal(r.status, 1, r.out);
    assert.match(r.out, /^twindisk: cannot create-md for r0\/alpha: /m);
    assert.match(r.out, heldByNode(alpha.image, c.file, 'alpha', alpha.child!.pid!));
  }
  assert.equal(sha256(alpha.image), before);
  assert.equal((await alpha.status()).disk, 'UpToDate');
  // Once the node is down, create-md works again.
  await alpha.stop();
  c.cli(['create-md', '--config', c.file, '--node', 'alpha', '--force']);
});

test('external metadata is locked too: a second node on the same meta-disk is refused', async () => {
  const c = await cluster({ nodes: { alpha: { disk: true }, beta: { disk: true } } });
  const cfg = JSON.parse(fs.readFileSync(c.file, 'utf8'));
  const md = path.join(c.dir, 'alpha.md');
  fs.rmSync(path.join(c.dir, 'alpha.img'));
  cfg.nodes.alpha['meta-disk'] = 'alpha.md';
  fs.writeFileSync(c.file, JSON.stringify(cfg));
  c.cli(['create-md', '--config', c.file, '--node', 'alpha', '--size', String(c.size), '--assume-clean']);
  const alpha = c.node('alpha');
  await alpha.start();
  // A copy whose alpha has another backing file but the same metadata file.
  cfg.nodes.alpha.disk = path.join(c.dir, 'other.img');
  cfg.nodes.alpha['meta-disk'] = md;
  cfg.nodes.beta.disk = c.node('beta').image;
  fs.writeFileSync(path.join(c.dir, 'other.img'), Buffer.alloc(c.size));
  const copy = path.join(tmpDir('twindisk-copy-'), 'r0.json');
  fs.writeFileSync(copy, JSON.stringify(cfg));
  const before = sha256(md);
  const r = twindisk(['up', '--config', copy, '--node', 'alpha']);
  assert.equal(r.status, 1, r.out);
  assert.match(r.out, heldByNode(md, c.file, 'alpha', alpha.child!.pid!));
  assert.equal(sha256(md), before);
  await alpha.stop();
});

test('a start that fails after opening the disk (port taken) leaves the metadata exactly as found', async () => {
  const c = await cluster({ nodes: { alpha: { disk: true } } });
  const alpha = c.node('alpha');
  await alpha.start();
  c.cli(['primary', '--config', c.file, '--node', 'alpha']);
  await alpha.waitStatus((s) => s.role === 'Primary', 'alpha Primary');
  await alpha.stop('SIGKILL'); // crashed as Primary
  const before = sha256(alpha.image);
  const port = Number(JSON.parse(fs.readFileSync(c.file, 'utf8')).nodes.alpha.address.split(':')[1]);
  const squatter = net.createServer();
  await new Promise<void>((r) => squatter.listen(port, '127.0.0.1', r));
  try {
    const r = twindisk(['up', '--config', c.file, '--node', 'alpha']);
    assert.equal(r.status, 1, r.out);
    assert.match(r.out, /cannot listen on 127\.0\.0\.1:\d+: address in use/);
    assert.doesNotMatch(r.out, /node down|node up/);
    assert.equal(sha256(alpha.image), before, 'no clean superblock, no emptied activity log: it never served');
  } finally {
    await new Promise((r) => squatter.close(r));
  }
  // The lock went with the failed process, and the crash is still on record for the real start.
  await alpha.start(); // (its log still holds the first run's "is up": wait for the second one)
  await alpha.waitLog(/crashed while Primary[\s\S]*is up \(control socket/);
  await alpha.stop();
});

test('a detached disk stays locked by its node; a replacement file prepared with create-md is attached and locked', async () => {
  const { c, alpha, g } = await pairWithClient(cluster);
  try {
    writeRandom(g, 0, 4096);
    await alpha.call({ cmd: 'fault', kind: 'write', offset: 8 * 4096, length: 4096 });
    writeRandom(g, 8 * 4096, 4096);
    await alpha.waitLog(/local disk failed .*detaching it/);
    assert.equal((await alpha.status()).disk, 'Diskless');
    const before = sha256(alpha.image);
    const r = twindisk(['create-md', '--config', c.file, '--node', 'alpha', '--force']);
    assert.equal(r.status, 1, r.out);
    assert.match(r.out, heldByNode(alpha.image, c.file, 'alpha', alpha.child!.pid!));
    assert.equal(sha256(alpha.image), before);
    // A new file at the disk's path (the failed one kept aside) belongs to nobody yet.
    fs.renameSync(alpha.image, `${alpha.image}.failed`);
    c.cli(['create-md', '--config', c.file, '--node', 'alpha', '--size', String(c.size)]);
    await alpha.call({ cmd: 'fault', kind: 'clear' }).catch(() => undefined);
    c.cli(['attach', '--config', c.file, '--node', 'alpha']);
    await alpha.waitStatus((s) => s.disk === 'UpToDate' && s.peers.beta?.replication === 'Established' && s.peers.beta.outOfSyncBytes === 0, 'alpha resynced', 30000);
    assert.ok(c.data('alpha').equals(c.data('beta')));
    // The node holds the new file now, and let go of the old one.
    const again = twindisk(['create-md', '--config', c.file, '--node', 'alpha', '--force']);
    assert.equal(again.status, 1, again.out);
    assert.match(again.out, heldByNode(alpha.image, c.file, 'alpha', alpha.child!.pid!));
    lockDisk(`${alpha.image}.failed`, 'test').release();
  } finally {
    g.fe.close();
  }
});

test('serve locks its image: a second serve is refused, read-only serves share it and keep writers out', async () => {
  const dir = tmpDir();
  const image = path.join(dir, 'disk.img');
  const a = await serve({ image, socket: path.join(dir, 'a.sock'), args: ['--size', '16M'], dir });
  try {
    const before = sha256(image);
    const r = twindisk(['serve', '--image', image, '--socket', path.join(dir, 'b.sock')]);
    assert.equal(r.status, 1, r.out);
    assert.match(r.out, new RegExp(`cannot serve ${re(image)}: ${re(image)} is in use by twindisk serve --image ${re(image)} `
      + `--socket ${re(path.join(dir, 'a.sock'))} --size 16M \\(pid ${a.child.pid}\\): stop it first \\(Ctrl-C in its terminal, or kill ${a.child.pid}\\)`));
    const ro = twindisk(['serve', '--image', image, '--socket', path.join(dir, 'c.sock'), '--read-only']);
    assert.equal(ro.status, 1, 'a reader is refused while a writer serves');
    assert.equal(sha256(image), before);
  } finally {
    await a.stop();
  }
  const r1 = await serve({ image, socket: path.join(dir, 'r1.sock'), args: ['--read-only'], dir });
  const r2 = await serve({ image, socket: path.join(dir, 'r2.sock'), args: ['--read-only'], dir });
  try {
    const w = twindisk(['serve', '--image', image, '--socket', path.join(dir, 'w.sock')]);
    assert.equal(w.status, 1, w.out);
    assert.match(w.out, new RegExp(`is in use by .*\\(pid (${r1.child.pid}|${r2.child.pid})\\), .*\\(pid \\d+\\): stop them first`));
  } finally {
    await r1.stop();
    await r2.stop();
  }
});

test('a damaged superblock slot is reported: which one, why, and that the other was used', async () => {
  const c = await cluster({ nodes: { alpha: { disk: true } } });
  const alpha = c.node('alpha');
  // create-md --assume-clean left slot 0 at seq 3 (the close) and slot 1 at seq 2.
  const end = Math.floor(fs.statSync(alpha.image).size / MD_UNIT) * MD_UNIT;
  const fd = fs.openSync(alpha.image, 'r+');
  fs.writeSync(fd, Buffer.from('torn'), 0, 4, end - 2 * MD_UNIT + 100);
  fs.closeSync(fd);
  await alpha.start();
  assert.match(alpha.log(), new RegExp(`WARN  r0/alpha: metadata superblock slot 0 on ${re(alpha.image)} is damaged \\(checksum mismatch\\): `
    + 'using slot 1 \\(seq 2\\); the next metadata update rewrites slot 0'));
  await alpha.stop();
  const md = Metadata.open({ backingFile: alpha.image, metaFile: null });
  assert.equal(md.openReport.badSuperblock, null, 'the clean shutdown rewrote slot 0');
  md.abandon();
});
