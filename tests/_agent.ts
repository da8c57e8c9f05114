// Helpers to run the agent as a real process: from source with the runtime running the
// tests, or the compiled executable when MB_AGENT_BIN names one (CI sets it).

import { type ChildProcess, spawn } from "node:child_process";
import net from "node:net";
import process from "node:process";

/** How to start `messagebuffer` with arguments. */
export function agentCommand(args: string[]): [string, string[]] {
  const bin = process.env.MB_AGENT_BIN;
  if (bin) return [bin, args];
  if ((globalThis as { Deno?: unknown }).Deno) {
    return [process.execPath, ["run", "-A", "cli.ts", ...args]];
  }
  return [process.execPath, ["cli.ts", ...args]];
}

/** How a test runs a command: the environment to add, the umask and user to start it as. */
export interface RunOptions {
  env?: Record<string, string>;
  /** Octal, e.g. "000": the command runs under `sh -c 'umask ...; exec ...'` (same pid). */
  umask?: string;
  /** Run as this user and group id (with setpriv, same pid; the tests run as root). */
  uid?: number;
  /** runCli: kill the command if it runs longer than this. */
  timeoutMs?: number;
}

/** Spawns `cmd argv` with `options`. */
function spawnWith(
  cmd: string,
  argv: string[],
  stdio: ["ignore" | "pipe", "pipe", "pipe"],
  options: RunOptions,
): ChildProcess {
  const env = { ...process.env, ...options.env };
  if (options.uid !== undefined) {
    const id = options.uid;
    [cmd, argv] = ["setpriv", [
      `--reuid=${id}`,
      `--regid=${id}`,
      "--clear-groups",
      "--",
      cmd,
      ...argv,
    ]];
  }
  if (options.umask !== undefined) {
    if (!/^[0-7]{3,4}$/.test(options.umask)) throw new TypeError(`bad umask ${options.umask}`);
    [cmd, argv] = ["/bin/sh", ["-c", `umask ${options.umask} && exec "$0" "$@"`, cmd, ...argv]];
  }
  return spawn(cmd, argv, { stdio, env });
}

/** A running agent. */
export interface Agent {
  proc: ChildProcess;
  /** Everything the agent logged so far. */
  log: () => string;
  /** Sends a signal and resolves with the exit code. */
  stop: (signal?: NodeJS.Signals) => Promise<number | null>;
  exited: Promise<number | null>;
}

/** Starts `messagebuffer run ARGS` and waits for its "agent ready" log line. */
export async function startAgent(
  args: string[],
  env: Record<string, string> = {},
  options: Omit<RunOptions, "env"> = {},
): Promise<Agent> {
  const [cmd, argv] = agentCommand(["run", ...args]);
  const proc = spawnWith(cmd, argv, ["ignore", "pipe", "pipe"], { ...options, env });
  let log = "";
  proc.stdout!.on("data", (d) => (log += d));
  proc.stderr!.on("data", (d) => (log += d));
  const exited = new Promise<number | null>((r) => proc.once("exit", (code) => r(code)));
  const deadline = Date.now() + 30_000;
  while (!/agent ready/.test(log)) {
    if (proc.exitCode !== null) throw new Error(`agent exited with ${proc.exitCode}:\n${log}`);
    if (Date.now() > deadline) {
      proc.kill("SIGKILL");
      throw new Error(`agent not ready after 30 s:\n${log}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return {
    proc,
    log: () => log,
    exited,
    stop: (signal = "SIGTERM") => {
      // process.kill, not proc.kill: Deno's child_process reports a child it signalled
      // through proc.kill as killed by that signal even when it exits 0 on its own.
      if (proc.exitCode === null && proc.signalCode === null) {
        try {
          process.kill(proc.pid!, signal);
        } catch { /* already gone */ }
      }
      return exited;
    },
  };
}

/** Runs a CLI command to completion; resolves with its exit code and output. */
export function runCli(
  args: string[],
  stdin?: string,
  options: RunOptions = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const [cmd, argv] = agentCommand(args);
  return new Promise((resolve) => {
    const p = spawnWith(cmd, argv, ["pipe", "pipe", "pipe"], options);
    let stdout = "", stderr = "";
    p.stdout!.on("data", (d) => (stdout += d));
    p.stderr!.on("data", (d) => (stderr += d));
    // A command expected to exit that keeps running (an agent that should have refused to
    // start) is killed after timeoutMs, and reported with code null.
    const timer = options.timeoutMs === undefined ? undefined : setTimeout(() => {
      stderr += `\n(killed: still running after ${options.timeoutMs} ms)`;
      p.kill("SIGKILL");
    }, options.timeoutMs);
    p.once("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    p.stdin!.end(stdin ?? "");
  });
}

/** A raw protocol client: write bytes, read answer lines. */
export class RawClient {
  readonly socket: net.Socket;
  answers: string[] = [];
  #text = "";
  /** Resolves when the socket closes. */
  closed: Promise<void>;
  /** Whether the agent ended its side (its FIN arrived, after every answer it sent). */
  peerEnded = false;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.setEncoding("utf8");
    socket.on("data", (t: string) => {
      this.#text += t;
      let i;
      while ((i = this.#text.indexOf("\n")) >= 0) {
        this.answers.push(this.#text.slice(0, i));
        this.#text = this.#text.slice(i + 1);
      }
    });
    this.closed = new Promise((r) => socket.once("close", () => r()));
    socket.once("end", () => (this.peerEnded = true));
  }

  static connect(path: string): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const s = net.connect(path);
      s.once("connect", () => resolve(new RawClient(s)));
      s.once("error", reject);
    });
  }

  write(data: string | Uint8Array): void {
    this.socket.write(data);
  }

  /** Waits until `n` answers arrived. */
  async waitAnswers(n: number, ms = 30_000): Promise<string[]> {
    const deadline = Date.now() + ms;
    while (this.answers.length < n) {
      if (Date.now() > deadline) {
        throw new Error(
          `got ${this.answers.length} of ${n} answers: ${this.answers.slice(-3).join(" | ")}`,
        );
      }
      await new Promise((r) => setTimeout(r, 5));
    }
    return this.answers;
  }

  end(): void {
    this.socket.end();
  }
}

/** A TCP port free on 127.0.0.1 right now (for `--metrics`). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/** The agent's `/metrics` at `address` (host:port), as name → value (unlabelled samples). */
export async function scrapeMetrics(address: string): Promise<Record<string, number>> {
  const res = await fetch(`http://${address}/metrics`);
  if (!res.ok) throw new Error(`GET /metrics: ${res.status}`);
  const out: Record<string, number> = {};
  for (const line of (await res.text()).split("\n")) {
    const m = /^([a-z_]+) (\S+)$/.exec(line);
    if (m) out[m[1]] = Number(m[2]);
  }
  return out;
}

/** Scrapes `/metrics` until `cond` holds; resolves with that scrape. Throws after `ms`. */
export async function waitForMetrics(
  address: string,
  cond: (m: Record<string, number>) => boolean,
  what: string,
  ms = 30_000,
): Promise<Record<string, number>> {
  const deadline = Date.now() + ms;
  for (;;) {
    const m = await scrapeMetrics(address);
    if (cond(m)) return m;
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${ms} ms waiting for ${what}: ${JSON.stringify(m)}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}
