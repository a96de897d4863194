// The per-connection iSCSI target state machine (RFC 7143): login, discovery, full feature phase; PDUs in, PDUs and disk operations out, no I/O.
import { ChapExchange, validateChapConfig, type ChapConfig } from './chap.js';
import {
  DEFAULT_MAX_RECV_DATA_SEGMENT_LENGTH, LoginStage, LoginStatus, LogoutReason, LogoutResponseCode, MAX_LOGIN_REQUESTS, MAX_NEGOTIATION_TEXT_LENGTH,
  Opcode, RESERVED_TAG, RejectReason,
} from './constants.js';
import {
  encodeLoginResponse, encodeLogoutResponse, encodeNopIn, encodeReject, encodeTextResponse, opcodeName, type InPdu, type LoginRequest,
  type LogoutRequest, type NopOut, type ScsiCommand, type TaskMgmtRequest, type TargetSN, type TextRequest,
} from './pdu.js';
import type { CheckCondition } from './scsi.js';
import { TaskSet, snLess, type DiskOp, type DiskOpResult } from './tasks.js';
import {
  DEFAULT_POLICY, TextError, defaultParams, encodeText, negotiate, parseText, pickFromList, type NegotiationPolicy, type SessionParams,
} from './text.js';

export type { Step, TargetConfig } from './target.js';
import type { Step, TargetConfig } from './target.js';
export {
  SessionError, type CompareAndWriteOp, type CompareOp, type DiskOp, type DiskOpResult, type OrWriteOp, type ReadOp, type SyncOp, type TrimOp,
  type WriteOp, type WriteSameOp, type WriteVerifyOp,
} from './tasks.js';

/** What to do with a Normal session login: accept it, redirect it to the Primary, or refuse it (the reason is logged). */
export type LoginDecision = 'accept' | { redirect: string } | { refuse: string };

/** Options of a ConnectionState. */
export interface ConnectionOptions {
  targets: readonly TargetConfig[];
  /** Called once per Normal login, when the TargetName is known and valid; default accepts. */
  decideLogin?: (initiator: string, target: string) => LoginDecision;
  /** Negotiation policy; its authMethods are not used: the AuthMethod is CHAP where a target (or discovery) has `chap`, else None. */
  policy?: NegotiationPolicy;
  /** CHAP required of Discovery sessions, as TargetConfig.chap is of Normal ones; default none (discovery is open). */
  discoveryChap?: ChapConfig;
  /** Random bytes for CHAP identifiers and challenges; default node:crypto randomBytes (tests inject their own). */
  chapRandom?: (n: number) => Uint8Array;
  /** A new non-zero TSIH for a leading login (RFC 7143 section 11.12.6); default a process-wide counter. */
  allocateTsih?: () => number;
  /** First StatSN of the connection; default 1. */
  initialStatSN?: number;
  /** Command window: MaxCmdSN = ExpCmdSN + window - 1 (RFC 7143 section 4.2.2.1); default 32. */
  cmdWindow?: number;
  /** Target Portal Group Tag reported at login and in SendTargets; default 1. */
  portalGroupTag?: number;
}

/** The connection's phase (RFC 7143 section 6: login, full feature; then closed). */
export type Phase = 'free' | 'security' | 'operational' | 'full' | 'closed';

let tsihCounter = 0;
function nextTsih(): number {
  tsihCounter = (tsihCounter % 0xffff) + 1; // TSIH 0 is reserved for "new session" (section 11.12.6)
  return tsihCounter;
}

function empty(): Step { return { pdus: [], ops: [], close: null, log: [] }; }

/**
 * One iSCSI connection of the target side, from the first Login Request to the Logout. Feed it the PDUs a PduReader
 * yields with receive(); it answers with the PDUs to send and the disk operations (DiskOp) to run, whose results come back
 * through completeOp (or the complete methods by ITT). It holds no socket and no timer. The SCSI tasks (commands, Data-Out,
 * completions, task management) are its TaskSet's (tasks.ts); persistent reservations are the target's (reservations.ts).
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
  private loginTextBytes = 0; // the bytes in loginText
  private loginRequests = 0; // Login Requests of this login, at most MAX_LOGIN_REQUESTS
  private chap: ChapExchange | null = null; // the CHAP exchange, once AuthMethod=CHAP is agreed (RFC 7143 section 12.1.3)
  private firstText = true; // the first complete login text (it may span PDUs) is still to come
  private readonly tasks = new TaskSet({
    params: () => this.params,
    target: () => this.target!,
    nexus: () => ({ initiator: this.params.initiatorName ?? '', isid: this.isid, targetPortalGroup: this.tpgt }),
    open: () => this.phaseValue === 'full',
    sn: () => this.sn(),
    takeSN: () => this.takeSN(),
    newTtt: () => this.newTtt(),
    reject: (s, pdu, reason, why) => this.reject(s, pdu, reason, why),
    closeWith: (s, why) => this.closeWith(s, why),
  });
  private textOut: { itt: number; ttt: number; rest: Uint8Array } | null = null;
  /** A Text Request's text continued with the C bit (section 11.10.2): the parts so far and the TTT that continues it. */
  private textIn: { itt: number; ttt: number; parts: Uint8Array[]; bytes: number } | null = null;
  private nextTtt = 1;

  constructor(private readonly opts: ConnectionOptions) {
    // negotiate() answers AuthMethod=None as a target without CHAP does; login() answers AuthMethod itself in the Security
    // stage, from the CHAP configuration of the session's target (known from the first Login Request) or of discovery.
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
  get pendingReads(): number { return this.tasks.reads; }
  /** Tasks collecting Data-Out, or waiting for the completion of an op that changes the medium. */
  get pendingWrites(): number { return this.tasks.writes; }
  /** Every SCSI task in progress. */
  get pendingTasks(): number { return this.tasks.size; }

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
   * Reports the result of `op`, one of the DiskOps a Step carried: the bytes of a ReadOp, 'ok', a CHECK CONDITION, or an
   * Error (MEDIUM ERROR at the first LBA). Exact even when the initiator reused the ITT after aborting the task. The op of
   * an aborted task, or one completed after the connection closed, gives an empty Step (nothing to send). Throws
   * SessionError for an op this connection did not emit or already completed.
   */
  completeOp(op: DiskOp, result: DiskOpResult): Step { return this.tasks.completeOp(op, result); }

  /**
   * Reports the end of a read: the data (blocks x block size bytes), or a CHECK CONDITION, or an Error (answered
   * MEDIUM ERROR / UNRECOVERED READ ERROR at the first LBA). Throws SessionError for an unknown ITT or a wrong length.
   * The complete methods by ITT take a live task first, else an aborted one's op of that ITT: use completeOp where an
   * initiator may reuse an aborted task's ITT while its op still runs.
   */
  completeRead(itt: number, result: Uint8Array | CheckCondition | Error): Step { return this.tasks.completeByItt(itt, 'read', result); }

  /** Reports the end of a WriteOp: 'ok' (GOOD), a CHECK CONDITION, or an Error (MEDIUM ERROR / WRITE ERROR at the first LBA). */
  completeWrite(itt: number, result: 'ok' | CheckCondition | Error): Step { return this.tasks.completeByItt(itt, 'write', result); }

  /** Reports the end of a SyncOp: 'ok' (GOOD) or an Error (MEDIUM ERROR / WRITE ERROR). */
  completeSync(itt: number, result: 'ok' | CheckCondition | Error): Step { return this.tasks.completeByItt(itt, 'sync', result); }

  /** Reports the end of a TrimOp: 'ok', a CHECK CONDITION, or an Error (WRITE ERROR at the first LBA). */
  completeTrim(itt: number, result: 'ok' | CheckCondition | Error): Step { return this.tasks.completeByItt(itt, 'trim', result); }

  /** Reports the end of a WriteSameOp: 'ok', a CHECK CONDITION, or an Error (WRITE ERROR at the first LBA). */
  completeWriteSame(itt: number, result: 'ok' | CheckCondition | Error): Step { return this.tasks.completeByItt(itt, 'write-same', result); }

  /** Reports the end of a CompareOp (VERIFY): 'ok', miscompareAt(offset), or an Error (UNRECOVERED READ ERROR). */
  completeCompare(itt: number, result: 'ok' | CheckCondition | Error): Step { return this.tasks.completeByItt(itt, 'compare', result); }

  /** Reports the end of a CompareAndWriteOp: 'ok', miscompareAt(offset into the verify data), or an Error (WRITE ERROR). */
  completeCompareAndWrite(itt: number, result: 'ok' | CheckCondition | Error): Step {
    return this.tasks.completeByItt(itt, 'compare-and-write', result);
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
    // A login that goes round in circles is cut off: every request costs an answer.
    if (++this.loginRequests > MAX_LOGIN_REQUESTS) return this.loginFail(s, h, LoginStatus.InitiatorError, `more than ${MAX_LOGIN_REQUESTS} Login Requests`);
    // Section 11.12.3: CSG must be the stage we are in (the first request may skip the Security stage: section 6.3).
    const cur = this.stage();
    if (h.csg === LoginStage.LoginOperationalNegotiation && cur === LoginStage.SecurityNegotiation && first) {
      this.phaseValue = 'operational';
    } else if (h.csg !== cur) {
      return this.loginFail(s, h, LoginStatus.InitiatorError, `login CSG ${h.csg} in stage ${cur}`);
    }
    // Section 11.12.3: NSG must be a later stage; 2 is reserved.
    if (h.transit && (h.nsg <= h.csg || h.nsg === 2)) return this.loginFail(s, h, LoginStatus.InitiatorError, `login NSG ${h.nsg} from CSG ${h.csg}`);
    // Each PDU is at most 8192 bytes during login (section 13.12: the default MaxRecvDataSegmentLength holds until the Full
    // Feature Phase), as the PduReader should already have enforced; the text continued over PDUs is bounded before it is kept.
    if (pdu.data.length > DEFAULT_MAX_RECV_DATA_SEGMENT_LENGTH) {
      return this.loginFail(s, h, LoginStatus.InitiatorError, `Login Request data segment of ${pdu.data.length} bytes, over ${DEFAULT_MAX_RECV_DATA_SEGMENT_LENGTH}`);
    }
    this.loginTextBytes += pdu.data.length;
    if (this.loginTextBytes > MAX_NEGOTIATION_TEXT_LENGTH) {
      return this.loginFail(s, h, LoginStatus.InitiatorError, `login text over ${MAX_NEGOTIATION_TEXT_LENGTH} bytes`);
    }
    this.loginText.push(pdu.data.slice());
    if (h.cont) {
      // Section 11.12.2: text continued in the next PDU; answer with an empty response in the same stage.
      this.loginRespond(s, h, false, new Uint8Array(0));
      return s;
    }
    const text = concat(this.loginText);
    this.loginText = [];
    this.loginTextBytes = 0;
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
      // Section 6.3: the first request may start in the operational stage, which skips authentication: not where CHAP is required.
      if (this.phaseValue === 'operational' && this.chapConfig()) {
        return this.loginFail(s, h, LoginStatus.AuthenticationFailure, `login skips the Security stage, and ${this.authScope()} requires CHAP`);
      }
      // Section 13.9: TargetPortalGroupTag is returned in the first Login Response of a leading login.
      answer.set('TargetPortalGroupTag', String(this.tpgt));
    } else if (offered.has('TargetName') && offered.get('TargetName') !== this.target?.name) {
      return this.loginFail(s, h, LoginStatus.InitiatorError, 'TargetName changed during login');
    }
    let authenticated = true;
    if (this.phaseValue === 'security') {
      const r = this.security(s, h, offered, n.unhandled, answer);
      if (typeof r !== 'boolean') return r;
      authenticated = r;
    } else if (n.unhandled.size > 0) {
      for (const k of n.unhandled.keys()) answer.set(k, 'NotUnderstood');
    }
    // Transit: we grant every transit the initiator asks for (section 6.2: nothing of ours is left to negotiate), including
    // Security -> Full Feature (NSG 3), which iPXE asks for when it has no operational keys to send; but not out of the
    // Security stage before authentication. iPXE sets T on every request, CHAP exchange included: we answer T=0 and, as
    // section 6.3 says, "the initiator should keep sending the Login Request (even empty) with the T bit set to 1, while it
    // still wants to switch stage, until it receives the Login Response that has the T bit set to 1".
    const transit = h.transit && authenticated;
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
      if (this.target) this.tasks.loggedIn(); // the capacity this session starts from (unit attentions: tasks.ts)
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

  /**
   * The Security stage's keys (RFC 7143 section 6.3 and 12): answers AuthMethod from the session's CHAP configuration and
   * runs the CHAP exchange (chap.ts), its answers going into `answer`. Returns whether the initiator may leave the stage
   * (authenticated, or no authentication wanted), or the failed Step.
   */
  private security(
    s: Step, h: LoginRequest, offered: ReadonlyMap<string, string>, chapKeys: ReadonlyMap<string, string>, answer: Map<string, string>,
  ): Step | boolean {
    const required = this.chapConfig();
    const offer = offered.get('AuthMethod');
    let started = false;
    if (offer !== undefined) {
      // Section 6.2: a key is negotiated once.
      if (this.chap) return this.loginFail(s, h, LoginStatus.InitiatorError, 'AuthMethod offered again during the CHAP exchange');
      // Section 6.2.1: the first offered value we support. Where CHAP is configured it is the only one: None is refused.
      const pick = pickFromList(offer, required ? ['CHAP'] : ['None']);
      if (!pick) {
        // Section 11.13.5, 0x0201 Authentication failure: "The initiator could not be successfully authenticated or target
        // authentication is not supported."
        return this.loginFail(s, h, LoginStatus.AuthenticationFailure, required
          ? `AuthMethod=${offer} offered, and ${this.authScope()} requires CHAP`
          : `AuthMethod=${offer} offered, and ${this.authScope()} has no CHAP configured: only None`);
      }
      answer.set('AuthMethod', pick);
      this.params.authMethod = pick;
      if (required) {
        try {
          // Section 12.1.3: a CHAP secret under 96 bits SHOULD NOT be used. The CLI checks this where it builds the
          // configuration; a configuration that did not pass that way is refused here rather than used.
          validateChapConfig(required, this.authScope());
        } catch (e) {
          return this.loginFail(s, h, LoginStatus.TargetError, `CHAP configuration refused: ${(e as Error).message}`);
        }
        this.chap = new ChapExchange(required, this.opts.chapRandom);
        started = true;
      }
    }
    if (!this.chap) {
      if (chapKeys.size > 0) return this.loginFail(s, h, LoginStatus.InitiatorError, 'CHAP keys without AuthMethod=CHAP');
      // Section 12.1: AuthMethod defaults to None, so an initiator that leaves the Security stage without offering it uses None.
      if (required && h.transit) {
        return this.loginFail(s, h, LoginStatus.AuthenticationFailure, `leaving the Security stage without CHAP, which ${this.authScope()} requires`);
      }
      return !required;
    }
    // With no CHAP keys, a request with T=0 (or the one that agreed AuthMethod=CHAP) just waits; one with T=1 must carry
    // the exchange on, else it fails there (no CHAP_A, no CHAP_R).
    if (chapKeys.size === 0 && (started || !h.transit)) return this.chap.authenticated;
    const already = this.chap.authenticated;
    const r = this.chap.receive(chapKeys);
    if (r.kind === 'failed') {
      return this.loginFail(s, h, r.cause === 'authentication' ? LoginStatus.AuthenticationFailure : LoginStatus.InitiatorError, `CHAP: ${r.reason}`);
    }
    for (const [k, v] of r.keys) answer.set(k, v);
    if (r.kind === 'authenticated' && !already) {
      s.log.push(`CHAP: ${this.params.initiatorName} authenticated as ${required?.user} to ${this.authScope()}${r.keys.length > 0 ? ', and the target to it (mutual)' : ''}`);
    }
    return r.kind === 'authenticated';
  }

  /** The CHAP configuration the session must pass: its target's, or discoveryChap for a Discovery session; null for none. */
  private chapConfig(): ChapConfig | null {
    return (this.params.sessionType === 'Discovery' ? this.opts.discoveryChap : this.target?.chap) ?? null;
  }

  /** What a login authenticates to, for log lines: the target, or discovery. */
  private authScope(): string {
    return this.params.sessionType === 'Discovery' ? 'discovery' : `target ${this.target?.name ?? '(none)'}`;
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

  private newTtt(): number {
    const ttt = this.nextTtt;
    this.nextTtt = (this.nextTtt % 0x7fff_ffff) + 1;
    return ttt;
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
    this.phaseValue = 'closed'; // tasks stay, so the completion of an op in flight is accepted (and dropped)
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
      case Opcode.DataOut: return this.tasks.dataOut(s, h, pdu);
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

  /**
   * Text Request (section 11.10): SendTargets (Appendix C); other keys are answered NotUnderstood. Text continued with
   * the C bit is gathered first (section 11.10.2), each part answered by an empty Text Response with a TTT that the next
   * part carries; an answer longer than MaxRecvDataSegmentLength is split the same way (section 11.11.4).
   */
  private text(s: Step, h: TextRequest, pdu: InPdu): Step {
    const inText = this.textIn;
    if (inText && h.ttt === inText.ttt && h.itt === inText.itt) {
      if (!this.acceptCmdSN(s, h.immediate, h.cmdSN, 'Text Request')) return s;
      return this.textPart(s, h, pdu);
    }
    // Section 11.10.4: a TTT other than 0xffffffff continues a Text Response we split.
    if (h.ttt !== RESERVED_TAG) {
      const t = this.textOut;
      if (!t || t.ttt !== h.ttt || t.itt !== h.itt) return this.rejectCommand(s, pdu, h, RejectReason.InvalidPduField, 'Text Request TTT matches no response');
      if (!this.acceptCmdSN(s, h.immediate, h.cmdSN, 'Text Request')) return s;
      return this.sendText(s, h.itt, t.rest);
    }
    // Section 11.10.4: a TTT of 0xffffffff starts a new exchange; an unfinished one is dropped.
    this.textOut = null;
    this.textIn = null;
    if (!this.acceptCmdSN(s, h.immediate, h.cmdSN, 'Text Request')) return s;
    return this.textPart(s, h, pdu);
  }

  /** One part of a Text Request's text: gathered while C is set, answered when the last part is in. */
  private textPart(s: Step, h: TextRequest, pdu: InPdu): Step {
    const parts = this.textIn?.parts ?? [];
    const bytes = (this.textIn?.bytes ?? 0) + pdu.data.length;
    this.textIn = null;
    // The text of a request is bounded like a login's (section 6.1: 64 KiB is plenty for any key set).
    if (bytes > 65536) return this.reject(s, pdu, RejectReason.ProtocolError, `Text Request text over 65536 bytes`);
    parts.push(pdu.data.slice());
    if (h.cont) {
      // Section 11.10.2: "A Text Request with the C bit set to 1 MUST have the F bit set to 0."
      if (h.final) return this.reject(s, pdu, RejectReason.ProtocolError, 'Text Request with both C and F');
      const ttt = this.newTtt();
      this.textIn = { itt: h.itt, ttt, parts, bytes };
      s.pdus.push(encodeTextResponse({ ...this.takeSN(), itt: h.itt, ttt, final: false, data: new Uint8Array(0) }));
      return s;
    }
    let offered: Map<string, string>;
    try {
      offered = parseText(concat(parts));
    } catch (e) {
      return this.reject(s, pdu, RejectReason.ProtocolError, e instanceof TextError ? e.message : String(e));
    }
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
    const ttt = this.newTtt();
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

  /** Task Management Function Request (section 11.5): the CmdSN window before it, for ABORT TASK's RefCmdSN rule; then the TaskSet. */
  private taskMgmt(s: Step, h: TaskMgmtRequest): Step {
    const window = { first: this.expCmdSN, last: (this.expCmdSN + this.window - 1) >>> 0 };
    if (!this.acceptCmdSN(s, h.immediate, h.cmdSN, 'Task Management Request')) return s;
    return this.tasks.taskMgmt(s, h, window);
  }

  /** SCSI Command (section 11.3): the ITT and CmdSN checks; the rest is the TaskSet's. */
  private scsiCommand(s: Step, h: ScsiCommand, pdu: InPdu): Step {
    if (h.itt === RESERVED_TAG) return this.rejectCommand(s, pdu, h, RejectReason.InvalidPduField, 'SCSI Command with the reserved ITT');
    // Section 11.17.1 reason 0x07: an ITT still in use by a task of this session.
    if (this.tasks.has(h.itt)) return this.rejectCommand(s, pdu, h, RejectReason.TaskInProgress, `ITT 0x${h.itt.toString(16)} in use`);
    if (!this.acceptCmdSN(s, h.immediate, h.cmdSN, 'SCSI Command')) return s;
    return this.tasks.command(s, h, pdu);
  }
}

function concat(parts: Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0]!;
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}
