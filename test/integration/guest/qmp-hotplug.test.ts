// QMP against real QEMU: queries, a refused command, and hot-plugging (then unplugging) a twindisk disk in a running guest.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { QmpCommandError } from '../../../qemu-plugin/qmp.js';
import { Guest } from '../../harness/guest.js';
import { serve, tmpDir, type Served } from '../../harness/serve.js';

const dir = tmpDir();
const running: Served[] = [];
after(async () => {
  for (const s of running) await s.stop('SIGKILL');
});

test('hot-plug a vhost-user-blk disk over QMP; the guest uses it; hot-unplug releases it', async () => {
  const image = path.join(dir, 'hp.img');
  fs.writeFileSync(image, Buffer.alloc(8 << 20, 0x11));
  const s = await serve({ image, socket: path.join(dir, 'hp.sock'), dir });
  running.push(s);
  const g = await Guest.launch({
    qmp: true,
    extraArgs: ['-device', 'pcie-root-port,id=rp0,chassis=1,slot=1'],
    timeoutMs: 150_000,
    script: `
      echo WAITING-FOR-DISK
      i=0; while [ ! -b /dev/vda ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
      [ -b /dev/vda ] || { echo NO-DISK; exit 1; }
      echo "plugged size=$(cat /sys/block/vda/size)"
      dd if=/dev/vda bs=4k count=1 iflag=direct 2>/dev/null | od -An -tx1 | head -1
      printf HOTPLUGGED | dd of=/dev/vda bs=512 seek=8 conv=sync,fsync 2>/dev/null && echo WROTE
      i=0; while [ -b /dev/vda ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
      [ -b /dev/vda ] && echo STILL-THERE || echo UNPLUGGED
      # Stay up: QEMU reports DEVICE_DELETED only after the slot is powered off, which can come
      # after the disk is gone from the guest; the test ends the guest itself.
      sleep 60
    `,
  });
  const qmp = g.qmp!;
  assert.match(qmp.version, /^7\./);
  const status = await qmp.execute<{ status: string }>('query-status');
  assert.equal(status.status, 'running');
  await assert.rejects(qmp.execute('device_del', { id: 'no-such-device' }), (e: unknown) => e instanceof QmpCommandError && /no-such-device/.test(e.message));
  await g.waitFor(/WAITING-FOR-DISK/);
  await qmp.execute('chardev-add', {
    id: 'td0',
    backend: { type: 'socket', data: { addr: { type: 'unix', data: { path: s.socket } }, server: false } },
  });
  await qmp.execute('device_add', { driver: 'vhost-user-blk-pci', chardev: 'td0', id: 'disk0', bus: 'rp0', 'num-queues': 1 });
  await g.waitFor(/WROTE/, 60_000);
  const blocks = await qmp.execute<{ qdev: string }[]>('qom-list', { path: '/machine/peripheral' });
  assert.ok(JSON.stringify(blocks).includes('disk0'));
  const deleted = qmp.waitEvent('DEVICE_DELETED', 60_000, (d) => d.device === 'disk0');
  await qmp.execute('device_del', { id: 'disk0' });
  await deleted;
  await g.waitFor(/UNPLUGGED|STILL-THERE|NO-DISK/, 60_000);
  await g.kill();
  assert.match(g.output, /plugged size=16384/);
  assert.match(g.output, /11 11 11 11/);
  assert.match(g.output, /UNPLUGGED/);
  assert.equal(fs.readFileSync(image).toString('latin1', 8 * 512, 8 * 512 + 10), 'HOTPLUGGED');
  await s.waitLog(/front-end disconnected/, 10_000);
});
