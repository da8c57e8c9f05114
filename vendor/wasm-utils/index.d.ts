export * from "wasm-utils-inlined/bundled";
