// A node's live status page (`twindisk up --http HOST:PORT`): the page's static files over HTTP, and status snapshots pushed over a WebSocket (`ws`) on every change.
//
// The page never polls. The server takes a snapshot (the control socket's `status`, through the node's
// own command()) when the engine says something changed (Resource.onChange, coalesced to one snapshot per
// turn of the event loop) and once a second for progress and the queues' rates, derives events from each
// pair of snapshots (events.ts) and pushes the snapshot to every page that is open. Actions come back over
// the same socket, only with `--http-admin`, each signed with the resource secret (admin-auth.ts), and run
// through the same command() as the control socket's.
import { readFileSync } from 'node:fs';
import http from 'node:http';
import type net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { WebSocketServer, type WebSocket } from 'ws';
import type { Logger } from '../../engine/log.js';
import { parseHostPort, type HostPort } from '../../engine/replication/config/address.js';
import type { Resource } from '../../engine/replication/resource.js';
import type { ControlRequest } from '../control.js';
import { actionMessage, macMatches, newNonce, parseActionRequest, type ActionRequest } from './admin-auth.js';
import { statusEvents, type NodeStatus, type StatusEvent } from './events.js';
import { QueueHistories, type QueueHistory, type QueueSource } from './queue-history.js';

/** The port the README's examples use (next to the metrics' 9942). */
export const EXAMPLE_HTTP_PORT = 9943;
/** Events the server keeps and sends. */
const EVENTS_KEPT = 50;
/** Snapshot period for progress bars and queue rates. */
const TICK_MS = 1000;
/** Wrong MACs a connection may send before it is closed. */
const WRONG_MACS_ALLOWED = 3;

/** The page's files, beside this file's source (dist/daemon/http/ -> daemon/http/). */
const PAGE_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'daemon', 'http');
const FILES: Record<string, { file: string; type: string }> = {
  '/': { file: 'page.html', type: 'text/html; charset=utf-8' },
  '/page.js': { file: 'page.js', type: 'text/javascript; charset=utf-8' },
  '/hmac.js': { file: 'hmac.js', type: 'text/javascript; charset=utf-8' },
};
/** No inline script, no other origin, no framing (the admin buttons cannot be clickjacked). */
const CSP = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/** What the server pushes: `hello` once per connection, then `status` snapshots, and a `result` per action. */
export type PageMessage =
  | { type: 'hello'; resource: string; node: string; admin: boolean; nonce: string }
  | { type: 'status'; reason: 'change' | 'tick' | 'connect'; at: number; status: NodeStatus; queues: QueueHistory[]; events: StatusEvent[] }
  | { type: 'result'; id: number; ok: boolean; error?: string };

export interface StatusPageOptions {
  at: HostPort;
  /** `--http-admin`: actions allowed (with the secret). */
  admin: boolean;
  /** The engine: its onChange is chained, its config names the resource, node and secret. */
  resource: Resource;
  /** The node's `status` (what the control socket answers). */
  status: () => Promise<NodeStatus>;
  /** The node's control command path (daemon/node.ts command()). */
  command: (r: ControlRequest) => Promise<unknown>;
  /** The front-ends' per-queue counters now (none without counters). */
  queues: () => QueueSource[];
  log: Logger;
}

/**
 * Parses `--http HOST:PORT` ("[v6]:port"; port 0 picks a free one, reported once listening), or returns
 * what is wrong with it.
 */
export function parseHttpAddress(s: string): HostPort | string {
  const zero = /:0$/.test(s);
  const r = parseHostPort(zero ? `${s.slice(0, -2)}:${EXAMPLE_HTTP_PORT}` : s, EXAMPLE_HTTP_PORT, null);
  if (typeof r === 'string') return r.replace('1..65535', '0..65535');
  return zero ? { host: r.host, port: 0 } : r;
}

function show(hp: HostPort): string {
  return hp.host.includes(':') ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`;
}

/** One open page: its nonce, the last sequence number it used, its wrong MACs. */
interface PageClient { ws: WebSocket; nonce: string; seq: number; wrong: number; from: string }

/** The status page's HTTP and WebSocket server. */
export class StatusPageServer {
  private server: http.Server | null = null;
  private wss: WebSocketServer | null = null;
  private bound: HostPort | null = null;
  private readonly files = new Map<string, Buffer>();
  private readonly clients = new Set<PageClient>();
  private timer: NodeJS.Timeout | null = null;
  private last: NodeStatus | null = null;
  private lastSent = '';
  private readonly events: StatusEvent[] = [];
  private readonly histories = new QueueHistories();
  private queues: QueueHistory[] = [];
  /** A snapshot is being taken; `again` is the reason of the next one, asked for meanwhile. */
  private busy = false;
  private again: 'change' | 'tick' | null = null;
  private changeQueued = false;
  private chained: (() => void) | null = null;
  private readonly onChange = (): void => {
    this.chained?.();
    if (this.changeQueued) return;
    this.changeQueued = true;
    setImmediate(() => { this.changeQueued = false; void this.snapshot('change'); });
  };

  constructor(private readonly opts: StatusPageOptions) {}

  /** The address listened on (the real port when 0 was asked for). */
  get address(): HostPort {
    return this.bound ?? this.opts.at;
  }

  /** Whether the page's actions are on (`--http-admin`). */
  get admin(): boolean {
    return this.opts.admin;
  }

  /** The page's URL. */
  get url(): string {
    return `http://${show(this.address)}/`;
  }

  /** Reads the page's files, listens, hooks the engine's change notification and starts the tick. */
  async start(): Promise<void> {
    for (const f of Object.values(FILES)) this.files.set(f.file, readFileSync(path.join(PAGE_DIR, f.file)));
    const server = http.createServer((req, res) => this.answer(req, res));
    const wss = new WebSocketServer({ noServer: true, maxPayload: 4096 });
    server.on('upgrade', (req, sock, head) => {
      if ((req.url ?? '').split('?')[0] !== '/ws' || !this.sameOrigin(req)) {
        sock.end('HTTP/1.1 403 Forbidden\r\nconnection: close\r\n\r\n');
        return;
      }
      wss.handleUpgrade(req, sock, head, (ws) => this.opened(ws, req.socket.remoteAddress ?? '?'));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e: NodeJS.ErrnoException) => {
        const where = show(this.opts.at);
        reject(new Error(e.code === 'EADDRINUSE'
          ? `cannot serve the status page on ${where}: the port is in use: choose another port for --http (or the node's "http" key)`
          : e.code === 'EADDRNOTAVAIL'
            ? `cannot serve the status page on ${where}: that address is not one of this machine's: give one of its addresses, 127.0.0.1, or 0.0.0.0 for all`
            : `cannot serve the status page on ${where}: ${e.message}`));
      });
      server.listen(this.opts.at.port, this.opts.at.host, () => resolve());
    });
    server.on('error', (e) => this.opts.log.warn(`status page: ${e.message}`));
    this.bound = { host: this.opts.at.host, port: (server.address() as net.AddressInfo).port };
    this.server = server;
    this.wss = wss;
    const res = this.opts.resource;
    this.chained = res.onChange;
    res.onChange = this.onChange;
    this.timer = setInterval(() => void this.snapshot('tick'), TICK_MS);
    await this.snapshot('tick');
    this.opts.log.info('serving the status page', { url: this.url, admin: this.opts.admin });
  }

  /** GET of the page's files; anything else 404 or 405. */
  private answer(req: http.IncomingMessage, res: http.ServerResponse): void {
    const f = FILES[(req.url ?? '/').split('?')[0]!];
    if (!f) {
      res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end('not found: the status page is at /\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { 'content-type': 'text/plain; charset=utf-8', allow: 'GET, HEAD' }).end('only GET and HEAD\n');
      return;
    }
    res.writeHead(200, {
      'content-type': f.type, 'cache-control': 'no-store', 'content-security-policy': CSP,
      'x-content-type-options': 'nosniff', 'referrer-policy': 'no-referrer',
    }).end(req.method === 'HEAD' ? undefined : this.files.get(f.file));
  }

  /**
   * A browser's WebSocket carries the page's Origin: only this server's own pages may connect (another
   * site open in the operator's browser may not read the status). Clients without Origin (not browsers) may.
   */
  private sameOrigin(req: http.IncomingMessage): boolean {
    const origin = req.headers.origin;
    if (origin === undefined) return true;
    try {
      return new URL(origin).host.toLowerCase() === (req.headers.host ?? '').toLowerCase();
    } catch {
      return false;
    }
  }

  private opened(ws: WebSocket, from: string): void {
    const c: PageClient = { ws, nonce: newNonce(), seq: 0, wrong: 0, from };
    this.clients.add(c);
    const cfg = this.opts.resource.cfg;
    this.send(c, { type: 'hello', resource: cfg.resource, node: this.opts.resource.me.name, admin: this.opts.admin, nonce: c.nonce });
    if (this.last) this.send(c, this.statusMessage('connect'));
    ws.on('message', (data, binary) => void this.message(c, binary ? '' : String(data)));
    ws.on('close', () => this.clients.delete(c));
    ws.on('error', () => ws.terminate());
  }

  private send(c: PageClient, m: PageMessage | string): void {
    if (c.ws.readyState === c.ws.OPEN) c.ws.send(typeof m === 'string' ? m : JSON.stringify(m));
  }

  private statusMessage(reason: 'change' | 'tick' | 'connect'): PageMessage {
    return { type: 'status', reason, at: Date.now(), status: this.last!, queues: this.queues, events: this.events };
  }

  /**
   * Takes a snapshot, records the events since the last one and pushes it to every open page: always
   * after a change, after a tick only when something differs. One at a time; asked meanwhile, once more after.
   */
  private async snapshot(reason: 'change' | 'tick'): Promise<void> {
    if (this.busy) {
      if (this.again !== 'change') this.again = reason;
      return;
    }
    this.busy = true;
    try {
      const s = await this.opts.status();
      const now = Date.now();
      this.events.push(...statusEvents(this.last, s, now));
      if (this.events.length > EVENTS_KEPT) this.events.splice(0, this.events.length - EVENTS_KEPT);
      this.last = s;
      if (reason === 'tick') this.queues = this.histories.sample(this.opts.queues(), now);
      const same = JSON.stringify([s, this.queues, this.events.length]);
      if (reason === 'change' || same !== this.lastSent) {
        this.lastSent = same;
        const m = JSON.stringify(this.statusMessage(reason));
        for (const c of this.clients) this.send(c, m);
      }
    } catch (e) {
      this.opts.log.debug(`status page snapshot: ${(e as Error).message}`);
    } finally {
      this.busy = false;
    }
    const next = this.again;
    this.again = null;
    if (next && this.server) await this.snapshot(next);
  }

  /** An action from a page: refused unless admin, signed with the secret and fresh; then run as the control socket runs it. */
  private async message(c: PageClient, text: string): Promise<void> {
    let v: unknown;
    try {
      v = JSON.parse(text);
    } catch {
      v = null;
    }
    const req = parseActionRequest(v);
    const id = typeof (v as { id?: unknown } | null)?.id === 'number' ? (v as { id: number }).id : 0;
    const refuse = (error: string): void => this.send(c, { type: 'result', id, ok: false, error });
    if (typeof req === 'string') return refuse(req);
    if (!this.opts.admin) {
      return refuse('actions are off: this node serves its status page read-only. Start it with --http-admin (or the node key "http-admin": true) '
        + `to allow primary, secondary, verify, connect and disconnect, or use the command line (twindisk ${req.cmd} --config FILE --node ${this.opts.resource.me.name})`);
    }
    const cfg = this.opts.resource.cfg;
    const signed = actionMessage(cfg.resource, this.opts.resource.me.name, c.nonce, req.seq, req.cmd, req.peer);
    if (!macMatches(cfg.secret, signed, req.mac)) {
      c.wrong++;
      this.opts.log.warn(`status page: ${req.cmd} from ${c.from} refused: wrong secret (${c.wrong} of ${WRONG_MACS_ALLOWED} allowed on this connection)`);
      refuse(`refused: wrong secret (the resource file's "secret")${c.wrong >= WRONG_MACS_ALLOWED ? '; too many tries: reload the page to try again' : ''}`);
      if (c.wrong >= WRONG_MACS_ALLOWED) c.ws.close(1008, 'too many wrong secrets');
      return;
    }
    if (req.seq <= c.seq) return refuse('refused: this action was signed for an earlier request (a replay?): try again');
    c.seq = req.seq;
    this.opts.log.info(`status page: ${req.cmd}${req.peer ? ` ${req.peer}` : ''} from ${c.from}`);
    try {
      await this.opts.command(controlRequest(req));
      this.send(c, { type: 'result', id, ok: true });
    } catch (e) {
      refuse((e as Error).message);
    }
  }

  /** Unhooks the engine, closes every page's socket and stops listening. */
  async close(): Promise<void> {
    const s = this.server;
    this.server = null;
    if (!s) return;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    const res = this.opts.resource;
    if (res.onChange === this.onChange) res.onChange = this.chained;
    for (const c of this.clients) c.ws.terminate();
    this.clients.clear();
    this.wss?.close();
    s.closeAllConnections();
    await new Promise<void>((r) => s.close(() => r()));
  }
}

/** The control socket request an action is. */
function controlRequest(a: ActionRequest): ControlRequest {
  switch (a.cmd) {
    case 'primary': return { cmd: 'primary' };
    case 'secondary': return { cmd: 'secondary' };
    case 'verify': return { cmd: 'verify' };
    case 'connect': return { cmd: 'connect', ...(a.peer ? { peer: a.peer } : {}) };
    case 'disconnect': return { cmd: 'disconnect', ...(a.peer ? { peer: a.peer } : {}) };
  }
}
