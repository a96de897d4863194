// Entry of the kernels module: the exports the TypeScript façade (wasm/src/kernels.ts) calls with pointers.
export { crc32cUpdate } from './crc32c';
export { xxh3, xxh3StateInit, xxh3StateBlocks, xxh3StateDigest, xxh3StaticState, xxh3StateSize } from './xxh3';
export {
  bitmapFindNextSet, bitmapFindNextClear, bitmapPopcount, bitmapSetRange, bitmapClearRange, bitmapOr, bitmapRuns,
} from './bitmap';
export { xorBlocks, raid6GenPQ, raid6MulXor, raid6Recover2 } from './parity';

/** First byte past the module's static data: the host allocates its heap from here. */
export function heapBase(): usize {
  return __heap_base;
}
