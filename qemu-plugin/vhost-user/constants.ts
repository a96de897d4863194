// vhost-user protocol numbers, from QEMU's docs/interop/vhost-user.rst (front-end = QEMU, back-end = twindisk).

/** Front-end → back-end requests. */
export const enum Req {
  GET_FEATURES = 1,
  SET_FEATURES = 2,
  SET_OWNER = 3,
  RESET_OWNER = 4,
  SET_MEM_TABLE = 5,
  SET_LOG_BASE = 6,
  SET_LOG_FD = 7,
  SET_VRING_NUM = 8,
  SET_VRING_ADDR = 9,
  SET_VRING_BASE = 10,
  GET_VRING_BASE = 11,
  SET_VRING_KICK = 12,
  SET_VRING_CALL = 13,
  SET_VRING_ERR = 14,
  GET_PROTOCOL_FEATURES = 15,
  SET_PROTOCOL_FEATURES = 16,
  GET_QUEUE_NUM = 17,
  SET_VRING_ENABLE = 18,
  SEND_RARP = 19,
  NET_SET_MTU = 20,
  SET_BACKEND_REQ_FD = 21,
  IOTLB_MSG = 22,
  SET_VRING_ENDIAN = 23,
  GET_CONFIG = 24,
  SET_CONFIG = 25,
  CREATE_CRYPTO_SESSION = 26,
  CLOSE_CRYPTO_SESSION = 27,
  POSTCOPY_ADVISE = 28,
  POSTCOPY_LISTEN = 29,
  POSTCOPY_END = 30,
  GET_INFLIGHT_FD = 31,
  SET_INFLIGHT_FD = 32,
  GPU_SET_SOCKET = 33,
  RESET_DEVICE = 34,
  VRING_KICK = 35,
  GET_MAX_MEM_SLOTS = 36,
  ADD_MEM_REG = 37,
  REM_MEM_REG = 38,
  SET_STATUS = 39,
  GET_STATUS = 40,
}

/** Names for logs. */
export const REQ_NAMES: Record<number, string> = {
  1: 'GET_FEATURES', 2: 'SET_FEATURES', 3: 'SET_OWNER', 4: 'RESET_OWNER', 5: 'SET_MEM_TABLE',
  6: 'SET_LOG_BASE', 7: 'SET_LOG_FD', 8: 'SET_VRING_NUM', 9: 'SET_VRING_ADDR', 10: 'SET_VRING_BASE',
  11: 'GET_VRING_BASE', 12: 'SET_VRING_KICK', 13: 'SET_VRING_CALL', 14: 'SET_VRING_ERR',
  15: 'GET_PROTOCOL_FEATURES', 16: 'SET_PROTOCOL_FEATURES', 17: 'GET_QUEUE_NUM', 18: 'SET_VRING_ENABLE',
  19: 'SEND_RARP', 20: 'NET_SET_MTU', 21: 'SET_BACKEND_REQ_FD', 22: 'IOTLB_MSG', 23: 'SET_VRING_ENDIAN',
  24: 'GET_CONFIG', 25: 'SET_CONFIG', 26: 'CREATE_CRYPTO_SESSION', 27: 'CLOSE_CRYPTO_SESSION',
  28: 'POSTCOPY_ADVISE', 29: 'POSTCOPY_LISTEN', 30: 'POSTCOPY_END', 31: 'GET_INFLIGHT_FD',
  32: 'SET_INFLIGHT_FD', 33: 'GPU_SET_SOCKET', 34: 'RESET_DEVICE', 35: 'VRING_KICK',
  36: 'GET_MAX_MEM_SLOTS', 37: 'ADD_MEM_REG', 38: 'REM_MEM_REG', 39: 'SET_STATUS', 40: 'GET_STATUS',
};

/** Header: u32 request, u32 flags, u32 size. */
export const HEADER_SIZE = 12;
/** "The version of the protocol ... is 0x1" (flags bits 0-1). */
export const VERSION = 0x1;
export const FLAG_VERSION_MASK = 0x3;
export const FLAG_REPLY = 0x4;
export const FLAG_NEED_REPLY = 0x8;

/** Largest payload accepted; the biggest legitimate one is GET/SET_CONFIG (12 + 256 bytes). */
export const MAX_PAYLOAD = 4096;
/** Most fds one message may carry (VHOST_MEMORY_BASELINE_NREGIONS). */
export const MAX_FDS = 8;
/** Memory regions in SET_MEM_TABLE (baseline) and the slot count offered with CONFIGURE_MEM_SLOTS. */
export const MAX_MEM_TABLE_REGIONS = 8;
export const MAX_MEM_SLOTS = 32;
export const MEM_REGION_SIZE = 32;
export const CONFIG_HEADER_SIZE = 12;
export const MAX_CONFIG_SIZE = 256;

/** SET_VRING_ADDR flags: VHOST_VRING_F_LOG (bit 0), log_guest_addr is valid and used ring writes are logged. */
export const VRING_F_LOG = 0x1;
/** SET_LOG_BASE payload (VhostUserLog): u64 mmap_size, u64 mmap_offset. */
export const LOG_PAYLOAD_SIZE = 16;
/** Largest dirty log mapped: 256 MiB of bits cover 8 TiB of guest memory. */
export const MAX_LOG_SIZE = 256 * 1024 * 1024;

/** Vring index/fd word: bits 0-7 index, bit 8 "no fd" (polling). */
export const VRING_IDX_MASK = 0xff;
export const VRING_NOFD_MASK = 0x100;

/** Virtio / vhost feature bits (bit numbers). */
export const enum Feature {
  BLK_SIZE_MAX = 1,
  BLK_SEG_MAX = 2,
  BLK_GEOMETRY = 4,
  BLK_RO = 5,
  BLK_BLK_SIZE = 6,
  BLK_FLUSH = 9,
  BLK_TOPOLOGY = 10,
  BLK_CONFIG_WCE = 11,
  BLK_MQ = 12,
  BLK_DISCARD = 13,
  BLK_WRITE_ZEROES = 14,
  NOTIFY_ON_EMPTY = 24,
  /** VHOST_F_LOG_ALL: the back-end logs the guest pages it writes (live migration). */
  LOG_ALL = 26,
  RING_INDIRECT_DESC = 28,
  RING_EVENT_IDX = 29,
  /** VHOST_USER_F_PROTOCOL_FEATURES. */
  PROTOCOL_FEATURES = 30,
  VERSION_1 = 32,
  ACCESS_PLATFORM = 33,
  RING_PACKED = 34,
}

/** Protocol feature bits (bit numbers). */
export const enum ProtocolFeature {
  MQ = 0,
  LOG_SHMFD = 1,
  RARP = 2,
  REPLY_ACK = 3,
  MTU = 4,
  BACKEND_REQ = 5,
  CROSS_ENDIAN = 6,
  CRYPTO_SESSION = 7,
  PAGEFAULT = 8,
  CONFIG = 9,
  BACKEND_SEND_FD = 10,
  HOST_NOTIFIER = 11,
  INFLIGHT_SHMFD = 12,
  RESET_DEVICE = 13,
  INBAND_NOTIFICATIONS = 14,
  CONFIGURE_MEM_SLOTS = 15,
  STATUS = 16,
}

/**
 * Back-end → front-end requests, sent on the back-end request channel (SET_BACKEND_REQ_FD; "Back-end
 * message types" in the spec; formerly VHOST_USER_SLAVE_*).
 */
export const enum BackendReq {
  IOTLB_MSG = 1,
  CONFIG_CHANGE_MSG = 2,
  VRING_HOST_NOTIFIER_MSG = 3,
}

/** Names of back-end requests, for logs. */
export const BACKEND_REQ_NAMES: Record<number, string> = { 1: 'BACKEND_IOTLB_MSG', 2: 'BACKEND_CONFIG_CHANGE_MSG', 3: 'BACKEND_VRING_HOST_NOTIFIER_MSG' };

/** Bit `n` as a bigint mask. */
export function bit(n: number): bigint {
  return 1n << BigInt(n);
}
