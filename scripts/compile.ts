// Builds the agent as one self-contained executable with Bun (offline): see compile.sh. It is
// `bun build --compile cli.ts` plus the build information `--version` prints, the client
// library's ajv and WebAssembly made lazy and its schema registries left out (below); a plain
// `bun build --compile cli.ts` works as well (vendor/wasm-utils says why), but loads the library
// about 230 ms of CPU slower at each start, and holds about 4 MiB more.
//   bun scripts/compile.ts [OUTFILE] [--bytecode-order none]
//
// The build runs twice. The first executable is run once as an agent (a training run,
// scripts/_bytecode_order.ts: it starts, stores 300,000 lines from its socket and stops), and
// the second lays its bytecode out in the order that run first called it (Bun's
// `bytecodeOrder`): the code an agent runs then shares fewer pages of the file with code it never
// calls, and it holds fewer of them. With MB_ORDER_BROKERS=HOST:PORT (a broker to deliver the
// lines to) the run delivers too: 3-3.5 MiB fewer pages, against 2-2.5 when it only stores
// (docs/benchmarks.md); when that run fails, one that only stores is tried. A build whose
// training runs all failed keeps no order and says so, or with MB_ORDER_REQUIRED=1 (release
// builds) fails; `--bytecode-order none` skips the training run.

import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { resolve } from "node:path";
import { trainBytecodeOrder } from "./_bytecode_order.ts";

const args = process.argv.slice(2);
let orderArg = "auto";
for (let i = 0; i < args.length; i++) {
  const m = /^--bytecode-order(?:=(.*))?$/.exec(args[i]);
  if (!m) continue;
  const value = m[1] ?? args[i + 1];
  args.splice(i, m[1] === undefined ? 2 : 1);
  if (value !== "auto" && value !== "none") {
    console.error(
      value === undefined
        ? "compile: --bytecode-order needs a value: auto or none"
        : `compile: --bytecode-order is auto or none, not "${value}"`,
    );
    process.exit(2);
  }
  orderArg = value;
  i--;
}
if (args.length > 1 || args[0]?.startsWith("-")) {
  console.error(`compile: one OUTFILE and --bytecode-order auto|none, not ${args.join(" ")}`);
  process.exit(2);
}
// (A path: the training run runs it, and a bare name would be looked up in PATH.)
const outfile = resolve(args[0] ?? "dist/messagebuffer");
const orderRequired = process.env.MB_ORDER_REQUIRED === "1";
const orderBrokers = process.env.MB_ORDER_BROKERS || undefined;
if (orderBrokers !== undefined && !/^[^\s:]+:\d+$/.test(orderBrokers)) {
  console.error(`compile: MB_ORDER_BROKERS is one HOST:PORT, not "${orderBrokers}"`);
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

/**
 * Builds the executable at `out`, its bytecode laid out by the order file `order` if given;
 * false (the errors printed) when the build failed.
 */
async function build(out: string, order?: string): Promise<boolean> {
  const result = await Bun.build({
    entrypoints: ["cli.ts"],
    compile: { outfile: out, ...(order ? { bytecodeOrder: order } : {}) },
    minify: { syntax: true },
    // The code compiled to JavaScriptCore bytecode at build time, not parsed at each start:
    // start to socket ready 25 ms instead of 78-84, and to the first stored record delivered
    // 254-283 ms instead of 318-354 (2 x EPYC, 2026-12-05); the file grows by 7 MB.
    bytecode: true,
    define: { MB_BUILD_INFO: JSON.stringify(buildInfo) },
    plugins: [lazyAjv.plugin, lazyWasm.plugin, noRegistries.plugin],
  });
  if (!result.success) for (const log of result.logs) console.error(log);
  return result.success;
}

if (!(await build(outfile))) process.exit(1);
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

if (orderArg === "auto") {
  let dir: string | null = null;
  let built = true;
  try {
    dir = await mkdtemp(`${tmpdir()}/mb-compile-`);
    const order = `${dir}/bytecode.order`;
    let trained: string;
    try {
      trained = await trainBytecodeOrder(outfile, { brokers: orderBrokers });
    } catch (e) {
      if (orderBrokers === undefined) throw e;
      console.error(
        `compile: warning: the training run could not deliver to ${orderBrokers}, so it only stores (the executable holds about 1 MiB more): ${message(e)}`,
      );
      trained = await trainBytecodeOrder(outfile);
    }
    await writeFile(order, trained);
    built = await build(outfile, order);
  } catch (e) {
    // (The executable built first, without an order, stays.)
    console.error(
      `compile: ${
        orderRequired ? "error" : "warning"
      }: the training run failed, so the bytecode is not laid out in the order it runs (about 2-3.5 MiB more resident): ${
        message(e)
      }`,
    );
    if (orderRequired) built = false;
  } finally {
    if (dir !== null) await rm(dir, { recursive: true, force: true });
  }
  if (!built) process.exit(1);
}

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
