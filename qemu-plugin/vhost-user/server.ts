// The vhost-user socket: listens for front-ends (QEMU), receives messages with their fds, and answers them.
import fs from 'node:fs';
import type { BackendInfo } from '../../engine/backend.js';
import { Logger } from '../../engine/log.js';
import type { BackendSpec } from '../../engine/open.js';
import { MAX_QUEUES } from '../../engine/replication/limits.js';
import {
  AF_UNIX, MSG_CMSG_CLOEXEC, MSG_NOSIGNAL, MsgBuffers, NativeBuffer, SHUT_RDWR, SOCK_CLOEXEC, SOCK_STREAM, accept4, bind,
  callAsync, close, connect, errno, listen, read, recvmsg, sendmsg, shutdown, sockaddrUn, socket,
} from '../os.js';
import { VhostUserBlkBackend, blkHandlerSpec } from './blk-backend.js';
import { HEADER_SIZE, MAX_FDS, MAX_PAYLOAD } from './constants.js';
import { RequestFailed, VhostUserDevice, type HandlerResult } from './device.js';
import { ProtocolError, decodeHeader, decodeMessage, encodeReply, requestName, u64Payload } from './message.js';
import { BlkQueueStats } from '../virtio/blk-stats.js';
import { QueuePool } from './queue-pool.js';

export interface ServerOptions {
  socketPath: string;
  /** The back-end every queue worker opens, or one per queue (a replicated volume gives each queue its own channel). */
  backend: BackendSpec | ((queue: number) => BackendSpec);
  numQueues: number;
  /** The disk's serial number (VIRTIO_BLK_T_GET_ID), at most 20 bytes. */
  serial: string;
  /** Longest busy-poll window of the queue workers after work, in microseconds (0 disables). */
  pollUs?: number;
  /** Poll for exactly pollUs after work, not adaptively (for comparisons). */
  pollFixed?: boolean;
  log?: Logger;
  /**
   * Called when a front-end connects, before any message is read: throwing refuses it (the connection
   * is closed and the message logged), as a replicated volume does when this node may not become
   * Primary. `onClose` follows every accepted connection's end.
   */
  onOpen?: () => void;
  onClose?: () => void;
  /**
   * Front-ends served at once (default 1: a further one waits until one leaves). `twindisk serve`
   * allows 2 so a guest can live-migrate between two QEMUs on this host: the destination connects
   * while the source still runs. A front-end connecting beside the first gets queue workers of its
   * own (started when it connects, stopped when it leaves), which open the back-end again: an image
   * file can be, a replicated volume's per-queue channels cannot (a node serves one front-end).
   */
  maxFrontEnds?: number;
  /** Count requests per queue in shared memory (`queueStats()`): `--metrics`. */
  stats?: boolean;
}

/** A connected front-end: its socket, the queue workers serving its rings, and the end of its connection. */
interface FrontEnd {
  fd: number;
  pool: QueuePool;
  done: Promise<void>;
}

/** A request that failed where the front-end expects a reply of its own: the connection is closed. */
class UnanswerableRequest extends Error {
  override readonly name = 'UnanswerableRequest';
}

/** How long queue workers poll after work. QEMU IOThreads poll up to 32 µs (poll-max-ns) and adapt; measured here, 32 µs gave 342 K and 100 µs 378 K random 4 KiB reads/s at depth 32 (8 µs: 230 K, none: 209 K). */
export const DEFAULT_POLL_US = 50;

/**
 * Serves one virtio-blk disk over a vhost-user socket. Queue workers (one per queue, opened at
 * start) keep their back-end open across front-end connections, so a guest can restart or
 * reconnect; one front-end is served at a time, or with `maxFrontEnds` a few, each on its own workers.
 */
export class VhostUserServer {
  private pool: QueuePool | null = null;
  private listenFd = -1;
  /** The front-ends connected now. */
  private readonly served = new Set<FrontEnd>();
  private closing = false;
  private acceptLoop: Promise<void> | null = null;
  readonly log: Logger;
  info!: BackendInfo;
  /** Per queue, the counters of queue workers that have exited (a second front-end's), kept in the totals. */
  private readonly retiredStats: BlkQueueStats[] = [];
  /** Workers of a front-end that left, while they exit: still in the totals until retired. */
  private readonly exitingPools = new Set<QueuePool>();
  /** Number of front-end connections accepted so far (for tests and status). */
  connections = 0;
  /** Whether a front-end is connected now. */
  get connected(): boolean {
    return this.served.size > 0;
  }

  /** The connection being served: its device and its config space (online resize reaches them). */
  private current: { device: VhostUserDevice; blk: VhostUserBlkBackend } | null = null;

  constructor(private readonly opts: ServerOptions) {
    this.log = opts.log ?? new Logger('vhost-user');
  }

  /** Opens the back-end in every queue worker, then listens. Rejects with a message a user can act on. */
  async start(): Promise<void> {
    const { numQueues } = this.opts;
    if (!(numQueues >= 1 && numQueues <= MAX_QUEUES)) throw new Error(`--queues ${numQueues}: choose 1 to ${MAX_QUEUES} queues`);
    const pool = await this.startPool();
    this.pool = pool;
    this.info = pool.info;
    try {
      await this.prepareSocketPath();
      this.listenFd = this.bindSocket();
    } catch (e) {
      // Workers block in poll(): they must be told to exit, or the process cannot exit either.
      await pool.exit();
      throw e;
    }
    this.acceptLoop = this.accept();
    this.log.info('listening', {
      socket: this.opts.socketPath, disk: this.info.name, size: this.info.size, blockSize: this.info.blockSize,
      queues: numQueues, readOnly: this.info.readOnly,
    });
  }

  /** Starts one queue worker per queue, each with the back-end open. */
  private startPool(): Promise<QueuePool> {
    const spec = this.opts.backend;
    return QueuePool.start(this.opts.numQueues, typeof spec === 'function' ? spec : () => spec, blkHandlerSpec(this.opts.serial),
      { us: this.opts.pollUs ?? DEFAULT_POLL_US, fixed: this.opts.pollFixed ?? false, stats: !!this.opts.stats }, this.log);
  }

  private bindSocket(): number {
    const fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const sa = new NativeBuffer(112);
    try {
      const len = sockaddrUn(sa, 0, this.opts.socketPath);
      if (bind(fd, sa.addr, len) < 0) throw new Error(`cannot bind ${this.opts.socketPath}: errno ${errno()} (check the directory exists and is writable)`);
      if (listen(fd, 4) < 0) throw new Error(`cannot listen on ${this.opts.socketPath}: errno ${errno()}`);
      return fd;
    } catch (e) {
      close(fd);
      throw e;
    } finally {
      sa.free();
    }
  }

  /** Refuses to steal a live socket; removes a stale one left by a crash. */
  private async prepareSocketPath(): Promise<void> {
    const p = this.opts.socketPath;
    let st: fs.Stats;
    try {
      st = fs.lstatSync(p);
    } catch {
      return;
    }
    if (!st.isSocket()) throw new Error(`${p} exists and is not a socket: choose another --socket path`);
    const fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const sa = new NativeBuffer(112);
    const live = connect(fd, sa.addr, sockaddrUn(sa, 0, p)) === 0;
    close(fd);
    sa.free();
    if (live) throw new Error(`another process is serving ${p}: stop it first or choose another --socket path`);
    fs.unlinkSync(p);
  }

  private async accept(): Promise<void> {
    while (!this.closing) {
      const fd = await callAsync(accept4, this.listenFd, 0, 0, SOCK_CLOEXEC);
      if (this.closing) {
        if (fd >= 0) close(fd);
        break;
      }
      if (fd < 0) {
        this.log.warn(`accept failed (errno ${errno()}); retrying`);
        await new Promise((r) => setTimeout(r, 100));
        continue;
      }
      const max = this.opts.maxFrontEnds ?? 1;
      if (this.served.size >= max) {
        // A front-end beyond the limit (often QEMU reconnecting before the old connection's end was
        // seen) waits until one leaves.
        this.log.warn(max === 1
          ? 'a second front-end connected; it is served when the current one disconnects'
          : `another front-end connected; it is served when one of the ${max} connected disconnects`);
        while (this.served.size >= max && !this.closing) await Promise.race([...this.served].map((f) => f.done.catch(() => undefined)));
        if (this.closing) {
          close(fd);
          break;
        }
      }
      if (this.opts.onOpen) {
        try {
          this.opts.onOpen();
        } catch (e) {
          this.log.error(`refused a front-end: ${(e as Error).message}`);
          close(fd);
          continue;
        }
      }
      // The workers opened at start serve the first front-end; one connecting beside it (the
      // destination QEMU of a live migration) gets workers of its own, with their own device state.
      let pool = this.pool!;
      if ([...this.served].some((f) => f.pool === pool)) {
        this.log.info('a front-end connected while another is served (a live migration\'s destination?): starting queue workers for it');
        try {
          pool = await this.startPool();
        } catch (e) {
          this.log.error(`refused a front-end: its queue workers did not start: ${(e as Error).message}`);
          close(fd);
          this.opts.onClose?.();
          continue;
        }
        if (this.closing) {
          await pool.exit();
          close(fd);
          this.opts.onClose?.();
          break;
        }
      }
      this.connections++;
      const f: FrontEnd = { fd, pool, done: Promise.resolve() };
      f.done = this.serveConnection(fd, pool).finally(async () => {
        this.served.delete(f);
        if (pool !== this.pool) {
          this.exitingPools.add(pool);
          await pool.exit().catch((e) => this.log.error(`queue workers did not exit: ${e}`));
          this.retireStats(pool);
          this.exitingPools.delete(pool);
        }
        this.opts.onClose?.();
      });
      this.served.add(f);
    }
  }

  private async serveConnection(fd: number, pool: QueuePool): Promise<void> {
    const log = this.log.child(`conn${this.connections}`);
    log.info('front-end connected');
    const blk = new VhostUserBlkBackend(this.info, pool.numQueues, log);
    const device = new VhostUserDevice(blk, pool, log);
    this.current = { device, blk };
    const bufs = new MsgBuffers(HEADER_SIZE + MAX_PAYLOAD, MAX_FDS);
    const out = new MsgBuffers(HEADER_SIZE + MAX_PAYLOAD, 1);
    let reason = 'front-end disconnected';
    try {
      for (;;) {
        const n = await callAsync(recvmsg, fd, bufs.prepareRecv(HEADER_SIZE), MSG_CMSG_CLOEXEC);
        if (n === 0) break;
        if (n < 0) throw new ProtocolError(`receive failed: errno ${errno()}`);
        const { fds, truncated } = bufs.receivedFds();
        if (truncated) {
          fds.forEach((x) => close(x));
          throw new ProtocolError(`message came with more than ${MAX_FDS} fds`);
        }
        let msgName = 'message';
        try {
          if (n < HEADER_SIZE) await this.readFull(fd, bufs.data, n, HEADER_SIZE - n);
          const h = decodeHeader(bufs.data.u8.subarray(0, HEADER_SIZE));
          msgName = requestName(h.request);
          if (h.size > 0) await this.readFull(fd, bufs.data, HEADER_SIZE, h.size);
          const payload = Buffer.from(bufs.data.u8.subarray(HEADER_SIZE, HEADER_SIZE + h.size));
          const m = decodeMessage(h, payload, fds);
          log.debug('request', { request: msgName, size: h.size, fds: fds.length });
          let reply: HandlerResult;
          let ackStatus = 0;
          try {
            reply = await device.handle(m);
          } catch (e) {
            if (!(e instanceof RequestFailed)) throw e;
            // A request with a reply of its own (GET_INFLIGHT_FD, GET_VRING_BASE...) has no way to
            // say it failed, and the front-end would wait for that reply forever: close instead.
            if (device.hasOwnReply(m)) throw new UnanswerableRequest(`${msgName} failed: ${e.message}`);
            log.warn(`${msgName} failed: ${e.message}`);
            reply = null;
            ackStatus = 1; // reported when REPLY_ACK was asked for; otherwise only logged
          }
          if (reply instanceof Uint8Array) this.send(fd, out, encodeReply(h.request, reply));
          else if (reply !== null) {
            try {
              this.send(fd, out, encodeReply(h.request, reply.payload), reply.fds);
            } finally {
              reply.fds.forEach((x) => close(x));
            }
          }
          else if (device.wantsAck(m)) this.send(fd, out, encodeReply(h.request, u64Payload(ackStatus)));
        } catch (e) {
          // fds of a message that failed to decode are ours to close.
          if (e instanceof ProtocolError) {
            fds.forEach((x) => close(x));
            throw new ProtocolError(`${msgName}: ${e.message}`);
          }
          throw e;
        }
      }
    } catch (e) {
      reason = e instanceof ProtocolError
        ? `closed the connection: malformed ${e.message}`
        : e instanceof UnanswerableRequest
          ? `closed the connection: ${e.message}, and its reply cannot tell the front-end`
          : `closed the connection after an internal error: ${(e as Error).stack ?? e}`;
    } finally {
      if (!this.closing) (reason === 'front-end disconnected' ? log.info.bind(log) : log.error.bind(log))(reason);
      if (this.current?.device === device) this.current = null;
      await device.close().catch((e) => log.error(`reset failed: ${e}`));
      close(fd);
      bufs.free();
      out.free();
    }
  }

  private async readFull(fd: number, buf: NativeBuffer, off: number, len: number): Promise<void> {
    while (len > 0) {
      const n = await callAsync(read, fd, buf.addr + off, len);
      if (n === 0) throw new ProtocolError('message truncated by end of connection');
      if (n < 0) throw new ProtocolError(`receive failed: errno ${errno()}`);
      off += n;
      len -= n;
    }
  }

  private send(fd: number, out: MsgBuffers, msg: Buffer, fds: number[] = []): void {
    out.data.u8.set(msg, 0);
    let sent = 0;
    while (sent < msg.length) {
      out.data.u8.copyWithin(0, sent, msg.length);
      // fds travel with the first byte only.
      const n = sendmsg(fd, out.prepareSend(msg.length - sent, sent === 0 ? fds : []), MSG_NOSIGNAL);
      if (n <= 0) throw new ProtocolError(`send failed: errno ${errno()}`);
      sent += n;
    }
  }

  /**
   * Online resize to `size` bytes (the image or volume already has it): first every queue worker checks
   * requests against the new size, then the config space says it, then the front-end is told
   * (BACKEND_CONFIG_CHANGE_MSG) so the guest sees the new capacity without a reboot. Resolves with
   * whether a connected front-end was told; a front-end that fails or does not answer is logged, not fatal
   * (its guest sees the new size at its next device reset).
   */
  async resize(size: number): Promise<{ notified: boolean }> {
    await this.pool!.resize(size);
    // A second front-end's own workers (live migration) check against the new size too.
    await Promise.all([...this.served].filter((f) => f.pool !== this.pool).map((f) => f.pool.resize(size)));
    this.info = { ...this.info, size };
    const cur = this.current;
    if (!cur) return { notified: false };
    cur.blk.resize(size);
    try {
      const sent = await cur.device.configChanged();
      if (sent) this.log.info('told the front-end the capacity changed', { size });
      else this.log.warn('the front-end has no back-end channel (BACKEND_REQ): the guest sees the new size after a device reset');
      return { notified: sent };
    } catch (e) {
      this.log.warn(`config change not acknowledged: ${(e as Error).message}`);
      return { notified: false };
    }
  }

  /**
   * Each queue's request counters since start, summed over every front-end's workers (read now: a
   * snapshot); null when the server was started without `stats`.
   */
  queueStats(): BlkQueueStats[] | null {
    if (!this.opts.stats || !this.pool) return null;
    const pools = new Set([this.pool, ...[...this.served].map((f) => f.pool), ...this.exitingPools]);
    const sums: BlkQueueStats[] = [];
    for (let q = 0; q < this.opts.numQueues; q++) {
      const sum = new BlkQueueStats(BlkQueueStats.allocate());
      const old = this.retiredStats[q];
      if (old) sum.addFrom(old);
      for (const p of pools) {
        const sab = p.stats[q];
        if (sab) sum.addFrom(new BlkQueueStats(sab));
      }
      sums.push(sum);
    }
    return sums;
  }

  /** Keeps the counters of a front-end's workers that exited in the totals. */
  private retireStats(pool: QueuePool): void {
    pool.stats.forEach((sab, q) => {
      if (!sab) return;
      const sum = this.retiredStats[q] ??= new BlkQueueStats(BlkQueueStats.allocate());
      sum.addFrom(new BlkQueueStats(sab));
    });
  }

  /** Stops listening, disconnects the front-end, stops the workers and removes the socket. */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    if (this.listenFd >= 0) shutdown(this.listenFd, SHUT_RDWR);
    for (const f of this.served) shutdown(f.fd, SHUT_RDWR);
    await this.acceptLoop?.catch(() => undefined);
    await Promise.all([...this.served].map((f) => f.done.catch(() => undefined)));
    if (this.listenFd >= 0) close(this.listenFd);
    this.listenFd = -1;
    await this.pool?.exit();
    try {
      fs.unlinkSync(this.opts.socketPath);
    } catch {
      /* already gone */
    }
    this.log.info('stopped', { socket: this.opts.socketPath });
  }
}
