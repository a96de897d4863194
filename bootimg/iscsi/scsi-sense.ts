// SCSI status and fixed-format sense data (SPC-4 4.5.3) for the iSCSI target's block-device command set.

/** SCSI status byte values (SAM-5 5.3.1, Table 27). */
export const ScsiStatus = { GOOD: 0x00, CHECK_CONDITION: 0x02 } as const;

/** Sense keys (SPC-4 4.5.6, Table 52). */
export const SenseKey = {
  NO_SENSE: 0x0,
  NOT_READY: 0x2,
  MEDIUM_ERROR: 0x3,
  HARDWARE_ERROR: 0x4,
  ILLEGAL_REQUEST: 0x5,
  UNIT_ATTENTION: 0x6,
  DATA_PROTECT: 0x7,
  ABORTED_COMMAND: 0xb,
  MISCOMPARE: 0xe,
} as const;

/** One sense condition: key, additional sense code and qualifier, and optional extra fields. */
export interface SenseCondition {
  key: number;
  asc: number;
  ascq: number;
  /** INFORMATION field (e.g. the first bad LBA, or the miscompare offset); sets the VALID bit. */
  information?: bigint;
  /** Sense-key specific field pointer (SPC-4 4.5.2.4.2): the CDB (cd) or parameter list byte at fault. */
  field?: { cd: boolean; byte: number; bit?: number };
}

/** The conditions this target reports (ASC/ASCQ from SPC-4 Annex D, Table D.1). */
export const Sense = {
  noSense: { key: SenseKey.NO_SENSE, asc: 0x00, ascq: 0x00 },
  invalidOpcode: { key: SenseKey.ILLEGAL_REQUEST, asc: 0x20, ascq: 0x00 },
  lbaOutOfRange: { key: SenseKey.ILLEGAL_REQUEST, asc: 0x21, ascq: 0x00 },
  invalidFieldInCdb: { key: SenseKey.ILLEGAL_REQUEST, asc: 0x24, ascq: 0x00 },
  /** INVALID FIELD IN COMMAND INFORMATION UNIT: the transport's command (here the iSCSI EDTL) disagrees with the CDB. */
  invalidFieldInCommandIu: { key: SenseKey.ILLEGAL_REQUEST, asc: 0x0e, ascq: 0x03 },
  /** LOGICAL UNIT NOT SUPPORTED: this target serves LUN 0 only. */
  lunNotSupported: { key: SenseKey.ILLEGAL_REQUEST, asc: 0x25, ascq: 0x00 },
  invalidFieldInParameterList: { key: SenseKey.ILLEGAL_REQUEST, asc: 0x26, ascq: 0x00 },
  parameterListLengthError: { key: SenseKey.ILLEGAL_REQUEST, asc: 0x1a, ascq: 0x00 },
  savingParametersNotSupported: { key: SenseKey.ILLEGAL_REQUEST, asc: 0x39, ascq: 0x00 },
  unrecoveredReadError: { key: SenseKey.MEDIUM_ERROR, asc: 0x11, ascq: 0x00 },
  writeError: { key: SenseKey.MEDIUM_ERROR, asc: 0x0c, ascq: 0x00 },
  writeProtected: { key: SenseKey.DATA_PROTECT, asc: 0x27, ascq: 0x00 },
  miscompareDuringVerify: { key: SenseKey.MISCOMPARE, asc: 0x1d, ascq: 0x00 },
  /** UNIT ATTENTION / CAPACITY DATA HAS CHANGED: the capacity changed since the session last heard (capacityChanged). */
  capacityDataHasChanged: { key: SenseKey.UNIT_ATTENTION, asc: 0x2a, ascq: 0x09 },
  /** UNIT ATTENTION / SCSI BUS RESET OCCURRED: another nexus's TARGET WARM RESET (a hard reset, SAM-5 6.3.2). */
  scsiBusResetOccurred: { key: SenseKey.UNIT_ATTENTION, asc: 0x29, ascq: 0x02 },
  /** UNIT ATTENTION / BUS DEVICE RESET FUNCTION OCCURRED: another nexus's LOGICAL UNIT RESET (SAM-5 6.3.3). */
  busDeviceResetFunctionOccurred: { key: SenseKey.UNIT_ATTENTION, asc: 0x29, ascq: 0x03 },
  /** UNIT ATTENTION / RESERVATIONS PREEMPTED: another nexus's PERSISTENT RESERVE OUT CLEAR (SPC-4 5.12.11.3). */
  reservationsPreempted: { key: SenseKey.UNIT_ATTENTION, asc: 0x2a, ascq: 0x03 },
  /** UNIT ATTENTION / RESERVATIONS RELEASED: a registrants only / all registrants reservation released (SPC-4 5.12.11.2). */
  reservationsReleased: { key: SenseKey.UNIT_ATTENTION, asc: 0x2a, ascq: 0x04 },
  /** UNIT ATTENTION / REGISTRATIONS PREEMPTED: the nexus's registration removed by PREEMPT (SPC-4 5.12.11.4). */
  registrationsPreempted: { key: SenseKey.UNIT_ATTENTION, asc: 0x2a, ascq: 0x05 },
} as const satisfies Record<string, SenseCondition>;

/** At most this many unit attention conditions are kept pending per I_T nexus (the lowest priority, newest go first). */
const UA_PER_NEXUS = 8;
/** At most this many I_T nexuses have a queue (a nexus that never comes back is forgotten, oldest first). */
const UA_NEXUSES = 1024;
/** At most this many reset broadcasts are remembered for sessions that have not issued a command since. */
const UA_BROADCASTS = 64;

/** SAM-5 5.14: the reset conditions (ASC 29h) are reported before the others (as Linux LIO's core_scsi3_ua_allocate orders them). */
const uaRank = (c: SenseCondition): number => (c.asc === 0x29 ? 0 : 1);

/**
 * The pending unit attention conditions of the I_T nexuses of one logical unit (SAM-5 5.14), keyed by nexus key
 * (reservations.ts nexusKey), shared by every session of the target (unitAttentionsOf). Each nexus has a small queue:
 * highest priority first (ASC 29h, the resets, before the rest), in the order established within a priority, one
 * condition of a given ASC/ASCQ at most. A session reports and clears its queue's head one command at a time (tasks.ts).
 * Conditions for every nexus but one (the resets) are broadcasts, numbered: a session takes the number at login and
 * moves the later ones that are not its own into its queue (sync), so a session that logs in after a reset does not hear of it.
 */
export class UnitAttentions {
  private readonly pending = new Map<string, SenseCondition[]>();
  private readonly broadcasts: { seq: number; condition: SenseCondition; except: string }[] = [];
  private seq = 0;

  /** The number of the last broadcast: what a session logging in starts from. */
  get now(): number { return this.seq; }

  /** Establishes `c` for the nexus `key`. */
  establish(key: string, c: SenseCondition): void {
    let q = this.pending.get(key);
    if (!q) {
      q = [];
      this.pending.set(key, q);
      if (this.pending.size > UA_NEXUSES) this.pending.delete(this.pending.keys().next().value!);
    }
    if (q.some((p) => p.asc === c.asc && p.ascq === c.ascq)) return;
    const rank = uaRank(c);
    let at = q.length;
    while (at > 0 && uaRank(q[at - 1]!) > rank) at--;
    q.splice(at, 0, c);
    if (q.length > UA_PER_NEXUS) q.length = UA_PER_NEXUS;
  }

  /** Establishes `c` for every nexus of the logical unit but `except` (the one whose command or function caused it). */
  establishForOthers(except: string, c: SenseCondition): void {
    this.broadcasts.push({ seq: ++this.seq, condition: c, except });
    if (this.broadcasts.length > UA_BROADCASTS) this.broadcasts.shift();
  }

  /** Moves the broadcasts after number `seen` that concern `key` into its queue; returns the number to remember. */
  sync(key: string, seen: number): number {
    for (const b of this.broadcasts) if (b.seq > seen && b.except !== key) this.establish(key, b.condition);
    return this.seq;
  }

  /** The condition `key` is to hear of next, if any. */
  peek(key: string): SenseCondition | undefined { return this.pending.get(key)?.[0]; }

  /** Clears the condition `peek` gave (it was reported). */
  take(key: string): void {
    const q = this.pending.get(key);
    if (!q) return;
    q.shift();
    if (q.length === 0) this.pending.delete(key);
  }
}

const unitAttentionsByTarget = new WeakMap<object, UnitAttentions>();

/** The UnitAttentions of a target (its LUN 0), kept for its config object, so every session serving it shares them. */
export function unitAttentionsOf(config: object): UnitAttentions {
  let u = unitAttentionsByTarget.get(config);
  if (!u) { u = new UnitAttentions(); unitAttentionsByTarget.set(config, u); }
  return u;
}

/** Length of the fixed-format sense data this target returns (SPC-4 4.5.3: additional length 10). */
export const FIXED_SENSE_LENGTH = 18;

/**
 * Encodes fixed-format sense data (SPC-4 4.5.3, Table 45): response code 0x70 (current error),
 * sense key in byte 2, INFORMATION in bytes 3-6, additional sense length 10 in byte 7,
 * ASC/ASCQ in bytes 12-13, sense-key specific bytes 15-17 (field pointer, SPC-4 Table 48).
 */
export function encodeFixedSense(c: SenseCondition): Uint8Array {
  const b = new Uint8Array(FIXED_SENSE_LENGTH);
  b[0] = 0x70;
  b[2] = c.key & 0x0f;
  if (c.information !== undefined) {
    b[0] |= 0x80; // VALID: INFORMATION is as the standard defines it
    new DataView(b.buffer).setUint32(3, Number(BigInt.asUintN(32, c.information)));
  }
  b[7] = FIXED_SENSE_LENGTH - 8;
  b[12] = c.asc;
  b[13] = c.ascq;
  if (c.field) {
    b[15] = 0x80 | (c.field.cd ? 0x40 : 0) | (c.field.bit !== undefined ? 0x08 | (c.field.bit & 7) : 0);
    b[16] = (c.field.byte >> 8) & 0xff;
    b[17] = c.field.byte & 0xff;
  }
  return b;
}

/** A CHECK CONDITION result: the status to send and the sense data to send with it. */
export interface CheckCondition {
  kind: 'check';
  status: typeof ScsiStatus.CHECK_CONDITION;
  sense: Uint8Array;
  condition: SenseCondition;
}

/** Builds a CHECK CONDITION result carrying fixed-format sense for `c`. */
export function checkCondition(c: SenseCondition): CheckCondition {
  return { kind: 'check', status: ScsiStatus.CHECK_CONDITION, sense: encodeFixedSense(c), condition: c };
}

/** ILLEGAL REQUEST / INVALID FIELD IN CDB, pointing at CDB byte `byte` (and `bit` when known). */
export function invalidField(byte: number, bit?: number): CheckCondition {
  return checkCondition({ ...Sense.invalidFieldInCdb, field: bit === undefined ? { cd: true, byte } : { cd: true, byte, bit } });
}

/** ILLEGAL REQUEST / INVALID FIELD IN PARAMETER LIST, pointing at parameter byte `byte`. */
export function invalidParameter(byte: number): CheckCondition {
  return checkCondition({ ...Sense.invalidFieldInParameterList, field: { cd: false, byte } });
}

/** MEDIUM ERROR / UNRECOVERED READ ERROR at `lba`, for the executor when a read fails. */
export function readErrorAt(lba: bigint): CheckCondition {
  return checkCondition({ ...Sense.unrecoveredReadError, information: lba });
}

/** MEDIUM ERROR / WRITE ERROR at `lba`, for the executor when a write fails. */
export function writeErrorAt(lba: bigint): CheckCondition {
  return checkCondition({ ...Sense.writeError, information: lba });
}

/** MISCOMPARE / MISCOMPARE DURING VERIFY OPERATION; INFORMATION is the byte offset of the first difference (SBC-3 5.2). */
export function miscompareAt(offset: number): CheckCondition {
  return checkCondition({ ...Sense.miscompareDuringVerify, information: BigInt(offset) });
}
