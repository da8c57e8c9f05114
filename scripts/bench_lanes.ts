// Delivery with lanes, in one run against the same broker: a backlog of --records 100-byte
// records spread evenly over 1, 4 or 16 topics (one partition each) is filled with the
// provider held back, then drained, with one lane and with one lane per topic (and 4 lanes
// for 16 topics). Each line gives records/s and the ratio to the single-lane drain of one
// topic, the first line. Every topic's end offset is checked.
//
//   scripts/kafka.sh start
//   npx deno run -A scripts/bench_lanes.ts [--records N] [--brokers HOST:PORT]
//       [--in-flight N] [--client platformatic|kafkajs]
//   npx bun scripts/bench_lanes.ts ...

import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { parseArgs } from "node:util";
import { Kafka, logLevel } from "kafkajs";
import { KafkaProvider, MessageBuffer, type Provider, silentLogger } from "../mod.ts";
import { fmtRate, machine } from "./_bench_util.ts";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    records: { type: "string", default: "500000" },
    brokers: { type: "string", default: "127.0.0.1:9092" },
    "in-flight": { type: "string", default: "4" },
    client: { type: "string", default: "platformatic" },
  },
  strict: true,
});
const N = Number(values.records);
const brokers = values.brokers.split(",");
const IN_FLIGHT = Number(values["in-flight"]);
const client = values.client as "platformatic" | "kafkajs";
const VALUE = "x".repeat(100);
const run = Date.now().toString(36);
const kafka = new Kafka({ brokers, logLevel: logLevel.NOTHING, clientId: "bench" });
const admin = kafka.admin();
await admin.connect();

async function drain(topicCount: number, lanes: number): Promise<number> {
  const topics = Array.from(
    { length: topicCount },
    (_, i) => `bench-${run}-t${topicCount}-l${lanes}-${i}`,
  );
  await admin.createTopics({
    topics: topics.map((topic) => ({ topic, numPartitions: 1 })),
    waitForLeaders: true,
  });
  const dir = await mkdtemp(join(tmpdir(), "mb-bench-lanes-"));
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const kp = new KafkaProvider({ brokers, client });
  const held: Provider = {
    name: "kafka",
    keepsIdentity: kp.keepsIdentity,
    releasesRecords: kp.releasesRecords,
    sendMaxRecords: kp.sendMaxRecords,
    open: () => kp.open(),
    send: async (records, context) => {
      await gate;
      return kp.send(records, context);
    },
    close: () => kp.close(),
  };
  const b = await MessageBuffer.open({
    dir,
    provider: held,
    logger: silentLogger,
    lanes,
    maxSendsInFlight: IN_FLIGHT,
    maxBufferBytes: 64 * 2 ** 30,
  });
  for (let i = 0; i < N; i++) {
    const p = b.write(topics[i % topicCount], VALUE, { key: `k${i % 10}` });
    if ((i & 4095) === 4095) await p;
  }
  await b.flush();
  const t0 = performance.now();
  release();
  await b.drained(3_600_000);
  const s = (performance.now() - t0) / 1000;
  await b.close();
  await rm(dir, { recursive: true, force: true });
  let got = 0;
  for (const topic of topics) {
    const [p] = await admin.fetchTopicOffsets(topic);
    got += Number(p.high);
  }
  if (got < N) {
    throw new Error(`${topicCount} topics, ${lanes} lanes: ${got} of ${N} records arrived`);
  }
  return N / s;
}

console.log(`# bench_lanes: ${machine()}`);
console.log(`# command: ${process.argv.join(" ")}`);
console.log(
  `# ${N} records of 100 bytes per run, keys k0..k9, one partition per topic, client ${client}, ` +
    `at most ${IN_FLIGHT} sends in flight across lanes`,
);
const cases: Array<[topics: number, lanes: number]> = [
  [1, 1],
  [4, 1],
  [4, 4],
  [16, 1],
  [16, 4],
  [16, 16],
];
let base = 0;
for (const [topics, lanes] of cases) {
  const rate = await drain(topics, lanes);
  if (base === 0) base = rate;
  console.log(
    `${String(topics).padStart(2)} topic(s), ${String(lanes).padStart(2)} lane(s): ${
      fmtRate(rate)
    } records/s  (${(rate / base).toFixed(2)}x the single lane with one topic)`,
  );
}
await admin.disconnect();
