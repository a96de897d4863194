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
   * Online resize: the volume now has `size` bytes (a multiple of the block size; the medium was grown
   * first, or will be shrunk after). Requests are checked against it from the next one on. Back-ends
   * whose size cannot change leave it out.
   */
  resize?(size: number): void;
}

/**
 * A back-end whose operations complete later, driven by its caller's event loop (io_uring, the
 * replication channel). Submitting calls queue operations; the caller ends each batch with `kick()`,
 * waits for `eventFd` to become readable and calls `poll()` to run the completions. Synchronous
 * back-ends (every call completes before it returns) implement only `Backend`.
 */
export interface AsyncBackend extends Backend {
  /** Becomes readable when completions are ready. */
  readonly eventFd: number;
  /** Ends a batch: sends the operations queued since the last call to the device (or engine). */
  kick(): void;
  /**
   * Runs the `complete` of every operation finished so far. `signalled`: the caller woke because
   * `eventFd` was readable, and the back-end must leave it clear even if it finds nothing (a stale
   * signal must not wake the caller again and again).
   */
  poll(signalled?: boolean): void;
  /** Operations submitted and not yet completed. */
  inFlight(): number;
  /** Ends the batch and blocks until at least one operation completes (none in flight: returns at once). */
  waitOne(): void;
  /**
   * Optional: the caller's thread is about to block in poll() on `eventFd` (`sleeping` true), or has
   * woken (false). A back-end that completes from another thread can then skip writing `eventFd`
   * while the caller is awake and will look for completions anyway. With true it returns false when
   * completions are already there, and the caller must take them (poll()) instead of blocking.
   * A caller that never calls it is always woken through `eventFd`.
   */
  idle?(sleeping: boolean): boolean;
}

/** Whether `b` completes operations later (see AsyncBackend). */
export function isAsyncBackend(b: Backend): b is AsyncBackend {
  return typeof (b as Partial<AsyncBackend>).poll === 'function' && typeof (b as Partial<AsyncBackend>).eventFd === 'number';
}

/** Thrown when a back-end cannot be opened; the message says what to do. */
export class BackendError extends Error {
  override readonly name = 'BackendError';
}
