// The per-connection iSCSI target state machine (RFC 7143): login, discovery, full feature phase; PDUs in, PDUs and disk operations out, no I/O.
import {
  LoginStage, LoginStatus, LogoutReason, LogoutResponseCode, Opcode, RESERVED_TAG, RejectReason, ScsiStatus,
  TaskMgmtResponseCode,
} from './constants.js';
import {
  encodeDataIn, encodeLoginResponse, encodeR2T, encodeLogoutResponse, encodeNopIn, encodeReject, encodeScsiResponse, encodeTaskMgmtResponse,
  encodeTextResponse, opcodeName, type Digests, type InPdu, type LoginRequest, type LogoutRequest, type NopOut, type OutPdu, type Residual,
  type DataOut, type ScsiCommand, type TaskMgmtRequest, type TargetSN, type TextRequest,
} from './pdu.js';
import { checkCondition, handleCdb, readErrorAt, writeErrorAt, type CheckCondition, type ScsiDisk } from './scsi.js';
import { Sense } from './scsi-sense.js';
import {
  DEFAULT_POLICY, TextError, defaultParams, encodeText, negotiate, parseText, type NegotiationPolicy, type SessionParams,
} from './text.js';

/** Misuse of the state machine by its caller (e.g. completeRead for an unknown task). receive() never throws anything else. */
export class SessionError extends Error {
  override name = 'SessionError';
}

/** One target this portal serves: its IQN, the LUN 0 disk and the portal addresses (host:port) SendTargets reports. */
export interface TargetConfig {
  name: string;
  disk: ScsiDisk;
  addresses: readonly string[];
}

/** What to do with a Normal session login: accept it, redirect it to the Primary, or refuse it (the reason is logged). */
export type LoginDecision = 'accept' | { redirect: string } | { refuse: string };

/** Options of a ConnectionState. */
export interface ConnectionOptions {
  targets: readonly TargetConfig[];
  /** Called once per Normal login, when the TargetName is known and valid; default accepts. */
  decideLogin?: (initiator: string, target: string) => LoginDecision;
  /** Negotiation policy; authMethods other than None are ignored until CHAP is implemented. */
  policy?: NegotiationPolicy;
  /** A new non-zero TSIH for a leading login (RFC 7143 section 11.12.6); default a process-wide counter. */
  allocateTsih?: () => number;
  /** First StatSN of the connection; default 1. */
  initialStatSN?: number;
  /** Command window: MaxCmdSN = ExpCmdSN + window - 1 (RFC 7143 section 4.2.2.1); default 32. */
  cmdWindow?: number;
  /** Target Portal Group Tag reported at login and in SendTargets; default 1. */
  portalGroupTag?: number;
}

/** A read the caller runs on the disk, then reports with completeRead(itt, ...). */
export interface ReadOp { kind: 'read'; itt: number; target: string; lba: bigint; blocks: number; fua: boolean }

/** A write the caller runs on the disk once all its data is in (`data` is blocks x block size bytes), then reports with completeWrite. */
export interface WriteOp { kind: 'write'; itt: number; target: string; lba: bigint; blocks: number; data: Uint8Array; fua: boolean }

/** SYNCHRONIZE CACHE: the caller flushes the disk, then reports with completeSync(itt, ...). */
export interface SyncOp { kind: 'sync'; itt: number; target: string }

/** A disk operation for the caller. */
export type DiskOp = ReadOp | WriteOp | SyncOp;

/** The result of one receive() or complete call. Send `pdus` in order; then, if `close` is set, close the connection. */
export interface Step {
  pdus: OutPdu[];
  ops: DiskOp[];
  /** Close the connection after sending `pdus`; the reason is for the log. */
  close: string | null;
  /** Things worth a log line that did not close the connection (rejects, ignored PDUs). */
  log: string[];
  /**
   * Set with the final Login Response: after sending it, switch the PduReader and the writer to these digests and
   * the reader to this data segment limit (RFC 7143 section 13.1: digests start after the last Login Response).
   */
  fullFeature?: { digests: Digests; maxRecvDataSegmentLength: number };
}

/** The connection's phase (RFC 7143 section 6: login, full feature; then closed). */
export type Phase = 'free' | 'security' | 'operational' | 'full' | 'closed';

interface PendingRead { itt: number; lba: bigint; blocks: number; expected: number; blockSize: number }

/** One R2T sent and not yet satisfied (RFC 7143 section 11.8): its window and the Data-Out sequence it expects. */
interface OpenR2T { r2tSN: number; offset: number; length: number; next: number; dataSN: number }

/**
 * A write collecting its data (section 11.7, 11.8): immediate data, then the unsolicited Data-Out sequence
 * [unsolNext, unsolEnd) with TTT 0xffffffff, then solicited sequences, one per R2T. `collecting` turns false when the op
 * is emitted; then only completeWrite is expected.
 */
interface PendingWrite {
  itt: number; lun: bigint; lba: bigint; blocks: number; fua: boolean; buf: Uint8Array; collecting: boolean;
  unsolNext: number; unsolEnd: number; unsolDataSN: number;
  /** Offset of the first byte no R2T has asked for yet. */
  solicitNext: number;
  r2tSN: number;
  r2ts: Map<number, OpenR2T>;
}


let tsihCounter = 0;
function nextTsih(): number {
  tsihCounter = (tsihCounter % 0xffff) + 1; // TSIH 0 is reserved for "new session" (section 11.12.6)
  return tsihCounter;
}

/** Serial number arithmetic over 32 bits (RFC 1982, RFC 7143 section 4.2.2.1): a < b. */
function snLess(a: number, b: number): boolean {
  return a !== b && ((b - a) >>> 0) < 0x8000_0000;
}


function empty(): Step { return { pdus: [], ops: [], close: null, log: [] }; }

/**
 * One iSCSI connection of the target side, from the first Login Request to the Logout. Feed it the PDUs a PduReader
 * yields with receive(); it answers with the PDUs to send and the disk operations (read, write, sync) to run. It holds no socket and no timer.
 * One connection per session (MaxConnections=1), ErrorRecoveryLevel 0, LUN 0 only.
 */
export class ConnectionState {
  private phaseValue: Phase = 'free';
  private params: SessionParams;
  private readonly policy: NegotiationPolicy;
  private statSN: number;
  private expCmdSN = 0;
  private readonly window: number;
  private readonly tpgt: number;
  private isid = 0;
  private tsih = 0;
  private cid = 0;
  private target: TargetConfig | null = null;
  private loginText: Uint8Array[] = []; // a login request's text split over PDUs with the C bit
  private firstText = true; // the first complete login text (it may span PDUs) is still to come
  private readonly pending = new Map<number, PendingRead>();
  private readonly writes = new Map<number, PendingWrite>();
  private readonly syncs = new Map<number, bigint>(); // ITT -> first LBA of the range, for the sense INFORMATION
  private textOut: { itt: number; ttt: number; rest: Uint8Array } | null = null;
  private nextTtt = 1;

  constructor(private readonly opts: ConnectionOptions) {
    // Only AuthMethod=None is implemented; CHAP comes later (RFC 7143 section 12.1).
    this.policy = { ...(opts.policy ?? DEFAULT_POLICY), authMethods: ['None'] };
    this.params = defaultParams(this.policy);
    this.statSN = (opts.initialStatSN ?? 1) >>> 0;
    this.window = Math.max(1, Math.min(opts.cmdWindow ?? 32, 0x7fff_ffff));
    this.tpgt = opts.portalGroupTag ?? 1;
  }

  /** The current phase. */
  get phase(): Phase { return this.phaseValue; }
  /** The negotiated parameters (complete once phase is 'full'). */
  get session(): Readonly<SessionParams> { return this.params; }
  /** The session's TSIH (0 until the final Login Response). */
  get sessionHandle(): number { return this.tsih; }
  /** Tasks waiting for completeRead. */
  get pendingReads(): number { return this.pending.size; }
  /** Writes collecting data or waiting for completeWrite. */
  get pendingWrites(): number { return this.writes.size; }

  /** Handles one PDU from the PduReader. Never throws: protocol errors become Reject PDUs, login rejects or `close`. */
  receive(pdu: InPdu): Step {
    const s = empty();
    const h = pdu.header;
    switch (this.phaseValue) {
      case 'closed':
        return this.closeWith(s, 'PDU after the connection was closed');
      case 'free':
        // RFC 7143 section 6 (Login Phase): a PDU other than a Login Request before the login has started ends the connection.
        if (h.opcode !== Opcode.LoginRequest) return this.closeWith(s, `${opcodeName(h.opcode)} before login`);
        return this.login(s, h, pdu);
      case 'security':
      case 'operational':
        if (h.opcode !== Opcode.LoginRequest) {
          // RFC 7143 section 6 (Login Phase): once the login has started, any PDU but a Login Request gets a Login reject
          // with status "Invalid during login" (section 11.13.5, 0x020b), then the target disconnects.
          this.loginReject(s, h.itt, this.stage(), LoginStatus.InvalidDuringLogin);
          return this.closeWith(s, `${opcodeName(h.opcode)} during login`);
        }
        return this.login(s, h, pdu);
      case 'full':
        return this.fullFeature(s, pdu);
    }
  }

  /**
   * Reports the end of a read: the data (blocks x block size bytes), or a CHECK CONDITION, or an Error (answered
   * MEDIUM ERROR / UNRECOVERED READ ERROR at the first LBA). Throws SessionError for an unknown ITT or a wrong length.
   */
  completeRead(itt: number, result: Uint8Array | CheckCondition | Error): Step {
    const p = this.pending.get(itt);
    if (!p) throw new SessionError(`completeRead: no read pending with ITT 0x${(itt >>> 0).toString(16)}`);
    if (result instanceof Uint8Array && result.length !== p.blocks * p.blockSize) {
      throw new SessionError(`completeRead: ${result.length} bytes for ${p.blocks} blocks of ${p.blockSize}`);
    }
    this.pending.delete(itt);
    const s = empty();
    if (this.phaseValue !== 'full') { s.log.push(`read 0x${itt.toString(16)} completed after the connection closed`); return s; }
    if (result instanceof Error) this.sendCheck(s, itt, readErrorAt(p.lba));
    else if (result instanceof Uint8Array) this.sendDataIn(s, itt, result, p.expected);
    else this.sendCheck(s, itt, result);
    return s;
  }

  /**
   * Reports the end of a write emitted as a WriteOp: 'ok' (GOOD), a CHECK CONDITION, or an Error (answered MEDIUM ERROR /
   * WRITE ERROR at the first LBA). Throws SessionError for an unknown ITT or a write still collecting its data.
   */
  completeWrite(itt: number, result: 'ok' | CheckCondition | Error): Step {
    const w = this.writes.get(itt);
    if (!w || w.collecting) throw new SessionError(`completeWrite: no write op pending with ITT 0x${(itt >>> 0).toString(16)}`);
    this.writes.delete(itt);
    return this.complete(itt, 'write', result, w.lba);
  }

  /** Reports the end of a SyncOp: 'ok' (GOOD) or an Error (MEDIUM ERROR / WRITE ERROR). Throws SessionError for an unknown ITT. */
  completeSync(itt: number, result: 'ok' | Error): Step {
    const lba = this.syncs.get(itt);
    if (lba === undefined) throw new SessionError(`completeSync: no sync pending with ITT 0x${(itt >>> 0).toString(16)}`);
    this.syncs.delete(itt);
    return this.complete(itt, 'sync', result, lba);
  }

  private complete(itt: number, what: string, result: 'ok' | CheckCondition | Error, lba: bigint): Step {
    const s = empty();
    if (this.phaseValue !== 'full') { s.log.push(`${what} 0x${itt.toString(16)} completed after the connection closed`); return s; }
    if (result === 'ok') this.sendGood(s, itt, {});
    else if (result instanceof Error) this.sendCheck(s, itt, writeErrorAt(lba));
    else this.sendCheck(s, itt, result);
    return s;
  }

  // ---------------------------------------------------------------------------------------------- login

  private stage(): number {
    return this.phaseValue === 'operational' ? LoginStage.LoginOperationalNegotiation : LoginStage.SecurityNegotiation;
  }

  private login(s: Step, h: LoginRequest, pdu: InPdu): Step {
    const first = this.phaseValue === 'free';
    if (first) {
      this.isid = h.isid;
      this.cid = h.cid;
      // The leading Login Request carries the session's first CmdSN; login requests are immediate (section 11.12.1).
      this.expCmdSN = h.cmdSN >>> 0;
      this.phaseValue = 'security';
      // Section 11.12.4: Version-min above the only version there is.
      if (h.versionMin > 0) return this.loginFail(s, h, LoginStatus.UnsupportedVersion, `version-min ${h.versionMin}`);
      // Section 11.12.6: a non-zero TSIH names an existing session; we keep one connection per session and nothing to reinstate.
      if (h.tsih !== 0) return this.loginFail(s, h, LoginStatus.SessionDoesNotExist, `TSIH ${h.tsih} on a leading login`);
    } else if (h.isid !== this.isid || h.tsih !== 0 || h.cid !== this.cid) {
      // Section 11.12.5-11.12.6: ISID, TSIH and CID stay the same for the whole login.
      return this.loginFail(s, h, LoginStatus.InitiatorError, 'ISID, TSIH or CID changed during login');
    }
    if (pdu.dataDigestError) return this.loginFail(s, h, LoginStatus.InitiatorError, 'data digest error during login');
    // Section 11.12.3: CSG must be the stage we are in (the first request may skip the Security stage: section 6.3).
    const cur = this.stage();
    if (h.csg === LoginStage.LoginOperationalNegotiation && cur === LoginStage.SecurityNegotiation && first) {
      this.phaseValue = 'operational';
    } else if (h.csg !== cur) {
      return this.loginFail(s, h, LoginStatus.InitiatorError, `login CSG ${h.csg} in stage ${cur}`);
    }
    // Section 11.12.3: NSG must be a later stage; 2 is reserved.
    if (h.transit && (h.nsg <= h.csg || h.nsg === 2)) return this.loginFail(s, h, LoginStatus.InitiatorError, `login NSG ${h.nsg} from CSG ${h.csg}`);
    this.loginText.push(pdu.data.slice());
    if (h.cont) {
      // Section 11.12.2: text continued in the next PDU; answer with an empty response in the same stage.
      this.loginRespond(s, h, false, new Uint8Array(0));
      return s;
    }
    const text = concat(this.loginText);
    this.loginText = [];
    let offered: Map<string, string>;
    try {
      offered = parseText(text);
    } catch (e) {
      return this.loginFail(s, h, LoginStatus.InitiatorError, e instanceof TextError ? e.message : String(e));
    }
    const n = negotiate(offered, this.policy, this.params);
    this.params = n.params;
    const answer = new Map(n.answer);
    if (this.firstText) {
      this.firstText = false;
      // Section 13.6 and 13.4: InitiatorName in the first Login Request of every session; TargetName for a Normal session.
      if (!this.params.initiatorName) return this.loginFail(s, h, LoginStatus.MissingParameter, 'no InitiatorName');
      if (this.params.sessionType === 'Normal') {
        const fail = this.chooseTarget(s, h);
        if (fail) return fail;
      }
      // Section 13.9: TargetPortalGroupTag is returned in the first Login Response of a leading login.
      answer.set('TargetPortalGroupTag', String(this.tpgt));
    } else if (offered.has('TargetName') && offered.get('TargetName') !== this.target?.name) {
      return this.loginFail(s, h, LoginStatus.InitiatorError, 'TargetName changed during login');
    }
    if (this.phaseValue === 'security') {
      if (offered.has('AuthMethod')) {
        if (n.answer.get('AuthMethod') !== 'None') {
          // Section 11.13.5, 0x0201 Authentication failure: "The initiator could not be successfully authenticated or
          // target authentication is not supported." An offer without None (e.g. CHAP only) cannot be authenticated yet.
          return this.loginFail(s, h, LoginStatus.AuthenticationFailure, `AuthMethod=${offered.get('AuthMethod')} offered, only None supported`);
        }
      }
      if (n.unhandled.size > 0) return this.loginFail(s, h, LoginStatus.InitiatorError, 'CHAP keys without AuthMethod=CHAP');
      // An initiator that leaves the Security stage without offering AuthMethod uses None, the only method we have.
    } else if (n.unhandled.size > 0) {
      for (const k of n.unhandled.keys()) answer.set(k, 'NotUnderstood');
    }
    // Transit: we grant every transit the initiator asks for (section 6.2: nothing of ours is left to negotiate), including
    // Security -> Full Feature (NSG 3), which iPXE asks for when it has no operational keys to send.
    const transit = h.transit;
    const data = encodeText(answer);
    if (data.length > this.params.maxSendDataSegmentLength) {
      return this.loginFail(s, h, LoginStatus.TargetError, 'login answer larger than the initiator accepts');
    }
    if (!transit) {
      this.loginRespond(s, h, false, data);
      return s;
    }
    if (h.nsg === LoginStage.FullFeaturePhase) {
      this.tsih = (this.opts.allocateTsih ?? nextTsih)() & 0xffff;
      if (this.tsih === 0) this.tsih = 1;
      this.loginRespond(s, h, true, data);
      this.phaseValue = 'full';
      s.fullFeature = {
        digests: { header: this.params.headerDigest, data: this.params.dataDigest },
        maxRecvDataSegmentLength: this.params.maxRecvDataSegmentLength,
      };
      s.log.push(`${this.params.sessionType} session 0x${this.tsih.toString(16)} of ${this.params.initiatorName} to ${this.target?.name ?? '(discovery)'}`);
      return s;
    }
    this.loginRespond(s, h, true, data);
    this.phaseValue = 'operational';
    return s;
  }

  /** Checks the TargetName (section 11.13.5 0x0203 not found) and asks decideLogin; returns a failed Step or null. */
  private chooseTarget(s: Step, h: LoginRequest): Step | null {
    const name = this.params.targetName;
    if (!name) return this.loginFail(s, h, LoginStatus.MissingParameter, 'Normal session without TargetName');
    const t = this.opts.targets.find((x) => x.name === name);
    if (!t) return this.loginFail(s, h, LoginStatus.NotFound, `unknown target ${name}`);
    const d = this.opts.decideLogin ? this.opts.decideLogin(this.params.initiatorName!, name) : 'accept';
    if (d === 'accept') { this.target = t; return null; }
    if ('redirect' in d) {
      // Section 11.13.5, 0x0101 "Target moved temporarily": the response carries TargetAddress (section 13.8).
      const data = encodeText([['TargetAddress', `${d.redirect},${this.tpgt}`]]);
      this.loginReject(s, h.itt, h.csg, LoginStatus.TargetMovedTemporarily, data);
      return this.closeWith(s, `redirected ${this.params.initiatorName} to ${d.redirect}`);
    }
    // Section 11.13.5, 0x0202 "Authorization failure: the initiator is not allowed access to the given target".
    return this.loginFail(s, h, LoginStatus.AuthorizationFailure, `refused ${this.params.initiatorName}: ${d.refuse}`);
  }

  private sn(): TargetSN {
    return { statSN: this.statSN, expCmdSN: this.expCmdSN, maxCmdSN: (this.expCmdSN + this.window - 1) >>> 0 };
  }

  /** Takes one StatSN for a response that carries status (section 4.2.2.2). */
  private takeSN(): TargetSN {
    const sn = this.sn();
    this.statSN = (this.statSN + 1) >>> 0;
    return sn;
  }

  private loginRespond(s: Step, h: LoginRequest, transit: boolean, data: Uint8Array): void {
    s.pdus.push(encodeLoginResponse({
      ...this.takeSN(), itt: h.itt, isid: this.isid, tsih: transit && h.nsg === LoginStage.FullFeaturePhase ? this.tsih : 0,
      transit, csg: h.csg, nsg: h.nsg, data,
    }));
  }

  private loginReject(s: Step, itt: number, csg: number, status: LoginStatus, data?: Uint8Array): void {
    s.pdus.push(encodeLoginResponse({ ...this.takeSN(), itt, isid: this.isid, tsih: 0, transit: false, csg: csg & 3, nsg: 0, status, data }));
  }

  /** A Login reject ends the connection (section 6.3: the target drops it after a non-zero status). */
  private loginFail(s: Step, h: LoginRequest, status: LoginStatus, reason: string): Step {
    this.loginReject(s, h.itt, h.csg, status);
    return this.closeWith(s, `login failed (0x${status.toString(16).padStart(4, '0')}): ${reason}`);
  }

  private closeWith(s: Step, reason: string): Step {
    this.phaseValue = 'closed'; // pending reads stay, so completeRead of a read in flight is accepted (and dropped)
    s.close = reason;
    return s;
  }

  // ---------------------------------------------------------------------------------------------- full feature phase

  private reject(s: Step, pdu: InPdu, reason: RejectReason, why: string): Step {
    s.pdus.push(encodeReject({ ...this.takeSN(), reason, rejectedHeader: pdu.bhs }));
    s.log.push(`rejected ${opcodeName(pdu.header.opcode)} (reason 0x${reason.toString(16)}): ${why}`);
    return s;
  }

  /**
   * Rejects a command PDU that still takes its place in the CmdSN order: the initiator goes on numbering after it, so a
   * non-immediate one advances ExpCmdSN like an accepted one (else the next command would look like a gap).
   */
  private rejectCommand(s: Step, pdu: InPdu, cmd: { immediate: boolean; cmdSN: number }, reason: RejectReason, why: string): Step {
    if (!this.acceptCmdSN(s, cmd.immediate, cmd.cmdSN, opcodeName(pdu.header.opcode))) return s;
    return this.reject(s, pdu, reason, why);
  }

  /**
   * Section 4.2.2.1: "the target MUST silently ignore any non-immediate command outside of [ExpCmdSN, MaxCmdSN] or
   * non-immediate duplicates within the range". Returns false when the command is to be dropped or the connection closed.
   */
  private acceptCmdSN(s: Step, immediate: boolean, cmdSN: number, what: string): boolean {
    if (immediate) return true;
    const max = (this.expCmdSN + this.window - 1) >>> 0;
    if (snLess(cmdSN, this.expCmdSN) || snLess(max, cmdSN)) {
      s.log.push(`ignored ${what}: CmdSN ${cmdSN} outside [${this.expCmdSN}, ${max}]`);
      return false;
    }
    if (cmdSN !== this.expCmdSN) {
      // One connection carries commands in order over TCP, so a gap means a lost or forged PDU; at ERL 0 we drop the connection.
      this.closeWith(s, `CmdSN gap: got ${cmdSN}, expected ${this.expCmdSN}`);
      return false;
    }
    this.expCmdSN = (this.expCmdSN + 1) >>> 0;
    return true;
  }

  private fullFeature(s: Step, pdu: InPdu): Step {
    const h = pdu.header;
    // Section 7.8: a PDU with a data digest error is discarded and answered with Reject "Data (payload) Digest Error".
    if (pdu.dataDigestError) return this.reject(s, pdu, RejectReason.DataDigestError, 'data digest mismatch');
    const discovery = this.params.sessionType === 'Discovery';
    switch (h.opcode) {
      case Opcode.NopOut: return this.nopOut(s, h, pdu);
      case Opcode.TextRequest: return this.text(s, h, pdu);
      case Opcode.LogoutRequest: return this.logout(s, h);
      case Opcode.ScsiCommand:
        // Section 4.3 (Discovery session): only Text and Logout requests are allowed.
        if (discovery) return this.rejectCommand(s, pdu, h, RejectReason.ProtocolError, 'SCSI command in a discovery session');
        return this.scsiCommand(s, h, pdu);
      case Opcode.TaskMgmtRequest:
        if (discovery) return this.rejectCommand(s, pdu, h, RejectReason.ProtocolError, 'task management in a discovery session');
        return this.taskMgmt(s, h);
      case Opcode.DataOut: return this.dataOut(s, h, pdu);
      case Opcode.Snack:
        // Section 11.16: SNACK is meaningless at ErrorRecoveryLevel 0; section 11.17.1 reason "SNACK Reject".
        return this.reject(s, pdu, RejectReason.SnackReject, 'SNACK at ErrorRecoveryLevel 0');
      case Opcode.LoginRequest:
        // Section 6: a Login Request in the Full Feature Phase is a protocol error.
        return this.reject(s, pdu, RejectReason.ProtocolError, 'Login Request in full feature phase');
      default:
        // A target opcode from the initiator (section 11.2.1.2).
        return this.reject(s, pdu, RejectReason.ProtocolError, `${opcodeName(h.opcode)} from the initiator`);
    }
  }

  /** NOP-Out (section 11.18): a ping (ITT not reserved) is answered by a NOP-In echoing its data (section 11.19). */
  private nopOut(s: Step, h: NopOut, pdu: InPdu): Step {
    if (h.itt === RESERVED_TAG) {
      // Section 11.18: ITT 0xffffffff answers a target NOP-In; it MUST be immediate and gets no answer. We send no pings.
      if (!h.immediate) return this.reject(s, pdu, RejectReason.ProtocolError, 'NOP-Out with reserved ITT not immediate');
      if (h.ttt !== RESERVED_TAG) s.log.push(`NOP-Out answers TTT 0x${h.ttt.toString(16)} we never sent`);
      return s;
    }
    // Section 11.18.2: a ping has TTT 0xffffffff.
    if (h.ttt !== RESERVED_TAG) return this.rejectCommand(s, pdu, h, RejectReason.InvalidPduField, 'NOP-Out ping with a TTT');
    if (!this.acceptCmdSN(s, h.immediate, h.cmdSN, 'NOP-Out')) return s;
    s.pdus.push(encodeNopIn({ ...this.takeSN(), itt: h.itt, ttt: RESERVED_TAG, lun: h.lun, data: pdu.data.slice() }));
    return s;
  }

  /** Text Request (section 11.10): SendTargets (Appendix C); other keys are not negotiated in full feature phase yet. */
  private text(s: Step, h: TextRequest, pdu: InPdu): Step {
    // Section 11.10.4: a TTT other than 0xffffffff continues a Text Response we split.
    if (h.ttt !== RESERVED_TAG) {
      const t = this.textOut;
      if (!t || t.ttt !== h.ttt || t.itt !== h.itt) return this.rejectCommand(s, pdu, h, RejectReason.InvalidPduField, 'Text Request TTT matches no response');
      if (!this.acceptCmdSN(s, h.immediate, h.cmdSN, 'Text Request')) return s;
      return this.sendText(s, h.itt, t.rest);
    }
    this.textOut = null;
    if (h.cont) return this.rejectCommand(s, pdu, h, RejectReason.CommandNotSupported, 'multi-PDU Text Requests are not supported');
    let offered: Map<string, string>;
    try {
      offered = parseText(pdu.data);
    } catch (e) {
      return this.rejectCommand(s, pdu, h, RejectReason.ProtocolError, e instanceof TextError ? e.message : String(e));
    }
    if (!this.acceptCmdSN(s, h.immediate, h.cmdSN, 'Text Request')) return s;
    const out: [string, string][] = [];
    for (const [key, value] of offered) {
      if (key === 'SendTargets') out.push(...this.sendTargets(value));
      else out.push([key, 'NotUnderstood']);
    }
    return this.sendText(s, h.itt, encodeText(out));
  }

  /**
   * SendTargets (RFC 7143 section 13.3 and Appendix C): "All" lists every target in a Discovery session; a target name
   * lists that target; empty lists the session's own target in a Normal session.
   */
  private sendTargets(value: string): [string, string][] {
    let ts: readonly TargetConfig[];
    if (value === 'All') ts = this.params.sessionType === 'Discovery' ? this.opts.targets : [];
    else if (value === '') ts = this.target ? [this.target] : [];
    else ts = this.opts.targets.filter((t) => t.name === value);
    const out: [string, string][] = [];
    for (const t of ts) {
      out.push(['TargetName', t.name]);
      for (const a of t.addresses) out.push(['TargetAddress', `${a},${this.tpgt}`]);
    }
    return out;
  }

  /** Sends `data` in Text Responses of at most MaxSendDataSegmentLength, continuing with a TTT (section 11.11.4). */
  private sendText(s: Step, itt: number, data: Uint8Array): Step {
    const max = this.params.maxSendDataSegmentLength;
    if (data.length <= max) {
      this.textOut = null;
      s.pdus.push(encodeTextResponse({ ...this.takeSN(), itt, final: true, data }));
      return s;
    }
    const ttt = this.nextTtt;
    this.nextTtt = (this.nextTtt % 0x7fff_ffff) + 1;
    this.textOut = { itt, ttt, rest: data.subarray(max) };
    s.pdus.push(encodeTextResponse({ ...this.takeSN(), itt, ttt, final: false, cont: true, data: data.subarray(0, max) }));
    return s;
  }

  /** Logout Request (section 11.14): answered, then the connection closes (section 11.15). */
  private logout(s: Step, h: LogoutRequest): Step {
    if (!this.acceptCmdSN(s, h.immediate, h.cmdSN, 'Logout Request')) return s;
    let response: LogoutResponseCode = LogoutResponseCode.ClosedSuccessfully;
    if (h.reasonCode === LogoutReason.RemoveConnectionForRecovery) response = LogoutResponseCode.RecoveryNotSupported; // ERL 0
    else if (h.reasonCode === LogoutReason.CloseConnection && h.cid !== this.cid) response = LogoutResponseCode.CidNotFound;
    s.pdus.push(encodeLogoutResponse({ ...this.takeSN(), itt: h.itt, response }));
    if (response !== LogoutResponseCode.ClosedSuccessfully) return s;
    return this.closeWith(s, 'logout');
  }

  /** Task management (section 11.5): not implemented yet; every function is answered "Function not supported". */
  private taskMgmt(s: Step, h: TaskMgmtRequest): Step {
    if (!this.acceptCmdSN(s, h.immediate, h.cmdSN, 'Task Management Request')) return s;
    s.pdus.push(encodeTaskMgmtResponse({ ...this.takeSN(), itt: h.itt, response: TaskMgmtResponseCode.FunctionNotSupported }));
    s.log.push(`task management function ${h.fn} not supported`);
    return s;
  }

  /**
   * SCSI Command (section 11.3): runs handleCdb; answers non-I/O results at once, emits reads and syncs for the caller,
   * starts collecting a write's data. UNMAP, WRITE SAME, VERIFY and COMPARE AND WRITE still close the connection.
   */
  private scsiCommand(s: Step, h: ScsiCommand, pdu: InPdu): Step {
    if (h.itt === RESERVED_TAG) return this.rejectCommand(s, pdu, h, RejectReason.InvalidPduField, 'SCSI Command with the reserved ITT');
    // Section 11.17.1 reason 0x07: an ITT still in use by a task of this session.
    if (this.pending.has(h.itt) || this.writes.has(h.itt) || this.syncs.has(h.itt)) return this.rejectCommand(s, pdu, h, RejectReason.TaskInProgress, `ITT 0x${h.itt.toString(16)} in use`);
    if (!this.acceptCmdSN(s, h.immediate, h.cmdSN, 'SCSI Command')) return s;
    // Section 11.3.4: EDTL counts the data the initiator expects to receive; with no R bit it expects none.
    const expected = h.read ? h.expectedDataTransferLength : 0;
    if (h.lun !== 0n) { this.sendCheck(s, h.itt, checkCondition(Sense.lunNotSupported)); return s; }
    const disk = this.target!.disk;
    const r = handleCdb(h.cdb, disk);
    if (r.kind === 'write') return this.startWrite(s, h, pdu, r.lba, r.blocks, r.fua);
    if (h.write || pdu.data.length > 0) {
      // Data-Out for UNMAP, WRITE SAME, VERIFY, COMPARE AND WRITE is not implemented yet: refuse, do not pretend.
      return this.closeWith(s, `SCSI ${r.kind} (opcode 0x${(h.cdb[0] ?? 0).toString(16)}) with W bit or immediate data: not implemented yet`);
    }
    switch (r.kind) {
      case 'good': this.sendGood(s, h.itt, residual(0, expected)); return s;
      case 'check': this.sendCheck(s, h.itt, r); return s;
      case 'data-in': this.sendDataIn(s, h.itt, r.data, expected); return s;
      case 'read':
        if (r.blocks === 0) { this.sendGood(s, h.itt, residual(0, expected)); return s; }
        this.pending.set(h.itt, { itt: h.itt, lba: r.lba, blocks: r.blocks, expected, blockSize: disk.blockSize });
        s.ops.push({ kind: 'read', itt: h.itt, target: this.target!.name, lba: r.lba, blocks: r.blocks, fua: r.fua });
        return s;
      case 'sync':
        // SBC-3 5.22: IMMED may let us answer before the flush; we always answer after it, which the standard allows.
        this.syncs.set(h.itt, r.lba);
        s.ops.push({ kind: 'sync', itt: h.itt, target: this.target!.name });
        return s;
      default:
        return this.closeWith(s, `SCSI ${r.kind} (opcode 0x${(h.cdb[0] ?? 0).toString(16)}) is not implemented yet`);
    }
  }

  /**
   * WRITE (10)/(16) (section 11.3, 11.7, 11.8): checks W and EDTL, takes the immediate data, opens the unsolicited
   * sequence, sends the first R2Ts; the WriteOp goes out when the last byte is in.
   */
  private startWrite(s: Step, h: ScsiCommand, pdu: InPdu, lba: bigint, blocks: number, fua: boolean): Step {
    const length = blocks * this.target!.disk.blockSize;
    // Section 11.3.4 / SAM: a write's EDTL is the data it carries; a write CDB without the W bit, or an EDTL other than
    // the CDB's length, is refused with INVALID FIELD IN CDB (we do no residual writes).
    if (!h.write || h.read || h.expectedDataTransferLength !== length) {
      this.sendCheck(s, h.itt, checkCondition(Sense.invalidFieldInCdb));
      s.log.push(`write 0x${h.itt.toString(16)}: W=${h.write} EDTL ${h.expectedDataTransferLength} for ${length} bytes`);
      return s;
    }
    const p = this.params;
    const imm = pdu.data.length;
    // Section 13.11: immediate data only with ImmediateData=Yes; section 13.14: at most FirstBurstLength of unsolicited data.
    if (imm > 0 && !p.immediateData) return this.reject(s, pdu, RejectReason.ProtocolError, 'immediate data with ImmediateData=No');
    if (imm > Math.min(p.firstBurstLength, length)) return this.reject(s, pdu, RejectReason.ProtocolError, `immediate data ${imm} over FirstBurstLength or EDTL`);
    // Section 11.3.1 (F bit): F=0 means unsolicited Data-Out follows, allowed only with InitialR2T=No (section 13.10).
    let unsolEnd = imm;
    if (!h.final) {
      if (p.initialR2T) return this.reject(s, pdu, RejectReason.ProtocolError, 'unsolicited Data-Out announced with InitialR2T=Yes');
      // Section 13.14: the initiator sends unsolicited data up to FirstBurstLength or the EDTL, whichever is less.
      unsolEnd = Math.min(p.firstBurstLength, length);
      if (unsolEnd <= imm) return this.reject(s, pdu, RejectReason.ProtocolError, 'F=0 with no unsolicited data left to send');
    }
    const w: PendingWrite = {
      itt: h.itt, lun: h.lun, lba, blocks, fua, buf: new Uint8Array(length), collecting: true,
      unsolNext: imm, unsolEnd, unsolDataSN: 0, solicitNext: unsolEnd, r2tSN: 0, r2ts: new Map(),
    };
    w.buf.set(pdu.data, 0);
    this.writes.set(h.itt, w);
    this.sendR2Ts(s, w);
    this.writeDone(s, w);
    return s;
  }

  /** Sends R2Ts for the data not yet asked for, each <= MaxBurstLength, keeping at most MaxOutstandingR2T open (section 13.17). */
  private sendR2Ts(s: Step, w: PendingWrite): void {
    const len = w.buf.length;
    while (w.solicitNext < len && w.r2ts.size < Math.max(1, this.params.maxOutstandingR2T)) {
      const length = Math.min(this.params.maxBurstLength, len - w.solicitNext);
      const ttt = this.nextTtt;
      this.nextTtt = (this.nextTtt % 0x7fff_ffff) + 1;
      w.r2ts.set(ttt, { r2tSN: w.r2tSN, offset: w.solicitNext, length, next: w.solicitNext, dataSN: 0 });
      // Section 11.8: R2T carries StatSN but does not take one (the StatSN field is "the next StatSN").
      s.pdus.push(encodeR2T({ ...this.sn(), itt: w.itt, lun: w.lun, ttt, r2tSN: w.r2tSN, bufferOffset: w.solicitNext, desiredDataTransferLength: length }));
      w.r2tSN = (w.r2tSN + 1) >>> 0;
      w.solicitNext += length;
    }
  }

  /** Emits the WriteOp when every byte is in: unsolicited sequence ended, everything solicited, no R2T open. */
  private writeDone(s: Step, w: PendingWrite): void {
    if (!w.collecting || w.unsolNext < w.unsolEnd || w.solicitNext < w.buf.length || w.r2ts.size > 0) return;
    w.collecting = false;
    s.ops.push({ kind: 'write', itt: w.itt, target: this.target!.name, lba: w.lba, blocks: w.blocks, data: w.buf, fua: w.fua });
  }

  /**
   * SCSI Data-Out (section 11.7): matched to its write by ITT and to its sequence by TTT (0xffffffff: unsolicited), in
   * DataSN order (section 11.7.5) with contiguous offsets (DataPDUInOrder=Yes, section 13.19) inside the sequence's
   * window, F on the last PDU of the sequence and only there. Anything else is a Reject, and at ErrorRecoveryLevel 0 the
   * task cannot be finished, so the connection is closed too (section 7.1.4.1, connection recovery is the only one).
   */
  private dataOut(s: Step, h: DataOut, pdu: InPdu): Step {
    const w = this.writes.get(h.itt);
    if (!w || !w.collecting) return this.reject(s, pdu, RejectReason.ProtocolError, 'Data-Out with no write collecting data');
    const fail = (why: string): Step => {
      this.reject(s, pdu, RejectReason.ProtocolError, why);
      this.writes.delete(w.itt);
      return this.closeWith(s, `write 0x${w.itt.toString(16)}: ${why}`);
    };
    const n = pdu.data.length;
    if (n === 0) return fail('empty Data-Out');
    let seq: { next: number; end: number; dataSN: number };
    let r2t: OpenR2T | undefined;
    if (h.ttt === RESERVED_TAG) {
      if (w.unsolNext >= w.unsolEnd) return fail('unsolicited Data-Out beyond the unsolicited sequence');
      seq = { next: w.unsolNext, end: w.unsolEnd, dataSN: w.unsolDataSN };
    } else {
      r2t = w.r2ts.get(h.ttt);
      if (!r2t) return fail(`Data-Out TTT 0x${h.ttt.toString(16)} matches no open R2T`);
      seq = { next: r2t.next, end: r2t.offset + r2t.length, dataSN: r2t.dataSN };
    }
    if (h.dataSN !== seq.dataSN) return fail(`DataSN ${h.dataSN}, expected ${seq.dataSN}`);
    if (h.bufferOffset !== seq.next) return fail(`buffer offset ${h.bufferOffset}, expected ${seq.next}`);
    const end = h.bufferOffset + n;
    if (end > seq.end) return fail(`data ${h.bufferOffset}+${n} past the sequence end ${seq.end}`);
    if (h.final !== (end === seq.end)) return fail(h.final ? `F bit at ${end}, sequence ends at ${seq.end}` : 'no F bit on the last Data-Out of the sequence');
    w.buf.set(pdu.data, h.bufferOffset);
    if (r2t) {
      r2t.next = end;
      r2t.dataSN++;
      if (end === seq.end) { w.r2ts.delete(h.ttt); this.sendR2Ts(s, w); }
    } else {
      w.unsolNext = end;
      w.unsolDataSN++;
    }
    this.writeDone(s, w);
    return s;
  }

  /** A SCSI Response with GOOD status and no data. */
  private sendGood(s: Step, itt: number, res: Residual): void {
    s.pdus.push(encodeScsiResponse({ ...this.takeSN(), itt, status: ScsiStatus.Good, residual: res }));
  }

  /** Section 11.4.7: CHECK CONDITION goes in a SCSI Response with SenseLength and the sense data in its data segment. */
  private sendCheck(s: Step, itt: number, c: CheckCondition): void {
    s.pdus.push(encodeScsiResponse({ ...this.takeSN(), itt, status: c.status, sense: c.sense }));
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
    const seg = this.params.maxSendDataSegmentLength;
    const burst = Math.max(seg, this.params.maxBurstLength);
    let dataSN = 0;
    for (let off = 0; off < send.length;) {
      const burstEnd = (Math.floor(off / burst) + 1) * burst;
      const end = Math.min(off + seg, send.length, burstEnd);
      const last = end === send.length;
      const sn = this.sn();
      s.pdus.push(encodeDataIn({
        itt, dataSN, bufferOffset: off, data: send.subarray(off, end), final: last || end === burstEnd, expCmdSN: sn.expCmdSN, maxCmdSN: sn.maxCmdSN,
        status: last ? { status: ScsiStatus.Good, statSN: this.takeSN().statSN, residual: res } : undefined,
      }));
      dataSN++;
      off = end;
    }
  }
}

/** Residual of a transfer of `actual` bytes against EDTL `expected` (section 11.4.5). */
function residual(actual: number, expected: number): Residual {
  if (actual > expected) return { overflow: true, count: actual - expected };
  if (actual < expected) return { underflow: true, count: expected - actual };
  return {};
}

function concat(parts: Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0]!;
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}
