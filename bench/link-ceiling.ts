// The ceiling a replicated write cannot beat on this machine: a round trip through a `ws` link to a
// second Node process that writes the payload to a page-cached file and answers with 8 bytes. No
// twindisk code runs on either side, so `twindisk bench replication` can show how much of the gap to
// the unreplicated volume is the link and the second process, and how much is the engine. The same
// round trip over a bare TCP socket (`net.Socket`, a 4-byte length before each frame, no ws) is the
// ceiling of the ceiling: what ws itself costs.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { WebSocket, WebSocketServer } from 'ws';
import { blockPicker, writePattern } from './pattern.js';
import type { Workload } from './vhost.js';

export interface LinkCeiling {
  iops: number;
  mbps: number;
}

/** Which link the round trips take. */
export type LinkKind = 'ws' | 'tcp';

/** The peer side: run as a child process (`node link-ceiling.js --peer FILE SIZE KIND`); prints its port. */
function peer(file: string, size: number, kind: LinkKind): void {
  const fd = fs.openSync(file, 'w+');
  // Written once and in the page cache, as the replicas' images are when the benchmark runs.
  writePattern(fd, size);
  fs.fdatasyncSync(fd);
  const ack = Buffer.alloc(8);
  if (kind === 'tcp') return tcpPeer(fd, ack);
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false, maxPayload: 4 << 20 });
  wss.on('connection', (ws) => {
    ws.on('message', (d: Buffer) => {
      // The first 8 bytes carry the offset, as a DATA frame's header does.
      const offset = Number(d.readBigUInt64LE(0));
      fs.writeSync(fd, d, 8, d.length - 8, offset);
      ws.send(ack);
    });
  });
  wss.on('listening', () => process.stdout.write(`${(wss.address() as { port: number }).port}\n`));
}

/** The bare TCP peer: frames are a u32 length, then the 8-byte offset and the data; each is written, then acknowledged with 8 bytes. */
function tcpPeer(fd: number, ack: Buffer): void {
  const server = net.createServer({ noDelay: true }, (sock) => {
    const chunks: Buffer[] = [];
    let have = 0;
    sock.on('data', (d: Buffer) => {
      chunks.push(d);
      have += d.length;
      for (;;) {
        if (have < 4) return;
        let head = chunks[0]!;
        if (head.length < 4) {
          head = Buffer.concat(chunks);
          chunks.length = 0;
          chunks.push(head);
        }
        const len = head.readUInt32LE(0);
        if (have < 4 + len) return;
        // The frame whole in one buffer (a copy only when it arrived in pieces).
        let frame: Buffer;
        if (head.length >= 4 + len) frame = head.subarray(4, 4 + len);
        else {
          const all = Buffer.concat(chunks);
          chunks.length = 0;
          chunks.push(all);
          head = all;
          frame = all.subarray(4, 4 + len);
        }
        fs.writeSync(fd, frame, 8, len - 8, Number(frame.readBigUInt64LE(0)));
        sock.write(ack);
        const rest = head.subarray(4 + len);
        chunks.shift();
        if (rest.length > 0) chunks.unshift(rest);
        have -= 4 + len;
      }
    });
  });
  server.listen(0, '127.0.0.1', () => process.stdout.write(`${(server.address() as net.AddressInfo).port}\n`));
}

/** A client end of the link: sends a frame, calls back once per acknowledgement. */
interface LinkClient {
  send(frame: Buffer): void;
  close(): void;
}

async function connect(kind: LinkKind, port: number, onAck: () => void): Promise<LinkClient> {
  if (kind === 'ws') {
    // A zero mask key, as twindisk's transport uses: no masking pass over the payload.
    const ws = new WebSocket(`ws://127.0.0.1:${port}`, { perMessageDeflate: false, generateMask: (m: Buffer) => { m.fill(0); } });
    await new Promise<void>((resolve, reject) => { ws.once('open', () => resolve()); ws.once('error', reject); });
    ws.on('message', onAck);
    // ws frames the buffer itself: the 4-byte length prefix is not sent.
    return { send: (f) => ws.send(f.subarray(4)), close: () => ws.close() };
  }
  const sock = net.connect({ host: '127.0.0.1', port, noDelay: true });
  await new Promise<void>((resolve, reject) => { sock.once('connect', () => resolve()); sock.once('error', reject); });
  let bytes = 0;
  sock.on('data', (d: Buffer) => {
    bytes += d.length;
    for (; bytes >= 8; bytes -= 8) onAck();
  });
  return { send: (f) => { sock.write(f); }, close: () => sock.destroy() };
}

/**
 * The writes of workload `w` for `seconds` through the link to a peer process that writes them to a
 * `size`-byte file in `dir`, at the blocks the same workload visits on a volume.
 */
export async function measureLinkCeiling(dir: string, w: Workload, size: number, seconds: number, kind: LinkKind = 'ws'): Promise<LinkCeiling> {
  const { bs, depth } = w;
  const file = path.join(dir, `link-ceiling-${kind}-${bs}.img`);
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), '--peer', file, String(size), kind], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const port = await new Promise<number>((resolve, reject) => {
      child.once('exit', (code) => reject(new Error(`the link-ceiling peer exited with ${code}`)));
      child.stdout!.once('data', (b: Buffer) => resolve(Number(b.toString().trim())));
    });
    const nextBlock = blockPicker(w.random, Math.floor(size / bs));
    // Each buffer: the u32 length the bare TCP link sends first, the 8-byte offset, the data.
    const bufs = Array.from({ length: depth }, () => {
      const b = Buffer.alloc(4 + 8 + bs, 0x5a);
      b.writeUInt32LE(8 + bs, 0);
      return b;
    });
    let done = 0;
    let next = 0;
    let link: LinkClient | null = null;
    const send = (): void => {
      const b = bufs[next++ % depth]!;
      b.writeBigUInt64LE(BigInt(nextBlock() * bs), 4);
      link!.send(b);
    };
    const t0Box = { t0: 0, t1: 0, end: 0 };
    let inflight = 0;
    let finish: () => void = () => undefined;
    const finished = new Promise<void>((resolve) => { finish = resolve; });
    link = await connect(kind, port, () => {
      done++;
      inflight--;
      t0Box.t1 = performance.now();
      if (t0Box.t1 < t0Box.end) {
        send();
        inflight++;
      } else if (inflight === 0) finish();
    });
    t0Box.t0 = performance.now();
    t0Box.end = t0Box.t0 + seconds * 1000;
    t0Box.t1 = t0Box.t0;
    for (let i = 0; i < depth; i++) {
      send();
      inflight++;
    }
    await finished;
    link.close();
    const { t0, t1 } = t0Box;
    const secs = (t1 - t0) / 1000;
    return { iops: Math.round(done / secs), mbps: Math.round((done * bs) / secs / 1e6) };
  } finally {
    child.kill('SIGTERM');
    fs.rmSync(file, { force: true });
  }
}

if (process.argv[2] === '--peer') peer(process.argv[3]!, Number(process.argv[4]), process.argv[5] === 'tcp' ? 'tcp' : 'ws');
