// The handshake of a replication link as a pure state machine: frames in, frames to send and a decision out.
// No sockets, no timers, no randomness (the caller gives the nonce): transport/ws-link.ts moves the frames, runs
// the handshake timeout and logs; the tests drive the machine alone.
//
// The node with the lower id dials the configured address of the higher one. The order:
//
//   dialler  -> HELLO(version, dialler id, resource, nonce_d)
//   acceptor -> HELLO(version, acceptor id, resource, nonce_a)   a fresh random nonce: nothing keyed with the secret
//   dialler  -> AUTH(authMac(secret, 'dialler', T))              T: resource, both node ids, nonce_d, nonce_a
//   acceptor    verifies it, and only then
//   acceptor -> AUTH(authMac(secret, 'acceptor', T))             the acceptor's link is up
//   dialler     verifies it                                      the dialler's link is up
//
// So a caller that has not proven the secret learns nothing it could test guesses of the secret against offline:
// all it gets is a random nonce, and each wrong guess costs it a connection, refused and logged by the acceptor.
// Each MAC covers both nonces, so it is good for one handshake only (each side's own nonce is fresh: a recorded
// AUTH does not verify again), and names its direction and both node ids, so it is never accepted back by its
// sender (a reflected AUTH) nor as another node's.
//
// What remains (README, "Links"): the dialler proves the secret first, to whatever answers at the peer's
// configured address. Someone who can take that address over, or sits on the path, and answers the HELLO gets one
// dialler MAC per dial and can test guesses of the secret against it offline. Only a check of who answers before
// the dialler speaks prevents this: configure `tls` (mutual TLS: the dialler verifies the acceptor's certificate
// before any frame is sent) and use a strong random secret (`twindisk gen-secret`). Without tls the frames after
// the handshake are not protected by the secret either.
import { ErrorCode, FrameType, WIRE_VERSION, type Frame, type HelloFrame } from './frames.js';
import { NONCE_SIZE, authMac, frameName, verifyAuth, type AuthSender, type AuthTranscript } from './wire.js';

/** Why a handshake is refused: the code and reason sent to the peer in an ERROR frame (and logged); `quiet` for administrative ones. */
export interface Refusal { code: ErrorCode; why: string; quiet?: boolean }

/** The reason given when a proof of the secret does not verify. */
export const AUTH_FAILED = 'authentication failed (wrong secret?)';

export interface SessionOptions {
  /** 'dialler': this node connected to the peer (it has the lower id); 'acceptor': the peer connected to this node. */
  role: AuthSender;
  secret: string;
  resource: string;
  myId: number;
  /** NONCE_SIZE fresh random bytes, used for this connection only. */
  nonce: Uint8Array;
  /** The dialler's peer: the node id configured at the address it dialled (required for the dialler). */
  peerId?: number;
  /**
   * The node's policy on the peer's id; null admits it. Asked twice: with `proven` false once a HELLO's version,
   * resource and id passed (nothing it says is proven yet: refuse only what no proof could change, an unknown node),
   * then with `proven` true once the peer's AUTH verified and before this node's AUTH (the acceptor's) is sent (a
   * peer disconnected by the administrator, a node shutting down). So a stranger learns no more than that the id
   * is a peer's, and an administrative refusal is only ever given to the real peer.
   */
  admit?(peerId: number, proven: boolean): Refusal | null;
}

/** What the transport does after a step. */
export type Outcome =
  /** The handshake goes on (send the frames, wait for the next one). */
  | { kind: 'continue' }
  /** Both sides proved the secret (the acceptor: the dialler did, and its own AUTH is in `send`): the link to `peerId` is up. */
  | { kind: 'up'; peerId: number }
  /** Refuse the peer: send ERROR(code, why), close and log. */
  | { kind: 'refuse'; refusal: Refusal }
  /** The peer refused this node with an ERROR frame. */
  | { kind: 'refused'; code: number; message: string };

/** Frames to send, in order, then the outcome. */
export interface Step { send: Frame[]; outcome: Outcome }

/** new: start() not called; hello / auth: waiting for the peer's HELLO / AUTH; up; failed: refused either way. */
export type SessionPhase = 'new' | 'hello' | 'auth' | 'up' | 'failed';

const CONTINUE: Outcome = { kind: 'continue' };

/** One connection's handshake, from either end. */
export class HandshakeSession {
  private state: SessionPhase = 'new';
  private claimed = -1;
  private peerNonce: Uint8Array | null = null;
  private readonly nonce: Uint8Array;

  constructor(private readonly o: SessionOptions) {
    if (o.role !== 'dialler' && o.role !== 'acceptor') throw new RangeError(`session role ${String(o.role)} is not dialler or acceptor`);
    if (!(o.nonce instanceof Uint8Array) || o.nonce.length !== NONCE_SIZE) throw new RangeError(`the nonce must be ${NONCE_SIZE} bytes`);
    if (o.role === 'dialler' && o.peerId === undefined) throw new RangeError('a dialler needs the peer id it dialled');
    this.nonce = Uint8Array.from(o.nonce);
  }

  get phase(): SessionPhase {
    return this.state;
  }

  get role(): AuthSender {
    return this.o.role;
  }

  /**
   * The peer's node id once its HELLO was admitted (-1 before): proven only once the phase is 'up'.
   * A dialler knows it from the start (the node it dialled).
   */
  get peerId(): number {
    return this.o.role === 'dialler' ? this.o.peerId! : this.claimed;
  }

  /** Opens the handshake: the dialler sends its HELLO; the acceptor sends nothing and waits for the dialler's. */
  start(): Step {
    if (this.state !== 'new') throw new Error(`the handshake was started already (${this.state})`);
    this.state = 'hello';
    return { send: this.o.role === 'dialler' ? [this.hello()] : [], outcome: CONTINUE };
  }

  /** A frame from the peer, decoded. */
  receive(f: Frame): Step {
    if (this.state !== 'hello' && this.state !== 'auth') throw new Error(`the handshake is ${this.state}: it takes no frame`);
    if (f.type === FrameType.Error) {
      this.state = 'failed';
      return { send: [], outcome: { kind: 'refused', code: f.code, message: f.message } };
    }
    if (this.state === 'hello') {
      if (f.type !== FrameType.Hello) return this.fail(ErrorCode.Protocol, `expected HELLO, got ${frameName(f.type)}`);
      return this.peerHello(f);
    }
    if (f.type !== FrameType.Auth) return this.fail(ErrorCode.Protocol, `expected AUTH, got ${frameName(f.type)}`);
    return this.peerAuth(f.mac);
  }

  /**
   * A message from the peer that is not a frame (`why` says what is wrong; `data`, the bytes if any). A HELLO of
   * another protocol version may not decode: it is refused as a version mismatch, not as a protocol error.
   */
  malformed(why: string, data?: Uint8Array): Step {
    if (this.state !== 'hello' && this.state !== 'auth') throw new Error(`the handshake is ${this.state}: it takes no message`);
    if (this.state === 'hello' && data && data.length >= 3 && data[0] === FrameType.Hello) {
      const version = data[1]! | (data[2]! << 8);
      if (version !== WIRE_VERSION) return this.fail(ErrorCode.BadVersion, versionWhy(version));
    }
    return this.fail(ErrorCode.Protocol, why);
  }

  /** Where an unfinished handshake stopped, for logs. */
  progress(): string {
    const acceptor = this.o.role === 'acceptor';
    switch (this.state) {
      case 'new': return acceptor ? 'no HELLO' : 'not connected';
      case 'hello': return acceptor ? 'no HELLO' : 'no HELLO from the peer';
      case 'auth': return acceptor ? `HELLO as node ${this.claimed}, then no AUTH` : 'no AUTH from the peer';
      case 'up': return 'done';
      case 'failed': return 'refused';
    }
  }

  private hello(): Frame {
    return { type: FrameType.Hello, version: WIRE_VERSION, nodeId: this.o.myId, resource: this.o.resource, nonce: this.nonce };
  }

  private peerHello(h: HelloFrame): Step {
    const refusal = this.checkHello(h);
    if (refusal) return this.refuse(refusal);
    this.claimed = h.nodeId;
    this.peerNonce = Uint8Array.from(h.nonce);
    this.state = 'auth';
    // The acceptor answers with its nonce only; the dialler, which has both nonces now, proves the secret first.
    if (this.o.role === 'acceptor') return { send: [this.hello()], outcome: CONTINUE };
    return { send: [{ type: FrameType.Auth, mac: authMac(this.o.secret, 'dialler', this.transcript()) }], outcome: CONTINUE };
  }

  private peerAuth(mac: Uint8Array): Step {
    const peerRole: AuthSender = this.o.role === 'dialler' ? 'acceptor' : 'dialler';
    const t = this.transcript();
    if (!verifyAuth(this.o.secret, peerRole, t, mac)) return this.fail(ErrorCode.AuthFailed, AUTH_FAILED);
    const refusal = this.o.admit?.(this.peerId, true);
    if (refusal) return this.refuse(refusal);
    this.state = 'up';
    // The dialler proved the secret: only now does the acceptor send anything keyed with it.
    const send: Frame[] = this.o.role === 'acceptor' ? [{ type: FrameType.Auth, mac: authMac(this.o.secret, 'acceptor', t) }] : [];
    return { send, outcome: { kind: 'up', peerId: this.peerId } };
  }

  private checkHello(h: HelloFrame): Refusal | null {
    const { myId, resource, role } = this.o;
    if (h.version !== WIRE_VERSION) return { code: ErrorCode.BadVersion, why: versionWhy(h.version) };
    if (h.resource !== resource) return { code: ErrorCode.WrongResource, why: `wrong resource "${h.resource}", this node serves "${resource}"` };
    if (role === 'dialler' && h.nodeId !== this.o.peerId) return { code: ErrorCode.UnknownNode, why: `it says it is node ${h.nodeId}, expected node ${this.o.peerId}` };
    if (h.nodeId === myId) return { code: ErrorCode.UnknownNode, why: `node ${h.nodeId} is this node's own id` };
    const refusal = this.o.admit?.(h.nodeId, false);
    if (refusal) return refusal;
    // The lower id dials: a HELLO from the wrong side is a misconfiguration (or someone else).
    if (role === 'acceptor' && h.nodeId > myId) return { code: ErrorCode.UnknownNode, why: `node ${h.nodeId} has the higher id: node ${myId} dials it, not the other way round` };
    if (role === 'dialler' && h.nodeId < myId) return { code: ErrorCode.UnknownNode, why: `node ${h.nodeId} has the lower id: it dials node ${myId}, not the other way round` };
    if (Buffer.from(h.nonce).equals(this.nonce)) return { code: ErrorCode.Protocol, why: 'the HELLO carries this node\'s own nonce (reflected?)' };
    return null;
  }

  private transcript(): AuthTranscript {
    const mine = this.o.myId;
    const theirs = this.peerId;
    return this.o.role === 'dialler'
      ? { resource: this.o.resource, diallerId: mine, acceptorId: theirs, diallerNonce: this.nonce, acceptorNonce: this.peerNonce! }
      : { resource: this.o.resource, diallerId: theirs, acceptorId: mine, diallerNonce: this.peerNonce!, acceptorNonce: this.nonce };
  }

  private fail(code: ErrorCode, why: string): Step {
    return this.refuse({ code, why });
  }

  private refuse(refusal: Refusal): Step {
    this.state = 'failed';
    return { send: [], outcome: { kind: 'refuse', refusal } };
  }
}

function versionWhy(version: number): string {
  return `protocol version ${version}, this node speaks ${WIRE_VERSION}`;
}
