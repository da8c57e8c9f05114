// A measurement for a possible future provider, not part of messagebuffer: the produce
// rate of @platformatic/kafka under the same conditions as scripts/bench_delivery.ts
// (100-byte values, keys k0..k9, one partition, idempotent producer, acks=all, one request
// in flight). It is not a dependency, so install it outside the project first:
//
//   mkdir -p /tmp/pk && cd /tmp/pk && npm init -y && npm install @platformatic/kafka@1.34.0
//   cp /path/to/messagebuffer/scripts/bench_platformatic.mjs /tmp/pk/ && cd /tmp/pk
//   node bench_platformatic.mjs 300000 1000
//   bun bench_platformatic.mjs 300000 1000
//   deno run -A bench_platformatic.mjs 300000 1000
//
// Arguments: records, records per send. Broker: 127.0.0.1:9092 (scripts/kafka.sh start).

import process from "node:process";
import { Buffer } from "node:buffer";
import { Producer } from "@platformatic/kafka";

const N = Number(process.argv[2] ?? 300000);
const B = Number(process.argv[3] ?? 1000);
const topic = "pk-bench-" + Date.now().toString(36);
const producer = new Producer({ clientId: "pk", bootstrapBrokers: ["127.0.0.1:9092"], idempotent: true, autocreateTopics: true });
const value = Buffer.from("x".repeat(100));
const keys = Array.from({ length: 10 }, (_, i) => Buffer.from("k" + i));
await producer.send({ messages: [{ topic, key: keys[0], value }] }); // creates the topic
const cpu0 = process.cpuUsage();
const t0 = performance.now();
for (let i = 0; i < N; i += B) {
  const messages = [];
  for (let j = i; j < Math.min(N, i + B); j++) {
    messages.push({ topic, key: keys[j % 10], value, timestamp: BigInt(Date.now()) });
  }
  await producer.send({ messages });
}
const s = (performance.now() - t0) / 1000;
const cpu = process.cpuUsage(cpu0);
const runtime = globalThis.Deno ? "deno" : globalThis.Bun ? "bun" : "node";
console.log(
  `${runtime} @platformatic/kafka, ${B} records per send: ${(N / s / 1000).toFixed(1)}K records/s, ` +
    `CPU ${((cpu.user + cpu.system) / N).toFixed(1)} µs/record (topic ${topic})`,
);
await producer.close();
