// Builds the agent as one self-contained executable with Bun (offline): see compile.sh. It is
// `bun build --compile cli.ts` plus the build information `--version` prints, the client
// library's ajv and WebAssembly made lazy and its schema registries left out (below); a plain
// `bun build --compile cli.ts` works as well (vendor/wasm-utils says why), but loads the library
// about 230 ms of CPU slower at each start, and holds about 4 MiB more.
//   bun scripts/compile.ts [OUTFILE] [--bytecode-order FILE|none]
//
// The bytecode is laid out in the order a run of the agent first called it
// (`scripts/bytecode.order`, written by scripts/bytecode_order.ts): the code a running agent
// uses then shares fewer pages with code it never calls, and it holds 3-3.5 MiB fewer pages of
// the file. Functions changed since that run are laid out after the others, as without it.

const args = process.argv.slice(2);
const orderAt = args.indexOf("--bytecode-order");
const orderArg = orderAt >= 0 ? args.splice(orderAt, 2)[1] : undefined;
if (orderAt >= 0 && !orderArg) {
  console.error("compile: --bytecode-order takes a file written by scripts/bytecode_order.ts, or none");
  process.exit(2);
}
const outfile = args[0] ?? "dist/messagebuffer";
const defaultOrder = `${import.meta.dir}/bytecode.order`;
const bytecodeOrder = orderArg === "none"
  ? undefined
  : orderArg ?? ((await Bun.file(defaultOrder).exists()) ? defaultOrder : undefined);
if (bytecodeOrder !== undefined && !(await Bun.file(bytecodeOrder).exists())) {
  console.error(`compile: --bytecode-order: no such file: ${bytecodeOrder}`);
  process.exit(2);
}
// What `--version` names: scripts/release.sh passes the version, commit, runtime and date
// as JSON in MB_BUILD_INFO; a plain build gets the runtime and date, and the commit if git
// can tell it.
function gitCommit(): string {
  try {
    const git = Bun.spawnSync(["git", "rev-parse", "--short=12", "HEAD"], { stderr: "ignore" });
    return git.success ? git.stdout.toString().trim() : "unknown";
  } catch {
    return "unknown"; // no git on this host
  }
}
const buildInfo = process.env.MB_BUILD_INFO ?? JSON.stringify({
  commit: gitCommit(),
  runtime: `Bun ${Bun.version}`,
  date: new Date().toISOString().replace(/\.\d+Z$/, "Z"),
});
JSON.parse(buildInfo); // a malformed MB_BUILD_INFO fails the build, not the --version

/**
 * A plugin that points the imports of `specifier` made by the files `importer` matches (and
 * only those) at `target`; `used()` says whether it found one.
 */
function redirect(name: string, specifier: RegExp, importer: RegExp, target: string) {
  let found = false;
  const plugin: import("bun").BunPlugin = {
    name,
    setup(build) {
      build.onResolve({ filter: specifier }, (args) => {
        if (!importer.test(args.importer)) return undefined;
        found = true;
        return { path: target };
      });
    },
  };
  return { plugin, used: () => found };
}

// The client library's ajv, compiling each option schema on first use instead of all of them
// at load (scripts/_lazy_ajv.ts says why): its one import of `ajv/dist/2020.js` is pointed
// there. The build fails if that import is not found, so that a library version that moves
// it is noticed, not silently slower.
const lazyAjv = redirect(
  "lazy-ajv",
  /^ajv\/dist\/2020\.js$/,
  /[\\/]@platformatic[\\/]kafka[\\/]dist[\\/]utils\.js$/,
  `${import.meta.dir}/_lazy_ajv.ts`,
);

// The library's imports of @platformatic/wasm-utils (only those) go to a copy that instantiates
// the WebAssembly on first use: 2.5 MiB less resident memory from the start (see the file).
const lazyWasm = redirect(
  "lazy-wasm-utils",
  /^@platformatic\/wasm-utils(\/bundled)?$/,
  /[\\/]@platformatic[\\/]kafka[\\/]dist[\\/]/,
  `${import.meta.dir}/_lazy_wasm_utils.ts`,
);

// The library index's re-export of its schema registries (only that import) goes to a module
// that exports nothing: the Confluent client and avsc, which messagebuffer never uses, are
// then not loaded (see the file).
const noRegistries = redirect(
  "no-registries",
  /^\.\/registries\/index\.js$/,
  /[\\/]@platformatic[\\/]kafka[\\/]dist[\\/]index\.js$/,
  `${import.meta.dir}/_no_registries.ts`,
);

const result = await Bun.build({
  entrypoints: ["cli.ts"],
  compile: { outfile, ...(bytecodeOrder ? { bytecodeOrder } : {}) },
  minify: { syntax: true },
  // The code compiled to JavaScriptCore bytecode at build time, not parsed at each start:
  // start to socket ready 25 ms instead of 78-84, and to the first stored record delivered
  // 254-283 ms instead of 318-354 (2 x EPYC, 2026-12-05); the file grows by 7 MB.
  bytecode: true,
  define: { MB_BUILD_INFO: JSON.stringify(buildInfo) },
  plugins: [lazyAjv.plugin, lazyWasm.plugin, noRegistries.plugin],
});
if (!result.success) {
  for (const log of result.logs) console.error(log);
  process.exit(1);
}
if (!lazyWasm.used()) {
  console.error(
    "compile: @platformatic/kafka no longer imports @platformatic/wasm-utils: see scripts/_lazy_wasm_utils.ts",
  );
  process.exit(1);
}
if (!noRegistries.used()) {
  console.error(
    "compile: @platformatic/kafka/dist/index.js no longer imports ./registries/index.js: see scripts/_no_registries.ts",
  );
  process.exit(1);
}
if (!lazyAjv.used()) {
  console.error(
    "compile: @platformatic/kafka/dist/utils.js no longer imports ajv/dist/2020.js: see scripts/_lazy_ajv.ts",
  );
  process.exit(1);
}
