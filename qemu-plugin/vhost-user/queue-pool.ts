// The main thread's handle on the queue workers: spawning them, and request/acknowledge over a port plus a wake-up eventfd.
import { MessageChannel, Worker, type MessagePort } from 'node:worker_threads';
import type { BackendInfo } from '../../engine/backend.js';
import { Logger, type Level } from '../../engine/log.js';
import type { BackendSpec } from '../../engine/open.js';
import { EFD_CLOEXEC, NativeBuffer, close, eventfd, write } from '../os.js';
import type { QueueWorkerData, WorkerReply, WorkerRequest } from './queue-worker.js';

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
  ) {
    this.one.u8[0] = 1;
  }

  /** Starts a worker that opens `backend`; rejects with the back-end's own message if it cannot. */
  static spawn(name: string, backend: BackendSpec, serial: string, writeback: boolean, pollUs: number, log: Logger): Promise<QueueWorker> {
    const ctlFd = eventfd(0, EFD_CLOEXEC);
    if (ctlFd < 0) return Promise.reject(new Error('eventfd() failed: the system is out of file descriptors?'));
    const { port1, port2 } = new MessageChannel();
    const data: QueueWorkerData = { name, backend, serial, writeback, ctlFd, port: port2, pollUs };
    const worker = new Worker(new URL('./queue-worker.js', import.meta.url), { workerData: data, transferList: [port2] });
    return new Promise((resolve, reject) => {
      let qw: QueueWorker | null = null;
      port1.on('message', (m: WorkerReply) => {
        switch (m.op) {
          case 'ready':
            qw = new QueueWorker(name, worker, port1, ctlFd, m.info);
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
