// `twindisk qemu libvirt-xml`: libvirt's own schema (virt-xml-validate) accepts the vhostuser disk and the
// shared memory backing it prints, inside a complete domain, and the --domain form as it is.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { TEST_SECRET } from '../harness/cluster.js';
import { cli } from '../harness/serve.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'twindisk-libvirt-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

function twindisk(...args: string[]): string {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 30000 });
  assert.equal(r.status, 0, `twindisk ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

/** virt-xml-validate's verdict on `xml` (domain schema). */
function validate(name: string, xml: string): { ok: boolean; output: string } {
  const file = path.join(dir, name);
  fs.writeFileSync(file, xml);
  const r = spawnSync('virt-xml-validate', [file, 'domain'], { encoding: 'utf8' });
  assert.notEqual(r.error?.message.includes('ENOENT'), true,
    'virt-xml-validate is missing: apt-get install libvirt-clients libxml2-utils (scripts/setup.sh installs them)');
  return { ok: r.status === 0, output: r.stdout + r.stderr };
}

const config = path.join(dir, 'r0.json');
fs.writeFileSync(config, JSON.stringify({
  resource: 'r0', secret: TEST_SECRET,
  nodes: { alpha: { address: '127.0.0.1:7789', disk: 'alpha.img', socket: '/run/twindisk/r0.sock', queues: 4 }, beta: { address: '127.0.0.1:7790', disk: 'beta.img' } },
}));

test('the snippet, put into a complete domain, is valid libvirt domain XML', () => {
  const snippet = twindisk('qemu', 'libvirt-xml', '--config', config, '--node', 'alpha', '--target-dev', 'vdb');
  const memoryBacking = /<memoryBacking>[\s\S]*?<\/memoryBacking>/.exec(snippet)?.[0];
  const disk = /<disk type='vhostuser'[\s\S]*?<\/disk>/.exec(snippet)?.[0];
  assert.ok(memoryBacking && disk, snippet);
  assert.match(disk, /<source type='unix' path='\/run\/twindisk\/r0\.sock'>/);
  assert.match(disk, /queues='4'/);
  // A domain as one might already have it (a boot disk, a NIC), with the snippet added.
  const domain = `<domain type='kvm'>
  <name>guest1</name>
  <memory unit='GiB'>2</memory>
  ${memoryBacking}
  <vcpu>4</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type><boot dev='hd'/></os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/guest1.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    ${disk}
    <interface type='network'><source network='default'/><model type='virtio'/></interface>
  </devices>
</domain>
`;
  const v = validate('guest1.xml', domain);
  assert.ok(v.ok, v.output);
  // The check is real: a misspelt disk type is refused.
  assert.equal(validate('broken.xml', domain.replace(`type='vhostuser'`, `type='vhost-user'`)).ok, false);
});

test('--domain prints a whole domain that validates', () => {
  const xml = twindisk('qemu', 'libvirt-xml', '--config', config, '--node', 'alpha', '--domain', 'vm1', '--memory', '2G', '--cpus', '2');
  assert.match(xml, /<name>vm1<\/name>/);
  const v = validate('vm1.xml', xml);
  assert.ok(v.ok, v.output);
});
