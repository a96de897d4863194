// A replicated volume over iSCSI: every node's portal serves it; a login to a Secondary promotes it (and the end of the
// session demotes it) or, when a peer is Primary, is redirected there; writes are on every replica; failover keeps them.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { clusterFactory, sleep } from '../../harness/cluster.js';
import { iscsiUrl, qemuIo, run } from '../../harness/iscsi.js';

const cluster = clusterFactory(after);
const IQN = 'iqn.2026-12.io.twindisk:r0';
const KiB = 1024;

function inSync(c: { data(n: string): Buffer }, a: string, b: string, off: number, len: number): boolean {
  return c.data(a).subarray(off, off + len).equals(c.data(b).subarray(off, off + len));
}

test('a login to a Secondary promotes it for the session; its writes are on both replicas; logout demotes it', async () => {
  const c = await cluster({ nodes: { alpha: { disk: true, iscsi: true }, beta: { disk: true, iscsi: true } } });
  await c.startAll();
  const alpha = c.node('alpha');
  const beta = c.node('beta');
  await beta.waitStatus((s) => Object.values(s.peers).some((p) => p.connection === 'Connected'), 'beta connected');
  const ls = await run('iscsi-ls', ['-s', `iscsi://127.0.0.1:${beta.iscsiPort}`]);
  assert.equal(ls.code, 0, ls.stderr);
  assert.match(ls.stdout, new RegExp(`Target:${IQN.replace(/\./g, '\\.')} Portal:127\\.0\\.0\\.1:${beta.iscsiPort}`));
  const w = await qemuIo(iscsiUrl(beta.iscsiPort, IQN), ['write -P 0x6b 128k 64k', 'flush']);
  assert.equal(w.code, 0, w.stdout + w.stderr);
  await beta.waitLog(/iSCSI session/);
  await beta.waitStatus((s) => s.role === 'Secondary', 'beta Secondary again after the logout');
  assert.match(c.cli(['status', '--config', c.file, '--node', 'beta']), /iscsi: 0 sessions, 0 connections/);
  assert.ok(c.data('alpha').subarray(128 * KiB, 192 * KiB).every((b) => b === 0x6b), 'protocol C: the write is on alpha');
  assert.ok(inSync(c, 'alpha', 'beta', 0, c.size), 'both replicas equal');
  // The SCSI identity is the resource's: the same designator through either portal.
  const a83 = await run('iscsi-inq', ['-e', '1', '-c', '131', iscsiUrl(alpha.iscsiPort, IQN)]);
  const b83 = await run('iscsi-inq', ['-e', '1', '-c', '131', iscsiUrl(beta.iscsiPort, IQN)]);
  assert.equal(a83.code, 0, a83.stderr);
  assert.equal(a83.stdout, b83.stdout, 'VPD 0x83 is the same on every node');
  await alpha.waitStatus((s) => s.role === 'Secondary', 'alpha Secondary');
});

test('a login to a Secondary while a peer is Primary is redirected to the Primary\'s portal', async () => {
  const c = await cluster({ nodes: { alpha: { disk: true, iscsi: true }, beta: { disk: true, iscsi: true } } });
  await c.startAll();
  const alpha = c.node('alpha');
  const beta = c.node('beta');
  c.cli(['primary', '--config', c.file, '--node', 'alpha']);
  await beta.waitStatus((s) => Object.values(s.peers).some((p) => p.role === 'Primary'), 'beta sees alpha Primary');
  const w = await qemuIo(iscsiUrl(beta.iscsiPort, IQN), ['write -P 0x3c 0 4k', 'read -P 0x3c 0 4k']);
  assert.equal(w.code, 0, w.stdout + w.stderr);
  assert.doesNotMatch(w.stdout, /verification failed/);
  await beta.waitLog(/redirecting an iSCSI login to alpha/);
  await alpha.waitLog(/iSCSI session/);
  assert.equal((await beta.status()).role, 'Secondary', 'beta was not promoted');
  await sleep(100);
  assert.ok(c.data('beta').subarray(0, 4096).every((b) => b === 0x3c), 'the write reached beta by replication');
});

test('failover: the Primary is killed, the initiator logs in to the survivor and every completed write reads back', async () => {
  const c = await cluster({ nodes: { alpha: { disk: true, iscsi: true }, beta: { disk: true, iscsi: true } } });
  await c.startAll();
  const alpha = c.node('alpha');
  const beta = c.node('beta');
  await beta.waitStatus((s) => Object.values(s.peers).some((p) => p.connection === 'Connected'), 'beta connected');
  // Completed writes through alpha's portal (qemu-io exits only after each write completed).
  const cmds: string[] = [];
  for (let i = 0; i < 16; i++) cmds.push(`write -P ${0x40 + i} ${i * 64}k 64k`);
  const w = await qemuIo(iscsiUrl(alpha.iscsiPort, IQN), cmds);
  assert.equal(w.code, 0, w.stdout + w.stderr);
  await alpha.stop('SIGKILL');
  await beta.waitStatus((s) => Object.values(s.peers).every((p) => p.connection !== 'Connected'), 'beta sees alpha gone');
  // The survivor's portal: with alpha gone and quorum off, beta promotes itself for the session.
  const r = await qemuIo(iscsiUrl(beta.iscsiPort, IQN), cmds.map((x) => x.replace('write', 'read')));
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.doesNotMatch(r.stdout, /verification failed/, 'every completed write reads back from the survivor');
});
