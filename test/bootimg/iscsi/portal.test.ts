// The iSCSI portal over real loopback sockets: a session with header digests end to end, a login that never finishes, a
// connection limit, garbage bytes, and a connection dropped in the middle of a write (nothing written).
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, test } from 'node:test';
import { Opcode } from '../../../bootimg/iscsi/constants.js';
import { DiskOpRunner } from '../../../bootimg/iscsi/disk-ops.js';
import { PduReader, buildBhs, serializePdu, type Bhs, type Digests, type InPdu, type InitiatorBhs } from '../../../bootimg/iscsi/pdu.js';
import { IscsiPortal } from '../../../bootimg/iscsi/portal.js';
import { makeScsiDisk } from '../../../bootimg/iscsi/scsi.js';
import { encodeText } from '../../../bootimg/iscsi/text.js';
import { Logger, setSink, type Sink } from '../../../engine/log.js';
import { MemoryBackend } from '../../../engine/memory-backend.js';
import { INITIATOR, IQN, base } from './connection-harness.js';

const lines: string[] = [];
const old: Sink = setSink((level, component, msg) => lines.push(`${level} ${component} ${msg}`));
after(() => setSink(old));

const BLOCKS = 256;
function portal(o: { loginTimeoutMs?: number; maxConnections?: number } = {}): { p: IscsiPortal; mem: Uint8Array } {
  const sab = new SharedArrayBuffer(BLOCKS * 512);
  const backend = new MemoryBackend({ memory: sab });
  const disk = makeScsiDisk({ id: 'portal-test', blocks: BigInt(BLOCKS), blockSize: 512 });
  const p = new IscsiPortal({
    host: '127.0.0.1', port: 0, log: new Logger('portal-test'), ...o,
    targets: [{ name: IQN, disk, addresses: ['127.0.0.1:3260'], runner: new DiskOpRunner(backend) }],
  });
  return { p, mem: new Uint8Array(sab) };
}

/** A raw initiator on a socket: sends PDUs, collects the target's. */
class Wire {
  readonly sock: net.Socket;
  private readonly reader = new PduReader({ maxDataSegmentLength: 1 << 20 });
  private got: InPdu[] = [];
  private waiters: (() => void)[] = [];
  digests: Digests = { header: false, data: false };
  private onClose: () => void = () => {};
  readonly closed = new Promise<void>((r) => (this.onClose = r));
  constructor(port: number) {
    this.sock = net.connect(port, '127.0.0.1');
    this.sock.on('data', (d) => {
      // Target PDUs parse with the same codec (opcodes differ); the reader checks lengths and digests.
      this.got.push(...this.reader.push(d));
      for (const w of this.waiters.splice(0)) w();
    });
    this.sock.on('close', () => { this.onClose(); for (const w of this.waiters.splice(0)) w(); });
    this.sock.on('error', () => {});
  }
  send(h: InitiatorBhs, data = new Uint8Array(0)): void {
    this.sock.write(serializePdu({ bhs: buildBhs({ ...h, dataSegmentLength: data.length } as Bhs), data }, this.digests));
  }
  async next(): Promise<InPdu> {
    while (this.got.length === 0) await new Promise<void>((r) => this.waiters.push(r));
    return this.got.shift()!;
  }
  setDigests(d: Digests): void { this.digests = d; this.reader.setDigests(d); }
}

async function login(w: Wire, keys: [string, string][]): Promise<void> {
  w.send({
    opcode: Opcode.LoginRequest, ...base, immediate: true, transit: true, cont: false, csg: 1, nsg: 3, versionMax: 0, versionMin: 0,
    isid: 0x4000_0000_0001, tsih: 0, cid: 0, cmdSN: 1, expStatSN: 0, itt: 1,
  } as InitiatorBhs, encodeText([['InitiatorName', INITIATOR], ['TargetName', IQN], ['SessionType', 'Normal'], ...keys]));
  const r = await w.next();
  assert.equal(r.header.opcode, Opcode.LoginResponse);
  assert.equal((r.header as { statusClass: number }).statusClass, 0);
}

function read10(lba: number, blocks: number, cmdSN: number, itt: number): InitiatorBhs {
  const cdb = new Uint8Array(16);
  cdb.set([0x28, 0, (lba >>> 24) & 255, (lba >>> 16) & 255, (lba >>> 8) & 255, lba & 255, 0, (blocks >> 8) & 255, blocks & 255]);
  return { opcode: Opcode.ScsiCommand, ...base, read: true, write: false, attr: 1, lun: 0n, expectedDataTransferLength: blocks * 512, cmdSN, expStatSN: 0, cdb, itt } as InitiatorBhs;
}

test('a session with HeaderDigest=CRC32C and DataDigest=CRC32C reads the disk through the socket', async () => {
  const { p, mem } = portal();
  await p.start();
  try {
    mem.fill(0x5e, 512, 1024);
    const w = new Wire(p.address.port);
    await login(w, [['HeaderDigest', 'CRC32C'], ['DataDigest', 'CRC32C']]);
    w.setDigests({ header: true, data: true });
    w.send(read10(1, 1, 1, 7));
    const d = await w.next();
    assert.equal(d.header.opcode, Opcode.DataIn);
    assert.equal(d.dataDigestError, false);
    assert.ok(d.data.every((b) => b === 0x5e));
    assert.equal(p.stats.sessions, 1);
    w.sock.destroy();
  } finally {
    await p.close();
  }
});

test('a login that does not finish in time is closed; connections over the limit are refused', async () => {
  const { p } = portal({ loginTimeoutMs: 200, maxConnections: 1 });
  await p.start();
  try {
    const idle = new Wire(p.address.port);
    await new Promise((r) => setTimeout(r, 50));
    const extra = new Wire(p.address.port);
    await extra.closed;
    assert.equal(p.stats.refused, 1);
    await idle.closed;
    assert.ok(lines.some((l) => /login not finished within 0.2 s/.test(l)), lines.join('\n'));
    assert.ok(lines.some((l) => /connections are open \(maxConnections\)/.test(l)));
  } finally {
    await p.close();
  }
});

test('garbage closes the connection with a log line; a write cut off mid-data writes nothing', async () => {
  const { p, mem } = portal();
  await p.start();
  try {
    const g = new Wire(p.address.port);
    g.sock.write(Buffer.alloc(48, 0xff));
    await g.closed;
    const w = new Wire(p.address.port);
    await login(w, [['InitialR2T', 'Yes'], ['ImmediateData', 'No']]);
    const cdb = new Uint8Array(16);
    cdb.set([0x2a, 0, 0, 0, 0, 8, 0, 0, 8]); // WRITE(10) of 8 blocks at LBA 8
    w.send({ opcode: Opcode.ScsiCommand, ...base, read: false, write: true, attr: 1, lun: 0n, expectedDataTransferLength: 4096, cmdSN: 1, expStatSN: 0, cdb, itt: 9 } as InitiatorBhs);
    const r2t = await w.next();
    assert.equal(r2t.header.opcode, Opcode.R2T);
    w.send({ opcode: Opcode.DataOut, ...base, final: false, lun: 0n, ttt: (r2t.header as { ttt: number }).ttt, expStatSN: 0, dataSN: 0, bufferOffset: 0, itt: 9 } as InitiatorBhs, new Uint8Array(2048).fill(0x77));
    await new Promise((r) => setTimeout(r, 50));
    w.sock.destroy();
    await w.closed;
    await new Promise((r) => setTimeout(r, 50));
    assert.ok(mem.every((b) => b === 0), 'half a write is never applied');
    assert.ok(p.stats.protocolErrors >= 1);
  } finally {
    await p.close();
  }
});
