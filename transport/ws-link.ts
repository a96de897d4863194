// Replication links over WebSockets: one authenticated ws (or wss) connection per peer node, one frame per binary message.
//
// The node with the lower id dials, the higher one accepts. Each new connection runs the handshake:
// both sides send HELLO (version, node id, resource, nonce), check the other's, then send AUTH (an HMAC of the
// other's nonce under the shared secret, see wire.ts) and check the other's. Only then does the engine see the
// link (`LinkHandler.linkUp`). Up links are kept alive with PING/PONG; dropped links are re-dialled with backoff.
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import WebSocket, { WebSocketServer } from 'ws';
import { Logger, RateLimit } from '../engine/log.js';
import { ErrorCode, FrameType, MAX_FRAME, MAX_NODES, WIRE_VERSION, type Frame, type HelloFrame } from '../engine/replication/frames.js';
import type { LinkHandler, PeerLink } from '../engine/replication/link.js';
import { MAX_RESOURCE_NAME, NONCE_SIZE, WireError, authMac, decodeFrame, encodeFrame, frameName, verifyAuth } from '../engine/replication/wire.js';

export interface TransportPeer { id: number; name: string; host: string; port: number }

export interface TransportOptions {
  resource: string;
  secret: string;
  myId: number;
  myName: string;
  listen: { host: string; port: number };
  /** Every other node of the resource. */
  peers: TransportPeer[];
  /** PEM file paths; when given, wss:// both ways and each side's certificate is verified against `ca`. */
  tls?: { cert: string; key: string; ca?: string };
  handler: LinkHandler;
  log: Logger;
  /** Re-dial backoff: starts at min, doubles up to max, with jitter. Default 200..5000 ms. */
  backoffMs?: { min: number; max: number };
  /** PING interval; a link with no frame at all for 3 intervals is closed as timed out. Default 2000 ms. */
  pingMs?: number;
  /** Time a new connection has to complete HELLO and AUTH. Default 5000 ms. */
  handshakeMs?: number;
}

const DEFAULT_BACKOFF = { min: 200, max: 5000 };
const DEFAULT_PING_MS = 2000;
const DEFAULT_HANDSHAKE_MS = 5000;
/** PING intervals without any frame after which a link is dead. */
const MISSED_PINGS = 3;
/** After our close frame, how long the peer has to answer before the socket is destroyed. */
const CLOSE_GRACE_MS = 1000;
/** WebSocket close codes (RFC 6455 section 7.4.1). */
const WS_NORMAL = 1000;
const WS_GOING_AWAY = 1001;
const WS_PROTOCOL_ERROR = 1002;
const WS_POLICY_VIOLATION = 1008;

const ERROR_NAMES: Record<number, string> = {
  [ErrorCode.BadVersion]: 'bad version', [ErrorCode.WrongResource]: 'wrong resource', [ErrorCode.UnknownNode]: 'unknown node',
  [ErrorCode.AuthFailed]: 'authentication failed', [ErrorCode.SplitBrain]: 'split brain', [ErrorCode.UnrelatedData]: 'unrelated data',
  [ErrorCode.SizeMismatch]: 'size mismatch', [ErrorCode.Protocol]: 'protocol error', [ErrorCode.Shutdown]: 'shutdown',
  [ErrorCode.TwoPrimaries]: 'two primaries', [ErrorCode.Disconnect]: 'disconnect',
};

/** Why a HELLO is refused: the code sent to the peer, the reason logged (and sent), and whether to log quietly. */
interface Refusal { code: ErrorCode; why: string; quiet?: boolean }

/** The part of ws's net.Socket that corking uses (ws keeps it in a private field). */
interface CorkableSocket { cork(): void; uncork(): void; destroyed: boolean }

/** What a Connection needs from its transport. */
interface Owner {
  readonly resource: string;
  readonly secret: string;
  readonly myId: number;
  readonly pingMs: number;
  readonly handshakeMs: number;
  peerLabel(id: number): string;
  checkHello(c: Connection, hello: HelloFrame): Refusal | null;
  authenticated(c: Connection): void;
  frame(c: Connection, f: Frame): void;
  /** Logs a refused handshake or a broken link (rate-limited or de-duplicated by the transport). */
  problem(c: Connection, msg: string, quiet?: boolean): void;
  ended(c: Connection, reason: string, wasUp: boolean): void;
}

/** `host:port`, with brackets around IPv6 addresses. */
function hostPort(host: string | undefined, port: number | undefined): string {
  const h = host ?? '?';
  return `${h.includes(':') ? `[${h}]` : h}:${port ?? '?'}`;
}

/** One WebSocket to a (would-be) peer: runs the handshake, then carries frames; the engine's PeerLink once up. */
class Connection implements PeerLink {
  /** The peer's node id, known once its HELLO passed (-1 before). */
  peerId = -1;
  phase: 'hello' | 'auth' | 'up' | 'closed' = 'hello';
  /** The problem that ended the connection was logged already. */
  reported = false;
  /** When the link went up (Date.now()). */
  upAt = 0;
  /** Resolves when the socket is closed. */
  readonly closed: Promise<void>;
  private readonly nonce = randomBytes(NONCE_SIZE);
  /** The handshake timeout, then the PING interval. */
  private timer: NodeJS.Timeout | null = null;
  private graceTimer: NodeJS.Timeout | null = null;
  /** A frame arrived since the last PING tick, and how many ticks passed without one. */
  private rx = true;
  private idleTicks = 0;
  private pingSeq = 0;
  private corked = false;
  private socketError: string | null = null;
  private peerError: string | null = null;

  constructor(private readonly owner: Owner, private readonly ws: WebSocket, readonly remote: string, readonly dialed: TransportPeer | null) {
    this.closed = new Promise((resolve) => ws.once('close', () => resolve()));
    ws.on('message', (data, isBinary) => this.receive(data as Buffer, isBinary));
    ws.on('error', (err: Error & { code?: string }) => this.socketFailed(err));
    ws.on('close', (code) => this.socketClosed(code));
    if (ws.readyState === WebSocket.OPEN) this.sendHello();
    else ws.once('open', () => this.sendHello());
    this.timer = setTimeout(() => this.handshakeTimedOut(), owner.handshakeMs);
  }

  get buffered(): number {
    return this.ws.bufferedAmount;
  }

  /** Sends a frame on an up link; a no-op once closed. */
  send(frame: Frame): void {
    if (this.phase !== 'up') return;
    this.cork();
    this.ws.send(encodeFrame(frame));
  }

  /** Sends an encoded frame as is (the caller keeps the bytes unchanged until the peer answered). */
  sendEncoded(bytes: Buffer, onSent?: () => void): void {
    if (this.phase !== 'up') {
      onSent?.();
      return;
    }
    this.cork();
    // ws calls back once the socket took the bytes, or with an error when it closed before that.
    this.ws.send(bytes, onSent ? () => onSent() : undefined);
  }

  /**
   * Holds the socket's writes until the end of this turn of the event loop, so the frames one turn
   * produces (a burst of DATA, a burst of ACKs) leave in one writev instead of a system call each.
   */
  private cork(): void {
    if (this.corked) return;
    const sock = this.socket();
    if (!sock) return;
    this.corked = true;
    sock.cork();
    process.nextTick(() => this.flush());
  }

  /** Ends the cork: the frames queued this turn leave now, in one writev. */
  flush(): void {
    if (!this.corked) return;
    this.corked = false;
    const sock = this.socket();
    if (sock && !sock.destroyed) sock.uncork();
  }

  private socket(): CorkableSocket | undefined {
    return (this.ws as unknown as { _socket?: CorkableSocket })._socket;
  }

  /** The engine closes the link: an ERROR frame says why, then the socket closes and `linkDown` follows. */
  close(code: ErrorCode, message: string): void {
    this.end(`closed locally: ${message}`, code, message);
  }

  /** Who is at the other end, for logs. */
  who(): string {
    if (this.dialed) return `peer ${this.owner.peerLabel(this.dialed.id)} at ${this.remote}`;
    if (this.phase === 'up') return `peer ${this.owner.peerLabel(this.peerId)} from ${this.remote}`;
    return `a peer from ${this.remote}`;
  }

  /** The handshake passed: start keep-alive. */
  up(): void {
    this.phase = 'up';
    this.upAt = Date.now();
    if (this.timer) clearTimeout(this.timer);
    this.rx = true;
    this.timer = setInterval(() => this.pingTick(), this.owner.pingMs);
  }

  /**
   * Ends the connection once: optionally sends an ERROR frame, closes the socket (destroys it when `hard`
   * or after a grace period) and tells the transport, which calls `linkDown` if the link was up.
   */
  end(reason: string, code?: ErrorCode, message?: string, wsCode = WS_NORMAL, hard = false): void {
    if (this.phase === 'closed') return;
    const wasUp = this.phase === 'up';
    this.phase = 'closed';
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const ws = this.ws;
    if (ws.readyState === WebSocket.OPEN && !hard) {
      if (code !== undefined) ws.send(encodeFrame({ type: FrameType.Error, code, message: message ?? reason }));
      ws.close(wsCode);
      this.graceTimer = setTimeout(() => ws.terminate(), CLOSE_GRACE_MS);
    } else if (ws.readyState !== WebSocket.CLOSED) {
      ws.terminate();
    }
    this.owner.ended(this, reason, wasUp);
  }

  private sendHello(): void {
    if (this.phase !== 'hello') return;
    const o = this.owner;
    this.ws.send(encodeFrame({ type: FrameType.Hello, version: WIRE_VERSION, nodeId: o.myId, resource: o.resource, nonce: this.nonce }));
  }

  private receive(data: Buffer, isBinary: boolean): void {
    if (this.phase === 'closed') return;
    if (!isBinary) return this.protocolError('a text message (frames are binary)');
    let f: Frame;
    try {
      f = decodeFrame(data);
    } catch (e) {
      if (!(e instanceof WireError)) throw e;
      // A HELLO of another protocol version may not even decode: answer with BadVersion, not a protocol error.
      if (this.phase === 'hello' && data[0] === FrameType.Hello && data.length >= 3 && data.readUInt16LE(1) !== WIRE_VERSION) {
        return this.refuse({ code: ErrorCode.BadVersion, why: `protocol version ${data.readUInt16LE(1)}, this node speaks ${WIRE_VERSION}` });
      }
      return this.protocolError(e.message);
    }
    this.rx = true;
    if (this.phase !== 'up') return this.handshake(f);
    switch (f.type) {
      case FrameType.Ping:
        this.ws.send(encodeFrame({ type: FrameType.Pong, seq: f.seq }));
        return;
      case FrameType.Pong:
        return;
      case FrameType.Hello:
      case FrameType.Auth:
        return this.protocolError(`${frameName(f.type)} after the handshake`);
      case FrameType.Error:
        this.peerError = `${ERROR_NAMES[f.code] ?? `error ${f.code}`}: ${f.message}`;
        break;
    }
    this.owner.frame(this, f);
  }

  private handshake(f: Frame): void {
    const o = this.owner;
    if (f.type === FrameType.Error) {
      const why = `${ERROR_NAMES[f.code] ?? `error ${f.code}`}: ${f.message}`;
      o.problem(this, `${this.who()} refused the connection: ${why}`, f.code === ErrorCode.Disconnect || f.code === ErrorCode.Shutdown);
      return this.end(`refused by the peer: ${why}`);
    }
    if (this.phase === 'hello') {
      if (f.type !== FrameType.Hello) return this.protocolError(`expected HELLO, got ${frameName(f.type)}`);
      const refusal = o.checkHello(this, f);
      if (refusal) return this.refuse(refusal);
      this.peerId = f.nodeId;
      this.phase = 'auth';
      this.ws.send(encodeFrame({ type: FrameType.Auth, mac: authMac(o.secret, f.nonce, o.myId, o.resource) }));
      return;
    }
    if (f.type !== FrameType.Auth) return this.protocolError(`expected AUTH, got ${frameName(f.type)}`);
    if (!verifyAuth(o.secret, this.nonce, this.peerId, o.resource, f.mac)) {
      return this.refuse({ code: ErrorCode.AuthFailed, why: 'authentication failed (wrong secret?)' });
    }
    o.authenticated(this);
  }

  private refuse(r: Refusal): void {
    this.owner.problem(this, `refused ${this.who()}: ${r.why}`, r.quiet);
    this.end(`refused: ${r.why}`, r.code, r.why, WS_POLICY_VIOLATION);
  }

  private protocolError(why: string): void {
    const what = this.phase === 'up' ? `closed the link to ${this.who()}` : `refused ${this.who()}`;
    this.owner.problem(this, `${what}: protocol error: ${why}`);
    this.end(`protocol error: ${why}`, ErrorCode.Protocol, why, WS_PROTOCOL_ERROR);
  }

  private handshakeTimedOut(): void {
    this.timer = null;
    if (this.phase !== 'hello' && this.phase !== 'auth') return;
    const why = `no handshake within ${this.owner.handshakeMs} ms`;
    // A dialled peer's silence is a dial failure (logged by the transport); a silent caller is refused.
    if (!this.dialed) this.owner.problem(this, `refused ${this.who()}: ${why}`);
    this.end(why, ErrorCode.Protocol, why, WS_POLICY_VIOLATION);
  }

  private pingTick(): void {
    if (this.rx) {
      this.rx = false;
      this.idleTicks = 0;
    } else if (++this.idleTicks >= MISSED_PINGS) {
      const why = `timed out: no frame for ${MISSED_PINGS * this.owner.pingMs} ms`;
      this.owner.problem(this, `closed the link to ${this.who()}: ${why}`);
      this.end(why, undefined, undefined, WS_NORMAL, true);
      return;
    }
    this.ws.send(encodeFrame({ type: FrameType.Ping, seq: this.pingSeq++ }));
  }

  /** ws reports a broken WebSocket framing (e.g. a message over MAX_FRAME) or a network error; 'close' follows. */
  private socketFailed(err: Error & { code?: string }): void {
    this.socketError ??= err.message;
    if (this.phase !== 'closed' && err.code?.startsWith('WS_ERR_')) this.protocolError(err.message);
  }

  private socketClosed(code: number): void {
    if (this.graceTimer) clearTimeout(this.graceTimer);
    this.graceTimer = null;
    if (this.phase === 'closed') return;
    let reason = this.socketError ?? `closed by the peer (code ${code})`;
    if (this.peerError) reason = `closed by the peer: ${this.peerError}`;
    this.end(reason);
  }
}

/** What the transport keeps per peer node. */
interface PeerSlot {
  readonly peer: TransportPeer;
  /** Whether this node dials the peer (the peer has the higher id). */
  readonly dials: boolean;
  /** Cleared by disconnect(): neither dial nor accept. */
  enabled: boolean;
  /** The up link. */
  link: Connection | null;
  /** Our dialled connection while it connects and runs the handshake. */
  dialing: Connection | null;
  /** The pending re-dial. */
  timer: NodeJS.Timeout | null;
  backoff: number;
  /** Failed attempts since the link was last up, and the last problem logged (repeats are logged at debug). */
  failures: number;
  lastProblem: string;
}

/** Links to every peer of one resource over WebSockets; implements the engine's PeerLink/LinkHandler contract. */
export class WsTransport {
  private readonly log: Logger;
  private readonly handler: LinkHandler;
  private readonly backoff: { min: number; max: number };
  private readonly slots = new Map<number, PeerSlot>();
  private readonly conns = new Set<Connection>();
  private readonly owner: Owner;
  /** Warnings about callers (anyone can connect) are rate-limited. */
  private readonly acceptWarnings = new RateLimit(10, 60_000);
  private state: 'new' | 'starting' | 'started' | 'closing' | 'closed' = 'new';
  private server: http.Server | https.Server | null = null;
  private wss: WebSocketServer | null = null;
  private clientTls: tls.ConnectionOptions | null = null;
  private closing: Promise<void> | null = null;

  /** Checks the options; nothing is opened before start(). */
  constructor(private readonly opts: TransportOptions) {
    const { myId, peers } = opts;
    const validId = (id: number) => Number.isInteger(id) && id >= 0 && id < MAX_NODES;
    if (!validId(myId)) throw new Error(`node id ${myId} is not in 0..${MAX_NODES - 1}`);
    if (Buffer.byteLength(opts.resource) > MAX_RESOURCE_NAME) throw new Error(`resource name "${opts.resource}" is longer than ${MAX_RESOURCE_NAME} bytes`);
    for (const p of peers) {
      if (!validId(p.id)) throw new Error(`peer ${p.name}: node id ${p.id} is not in 0..${MAX_NODES - 1}`);
      if (p.id === myId) throw new Error(`peer ${p.name} has this node's own id ${myId}`);
      if (this.slots.has(p.id)) throw new Error(`two peers with node id ${p.id}`);
      if (!Number.isInteger(p.port) || p.port <= 0 || p.port > 65535) throw new Error(`peer ${p.name}: port ${p.port} is not valid`);
      this.slots.set(p.id, {
        peer: p, dials: myId < p.id, enabled: true, link: null, dialing: null, timer: null, backoff: 0, failures: 0, lastProblem: '',
      });
    }
    this.log = opts.log;
    this.handler = opts.handler;
    this.backoff = opts.backoffMs ?? DEFAULT_BACKOFF;
    for (const s of this.slots.values()) s.backoff = this.backoff.min;
    this.owner = {
      resource: opts.resource,
      secret: opts.secret,
      myId,
      pingMs: opts.pingMs ?? DEFAULT_PING_MS,
      handshakeMs: opts.handshakeMs ?? DEFAULT_HANDSHAKE_MS,
      peerLabel: (id) => this.peerLabel(id),
      checkHello: (c, h) => this.checkHello(c, h),
      authenticated: (c) => this.authenticated(c),
      frame: (c, f) => this.handler.frame(c, f),
      problem: (c, msg, quiet) => this.problem(c, msg, quiet),
      ended: (c, reason, wasUp) => this.ended(c, reason, wasUp),
    };
  }

  /** Listens for peers and starts dialling the ones with higher ids. Rejects if the address cannot be bound. */
  async start(): Promise<void> {
    if (this.state !== 'new') throw new Error(`the transport cannot start: it is ${this.state}`);
    this.state = 'starting';
    const { host, port } = this.opts.listen;
    let server: http.Server | https.Server;
    try {
      server = await this.createServer();
      await new Promise<void>((resolve, reject) => {
        const failed = (err: NodeJS.ErrnoException) => reject(new Error(err.code === 'EADDRINUSE'
          ? `cannot listen on ${hostPort(host, port)}: address in use; is another node running?`
          : `cannot listen on ${hostPort(host, port)}: ${err.message}`));
        server.once('error', failed);
        server.listen(port, host, () => {
          server.off('error', failed);
          resolve();
        });
      });
    } catch (e) {
      if (this.state === 'starting') this.state = 'new';
      throw e;
    }
    server.on('error', (err) => this.log.error(`replication listener on ${hostPort(host, port)}: ${err.message}`));
    this.server = server;
    this.wss = new WebSocketServer({ noServer: true, maxPayload: MAX_FRAME, perMessageDeflate: false, clientTracking: false });
    if (this.state !== 'starting') { // close() was called meanwhile
      await new Promise((resolve) => server.close(resolve));
      throw new Error('the transport was closed while starting');
    }
    this.state = 'started';
    this.log.info(`listening for peers on ${this.opts.tls ? 'wss' : 'ws'}://${hostPort(host, port)}/`, { node: this.opts.myId, name: this.opts.myName });
    for (const s of this.slots.values()) if (s.dials) this.dial(s);
  }

  /** (Re-)enables the link to a peer: dials it now (if this node dials) or accepts it again. */
  connect(peerId: number): void {
    const s = this.slot(peerId);
    if (s.enabled) return;
    s.enabled = true;
    s.backoff = this.backoff.min;
    s.failures = 0;
    s.lastProblem = '';
    this.log.info(`connecting to peer ${this.peerLabel(peerId)} again`);
    if (s.dials && this.state === 'started') this.dial(s);
  }

  /** Closes the link to a peer (ERROR Disconnect) and neither dials nor accepts it until connect(). */
  disconnect(peerId: number): void {
    const s = this.slot(peerId);
    if (!s.enabled) return;
    s.enabled = false;
    if (s.timer) clearTimeout(s.timer);
    s.timer = null;
    this.log.info(`disconnected from peer ${this.peerLabel(peerId)}; not reconnecting until connect()`);
    const message = `node ${this.opts.myId} disconnected from node ${peerId}`;
    for (const c of [...this.conns]) {
      if (c.peerId === peerId || c.dialed?.id === peerId) c.end('disconnected by the administrator', ErrorCode.Disconnect, message);
    }
  }

  /** Closes every link (ERROR Shutdown) and the listener; nothing reconnects afterwards. */
  close(): Promise<void> {
    if (!this.closing) this.closing = this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    const wasStarted = this.state === 'started';
    this.state = 'closing';
    for (const s of this.slots.values()) {
      if (s.timer) clearTimeout(s.timer);
      s.timer = null;
    }
    const conns = [...this.conns];
    const message = `node ${this.opts.myId} is shutting down`;
    for (const c of conns) c.end('shutdown', ErrorCode.Shutdown, message, WS_GOING_AWAY);
    await Promise.all(conns.map((c) => c.closed));
    const server = this.server;
    if (server) {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    }
    this.wss?.close();
    this.server = null;
    this.wss = null;
    this.state = 'closed';
    if (wasStarted) this.log.info('replication transport closed');
  }

  private slot(peerId: number): PeerSlot {
    const s = this.slots.get(peerId);
    if (!s) throw new Error(`node ${peerId} is not a peer of resource "${this.opts.resource}"`);
    return s;
  }

  private peerLabel(id: number): string {
    const s = this.slots.get(id);
    return s ? `${id} (${s.peer.name})` : `${id}`;
  }

  /** The HTTP(S) server the WebSocket upgrades arrive on. */
  private async createServer(): Promise<http.Server | https.Server> {
    let server: http.Server | https.Server;
    const t = this.opts.tls;
    if (t) {
      const read = async (what: string, path: string) => {
        try {
          return await readFile(path);
        } catch (e) {
          throw new Error(`cannot read the TLS ${what} ${path}: ${(e as Error).message}`);
        }
      };
      const [cert, key, ca] = await Promise.all([read('certificate', t.cert), read('key', t.key), t.ca ? read('CA certificate', t.ca) : undefined]);
      // Both ends present certificates and both verify them against the CA (mutual TLS). The server checks
      // the caller's certificate itself, in the upgrade handler, to log the refusal with the caller's address.
      server = https.createServer({ cert, key, ca, requestCert: true, rejectUnauthorized: false });
      server.on('tlsClientError', (err: Error & { reason?: string; code?: string }, socket) => {
        const from = socket.remoteAddress ? `from ${hostPort(socket.remoteAddress, socket.remotePort)}` : '(address unknown)';
        this.acceptWarning(`refused a peer ${from}: TLS handshake failed: ${err.reason ? `${err.reason} (${err.code})` : err.message}`);
      });
      this.clientTls = { cert, key, ca, rejectUnauthorized: true };
    } else {
      server = http.createServer();
    }
    server.on('request', (_req, res) => {
      res.writeHead(426, { 'content-type': 'text/plain', connection: 'close' });
      res.end('twindisk replication endpoint: WebSocket connections only\n');
    });
    server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
      if (this.state !== 'started' || !this.wss) {
        socket.destroy();
        return;
      }
      if (socket instanceof tls.TLSSocket && !socket.authorized) {
        const why = socket.authorizationError ? String(socket.authorizationError) : 'no certificate';
        this.acceptWarning(`refused a peer from ${hostPort(socket.remoteAddress, socket.remotePort)}: TLS client certificate not accepted (${why})`);
        socket.once('finish', () => socket.destroy());
        socket.end('HTTP/1.1 403 Forbidden\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
        return;
      }
      this.wss.handleUpgrade(req, socket, head, (ws) => this.accepted(ws, req));
    });
    return server;
  }

  private accepted(ws: WebSocket, req: http.IncomingMessage): void {
    if (this.state !== 'started') {
      ws.terminate();
      return;
    }
    this.conns.add(new Connection(this.owner, ws, hostPort(req.socket.remoteAddress, req.socket.remotePort), null));
  }

  private dial(s: PeerSlot): void {
    if (this.state !== 'started' || !s.enabled || s.link || s.dialing || s.timer) return;
    const { peer } = s;
    const url = `${this.clientTls ? 'wss' : 'ws'}://${hostPort(peer.host, peer.port)}/`;
    const options: WebSocket.ClientOptions = {
      perMessageDeflate: false, maxPayload: MAX_FRAME, handshakeTimeout: this.owner.handshakeMs,
      // A zero masking key: ws then neither copies nor XORs each payload, and the receiver skips unmasking.
      // Masking (RFC 6455 section 5.3) protects browsers' intermediaries; this is node-to-node traffic.
      generateMask: (mask: Buffer) => { mask.fill(0); },
    };
    if (this.clientTls) {
      // The peer's certificate must name its host or its node name.
      const checkServerIdentity = (_servername: string, cert: tls.PeerCertificate) =>
        tls.checkServerIdentity(peer.host, cert) && tls.checkServerIdentity(peer.name, cert);
      Object.assign(options, this.clientTls, { checkServerIdentity });
    }
    let ws: WebSocket;
    try {
      ws = new WebSocket(url, options);
    } catch (e) { // a host that makes no URL: a configuration error, retrying will not help
      this.log.error(`cannot dial peer ${this.peerLabel(peer.id)} at ${url}: ${(e as Error).message}`);
      return;
    }
    const c = new Connection(this.owner, ws, hostPort(peer.host, peer.port), peer);
    s.dialing = c;
    this.conns.add(c);
  }

  /** Schedules the next dial of a peer: backoff doubles from min to max; each wait is drawn from [backoff/2, backoff], at least min. */
  private redial(s: PeerSlot): void {
    if (this.state !== 'started' || !s.dials || !s.enabled || s.link || s.dialing || s.timer) return;
    const wait = Math.max(this.backoff.min, Math.round(s.backoff / 2 + (Math.random() * s.backoff) / 2));
    s.backoff = Math.min(this.backoff.max, s.backoff * 2);
    s.timer = setTimeout(() => {
      s.timer = null;
      this.dial(s);
    }, wait);
  }

  private checkHello(c: Connection, h: HelloFrame): Refusal | null {
    const { myId, resource } = this.opts;
    if (h.version !== WIRE_VERSION) return { code: ErrorCode.BadVersion, why: `protocol version ${h.version}, this node speaks ${WIRE_VERSION}` };
    if (h.resource !== resource) return { code: ErrorCode.WrongResource, why: `wrong resource "${h.resource}", this node serves "${resource}"` };
    if (c.dialed && h.nodeId !== c.dialed.id) return { code: ErrorCode.UnknownNode, why: `it says it is node ${h.nodeId}, expected node ${c.dialed.id}` };
    if (h.nodeId === myId) return { code: ErrorCode.UnknownNode, why: `node ${h.nodeId} is this node's own id` };
    const s = this.slots.get(h.nodeId);
    if (!s) return { code: ErrorCode.UnknownNode, why: `unknown node ${h.nodeId}: not a peer of resource "${resource}"` };
    if (!c.dialed && s.dials) return { code: ErrorCode.UnknownNode, why: `node ${h.nodeId} has the higher id: node ${myId} dials it, not the other way round` };
    if (!s.enabled) return { code: ErrorCode.Disconnect, why: `node ${myId} is disconnected from node ${h.nodeId}`, quiet: true };
    if (this.state !== 'started') return { code: ErrorCode.Shutdown, why: `node ${myId} is shutting down`, quiet: true };
    return null;
  }

  /** Both HELLOs and AUTHs passed: the link replaces any older one to the same peer and goes up. */
  private authenticated(c: Connection): void {
    const s = this.slot(c.peerId);
    if (this.state !== 'started' || !s.enabled) {
      c.end('closed during the handshake', ErrorCode.Disconnect, `node ${this.opts.myId} is not accepting node ${c.peerId}`);
      return;
    }
    if (s.dialing === c) s.dialing = null;
    // The peer restarted and reconnected before its old link timed out: the newer connection wins.
    s.link?.end('replaced by a newer connection from the same peer', ErrorCode.Disconnect, 'replaced by a newer connection');
    if (c.phase !== 'auth') return; // the handler closed it from linkDown of the old link
    s.link = c;
    s.failures = 0;
    s.lastProblem = '';
    c.up();
    this.log.info(c.dialed ? `connected to ${c.who()}` : `accepted ${c.who()}`, { peer: c.peerId });
    this.handler.linkUp(c);
  }

  private ended(c: Connection, reason: string, wasUp: boolean): void {
    this.conns.delete(c);
    if (wasUp) {
      const s = this.slot(c.peerId);
      if (s.link === c) s.link = null;
      this.log.info(`link to peer ${this.peerLabel(c.peerId)} down: ${reason}`, { peer: c.peerId });
      this.handler.linkDown(c, reason);
    }
    if (!c.dialed) return;
    const s = this.slot(c.dialed.id);
    if (s.dialing === c) s.dialing = null;
    // A link that stayed up a while is re-dialled quickly; one that flaps keeps backing off.
    if (wasUp && Date.now() - c.upAt >= this.backoff.max) s.backoff = this.backoff.min;
    if (!wasUp && !c.reported && this.state === 'started' && s.enabled) {
      // The first failure is worth a line; the retries that follow are not.
      const msg = `cannot connect to ${c.who()}: ${reason}; retrying`;
      if (s.failures++ === 0) this.log.info(msg, { peer: s.peer.id });
      else this.log.debug(msg, { peer: s.peer.id });
    }
    this.redial(s);
  }

  /** Logs a refused handshake or a broken link: repeats toward a dialled peer at debug, callers rate-limited. */
  private problem(c: Connection, msg: string, quiet = false): void {
    c.reported = true;
    if (quiet) {
      // Administrative refusals (disconnect, shutdown): one line toward a dialled peer, then debug.
      const first = c.dialed !== null && this.slot(c.dialed.id).failures++ === 0;
      if (first) this.log.info(msg);
      else this.log.debug(msg);
    } else if (c.phase === 'up') {
      this.log.warn(msg, { peer: c.peerId });
    } else if (c.dialed) {
      const s = this.slot(c.dialed.id);
      s.failures++;
      if (s.lastProblem === msg) this.log.debug(msg, { peer: s.peer.id });
      else this.log.warn(msg, { peer: s.peer.id });
      s.lastProblem = msg;
    } else {
      this.acceptWarning(msg);
    }
  }

  private acceptWarning(msg: string): void {
    if (!this.acceptWarnings.allow()) {
      this.log.debug(msg);
      return;
    }
    const suppressed = this.acceptWarnings.takeSuppressed();
    this.log.warn(msg, suppressed ? { suppressed } : {});
  }
}
