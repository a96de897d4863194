// virtio-blk as a vhost-user device type: its feature bits, its config space (with the writable write-cache byte), and its request handler.
import type { BackendInfo } from '../../engine/backend.js';
import type { Logger } from '../../engine/log.js';
import { blkFeatureBits, encodeBlkConfig } from '../virtio/blk-config.js';
import type { BlkSettings } from '../virtio/blk.js';
import { CFG_WRITEBACK } from '../virtio/constants.js';
import type { DeviceSettings, HandlerSpec } from '../virtio/queue-handler.js';
import { bit } from './constants.js';
import type { VhostUserBackend } from './device.js';

/** The request handler queue workers run for a virtio-blk disk with serial `serial` (GET_ID), write cache on. */
export function blkHandlerSpec(serial: string): HandlerSpec {
  const settings = { serial, writeback: true } satisfies BlkSettings;
  return { module: new URL('../virtio/blk.js', import.meta.url).href, settings };
}

/** A virtio-blk disk over a back-end described by `info`, for one front-end connection. */
export class VhostUserBlkBackend implements VhostUserBackend {
  readonly features: bigint;
  /** The guest-visible write cache (VIRTIO_BLK_F_CONFIG_WCE); the driver may switch it off. */
  private writeback = true;

  constructor(
    private info: BackendInfo,
    readonly numQueues: number,
    private readonly log: Logger,
  ) {
    this.features = blkFeatureBits(info, numQueues).reduce((f, b) => f | bit(b), 0n);
  }

  /** Online resize: `capacity` in the config space says `size` bytes from now on. */
  resize(size: number): void {
    this.info = { ...this.info, size };
  }

  /** struct virtio_blk_config as it stands. */
  getConfig(): Uint8Array {
    return encodeBlkConfig({ info: this.info, numQueues: this.numQueues, writeback: this.writeback });
  }

  /** Only the writeback byte is writable (VIRTIO_BLK_F_CONFIG_WCE); other writes are ignored, as by QEMU's device. */
  setConfig(offset: number, data: Uint8Array): DeviceSettings | null {
    if (offset <= CFG_WRITEBACK && offset + data.length > CFG_WRITEBACK) {
      const wb = data[CFG_WRITEBACK - offset] !== 0;
      if (wb === this.writeback) return null;
      this.writeback = wb;
      this.log.info(`guest switched the write cache to ${wb ? 'writeback' : 'writethrough'}`);
      return { writeback: wb };
    }
    this.log.warn('SET_CONFIG outside the writeback field ignored', { offset, size: data.length });
    return null;
  }
}
