// The crash loop: the real agent (from source, or the executable named by --exe or
// MB_AGENT_BIN) fed by several socket clients in ack mode with adversarial records, killed
// with SIGKILL at random moments, many times; between kills the broker is sometimes stopped
// and started (scripts/kafka.sh) and, once in a while, a small cap prunes during an outage.
// Some lives end by the agent's own SIGKILL right after Kafka acknowledged a send, before the
// checkpoint moves (MB_FAILPOINT=kill-after-send:N, src/agent/failpoint.ts): the batch is in
// Kafka and the next life sends it again. Segments roll every second or megabyte. At the end
// the agent drains, and an independent client (kafkajs's consumer) reads the topic and
// checks: every acknowledged record is in Kafka byte for byte (key, value, headers), in order
// per key; no record twice with the default client (exactly once: each batch sent again goes
// under the identity it was first sent under), and with kafkajs (at least once) no more
// than the batch in flight at each kill; nothing was quarantined; only what the agent counted
// as dropped is missing. One summary line; exit 1 on any violation.
//
//   deno run -A scripts/crash_loop.ts [--kills 20] [--seed N] [--exe PATH] [--rate 1500]
//     [--outage-every 8] [--prune-every 10] [--append-kill-every 4] [--fsync interval]
//     [--kafka-client platformatic|kafkajs] [--keep]
//
// Needs a broker started by scripts/kafka.sh (MB_TEST_BROKERS, KAFKA_PORT as scripts/test.sh
// sets them); it stops and starts that broker.

import { type ChildProcess, execFile, spawn } from "node:child_process";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { parseArgs } from "node:util";
import { Kafka, logLevel } from "kafkajs";
import { machine } from "./_bench_util.ts";
import { freePort, scrapeMetrics } from "../tests/_agent.ts";
import { Feed } from "../tests/_feed.ts";
import { prng } from "../tests/_helpers.ts";

const { values: args } = parseArgs({
  options: {
    kills: { type: "string", default: "20" },
    seed: { type: "string" },
    exe: { type: "string" },
    rate: { type: "string", default: "1500" },
    "outage-every": { type: "string", default: "8" },
    "prune-every": { type: "string", default: "10" },
    fsync: { type: "string", default: "interval" },
    "batch-max-records": { type: "string", default: "500" },
    "append-kill-every": { type: "string", default: "4" },
    "kafka-client": { type: "string", default: "platformatic" },
    keep: { type: "boolean", default: false },
    quiet: { type: "boolean", default: false },
  },
});

const KILLS = Number(args.kills);
const SEED = Number(args.seed ?? Math.floor(Math.random() * 2 ** 31));
/** Records per second each client offers (paced, so that a long run stays checkable). */
const RATE = Number(args.rate);
const OUTAGE_EVERY = Number(args["outage-every"]);
const PRUNE_EVERY = Number(args["prune-every"]);
const BATCH = Number(args["batch-max-records"]);
/** Every how many lives one ends by the agent's own SIGKILL after an acknowledged send. */
const APPEND_KILL_EVERY = Number(args["append-kill-every"]);
const CLIENT = args["kafka-client"]!;
if (CLIENT !== "platformatic" && CLIENT !== "kafkajs") {
  throw new Error(`--kafka-client: "${CLIENT}" is not platformatic or kafkajs`);
}
const EXE = args.exe ?? process.env.MB_AGENT_BIN;
const BROKERS = process.env.MB_TEST_BROKERS ?? "127.0.0.1:9092";
const CLIENTS = 3;
const TOPIC = `crash-loop-${SEED}-${Date.now().toString(36)}`;
const say = (s: string) => args.quiet || console.error(`crash-loop: ${s}`);

const rand = prng(SEED);
const between = (lo: number, hi: number) => lo + Math.floor(rand() * (hi - lo + 1));

function agentCommand(argv: string[]): [string, string[]] {
  if (EXE) return [EXE, argv];
  if ((globalThis as { Deno?: unknown }).Deno) {
    return [process.execPath, ["run", "-A", "cli.ts", ...argv]];
  }
  return [process.execPath, ["cli.ts", ...argv]];
}

function kafkaSh(command: "start" | "stop"): Promise<void> {
  return new Promise((resolve, reject) =>
    execFile(
      "bash",
      ["scripts/kafka.sh", command],
      { env: process.env },
      (err, _o, stderr) => err ? reject(new Error(`kafka.sh ${command}: ${stderr}`)) : resolve(),
    )
  );
}

/** The agent's metrics, or null while it is not serving them. */
function metrics(port: number): Promise<Record<string, number> | null> {
  return scrapeMetrics(`127.0.0.1:${port}`).catch(() => null);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const feed = new Feed({ topic: TOPIC, rand, rate: RATE });

interface Life {
  proc: ChildProcess;
  exited: Promise<void>;
  log: () => string;
  port: number;
}

async function startAgent(
  dir: string,
  extra: string[],
  waitReady: boolean,
  env: Record<string, string> = {},
): Promise<Life> {
  const port = await freePort();
  const [cmd, argv] = agentCommand([
    "run",
    "--brokers",
    BROKERS,
    "--buffer-dir",
    dir,
    "--file-max-size",
    "1",
    "--file-max-time",
    "1",
    "--max-line-bytes",
    String(3 << 20),
    "--max-message-bytes",
    String(4 << 20),
    "--fsync",
    args.fsync!,
    "--batch-max-records",
    String(BATCH),
    "--metrics",
    `127.0.0.1:${port}`,
    "--log-level",
    "warn",
    "--kafka-client",
    CLIENT,
    ...extra,
  ]);
  const proc = spawn(cmd, argv, {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, ...env },
  });
  let log = "";
  proc.stdout!.on("data", (d) => (log += d));
  proc.stderr!.on("data", (d) => (log += d));
  const exited = new Promise<void>((r) => proc.once("exit", () => r()));
  if (waitReady) {
    const deadline = Date.now() + 60_000;
    while (!(await metrics(port))) {
      if (proc.exitCode !== null) throw new Error(`agent exited with ${proc.exitCode}:\n${log}`);
      if (Date.now() > deadline) throw new Error(`agent not serving after 60 s:\n${log}`);
      await sleep(20);
    }
  }
  return { proc, exited, log: () => log, port };
}

async function kill(life: Life): Promise<void> {
  try {
    process.kill(life.proc.pid!, "SIGKILL");
  } catch { /* gone */ }
  await life.exited;
}

// ---- the loop --------------------------------------------------------------------------------

const started = Date.now();
const dir = await mkdtemp(join(tmpdir(), "mb-crash-loop-"));
const socketPath = join(dir, "messagebuffer.sock");
const topic = TOPIC;
const kafka = new Kafka({
  brokers: BROKERS.split(","),
  clientId: "mb-crash-loop",
  logLevel: logLevel.NOTHING,
});
{
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({
    waitForLeaders: true,
    topics: [{
      topic,
      numPartitions: 3,
      replicationFactor: 1,
      configEntries: [{ name: "max.message.bytes", value: String(8 << 20) }],
    }],
  });
  await admin.disconnect();
}
say(`seed ${SEED}, ${KILLS} kills, agent ${EXE ?? "from source"}, buffer ${dir}`);

let outages = 0, prunes = 0, startupKills = 0, droppedCounted = 0, lastPruneLife = -1;
let appendKills = 0;
const logsOfNote: string[] = [];
for (let life = 0; life < KILLS; life++) {
  const outage = OUTAGE_EVERY > 0 && (life % OUTAGE_EVERY === OUTAGE_EVERY - 1);
  const prune = PRUNE_EVERY > 0 && (life % PRUNE_EVERY === PRUNE_EVERY - 1);
  const startupKill = !prune && rand() < 0.15;
  if (outage || prune) {
    await kafkaSh("stop");
    outages++;
  }
  if (startupKill) {
    // Killed while starting: during recovery, before or while the socket appears.
    const a = await startAgent(dir, [], false);
    await sleep(between(30, 600));
    await kill(a);
    startupKills++;
  } else if (prune) {
    // A small cap during an outage: the oldest segments are pruned and counted as dropped.
    const a = await startAgent(
      dir, // Segments roll by size only and the periodic check waits an hour: once the clients stop,
      // nothing prunes any more, so the dropped counter read then is final.
      ["--total-size", "3", "--file-max-time", "3600", "--prune-frequency", "60"],
      true,
    );
    const stop = { now: false };
    const clients = Array.from(
      { length: CLIENTS },
      (_, c) => feed.client(c, socketPath, life, 1e9, stop),
    );
    const deadline = Date.now() + 60_000;
    let m = await metrics(a.port);
    while ((m?.messagebuffer_records_dropped_total ?? 0) === 0 && Date.now() < deadline) {
      await sleep(100);
      m = await metrics(a.port);
    }
    stop.now = true;
    await Promise.all(clients);
    m = await metrics(a.port);
    droppedCounted += m?.messagebuffer_records_dropped_total ?? 0;
    lastPruneLife = life;
    prunes++;
    await kill(a);
  } else if (!outage && APPEND_KILL_EVERY > 0 && life % APPEND_KILL_EVERY === 1) {
    // The agent kills itself right after Kafka acknowledged its N-th send, before the
    // checkpoint moves: the batch is in Kafka, and the next life sends it again.
    const n = between(1, 12);
    const a = await startAgent(dir, [], true, { MB_FAILPOINT: `kill-after-send:${n}` });
    const stop = { now: false };
    const clients = Array.from(
      { length: CLIENTS },
      (_, c) => feed.client(c, socketPath, life, Infinity, stop),
    );
    const died = await Promise.race([a.exited.then(() => true), sleep(15_000).then(() => false)]);
    if (died) appendKills++;
    await kill(a);
    stop.now = true;
    await Promise.all(clients);
    if (/quarantin|corrupt/i.test(a.log())) logsOfNote.push(a.log());
  } else {
    const a = await startAgent(dir, [], true);
    const stop = { now: false };
    const clients = Array.from(
      { length: CLIENTS },
      (_, c) => feed.client(c, socketPath, life, Infinity, stop),
    );
    await sleep(between(50, 1500));
    await kill(a); // mid-stream: some lines unanswered, a batch maybe in flight
    stop.now = true;
    await Promise.all(clients);
    if (/quarantin|corrupt/i.test(a.log())) logsOfNote.push(a.log());
  }
  if (outage || prune) await kafkaSh("start");
  say(
    `life ${life + 1}/${KILLS}${outage ? " (outage)" : ""}${prune ? " (prune)" : ""}${
      startupKill ? " (startup kill)" : ""
    }: ${feed.acked.size} acked`,
  );
}

// Drain: a last life, not killed, until the backlog is delivered; then SIGTERM.
const last = await startAgent(dir, [], true);
{
  const deadline = Date.now() + 600_000;
  for (;;) {
    const m = await metrics(last.port);
    if (m && m.messagebuffer_backlog_records === 0 && m.messagebuffer_provider_up === 1) break;
    if (Date.now() > deadline) {
      throw new Error(`backlog not delivered after 600 s: ${JSON.stringify(m)}`);
    }
    await sleep(200);
  }
  process.kill(last.proc.pid!, "SIGTERM");
  await last.exited;
  if (/quarantin|corrupt/i.test(last.log())) logsOfNote.push(last.log());
}
const quarantined = (await readdir(join(dir, "quarantine")).catch(() => [])).length;
const deadFiles = (await readdir(join(dir, "dead")).catch(() => [])).filter((f) =>
  f.endsWith(".seg")
);

// Read everything back with an independent client.
const r = await feed.check(BROKERS.split(","), lastPruneLife);
// With the default client a batch sent again goes under its first identity: no duplicates.
// kafkajs keeps its own sequence numbers: the batch in flight at each kill may come again.
const window = CLIENT === "platformatic" ? 0 : KILLS * BATCH;
// Missing acknowledged records are allowed only as many as the agent counted dropped, and only
// from before the last prune.
const unexplained = Math.max(0, r.missing - droppedCounted) + r.missingAfterPrune;
const ok = unexplained === 0 && r.corrupt === 0 && r.reordered === 0 && r.ghosts === 0 &&
  quarantined === 0 && deadFiles.length === 0 && r.duplicates <= window &&
  r.consumed >= r.total && r.longestDupRun <= BATCH;
console.log(
  `crash-loop: seed ${SEED}, client ${CLIENT}, kills ${KILLS} (${startupKills} at startup, ${appendKills} right after Kafka acknowledged a send), outages ${outages}, prunes ${prunes}, acked ${feed.acked.size}, delivered ${r.delivered} (${r.unknownDelivered} of ${feed.unknown.size} unanswered), lost ${unexplained} (missing ${r.missing}, ${droppedCounted} counted dropped), duplicated ${r.duplicates} (window ${window}; ${r.dupRuns} runs, longest ${r.longestDupRun}, batch ${BATCH}), corrupt ${r.corrupt}, reordered ${r.reordered}, errored-but-delivered ${r.ghosts}, quarantined ${quarantined}, dead-lettered files ${deadFiles.length}, ${
    ((Date.now() - started) / 1000).toFixed(0)
  } s, agent ${EXE ? "executable" : "from source"}, ${machine()} => ${ok ? "OK" : "FAIL"}`,
);
if (!ok && logsOfNote.length) console.error(logsOfNote.join("\n---\n").slice(-20_000));
if (!args.keep) await rm(dir, { recursive: true, force: true });
else console.error(`crash-loop: kept ${dir}`);
process.exit(ok ? 0 : 1);
