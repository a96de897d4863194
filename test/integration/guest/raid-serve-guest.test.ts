// A real guest on a degraded raid5 over vhost-user: `twindisk serve --raid` with one member file gone, a TCG
// guest writes a pattern over the whole disk and reads it back; then the host finds the pattern in the
// members, rebuilds the missing slot onto a new member and checks parity.
//
// One boot. The guest generates the pattern itself (4 KiB blocks, each naming its own index, so a block
// written to the wrong place does not pass), writes it with O_DIRECT, drops its page cache and prints the
// md5 of what it reads back. The host computes the same pattern and compares it with the guest's md5 and,
// after serve stops, with the bytes the RAID layer reads from the three remaining members.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import type { RaidStatus } from '../../../engine/raid/array-status.js';
import { FileBackend } from '../../../engine/file-backend.js';
import { IoVector } from '../../../engine/iovec.js';
import { assembleArray, type MdArray } from '../../../engine/raid/array.js';
import { RaidBackend } from '../../../engine/raid/raid-backend.js';
import { Guest, type GuestResult } from '../../harness/guest.js';
import { cli, runCliOk, tmpDir } from '../../harness/serve.js';

const dir = tmpDir('twindisk-raid-serve-guest-');
const MEMBER_SIZE = '32M';
/** The member that is gone while the guest runs: slot 2 of a, b, c, d. */
const GONE_SLOT = 2;
const BLOCK = 4096;
const [a, b, c, d, e] = ['a', 'b', 'c', 'd', 'e'].map((n) => path.join(dir, `${n}.img`)) as [string, string, string, string, string];
const socket = path.join(dir, 'raid.sock');

/** Block i of the pattern: its text padded with spaces to 4095 bytes and a newline, as the guest's awk prints it. */
function pattern(bytes: number): Buffer {
  const out = Buffer.alloc(bytes);
  for (let i = 0; i * BLOCK < bytes; i++) out.write(`${`raid-serve-guest block ${i}`.padEnd(BLOCK - 1)}\n`, i * BLOCK, 'latin1');
  return out;
}

/** The guest's script: write the pattern over all of /dev/vda with O_DIRECT, then read the device back past the page cache. */
const SCRIPT = `
sectors=$(cat /sys/block/vda/size)
echo "sectors=$sectors"
awk -v n=$((sectors / 8)) 'BEGIN { for (i = 0; i < n; i++) printf "%-4095s\\n", "raid-serve-guest block " i }' \\
  | dd of=/dev/vda bs=1M iflag=fullblock oflag=direct 2>/dev/null && echo WRITE-OK
sync
echo 3 > /proc/sys/vm/drop_caches
echo "md5=$(dd if=/dev/vda bs=1M iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)"
`;

const md5 = (x: Uint8Array) => createHash('md5').update(x).digest('hex');

/** A CLI run that must succeed; its stdout. */
const twindisk = runCliOk;

async function status(members: string[]): Promise<RaidStatus> {
  return JSON.parse(await twindisk('raid', 'status', '--json', ...members)) as RaidStatus;
}

/** Reads all of the array on `members` through assembleArray and the RAID layer. */
async function readArray(members: string[]): Promise<{ array: MdArray; bytes: Buffer }> {
  const array = await assembleArray(members.map((f) => ({ name: f, backend: new FileBackend({ path: f }) })));
  const raid = new RaidBackend({
    geometry: array.geometry, members: array.slots.map((m) => m?.backend ?? null), dataOffset: array.dataOffset,
    componentBytes: array.componentBytes, intent: array.bitmap ?? undefined, onMemberFailed: (slot, reason) => array.memberFailed(slot, reason),
  });
  try {
    const bytes = Buffer.alloc(array.arrayBytes);
    const iov = new IoVector(1);
    iov.push(bytes, 0, bytes.length, 0);
    await new Promise<void>((resolve, reject) => raid.read(iov, 0, {
      complete: (st: number) => (st === 0 ? resolve() : reject(new Error(`array read: status ${st}`))),
    }));
    return { array, bytes };
  } finally {
    array.close();
    raid.close();
  }
}

let served: ReturnType<typeof spawn> | undefined;
let guest: Guest | undefined;
let result: GuestResult;
let serveLog = '';
let serveExit: number | null;
let arrayBytes: number;
let expected: Buffer;

after(async () => {
  await guest?.kill();
  if (served && served.exitCode === null && served.signalCode === null) served.kill('SIGKILL');
});

/** Waits until serve's log matches `re`. */
async function waitLog(re: RegExp, ms = 20_000): Promise<void> {
  const t0 = Date.now();
  while (!re.test(serveLog)) {
    if (Date.now() - t0 > ms) throw new Error(`serve --raid did not log ${re} within ${ms} ms:\n${serveLog}`);
    if (served!.exitCode !== null) throw new Error(`serve --raid exited (${served!.exitCode}) before logging ${re}:\n${serveLog}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

before(async () => {
  await twindisk('raid', 'create', '--level', '5', '--chunk', '64K', '--assume-clean', '--size', MEMBER_SIZE, a, b, c, d);
  arrayBytes = (await status([a, b, c, d])).arrayBytes;
  assert.equal(arrayBytes % (1 << 20), 0, 'the guest writes the array in whole MiB');
  expected = pattern(arrayBytes);
  fs.rmSync(c); // the disk holding slot 2 is gone

  served = spawn(process.execPath, [cli, 'serve', '--raid', [a, b, c, d].join(','), '--socket', socket], { stdio: ['ignore', 'pipe', 'pipe'] });
  served.stdout!.on('data', (x) => (serveLog += x));
  served.stderr!.on('data', (x) => (serveLog += x));
  await waitLog(/listening/);
  await waitLog(/member .*c\.img does not exist: the array is assembled without it/);
  await waitLog(/serving degraded: 1 of 4 slots not in sync/);

  guest = await Guest.launch({ disks: [{ socket }], script: SCRIPT, timeoutMs: 90_000 });
  result = await guest.wait();
  served.kill('SIGTERM');
  serveExit = await new Promise<number | null>((r) => (served!.exitCode !== null ? r(served!.exitCode) : served!.once('exit', (code) => r(code))));
});

test('the guest writes the pattern over the whole degraded raid5 and reads it back', () => {
  assert.equal(result.exitCode, 0, result.output);
  assert.match(result.output, new RegExp(`sectors=${arrayBytes / 512}\\n`), 'the guest sees the array\'s size');
  assert.match(result.output, /WRITE-OK/, result.output);
  const m = /md5=([0-9a-f]{32})/.exec(result.output);
  assert.ok(m, result.output);
  assert.equal(m[1], md5(expected), 'the guest reads back the pattern the host computes');
  assert.equal(serveExit, 0, `serve --raid stops cleanly on SIGTERM:\n${serveLog}`);
});

test('the three remaining members hold the pattern: raid status says degraded, the RAID layer reads it', async () => {
  const st = await status([a, b, d]);
  assert.deepEqual([st.state, st.degraded, st.mdstat], ['clean', 1, '[4/3] [UU_U]']);
  assert.equal(st.members[GONE_SLOT]!.state, 'missing');
  assert.ok(st.bitmap!.dirtyChunks > 0, 'writes made while degraded stay marked in the bitmap until the slot is rebuilt');
  const { array, bytes } = await readArray([a, b, d]);
  assert.equal(array.degraded, 1);
  assert.equal(bytes.length, expected.length);
  assert.ok(bytes.equals(expected), `the array holds the guest's pattern (md5 ${md5(bytes)}, expected ${md5(expected)})`);
});

test('raid add rebuilds slot 2 onto a new member: raid check finds no mismatch and the bytes are the pattern', async () => {
  await twindisk('raid', 'add', '--slot', String(GONE_SLOT), '--size', MEMBER_SIZE, e, a, b, d);
  const whole = [a, b, e, d];
  const st = await status(whole);
  assert.deepEqual([st.state, st.degraded, st.mdstat, st.bitmap!.dirtyChunks], ['clean', 0, '[4/4] [UUUU]', 0]);
  assert.equal(st.members[GONE_SLOT]!.member, e);
  assert.match(await twindisk('raid', 'check', ...whole), /^check: 0 mismatched sectors/m);
  const { array, bytes } = await readArray(whole);
  assert.equal(array.degraded, 0);
  assert.ok(bytes.equals(expected), `the rebuilt array holds the guest's pattern (md5 ${md5(bytes)}, expected ${md5(expected)})`);
});
