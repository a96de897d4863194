// Runs Debian's tgtd (the Linux SCSI target framework) as a reference iSCSI target for the iPXE boot tests.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomInt } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';

export const TGTD = '/usr/sbin/tgtd';
export const TGTADM = '/usr/sbin/tgtadm';

/** tgt's LUN 0 is its own controller: the backing file is served as LUN 1. */
export const TGT_DISK_LUN = 1;

/** A TCP port on 127.0.0.1 that nothing listens on (the kernel's pick; free when this returns). */
export async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((resolve, reject) => srv.once('error', reject).listen(0, '127.0.0.1', resolve));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise((r) => srv.close(r));
  return port;
}

/** Resolves once 127.0.0.1:port accepts a TCP connection. */
export async function waitListening(port: number, timeoutMs = 10_000, alive: () => boolean = () => true): Promise<void> {
  const t0 = Date.now();
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => { s.destroy(); resolve(true); });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (!alive()) throw new Error(`the process that should listen on 127.0.0.1:${port} exited`);
    if (Date.now() - t0 > timeoutMs) throw new Error(`nothing listens on 127.0.0.1:${port} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export interface TgtTarget {
  port: number;
  iqn: string;
  lun: number;
  image: string;
  child: ChildProcess;
  /** Everything tgtd printed. */
  log(): string;
  /** Stops tgtd (`tgtadm --op delete --mode system`, then SIGKILL after 3 s) and removes its control socket. Safe to call twice. */
  stop(): Promise<void>;
}

/**
 * Starts `tgtd -f` listening on 127.0.0.1:port with its own control port (so it never meets another
 * tgtd), and serves `image` read-write as LUN 1 of target `iqn` to every initiator. tgtd needs root.
 */
export async function startTgt(o: { image: string; iqn: string; port?: number }): Promise<TgtTarget> {
  for (const f of [TGTD, TGTADM]) if (!fs.existsSync(f)) throw new Error(`${f} is missing: apt-get install tgt (the reference iSCSI target for the iPXE boot test)`);
  if (process.getuid?.() !== 0) throw new Error('tgtd needs root: run the iSCSI boot test as root');
  const port = o.port ?? (await freePort());
  // The control port only names tgtd's management socket, /run/tgtd/socket.N (N up to 32767); pick one nobody uses.
  let control = 0;
  for (let i = 0; i < 100 && !control; i++) {
    const c = randomInt(10000, 32768);
    if (!fs.existsSync(`/run/tgtd/socket.${c}`) && !fs.existsSync(`/var/run/tgtd/socket.${c}`)) control = c;
  }
  const child = spawn(TGTD, ['-f', '-C', String(control), '--iscsi', `portal=127.0.0.1:${port}`], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  // Should the test process end without stop() (an uncaught error), tgtd must not outlive it.
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);
  let stopped = false;
  const t: TgtTarget = {
    port, iqn: o.iqn, lun: TGT_DISK_LUN, image: o.image, child,
    log: () => out,
    stop: async () => {
      if (stopped) return;
      stopped = true;
      process.off('exit', killOnExit);
      if (child.exitCode === null && child.signalCode === null) {
        // tgtd ignores SIGTERM; it leaves when told to through its control socket, or by SIGKILL.
        const exit = new Promise((r) => child.once('exit', r));
        try {
          execFileSync(TGTADM, ['-C', String(control), '--op', 'delete', '--mode', 'system'], { stdio: 'ignore', timeout: 3000 });
        } catch {
          // SIGKILL below
        }
        const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
        await exit;
        clearTimeout(timer);
      }
      for (const dir of ['/run/tgtd', '/var/run/tgtd']) for (const f of [`socket.${control}`, `socket.${control}.lock`]) fs.rmSync(`${dir}/${f}`, { force: true });
    },
  };
  try {
    await waitListening(port, 10_000, () => child.exitCode === null);
    const adm = (...args: string[]) => {
      try {
        execFileSync(TGTADM, ['-C', String(control), '--lld', 'iscsi', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      } catch (e) {
        throw new Error(`tgtadm ${args.join(' ')} failed: ${(e as { stderr?: Buffer }).stderr?.toString().trim()}\ntgtd: ${out}`);
      }
    };
    adm('--op', 'new', '--mode', 'target', '--tid', '1', '-T', o.iqn);
    adm('--op', 'new', '--mode', 'logicalunit', '--tid', '1', '--lun', String(TGT_DISK_LUN), '-b', o.image);
    adm('--op', 'bind', '--mode', 'target', '--tid', '1', '-I', 'ALL');
  } catch (e) {
    await t.stop();
    throw new Error(`tgtd did not start on 127.0.0.1:${port}: ${(e as Error).message}\n${out}`);
  }
  return t;
}
