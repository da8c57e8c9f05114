/**
 * @platformatic/wasm-utils, instantiated on first use, for the executable's copy of
 * @platformatic/kafka (see `scripts/compile.ts`, which points the library's imports of
 * `@platformatic/wasm-utils` here, and only those).
 *
 * The module compiles and instantiates its WebAssembly (CRC32C, snappy, lz4) as it is loaded,
 * and the library loads it with everything else. The agent seldom calls it: CRC32C goes to
 * native code (`@node-rs/crc32`) in the library as in messagebuffer, and snappy and lz4 only
 * serve `--compression snappy|lz4` and `messagebuffer tail` on topics written with them. Without
 * the instance, the idle executable holds 2.5 MiB less (67 MiB against 69.5; its peak while
 * starting, 67 against 72; docs/benchmarks.md). Each function here loads the module on its
 * first call, then calls through: the same results.
 *
 * @module
 */

type WasmUtils = typeof import("wasm-utils-inlined/bundled");
type Input = Parameters<WasmUtils["crc32c"]>[0];

// Bun's `require`: its bundler takes the module into the executable, and runs it only when
// this first calls for it (an `import` would run it as the library loads).
declare const require: (id: string) => unknown;

let loaded: WasmUtils | null = null;

/** Whether the module was loaded (for tests). */
export function wasmLoaded(): boolean {
  return loaded !== null;
}

function wasm(): WasmUtils {
  return loaded ??= require("wasm-utils-inlined/bundled") as WasmUtils;
}

export function prepareInput(data: Input): void {
  wasm().prepareInput(data);
}

export function prepareOutput(combined: bigint): ReturnType<WasmUtils["prepareOutput"]> {
  return wasm().prepareOutput(combined);
}

export function crc32c(data: Input): number {
  return wasm().crc32c(data);
}

export function lz4Compress(data: Parameters<WasmUtils["lz4Compress"]>[0]) {
  return wasm().lz4Compress(data);
}

export function lz4Decompress(data: Parameters<WasmUtils["lz4Decompress"]>[0]) {
  return wasm().lz4Decompress(data);
}

export function snappyCompress(data: Parameters<WasmUtils["snappyCompress"]>[0]) {
  return wasm().snappyCompress(data);
}

export function snappyDecompress(data: Parameters<WasmUtils["snappyDecompress"]>[0]) {
  return wasm().snappyDecompress(data);
}
