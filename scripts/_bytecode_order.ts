/**
 * The training run of `scripts/compile.ts`: runs a just-built executable as an agent, so that
 * Bun writes the order in which it first called its functions (`BUN_BYTECODE_ORDER_OUT`, at
 * exit), which the final build lays the bytecode out by (`compile.bytecodeOrder`). The agent
 * starts, takes lines over its socket (two topics, keyed and keyless, TSV and some JSON), stores
 * them, and with `brokers` delivers them too; then it stops. The code it ran then shares fewer
 * pages of the file with code it never runs, and it holds fewer of them in memory.
 *
 * @module
 */

import { spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";

/** What the training run does. */
export interface TrainingOptions {
  /** A broker to deliver to (HOST:PORT); without one the agent only stores (none listens). */
  brokers?: string;
  /** Lines sent. @default 300000 */
  lines?: number;
  /** Give up after this long. @default 120000 */
  timeoutMs?: number;
}

/**
 * Runs `exe` as described in the module doc and returns the order Bun wrote, with only its
 * function lines ("v2", then "F <hash>" lines; its module lines changed nothing, measured).
 * Throws an Error that says what failed.
 */
export async function trainBytecodeOrder(exe: string, o: TrainingOptions = {}): Promise<string> {
  const lines = o.lines ?? 300_000;
  const timeoutMs = o.timeoutMs ?? 120_000;
  const dir = await mkdtemp(join(tmpdir(), "mb-order-"));
  try {
    const value = "x".repeat(100);
    const text: string[] = [];
    for (let i = 0; i < lines; i++) {
      const topic = i % 2 === 0 ? "mb-bytecode-order-a" : "mb-bytecode-order-b";
      text.push(
        i % 100 === 99
          ? JSON.stringify({ topic, key: `k${i % 64}`, value })
          : `${topic}\t${i % 3 === 0 ? "" : `k${i % 64}`}\t${value}`,
      );
    }
    const input = join(dir, "lines.txt");
    await writeFile(input, text.join("\n") + "\n");

    const socket = join(dir, "agent.sock");
    const order = join(dir, "order.out");
    let log = "";
    // No broker listens on port 1: the agent stores, and its sender waits.
    const agent = spawn(exe, [
      "run",
      "--brokers",
      o.brokers ?? "127.0.0.1:1",
      "--buffer-dir",
      join(dir, "buffer"),
      "--socket",
      socket,
    ], {
      stdio: ["ignore", "ignore", "pipe"],
      // (Without a failpoint the tests may have left set.)
      env: { ...process.env, MB_FAILPOINT: undefined, BUN_BYTECODE_ORDER_OUT: order },
    });
    agent.stderr!.on("data", (b) => (log = (log + b).slice(-4000)));
    const exited = new Promise<number | null>((resolve) => agent.on("close", resolve));
    const failed = (what: string) => new Error(`${what}; the agent's log ends:\n${log}`);
    try {
      const deadline = Date.now() + timeoutMs;
      while (!existsSync(socket)) {
        if (agent.exitCode !== null) throw failed(`the agent exited (${agent.exitCode}) at start`);
        if (Date.now() > deadline) throw failed("the agent's socket was not ready");
        await new Promise((r) => setTimeout(r, 10));
      }
      const send = spawnSync(exe, ["send", "--quiet", "--socket", socket, input], {
        encoding: "utf8",
      });
      if (send.status !== 0) throw failed(`send exited ${send.status}: ${send.stderr}`);
      // Stored lines are answered, so `send` returning is enough without a broker.
      const counter = o.brokers ? "delivered" : "written";
      for (let n = 0; n < lines;) {
        if (Date.now() > deadline) {
          throw failed(`${n} of ${lines} lines ${counter} to ${o.brokers ?? "the buffer"} in time`);
        }
        const top = spawnSync(exe, ["top", "--socket", socket, "--once", "--json"], {
          encoding: "utf8",
        });
        n = top.status === 0 ? JSON.parse(top.stdout).buffer?.counters?.[counter] ?? 0 : 0;
        if (n < lines) await new Promise((r) => setTimeout(r, 100));
      }
    } finally {
      agent.kill("SIGTERM");
      await exited;
    }
    const written = existsSync(order) ? (await readFile(order, "utf8")).split("\n") : [];
    if (written[0] !== "v2") throw failed("the agent wrote no order this Bun reads");
    const functions = written.filter((l) => /^F [0-9a-f]{16}$/.test(l));
    if (functions.length === 0) throw failed("the order the agent wrote names no function");
    return ["v2", ...functions, ""].join("\n");
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
