// What the replication engine needs from a transport: authenticated links to peer nodes that carry frames.
// The engine knows no sockets; transport/ws-link.ts implements this over WebSockets.
import type { ErrorCode, Frame } from './frames.js';

/** One authenticated connection to a peer node. */
export interface PeerLink {
  /** The peer's node id (0..31). */
  readonly peerId: number;
  /** Encodes and sends a frame; a no-op once the link is closed. */
  send(frame: Frame): void;
  /**
   * Sends a frame encoded by the caller (a DATA frame built in place around its payload). The caller
   * must not change the bytes until the peer has acknowledged the frame, or until `onSent` is called:
   * once the transport reads them no more (written to the socket, or the link closed; at once on a
   * closed link).
   */
  sendEncoded(bytes: Buffer, onSent?: () => void): void;
  /** Writes the frames held back for this turn's batch to the socket now (absent: frames leave at once). */
  flush?(): void;
  /** Bytes queued for sending and not yet written to the socket (for flow control). */
  readonly buffered: number;
  /**
   * Resolves when the connection's socket is closed and no byte of a frame handed to `sendEncoded`
   * can be read by the transport any more (absent: at once).
   */
  readonly closed?: Promise<void>;
  /** Sends an Error frame saying why, then closes. */
  close(code: ErrorCode, message: string): void;
}

/** The engine's side of a transport: called on the main event loop. */
export interface LinkHandler {
  /** A link to `link.peerId` passed HELLO and mutual authentication. At most one is up per peer. */
  linkUp(link: PeerLink): void;
  /** A frame arrived on an up link (HELLO and AUTH never reach here). */
  frame(link: PeerLink, frame: Frame): void;
  /** The link went down (peer closed, network error, ping timeout, protocol error, local close). */
  linkDown(link: PeerLink, reason: string): void;
}

/** Administrative control of the transport's links (`twindisk connect` / `disconnect`, split-brain refusal). */
export interface LinkControl {
  /** Lets the transport link with the peer again. */
  connect(peerId: number): void;
  /** Drops the link to the peer and keeps it down until `connect`. */
  disconnect(peerId: number): void;
}
