// Real QEMU guests on `twindisk serve`: the Linux virtio-blk driver reads, writes, discards and reboots through twindisk.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { Guest, runGuest } from '../../harness/guest.js';
import { serve, tmpDir, type Served } from '../../harness/serve.js';

const dir = tmpDir();
const running: Served[] = [];
after(async () => {
  for (const s of running) await s.stop('SIGKILL');
});

async function start(name: string, args: string[] = [], size = 64 << 20, fill = 0): Promise<Served> {
  const image = path.join(dir, `${name}.img`);
  if (!fs.existsSync(image)) fs.writeFileSync(image, Buffer.alloc(size, fill));
  const s = await serve({ image, socket: path.join(dir, `${name}.sock`), args, dir });
  running.push(s);
  return s;
}

function pattern(len: number, seed: number): Buffer {
  const b = Buffer.alloc(len);
  for (let i = 0; i < len; i++) b[i] = (i * 31 + seed * 7 + (i >> 9)) & 255;
  return b;
}

for (const aio of ['sync', 'io_uring']) test(`--aio ${aio}: the guest sees the disk, reads what the host wrote and writes what the host reads`, async () => {
  const s = await start(`rw-${aio}`, ['--aio', aio]);
  const fd = fs.openSync(s.image, 'r+');
  fs.writeSync(fd, pattern(65536, 1), 0, 65536, 1 << 20);
  fs.closeSync(fd);
  const r = await runGuest({
    disks: [{ socket: s.socket }],
    script: `
      echo "size=$(cat /sys/block/vda/size) serial=$(cat /sys/block/vda/serial) lbs=$(cat /sys/block/vda/queue/logical_block_size)"
      dd if=/dev/vda bs=64k skip=16 count=1 iflag=direct 2>/dev/null | md5sum
      dd if=/dev/vda bs=64k skip=16 count=1 2>/dev/null | dd of=/dev/vda bs=64k seek=32 conv=fsync 2>/dev/null
      echo "cache=$(cat /sys/block/vda/cache_type)"
      echo "write through" > /sys/block/vda/cache_type
      echo "cache=$(cat /sys/block/vda/cache_type)"
      dd if=/dev/zero bs=4k count=1 2>/dev/null | tr '\\0' 'G' | dd of=/dev/vda bs=4k seek=5 oflag=direct 2>/dev/null
      sync
    `,
  });
  assert.match(r.output, /cache=write back[\s\S]*cache=write through/);
  await s.waitLog(/guest switched the write cache to writethrough/);
  assert.equal(r.exitCode, 0, r.output);
  assert.match(r.output, /size=131072 serial=twindisk-[0-9a-f]{11} lbs=512/);
  const md5 = (await import('node:crypto')).createHash('md5').update(pattern(65536, 1)).digest('hex');
  assert.ok(r.output.includes(md5), `guest read the host's bytes (md5 ${md5}):\n${r.output}`);
  const f = fs.readFileSync(s.image);
  assert.ok(f.subarray(2 << 20, (2 << 20) + 65536).equals(pattern(65536, 1)), 'guest copy landed at 2 MiB');
  assert.ok(f.subarray(5 * 4096, 6 * 4096).every((b) => b === 0x47), 'direct write landed at 20 KiB');
  assert.equal(f[6 * 4096], 0, 'nothing written after it');
  assert.equal(f[5 * 4096 - 1], 0, 'nothing written before it');
});

test('two queues: writers pinned to two vCPUs run in parallel, data intact', async () => {
  const s = await start('mq', ['--queues', '2']);
  const r = await runGuest({
    disks: [{ socket: s.socket, numQueues: 2 }],
    cpus: 2,
    script: `
      ls /sys/block/vda/mq | wc -l | sed 's/^/hwqueues=/'
      gen() { dd if=/dev/zero bs=1M count=4 2>/dev/null | tr '\\0' "$1"; }
      (gen A | taskset 1 dd of=/dev/vda bs=64k seek=0 oflag=direct 2>/dev/null) &
      (gen B | taskset 2 dd of=/dev/vda bs=64k seek=128 oflag=direct 2>/dev/null) &
      wait
      sync
      dd if=/dev/vda bs=1M count=8 iflag=direct 2>/dev/null | md5sum
    `,
  });
  assert.equal(r.exitCode, 0, r.output);
  assert.match(r.output, /hwqueues=2/);
  const f = fs.readFileSync(s.image);
  assert.ok(f.subarray(0, 4 << 20).every((b) => b === 0x41), 'writer A');
  assert.ok(f.subarray(8 << 20, 12 << 20).every((b) => b === 0x42), 'writer B');
  const md5 = (await import('node:crypto')).createHash('md5').update(f.subarray(0, 8 << 20)).digest('hex');
  assert.ok(r.output.includes(md5), 'guest reads back what it wrote');
  assert.match(s.log(), /queue 1 started/);
});

test('read-only: the guest sees a read-only disk and its writes fail', async () => {
  const s = await start('ro', ['--read-only'], 16 << 20, 0x33);
  const r = await runGuest({
    disks: [{ socket: s.socket }],
    script: `
      echo "ro=$(cat /sys/block/vda/ro)"
      dd if=/dev/zero of=/dev/vda bs=4k count=1 oflag=direct 2>&1 && echo WRITE-OK || echo WRITE-FAILED
      dd if=/dev/vda bs=4k count=1 iflag=direct 2>/dev/null | od -An -tx1 | head -1
    `,
  });
  assert.equal(r.exitCode, 0, r.output);
  assert.match(r.output, /ro=1/);
  assert.match(r.output, /WRITE-FAILED/);
  assert.match(r.output, /33 33 33 33/);
  assert.ok(fs.readFileSync(s.image).every((b) => b === 0x33), 'image unchanged');
});

test('blkdiscard, blkdiscard -z and fallocate --punch-hole zero exactly their ranges', async () => {
  const s = await start('discard', [], 16 << 20, 0x5a);
  const before = fs.statSync(s.image).blocks;
  const r = await runGuest({
    disks: [{ socket: s.socket }],
    script: `
      echo "max_discard=$(cat /sys/block/vda/queue/discard_max_bytes) max_wz=$(cat /sys/block/vda/queue/write_zeroes_max_bytes)"
      /usr/sbin/blkdiscard -o 1048576 -l 2097152 /dev/vda && echo DISCARD-OK
      /usr/sbin/blkdiscard -z -o 4194304 -l 1048576 /dev/vda && echo ZERO-OK
      /usr/bin/fallocate --punch-hole -o 6291456 -l 1048576 /dev/vda && echo PUNCH-OK
      sync
    `,
  });
  assert.equal(r.exitCode, 0, r.output);
  assert.match(r.output, /DISCARD-OK/);
  assert.match(r.output, /ZERO-OK/);
  assert.match(r.output, /PUNCH-OK/);
  assert.doesNotMatch(r.output, /max_discard=0 /);
  const f = fs.readFileSync(s.image);
  const zero = (a: number, b: number) => f.subarray(a, b).every((x) => x === 0);
  const kept = (a: number, b: number) => f.subarray(a, b).every((x) => x === 0x5a);
  assert.ok(kept(0, 1 << 20) && zero(1 << 20, 3 << 20) && kept(3 << 20, 4 << 20), 'discard range');
  assert.ok(zero(4 << 20, 5 << 20) && kept(5 << 20, 6 << 20), 'write-zeroes range');
  assert.ok(zero(6 << 20, 7 << 20) && kept(7 << 20, 16 << 20), 'punched range');
  assert.ok(fs.statSync(s.image).blocks < before, 'discard and punch freed space in the image');
});

test('4 KiB logical blocks reach the guest', async () => {
  const s = await start('4k', ['--block-size', '4096'], 16 << 20);
  const r = await runGuest({
    disks: [{ socket: s.socket }],
    script: `echo "lbs=$(cat /sys/block/vda/queue/logical_block_size)"; dd if=/dev/zero bs=4k count=2 2>/dev/null | tr '\\0' 'K' | dd of=/dev/vda bs=4k seek=3 oflag=direct 2>/dev/null; sync`,
  });
  assert.equal(r.exitCode, 0, r.output);
  assert.match(r.output, /lbs=4096/);
  assert.ok(fs.readFileSync(s.image).subarray(3 * 4096, 5 * 4096).every((b) => b === 0x4b));
});

test('data survives a guest reboot and a restart of twindisk', async () => {
  let s = await start('reboot');
  // First boot writes BOOT1 and reboots inside the same QEMU; the second boot sees it, writes BOOT2.
  const script = `
    m=$(dd if=/dev/vda bs=512 skip=100 count=1 iflag=direct 2>/dev/null | head -c 5)
    echo "marker=[$m]"
    if [ "$m" = BOOT1 ]; then printf BOOT2 | dd of=/dev/vda bs=512 seek=101 conv=sync,fsync 2>/dev/null; exit 0; fi
    if [ "$m" = BOOT2 ]; then exit 0; fi
    printf BOOT1 | dd of=/dev/vda bs=512 seek=100 conv=sync,fsync 2>/dev/null
    sync
    reboot -f
  `;
  const r1 = await runGuest({ disks: [{ socket: s.socket }], script, allowReboot: true });
  assert.equal(r1.exitCode, 0, r1.output);
  assert.match(r1.output, /marker=\[\][\s\S]*marker=\[BOOT1\]/);
  assert.equal(await s.stop('SIGTERM'), 0);
  const f = fs.readFileSync(s.image);
  assert.equal(f.toString('latin1', 100 * 512, 100 * 512 + 5), 'BOOT1');
  assert.equal(f.toString('latin1', 101 * 512, 101 * 512 + 5), 'BOOT2');
  fs.writeFileSync(s.image.replace('.img', '.marker'), '');
  s = await start('reboot');
  const r2 = await runGuest({ disks: [{ socket: s.socket }], script: `dd if=/dev/vda bs=512 skip=101 count=1 iflag=direct 2>/dev/null | head -c 5 | sed 's/^/after-restart=/'; echo` });
  assert.equal(r2.exitCode, 0, r2.output);
  assert.match(r2.output, /after-restart=BOOT2/);
});

for (const aio of ['sync', 'io_uring']) test(`--aio ${aio}: twindisk killed and restarted under a running guest: QEMU reconnects and every synced write is there`, async () => {
  let s = await start(`crash-${aio}`, ['--aio', aio], 16 << 20);
  const g = await Guest.launch({
    disks: [{ socket: s.socket, reconnect: 1 }],
    timeoutMs: 120_000,
    script: `
      i=0
      while [ $i -lt 40 ]; do
        printf "W$i" | dd of=/dev/vda bs=512 seek=$i conv=sync,fsync 2>/dev/null || echo "FAILED $i"
        echo "wrote $i"; sleep 0.2; i=$((i+1))
      done
    `,
  });
  await g.waitFor(/wrote 5\n/);
  await s.stop('SIGKILL');
  await new Promise((r) => setTimeout(r, 1000));
  s = await start(`crash-${aio}`, ['--aio', aio]);
  await s.waitLog(/front-end connected/, 30_000);
  const r = await g.wait();
  assert.equal(r.exitCode, 0, r.output);
  assert.doesNotMatch(r.output, /FAILED/);
  const f = fs.readFileSync(s.image);
  for (let i = 0; i < 40; i++) assert.equal(f.toString('latin1', i * 512, i * 512 + 1 + String(i).length), `W${i}`, `block ${i}`);
});
