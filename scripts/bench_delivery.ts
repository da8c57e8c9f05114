// Delivery benchmark, in one run against the same broker:
//   1. for each Kafka client (platformatic, kafkajs): messagebuffer draining a backlog of
//      100-byte records through KafkaProvider, then the same client producing the same
//      records alone, in sends of the same batch size, with the same producer settings
//      (idempotent, acks=all, the Java partitioner);
//   2. librdkafka through kcat (`apt-get install kcat`), when installed, with the same
//      records, acks=all and idempotence;
// then the ratios. Every run is checked against the topic's end offset.
//
//   scripts/kafka.sh start
//   npx deno run -A scripts/bench_delivery.ts [--records N] [--brokers HOST:PORT] [--batch N]
//       [--clients platformatic,kafkajs] [--compression none|gzip|snappy|lz4|zstd] [--no-kcat]
//       [--value-bytes N] [--rss]
//
// --rss samples the drain's resident memory every second and prints it at each tenth of the
// backlog delivered (with --records 5000000 --value-bytes 1000: a 5 GB backlog).
//   npx bun scripts/bench_delivery.ts ...

import { Buffer } from "node:buffer";
import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { parseArgs } from "node:util";
import { compatibilityPartitioner, Producer } from "@platformatic/kafka";
import { CompressionTypes, Kafka, logLevel, Partitioners } from "kafkajs";
import { KafkaProvider, MessageBuffer, type Provider, silentLogger } from "../mod.ts";
import { addKafkajsCodecs } from "../tests/_kafkajs_codecs.ts";
import { fmtRate, kcatProduceArgs, machine } from "./_bench_util.ts";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    records: { type: "string", default: "1000000" },
    brokers: { type: "string", default: "127.0.0.1:9092" },
    batch: { type: "string", default: "5000" },
    clients: { type: "string", default: "platformatic,kafkajs" },
    compression: { type: "string", default: "none" },
    "no-kcat": { type: "boolean", default: false },
    "value-bytes": { type: "string", default: "100" },
    rss: { type: "boolean", default: false },
  },
  strict: true,
});
const N = Number(values.records);
const BATCH = Number(values.batch);
const brokers = values.brokers.split(",");
const clients = values.clients.split(",") as Array<"platformatic" | "kafkajs">;
const compression = values.compression as "none" | "gzip" | "snappy" | "lz4" | "zstd";
const VALUE = "x".repeat(Number(values["value-bytes"]));
// The clients alone send whole batches as one request: keep those under the broker's 1 MB
// message limit (the provider splits its batches into requests itself).
const ALONE_BATCH = Math.min(BATCH, Math.floor(900_000 / (VALUE.length + 30)));
const run = Date.now().toString(36);
addKafkajsCodecs();
const kafka = new Kafka({ brokers, logLevel: logLevel.NOTHING, clientId: "bench" });
const admin = kafka.admin();
await admin.connect();

async function newTopic(name: string): Promise<string> {
  const topic = `bench-${run}-${name}`;
  await admin.createTopics({ topics: [{ topic, numPartitions: 1 }], waitForLeaders: true });
  return topic;
}

async function endOffset(topic: string): Promise<number> {
  const [p] = await admin.fetchTopicOffsets(topic);
  return Number(p.high);
}

interface Result {
  what: string;
  rate: number;
  cpuUs: number | null;
}
const results: Result[] = [];

function report(what: string, seconds: number, cpu: NodeJS.CpuUsage | null): number {
  const rate = N / seconds;
  const cpuUs = cpu ? (cpu.user + cpu.system) / N : null;
  results.push({ what, rate, cpuUs });
  console.log(
    `${what}: ${fmtRate(rate)} records/s  (${seconds.toFixed(2)} s${
      cpuUs === null ? "" : `, client CPU ${cpuUs.toFixed(2)} µs/record`
    })`,
  );
  return rate;
}

async function check(topic: string): Promise<void> {
  const n = await endOffset(topic);
  if (n < N) throw new Error(`${topic}: ${n} of ${N} records arrived`);
}

console.log(`# messagebuffer delivery benchmark`);
console.log(`# ${machine()}`);
console.log(`# command: ${process.argv.join(" ")}`);
console.log(
  `# ${N} records of ${VALUE.length} bytes, keys k0..k9, one topic with one partition, local single-node ` +
    `broker on the same cores, acks=all, idempotent, compression ${compression}, batch ${BATCH}`,
);

/** messagebuffer: fill the backlog with the provider held back, then time the drain. */
async function drain(client: "platformatic" | "kafkajs"): Promise<number> {
  const topic = await newTopic(`drain-${client}`);
  const dir = await mkdtemp(join(tmpdir(), "mb-bench-"));
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const kp = new KafkaProvider({ brokers, client, compression });
  let inSend = 0;
  const held: Provider = {
    name: "kafka",
    keepsIdentity: kp.keepsIdentity,
    releasesRecords: kp.releasesRecords,
    sendMaxRecords: kp.sendMaxRecords,
    open: () => kp.open(),
    send: async (records, context) => {
      await gate;
      const t = performance.now();
      try {
        return await kp.send(records, context);
      } finally {
        inSend += performance.now() - t;
      }
    },
    close: () => kp.close(),
  };
  const b = await MessageBuffer.open({
    dir,
    provider: held,
    logger: silentLogger,
    batchMaxRecords: BATCH,
    maxBufferBytes: 64 * 2 ** 30,
  });
  for (let i = 0; i < N; i++) {
    const p = b.write(topic, VALUE, { key: `k${i % 10}` });
    if ((i & 4095) === 4095) await p;
  }
  await b.flush();
  const mib = () => (process.memoryUsage().rss / 2 ** 20).toFixed(0);
  if (values.rss) {
    const { bytes } = b.stats().backlog;
    console.log(
      `  backlog ${(bytes / 1e9).toFixed(2)} GB on disk; RSS ${mib()} MiB before the drain`,
    );
  }
  let peak = 0;
  let tenth = 1;
  const sampler = values.rss
    ? setInterval(() => {
      peak = Math.max(peak, process.memoryUsage().rss);
      const done = N - b.stats().backlog.records;
      if (done >= (tenth * N) / 10) {
        console.log(`  ${Math.floor((done * 100) / N)}% delivered: RSS ${mib()} MiB`);
        while (done >= (tenth * N) / 10) tenth++;
      }
    }, 1000)
    : undefined;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  release();
  await b.drained(3_600_000);
  const s = (performance.now() - t0) / 1000;
  clearInterval(sampler);
  if (values.rss) console.log(`  peak RSS during the drain ${(peak / 2 ** 20).toFixed(0)} MiB`);
  const cpu = process.cpuUsage(cpu0);
  await b.close();
  await rm(dir, { recursive: true, force: true });
  await check(topic);
  const rate = report(`messagebuffer drain, ${client}`, s, cpu);
  console.log(`  (${(inSend / 10 / s).toFixed(0)}% of the drain's time inside Provider.send)`);
  return rate;
}

/** The client library alone: sends of BATCH records, one after another. */
async function alone(
  client: "platformatic" | "kafkajs",
  records = N,
  quiet = false,
): Promise<number> {
  const topic = await newTopic(`alone-${client}${quiet ? "-warmup" : ""}`);
  const value = Buffer.from(VALUE);
  const keys = Array.from({ length: 10 }, (_, i) => Buffer.from(`k${i}`));
  let send: (from: number, to: number) => Promise<unknown>;
  let close: () => Promise<void>;
  if (client === "platformatic") {
    const p = new Producer({
      clientId: "bench",
      bootstrapBrokers: brokers,
      idempotent: true,
      acks: -1,
      compression,
      partitioner: compatibilityPartitioner,
      retries: 3,
    });
    await p.metadata({ topics: [topic] });
    send = (from, to) => {
      const messages = [];
      for (let j = from; j < to; j++) {
        messages.push({ topic, key: keys[j % 10], value, timestamp: BigInt(Date.now()) });
      }
      return p.send({ messages });
    };
    close = () => p.close(true);
  } else {
    const producer = kafka.producer({
      idempotent: true,
      maxInFlightRequests: 1,
      createPartitioner: Partitioners.DefaultPartitioner,
    });
    await producer.connect();
    const types = {
      none: CompressionTypes.None,
      gzip: CompressionTypes.GZIP,
      snappy: CompressionTypes.Snappy,
      lz4: CompressionTypes.LZ4,
      zstd: CompressionTypes.ZSTD,
    };
    send = (from, to) => {
      const messages = [];
      for (let j = from; j < to; j++) messages.push({ key: keys[j % 10], value });
      return producer.sendBatch({
        acks: -1,
        compression: types[compression],
        topicMessages: [{ topic, messages }],
      });
    };
    close = () => producer.disconnect();
  }
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = 0; i < records; i += ALONE_BATCH) {
    await send(i, Math.min(records, i + ALONE_BATCH));
  }
  const s = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  await close();
  if (quiet) return records / s;
  await check(topic);
  return report(`${client} alone, sends of ${ALONE_BATCH}`, s, cpu);
}

/** librdkafka via kcat, the C reference. */
async function kcat(): Promise<number | null> {
  const found = await new Promise<boolean>((r) => execFile("kcat", ["-V"], (e) => r(e === null)));
  if (!found) {
    console.log("kcat: not installed (apt-get install kcat); skipped");
    return null;
  }
  const topic = await newTopic("kcat");
  const dir = await mkdtemp(join(tmpdir(), "mb-bench-kcat-"));
  const file = join(dir, "records.txt");
  const lines: string[] = [];
  for (let i = 0; i < N; i++) lines.push(`k${i % 10}\t${VALUE}`);
  await writeFile(file, lines.join("\n") + "\n");
  const t0 = performance.now();
  await new Promise<void>((resolve, reject) =>
    execFile(
      "kcat",
      kcatProduceArgs(brokers.join(","), topic, file, ["-z", compression]),
      { maxBuffer: 1 << 26 },
      (e, _out, err) => (e ? reject(new Error(`kcat failed: ${err || e.message}`)) : resolve()),
    )
  );
  const s = (performance.now() - t0) / 1000;
  await rm(dir, { recursive: true, force: true });
  await check(topic);
  return report("librdkafka (kcat -P, linger.ms=5)", s, null);
}

const drains: Record<string, number> = {};
const alones: Record<string, number> = {};
// Warm up the broker and the runtime, so that no measured run pays for it.
for (const c of clients) await alone(c, Math.min(N, 200_000), true);
for (const c of clients) {
  drains[c] = await drain(c);
  alones[c] = await alone(c);
}
const rd = values["no-kcat"] ? null : await kcat();
await admin.disconnect();
console.log("ratios:");
for (const c of clients) {
  console.log(
    `  ${c}: drain / alone ${(drains[c] / alones[c]).toFixed(2)}` +
      (rd
        ? `, drain / kcat ${(drains[c] / rd).toFixed(2)}, alone / kcat ${
          (alones[c] / rd).toFixed(2)
        }`
        : ""),
  );
}
