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

import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, rmSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import process from "node:process";

/** What the training run does. */
export interface TrainingOptions {
  /** A broker to deliver to (HOST:PORT); without one the agent only stores (none listens). */
  brokers?: string;
  /** Lines sent. @default 300000 */
  lines?: number;
  /** Give up after this long (ms). @default 120000 */
  timeoutMs?: number;
}

/**
 * Runs `exe` as described in the module doc and returns the order Bun wrote, with only its
 * function lines ("v2", then "F <hash>" lines; its module lines changed nothing, measured).
 * Throws an Error that says what failed.
 */
export async function trainBytecodeOrder(exe: string, o: TrainingOptions = {}): Promise<string> {
  // A path, never a name looked up in PATH (which could run another messagebuffer).
  exe = resolve(exe);
  const lines = o.lines ?? 300_000;
  const deadline = Date.now() + (o.timeoutMs ?? 120_000);
  const dir = await mkdtemp(join(tmpdir(), "mb-order-"));
  let agent: ChildProcess | null = null;
  // Interrupted (Ctrl-C, a CI timeout): the agent and the temporary files go too.
  const interrupted = (signal: NodeJS.Signals) => {
    agent?.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
    process.exit(signal === "SIGINT" ? 130 : 143);
  };
  process.once("SIGINT", interrupted);
  process.once("SIGTERM", interrupted);
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
    let gone: string | null = null; // why the agent is no longer running
    // No broker listens on port 1: the agent stores, and its sender waits.
    const a = agent = spawn(exe, [
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
    a.stderr!.on("data", (b) => (log = (log + b).slice(-4000)));
    const exited = new Promise<void>((done) => {
      a.once("error", (e) => {
        gone = `${exe} could not be run (${e.message})`;
        done();
      });
      a.once("exit", (code, signal) => {
        gone ??= `the agent exited (${signal ?? code})`;
        done();
      });
    });
    const failed = (what: string) =>
      new Error(`${what}${log ? `; the agent's log ends:\n${log}` : ""}`);
    const left = () => Math.max(1, deadline - Date.now());
    try {
      while (!existsSync(socket)) {
        if (gone) throw failed(`${gone} before its socket was ready`);
        if (Date.now() > deadline) throw failed("the agent's socket was not ready in time");
        await new Promise((r) => setTimeout(r, 10));
      }
      const send = spawnSync(exe, ["send", "--quiet", "--socket", socket, input], {
        encoding: "utf8",
        timeout: left(),
      });
      if (send.status !== 0) {
        throw failed(
          `send ${
            send.signal ? `was stopped (${send.signal})` : `exited ${send.status}`
          }: ${send.stderr}`,
        );
      }
      // Lines are answered once stored, so without a broker the first poll finds them written.
      const counter = o.brokers ? "delivered" : "written";
      for (let n = 0; n < lines;) {
        if (gone) throw failed(`${gone} with ${n} of ${lines} lines ${counter}`);
        if (Date.now() > deadline) {
          throw failed(`${n} of ${lines} lines ${counter} to ${o.brokers ?? "the buffer"} in time`);
        }
        const top = spawnSync(
          exe,
          ["top", "--socket", socket, "--json", "--interval", "0.1"],
          { encoding: "utf8", timeout: left() },
        );
        try {
          n = top.status === 0 ? JSON.parse(top.stdout).buffer?.counters?.[counter] ?? 0 : 0;
        } catch {
          throw failed(`top --json printed what is not JSON: ${top.stdout.slice(0, 200)}`);
        }
        if (n < lines) await new Promise((r) => setTimeout(r, 100));
      }
    } finally {
      if (!gone) {
        a.kill("SIGTERM");
        // An agent that does not stop within 10 s is killed (its order is then not written).
        const kill = setTimeout(() => a.kill("SIGKILL"), 10_000);
        await exited;
        clearTimeout(kill);
      }
    }
    const written = existsSync(order) ? (await readFile(order, "utf8")).split("\n") : [];
    if (written[0] !== "v2") throw failed("the agent wrote no order this Bun reads");
    const functions = written.filter((l) => /^F [0-9a-f]{16}$/.test(l));
    if (functions.length === 0) throw failed("the order the agent wrote names no function");
    return ["v2", ...functions, ""].join("\n");
  } finally {
    process.off("SIGINT", interrupted);
    process.off("SIGTERM", interrupted);
    await rm(dir, { recursive: true, force: true });
  }
}
