// Test helpers that talk to the real broker started by scripts/kafka.sh (MB_TEST_BROKERS):
// topic creation and a consumer that reads records back.

import { execFile } from "node:child_process";
import process from "node:process";
import { Kafka, logLevel } from "kafkajs";
import { registerCodecs, stopIdlePolling } from "../src/provider/kafka/kafkajs.ts";

/** The broker under test; scripts/test.sh sets it after starting the broker. */
export const BROKERS = (process.env.MB_TEST_BROKERS ?? "127.0.0.1:9092").split(",");

// The same fix for kafkajs's idle request-queue timer as the provider's (no 1 ms polling, no
// TimeoutNegativeWarning in the test output).
stopIdlePolling();
registerCodecs();
const kafka = new Kafka({ brokers: BROKERS, clientId: "mb-test", logLevel: logLevel.NOTHING });

/** A topic name no other test uses. */
export function uniqueTopic(prefix: string): string {
  return `${prefix}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
}

/** Creates topics (and waits for their leaders). */
export async function createTopics(
  topics: string[],
  partitions = 1,
  configs: Record<string, string> = {},
): Promise<void> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    await admin.createTopics({
      waitForLeaders: true,
      topics: topics.map((topic) => ({
        topic,
        numPartitions: partitions,
        replicationFactor: 1,
        configEntries: Object.entries(configs).map(([name, value]) => ({ name, value })),
      })),
    });
  } finally {
    await admin.disconnect();
  }
}

/** A record as a consumer reads it. */
export interface Consumed {
  topic: string;
  partition: number;
  offset: number;
  key: Buffer | null;
  value: Buffer | null;
  headers: Record<string, Buffer | Buffer[] | undefined>;
  timestamp: number;
}

/**
 * Reads `topics` from the beginning until `expected` records arrived and no more came for
 * `settleMs` (so that duplicates would be seen), or `timeoutMs` passed.
 */
export async function consume(
  topics: string[],
  expected: number,
  { timeoutMs = 60_000, settleMs = 1500 } = {},
): Promise<Consumed[]> {
  const consumer = kafka.consumer({ groupId: uniqueTopic("mb-test-group"), maxWaitTimeInMs: 200 });
  const out: Consumed[] = [];
  await consumer.connect();
  try {
    await consumer.subscribe({ topics, fromBeginning: true });
    let last = Date.now();
    await consumer.run({
      eachBatch: ({ batch }) => {
        for (const m of batch.messages) {
          out.push({
            topic: batch.topic,
            partition: batch.partition,
            offset: Number(m.offset),
            key: m.key,
            value: m.value,
            headers: (m.headers ?? {}) as Consumed["headers"],
            timestamp: Number(m.timestamp),
          });
        }
        last = Date.now();
        return Promise.resolve();
      },
    });
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (out.length >= expected && Date.now() - last >= settleMs) break;
      await new Promise((r) => setTimeout(r, 50));
    }
  } finally {
    await consumer.disconnect();
  }
  return out;
}

/** Runs scripts/kafka.sh with a command (stop/start) against the test broker. */
export function kafkaScript(command: "start" | "stop" | "status"): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile("bash", ["scripts/kafka.sh", command], { env: process.env }, (err, stdout, stderr) => {
      if (err) reject(new Error(`kafka.sh ${command} failed: ${stderr}`));
      else resolve(stdout + stderr);
    });
  });
}
