// Worker thread serving vhost-user virtqueues: waits on kick eventfds with poll(), drains rings, signals call eventfds.
//
// One worker per queue, so queues run in parallel on separate cores. The loop is synchronous (poll,
// then back-end calls that complete before returning), which keeps per-request cost to the system
// calls themselves: no promise, closure or buffer is allocated per request. The main thread talks to
// the worker through a MessagePort it drains synchronously when the control eventfd fires.
import { MessagePort, receiveMessageOnPort, workerData } from 'node:worker_threads';
import { BackendError, type Backend } from '../../engine/backend.js';
import { Logger, RateLimit, setSink, type Fields, type Level } from '../../engine/log.js';
import { openBackend, type BackendSpec } from '../../engine/open.js';
import { BlkHandler } from '../virtio/blk.js';
import { GuestMemory, type GuestRegion } from '../virtio/memory.js';
import { InflightRegion, inflightQueueSize } from '../virtio/inflight.js';
import { RingBrokenError, Virtqueue, ringSizes } from '../virtio/virtqueue.js';
import { EINTR } from '../../engine/os.js';
import { NativeBuffer, POLLIN, errno, mapShared, poll, read, unmap, write, type Mapping } from '../os.js';

/** A memory region as the main thread forwards it: the front-end's description plus its fd. */
export interface RegionMsg {
  fd: number;
  guestPhysAddr: number;
  memorySize: number;
  userspaceAddr: number;
  mmapOffset: number;
}

/** Ring configuration for `start`. Addresses are the front-end's virtual addresses (SET_VRING_ADDR). */
export interface RingMsg {
  index: number;
  num: number;
  desc: number;
  avail: number;
  used: number;
  base: number;
  kickFd: number;
  callFd: number;
  errFd: number;
  eventIdx: boolean;
  indirect: boolean;
}

/** Requests from the main thread; every one is answered with a WorkerReply of the same id. */
export type WorkerRequest =
  | { op: 'mem'; id: number; regions: RegionMsg[] }
  | { op: 'start'; id: number; ring: RingMsg }
  | { op: 'stop'; id: number; index: number }
  | { op: 'call'; id: number; index: number; fd: number }
  | { op: 'writeback'; id: number; writeback: boolean }
  | { op: 'inflight'; id: number; fd: number; mmapOffset: number; mmapSize: number; queueSize: number }
  | { op: 'stats'; id: number }
  | { op: 'exit'; id: number };

export type WorkerReply =
  | { op: 'ack'; id: number; ok: true; lastAvail?: number; stats?: unknown }
  | { op: 'ack'; id: number; ok: false; error: string }
  | { op: 'ready'; info: Backend['info'] }
  | { op: 'fatal'; error: string }
  | { op: 'log'; level: Level; component: string; msg: string; fields: Fields };

export interface QueueWorkerData {
  name: string;
  backend: BackendSpec;
  serial: string;
  writeback: boolean;
  ctlFd: number;
  port: MessagePort;
  /** Busy-poll window after work, in microseconds (0: sleep in poll() at once). */
  pollUs: number;
}

const data = workerData as QueueWorkerData;
const port = data.port;
const post = (m: WorkerReply): void => port.postMessage(m);
setSink((level, component, msg, fields) => post({ op: 'log', level, component, msg, fields }));
const log = new Logger(data.name);

interface Ring {
  msg: RingMsg;
  vq: Virtqueue;
  handler: BlkHandler;
}

function open(): Backend {
  try {
    return openBackend(data.backend);
  } catch (e) {
    post({ op: 'fatal', error: e instanceof BackendError ? e.message : String((e as Error).stack ?? e) });
    process.exit(1);
  }
}
const backend = open();
post({ op: 'ready', info: backend.info });

let mappings: Mapping[] = [];
/** The front-end's inflight area (SET_INFLIGHT_FD), mapped; null when not negotiated. */
let inflight: { map: Mapping; offset: number; queueSize: number } | null = null;
let mem = new GuestMemory([]);
let writeback = data.writeback;
const rings = new Map<number, Ring>();
const rejects = new RateLimit(10, 1000);
const pollUs = data.pollUs;
const eight = new NativeBuffer(8);
const one = new NativeBuffer(8);
one.u8[0] = 1;
// pollfd[0] = control eventfd; pollfd[1] = the back-end's completion fd (or -1); pollfd[2..] = kick
// eventfds, in `order`.
const pfd = new NativeBuffer(8 * 10);
const FIRST_RING = 2;
const backendFd = backend.eventFd ?? -1;
let order: Ring[] = [];

function reject(reason: string, head: number): void {
  if (rejects.allow()) {
    const suppressed = rejects.takeSuppressed();
    log.warn(`rejected a request: ${reason}`, { head, suppressed: suppressed || undefined });
  }
}

/** Waits until the back-end has completed every request of `r` (their buffers are in guest memory). */
function quiesce(r: Ring): void {
  while (r.handler.busyCount() > 0 && backend.waitOne) backend.waitOne();
}

function mapRegions(regions: RegionMsg[]): void {
  // Requests in flight hold addresses in the old mappings: finish them before anything moves.
  for (const r of rings.values()) quiesce(r);
  const next: Mapping[] = [];
  const gr: GuestRegion[] = [];
  try {
    for (const r of regions) {
      const m = mapShared(r.fd, r.memorySize + r.mmapOffset);
      next.push(m);
      gr.push({
        gpa: r.guestPhysAddr, size: r.memorySize, uaddr: r.userspaceAddr,
        u8: new Uint8Array(m.ab, r.mmapOffset, r.memorySize), dv: new DataView(m.ab, r.mmapOffset, r.memorySize),
        hostAddr: m.addr + r.mmapOffset,
      });
    }
  } catch (e) {
    next.forEach(unmap);
    throw e;
  }
  const old = mappings;
  mappings = next;
  mem = new GuestMemory(gr);
  // Running rings keep their indices and move to the new mappings.
  // Iterate over a copy: startRing re-adds each ring to the map.
  try {
    for (const [i, r] of [...rings]) {
      const ring = { ...r.msg, base: r.vq.lastAvail };
      rings.delete(i);
      startRing(ring);
    }
  } finally {
    old.forEach(unmap);
  }
}

function startRing(m: RingMsg): void {
  const sz = ringSizes(m.num);
  const part = (uaddr: number, len: number, what: string) => {
    const region = mem.findUaddr(uaddr, len);
    if (region < 0) throw new RingBrokenError(`queue ${m.index}: ${what} at 0x${uaddr.toString(16)} is not in guest memory`);
    return { region, off: mem.off };
  };
  const layout = { size: m.num, desc: part(m.desc, sz.desc, 'descriptor table'), avail: part(m.avail, sz.avail, 'available ring'), used: part(m.used, sz.used, 'used ring') };
  let region: InflightRegion | null = null;
  if (inflight && inflight.queueSize === m.num) {
    const size = inflightQueueSize(m.num);
    const off = inflight.offset + m.index * size;
    if (off + size <= inflight.map.length) region = new InflightRegion(new Uint8Array(inflight.map.ab, off, size), m.num);
  }
  const vq = new Virtqueue(mem, layout, m.base, m.eventIdx, m.indirect, region);
  if (vq.resubmitting > 0) log.warn(`queue ${m.index}: serving again ${vq.resubmitting} requests a previous run left unfinished`);
  const ring: Ring = { msg: m, vq, handler: null as unknown as BlkHandler };
  ring.handler = new BlkHandler(backend, vq, mem, {
    serial: data.serial, writeback, reject, notify: () => notify(ring),
  });
  rings.set(m.index, ring);
  rebuildPoll();
  log.debug('ring started', { queue: m.index, size: m.num, base: m.base, eventIdx: m.eventIdx });
  serveRing(ring); // requests made available before the kick fd arrived
}

function stopRing(index: number): number | undefined {
  const r = rings.get(index);
  if (!r) return undefined;
  // "stop the vring": requests handed to an asynchronous back-end complete first.
  quiesce(r);
  rings.delete(index);
  rebuildPoll();
  return r.vq.lastAvail;
}

function rebuildPoll(): void {
  order = [...rings.values()];
  // Results of the last poll() belong to the old order: forget them (the next poll() sees them again).
  pfd.u8.fill(0);
  pfd.dv.setInt32(0, data.ctlFd, true);
  pfd.dv.setInt16(4, POLLIN, true);
  pfd.dv.setInt32(8, backendFd, true);
  pfd.dv.setInt16(12, POLLIN, true);
  order.forEach((r, i) => {
    pfd.dv.setInt32(8 * (i + FIRST_RING), r.msg.kickFd, true); // -1: polled ring (no kick fd); poll() skips it
    pfd.dv.setInt16(8 * (i + FIRST_RING) + 4, POLLIN, true);
  });
}

/** Delivers the back-end's ready completions, one published batch per ring. */
function collectCompletions(): void {
  if (!backend.poll) return;
  if (order.length === 1) {
    const r = order[0]!;
    if (r.handler.completeBatch(backend.poll.bind(backend)) && r.msg.callFd >= 0) write(r.msg.callFd, one.addr, 8);
    return;
  }
  backend.poll();
}

function notify(r: Ring): void {
  if (r.vq.needsNotify() && r.msg.callFd >= 0) write(r.msg.callFd, one.addr, 8);
}

/** Drains a ring and signals the driver; with `arm`, re-enables kicks first (about to sleep). */
function serveRing(r: Ring, arm = true): void {
  try {
    if (r.handler.drain(arm) && r.msg.callFd >= 0) write(r.msg.callFd, one.addr, 8);
    backend.kick?.();
  } catch (e) {
    if (!(e instanceof RingBrokenError)) throw e;
    log.error(`queue ${r.msg.index} stopped: ${e.message}; the guest driver must reset the device`);
    stopRing(r.msg.index);
    if (r.msg.errFd >= 0) write(r.msg.errFd, one.addr, 8);
  }
}

/**
 * Busy-polls the rings for up to `pollUs` after work, with kicks suppressed, the way QEMU's
 * IOThreads poll (poll-max-ns): a driver that submits again within the window costs neither side a
 * system call. The window restarts whenever work is found; when it ends, kicks are re-armed.
 */
function pollRings(): void {
  for (const r of order) r.vq.suppressKicks();
  let deadline = performance.now() + pollUs / 1000;
  for (let spins = 0; pollUs > 0; spins++) {
    let found = false;
    if (backendFd >= 0) {
      const before = backend.inFlight!();
      if (before > 0) {
        collectCompletions();
        if (backend.inFlight!() < before) found = true;
      }
    }
    for (let i = 0; i < order.length; i++) {
      const r = order[i]!;
      if (r.vq.pending() !== 0) {
        found = true;
        serveRing(r, false);
      }
    }
    if (found) deadline = performance.now() + pollUs / 1000;
    else if ((spins & 63) === 0 && performance.now() > deadline) break;
  }
  for (let i = 0; i < order.length; i++) {
    const r = order[i];
    if (r && r.vq.armKick()) serveRing(r);
  }
}

function handle(m: WorkerRequest): boolean {
  try {
    switch (m.op) {
      case 'mem':
        mapRegions(m.regions);
        post({ op: 'ack', id: m.id, ok: true });
        return true;
      case 'start':
        stopRing(m.ring.index);
        startRing(m.ring);
        post({ op: 'ack', id: m.id, ok: true });
        return true;
      case 'stop': {
        const lastAvail = stopRing(m.index);
        post({ op: 'ack', id: m.id, ok: true, ...(lastAvail === undefined ? {} : { lastAvail }) });
        return true;
      }
      case 'call': {
        const r = rings.get(m.index);
        if (r) r.msg.callFd = m.fd;
        post({ op: 'ack', id: m.id, ok: true });
        return true;
      }
      case 'inflight':
        if (inflight) unmap(inflight.map);
        inflight = m.fd < 0 ? null : { map: mapShared(m.fd, m.mmapOffset + m.mmapSize), offset: m.mmapOffset, queueSize: m.queueSize };
        post({ op: 'ack', id: m.id, ok: true });
        return true;
      case 'writeback':
        writeback = m.writeback;
        for (const r of rings.values()) r.handler.writeback = writeback;
        post({ op: 'ack', id: m.id, ok: true });
        return true;
      case 'stats': {
        const stats: Record<number, unknown> = {};
        for (const [i, r] of rings) stats[i] = { ...r.handler.stats, lastAvail: r.vq.lastAvail };
        post({ op: 'ack', id: m.id, ok: true, stats });
        return true;
      }
      case 'exit':
        rings.clear();
        mappings.forEach(unmap);
        mappings = [];
        backend.close();
        post({ op: 'ack', id: m.id, ok: true });
        return false;
    }
  } catch (e) {
    post({ op: 'ack', id: m.id, ok: false, error: (e as Error).message });
    return true;
  }
}

function loop(): void {
  for (;;) {
    const polled = order.some((r) => r.msg.kickFd < 0);
    const n = poll(pfd.addr, FIRST_RING + order.length, polled ? 1 : -1);
    if (n < 0) {
      if (errno() === EINTR) continue;
      throw new Error(`poll failed: errno ${errno()}`);
    }
    if (pfd.dv.getInt16(6, true) & POLLIN) {
      read(data.ctlFd, eight.addr, 8);
      for (let msg = receiveMessageOnPort(port); msg; msg = receiveMessageOnPort(port)) {
        if (!handle(msg.message as WorkerRequest)) return; // the main thread closes ctlFd
      }
    }
    let worked = false;
    if (pfd.dv.getInt16(14, true) !== 0) {
      collectCompletions();
      worked = true;
    }
    for (let i = 0; i < order.length; i++) {
      const r = order[i]!;
      const revents = pfd.dv.getInt16(8 * (i + FIRST_RING) + 6, true);
      if (revents !== 0 || r.msg.kickFd < 0) {
        if (revents !== 0) read(r.msg.kickFd, eight.addr, 8);
        serveRing(r, false);
        worked = true;
      }
    }
    for (let i = 0; i < FIRST_RING + order.length; i++) pfd.dv.setInt16(8 * i + 6, 0, true);
    if (worked) pollRings();
    else for (const r of order) if (r.vq.armKick()) serveRing(r);
  }
}

rebuildPoll();
try {
  loop();
} catch (e) {
  post({ op: 'fatal', error: String((e as Error).stack ?? e) });
  process.exit(1);
}
