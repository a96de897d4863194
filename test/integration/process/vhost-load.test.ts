// bench/vhost-load.c, the C vhost-user-blk benchmark client, against `twindisk serve`: what it writes lands in the image, reads run, failures are told.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { runVhostLoad, vhostLoadBinary } from '../../../bench/vhost-load.js';
import type { Workload } from '../../../bench/vhost.js';
import { serve, tmpDir, type Served } from '../../harness/serve.js';

const SIZE = 64 << 20;
const MiB = 1 << 20;
const dir = tmpDir();
let s: Served;

before(async () => {
  // Build first, so a compile error is reported as such (not as a failed run).
  vhostLoadBinary();
  const image = path.join(dir, 'load.img');
  const fd = fs.openSync(image, 'w');
  fs.ftruncateSync(fd, SIZE); // all zeros: a client that writes nothing leaves nothing to find
  fs.closeSync(fd);
  s = await serve({ image, socket: path.join(dir, 'load.sock'), dir });
});

after(async () => {
  await s?.stop('SIGKILL');
});

/** What vhost-load writes: byte j of every buffer is 1 + j % 251. */
function pattern(len: number): Buffer {
  const b = Buffer.alloc(len);
  for (let j = 0; j < len; j++) b[j] = 1 + (j % 251);
  return b;
}

test('a sequential 1 MiB write at depth 4 puts the pattern at the start of the volume', async () => {
  const w: Workload = { name: 'seqwrite-1m-qd4', write: true, random: false, bs: MiB, depth: 4 };
  const r = await runVhostLoad(s.socket, w, 1);
  assert.ok(r.iops > 0, `iops ${r.iops}`);
  assert.ok(r.mbps > 0, `mbps ${r.mbps}`);
  // The first four requests (one per slot) are blocks 0 to 3, and every request in flight is drained.
  const want = pattern(MiB);
  const fd = fs.openSync(s.image, 'r');
  try {
    const got = Buffer.alloc(MiB);
    for (let block = 0; block < 4; block++) {
      assert.equal(fs.readSync(fd, got, 0, MiB, block * MiB), MiB);
      assert.ok(got.equals(want), `block ${block} of the image holds the written pattern (first bytes: ${got.subarray(0, 8).toString('hex')})`);
    }
  } finally {
    fs.closeSync(fd);
  }
});

test('a random 4 KiB read at depth 32 completes requests', async () => {
  const w: Workload = { name: 'randread-4k-qd32', write: false, random: true, bs: 4096, depth: 32 };
  const r = await runVhostLoad(s.socket, w, 1);
  assert.ok(r.iops > 0, `iops ${r.iops}`);
  assert.ok(r.p99Us >= r.p50Us, `p50 ${r.p50Us} us, p99 ${r.p99Us} us`);
  assert.equal(s.child.exitCode, null, 'twindisk serve still runs');
});

test('no back-end on the socket: the run fails and says so', async () => {
  const w: Workload = { name: 'randread-4k-qd1', write: false, random: true, bs: 4096, depth: 1 };
  await assert.rejects(runVhostLoad(path.join(dir, 'nobody.sock'), w, 1), /cannot connect to .*nobody\.sock.*is the back-end running/);
});
