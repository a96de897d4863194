// Boot scripts over HTTP, for DHCP chain-loading: a DHCP server hands iPXE clients http://HOST:PORT/ as their boot
// file; that answers a one-line script chaining to /boot.ipxe?mac=${net0/mac}, which answers the client's own script:
// a file MAC.ipxe from the scripts directory when there is one (per-machine scripts), else the default script.
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import type { Logger } from '../engine/log.js';

/** A MAC address as iPXE writes ${net0/mac}: six colon-separated pairs of lower-case hex digits. */
const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

/** Options of a BootScriptServer. */
export interface BootScriptOptions {
  host: string;
  port: number;
  /** The default script for a client (its MAC when it sent one). */
  script: (mac: string | null) => string;
  /** A directory of per-machine scripts named by MAC, `52-54-00-12-34-56.ipxe` (hyphens: ':' is awkward in file names). */
  dir?: string;
  log: Logger;
}

/** What a request gets: pure, so the routing is tested without a socket. */
export function bootResponse(url: string, hostHeader: string | undefined, o: Pick<BootScriptOptions, 'script' | 'dir'>): { status: number; body: string } {
  let u: URL;
  try {
    u = new URL(url, 'http://boot.invalid');
  } catch {
    return { status: 400, body: 'bad request\n' };
  }
  if (u.pathname === '/') {
    // The DHCP boot file: hand over to the per-client script, with the client's MAC in the URL.
    const host = hostHeader && /^[A-Za-z0-9.:[\]-]+$/.test(hostHeader) ? hostHeader : null;
    if (!host) return { status: 400, body: 'no usable Host header: chain to http://HOST:PORT/boot.ipxe?mac=${net0/mac} instead\n' };
    return { status: 200, body: `#!ipxe\nchain http://${host}/boot.ipxe?mac=\${net0/mac} || shell\n` };
  }
  if (u.pathname !== '/boot.ipxe') return { status: 404, body: `no ${u.pathname} here: iPXE scripts are at / and /boot.ipxe?mac=MAC\n` };
  const macParam = u.searchParams.get('mac');
  const mac = macParam === null ? null : macParam.toLowerCase();
  if (mac !== null && !MAC_RE.test(mac)) return { status: 400, body: `mac=${macParam} is not a MAC address like 52:54:00:12:34:56\n` };
  if (mac !== null && o.dir) {
    // The name is built from the checked MAC only: no path from the request reaches the file system.
    const file = path.join(o.dir, `${mac.replace(/:/g, '-')}.ipxe`);
    try {
      return { status: 200, body: fs.readFileSync(file, 'utf8') };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') return { status: 500, body: `cannot read the script for ${mac}\n` };
    }
  }
  return { status: 200, body: o.script(mac) };
}

/** Serves boot scripts until closed. */
export class BootScriptServer {
  private server: http.Server | null = null;

  constructor(private readonly o: BootScriptOptions) {}

  /** The port listened on (after start()). */
  get port(): number {
    return (this.server?.address() as { port: number } | null)?.port ?? 0;
  }

  async start(): Promise<void> {
    const server = http.createServer((req, res) => {
      const r = req.method === 'GET' || req.method === 'HEAD'
        ? bootResponse(req.url ?? '/', req.headers.host, this.o)
        : { status: 405, body: 'only GET\n' };
      this.o.log.info(`boot script ${req.method} ${req.url} from ${req.socket.remoteAddress}: ${r.status}`);
      res.writeHead(r.status, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' });
      res.end(req.method === 'HEAD' ? undefined : r.body);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e: NodeJS.ErrnoException) => reject(new Error(`cannot serve boot scripts on ${this.o.host}:${this.o.port}: ${e.message}`
        + (e.code === 'EADDRINUSE' ? ' (another program listens there; pick another port)' : ''))));
      server.listen(this.o.port, this.o.host, () => resolve());
    });
    this.server = server;
    this.o.log.info(`serving iPXE boot scripts on http://${this.o.host}:${this.port}/ (DHCP boot file for iPXE clients)`);
  }

  async close(): Promise<void> {
    const s = this.server;
    this.server = null;
    if (s) await new Promise<void>((r) => s.close(() => r()));
  }
}
