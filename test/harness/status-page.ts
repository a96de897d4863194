// A WebSocket client of a node's status page (daemon/http/status-server.ts) for tests: collects what the node pushes and sends signed actions.
import WebSocket from 'ws';
import { actionMac, actionMessage, type PageAction } from '../../daemon/http/admin-auth.js';
import type { PageMessage } from '../../daemon/http/status-server.js';
import { sleep } from './cluster.js';

type Hello = Extract<PageMessage, { type: 'hello' }>;
export type StatusMessage = Extract<PageMessage, { type: 'status' }> & { receivedAt: number };
type Result = Extract<PageMessage, { type: 'result' }>;

export class StatusPageClient {
  readonly messages: (PageMessage & { receivedAt: number })[] = [];
  hello: Hello | null = null;
  private seq = 0;
  private nextId = 1;
  closed = false;

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (d) => {
      const m = { ...(JSON.parse(String(d)) as PageMessage), receivedAt: Date.now() };
      if (m.type === 'hello') this.hello = m;
      this.messages.push(m);
    });
    ws.on('close', () => { this.closed = true; });
  }

  /** Connects to http://127.0.0.1:`port`/ws (with `origin` as a browser would send it) and waits for the hello. */
  static async open(port: number, origin?: string): Promise<StatusPageClient> {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`, origin ? { origin } : {});
    const c = new StatusPageClient(ws);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    await c.waitFor((m) => m.type === 'hello', 'the hello', 5000);
    return c;
  }

  statuses(): StatusMessage[] {
    return this.messages.filter((m): m is StatusMessage => m.type === 'status');
  }

  /** The first message (after `from`) that satisfies `pred`, waiting up to `ms`. */
  async waitFor<T extends PageMessage>(pred: (m: PageMessage) => boolean, what: string, ms: number, from = 0): Promise<T & { receivedAt: number }> {
    const t0 = Date.now();
    for (;;) {
      const m = this.messages.slice(from).find(pred);
      if (m) return m as unknown as T & { receivedAt: number };
      if (Date.now() - t0 > ms) throw new Error(`no ${what} within ${ms} ms; last: ${JSON.stringify(this.messages.at(-1))}`);
      await sleep(10);
    }
  }

  /** A status snapshot satisfying `cond`, after message index `from`. */
  waitStatus(cond: (m: StatusMessage) => boolean, what: string, ms: number, from = 0): Promise<StatusMessage> {
    return this.waitFor<StatusMessage>((m) => m.type === 'status' && cond(m as StatusMessage), what, ms, from);
  }

  /** Sends `cmd` signed with `secret` (as the page does) and waits for its result. `seq` overrides the sequence number (replays). */
  async action(cmd: PageAction, secret: string, opts: { peer?: string; seq?: number } = {}): Promise<Result> {
    const h = this.hello!;
    const seq = opts.seq ?? ++this.seq;
    const id = this.nextId++;
    const mac = actionMac(secret, actionMessage(h.resource, h.node, h.nonce, seq, cmd, opts.peer));
    this.ws.send(JSON.stringify({ type: 'action', id, seq, cmd, mac, ...(opts.peer ? { peer: opts.peer } : {}) }));
    return this.waitFor<Result>((m) => m.type === 'result' && m.id === id, `the result of ${cmd}`, 10000);
  }

  close(): void {
    this.ws.terminate();
  }
}
