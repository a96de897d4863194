// The rule a resource file's shared secret must meet (see the README's "secret" paragraph).
import { quote } from './messages.js';

/** The least estimated strength of a secret, in bits (see secretProblem). */
export const MIN_SECRET_BITS = 128;

/**
 * Why `secret` is too weak to authenticate nodes, or null. The handshake proves the secret with an
 * HMAC over nonces both sides see, so anyone who records one handshake can test guesses offline, as
 * fast as they can compute HMACs: the secret must not be guessable at all. The rule, an estimate of the
 * most a string of its kind can carry (it cannot tell a random string from a chosen one):
 * bits = length x log2(alphabet), where the alphabet is 16 when every character is a hex digit, and
 * otherwise the sum over the kinds of characters used (a-z 26, A-Z 26, 0-9 10, anything else 33); it
 * needs MIN_SECRET_BITS (128), and no character may make up more than a third of the secret. So: 32
 * hex digits, or 22 to 28 characters mixing letters, digits and symbols; `twindisk gen-secret` prints
 * 32 random bytes in base64url (256 bits).
 */
export function secretProblem(secret: string): string | null {
  const chars = [...secret];
  let alphabet: number;
  if (/^[0-9a-fA-F]+$/.test(secret)) alphabet = 16;
  else {
    alphabet = 0;
    if (/[a-z]/.test(secret)) alphabet += 26;
    if (/[A-Z]/.test(secret)) alphabet += 26;
    if (/[0-9]/.test(secret)) alphabet += 10;
    if (/[^a-zA-Z0-9]/.test(secret)) alphabet += 33;
  }
  const bits = Math.floor(chars.length * Math.log2(alphabet));
  const how = 'make one with `twindisk gen-secret` (32 random bytes; or `openssl rand -base64 32`)';
  if (bits < MIN_SECRET_BITS) {
    return `too weak: ${chars.length} characters of ${alphabet === 16 ? 'hex digits' : `an alphabet of ${alphabet}`} carry at most ${bits} bits,`
      + ` and a secret needs ${MIN_SECRET_BITS} (anyone who records a handshake can test guesses offline): ${how}`;
  }
  const counts = new Map<string, number>();
  for (const c of chars) counts.set(c, (counts.get(c) ?? 0) + 1);
  const [most, n] = [...counts].reduce((a, b) => (b[1] > a[1] ? b : a));
  if (n * 3 > chars.length) return `too weak: ${quote(most)} makes up ${n} of its ${chars.length} characters: ${how}`;
  return null;
}
