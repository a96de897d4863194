// Tests of the WebSocket transport: real WsTransport instances and raw ws clients on 127.0.0.1.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test, type TestContext } from 'node:test';
import WebSocket, { WebSocketServer } from 'ws';
import { Logger, setLevel, setSink, type Fields, type Level, type Sink } from '../../engine/log.js';
import { AckKind, ErrorCode, FrameType, MAX_FRAME, MAX_PAYLOAD, WIRE_VERSION, type Frame } from '../../engine/replication/frames.js';
import type { LinkHandler, PeerLink } from '../../engine/replication/link.js';
import { authMac, decodeFrame, encodeFrame, verifyAuth, type AuthTranscript } from '../../engine/replication/wire.js';
import { WsTransport, type TransportOptions, type TransportPeer } from '../../transport/ws-link.js';
import { freePort } from '../harness/cluster.js';

// ---- log collection ----

interface Line { level: Level; component: string; msg: string; fields: Fields }
const lines: Line[] = [];
let oldSink: Sink;
before(() => {
  oldSink = setSink((level, component, msg, fields) => { lines.push({ level, component, msg, fields }); });
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

/**
 * Starts a transport whose logs go to component `name`; it is closed when the test ends. Warnings about callers
 * are not rate-limited unless the test says so (every raw client comes from 127.0.0.1).
 */
async function node(t: TestContext, id: number, name: string, port: number, peers: TransportPeer[], more: Partial<TransportOptions> = {}): Promise<TestNode> {
  const h = new Recorder();
  const tr = new WsTransport({
    resource: 'r0', secret: 'secret-1', myId: id, myName: name, listen: { host: '127.0.0.1', port }, peers, handler: h,
    log: new Logger(name), backoffMs: { min: 10, max: 50 }, pingMs: 500, handshakeMs: 2000,
    refusalLog: { perWindow: 1000, windowMs: 60_000, overall: 1000 }, ...more,
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
  /** Every message received, as bytes. */
  readonly raw: Buffer[] = [];
  closed = false;
  readonly nonce: Buffer;
  constructor(port: number, nonce = randomBytes(32)) {
    this.nonce = nonce;
    this.ws = new WebSocket(`ws://127.0.0.1:${port}/`, { perMessageDeflate: false });
    this.ws.on('message', (d) => {
      this.raw.push(Buffer.from(d as Buffer));
      this.frames.push(decodeFrame(d as Buffer));
    });
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
  /** Sends HELLO as node `nodeId` and waits for the transport's HELLO; returns the transcript both AUTHs cover. */
  async helloExchange(nodeId: number, resource = 'r0'): Promise<AuthTranscript> {
    await this.open();
    this.hello(nodeId, resource);
    await waitFor('the HELLO of the transport', () => this.frames.length >= 1);
    const h = this.frames[0]!;
    assert.equal(h.type, FrameType.Hello);
    if (h.type !== FrameType.Hello) throw new Error('no HELLO');
    return { resource, diallerId: nodeId, acceptorId: h.nodeId, diallerNonce: this.nonce, acceptorNonce: h.nonce };
  }
  /** Runs the dialler's side of the handshake as node `nodeId` and checks the transport's AUTH. */
  async handshake(nodeId: number, secret = 'secret-1', resource = 'r0'): Promise<AuthTranscript> {
    const t = await this.helloExchange(nodeId, resource);
    assert.equal(this.frames.length, 1, 'the transport sent nothing but its HELLO before our AUTH');
    this.send({ type: FrameType.Auth, mac: authMac(secret, 'dialler', t) });
    await waitFor('the AUTH of the transport', () => this.frames.length >= 2);
    const a = this.frames[1]!;
    assert.ok(a.type === FrameType.Auth && verifyAuth(secret, 'acceptor', t, a.mac), 'the transport proved the secret');
    return t;
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

function rawPeer(t: TestContext, port: number, nonce?: Buffer): RawPeer {
  const r = new RawPeer(port, nonce);
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
  assert.equal(a.tr.stats.linksUp, 1);
  assert.equal(b.tr.stats.linksUp, 1);
  assert.equal(b.tr.stats.accepted, 1);
  assert.equal(a.tr.stats.handshakesFailed + b.tr.stats.handshakesFailed + b.tr.stats.connectionsRefused, 0);

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

test('a wrong secret is refused on both sides with a warning, counted, and no link comes up', async (t) => {
  const { a, b, pb } = await pair(t, { secret: 'secret-a' }, { secret: 'secret-b' });
  // b (the acceptor) refuses a's proof; a (the dialler) is told so, and never sees a proof from b.
  await waitFor('warnings on both nodes', () =>
    logged(a.log, 'warn', new RegExp(`^peer 1 \\(b\\) at 127\\.0\\.0\\.1:${pb} refused the connection: authentication failed \\(wrong secret\\?\\)$`)).length > 0 &&
    logged(b.log, 'warn', /^refused a peer from 127\.0\.0\.1:\d+ claiming to be node 0 \(a\): authentication failed \(wrong secret\?\)$/).length > 0);
  // a keeps retrying; repeats of the same problem are logged at debug, not as new warnings.
  await waitFor('a second attempt', () => logged(b.log, 'debug', /authentication failed/).length + logged(b.log, 'warn', /authentication failed/).length >= 2);
  assert.equal(logged(a.log, 'warn', /authentication failed/).length, 1);
  assert.equal(a.h.ups.length + b.h.ups.length, 0);
  const [sa, sb] = [a.tr.stats, b.tr.stats];
  assert.ok(sa.authFailed >= 1 && sa.handshakesFailed >= sa.authFailed && sa.dials >= 2, JSON.stringify(sa));
  assert.ok(sb.authFailed >= 2 && sb.accepted >= 2, JSON.stringify(sb));
  assert.equal(sa.linksUp + sb.linksUp, 0);
});

test('a wrong resource name is refused on both sides', async (t) => {
  const { a, b } = await pair(t, { resource: 'r0' }, { resource: 'r1' });
  await waitFor('warnings on both nodes', () =>
    logged(a.log, 'warn', /^peer 1 \(b\) at 127\.0\.0\.1:\d+ refused the connection: wrong resource "r0", this node serves "r1"$/).length > 0 &&
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
    logged(c.log, 'warn', /^peer 3 \(b\) at 127\.0\.0\.1:\d+ refused the connection: unknown node 2: not a peer/).length > 0);
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
  assert.ok(logged(b.log, 'warn', /^refused a peer from 127\.0\.0\.1:\d+ claiming to be node 0 \(a\): authentication failed \(wrong secret\?\)$/).length > 0);
  // Other protocol versions: a newer one, and version 1 (whose acceptor answered HELLO with a MAC).
  for (const version of [WIRE_VERSION + 1, 1]) {
    const old = rawPeer(t, pb);
    await old.open();
    old.send({ type: FrameType.Hello, version, nodeId: 0, resource: 'r0', nonce: randomBytes(32) });
    await waitFor('b refuses the other version', () => old.closed);
    assert.equal(old.errorCode(), ErrorCode.BadVersion);
    assert.deepEqual(old.frames.map((f) => f.type), [FrameType.Error], 'only the refusal');
    assert.ok(logged(b.log, 'warn', new RegExp(`^refused a peer from 127\\.0\\.0\\.1:\\d+: protocol version ${version}, this node speaks ${WIRE_VERSION}$`)).length > 0);
  }
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
  const { a, b, pb } = await pair(t);
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
  // (a counts a refusal when b's ERROR arrives, a moment after b counted it)
  await waitFor('b to refuse a twice, and a to hear it', () => refusals() >= 2 && a.tr.stats.handshakesDeclined >= 2);
  assert.equal(a.h.ups.length, 2);
  assert.ok(b.tr.stats.handshakesDeclined >= 2);
  // A stranger claiming to be node 0 is not told that node 0 is disconnected: it gets a nonce, then fails its proof.
  const stranger = rawPeer(t, pb);
  await stranger.helloExchange(0);
  stranger.send({ type: FrameType.Auth, mac: randomBytes(32) });
  await waitFor('b to refuse the stranger', () => stranger.closed);
  assert.equal(stranger.errorCode(), ErrorCode.AuthFailed);
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
  const { a, b, pa, pb } = await pair(t, { tls: tlsOf('a') }, { tls: tlsOf('b'), handshakeMs: 500 });
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
  // A TCP connection that never starts TLS is closed after handshakeMs, and logged.
  const silent = net.connect(pb, '127.0.0.1');
  silent.on('error', () => {});
  t.after(() => silent.destroy());
  await waitFor('b to close the silent connection', () => silent.closed, 3000);
  await waitFor('b to log it', () => logged(b.log, 'warn', /^refused a peer from 127\.0\.0\.1:\d+: no TLS handshake within 500 ms$/).length > 0);
  assert.equal(x.h.ups.length, 0);
  assert.equal(b.h.ups.length, 1);
  assert.ok(b.tr.stats.connectionsRefused >= 3, JSON.stringify(b.tr.stats));
});

// ---- strangers: what they get back, and what the transport logs and counts ----

/** Every HMAC under `secret` that a stranger could test guesses of the secret against: v1's and both v2 directions, over these nonces and ids. */
function macsUnder(secret: string, nonces: Uint8Array[], ids: number[], resource = 'r0'): Buffer[] {
  const out: Buffer[] = [];
  for (const n of nonces) {
    for (const id of ids) out.push(createHmac('sha256', secret).update('twindisk-auth-v1').update(n).update(Uint8Array.of(id)).update(resource).digest());
    for (const m of nonces) {
      for (const d of ids) {
        for (const c of ids) {
          const tr = { resource, diallerId: d, acceptorId: c, diallerNonce: n, acceptorNonce: m };
          out.push(authMac(secret, 'dialler', tr), authMac(secret, 'acceptor', tr));
        }
      }
    }
  }
  return out;
}

test('a stranger claiming a node id gets a bare nonce, nothing keyed with the secret; HELLO-only strangers time out, logged once per window per address', async (t) => {
  const pb = await freePort();
  const b = await node(t, 1, `b${pb}`, pb, [peer(0, 'a', 1)], { handshakeMs: 200, refusalLog: { perWindow: 1, windowMs: 1500 } });
  const started = Date.now();
  const strangers: RawPeer[] = [];
  for (let i = 0; i < 2; i++) {
    const s = rawPeer(t, pb);
    strangers.push(s);
    await s.helloExchange(0);
    await waitFor('b to give up on the stranger', () => s.closed);
  }
  for (const s of strangers) {
    // b's HELLO (its id, the resource, a nonce) and the refusal; no AUTH, and no MAC under the secret in any byte.
    assert.deepEqual(s.frames.map((f) => f.type), [FrameType.Hello, FrameType.Error]);
    const h = s.frames[0]!;
    assert.ok(h.type === FrameType.Hello && h.nodeId === 1 && h.resource === 'r0' && h.version === WIRE_VERSION);
    assert.equal(s.raw[0]!.length, 38 + 2, 'the HELLO is header, nonce and name, nothing more');
    const keyed = macsUnder('secret-1', [s.nonce, h.nonce], [0, 1]);
    assert.ok(!s.raw.some((m) => keyed.some((k) => m.includes(k))), 'no MAC under the secret in what the stranger received');
    assert.deepEqual(s.errorFrame(), { type: FrameType.Error, code: ErrorCode.Protocol, message: 'no handshake within 200 ms (HELLO as node 0, then no AUTH)' });
  }
  const re = /^refused a peer from 127\.0\.0\.1:\d+ claiming to be node 0 \(a\): no handshake within 200 ms \(HELLO as node 0, then no AUTH\)$/;
  assert.equal(logged(b.log, 'warn', re).length, 1, 'one warning per window per address');
  assert.equal(logged(b.log, 'debug', re).length, 1, 'the second one at debug');
  assert.equal(b.tr.stats.handshakesTimedOut, 2);
  assert.equal(b.tr.stats.accepted, 2);
  // After the window, the next one is a warning again, with the count of those held back.
  await sleep(Math.max(0, started + 1900 - Date.now()));
  const third = rawPeer(t, pb);
  await third.helloExchange(0);
  await waitFor('b to give up on the third stranger', () => third.closed);
  const warns = logged(b.log, 'warn', re);
  assert.equal(warns.length, 2);
  assert.equal(warns[1]!.fields.suppressed, 1);
  assert.equal(b.tr.stats.handshakesTimedOut, 3);
  assert.equal(b.h.ups.length, 0);
});

test('strangers that give up halfway, stay silent, close at once, or send plain HTTP or garbage are refused, logged and counted', async (t) => {
  const pb = await freePort();
  const b = await node(t, 1, `b${pb}`, pb, [peer(0, 'a', 1)], { handshakeMs: 300 });
  // HELLO, then gone.
  const gone = rawPeer(t, pb);
  await gone.helloExchange(0);
  gone.ws.terminate();
  await waitFor('the warning about the abandoned handshake', () =>
    logged(b.log, 'warn', /^a peer from 127\.0\.0\.1:\d+ claiming to be node 0 \(a\) went away during the handshake \(HELLO as node 0, then no AUTH\)/).length === 1);
  // A WebSocket that closes without a word.
  const mute = rawPeer(t, pb);
  await mute.open();
  mute.ws.close();
  await waitFor('the warning about the mute caller', () => logged(b.log, 'warn', /^a peer from 127\.0\.0\.1:\d+ went away during the handshake \(no HELLO\)/).length === 1);
  assert.equal(mute.frames.length, 0);

  // Below the WebSocket: raw TCP.
  const tcp = async (what: string, act: (s: net.Socket) => void): Promise<string> => {
    const s = net.connect(pb, '127.0.0.1');
    t.after(() => s.destroy());
    let got = '';
    s.on('data', (d) => { got += d.toString('latin1'); });
    s.on('error', () => {});
    await new Promise((resolve) => s.once('connect', resolve));
    act(s);
    await waitFor(`b to close the connection that ${what}`, () => s.closed, 3000);
    return got;
  };
  assert.match(await tcp('stays silent', () => {}), /^HTTP\/1\.1 408 /);
  await waitFor('the warning about silence', () => logged(b.log, 'warn', /^refused a peer from 127\.0\.0\.1:\d+: no WebSocket upgrade within 300 ms$/).length === 1);
  await tcp('closes at once', (s) => s.end());
  await waitFor('the warning about the close', () => logged(b.log, 'warn', /^refused a peer from 127\.0\.0\.1:\d+: closed the connection without a request$/).length === 1);
  assert.match(await tcp('sends garbage', (s) => s.write('\x16\x03\x01 hello there\r\n\r\n')), /^HTTP\/1\.1 400 /);
  await waitFor('the warning about garbage', () => logged(b.log, 'warn', /^refused a peer from 127\.0\.0\.1:\d+: not HTTP: /).length === 1);
  assert.match(await tcp('sends plain HTTP', (s) => s.write('GET /status HTTP/1.1\r\nHost: x\r\n\r\n')), /^HTTP\/1\.1 426 /);
  await waitFor('the warning about plain HTTP', () =>
    logged(b.log, 'warn', /^refused a peer from 127\.0\.0\.1:\d+: an HTTP request, not a WebSocket upgrade \(GET \/status\)$/).length === 1);
  assert.match(await tcp('sends a bad upgrade', (s) => s.write('GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n')), /^HTTP\/1\.1 400 /);
  await waitFor('the warning about the bad upgrade', () => logged(b.log, 'warn', /^refused a peer from 127\.0\.0\.1:\d+: not a WebSocket upgrade: /).length === 1);

  const s = b.tr.stats;
  assert.equal(s.accepted, 2);
  assert.equal(s.handshakesAbandoned, 2);
  assert.equal(s.connectionsRefused, 5);
  assert.equal(s.linksUp + s.handshakesFailed + s.handshakesTimedOut, 0);
  // Nothing of this stops a real peer.
  const a = await node(t, 0, 'a-after-strangers', await freePort(), [peer(1, 'b', pb)]);
  await waitFor('a good peer links up', () => a.h.ups.length === 1 && b.h.ups.length === 1);
  assert.equal(b.tr.stats.linksUp, 1);
});

test('a replayed AUTH is refused and logged, and so is a MAC made for the other direction', async (t) => {
  const pb = await freePort();
  const b = await node(t, 1, `b${pb}`, pb, [peer(0, 'a', 1)]);
  // An eavesdropper records a good handshake...
  const good = rawPeer(t, pb);
  const recorded = await good.handshake(0);
  await waitFor('the good link', () => b.h.ups.length === 1);
  const theirs = good.frames[1]!;
  // ...and replays it: the same HELLO (same nonce) and the same AUTH, then b's own AUTH back at it. b's new nonce makes both worthless.
  for (const mac of [authMac('secret-1', 'dialler', recorded), theirs.type === FrameType.Auth ? theirs.mac : new Uint8Array(32)]) {
    const replay = rawPeer(t, pb, Buffer.from(recorded.diallerNonce));
    const now = await replay.helloExchange(0);
    assert.ok(!Buffer.from(now.acceptorNonce).equals(Buffer.from(recorded.acceptorNonce)), 'a fresh acceptor nonce');
    replay.send({ type: FrameType.Auth, mac });
    await waitFor('b to refuse the replay', () => replay.closed);
    assert.equal(replay.errorCode(), ErrorCode.AuthFailed);
    assert.ok(!replay.frames.some((f) => f.type === FrameType.Auth), 'no AUTH for the replayer');
  }
  // Reflection: a MAC in b's direction (what b would send) over the new nonces is no proof from a dialler.
  const reflect = rawPeer(t, pb);
  const now = await reflect.helloExchange(0);
  reflect.send({ type: FrameType.Auth, mac: authMac('secret-1', 'acceptor', now) });
  await waitFor('b to refuse the reflected MAC', () => reflect.closed);
  assert.equal(reflect.errorCode(), ErrorCode.AuthFailed);
  assert.equal(logged(b.log, 'warn', /^refused a peer from 127\.0\.0\.1:\d+ claiming to be node 0 \(a\): authentication failed \(wrong secret\?\)$/).length, 3);
  assert.equal(b.h.ups.length, 1);
  assert.equal(b.h.downs.length, 0, 'the good link stays up');
  assert.equal(b.tr.stats.authFailed, 3);
});

test('a dialler refuses an impostor at its peer\'s address: a reflected AUTH, its own nonce, another version; the impostor gets one MAC per dial at most', async (t) => {
  const [pa, pb] = [await freePort(), await freePort()];
  // The impostor listens at b's configured address and plays one of three tricks per connection.
  type Trick = 'reflect' | 'own-nonce' | 'v1';
  let trick: Trick = 'reflect';
  const seen: { trick: Trick; got: Frame[] }[] = [];
  const wss = new WebSocketServer({ host: '127.0.0.1', port: pb });
  t.after(() => new Promise((resolve) => {
    for (const c of wss.clients) c.terminate();
    wss.close(resolve);
  }));
  wss.on('connection', (ws) => {
    const conn = { trick, got: [] as Frame[] };
    seen.push(conn);
    ws.on('message', (d) => {
      const f = decodeFrame(d as Buffer);
      conn.got.push(f);
      if (f.type === FrameType.Hello) {
        const nonce = conn.trick === 'own-nonce' ? f.nonce : randomBytes(32);
        ws.send(encodeFrame({ type: FrameType.Hello, version: conn.trick === 'v1' ? 1 : WIRE_VERSION, nodeId: 1, resource: 'r0', nonce }));
      } else if (f.type === FrameType.Auth) {
        ws.send(encodeFrame(f)); // the dialler's own proof, handed back
      }
    });
  });
  const a = await node(t, 0, `a${pa}`, pa, [peer(1, 'b', pb)]);
  const warned = (re: string) => logged(a.log, 'warn', new RegExp(`^refused peer 1 \\(b\\) at 127\\.0\\.0\\.1:${pb}: ${re}$`)).length > 0;
  await waitFor('a to refuse the reflected AUTH', () => warned('authentication failed \\(wrong secret\\?\\)'));
  trick = 'own-nonce';
  await waitFor('a to refuse its own nonce', () => warned('protocol error: the HELLO carries this node\'s own nonce \\(reflected\\?\\)'));
  trick = 'v1';
  await waitFor('a to refuse version 1', () => warned(`protocol version 1, this node speaks ${WIRE_VERSION}`));
  assert.equal(a.h.ups.length, 0);
  // The residual risk (README, "Links"): whoever answers at the peer's address gets the dialler's MAC, one per dial;
  // only after a HELLO that passed every check.
  for (const { trick: k, got } of seen) {
    const auths = got.filter((f) => f.type === FrameType.Auth).length;
    if (k === 'reflect' && got.length >= 2) assert.deepEqual(got.slice(0, 2).map((f) => f.type), [FrameType.Hello, FrameType.Auth]);
    else assert.equal(auths, 0, `no AUTH to the ${k} trick`);
    assert.ok(auths <= 1);
  }
  assert.ok(a.tr.stats.authFailed >= 1 && a.tr.stats.handshakesFailed >= 3, JSON.stringify(a.tr.stats));
});

test('an up link outlives the handshake time limits of the listener (HTTP request and headers timeouts)', async (t) => {
  const { a, b } = await pair(t, { handshakeMs: 150, pingMs: 100 }, { handshakeMs: 150, pingMs: 100 });
  await waitFor('the link', () => a.h.ups.length === 1 && b.h.ups.length === 1);
  await sleep(1200); // several handshake limits and listener checking intervals
  assert.equal(a.h.downs.length + b.h.downs.length, 0);
  assert.equal(b.tr.stats.connectionsRefused + b.tr.stats.handshakesTimedOut, 0);
});

test('the frames of one turn leave in one write: each side corks its own socket (taken from the upgrade, not from ws internals)', async (t) => {
  const { a, b } = await pair(t);
  await waitFor('the link', () => a.h.ups.length === 1 && b.h.ups.length === 1);
  for (const link of [a.h.ups[0]!, b.h.ups[0]!]) {
    const sock = (link as unknown as { sock: { cork(): void; uncork(): void; writableCorked: number } | null }).sock;
    assert.ok(sock, 'the connection knows its socket');
    // ws corks and uncorks around each frame it writes; only an uncork to level 0 writes to the socket.
    let flushes = 0;
    const uncork = sock.uncork.bind(sock);
    sock.uncork = () => { uncork(); if (sock.writableCorked === 0) flushes++; };
    for (let i = 0; i < 5; i++) link.send({ type: FrameType.Error, code: ErrorCode.Protocol, message: `frame ${i}` });
    assert.equal(sock.writableCorked, 1, 'corked while the turn lasts');
    assert.equal(flushes, 0, 'nothing written yet');
    await new Promise((r) => setImmediate(r));
    assert.equal(flushes, 1, 'one write for the five frames');
    assert.equal(sock.writableCorked, 0);
  }
});
