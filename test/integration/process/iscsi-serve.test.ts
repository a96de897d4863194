// `twindisk serve --iscsi` driven by real initiators: libiscsi's tools and QEMU's libiscsi driver (qemu-io), raw bad bytes,
// and the same image over vhost-user at the same time.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { test } from 'node:test';
import { iscsiUrl, qemuIo, run, serveIscsi } from '../../harness/iscsi.js';
import { cli, tmpDir } from '../../harness/serve.js';
import { CI_SUBSET, runTestCu } from '../../../bench/iscsi-conformance.js';
import { attach, readBack, writeRandom } from '../../harness/blk-client.js';

const IQN = 'iqn.2026-12.io.twindisk:test';
const MiB = 1 << 20;

function image(dir: string, name: string, size = 16 * MiB): string {
  const p = path.join(dir, name);
  fs.writeFileSync(p, '');
  fs.truncateSync(p, size);
  return p;
}

test('discovery, INQUIRY, READ CAPACITY and the VPD pages through libiscsi', async () => {
  const dir = tmpDir();
  const s = await serveIscsi({ image: image(dir, 'disc.img', 16 * MiB), iqn: IQN });
  try {
    const ls = await run('iscsi-ls', ['-s', `iscsi://127.0.0.1:${s.port}`]);
    assert.equal(ls.code, 0, ls.stderr + ls.stdout);
    assert.match(ls.stdout, new RegExp(`Target:${IQN.replace(/\./g, '\\.')} Portal:127\\.0\\.0\\.1:${s.port}`));
    assert.match(ls.stdout, /Lun:0\s+Type:DIRECT_ACCESS.*\(Size:16M\)|Lun:0\s+Type:DIRECT_ACCESS/);
    const inq = await run('iscsi-inq', [iscsiUrl(s.port, IQN)]);
    assert.equal(inq.code, 0, inq.stderr);
    assert.match(inq.stdout, /Vendor:TWINDISK/);
    const vpd83 = await run('iscsi-inq', ['-e', '1', '-c', '131', iscsiUrl(s.port, IQN)]);
    assert.equal(vpd83.code, 0, vpd83.stderr);
    assert.match(vpd83.stdout, /Designator Type:\(3\) NAA/);
    const cap = await run('iscsi-readcapacity16', [iscsiUrl(s.port, IQN)]);
    assert.equal(cap.code, 0, cap.stderr);
    assert.match(cap.stdout, /LOGICAL BLOCK LENGTH IN BYTES:512/);
    assert.match(cap.stdout, /LBPME:1 LBPRZ:1/, 'thin provisioned, unmapped blocks read zero (holes punched in the file)');
    assert.match(cap.stdout, /Total size:16777216/);
  } finally {
    await s.stop();
  }
});

test('writes from QEMU\'s iSCSI initiator land in the image, reads return them, FUA and flush included', async () => {
  const dir = tmpDir();
  const img = image(dir, 'rw.img');
  const s = await serveIscsi({ image: img, iqn: IQN });
  try {
    const w = await qemuIo(iscsiUrl(s.port, IQN), ['write -P 0xa5 1M 256k', 'write -P 0x5a -f 3584 512', 'flush', 'read -P 0xa5 1M 256k', 'read -P 0x5a 3584 512']);
    assert.equal(w.code, 0, w.stdout + w.stderr);
    assert.doesNotMatch(w.stdout, /Pattern verification failed|error/i, w.stdout);
    const bytes = fs.readFileSync(img);
    assert.ok(bytes.subarray(MiB, MiB + 256 * 1024).every((b) => b === 0xa5), 'the 256 KiB write is in the image');
    assert.ok(bytes.subarray(3584, 4096).every((b) => b === 0x5a), 'the FUA write is in the image');
    assert.ok(bytes.subarray(0, 3584).every((b) => b === 0) && bytes.subarray(4096, MiB).every((b) => b === 0), 'nothing else was written');
    // Past the end: QEMU refuses before sending; the capacity it read is the image's.
    const beyond = await qemuIo(iscsiUrl(s.port, IQN), ['read 16M 512']);
    assert.match(beyond.stdout + beyond.stderr, /out of range|Input\/output error|Invalid argument/i);
  } finally {
    await s.stop();
  }
});

test('malformed bytes and commands before login close that connection with a log line; other initiators are served', async () => {
  const dir = tmpDir();
  const s = await serveIscsi({ image: image(dir, 'bad.img'), iqn: IQN });
  try {
    const talk = (bytes: Buffer): Promise<Buffer> => new Promise((resolve) => {
      const c = net.connect(s.port, '127.0.0.1');
      const got: Buffer[] = [];
      c.on('data', (d) => got.push(d));
      c.on('close', () => resolve(Buffer.concat(got)));
      c.on('error', () => { /* reset by the target is one of the expected outcomes */ });
      c.write(bytes);
    });
    // A SCSI Command (opcode 0x01) before any login.
    const cmd = Buffer.alloc(48);
    cmd[0] = 0x01; cmd[1] = 0x80;
    await talk(cmd);
    await s.waitLog(/SCSI Command before login/);
    // A Login Request whose DataSegmentLength is far beyond what login allows.
    const big = Buffer.alloc(48);
    big[0] = 0x43; big[1] = 0x87; big[5] = 0xff; big[6] = 0xff; big[7] = 0xff;
    await talk(big);
    await s.waitLog(/malformed PDU/);
    // A good initiator afterwards.
    const w = await qemuIo(iscsiUrl(s.port, IQN), ['write -P 0x11 0 4k', 'read -P 0x11 0 4k']);
    assert.equal(w.code, 0, w.stdout + w.stderr);
    assert.doesNotMatch(w.stdout, /verification failed/);
  } finally {
    await s.stop();
  }
});

test('one image over vhost-user and iSCSI at once: what one front-end writes, the other reads', async () => {
  const dir = tmpDir();
  const img = image(dir, 'both.img');
  const socket = path.join(dir, 'both.sock');
  const s = await serveIscsi({ image: img, iqn: IQN, args: ['--socket', socket] });
  const g = attach(socket);
  try {
    const w = await qemuIo(iscsiUrl(s.port, IQN), ['write -P 0xc3 64k 8k']);
    assert.equal(w.code, 0, w.stdout + w.stderr);
    assert.ok(readBack(g, 64 * 1024, 8192).every((b) => b === 0xc3), 'vhost-user reads what iSCSI wrote');
    const mine = writeRandom(g, 256 * 1024, 4096);
    const r = await qemuIo(iscsiUrl(s.port, IQN), [`read -v 256k 4k`]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const dumped = Buffer.from(r.stdout.split('\n').filter((l) => /^[0-9a-f]{8}:/.test(l))
      .flatMap((l) => l.slice(l.indexOf(':') + 1).trim().split(/\s+/).slice(0, 16).map((h) => parseInt(h, 16))));
    assert.deepEqual(dumped.subarray(0, 4096), mine, 'iSCSI reads what vhost-user wrote');
  } finally {
    g.fe.close();
    await s.stop();
  }
});

test('CHAP: the right secret logs in (also mutual), a wrong or missing one is refused with a log line', async () => {
  const dir = tmpDir();
  const chap = { user: 'boot', secret: 'a-secret-of-24-characters' };
  const s = await serveIscsi({ image: image(dir, 'chap.img'), iqn: IQN, args: ['--chap', `${chap.user}:${chap.secret}`] });
  try {
    const ok = await run('iscsi-inq', [iscsiUrl(s.port, IQN, 0, chap)]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /Vendor:TWINDISK/);
    const wrong = await run('iscsi-inq', [iscsiUrl(s.port, IQN, 0, { user: 'boot', secret: 'not-the-secret-at-all-x' })]);
    assert.notEqual(wrong.code, 0);
    assert.match(wrong.stderr + wrong.stdout, /Authentication failure/i);
    const none = await run('iscsi-inq', [iscsiUrl(s.port, IQN)]);
    assert.notEqual(none.code, 0);
    await s.waitLog(/login failed \(0x0201\)/);
  } finally {
    await s.stop();
  }
  // Mutual: the target proves itself with its own secret (libiscsi's target_user / target_password URL arguments).
  const m = await serveIscsi({ image: image(dir, 'mutual.img'), iqn: IQN, args: ['--chap', `${chap.user}:${chap.secret}`, '--mutual-chap', 'target:another-secret-of-24-chars'] });
  try {
    const url = `${iscsiUrl(m.port, IQN, 0, chap)}?target_user=target&target_password=another-secret-of-24-chars`;
    const ok = await run('iscsi-inq', [url]);
    assert.equal(ok.code, 0, ok.stderr);
    const bad = await run('iscsi-inq', [`${iscsiUrl(m.port, IQN, 0, chap)}?target_user=target&target_password=not-what-the-target-has`]);
    assert.notEqual(bad.code, 0, 'libiscsi refuses a target that cannot prove the mutual secret');
  } finally {
    await m.stop();
  }
  // A secret too short to be safe is refused before anything is served.
  const short = await run(process.execPath, [cli, 'serve', '--image', image(dir, 'short.img'), '--iscsi', '127.0.0.1:1', '--chap', 'boot:short']);
  assert.equal(short.code, 2, short.stderr);
  assert.match(short.stderr, /shorter than the 12 bytes/);
});

test('libiscsi\'s conformance suite (iscsi-test-cu, the CI subset): no test fails', async () => {
  const dir = tmpDir();
  const s = await serveIscsi({ image: image(dir, 'cu.img', 100 * MiB), iqn: IQN });
  try {
    const r = await runTestCu('twindisk', iscsiUrl(s.port, IQN), CI_SUBSET.join(','), 300);
    assert.equal(r.error, undefined, r.error);
    assert.ok(r.passed >= CI_SUBSET.length - 2, `${r.passed} passed of ${r.total}`);
    assert.deepEqual(r.failedTests, [], `failed: ${r.failedTests.join(' ')}`);
  } finally {
    await s.stop();
  }
});
