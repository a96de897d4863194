// Persistent reservations of one logical unit (SPC-4 5.12, 6.15, 6.16): registrations and the reservation, shared by every session of a target.
//
// Kept in memory only: a restart of the target forgets every registration and reservation (like a power loss with
// APTPL 0). By default REPORT CAPABILITIES says PTPL_C 0 and an APTPL bit of one is refused as SPC-4 6.16.3 lets a
// device server that cannot persist do; `acceptAptpl` instead reports PTPL_C 1 and accepts APTPL (clusters that insist
// on it) without persisting anything, which the caller must then document to its users.
// Hard resets (TARGET WARM RESET, LOGICAL UNIT RESET) leave all of it as it is: SPC-4 5.12.1 "persistent reservations
// ... are retained ... across hard resets, logical unit resets and I_T nexus losses" (SAM-5 6.3.2: a hard reset
// releases only the reservations of the RESERVE/RELEASE method, which this target does not implement).
// The unit attentions the actions owe other nexuses (RESERVATIONS PREEMPTED, RESERVATIONS RELEASED, REGISTRATIONS
// PREEMPTED) are returned in the outcome by nexus key; the caller establishes them (tasks.ts, scsi-sense.ts UnitAttentions).
import { be64, Op, put16, put32, put64, ServiceAction } from './scsi-cdb.js';
import { checkCondition, invalidField, invalidParameter, Sense, SenseKey, type CheckCondition, type SenseCondition } from './scsi-sense.js';

/** An I_T nexus (SAM-5 4.6): the iSCSI initiator port (name and ISID) and the target port (portal group) of a session. */
export interface ITNexus {
  initiator: string;
  isid: number;
  targetPortalGroup: number;
}

/** PERSISTENT RESERVE OUT service actions (SPC-4 6.16.2, Table 172). */
export const PrOutAction = {
  REGISTER: 0, RESERVE: 1, RELEASE: 2, CLEAR: 3, PREEMPT: 4, PREEMPT_AND_ABORT: 5, REGISTER_AND_IGNORE_EXISTING_KEY: 6,
  REGISTER_AND_MOVE: 7,
} as const;

/** PERSISTENT RESERVE IN service actions (SPC-4 6.15.1, Table 163). */
export const PrInAction = { READ_KEYS: 0, READ_RESERVATION: 1, REPORT_CAPABILITIES: 2, READ_FULL_STATUS: 3 } as const;

/** Persistent reservation types (SPC-4 6.15.3.4, Table 167). */
export const PrType = {
  WRITE_EXCLUSIVE: 1, EXCLUSIVE_ACCESS: 3, WRITE_EXCLUSIVE_REGISTRANTS_ONLY: 5, EXCLUSIVE_ACCESS_REGISTRANTS_ONLY: 6,
  WRITE_EXCLUSIVE_ALL_REGISTRANTS: 7, EXCLUSIVE_ACCESS_ALL_REGISTRANTS: 8,
} as const;

const TYPES: ReadonlySet<number> = new Set(Object.values(PrType));
const allRegistrants = (type: number): boolean => type === PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS || type === PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS;
const registrantsHaveAccess = (type: number): boolean => type >= PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY;
const exclusiveAccess = (type: number): boolean =>
  type === PrType.EXCLUSIVE_ACCESS || type === PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY || type === PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS;

/** The outcome of a PERSISTENT RESERVE OUT: GOOD, RESERVATION CONFLICT, or CHECK CONDITION. */
export type ReservationOutcome =
  | {
    kind: 'good';
    /** PREEMPT AND ABORT: the I_T nexuses whose tasks are to be aborted (nexusKey). */
    abort?: readonly string[];
    /** The unit attention conditions to establish for other I_T nexuses (nexusKey), present only when there are some. */
    unitAttentions?: readonly NexusUnitAttention[];
  }
  | { kind: 'conflict' }
  | CheckCondition;

/** A unit attention condition a PERSISTENT RESERVE OUT establishes for the I_T nexus `nexus` (nexusKey). */
export interface NexusUnitAttention { nexus: string; condition: SenseCondition }

/** GOOD, with the unit attentions `keys` are owed `condition` (none: plain GOOD). */
function good(keys: readonly string[], condition: SenseCondition, abort?: readonly string[]): ReservationOutcome {
  const o: { kind: 'good'; abort?: readonly string[]; unitAttentions?: readonly NexusUnitAttention[] } = { kind: 'good' };
  if (abort) o.abort = abort;
  if (keys.length > 0) o.unitAttentions = keys.map((nexus) => ({ nexus, condition }));
  return o;
}

/** What a command needs of the medium: 'none' is allowed under every reservation, 'read' under Write Exclusive only. */
type Access = 'none' | 'read' | 'write';

/**
 * The access each command needs, from the SPC-4 (5.12.1) and SBC-3 (4.17) tables of commands allowed in the presence
 * of persistent reservations: INQUIRY, REPORT LUNS, REQUEST SENSE, TEST UNIT READY, READ CAPACITY, REPORT SUPPORTED OPERATION CODES and
 * PERSISTENT RESERVE IN are "Allowed" under both types; READ, VERIFY, PRE-FETCH and READ DEFECT DATA are allowed under
 * Write Exclusive only; MODE SENSE (SPC-4: "Conflict" under both), writes (WRITE AND VERIFY and ORWRITE too), SYNCHRONIZE
 * CACHE, UNMAP, WRITE SAME and COMPARE AND WRITE conflict under both.
 */
function accessOf(cdb: Uint8Array): Access {
  switch (cdb[0]) {
    case Op.INQUIRY: case Op.REPORT_LUNS: case Op.REQUEST_SENSE: case Op.TEST_UNIT_READY: case Op.READ_CAPACITY_10:
    case Op.PERSISTENT_RESERVE_IN: case Op.PERSISTENT_RESERVE_OUT:
      return 'none';
    case Op.SERVICE_ACTION_IN_16: return (cdb[1]! & 0x1f) === ServiceAction.READ_CAPACITY_16 ? 'none' : 'write';
    case Op.MAINTENANCE_IN: return (cdb[1]! & 0x1f) === ServiceAction.REPORT_SUPPORTED_OPERATION_CODES ? 'none' : 'write';
    case Op.READ_6: case Op.READ_10: case Op.READ_12: case Op.READ_16: case Op.VERIFY_10: case Op.VERIFY_12: case Op.VERIFY_16:
    case Op.PRE_FETCH_10: case Op.PRE_FETCH_16: case Op.READ_DEFECT_DATA_10: case Op.READ_DEFECT_DATA_12:
      return 'read';
    // SBC-3 4.17 (and SPC-4 5.12.1): START STOP UNIT with START 1 and POWER CONDITION 0, and PREVENT ALLOW MEDIUM REMOVAL
    // with PREVENT 0, are allowed under every reservation; their other forms conflict.
    case Op.START_STOP_UNIT: return (cdb[4]! & 0xf1) === 0x01 ? 'none' : 'write';
    case Op.PREVENT_ALLOW_MEDIUM_REMOVAL: return (cdb[4]! & 0x03) === 0 ? 'none' : 'write';
    default: return 'write';
  }
}

/** The string that names an I_T nexus: the initiator port name (SPC-4 7.6.4.6: name ",i,0x" ISID) and the portal group. */
export function nexusKey(n: ITNexus): string {
  return `${initiatorPortName(n)},t,0x${n.targetPortalGroup.toString(16)}`;
}

function initiatorPortName(n: ITNexus): string {
  return `${n.initiator},i,0x${n.isid.toString(16).padStart(12, '0')}`;
}

/**
 * The iSCSI TransportID of an initiator port (SPC-4 7.6.4.6, Table 512): FORMAT CODE 01b, PROTOCOL IDENTIFIER 5,
 * ADDITIONAL LENGTH, then the null-terminated "name,i,0xISID" padded to a multiple of four bytes.
 */
export function iscsiTransportId(n: ITNexus): Uint8Array {
  const name = Buffer.from(initiatorPortName(n), 'utf8');
  const padded = Math.max(20, Math.ceil((name.length + 1) / 4) * 4);
  const b = new Uint8Array(4 + padded);
  b[0] = 0x40 | 0x05;
  put16(b, 2, padded);
  b.set(name, 4);
  return b;
}

interface Registration { nexus: ITNexus; key: bigint }
interface Reservation { holder: string; type: number }

/** Options of a Reservations. */
export interface ReservationsOptions {
  /** Accept APTPL=1 (and report PTPL_C 1) although nothing is persisted; default false: APTPL is refused. */
  acceptAptpl?: boolean;
}

/**
 * Registrations and the persistent reservation of one logical unit (LUN 0 of a target), shared by every session of the
 * target. Only LU_SCOPE is supported; SPEC_I_PT, ALL_TG_PT and REGISTER AND MOVE are not (REPORT CAPABILITIES says so).
 * Every change goes through `out()`; `in()` and `conflicts()` only read.
 */
export class Reservations {
  private generation = 0;
  private readonly registrations = new Map<string, Registration>();
  private reservation: Reservation | null = null;
  private aptpl = false;

  constructor(private readonly opts: ReservationsOptions = {}) {}

  /** The registered keys by nexus key, and the reservation (for tests and status). */
  snapshot(): { generation: number; keys: Map<string, bigint>; reservation: { holder: string; type: number } | null } {
    return {
      generation: this.generation,
      keys: new Map([...this.registrations].map(([k, r]) => [k, r.key])),
      reservation: this.reservation ? { ...this.reservation } : null,
    };
  }

  /**
   * Whether `cdb` from `nexus` is to be answered RESERVATION CONFLICT (SPC-4 5.12.1 and its table of commands allowed in
   * the presence of persistent reservations; SBC-3 4.17 for the block commands). The holder
   * has every access; under the Registrants Only and All Registrants types every registered nexus has it too (SPC-4
   * 5.12.10.1); others get what the base type (Write Exclusive or Exclusive Access) allows.
   */
  conflicts(cdb: Uint8Array, nexus: ITNexus): boolean {
    const r = this.reservation;
    if (!r || cdb.length === 0) return false;
    const access = accessOf(cdb);
    if (access === 'none') return false;
    const me = nexusKey(nexus);
    if (this.holds(me)) return false;
    if (registrantsHaveAccess(r.type) && this.registrations.has(me)) return false;
    return access === 'write' || exclusiveAccess(r.type);
  }

  private holds(key: string): boolean {
    const r = this.reservation;
    if (!r) return false;
    // SPC-4 5.12.10.1: under an all registrants type every registered I_T nexus is a reservation holder.
    return allRegistrants(r.type) ? this.registrations.has(key) : r.holder === key;
  }

  /** PERSISTENT RESERVE IN (SPC-4 6.15): the parameter data of `serviceAction`, cut at `allocationLength`. */
  in(serviceAction: number, allocationLength: number, nexus: ITNexus): { kind: 'data-in'; data: Uint8Array } | CheckCondition {
    let data: Uint8Array;
    switch (serviceAction) {
      case PrInAction.READ_KEYS: data = this.readKeys(); break;
      case PrInAction.READ_RESERVATION: data = this.readReservation(); break;
      case PrInAction.REPORT_CAPABILITIES: data = this.reportCapabilities(); break;
      case PrInAction.READ_FULL_STATUS: data = this.readFullStatus(nexus); break;
      default: return invalidField(1, 4);
    }
    return { kind: 'data-in', data: data.subarray(0, Math.min(data.length, allocationLength)) };
  }

  /** READ KEYS (SPC-4 6.15.2, Table 164): PRgeneration, ADDITIONAL LENGTH, one 8-byte key per registered I_T nexus. */
  private readKeys(): Uint8Array {
    const b = new Uint8Array(8 + 8 * this.registrations.size);
    put32(b, 0, this.generation);
    put32(b, 4, 8 * this.registrations.size);
    let at = 8;
    for (const r of this.registrations.values()) { put64(b, at, r.key); at += 8; }
    return b;
  }

  /**
   * READ RESERVATION (SPC-4 6.15.3, Tables 165-166): with a reservation, its key (zero for the all registrants types,
   * SPC-4 6.15.3.3), SCOPE (0, LU_SCOPE) and TYPE in byte 21.
   */
  private readReservation(): Uint8Array {
    const r = this.reservation;
    const b = new Uint8Array(r ? 24 : 8);
    put32(b, 0, this.generation);
    if (!r) return b;
    put32(b, 4, 16);
    if (!allRegistrants(r.type)) put64(b, 8, this.registrations.get(r.holder)?.key ?? 0n);
    b[21] = r.type;
    return b;
  }

  /**
   * REPORT CAPABILITIES (SPC-4 6.15.4, Table 168): LENGTH 8; CRH, SIP_C and ATP_C 0; PTPL_C as configured; TMV 1 with
   * ALLOW COMMANDS 001b (TEST UNIT READY is allowed through both base types); every type but the obsolete ones.
   */
  private reportCapabilities(): Uint8Array {
    const b = new Uint8Array(8);
    put16(b, 0, 8);
    b[2] = this.opts.acceptAptpl ? 0x01 : 0;
    b[3] = 0x80 | 0x10 | (this.aptpl ? 0x01 : 0);
    b[4] = 0x80 | 0x40 | 0x20 | 0x08 | 0x02; // WR_EX_AR, EX_AC_RO, WR_EX_RO, EX_AC, WR_EX
    b[5] = 0x01; // EX_AC_AR
    return b;
  }

  /**
   * READ FULL STATUS (SPC-4 6.15.5, Tables 169-170): per registration its key, R_HOLDER, SCOPE and TYPE when it holds the
   * reservation, RELATIVE TARGET PORT IDENTIFIER (1: the portal group) and the initiator's TransportID.
   */
  private readFullStatus(_nexus: ITNexus): Uint8Array {
    const parts: Uint8Array[] = [];
    for (const [key, reg] of this.registrations) {
      const tid = iscsiTransportId(reg.nexus);
      const d = new Uint8Array(24 + tid.length);
      put64(d, 0, reg.key);
      if (this.holds(key)) {
        d[12] = 0x01; // R_HOLDER
        d[13] = this.reservation!.type;
      }
      put16(d, 18, 1);
      put32(d, 20, tid.length);
      d.set(tid, 24);
      parts.push(d);
    }
    const length = parts.reduce((n, p) => n + p.length, 0);
    const b = new Uint8Array(8 + length);
    put32(b, 0, this.generation);
    put32(b, 4, length);
    let at = 8;
    for (const p of parts) { b.set(p, at); at += p.length; }
    return b;
  }

  /**
   * PERSISTENT RESERVE OUT (SPC-4 6.16) with the 24-byte basic parameter list (Table 174) `params`; `scopeType` is CDB
   * byte 2. Checks the parameter list, then the registration and the RESERVATION KEY (SPC-4 5.12.7 and Table 64: a
   * nexus that is not registered, or a key that does not match, gets RESERVATION CONFLICT), then runs the action.
   */
  out(serviceAction: number, scopeType: number, params: Uint8Array, nexus: ITNexus): ReservationOutcome {
    if (params.length !== 24) return checkCondition({ key: SenseKey.ILLEGAL_REQUEST, asc: 0x1a, ascq: 0x00 });
    const key = be64(params, 0);
    const saKey = be64(params, 8);
    const flags = params[20]!;
    const register = serviceAction === PrOutAction.REGISTER || serviceAction === PrOutAction.REGISTER_AND_IGNORE_EXISTING_KEY;
    // SPC-4 6.16.3: "If the device server does not support [SPEC_I_PT / ALL_TG_PT] ... the command shall be terminated with
    // CHECK CONDITION status, with the sense key set to ILLEGAL REQUEST and the additional sense code set to INVALID FIELD
    // IN PARAMETER LIST" (SIP_C and ATP_C are 0); likewise APTPL with PTPL_C 0. All three count only for the register actions.
    if (register && flags & 0x08) return invalidParameterBit(20, 3);
    if (register && flags & 0x04) return invalidParameterBit(20, 2);
    if (register && flags & 0x01 && !this.opts.acceptAptpl) return invalidParameterBit(20, 0);
    const me = nexusKey(nexus);
    const mine = this.registrations.get(me);
    if (serviceAction === PrOutAction.REGISTER_AND_IGNORE_EXISTING_KEY) return this.registerKey(me, nexus, saKey, flags);
    if (serviceAction === PrOutAction.REGISTER) {
      // SPC-4 5.12.7 Table 64: an unregistered nexus must give RESERVATION KEY 0; a registered one its own key.
      if (mine ? mine.key !== key : key !== 0n) return { kind: 'conflict' };
      return this.registerKey(me, nexus, saKey, flags);
    }
    if (!mine || mine.key !== key) return { kind: 'conflict' };
    const scope = scopeType >> 4;
    const type = scopeType & 0x0f;
    // SPC-4 6.16.1: SCOPE 0 (LU_SCOPE) is the only scope; a TYPE other than those of Table 167 is an invalid field.
    // RELEASE checks both against the reservation instead; PREEMPT ignores them when there is no reservation (5.12.11.4.3).
    const checkScopeType = serviceAction === PrOutAction.RESERVE
      || ((serviceAction === PrOutAction.PREEMPT || serviceAction === PrOutAction.PREEMPT_AND_ABORT) && this.reservation !== null);
    if (checkScopeType && scope !== 0) return invalidField(2, 7);
    if (checkScopeType && !TYPES.has(type)) return invalidField(2, 3);
    if (serviceAction === PrOutAction.RELEASE && scope !== 0 && this.holds(me)) return invalidRelease();
    switch (serviceAction) {
      case PrOutAction.RESERVE: return this.reserve(me, type);
      case PrOutAction.RELEASE: return this.release(me, type);
      case PrOutAction.CLEAR: return this.clear(me);
      case PrOutAction.PREEMPT: return this.preempt(me, saKey, type, false);
      case PrOutAction.PREEMPT_AND_ABORT: return this.preempt(me, saKey, type, true);
      default: return invalidField(1, 4); // REGISTER AND MOVE and reserved service actions
    }
  }

  /**
   * REGISTER / REGISTER AND IGNORE EXISTING KEY (SPC-4 5.12.7): a non-zero SERVICE ACTION RESERVATION KEY registers or
   * replaces the key; zero unregisters (an unregistered nexus: nothing to do, GOOD). Unregistering the holder releases a
   * reservation (5.12.11.2), except under all registrants types while others remain registered.
   */
  private registerKey(me: string, nexus: ITNexus, saKey: bigint, flags: number): ReservationOutcome {
    const mine = this.registrations.get(me);
    let released: string[] = [];
    if (saKey === 0n) {
      if (!mine) return { kind: 'good' };
      this.registrations.delete(me);
      const r = this.reservation;
      this.dropReservationOf(me);
      // SPC-4 5.12.11.2: the holder of a registrants only reservation unregistering releases it, and "the device server
      // shall establish a unit attention condition for the initiator port associated with every registered I_T nexus
      // except for the I_T nexus on which the PERSISTENT RESERVE OUT command was received, with the additional sense
      // code set to RESERVATIONS RELEASED".
      if (r && !this.reservation && registrantsHaveAccess(r.type)) released = [...this.registrations.keys()];
    } else {
      this.registrations.set(me, { nexus, key: saKey });
    }
    this.aptpl = (flags & 0x01) !== 0 && this.opts.acceptAptpl === true;
    this.bump();
    return good(released, Sense.reservationsReleased);
  }

  /** Releases the reservation when `key`'s registration was its holder (SPC-4 5.12.11.2). */
  private dropReservationOf(key: string): void {
    const r = this.reservation;
    if (!r) return;
    if (allRegistrants(r.type)) {
      if (this.registrations.size === 0) this.reservation = null;
      else if (r.holder === key) r.holder = this.registrations.keys().next().value!;
    } else if (r.holder === key) {
      this.reservation = null;
    }
  }

  /**
   * RESERVE (SPC-4 5.12.9): with no reservation the nexus takes one; the holder asking again for the same type gets GOOD;
   * anything else (another holder, or another type) is RESERVATION CONFLICT.
   */
  private reserve(me: string, type: number): ReservationOutcome {
    const r = this.reservation;
    if (!r) { this.reservation = { holder: me, type }; return { kind: 'good' }; }
    if (this.holds(me) && r.type === type) return { kind: 'good' };
    return { kind: 'conflict' };
  }

  /**
   * RELEASE (SPC-4 5.12.11.2): no reservation, or not the holder: GOOD and nothing changes; the holder giving another
   * TYPE: CHECK CONDITION, ILLEGAL REQUEST, INVALID RELEASE OF PERSISTENT RESERVATION; else the reservation is released.
   */
  private release(me: string, type: number): ReservationOutcome {
    const r = this.reservation;
    if (!r || !this.holds(me)) return { kind: 'good' };
    if (r.type !== type) return invalidRelease();
    this.reservation = null;
    // SPC-4 5.12.11.2: releasing a registrants only or all registrants reservation establishes RESERVATIONS RELEASED for
    // "every registered I_T nexus other than the I_T nexus on which the PERSISTENT RESERVE OUT command with RELEASE
    // service action was received" (Write Exclusive and Exclusive Access: none).
    return good(registrantsHaveAccess(type) ? [...this.registrations.keys()].filter((k) => k !== me) : [], Sense.reservationsReleased);
  }

  /**
   * CLEAR (SPC-4 5.12.11.3): every registration and the reservation are removed; "every registered I_T nexus other than
   * the I_T nexus on which the PERSISTENT RESERVE OUT command with CLEAR service action was received" gets a unit
   * attention with RESERVATIONS PREEMPTED (as Linux LIO's core_scsi3_emulate_pro_clear does).
   */
  private clear(me: string): ReservationOutcome {
    const others = [...this.registrations.keys()].filter((k) => k !== me);
    this.registrations.clear();
    this.reservation = null;
    this.bump();
    return good(others, Sense.reservationsPreempted);
  }

  /**
   * PREEMPT and PREEMPT AND ABORT (SPC-4 5.12.11.4). With no reservation, or a SERVICE ACTION RESERVATION KEY that is not
   * the holder's: the registrations with that key are removed (none: RESERVATION CONFLICT; key zero: INVALID FIELD IN
   * PARAMETER LIST, except under all registrants types where zero removes every other registration and the preemptor
   * takes a new reservation). With the holder's key: those registrations are removed and the preemptor takes the
   * reservation with the new TYPE. The preemptor's own registration always stays.
   * Unit attentions (SPC-4 5.12.11.4.3, 5.12.11.4.4): REGISTRATIONS PREEMPTED for every nexus that lost its registration;
   * when the reservation's TYPE changed, RESERVATIONS RELEASED for every nexus still registered but the preemptor.
   */
  private preempt(me: string, saKey: bigint, type: number, abort: boolean): ReservationOutcome {
    const r = this.reservation;
    const removeKey = (k: bigint): string[] => {
      const gone = [...this.registrations].filter(([n, reg]) => reg.key === k && n !== me).map(([n]) => n);
      for (const n of gone) this.registrations.delete(n);
      return gone;
    };
    let gone: string[];
    let typeChanged = false;
    if (r && allRegistrants(r.type) && saKey === 0n) {
      gone = [...this.registrations.keys()].filter((n) => n !== me);
      for (const n of gone) this.registrations.delete(n);
      this.reservation = { holder: me, type };
    } else if (r && !allRegistrants(r.type) && this.registrations.get(r.holder)?.key === saKey) {
      gone = removeKey(saKey);
      typeChanged = r.type !== type;
      this.reservation = { holder: me, type };
    } else {
      if (saKey === 0n) return invalidParameter(8);
      const matches = [...this.registrations.values()].some((reg) => reg.key === saKey);
      if (!matches) return { kind: 'conflict' };
      gone = removeKey(saKey);
      if (r && allRegistrants(r.type)) this.dropReservationOf(me); // keeps it: the preemptor is still registered
    }
    this.bump();
    const uas: NexusUnitAttention[] = gone.map((nexus) => ({ nexus, condition: Sense.registrationsPreempted }));
    if (typeChanged) {
      for (const nexus of this.registrations.keys()) if (nexus !== me) uas.push({ nexus, condition: Sense.reservationsReleased });
    }
    return { kind: 'good', ...(abort ? { abort: gone } : {}), ...(uas.length > 0 ? { unitAttentions: uas } : {}) };
  }

  private bump(): void {
    this.generation = (this.generation + 1) >>> 0;
  }
}

/** ILLEGAL REQUEST / INVALID RELEASE OF PERSISTENT RESERVATION (SPC-4 Annex D: 26h/04h). */
function invalidRelease(): CheckCondition {
  return checkCondition({ key: SenseKey.ILLEGAL_REQUEST, asc: 0x26, ascq: 0x04 });
}

/** ILLEGAL REQUEST / INVALID FIELD IN PARAMETER LIST at `byte`, `bit` (SPC-4 4.5.2.4.2). */
function invalidParameterBit(byte: number, bit: number): CheckCondition {
  return checkCondition({ key: SenseKey.ILLEGAL_REQUEST, asc: 0x26, ascq: 0x00, field: { cd: false, byte, bit } });
}

const defaults = new WeakMap<object, Reservations>();

/**
 * The Reservations of a target: `config.reservations` when given, else one made on first use and kept for that config
 * object, so every connection serving the same TargetConfig shares it.
 */
export function reservationsOf(config: { reservations?: Reservations }): Reservations {
  if (config.reservations) return config.reservations;
  let r = defaults.get(config);
  if (!r) { r = new Reservations(); defaults.set(config, r); }
  return r;
}
