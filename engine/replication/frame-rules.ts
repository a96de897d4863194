// Which frames a peer may send in which state: one table, checked before any handler runs (DRBD's receiver does the same).
//
// A frame outside its states is a protocol violation whatever its content, from a confused peer (a stale
// Primary after a partition, another version) or a hostile one that knows the secret: the link is closed
// with a log line naming the frame and the state, and nothing is touched. Pure: no I/O, no Resource.
import { FrameType, type Role } from './frames.js';
import { frameName } from './wire.js';

/** A node's replication state toward one peer, as DRBD names them. */
export type Replication = 'Off' | 'Handshake' | 'WFBitMap' | 'Established' | 'SyncSource' | 'SyncTarget' | 'SplitBrain';

/** What the rules look at: this node's view of one link when a frame arrives on it. */
export interface FrameContext {
  /** The peer's first STATE has arrived: the handshake has its first step. */
  peerState: boolean;
  /** This node's replication state toward the peer. */
  replication: Replication;
  /** The peer's role as its last STATE said (null before any). */
  peerRole: Role | null;
  myRole: Role;
  /** This node has a disk in the resource file (a diskless node never receives writes). */
  myDisk: boolean;
  allowTwoPrimaries: boolean;
  /** Answers to resync requests of ours that a new handshake abandoned are still on their way. */
  staleResyncAnswers: boolean;
}

/** States in which a peer with a disk takes part in replication (the Primary sends it every write). */
const REPLICATING: ReadonlySet<Replication> = new Set(['WFBitMap', 'Established', 'SyncSource', 'SyncTarget']);

/** Why a frame is refused in `ctx`, or null when it is allowed. */
export type Rule = (ctx: FrameContext) => string | null;

const always: Rule = () => null;
const never = (why: string): Rule => () => why;
/** Every frame but STATE and ERROR waits for the peer's first STATE. */
const afterState = (rule: Rule): Rule => (c) => (c.peerState ? rule(c) : 'before the peer\'s first STATE (the handshake has not started)');

/** Writes (DATA, TRIM, FLUSH): only from a Primary, into a replicating node that is not Primary unless two are allowed. */
const fromPrimary: Rule = afterState((c) => {
  if (c.peerRole !== 'Primary') return `the peer is ${c.peerRole ?? 'of unknown role'}, and only a Primary replicates writes`;
  if (!c.myDisk) return 'this node is diskless';
  if (c.myRole === 'Primary' && !c.allowTwoPrimaries) return 'this node is Primary and allow-two-primaries is off';
  if (!REPLICATING.has(c.replication)) return `replication is ${c.replication}`;
  return null;
});

const readFromPrimary: Rule = afterState((c) => (c.peerRole === 'Primary' ? null : `the peer is ${c.peerRole ?? 'of unknown role'}, and only a Primary reads through its peers`));
const linked: Rule = afterState(() => null);
const inState = (...states: Replication[]): Rule => afterState((c) => (states.includes(c.replication) ? null : `replication is ${c.replication}, not ${states.join(' or ')}`));
const resyncAnswer: Rule = afterState((c) => (c.replication === 'SyncTarget' || c.staleResyncAnswers ? null : `replication is ${c.replication} and no resync request of this node is outstanding`));
const transportOnly = never('the transport handles it; it never reaches the engine');

/**
 * The table: for each frame type, when a peer may send it. Frame types missing here are refused.
 * - STATE and ERROR: any time after authentication.
 * - BITMAP: during the bitmap exchange (WFBitMap) only.
 * - DATA, TRIM, FLUSH: see fromPrimary.
 * - ACK, READ_REPLY, VERIFY_REPLY: after the peer's state (they answer this node's requests by seq; an unknown seq is ignored).
 * - READ_REQUEST: from a Primary (a diskless one, or one that is a SyncTarget or had a read error).
 * - RS_REQUEST, CSUM_REQUEST, RS_DONE: only to a SyncSource (this node) from its SyncTarget.
 * - RS_DATA, RS_IN_SYNC: only to a SyncTarget, or to a node whose abandoned requests are still answered.
 * - VERIFY_REQUEST: on an established link (verify runs between UpToDate replicas; it reads only).
 * - RESIZE: on an established link (no resync or bitmap exchange under way: bitmaps change size); RESIZE_ACK
 *   after the peer's state (it answers this node's RESIZE by seq; an unknown seq is ignored).
 * - HELLO, AUTH, PING, PONG: never; the transport consumes them.
 */
export const FRAME_RULES: Readonly<Record<number, Rule>> = {
  [FrameType.Hello]: transportOnly,
  [FrameType.Auth]: transportOnly,
  [FrameType.Ping]: transportOnly,
  [FrameType.Pong]: transportOnly,
  [FrameType.State]: always,
  [FrameType.Error]: always,
  [FrameType.Bitmap]: inState('WFBitMap'),
  [FrameType.Data]: fromPrimary,
  [FrameType.Trim]: fromPrimary,
  [FrameType.Flush]: fromPrimary,
  [FrameType.Ack]: linked,
  [FrameType.ReadRequest]: readFromPrimary,
  [FrameType.ReadReply]: linked,
  [FrameType.ResyncRequest]: inState('SyncSource'),
  [FrameType.ChecksumRequest]: inState('SyncSource'),
  [FrameType.ResyncDone]: inState('SyncSource'),
  [FrameType.ResyncData]: resyncAnswer,
  [FrameType.ResyncInSync]: resyncAnswer,
  [FrameType.VerifyRequest]: inState('Established', 'SyncSource', 'SyncTarget', 'WFBitMap'),
  [FrameType.VerifyReply]: linked,
  [FrameType.Resize]: inState('Established'),
  [FrameType.ResizeAck]: linked,
};

/** Null when a frame of `type` may arrive in `ctx`; otherwise the log line's reason, naming the frame and the state. */
export function refuseFrame(type: number, ctx: FrameContext): string | null {
  const rule = FRAME_RULES[type];
  const why = rule ? rule(ctx) : 'unknown frame type';
  if (why === null) return null;
  return `${frameName(type)} refused (this node ${ctx.myRole}, peer ${ctx.peerRole ?? 'before STATE'}, replication ${ctx.replication}): ${why}`;
}
