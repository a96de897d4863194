// The thread a replicated node's md array runs on: it assembles the array, serves the engine's channel on its RAID layer, resyncs and reports.
//
// The replication engine calls its disk synchronously (node-disk.ts), while an array completes I/O
// whenever its stripe locks, a rebuild's pacing or a resync let it. So the array has a thread of its
// own, with its own event loop, and the engine reaches it as queue workers reach the engine: through
// a shared-memory channel (engine/replication/channel.ts), waiting for each call's completion
// (raid-node-disk.ts). Messages from the parent: 'control' (membership.ts's requests), 'close'. To the parent: 'ready'
// (or 'failed'), 'log', 'event', and each request's answer.
import { parentPort, workerData } from 'node:worker_threads';
import type { DiskLock } from '../disk-lock.js';
import { Logger, setSink } from '../log.js';
import { NativeBuffer, write } from '../os.js';
import { ChannelHost } from '../replication/channel.js';
import { raidStatus } from './array-status.js';
import { RaidMembership } from './membership.js';
import type { RaidVolume } from './raid-volume.js';
import { assembleServed, resyncWhileServing, runChannelRequest } from './served-array.js';
import type { MemberIo } from './array.js';
import type { RaidThreadData, RaidThreadReply, RaidThreadRequest } from './raid-node-disk.js';

const port = parentPort!;
const data = workerData as RaidThreadData;
const post = (m: RaidThreadReply): void => port.postMessage(m);
setSink((level, component, msg, fields) => post({ kind: 'log', level, component, msg, fields }));
const log = new Logger(data.component);
const alive = new Int32Array(data.alive);
// A bug here must not leave the engine waiting for a completion forever: it sees the word and fails the call.
process.on('uncaughtException', (e) => {
  log.error(`internal error in the md array's thread: ${e.stack ?? e.message}; the array stops (the node detaches its disk)`);
  Atomics.store(alive, 0, 0);
  process.exit(1);
});

let members: MemberIo[] = [];
let locks: DiskLock[] = [];

function release(): void {
  for (const m of members) m.backend.close();
  for (const l of locks) l.release();
  members = [];
  locks = [];
}

async function main(): Promise<void> {
  let vol: RaidVolume;
  try {
    ({ vol, members, locks } = await assembleServed(data.members, data.purpose, log, {
      startDirtyDegraded: data.startDirtyDegraded,
      onMemberFailed: (slot, member) => post({ kind: 'event', event: 'member-failed', slot, member }),
    }));
  } catch (e) {
    post({ kind: 'failed', message: (e as Error).message });
    return;
  }
  const one = new NativeBuffer(8);
  one.u8[0] = 1;
  const host = new ChannelHost(data.eventFd, (fd) => { write(fd, one.addr, 8); });
  const served = host.serve((r) => runChannelRequest(vol.backend, r, log));
  const arr = vol.array;
  const s = raidStatus(arr);
  if (s.degraded > 0) log.warn(`the array runs degraded: ${s.degraded} of ${s.raidDevices} slots not in sync`);
  post({ kind: 'ready', channel: host.spec, size: vol.backend.info.size, status: s });
  const resync = resyncWhileServing(vol, log);
  const membership = new RaidMembership(vol, data.members, data.control, log);
  membership.resumeRecovery(); // a rebuild a shutdown stopped goes on from its checkpoint

  port.on('message', (m: RaidThreadRequest) => {
    const answer = (p: Promise<unknown>): void => {
      p.then((result) => post({ kind: 'answer', id: m.id, result }), (e: Error) => post({ kind: 'answer', id: m.id, error: e.message }));
    };
    switch (m.cmd) {
      case 'control':
        return answer(membership.handle(m.req));
      case 'close':
        return answer((async () => {
          host.stop();
          await served;
          try {
            await membership.stop(); // a rebuild running is stopped (its member recorded failed)
            await vol.close(); // stops the resync, flushes, records the array clean, closes the members
            await resync;
          } finally {
            membership.close();
            release();
            host.close();
            one.free();
            Atomics.store(alive, 0, 0);
          }
          return null;
        })());
    }
  });
}

void main();
