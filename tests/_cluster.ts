// Test helpers for the 3-broker cluster started by scripts/kafka_cluster.sh (scripts/test.sh
// starts it and sets MB_TEST_CLUSTER_BROKERS): topics with chosen replica placement, leader
// moves, broker stops, kills and starts, and where each partition's leader is.

import { execFile } from "node:child_process";
import process from "node:process";
import { Kafka, logLevel } from "kafkajs";
import { partitionForKey } from "../src/provider/kafka/murmur2.ts";

/** The cluster's brokers, or null when no cluster runs for the tests (they skip). */
export const CLUSTER_BROKERS: string[] | null = process.env.MB_TEST_CLUSTER_BROKERS
  ? process.env.MB_TEST_CLUSTER_BROKERS.split(",")
  : null;

/** Why the cluster tests skip, or false when they run. */
export const CLUSTER_SKIP: string | false = CLUSTER_BROKERS
  ? false
  : "no cluster: scripts/test.sh starts one (scripts/kafka_cluster.sh) and sets MB_TEST_CLUSTER_BROKERS";

function kafka(): Kafka {
  return new Kafka({
    brokers: CLUSTER_BROKERS!,
    clientId: "mb-cluster-test",
    logLevel: logLevel.NOTHING,
  });
}

function run(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(
      cmd,
      args,
      { env: process.env },
      (err, stdout, stderr) =>
        err
          ? reject(new Error(`${cmd} ${args.join(" ")} failed: ${stderr || err.message}`))
          : resolve(stdout),
    )
  );
}

/** Runs scripts/kafka_cluster.sh: stop, kill or start one broker (1 to 3). */
export function broker(command: "stop" | "kill" | "start", id: number): Promise<string> {
  return run("bash", ["scripts/kafka_cluster.sh", `${command}-broker`, String(id)]);
}

/**
 * Creates `topic` with one partition per entry of `replicas` (its replicas, the first its
 * leader), `min.insync.replicas` 2; waits for the leaders.
 */
export async function createPlacedTopic(topic: string, replicas: number[][]): Promise<void> {
  const admin = kafka().admin();
  await admin.connect();
  try {
    await admin.createTopics({
      waitForLeaders: true,
      topics: [{
        topic,
        replicaAssignment: replicas.map((r, partition) => ({ partition, replicas: r })),
        configEntries: [{ name: "min.insync.replicas", value: "2" }],
      }],
    });
  } finally {
    await admin.disconnect();
  }
}

/** Each partition's leader (-1 while it has none) and in-sync replicas. */
export async function leaders(topic: string): Promise<Array<{ leader: number; isr: number[] }>> {
  const admin = kafka().admin();
  await admin.connect();
  try {
    const m = await admin.fetchTopicMetadata({ topics: [topic] });
    return [...m.topics[0].partitions]
      .sort((a, b) => a.partitionId - b.partitionId)
      .map((p) => ({ leader: p.leader, isr: p.isr }));
  } finally {
    await admin.disconnect();
  }
}

/** Each partition's end offset. */
export async function endOffsets(topic: string): Promise<number[]> {
  const admin = kafka().admin();
  await admin.connect();
  try {
    const o = await admin.fetchTopicOffsets(topic);
    return o.sort((a, b) => a.partition - b.partition).map((p) => Number(p.high));
  } finally {
    await admin.disconnect();
  }
}

/**
 * Makes broker `to[p]` the leader of `topic`'s partition p, as an operator would (a
 * reassignment that puts it first, then a preferred-leader election), with Kafka's own Admin
 * client (tests/fixtures/LeaderMove.java, from the broker's jars).
 */
export async function moveLeaders(topic: string, to: Map<number, number>): Promise<void> {
  const libs = process.env.MB_TEST_KAFKA_LIBS;
  if (!libs) throw new Error("MB_TEST_KAFKA_LIBS is not set (scripts/test.sh sets it)");
  await run("java", [
    "-cp",
    `${libs}/*`,
    "tests/fixtures/LeaderMove.java",
    CLUSTER_BROKERS!.join(","),
    topic,
    ...[...to].map(([partition, broker]) => `${partition}:${broker}`),
  ]);
}

/** Waits until `cond` holds of the topic's leaders (polling its metadata). */
export async function waitLeaders(
  topic: string,
  cond: (l: Array<{ leader: number; isr: number[] }>) => boolean,
  what: string,
  ms = 60_000,
): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    const l = await leaders(topic).catch(() => null);
    if (l && cond(l)) return;
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}: ${JSON.stringify(l)}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** `n` keys that go to each partition of a topic of `partitions` (as the agent places them). */
export function keysFor(partitions: number, n: number): string[][] {
  const out: string[][] = Array.from({ length: partitions }, () => []);
  const enc = new TextEncoder();
  for (let i = 0; out.some((k) => k.length < n); i++) {
    const key = `key-${i}`;
    const p = partitionForKey(enc.encode(key), partitions);
    if (out[p].length < n) out[p].push(key);
  }
  return out;
}
