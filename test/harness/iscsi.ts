// Real iSCSI initiators for tests: libiscsi's command line tools and QEMU's libiscsi block driver (qemu-io), and free ports.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { cli } from './serve.js';

/** A TCP port free on 127.0.0.1 at the time of the call. */
export async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

export interface Run { code: number | null; stdout: string; stderr: string }

/** Runs a program to its end (no shell), with a timeout; never rejects. */
export function run(file: string, args: string[], timeoutMs = 60_000): Promise<Run> {
  return new Promise((resolve) => {
    execFile(file, args, { timeout: timeoutMs, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as NodeJS.ErrnoException & { code?: unknown }).code === 'number' ? (err as unknown as { code: number }).code : null) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

/** A libiscsi URL: iscsi://[user%secret@]127.0.0.1:PORT/IQN/LUN. */
export function iscsiUrl(port: number, iqn: string, lun = 0, chap?: { user: string; secret: string }): string {
  const auth = chap ? `${encodeURIComponent(chap.user)}%${encodeURIComponent(chap.secret)}@` : '';
  return `iscsi://${auth}127.0.0.1:${port}/${iqn}/${lun}`;
}

/** qemu-io over QEMU's libiscsi block driver; `cmds` are qemu-io commands ("write -P 0xab 0 64k"). */
export function qemuIo(url: string, cmds: string[]): Promise<Run> {
  return run('qemu-io', ['-f', 'raw', ...cmds.flatMap((c) => ['-c', c]), url]);
}

/** `twindisk serve` with --iscsi on a free port; the caller adds --socket etc. in `args`. */
export interface IscsiServed {
  child: ChildProcess;
  port: number;
  iqn: string;
  log(): string;
  waitLog(re: RegExp, ms?: number): Promise<void>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export async function serveIscsi(o: { image: string; iqn: string; args?: string[] }): Promise<IscsiServed> {
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    const child = spawn(process.execPath, [cli, 'serve', '--image', path.resolve(o.image), '--iscsi', `127.0.0.1:${port}`, '--target-name', o.iqn, ...(o.args ?? [])], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let log = '';
    child.stdout!.on('data', (d) => (log += d));
    child.stderr!.on('data', (d) => (log += d));
    const s: IscsiServed = {
      child, port, iqn: o.iqn, log: () => log,
      waitLog: async (re, ms = 10_000) => {
        const t0 = Date.now();
        while (!re.test(log)) {
          if (Date.now() - t0 > ms) throw new Error(`serve log did not show ${re} within ${ms} ms:\n${log}`);
          if (child.exitCode !== null) throw new Error(`serve exited (${child.exitCode}) before showing ${re}:\n${log}`);
          await new Promise((r) => setTimeout(r, 20));
        }
      },
      stop: async (signal = 'SIGTERM') => {
        if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
        child.kill(signal);
        return new Promise((r) => child.once('exit', (code) => r(code)));
      },
    };
    try {
      await s.waitLog(/iSCSI target .* LUN 0 on/);
      return s;
    } catch (e) {
      await s.stop('SIGKILL');
      // Another process took the port between freePort() and the listen: try another.
      if (attempt < 3 && /EADDRINUSE|another program listens/.test(log)) continue;
      throw e;
    }
  }
}
