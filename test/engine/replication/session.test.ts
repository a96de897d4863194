// Tests of the handshake state machine alone: the order of the frames, what a caller that has not proven the
// secret gets back (nothing keyed with it), wrong secrets, replayed and reflected AUTHs, versions, and a fuzz run.
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { test } from 'node:test';
import { ErrorCode, FrameType, WIRE_VERSION, type Frame } from '../../../engine/replication/frames.js';
import { AUTH_FAILED, HandshakeSession, type Refusal, type SessionOptions, type Step } from '../../../engine/replication/session.js';
import { authMac, encodeFrame } from '../../../engine/replication/wire.js';

/** Bytes i, i+1, ... (mod 256): distinct, reproducible nonces. */
function nonce(start: number): Uint8Array {
  return Uint8Array.from({ length: 32 }, (_, i) => (start + i) & 0xff);
}

const base = { secret: 'secret-1', resource: 'r0' };
const dialler = (o: Partial<SessionOptions> = {}) => new HandshakeSession({ ...base, role: 'dialler', myId: 0, peerId: 1, nonce: nonce(10), ...o });
const acceptor = (o: Partial<SessionOptions> = {}) => new HandshakeSession({ ...base, role: 'acceptor', myId: 1, nonce: nonce(100), ...o });

/** The one frame a step sends (and that it continues). */
function only(step: Step): Frame {
  assert.equal(step.send.length, 1, `one frame, got ${step.send.length}`);
  assert.deepEqual(step.outcome, { kind: 'continue' });
  return step.send[0]!;
}

function refusedWith(step: Step, code: ErrorCode, why: RegExp | string): void {
  assert.deepEqual(step.send, [], 'nothing is sent with a refusal (the transport sends the ERROR)');
  assert.equal(step.outcome.kind, 'refuse');
  const r = (step.outcome as { refusal: Refusal }).refusal;
  assert.equal(r.code, code);
  if (typeof why === 'string') assert.equal(r.why, why);
  else assert.match(r.why, why);
}

const hello = (nodeId: number, n: Uint8Array, o: { version?: number; resource?: string } = {}): Frame =>
  ({ type: FrameType.Hello, version: o.version ?? WIRE_VERSION, nodeId, resource: o.resource ?? 'r0', nonce: n });

/** Every HMAC-SHA256 under `secret` an observer could test a guess against: the v1 and v2 MACs over these nonces and ids. */
function keyedWith(secret: string, nonces: Uint8Array[], ids: number[], resource = 'r0'): Buffer[] {
  const out: Buffer[] = [];
  for (const a of nonces) {
    for (const id of ids) out.push(createHmac('sha256', secret).update('twindisk-auth-v1').update(a).update(Uint8Array.of(id)).update(resource).digest());
    for (const b of nonces) {
      for (const d of ids) {
        for (const c of ids) {
          const t = { resource, diallerId: d, acceptorId: c, diallerNonce: a, acceptorNonce: b };
          out.push(authMac(secret, 'dialler', t), authMac(secret, 'acceptor', t));
        }
      }
    }
  }
  return out;
}

/** Whether any of `macs` occurs anywhere in the encoded frames. */
function containsAny(frames: Frame[], macs: Buffer[]): boolean {
  const bytes = Buffer.concat(frames.map((f) => encodeFrame(f)));
  return macs.some((m) => bytes.includes(m));
}

test('the normal handshake: dialler HELLO, acceptor HELLO (a nonce only), dialler AUTH, acceptor AUTH; both up', () => {
  const d = dialler();
  const a = acceptor();
  assert.equal(d.phase, 'new');
  assert.deepEqual(a.start(), { send: [], outcome: { kind: 'continue' } }, 'the acceptor speaks second');
  const h1 = only(d.start());
  assert.deepEqual(h1, hello(0, nonce(10)));
  assert.equal(a.progress(), 'no HELLO');
  const h2 = only(a.receive(h1));
  assert.deepEqual(h2, { type: FrameType.Hello, version: WIRE_VERSION, nodeId: 1, resource: 'r0', nonce: nonce(100) });
  assert.equal(a.peerId, 0);
  assert.equal(a.phase, 'auth');
  assert.equal(a.progress(), 'HELLO as node 0, then no AUTH');
  const auth1 = only(d.receive(h2));
  assert.equal(auth1.type, FrameType.Auth);
  const t = { resource: 'r0', diallerId: 0, acceptorId: 1, diallerNonce: nonce(10), acceptorNonce: nonce(100) };
  assert.ok(auth1.type === FrameType.Auth && Buffer.from(auth1.mac).equals(authMac('secret-1', 'dialler', t)));
  assert.equal(d.progress(), 'no AUTH from the peer');
  const up = a.receive(auth1);
  assert.deepEqual(up.outcome, { kind: 'up', peerId: 0 });
  assert.equal(up.send.length, 1);
  const auth2 = up.send[0]!;
  assert.ok(auth2.type === FrameType.Auth && Buffer.from(auth2.mac).equals(authMac('secret-1', 'acceptor', t)));
  assert.deepEqual(d.receive(auth2), { send: [], outcome: { kind: 'up', peerId: 1 } });
  assert.equal(d.phase, 'up');
  assert.equal(a.phase, 'up');
  assert.throws(() => a.receive({ type: FrameType.Ping, seq: 1 }), /the handshake is up/);
  assert.throws(() => d.start(), /started already/);
});

test('a stranger claiming a node id gets nothing keyed with the secret: a bare nonce, then a refusal', () => {
  for (const secret of ['a', 'abc', 'secret-1']) {
    const a = acceptor({ secret });
    a.start();
    const stranger = nonce(200);
    const sent: Frame[] = [];
    const s1 = a.receive(hello(0, stranger));
    sent.push(...s1.send);
    assert.deepEqual(sent, [hello(1, nonce(100))], 'a HELLO with the acceptor\'s fresh nonce, nothing else');
    const guess = a.receive({ type: FrameType.Auth, mac: new Uint8Array(32).fill(7) });
    sent.push(...guess.send);
    refusedWith(guess, ErrorCode.AuthFailed, AUTH_FAILED);
    assert.ok(!sent.some((f) => f.type === FrameType.Auth), 'no AUTH');
    assert.ok(!containsAny(sent, keyedWith(secret, [stranger, nonce(100)], [0, 1])), 'no MAC under the secret anywhere in the bytes');
    assert.equal(a.phase, 'failed');
  }
});

test('a wrong secret is refused by the acceptor before it proves anything; a peer\'s ERROR ends the dialler\'s side', () => {
  const d = dialler({ secret: 'secret-a' });
  const a = acceptor({ secret: 'secret-b' });
  a.start();
  const h2 = only(a.receive(only(d.start())));
  const auth = only(d.receive(h2));
  refusedWith(a.receive(auth), ErrorCode.AuthFailed, AUTH_FAILED);
  assert.deepEqual(d.receive({ type: FrameType.Error, code: ErrorCode.AuthFailed, message: AUTH_FAILED }),
    { send: [], outcome: { kind: 'refused', code: ErrorCode.AuthFailed, message: AUTH_FAILED } });
  assert.equal(d.phase, 'failed');
});

test('a replayed AUTH fails: each side\'s fresh nonce makes a MAC good for one handshake', () => {
  // An eavesdropper records a whole handshake...
  const d = dialler();
  const a1 = acceptor();
  a1.start();
  const h1 = only(d.start());
  const h2 = only(a1.receive(h1));
  const auth1 = only(d.receive(h2));
  const auth2 = a1.receive(auth1).send[0]!;
  // ...and replays the dialler's HELLO and AUTH to the acceptor, which picks a new nonce.
  const a2 = acceptor({ nonce: nonce(150) });
  a2.start();
  only(a2.receive(h1));
  refusedWith(a2.receive(auth1), ErrorCode.AuthFailed, AUTH_FAILED);
  // The acceptor's AUTH of the recorded handshake is no dialler proof either.
  const a3 = acceptor({ nonce: nonce(100) }); // even with the same acceptor nonce: wrong direction
  a3.start();
  only(a3.receive(h1));
  refusedWith(a3.receive(auth2), ErrorCode.AuthFailed, AUTH_FAILED);
  // Toward a dialler: a recorded acceptor AUTH does not verify against its next nonce.
  const d2 = dialler({ nonce: nonce(11) });
  d2.start();
  only(d2.receive(h2));
  refusedWith(d2.receive(auth2), ErrorCode.AuthFailed, AUTH_FAILED);
});

test('a reflected AUTH or HELLO fails: an impostor acceptor cannot hand the dialler its own proof back', () => {
  const d = dialler();
  const h1 = only(d.start());
  // The impostor answers with a HELLO of its own choosing (node 1), gets the dialler's AUTH and echoes it.
  const auth = only(d.receive(hello(1, nonce(42))));
  refusedWith(d.receive(auth), ErrorCode.AuthFailed, AUTH_FAILED);
  // Echoing the dialler's own HELLO: the wrong node id...
  const d2 = dialler();
  d2.start();
  refusedWith(d2.receive(h1), ErrorCode.UnknownNode, 'it says it is node 0, expected node 1');
  // ...and with the right id, the dialler's own nonce.
  const d3 = dialler();
  d3.start();
  refusedWith(d3.receive(hello(1, nonce(10))), ErrorCode.Protocol, /own nonce/);
  // An acceptor never accepts its own MAC direction either: an AUTH computed as an acceptor's is refused.
  const a = acceptor();
  a.start();
  only(a.receive(hello(0, nonce(10))));
  const t = { resource: 'r0', diallerId: 0, acceptorId: 1, diallerNonce: nonce(10), acceptorNonce: nonce(100) };
  refusedWith(a.receive({ type: FrameType.Auth, mac: authMac('secret-1', 'acceptor', t) }), ErrorCode.AuthFailed, AUTH_FAILED);
  // And with the ids swapped (node 1 claiming to dial node 0's transcript).
  const a2 = acceptor();
  a2.start();
  only(a2.receive(hello(0, nonce(10))));
  refusedWith(a2.receive({ type: FrameType.Auth, mac: authMac('secret-1', 'dialler', { ...t, diallerId: 1, acceptorId: 0 }) }), ErrorCode.AuthFailed, AUTH_FAILED);
});

test('HELLO checks: version (decoded or not), resource, node ids, dial direction and the node\'s policy', () => {
  const started = (s: HandshakeSession) => (s.start(), s);
  refusedWith(started(acceptor()).receive(hello(0, nonce(1), { version: 1 })), ErrorCode.BadVersion, `protocol version 1, this node speaks ${WIRE_VERSION}`);
  refusedWith(started(dialler()).receive(hello(1, nonce(1), { version: WIRE_VERSION + 1 })), ErrorCode.BadVersion, /^protocol version \d+, this node speaks/);
  // A HELLO of another version that does not even decode is still a version mismatch; other garbage is a protocol error.
  const other = Buffer.from(encodeFrame(hello(0, nonce(1), { version: 7 })).subarray(0, 10));
  refusedWith(started(acceptor()).malformed('HELLO frame truncated', other), ErrorCode.BadVersion, `protocol version 7, this node speaks ${WIRE_VERSION}`);
  const same = Buffer.from(encodeFrame(hello(0, nonce(1))).subarray(0, 10));
  refusedWith(started(acceptor()).malformed('HELLO frame truncated', same), ErrorCode.Protocol, 'HELLO frame truncated');
  refusedWith(started(acceptor()).malformed('a text message'), ErrorCode.Protocol, 'a text message');
  refusedWith(started(acceptor()).receive(hello(0, nonce(1), { resource: 'r1' })), ErrorCode.WrongResource, 'wrong resource "r1", this node serves "r0"');
  refusedWith(started(acceptor()).receive(hello(1, nonce(1))), ErrorCode.UnknownNode, 'node 1 is this node\'s own id');
  refusedWith(started(acceptor()).receive(hello(5, nonce(1))), ErrorCode.UnknownNode, 'node 5 has the higher id: node 1 dials it, not the other way round');
  refusedWith(started(dialler({ myId: 3, peerId: 1 })).receive(hello(1, nonce(1))), ErrorCode.UnknownNode, 'node 1 has the lower id: it dials node 3, not the other way round');
  const unknown = { code: ErrorCode.UnknownNode, why: 'unknown node 0' };
  const asked: [number, boolean][] = [];
  const s = started(acceptor({ admit: (id, proven) => (asked.push([id, proven]), unknown) }));
  const step = s.receive(hello(0, nonce(1)));
  assert.deepEqual(step, { send: [], outcome: { kind: 'refuse', refusal: unknown } });
  assert.deepEqual(asked, [[0, false]]);
  assert.equal(s.peerId, -1, 'a refused HELLO names no peer');
});

test('the node\'s policy is asked before and after the proof; an administrative refusal comes only after it, and before the acceptor\'s AUTH', () => {
  const declined = { code: ErrorCode.Disconnect, why: 'node 1 is disconnected from node 0', quiet: true };
  const asked: string[] = [];
  const policy = (who: string) => (id: number, proven: boolean) => (asked.push(`${who} ${id} ${proven}`), proven ? declined : null);
  // The acceptor: a stranger with a wrong proof hears about authentication, not about the disconnection.
  const a1 = acceptor({ admit: policy('a1') });
  a1.start();
  only(a1.receive(hello(0, nonce(10))));
  refusedWith(a1.receive({ type: FrameType.Auth, mac: new Uint8Array(32) }), ErrorCode.AuthFailed, AUTH_FAILED);
  // The real peer proves the secret, then is declined; the acceptor sends no AUTH.
  const d = dialler();
  const a2 = acceptor({ admit: policy('a2') });
  a2.start();
  const auth = only(d.receive(only(a2.receive(only(d.start())))));
  const step = a2.receive(auth);
  assert.deepEqual(step, { send: [], outcome: { kind: 'refuse', refusal: declined } });
  // The dialler asks too, once the acceptor proved itself.
  const d2 = dialler({ admit: policy('d2') });
  const a3 = acceptor();
  a3.start();
  const auth2 = only(d2.receive(only(a3.receive(only(d2.start())))));
  const back = a3.receive(auth2).send[0]!;
  assert.deepEqual(d2.receive(back), { send: [], outcome: { kind: 'refuse', refusal: declined } });
  assert.deepEqual(asked, ['a1 0 false', 'a2 0 false', 'a2 0 true', 'd2 1 false', 'd2 1 true']);
});

test('frames out of order are protocol errors; a peer\'s ERROR is passed on', () => {
  const a = acceptor();
  a.start();
  refusedWith(a.receive({ type: FrameType.Auth, mac: new Uint8Array(32) }), ErrorCode.Protocol, 'expected HELLO, got AUTH');
  const a2 = acceptor();
  a2.start();
  only(a2.receive(hello(0, nonce(1))));
  refusedWith(a2.receive(hello(0, nonce(1))), ErrorCode.Protocol, 'expected AUTH, got HELLO');
  const d = dialler();
  d.start();
  refusedWith(d.receive({ type: FrameType.Ping, seq: 1 }), ErrorCode.Protocol, 'expected HELLO, got PING');
  assert.throws(() => d.receive({ type: FrameType.Ping, seq: 1 }), /the handshake is failed/);
  const d2 = dialler();
  d2.start();
  assert.deepEqual(d2.receive({ type: FrameType.Error, code: ErrorCode.Shutdown, message: 'bye' }).outcome, { kind: 'refused', code: ErrorCode.Shutdown, message: 'bye' });
  assert.throws(() => new HandshakeSession({ ...base, role: 'dialler', myId: 0, nonce: nonce(1) }), /peer id/);
  assert.throws(() => new HandshakeSession({ ...base, role: 'acceptor', myId: 0, nonce: new Uint8Array(31) }), /32 bytes/);
});

test('fuzz: whatever a stranger sends, an acceptor sends only its bare HELLO and never comes up; a dialler never comes up without the secret', () => {
  let seed = 0x5e55;
  const rnd = (n: number) => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed % n;
  };
  const randomNonce = () => Uint8Array.from({ length: 32 }, () => rnd(256));
  const frame = (): Frame => {
    switch (rnd(6)) {
      case 0: case 1: return { type: FrameType.Hello, version: rnd(4) === 0 ? rnd(5) : WIRE_VERSION, nodeId: rnd(4), resource: rnd(5) === 0 ? 'r1' : 'r0', nonce: randomNonce() };
      case 2: case 3: return { type: FrameType.Auth, mac: randomNonce() };
      case 4: return { type: FrameType.Ping, seq: rnd(10) };
      default: return { type: FrameType.Error, code: rnd(12), message: 'x' };
    }
  };
  let ups = 0;
  let helloAnswers = 0;
  for (let i = 0; i < 3000; i++) {
    const acc = i % 2 === 0;
    const s = acc ? acceptor({ myId: 2, nonce: nonce(i) }) : dialler({ myId: 1, peerId: 2, nonce: nonce(i) });
    const sent = [...s.start().send];
    for (let k = rnd(4) + 1; k > 0 && (s.phase === 'hello' || s.phase === 'auth'); k--) {
      const step = rnd(8) === 0 ? s.malformed('garbage', Uint8Array.from({ length: rnd(6) }, () => rnd(256))) : s.receive(frame());
      sent.push(...step.send);
      if (step.outcome.kind === 'up') ups++;
    }
    if (acc) {
      assert.ok(sent.every((f) => f.type === FrameType.Hello && Buffer.from(f.nonce).equals(nonce(i)) && f.nodeId === 2), 'only the bare HELLO');
      helloAnswers += sent.length;
    } else {
      // The dialler's AUTH goes only to a HELLO that passed every check (and reveals one MAC: see session.ts).
      assert.ok(sent.filter((f) => f.type === FrameType.Auth).length <= 1);
    }
  }
  assert.equal(ups, 0);
  assert.ok(helloAnswers > 50, `the acceptor answered ${helloAnswers} HELLOs`);
});
