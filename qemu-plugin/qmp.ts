// A QMP client: QEMU's JSON control protocol over a Unix socket (commands, replies matched by id, events); used by `twindisk qemu` and the tests.
import { EventEmitter } from 'node:events';
import net from 'node:net';

/** QEMU sent something that is not QMP. */
export class QmpProtocolError extends Error {
  override readonly name = 'QmpProtocolError';
}

/** A command QEMU refused; `klass` is QMP's error class (GenericError, DeviceNotFound, ...). */
export class QmpCommandError extends Error {
  override readonly name = 'QmpCommandError';
  constructor(readonly command: string, readonly klass: string, readonly desc: string) {
    super(`QMP ${command} failed: ${desc} (${klass})`);
  }
}

export type QmpMessage = Record<string, unknown>;

/**
 * Splits received text into complete JSON lines. Returns the parsed messages and the unfinished
 * tail to keep for the next call. Throws QmpProtocolError for a line that is not a JSON object.
 */
export function parseQmpLines(text: string): { messages: QmpMessage[]; rest: string } {
  const lines = text.split('\n');
  const rest = lines.pop()!;
  const messages: QmpMessage[] = [];
  for (const raw of lines) {
    const line = raw.trim();
    if (!line) continue;
    let v: unknown;
    try {
      v = JSON.parse(line);
    } catch {
      throw new QmpProtocolError(`not JSON: ${line.slice(0, 200)}`);
    }
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new QmpProtocolError(`not a JSON object: ${line.slice(0, 200)}`);
    messages.push(v as QmpMessage);
  }
  if (rest.length > 1 << 20) throw new QmpProtocolError('a QMP line longer than 1 MiB');
  return { messages, rest };
}

interface Pending {
  command: string;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
}

/** Connected QMP session. Events are emitted as ('event', name, data, message). */
export class QmpClient extends EventEmitter {
  /** QEMU's version triple from the greeting. */
  version = '';
  private buf = '';
  private nextId = 1;
  private readonly pending = new Map<string, Pending>();
  private closed: Error | null = null;

  private constructor(private readonly sock: net.Socket) {
    super();
  }

  /**
   * Connects to `path` (retrying while the socket does not exist yet or refuses, up to `timeoutMs`),
   * reads the greeting and enters command mode.
   */
  static async connect(path: string, timeoutMs = 10_000): Promise<QmpClient> {
    const t0 = Date.now();
    for (;;) {
      try {
        const sock = await new Promise<net.Socket>((resolve, reject) => {
          const s = net.createConnection(path);
          s.once('connect', () => resolve(s));
          s.once('error', reject);
        });
        const c = new QmpClient(sock);
        await c.handshake(Math.max(1000, timeoutMs - (Date.now() - t0)));
        return c;
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if ((code === 'ENOENT' || code === 'ECONNREFUSED') && Date.now() - t0 < timeoutMs) {
          await new Promise((r) => setTimeout(r, 50));
          continue;
        }
        throw new Error(`cannot open QMP on ${path}: ${(e as Error).message}`);
      }
    }
  }

  private handshake(timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no QMP greeting within ${timeoutMs} ms`)), timeoutMs);
      const onData = (d: Buffer) => {
        try {
          this.buf += d.toString('utf8');
          const { messages, rest } = parseQmpLines(this.buf);
          this.buf = rest;
          for (const m of messages) {
            if (!this.version && m.QMP) {
              const v = ((m.QMP as QmpMessage).version as QmpMessage | undefined)?.qemu as Record<string, number> | undefined;
              this.version = v ? `${v.major}.${v.minor}.${v.micro}` : 'unknown';
              this.sock.off('data', onData);
              this.sock.on('data', (x: Buffer) => this.receive(x));
              this.sock.on('close', () => this.fail(new Error('QMP connection closed')));
              this.sock.on('error', (e) => this.fail(e));
              clearTimeout(timer);
              this.execute('qmp_capabilities').then(() => resolve(), reject);
              if (this.buf) this.receive(Buffer.alloc(0));
              return;
            }
          }
        } catch (e) {
          clearTimeout(timer);
          reject(e);
        }
      };
      this.sock.on('data', onData);
      this.sock.once('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
    });
  }

  private receive(d: Buffer): void {
    this.buf += d.toString('utf8');
    let parsed: { messages: QmpMessage[]; rest: string };
    try {
      parsed = parseQmpLines(this.buf);
    } catch (e) {
      this.fail(e as Error);
      this.sock.destroy();
      return;
    }
    this.buf = parsed.rest;
    for (const m of parsed.messages) {
      if (typeof m.event === 'string') {
        this.emit('event', m.event, m.data, m);
        continue;
      }
      const id = typeof m.id === 'string' ? m.id : undefined;
      const p = id ? this.pending.get(id) : undefined;
      if (!p || !id) continue;
      this.pending.delete(id);
      if ('error' in m) {
        const err = m.error as { class?: string; desc?: string };
        p.reject(new QmpCommandError(p.command, err.class ?? 'GenericError', err.desc ?? 'unknown error'));
      } else {
        p.resolve(m.return);
      }
    }
  }

  /** Runs a command and resolves with its `return` value; rejects with QmpCommandError. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    if (this.closed) return Promise.reject(this.closed);
    const id = `td-${this.nextId++}`;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { command, resolve: resolve as (v: unknown) => void, reject });
      this.sock.write(JSON.stringify(args ? { execute: command, arguments: args, id } : { execute: command, id }) + '\n');
    });
  }

  /** Waits for the next event named `name` (optionally matching `filter`). */
  waitEvent(name: string, timeoutMs = 30_000, filter: (data: QmpMessage) => boolean = () => true): Promise<QmpMessage> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.off('event', on);
        reject(new Error(`no QMP event ${name} within ${timeoutMs} ms`));
      }, timeoutMs);
      const on = (ev: string, data: QmpMessage | undefined) => {
        if (ev !== name || !filter(data ?? {})) return;
        clearTimeout(timer);
        this.off('event', on);
        resolve(data ?? {});
      };
      this.on('event', on);
    });
  }

  private fail(e: Error): void {
    if (this.closed) return;
    this.closed = e;
    for (const p of this.pending.values()) p.reject(new Error(`QMP ${p.command}: ${e.message}`));
    this.pending.clear();
    this.emit('close', e);
  }

  /** Closes the session. */
  close(): void {
    this.fail(new Error('QMP client closed'));
    this.sock.destroy();
  }
}
