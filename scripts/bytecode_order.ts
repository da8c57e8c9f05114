// Writes scripts/bytecode.order, the order in which a running agent first calls its functions,
// which scripts/compile.ts lays the executable's bytecode out by (Bun's `bytecodeOrder`): the
// code the agent uses then lies on fewer pages of the file, and it holds fewer of them in memory
// (3-3.5 MiB less RSS, docs/benchmarks.md). Builds the executable without an order, runs it
// against a real broker as an agent does (start, lines over the socket on two topics, keyed and
// not, TSV and JSON, stored and delivered), stops it, and keeps the functions of the order Bun
// wrote at its exit. Run it again after large changes: a function changed since is laid out
// after the ordered ones, as it would be without an order, so a stale file costs only memory.
//
//   scripts/kafka.sh start
//   npx deno run -A scripts/bytecode_order.ts [--brokers HOST:PORT] [--lines N] [--out FILE]

import { spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    brokers: { type: "string", default: "127.0.0.1:9092" },
    lines: { type: "string", default: "300000" },
    out: { type: "string", default: "scripts/bytecode.order" },
  },
  strict: true,
});
const LINES = Number(values.lines);
if (!Number.isInteger(LINES) || LINES < 1000) {
  console.error(`bytecode_order: --lines is a whole number of 1000 or more, not "${values.lines}"`);
  process.exit(2);
}

function fail(message: string): never {
  console.error(`bytecode_order: ${message}`);
  process.exit(1);
}

const dir = await mkdtemp(join(tmpdir(), "mb-order-"));
try {
  const exe = join(dir, "messagebuffer");
  const build = spawnSync(
    "node_modules/.bin/bun",
    ["scripts/compile.ts", exe, "--bytecode-order", "none"],
    { stdio: "inherit" },
  );
  if (build.status !== 0) fail("the build without an order failed (above)");

  // Lines as applications send them: two topics, keyed and keyless, TSV and some JSON.
  const value = "x".repeat(100);
  const lines: string[] = [];
  for (let i = 0; i < LINES; i++) {
    const topic = i % 2 === 0 ? "mb-bytecode-order-a" : "mb-bytecode-order-b";
    lines.push(
      i % 100 === 99
        ? JSON.stringify({ topic, key: `k${i % 64}`, value })
        : `${topic}\t${i % 3 === 0 ? "" : `k${i % 64}`}\t${value}`,
    );
  }
  const input = join(dir, "lines.txt");
  await writeFile(input, lines.join("\n") + "\n");

  const socket = join(dir, "agent.sock");
  const order = join(dir, "order.out");
  const agent = spawn(exe, [
    "run",
    "--brokers",
    values.brokers!,
    "--buffer-dir",
    join(dir, "buffer"),
    "--socket",
    socket,
  ], {
    stdio: ["ignore", "ignore", "inherit"],
    env: { ...process.env, BUN_BYTECODE_ORDER_OUT: order },
  });
  const exited = new Promise<number | null>((resolve) => agent.on("exit", (code) => resolve(code)));
  try {
    for (let i = 0; !existsSync(socket); i++) {
      if (agent.exitCode !== null) {
        fail(`the agent exited (${agent.exitCode}) before its socket was ready`);
      }
      if (i > 1000) fail("the agent's socket was not ready in 10 s");
      await new Promise((r) => setTimeout(r, 10));
    }
    const send = spawnSync(exe, ["send", "--socket", socket, input], { stdio: "ignore" });
    if (send.status !== 0) fail(`send exited ${send.status}`);
    const deadline = Date.now() + 120_000;
    for (;;) {
      const top = spawnSync(exe, ["top", "--socket", socket, "--once", "--json"], {
        encoding: "utf8",
      });
      const delivered = top.status === 0
        ? JSON.parse(top.stdout).buffer?.counters?.delivered ?? 0
        : 0;
      if (delivered >= LINES) break;
      if (Date.now() > deadline) {
        fail(
          `${delivered} of ${LINES} lines delivered to ${values.brokers} in 120 s: is the broker up?`,
        );
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    agent.kill("SIGTERM");
    await exited;
  }

  // Bun writes a "v2" line, then "M <hash>" lines and "F <hash>" lines; only the functions'
  // lines change the layout (an order without the M lines saved as much, measured).
  const written = existsSync(order) ? (await readFile(order, "utf8")).split("\n") : [];
  if (written[0] !== "v2") fail(`the agent wrote no order Bun's compiler reads (${order})`);
  const functions = written.filter((l) => /^F [0-9a-f]{16}$/.test(l));
  if (functions.length === 0) fail("the order the agent wrote names no function");
  await writeFile(values.out!, ["v2", ...functions, ""].join("\n"));
  console.log(
    `bytecode_order: ${functions.length} functions, in the order a run of ${LINES} lines to ${values.brokers} first called them, to ${values.out}`,
  );
} finally {
  await rm(dir, { recursive: true, force: true });
}
