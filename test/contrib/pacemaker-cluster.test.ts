// ocf:twindisk:resource under a real Pacemaker: three cluster nodes (corosync 3 with knet + pacemakerd, each in
// network, mount, PID and UTS namespaces of its own: test/harness/pacemaker.ts) run a twindisk resource of
// three nodes (alpha and beta with disks, gamma a diskless tie-breaker, quorum majority) as a promotable clone
// of the repository's contrib/ocf/resource, configured with cibadmin. Pacemaker starts the clone and promotes
// a disk node; a vhost-user client writes through the Primary's socket; then the Primary's whole node dies
// (its link cut, then corosync, every Pacemaker daemon and the twindisk node SIGKILLed with its PID
// namespace); the two survivors keep quorum, Pacemaker promotes the other disk node, and every write
// acknowledged before the crash reads back from it. STONITH is disabled (stonith-enabled=false: there is no
// fence device here; the twindisk quorum is what keeps a cut-off node from being promoted), no-quorum-policy
// is stop. Needs root, corosync and pacemaker (scripts/setup.sh installs them); fails, saying so, without.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { attach, readBack, writeRandom, type BlkClient } from '../harness/blk-client.js';
import { clusterFactory, sleep, type Cluster } from '../harness/cluster.js';
import { TestNetwork } from '../harness/netns.js';
import { PacemakerCluster, requirePacemaker } from '../harness/pacemaker.js';
import { cli } from '../harness/serve.js';

const NAMES = ['alpha', 'beta', 'gamma'];
const RSC = 'td-r0';
const make = clusterFactory(after);
let net: TestNetwork | undefined;
let pcmk: PacemakerCluster | undefined;
let c: Cluster;
const clients: BlkClient[] = [];

/** The promotable clone of ocf:twindisk:resource, as cibadmin takes it. */
function cloneXml(config: string): string {
  const nv = (id: string, name: string, value: string) => `<nvpair id="${id}-${name}" name="${name}" value="${value}"/>`;
  const op = (name: string, interval: string, timeout: string, role?: string) =>
    `<op id="${RSC}-${name}-${interval}" name="${name}" interval="${interval}" timeout="${timeout}"${role ? ` role="${role}"` : ''}/>`;
  return `<clone id="${RSC}-clone">
  <meta_attributes id="${RSC}-clone-meta">
    ${nv(`${RSC}-clone`, 'promotable', 'true')}${nv(`${RSC}-clone`, 'promoted-max', '1')}${nv(`${RSC}-clone`, 'promoted-node-max', '1')}
    ${nv(`${RSC}-clone`, 'clone-max', '3')}${nv(`${RSC}-clone`, 'clone-node-max', '1')}${nv(`${RSC}-clone`, 'notify', 'true')}
  </meta_attributes>
  <primitive id="${RSC}" class="ocf" provider="twindisk" type="resource">
    <instance_attributes id="${RSC}-params">
      ${nv(RSC, 'config', config)}${nv(RSC, 'twindisk', cli)}${nv(RSC, 'nodejs', process.execPath)}
    </instance_attributes>
    <operations>
      ${op('monitor', '9s', '30s', 'Promoted')}${op('monitor', '10s', '30s', 'Unpromoted')}
      ${op('start', '0s', '90s')}${op('stop', '0s', '100s')}${op('promote', '0s', '90s')}${op('demote', '0s', '90s')}
    </operations>
  </primitive>
</clone>`;
}

before(async () => {
  requirePacemaker();
  net = new TestNetwork(3);
  c = await make({
    nodes: { alpha: { disk: true, socket: true }, beta: { disk: true, socket: true }, gamma: { disk: false } },
    resource: { quorum: 'majority' },
    size: 8 << 20,
    network: net,
  });
  pcmk = new PacemakerCluster(net, NAMES);
  await pcmk.start();
});

after(async () => {
  for (const g of clients) { try { g.fe.close(); } catch { /* its node is gone */ } }
  pcmk?.destroy();
  // The twindisk nodes ran in the cluster nodes' PID namespaces: gone with them.
  await sleep(500);
  net?.destroy();
});

test('Pacemaker promotes a twindisk disk node, and after that node is killed promotes the other; acknowledged writes survive', async () => {
  const p = pcmk!;
  // corosync forms the membership at once; Pacemaker elects a DC after dc-deadtime (20 s) at the latest.
  await p.waitView('alpha', RSC, (v) => v.dc !== null && v.quorate && v.online.length === 3, 'a DC with quorum and three nodes online', 120_000);
  p.execOk('alpha', 'crm_attribute', ['-t', 'crm_config', '-n', 'stonith-enabled', '-v', 'false']);
  p.execOk('alpha', 'crm_attribute', ['-t', 'crm_config', '-n', 'no-quorum-policy', '-v', 'stop']);
  const xml = path.join(p.dir, 'clone.xml');
  fs.writeFileSync(xml, cloneXml(c.file));
  p.execOk('alpha', 'cibadmin', ['-C', '-o', 'resources', '-x', xml]);

  // Started everywhere, one disk node promoted (the diskless gamma publishes no promotion score).
  const up = await p.waitView('alpha', RSC, (v) => {
    const r = Object.values(v.roles);
    return r.filter((x) => x === 'Promoted').length === 1 && r.filter((x) => x === 'Unpromoted').length === 2;
  }, 'the clone started on three nodes with one Promoted', 180_000);
  const primary = Object.keys(up.roles).find((n) => up.roles[n] === 'Promoted')!;
  assert.ok(primary === 'alpha' || primary === 'beta', `Pacemaker promoted ${primary}, which has no disk: ${JSON.stringify(up)}`);
  assert.deepEqual(up.failures, [], `failed actions: ${up.failures.join('\n')}`);
  const other = primary === 'alpha' ? 'beta' : 'alpha';
  const st = await c.node(primary).status();
  assert.equal(st.role, 'Primary', `${primary} is Promoted in Pacemaker but twindisk says ${st.role}`);

  // The guest's writes, acknowledged with protocol C (on every connected disk when they complete).
  const g = attach(c.node(primary).socket);
  clients.push(g);
  const written = new Map<number, Buffer>();
  for (const offset of [0, 256 << 10, 1 << 20, 5 << 20, (8 << 20) - (128 << 10)]) written.set(offset, writeRandom(g, offset, 128 << 10));
  for (const [offset, bytes] of written) assert.ok(readBack(g, offset, bytes.length).equals(bytes), `the write at ${offset} reads back different from ${primary} itself`);

  // The Primary's node dies: its link first (no FIN or RST reaches anyone), then every process in it.
  const victim = NAMES.indexOf(primary);
  net!.cut(victim);
  await p.kill(primary);

  const failover = Date.now();
  const later = await p.waitView(other, RSC, (v) => v.roles[other] === 'Promoted' && !v.online.includes(primary),
    `${other} Promoted after ${primary} died`, 180_000);
  assert.equal(later.roles.gamma, 'Unpromoted', JSON.stringify(later));
  assert.ok(later.quorate, 'the two survivors have quorum');
  const st2 = await c.node(other).status();
  assert.equal(st2.role, 'Primary', `${other} is Promoted in Pacemaker but twindisk says ${st2.role}`);
  assert.equal(st2.disk, 'UpToDate');
  console.log(`# ${primary} killed; ${other} Promoted after ${((Date.now() - failover) / 1000).toFixed(1)} s`);

  const g2 = attach(c.node(other).socket);
  clients.push(g2);
  for (const [offset, bytes] of written) {
    const got = readBack(g2, offset, bytes.length);
    if (!got.equals(bytes)) {
      const disk = c.data(other).subarray(offset, offset + bytes.length);
      assert.fail(`the write at ${offset} acknowledged by ${primary} reads back different from ${other}: ${got.every((b) => b === 0) ? 'zeros' : 'other bytes'}; `
        + `${other}'s backing file there ${disk.equals(bytes) ? 'has the write' : disk.every((b) => b === 0) ? 'is zeros' : 'has other bytes'}\n${pcmk!.diagnostics(other)}`);
    }
  }
});
