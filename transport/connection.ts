// One replication connection over a WebSocket: it carries the handshake's frames (engine/replication/session.ts
// decides), then the engine's, with keep-alive PINGs, corking per turn and one close path. ws-link.ts owns the
// listener and the dials that make connections.
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import WebSocket from 'ws';
import { ErrorCode, FrameType, type Frame } from '../engine/replication/frames.js';
import type { PeerLink } from '../engine/replication/link.js';
import { KeepAlive } from '../engine/replication/keepalive.js';
import { HandshakeSession, type Refusal, type Step } from '../engine/replication/session.js';
import { NONCE_SIZE, WireError, decodeFrame, encodeFrame, frameName } from '../engine/replication/wire.js';

/** A peer node as the transport dials it. */
export interface TransportPeer { id: number; name: string; host: string; port: number }

/** After our close frame, how long the peer has to answer before the socket is destroyed. */
export const CLOSE_GRACE_MS = 1000;
/** WebSocket close codes (RFC 6455 section 7.4.1). */
export const WS_NORMAL = 1000;
export const WS_GOING_AWAY = 1001;
export const WS_PROTOCOL_ERROR = 1002;
export const WS_POLICY_VIOLATION = 1008;

export const ERROR_NAMES: Record<number, string> = {
  [ErrorCode.BadVersion]: 'bad version', [ErrorCode.WrongResource]: 'wrong resource', [ErrorCode.UnknownNode]: 'unknown node',
  [ErrorCode.AuthFailed]: 'authentication failed', [ErrorCode.SplitBrain]: 'split brain', [ErrorCode.UnrelatedData]: 'unrelated data',
  [ErrorCode.SizeMismatch]: 'size mismatch', [ErrorCode.Protocol]: 'protocol error', [ErrorCode.Shutdown]: 'shutdown',
  [ErrorCode.TwoPrimaries]: 'two primaries', [ErrorCode.Disconnect]: 'disconnect',
};

/** An ERROR frame's code and message as logs show them ("authentication failed (wrong secret?)", "shutdown: node 0 is shutting down"). */
export function errorText(code: number, message: string): string {
  const name = ERROR_NAMES[code] ?? `error ${code}`;
  return message.startsWith(name) ? message : `${name}: ${message}`;
}

/** Frames and bytes an up link moved (the handshake's not counted) and its last PING round trip: per peer, for metrics. */
export interface LinkTraffic {
  framesSent: number;
  bytesSent: number;
  framesReceived: number;
  bytesReceived: number;
  /** The last PING's round trip in seconds (0 before the first PONG). */
  rttSeconds: number;
}

/** Zeroed traffic counters. */
export function newLinkTraffic(): LinkTraffic {
  return { framesSent: 0, bytesSent: 0, framesReceived: 0, bytesReceived: 0, rttSeconds: 0 };
}

/** How a handshake ended without a link, for the counters. */
export type HandshakeEnd = 'failed' | 'auth' | 'declined' | 'timeout' | 'abandoned';

/** The part of a connection's net.Socket that corking uses. */
export interface CorkableSocket { cork(): void; uncork(): void; destroyed: boolean }

/** What a Connection needs from its transport. */
export interface Owner {
  readonly resource: string;
  readonly secret: string;
  readonly myId: number;
  readonly pingMs: number;
  readonly handshakeMs: number;
  peerLabel(id: number): string;
  /** The node's policy on the peer's id, before (`proven` false) and after its proof of the secret (see SessionOptions.admit). */
  admit(peerId: number, proven: boolean): Refusal | null;
  authenticated(c: Connection): void;
  frame(c: Connection, f: Frame): void;
  /** Logs a refused handshake or a broken link (rate-limited or de-duplicated by the transport). */
  problem(c: Connection, msg: string, quiet?: boolean): void;
  ended(c: Connection, reason: string, wasUp: boolean): void;
}

/** `host:port`, with brackets around IPv6 addresses. */
export function hostPort(host: string | undefined, port: number | undefined): string {
  const h = host ?? '?';
  return `${h.includes(':') ? `[${h}]` : h}:${port ?? '?'}`;
}

/** One WebSocket to a (would-be) peer: runs the handshake, then carries frames; the engine's PeerLink once up. */
export class Connection implements PeerLink {
  phase: 'handshake' | 'up' | 'closed' = 'handshake';
  /** The problem that ended the connection was logged already. */
  reported = false;
  /** When the link went up (Date.now()). */
  upAt = 0;
  /** The WebSocket opened (a dial that never got this far is a failed dial, not a failed handshake). */
  opened = false;
  /** How the handshake ended without a link, when it did. */
  handshakeEnd: HandshakeEnd | null = null;
  /** Resolves when the socket is closed. */
  readonly closed: Promise<void>;
  /** The handshake's decisions. */
  private readonly session: HandshakeSession;
  /** The handshake timeout, then the PING interval. */
  private timer: NodeJS.Timeout | null = null;
  private graceTimer: NodeJS.Timeout | null = null;
  /** A frame arrived since the last PING tick, and how many ticks passed without one. */
  /** The keep-alive's decisions (engine/replication/keepalive.ts); this file runs its timer. */
  private keepAlive: KeepAlive | null = null;
  private corked = false;
  /**
   * The connection's TCP (or TLS) socket, for corking: the upgrade request's socket for a caller, the
   * upgrade response's for a dial (ws's public 'upgrade' event); ws keeps its own copy private.
   */
  private sock: CorkableSocket | null;
  private socketError: string | null = null;
  private peerError: string | null = null;
  /** What the link moved; the transport hands it the peer's counters once the link is up, so they outlive the connection. */
  traffic: LinkTraffic = newLinkTraffic();
  /** The last PING sent: its seq and when (performance.now()), for the round trip. */
  private pingSeq = -1;
  private pingAt = 0;

  /**
   * `remote` is the peer's host:port for logs, `address` its IP address (the key of the per-address log limit);
   * `dialed` is the peer this node dialled, null for a caller.
   */
  constructor(private readonly owner: Owner, private readonly ws: WebSocket, readonly remote: string, readonly address: string, readonly dialed: TransportPeer | null,
    socket: CorkableSocket | null = null) {
    this.sock = socket;
    if (!socket) ws.once('upgrade', (res: http.IncomingMessage) => { this.sock = res.socket as unknown as CorkableSocket; });
    this.session = new HandshakeSession({
      role: dialed ? 'dialler' : 'acceptor', secret: owner.secret, resource: owner.resource, myId: owner.myId,
      nonce: randomBytes(NONCE_SIZE), peerId: dialed?.id, admit: (id, proven) => owner.admit(id, proven),
    });
    this.closed = new Promise((resolve) => ws.once('close', () => resolve()));
    ws.on('message', (data, isBinary) => this.receive(data as Buffer, isBinary));
    ws.on('error', (err: Error & { code?: string }) => this.socketFailed(err));
    ws.on('close', (code) => this.socketClosed(code));
    if (ws.readyState === WebSocket.OPEN) this.start();
    else ws.once('open', () => this.start());
    this.timer = setTimeout(() => this.handshakeTimedOut(), owner.handshakeMs);
  }

  /** The peer's node id: the dialled one, or the one a caller's HELLO claimed once admitted (-1 before); proven once up. */
  get peerId(): number {
    return this.session.peerId;
  }

  get buffered(): number {
    return this.ws.bufferedAmount;
  }

  /** Sends a frame on an up link; a no-op once closed. */
  send(frame: Frame): void {
    if (this.phase !== 'up') return;
    this.cork();
    const bytes = encodeFrame(frame);
    this.traffic.framesSent++;
    this.traffic.bytesSent += bytes.length;
    this.ws.send(bytes);
  }

  /** Sends an encoded frame as is (the caller keeps the bytes unchanged until the peer answered). */
  sendEncoded(bytes: Buffer, onSent?: () => void): void {
    if (this.phase !== 'up') {
      onSent?.();
      return;
    }
    this.cork();
    this.traffic.framesSent++;
    this.traffic.bytesSent += bytes.length;
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

  private socket(): CorkableSocket | null {
    return this.sock;
  }

  /** The engine closes the link: an ERROR frame says why, then the socket closes and `linkDown` follows. */
  close(code: ErrorCode, message: string): void {
    this.end(`closed locally: ${message}`, code, message);
  }

  /** Who is at the other end, for logs: a caller's claim of a node id is only a claim until the link is up. */
  who(): string {
    if (this.dialed) return `peer ${this.owner.peerLabel(this.dialed.id)} at ${this.remote}`;
    if (this.phase === 'up') return `peer ${this.owner.peerLabel(this.peerId)} from ${this.remote}`;
    if (this.peerId >= 0) return `a peer from ${this.remote} claiming to be node ${this.owner.peerLabel(this.peerId)}`;
    return `a peer from ${this.remote}`;
  }

  /** The handshake passed: start keep-alive. */
  up(): void {
    this.phase = 'up';
    this.upAt = Date.now();
    if (this.timer) clearTimeout(this.timer);
    this.keepAlive = new KeepAlive(this.owner.pingMs);
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

  /** The WebSocket is open: the handshake starts (the dialler sends its HELLO). */
  private start(): void {
    if (this.phase !== 'handshake') return;
    this.opened = true;
    this.apply(this.session.start());
  }

  /** Sends what the handshake says to send, then acts on its outcome. */
  private apply(step: Step): void {
    for (const f of step.send) this.ws.send(encodeFrame(f));
    const o = step.outcome;
    switch (o.kind) {
      case 'continue': return;
      case 'up': return this.owner.authenticated(this);
      case 'refuse': return this.refuse(o.refusal);
      case 'refused': {
        const why = errorText(o.code, o.message);
        const quiet = o.code === ErrorCode.Disconnect || o.code === ErrorCode.Shutdown;
        this.handshakeEnd = o.code === ErrorCode.AuthFailed ? 'auth' : quiet ? 'declined' : 'failed';
        this.owner.problem(this, `${this.who()} refused the connection: ${why}`, quiet);
        return this.end(`refused by the peer: ${why}`);
      }
    }
  }

  private receive(data: Buffer, isBinary: boolean): void {
    if (this.phase === 'closed') return;
    if (this.phase === 'handshake') {
      if (!isBinary) return this.apply(this.session.malformed('a text message (frames are binary)'));
      let f: Frame;
      try {
        f = decodeFrame(data);
      } catch (e) {
        if (!(e instanceof WireError)) throw e;
        return this.apply(this.session.malformed(e.message, data));
      }
      return this.apply(this.session.receive(f));
    }
    if (!isBinary) return this.protocolError('a text message (frames are binary)');
    this.traffic.framesReceived++;
    this.traffic.bytesReceived += data.length;
    let f: Frame;
    try {
      f = decodeFrame(data);
    } catch (e) {
      if (!(e instanceof WireError)) throw e;
      return this.protocolError(e.message);
    }
    const pong = this.keepAlive!.received(f);
    switch (f.type) {
      case FrameType.Ping:
        this.sendControl(encodeFrame(pong!));
        return;
      case FrameType.Pong:
        if (f.seq === this.pingSeq) {
          this.traffic.rttSeconds = (performance.now() - this.pingAt) / 1000;
          this.pingSeq = -1;
        }
        return;
      case FrameType.Hello:
      case FrameType.Auth:
        return this.protocolError(`${frameName(f.type)} after the handshake`);
      case FrameType.Error:
        this.peerError = errorText(f.code, f.message);
        break;
    }
    this.owner.frame(this, f);
  }

  /** Refuses the peer during the handshake: logs, counts, sends an ERROR frame saying why and closes. */
  private refuse(r: Refusal): void {
    this.handshakeEnd = r.code === ErrorCode.AuthFailed ? 'auth' : r.quiet ? 'declined' : 'failed';
    const protocol = r.code === ErrorCode.Protocol;
    const why = protocol ? `protocol error: ${r.why}` : r.why;
    this.owner.problem(this, `refused ${this.who()}: ${why}`, r.quiet);
    this.end(protocol ? why : `refused: ${why}`, r.code, r.why, protocol ? WS_PROTOCOL_ERROR : WS_POLICY_VIOLATION);
  }

  private protocolError(why: string): void {
    if (this.phase === 'handshake') {
      const p = this.session.phase;
      return p === 'hello' || p === 'auth' ? this.apply(this.session.malformed(why)) : this.refuse({ code: ErrorCode.Protocol, why });
    }
    this.owner.problem(this, `closed the link to ${this.who()}: protocol error: ${why}`);
    this.end(`protocol error: ${why}`, ErrorCode.Protocol, why, WS_PROTOCOL_ERROR);
  }

  private handshakeTimedOut(): void {
    this.timer = null;
    if (this.phase !== 'handshake') return;
    const why = `no handshake within ${this.owner.handshakeMs} ms (${this.session.progress()})`;
    this.handshakeEnd = 'timeout';
    // A dialled peer's silence is a dial failure (logged by the transport); a silent caller is refused.
    if (!this.dialed) this.owner.problem(this, `refused ${this.who()}: ${why}`);
    this.end(why, ErrorCode.Protocol, why, WS_POLICY_VIOLATION);
  }

  private pingTick(): void {
    const step = this.keepAlive!.tick();
    if (step.kind === 'dead') {
      this.owner.problem(this, `closed the link to ${this.who()}: ${step.why}`);
      this.end(step.why, undefined, undefined, WS_NORMAL, true);
      return;
    }
    this.pingSeq = step.frame.seq;
    this.pingAt = performance.now();
    this.sendControl(encodeFrame(step.frame));
  }

  /** Sends a keep-alive frame (PING, PONG), counted. */
  private sendControl(bytes: Buffer): void {
    this.traffic.framesSent++;
    this.traffic.bytesSent += bytes.length;
    this.ws.send(bytes);
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
    if (this.phase === 'handshake' && this.opened) {
      // Gone halfway: a caller is logged here (a dialled peer's is a dial failure, logged by the transport).
      this.handshakeEnd = 'abandoned';
      const how = this.socketError ? `: ${this.socketError}` : '';
      if (!this.dialed) this.owner.problem(this, `${this.who()} went away during the handshake (${this.session.progress()})${how}`);
    }
    this.end(reason);
  }
}
