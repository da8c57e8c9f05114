// Test helpers that talk to the real broker started by scripts/kafka.sh (MB_TEST_BROKERS):
// topic creation and a consumer that reads records back.

import { Buffer } from "node:buffer";
import { execFile } from "node:child_process";
import process from "node:process";
import {
  AclOperationTypes,
  AclPermissionTypes,
  AclResourceTypes,
  ConfigResourceTypes,
  Kafka,
  logLevel,
  ResourcePatternTypes,
} from "kafkajs";
import { KafkaProvider, type KafkaProviderOptions } from "../mod.ts";
import { addKafkajsCodecs } from "./_kafkajs_codecs.ts";

/** The broker under test; scripts/test.sh sets it after starting the broker. */
export const BROKERS = (process.env.MB_TEST_BROKERS ?? "127.0.0.1:9092").split(",");

addKafkajsCodecs();
const kafka = new Kafka({ brokers: BROKERS, clientId: "mb-test", logLevel: logLevel.NOTHING });

/**
 * The Kafka client library the provider tests run with: scripts/test.sh runs them once per
 * client (MB_TEST_KAFKA_CLIENT), so that both pass the same suite.
 */
export const KAFKA_CLIENT: "platformatic" | "kafkajs" =
  process.env.MB_TEST_KAFKA_CLIENT === "kafkajs" ? "kafkajs" : "platformatic";

/** A provider for the test broker, on the client under test. */
export function kafkaProvider(options: Partial<KafkaProviderOptions> = {}): KafkaProvider {
  return new KafkaProvider({ brokers: BROKERS, client: KAFKA_CLIENT, ...options });
}

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

/** Sets topic configs (e.g. raises `max.message.bytes`, as an operator fixing a cause would). */
export async function alterTopic(topic: string, configs: Record<string, string>): Promise<void> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    await admin.alterConfigs({
      validateOnly: false,
      resources: [{
        type: ConfigResourceTypes.TOPIC,
        name: topic,
        configEntries: Object.entries(configs).map(([name, value]) => ({ name, value })),
      }],
    });
  } finally {
    await admin.disconnect();
  }
}

/** Denies `principal` (e.g. `User:alice`) writes to `topic` with an ACL. */
export async function denyWrites(topic: string, principal: string): Promise<void> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    await admin.createAcls({
      acl: [{
        resourceType: AclResourceTypes.TOPIC,
        resourceName: topic,
        resourcePatternType: ResourcePatternTypes.LITERAL,
        principal,
        host: "*",
        operation: AclOperationTypes.WRITE,
        permissionType: AclPermissionTypes.DENY,
      }],
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
 * `settleMs` (so that duplicates would be seen), or `timeoutMs` passed; from the test
 * broker, or from `brokers`.
 */
export async function consume(
  topics: string[],
  expected: number,
  { timeoutMs = 60_000, settleMs = 1500, brokers = undefined as string[] | undefined } = {},
): Promise<Consumed[]> {
  const from = brokers
    ? new Kafka({ brokers, clientId: "mb-test", logLevel: logLevel.NOTHING })
    : kafka;
  const consumer = from.consumer({ groupId: uniqueTopic("mb-test-group"), maxWaitTimeInMs: 200 });
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

/** A record as Kafka's Java client reads it (tests/fixtures/JavaConsumer.java). */
export interface JavaConsumed {
  partition: number;
  offset: number;
  timestamp: number;
  key: Buffer | null;
  value: Buffer;
  headers: Array<[string, Buffer]>;
}

/**
 * Reads `topic` from the beginning with Apache Kafka's own Java consumer (kafka-clients, from
 * the broker's jars in MB_TEST_KAFKA_LIBS), an implementation independent of both clients
 * messagebuffer produces with. Null when the jars are not known (a broker not started by
 * scripts/test.sh).
 */
export function consumeWithJava(
  topic: string,
  expected: number,
  timeoutMs = 60_000,
  brokers: string[] = BROKERS,
): Promise<JavaConsumed[] | null> {
  const libs = process.env.MB_TEST_KAFKA_LIBS;
  if (!libs) return Promise.resolve(null);
  return new Promise((resolve, reject) => {
    execFile(
      "java",
      [
        "-cp",
        `${libs}/*`,
        "tests/fixtures/JavaConsumer.java",
        brokers.join(","),
        topic,
        String(expected),
        String(timeoutMs),
      ],
      { maxBuffer: 1 << 30 },
      (err, stdout, stderr) => {
        if (err) return reject(new Error(`JavaConsumer failed: ${stderr || err.message}`));
        resolve(
          stdout.trim().split("\n").filter((l) => l).map((l) => {
            const o = JSON.parse(l);
            return {
              partition: o.partition,
              offset: o.offset,
              timestamp: o.timestamp,
              key: o.key === null ? null : Buffer.from(o.key, "base64"),
              value: Buffer.from(o.value, "base64"),
              headers: o.headers.map(([k, v]: [string, string]) => [
                Buffer.from(k, "base64").toString(),
                Buffer.from(v, "base64"),
              ]),
            };
          }),
        );
      },
    );
  });
}
