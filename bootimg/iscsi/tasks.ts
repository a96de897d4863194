// The SCSI tasks of one iSCSI session (RFC 7143 sections 11.3-11.8, 11.5; SAM-5): a command is answered at once, or
// collects its Data-Out and becomes a disk operation for the caller; completions become responses; task management aborts.
import { RESERVED_TAG, RejectReason, ScsiStatus, TaskMgmtFunction, TaskMgmtResponseCode } from './constants.js';
import {
  encodeDataIn, encodeR2T, encodeScsiResponse, encodeTaskMgmtResponse, type DataOut, type InPdu, type Residual, type ScsiCommand,
  type TargetSN, type TaskMgmtRequest,
} from './pdu.js';
import { reservationsOf, nexusKey, type ITNexus } from './reservations.js';
import {
  checkCondition, handleCdb, parseUnmapList, readErrorAt, requestSense, writeErrorAt, Sense, type CheckCondition, type ScsiDisk,
} from './scsi.js';
import { unitAttentionsOf, type SenseCondition } from './scsi-sense.js';
import { Op } from './scsi-cdb.js';
import type { SessionParams } from './text.js';
import type { DiskOp, DiskOpResult, Step, TargetConfig } from './target.js';

export type {
  CompareAndWriteOp, CompareOp, DiskOp, DiskOpResult, OrWriteOp, ReadOp, SyncOp, TrimOp, WriteOp, WriteSameOp, WriteVerifyOp,
} from './target.js';

/** Misuse of the state machine by its caller (e.g. completeRead for an unknown task). receive() never throws anything else. */
export class SessionError extends Error {
  override name = 'SessionError';
}

/** What a TaskSet borrows from its connection: sequence numbers, the negotiated parameters, the target, rejects and closing. */
export interface TaskHost {
  params(): SessionParams;
  /** The session's target (set once a Normal session is in full feature phase). */
  target(): TargetConfig;
  nexus(): ITNexus;
  /** Whether responses may still be sent (full feature phase). */
  open(): boolean;
  sn(): TargetSN;
  /** Takes one StatSN for a response that carries status (section 4.2.2.2). */
  takeSN(): TargetSN;
  /** A new Target Transfer Tag. */
  newTtt(): number;
  reject(s: Step, pdu: InPdu, reason: RejectReason, why: string): Step;
  closeWith(s: Step, why: string): Step;
}

/** One R2T sent and not yet satisfied (section 11.8): its window and the Data-Out sequence it expects. */
interface OpenR2T { r2tSN: number; offset: number; length: number; next: number; dataSN: number }

/** What a command's Data-Out is for, once all of it is in. */
type DataUse =
  | { kind: 'write'; lba: bigint; blocks: number; fua: boolean }
  | { kind: 'unmap' }
  | { kind: 'write-same'; lba: bigint; blocks: number; unmap: boolean }
  | { kind: 'verify'; lba: bigint; blocks: number }
  | { kind: 'compare-and-write'; lba: bigint; blocks: number; fua: boolean }
  | { kind: 'write-verify'; lba: bigint; blocks: number; bytchk: boolean }
  | { kind: 'or-write'; lba: bigint; blocks: number; fua: boolean }
  | { kind: 'persistent-reserve-out'; serviceAction: number; scopeType: number };

/**
 * Data-Out being collected (section 11.7, 11.8): immediate data, then the unsolicited sequence [unsolNext, unsolEnd) with
 * TTT 0xffffffff, then solicited sequences, one per R2T.
 */
interface Collection {
  use: DataUse;
  buf: Uint8Array;
  unsolNext: number; unsolEnd: number; unsolDataSN: number;
  /** Offset of the first byte no R2T has asked for yet. */
  solicitNext: number;
  r2tSN: number;
  r2ts: Map<number, OpenR2T>;
}

/** One task: collecting its data (`collect`), or waiting for its disk op (`op`). */
interface Task {
  itt: number; lun: bigint; cmdSN: number;
  /** The first LBA, for the INFORMATION of a medium error. */
  lba: bigint;
  /** The EDTL a Data-In answer is measured against (section 11.4.5); 0 without the R bit. */
  expectedIn: number;
  /** The residual of a GOOD answer without data (a write-direction EDTL no data was taken for). */
  residual: Residual;
  collect: Collection | null;
  op: DiskOp | null;
}

/** At most this many ITTs are remembered whose late Data-Out is dropped without a Reject (aborted or answered early). */
const DROPPED_ITTS = 256;

function empty(): Step { return { pdus: [], ops: [], close: null, log: [] }; }
const hex = (n: number): string => `0x${(n >>> 0).toString(16)}`;
/** The op kinds that change the medium (counted by pendingWrites). */
const WRITES: ReadonlySet<DiskOp['kind']> = new Set(['write', 'trim', 'write-same', 'compare-and-write', 'write-verify', 'or-write']);

/**
 * The SCSI tasks of one session, LUN 0, ErrorRecoveryLevel 0. ConnectionState hands it SCSI Commands (after their CmdSN
 * is accepted), Data-Out and Task Management Requests, and the completions of the ops it emitted.
 * Aborted tasks are forgotten at once: their ops' completions are then accepted and dropped (an empty Step), their late
 * Data-Out is dropped without a Reject.
 * The session is one I_T nexus: it reports that nexus's unit attention conditions (SAM-5 5.14), one per command, highest
 * priority first: those queued for its nexus key in the target's UnitAttentions (resets by other nexuses, 29h; the
 * persistent reservation changes other nexuses made, 2Ah), then CAPACITY DATA HAS CHANGED (counted on the disk).
 */
export class TaskSet {
  private readonly tasks = new Map<number, Task>();
  private readonly abortedOps = new Set<DiskOp>();
  private readonly droppedItts = new Set<number>();
  /**
   * The disk's capacityChanges this nexus has been told of (taken at login, then at each unit attention reported): while
   * the disk's count is ahead, a CAPACITY DATA HAS CHANGED unit attention is pending. Several changes make one.
   */
  private capacitySeen = 0;
  /** The number of the last reset broadcast this session took into its nexus's queue (UnitAttentions.sync). */
  private broadcastSeen = 0;

  constructor(private readonly host: TaskHost) {}

  /**
   * The session entered full feature phase with its target (ConnectionState calls it at the final Login Response):
   * capacity changes before this moment are not this nexus's to hear of (READ CAPACITY already says the new size).
   */
  loggedIn(): void {
    const target = this.host.target();
    this.capacitySeen = target.disk.capacityChanges;
    this.broadcastSeen = unitAttentionsOf(target).now;
  }

  /** Whether a task of this session uses `itt` (section 11.17.1 reason 0x07). */
  has(itt: number): boolean { return this.tasks.has(itt); }
  /** Reads waiting for their completion. */
  get reads(): number { return [...this.tasks.values()].filter((t) => t.op?.kind === 'read').length; }
  /** Tasks collecting Data-Out, or waiting for an op that changes the medium. */
  get writes(): number { return [...this.tasks.values()].filter((t) => t.collect || (t.op && WRITES.has(t.op.kind))).length; }
  /** Every task in progress. */
  get size(): number { return this.tasks.size; }

  /**
   * SCSI Command (section 11.3), its CmdSN accepted and its ITT free: reports a pending unit attention (unitAttention),
   * checks reservations, runs handleCdb, answers what needs no disk at once, emits reads and syncs, starts collecting
   * the Data-Out of the commands that carry some.
   */
  command(s: Step, h: ScsiCommand, pdu: InPdu): Step {
    this.droppedItts.delete(h.itt); // the initiator reuses the ITT: what was dropped for it is over
    const edtl = h.expectedDataTransferLength;
    const t: Task = {
      itt: h.itt, lun: h.lun, cmdSN: h.cmdSN, lba: 0n, expectedIn: h.read ? edtl : 0,
      residual: h.read || h.write ? residual(0, edtl) : {}, collect: null, op: null,
    };
    // A command answered without taking Data-Out may still have unsolicited Data-Out on the way: drop it quietly.
    if (h.write && !h.final) this.dropDataOut(h.itt);
    if (h.lun !== 0n) { this.sendCheck(s, h.itt, checkCondition(Sense.lunNotSupported)); return s; }
    const target = this.host.target();
    const disk = target.disk;
    // A pending unit attention is reported before the CDB's own checks and the reservations (Linux LIO, too, checks it
    // before reservations); a command it refuses takes no Data-Out, exactly as for LOGICAL UNIT NOT SUPPORTED above.
    if (this.unitAttention(s, h, target, t.expectedIn)) return s;
    const r = handleCdb(h.cdb, disk);
    if (r.kind !== 'check' && reservationsOf(target).conflicts(h.cdb, this.host.nexus())) {
      this.sendStatus(s, h.itt, ScsiStatus.ReservationConflict);
      return s;
    }
    const bs = disk.blockSize;
    switch (r.kind) {
      case 'good':
        // A command with Data-Out whose CDB asks for none (e.g. COMPARE AND WRITE of 0 blocks) but whose EDTL says data
        // follows: refused like a write whose EDTL differs from its CDB (see collect()); we take no residual Data-Out.
        if (h.write && h.expectedDataTransferLength > 0 && h.cdb[0] === Op.COMPARE_AND_WRITE) {
          this.sendCheck(s, h.itt, checkCondition(Sense.invalidFieldInCommandIu), residual(0, h.expectedDataTransferLength));
          return s;
        }
        this.sendGood(s, h.itt, t.residual); return s;
      case 'check': this.sendCheck(s, h.itt, r); return s;
      case 'data-in': this.sendDataIn(s, h.itt, r.data, t.expectedIn); return s;
      case 'persistent-reserve-in': {
        const a = reservationsOf(target).in(r.serviceAction, r.allocationLength, this.host.nexus());
        if (a.kind === 'check') this.sendCheck(s, h.itt, a);
        else this.sendDataIn(s, h.itt, a.data, t.expectedIn);
        return s;
      }
      case 'read':
        if (r.blocks === 0) { this.sendGood(s, h.itt, t.residual); return s; }
        t.lba = r.lba;
        return this.emit(s, t, { kind: 'read', itt: h.itt, target: target.name, lba: r.lba, blocks: r.blocks, fua: r.fua });
      case 'sync':
        // SBC-3 5.22: IMMED may let us answer before the flush; we always answer after it, which the standard allows.
        t.lba = r.lba;
        return this.emit(s, t, { kind: 'sync', itt: h.itt, target: target.name });
      case 'verify':
        t.lba = r.lba;
        if (r.bytchk === 0) return this.emit(s, t, { kind: 'compare', itt: h.itt, target: target.name, lba: r.lba, blocks: r.blocks, expected: null });
        return this.collect(s, h, pdu, t, (r.bytchk === 1 ? r.blocks : 1) * bs, { kind: 'verify', lba: r.lba, blocks: r.blocks });
      case 'write-same':
        t.lba = r.lba;
        // SBC-3 5.42 (WRITE SAME (16)): NDOB "no Data-Out buffer": the block written is all zero.
        if (r.ndob) return this.writeSame(s, t, r.lba, r.blocks, r.unmap, new Uint8Array(bs));
        return this.collect(s, h, pdu, t, bs, { kind: 'write-same', lba: r.lba, blocks: r.blocks, unmap: r.unmap });
      case 'write':
        t.lba = r.lba;
        return this.collect(s, h, pdu, t, r.blocks * bs, { kind: 'write', lba: r.lba, blocks: r.blocks, fua: r.fua });
      case 'compare-and-write':
        t.lba = r.lba;
        return this.collect(s, h, pdu, t, 2 * r.blocks * bs, { kind: 'compare-and-write', lba: r.lba, blocks: r.blocks, fua: r.fua });
      case 'write-verify':
        t.lba = r.lba;
        return this.collect(s, h, pdu, t, r.blocks * bs, { kind: 'write-verify', lba: r.lba, blocks: r.blocks, bytchk: r.bytchk });
      case 'or-write':
        t.lba = r.lba;
        return this.collect(s, h, pdu, t, r.blocks * bs, { kind: 'or-write', lba: r.lba, blocks: r.blocks, fua: r.fua });
      case 'unmap-params':
        return this.collect(s, h, pdu, t, r.length, { kind: 'unmap' });
      case 'persistent-reserve-out':
        return this.collect(s, h, pdu, t, r.length, { kind: 'persistent-reserve-out', serviceAction: r.serviceAction, scopeType: r.scopeType });
    }
  }

  /**
   * The nexus's pending unit attention condition of highest priority (SAM-5 5.14, SPC-4): the head of its queue in the
   * target's UnitAttentions (after taking in the resets other nexuses broadcast since), else CAPACITY DATA HAS CHANGED.
   * INQUIRY and REPORT LUNS run and leave it pending; REQUEST SENSE answers it as its sense data and clears it (unless
   * the REQUEST SENSE itself is refused, e.g. DESC 1); any other command is not run: CHECK CONDITION, UNIT ATTENTION
   * with its ASC/ASCQ, and the condition is cleared; the next one, if any, waits for the next command. Returns whether
   * the command was answered here. (No log line: the portal logs a Step's lines as warnings, and this is the normal
   * course of an online resize or of a cluster's failover.)
   */
  private unitAttention(s: Step, h: ScsiCommand, target: TargetConfig, expectedIn: number): boolean {
    const disk: ScsiDisk = target.disk;
    const uas = unitAttentionsOf(target);
    const me = nexusKey(this.host.nexus());
    this.broadcastSeen = uas.sync(me, this.broadcastSeen);
    const queued = uas.peek(me);
    const now = disk.capacityChanges;
    if (!queued && this.capacitySeen === now) return false;
    const condition: SenseCondition = queued ?? Sense.capacityDataHasChanged;
    const clear = (): void => { if (queued) uas.take(me); else this.capacitySeen = now; };
    const op = h.cdb[0];
    if (op === Op.INQUIRY || op === Op.REPORT_LUNS) return false;
    if (op === Op.REQUEST_SENSE) {
      if (handleCdb(h.cdb, disk).kind === 'check') return false; // refused as it would be without the condition, which stays
      const r = requestSense(h.cdb, condition);
      if (r.kind !== 'data-in') return false;
      clear();
      this.sendDataIn(s, h.itt, r.data, expectedIn);
      return true;
    }
    clear();
    this.sendCheck(s, h.itt, checkCondition(condition));
    return true;
  }

  private emit(s: Step, t: Task, op: DiskOp): Step {
    t.op = op;
    t.collect = null;
    this.tasks.set(t.itt, t);
    s.ops.push(op);
    return s;
  }

  // ---------------------------------------------------------------------------------------------- Data-Out

  /**
   * Starts collecting the `length` bytes of Data-Out a command carries (sections 11.3, 11.7, 11.8): checks the W bit and
   * EDTL, takes the immediate data, opens the unsolicited sequence, sends the first R2Ts; `use` runs when the last byte is in.
   */
  private collect(s: Step, h: ScsiCommand, pdu: InPdu, t: Task, length: number, use: DataUse): Step {
    // A command with Data-Out needs the W bit and no R bit (section 11.3.1); without them it is refused with INVALID FIELD IN CDB.
    if (!h.write || h.read) {
      this.sendCheck(s, h.itt, checkCondition(Sense.invalidFieldInCdb));
      s.log.push(`${use.kind} ${hex(h.itt)}: W=${h.write} R=${h.read} EDTL ${h.expectedDataTransferLength} for ${length} bytes`);
      return s;
    }
    // An EDTL other than the CDB's data length (section 11.4.5.1: SPDTL != EDTL) is a residual, which "MUST be signaled in
    // the SCSI Response PDU" with "the Residual Count ... set to the numerical value of (SPDTL - EDTL)" (or EDTL - SPDTL).
    // What the target does with the command is the transport's choice; FCP-4 (9.4.2, the model iSCSI has none of) lets it
    // "transfer no data and return CHECK CONDITION status with the sense key set to ILLEGAL REQUEST and the additional sense
    // code set to INVALID FIELD IN COMMAND INFORMATION UNIT". We do that, as Linux LIO does (target_cmd_size_check): a
    // write that disagrees with its own length is not written, not half written; its Data-Out is dropped.
    if (h.expectedDataTransferLength !== length) {
      this.sendCheck(s, h.itt, checkCondition(Sense.invalidFieldInCommandIu), residual(length, h.expectedDataTransferLength));
      s.log.push(`${use.kind} ${hex(h.itt)}: EDTL ${h.expectedDataTransferLength} for ${length} bytes of Data-Out`);
      return s;
    }
    const p = this.host.params();
    const imm = pdu.data.length;
    // Section 13.11: immediate data only with ImmediateData=Yes; section 13.14: at most FirstBurstLength of unsolicited data.
    if (imm > 0 && !p.immediateData) return this.host.reject(s, pdu, RejectReason.ProtocolError, 'immediate data with ImmediateData=No');
    if (imm > Math.min(p.firstBurstLength, length)) return this.host.reject(s, pdu, RejectReason.ProtocolError, `immediate data ${imm} over FirstBurstLength or EDTL`);
    // Section 11.3.1 (F bit): F=0 means unsolicited Data-Out follows, allowed only with InitialR2T=No (section 13.10).
    let unsolEnd = imm;
    if (!h.final) {
      if (p.initialR2T) return this.host.reject(s, pdu, RejectReason.ProtocolError, 'unsolicited Data-Out announced with InitialR2T=Yes');
      // Section 13.14: the initiator sends unsolicited data up to FirstBurstLength or the EDTL, whichever is less.
      unsolEnd = Math.min(p.firstBurstLength, length);
      if (unsolEnd <= imm) return this.host.reject(s, pdu, RejectReason.ProtocolError, 'F=0 with no unsolicited data left to send');
    }
    this.droppedItts.delete(h.itt);
    t.residual = {};
    const c: Collection = { use, buf: new Uint8Array(length), unsolNext: imm, unsolEnd, unsolDataSN: 0, solicitNext: unsolEnd, r2tSN: 0, r2ts: new Map() };
    c.buf.set(pdu.data, 0);
    t.collect = c;
    this.tasks.set(h.itt, t);
    this.sendR2Ts(s, t, c);
    this.collected(s, t, c);
    return s;
  }

  /** Sends R2Ts for the data not yet asked for, each <= MaxBurstLength, keeping at most MaxOutstandingR2T open (section 13.17). */
  private sendR2Ts(s: Step, t: Task, c: Collection): void {
    const p = this.host.params();
    const len = c.buf.length;
    while (c.solicitNext < len && c.r2ts.size < Math.max(1, p.maxOutstandingR2T)) {
      const length = Math.min(p.maxBurstLength, len - c.solicitNext);
      const ttt = this.host.newTtt();
      c.r2ts.set(ttt, { r2tSN: c.r2tSN, offset: c.solicitNext, length, next: c.solicitNext, dataSN: 0 });
      // Section 11.8: R2T carries StatSN but does not take one (the StatSN field is "the next StatSN").
      s.pdus.push(encodeR2T({ ...this.host.sn(), itt: t.itt, lun: t.lun, ttt, r2tSN: c.r2tSN, bufferOffset: c.solicitNext, desiredDataTransferLength: length }));
      c.r2tSN = (c.r2tSN + 1) >>> 0;
      c.solicitNext += length;
    }
  }

  /** When every byte is in (unsolicited sequence ended, everything solicited, no R2T open), hands the data to its use. */
  private collected(s: Step, t: Task, c: Collection): void {
    if (c.unsolNext < c.unsolEnd || c.solicitNext < c.buf.length || c.r2ts.size > 0) return;
    t.collect = null;
    this.tasks.delete(t.itt);
    this.useData(s, t, c.use, c.buf);
  }

  /**
   * SCSI Data-Out (section 11.7): matched to its task by ITT and to its sequence by TTT (0xffffffff: unsolicited), in
   * DataSN order (section 11.7.5) with contiguous offsets (DataPDUInOrder=Yes, section 13.19) inside the sequence's
   * window, F on the last PDU of the sequence and only there. Anything else is a Reject, and at ErrorRecoveryLevel 0 the
   * task cannot be finished, so the connection is closed too (section 7.1.4.1, connection recovery is the only one).
   * Data-Out of a task aborted or answered before its data was in is dropped.
   */
  dataOut(s: Step, h: DataOut, pdu: InPdu): Step {
    const t = this.tasks.get(h.itt);
    const c = t?.collect;
    if (!t || !c) {
      if (this.droppedItts.has(h.itt)) return s;
      return this.host.reject(s, pdu, RejectReason.ProtocolError, 'Data-Out with no task collecting data');
    }
    const fail = (why: string): Step => {
      this.host.reject(s, pdu, RejectReason.ProtocolError, why);
      this.tasks.delete(t.itt);
      return this.host.closeWith(s, `${c.use.kind} ${hex(t.itt)}: ${why}`);
    };
    const n = pdu.data.length;
    if (n === 0) return fail('empty Data-Out');
    let seq: { next: number; end: number; dataSN: number };
    let r2t: OpenR2T | undefined;
    if (h.ttt === RESERVED_TAG) {
      if (c.unsolNext >= c.unsolEnd) return fail('unsolicited Data-Out beyond the unsolicited sequence');
      seq = { next: c.unsolNext, end: c.unsolEnd, dataSN: c.unsolDataSN };
    } else {
      r2t = c.r2ts.get(h.ttt);
      if (!r2t) return fail(`Data-Out TTT ${hex(h.ttt)} matches no open R2T`);
      seq = { next: r2t.next, end: r2t.offset + r2t.length, dataSN: r2t.dataSN };
    }
    if (h.dataSN !== seq.dataSN) return fail(`DataSN ${h.dataSN}, expected ${seq.dataSN}`);
    if (h.bufferOffset !== seq.next) return fail(`buffer offset ${h.bufferOffset}, expected ${seq.next}`);
    const end = h.bufferOffset + n;
    if (end > seq.end) return fail(`data ${h.bufferOffset}+${n} past the sequence end ${seq.end}`);
    if (h.final !== (end === seq.end)) return fail(h.final ? `F bit at ${end}, sequence ends at ${seq.end}` : 'no F bit on the last Data-Out of the sequence');
    c.buf.set(pdu.data, h.bufferOffset);
    if (r2t) {
      r2t.next = end;
      r2t.dataSN++;
      if (end === seq.end) { c.r2ts.delete(h.ttt); this.sendR2Ts(s, t, c); }
    } else {
      c.unsolNext = end;
      c.unsolDataSN++;
    }
    this.collected(s, t, c);
    return s;
  }

  /** Turns a command's complete Data-Out into its op or its answer. */
  private useData(s: Step, t: Task, use: DataUse, buf: Uint8Array): void {
    const target = this.host.target();
    const base = { itt: t.itt, target: target.name };
    switch (use.kind) {
      case 'write':
        this.emit(s, t, { kind: 'write', ...base, lba: use.lba, blocks: use.blocks, data: buf, fua: use.fua });
        return;
      case 'write-verify':
        this.emit(s, t, { kind: 'write-verify', ...base, lba: use.lba, blocks: use.blocks, data: buf, bytchk: use.bytchk });
        return;
      case 'or-write':
        this.emit(s, t, { kind: 'or-write', ...base, lba: use.lba, blocks: use.blocks, data: buf, fua: use.fua });
        return;
      case 'verify':
        this.emit(s, t, { kind: 'compare', ...base, lba: use.lba, blocks: use.blocks, expected: buf });
        return;
      case 'compare-and-write': {
        const half = buf.length / 2;
        this.emit(s, t, { kind: 'compare-and-write', ...base, lba: use.lba, blocks: use.blocks, verify: buf.subarray(0, half), write: buf.subarray(half), fua: use.fua });
        return;
      }
      case 'write-same':
        this.writeSame(s, t, use.lba, use.blocks, use.unmap, buf);
        return;
      case 'unmap': {
        const ranges = parseUnmapList(buf, target.disk);
        if (!Array.isArray(ranges)) { this.sendCheck(s, t.itt, ranges); return; }
        if (ranges.length === 0) { this.sendGood(s, t.itt, {}); return; }
        t.lba = ranges[0]!.lba;
        this.emit(s, t, { kind: 'trim', ...base, ranges, zero: false });
        return;
      }
      case 'persistent-reserve-out': {
        const nexus = this.host.nexus();
        const o = reservationsOf(target).out(use.serviceAction, use.scopeType, buf, nexus);
        if (o.kind === 'conflict') { this.sendStatus(s, t.itt, ScsiStatus.ReservationConflict); return; }
        if (o.kind === 'check') { this.sendCheck(s, t.itt, o); return; }
        // PREEMPT AND ABORT (SPC-4 5.12.11.4.5): the tasks of the preempted I_T nexuses are aborted. Only this session's
        // tasks are reachable from here; other sessions' tasks run to their end (their new commands meet the reservation).
        if (o.abort?.includes(nexusKey(nexus))) this.abortAll();
        // The unit attentions owed to the other nexuses (REGISTRATIONS PREEMPTED, RESERVATIONS PREEMPTED or RELEASED).
        const uas = unitAttentionsOf(target);
        for (const u of o.unitAttentions ?? []) uas.establish(u.nexus, u.condition);
        this.sendGood(s, t.itt, {});
        return;
      }
    }
  }

  /**
   * WRITE SAME (SBC-3 5.41, 5.42): with the UNMAP bit and an all-zero block the range is deallocated so that it reads as
   * zeroes (a TrimOp with `zero`); otherwise the block is written to every block of the range (a WriteSameOp).
   */
  private writeSame(s: Step, t: Task, lba: bigint, blocks: number, unmap: boolean, pattern: Uint8Array): Step {
    const base = { itt: t.itt, target: this.host.target().name };
    if (unmap && pattern.every((b) => b === 0)) return this.emit(s, t, { kind: 'trim', ...base, ranges: [{ lba, blocks }], zero: true });
    return this.emit(s, t, { kind: 'write-same', ...base, lba, blocks, pattern });
  }

  // ---------------------------------------------------------------------------------------------- completions

  /**
   * Reports the result of `op` (a DiskOp this TaskSet emitted): exact even when the initiator reused the ITT after an
   * abort. An aborted task's op gives an empty Step (nothing is sent for it). Throws SessionError for an op it does not know.
   */
  completeOp(op: DiskOp, result: DiskOpResult): Step {
    if (this.abortedOps.delete(op)) return this.dropped(op);
    const t = this.tasks.get(op.itt);
    if (!t || t.op !== op) throw new SessionError(`complete: no ${op.kind} op pending with ITT ${hex(op.itt)}`);
    return this.finish(t, op, result);
  }

  /**
   * Reports the result of the op of kind `kind` of task `itt`; when no live task has one, an aborted task's op of that
   * ITT and kind is taken (an empty Step). Throws SessionError when there is neither.
   */
  completeByItt(itt: number, kind: DiskOp['kind'], result: DiskOpResult): Step {
    const t = this.tasks.get(itt);
    if (t?.op?.kind === kind) return this.finish(t, t.op, result);
    for (const op of this.abortedOps) {
      if (op.itt === itt && op.kind === kind) { this.abortedOps.delete(op); return this.dropped(op); }
    }
    throw new SessionError(`complete ${kind}: no ${kind} op pending with ITT ${hex(itt)}`);
  }

  private dropped(op: DiskOp): Step {
    const s = empty();
    s.log.push(`${op.kind} ${hex(op.itt)} completed after its task was aborted: nothing sent`);
    return s;
  }

  private finish(t: Task, op: DiskOp, result: DiskOpResult): Step {
    if (op.kind === 'read' && result instanceof Uint8Array && result.length !== op.blocks * this.host.target().disk.blockSize) {
      throw new SessionError(`completeRead: ${result.length} bytes for ${op.blocks} blocks`);
    }
    if (op.kind !== 'read' && result instanceof Uint8Array) throw new SessionError(`complete ${op.kind}: data given for an op that returns none`);
    this.tasks.delete(t.itt);
    const s = empty();
    if (!this.host.open()) { s.log.push(`${op.kind} ${hex(t.itt)} completed after the connection closed`); return s; }
    if (result instanceof Uint8Array) this.sendDataIn(s, t.itt, result, t.expectedIn);
    else if (result === 'ok') this.sendGood(s, t.itt, op.kind === 'read' ? residual(0, t.expectedIn) : t.residual);
    else if (result instanceof Error) this.sendCheck(s, t.itt, op.kind === 'read' || op.kind === 'compare' ? readErrorAt(t.lba) : writeErrorAt(t.lba));
    else this.sendCheck(s, t.itt, result);
    return s;
  }

  // ---------------------------------------------------------------------------------------------- task management

  /**
   * Task Management Function Request (section 11.5, SAM-5 7), its CmdSN accepted; `window` is the CmdSN window
   * [ExpCmdSN, MaxCmdSN] before it. Aborted tasks get no response (SAM-5 5.6: TAS 0) and their later completions are
   * dropped. Only this session's tasks are reachable: the resets abort them and leave other sessions' tasks, and their
   * persistent reservations, as they are (SPC-4 5.12.1). The resets establish a unit attention for every other I_T nexus
   * of the target (SAM-5 6.3.2, 6.3.3): LOGICAL UNIT RESET BUS DEVICE RESET FUNCTION OCCURRED (29/03, the code Linux
   * LIO uses), TARGET WARM RESET, a hard reset, SCSI BUS RESET OCCURRED (29/02; LIO rejects the function, so gives no
   * precedent). The issuing nexus gets none (as SPC-4 does for the changes a nexus makes itself; current LIO, whose unit
   * attentions are per initiator ACL rather than per nexus, also gives one to the issuer).
   */
  taskMgmt(s: Step, h: TaskMgmtRequest, window: { first: number; last: number }): Step {
    const respond = (response: TaskMgmtResponseCode, why?: string): Step => {
      s.pdus.push(encodeTaskMgmtResponse({ ...this.host.takeSN(), itt: h.itt, response }));
      if (why) s.log.push(`task management function ${h.fn}: ${why}`);
      return s;
    };
    switch (h.fn) {
      case TaskMgmtFunction.AbortTask: {
        const t = this.tasks.get(h.referencedTaskTag);
        // Section 11.5.1: RefCmdSN is the CmdSN of the task named by the Referenced Task Tag.
        if (t && t.lun === h.lun && t.cmdSN === h.refCmdSN) {
          this.abort(t);
          return respond(TaskMgmtResponseCode.FunctionComplete);
        }
        // Section 11.6.1 (Response): "If the Referenced Task Tag does not identify an existing task, but if the CmdSN
        // indicated by the RefCmdSN field in the Task Management Function Request is within the valid CmdSN window and
        // less than the CmdSN of the Task Management Function Request itself, then targets must consider the CmdSN as
        // received and return the 'Function complete' response." Otherwise "Task does not exist". One connection carries
        // commands in order, so no such command is still to come: nothing needs marking as received.
        const inWindow = !snLess(h.refCmdSN, window.first) && !snLess(window.last, h.refCmdSN);
        if (!t && inWindow && snLess(h.refCmdSN, h.cmdSN)) return respond(TaskMgmtResponseCode.FunctionComplete);
        return respond(TaskMgmtResponseCode.TaskDoesNotExist);
      }
      case TaskMgmtFunction.AbortTaskSet:
      case TaskMgmtFunction.ClearTaskSet:
      case TaskMgmtFunction.LogicalUnitReset:
        if (h.lun !== 0n) return respond(TaskMgmtResponseCode.LunDoesNotExist);
        this.abortAll();
        if (h.fn === TaskMgmtFunction.LogicalUnitReset) this.resetOthers(Sense.busDeviceResetFunctionOccurred);
        return respond(TaskMgmtResponseCode.FunctionComplete);
      case TaskMgmtFunction.TargetWarmReset:
        this.abortAll();
        this.resetOthers(Sense.scsiBusResetOccurred);
        return respond(TaskMgmtResponseCode.FunctionComplete);
      case TaskMgmtFunction.TargetColdReset:
        // Section 11.5.1: after a cold reset "the target then MUST close all of its TCP connections to all initiators";
        // this target cannot reach the other sessions' connections, so it does not offer the function.
        return respond(TaskMgmtResponseCode.FunctionNotSupported, 'TARGET COLD RESET is not supported');
      case TaskMgmtFunction.ClearAca:
        return respond(TaskMgmtResponseCode.FunctionNotSupported, 'CLEAR ACA: ACA is not supported (NACA refused)');
      case TaskMgmtFunction.TaskReassign:
        // Section 11.6.1: reassignment needs ErrorRecoveryLevel 2; at ERL 0 "Task allegiance reassignment not supported".
        return respond(TaskMgmtResponseCode.ReassignmentNotSupported, 'TASK REASSIGN at ErrorRecoveryLevel 0');
      default:
        return respond(TaskMgmtResponseCode.FunctionRejected, 'unknown function');
    }
  }

  /** A reset's unit attention `c` for every other I_T nexus of the target (taken in at their next command). */
  private resetOthers(c: SenseCondition): void {
    unitAttentionsOf(this.host.target()).establishForOthers(nexusKey(this.host.nexus()), c);
  }

  /** Aborts one task: its Data-Out state is dropped (late Data-Out ignored), its op's completion will be ignored. */
  private abort(t: Task): void {
    this.tasks.delete(t.itt);
    if (t.op) this.abortedOps.add(t.op);
    if (t.collect) this.dropDataOut(t.itt);
  }

  /** Aborts every task of the session (ABORT TASK SET, CLEAR TASK SET, the resets, PREEMPT AND ABORT of our nexus). */
  abortAll(): void {
    for (const t of [...this.tasks.values()]) this.abort(t);
  }

  private dropDataOut(itt: number): void {
    this.droppedItts.delete(itt);
    this.droppedItts.add(itt);
    if (this.droppedItts.size > DROPPED_ITTS) this.droppedItts.delete(this.droppedItts.values().next().value!);
  }

  // ---------------------------------------------------------------------------------------------- responses

  /** A SCSI Response with GOOD status and no data. */
  private sendGood(s: Step, itt: number, res: Residual): void {
    s.pdus.push(encodeScsiResponse({ ...this.host.takeSN(), itt, status: ScsiStatus.Good, residual: res }));
  }

  /** A SCSI Response with a status that carries no sense (RESERVATION CONFLICT, SAM-5 5.3.1). */
  private sendStatus(s: Step, itt: number, status: ScsiStatus): void {
    s.pdus.push(encodeScsiResponse({ ...this.host.takeSN(), itt, status }));
  }

  /**
   * Section 11.4.7: CHECK CONDITION goes in a SCSI Response with SenseLength and the sense data in its data segment;
   * `res` is the residual of a command refused for its EDTL (section 11.4.5.1).
   */
  private sendCheck(s: Step, itt: number, c: CheckCondition, res?: Residual): void {
    s.pdus.push(encodeScsiResponse({ ...this.host.takeSN(), itt, status: c.status, sense: c.sense, residual: res }));
  }

  /**
   * Sends `data` (what the command produced) as Data-In PDUs of at most the initiator's MaxRecvDataSegmentLength
   * (section 13.12), F at the end of every MaxBurstLength sequence (section 13.13), and GOOD status with the residual
   * (section 11.4.5: against the Expected Data Transfer Length) in the last one (section 11.7.3, the S bit).
   */
  private sendDataIn(s: Step, itt: number, data: Uint8Array, expected: number): void {
    const res = residual(data.length, expected);
    const send = data.subarray(0, Math.min(data.length, expected));
    if (send.length === 0) { this.sendGood(s, itt, res); return; }
    const p = this.host.params();
    const seg = p.maxSendDataSegmentLength;
    const burst = Math.max(seg, p.maxBurstLength);
    let dataSN = 0;
    for (let off = 0; off < send.length;) {
      const burstEnd = (Math.floor(off / burst) + 1) * burst;
      const end = Math.min(off + seg, send.length, burstEnd);
      const last = end === send.length;
      const sn = this.host.sn();
      s.pdus.push(encodeDataIn({
        itt, dataSN, bufferOffset: off, data: send.subarray(off, end), final: last || end === burstEnd, expCmdSN: sn.expCmdSN, maxCmdSN: sn.maxCmdSN,
        status: last ? { status: ScsiStatus.Good, statSN: this.host.takeSN().statSN, residual: res } : undefined,
      }));
      dataSN++;
      off = end;
    }
  }
}

/** Residual of a transfer of `actual` bytes against EDTL `expected` (section 11.4.5). */
export function residual(actual: number, expected: number): Residual {
  if (actual > expected) return { overflow: true, count: actual - expected };
  if (actual < expected) return { underflow: true, count: expected - actual };
  return {};
}

/** Serial number arithmetic over 32 bits (RFC 1982, RFC 7143 section 4.2.2.1): a < b. */
export function snLess(a: number, b: number): boolean {
  return a !== b && ((b - a) >>> 0) < 0x8000_0000;
}
