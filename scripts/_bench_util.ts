// Shared by the benchmark scripts: machine description, RSS sampling, result lines.

import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
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

/** Peak RSS (VmHWM) of process `pid` (or this one) in bytes; 0 when it cannot be read. */
export function peakRss(pid: number | "self"): number {
  return statusBytes(pid, "VmHWM");
}

/** RSS now (VmRSS) of process `pid` (or this one) in bytes; 0 when it cannot be read. */
export function currentRss(pid: number | "self"): number {
  return statusBytes(pid, "VmRSS");
}

function statusBytes(pid: number | "self", field: string): number {
  let status = "";
  try {
    status = readFileSync(`/proc/${pid}/status`, "utf8");
  } catch {
    // gone, or not Linux
  }
  return Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)?.[1] ?? 0) * 1024;
}

/**
 * `kcat -P` producing the KEY<TAB>VALUE lines of `file` to `topic` with idempotence and
 * acks=all, as every benchmark compares with; `extra` goes before the file (`-z codec`).
 */
export function kcatProduceArgs(
  brokers: string,
  topic: string,
  file: string,
  extra: string[] = [],
): string[] {
  return [
    "-P",
    "-b",
    brokers,
    "-t",
    topic,
    "-K",
    "\t",
    ...extra,
    "-X",
    "enable.idempotence=true",
    "-X",
    "acks=all",
    "-X",
    "linger.ms=5",
    "-l",
    file,
  ];
}

/** True when `kcat` (librdkafka's command-line client) runs here. */
export function hasKcat(): boolean {
  try {
    return spawnSync("kcat", ["-V"], { stdio: "ignore" }).status === 0;
  } catch {
    return false;
  }
}
