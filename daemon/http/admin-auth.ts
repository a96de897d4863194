// The status page's admin actions: which are allowed, and the HMAC that proves the resource secret for one action (pure).
//
// The secret never crosses the wire. The server gives each WebSocket connection a random nonce; the page
// signs every action with HMAC-SHA256 under the resource secret over the nonce, a sequence number that
// must grow and the action itself (daemon/http/hmac.js computes the same in the browser). A captured MAC
// is good for that one action on that one connection: it cannot be replayed, reused on another connection
// or turned into another action. The comparison is constant-time (timingSafeEqual).
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/** The actions the page may ask for, each the control socket command of the same name (daemon/node.ts command()). */
export const PAGE_ACTIONS = ['primary', 'secondary', 'verify', 'connect', 'disconnect'] as const;
export type PageAction = (typeof PAGE_ACTIONS)[number];

/** One action as the page sends it. */
export interface ActionRequest {
  type: 'action';
  /** Echoed in the answer. */
  id: number;
  /** Greater than every sequence number this connection used before. */
  seq: number;
  cmd: PageAction;
  /** connect, disconnect: one peer (all when absent). */
  peer?: string;
  /** HMAC-SHA256 (hex) of actionMessage(...) under the resource secret. */
  mac: string;
}

/** A fresh nonce for one connection. */
export function newNonce(): string {
  return randomBytes(24).toString('base64url');
}

/** The bytes the MAC covers: a label, the resource and node (a MAC for one node is useless at another), the nonce, seq and the action. */
export function actionMessage(resource: string, node: string, nonce: string, seq: number, cmd: string, peer: string | undefined): string {
  return ['twindisk-status-action', resource, node, nonce, String(seq), cmd, peer ?? ''].join('\n');
}

/** The MAC of an action, hex. */
export function actionMac(secret: string, message: string): string {
  return createHmac('sha256', secret).update(message, 'utf8').digest('hex');
}

/** Whether `mac` (as sent, any string) is the MAC of `message` under `secret`; constant-time in the MAC's bytes. */
export function macMatches(secret: string, message: string, mac: unknown): boolean {
  const want = Buffer.from(actionMac(secret, message), 'hex');
  if (typeof mac !== 'string' || !/^[0-9a-f]{64}$/.test(mac)) return false;
  return timingSafeEqual(want, Buffer.from(mac, 'hex'));
}

/** Parses a message from the page as an action request, or returns what is wrong with it. */
export function parseActionRequest(v: unknown): ActionRequest | string {
  if (typeof v !== 'object' || v === null) return 'not an object';
  const o = v as Record<string, unknown>;
  if (o.type !== 'action') return `unknown message type ${JSON.stringify(o.type)}`;
  if (typeof o.id !== 'number' || !Number.isSafeInteger(o.id)) return 'action needs a whole number "id"';
  if (typeof o.seq !== 'number' || !Number.isSafeInteger(o.seq) || o.seq < 1) return 'action needs a whole number "seq" above 0';
  if (!(PAGE_ACTIONS as readonly unknown[]).includes(o.cmd)) return `unknown action ${JSON.stringify(o.cmd)}: the page may ask for ${PAGE_ACTIONS.join(', ')}`;
  if (o.peer !== undefined && (typeof o.peer !== 'string' || o.peer === '')) return '"peer" is a peer\'s name';
  if (o.peer !== undefined && o.cmd !== 'connect' && o.cmd !== 'disconnect') return `${String(o.cmd)} takes no peer`;
  if (typeof o.mac !== 'string') return 'action needs "mac"';
  return { type: 'action', id: o.id, seq: o.seq, cmd: o.cmd as PageAction, ...(o.peer !== undefined ? { peer: o.peer as string } : {}), mac: o.mac };
}
