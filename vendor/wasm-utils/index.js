// @platformatic/kafka imports @platformatic/wasm-utils (CRC32C, snappy, lz4), whose main
// module reads `native.wasm` from beside itself at load time. A single-file executable
// (`bun build --compile`) does not carry that file, so the library fails to load in it
// ("ENOENT ... /$bunfs/dist/native.wasm"). The package also ships the same module with the
// WASM inlined, `@platformatic/wasm-utils/bundled`; package.json's "overrides" make every
// import of @platformatic/wasm-utils in this tree resolve here, to that module (installed
// under the alias wasm-utils-inlined), so that any compiled build of cli.ts, or of an app
// that imports mod.ts from this tree, loads the Kafka client.
export * from "wasm-utils-inlined/bundled";
