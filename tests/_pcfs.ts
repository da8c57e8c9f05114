// pcfs (tests/pcfs/main.go), the power-cut file system, from TypeScript: build it, mount it
// over a directory, cut the power, unmount. Used by tests/fs/pcfs_test.ts and
// scripts/powercut_loop.ts.

import { type ChildProcess, execFile, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import net from "node:net";
import { join } from "node:path";
import process from "node:process";

/** What pcfs keeps of each file's unsynced writes at a cut (see tests/pcfs/main.go). */
export type CutMode = "drop" | "prefix" | "holes" | "reorder";

/** Why pcfs cannot run here (not Linux, not root, no /dev/fuse), or null when it can. */
export function pcfsUnavailable(): string | null {
  if (process.platform !== "linux") return `FUSE mounts need Linux, this is ${process.platform}`;
  if (process.getuid?.() !== 0) return "pcfs mounts without fusermount, which needs root";
  if (!existsSync("/dev/fuse")) return "no /dev/fuse";
  return null;
}

/** Builds pcfs into `dir`; its path, or the reason it cannot be built (no Go, say). */
export function buildPcfs(dir: string): Promise<{ path: string } | { error: string }> {
  const path = join(dir, "pcfs");
  const src = new URL("./pcfs/", import.meta.url).pathname;
  return new Promise((resolve) =>
    execFile("go", ["build", "-o", path, "."], { cwd: src }, (err, _out, stderr) =>
      resolve(
        err
          ? { error: `cannot build tests/pcfs: ${(stderr || err.message).trim().split("\n")[0]}` }
          : { path },
      ))
  );
}

/** A mounted pcfs. */
export class Pcfs {
  readonly #proc: ChildProcess;
  readonly #exited: Promise<void>;
  readonly #control: string;

  private constructor(proc: ChildProcess, control: string) {
    this.#proc = proc;
    this.#control = control;
    this.#exited = new Promise((r) => proc.once("exit", () => r()));
  }

  /** Mounts `bin` (from {@link buildPcfs}) at `mountpoint` over `backing`. */
  static async mount(
    bin: string,
    mountpoint: string,
    backing: string,
    control: string,
  ): Promise<Pcfs> {
    const proc = spawn(bin, [mountpoint, backing, control], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    proc.stdout!.on("data", (d) => (out += d));
    proc.stderr!.on("data", (d) => (out += d));
    const p = new Pcfs(proc, control);
    const deadline = Date.now() + 10_000;
    while (!out.includes("pcfs ready")) {
      if (proc.exitCode !== null) throw new Error(`pcfs cannot mount: ${out.trim()}`);
      if (Date.now() > deadline) {
        proc.kill("SIGKILL");
        throw new Error(`pcfs not ready after 10 s: ${out}`);
      }
      await new Promise((r) => setTimeout(r, 10));
    }
    return p;
  }

  /** One command to the control socket; its answer (`ok ...`), or throws with pcfs's error. */
  command(line: string): Promise<string> {
    return new Promise((resolve, reject) => {
      const s = net.connect(this.#control);
      let text = "";
      s.setEncoding("utf8");
      s.on("data", (d: string) => {
        text += d;
        if (!text.includes("\n")) return;
        s.end();
        const answer = text.trim();
        answer.startsWith("ok") ? resolve(answer) : reject(new Error(`pcfs: ${answer}`));
      });
      s.on("error", reject);
      s.write(`${line}\n`);
    });
  }

  /** Cuts the power: keeps what `mode` says of the unsynced writes; every call fails after. */
  cut(mode: CutMode, seed: number): Promise<string> {
    return this.command(`cut ${mode} ${seed}`);
  }

  /** Unmounts and waits for pcfs to exit. */
  async unmount(): Promise<void> {
    this.#proc.kill("SIGTERM");
    await this.#exited;
  }
}
