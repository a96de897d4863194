// Worker thread serving one vhost-user virtqueue: waits on its kick eventfd with poll(), drains the ring, signals the call eventfd.
//
// One worker per queue, so queues run in parallel on separate cores. The loop is synchronous (poll,
// then back-end calls that complete before returning, or are collected from an asynchronous
// back-end's eventfd), which keeps per-request cost to the system calls themselves: no promise,
// closure or buffer is allocated per request. Which device the ring serves is the handler module's
// (workerData.handler): this file knows vhost-user rings, not virtio-blk. The main thread talks to
// the worker through a MessagePort it drains synchronously when the control eventfd fires.
import fs from 'node:fs';
import path from 'node:path';
import { MessagePort, receiveMessageOnPort, threadId, workerData } from 'node:worker_threads';
import { BackendError, isAsyncBackend, type Backend } from '../../engine/backend.js';
import { Logger, RateLimit, setSink, type Fields, type Level } from '../../engine/log.js';
import { openBackend, type BackendSpec } from '../../engine/open.js';
import { EINTR } from '../../engine/os.js';
import type { GuestMemory } from '../virtio/memory.js';
import { InflightRegion, inflightQueueSize } from '../virtio/inflight.js';
import { DirtyLog, LOG_PAGE_SIZE, VringLog, type DirtyLogAudit } from '../virtio/dirty-log.js';
import {
  publishUsed, serveQueue, type DeviceSettings, type HandlerSpec, type QueueHandler, type QueueHandlerFactory,
} from '../virtio/queue-handler.js';
import { RingBrokenError, Virtqueue, ringSizes, type RingLayout } from '../virtio/virtqueue.js';
import { NativeBuffer, POLLIN, errno, mapShared, poll, read, unmap, write, type Mapping } from '../os.js';
import { AdaptivePoll } from './adaptive-poll.js';
import { MemTable } from './mem-table.js';
import type { InflightArea, LogArea, RegionMsg, RingMsg } from './ring-host.js';

/** Requests from the main thread; every one is answered with an `ack` of the same id. */
export type WorkerRequest =
  | { op: 'mem-prepare'; id: number; regions: RegionMsg[] }
  | { op: 'mem-commit'; id: number }
  | { op: 'mem-abort'; id: number }
  | { op: 'start'; id: number; ring: RingMsg }
  | { op: 'stop'; id: number }
  | { op: 'call'; id: number; fd: number }
  | { op: 'err'; id: number; fd: number }
  | { op: 'configure'; id: number; settings: DeviceSettings }
  | { op: 'inflight'; id: number; area: InflightArea | null }
  | { op: 'log'; id: number; area: LogArea | null }
  | { op: 'resize'; id: number; size: number }
  | { op: 'exit'; id: number };

export type WorkerReply =
  | { op: 'ack'; id: number; ok: true; lastAvail?: number }
  | { op: 'ack'; id: number; ok: false; error: string }
  | { op: 'ready'; info: Backend['info'] }
  | { op: 'fatal'; error: string }
  | { op: 'log'; level: Level; component: string; msg: string; fields: Fields };

export interface QueueWorkerData {
  name: string;
  backend: BackendSpec;
  /** The device type's request handler (module URL and initial settings). */
  handler: HandlerSpec;
  ctlFd: number;
  port: MessagePort;
  /** Longest busy-poll window after work, in microseconds (0: sleep in poll() at once). */
  pollUs: number;
  /** Poll for exactly `pollUs` after work instead of a window that adapts (adaptive-poll.ts): for comparisons. */
  pollFixed: boolean;
  /** The queue's request counters, which this worker alone writes and the main thread reads (`--metrics`); absent: not counted. */
  stats?: SharedArrayBuffer;
}

const data = workerData as QueueWorkerData;
const port = data.port;
const post = (m: WorkerReply): void => port.postMessage(m);
setSink((level, component, msg, fields) => post({ op: 'log', level, component, msg, fields }));
const log = new Logger(data.name);

/** The ring being served, and the function that interrupts its driver (writes the call eventfd). */
interface Ring {
  msg: RingMsg;
  vq: Virtqueue;
  handler: QueueHandler;
  signal: () => void;
  /** The inflight area the ring tracks requests in; it stays mapped until the ring stops, even if the front-end sent another. */
  inflight: InflightMap | null;
}

type InflightMap = { map: Mapping; offset: number; queueSize: number };

function fatal(e: unknown): never {
  post({ op: 'fatal', error: e instanceof BackendError ? e.message : String((e as Error).stack ?? e) });
  process.exit(1);
}

/** Loads the handler module's `createQueueHandler`. */
async function loadFactory(module: string): Promise<QueueHandlerFactory> {
  const m = (await import(module)) as { createQueueHandler?: unknown };
  if (typeof m.createQueueHandler !== 'function') throw new Error(`${module} does not export createQueueHandler`);
  return m.createQueueHandler as QueueHandlerFactory;
}

const createHandler = await loadFactory(data.handler.module).catch(fatal);
let settings: DeviceSettings = data.handler.settings;
let backend: Backend;
try {
  backend = openBackend(data.backend);
} catch (e) {
  fatal(e);
}
/** The back-end when it completes later (io_uring, replication); null when every call completes before it returns. */
const async = isAsyncBackend(backend) ? backend : null;
post({ op: 'ready', info: backend.info });

const table = new MemTable();
/** The front-end's inflight area (SET_INFLIGHT_FD), mapped, for rings started from now on; null when not negotiated. */
let inflight: InflightMap | null = null;
let mem: GuestMemory = table.mem;
let ring: Ring | null = null;
/** The front-end's dirty log while it logs (live migration), mapped; null when logging is off. */
let dirtyLog: { map: Mapping; log: DirtyLog } | null = null;
/** The last available index of a ring that stopped itself (a broken ring), for the GET_VRING_BASE that follows. */
let stoppedBase: number | undefined;
const rejects = new RateLimit(10, 1000);

/**
 * TWINDISK_DIRTY_LOG_AUDIT=DIR (tests, diagnosis): every guest page this worker marks in the dirty log
 * is also written down, in DIR/dirty-log-audit-PID-THREAD.txt, as one line of page addresses (hex) each
 * time the ring stops or logging changes. A migration test that finds a guest page differing between
 * source and destination can then tell whether the back-end marked it. Off: one null test per mark.
 */
class PageAudit implements DirtyLogAudit {
  private readonly pages = new Set<number>();
  constructor(private readonly file: string) {}

  marked(gpa: number, len: number): void {
    const last = Math.floor((gpa + len - 1) / LOG_PAGE_SIZE);
    for (let p = Math.floor(gpa / LOG_PAGE_SIZE); p <= last; p++) this.pages.add(p);
  }

  /** Appends what was marked since the last flush, with the event that ended it. */
  flush(event: string): void {
    const pages = [...this.pages].map((p) => (p * LOG_PAGE_SIZE).toString(16)).join(' ');
    this.pages.clear();
    fs.appendFileSync(this.file, `${event}${pages ? ` marked ${pages}` : ''}\n`);
  }
}
const auditDir = process.env.TWINDISK_DIRTY_LOG_AUDIT;
const audit = auditDir ? new PageAudit(path.join(auditDir, `dirty-log-audit-${process.pid}-${threadId}.txt`)) : null;
/** The polling window: adaptive up to `pollUs`, or fixed at it (`pollFixed`). */
const poller = new AdaptivePoll(data.pollUs, data.pollFixed ? data.pollUs : 0);
const adaptive = !data.pollFixed && data.pollUs > 0;
/** performance.now() when the worker last ran out of work (-1: not idle since work): the start of the gap AdaptivePoll learns from. */
let idleSince = -1;
const eight = new NativeBuffer(8);
const one = new NativeBuffer(8);
one.u8[0] = 1;
// pollfds: the control eventfd, the back-end's completion fd, the ring's kick eventfd (-1 entries are skipped by poll()).
const PFD_CTL = 0;
const PFD_BACKEND = 8;
const PFD_KICK = 16;
const pfd = new NativeBuffer(8 * 3);
pfd.dv.setInt32(PFD_CTL, data.ctlFd, true);
pfd.dv.setInt16(PFD_CTL + 4, POLLIN, true);
pfd.dv.setInt32(PFD_BACKEND, async ? async.eventFd : -1, true);
pfd.dv.setInt16(PFD_BACKEND + 4, POLLIN, true);
pfd.dv.setInt32(PFD_KICK, -1, true); // no ring yet
pfd.dv.setInt16(PFD_KICK + 4, POLLIN, true);

function reject(reason: string, head: number): void {
  if (rejects.allow()) {
    const suppressed = rejects.takeSuppressed();
    log.warn(`rejected a request: ${reason}`, { head, suppressed: suppressed || undefined });
  }
}

/**
 * Waits until the back-end has completed every request of the ring (their buffers are in guest
 * memory) and publishes them: before memory moves or the ring stops.
 */
function quiesce(r: Ring): void {
  if (async) while (r.handler.busyCount() > 0) async.waitOne();
  publishUsed(r.vq, r.signal);
}

/** Runs the back-end's ready completions and publishes them to the driver, as one batch; `signalled`: its eventfd woke the worker. */
function collectCompletions(signalled = false): void {
  async!.poll(signalled);
  if (ring) publishUsed(ring.vq, ring.signal);
}

/** Where a ring's parts are in `m`; throws RingBrokenError if one is not in guest memory. */
function ringLayout(m: GuestMemory, r: RingMsg): RingLayout {
  const sz = ringSizes(r.num);
  const part = (uaddr: number, len: number, what: string) => {
    const region = m.findUaddr(uaddr, len);
    if (region < 0) throw new RingBrokenError(`queue ${r.index}: ${what} at 0x${uaddr.toString(16)} is not in guest memory`);
    return { region, off: m.off };
  };
  return { size: r.num, desc: part(r.desc, sz.desc, 'descriptor table'), avail: part(r.avail, sz.avail, 'available ring'), used: part(r.used, sz.used, 'used ring') };
}

/**
 * Maps a new memory table beside the current one (the first half of a table change, on every
 * worker before any commits). Refuses a table without the running ring's memory, so the commit
 * cannot fail.
 */
function prepareMemory(regions: RegionMsg[]): void {
  const next = table.prepare(regions);
  if (ring) {
    try {
      ringLayout(next, ring.msg);
    } catch (e) {
      table.abort();
      throw new Error(`the new memory table leaves out queue ${ring.msg.index}'s ring, which is running: ${(e as Error).message}`);
    }
  }
}

/** Switches to the prepared table: requests in flight finish on the old one, the ring moves over, then the old mappings go. */
function commitMemory(): void {
  // Requests in flight hold addresses in the old mappings: finish them before anything moves.
  if (ring) quiesce(ring);
  const release = table.commit();
  mem = table.mem;
  const r = ring;
  try {
    // A running ring keeps its indices (and its inflight area) and moves to the new mappings.
    if (r) {
      ring = null;
      try {
        startRing({ ...r.msg, base: r.vq.lastAvail }, r.inflight);
      } catch (e) {
        log.error(`queue ${r.msg.index} stopped: it cannot run in the new memory table: ${(e as Error).message}`);
        stoppedBase = r.vq.lastAvail;
        releaseInflight(r);
        if (r.msg.errFd >= 0) write(r.msg.errFd, one.addr, 8);
      }
    }
  } finally {
    release();
  }
}

/** Unmaps the inflight area a ring tracked requests in, unless it is still the current one. */
function releaseInflight(r: Ring): void {
  if (r.inflight && r.inflight !== inflight) unmap(r.inflight.map);
}

/** Starts serving ring `m`, tracking its requests in the inflight area `area` (the current one unless told). */
function startRing(m: RingMsg, area: InflightMap | null = inflight): void {
  stoppedBase = undefined;
  const layout = ringLayout(mem, m);
  let region: InflightRegion | null = null;
  if (area && area.queueSize === m.num) {
    const size = inflightQueueSize(m.num);
    const off = area.offset + m.index * size;
    if (off + size <= area.map.length) region = new InflightRegion(new Uint8Array(area.map.ab, off, size), m.num);
  }
  const vq = new Virtqueue(mem, layout, m.base, m.eventIdx, m.indirect, region);
  attachLog(vq, m);
  if (vq.resubmitting > 0) log.warn(`queue ${m.index}: serving again ${vq.resubmitting} requests a previous run left unfinished`);
  const handler = createHandler({ backend, vq, mem, reject, settings, stats: data.stats ?? null });
  const r: Ring = {
    msg: m, vq, handler, signal: () => { if (r.msg.callFd >= 0) write(r.msg.callFd, one.addr, 8); }, inflight: region ? area : null,
  };
  ring = r;
  pfd.dv.setInt32(PFD_KICK, m.kickFd, true); // -1: a polled ring (no kick fd); poll() skips it
  log.debug('ring started', { queue: m.index, size: m.num, base: m.base, eventIdx: m.eventIdx });
  serveRing(r, true); // requests made available before the kick fd arrived
}

/**
 * Points a ring's virtqueue at the dirty log, or at none. The used ring is logged at the address the
 * front-end gave (log_guest_addr), else at its own guest-physical address.
 */
function attachLog(vq: Virtqueue, m: RingMsg): void {
  if (dirtyLog === null) {
    vq.dirtyLog = null;
    return;
  }
  const layout = ringLayout(mem, m);
  const used = mem.regions[layout.used.region]!;
  vq.dirtyLog = new VringLog(dirtyLog.log, mem, m.logAddr ?? used.gpa + layout.used.off, ringSizes(m.num).used);
  vq.dirtyLog.audit = audit;
}

/** Stops the ring once its requests in flight completed; returns its last available index. */
function stopRing(): number | undefined {
  const r = ring;
  if (!r) return undefined;
  // "stop the vring": requests handed to an asynchronous back-end complete first.
  quiesce(r);
  ring = null;
  pfd.dv.setInt32(PFD_KICK, -1, true);
  releaseInflight(r);
  return r.vq.lastAvail;
}

/**
 * Serves the ring and ends the back-end's batch (`kick`: io_uring_enter, the replication doorbell);
 * with `arm`, re-enables kicks first (about to sleep).
 */
function serveRing(r: Ring, arm: boolean): void {
  try {
    serveQueue(r.handler, r.vq, arm, r.signal);
    async?.kick();
  } catch (e) {
    if (!(e instanceof RingBrokenError)) throw e;
    log.error(`queue ${r.msg.index} stopped: ${e.message}; the guest driver must reset the device`);
    stoppedBase = stopRing();
    if (r.msg.errFd >= 0) write(r.msg.errFd, one.addr, 8);
  }
}

/**
 * Busy-polls the ring after work, with kicks suppressed, the way QEMU's IOThreads poll: a driver that
 * submits again within the window costs neither side a system call. The window restarts whenever
 * work is found; when it ends, kicks are re-armed. Its length is `poller.windowUs`: adaptive (see
 * adaptive-poll.ts) unless the worker was started with a fixed window.
 */
function pollRing(): void {
  const windowMs = poller.windowUs / 1000;
  let last = performance.now();
  if (windowMs > 0) {
    ring?.vq.suppressKicks();
    for (let spins = 0; ; spins++) {
      let found = false;
      if (async) {
        const before = async.inFlight();
        if (before > 0) {
          collectCompletions();
          if (async.inFlight() < before) found = true;
        }
      }
      const r = ring;
      if (r && r.vq.pending() !== 0) {
        found = true;
        serveRing(r, false);
      }
      if (found) last = performance.now();
      else if ((spins & 63) === 0 && performance.now() - last > windowMs) break;
    }
  }
  if (ring && ring.vq.armKick()) {
    serveRing(ring, true);
    last = performance.now();
  }
  // The gap to the next work starts here: the loop measures it when work wakes it up.
  idleSince = last;
}

function handle(m: WorkerRequest): boolean {
  try {
    switch (m.op) {
      case 'mem-prepare':
        prepareMemory(m.regions);
        post({ op: 'ack', id: m.id, ok: true });
        return true;
      case 'mem-commit':
        commitMemory();
        post({ op: 'ack', id: m.id, ok: true });
        return true;
      case 'mem-abort':
        table.abort();
        post({ op: 'ack', id: m.id, ok: true });
        return true;
      case 'start':
        stopRing();
        startRing(m.ring);
        post({ op: 'ack', id: m.id, ok: true });
        return true;
      case 'stop': {
        // "stop the vring and return the value of last_avail_idx": also for a ring that stopped itself.
        const lastAvail = ring ? stopRing() : stoppedBase;
        stoppedBase = undefined;
        audit?.flush(`ring stopped (last available index ${lastAvail})`);
        post({ op: 'ack', id: m.id, ok: true, ...(lastAvail === undefined ? {} : { lastAvail }) });
        return true;
      }
      case 'call':
        if (ring) ring.msg.callFd = m.fd;
        post({ op: 'ack', id: m.id, ok: true });
        return true;
      case 'err':
        if (ring) ring.msg.errFd = m.fd;
        post({ op: 'ack', id: m.id, ok: true });
        return true;
      case 'inflight': {
        const a = m.area;
        const old = inflight;
        inflight = a === null ? null : { map: mapShared(a.fd, a.mmapOffset + a.mmapSize), offset: a.mmapOffset, queueSize: a.queueSize };
        // A running ring keeps tracking in the area it started with: it is unmapped when the ring stops.
        if (old && ring?.inflight !== old) unmap(old.map);
        post({ op: 'ack', id: m.id, ok: true });
        return true;
      }
      case 'log': {
        // Marking is synchronous in this thread: once the ring points at the new log, nothing marks the old one.
        const a = m.area;
        const old = dirtyLog;
        if (a === null) dirtyLog = null;
        else {
          const map = mapShared(a.fd, a.mmapOffset + a.mmapSize);
          dirtyLog = { map, log: new DirtyLog(new Uint8Array(map.ab, a.mmapOffset, a.mmapSize)) };
        }
        if (ring) attachLog(ring.vq, ring.msg);
        audit?.flush(a === null ? 'logging off' : 'logging on');
        if (old) unmap(old.map);
        post({ op: 'ack', id: m.id, ok: true });
        return true;
      }
      case 'configure':
        settings = { ...settings, ...m.settings };
        ring?.handler.configure(m.settings);
        post({ op: 'ack', id: m.id, ok: true });
        return true;
      case 'resize':
        // Online resize: requests are checked against the new size from the next one on. A shrink
        // first lets the requests in flight finish (they were checked against the old size).
        if (!backend.resize) throw new Error(`${backend.info.name} cannot change its size`);
        if (ring && m.size < backend.info.size) quiesce(ring);
        backend.resize(m.size);
        post({ op: 'ack', id: m.id, ok: true });
        return true;
      case 'exit':
        stopRing();
        table.clear();
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
    const r0 = ring;
    const polled = r0 !== null && r0.msg.kickFd < 0;
    // A back-end that skips waking an awake worker is told it sleeps now; completions already posted
    // (`ready`) are taken without blocking.
    const ready = async?.idle ? !async.idle(true) : false;
    const n = poll(pfd.addr, 3, ready ? 0 : polled ? 1 : -1);
    async?.idle?.(false);
    if (n < 0) {
      if (errno() === EINTR) continue;
      throw new Error(`poll failed: errno ${errno()}`);
    }
    if (pfd.dv.getInt16(PFD_CTL + 6, true) & POLLIN) {
      read(data.ctlFd, eight.addr, 8);
      for (let msg = receiveMessageOnPort(port); msg; msg = receiveMessageOnPort(port)) {
        if (!handle(msg.message as WorkerRequest)) return; // the main thread closes ctlFd
      }
    }
    let worked = false;
    const woke = adaptive && idleSince >= 0 ? performance.now() : 0;
    const signalled = pfd.dv.getInt16(PFD_BACKEND + 6, true) !== 0;
    if (ready || signalled) {
      collectCompletions(signalled);
      worked = true;
    }
    const r = ring;
    // The kick result belongs to the ring polled; a ring started or stopped by a message meanwhile is served below or gone.
    if (r !== null && r === r0) {
      const revents = pfd.dv.getInt16(PFD_KICK + 6, true);
      if (revents !== 0 || r.msg.kickFd < 0) {
        if (revents !== 0) read(r.msg.kickFd, eight.addr, 8);
        serveRing(r, false);
        worked = true;
      }
    }
    pfd.dv.setInt16(PFD_CTL + 6, 0, true);
    pfd.dv.setInt16(PFD_BACKEND + 6, 0, true);
    pfd.dv.setInt16(PFD_KICK + 6, 0, true);
    if (worked) {
      if (woke > 0) poller.gap((woke - idleSince) * 1000);
      pollRing();
    } else if (ring && ring.vq.armKick()) serveRing(ring, true);
  }
}

try {
  loop();
} catch (e) {
  fatal(e);
}
