// The power-cut loop: the real agent (from source, or the executable named by --exe or
// MB_AGENT_BIN) with its buffer directory on pcfs (tests/pcfs), a FUSE file system that keeps
// unsynced writes in memory and, on command, keeps none of them, a prefix, pages with holes,
// or pages out of order, and then fails every call like a dead disk. Several socket clients
// feed it acknowledged records (ack mode); at a random moment (during start-up and recovery
// too, and so among rolls, seals and checkpoint writes, which run every second) the agent is
// frozen (SIGSTOP: nothing more is acknowledged), the power is cut, the agent is killed and
// the file system unmounted; then it is mounted again over what reached the disk and the agent
// restarted. Kafka is down in some rounds. At the end the agent drains, and an independent
// client (kafkajs's consumer; the agent produces with @platformatic/kafka) checks every
// acknowledged record byte for byte, order per key and duplicates.
//
// Verdict: nothing corrupt or reordered, nothing quarantined, no S file found unusable, and no
// acknowledged record lost under --fsync always; under interval, every lost record was
// acknowledged less than the fsync interval plus --margin before its cut. One summary line;
// exit 1 on any violation. Without root, /dev/fuse or Go it says so and exits 0 (skipped).
//
//   deno run -A scripts/powercut_loop.ts [--cuts 20] [--fsync always|interval] [--seed N]
//     [--exe PATH] [--rate 1000] [--outage-every 5] [--margin 500] [--keep] [--quiet]
//
// Needs a broker started by scripts/kafka.sh (MB_TEST_BROKERS, KAFKA_PORT as scripts/test.sh
// sets them); it stops and starts that broker.

import { type ChildProcess, execFile, spawn } from "node:child_process";
import { mkdir, mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { parseArgs } from "node:util";
import { Kafka, logLevel } from "kafkajs";
import { machine } from "./_bench_util.ts";
import { freePort, scrapeMetrics } from "../tests/_agent.ts";
import { Feed } from "../tests/_feed.ts";
import { buildPcfs, type CutMode, Pcfs, pcfsUnavailable } from "../tests/_pcfs.ts";
import { prng } from "../tests/_helpers.ts";

const { values: args } = parseArgs({
  options: {
    cuts: { type: "string", default: "20" },
    fsync: { type: "string", default: "always" },
    seed: { type: "string" },
    exe: { type: "string" },
    rate: { type: "string", default: "1000" },
    "outage-every": { type: "string", default: "5" },
    "fsync-interval": { type: "string", default: "1000" },
    margin: { type: "string", default: "500" },
    "batch-max-records": { type: "string", default: "500" },
    keep: { type: "boolean", default: false },
    quiet: { type: "boolean", default: false },
  },
});

const CUTS = Number(args.cuts);
const POLICY = args.fsync!;
if (POLICY !== "always" && POLICY !== "interval") {
  console.error(`powercut-loop: --fsync must be always or interval, got ${POLICY}`);
  process.exit(2);
}
const SEED = Number(args.seed ?? Math.floor(Math.random() * 2 ** 31));
const RATE = Number(args.rate);
const OUTAGE_EVERY = Number(args["outage-every"]);
const INTERVAL_MS = Number(args["fsync-interval"]);
const MARGIN_MS = Number(args.margin);
const BATCH = Number(args["batch-max-records"]);
const EXE = args.exe ?? process.env.MB_AGENT_BIN;
const BROKERS = process.env.MB_TEST_BROKERS ?? "127.0.0.1:9092";
const CLIENTS = 3;
const MODES: CutMode[] = ["drop", "prefix", "holes", "reorder"];
const TOPIC = `powercut-${POLICY}-${SEED}-${Date.now().toString(36)}`;
const say = (s: string) => args.quiet || console.error(`powercut-loop: ${s}`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const rand = prng(SEED);
const between = (lo: number, hi: number) => lo + Math.floor(rand() * (hi - lo + 1));

// ---- what this machine must offer ----------------------------------------------------------

function skip(why: string): never {
  console.log(`powercut-loop: SKIPPED (${why})`);
  process.exit(0);
}
const unavailable = pcfsUnavailable();
if (unavailable) skip(unavailable);
const work = await mkdtemp(join(tmpdir(), "mb-powercut-"));
const built = await buildPcfs(work);
if ("error" in built) skip(built.error);
const backing = join(work, "disk");
const mnt = join(work, "mnt");
const ctl = join(work, "pcfs.sock");
await mkdir(backing);
await mkdir(mnt);
const mount = () => Pcfs.mount(built.path, mnt, backing, ctl);

// ---- the agent -----------------------------------------------------------------------------

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
      (err, _o, stderr) => err ? reject(new Error(`kafka.sh ${command}: ${stderr}`)) : resolve(),
    )
  );
}

interface Life {
  proc: ChildProcess;
  exited: Promise<void>;
  log: () => string;
  port: number;
}

const bufferDir = join(mnt, "buffer");
const socketPath = join(work, "messagebuffer.sock");

async function startAgent(waitReady: boolean): Promise<Life> {
  const port = await freePort();
  const [cmd, argv] = agentCommand([
    "run",
    "--brokers",
    BROKERS,
    "--buffer-dir",
    bufferDir,
    "--socket",
    socketPath,
    "--file-max-size",
    "1",
    "--file-max-time",
    "1",
    "--fsync",
    POLICY,
    "--fsync-interval",
    `${INTERVAL_MS}ms`,
    "--batch-max-records",
    String(BATCH),
    "--max-line-bytes",
    String(3 << 20),
    "--max-message-bytes",
    String(4 << 20),
    "--metrics",
    `127.0.0.1:${port}`,
    "--log-level",
    "warn",
  ]);
  const proc = spawn(cmd, argv, { stdio: ["ignore", "pipe", "pipe"] });
  let log = "";
  proc.stdout!.on("data", (d) => (log += d));
  proc.stderr!.on("data", (d) => (log += d));
  const exited = new Promise<void>((r) => proc.once("exit", () => r()));
  if (waitReady) {
    const deadline = Date.now() + 60_000;
    while (!(await scrapeMetrics(`127.0.0.1:${port}`).catch(() => null))) {
      if (proc.exitCode !== null) throw new Error(`agent exited with ${proc.exitCode}:\n${log}`);
      if (Date.now() > deadline) {
        process.kill(proc.pid!, "SIGKILL");
        await exited;
        throw new Error(`agent not serving after 60 s:\n${log}`);
      }
      await sleep(20);
    }
  }
  return { proc, exited, log: () => log, port };
}

// ---- the loop ------------------------------------------------------------------------------

const started = Date.now();
await kafkaSh("start"); // when an interrupted run left it stopped (a no-op when it runs)
const kafka = new Kafka({
  brokers: BROKERS.split(","),
  clientId: "mb-powercut-loop",
  logLevel: logLevel.NOTHING,
});
{
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({
    waitForLeaders: true,
    topics: [{
      topic: TOPIC,
      numPartitions: 3,
      replicationFactor: 1,
      configEntries: [{ name: "max.message.bytes", value: String(8 << 20) }],
    }],
  });
  await admin.disconnect();
}
say(`seed ${SEED}, ${CUTS} cuts, --fsync ${POLICY}, agent ${EXE ?? "from source"}, in ${work}`);

const feed = new Feed({ topic: TOPIC, rand, rate: RATE });
/** When each life's power cut came (ms since the epoch). */
const cutAt: number[] = [];
const modes: Record<string, number> = {};
let outages = 0, startupCuts = 0, tornCuts = 0, dataCuts = 0;
/** Log lines that say a power cut was taken for damage: corruption, quarantine, S files. */
const alarms: string[] = [];
const ALARM = /corrupt|quarantin|unreadable S file|S file points at offset|bad header/i;

function scan(log: string): void {
  for (const line of log.split("\n")) {
    if (/cut a torn tail/.test(line)) tornCuts++;
    else if (ALARM.test(line)) alarms.push(line);
  }
}

for (let life = 0; life < CUTS; life++) {
  const outage = OUTAGE_EVERY > 0 && life % OUTAGE_EVERY === OUTAGE_EVERY - 1;
  const mode = MODES[between(0, MODES.length - 1)];
  const atStartup = rand() < 0.2;
  modes[mode] = (modes[mode] ?? 0) + 1;
  if (outage) {
    await kafkaSh("stop");
    outages++;
  }
  const m = await mount();
  let a: Life;
  try {
    a = await startAgent(!atStartup);
  } catch (e) {
    // An agent must start on whatever a cut left: that it cannot is a failure to report.
    alarms.push(`life ${life + 1}: ${(e as Error).message}`);
    await m.unmount();
    if (outage) await kafkaSh("start");
    continue;
  }
  const stop = { now: false };
  let clients: Promise<void>[] = [];
  if (atStartup) {
    // During start-up: recovery of the last cut, the lock, the sync mark, the socket.
    await sleep(between(50, 1500));
    startupCuts++;
  } else {
    clients = Array.from(
      { length: CLIENTS },
      (_, c) => feed.client(c, socketPath, life, Infinity, stop),
    );
    await sleep(between(100, 2500));
  }
  if (a.proc.exitCode !== null || a.proc.signalCode !== null) {
    // An agent must not stop by itself, whatever a cut left: that is a failure to report.
    alarms.push(`life ${life + 1}: the agent exited by itself (${a.proc.exitCode}):\n${a.log()}`);
    stop.now = true;
    await Promise.all(clients);
    await m.unmount();
    if (outage) await kafkaSh("start");
    continue;
  }
  // Freeze the agent (nothing more is acknowledged), cut the power, kill it.
  // process.kill: a ChildProcess that was sent one signal may take no other (Deno).
  process.kill(a.proc.pid!, "SIGSTOP");
  cutAt[life] = Date.now();
  const cut = await m.cut(mode, between(1, 2 ** 30));
  // Cuts that found data not yet fsynced: more than the LOCK file's pid, an S file slot and a
  // sync mark slot (frames, under "always" the one being written).
  const [, kept, dropped] = cut.match(/kept (\d+) dropped (\d+)/) ?? [];
  if (Number(kept) + Number(dropped) > 100) dataCuts++;
  process.kill(a.proc.pid!, "SIGKILL");
  await a.exited;
  stop.now = true;
  await Promise.all(clients);
  await m.unmount();
  scan(a.log());
  if (outage) await kafkaSh("start");
  say(
    `cut ${life + 1}/${CUTS} (${mode}${atStartup ? ", at start-up" : ""}${
      outage ? ", Kafka down" : ""
    }): ${cut}; ${feed.acked.size} acked`,
  );
}

// Drain: a last life, not cut, until the backlog is delivered; then SIGTERM.
const m = await mount();
const last = await startAgent(true);
let final: Record<string, number> = {};
{
  const deadline = Date.now() + 600_000;
  for (;;) {
    final = await scrapeMetrics(`127.0.0.1:${last.port}`).catch(() => ({}));
    if (final.messagebuffer_backlog_records === 0 && final.messagebuffer_provider_up === 1) break;
    if (Date.now() > deadline) {
      throw new Error(`backlog not delivered after 600 s: ${JSON.stringify(final)}`);
    }
    await sleep(200);
  }
  process.kill(last.proc.pid!, "SIGTERM");
  await last.exited;
  scan(last.log());
}
await m.unmount();
const quarantined = (await readdir(join(backing, "buffer", "quarantine")).catch(() => [])).length;

const r = await feed.check(BROKERS.split(","));
// How long before its cut each lost record was acknowledged.
let oldestLossMs = 0;
for (const id of r.missingIds) {
  const a = feed.acked.get(id)!;
  oldestLossMs = Math.max(oldestLossMs, cutAt[a.life] - a.at);
}
const lossOk = POLICY === "always" ? r.missing === 0 : oldestLossMs < INTERVAL_MS + MARGIN_MS;
const ok = lossOk && r.corrupt === 0 && r.reordered === 0 && r.ghosts === 0 &&
  quarantined === 0 && alarms.length === 0 && r.consumed >= r.total;
console.log(
  `powercut-loop: --fsync ${POLICY}, seed ${SEED}, cuts ${CUTS} (${
    Object.entries(modes).map(([k, n]) => `${k} ${n}`).join(", ")
  }; ${startupCuts} at start-up, ${outages} with Kafka down, ${dataCuts} with over 100 B unsynced), acked ${feed.acked.size}, lost ${r.missing}${
    POLICY === "interval"
      ? ` (oldest acknowledged ${oldestLossMs} ms before its cut; bound ${INTERVAL_MS} + ${MARGIN_MS} ms)`
      : ""
  }, duplicated ${r.duplicates} (${r.dupRuns} runs, longest ${r.longestDupRun}), corrupt ${r.corrupt}, reordered ${r.reordered}, errored-but-delivered ${r.ghosts}, torn tails cut ${tornCuts}, quarantined ${quarantined}, damage alarms ${alarms.length}, ${
    ((Date.now() - started) / 1000).toFixed(0)
  } s, agent ${EXE ? "executable" : "from source"}, ${machine()} => ${ok ? "OK" : "FAIL"}`,
);
if (alarms.length) console.error(alarms.slice(0, 20).join("\n"));
if (!args.keep) await rm(work, { recursive: true, force: true });
else console.error(`powercut-loop: kept ${work}`);
process.exit(ok ? 0 : 1);
