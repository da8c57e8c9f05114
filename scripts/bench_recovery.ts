// Recovery benchmark: how long MessageBuffer.open() takes on a backlog, and how long until
// the first batch is handed to the provider, for backlogs of several sizes laid out two ways:
//
//   small frames: 64 writers each awaiting every write, as under fsync "always" (at most 64
//                 records per frame; built with fsync "never" so that a 10 GB backlog takes
//                 minutes, not hours: the frame layout, which is what recovery reads, is the same)
//   large frames: one writer awaiting every 4096th write, under fsync "interval"
//
// Each backlog is measured with its segments' footers (as a clean stop or a roll leaves them),
// then without them (as a crash leaves the newest segment, or a version before footers left
// every segment: opening walks them). Each measurement is a fresh process, warm (files in the
// page cache) and cold (`echo 3 > /proc/sys/vm/drop_caches`, which needs root; skipped with
// a note otherwise), and reports its peak RSS (VmHWM). The provider is a null sink: the
// figures are the engine's.
//
//   npx deno run -A scripts/bench_recovery.ts [--sizes 0.1,1,10] [--dir PATH] [--engine PATH]
//   npx bun scripts/bench_recovery.ts ...
//
// --engine points the measuring process at another checkout's mod.ts (to compare versions on
// the same backlogs; a version without footers walks every segment).

import { Buffer } from "node:buffer";
import { spawnSync } from "node:child_process";
import { mkdtemp, open, readdir, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import process from "node:process";
import { parseArgs } from "node:util";
import { machine, peakRss } from "./_bench_util.ts";
import { NodeFileSystem } from "../src/fs/node.ts";
import { FOOTER_MAGIC, SEGMENT_FOOTER_SIZE } from "../src/segment/format.ts";
import { inspectBuffer } from "../src/segment/recovery.ts";

const DEFAULT_ENGINE = new URL("../mod.ts", import.meta.url).pathname;
const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    sizes: { type: "string", default: "0.1,1" },
    dir: { type: "string" },
    engine: { type: "string", default: DEFAULT_ENGINE },
    child: { type: "string" },
  },
  strict: true,
});

if (values.child) {
  // The measured process: open, wait for the first send, print, exit without closing.
  const { MessageBuffer, silentLogger } = await import(resolve(values.engine));
  const t0 = performance.now();
  let firstSend = 0;
  let first!: () => void;
  const sent = new Promise<void>((r) => (first = r));
  const b = await MessageBuffer.open({
    dir: values.child,
    logger: silentLogger,
    maxBufferBytes: 64 * 2 ** 30,
    provider: {
      name: "null",
      open: () => Promise.resolve(),
      send: () => {
        firstSend ||= performance.now();
        first();
        return new Promise(() => {}); // never acknowledged: the backlog stays as it is
      },
      close: () => Promise.resolve(),
    },
  });
  const openMs = performance.now() - t0;
  const backlog = b.stats().backlog.records;
  await sent;
  const hwm = peakRss("self") / 1024 / 1024;
  console.log(JSON.stringify({ openMs, firstMs: firstSend - t0, backlog, rssMiB: hwm }));
  process.exit(0);
}

const sizes = values.sizes.split(",").map(Number);
const base = values.dir ?? (await mkdtemp(join(tmpdir(), "mb-bench-recovery-")));
const runtime = (globalThis as { Deno?: unknown }).Deno ? "deno" : "bun";

function dropCaches(): boolean {
  const r = spawnSync("sh", ["-c", "sync && echo 3 > /proc/sys/vm/drop_caches"]);
  return r.status === 0;
}

function measure(
  dir: string,
): { openMs: number; firstMs: number; backlog: number; rssMiB: number } {
  const self = new URL(import.meta.url).pathname;
  const args = runtime === "deno"
    ? ["run", "-A", self, "--child", dir, "--engine", values.engine]
    : [self, "--child", dir, "--engine", values.engine];
  const r = spawnSync(process.execPath, args, { encoding: "utf8", maxBuffer: 1 << 24 });
  if (r.status !== 0) throw new Error(`measuring process failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split("\n").at(-1)!);
}

/** Builds a backlog of about `gb` GB of 100-byte records, laid out `how`. */
async function build(dir: string, gb: number, how: "small" | "large"): Promise<number> {
  const { MessageBuffer, silentLogger } = await import("../mod.ts");
  const records = Math.round((gb * 1e9) / 130);
  const b = await MessageBuffer.open({
    dir,
    logger: silentLogger,
    fsync: how === "small" ? "never" : "interval",
    maxBufferBytes: 64 * 2 ** 30,
    provider: {
      name: "down",
      open: () => Promise.reject(new Error("down")),
      send: () => Promise.reject(new Error("down")),
      close: () => Promise.resolve(),
    },
    retryInitialMs: 60_000,
    retryMaxMs: 60_000,
  });
  const value = "x".repeat(100);
  if (how === "small") {
    let next = 0;
    await Promise.all(Array.from({ length: 64 }, async () => {
      for (let i = next++; i < records; i = next++) {
        await b.write("bench", value, { key: `k${i % 10}` });
      }
    }));
  } else {
    for (let i = 0; i < records; i++) {
      const p = b.write("bench", value, { key: `k${i % 10}` });
      if ((i & 4095) === 4095) await p;
    }
  }
  await b.close();
  return records;
}

async function stripFooters(dir: string): Promise<void> {
  for (const n of await readdir(dir)) {
    if (!n.endsWith(".seg")) continue;
    const fh = await open(join(dir, n), "r+");
    try {
      const { size } = await fh.stat();
      const b = Buffer.alloc(4);
      if (size < SEGMENT_FOOTER_SIZE) continue;
      await fh.read(b, 0, 4, size - SEGMENT_FOOTER_SIZE);
      if (b.readUInt32BE(0) === FOOTER_MAGIC) await fh.truncate(size - SEGMENT_FOOTER_SIZE);
    } finally {
      await fh.close();
    }
  }
}

async function dirBytes(dir: string): Promise<{ bytes: number; segments: number }> {
  let bytes = 0, segments = 0;
  for (const n of await readdir(dir)) {
    if (!n.endsWith(".seg")) continue;
    bytes += (await stat(join(dir, n))).size;
    segments++;
  }
  return { bytes, segments };
}

console.log("# messagebuffer recovery benchmark");
console.log(`# ${machine()}`);
console.log(`# command: ${process.argv.join(" ")}`);
console.log(`# engine measured: ${values.engine}`);
const canDrop = dropCaches();
if (!canDrop) {
  console.log("# cold runs skipped: cannot write /proc/sys/vm/drop_caches (needs root)");
}
console.log(
  "| backlog | layout | segments | footers | open() warm | first send warm | open() cold | first send cold | peak RSS |",
);
console.log("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
const ms = (n: number) => `${n.toFixed(0)} ms`;
for (const gb of sizes) {
  for (const how of ["small", "large"] as const) {
    const dir = join(base, `${gb}GB-${how}`);
    await rm(dir, { recursive: true, force: true });
    const records = await build(dir, gb, how);
    const { bytes, segments } = await dirBytes(dir);
    const { frames } = await inspectBuffer(new NodeFileSystem(), dir).then((r) => ({
      frames: r.segments.reduce((n, s) => n + s.frames, 0),
    }));
    // Another engine may not know footers: measure it on the segments without them.
    for (const footers of values.engine === DEFAULT_ENGINE ? [true, false] : [false]) {
      if (!footers) await stripFooters(dir);
      // Warm: the best of three (a walk gives the segments footers: strip them again).
      let warm = measure(dir);
      for (let i = 0; i < 2; i++) {
        if (!footers) await stripFooters(dir);
        const m = measure(dir);
        if (m.openMs < warm.openMs) warm = m;
      }
      let cold: typeof warm | null = null;
      if (canDrop) {
        if (!footers) await stripFooters(dir);
        dropCaches();
        cold = measure(dir);
      }
      if (warm.backlog !== records) {
        throw new Error(`open() found ${warm.backlog} records of the ${records} written`);
      }
      console.log(
        `| ${
          (bytes / 1e9).toFixed(2)
        } GB, ${records} records | ${how}: ${frames} frames | ${segments} | ${
          footers ? "yes" : "no (walked)"
        } | ${ms(warm.openMs)} | ${ms(warm.firstMs)} | ${cold ? ms(cold.openMs) : "-"} | ${
          cold ? ms(cold.firstMs) : "-"
        } | ${Math.max(warm.rssMiB, cold?.rssMiB ?? 0).toFixed(0)} MiB |`,
      );
    }
    await rm(dir, { recursive: true, force: true });
  }
}
if (!values.dir) await rm(base, { recursive: true, force: true });
