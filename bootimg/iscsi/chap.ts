// CHAP with MD5 (RFC 1994) as an iSCSI target answers it at login (RFC 7143 section 12.1.3): the challenge, the check
// of the initiator's response, and the target's own response for mutual CHAP. Pure: text keys in, text keys out.
//
// The exchange, target side (RFC 7143 section 12.1.3):
//   I->T  AuthMethod=CHAP,...              T->I  AuthMethod=CHAP                  (login, not here)
//   I->T  CHAP_A=<A1,A2,...>               T->I  CHAP_A=5 CHAP_I=<I> CHAP_C=<C>   (challenge)
//   I->T  CHAP_N=<N> CHAP_R=<R>            T->I  (nothing: authenticated)
//    or   CHAP_N CHAP_R CHAP_I CHAP_C      T->I  CHAP_N=<N> CHAP_R=<R>           (mutual: the target proves itself)
import { createHash, randomBytes as cryptoRandomBytes, timingSafeEqual } from 'node:crypto';
import { parseNumber } from './text.js';

/** CHAP_A of CHAP with MD5, the one algorithm we do (RFC 7143 section 12.1.3: "one value is required to be implemented: 5"). */
export const CHAP_MD5 = 5;
/** Length of an MD5 CHAP response (RFC 1994 section 4.1 with MD5: 16 bytes). */
export const CHAP_MD5_RESPONSE_LENGTH = 16;
/** Length of the challenges we send: 128 random bits, as iPXE, open-iscsi and LIO send. */
export const CHAP_CHALLENGE_LENGTH = 16;
/** Shortest initiator challenge we answer in mutual CHAP: a shorter one would make our secret easier to attack off line. */
export const CHAP_MIN_CHALLENGE_LENGTH = 16;
/** RFC 7143 section 12.1.3: the binary length of C and R "MUST NOT exceed 1024 bytes". */
export const CHAP_MAX_BINARY_LENGTH = 1024;
/** Shortest secret: 96 bits (RFC 7143 section 12.1.3, see validateChapConfig). */
export const CHAP_MIN_SECRET_LENGTH = 12;
/** Secret length we recommend: 128 bits, the RFC's "up to 128-bit random CHAP secrets". */
export const CHAP_RECOMMENDED_SECRET_LENGTH = 16;
/** Longest CHAP name: a text value of RFC 7143 section 6.1 (255 bytes). */
export const CHAP_MAX_NAME_LENGTH = 255;

/** A CHAP name and its secret. The secret is used as its UTF-8 bytes, as iPXE and open-iscsi use theirs. */
export interface ChapCredentials { user: string; secret: string }

/**
 * CHAP required of initiators: `user` and `secret` are what the initiator must prove it knows; `mutual`, when set, is
 * what the target answers with when the initiator asks the target to prove itself (mutual CHAP). The initiator
 * chooses whether to ask; with `mutual` unset, an initiator that asks fails the login.
 */
export interface ChapConfig extends ChapCredentials { mutual?: ChapCredentials }

/** A CHAP configuration that must not be used; the message says what is wrong and what to do. */
export class ChapConfigError extends Error {
  override name = 'ChapConfigError';
}

/** A CHAP value that is not what RFC 7143 section 6.1 and 12.1.3 allow. */
export class ChapValueError extends Error {
  override name = 'ChapValueError';
}

const utf8 = new TextEncoder();

/**
 * Checks a CHAP configuration before it is used; call it where the configuration is built (the CLI, a resource file).
 * Throws ChapConfigError naming `where` (e.g. the target) for: an empty name, a name over 255 bytes or with a NUL, a
 * secret with a NUL (initiators cut the secret there), a secret shorter than 12 bytes, and a mutual secret equal to
 * the initiator's. Returns warnings to print (a secret shorter than the recommended 16 bytes).
 *
 * RFC 7143 section 12.1.3: "A compliant implementation SHOULD NOT continue with the login step in which it should send
 * a CHAP response (CHAP_R) unless it can verify that the CHAP secret is at least 96 bits", and "Any CHAP secret used for
 * initiator authentication MUST NOT be configured for authentication of any target". Secrets longer than 16 bytes are
 * fine for iPXE and open-iscsi (Microsoft's initiator takes 12 to 16 characters only).
 */
export function validateChapConfig(chap: ChapConfig, where = 'CHAP'): string[] {
  const warnings: string[] = [];
  const check = (c: ChapCredentials, role: string): void => {
    const name = utf8.encode(c.user ?? '');
    if (name.length === 0) throw new ChapConfigError(`${where}: the ${role} CHAP user name is empty; give a name, e.g. the initiator's IQN or "boot"`);
    if (name.length > CHAP_MAX_NAME_LENGTH) throw new ChapConfigError(`${where}: the ${role} CHAP user name is ${name.length} bytes; iSCSI text values hold at most ${CHAP_MAX_NAME_LENGTH}: use a shorter name`);
    if (name.includes(0)) throw new ChapConfigError(`${where}: the ${role} CHAP user name contains a NUL byte, which iSCSI text cannot carry; remove it`);
    const secret = utf8.encode(c.secret ?? '');
    if (secret.includes(0)) throw new ChapConfigError(`${where}: the ${role} CHAP secret contains a NUL byte, where initiators would cut it; use printable characters, e.g. from \`twindisk gen-secret\``);
    if (secret.length < CHAP_MIN_SECRET_LENGTH) {
      throw new ChapConfigError(
        `${where}: the ${role} CHAP secret is ${secret.length} bytes, shorter than the ${CHAP_MIN_SECRET_LENGTH} bytes (96 bits) RFC 7143 section 12.1.3 asks for; ` +
        `use a random secret of ${CHAP_RECOMMENDED_SECRET_LENGTH} bytes or more, e.g. from \`twindisk gen-secret\``,
      );
    }
    if (secret.length < CHAP_RECOMMENDED_SECRET_LENGTH) {
      warnings.push(`${where}: the ${role} CHAP secret is ${secret.length} bytes; ${CHAP_RECOMMENDED_SECRET_LENGTH} bytes or more (128 bits) of random characters are recommended`);
    }
  };
  check(chap, 'initiator');
  if (chap.mutual) {
    check(chap.mutual, 'mutual (target)');
    if (chap.mutual.secret === chap.secret) {
      throw new ChapConfigError(
        `${where}: the mutual CHAP secret equals the initiator's; RFC 7143 section 12.1.3 forbids one secret for both directions (it lets an attacker ` +
        `reflect the target's answer back): give the mutual CHAP a secret of its own`,
      );
    }
  }
  return warnings;
}

/** The MD5 CHAP response: MD5(Identifier || secret || Challenge) (RFC 1994 section 4.1). */
export function chapResponse(identifier: number, secret: string | Uint8Array, challenge: Uint8Array): Uint8Array {
  const md5 = createHash('md5');
  md5.update(Uint8Array.of(identifier & 0xff));
  md5.update(typeof secret === 'string' ? utf8.encode(secret) : secret);
  md5.update(challenge);
  return new Uint8Array(md5.digest());
}

/**
 * Decodes a binary CHAP value (CHAP_C, CHAP_R): a hex-constant "0x..." or a base64-constant "0b..." (RFC 7143
 * section 6.1), at most 1024 bytes (section 12.1.3). Throws ChapValueError otherwise. An odd number of hex digits is
 * refused: section 6.1 reads it as if a leading 0 were there, but a CHAP value is a byte string and no initiator sends
 * half a byte, so it is taken for a damaged value. Base64 must be canonical RFC 4648 with its padding.
 */
export function decodeChapBinary(value: string): Uint8Array {
  const prefix = value.slice(0, 2).toLowerCase();
  const body = value.slice(2);
  if (prefix === '0x') {
    // Bound the work before decoding: 2 hex digits a byte.
    if (body.length > CHAP_MAX_BINARY_LENGTH * 2) throw new ChapValueError(`hex value of ${body.length} digits, over ${CHAP_MAX_BINARY_LENGTH} bytes`);
    if (!/^[0-9a-fA-F]+$/.test(body)) throw new ChapValueError('hex value with a character other than 0-9, a-f');
    if (body.length % 2 !== 0) throw new ChapValueError(`hex value of ${body.length} digits, an odd number`);
    return new Uint8Array(Buffer.from(body, 'hex'));
  }
  if (prefix === '0b') {
    if (body.length > Math.ceil(CHAP_MAX_BINARY_LENGTH / 3) * 4) throw new ChapValueError(`base64 value of ${body.length} characters, over ${CHAP_MAX_BINARY_LENGTH} bytes`);
    if (body.length === 0 || body.length % 4 !== 0 || !/^[A-Za-z0-9+/]+={0,2}$/.test(body)) throw new ChapValueError('base64 value not in RFC 4648 form');
    const bytes = Buffer.from(body, 'base64');
    // Node's decoder skips what it does not understand; a round trip catches stray bits in the last character.
    if (bytes.toString('base64') !== body) throw new ChapValueError('base64 value not in canonical RFC 4648 form');
    return new Uint8Array(bytes);
  }
  throw new ChapValueError('binary value without a 0x (hex) or 0b (base64) prefix');
}

/** Encodes bytes as a hex-constant "0x..." (RFC 7143 section 6.1), the form every initiator reads. */
export function encodeChapBinary(bytes: Uint8Array): string {
  return '0x' + Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
}

/** Where a ChapExchange is: waiting for CHAP_A, waiting for the response to our challenge, authenticated, failed. */
export type ChapState = 'algorithm' | 'response' | 'authenticated' | 'failed';

/**
 * What to do after one login request's CHAP keys: send `keys` and stay in the Security stage (T=0); send `keys`, the
 * initiator is authenticated (the login may transit); or fail the login. `cause` picks the Login status: 'authentication'
 * is 0x0201 Authentication failure, 'initiator' 0x0200 Initiator error (a value that breaks the syntax).
 */
export type ChapResult =
  | { kind: 'continue'; keys: [string, string][] }
  | { kind: 'authenticated'; keys: [string, string][] }
  | { kind: 'failed'; cause: 'authentication' | 'initiator'; reason: string };

/**
 * The target's side of one CHAP exchange (RFC 7143 section 12.1.3) on one connection. Feed it the CHAP_* keys of each
 * Login Request of the Security stage once AuthMethod=CHAP is agreed; it answers with the keys to send. `random` gives
 * the identifier and the challenge (default node:crypto randomBytes; tests inject their own).
 */
export class ChapExchange {
  private stateValue: ChapState = 'algorithm';
  private identifier = 0;
  private challenge: Uint8Array = new Uint8Array(0);

  constructor(private readonly config: ChapConfig, private readonly random: (n: number) => Uint8Array = cryptoRandomBytes) {}

  /** Where the exchange is. */
  get state(): ChapState { return this.stateValue; }

  /** True once the initiator's response was verified (and the target's, for mutual CHAP, sent). */
  get authenticated(): boolean { return this.stateValue === 'authenticated'; }

  /** Handles the CHAP_* keys of one Login Request (keys of other names are not looked at). */
  receive(keys: ReadonlyMap<string, string>): ChapResult {
    switch (this.stateValue) {
      case 'algorithm': return this.algorithm(keys);
      case 'response': return this.response(keys);
      case 'authenticated': {
        const extra = chapKeys(keys);
        if (extra.length === 0) return { kind: 'authenticated', keys: [] };
        return this.fail('initiator', `${extra.join(', ')} after CHAP authentication finished`);
      }
      case 'failed': return { kind: 'failed', cause: 'authentication', reason: 'CHAP exchange already failed' };
    }
  }

  /** CHAP_A=<A1,A2,...> in; CHAP_A=5, CHAP_I, CHAP_C out. */
  private algorithm(keys: ReadonlyMap<string, string>): ChapResult {
    const unexpected = chapKeys(keys).filter((k) => k !== 'CHAP_A');
    if (unexpected.length > 0) return this.fail('initiator', `${unexpected.join(', ')} before the target's challenge`);
    const a = keys.get('CHAP_A');
    // Section 12.1.3: "For CHAP, the initiator MUST use: CHAP_A=<A1,A2,...>". Without it, no challenge: the initiator
    // is trying to leave the Security stage without authenticating.
    if (a === undefined) return this.fail('authentication', 'no CHAP_A after AuthMethod=CHAP');
    // The target "MUST reply with CHAP_A=<A> ... where A is one of A1,A2,... that were proposed by the initiator".
    if (!a.split(',').some((v) => parseNumber(v) === CHAP_MD5)) return this.fail('authentication', `CHAP_A=${clip(a)} offers no MD5 (5), the only algorithm supported`);
    const id = this.random(1);
    const challenge = this.random(CHAP_CHALLENGE_LENGTH);
    if (id.length !== 1 || challenge.length !== CHAP_CHALLENGE_LENGTH) throw new Error('ChapExchange: random returned the wrong number of bytes');
    this.identifier = id[0]!;
    this.challenge = Uint8Array.from(challenge);
    this.stateValue = 'response';
    return { kind: 'continue', keys: [['CHAP_A', String(CHAP_MD5)], ['CHAP_I', String(this.identifier)], ['CHAP_C', encodeChapBinary(this.challenge)]] };
  }

  /** CHAP_N, CHAP_R (and CHAP_I, CHAP_C for mutual CHAP) in; nothing, or the target's CHAP_N and CHAP_R, out. */
  private response(keys: ReadonlyMap<string, string>): ChapResult {
    const unexpected = chapKeys(keys).filter((k) => !['CHAP_N', 'CHAP_R', 'CHAP_I', 'CHAP_C'].includes(k));
    if (unexpected.length > 0) return this.fail('initiator', `${unexpected.join(', ')} where CHAP_N and CHAP_R were expected`);
    const name = keys.get('CHAP_N');
    const r = keys.get('CHAP_R');
    // Section 12.1.3: "The initiator MUST continue with: CHAP_N=<N> CHAP_R=<R>".
    if (name === undefined || r === undefined) return this.fail('authentication', `no ${name === undefined ? 'CHAP_N' : 'CHAP_R'} in answer to the challenge`);
    const ci = keys.get('CHAP_I');
    const cc = keys.get('CHAP_C');
    if ((ci === undefined) !== (cc === undefined)) return this.fail('initiator', `${ci === undefined ? 'CHAP_C' : 'CHAP_I'} without ${ci === undefined ? 'CHAP_I' : 'CHAP_C'}`);
    // Syntax first: every value must decode before anything is computed.
    let response: Uint8Array;
    let theirs: { identifier: number; challenge: Uint8Array } | null = null;
    try {
      response = decodeChapBinary(r);
      if (ci !== undefined && cc !== undefined) {
        const identifier = parseNumber(ci);
        // Section 12.1.3: "A,A1,A2, and I are numbers"; RFC 1994 section 4.1: the Identifier is one octet.
        if (identifier === null || identifier > 0xff) throw new ChapValueError(`CHAP_I=${clip(ci)} is not a number from 0 to 255`);
        theirs = { identifier, challenge: decodeChapBinary(cc) };
      }
    } catch (e) {
      return this.fail('initiator', `malformed CHAP value: ${(e as Error).message}`);
    }
    if (theirs) {
      // Section 12.1.3: "Originators MUST NOT reuse the CHAP challenge sent by the Responder for the other direction of a
      // bidirectional authentication. Responders MUST check for this condition and close the iSCSI TCP connection".
      if (equalBytes(theirs.challenge, this.challenge)) return this.fail('authentication', 'the initiator sent back our own CHAP challenge (reflection)');
      if (theirs.challenge.length < CHAP_MIN_CHALLENGE_LENGTH) {
        return this.fail('authentication', `initiator challenge of ${theirs.challenge.length} bytes, under the ${CHAP_MIN_CHALLENGE_LENGTH} we answer`);
      }
    }
    const expected = chapResponse(this.identifier, this.config.secret, this.challenge);
    // Compare in constant time: the response length is public (MD5 gives 16 bytes), its bytes are not.
    const responseOk = response.length === expected.length && timingSafeEqual(response, expected);
    const nameOk = name === this.config.user;
    if (!responseOk || !nameOk) {
      const why = !nameOk ? `CHAP_N=${clip(name)} is not the configured user` : response.length !== expected.length
        ? `CHAP_R of ${response.length} bytes, MD5 gives ${expected.length}` : 'CHAP_R does not match the secret';
      return this.fail('authentication', why);
    }
    // Section 12.1.3: "If the CHAP response received by one end of an iSCSI connection is the same as the CHAP response
    // that the receiving endpoint would have generated for the same CHAP challenge, the response MUST be treated as an
    // authentication failure" (one secret used both ways; validateChapConfig refuses such a configuration already).
    if (this.config.mutual && timingSafeEqual(response, chapResponse(this.identifier, this.config.mutual.secret, this.challenge))) {
      return this.fail('authentication', 'CHAP_R is the response the target itself would give (same secret both ways)');
    }
    if (!theirs) {
      this.stateValue = 'authenticated';
      return { kind: 'authenticated', keys: [] };
    }
    // Section 12.1.3: "if the initiator sent a challenge (CHAP_I and CHAP_C), the target MUST reply with CHAP_N=<N> CHAP_R=<R>".
    const mutual = this.config.mutual;
    if (!mutual) return this.fail('authentication', 'the initiator asks the target to authenticate itself (mutual CHAP), and no mutual CHAP is configured');
    this.stateValue = 'authenticated';
    return { kind: 'authenticated', keys: [['CHAP_N', mutual.user], ['CHAP_R', encodeChapBinary(chapResponse(theirs.identifier, mutual.secret, theirs.challenge))]] };
  }

  private fail(cause: 'authentication' | 'initiator', reason: string): ChapResult {
    this.stateValue = 'failed';
    return { kind: 'failed', cause, reason };
  }
}

/** The CHAP_* keys among `keys`, in order. */
function chapKeys(keys: ReadonlyMap<string, string>): string[] {
  return [...keys.keys()].filter((k) => k.startsWith('CHAP_'));
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

/** A value for a log line: at most 64 characters. */
function clip(v: string): string {
  return JSON.stringify(v.length > 64 ? `${v.slice(0, 64)}...` : v);
}
