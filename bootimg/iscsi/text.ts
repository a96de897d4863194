// iSCSI text key=value data (RFC 7143 section 6) and the login parameter negotiation a target answers with.
//
// Note on iPXE: it sets the Transit bit on every Login Request (security stage: T=1 NSG=1; operational: T=1
// NSG=3), including the CHAP exchange. The target decides when to transit: it answers T=0 while it still
// needs a round (CHAP): RFC 7143 section 6.3 lets a target answer T=0 to a request with T=1, and
// iPXE simply sends its next request.

/** A text segment that breaks a rule of RFC 7143 section 6.1, or goes over a limit. */
export class TextError extends Error {
  override name = 'TextError';
}

/** Limits on received text (RFC 7143 section 6.1). */
export interface TextLimits {
  /** Longest key; the RFC's standard-label is at most 63 characters. */
  maxKeyLength?: number;
  /** Longest value; 255 bytes unless a key says otherwise (RFC 7143 section 6.1). */
  maxValueLength?: number;
  /** Longest value for CHAP_ keys, whose binary values may be longer (section 12.1.3). */
  maxChapValueLength?: number;
  /** Most text in one negotiation sequence; the RFC requires at least 8192 to be accepted. */
  maxTotalLength?: number;
  /** Most pairs. */
  maxPairs?: number;
}

const DEFAULT_LIMITS: Required<TextLimits> = { maxKeyLength: 63, maxValueLength: 255, maxChapValueLength: 2048, maxTotalLength: 65536, maxPairs: 256 };

// RFC 7143 section 6.1: key names are "standard-label" (a letter then letters, digits, '.', '-', '+', '@', '_'),
// or X-vendor / X#IANA keys of the same characters.
const KEY_RE = /^(?:[A-Za-z][A-Za-z0-9.\-+@_]*|X#[A-Za-z0-9.\-+@_]+)$/;

/**
 * Parses a text data segment: "key=value" pairs each ended by a NUL byte (RFC 7143 section 6.1), in order.
 * Empty entries (consecutive NULs, trailing padding) are skipped. A key given twice in one segment is refused
 * (section 6.2: a key is negotiated once), as is a last pair without its NUL (a caller joins
 * Text/Login PDUs sent with the C bit before parsing).
 */
export function parseText(data: Uint8Array, limits: TextLimits = {}): Map<string, string> {
  const l = { ...DEFAULT_LIMITS, ...limits };
  if (data.length > l.maxTotalLength) throw new TextError(`text of ${data.length} bytes exceeds ${l.maxTotalLength}`);
  const out = new Map<string, string>();
  const dec = new TextDecoder('utf-8', { fatal: true });
  let start = 0;
  while (start < data.length) {
    const end = data.indexOf(0, start);
    if (end < 0) throw new TextError('text does not end with a NUL byte');
    if (end === start) { start++; continue; }
    const eq = data.indexOf(0x3d, start); // '='
    if (eq < 0 || eq >= end) throw new TextError(`text entry without '=' at byte ${start}`);
    if (eq - start > l.maxKeyLength) throw new TextError(`key of ${eq - start} bytes exceeds ${l.maxKeyLength}`);
    let key: string;
    let value: string;
    try {
      key = dec.decode(data.subarray(start, eq));
      value = dec.decode(data.subarray(eq + 1, end));
    } catch {
      throw new TextError(`text entry at byte ${start} is not UTF-8`);
    }
    if (!KEY_RE.test(key)) throw new TextError(`invalid key ${JSON.stringify(key)}`);
    const maxValue = key.startsWith('CHAP_') ? l.maxChapValueLength : l.maxValueLength;
    if (end - eq - 1 > maxValue) throw new TextError(`value of ${key} is ${end - eq - 1} bytes, over ${maxValue}`);
    if (out.has(key)) throw new TextError(`key ${key} given twice`);
    if (out.size >= l.maxPairs) throw new TextError(`more than ${l.maxPairs} keys`);
    out.set(key, value);
    start = end + 1;
  }
  return out;
}

/** Encodes pairs as "key=value\0..." (RFC 7143 section 6.1). Throws TextError for a key or value that cannot be sent. */
export function encodeText(pairs: Iterable<readonly [string, string]>): Uint8Array {
  const parts: string[] = [];
  for (const [k, v] of pairs) {
    if (!KEY_RE.test(k) || k.length > 63) throw new TextError(`invalid key ${JSON.stringify(k)}`);
    if (v.includes('\0')) throw new TextError(`value of ${k} contains a NUL`);
    parts.push(`${k}=${v}\0`);
  }
  return new TextEncoder().encode(parts.join(''));
}

// ------------------------------------------------------------------------------------------------ negotiation

/** Negotiated and declared session/connection parameters (RFC 7143 section 13), with the RFC defaults. */
export interface SessionParams {
  headerDigest: boolean;
  dataDigest: boolean;
  /** What we receive: our declared MaxRecvDataSegmentLength. */
  maxRecvDataSegmentLength: number;
  /** What we may send: the initiator's declared MaxRecvDataSegmentLength (section 13.12). */
  maxSendDataSegmentLength: number;
  maxBurstLength: number;
  firstBurstLength: number;
  immediateData: boolean;
  initialR2T: boolean;
  maxOutstandingR2T: number;
  errorRecoveryLevel: number;
  defaultTime2Wait: number;
  defaultTime2Retain: number;
  maxConnections: number;
  dataPDUInOrder: boolean;
  dataSequenceInOrder: boolean;
  sessionType: 'Normal' | 'Discovery';
  initiatorName: string | null;
  initiatorAlias: string | null;
  targetName: string | null;
  authMethod: string | null;
}

/** What the target supports and wants. */
export interface NegotiationPolicy {
  /** Digests accepted, e.g. ['None', 'CRC32C'] (section 13.1). */
  headerDigests: readonly string[];
  dataDigests: readonly string[];
  /** Authentication methods accepted, e.g. ['None'] or ['CHAP'] (section 12.1). */
  authMethods: readonly string[];
  maxRecvDataSegmentLength: number;
  maxBurstLength: number;
  firstBurstLength: number;
  maxOutstandingR2T: number;
  immediateData: boolean;
  initialR2T: boolean;
}

/** A policy that serves stock iPXE and open-iscsi: no digests required, no authentication, ERL 0. */
export const DEFAULT_POLICY: NegotiationPolicy = Object.freeze({
  headerDigests: ['None', 'CRC32C'], dataDigests: ['None', 'CRC32C'], authMethods: ['None'],
  maxRecvDataSegmentLength: 262144, maxBurstLength: 1048576, firstBurstLength: 262144, maxOutstandingR2T: 1,
  immediateData: true, initialR2T: false,
});

/** The parameters before any negotiation: the RFC 7143 section 13 defaults. */
export function defaultParams(policy: NegotiationPolicy = DEFAULT_POLICY): SessionParams {
  return {
    headerDigest: false, dataDigest: false, maxRecvDataSegmentLength: Math.min(8192, policy.maxRecvDataSegmentLength), maxSendDataSegmentLength: 8192,
    maxBurstLength: 262144, firstBurstLength: 65536, immediateData: true, initialR2T: true, maxOutstandingR2T: 1, errorRecoveryLevel: 0,
    defaultTime2Wait: 2, defaultTime2Retain: 20, maxConnections: 1, dataPDUInOrder: true, dataSequenceInOrder: true,
    sessionType: 'Normal', initiatorName: null, initiatorAlias: null, targetName: null, authMethod: null,
  };
}

/** Answer values with a meaning of their own (RFC 7143 section 6.2). */
export const REJECT = 'Reject';
export const IRRELEVANT = 'Irrelevant';
export const NOT_UNDERSTOOD = 'NotUnderstood';

type NumKey = 'maxBurstLength' | 'firstBurstLength' | 'maxOutstandingR2T' | 'errorRecoveryLevel' | 'defaultTime2Wait' | 'defaultTime2Retain' | 'maxConnections';
type BoolKey = 'immediateData' | 'initialR2T' | 'dataPDUInOrder' | 'dataSequenceInOrder';

/** Numeric keys: result function and range (RFC 7143 sections 13.x). */
const NUMERIC: ReadonlyMap<string, { field: NumKey; fn: 'min' | 'max'; lo: number; hi: number; ours: (p: NegotiationPolicy) => number }> = new Map([
  ['MaxBurstLength', { field: 'maxBurstLength', fn: 'min', lo: 512, hi: 0xff_ffff, ours: (p: NegotiationPolicy) => p.maxBurstLength }], // 13.13
  ['FirstBurstLength', { field: 'firstBurstLength', fn: 'min', lo: 512, hi: 0xff_ffff, ours: (p: NegotiationPolicy) => p.firstBurstLength }], // 13.14
  ['MaxOutstandingR2T', { field: 'maxOutstandingR2T', fn: 'min', lo: 1, hi: 65535, ours: (p: NegotiationPolicy) => p.maxOutstandingR2T }], // 13.17
  ['ErrorRecoveryLevel', { field: 'errorRecoveryLevel', fn: 'min', lo: 0, hi: 2, ours: () => 0 }], // 13.20: we implement level 0 only
  ['DefaultTime2Wait', { field: 'defaultTime2Wait', fn: 'max', lo: 0, hi: 3600, ours: () => 2 }], // 13.15
  ['DefaultTime2Retain', { field: 'defaultTime2Retain', fn: 'min', lo: 0, hi: 3600, ours: () => 0 }], // 13.16: no connection reinstatement at ERL 0
  ['MaxConnections', { field: 'maxConnections', fn: 'min', lo: 1, hi: 65535, ours: () => 1 }], // 13.2: one connection per session
] as const);

/** Boolean keys: OR or AND result function (RFC 7143 sections 13.10, 13.11, 13.18, 13.19). */
const BOOLEAN: ReadonlyMap<string, { field: BoolKey; fn: 'or' | 'and'; ours: (p: NegotiationPolicy) => boolean }> = new Map([
  ['InitialR2T', { field: 'initialR2T', fn: 'or', ours: (p: NegotiationPolicy) => p.initialR2T }],
  ['ImmediateData', { field: 'immediateData', fn: 'and', ours: (p: NegotiationPolicy) => p.immediateData }],
  ['DataPDUInOrder', { field: 'dataPDUInOrder', fn: 'or', ours: () => true }],
  ['DataSequenceInOrder', { field: 'dataSequenceInOrder', fn: 'or', ours: () => true }],
] as const);

/** Keys that mean nothing in a Discovery session: answered Irrelevant (RFC 7143 section 13, "Irrelevant when: SessionType=Discovery"). */
const NORMAL_SESSION_ONLY = new Set([
  'MaxBurstLength', 'FirstBurstLength', 'MaxOutstandingR2T', 'InitialR2T', 'ImmediateData', 'DataPDUInOrder', 'DataSequenceInOrder',
  'MaxConnections', 'DefaultTime2Wait', 'DefaultTime2Retain',
]);

/** Parses a numerical value: decimal or 0x hexadecimal (RFC 7143 section 6.1, "decimal-constant", "hex-constant"). */
export function parseNumber(v: string): number | null {
  if (/^[0-9]{1,16}$/.test(v)) return Number(v);
  if (/^0[xX][0-9a-fA-F]{1,13}$/.test(v)) return parseInt(v.slice(2), 16);
  return null;
}

/** The result of one negotiation round. */
export interface Negotiation {
  /** Keys to send back, in the order offered. */
  answer: Map<string, string>;
  /** The parameters after this round. */
  params: SessionParams;
  /** Keys left to the caller: authentication (CHAP_*) exchanges. */
  unhandled: Map<string, string>;
}

/**
 * Answers the keys an initiator offered in one Login or Text request (RFC 7143 section 6.2): a list key gets
 * the first offered value we support (else Reject); a numeric key the min or max of offer and ours; a boolean
 * key the AND or OR of both; a declarative key (InitiatorName, TargetName, SessionType, MaxRecvDataSegmentLength)
 * is recorded, and MaxRecvDataSegmentLength is answered with our own declaration. Unknown keys are answered
 * NotUnderstood, invalid values Reject. `current` carries the parameters of earlier rounds of the same login.
 */
export function negotiate(offered: ReadonlyMap<string, string>, policy: NegotiationPolicy = DEFAULT_POLICY, current: SessionParams = defaultParams(policy)): Negotiation {
  const params: SessionParams = { ...current };
  const answer = new Map<string, string>();
  const unhandled = new Map<string, string>();
  // SessionType first: it decides which other keys are relevant.
  const st = offered.get('SessionType');
  if (st === 'Normal' || st === 'Discovery') params.sessionType = st;
  for (const [key, value] of offered) {
    // Values that are themselves answers (to keys we offered) are not offers (section 6.2).
    if (value === REJECT || value === IRRELEVANT || value === NOT_UNDERSTOOD) continue;
    if (key.startsWith('CHAP_')) { unhandled.set(key, value); continue; }
    if (params.sessionType === 'Discovery' && NORMAL_SESSION_ONLY.has(key)) { answer.set(key, IRRELEVANT); continue; }
    const num = NUMERIC.get(key);
    if (num) {
      const n = parseNumber(value);
      if (n === null || n < num.lo || n > num.hi) { answer.set(key, REJECT); continue; }
      const ours = num.ours(policy);
      const r = num.fn === 'min' ? Math.min(n, ours) : Math.max(n, ours);
      params[num.field] = r;
      answer.set(key, String(r));
      continue;
    }
    const bool = BOOLEAN.get(key);
    if (bool) {
      if (value !== 'Yes' && value !== 'No') { answer.set(key, REJECT); continue; }
      const o = value === 'Yes';
      const ours = bool.ours(policy);
      const r = bool.fn === 'or' ? o || ours : o && ours;
      params[bool.field] = r;
      answer.set(key, r ? 'Yes' : 'No');
      continue;
    }
    switch (key) {
      case 'HeaderDigest':
      case 'DataDigest': {
        // Section 13.1 / 6.2.1: "the responder MUST select the first value it supports" from the offered list.
        const pick = pickFromList(value, key === 'HeaderDigest' ? policy.headerDigests : policy.dataDigests);
        answer.set(key, pick ?? REJECT);
        if (pick) params[key === 'HeaderDigest' ? 'headerDigest' : 'dataDigest'] = pick === 'CRC32C';
        break;
      }
      case 'AuthMethod': {
        const pick = pickFromList(value, policy.authMethods);
        answer.set(key, pick ?? REJECT);
        if (pick) params.authMethod = pick;
        break;
      }
      case 'MaxRecvDataSegmentLength': {
        // Section 13.12: declarative, 512 to 2^24-1; the target declares its own in its answer.
        const n = parseNumber(value);
        if (n === null || n < 512 || n > 0xff_ffff) { answer.set(key, REJECT); break; }
        params.maxSendDataSegmentLength = n;
        params.maxRecvDataSegmentLength = policy.maxRecvDataSegmentLength;
        answer.set(key, String(policy.maxRecvDataSegmentLength));
        break;
      }
      case 'SessionType':
        if (value !== 'Normal' && value !== 'Discovery') answer.set(key, REJECT);
        break;
      case 'InitiatorName': params.initiatorName = value; break;
      case 'InitiatorAlias': params.initiatorAlias = value; break;
      case 'TargetName': params.targetName = value; break;
      default:
        // Section 6.2: a key not understood is answered "key=NotUnderstood".
        answer.set(key, NOT_UNDERSTOOD);
    }
  }
  // Section 13.14: "FirstBurstLength MUST NOT exceed MaxBurstLength."
  if (params.firstBurstLength > params.maxBurstLength) {
    params.firstBurstLength = params.maxBurstLength;
    if (answer.has('FirstBurstLength') && answer.get('FirstBurstLength') !== REJECT) answer.set('FirstBurstLength', String(params.firstBurstLength));
  }
  return { answer, params, unhandled };
}

/** The first value of a comma-separated offer that `supported` holds (RFC 7143 section 6.2.1), or null. */
export function pickFromList(offer: string, supported: readonly string[]): string | null {
  for (const v of offer.split(',')) if (supported.includes(v)) return v;
  return null;
}
