// Public entry of twindisk's WebAssembly kernels: checksums, block hash, bitmap scans and parity.
export {
  kernelImpl, crc32c, xxh3, Xxh3Stream, findNextSet, findNextClear, countSet, setRange, clearRange, orInto, setRuns,
  xorInto, raid6GenPQ, raid6Recover, type BitRun,
} from './src/kernels.js';
export { allocBuffer, reserveKernelMemory, KernelBuffer, Slab, wasmDisabled } from './src/memory.js';
