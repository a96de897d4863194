// qemu-storage-daemon, the peer the vhost-user benchmarks (vhost, guest, migrate) measure twindisk against, started the same way by each.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';

/** One vhost-user-blk export: its id, the socket QEMU (or the driver) connects to, and its queues (default: qsd's). */
export interface QsdExport {
  id: string;
  socket: string;
  queues?: number;
}

/**
 * Starts qemu-storage-daemon as an expert runs it: the file protocol driver straight on `image`,
 * io_uring, page cache on (cache.direct=off, as twindisk), and a writable vhost-user-blk export of that
 * node on each socket (an export serves one front-end at a time: a migration's destination needs its own).
 */
export function startQemuStorageDaemon(image: string, exports: QsdExport[]): ChildProcess {
  return spawn('qemu-storage-daemon', [
    '--blockdev', `driver=file,node-name=file0,filename=${image},aio=io_uring,cache.direct=off`,
    ...exports.flatMap((e) => [
      '--export',
      `type=vhost-user-blk,id=${e.id},node-name=file0,addr.type=unix,addr.path=${e.socket},writable=on${e.queues !== undefined ? `,num-queues=${e.queues}` : ''}`,
    ]),
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
}

/** Throws what to install when qemu-storage-daemon is missing; `otherwise` says how to run without it. */
export function requireQemuStorageDaemon(otherwise: string): void {
  if (spawnSync('qemu-storage-daemon', ['--version']).status !== 0) {
    throw new Error(`qemu-storage-daemon is not installed: apt-get install qemu-system-x86 (Debian ships it there), or ${otherwise}`);
  }
}
