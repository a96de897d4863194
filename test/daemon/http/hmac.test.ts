// daemon/http/hmac.js (the page's HMAC-SHA256, for browsers without crypto.subtle on plain HTTP) against node:crypto.
import assert from 'node:assert/strict';
import { createHash, createHmac, randomBytes } from 'node:crypto';
import path from 'node:path';
import { test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { actionMac, actionMessage, macMatches } from '../../../daemon/http/admin-auth.js';
import { repoRoot } from '../../harness/serve.js';

interface PageHmac { sha256(data: Uint8Array): Uint8Array; hmacSha256Hex(key: string, message: string): string }
const page = (await import(pathToFileURL(path.join(repoRoot, 'daemon', 'http', 'hmac.js')).href)) as PageHmac;

test('sha256 matches node:crypto at every length around the block and length-field boundaries', () => {
  for (let n = 0; n <= 200; n++) {
    const data = randomBytes(n);
    assert.equal(Buffer.from(page.sha256(data)).toString('hex'), createHash('sha256').update(data).digest('hex'), `length ${n}`);
  }
  assert.equal(Buffer.from(page.sha256(new TextEncoder().encode('abc'))).toString('hex'), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
});

test('hmacSha256Hex matches node:crypto for short, block-sized, long and non-ASCII keys (RFC 4231 case 2 included)', () => {
  assert.equal(page.hmacSha256Hex('Jefe', 'what do ya want for nothing?'), '5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843');
  for (const key of ['k', 'x'.repeat(64), 'y'.repeat(65), 'z'.repeat(200), 'sécret-ключ-秘密', randomBytes(40).toString('base64url')]) {
    const msg = actionMessage('r0', 'alpha', randomBytes(24).toString('base64url'), 7, 'connect', 'beta');
    const mac = page.hmacSha256Hex(key, msg);
    assert.equal(mac, createHmac('sha256', key).update(msg).digest('hex'), key);
    assert.equal(mac, actionMac(key, msg));
    assert.equal(macMatches(key, msg, mac), true);
  }
});

test('macMatches refuses another secret, another action, another nonce and malformed MACs', () => {
  const msg = actionMessage('r0', 'alpha', 'nonce-1', 1, 'primary', undefined);
  const mac = actionMac('the-secret', msg);
  assert.equal(macMatches('the-secret', msg, mac), true);
  assert.equal(macMatches('another-secret', msg, mac), false);
  assert.equal(macMatches('the-secret', actionMessage('r0', 'alpha', 'nonce-1', 1, 'secondary', undefined), mac), false);
  assert.equal(macMatches('the-secret', actionMessage('r0', 'alpha', 'nonce-2', 1, 'primary', undefined), mac), false);
  assert.equal(macMatches('the-secret', actionMessage('r0', 'beta', 'nonce-1', 1, 'primary', undefined), mac), false);
  for (const bad of [undefined, 42, '', mac.slice(2), mac.toUpperCase(), `${mac}00`, 'g'.repeat(64)]) assert.equal(macMatches('the-secret', msg, bad), false, String(bad));
});
