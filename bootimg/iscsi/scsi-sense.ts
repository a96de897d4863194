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
} as const satisfies Record<string, SenseCondition>;

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
