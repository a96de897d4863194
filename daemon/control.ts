// The node's control socket: one JSON request per line from `twindisk status|primary|...`, one JSON answer per line.
import fs from 'node:fs';
import net from 'node:net';
import type { RaidControlRequest } from '../engine/raid/membership.js';

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
  | { cmd: 'down' }
  /** A node whose disk is an md array: its members, as `serve --raid --control` takes them. */
  | RaidControlRequest;

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
  if (v.cmd.startsWith('raid-')) return parseRaidControlRequest(line);
  const cmds = ['status', 'primary', 'secondary', 'connect', 'disconnect', 'verify', 'fault', 'attach', 'resize', 'down'];
  if (!cmds.includes(v.cmd)) return `unknown command ${JSON.stringify(v.cmd.slice(0, 64))}${v.cmd.length > 64 ? '...' : ''}`;
  if ((v as { cmd: string }).cmd === 'resize') {
    const size = (v as { size?: unknown }).size;
    if (typeof size !== 'number' || !Number.isSafeInteger(size) || size <= 0) return 'resize needs "size": a whole number of bytes above 0';
  }
  return v as ControlRequest;
}

/** The fields each request of a served array takes besides "cmd" (anything else is refused). */
const RAID_FIELDS: Record<RaidControlRequest['cmd'], readonly string[]> = {
  'raid-status': [],
  'raid-fail': ['slot'],
  'raid-remove': ['slot'],
  'raid-add': ['slot', 'member', 'size', 'rate', 'force'],
  'raid-replace': ['slot', 'member', 'size', 'rate', 'force'],
  'raid-check': ['rate'],
  'raid-repair': ['rate'],
  'raid-resync': [],
  'raid-inject': ['slot', 'kind', 'offset', 'length', 'times'],
};

/** Longest member path taken (Linux's PATH_MAX, less its NUL). */
const MEMBER_PATH_MAX = 4095;

/**
 * Parses one request line of a served array's control socket (membership.ts's RaidControlRequest);
 * an error string for anything malformed: an unknown command or field, a field of the wrong type or
 * range (the socket is local, but still checked). Only syntax: whether the slot exists is the array's.
 */
export function parseRaidControlRequest(line: string): RaidControlRequest | string {
  const o = parseCommandObject(line);
  if (typeof o === 'string') return o;
  const cmd = o.cmd;
  if (!Object.hasOwn(RAID_FIELDS, cmd)) {
    return `unknown command "${cmd.slice(0, 64)}": a served array takes ${Object.keys(RAID_FIELDS).join(', ')}`;
  }
  const fields = RAID_FIELDS[cmd as RaidControlRequest['cmd']];
  for (const k of Object.keys(o)) {
    if (k !== 'cmd' && !fields.includes(k)) {
      return `${cmd} has no field "${k.slice(0, 64)}": it takes ${fields.length > 0 ? fields.map((f) => `"${f}"`).join(', ') : 'none besides "cmd"'}`;
    }
  }
  const count = (x: unknown): x is number => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
  if (fields.includes('slot') && !count(o.slot)) return `${cmd} needs "slot": the slot number, a whole number 0 or more`;
  if (o.rate !== undefined && !(typeof o.rate === 'number' && Number.isFinite(o.rate) && o.rate > 0)) return `${cmd} "rate" is bytes a second, a number above 0`;
  const rate = o.rate !== undefined ? { rate: o.rate as number } : {};
  switch (cmd as RaidControlRequest['cmd']) {
    case 'raid-status':
    case 'raid-resync':
      return { cmd: cmd as 'raid-status' | 'raid-resync' };
    case 'raid-fail':
    case 'raid-remove':
      return { cmd: cmd as 'raid-fail' | 'raid-remove', slot: o.slot as number };
    case 'raid-check':
    case 'raid-repair':
      return { cmd: cmd as 'raid-check' | 'raid-repair', ...rate };
    case 'raid-inject': {
      const kinds = ['read-error', 'write-error', 'vanish', 'clear'];
      if (typeof o.kind !== 'string' || !kinds.includes(o.kind)) return `raid-inject needs "kind": one of ${kinds.join(', ')}`;
      const slot = o.slot as number;
      if (o.kind === 'vanish' || o.kind === 'clear') {
        if (o.offset !== undefined || o.length !== undefined || o.times !== undefined) return `raid-inject ${o.kind} takes no "offset", "length" or "times"`;
        return { cmd: 'raid-inject', slot, kind: o.kind };
      }
      if (!count(o.offset) || !count(o.length) || o.length === 0) return `raid-inject ${o.kind} needs "offset" and "length": member bytes, whole numbers (length above 0)`;
      if (o.times !== undefined && (!count(o.times) || o.times === 0)) return 'raid-inject "times" is a whole number above 0';
      return {
        cmd: 'raid-inject', slot, kind: o.kind as 'read-error' | 'write-error', offset: o.offset, length: o.length,
        ...(o.times !== undefined ? { times: o.times as number } : {}),
      };
    }
    case 'raid-add':
    case 'raid-replace': {
      const m = o.member;
      if (typeof m !== 'string' || m === '') return `${cmd} needs "member": the new member's file or device, an absolute path`;
      if (m.includes('\0')) return `${cmd} "member" holds a NUL byte: give a path`;
      if (Buffer.byteLength(m) > MEMBER_PATH_MAX) return `${cmd} "member" is longer than ${MEMBER_PATH_MAX} bytes`;
      if (!m.startsWith('/')) return `${cmd} "member" is an absolute path (the served array's working directory is not the caller's): got "${m.slice(0, 64)}"`;
      if (o.size !== undefined && (!count(o.size) || o.size === 0)) return `${cmd} "size" is a whole number of bytes above 0`;
      if (o.force !== undefined && typeof o.force !== 'boolean') return `${cmd} "force" is true or false`;
      return {
        cmd: cmd as 'raid-add' | 'raid-replace', slot: o.slot as number, member: m,
        ...(o.size !== undefined ? { size: o.size as number } : {}), ...rate, ...(o.force ? { force: true } : {}),
      };
    }
  }
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
