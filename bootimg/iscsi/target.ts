// What a target is (TargetConfig), the disk operations the caller runs (DiskOp) and what the state machine answers
// (Step): the types shared by the connection's state machine, its SCSI tasks, the disk operation runner and the portal.
import type { ChapConfig } from './chap.js';
import type { Digests, OutPdu } from './pdu.js';
import type { Reservations } from './reservations.js';
import type { CheckCondition, ScsiDisk, UnmapRange } from './scsi.js';

/** One target this portal serves: its IQN, the LUN 0 disk and the portal addresses (host:port) SendTargets reports. */
export interface TargetConfig {
  name: string;
  disk: ScsiDisk;
  addresses: readonly string[];
  /**
   * LUN 0's persistent reservations, shared by every session of the target (in memory only: see reservations.ts);
   * default one made on first use for this TargetConfig object.
   */
  reservations?: Reservations;
  /**
   * CHAP required of every initiator logging in to this target (RFC 7143 section 12.1.3), with the target's own
   * credentials for mutual CHAP; without it the target takes AuthMethod=None only. Check it with validateChapConfig
   * (chap.ts) where it is built: a login to a target whose CHAP configuration fails that check fails with 0x0300.
   */
  chap?: ChapConfig;
}

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


/** A read the caller runs on the disk, then reports with completeRead(itt, ...) (or completeOp). */
export interface ReadOp { kind: 'read'; itt: number; target: string; lba: bigint; blocks: number; fua: boolean }

/** A write the caller runs on the disk once all its data is in (`data` is blocks x block size bytes), then reports with completeWrite. */
export interface WriteOp { kind: 'write'; itt: number; target: string; lba: bigint; blocks: number; data: Uint8Array; fua: boolean }

/** SYNCHRONIZE CACHE: the caller flushes the disk, then reports with completeSync(itt, ...). */
export interface SyncOp { kind: 'sync'; itt: number; target: string }

/**
 * Deallocates `ranges` (UNMAP), then reported with completeTrim. With `zero` (WRITE SAME with the UNMAP bit and zero data)
 * the ranges must read back as zeroes afterwards (Backend.writeZeroes with mayUnmap); without it (UNMAP, SBC-3 5.28) the
 * caller may also do nothing, since deallocation is a hint.
 */
export interface TrimOp { kind: 'trim'; itt: number; target: string; ranges: readonly UnmapRange[]; zero: boolean }

/**
 * WRITE SAME: `pattern` (one block) written to each of `blocks` blocks from `lba`, then reported with completeWriteSame.
 * The caller writes it in bounded pieces (no buffer of the whole range), or zeroes the range when the pattern is all zero.
 */
export interface WriteSameOp { kind: 'write-same'; itt: number; target: string; lba: bigint; blocks: number; pattern: Uint8Array }

/**
 * VERIFY (SBC-3 5.32): the caller reads the range; with `expected` null (BYTCHK 0) it only reports medium errors; else it
 * compares with `expected`, which is blocks x block size bytes (BYTCHK 1) or one block compared with every block
 * (BYTCHK 3), and reports the first difference as miscompareAt(byte offset from the start of the range). completeCompare.
 */
export interface CompareOp { kind: 'compare'; itt: number; target: string; lba: bigint; blocks: number; expected: Uint8Array | null }

/**
 * COMPARE AND WRITE (SBC-3 5.3): the caller reads the range, compares it with `verify`, and only if equal writes `write`,
 * the three atomically with respect to other writes of the range; a difference is miscompareAt(offset into `verify`),
 * and nothing is written. Reported with completeCompareAndWrite.
 */
export interface CompareAndWriteOp {
  kind: 'compare-and-write'; itt: number; target: string; lba: bigint; blocks: number; verify: Uint8Array; write: Uint8Array; fua: boolean;
}

/**
 * WRITE AND VERIFY (SBC-3 r36 5.38): the caller writes `data` (blocks x block size bytes) through to the medium, reads the
 * range back and, with `bytchk`, compares it with `data` (a difference is miscompareAt(offset)); the write and the read-back
 * hold the range against other writes. Reported with completeOp.
 */
export interface WriteVerifyOp { kind: 'write-verify'; itt: number; target: string; lba: bigint; blocks: number; data: Uint8Array; bytchk: boolean }

/**
 * ORWRITE (16) (SBC-3 r36 5.5): the caller reads the range, ORs `data` (blocks x block size bytes) into it and writes the
 * result, atomically with respect to other writes of the range. Reported with completeOp.
 */
export interface OrWriteOp { kind: 'or-write'; itt: number; target: string; lba: bigint; blocks: number; data: Uint8Array; fua: boolean }

/** A disk operation for the caller. Every op holds at most one command's Data-Out (bounded by the VPD 0xB0 limits). */
export type DiskOp = ReadOp | WriteOp | SyncOp | TrimOp | WriteSameOp | CompareOp | CompareAndWriteOp | WriteVerifyOp | OrWriteOp;

/**
 * What the caller reports for a DiskOp: the bytes of a ReadOp, 'ok' for the others, a CHECK CONDITION of its own (e.g.
 * MISCOMPARE), or an Error: MEDIUM ERROR at the first LBA (UNRECOVERED READ ERROR for reads and compares, WRITE ERROR else).
 */
export type DiskOpResult = Uint8Array | 'ok' | CheckCondition | Error;

