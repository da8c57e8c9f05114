// Write-path benchmark: how fast MessageBuffer.write stores 100-byte records, per fsync
// policy, against the raw speed of appending the same bytes to a file in the same run.
//
//   npx deno run -A scripts/bench_write.ts [--records N] [--dir DIR]
//   npx bun scripts/bench_write.ts
//
// The provider is kept "down" (every send fails, backoff capped at 1 s) so that the figures
// are the buffer's own, and so that the backlog grows: memory must stay flat while it does.

import { mkdtemp, open, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { parseArgs } from "node:util";
import { type FsyncPolicy, MessageBuffer, type Provider, silentLogger } from "../mod.ts";
import { fmtRate, machine, MiB, RssPeak } from "./_bench_util.ts";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: { records: { type: "string", default: "1000000" }, dir: { type: "string" } },
  strict: true,
});
const N = Number(values.records);
const VALUE = "x".repeat(100);
const down: Provider = {
  name: "down",
  open: () => Promise.resolve(),
  send: () => Promise.reject(new Error("down")),
  close: () => Promise.resolve(),
};

async function tempDir(): Promise<string> {
  return await mkdtemp(join(values.dir ?? tmpdir(), "mb-bench-"));
}

/** Appends N lines to a file through a 1 MiB buffer: copying pre-encoded bytes, or encoding each string. */
async function rawAppend(encodeEach: boolean): Promise<number> {
  const dir = await tempDir();
  const fh = await open(join(dir, "raw"), "w");
  const enc = new TextEncoder();
  const text = VALUE + "\n";
  const line = enc.encode(text);
  const buf = new Uint8Array(MiB);
  let used = 0;
  const t0 = performance.now();
  for (let i = 0; i < N; i++) {
    if (used + line.length > buf.length) {
      await fh.write(buf, 0, used);
      used = 0;
    }
    if (encodeEach) used += enc.encodeInto(text, buf.subarray(used)).written;
    else {
      buf.set(line, used);
      used += line.length;
    }
  }
  await fh.write(buf, 0, used);
  const s = (performance.now() - t0) / 1000;
  await fh.close();
  await rm(dir, { recursive: true, force: true });
  return N / s;
}

async function bench(fsync: FsyncPolicy, writers: number, count: number) {
  const dir = await tempDir();
  const b = await MessageBuffer.open({
    dir,
    provider: down,
    fsync,
    logger: silentLogger,
    segmentMaxBytes: 64 * MiB,
    maxBufferBytes: 64 * 1024 * MiB,
    retryMaxMs: 1000,
    closeTimeoutMs: 0,
  });
  const rss = new RssPeak();
  const rssAt: number[] = [];
  const t0 = performance.now();
  if (writers === 0) {
    // One caller, not awaiting each write: await every 4096th (what a busy producer does).
    let p: Promise<void> = Promise.resolve();
    for (let i = 0; i < count; i++) {
      p = b.write("bench", VALUE);
      if ((i & 4095) === 4095) await p;
      if (i % Math.floor(count / 4) === 0) rssAt.push(rss.sample());
    }
    await p;
  } else {
    // `writers` callers, each awaiting every write before the next.
    const per = Math.floor(count / writers);
    await Promise.all(Array.from({ length: writers }, async () => {
      for (let i = 0; i < per; i++) await b.write("bench", VALUE);
    }));
    count = per * writers;
  }
  const s = (performance.now() - t0) / 1000;
  const peak = rss.stop();
  const stats = b.stats();
  await b.close();
  await rm(dir, { recursive: true, force: true });
  return { rate: count / s, mbps: (stats.backlog.bytes / MiB) / s, peak, rssAt, count };
}

console.log(`# messagebuffer write benchmark`);
console.log(`# ${machine()}`);
console.log(`# command: ${process.argv.join(" ")}   (records of 100 bytes, topic "bench", no key)`);
const rawCopy = await rawAppend(false);
const raw = await rawAppend(true);
console.log(
  `raw append of the same 100-byte lines through a 1 MiB buffer: ${
    fmtRate(rawCopy)
  } lines/s copying bytes, ` +
    `${fmtRate(raw)} lines/s encoding each string (the "raw" below)`,
);
for (
  const [fsync, writers, count] of [
    ["interval", 0, N],
    ["never", 0, N],
    ["interval", 64, N],
    ["always", 64, Math.min(N, 300_000)],
  ] as Array<[FsyncPolicy, number, number]>
) {
  const r = await bench(fsync, writers, count);
  const who = writers === 0 ? "1 caller, pipelined" : `${writers} concurrent awaiting writers`;
  console.log(
    `fsync=${fsync.padEnd(8)} ${who.padEnd(31)} ${fmtRate(r.rate)} msg/s  ${
      r.mbps.toFixed(0)
    } MB/s  ` +
      `${(r.rate / raw * 100).toFixed(0)}% of raw  peak RSS ${(r.peak / MiB).toFixed(0)} MiB` +
      (r.rssAt.length
        ? `  RSS along the run: ${r.rssAt.map((x) => (x / MiB).toFixed(0)).join(", ")} MiB`
        : "") +
      `  (${r.count} records)`,
  );
}
