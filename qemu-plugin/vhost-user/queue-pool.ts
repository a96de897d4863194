// The main thread's handle on the queue workers: spawning them, request/acknowledge over a port plus a wake-up eventfd, and the pool as a RingHost.
import { MessageChannel, Worker, type MessagePort } from 'node:worker_threads';
import type { BackendInfo } from '../../engine/backend.js';
import { Logger, type Level } from '../../engine/log.js';
import type { BackendSpec } from '../../engine/open.js';
import { BLK_STATS_BYTES } from '../virtio/blk-stats.js';
import type { DeviceSettings, HandlerSpec } from '../virtio/queue-handler.js';
import { EFD_CLOEXEC, NativeBuffer, close, eventfd, write } from '../os.js';
import type { QueueWorkerData, WorkerReply, WorkerRequest } from './queue-worker.js';
import type { InflightArea, LogArea, RegionMsg, RingHost, RingMsg } from './ring-host.js';

/** How queue workers poll their rings after work: for up to `us` microseconds (0: never), adaptively unless `fixed`. */
export interface PollSettings {
  us: number;
  fixed: boolean;
  /** Give each worker request counters in shared memory (`QueueWorker.stats`): `--metrics`. */
  stats?: boolean;
}

type AckOk = Extract<WorkerReply, { op: 'ack'; ok: true }>;
type Pending = { resolve: (r: AckOk) => void; reject: (e: Error) => void };
/** A worker request before it is given an id. */
export type WorkerCommand = WorkerRequest extends infer T ? (T extends unknown ? Omit<T, 'id'> : never) : never;

/** One queue worker thread. */
export class QueueWorker {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly one = new NativeBuffer(8);
  private dead: Error | null = null;

  private constructor(
    readonly name: string,
    private readonly worker: Worker,
    private readonly port: MessagePort,
    private readonly ctlFd: number,
    readonly info: BackendInfo,
    /** The worker's request counters (blk-stats.ts), which it writes and this thread reads; null when not counted. */
    readonly stats: SharedArrayBuffer | null,
  ) {
    this.one.u8[0] = 1;
  }

  /**
   * Starts a worker that opens `backend` and serves its ring with `handler`'s request handler;
   * rejects with the back-end's own message if it cannot.
   */
  static spawn(name: string, backend: BackendSpec, handler: HandlerSpec, poll: PollSettings, log: Logger): Promise<QueueWorker> {
    const ctlFd = eventfd(0, EFD_CLOEXEC);
    if (ctlFd < 0) return Promise.reject(new Error('eventfd() failed: the system is out of file descriptors?'));
    const { port1, port2 } = new MessageChannel();
    const stats = poll.stats ? new SharedArrayBuffer(BLK_STATS_BYTES) : null;
    const data: QueueWorkerData = { name, backend, handler, ctlFd, port: port2, pollUs: poll.us, pollFixed: poll.fixed, ...(stats ? { stats } : {}) };
    const worker = new Worker(new URL('./queue-worker.js', import.meta.url), { workerData: data, transferList: [port2] });
    return new Promise((resolve, reject) => {
      let qw: QueueWorker | null = null;
      port1.on('message', (m: WorkerReply) => {
        switch (m.op) {
          case 'ready':
            qw = new QueueWorker(name, worker, port1, ctlFd, m.info, stats);
            resolve(qw);
            return;
          case 'fatal':
            log.error(`${name} failed: ${m.error}`);
            if (qw) qw.fail(new Error(`${name} failed: ${m.error}`));
            else reject(new Error(m.error));
            return;
          case 'log':
            new Logger(m.component)[m.level as Level](m.msg, m.fields);
            return;
          case 'ack':
            qw?.settle(m);
            return;
        }
      });
      worker.on('error', (e) => {
        log.error(`${name} crashed: ${e.stack ?? e}`);
        if (qw) qw.fail(e);
        else reject(e);
      });
      worker.on('exit', (code) => {
        const e = new Error(`${name} exited with code ${code}`);
        if (qw) qw.fail(e);
        else reject(e);
        port1.close();
      });
    });
  }

  /** Sends a request and waits for the worker's acknowledgement. */
  request(m: WorkerCommand): Promise<AckOk> {
    if (this.dead) return Promise.reject(this.dead);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.port.postMessage({ ...m, id });
      write(this.ctlFd, this.one.addr, 8);
    });
  }

  /** Stops the worker (its back-end is closed). */
  async exit(): Promise<void> {
    if (this.dead) return;
    await this.request({ op: 'exit' }).catch(() => undefined);
    await this.worker.terminate().catch(() => undefined);
    this.fail(new Error(`${this.name} has exited`));
  }

  private settle(m: WorkerReply): void {
    if (m.op !== 'ack') return;
    const p = this.pending.get(m.id);
    if (!p) return;
    this.pending.delete(m.id);
    if (m.ok) p.resolve(m);
    else p.reject(new Error(m.error));
  }

  private fail(e: Error): void {
    if (this.dead) return;
    this.dead = e;
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
    close(this.ctlFd);
    this.one.free();
  }
}

/** One worker per queue, as the device state machine's RingHost: ring `i` runs in worker `i`. */
export class QueuePool implements RingHost {
  private constructor(private readonly workers: QueueWorker[]) {}

  /**
   * Starts `numQueues` workers, queue `i` on `backend(i)`, all with `handler`. Rejects with the
   * first failure's message, after stopping the workers already started.
   */
  static async start(numQueues: number, backend: (queue: number) => BackendSpec, handler: HandlerSpec, poll: PollSettings, log: Logger): Promise<QueuePool> {
    const workers: QueueWorker[] = [];
    try {
      for (let i = 0; i < numQueues; i++) workers.push(await QueueWorker.spawn(`queue ${i}`, backend(i), handler, poll, log));
    } catch (e) {
      await Promise.all(workers.map((w) => w.exit()));
      throw e;
    }
    return new QueuePool(workers);
  }

  get numQueues(): number {
    return this.workers.length;
  }

  /** Each queue's request counters (null entries when the pool was started without `stats`). */
  get stats(): (SharedArrayBuffer | null)[] {
    return this.workers.map((w) => w.stats);
  }

  /** What the back-end reported when queue 0's worker opened it. */
  get info(): BackendInfo {
    return this.workers[0]!.info;
  }

  /**
   * Every worker maps the new table beside its current one; only when all could does every worker
   * switch (each drains its requests first). If one cannot, all stay on the old table.
   */
  async setMemory(regions: RegionMsg[]): Promise<void> {
    const prepared = await Promise.allSettled(this.workers.map((w) => w.request({ op: 'mem-prepare', regions })));
    const failed = prepared.find((p): p is PromiseRejectedResult => p.status === 'rejected');
    if (failed) {
      await Promise.allSettled(this.workers.map((w) => w.request({ op: 'mem-abort' })));
      throw failed.reason as Error;
    }
    await Promise.all(this.workers.map((w) => w.request({ op: 'mem-commit' })));
  }

  async startRing(ring: RingMsg): Promise<void> {
    await this.worker(ring.index).request({ op: 'start', ring });
  }

  async stopRing(index: number): Promise<number | undefined> {
    return (await this.worker(index).request({ op: 'stop' })).lastAvail;
  }

  async setCallFd(index: number, fd: number): Promise<void> {
    await this.worker(index).request({ op: 'call', fd });
  }

  async setErrFd(index: number, fd: number): Promise<void> {
    await this.worker(index).request({ op: 'err', fd });
  }

  async setInflight(area: InflightArea | null): Promise<void> {
    await Promise.all(this.workers.map((w) => w.request({ op: 'inflight', area })));
  }

  async setDirtyLog(area: LogArea | null): Promise<void> {
    await Promise.all(this.workers.map((w) => w.request({ op: 'log', area })));
  }

  async configure(settings: DeviceSettings): Promise<void> {
    await Promise.all(this.workers.map((w) => w.request({ op: 'configure', settings })));
  }

  /**
   * Online resize: every queue's back-end takes `size` (the image or volume has the new size already).
   * Resolves once each worker acknowledged: from then on each request is checked against `size`.
   */
  async resize(size: number): Promise<void> {
    await Promise.all(this.workers.map((w) => w.request({ op: 'resize', size })));
  }

  /** Stops every worker (their back-ends are closed). */
  async exit(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.exit()));
  }

  private worker(index: number): QueueWorker {
    const w = this.workers[index];
    if (!w) throw new Error(`queue ${index} does not exist: there are ${this.workers.length}`);
    return w;
  }
}
