// Builds the agent as one self-contained executable with Bun (offline): see compile.sh.
// @platformatic/kafka's codecs load a WASM file from next to their module at run time, which
// a compiled executable does not carry; the package also ships the same code with the WASM
// inlined (`@platformatic/wasm-utils/bundled`), and the build resolves to that one instead.
//   bun scripts/compile.ts OUTFILE

const outfile = process.argv[2] ?? "dist/messagebuffer";
const inlinedWasm: import("bun").BunPlugin = {
  name: "inline @platformatic/wasm-utils",
  setup(build) {
    build.onResolve({ filter: /^@platformatic\/wasm-utils$/ }, () => ({
      path: Bun.resolveSync("@platformatic/wasm-utils/bundled", import.meta.dir),
    }));
  },
};
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
const result = await Bun.build({
  entrypoints: ["cli.ts"],
  compile: { outfile },
  minify: { syntax: true },
  plugins: [inlinedWasm],
  define: { MB_BUILD_INFO: JSON.stringify(buildInfo) },
});
if (!result.success) {
  for (const log of result.logs) console.error(log);
  process.exit(1);
}
