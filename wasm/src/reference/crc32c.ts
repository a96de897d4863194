// Plain TypeScript CRC32C (Castagnoli, reflected polynomial 0x82F63B78), one table lookup per byte.

const POLY = 0x82f63b78;

/** CRC32C of each byte value, the classic 256-entry table. */
const TABLE: Uint32Array = (() => {
  const t = new Uint32Array(256);
  for (let b = 0; b < 256; b++) {
    let c = b;
    for (let j = 0; j < 8; j++) c = (c >>> 1) ^ (POLY & -(c & 1));
    t[b] = c >>> 0;
  }
  return t;
})();

/** CRC32C of `data`, continuing from the finished CRC `crc` (0 to start). */
export function crc32c(data: Uint8Array, crc = 0): number {
  let c = ~crc >>> 0;
  for (let i = 0; i < data.length; i++) c = (c >>> 8) ^ TABLE[(c ^ data[i]!) & 0xff]!;
  return ~c >>> 0;
}
