// The node's control socket: one JSON request per line from `twindisk status|primary|...`, one JSON answer per line.
import fs from 'node:fs';
import net from 'node:net';

/** Requests the CLI sends to a running node. */
export type ControlRequest =
  | { cmd: 'status' }
  | { cmd: 'primary'; force?: boolean }
  | { cmd: 'secondary' }
  | { cmd: 'connect'; peer?: string; discardMyData?: boolean }
  | { cmd: 'disconnect'; peer?: string }
  | { cmd: 'verify'; resync?: boolean }
  | { cmd: 'fault'; kind: 'read' | 'write' | 'clear'; offset?: number; length?: number }
  | { cmd: 'attach' }
  /** Online resize to `size` bytes (`twindisk resize`); a smaller size only with `allowShrink` (standalone `serve`). */
  | { cmd: 'resize'; size: number; allowShrink?: boolean }
  | { cmd: 'down' };

export type ControlReply = { ok: true; result?: unknown } | { ok: false; error: string };

/** One request line as a JSON object with a string "cmd", or an error string (the first check of every control socket's parser). */
export function parseCommandObject(line: string): (Record<string, unknown> & { cmd: string }) | string {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    return 'request is not JSON';
  }
  if (typeof v !== 'object' || v === null || typeof (v as { cmd?: unknown }).cmd !== 'string') return 'request has no "cmd"';
  return v as Record<string, unknown> & { cmd: string };
}

/** Parses one request line; returns an error string for anything malformed (the socket is local but still checked). */
export function parseControlRequest(line: string): ControlRequest | string {
  const v = parseCommandObject(line);
  if (typeof v === 'string') return v;
  const cmds = ['status', 'primary', 'secondary', 'connect', 'disconnect', 'verify', 'fault', 'attach', 'resize', 'down'];
  if (!cmds.includes((v as { cmd: string }).cmd)) return `unknown command "${(v as { cmd: string }).cmd}"`;
  if ((v as { cmd: string }).cmd === 'resize') {
    const size = (v as { size?: unknown }).size;
    if (typeof size !== 'number' || !Number.isSafeInteger(size) || size <= 0) return 'resize needs "size": a whole number of bytes above 0';
  }
  return v as ControlRequest;
}

/** What a control socket's owner says of a live socket at its path (another node, another serve). */
const IN_USE = (path: string): string => `another node is running with control socket ${path}: stop it first (twindisk down)`;

/**
 * Serves the control socket at `path`; each request line is parsed by `parse` (this file's node requests
 * by default; `serve --raid` passes its own) and answered by `handle`.
 */
export class ControlServer<R = ControlRequest> {
  private server: net.Server | null = null;

  constructor(
    private readonly path: string,
    private readonly handle: (r: R) => Promise<unknown>,
    private readonly parse: (line: string) => R | string = parseControlRequest as unknown as (line: string) => R | string,
    private readonly inUse: (path: string) => string = IN_USE,
  ) {}

  /** Listens; a stale socket from a crashed process is replaced, a live one refused. */
  async start(): Promise<void> {
    if (fs.existsSync(this.path)) {
      const live = await new Promise<boolean>((resolve) => {
        const c = net.connect(this.path, () => { c.destroy(); resolve(true); });
        c.on('error', () => resolve(false));
      });
      if (live) throw new Error(this.inUse(this.path));
      fs.unlinkSync(this.path);
    }
    const server = net.createServer((sock) => {
      let buf = '';
      sock.setEncoding('utf8');
      sock.on('data', (d: string) => {
        buf += d;
        if (buf.length > 65536) {
          sock.destroy();
          return;
        }
        for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          const req = this.parse(line);
          const answer = (r: ControlReply) => { if (!sock.destroyed) sock.write(JSON.stringify(r) + '\n'); };
          if (typeof req === 'string') {
            answer({ ok: false, error: req });
            continue;
          }
          this.handle(req).then((result) => answer({ ok: true, result }), (e: Error) => answer({ ok: false, error: e.message }));
        }
      });
      sock.on('error', () => undefined);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e: NodeJS.ErrnoException) => reject(new Error(`cannot create control socket ${this.path}: ${e.message}`)));
      server.listen(this.path, () => resolve());
    });
    this.server = server;
  }

  async close(): Promise<void> {
    const s = this.server;
    this.server = null;
    if (!s) return;
    await new Promise<void>((r) => s.close(() => r()));
    try { fs.unlinkSync(this.path); } catch { /* gone */ }
  }
}

/** How controlCall's errors name the other end. */
export interface ControlPeerWords {
  /** "the node", "serve --raid". */
  who: string;
  /** The message when nothing listens at the path. */
  notRunning: (path: string) => string;
}

const NODE_WORDS: ControlPeerWords = {
  who: 'the node',
  notRunning: (path) => `the node is not running (no control socket at ${path}): start it with \`twindisk up\``,
};

/** Sends one request to a control socket (a node's by default) and returns its result (throws with the other end's error). */
export function controlCall(path: string, req: ControlRequest | { cmd: string }, timeoutMs = 30000, words: ControlPeerWords = NODE_WORDS): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(path);
    let buf = '';
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`${words.who} did not answer on ${path} within ${timeoutMs / 1000} s`));
    }, timeoutMs);
    sock.setEncoding('utf8');
    sock.on('connect', () => sock.write(JSON.stringify(req) + '\n'));
    sock.on('data', (d: string) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      sock.destroy();
      let r: ControlReply;
      try {
        r = JSON.parse(buf.slice(0, nl)) as ControlReply;
      } catch {
        return reject(new Error(`${words.who} sent an unreadable answer`));
      }
      if (r.ok) resolve(r.result);
      else reject(new Error(r.error));
    });
    sock.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(new Error(e.code === 'ENOENT' || e.code === 'ECONNREFUSED' ? words.notRunning(path) : `cannot reach ${words.who} at ${path}: ${e.message}`));
    });
  });
}
