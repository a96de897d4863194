// ocf:twindisk:resource under a real Pacemaker: three cluster nodes (corosync 3 with knet + pacemakerd, each in
// network, mount, PID and UTS namespaces of its own: test/harness/pacemaker.ts) run a twindisk resource of
// three nodes (alpha and beta with disks, gamma a diskless tie-breaker, quorum majority) as a promotable clone
// of the repository's contrib/ocf/resource, configured with cibadmin. Pacemaker starts the clone and promotes
// a disk node; a QEMU guest writes through the Primary's vhost-user socket; then the Primary's whole node dies
// (its link cut, then corosync, every Pacemaker daemon and the twindisk node SIGKILLed with its PID
// namespace); the two survivors keep quorum, Pacemaker promotes the other disk node, and every write
// the guest saw acknowledged before the crash reads back in a guest started on it, as Pacemaker would restart
// the VM there (ocf:heartbeat:VirtualDomain in the README); once that guest leaves, the node stays Promoted. STONITH is disabled (stonith-enabled=false: there is no
// fence device here; the twindisk quorum is what keeps a cut-off node from being promoted), no-quorum-policy
// is stop. Needs root, corosync and pacemaker (scripts/setup.sh installs them); fails, saying so, without.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { Guest, runGuest } from '../harness/guest.js';
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
const guests: Guest[] = [];

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
  for (const g of guests) await g.kill().catch(() => undefined);
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

  // A real QEMU guest writes through the Primary: block i holds "pcmk-block-i" repeated, and the guest prints
  // "acked i" only once its O_DIRECT write returned (protocol C: on every connected disk by then).
  const writer = await Guest.launch({
    disks: [{ socket: c.node(primary).socket }],
    script: `
      i=0
      while [ $i -lt 4000 ]; do
        yes "pcmk-block-$i" | head -c 4096 | dd of=/dev/vda bs=4k seek=$i oflag=direct 2>/dev/null || { echo "failed $i"; break; }
        echo "acked $i"
        i=$((i + 1))
      done
    `,
  });
  guests.push(writer);
  await writer.waitFor(/acked 30\b/, 180_000);

  // The Primary's node dies: its link first (no FIN or RST reaches anyone), then every process in it.
  const victim = NAMES.indexOf(primary);
  net!.cut(victim);
  await p.kill(primary);
  await writer.kill();
  const acked = [...writer.output.matchAll(/acked (\d+)/g)].map((m) => Number(m[1]));
  const last = Math.max(...acked);
  assert.ok(last >= 30, writer.output);

  const failover = Date.now();
  const later = await p.waitView(other, RSC, (v) => v.roles[other] === 'Promoted' && !v.online.includes(primary),
    `${other} Promoted after ${primary} died`, 180_000);
  assert.equal(later.roles.gamma, 'Unpromoted', JSON.stringify(later));
  assert.ok(later.quorate, 'the two survivors have quorum');
  const st2 = await c.node(other).status();
  assert.equal(st2.role, 'Primary', `${other} is Promoted in Pacemaker but twindisk says ${st2.role}`);
  assert.equal(st2.disk, 'UpToDate');
  console.log(`# ${primary} killed; ${other} Promoted after ${((Date.now() - failover) / 1000).toFixed(1)} s`);

  // A guest started on the new Primary (as Pacemaker would restart the VM there) reads every acknowledged block.
  const r = await runGuest({
    disks: [{ socket: c.node(other).socket }],
    script: `
      i=0; bad=0
      while [ $i -le ${last} ]; do
        want=$(yes "pcmk-block-$i" | head -c 4096 | md5sum | cut -d' ' -f1)
        got=$(dd if=/dev/vda bs=4k skip=$i count=1 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
        [ "$want" = "$got" ] || { echo "block $i differs"; bad=$((bad + 1)); }
        i=$((i + 1))
      done
      echo "checked $i bad $bad"
    `,
  });
  assert.equal(r.exitCode, 0, r.output);
  assert.match(r.output, new RegExp(`checked ${last + 1} bad 0`), `every write acknowledged by ${primary} is on ${other}:\n${r.output}\n${pcmk!.diagnostics(other)}`);
  // The guest left; a node Pacemaker promoted stays Primary (auto-demote undoes only auto-promote), so its monitor still says Promoted.
  const st3 = await c.node(other).status();
  assert.equal(st3.role, 'Primary', 'the guest leaving did not demote a node the cluster manager promoted');
  await sleep(11_000); // one Promoted monitor interval (9 s) and then some
  const still = await p.waitView(other, RSC, (v) => v.roles[other] === 'Promoted', `${other} still Promoted`, 30_000);
  const mine = still.failures.filter((f) => f.includes(`node="${other}"`));
  assert.deepEqual(mine, [], `no failed action on ${other} after the guest left: ${mine.join('\n')}`);
});
