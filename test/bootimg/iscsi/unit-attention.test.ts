// Unit attention conditions (SAM-5 5.14), driven through ConnectionState as an initiator would see them: CAPACITY DATA HAS
// CHANGED (SPC-4 Annex D: 2A/09), which an online resize (capacityChanged) raises for every session logged in; the resets
// of another nexus (29/03, 29/02); the persistent reservation changes another nexus made (2A/03, 2A/04, 2A/05).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Opcode, RESERVED_TAG, ScsiStatus, TaskMgmtFunction, TaskMgmtResponseCode } from '../../../bootimg/iscsi/constants.js';
import type { TargetConfig } from '../../../bootimg/iscsi/connection-state.js';
import { capacityChanged, makeScsiDisk } from '../../../bootimg/iscsi/scsi.js';
import { Initiator, makeTarget, one, prOutCdb, prParams, senseOf } from './connection-harness.js';

const be32 = (n: number): number[] => [(n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff];
const UA: [number, number, number] = [0x6, 0x2a, 0x09];

const TUR = [0x00, 0, 0, 0, 0, 0];
const INQUIRY = [0x12, 0, 0, 0, 96, 0];
const REPORT_LUNS = [0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0];
const requestSense = (desc = 0, alloc = 18): number[] => [0x03, desc, 0, 0, alloc, 0];
const read10 = (lba: number, blocks: number): number[] => [0x28, 0, ...be32(lba), 0, 0, blocks, 0];
const write10 = (lba: number, blocks: number): number[] => [0x2a, 0, ...be32(lba), 0, 0, blocks, 0];
const READ_CAPACITY_16 = [0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0];

/** The SCSI Response of a command refused with the unit attention: CHECK CONDITION, 6/2A/09, fixed-format sense. */
function assertUa(s: ReturnType<Initiator['send']>, what: string): void {
  const r = one(s, Opcode.ScsiResponse);
  assert.equal(r.status, ScsiStatus.CheckCondition, what);
  assert.deepEqual(senseOf(r.data), UA, what);
  assert.equal(s.ops.length, 0, `${what}: no disk op`);
}

function assertGood(s: ReturnType<Initiator['send']>, what: string): void {
  assert.equal(one(s, Opcode.ScsiResponse).status, ScsiStatus.Good, what);
}

/** READ CAPACITY (16)'s last LBA + 1. */
function capacity(i: Initiator): bigint {
  const d = one(i.send(READ_CAPACITY_16, { read: true, edtl: 32 }), Opcode.DataIn);
  assert.equal(d.status, ScsiStatus.Good);
  return new DataView(d.data.buffer, d.data.byteOffset, 8).getBigUint64(0) + 1n;
}

test('capacityChanged sets the capacity and counts the changes; the same capacity again is no change', () => {
  const disk = makeScsiDisk({ id: 'd', blocks: 8n, blockSize: 512 });
  assert.equal(disk.capacityChanges, 0);
  capacityChanged(disk, 16n);
  assert.deepEqual([disk.blocks, disk.capacityChanges], [16n, 1]);
  capacityChanged(disk, 16n);
  assert.deepEqual([disk.blocks, disk.capacityChanges], [16n, 1]);
  capacityChanged(disk, 4n);
  assert.deepEqual([disk.blocks, disk.capacityChanges], [4n, 2]);
});

test('after a capacity change the next TEST UNIT READY gets the unit attention; the command after it runs and READ CAPACITY says the new size', () => {
  const target = makeTarget();
  const i = new Initiator(target);
  assertGood(i.send(TUR), 'before the change');
  assert.equal(capacity(i), 2048n);
  capacityChanged(target.disk, 4096n);
  assertUa(i.send(TUR), 'TEST UNIT READY after the change');
  assertGood(i.send(TUR), 'the unit attention is reported once');
  assert.equal(capacity(i), 4096n);
});

test('READ (10) with a pending unit attention is not run: no read op; the retry reads (past the old end)', () => {
  const target = makeTarget();
  const i = new Initiator(target);
  capacityChanged(target.disk, 4096n);
  assertUa(i.send(read10(3000, 8), { read: true, edtl: 4096 }), 'READ (10)');
  assert.equal(i.c.pendingTasks, 0);
  const s = i.send(read10(3000, 8), { read: true, edtl: 4096 });
  assert.equal(s.pdus.length, 0);
  assert.deepEqual(s.ops.map((o) => o.kind), ['read']);
});

test('WRITE (10) with immediate data and a pending unit attention: refused, its data dropped, nothing written; the retry writes', () => {
  const target = makeTarget();
  const i = new Initiator(target);
  capacityChanged(target.disk, 4096n);
  const data = new Uint8Array(1024).fill(0xa5);
  assertUa(i.send(write10(2100, 2), { write: true, edtl: 1024, data }), 'WRITE (10) with all its data immediate');
  assert.deepEqual([i.c.pendingTasks, i.c.pendingWrites], [0, 0]);
  const s = i.send(write10(2100, 2), { write: true, edtl: 1024, data });
  assert.equal(s.pdus.length, 0);
  const op = s.ops[0]!;
  assert.ok(op.kind === 'write');
  assert.deepEqual([op.lba, op.blocks, op.data[0]], [2100n, 2, 0xa5]);
  assertGood(i.c.completeOp(op, 'ok'), 'the retried write');
});

test('WRITE (10) announcing unsolicited Data-Out (F=0) with a pending unit attention: the Data-Out that follows is dropped quietly', () => {
  const target = makeTarget();
  const i = new Initiator(target, { keys: [['InitialR2T', 'No']] });
  capacityChanged(target.disk, 4096n);
  const itt = i.itt();
  const data = new Uint8Array(2048).fill(0x5a);
  assertUa(i.send(write10(0, 4), { write: true, final: false, edtl: 2048, data: data.subarray(0, 512), itt }), 'WRITE (10), F=0');
  // The unsolicited Data-Out of the refused command: no Reject, no R2T, no op, the connection stays.
  const d = i.c.receive(i.dataOut(itt, RESERVED_TAG, 0, 512, data.subarray(512, 2048)));
  assert.deepEqual([d.pdus.length, d.ops.length, d.close], [0, 0, null]);
  assert.equal(i.c.phase, 'full');
  // Without immediate data and with InitialR2T: no R2T is sent for a refused write.
  const j = new Initiator(target, { keys: [['ImmediateData', 'No']] });
  capacityChanged(target.disk, 8192n);
  assertUa(j.send(write10(0, 4), { write: true, edtl: 2048 }), 'WRITE (10) waiting for an R2T');
  assert.equal(j.c.pendingTasks, 0);
  const r2t = one(j.send(write10(0, 4), { write: true, edtl: 2048 }), Opcode.R2T);
  assert.equal(r2t.desiredDataTransferLength, 2048);
});

test('INQUIRY and REPORT LUNS run and leave the unit attention pending; the next other command gets it', () => {
  const target = makeTarget();
  const i = new Initiator(target);
  capacityChanged(target.disk, 4096n);
  const inq = one(i.send(INQUIRY, { read: true, edtl: 96 }), Opcode.DataIn);
  assert.deepEqual([inq.status, inq.data.length, inq.data[0]], [ScsiStatus.Good, 96, 0x00]);
  const luns = one(i.send(REPORT_LUNS, { read: true, edtl: 16 }), Opcode.DataIn);
  assert.equal(luns.status, ScsiStatus.Good);
  assert.equal(luns.data[3], 8);
  // A command to another LUN is refused for that, and the condition of LUN 0 stays.
  assert.deepEqual(senseOf(one(i.send(TUR, { lun: 1n << 48n }), Opcode.ScsiResponse).data), [0x5, 0x25, 0x00]);
  assertUa(i.send(READ_CAPACITY_16, { read: true, edtl: 32 }), 'READ CAPACITY (16) after INQUIRY and REPORT LUNS');
  assert.equal(capacity(i), 4096n);
});

test('REQUEST SENSE reports the unit attention as its sense data and clears it; DESC=1 is refused and leaves it', () => {
  const target = makeTarget();
  const i = new Initiator(target);
  // Nothing pending: NO SENSE.
  const none = one(i.send(requestSense(), { read: true, edtl: 18 }), Opcode.DataIn);
  assert.deepEqual([none.data[0], none.data[2]! & 0x0f, none.data[12], none.data[13]], [0x70, 0, 0, 0]);
  capacityChanged(target.disk, 4096n);
  // Descriptor format is not supported: INVALID FIELD IN CDB, the condition stays.
  assert.deepEqual(senseOf(one(i.send(requestSense(1), { read: true, edtl: 18 }), Opcode.ScsiResponse).data), [0x5, 0x24, 0x00]);
  const d = one(i.send(requestSense(), { read: true, edtl: 18 }), Opcode.DataIn);
  assert.equal(d.status, ScsiStatus.Good);
  assert.equal(d.data.length, 18);
  assert.deepEqual([d.data[0], d.data[2]! & 0x0f, d.data[7], d.data[12], d.data[13]], [0x70, 0x6, 10, 0x2a, 0x09]);
  assertGood(i.send(TUR), 'cleared by REQUEST SENSE');
  const again = one(i.send(requestSense(), { read: true, edtl: 18 }), Opcode.DataIn);
  assert.deepEqual([again.data[2]! & 0x0f, again.data[12]], [0, 0]);
});

test('REQUEST SENSE truncated to its ALLOCATION LENGTH still clears the unit attention', () => {
  const target = makeTarget();
  const i = new Initiator(target);
  capacityChanged(target.disk, 4096n);
  const d = one(i.send(requestSense(0, 8), { read: true, edtl: 8 }), Opcode.DataIn);
  assert.deepEqual([d.data.length, d.data[0], d.data[2]! & 0x0f], [8, 0x70, 0x6]);
  assertGood(i.send(TUR), 'cleared');
});

test('each session gets its own unit attention; a session that logs in after the change gets none', () => {
  const target = makeTarget();
  const a = new Initiator(target, { isid: 0x4000_0000_0001 });
  const b = new Initiator(target, { isid: 0x4000_0000_0002, name: 'iqn.1991-05.com.example:other' });
  capacityChanged(target.disk, 4096n);
  const late = new Initiator(target, { isid: 0x4000_0000_0003 });
  assertGood(late.send(TUR), 'logged in after the change');
  assert.equal(capacity(late), 4096n);
  assertUa(a.send(TUR), 'session a');
  assertGood(a.send(TUR), 'session a, cleared');
  // a's report does not clear b's condition
  assertUa(b.send(read10(0, 1), { read: true, edtl: 512 }), 'session b');
  assertGood(late.send(TUR), 'still nothing for the late session');
});

test('sessions of another target are unaffected', () => {
  const mine = makeTarget();
  const other: TargetConfig = {
    name: 'iqn.2026-12.org.twindisk:r1', disk: makeScsiDisk({ id: 'r1/0', blocks: 2048n, blockSize: 512 }), addresses: ['10.0.0.1:3260'],
  };
  const a = new Initiator(mine);
  const o = new Initiator(other);
  capacityChanged(mine.disk, 4096n);
  assertGood(o.send(TUR), 'the other target');
  assert.equal(capacity(o), 2048n);
  assertUa(a.send(TUR), 'this target');
});

test('several changes before the next command make one unit attention; a shrink raises one too', () => {
  const target = makeTarget();
  const i = new Initiator(target);
  capacityChanged(target.disk, 3072n);
  capacityChanged(target.disk, 4096n);
  assertUa(i.send(TUR), 'after two changes');
  assertGood(i.send(TUR), 'one unit attention for both');
  assert.equal(capacity(i), 4096n);
  capacityChanged(target.disk, 1024n);
  assertUa(i.send(TUR), 'after a shrink');
  assert.equal(capacity(i), 1024n);
  // Setting the same capacity is no change.
  capacityChanged(target.disk, 1024n);
  assertGood(i.send(TUR), 'no change, no unit attention');
});

// ------------------------------------------------------------------------------------------------ several nexuses

type Asc = [number, number];
const LUN_RESET: Asc = [0x29, 0x03];
const WARM_RESET: Asc = [0x29, 0x02];
const CAPACITY: Asc = [0x2a, 0x09];
const RESERVATIONS_PREEMPTED: Asc = [0x2a, 0x03];
const RESERVATIONS_RELEASED: Asc = [0x2a, 0x04];
const REGISTRATIONS_PREEMPTED: Asc = [0x2a, 0x05];

/** CHECK CONDITION, UNIT ATTENTION with `asc`, nothing run. */
function assertUaOf(s: ReturnType<Initiator['send']>, asc: Asc, what: string): void {
  const r = one(s, Opcode.ScsiResponse);
  assert.equal(r.status, ScsiStatus.CheckCondition, what);
  assert.deepEqual(senseOf(r.data), [0x6, ...asc], what);
  assert.equal(s.ops.length, 0, `${what}: no disk op`);
}

/** Three sessions of one target, each its own I_T nexus (another initiator name and ISID). */
function threeNexuses(): { target: TargetConfig; a: Initiator; b: Initiator; c: Initiator } {
  const target = makeTarget();
  const a = new Initiator(target, { isid: 0x4000_0000_000a, name: 'iqn.1991-05.com.example:a' });
  const b = new Initiator(target, { isid: 0x4000_0000_000b, name: 'iqn.1991-05.com.example:b' });
  const c = new Initiator(target, { isid: 0x4000_0000_000c, name: 'iqn.1991-05.com.example:c' });
  return { target, a, b, c };
}

function tmf(i: Initiator, fn: TaskMgmtFunction): void {
  assert.equal(one(i.c.receive(i.tmf(fn)), Opcode.TaskMgmtResponse).response, TaskMgmtResponseCode.FunctionComplete);
}

/** PERSISTENT RESERVE OUT, GOOD expected. */
function prOut(i: Initiator, sa: number, type: number, key: bigint, saKey: bigint): void {
  assertGood(i.send(prOutCdb(sa, type), { write: true, edtl: 24, data: prParams(key, saKey) }), `PR OUT ${sa}`);
}

test('LOGICAL UNIT RESET from A: every other session gets BUS DEVICE RESET FUNCTION OCCURRED (29/03) once; A does not', () => {
  const { target, a, b, c } = threeNexuses();
  tmf(a, TaskMgmtFunction.LogicalUnitReset);
  const late = new Initiator(target, { isid: 0x4000_0000_000d });
  assertGood(a.send(TUR), 'the issuing session');
  assertUaOf(b.send(TUR), LUN_RESET, 'session b');
  assertGood(b.send(TUR), 'session b, cleared');
  assertUaOf(c.send(read10(0, 1), { read: true, edtl: 512 }), LUN_RESET, 'session c, READ (10) not run');
  assertGood(late.send(TUR), 'a session logged in after the reset');
  // a LUN RESET to another LUN is refused and establishes nothing
  assert.equal(one(a.c.receive(a.tmf(TaskMgmtFunction.LogicalUnitReset, { lun: 1n })), Opcode.TaskMgmtResponse).response, TaskMgmtResponseCode.LunDoesNotExist);
  assertGood(b.send(TUR), 'nothing for b');
  // ABORT TASK SET is no reset
  tmf(a, TaskMgmtFunction.AbortTaskSet);
  assertGood(c.send(TUR), 'nothing for c');
});

test('TARGET WARM RESET from A: the other sessions get SCSI BUS RESET OCCURRED (29/02); two resets before a command make one condition each', () => {
  const { a, b } = threeNexuses();
  tmf(a, TaskMgmtFunction.TargetWarmReset);
  tmf(a, TaskMgmtFunction.TargetWarmReset);
  assertGood(a.send(TUR), 'the issuing session');
  assertUaOf(b.send(TUR), WARM_RESET, 'session b');
  assertGood(b.send(TUR), 'one condition for two warm resets');
  // b's own reset: a hears of it, b does not
  tmf(b, TaskMgmtFunction.LogicalUnitReset);
  assertGood(b.send(TUR), 'b issued it');
  assertUaOf(a.send(TUR), LUN_RESET, 'a');
});

test('PREEMPT by A of B\'s registration: B gets REGISTRATIONS PREEMPTED (2A/05); a registrant that stays gets RESERVATIONS RELEASED (2A/04) as the type changed; A none', () => {
  const { a, b, c } = threeNexuses();
  prOut(a, 0, 0, 0n, 0xan);
  prOut(b, 0, 0, 0n, 0xbn);
  prOut(c, 0, 0, 0n, 0xcn);
  prOut(b, 1, 5, 0xbn, 0n); // B reserves, Write Exclusive - Registrants Only
  prOut(a, 4, 1, 0xan, 0xbn); // A preempts B (the holder) with Write Exclusive
  assertGood(a.send(TUR), 'the preemptor');
  assertUaOf(b.send(TUR), REGISTRATIONS_PREEMPTED, 'B lost its registration');
  assertGood(b.send(TUR), 'cleared');
  assertUaOf(c.send(TUR), RESERVATIONS_RELEASED, 'C is still registered, the reservation changed type');
  assertGood(c.send(TUR), 'cleared');
  // B, unregistered now, meets the reservation
  assert.equal(one(b.send(write10(0, 1), { write: true, edtl: 512, data: new Uint8Array(512) }), Opcode.ScsiResponse).status, ScsiStatus.ReservationConflict);
});

test('PREEMPT AND ABORT of a registration with no reservation: REGISTRATIONS PREEMPTED for that nexus only', () => {
  const { a, b, c } = threeNexuses();
  prOut(a, 0, 0, 0n, 0xan);
  prOut(b, 0, 0, 0n, 0xbn);
  prOut(c, 0, 0, 0n, 0xcn);
  prOut(a, 5, 0, 0xan, 0xbn);
  assertUaOf(b.send(TUR), REGISTRATIONS_PREEMPTED, 'B');
  assertGood(c.send(TUR), 'C keeps its registration and hears nothing');
  assertGood(a.send(TUR), 'A');
});

test('CLEAR by A: every other registered session gets RESERVATIONS PREEMPTED (2A/03); an unregistered one and A get nothing', () => {
  const { target, a, b } = threeNexuses();
  const outsider = new Initiator(target, { isid: 0x4000_0000_000e, name: 'iqn.1991-05.com.example:e' });
  prOut(a, 0, 0, 0n, 0xan);
  prOut(b, 0, 0, 0n, 0xbn);
  prOut(b, 1, 3, 0xbn, 0n); // B reserves, Exclusive Access
  prOut(a, 3, 0, 0xan, 0n); // CLEAR
  assertGood(a.send(TUR), 'A');
  assertGood(outsider.send(TUR), 'not registered');
  assertUaOf(b.send(read10(0, 1), { read: true, edtl: 512 }), RESERVATIONS_PREEMPTED, 'B');
  assert.deepEqual(b.send(read10(0, 1), { read: true, edtl: 512 }).ops.map((o) => o.kind), ['read']);
});

test('RELEASE of a Registrants Only reservation: the other registrants get RESERVATIONS RELEASED (2A/04); of a Write Exclusive one: nobody', () => {
  const { a, b, c } = threeNexuses();
  prOut(a, 0, 0, 0n, 0xan);
  prOut(b, 0, 0, 0n, 0xbn);
  prOut(a, 1, 6, 0xan, 0n); // Exclusive Access - Registrants Only
  prOut(a, 2, 6, 0xan, 0n); // RELEASE
  assertGood(a.send(TUR), 'A released it');
  assertGood(c.send(TUR), 'C is not registered');
  assertUaOf(b.send(TUR), RESERVATIONS_RELEASED, 'B');
  prOut(a, 1, 1, 0xan, 0n); // Write Exclusive
  prOut(a, 2, 1, 0xan, 0n);
  assertGood(b.send(TUR), 'nothing for a Write Exclusive release');
  // All Registrants: released by one of its holders, the others hear of it
  prOut(b, 1, 7, 0xbn, 0n);
  prOut(b, 2, 7, 0xbn, 0n);
  assertUaOf(a.send(TUR), RESERVATIONS_RELEASED, 'A, after B released the All Registrants reservation');
  assertGood(b.send(TUR), 'B');
});

test('several pending conditions come out one per command, highest priority first: the reset, then the reservation, then the capacity', () => {
  const { target, a, b } = threeNexuses();
  prOut(a, 0, 0, 0n, 0xan);
  prOut(b, 0, 0, 0n, 0xbn);
  prOut(a, 3, 0, 0xan, 0n); // CLEAR: B RESERVATIONS PREEMPTED
  capacityChanged(target.disk, 4096n);
  tmf(a, TaskMgmtFunction.LogicalUnitReset);
  assertUaOf(b.send(TUR), LUN_RESET, 'first the reset (established last)');
  assertUaOf(b.send(TUR), RESERVATIONS_PREEMPTED, 'then the reservation');
  assertUaOf(b.send(TUR), CAPACITY, 'then the capacity');
  assertGood(b.send(TUR), 'then nothing');
  // A: the capacity only
  assertUaOf(a.send(TUR), CAPACITY, 'A');
  assertGood(a.send(TUR), 'A, cleared');
});

test('INQUIRY and REPORT LUNS leave every pending condition; REQUEST SENSE reports and clears them one at a time', () => {
  const { target, a, b } = threeNexuses();
  capacityChanged(target.disk, 4096n);
  tmf(a, TaskMgmtFunction.TargetWarmReset);
  tmf(a, TaskMgmtFunction.LogicalUnitReset);
  for (let n = 0; n < 2; n++) {
    assert.equal(one(b.send(INQUIRY, { read: true, edtl: 96 }), Opcode.DataIn).status, ScsiStatus.Good);
    assert.equal(one(b.send(REPORT_LUNS, { read: true, edtl: 16 }), Opcode.DataIn).status, ScsiStatus.Good);
  }
  const sense = (): number[] => {
    const d = one(b.send(requestSense(), { read: true, edtl: 18 }), Opcode.DataIn);
    assert.equal(d.status, ScsiStatus.Good);
    return [d.data[2]! & 0x0f, d.data[12]!, d.data[13]!];
  };
  // the resets in the order they were established, then the capacity
  assert.deepEqual(sense(), [0x6, ...WARM_RESET]);
  assertUaOf(b.send(TUR), LUN_RESET, 'a command between the REQUEST SENSEs');
  assert.deepEqual(sense(), [0x6, ...CAPACITY]);
  assert.deepEqual(sense(), [0, 0, 0]);
  assertGood(b.send(TUR), 'all cleared');
});

test('sessions of another target do not hear of this target\'s resets or reservation changes', () => {
  const { a, b } = threeNexuses();
  const other: TargetConfig = {
    name: 'iqn.2026-12.org.twindisk:r1', disk: makeScsiDisk({ id: 'r1/0', blocks: 2048n, blockSize: 512 }), addresses: ['10.0.0.1:3260'],
  };
  const o = new Initiator(other, { isid: 0x4000_0000_000b, name: 'iqn.1991-05.com.example:b' }); // b's nexus key, another target
  tmf(a, TaskMgmtFunction.LogicalUnitReset);
  assertGood(o.send(TUR), 'the other target');
  assertUaOf(b.send(TUR), LUN_RESET, 'this target');
});
