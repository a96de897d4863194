// Replication links over WebSockets: one authenticated ws (or wss) connection per peer node, one frame per binary message.
//
// The node with the lower id dials, the higher one accepts. Each new connection runs the handshake, whose decisions
// are engine/replication/session.ts's (a socket-free state machine; this file moves its frames and runs its timeout):
// the dialler sends HELLO, the acceptor answers with a HELLO carrying only a nonce, the dialler proves the secret
// (AUTH), and only then does the acceptor prove it back. Only then does the engine see the link (`LinkHandler.linkUp`).
// Up links are kept alive with PING/PONG; dropped links are re-dialled with backoff.
//
// Anyone can connect to the listener: every caller that does not finish the handshake (refused, wrong secret, silent,
// gone halfway, garbage, failed TLS, plain HTTP) is logged, rate-limited per source address, and counted (`stats`).
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import WebSocket, { WebSocketServer } from 'ws';
import { Logger, RateLimit } from '../engine/log.js';
import { ErrorCode, MAX_FRAME, MAX_NODES } from '../engine/replication/frames.js';
import type { LinkHandler } from '../engine/replication/link.js';
import { type Refusal } from '../engine/replication/session.js';
import { MAX_RESOURCE_NAME } from '../engine/replication/wire.js';
import {
  CLOSE_GRACE_MS, Connection, WS_GOING_AWAY, hostPort, newLinkTraffic, type CorkableSocket, type LinkTraffic, type Owner, type TransportPeer,
} from './connection.js';

export type { LinkTraffic, TransportPeer } from './connection.js';

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
  /**
   * Time a new connection has to complete HELLO and AUTH (and, for a caller, the TLS handshake and the WebSocket
   * upgrade before that). Default 5000 ms.
   */
  handshakeMs?: number;
  /**
   * Warnings about callers that do not finish the handshake: at most `perWindow` per source address per `windowMs`
   * (the rest at debug, counted in the next warning's `suppressed`), and at most `overall` per window for all
   * addresses together. Default 1 per address and 20 overall per 60 s.
   */
  refusalLog?: { perWindow: number; windowMs: number; overall?: number };
}

/** Counters of the transport's connections since it started, for `status` and metrics. */
export interface TransportStats {
  /** WebSocket connections accepted from callers (each then runs the handshake). */
  accepted: number;
  /** Connections this node dialled, and those that never reached the peer's WebSocket (unreachable, refused, TLS or HTTP failure). */
  dials: number;
  dialsFailed: number;
  /** Handshakes that brought a link up (either direction). */
  linksUp: number;
  /** Handshakes refused by either side: another version, wrong resource, unknown node, garbage, failed authentication. */
  handshakesFailed: number;
  /** Of handshakesFailed: a proof of the secret that did not verify (a caller's, here, or ours, at the peer). */
  authFailed: number;
  /** Handshakes refused for an administrative reason (disconnected, shutting down). */
  handshakesDeclined: number;
  /** Handshakes not finished within handshakeMs. */
  handshakesTimedOut: number;
  /** Handshakes the other side gave up halfway (closed the connection, or it broke). */
  handshakesAbandoned: number;
  /** Callers refused before a WebSocket: failed TLS handshake or certificate, plain HTTP, a bad upgrade, silence, a close without a request. */
  connectionsRefused: number;
}

const DEFAULT_BACKOFF = { min: 200, max: 5000 };
const DEFAULT_PING_MS = 2000;
const DEFAULT_HANDSHAKE_MS = 5000;

/**
 * A log limit per source address (the least recently seen forgotten first, beyond `maxAddresses`), under an
 * overall limit for all addresses together: a stranger cannot fill the log, nor hide another's lines for long.
 */
class PerAddressLimit {
  private readonly byAddress = new Map<string, RateLimit>();
  private readonly overall: RateLimit;

  constructor(private readonly perWindow: number, private readonly windowMs: number, overall: number, private readonly maxAddresses = 1024) {
    this.overall = new RateLimit(overall, windowMs);
  }

  /** Whether an event from `address` may be logged now; if so, how many from it were held back since its last one. */
  allow(address: string, now = Date.now()): { suppressed: number } | null {
    let rl = this.byAddress.get(address);
    if (rl) this.byAddress.delete(address); // re-inserted below: most recently seen last
    else rl = new RateLimit(this.perWindow, this.windowMs);
    this.byAddress.set(address, rl);
    if (this.byAddress.size > this.maxAddresses) this.byAddress.delete(this.byAddress.keys().next().value!);
    if (!rl.allow(now)) return null;
    if (!this.overall.allow(now)) {
      rl.suppressed++;
      return null;
    }
    return { suppressed: rl.takeSuppressed() };
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
  /** Warnings about callers (anyone can connect) are rate-limited per source address. */
  private readonly acceptWarnings: PerAddressLimit;
  private readonly counters: TransportStats = {
    accepted: 0, dials: 0, dialsFailed: 0, linksUp: 0, handshakesFailed: 0, authFailed: 0, handshakesDeclined: 0,
    handshakesTimedOut: 0, handshakesAbandoned: 0, connectionsRefused: 0,
  };
  /** What the links to each peer moved, over all its connections (by peer id). */
  private readonly traffic = new Map<number, LinkTraffic>();
  /** Sockets of callers that reached a request, an upgrade or an error (the others are logged when they close). */
  private readonly seenSockets = new WeakSet<object>();
  /** Sockets of callers refused before a WebSocket (logged and counted once). */
  private readonly refusedSockets = new WeakSet<object>();
  /** With tls: sockets whose TLS handshake completed (errors before that are tlsClientError's). */
  private readonly securedSockets = new WeakSet<object>();
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
    const rl = opts.refusalLog ?? { perWindow: 1, windowMs: 60_000 };
    this.acceptWarnings = new PerAddressLimit(rl.perWindow, rl.windowMs, rl.overall ?? 20);
    this.owner = {
      resource: opts.resource,
      secret: opts.secret,
      myId,
      pingMs: opts.pingMs ?? DEFAULT_PING_MS,
      handshakeMs: opts.handshakeMs ?? DEFAULT_HANDSHAKE_MS,
      peerLabel: (id) => this.peerLabel(id),
      admit: (id, proven) => this.admit(id, proven),
      authenticated: (c) => this.authenticated(c),
      frame: (c, f) => this.handler.frame(c, f),
      problem: (c, msg, quiet) => this.problem(c, msg, quiet),
      ended: (c, reason, wasUp) => this.ended(c, reason, wasUp),
    };
  }

  /** Counters of connections and handshakes since the transport was made (a copy). */
  get stats(): TransportStats {
    return { ...this.counters };
  }

  /** Frames and bytes the links to peer `id` moved since start, and the last round trip (null: never up). */
  peerTraffic(id: number): Readonly<LinkTraffic> | null {
    return this.traffic.get(id) ?? null;
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
    this.wss.on('wsClientError', (err: Error, socket: Duplex) => this.refusedCaller(socket, `not a WebSocket upgrade: ${err.message}`, 400));
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
    // A caller has handshakeMs for each step before the handshake too: TLS, then the HTTP upgrade request.
    const hs = this.owner.handshakeMs;
    const timeouts = { headersTimeout: hs, requestTimeout: hs, connectionsCheckingInterval: Math.min(hs, 1000) };
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
      server = https.createServer({ cert, key, ca, requestCert: true, rejectUnauthorized: false, handshakeTimeout: hs, ...timeouts });
      server.on('tlsClientError', (err: Error & { reason?: string; code?: string }, socket: tls.TLSSocket) => {
        const why = err.code === 'ERR_TLS_HANDSHAKE_TIMEOUT' ? `no TLS handshake within ${hs} ms`
          : `TLS handshake failed: ${err.reason ? `${err.reason} (${err.code})` : err.message}`;
        this.refusedCaller(socket, why);
        socket.destroy();
      });
      this.clientTls = { cert, key, ca, rejectUnauthorized: true };
    } else {
      server = http.createServer(timeouts);
    }
    // A caller that connects and goes away without a request (after TLS, with tls) is logged when its socket closes.
    server.on(t ? 'secureConnection' : 'connection', (socket: net.Socket) => {
      if (t) this.securedSockets.add(socket);
      const { remoteAddress, remotePort } = socket; // gone once the socket is closed
      socket.once('close', () => {
        if (!this.seenSockets.has(socket) && this.state === 'started') {
          this.refusedCaller(socket, 'closed the connection without a request', undefined, { remoteAddress, remotePort });
        }
      });
    });
    server.on('clientError', (err: NodeJS.ErrnoException, socket: net.Socket) => {
      if (t && !this.securedSockets.has(socket)) { // before TLS is up: tlsClientError (which follows) logs it
        setImmediate(() => socket.destroy());
        return;
      }
      const timeout = err.code === 'ERR_HTTP_REQUEST_TIMEOUT';
      const why = timeout ? `no WebSocket upgrade within ${hs} ms`
        : err.code === 'ECONNRESET' ? 'connection reset before a WebSocket upgrade'
          : `not HTTP: ${err.message}${err.code ? ` (${err.code})` : ''}`;
      this.refusedCaller(socket, why, timeout ? 408 : 400);
    });
    server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
      this.refusedCaller(req.socket, `an HTTP request, not a WebSocket upgrade (${String(req.method).slice(0, 16)} ${String(req.url).slice(0, 64)})`);
      res.writeHead(426, { 'content-type': 'text/plain', connection: 'close' });
      res.end('twindisk replication endpoint: WebSocket connections only\n');
    });
    server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
      this.seenSockets.add(socket);
      if (this.state !== 'started' || !this.wss) {
        socket.destroy();
        return;
      }
      if (socket instanceof tls.TLSSocket && !socket.authorized) {
        const why = socket.authorizationError ? String(socket.authorizationError) : 'no certificate';
        this.refusedCaller(socket, `TLS client certificate not accepted (${why})`, 403);
        return;
      }
      this.wss.handleUpgrade(req, socket, head, (ws) => this.accepted(ws, req));
    });
    return server;
  }

  /**
   * Logs (rate-limited per address) and counts a caller refused before any frame; answers with an HTTP `status`
   * (when the socket can still take it) and closes the socket.
   */
  private refusedCaller(socket: Duplex & { remoteAddress?: string; remotePort?: number }, why: string, status?: number,
    from: { remoteAddress?: string; remotePort?: number } = socket): void {
    this.seenSockets.add(socket);
    if (!this.refusedSockets.has(socket)) { // e.g. a reset after the answer to a plain request: the same caller
      this.refusedSockets.add(socket);
      this.counters.connectionsRefused++;
      this.acceptWarning(from.remoteAddress ?? '?', `refused a peer from ${hostPort(from.remoteAddress, from.remotePort)}: ${why}`);
    }
    if (status === undefined || socket.destroyed) return;
    if (!socket.writable) {
      socket.destroy();
      return;
    }
    socket.once('finish', () => socket.destroy());
    setTimeout(() => socket.destroy(), CLOSE_GRACE_MS).unref(); // a caller that does not read
    socket.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
  }

  private accepted(ws: WebSocket, req: http.IncomingMessage): void {
    if (this.state !== 'started') {
      ws.terminate();
      return;
    }
    this.counters.accepted++;
    const { remoteAddress, remotePort } = req.socket;
    this.conns.add(new Connection(this.owner, ws, hostPort(remoteAddress, remotePort), remoteAddress ?? '?', null, req.socket as unknown as CorkableSocket));
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
    this.counters.dials++;
    const c = new Connection(this.owner, ws, hostPort(peer.host, peer.port), peer.host, peer);
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

  /**
   * Whether a peer id may link now (version, resource and dial direction are the session's checks). Before its
   * proof of the secret only an unknown node is refused: whether a peer is disconnected is nothing a stranger hears.
   */
  private admit(id: number, proven: boolean): Refusal | null {
    const { myId, resource } = this.opts;
    const s = this.slots.get(id);
    if (!s) return { code: ErrorCode.UnknownNode, why: `unknown node ${id}: not a peer of resource "${resource}"` };
    if (!proven) return null;
    if (!s.enabled) return { code: ErrorCode.Disconnect, why: `node ${myId} is disconnected from node ${id}`, quiet: true };
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
    if (c.phase !== 'handshake') return; // the handler closed it from linkDown of the old link
    s.link = c;
    this.counters.linksUp++;
    s.failures = 0;
    s.lastProblem = '';
    let t = this.traffic.get(c.peerId);
    if (!t) this.traffic.set(c.peerId, (t = newLinkTraffic()));
    c.traffic = t;
    c.up();
    this.log.info(c.dialed ? `connected to ${c.who()}` : `accepted ${c.who()}`, { peer: c.peerId });
    this.handler.linkUp(c);
  }

  private ended(c: Connection, reason: string, wasUp: boolean): void {
    this.conns.delete(c);
    if (!wasUp) this.count(c);
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

  /** Counts how a connection that never came up ended. */
  private count(c: Connection): void {
    const n = this.counters;
    if (c.dialed && !c.opened) {
      n.dialsFailed++;
      return;
    }
    switch (c.handshakeEnd) {
      case 'auth': n.authFailed++; n.handshakesFailed++; break;
      case 'failed': n.handshakesFailed++; break;
      case 'declined': n.handshakesDeclined++; break;
      case 'timeout': n.handshakesTimedOut++; break;
      case 'abandoned': n.handshakesAbandoned++; break;
      case null: break; // closed here (shutdown, disconnect) before it finished
    }
  }

  /** Logs a refused handshake or a broken link: repeats toward a dialled peer at debug, callers rate-limited per address. */
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
      this.acceptWarning(c.address, msg);
    }
  }

  /** A warning about a caller: at most so many per source address (and overall) per window, the rest at debug. */
  private acceptWarning(address: string, msg: string): void {
    const ok = this.acceptWarnings.allow(address);
    if (!ok) {
      this.log.debug(msg);
      return;
    }
    this.log.warn(msg, ok.suppressed ? { suppressed: ok.suppressed } : {});
  }
}
