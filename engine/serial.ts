// The serial number a twindisk disk reports to the guest (VIRTIO_BLK_T_GET_ID): one function for
// `twindisk serve` and `twindisk up`, so the format and its 20-byte limit live in one place.
import { createHash } from 'node:crypto';
import path from 'node:path';

/** virtio-blk's ID field holds 20 bytes (VIRTIO_BLK_ID_BYTES); a longer serial would be cut. */
export const SERIAL_BYTES = 20;

/**
 * The disk's serial: stable across restarts, at most 20 bytes. A served image is identified by its
 * absolute path (`twindisk-` and 11 hex digits of its SHA-1); a replicated volume by its resource
 * name (`td-` and 17 hex digits), so every node of a resource shows the guest the same serial and a
 * guest that moves between nodes keeps its /dev/disk/by-id names.
 */
export function serialFor(disk: { image: string } | { resource: string }): string {
  const [prefix, key] = 'image' in disk ? ['twindisk-', path.resolve(disk.image)] : ['td-', disk.resource];
  return prefix + createHash('sha1').update(key).digest('hex').slice(0, SERIAL_BYTES - prefix.length);
}
