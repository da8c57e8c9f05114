// The delivery modes side by side, in one run against the same broker (README, "Delivery
// modes"). For each mode:
//   - latency at a steady rate (default 10K records/s for 10 s, 100-byte values, written in
//     ticks of 10 ms): the writer's wait (write() to its promise resolving) and the time
//     to Kafka (write to Kafka's acknowledgement, measured at the provider), p50/p99/max;
//   - throughput: --records records written as fast as the mode lets a writer that keeps
//     --inflight writes pending, until Kafka acknowledged every one.
// Every topic's end offset is checked against the records written.
//
//   scripts/kafka.sh start
//   npx deno run -A scripts/bench_modes.ts [--brokers HOST:PORT] [--rate N] [--seconds N]
//       [--records N] [--inflight N] [--modes buffer,direct-until-error,...]
//   npx bun scripts/bench_modes.ts ...

import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { parseArgs } from "node:util";
import { Kafka, logLevel } from "kafkajs";
import {
  type FsyncPolicy,
  KafkaProvider,
  MessageBuffer,
  type Mode,
  type Provider,
  silentLogger,
} from "../mod.ts";
import { fmtRate, machine } from "./_bench_util.ts";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    brokers: { type: "string", default: "127.0.0.1:9092" },
    rate: { type: "string", default: "10000" },
    seconds: { type: "string", default: "10" },
    records: { type: "string", default: "500000" },
    inflight: { type: "string", default: "10000" },
    modes: {
      type: "string",
      default: "buffer,buffer/always,direct-until-error,block-on-error,error-on-error",
    },
  },
  strict: true,
});
const brokers = values.brokers.split(",");
const RATE = Number(values.rate);
const SECONDS = Number(values.seconds);
const N = Number(values.records);
const INFLIGHT = Number(values.inflight);
const VALUE = "x".repeat(100);
const run = Date.now().toString(36);
const kafka = new Kafka({ brokers, logLevel: logLevel.NOTHING, clientId: "bench" });
const admin = kafka.admin();
await admin.connect();

async function newTopic(name: string): Promise<string> {
  const topic = `bench-${run}-${name.replace(/[^a-z0-9-]/g, "-")}`;
  await admin.createTopics({ topics: [{ topic, numPartitions: 1 }], waitForLeaders: true });
  return topic;
}

async function endOffset(topic: string): Promise<number> {
  const [p] = await admin.fetchTopicOffsets(topic);
  return Number(p.high);
}

/** The Kafka provider, noting for each acknowledged record the ms since it was written. */
function timedProvider(samples: number[]): Provider {
  const inner = new KafkaProvider({ brokers, logger: silentLogger });
  return {
    name: inner.name,
    retryWaitMs: inner.retryWaitMs,
    keepsIdentity: inner.keepsIdentity,
    releasesRecords: inner.releasesRecords,
    sendMaxRecords: inner.sendMaxRecords,
    open: () => inner.open(),
    close: () => inner.close(),
    async send(records, context) {
      const out = await inner.send(records, context);
      const now = Date.now();
      for (const r of records) samples.push(now - r.timestamp);
      return out;
    },
  };
}

const q = (sorted: number[], p: number) =>
  sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
const fmt = (xs: number[]) => {
  const s = Float64Array.from(xs).sort();
  const a = Array.from(s);
  return `p50 ${q(a, 0.5).toFixed(1)} / p99 ${q(a, 0.99).toFixed(1)} / max ${
    a.at(-1)?.toFixed(1)
  } ms`;
};

async function openMode(spec: string, samples: number[]) {
  const [mode, fsync] = spec.split("/") as [Mode, FsyncPolicy | undefined];
  const dir = await mkdtemp(join(tmpdir(), "mb-bench-modes-"));
  const buffer = await MessageBuffer.open({
    dir,
    mode,
    fsync: fsync ?? "interval",
    provider: timedProvider(samples),
    logger: silentLogger,
  });
  // Wait until the provider is connected (direct-until-error buffers until then).
  const deadline = Date.now() + 30_000;
  while (buffer.stats().provider.state !== "ready" && Date.now() < deadline) {
    await buffer.write(`bench-${run}-warmup`, "w").catch(() => {});
    await new Promise((r) => setTimeout(r, 20));
  }
  await buffer.drained(30_000);
  samples.length = 0;
  return { buffer, dir };
}

async function latencyRun(spec: string): Promise<string> {
  const topic = await newTopic(`lat-${spec}`);
  const toKafka: number[] = [];
  const { buffer, dir } = await openMode(spec, toKafka);
  const waits: number[] = [];
  const perTick = RATE / 100;
  const writes: Promise<void>[] = [];
  const t0 = Date.now();
  for (let tick = 0; tick < SECONDS * 100; tick++) {
    const due = t0 + tick * 10;
    const now = Date.now();
    if (due > now) await new Promise((r) => setTimeout(r, due - now));
    for (let i = 0; i < perTick; i++) {
      const start = performance.now();
      writes.push(
        buffer.write(topic, VALUE).then(() => {
          waits.push(performance.now() - start);
        }),
      );
    }
  }
  await Promise.all(writes);
  await buffer.drained(60_000);
  await buffer.close();
  await rm(dir, { recursive: true, force: true });
  const n = SECONDS * RATE;
  const got = await endOffset(topic);
  if (got < n) throw new Error(`${spec}: ${got} of ${n} records in Kafka`);
  return `${spec.padEnd(22)} writer waits ${fmt(waits)}; write to Kafka ack ${fmt(toKafka)}`;
}

async function throughputRun(spec: string): Promise<string> {
  const topic = await newTopic(`tput-${spec}`);
  const samples: number[] = [];
  const { buffer, dir } = await openMode(spec, samples);
  const t0 = performance.now();
  let pending = 0;
  let wake: () => void = () => {};
  for (let i = 0; i < N; i++) {
    while (pending >= INFLIGHT || buffer.full) {
      await new Promise<void>((r) => (wake = r));
    }
    pending++;
    buffer.write(topic, VALUE).then(() => {
      pending--;
      if (pending < INFLIGHT / 2) wake();
    });
  }
  while (pending > 0) await new Promise<void>((r) => (wake = r));
  const written = performance.now() - t0;
  await buffer.drained(600_000);
  const all = performance.now() - t0;
  const c = buffer.stats().counters;
  await buffer.close();
  await rm(dir, { recursive: true, force: true });
  const got = await endOffset(topic);
  if (got < N) throw new Error(`${spec}: ${got} of ${N} records in Kafka`);
  return `${spec.padEnd(22)} ${fmtRate(N / (all / 1000))} records/s to Kafka ` +
    `(writes resolved after ${(written / 1000).toFixed(2)} s, all acknowledged after ${
      (all / 1000).toFixed(2)
    } s; ${c.sentDirect} direct, ${c.written} through the disk)`;
}

const specs = values.modes.split(",");
console.log(`# bench_modes: ${machine()}`);
console.log(`# ${process.argv.slice(2).join(" ") || "(defaults)"}; brokers ${brokers.join(",")}`);
console.log(`# latency at ${RATE} records/s for ${SECONDS} s, 100-byte values:`);
for (const s of specs) console.log(await latencyRun(s));
console.log(`# throughput, ${N} records, ${INFLIGHT} writes pending at most:`);
for (const s of specs) console.log(await throughputRun(s));
await admin.disconnect();
