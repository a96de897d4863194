// Opens a Backend from a serialisable description, so each worker thread can open its own handle.
import type { Backend } from './backend.js';
import { FileBackend } from './file-backend.js';
import { MemoryBackend } from './memory-backend.js';
import type { ChannelSpec } from './replication/channel.js';
import { ReplicatedBackend, type ReplicatedSpec } from './replication/replicated-backend.js';
import { UringFileBackend } from './uring-file-backend.js';

/** Everything needed to open a back-end; survives postMessage to a worker. */
export type BackendSpec =
  | {
      kind: 'file'; path: string; readOnly?: boolean; blockSize?: number; maxSegments?: number;
      /** How file I/O is issued: synchronous preadv/pwritev in the calling thread, or io_uring (many in flight). */
      aio?: 'sync' | 'io_uring';
    }
  | { kind: 'memory'; memory: SharedArrayBuffer; readOnly?: boolean; blockSize?: number }
  /**
   * An md array run on the main thread (`serve --raid`: one owner for its superblocks, bitmap and
   * stripe locks); the worker hands every request to it through the channel, as a diskless replica does.
   */
  | { kind: 'raid'; channel: ChannelSpec; size: number; blockSize: number; name: string }
  | ReplicatedSpec;

/** Opens the back-end a spec describes. Throws BackendError with a user-facing message. */
export function openBackend(spec: BackendSpec): Backend {
  switch (spec.kind) {
    case 'file':
      return spec.aio === 'io_uring' ? new UringFileBackend(spec) : new FileBackend(spec);
    case 'memory':
      return new MemoryBackend(spec);
    case 'raid':
      return new ReplicatedBackend({ kind: 'replicated', channel: spec.channel, size: spec.size, blockSize: spec.blockSize, local: null, hot: null, name: spec.name });
    case 'replicated':
      return new ReplicatedBackend(spec);
  }
}
