// The contract between a virtqueue's host (a vhost-user queue worker, a test) and a device type's request handler, and the host's serve loop.
import type { Backend } from '../../engine/backend.js';
import type { GuestMemory } from './memory.js';
import type { Virtqueue } from './virtqueue.js';

/** Logs a rejected request; rate-limited by the caller. */
export type RejectLog = (reason: string, head: number) => void;

/**
 * Device-type settings a handler is created with and later updated with (virtio-blk: `serial`,
 * `writeback`). They cross thread boundaries, so they are plain values.
 */
export type DeviceSettings = Readonly<Record<string, string | number | boolean>>;

/** What a handler is given to serve one virtqueue. */
export interface QueueContext {
  backend: Backend;
  vq: Virtqueue;
  mem: GuestMemory;
  reject: RejectLog;
  settings: DeviceSettings;
  /** Shared memory for the queue's request counters (the device type's layout: blk-stats.ts), or absent: not counted. */
  stats?: SharedArrayBuffer | null;
}

/** Why `QueueHandler.drain` returned. */
export const enum DrainStop {
  /** The available ring is empty. */
  Empty,
  /** Every request slot is in flight (asynchronous back-ends); completions make room. */
  Starved,
  /** The byte budget is spent: publish what completed, then drain again. */
  Budget,
}

/**
 * Serves the requests of one virtqueue for a device type (virtio-blk's BlkHandler): pops chains,
 * parses and executes them, and records each completion as a used element. It never publishes the
 * used index nor signals the driver: the host does both (`publishUsed`), once per batch.
 */
export interface QueueHandler {
  /** Pops and executes available requests until the ring is empty, every slot is busy, or `budgetBytes` moved. */
  drain(budgetBytes: number): DrainStop;
  /** Requests handed to the back-end and not completed yet. */
  busyCount(): number;
  /** Applies settings the driver changed through the config space (virtio-blk: the write cache mode). */
  configure(settings: DeviceSettings): void;
}

/** Builds the handler of one virtqueue: what a device type's handler module exports as `createQueueHandler`. */
export type QueueHandlerFactory = (ctx: QueueContext) => QueueHandler;

/**
 * A device type's request handler as queue workers load it: the URL of a module exporting
 * `createQueueHandler` (a QueueHandlerFactory), and the settings to create handlers with.
 */
export interface HandlerSpec {
  module: string;
  settings: DeviceSettings;
}

/** Bytes moved in one drain after which completions are published and signalled early, so the driver can reuse buffers before the batch ends. */
export const EARLY_NOTIFY_BYTES = 256 * 1024;

/**
 * Makes the used elements recorded so far visible to the driver, and calls `signal` (writes the
 * call eventfd) when the driver asked to be interrupted for them. The one way completions reach a driver.
 */
export function publishUsed(vq: Virtqueue, signal: () => void): void {
  vq.publish();
  // Logging (live migration): the ring's writes are marked before the driver is told; the requests'
  // buffers were marked as each completed.
  const log = vq.dirtyLog;
  if (log !== null) log.markUsed();
  if (vq.needsNotify()) signal();
}

/**
 * Serves the ring until it is empty: drains, publishing completions after every EARLY_NOTIFY_BYTES
 * and at the end. With `arm`, it finally re-enables kicks and serves what arrived meanwhile (the
 * caller is about to sleep); without, kicks stay as they are (the caller keeps polling). Throws
 * RingBrokenError when the ring itself is corrupt.
 */
export function serveQueue(h: QueueHandler, vq: Virtqueue, arm: boolean, signal: () => void): void {
  for (;;) {
    const stop = h.drain(EARLY_NOTIFY_BYTES);
    publishUsed(vq, signal);
    if (stop === DrainStop.Budget) continue;
    // "the device MUST check the ring again after writing avail_event" (armKick re-checks).
    if (stop === DrainStop.Starved || !arm || !vq.armKick()) return;
  }
}
