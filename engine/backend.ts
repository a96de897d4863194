// The engine's storage interface: what every front-end (vhost-user, iSCSI) reaches storage through.
import type { IoVector } from './iovec.js';

/** What a back-end can do; front-ends derive the features they offer to guests from it. */
export interface BackendInfo {
  /** Usable size in bytes (a multiple of `blockSize`). */
  readonly size: number;
  /** Logical block size in bytes: 512 or 4096. Requests are aligned to it. */
  readonly blockSize: number;
  readonly readOnly: boolean;
  /** `flush` makes completed writes durable (false: the medium is volatile, flush is a no-op). */
  readonly canFlush: boolean;
  readonly canDiscard: boolean;
  readonly canWriteZeroes: boolean;
  /** A short human-readable name for logs ("file:/path", "memory"). */
  readonly name: string;
}

/** Errors carry a negative errno; 0 is success. */
export type IoStatus = number;

/**
 * Receives the outcome of one operation. Request slots implement it themselves, so the data path
 * allocates no closure per request. A back-end calls `complete` exactly once, possibly before the
 * submitting call returns (synchronous back-ends) or later (asynchronous layers).
 */
export interface Completion {
  complete(status: IoStatus): void;
}

/**
 * A block device as the engine sees it. Offsets and lengths are in bytes and have been checked by
 * the caller against `info` (in range, block aligned); back-ends check again where a mistake could
 * touch bytes outside the request and fail with -EINVAL / -EIO rather than trust the caller.
 * Layers (RAID, dirty-region logging, replication) implement this over a `next` Backend.
 */
export interface Backend {
  readonly info: BackendInfo;
  /** Reads `iov.bytes` bytes at `offset` into the vector's segments. */
  read(iov: IoVector, offset: number, done: Completion): void;
  /** Writes the vector's bytes at `offset`. With `fua` the data is durable before completion. */
  write(iov: IoVector, offset: number, fua: boolean, done: Completion): void;
  /** Makes every completed write durable. */
  flush(done: Completion): void;
  /** Deallocates a range; later reads of it return zeroes. */
  discard(offset: number, length: number, done: Completion): void;
  /** Zeroes a range; with `mayUnmap` the back-end may deallocate it instead of writing zeroes. */
  writeZeroes(offset: number, length: number, mayUnmap: boolean, done: Completion): void;
  /** Releases the back-end's resources (files stay as they are). */
  close(): void;
  /**
   * Asynchronous back-ends driven by their caller's event loop: `eventFd` becomes readable when
   * completions are ready, `poll()` delivers them, `kick()` sends operations queued since the last
   * call to the device, `inFlight()` counts operations not yet completed, `waitOne()` blocks until
   * at least one completes. Synchronous back-ends (every call completes before it returns) omit them.
   */
  readonly eventFd?: number;
  poll?(): void;
  kick?(): void;
  inFlight?(): number;
  waitOne?(): void;
}

/** Thrown when a back-end cannot be opened; the message says what to do. */
export class BackendError extends Error {
  override readonly name = 'BackendError';
}
