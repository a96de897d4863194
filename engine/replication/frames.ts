// The replication protocol's messages as typed values: what nodes of one resource say to each other.
// The byte layout lives in wire.ts (a pure codec); the transport (ws) only moves whole frames.

/**
 * Protocol version spoken by this build; a peer with another version is refused at HELLO.
 * 2: the acceptor answers HELLO with a bare nonce and proves the secret only after the dialler has (session.ts).
 * 3: RESIZE and RESIZE_ACK (online resize).
 */
export const WIRE_VERSION = 3;
/** Largest frame accepted from the network: a 1 MiB payload plus headers. */
export const MAX_FRAME = (1 << 20) + 4096;
/** Largest payload in DATA, RS_DATA and READ_REPLY frames (requests are split to fit). */
export const MAX_PAYLOAD = 1 << 20;
/** Node ids are 0..31 (DRBD 9 allows up to 32 nodes per resource). */
export const MAX_NODES = 32;

export const enum FrameType {
  Hello = 1,
  Auth = 2,
  State = 3,
  Bitmap = 4,
  Data = 5,
  Ack = 6,
  Flush = 7,
  Trim = 8,
  ResyncRequest = 9,
  ResyncData = 10,
  ResyncInSync = 11,
  ReadRequest = 12,
  ReadReply = 13,
  VerifyRequest = 14,
  VerifyReply = 15,
  Ping = 16,
  Pong = 17,
  Error = 18,
  ChecksumRequest = 19,
  ResyncDone = 20,
  Resize = 21,
  ResizeAck = 22,
}

/** Roles as DRBD names them. */
export type Role = 'Primary' | 'Secondary';
/** Local disk states as DRBD names them. */
export type DiskState = 'UpToDate' | 'Inconsistent' | 'Outdated' | 'Diskless' | 'Failed';

/** Wire codes of the roles and disk states (one byte each). */
export const ROLE_CODES: readonly Role[] = ['Secondary', 'Primary'];
export const DISK_CODES: readonly DiskState[] = ['Diskless', 'Inconsistent', 'Outdated', 'UpToDate', 'Failed'];

/** ACK kinds: protocol B acknowledges receipt, protocol C the completed write on the peer's disk. */
export const enum AckKind {
  Received = 1,
  Written = 2,
}

/** Flags of a DATA frame. */
export const DATA_FUA = 1;
/** TRIM modes: discard (may deallocate) or write zeroes (with or without unmap). */
export const TRIM_DISCARD = 1;
export const TRIM_ZEROES = 2;
export const TRIM_ZEROES_UNMAP = 3;

/** STATE flags. */
export const STATE_CRASHED_PRIMARY = 1; // the node was Primary and did not demote cleanly
export const STATE_WANT_RESYNC = 2; // the sender asks for a new handshake (primary --force, verify --resync)
export const STATE_DISCARD_MY_DATA = 4; // after a split brain, the sender gives up its changes (connect --discard-my-data)

/**
 * Generation identifiers (DRBD's UUIDs): 64-bit random values naming a state of the data.
 * `bitmap[id]` is the generation the node's out-of-sync bitmap toward node `id` is relative to (0: none);
 * `history` holds earlier current generations, newest first.
 */
export interface Generations {
  current: bigint;
  bitmap: bigint[]; // length MAX_NODES, index = peer node id
  history: bigint[]; // at most MAX_HISTORY
}

/** Most earlier generations a node remembers (in its superblock and its STATE): the one bound. */
export const MAX_HISTORY = 4;

/** Moves `g` to generation `next`: its current one becomes the newest entry of its (bounded) history. */
export function advanceGenerations(g: Generations, next: bigint): void {
  g.history = [g.current, ...g.history].slice(0, MAX_HISTORY);
  g.current = next;
}

/** Generations as a reader sees them (Metadata.gens: changed only through its methods). */
export interface ReadonlyGenerations {
  readonly current: bigint;
  readonly bitmap: readonly bigint[];
  readonly history: readonly bigint[];
}

/**
 * First frame from each side of a new connection, the dialler's first: who I am and a fresh nonce the other's
 * AUTH must cover. Nothing in it is keyed with the secret (see session.ts for the handshake's order).
 */
export interface HelloFrame { type: FrameType.Hello; version: number; nodeId: number; resource: string; nonce: Uint8Array /* 32 bytes */ }
/** Proof of the secret: an HMAC over both nonces, both node ids, the resource and the sender's direction (wire.ts authMac). */
export interface AuthFrame { type: FrameType.Auth; mac: Uint8Array /* 32 bytes */ }
/** The sender's role, disk, size and generations; sent after auth and whenever any of them change. */
export interface StateFrame {
  type: FrameType.State;
  role: Role;
  disk: DiskState;
  /** Usable volume size in bytes (0 for a diskless node). */
  size: number;
  flags: number;
  gens: Generations;
  /** When the node last became Primary (ms since the epoch; 0: never). For discard-younger-primary. */
  promotedAt: number;
  /** Bits set in the sender's out-of-sync bitmap toward the receiver. */
  outOfSyncBits: number;
  /** Set when the sender has quorum. */
  quorum: boolean;
  /**
   * While the sender is (or was, before a crash) a SyncTarget: the data generation it is resyncing to
   * (its SyncSource's current one when the resync started); 0 otherwise. An interrupted resync resumes
   * from its persisted bitmap while a peer still holds that generation (see handshake.ts).
   */
  resyncFrom: bigint;
}
/** A piece of the sender's out-of-sync bitmap toward the receiver, `bits` starting at bit `offset` (multiple of 8). */
export interface BitmapFrame { type: FrameType.Bitmap; offset: number; totalBits: number; last: boolean; bits: Uint8Array }
/** A replicated write. `seq` names it in the ACK. */
export interface DataFrame { type: FrameType.Data; seq: number; offset: number; flags: number; data: Uint8Array }
export interface AckFrame { type: FrameType.Ack; seq: number; kind: AckKind; status: number }
/** Makes every write the receiver completed durable; answered with an ACK (Written). */
export interface FlushFrame { type: FrameType.Flush; seq: number }
/** Discard or write-zeroes of a range; answered like DATA. */
export interface TrimFrame { type: FrameType.Trim; seq: number; offset: number; length: number; mode: number }
/** A SyncTarget asks its SyncSource for a range. */
export interface ResyncRequestFrame { type: FrameType.ResyncRequest; seq: number; offset: number; length: number }
/** Checksum-based resync: the target sends its hash of a range; the source answers ResyncData or ResyncInSync. */
export interface ChecksumRequestFrame { type: FrameType.ChecksumRequest; seq: number; offset: number; length: number; hash: bigint }
export interface ResyncDataFrame { type: FrameType.ResyncData; seq: number; offset: number; data: Uint8Array }
export interface ResyncInSyncFrame { type: FrameType.ResyncInSync; seq: number; offset: number; length: number }
/** The sender (SyncSource or SyncTarget) declares the resync finished: the receiver adopts `gens` where it was the target. */
export interface ResyncDoneFrame { type: FrameType.ResyncDone; gens: Generations }
/** A read served by a peer (diskless node, local read error, block not yet resynced). */
export interface ReadRequestFrame { type: FrameType.ReadRequest; seq: number; offset: number; length: number }
export interface ReadReplyFrame { type: FrameType.ReadReply; seq: number; status: number; data: Uint8Array }
/** Online verify: the receiver hashes the range (xxh3 per block) and answers with its hashes. */
export interface VerifyRequestFrame { type: FrameType.VerifyRequest; seq: number; offset: number; length: number; blockSize: number }
export interface VerifyReplyFrame { type: FrameType.VerifyReply; seq: number; status: number; hashes: bigint[] }
export interface PingFrame { type: FrameType.Ping; seq: number }
export interface PongFrame { type: FrameType.Pong; seq: number }
/** The sender refuses or ends the connection; `code` names why (ErrorCode), `message` says it for logs. */
export interface ErrorFrame { type: FrameType.Error; code: number; message: string }
/**
 * Online resize, from the node coordinating it. Phase RESIZE_GROW: grow the disk and metadata to `size`
 * (a disk node) or get ready for it (a diskless one) and answer RESIZE_ACK; phase RESIZE_DONE: every node
 * has grown, the volume has `size` bytes: tell the front-ends. `seq` names the resize in the answer.
 */
export interface ResizeFrame { type: FrameType.Resize; seq: number; size: number; phase: number }
/** The answer to a RESIZE_GROW: status 0, or an errno-style failure with its reason for the operator. */
export interface ResizeAckFrame { type: FrameType.ResizeAck; seq: number; status: number; message: string }

/** RESIZE phases. */
export const RESIZE_GROW = 1;
export const RESIZE_DONE = 2;

export const enum ErrorCode {
  BadVersion = 1,
  WrongResource = 2,
  UnknownNode = 3,
  AuthFailed = 4,
  SplitBrain = 5,
  UnrelatedData = 6,
  SizeMismatch = 7,
  Protocol = 8,
  Shutdown = 9,
  TwoPrimaries = 10,
  Disconnect = 11,
}

export type Frame =
  | HelloFrame | AuthFrame | StateFrame | BitmapFrame | DataFrame | AckFrame | FlushFrame | TrimFrame
  | ResyncRequestFrame | ChecksumRequestFrame | ResyncDataFrame | ResyncInSyncFrame | ResyncDoneFrame
  | ReadRequestFrame | ReadReplyFrame | VerifyRequestFrame | VerifyReplyFrame | PingFrame | PongFrame | ErrorFrame
  | ResizeFrame | ResizeAckFrame;
