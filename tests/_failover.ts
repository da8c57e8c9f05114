// The cluster failover run, shared by tests/cluster/failover_test.ts (once per client, in
// CI) and scripts/cluster_loop.ts (many times, for the figures in docs): the real agent
// (from source, or the executable in MB_AGENT_BIN) delivers to the 3-broker cluster of
// scripts/kafka_cluster.sh while socket clients feed it acknowledged records, keyed so that
// every send spans several leaders, and the cluster goes through, in order:
//
//   1. a crash: the leader of partition 0 is SIGKILLed, fenced, and started again;
//   2. a controlled shutdown of the leader of partition 1, and its restart;
//   3. a leader election during delivery: every partition's leader moves to another broker;
//   4. two brokers down at once (one killed, one stopped), below min.insync.replicas: the
//      agent waits and dead-letters nothing; both return;
//   5. all three brokers down (a full outage); all return.
//
// Then the clients stop, the agent drains and stops, and an independent consumer checks
// every acknowledged record (tests/_feed.ts). After 4 and 5 it times how long after the
// last broker's return the agent's delivered count moves again.

import { readdir } from "node:fs/promises";
import { type Agent, freePort, scrapeMetrics, startAgent } from "./_agent.ts";
import {
  broker,
  CLUSTER_BROKERS,
  createPlacedTopic,
  leaders,
  moveLeaders,
  waitLeaders,
} from "./_cluster.ts";
import { Feed, type FeedCheck } from "./_feed.ts";
import { prng, tempDir } from "./_helpers.ts";

/** Options of {@link runFailover}. */
export interface FailoverOptions {
  client: "platformatic" | "kafkajs";
  seed: number;
  /** Records per second per client. @default 400 */
  rate?: number;
  /** Progress lines go here. @default none */
  say?: (line: string) => void;
}

/** What a run found. */
export interface FailoverResult {
  check: FeedCheck;
  acked: number;
  /** What the agent counted. */
  metrics: Record<string, number>;
  /** Files in the agent's dead/ and quarantine/ (must be none). */
  deadLettered: number;
  /** ms from the last broker's return to the next delivered record, below min.insync and after a full outage. */
  resumeMs: { belowMinIsr: number; fullOutage: number };
  seconds: number;
  /** The agent's log, for a failure's report. */
  log: string;
}

const CLIENTS = 3;
const KEYS_PER_CLIENT = 8;
const PARTITIONS = 6;
const BATCH = 500;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** See the module doc. */
export async function runFailover(o: FailoverOptions): Promise<FailoverResult> {
  const say = o.say ?? (() => {});
  const started = Date.now();
  const rand = prng(o.seed);
  const topic = `failover-${o.client}-${o.seed}-${Date.now().toString(36)}`;
  // Replicas spread so that each broker leads two partitions.
  await createPlacedTopic(
    topic,
    Array.from({ length: PARTITIONS }, (_, p) => [0, 1, 2].map((i) => ((p + i) % 3) + 1)),
  );
  const feed = new Feed({ topic, rand, rate: o.rate ?? 400, keysPerClient: KEYS_PER_CLIENT });
  const t = await tempDir();
  const port = await freePort();
  const metricsAt = `127.0.0.1:${port}`;
  let agent: Agent | null = null;
  try {
    agent = await startAgent(
      [
        "--brokers",
        CLUSTER_BROKERS!.join(","),
        "--buffer-dir",
        t.dir,
        "--kafka-client",
        o.client,
        "--batch-max-records",
        String(BATCH),
        "--metrics",
        metricsAt,
        "--log-level",
        "debug",
      ],
      {},
    );
    const metrics = () => scrapeMetrics(metricsAt);
    const stop = { now: false };
    const clients = Array.from(
      { length: CLIENTS },
      (_, c) => feed.client(c, `${t.dir}/messagebuffer.sock`, 0, Infinity, stop),
    );
    const allInSync = () =>
      waitLeaders(topic, (l) => l.every((p) => p.isr.length === 3 && p.leader > 0), "all in sync");
    /** Waits until the agent's delivered count moves; the ms since `since`. */
    const resumed = async (since: number): Promise<number> => {
      const before = (await metrics()).messagebuffer_records_delivered_total;
      const deadline = Date.now() + 120_000;
      while ((await metrics()).messagebuffer_records_delivered_total === before) {
        if (Date.now() > deadline) throw new Error("delivery did not resume within 120 s");
        await sleep(20);
      }
      return Date.now() - since;
    };

    await sleep(3000);
    let l = await leaders(topic);
    const crashed = l[0].leader;
    say(`crash: SIGKILL broker ${crashed} (leader of partition 0)`);
    await broker("kill", crashed);
    await sleep(4000);
    await broker("start", crashed);
    await allInSync();

    l = await leaders(topic);
    const stopped = l[1].leader;
    say(`controlled shutdown of broker ${stopped} (leader of partition 1)`);
    await broker("stop", stopped);
    await sleep(2000);
    await broker("start", stopped);
    await allInSync();

    l = await leaders(topic);
    say("leader election: every partition's leader moves to the next broker");
    await moveLeaders(topic, new Map(l.map((p, i) => [i, (p.leader % 3) + 1])));
    await sleep(2000);

    const a = 1 + Math.floor(rand() * 3);
    const b = (a % 3) + 1;
    say(`below min.insync.replicas: broker ${a} killed, broker ${b} stopped`);
    await Promise.all([broker("kill", a), broker("stop", b)]);
    await sleep(5000);
    await Promise.all([broker("start", a), broker("start", b)]);
    const belowMinIsr = await resumed(Date.now());
    say(`delivery resumed ${belowMinIsr} ms after the last broker returned`);
    await allInSync();

    say("full outage: all three brokers killed");
    await Promise.all([1, 2, 3].map((n) => broker("kill", n)));
    await sleep(5000);
    await Promise.all([1, 2, 3].map((n) => broker("start", n)));
    const fullOutage = await resumed(Date.now());
    say(`delivery resumed ${fullOutage} ms after the last broker returned`);
    await allInSync();
    await sleep(2000);

    stop.now = true;
    await Promise.all(clients);
    say(`clients stopped with ${feed.acked.size} acknowledged; draining`);
    const deadline = Date.now() + 300_000;
    let m = await metrics();
    while (m.messagebuffer_backlog_records > 0) {
      if (Date.now() > deadline) throw new Error(`not drained: ${JSON.stringify(m)}`);
      await sleep(100);
      m = await metrics();
    }
    await agent.stop();
    const check = await feed.check(CLUSTER_BROKERS!);
    const files = async (d: string) => (await readdir(`${t.dir}/${d}`).catch(() => [])).length;
    return {
      check,
      acked: feed.acked.size,
      metrics: m,
      deadLettered: (await files("dead")) + (await files("quarantine")),
      resumeMs: { belowMinIsr, fullOutage },
      seconds: (Date.now() - started) / 1000,
      log: agent.log(),
    };
  } finally {
    await agent?.stop("SIGKILL");
    // Whatever happened, leave every broker running for what comes next.
    for (const n of [1, 2, 3]) await broker("start", n).catch(() => {});
    await t.cleanup();
  }
}

/**
 * The verdict on a run: what is wrong, or an empty list. Duplicates are bounded by what the
 * agent counted as sent again (every copy comes from a re-sent batch), and come in runs of
 * at most a batch.
 */
export function failoverProblems(r: FailoverResult): string[] {
  const c = r.check;
  const out: string[] = [];
  if (c.missing > 0) out.push(`${c.missing} acknowledged records lost`);
  if (c.corrupt > 0) out.push(`${c.corrupt} corrupt`);
  if (c.reordered > 0) out.push(`${c.reordered} reordered`);
  if (c.ghosts > 0) out.push(`${c.ghosts} answered with an error yet delivered`);
  if (c.consumed < c.total) out.push(`read ${c.consumed} of ${c.total}`);
  if (r.deadLettered > 0) out.push(`${r.deadLettered} files in dead/ or quarantine/`);
  const resent = r.metrics.messagebuffer_records_resent_total ?? 0;
  if (c.duplicates > resent) {
    out.push(`${c.duplicates} duplicates, more than the ${resent} re-sent`);
  }
  if (c.longestDupRun > BATCH) out.push(`a run of ${c.longestDupRun} duplicates, over a batch`);
  return out;
}

/** One line of figures for a run. */
export function failoverSummary(r: FailoverResult): string {
  const c = r.check;
  const m = r.metrics;
  return `acked ${r.acked}, lost ${c.missing}, corrupt ${c.corrupt}, reordered ${c.reordered}, ` +
    `duplicated ${c.duplicates} (re-sent ${m.messagebuffer_records_resent_total ?? 0}, ` +
    `longest run ${c.longestDupRun}), dead-lettered ${r.deadLettered}, ` +
    `send retries ${m.messagebuffer_send_retries_total ?? 0}, ` +
    `retries in send ${m.messagebuffer_provider_retries_in_send_total ?? 0}, ` +
    `leader moves ${m.messagebuffer_provider_leader_moves_total ?? 0}, ` +
    `unacknowledged partitions ${m.messagebuffer_provider_unacknowledged_partitions_total ?? 0}, ` +
    `resumed ${r.resumeMs.belowMinIsr} ms after min.insync returned, ` +
    `${r.resumeMs.fullOutage} ms after a full outage, ${r.seconds.toFixed(0)} s`;
}
