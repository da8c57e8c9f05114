// Shared by the benchmark scripts: machine description, RSS sampling, result lines.

import os from "node:os";
import process from "node:process";

/** "Deno 2.9.6" / "Bun 1.4.5" / "Node 20.x". */
export function runtimeName(): string {
  const g = globalThis as { Deno?: { version: { deno: string } }; Bun?: { version: string } };
  if (g.Deno) return `Deno ${g.Deno.version.deno}`;
  if (g.Bun) return `Bun ${g.Bun.version}`;
  return `Node ${process.versions.node}`;
}

/** One line naming the machine and runtime. */
export function machine(): string {
  const cpu = os.cpus()[0]?.model ?? "unknown CPU";
  return `${runtimeName()} on ${os.cpus().length} x ${cpu}, ${
    (os.totalmem() / 2 ** 30).toFixed(0)
  } GiB, ${os.platform()} ${os.release()}`;
}

/** Tracks the peak RSS while running. */
export class RssPeak {
  peak = 0;
  #t: ReturnType<typeof setInterval>;
  constructor() {
    this.sample();
    this.#t = setInterval(() => this.sample(), 50);
  }
  sample(): number {
    const rss = process.memoryUsage().rss;
    if (rss > this.peak) this.peak = rss;
    return rss;
  }
  stop(): number {
    clearInterval(this.#t);
    return this.sample() && this.peak;
  }
}

export const MiB = 1024 * 1024;

export function fmtRate(n: number): string {
  return n >= 1e6 ? `${(n / 1e6).toFixed(2)}M` : `${(n / 1e3).toFixed(1)}K`;
}
