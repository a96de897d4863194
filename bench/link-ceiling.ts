// The ceiling a replicated write cannot beat on this machine: a round trip through a `ws` link to a
// second Node process that writes the payload to a page-cached file and answers with 8 bytes. No
// twindisk code runs on either side, so `twindisk bench replication` can show how much of the gap to
// the unreplicated volume is the link and the second process, and how much is the engine.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { WebSocket, WebSocketServer } from 'ws';
import { blockPicker, writePattern } from './pattern.js';
import type { Workload } from './vhost.js';

export interface LinkCeiling {
  iops: number;
  mbps: number;
}

/** The peer side: run as a child process (`node link-ceiling.js --peer FILE SIZE`); prints its port. */
function peer(file: string, size: number): void {
  const fd = fs.openSync(file, 'w+');
  // Written once and in the page cache, as the replicas' images are when the benchmark runs.
  writePattern(fd, size);
  fs.fdatasyncSync(fd);
  const ack = Buffer.alloc(8);
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

/**
 * The writes of workload `w` for `seconds` through the link to a peer process that writes them to a
 * `size`-byte file in `dir`, at the blocks the same workload visits on a volume.
 */
export async function measureLinkCeiling(dir: string, w: Workload, size: number, seconds: number): Promise<LinkCeiling> {
  const { bs, depth } = w;
  const file = path.join(dir, `link-ceiling-${bs}.img`);
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), '--peer', file, String(size)], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const port = await new Promise<number>((resolve, reject) => {
      child.once('exit', (code) => reject(new Error(`the link-ceiling peer exited with ${code}`)));
      child.stdout!.once('data', (b: Buffer) => resolve(Number(b.toString().trim())));
    });
    // A zero mask key, as twindisk's transport uses: no masking pass over the payload.
    const ws = new WebSocket(`ws://127.0.0.1:${port}`, { perMessageDeflate: false, generateMask: (m: Buffer) => { m.fill(0); } });
    await new Promise<void>((resolve, reject) => { ws.once('open', () => resolve()); ws.once('error', reject); });
    const nextBlock = blockPicker(w.random, Math.floor(size / bs));
    const bufs = Array.from({ length: depth }, () => Buffer.alloc(8 + bs, 0x5a));
    let done = 0;
    let next = 0;
    const send = (): void => {
      const b = bufs[next++ % depth]!;
      b.writeBigUInt64LE(BigInt(nextBlock() * bs), 0);
      ws.send(b);
    };
    const t0 = performance.now();
    const end = t0 + seconds * 1000;
    let t1 = t0;
    await new Promise<void>((resolve) => {
      let inflight = depth;
      ws.on('message', () => {
        done++;
        inflight--;
        t1 = performance.now();
        if (t1 < end) {
          send();
          inflight++;
        } else if (inflight === 0) resolve();
      });
      for (let i = 0; i < depth; i++) send();
    });
    ws.close();
    const secs = (t1 - t0) / 1000;
    return { iops: Math.round(done / secs), mbps: Math.round((done * bs) / secs / 1e6) };
  } finally {
    child.kill('SIGTERM');
    fs.rmSync(file, { force: true });
  }
}

if (process.argv[2] === '--peer') peer(process.argv[3]!, Number(process.argv[4]));
