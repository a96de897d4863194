// Online resize of `twindisk serve --iscsi` (`twindisk resize --control`) under a logged-in initiator: QEMU's libiscsi
// driver (qemu-io, kept open across the resize) gets CAPACITY DATA HAS CHANGED once on its next command and goes on; a
// session that logs in afterwards gets no unit attention and sees the new size.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { iscsiUrl, qemuIo, run, serveIscsi } from '../../harness/iscsi.js';
import { cli, tmpDir } from '../../harness/serve.js';

const IQN = 'iqn.2026-12.io.twindisk:resize';
const MiB = 1 << 20;
/** How QEMU's iSCSI driver (block/iscsi.c) logs the unit attention before it retries the command. */
const UA_LINE = /iSCSI CheckCondition: SENSE KEY:UNIT_ATTENTION\(6\) ASCQ:CAPACITY_DATA_HAS_CHANGED\(0x2a09\)/;
const uaCount = (text: string): number => text.match(new RegExp(UA_LINE.source, 'g'))?.length ?? 0;

/** qemu-io reading its commands from stdin: one iSCSI session for as long as it runs. */
function interactiveQemuIo(url: string) {
  const child = spawn('qemu-io', ['-f', 'raw', url], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  return {
    output: () => out,
    /** Sends one command and waits until the output (from `from` on) matches `re`. */
    async command(cmd: string, re: RegExp, ms = 10_000): Promise<string> {
      const from = out.length;
      child.stdin.write(`${cmd}\n`);
      const t0 = Date.now();
      while (!re.test(out.slice(from))) {
        if (Date.now() - t0 > ms || child.exitCode !== null) throw new Error(`qemu-io: "${cmd}" did not give ${re}:\n${out}`);
        await new Promise((r) => setTimeout(r, 20));
      }
      return out.slice(from);
    },
    async quit(): Promise<number | null> {
      child.stdin.end('quit\n');
      return exited;
    },
    kill(): void { if (child.exitCode === null) child.kill('SIGKILL'); },
  };
}

test('resize under a logged-in initiator: one CAPACITY DATA HAS CHANGED on its next command, the command retried; new sessions get none', async () => {
  const dir = tmpDir();
  const img = path.join(dir, 'grow.img');
  fs.writeFileSync(img, '');
  fs.truncateSync(img, 16 * MiB);
  const ctl = path.join(dir, 'grow.ctl');
  const s = await serveIscsi({ image: img, iqn: IQN, args: ['--control', ctl] });
  const q = interactiveQemuIo(iscsiUrl(s.port, IQN));
  try {
    await q.command('write -P 0x3c 64k 4k', /wrote 4096\/4096 bytes/);
    await q.command('length', /16 MiB/);
    assert.doesNotMatch(q.output(), UA_LINE, 'no unit attention before the resize');
    const r = await run(process.execPath, [cli, 'resize', '--control', ctl, '--size', String(32 * MiB)]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout + r.stderr, /resized from 16777216 to 33554432 bytes/);
    // The next command meets the unit attention; QEMU logs it and retries, and the read succeeds with the data.
    await q.command('read -P 0x3c 64k 4k', /read 4096\/4096 bytes/);
    await q.command('read -P 0x3c 64k 4k', /read 4096\/4096 bytes/);
    await q.command('write -P 0x3d 128k 4k', /wrote 4096\/4096 bytes/);
    assert.equal(await q.quit(), 0, q.output());
    assert.equal(uaCount(q.output()), 1, `exactly one unit attention:\n${q.output()}`);
    assert.doesNotMatch(q.output(), /Pattern verification failed|failed/i, q.output());
    // A session that logs in after the resize: the new size, no unit attention, the new blocks usable.
    const cap = await run('iscsi-readcapacity16', [iscsiUrl(s.port, IQN)]);
    assert.equal(cap.code, 0, cap.stderr);
    assert.match(cap.stdout, /Total size:33554432/);
    const fresh = await qemuIo(iscsiUrl(s.port, IQN), ['length', 'write -P 0x5e 20M 4k', 'read -P 0x5e 20M 4k', 'read -P 0x3c 64k 4k']);
    assert.equal(fresh.code, 0, fresh.stdout + fresh.stderr);
    assert.match(fresh.stdout, /32 MiB/);
    assert.doesNotMatch(fresh.stdout + fresh.stderr, /CheckCondition|Pattern verification failed|failed/i, fresh.stdout + fresh.stderr);
    const bytes = fs.readFileSync(img);
    assert.equal(bytes.length, 32 * MiB);
    assert.ok(bytes.subarray(20 * MiB, 20 * MiB + 4096).every((b) => b === 0x5e), 'the write past the old end is in the image');
    assert.ok(bytes.subarray(128 * 1024, 132 * 1024).every((b) => b === 0x3d), 'the write after the unit attention is in the image');
  } finally {
    q.kill();
    await s.stop();
  }
});
