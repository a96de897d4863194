// The iSCSI target's network portal: a TCP listener whose connections each run one ConnectionState over a socket.
//
// This is the only file of bootimg/iscsi/ that touches sockets (as ws keeps its socket in one file): bytes come in,
// a PduReader cuts them into PDUs, the connection's state machine answers them with PDUs to send and disk operations;
// the operations go to the target's DiskOpRunner and their results back into the state machine. Everything protocol is
// decided in connection-state.ts; here are only the socket, the timers, backpressure and the log.
import net from 'node:net';
import { RateLimit, type Logger } from '../../engine/log.js';
import { ConnectionState, type ConnectionOptions, type LoginDecision, type Step, type TargetConfig } from './connection-state.js';
import { type DiskOpRunner } from './disk-ops.js';
import { NO_DIGESTS, PduError, PduReader, pduParts, type Digests } from './pdu.js';

/** One target served by a portal: its identity and LUN 0 disk (TargetConfig), and the runner that executes its disk operations. */
export interface PortalTarget extends TargetConfig {
  runner: DiskOpRunner;
}

/** Options of an IscsiPortal. */
export interface IscsiPortalOptions {
  host: string;
  /** TCP port; 0 picks a free one (read it from `address` after start()). */
  port: number;
  targets: readonly PortalTarget[];
  log: Logger;
  /** Decides each Normal login (accept, redirect to the Primary's portal, refuse); default accepts. */
  decideLogin?: (initiator: string, target: string) => LoginDecision;
  /**
   * A Normal session reached full feature phase, authenticated (e.g. the node takes the Primary role for it). Return null to
   * go on, or a reason to close the connection (the initiator logs in again, and decideLogin may then redirect it).
   */
  onSessionStart?: (target: string, initiator: string) => string | null;
  /** A session that onSessionStart let go on has ended (logout, error or drop); called once per such session. */
  onSessionEnd?: (target: string, initiator: string) => void;
  /** Options passed to every ConnectionState (policy, command window...). */
  connection?: Omit<ConnectionOptions, 'targets' | 'decideLogin'>;
  /** A connection that has not finished its login after this long is closed (a slow or stuck client); default 30 s. */
  loginTimeoutMs?: number;
  /** Connections beyond this many are refused at accept (each holds buffers); default 256. */
  maxConnections?: number;
}

/** Counters a portal keeps (for `status` and metrics). */
export interface PortalStats {
  connections: number;
  sessions: number;
  accepted: number;
  pdusIn: number;
  pdusOut: number;
  /** Connections closed because the initiator broke the protocol (malformed PDU, bad sequence, digest error in a header). */
  protocolErrors: number;
  /** Connections refused at accept because maxConnections were open. */
  refused: number;
}

/** A TCP listener serving iSCSI targets. */
export class IscsiPortal {
  private server: net.Server | null = null;
  private readonly conns = new Set<PortalConnection>();
  private readonly statsValue: PortalStats = { connections: 0, sessions: 0, accepted: 0, pdusIn: 0, pdusOut: 0, protocolErrors: 0, refused: 0 };
  private addr: { host: string; port: number } | null = null;
  private readonly refusedLog = new RateLimit(1, 60_000);

  constructor(readonly opts: IscsiPortalOptions) {}

  /** The address listened on (after start()). */
  get address(): { host: string; port: number } {
    if (!this.addr) throw new Error('the iSCSI portal is not listening');
    return this.addr;
  }

  /** Counters so far. */
  get stats(): Readonly<PortalStats> {
    this.statsValue.connections = this.conns.size;
    let sessions = 0;
    for (const c of this.conns) if (c.sessionStarted) sessions++;
    this.statsValue.sessions = sessions;
    return this.statsValue;
  }

  /** Starts listening; rejects with a message naming the address when it cannot. */
  async start(): Promise<void> {
    const server = net.createServer({ noDelay: true, keepAlive: true, keepAliveInitialDelay: 30_000 }, (socket) => this.accept(socket));
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e: NodeJS.ErrnoException) => {
        const hint = e.code === 'EADDRINUSE' ? ': another program listens there (another twindisk, tgtd, or iscsid\'s target?); pick another port'
          : e.code === 'EADDRNOTAVAIL' ? ': this machine has no such address; listen on one of its own addresses or 0.0.0.0'
          : e.code === 'EACCES' ? ': ports below 1024 need root (3260 is the iSCSI port); run as root or pick a port above 1023' : '';
        reject(new Error(`cannot listen for iSCSI on ${this.opts.host}:${this.opts.port}: ${e.message}${hint}`));
      });
      server.listen(this.opts.port, this.opts.host, () => resolve());
    });
    server.on('error', (e) => this.opts.log.error(`iSCSI listener error: ${e.message}`));
    const a = server.address() as net.AddressInfo;
    this.addr = { host: a.address, port: a.port };
    this.server = server;
    this.opts.log.info('iSCSI portal listening', { address: `${a.address}:${a.port}`, targets: this.opts.targets.map((t) => t.name).join(' ') });
  }

  /** Stops listening and closes every connection (initiators see the connection drop and log in again elsewhere). */
  async close(): Promise<void> {
    const server = this.server;
    this.server = null;
    for (const c of this.conns) c.destroy('portal closing');
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private accept(socket: net.Socket): void {
    const max = this.opts.maxConnections ?? 256;
    if (this.conns.size >= max) {
      this.statsValue.refused++;
      if (this.refusedLog.allow()) this.opts.log.warn(`refused an iSCSI connection from ${socket.remoteAddress}: ${max} connections are open (maxConnections)`);
      socket.destroy();
      return;
    }
    this.statsValue.accepted++;
    const c = new PortalConnection(this, socket, this.statsValue);
    this.conns.add(c);
    socket.once('close', () => {
      this.conns.delete(c);
      c.closed();
    });
  }

  /** Called by a connection: the state machine options for it. */
  connectionOptions(): ConnectionOptions {
    return { ...this.opts.connection, targets: this.opts.targets, ...(this.opts.decideLogin ? { decideLogin: this.opts.decideLogin } : {}) };
  }

  /** The runner of a target by name. */
  runnerFor(name: string): DiskOpRunner | undefined {
    return this.opts.targets.find((t) => t.name === name)?.runner;
  }
}

/** One TCP connection: socket, PDU reader and the connection's state machine. */
class PortalConnection {
  private readonly reader = new PduReader();
  private readonly state: ConnectionState;
  private digests: Digests = NO_DIGESTS;
  private ending = false;
  private isClosed = false;
  private readonly peer: string;
  private readonly log: Logger;
  private readonly noisy = new RateLimit(5, 10_000);
  private loginTimer: NodeJS.Timeout | null;
  /** Set once a Normal session reached full feature phase. */
  sessionStarted = false;
  private targetName = '';
  private initiatorName = '';
  private runner: DiskOpRunner | undefined;

  constructor(private readonly portal: IscsiPortal, private readonly socket: net.Socket, private readonly stats: PortalStats) {
    this.peer = `${socket.remoteAddress}:${socket.remotePort}`;
    this.log = portal.opts.log.child(this.peer);
    this.state = new ConnectionState(portal.connectionOptions());
    this.loginTimer = setTimeout(() => this.destroy(`login not finished within ${(portal.opts.loginTimeoutMs ?? 30_000) / 1000} s`), portal.opts.loginTimeoutMs ?? 30_000);
    this.loginTimer.unref();
    socket.on('data', (chunk: Buffer) => this.data(chunk));
    socket.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code !== 'ECONNRESET' && e.code !== 'EPIPE') this.log.warn(`iSCSI connection error: ${e.message}`);
    });
    socket.on('drain', () => { if (!this.ending) socket.resume(); });
  }

  private data(chunk: Buffer): void {
    if (this.ending) return;
    let pdus;
    try {
      pdus = this.reader.push(chunk);
    } catch (e) {
      this.protocolError(e);
      return;
    }
    this.stats.pdusIn += pdus.length;
    this.socket.cork();
    try {
      for (const pdu of pdus) {
        this.apply(this.state.receive(pdu));
        if (this.ending) break;
      }
    } finally {
      this.socket.uncork();
    }
    // PDUs before a malformed one were handled above; the malformed one ends the connection now.
    if (!this.ending && this.reader.error) this.protocolError(this.reader.error);
  }

  /** Sends a Step's PDUs, starts its disk operations, closes when it says so. */
  private apply(s: Step): void {
    for (const line of s.log) this.note(line);
    for (const pdu of s.pdus) {
      // Large data segments (reads) go out as the runner read them: no copy into a PDU buffer (the socket is corked: one writev).
      let room = true;
      for (const part of pduParts(pdu, this.digests)) room = this.socket.write(part);
      if (!room) this.socket.pause(); // resumed on 'drain': a slow reader throttles its own commands
      this.stats.pdusOut++;
    }
    if (s.fullFeature) this.enterFullFeature(s.fullFeature.digests, s.fullFeature.maxRecvDataSegmentLength);
    if (s.ops.length > 0 && this.runner) {
      for (const op of s.ops) this.runner.run(op, this.state, (next) => this.completed(next));
      this.runner.kick();
    } else if (s.ops.length > 0) {
      this.destroy('disk operation before a target was chosen (internal error)');
      return;
    }
    if (s.close !== null) {
      this.ending = true;
      if (s.close !== 'logout') this.note(`closing: ${s.close}`);
      this.socket.end();
    }
  }

  /** A disk operation finished: its Step (the response) goes out unless the connection is gone. */
  private completed(s: Step): void {
    if (this.isClosed) return;
    if (this.ending && s.pdus.length > 0) return;
    this.socket.cork();
    try {
      this.apply(s);
    } finally {
      this.socket.uncork();
    }
  }

  private enterFullFeature(digests: Digests, maxRecv: number): void {
    if (this.loginTimer) { clearTimeout(this.loginTimer); this.loginTimer = null; }
    // RFC 7143 section 13.1: digests start with the first PDU after the last Login Response, in both directions.
    this.digests = digests;
    this.reader.setDigests(digests);
    this.reader.setLimits({ maxDataSegmentLength: maxRecv });
    const p = this.state.session;
    this.initiatorName = p.initiatorName ?? '';
    if (p.sessionType === 'Normal' && p.targetName) {
      this.targetName = p.targetName;
      this.runner = this.portal.runnerFor(p.targetName);
      const refused = this.portal.opts.onSessionStart?.(this.targetName, this.initiatorName) ?? null;
      if (refused !== null) {
        this.destroy(`session of ${this.initiatorName} to ${this.targetName} refused: ${refused}`);
        return;
      }
      this.sessionStarted = true;
      this.log.info('iSCSI session', { initiator: this.initiatorName, target: this.targetName, digests: `${digests.header ? 'H' : '-'}${digests.data ? 'D' : '-'}` });
    }
  }

  private protocolError(e: unknown): void {
    this.stats.protocolErrors++;
    const msg = e instanceof PduError ? e.message : String(e);
    this.log.warn(`closing the iSCSI connection: malformed PDU: ${msg}`);
    this.ending = true;
    this.socket.destroy();
  }

  private note(line: string): void {
    // The state machine's session line is news, not a warning (the portal logs the session itself at info).
    if (/^((Normal|Discovery) session |CHAP: )/.test(line)) { this.log.debug(line); return; }
    if (this.noisy.allow()) {
      const n = this.noisy.takeSuppressed();
      this.log.warn(n > 0 ? `${line} (${n} similar lines suppressed)` : line);
    }
  }

  /** Closes the connection at once (portal shutdown, login timeout). */
  destroy(reason: string): void {
    if (this.isClosed) return;
    this.log.info(`closing the iSCSI connection: ${reason}`);
    this.ending = true;
    this.socket.destroy();
  }

  /** The socket closed: completions still in flight are dropped; the session (if any) ends. */
  closed(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.ending = true;
    if (this.loginTimer) { clearTimeout(this.loginTimer); this.loginTimer = null; }
    if (this.sessionStarted) {
      this.log.info('iSCSI session ended', { initiator: this.initiatorName, target: this.targetName });
      this.portal.opts.onSessionEnd?.(this.targetName, this.initiatorName);
    }
  }
}
