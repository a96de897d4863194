// Tests of the full feature phase's SCSI tasks through ConnectionState: UNMAP, WRITE SAME, VERIFY, COMPARE AND WRITE,
// persistent reservations between sessions, task management, Text Requests continued with the C bit.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Opcode, RESERVED_TAG, ScsiStatus, TaskMgmtFunction, TaskMgmtResponseCode } from '../../../bootimg/iscsi/constants.js';
import { SessionError, type DiskOp } from '../../../bootimg/iscsi/connection-state.js';
import { miscompareAt } from '../../../bootimg/iscsi/scsi.js';
import { encodeText, parseText } from '../../../bootimg/iscsi/text.js';
import { Initiator, informationOf, makeTarget, one, out, prOutCdb, prParams, senseOf } from './connection-harness.js';

const be32 = (n: number): number[] => [(n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff];

function unmapList(ranges: [number, number][]): Uint8Array {
  const b = new Uint8Array(8 + 16 * ranges.length);
  const v = new DataView(b.buffer);
  v.setUint16(0, 6 + 16 * ranges.length);
  v.setUint16(2, 16 * ranges.length);
  ranges.forEach(([lba, n], i) => { v.setBigUint64(8 + 16 * i, BigInt(lba)); v.setUint32(16 + 16 * i, n); });
  return b;
}

test('UNMAP: the parameter list as immediate data becomes a TrimOp; GOOD after completeTrim; an empty list needs no op', () => {
  const i = new Initiator(makeTarget());
  const list = unmapList([[10, 8], [100, 0], [200, 16]]);
  const s = i.send([0x42, 0, 0, 0, 0, 0, 0, 0, list.length, 0], { write: true, edtl: list.length, data: list });
  assert.equal(s.pdus.length, 0);
  assert.equal(s.ops.length, 1);
  const op = s.ops[0]!;
  assert.ok(op.kind === 'trim');
  assert.deepEqual(op.ranges, [{ lba: 10n, blocks: 8 }, { lba: 200n, blocks: 16 }]);
  assert.equal(op.zero, false);
  assert.equal(i.c.pendingWrites, 1);
  assert.equal(one(i.c.completeTrim(op.itt, 'ok'), Opcode.ScsiResponse).status, ScsiStatus.Good);
  assert.equal(i.c.pendingTasks, 0);
  // no descriptors: GOOD at once
  const none = unmapList([]);
  assert.equal(one(i.send([0x42, 0, 0, 0, 0, 0, 0, 0, 8, 0], { write: true, edtl: 8, data: none }), Opcode.ScsiResponse).status, ScsiStatus.Good);
  // a range past the end: LBA OUT OF RANGE after the data is in
  const bad = unmapList([[2040, 16]]);
  const r = one(i.send([0x42, 0, 0, 0, 0, 0, 0, 0, bad.length, 0], { write: true, edtl: bad.length, data: bad }), Opcode.ScsiResponse);
  assert.deepEqual(senseOf(r.data), [0x5, 0x21, 0x00]);
});

test('UNMAP without immediate data: an R2T for the list, the Data-Out, then the op; EDTL other than the list length is refused', () => {
  const i = new Initiator(makeTarget(), { keys: [['ImmediateData', 'No']] });
  const list = unmapList([[0, 4]]);
  const itt = i.itt();
  const r2t = one(i.send([0x42, 0, 0, 0, 0, 0, 0, 0, list.length, 0], { write: true, edtl: list.length, itt }), Opcode.R2T);
  assert.equal(r2t.desiredDataTransferLength, list.length);
  const s = i.c.receive(i.dataOut(itt, r2t.ttt, 0, 0, list));
  assert.equal(s.ops[0]?.kind, 'trim');
  // RFC 7143 section 11.4.5.1: the EDTL disagrees with the CDB: INVALID FIELD IN COMMAND INFORMATION UNIT and the residual
  const wrong = one(i.send([0x42, 0, 0, 0, 0, 0, 0, 0, list.length, 0], { write: true, edtl: 100 }), Opcode.ScsiResponse);
  assert.deepEqual(senseOf(wrong.data), [0x5, 0x0e, 0x03]);
  assert.deepEqual([wrong.underflow, wrong.residualCount], [true, 100 - list.length]);
});

test('WRITE SAME: one block of data becomes a WriteSameOp; UNMAP with zeroes a zeroing TrimOp; NDOB needs no Data-Out', () => {
  const i = new Initiator(makeTarget());
  const block = Uint8Array.from({ length: 512 }, (_, k) => k & 0xff);
  const s = i.send([0x41, 0, ...be32(64), 0, 0, 128, 0], { write: true, edtl: 512, data: block });
  const op = s.ops[0]!;
  assert.ok(op.kind === 'write-same');
  assert.deepEqual([op.lba, op.blocks, op.pattern.length, op.pattern[3]], [64n, 128, 512, 3]);
  assert.equal(one(i.c.completeWriteSame(op.itt, 'ok'), Opcode.ScsiResponse).status, ScsiStatus.Good);
  const z = i.send([0x41, 0x08, ...be32(8), 0, 0, 4, 0], { write: true, edtl: 512, data: new Uint8Array(512) }).ops[0]!;
  assert.ok(z.kind === 'trim');
  assert.deepEqual([z.ranges, z.zero], [[{ lba: 8n, blocks: 4 }], true]);
  // UNMAP bit with non-zero data: the data must be written
  assert.equal(i.send([0x41, 0x08, ...be32(8), 0, 0, 4, 0], { write: true, edtl: 512, data: block }).ops[0]!.kind, 'write-same');
  // WRITE SAME (16) NDOB: zeroes, no Data-Out; with UNMAP a zeroing trim
  const ndob = i.send([0x93, 0x01, 0, 0, 0, 0, ...be32(16), ...be32(2), 0, 0]).ops[0]!;
  assert.ok(ndob.kind === 'write-same');
  assert.ok(ndob.pattern.every((b) => b === 0));
  assert.equal(i.send([0x93, 0x09, 0, 0, 0, 0, ...be32(16), ...be32(2), 0, 0]).ops[0]!.kind, 'trim');
  // a block of data but no W bit: INVALID FIELD IN CDB
  assert.deepEqual(senseOf(one(i.send([0x41, 0, ...be32(0), 0, 0, 1, 0], { edtl: 512 }), Opcode.ScsiResponse).data), [0x5, 0x24, 0x00]);
});

test('VERIFY: BYTCHK 0 reads only; 1 collects blocks of data; 3 one block; a miscompare gives MISCOMPARE with the offset', () => {
  const i = new Initiator(makeTarget());
  const v0 = i.send([0x2f, 0x00, ...be32(5), 0, 0, 3, 0]).ops[0]!;
  assert.ok(v0.kind === 'compare');
  assert.equal(v0.expected, null);
  assert.equal(one(i.c.completeCompare(v0.itt, 'ok'), Opcode.ScsiResponse).status, ScsiStatus.Good);
  const v1 = i.send([0x2f, 0x02, ...be32(5), 0, 0, 2, 0], { write: true, edtl: 1024, data: new Uint8Array(1024).fill(7) }).ops[0]!;
  assert.ok(v1.kind === 'compare');
  assert.equal(v1.expected!.length, 1024);
  const m = one(i.c.completeCompare(v1.itt, miscompareAt(700)), Opcode.ScsiResponse);
  assert.equal(m.status, ScsiStatus.CheckCondition);
  assert.deepEqual(senseOf(m.data), [0xe, 0x1d, 0x00]);
  assert.equal(informationOf(m.data), 700);
  const v3 = i.send([0x2f, 0x06, ...be32(5), 0, 0, 9, 0], { write: true, edtl: 512, data: new Uint8Array(512) }).ops[0]!;
  assert.ok(v3.kind === 'compare');
  assert.deepEqual([v3.blocks, v3.expected!.length], [9, 512]);
  // a medium error: UNRECOVERED READ ERROR at the first LBA
  const e = one(i.c.completeCompare(v3.itt, new Error('EIO')), Opcode.ScsiResponse);
  assert.deepEqual(senseOf(e.data), [0x3, 0x11, 0x00]);
  assert.equal(informationOf(e.data), 5);
});

test('COMPARE AND WRITE: 2 x blocks of Data-Out over R2Ts split into verify and write halves; miscompare offset in INFORMATION', () => {
  const i = new Initiator(makeTarget(), { keys: [['ImmediateData', 'No'], ['MaxBurstLength', '512']] });
  const itt = i.itt();
  const cdb = [0x89, 0x08, 0, 0, 0, 0, ...be32(33), 0, 0, 0, 1, 0, 0];
  const r1 = one(i.send(cdb, { write: true, edtl: 1024, itt }), Opcode.R2T);
  assert.equal(r1.desiredDataTransferLength, 512);
  const verify = new Uint8Array(512).fill(1);
  const write = new Uint8Array(512).fill(2);
  const r2 = one(i.c.receive(i.dataOut(itt, r1.ttt, 0, 0, verify)), Opcode.R2T);
  assert.equal(r2.bufferOffset, 512);
  const s = i.c.receive(i.dataOut(itt, r2.ttt, 0, 512, write));
  const op = s.ops[0]!;
  assert.ok(op.kind === 'compare-and-write');
  assert.deepEqual([op.lba, op.blocks, op.fua, op.verify[0], op.write[0], op.verify.length, op.write.length], [33n, 1, true, 1, 2, 512, 512]);
  const m = one(i.c.completeCompareAndWrite(itt, miscompareAt(17)), Opcode.ScsiResponse);
  assert.deepEqual(senseOf(m.data), [0xe, 0x1d, 0x00]);
  assert.equal(informationOf(m.data), 17);
  assert.throws(() => i.c.completeCompareAndWrite(itt, 'ok'), SessionError);
});

test('WRITE AND VERIFY and ORWRITE: their Data-Out becomes a write-verify or or-write op; GOOD, MISCOMPARE, MEDIUM ERROR', () => {
  const i = new Initiator(makeTarget());
  const data = new Uint8Array(1024).fill(9);
  const wv = i.send([0x2e, 0x02, ...be32(6), 0, 0, 2, 0], { write: true, edtl: 1024, data }).ops[0]!;
  assert.ok(wv.kind === 'write-verify');
  assert.deepEqual([wv.lba, wv.blocks, wv.bytchk, wv.data.length, wv.data[0]], [6n, 2, true, 1024, 9]);
  assert.equal(i.c.pendingWrites, 1);
  const m = one(i.c.completeOp(wv, miscompareAt(3)), Opcode.ScsiResponse);
  assert.deepEqual([senseOf(m.data), informationOf(m.data)], [[0xe, 0x1d, 0x00], 3]);
  const wv16 = i.send([0x8e, 0, 0, 0, 0, 0, 0, 0, 0, 6, ...be32(1), 0, 0], { write: true, edtl: 512, data: data.subarray(0, 512) }).ops[0]!;
  assert.ok(wv16.kind === 'write-verify' && !wv16.bytchk);
  assert.equal(one(i.c.completeOp(wv16, 'ok'), Opcode.ScsiResponse).status, ScsiStatus.Good);
  const ow = i.send([0x8b, 0x08, 0, 0, 0, 0, 0, 0, 0, 8, ...be32(2), 0, 0], { write: true, edtl: 1024, data }).ops[0]!;
  assert.ok(ow.kind === 'or-write');
  assert.deepEqual([ow.lba, ow.blocks, ow.fua, ow.data.length], [8n, 2, true, 1024]);
  const e = one(i.c.completeOp(ow, new Error('EIO')), Opcode.ScsiResponse);
  assert.deepEqual([senseOf(e.data), informationOf(e.data)], [[0x3, 0x0c, 0x00], 8]);
  // zero blocks: GOOD, no op
  assert.equal(one(i.send([0x2e, 0, ...be32(6), 0, 0, 0, 0], { write: true }), Opcode.ScsiResponse).status, ScsiStatus.Good);
  assert.equal(i.c.pendingTasks, 0);
});

test('EDTL other than the CDB length (RFC 7143 11.4.5.1): INVALID FIELD IN COMMAND IU with the residual; nothing written', () => {
  const i = new Initiator(makeTarget(), { keys: [['InitialR2T', 'No']] });
  const cases: [number[], number, [boolean, boolean, number]][] = [
    [[0x2a, 0, ...be32(0), 0, 0, 1, 0], 0, [true, false, 512]], // WRITE (10), 1 block, EDTL 0
    [[0x2a, 0, ...be32(0), 0, 0, 1, 0], 200, [true, false, 312]],
    [[0x2a, 0, ...be32(0), 0, 0, 2, 0], 512, [true, false, 512]],
    [[0xaa, 0, ...be32(0), ...be32(1), 0, 0], 1024, [false, true, 512]], // WRITE (12)
    [[0x8a, 0, 0, 0, 0, 0, 0, 0, 0, 0, ...be32(1), 0, 0], 10000, [false, true, 9488]], // WRITE (16)
    [[0xae, 0x02, ...be32(0), ...be32(1), 0, 0], 1024, [false, true, 512]], // WRITE AND VERIFY (12)
    [[0x89, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 512, [false, true, 512]], // COMPARE AND WRITE of 0 blocks
  ];
  for (const [cdb, edtl, [overflow, underflow, count]] of cases) {
    const itt = i.itt();
    // with unsolicited Data-Out announced (F=0) when there is data, which is then dropped without a Reject
    const unsolicited = edtl > 0 && edtl <= 8192;
    const r = one(i.send(cdb, { write: true, edtl, itt, final: !unsolicited }), Opcode.ScsiResponse);
    assert.equal(r.status, ScsiStatus.CheckCondition);
    assert.deepEqual(senseOf(r.data), [0x5, 0x0e, 0x03], cdb[0]!.toString(16));
    assert.deepEqual([r.overflow, r.underflow, r.residualCount], [overflow, underflow, count], `${cdb[0]!.toString(16)} EDTL ${edtl}`);
    if (unsolicited) {
      const d = i.c.receive(i.dataOut(itt, RESERVED_TAG, 0, 0, new Uint8Array(edtl)));
      assert.deepEqual([d.pdus.length, d.ops.length, d.close], [0, 0, null]);
    }
  }
  assert.equal(i.c.pendingTasks, 0);
});

test('persistent reservations between two sessions: register, reserve, conflict, read keys, preempt (a cluster failover)', () => {
  const target = makeTarget();
  const a = new Initiator(target, { isid: 0x4000_0000_000a, name: 'iqn.1991-05.com.microsoft:node-a' });
  const b = new Initiator(target, { isid: 0x4000_0000_000b, name: 'iqn.1991-05.com.microsoft:node-b' });
  const prOut = (i: Initiator, sa: number, type: number, key: bigint, saKey: bigint): number =>
    one(i.send(prOutCdb(sa, type), { write: true, edtl: 24, data: prParams(key, saKey) }), Opcode.ScsiResponse).status;
  assert.equal(prOut(a, 0, 0, 0n, 0xaan), ScsiStatus.Good); // REGISTER
  assert.equal(prOut(a, 1, 5, 0xaan, 0n), ScsiStatus.Good); // RESERVE Write Exclusive - Registrants Only
  // B is not registered: its writes conflict, its reads go on
  assert.equal(one(b.send([0x2a, 0, ...be32(0), 0, 0, 1, 0], { write: true, edtl: 512, data: new Uint8Array(512) }), Opcode.ScsiResponse).status, ScsiStatus.ReservationConflict);
  assert.equal(b.send([0x28, 0, ...be32(0), 0, 0, 1, 0], { read: true, edtl: 512 }).ops[0]?.kind, 'read');
  assert.equal(one(b.send([0x00]), Opcode.ScsiResponse).status, ScsiStatus.Good); // TEST UNIT READY is allowed
  // once registered, B writes too (Registrants Only)
  assert.equal(prOut(b, 0, 0, 0n, 0xbbn), ScsiStatus.Good);
  assert.equal(b.send([0x2a, 0, ...be32(0), 0, 0, 1, 0], { write: true, edtl: 512, data: new Uint8Array(512) }).ops[0]?.kind, 'write');
  // READ KEYS through Data-In: generation 2, two keys
  const keys = out(b.send([0x5e, 0x00, 0, 0, 0, 0, 0, 0, 64, 0], { read: true, edtl: 64 }));
  assert.equal(keys.length, 1);
  assert.equal(keys[0]!.h.opcode, Opcode.DataIn);
  assert.deepEqual([...keys[0]!.data.subarray(0, 8)], [0, 0, 0, 2, 0, 0, 0, 16]);
  // B preempts A: A's registration is gone, B holds a Write Exclusive reservation, A's writes conflict
  assert.equal(prOut(b, 4, 1, 0xbbn, 0xaan), ScsiStatus.Good);
  // A hears of it first: UNIT ATTENTION, REGISTRATIONS PREEMPTED (SPC-4 5.12.11.4), the write not run
  const ua = one(a.send([0x2a, 0, ...be32(0), 0, 0, 1, 0], { write: true, edtl: 512, data: new Uint8Array(512) }), Opcode.ScsiResponse);
  assert.deepEqual([ua.status, ...senseOf(ua.data)], [ScsiStatus.CheckCondition, 0x6, 0x2a, 0x05]);
  assert.equal(one(a.send([0x2a, 0, ...be32(0), 0, 0, 1, 0], { write: true, edtl: 512, data: new Uint8Array(512) }), Opcode.ScsiResponse).status, ScsiStatus.ReservationConflict);
  assert.equal(prOut(a, 1, 1, 0xaan, 0n), ScsiStatus.ReservationConflict); // A's key is gone
  const rr = out(a.send([0x5e, 0x01, 0, 0, 0, 0, 0, 0, 64, 0], { read: true, edtl: 64 }))[0]!.data;
  assert.equal(rr.length, 24);
  assert.equal(new DataView(rr.buffer, rr.byteOffset).getBigUint64(8), 0xbbn);
  assert.equal(rr[21], 1);
  // A bad parameter list length: PARAMETER LIST LENGTH ERROR, no Data-Out taken
  const len = one(a.send([0x5f, 0, 0, 0, 0, 0, 0, 0, 20, 0], { write: true, edtl: 20, data: new Uint8Array(20) }), Opcode.ScsiResponse);
  assert.deepEqual(senseOf(len.data), [0x5, 0x1a, 0x00]);
});

test('ABORT TASK: a read in flight is removed; its completion sends nothing; the ITT can be reused at once (completeOp is exact)', () => {
  const i = new Initiator(makeTarget());
  const itt = 0x777;
  const cmdSN = i.cmdSN;
  const old = i.send([0x28, 0, ...be32(1), 0, 0, 1, 0], { read: true, edtl: 512, itt }).ops[0]!;
  const r = one(i.c.receive(i.tmf(TaskMgmtFunction.AbortTask, { ref: itt, refCmdSN: cmdSN })), Opcode.TaskMgmtResponse);
  assert.equal(r.response, TaskMgmtResponseCode.FunctionComplete);
  assert.equal(i.c.pendingReads, 0);
  const fresh = i.send([0x28, 0, ...be32(2), 0, 0, 1, 0], { read: true, edtl: 512, itt }).ops[0]!;
  const dropped = i.c.completeOp(old, new Uint8Array(512));
  assert.deepEqual([dropped.pdus.length, dropped.close], [0, null]);
  assert.match(dropped.log.join(), /aborted/);
  const answer = out(i.c.completeOp(fresh, new Uint8Array(512)));
  assert.equal(answer.length, 1);
  assert.equal(answer[0]!.h.opcode, Opcode.DataIn);
  assert.throws(() => i.c.completeOp(fresh, new Uint8Array(512)), SessionError);
  // by ITT: an aborted op is taken when no live task has one
  const again = i.send([0x28, 0, ...be32(3), 0, 0, 1, 0], { read: true, edtl: 512, itt: 0x778 }).ops[0]!;
  one(i.c.receive(i.tmf(TaskMgmtFunction.AbortTask, { ref: 0x778, refCmdSN: i.cmdSN - 1 })), Opcode.TaskMgmtResponse);
  assert.equal(i.c.completeRead(again.itt, new Uint8Array(512)).pdus.length, 0);
});

test('ABORT TASK: a write collecting data drops its R2T state and later Data-Out quietly; unknown tag or wrong RefCmdSN: Task Does Not Exist', () => {
  const i = new Initiator(makeTarget(), { keys: [['ImmediateData', 'No']] });
  const itt = i.itt();
  const cmdSN = i.cmdSN;
  const r2t = one(i.send([0x2a, 0, ...be32(0), 0, 0, 2, 0], { write: true, edtl: 1024, itt }), Opcode.R2T);
  assert.equal(one(i.c.receive(i.tmf(TaskMgmtFunction.AbortTask, { ref: itt, refCmdSN: cmdSN + 1 })), Opcode.TaskMgmtResponse).response, TaskMgmtResponseCode.TaskDoesNotExist);
  assert.equal(one(i.c.receive(i.tmf(TaskMgmtFunction.AbortTask, { ref: itt, refCmdSN: cmdSN })), Opcode.TaskMgmtResponse).response, TaskMgmtResponseCode.FunctionComplete);
  assert.equal(i.c.pendingWrites, 0);
  const late = i.c.receive(i.dataOut(itt, r2t.ttt, 0, 0, new Uint8Array(1024)));
  assert.deepEqual([late.pdus.length, late.ops.length, late.close], [0, 0, null]);
  assert.equal(one(i.c.receive(i.tmf(TaskMgmtFunction.AbortTask, { ref: 0xdead, refCmdSN: 0 })), Opcode.TaskMgmtResponse).response, TaskMgmtResponseCode.TaskDoesNotExist);
  // Data-Out for an ITT never seen is still a protocol error
  assert.equal(one(i.c.receive(i.dataOut(0xbeef, RESERVED_TAG, 0, 0, new Uint8Array(512))), Opcode.Reject).opcode, Opcode.Reject);
});

test('ABORT TASK SET, CLEAR TASK SET, LOGICAL UNIT RESET, TARGET WARM RESET abort every task; other functions are refused', () => {
  for (const fn of [TaskMgmtFunction.AbortTaskSet, TaskMgmtFunction.ClearTaskSet, TaskMgmtFunction.LogicalUnitReset, TaskMgmtFunction.TargetWarmReset]) {
    const i = new Initiator(makeTarget());
    const ops: DiskOp[] = [];
    ops.push(...i.send([0x28, 0, ...be32(1), 0, 0, 1, 0], { read: true, edtl: 512 }).ops);
    ops.push(...i.send([0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0]).ops);
    ops.push(...i.send([0x2a, 0, ...be32(0), 0, 0, 1, 0], { write: true, edtl: 512, data: new Uint8Array(512) }).ops);
    i.send([0x2a, 0, ...be32(0), 0, 0, 2, 0], { write: true, edtl: 1024 }); // collecting (R2T out)
    assert.equal(i.c.pendingTasks, 4);
    assert.equal(one(i.c.receive(i.tmf(fn)), Opcode.TaskMgmtResponse).response, TaskMgmtResponseCode.FunctionComplete);
    assert.equal(i.c.pendingTasks, 0);
    for (const op of ops) assert.equal(i.c.completeOp(op, op.kind === 'read' ? new Uint8Array(512) : 'ok').pdus.length, 0);
  }
  const i = new Initiator(makeTarget());
  const fnResponse = (fn: number, lun = 0n): number => one(i.c.receive(i.tmf(fn, { lun })), Opcode.TaskMgmtResponse).response;
  assert.equal(fnResponse(TaskMgmtFunction.LogicalUnitReset, 1n), TaskMgmtResponseCode.LunDoesNotExist);
  assert.equal(fnResponse(TaskMgmtFunction.TargetColdReset), TaskMgmtResponseCode.FunctionNotSupported);
  assert.equal(fnResponse(TaskMgmtFunction.ClearAca), TaskMgmtResponseCode.FunctionNotSupported);
  assert.equal(fnResponse(TaskMgmtFunction.TaskReassign), TaskMgmtResponseCode.ReassignmentNotSupported);
  assert.equal(fnResponse(42), TaskMgmtResponseCode.FunctionRejected);
  assert.equal(i.c.phase, 'full');
});

test('a reset leaves persistent reservations in place (SPC-4 5.12.1)', () => {
  const target = makeTarget();
  const a = new Initiator(target, { isid: 1 });
  const b = new Initiator(target, { isid: 2 });
  one(a.send(prOutCdb(0), { write: true, edtl: 24, data: prParams(0n, 7n) }), Opcode.ScsiResponse);
  one(a.send(prOutCdb(1, 3), { write: true, edtl: 24, data: prParams(7n, 0n) }), Opcode.ScsiResponse);
  one(a.c.receive(a.tmf(TaskMgmtFunction.TargetWarmReset)), Opcode.TaskMgmtResponse);
  one(b.c.receive(b.tmf(TaskMgmtFunction.LogicalUnitReset)), Opcode.TaskMgmtResponse);
  // b's first command reports a's reset (unit-attention.test.ts); the reservation is still there after it
  assert.deepEqual(senseOf(one(b.send([0x00]), Opcode.ScsiResponse).data), [0x6, 0x29, 0x02]);
  assert.equal(one(b.send([0x28, 0, ...be32(0), 0, 0, 1, 0], { read: true, edtl: 512 }), Opcode.ScsiResponse).status, ScsiStatus.ReservationConflict);
});

test('a command answered without its Data-Out (W bit, F=0): the unsolicited Data-Out that follows is dropped quietly', () => {
  const i = new Initiator(makeTarget(), { keys: [['InitialR2T', 'No']] });
  const itt = i.itt();
  const s = i.send([0x00], { write: true, final: false, edtl: 1024, itt });
  const r = one(s, Opcode.ScsiResponse);
  assert.deepEqual([r.status, r.underflow, r.residualCount], [ScsiStatus.Good, true, 1024]);
  const d = i.c.receive(i.dataOut(itt, RESERVED_TAG, 0, 0, new Uint8Array(1024)));
  assert.deepEqual([d.pdus.length, d.close], [0, null]);
});

test('Text Request continued with the C bit: an empty answer with a TTT per part, then the answer to the whole text', () => {
  const i = new Initiator(makeTarget());
  const all = encodeText([['SendTargets', ''], ['X-Vendor-Key', 'v']]);
  const itt = 0x900;
  const r1 = one(i.c.receive(i.text(all.subarray(0, 5), { cont: true, itt })), Opcode.TextResponse);
  assert.deepEqual([r1.final, r1.data.length], [false, 0]);
  assert.notEqual(r1.ttt, RESERVED_TAG);
  const r2 = one(i.c.receive(i.text(all.subarray(5), { ttt: r1.ttt, itt })), Opcode.TextResponse);
  assert.equal(r2.final, true);
  const answer = parseText(r2.data);
  assert.equal(answer.get('TargetName'), 'iqn.2026-12.org.twindisk:r0');
  assert.equal(answer.get('X-Vendor-Key'), 'NotUnderstood');
  // a new request (TTT 0xffffffff) drops an unfinished one
  one(i.c.receive(i.text(all.subarray(0, 5), { cont: true, itt: 0x901 })), Opcode.TextResponse);
  const fresh = one(i.c.receive(i.text(encodeText([['SendTargets', '']]), { itt: 0x902 })), Opcode.TextResponse);
  assert.equal(parseText(fresh.data).get('TargetName'), 'iqn.2026-12.org.twindisk:r0');
});
