// Delivery benchmark: drain a backlog of 100-byte records from the buffer to the local
// Kafka broker, and, in the same run, send the same records with a plain kafkajs producer
// in large batches, so the buffer's overhead shows as a ratio.
//
//   scripts/kafka.sh start
//   npx deno run -A scripts/bench_delivery.ts [--records N] [--brokers HOST:PORT] [--batch N]
//   npx bun scripts/bench_delivery.ts ...

import { Buffer } from "node:buffer";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { parseArgs } from "node:util";
import { CompressionTypes, Kafka, logLevel, Partitioners } from "kafkajs";
import { KafkaProvider, MessageBuffer, type Provider, silentLogger } from "../mod.ts";
import { fmtRate, machine } from "./_bench_util.ts";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    records: { type: "string", default: "1000000" },
    brokers: { type: "string", default: "127.0.0.1:9092" },
    batch: { type: "string", default: "1000" },
  },
  strict: true,
});
const N = Number(values.records);
const BATCH = Number(values.batch);
const brokers = values.brokers.split(",");
const VALUE = "x".repeat(100);
const topic = `bench-${Date.now().toString(36)}`;
const kafka = new Kafka({ brokers, logLevel: logLevel.NOTHING, clientId: "bench" });

const admin = kafka.admin();
await admin.connect();
await admin.createTopics({
  topics: [{ topic, numPartitions: 1 }, { topic: topic + "-plain", numPartitions: 1 }],
  waitForLeaders: true,
});
await admin.disconnect();

console.log(`# messagebuffer delivery benchmark`);
console.log(`# ${machine()}`);
console.log(`# command: ${process.argv.join(" ")}`);
console.log(
  `# ${N} records of 100 bytes, keys k0..k9, one topic with one partition, local single-node broker, acks=all`,
);

// 1. The buffer: fill the backlog with the provider held back, then let it drain.
const dir = await mkdtemp(join(tmpdir(), "mb-bench-"));
let release!: () => void;
const gate = new Promise<void>((r) => (release = r));
const kp = new KafkaProvider({ brokers });
const held: Provider = {
  name: "kafka",
  open: () => kp.open(),
  send: async (records) => {
    await gate;
    return kp.send(records);
  },
  close: () => kp.close(),
};
const b = await MessageBuffer.open({
  dir,
  provider: held,
  logger: silentLogger,
  batchMaxRecords: BATCH,
  maxBufferBytes: 16 * 2 ** 30,
});
for (let i = 0; i < N; i++) {
  const p = b.write(topic, VALUE, { key: `k${i % 10}` });
  if ((i & 4095) === 4095) await p;
}
await b.flush();
const cpu0 = process.cpuUsage();
const t0 = performance.now();
release();
await b.drained(3_600_000);
const s1 = (performance.now() - t0) / 1000;
const cpu1 = process.cpuUsage(cpu0);
await b.close();
await rm(dir, { recursive: true, force: true });
const ours = N / s1;
console.log(
  `messagebuffer drain (batchMaxRecords ${BATCH}): ${fmtRate(ours)} records/s  (${
    s1.toFixed(1)
  } s, ` +
    `CPU per record ${((cpu1.user + cpu1.system) / N).toFixed(1)} µs)`,
);

// 2. Plain kafkajs: the same records, sendBatch of 8,000 (10,000 would exceed the broker's 1 MB batch limit), same producer settings.
const producer = kafka.producer({
  idempotent: true,
  maxInFlightRequests: 1,
  createPartitioner: Partitioners.DefaultPartitioner,
});
await producer.connect();
const value = Buffer.from(VALUE);
const cpu2 = process.cpuUsage();
const t2 = performance.now();
for (let i = 0; i < N; i += 8_000) {
  const messages = [];
  for (let j = i; j < Math.min(N, i + 8_000); j++) messages.push({ key: `k${j % 10}`, value });
  await producer.sendBatch({
    acks: -1,
    compression: CompressionTypes.None,
    topicMessages: [{ topic: topic + "-plain", messages }],
  });
}
const s2 = (performance.now() - t2) / 1000;
const cpu3 = process.cpuUsage(cpu2);
await producer.disconnect();
const plain = N / s2;
console.log(
  `plain kafkajs sendBatch of 8,000 (10,000 would exceed the broker's 1 MB batch limit): ${
    fmtRate(plain)
  } records/s  (${s2.toFixed(1)} s, CPU per record ${
    ((cpu3.user + cpu3.system) / N).toFixed(1)
  } µs)`,
);
console.log(`ratio messagebuffer / plain kafkajs: ${(ours / plain).toFixed(2)}`);
