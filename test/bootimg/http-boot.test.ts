// Boot scripts over HTTP: the routing (pure) and a real server answering real requests.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { BootScriptServer, bootResponse } from '../../bootimg/http-boot.js';
import { ipxeScript, parseIscsiTarget } from '../../bootimg/ipxe.js';
import { Logger } from '../../engine/log.js';

const target = parseIscsiTarget('iscsi://10.0.2.2:3261/iqn.2026-12.io.twindisk:vm1');
const script = (mac: string | null) => `#!ipxe\n# for ${mac ?? 'anyone'}\n`;

test('/ chains to the per-client script with the MAC; /boot.ipxe answers it; a file per MAC wins', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'boot-http-'));
  try {
    const root = bootResponse('/', '10.0.2.2:8080', { script });
    assert.equal(root.status, 200);
    assert.equal(root.body, '#!ipxe\nchain http://10.0.2.2:8080/boot.ipxe?mac=${net0/mac} || shell\n');
    assert.equal(bootResponse('/', undefined, { script }).status, 400, 'no Host header: nothing to chain to');
    assert.equal(bootResponse('/', 'a b"; rm', { script }).status, 400, 'a Host header is not pasted into the script unchecked');
    assert.deepEqual(bootResponse('/boot.ipxe?mac=52:54:00:12:34:56', 'h:1', { script, dir }), { status: 200, body: '#!ipxe\n# for 52:54:00:12:34:56\n' });
    fs.writeFileSync(path.join(dir, '52-54-00-12-34-56.ipxe'), '#!ipxe\necho mine\n');
    assert.equal(bootResponse('/boot.ipxe?mac=52:54:00:12:34:56', 'h:1', { script, dir }).body, '#!ipxe\necho mine\n');
    assert.equal(bootResponse('/boot.ipxe?mac=52:54:00:12:34:57', 'h:1', { script, dir }).body, '#!ipxe\n# for 52:54:00:12:34:57\n');
    assert.equal(bootResponse('/boot.ipxe', 'h:1', { script, dir }).body, '#!ipxe\n# for anyone\n');
    assert.equal(bootResponse('/boot.ipxe?mac=../../etc/passwd', 'h:1', { script, dir }).status, 400);
    assert.equal(bootResponse('/etc/passwd', 'h:1', { script, dir }).status, 404);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a chained script skips DHCP when the network is up, and carries CHAP settings; unsafe values are refused', () => {
  const s = ipxeScript({ target, dhcp: false, chap: { user: 'boot', secret: 'a-secret-of-24-characters' }, mutualChap: { user: 'tgt', secret: 'another-secret-24-chars' } });
  assert.match(s, /^isset \$\{net0\/ip\} \|\| dhcp \|\| goto dhcp_failed$/m);
  assert.match(s, /^set username boot\nset password a-secret-of-24-characters\nset reverse-username tgt\nset reverse-password another-secret-24-chars\nsanboot /m);
  assert.throws(() => ipxeScript({ target, chap: { user: 'boot', secret: 'has ${x} in it' } }), /may not contain/);
});

test('the server answers over HTTP', async () => {
  const server = new BootScriptServer({ host: '127.0.0.1', port: 0, script: (mac) => ipxeScript({ target, dhcp: false, ...(mac ? { initiator: `iqn.2026-12.io.twindisk:${mac.replace(/:/g, '')}` } : {}) }), log: new Logger('test') });
  await server.start();
  try {
    const r = await fetch(`http://127.0.0.1:${server.port}/boot.ipxe?mac=52:54:00:aa:bb:cc`);
    assert.equal(r.status, 200);
    const body = await r.text();
    assert.match(body, /^set initiator-iqn iqn\.2026-12\.io\.twindisk:525400aabbcc$/m);
    assert.match(body, /^sanboot iscsi:10\.0\.2\.2::3261:0:iqn\.2026-12\.io\.twindisk:vm1 /m);
    assert.equal((await fetch(`http://127.0.0.1:${server.port}/nothing`)).status, 404);
  } finally {
    await server.close();
  }
});
