// Fuzz of the full feature phase: valid and mutated SCSI, Data-Out, task management and text PDUs through receive(), ops completed
// in random order; receive() never throws, no op reaches outside the disk, no task gets two responses.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Opcode, RESERVED_TAG } from '../../../bootimg/iscsi/constants.js';
import type { DiskOp, Step } from '../../../bootimg/iscsi/connection-state.js';
import { PduError, PduReader, parseBhs, serializePdu, type InPdu, type TargetBhs } from '../../../bootimg/iscsi/pdu.js';
import { miscompareAt } from '../../../bootimg/iscsi/scsi.js';
import { encodeText } from '../../../bootimg/iscsi/text.js';
import { Initiator, makeTarget, prOutCdb, prParams } from './connection-harness.js';

function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    return x / 0x1_0000_0000;
  };
}

const be32 = (n: number): number[] => [(n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff];

test('fuzz: commands, Data-Out, task management and text, valid and mutated, with ops completed out of order', () => {
  const rand = rng(0x7a5c);
  const int = (n: number): number => Math.floor(rand() * n);
  const pick = <T>(a: readonly T[]): T => a[int(a.length)]!;
  const seen = new Map<string, number>(); // what the fuzz reached, so it cannot pass by reaching nothing
  const count = (what: string): void => { seen.set(what, (seen.get(what) ?? 0) + 1); };
  for (let round = 0; round < 60; round++) {
    const target = makeTarget({ blocks: 256n });
    const blocks = Number(target.disk.blocks);
    const keys: [string, string][] = pick([[], [['ImmediateData', 'No']], [['InitialR2T', 'No'], ['MaxBurstLength', '1024'], ['FirstBurstLength', '512']]]);
    const i = new Initiator(target, { keys, isid: round + 1 });
    const itts = [0x10, 0x11, 0x12, 0x13, 0x14, 0x15];
    const cmdsByItt = new Map<number, number>();
    const finalsByItt = new Map<number, number>();
    const pendingOps: DiskOp[] = [];
    const r2ts: { itt: number; ttt: number; offset: number; length: number }[] = [];
    const check = (s: Step): void => {
      for (const p of s.pdus) {
        const h = parseBhs(p.bhs) as TargetBhs;
        count(h.opcode === Opcode.TaskMgmtResponse ? `tmf ${h.response}` : `pdu ${h.opcode}`);
        if (h.opcode === Opcode.R2T) r2ts.push({ itt: h.itt, ttt: h.ttt, offset: h.bufferOffset, length: h.desiredDataTransferLength });
        const final = h.opcode === Opcode.ScsiResponse || (h.opcode === Opcode.DataIn && h.statusPresent);
        if (final) {
          const n = (finalsByItt.get(h.itt) ?? 0) + 1;
          finalsByItt.set(h.itt, n);
          assert.ok(n <= (cmdsByItt.get(h.itt) ?? 0), `two responses for ITT 0x${h.itt.toString(16)}`);
        }
      }
      for (const op of s.ops) {
        if (op.kind === 'trim') for (const r of op.ranges) assert.ok(r.lba + BigInt(r.blocks) <= target.disk.blocks);
        else if (op.kind !== 'sync') assert.ok(op.lba + BigInt(op.blocks) <= target.disk.blocks, `${op.kind} past the end`);
        if (op.kind === 'write') assert.equal(op.data.length, op.blocks * 512);
        if (op.kind === 'compare-and-write') assert.deepEqual([op.verify.length, op.write.length], [op.blocks * 512, op.blocks * 512]);
        if (op.kind === 'write-same') assert.equal(op.pattern.length, 512);
        count(`op ${op.kind}`);
        pendingOps.push(op);
      }
    };
    const valid = (): InPdu => {
      const itt = pick(itts);
      const lba = int(blocks + 4);
      const n = 1 + int(4);
      switch (int(12)) {
        case 0: return i.command([0x28, 0, ...be32(lba), 0, 0, n, 0], { read: true, edtl: n * 512, itt });
        case 1: case 2: {
          const imm = rand() < 0.5 ? new Uint8Array(Math.min(n * 512, 512 * int(3))) : undefined;
          return i.command([0x2a, 0, ...be32(lba), 0, 0, n, 0], { write: true, edtl: n * 512, itt, data: imm && imm.length ? imm : undefined, final: rand() < 0.7 });
        }
        case 3: return i.command([0x41, pick([0, 0x08]), ...be32(lba), 0, 0, n, 0], { write: true, edtl: 512, itt, data: new Uint8Array(512).fill(int(2)) });
        case 4: return i.command([0x2f, pick([0, 2, 6]), ...be32(lba), 0, 0, n, 0], { write: rand() < 0.7, edtl: pick([0, 512, n * 512]), itt });
        case 5: return i.command([0x89, 0, 0, 0, 0, 0, ...be32(lba), 0, 0, 0, 1, 0, 0], { write: true, edtl: 1024, itt, data: rand() < 0.5 ? new Uint8Array(512) : undefined });
        case 6: {
          const list = new Uint8Array(24);
          new DataView(list.buffer).setUint16(0, 22);
          new DataView(list.buffer).setUint16(2, 16);
          new DataView(list.buffer).setBigUint64(8, BigInt(lba));
          new DataView(list.buffer).setUint32(16, n);
          return i.command([0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0], { write: true, edtl: 24, itt, data: rand() < 0.7 ? list : undefined });
        }
        case 7: return i.command(prOutCdb(int(7), pick([1, 3, 5, 7])), { write: true, edtl: 24, itt, data: prParams(BigInt(int(3)), BigInt(int(3))) });
        case 8: return i.tmf(pick([1, 1, 1, 2, 4, 5, 6, 7, 8]), { ref: pick(itts), refCmdSN: i.cmdSN - int(4), itt: 0x7000 + int(4) });
        case 9: {
          const r = r2ts.length > 0 && rand() < 0.8 ? r2ts.splice(int(r2ts.length), 1)[0]! : { itt, ttt: RESERVED_TAG, offset: 0, length: 512 };
          return i.dataOut(r.itt, r.ttt, 0, r.offset, new Uint8Array(Math.max(1, r.length)), true);
        }
        case 10: return i.text(encodeText([['SendTargets', '']]), { itt: 0x8000, cont: rand() < 0.3 });
        default: return i.command([0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0], { itt });
      }
    };
    for (let k = 0; k < 120 && i.c.phase === 'full'; k++) {
      let pdu = valid();
      if (rand() < 0.25) {
        // mutate a few bytes of the BHS or the data, then cut it again as the transport would
        const bytes = serializePdu({ bhs: pdu.bhs.slice(), data: pdu.data.slice() });
        for (let m = 1 + int(3); m > 0; m--) {
          const at = rand() < 0.8 ? int(48) : int(bytes.length);
          if (at >= 4 && at < 8) continue; // keep the framing
          bytes[at] = int(256);
        }
        try {
          const got = new PduReader({ maxDataSegmentLength: 1 << 20 }).push(bytes);
          if (got.length !== 1) continue;
          pdu = got[0]!;
        } catch (e) {
          assert.ok(e instanceof PduError);
          continue;
        }
      }
      if (pdu.header.opcode === Opcode.ScsiCommand) cmdsByItt.set(pdu.header.itt, (cmdsByItt.get(pdu.header.itt) ?? 0) + 1);
      check(i.c.receive(pdu));
      // complete some ops, in random order, some much later (after aborts and ITT reuse)
      while (pendingOps.length > 0 && rand() < 0.5) {
        const op = pendingOps.splice(int(pendingOps.length), 1)[0]!;
        const result = op.kind === 'read' ? (rand() < 0.8 ? new Uint8Array(op.blocks * 512) : new Error('EIO'))
          : pick(['ok', 'ok', new Error('EIO'), miscompareAt(int(512))] as const);
        check(i.c.completeOp(op, result));
      }
    }
    for (const op of pendingOps) {
      const s = i.c.completeOp(op, op.kind === 'read' ? new Uint8Array(op.blocks * 512) : 'ok');
      if (s.pdus.length === 0) count('dropped completion');
      check(s);
    }
  }
  for (const what of ['op read', 'op write', 'op trim', 'op write-same', 'op compare', 'op compare-and-write', 'op sync', 'tmf 0', 'tmf 1',
    'pdu 49', 'pdu 33', 'pdu 37', 'pdu 63', 'pdu 36', 'dropped completion']) {
    assert.ok((seen.get(what) ?? 0) > 0, `the fuzz never reached ${what}: ${[...seen].join(' ')}`);
  }
});
