// Where a vhost-user device's virtqueues run: the RingHost the message state machine drives (queue workers; a mock in tests) and what it is handed.
import type { DeviceSettings } from '../virtio/queue-handler.js';

/** A guest memory region as the front-end described it (SET_MEM_TABLE, ADD_MEM_REG), with its fd. */
export interface RegionMsg {
  fd: number;
  guestPhysAddr: number;
  memorySize: number;
  userspaceAddr: number;
  mmapOffset: number;
}

/** A ring to start. Addresses are the front-end's virtual addresses (SET_VRING_ADDR); fds are -1 when absent. */
export interface RingMsg {
  index: number;
  num: number;
  desc: number;
  avail: number;
  used: number;
  /** The first available index to serve (SET_VRING_BASE). */
  base: number;
  kickFd: number;
  callFd: number;
  errFd: number;
  eventIdx: boolean;
  indirect: boolean;
  /** Guest-physical address the used ring is logged at (SET_VRING_ADDR's log_guest_addr); absent: the used ring's own. */
  logAddr?: number;
}

/** The front-end's inflight area (SET_INFLIGHT_FD): `mmapSize` bytes at `mmapOffset` of `fd`, one region per queue. */
export interface InflightArea {
  fd: number;
  mmapOffset: number;
  mmapSize: number;
  queueSize: number;
}

/** The front-end's dirty log (SET_LOG_BASE): `mmapSize` bytes at `mmapOffset` of `fd`, one bit per 4 KiB guest page. */
export interface LogArea {
  fd: number;
  mmapOffset: number;
  mmapSize: number;
}

/**
 * Runs a device's virtqueues. Every call resolves once it has taken effect. fds passed in stay the
 * caller's: memory and inflight fds may be closed once the call resolved (the host keeps mappings),
 * kick, call and error fds must stay open until their ring is stopped or given another.
 */
export interface RingHost {
  /**
   * Maps guest memory for every queue; requests in flight finish first, running rings move over.
   * All or nothing: on failure every queue stays on the table it had.
   */
  setMemory(regions: RegionMsg[]): Promise<void>;
  /** Starts serving a ring (a ring already running with that index is stopped first). */
  startRing(ring: RingMsg): Promise<void>;
  /** Stops a ring once its requests in flight completed; resolves with its last available index, or undefined if it was not running. */
  stopRing(index: number): Promise<number | undefined>;
  /** Gives a running ring a new call eventfd (-1: none). */
  setCallFd(index: number, fd: number): Promise<void>;
  /** Gives a running ring a new error eventfd (-1: none); the old one is no longer written once this resolves. */
  setErrFd(index: number, fd: number): Promise<void>;
  /** Shares the inflight area with every queue, or withdraws it (null). */
  setInflight(area: InflightArea | null): Promise<void>;
  /**
   * Starts logging the guest pages every queue writes into `log` (live migration), moves logging to
   * another log, or stops it (null). Resolves once every queue marks in the new log and no longer in the old.
   */
  setDirtyLog(log: LogArea | null): Promise<void>;
  /** Hands changed device settings (from the config space) to every queue's request handler. */
  configure(settings: DeviceSettings): Promise<void>;
}
