// Tests of the WebSocket transport: real WsTransport instances and raw ws clients on 127.0.0.1.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test, type TestContext } from 'node:test';
import WebSocket from 'ws';
import { Logger, setLevel, setSink, type Level, type Sink } from '../../engine/log.js';
import { AckKind, ErrorCode, FrameType, MAX_FRAME, MAX_PAYLOAD, WIRE_VERSION, type Frame } from '../../engine/replication/frames.js';
import type { LinkHandler, PeerLink } from '../../engine/replication/link.js';
import { authMac, decodeFrame, encodeFrame, verifyAuth } from '../../engine/replication/wire.js';
import { WsTransport, type TransportOptions, type TransportPeer } from '../../transport/ws-link.js';
import { freePort } from '../harness/cluster.js';

// ---- log collection ----

interface Line { level: Level; component: string; msg: string }
const lines: Line[] = [];
let oldSink: Sink;
before(() => {
  oldSink = setSink((level, component, msg) => { lines.push({ level, component, msg }); });
  setLevel('debug');
});
after(() => {
  // DUMP_LOGS=1 prints every collected line, to see what happened in a failing test.
  if (process.env.DUMP_LOGS) for (const l of lines) console.error(l.level, l.component, l.msg);
  setSink(oldSink);
  setLevel('info');
});

function logged(component: string, level: Level, re: RegExp): Line[] {
  return lines.filter((l) => l.component === component && l.level === level && re.test(l.msg));
}

// ---- bounded waits ----

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `cond` until it holds; fails the test after `ms` with what it waited for. */
async function waitFor(what: string, cond: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(5);
  }
}

// ---- nodes ----

class Recorder implements LinkHandler {
  readonly ups: PeerLink[] = [];
  readonly downs: { link: PeerLink; reason: string }[] = [];
  readonly frames: { link: PeerLink; frame: Frame }[] = [];
  /** Answers DATA with ACK (Written), like a Secondary would. */
  ackData = false;
  linkUp(link: PeerLink): void { this.ups.push(link); }
  linkDown(link: PeerLink, reason: string): void { this.downs.push({ link, reason }); }
  frame(link: PeerLink, frame: Frame): void {
    this.frames.push({ link, frame });
    if (this.ackData && frame.type === FrameType.Data) link.send({ type: FrameType.Ack, seq: frame.seq, kind: AckKind.Written, status: 0 });
  }
  downsOf(link: PeerLink): number { return this.downs.filter((d) => d.link === link).length; }
}

const peer = (id: number, name: string, port: number): TransportPeer => ({ id, name, host: '127.0.0.1', port });

interface TestNode { tr: WsTransport; h: Recorder; log: string }

/** Starts a transport whose logs go to component `name`; it is closed when the test ends. */
async function node(t: TestContext, id: number, name: string, port: number, peers: TransportPeer[], more: Partial<TransportOptions> = {}): Promise<TestNode> {
  const h = new Recorder();
  const tr = new WsTransport({
    resource: 'r0', secret: 'secret-1', myId: id, myName: name, listen: { host: '127.0.0.1', port }, peers, handler: h,
    log: new Logger(name), backoffMs: { min: 10, max: 50 }, pingMs: 500, handshakeMs: 2000, ...more,
  });
  t.after(() => tr.close());
  await tr.start();
  return { tr, h, log: name };
}

/** Two nodes of resource r0, a (id 0, dials) and b (id 1, accepts). */
async function pair(t: TestContext, moreA: Partial<TransportOptions> = {}, moreB: Partial<TransportOptions> = {}) {
  const [pa, pb] = [await freePort(), await freePort()];
  const a = await node(t, 0, `a${pa}`, pa, [peer(1, 'b', pb)], moreA);
  const b = await node(t, 1, `b${pb}`, pb, [peer(0, 'a', pa)], moreB);
  return { a, b, pa, pb };
}

/** A ws client speaking the protocol by hand, to play a misbehaving peer. */
class RawPeer {
  readonly ws: WebSocket;
  readonly frames: Frame[] = [];
  closed = false;
  private readonly nonce = randomBytes(32);
  constructor(port: number) {
    this.ws = new WebSocket(`ws://127.0.0.1:${port}/`, { perMessageDeflate: false });
    this.ws.on('message', (d) => this.frames.push(decodeFrame(d as Buffer)));
    this.ws.on('error', () => {});
    this.ws.on('close', () => { this.closed = true; });
  }
  async open(): Promise<void> {
    await waitFor('the raw client to connect', () => this.ws.readyState === WebSocket.OPEN);
  }
  send(f: Frame | Uint8Array | string): void {
    this.ws.send(typeof f === 'string' || f instanceof Uint8Array ? f : encodeFrame(f));
  }
  hello(nodeId: number, resource = 'r0'): void {
    this.send({ type: FrameType.Hello, version: WIRE_VERSION, nodeId, resource, nonce: this.nonce });
  }
  /** Runs HELLO and AUTH as node `nodeId` and checks the transport's AUTH. */
  async handshake(nodeId: number, secret = 'secret-1', resource = 'r0'): Promise<void> {
    await this.open();
    this.hello(nodeId, resource);
    await waitFor('the HELLO of the transport', () => this.frames.length >= 1);
    const h = this.frames[0]!;
    assert.equal(h.type, FrameType.Hello);
    if (h.type !== FrameType.Hello) return;
    this.send({ type: FrameType.Auth, mac: authMac(secret, h.nonce, nodeId, resource) });
    await waitFor('the AUTH of the transport', () => this.frames.length >= 2);
    const a = this.frames[1]!;
    assert.ok(a.type === FrameType.Auth && verifyAuth(secret, this.nonce, h.nodeId, resource, a.mac), 'the transport proved the secret');
  }
  errorFrame(): Frame | undefined {
    return this.frames.find((f) => f.type === FrameType.Error);
  }
  /** The code of the ERROR frame the transport sent, if any. */
  errorCode(): number | undefined {
    const e = this.errorFrame();
    return e?.type === FrameType.Error ? e.code : undefined;
  }
  async close(): Promise<void> {
    this.ws.terminate();
    await waitFor('the raw client to close', () => this.closed);
  }
}

function rawPeer(t: TestContext, port: number): RawPeer {
  const r = new RawPeer(port);
  t.after(() => r.close());
  return r;
}

// ---- tests ----

test('two nodes link up both ways and exchange DATA and ACK; PING/PONG keep the link up and stay inside the transport', async (t) => {
  const { a, b } = await pair(t, { pingMs: 200 }, { pingMs: 200 });
  b.h.ackData = true;
  await waitFor('linkUp on both nodes', () => a.h.ups.length === 1 && b.h.ups.length === 1);
  const la = a.h.ups[0]!;
  const lb = b.h.ups[0]!;
  assert.equal(la.peerId, 1);
  assert.equal(lb.peerId, 0);
  assert.ok(logged(a.log, 'info', /^connected to peer 1 \(b\) at 127\.0\.0\.1:\d+$/).length === 1);
  assert.ok(logged(b.log, 'info', /^accepted peer 0 \(a\) from 127\.0\.0\.1:\d+$/).length === 1);

  const big = randomBytes(MAX_PAYLOAD);
  la.send({ type: FrameType.Data, seq: 1, offset: 4096, flags: 0, data: big });
  la.send({ type: FrameType.Data, seq: 2, offset: 0, flags: 1, data: Buffer.from('hello') });
  assert.equal(typeof la.buffered, 'number');
  await waitFor('two ACKs on a', () => a.h.frames.length === 2);
  assert.deepEqual(a.h.frames.map((f) => f.frame), [
    { type: FrameType.Ack, seq: 1, kind: AckKind.Written, status: 0 },
    { type: FrameType.Ack, seq: 2, kind: AckKind.Written, status: 0 },
  ]);
  const data = b.h.frames.map((f) => f.frame);
  assert.ok(data[0]?.type === FrameType.Data && Buffer.from(data[0].data).equals(big) && data[0].offset === 4096);
  assert.ok(data[1]?.type === FrameType.Data && Buffer.from(data[1].data).toString() === 'hello' && data[1].flags === 1);
  assert.ok(b.h.frames.every((f) => f.link === lb));
  lb.send({ type: FrameType.Flush, seq: 9 });
  await waitFor('FLUSH on a', () => a.h.frames.length === 3);

  // Quiet for 5 PING intervals: PONGs keep the link up and are not passed up.
  await sleep(1000);
  assert.equal(a.h.downs.length + b.h.downs.length, 0);
  assert.equal(a.h.frames.length, 3);
  assert.equal(b.h.frames.length, 2);

  await a.tr.close();
  await waitFor('linkDown on both nodes', () => a.h.downs.length === 1 && b.h.downs.length === 1);
  assert.equal(a.h.downs[0]!.reason, 'shutdown');
  assert.match(b.h.downs[0]!.reason, /closed by the peer: shutdown: node 0 is shutting down/);
  la.send({ type: FrameType.Ping, seq: 1 }); // a no-op after close
  la.close(ErrorCode.Shutdown, 'again'); // so is closing twice
  assert.equal(a.h.downs.length, 1);
});

test('a wrong secret is refused on both sides with a warning, and no link comes up', async (t) => {
  const { a, b, pb } = await pair(t, { secret: 'secret-a' }, { secret: 'secret-b' });
  await waitFor('warnings on both nodes', () =>
    logged(a.log, 'warn', new RegExp(`^refused peer 1 \\(b\\) at 127\\.0\\.0\\.1:${pb}: authentication failed \\(wrong secret\\?\\)$`)).length > 0 &&
    logged(b.log, 'warn', /^refused a peer from 127\.0\.0\.1:\d+: authentication failed \(wrong secret\?\)$/).length > 0);
  // a keeps retrying; repeats of the same problem are logged at debug, not as new warnings.
  await waitFor('a second attempt', () => logged(b.log, 'debug', /authentication failed/).length + logged(b.log, 'warn', /authentication failed/).length >= 2);
  assert.equal(logged(a.log, 'warn', /authentication failed/).length, 1);
  assert.equal(a.h.ups.length + b.h.ups.length, 0);
});

test('a wrong resource name is refused on both sides', async (t) => {
  const { a, b } = await pair(t, { resource: 'r0' }, { resource: 'r1' });
  await waitFor('warnings on both nodes', () =>
    logged(a.log, 'warn', /^refused peer 1 \(b\) at 127\.0\.0\.1:\d+: wrong resource "r1", this node serves "r0"$/).length > 0 &&
    logged(b.log, 'warn', /^refused a peer from 127\.0\.0\.1:\d+: wrong resource "r0", this node serves "r1"$/).length > 0);
  assert.equal(a.h.ups.length + b.h.ups.length, 0);
});

test('an unknown node id, a higher id that dials and an impostor are refused', async (t) => {
  const [pb, pc] = [await freePort(), await freePort()];
  const b = await node(t, 3, `b${pb}`, pb, [peer(0, 'a', 1), peer(5, 'e', 1)]);
  // c (id 2) believes b is its peer; b does not know c.
  const c = await node(t, 2, `c${pc}`, pc, [peer(3, 'b', pb)]);
  await waitFor('b refuses c, c sees the refusal', () =>
    logged(b.log, 'warn', /^refused a peer from 127\.0\.0\.1:\d+: unknown node 2: not a peer of resource "r0"$/).length > 0 &&
    logged(c.log, 'warn', /^peer 3 \(b\) at 127\.0\.0\.1:\d+ refused the connection: unknown node: unknown node 2/).length > 0);
  // Node 5 has the higher id: b dials it, so b refuses it as a caller.
  const high = rawPeer(t, pb);
  await high.open();
  high.hello(5);
  await waitFor('b refuses node 5', () => high.closed);
  assert.equal(high.errorCode(), ErrorCode.UnknownNode);
  assert.ok(logged(b.log, 'warn', /node 5 has the higher id: node 3 dials it/).length > 0);
  // A caller that claims to be node 0 without the secret.
  const impostor = rawPeer(t, pb);
  await impostor.open();
  impostor.hello(0);
  await waitFor('b\'s HELLO', () => impostor.frames.length >= 1);
  impostor.send({ type: FrameType.Auth, mac: randomBytes(32) });
  await waitFor('b refuses the impostor', () => impostor.closed);
  assert.deepEqual(impostor.errorFrame(), { type: FrameType.Error, code: ErrorCode.AuthFailed, message: 'authentication failed (wrong secret?)' });
  // Another protocol version.
  const old = rawPeer(t, pb);
  await old.open();
  old.send({ type: FrameType.Hello, version: WIRE_VERSION + 1, nodeId: 0, resource: 'r0', nonce: randomBytes(32) });
  await waitFor('b refuses the other version', () => old.closed);
  assert.equal(old.errorCode(), ErrorCode.BadVersion);
  assert.equal(b.h.ups.length + c.h.ups.length, 0);
});

test('garbage after the handshake closes the link with linkDown; the transport still accepts a good peer', async (t) => {
  const [pa, pb] = [await freePort(), await freePort()];
  const b = await node(t, 1, `b${pb}`, pb, [peer(0, 'a', pa)]);
  // What the raw peer does, the reason expected, and whether b can still say why in an ERROR frame.
  const abuses: [string, (r: RawPeer) => void, RegExp, boolean][] = [
    ['bytes', (r) => r.send(Uint8Array.of(0xff, 1, 2)), /protocol error: unknown frame type 255/, true],
    ['a truncated DATA', (r) => r.send(Uint8Array.of(FrameType.Data, 1, 2)), /protocol error: DATA frame truncated: 3 bytes, need 21/, true],
    ['text', (r) => r.send('hello'), /protocol error: a text message/, true],
    ['HELLO again', (r) => r.hello(0), /protocol error: HELLO after the handshake/, true],
    ['a message over MAX_FRAME', (r) => r.send(Buffer.alloc(MAX_FRAME + 1)), /protocol error: Max payload size exceeded/, false],
  ];
  for (const [i, [what, abuse, re, told]] of abuses.entries()) {
    const r = rawPeer(t, pb);
    await r.handshake(0);
    await waitFor(`linkUp ${i + 1}`, () => b.h.ups.length === i + 1);
    abuse(r);
    await waitFor(`linkDown after ${what}`, () => b.h.downs.length === i + 1);
    const link = b.h.ups[i]!;
    assert.equal(b.h.downsOf(link), 1);
    assert.match(b.h.downs[i]!.reason, re);
    assert.ok(logged(b.log, 'warn', new RegExp(`^closed the link to peer 0 \\(a\\) from 127\\.0\\.0\\.1:\\d+: ${re.source}`)).length > 0, `warning for ${what}`);
    await waitFor('the raw client to be closed', () => r.closed);
    if (told) assert.equal(r.errorCode(), ErrorCode.Protocol);
    link.send({ type: FrameType.Ping, seq: 1 }); // a no-op
  }
  assert.equal(b.h.frames.length, 0);
  const a = await node(t, 0, `a${pa}`, pa, [peer(1, 'b', pb)]);
  await waitFor('a good peer links up', () => a.h.ups.length === 1 && b.h.ups.length === abuses.length + 1);
  assert.equal(b.h.ups.at(-1)!.peerId, 0);
});

test('garbage before or instead of HELLO, an early AUTH and silence are refused', async (t) => {
  const pb = await freePort();
  const b = await node(t, 1, `b${pb}`, pb, [peer(0, 'a', 1)], { handshakeMs: 300 });
  const cases: [string, (r: RawPeer) => void, RegExp][] = [
    ['bytes', (r) => r.send(Buffer.from('GET / HTTP/1.1')), /protocol error: unknown frame type 71/],
    ['text', (r) => r.send('{"hello":1}'), /protocol error: a text message/],
    ['AUTH first', (r) => r.send({ type: FrameType.Auth, mac: randomBytes(32) }), /protocol error: expected HELLO, got AUTH/],
    ['PING first', (r) => r.send({ type: FrameType.Ping, seq: 1 }), /protocol error: expected HELLO, got PING/],
    ['silence', () => {}, /no handshake within 300 ms/],
  ];
  for (const [what, send, re] of cases) {
    const r = rawPeer(t, pb);
    await r.open();
    send(r);
    await waitFor(`b to close the connection after ${what}`, () => r.closed);
    assert.ok(logged(b.log, 'warn', new RegExp(`^refused a peer from 127\\.0\\.0\\.1:\\d+: ${re.source}`)).length > 0, `warning for ${what}`);
    assert.equal(r.errorCode(), ErrorCode.Protocol, `ERROR frame for ${what}`);
  }
  assert.equal(b.h.ups.length + b.h.downs.length, 0);
});

test('a second link from the same peer replaces the first', async (t) => {
  const pb = await freePort();
  const b = await node(t, 1, `b${pb}`, pb, [peer(0, 'a', 1)]);
  const first = rawPeer(t, pb);
  await first.handshake(0);
  await waitFor('the first link', () => b.h.ups.length === 1);
  const second = rawPeer(t, pb);
  await second.handshake(0);
  await waitFor('the second link', () => b.h.ups.length === 2);
  assert.equal(b.h.downs.length, 1);
  assert.equal(b.h.downs[0]!.link, b.h.ups[0]);
  assert.match(b.h.downs[0]!.reason, /replaced by a newer connection/);
  await waitFor('the first client to be closed', () => first.closed);
  assert.equal(first.errorCode(), ErrorCode.Disconnect);
  assert.equal(second.closed, false);
});

test('the link comes back when a node restarts on the same port', async (t) => {
  const { a, b, pa, pb } = await pair(t);
  await waitFor('the first link', () => a.h.ups.length === 1 && b.h.ups.length === 1);
  const infoBefore = logged(a.log, 'info', /^cannot connect to peer 1 \(b\)/).length; // a may have dialled before b listened
  await b.tr.close();
  await waitFor('linkDown on a', () => a.h.downs.length === 1);
  // a re-dials while b is away: the first failure is logged at info, the rest at debug.
  await waitFor('failed re-dials', () => logged(a.log, 'debug', /^cannot connect to peer 1 \(b\) at .*; retrying$/).length >= 2);
  assert.equal(logged(a.log, 'info', /^cannot connect to peer 1 \(b\)/).length, infoBefore + 1);
  const b2 = await node(t, 1, `b2-${pb}`, pb, [peer(0, 'a', pa)]);
  await waitFor('the link to come back', () => a.h.ups.length === 2 && b2.h.ups.length === 1);
  assert.equal(a.h.ups[1]!.peerId, 1);
  b2.h.ackData = true;
  a.h.ups[1]!.send({ type: FrameType.Data, seq: 7, offset: 0, flags: 0, data: Buffer.alloc(512) });
  await waitFor('an ACK over the new link', () => a.h.frames.some((f) => f.frame.type === FrameType.Ack && f.frame.seq === 7));
});

test('disconnect() stops reconnecting until connect(), on the dialling and on the accepting side', async (t) => {
  const { a, b } = await pair(t);
  await waitFor('the link', () => a.h.ups.length === 1 && b.h.ups.length === 1);

  a.tr.disconnect(1);
  await waitFor('linkDown on both nodes', () => a.h.downs.length === 1 && b.h.downs.length === 1);
  assert.match(a.h.downs[0]!.reason, /disconnected by the administrator/);
  assert.match(b.h.downs[0]!.reason, /disconnect: node 0 disconnected from node 1/);
  await sleep(300); // many backoff periods (10..50 ms): a must not dial
  assert.equal(a.h.ups.length, 1);
  a.tr.connect(1);
  await waitFor('the link after connect()', () => a.h.ups.length === 2 && b.h.ups.length === 2);

  b.tr.disconnect(0);
  await waitFor('linkDown on both nodes', () => a.h.downs.length === 2 && b.h.downs.length === 2);
  // a keeps dialling and b keeps refusing it.
  const refusals = () => logged(b.log, 'debug', /is disconnected from node 0/).length;
  await waitFor('b to refuse a twice', () => refusals() >= 2);
  assert.equal(a.h.ups.length, 2);
  b.tr.connect(0);
  await waitFor('the link after connect() on b', () => a.h.ups.length === 3 && b.h.ups.length === 3);
  assert.throws(() => a.tr.disconnect(7), /node 7 is not a peer/);
});

test('a peer that stops answering PINGs is closed as timed out', async (t) => {
  const pb = await freePort();
  const b = await node(t, 1, `b${pb}`, pb, [peer(0, 'a', 1)], { pingMs: 50 });
  const r = rawPeer(t, pb);
  await r.handshake(0); // then says nothing, and answers no PING
  await waitFor('linkUp', () => b.h.ups.length === 1);
  await waitFor('linkDown', () => b.h.downs.length === 1);
  assert.match(b.h.downs[0]!.reason, /^timed out: no frame for 150 ms$/);
  assert.ok(logged(b.log, 'warn', /^closed the link to peer 0 \(a\) from 127\.0\.0\.1:\d+: timed out/).length === 1);
  assert.ok(r.frames.some((f) => f.type === FrameType.Ping), 'b sent PINGs');
  await waitFor('the socket to be closed', () => r.closed);
});

test('start() says clearly when the port is taken', async (t) => {
  const holder = net.createServer();
  await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise((resolve) => holder.close(resolve)));
  const port = (holder.address() as net.AddressInfo).port;
  const tr = new WsTransport({
    resource: 'r0', secret: 's', myId: 0, myName: 'a', listen: { host: '127.0.0.1', port }, peers: [peer(1, 'b', 1)],
    handler: new Recorder(), log: new Logger('taken'),
  });
  await assert.rejects(tr.start(), { message: `cannot listen on 127.0.0.1:${port}: address in use; is another node running?` });
  await tr.close();
  assert.throws(() => new WsTransport({
    resource: 'r0', secret: 's', myId: 0, myName: 'a', listen: { host: '127.0.0.1', port }, peers: [peer(0, 'self', 1)],
    handler: new Recorder(), log: new Logger('bad'),
  }), /this node's own id 0/);
});

/** A CA and certificates for 127.0.0.1, made with the openssl command; null when it is missing. */
function makeCerts(dir: string, ca: string, names: string[]): boolean {
  const run = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  try {
    run('version');
  } catch {
    return false;
  }
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  run('req', '-x509', ...ec, '-keyout', `${ca}.key`, '-out', `${ca}.pem`, '-days', '1', '-subj', `/CN=${ca}`);
  writeFileSync(join(dir, 'san.ext'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\n');
  for (const n of names) {
    run('req', ...ec, '-keyout', `${n}.key`, '-out', `${n}.csr`, '-subj', `/CN=${n}`);
    run('x509', '-req', '-in', `${n}.csr`, '-CA', `${ca}.pem`, '-CAkey', `${ca}.key`, '-CAcreateserial', '-out', `${n}.pem`, '-days', '1', '-extfile', 'san.ext');
  }
  return true;
}

test('TLS: peers with certificates from the CA link up; a certificate from another CA is refused', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'twindisk-tls-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  if (!makeCerts(dir, 'ca', ['a', 'b']) || !makeCerts(dir, 'other', ['x'])) {
    throw new Error('the openssl command is missing, so the TLS test cannot make its certificates: apt-get install openssl (npm test\'s setup installs it)');
  }
  const tlsOf = (n: string, ca = 'ca') => ({ cert: join(dir, `${n}.pem`), key: join(dir, `${n}.key`), ca: join(dir, `${ca}.pem`) });
  const { a, b, pa, pb } = await pair(t, { tls: tlsOf('a') }, { tls: tlsOf('b') });
  await waitFor('linkUp over TLS', () => a.h.ups.length === 1 && b.h.ups.length === 1);
  b.h.ackData = true;
  a.h.ups[0]!.send({ type: FrameType.Data, seq: 1, offset: 0, flags: 0, data: Buffer.alloc(4096, 1) });
  await waitFor('an ACK over TLS', () => a.h.frames.length === 1);
  assert.ok(logged(a.log, 'info', /^listening for peers on wss:\/\//).length === 1);
  await a.tr.close();
  // The same node id and secret, but a certificate the CA did not sign.
  const x = await node(t, 0, `x${pa}`, pa, [peer(1, 'b', pb)], { tls: tlsOf('x', 'ca') });
  await waitFor('b to refuse x', () =>
    logged(b.log, 'warn', /^refused a peer from 127\.0\.0\.1:\d+: TLS client certificate not accepted \(UNABLE_TO_VERIFY_LEAF_SIGNATURE\)$/).length > 0);
  await waitFor('x to fail to connect', () => logged(x.log, 'info', /^cannot connect to peer 1 \(b\) at 127\.0\.0\.1:\d+: Unexpected server response: 403; retrying$/).length > 0);
  // And a plain ws:// client gets no further than the TLS layer.
  const plain = rawPeer(t, pb);
  await waitFor('the plain client to fail', () => plain.closed);
  assert.equal(plain.frames.length, 0);
  await waitFor('b to log the failed TLS handshake', () => logged(b.log, 'warn', /^refused a peer from 127\.0\.0\.1:\d+: TLS handshake failed: /).length > 0);
  assert.equal(x.h.ups.length, 0);
  assert.equal(b.h.ups.length, 1);
});
