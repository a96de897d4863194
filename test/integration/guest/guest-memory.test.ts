// Real QEMU guests of any memory size on `twindisk serve`: an 8 GiB q35 guest (RAM above 4 GiB, in a region larger than one view) and memory hot-plugged (pc-dimm) while the guest does I/O.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
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

async function start(name: string, size = 64 << 20): Promise<Served> {
  const image = path.join(dir, `${name}.img`);
  fs.writeFileSync(image, Buffer.alloc(size));
  const s = await serve({ image, socket: path.join(dir, `${name}.sock`), dir });
  running.push(s);
  return s;
}

const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex');

test('an 8 GiB q35 guest (6 GiB above 4 GiB): writes and reads through twindisk with matching checksums', async () => {
  const s = await start('big');
  const r = await runGuest({
    disks: [{ socket: s.socket }],
    memoryMiB: 8192,
    timeoutMs: 600_000,
    // Buffers and page cache come from ZONE_NORMAL first: on this guest, memory above 4 GiB.
    script: `
      grep MemTotal /proc/meminfo
      dd if=/dev/urandom of=/tmp/a bs=64k count=64 2>/dev/null
      echo "src $(md5sum < /tmp/a)"
      dd if=/tmp/a of=/dev/vda bs=64k oflag=direct 2>/dev/null
      dd if=/dev/vda of=/tmp/b bs=64k count=64 iflag=direct 2>/dev/null
      echo "direct $(md5sum < /tmp/b)"
      dd if=/tmp/a of=/dev/vda bs=64k seek=256 conv=fsync 2>/dev/null
      echo 3 > /proc/sys/vm/drop_caches
      echo "cached $(dd if=/dev/vda bs=64k skip=256 count=64 2>/dev/null | md5sum)"
    `,
  });
  assert.equal(r.exitCode, 0, r.output);
  const kb = Number(/MemTotal:\s+(\d+) kB/.exec(r.output)?.[1]);
  assert.ok(kb > 7 * 1024 * 1024, `the guest has its 8 GiB (${kb} kB)`);
  const src = /src ([0-9a-f]{32})/.exec(r.output)?.[1];
  assert.ok(src, r.output);
  assert.match(r.output, new RegExp(`direct ${src}`), 'direct read back');
  assert.match(r.output, new RegExp(`cached ${src}`), 'buffered write and read back');
  const f = fs.readFileSync(s.image);
  assert.equal(md5(f.subarray(0, 4 << 20)), src, 'the image holds what the guest wrote');
  assert.equal(md5(f.subarray(16 << 20, 20 << 20)), src);
  assert.match(s.log(), /gpa=0x100000000/, 'a region at 4 GiB was mapped');
  assert.doesNotMatch(s.log(), /cannot map/);
});

test('memory hot-plug: a pc-dimm added over QMP while the guest does I/O is mapped, and the guest\'s I/O in it is intact', async () => {
  const s = await start('dimm');
  const g = await Guest.launch({
    disks: [{ socket: s.socket }],
    memoryMiB: 2048,
    memorySlots: 4,
    maxMemoryMiB: 16384,
    qmp: true,
    timeoutMs: 600_000,
    script: `
      blocks() { ls -d /sys/devices/system/memory/memory* | wc -l; }
      round() {
        dd if=/dev/urandom of=/tmp/x bs=64k count=4 2>/dev/null
        dd if=/tmp/x of=/dev/vda bs=64k seek=$(( ($1 % 32) * 4 )) oflag=direct 2>/dev/null
        a=$(md5sum < /tmp/x)
        b=$(dd if=/dev/vda bs=64k skip=$(( ($1 % 32) * 4 )) count=4 iflag=direct 2>/dev/null | md5sum)
        [ "$a" = "$b" ] || echo "MISMATCH round $1"
      }
      before=$(blocks)
      echo "IO-LOOP blocks=$before"
      n=0
      while [ $(blocks) -eq $before ] && [ $n -lt 2000 ]; do round $n; n=$((n+1)); done
      echo "PLUGGED blocks=$(blocks) rounds=$n"
      # Keep going across the plug, then online the new memory and use it (ZONE_NORMAL: the DIMM).
      i=0; while [ $i -lt 8 ]; do round $i; i=$((i+1)); done
      for st in /sys/devices/system/memory/memory*/state; do grep -q offline $st && echo online > $st; done
      grep MemTotal /proc/meminfo
      dd if=/dev/urandom of=/tmp/big bs=1M count=8 2>/dev/null
      echo "src $(md5sum < /tmp/big)"
      dd if=/tmp/big of=/dev/vda bs=1M seek=32 oflag=direct 2>/dev/null
      echo "back $(dd if=/dev/vda bs=1M skip=32 count=8 iflag=direct 2>/dev/null | md5sum)"
      i=0; while [ $i -lt 8 ]; do round $i; i=$((i+1)); done
      echo DONE
    `,
  });
  try {
    await g.waitFor(/IO-LOOP/, 300_000);
    const qmp = g.qmp!;
    await qmp.execute('object-add', { 'qom-type': 'memory-backend-memfd', id: 'm1', size: 1 << 30, share: true });
    await qmp.execute('device_add', { driver: 'pc-dimm', id: 'd1', memdev: 'm1' });
    const r = await g.wait();
    assert.equal(r.exitCode, 0, r.output);
    assert.match(r.output, /PLUGGED blocks=\d+ rounds=\d+/);
    assert.match(r.output, /DONE/);
    assert.doesNotMatch(r.output, /MISMATCH/);
    const kb = Number(/MemTotal:\s+(\d+) kB/.exec(r.output)?.[1]);
    assert.ok(kb > 2.5 * 1024 * 1024, `the guest onlined the DIMM (${kb} kB)`);
    const src = /src ([0-9a-f]{32})/.exec(r.output)?.[1];
    assert.match(r.output, new RegExp(`back ${src}`));
    assert.equal(md5(fs.readFileSync(s.image).subarray(32 << 20, 40 << 20)), src);
    console.log(s.log().split('\n').filter((l) => /memory region/.test(l)).join('\n'));
    // The DIMM sits above 4 GiB; twindisk mapped it without a reconnect.
    assert.match(s.log(), /memory region added gpa=0x1[0-9a-f]{8} bytes=1073741824/);
    assert.equal((s.log().match(/front-end connected/g) ?? []).length, 1);
  } finally {
    await g.kill();
  }
});
