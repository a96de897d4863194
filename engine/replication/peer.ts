// One other node of a resource as this node sees it: its link, last STATE, replication state, resync and verify runs.
import { type NodeConfig } from './config.js';
import { type StateFrame } from './frames.js';
import { type Replication } from './frame-rules.js';
import type { PeerLink } from './link.js';

export type Connection = 'StandAlone' | 'Connecting' | 'Connected';

export interface ResyncRequest {
  offset: number;
  length: number;
  /** A guest write touched the range after the request was sent: its answer is stale. */
  stale: boolean;
}

/** A resync in progress toward or from one peer. */
export class Resync {
  cursor = 0;
  readonly inflight = new Map<number, ResyncRequest>();
  /** Bytes asked for and not yet written here (answers being written count until their write completes). */
  inflightBytes = 0;
  /** Answers being written to the local disk (a SyncTarget writes them on libuv's pool). */
  writes = 0;
  /** Bytes of those answers. */
  writingBytes = 0;
  startedAt = Date.now();
  totalBits = 0;
  bytesSent = 0;
  bytesReceived = 0;
  bytesSkipped = 0;
  /** Bits already done when this run started (a resumed resync). */
  doneAtStart = 0;
  tokens = 0;
  lastRefill = Date.now();
  constructor(readonly asTarget: boolean, readonly full: boolean, readonly checksums: boolean) {}
}

export interface VerifyRun {
  offset: number;
  inflight: number;
  outOfSyncBlocks: number;
  startedAt: number;
  finishedAt: number;
  resyncAfter: boolean;
}

/** One other node of the resource, as this node sees it. */
export class Peer {
  link: PeerLink | null = null;
  /** Administratively connected (`connect`) or not (`disconnect`). */
  enabled = true;
  state: StateFrame | null = null;
  replication: Replication = 'Off';
  resync: Resync | null = null;
  verify: VerifyRun | null = null;
  lastVerify: VerifyRun | null = null;
  splitBrain: string | null = null;
  /** Handshake progress: our bitmap sent, theirs fully received. */
  bitmapSent = false;
  bitmapReceived = false;
  pendingResync: { asTarget: boolean; full: boolean } | null = null;
  /** Resync requests of ours that a new handshake abandoned: their answers may still arrive, and are dropped. */
  readonly abandonedResync = new Set<number>();
  /** Resync traffic of the last finished resync, for status and tests. */
  lastResync: { bytesSent: number; bytesReceived: number; bytesSkipped: number; seconds: number; full: boolean; asTarget: boolean } | null = null;
  stats = { dataBytesSent: 0, dataBytesReceived: 0, readsServed: 0 };
  constructor(readonly cfg: NodeConfig) {}
  get id(): number { return this.cfg.id; }
  get name(): string { return this.cfg.name; }
  get hasDisk(): boolean { return this.cfg.disk !== null; }
  get connection(): Connection { return this.link ? 'Connected' : this.enabled ? 'Connecting' : 'StandAlone'; }
  /** Writes reach this peer's disk (it takes part in replication). */
  get replicating(): boolean {
    return this.link !== null && this.hasDisk
      && (this.replication === 'WFBitMap' || this.replication === 'Established' || this.replication === 'SyncSource' || this.replication === 'SyncTarget')
      && this.state !== null && this.state.disk !== 'Diskless' && this.state.disk !== 'Failed';
  }
  get upToDate(): boolean {
    return this.link !== null && this.replication === 'Established' && this.state?.disk === 'UpToDate';
  }
}
