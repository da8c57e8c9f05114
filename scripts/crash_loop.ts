// The crash loop: the real agent (from source, or the executable named by --exe or
// MB_AGENT_BIN) fed by several socket clients in ack mode with adversarial records, killed
// with SIGKILL at random moments, many times; between kills the broker is sometimes stopped
// and started (scripts/kafka.sh) and, once in a while, a small cap prunes during an outage.
// Segments roll every second or megabyte. At the end the agent drains, and an independent
// client (kafkajs's consumer; the agent produces with @platformatic/kafka by default) reads
// the topic and checks: every acknowledged record is in Kafka byte for byte (key, value,
// headers), in order per key; duplicates stay inside the window the README documents (the
// batch in flight at each kill); nothing was quarantined; only what the agent counted as
// dropped is missing. One summary line; exit 1 on any violation.
//
//   deno run -A scripts/crash_loop.ts [--kills 20] [--seed N] [--exe PATH] [--rate 1500]
//     [--outage-every 8] [--prune-every 10] [--fsync interval] [--keep]
//
// Needs a broker started by scripts/kafka.sh (MB_TEST_BROKERS, KAFKA_PORT as scripts/test.sh
// sets them); it stops and starts that broker.

import { Buffer } from "node:buffer";
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { parseArgs } from "node:util";
import { Kafka, logLevel } from "kafkajs";
import { machine } from "./_bench_util.ts";
import { freePort, scrapeMetrics } from "../tests/_agent.ts";
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

// ---- records -------------------------------------------------------------------------------

/** What a record must look like in Kafka: a digest of key, value and headers. */
function digest(key: Buffer | null, value: Buffer, headers: Array<[string, Buffer]>): string {
  const h = createHash("sha256");
  h.update(key === null ? "-" : `k${key.length}:`);
  if (key) h.update(key);
  h.update(`v${value.length}:`);
  h.update(value);
  for (const [k, v] of headers) {
    h.update(`h${Buffer.byteLength(k)}:${k}${v.length}:`);
    h.update(v);
  }
  return h.digest("base64").slice(0, 16);
}

const TEXT_CHARS = ["a", "Z", " ", "\t", "\n", "\r", "\\", "é", "日本", "🦀", "\u0001", "|", "{"];
const escapeText = (s: string) =>
  s.replace(/\\/g, "\\\\").replace(/\t/g, "\\t").replace(/\n/g, "\\n").replace(/\r/g, "\\r");

/** One line for record `id` of client `c`, and what it must be in Kafka. */
function makeRecord(c: number, id: string): { line: string; digest: string; bytes: number } {
  const key = `k${c}`;
  const r = rand();
  if (r < 0.4) {
    // Text form: tabs, newlines, CRs and backslashes escaped; any other character as is.
    let s = "";
    for (let n = between(0, 120); n > 0; n--) s += TEXT_CHARS[between(0, TEXT_CHARS.length - 1)];
    const value = `${id}|${s}`;
    const line = `${TOPIC}\t${escapeText(key)}\t${escapeText(value)}\n`;
    return { line, digest: digest(Buffer.from(key), Buffer.from(value), []), bytes: line.length };
  }
  if (r < 0.85 || r >= 0.9995) {
    // JSON with every byte value possible in the value and a binary header; rarely 1 MiB.
    const size = r >= 0.9995 ? 1 << 20 : between(0, 400);
    const body = Buffer.alloc(size);
    for (let i = 0; i < size; i++) body[i] = (i * 131 + size + c) & 0xff;
    for (let i = 0; i < Math.min(size, 64); i++) body[i] = between(0, 255);
    const value = Buffer.concat([Buffer.from(`${id}|`), body]);
    const hv = Buffer.from([0, 255, 10, 9, 92, between(0, 255)]);
    const line = JSON.stringify({
      topic: TOPIC,
      key,
      value_base64: value.toString("base64"),
      headers_base64: [["bin", hv.toString("base64")], [
        "bin",
        Buffer.from("twice").toString("base64"),
      ]],
    }) + "\n";
    return {
      line,
      digest: digest(Buffer.from(key), value, [["bin", hv], ["bin", Buffer.from("twice")]]),
      bytes: line.length,
    };
  }
  // An empty value: the id travels in a header.
  const headers: Array<[string, Buffer]> = [["mb-id", Buffer.from(id)], [
    "tab\tname",
    Buffer.from("a\nb"),
  ]];
  const line = JSON.stringify({
    topic: TOPIC,
    key,
    value: "",
    headers: { "mb-id": id, "tab\tname": "a\nb" },
  }) + "\n";
  return { line, digest: digest(Buffer.from(key), Buffer.alloc(0), headers), bytes: line.length };
}

// ---- the run's bookkeeping ------------------------------------------------------------------

/** id ("c.seq") → digest and the life it was acknowledged in. */
const acked = new Map<string, { d: string; life: number }>();
/** Sent but never answered (the agent died first): may or may not be in Kafka. */
const unknown = new Map<string, string>();
/** Answered with an error: must not be in Kafka. */
const errored = new Set<string>();
const seqs = Array(CLIENTS).fill(0);

/** One client's life: connect, #ack, pipeline lines, note each answer, until stopped or cut. */
async function client(
  c: number,
  socketPath: string,
  life: number,
  limit: number,
  stop: { now: boolean },
): Promise<void> {
  let sock: net.Socket | null = null;
  for (let i = 0; i < 200 && !stop.now; i++) {
    sock = await new Promise<net.Socket | null>((resolve) => {
      const s = net.connect(socketPath);
      s.once("connect", () => resolve(s));
      s.once("error", () => resolve(null));
    });
    if (sock) break;
    await sleep(25);
  }
  if (!sock) return;
  const pending: Array<{ id: string; d: string } | null> = [null]; // null: the #ack line
  let text = "";
  let sent = 0;
  let closed = false;
  let wake: () => void = () => {};
  sock.setEncoding("utf8");
  sock.on("data", (t: string) => {
    text += t;
    let nl;
    while ((nl = text.indexOf("\n")) >= 0) {
      const answer = text.slice(0, nl);
      text = text.slice(nl + 1);
      const p = pending.shift();
      if (p === undefined) throw new Error(`client ${c}: an answer with no line: ${answer}`);
      if (p === null) continue;
      unknown.delete(p.id);
      if (answer === "ok") acked.set(p.id, { d: p.d, life });
      else errored.add(p.id);
    }
    wake();
  });
  sock.on("error", () => {});
  sock.on("close", () => {
    closed = true;
    wake();
  });
  sock.write("#ack\n");
  const t0 = Date.now();
  while (!closed && !stop.now && sent < limit) {
    const due = limit === Infinity ? Math.floor(((Date.now() - t0) * RATE) / 1000) : Infinity;
    while (pending.length < 64 && sent < limit && sent < due && !stop.now) {
      const id = `${c}.${seqs[c]++}`;
      const r = makeRecord(c, id);
      pending.push({ id, d: r.digest });
      unknown.set(id, r.digest);
      sent++;
      if (!sock.write(r.line)) break;
    }
    await new Promise<void>((r) => {
      wake = r;
      setTimeout(r, 50);
    });
  }
  // Wait for the answers to what was sent (unless cut), then leave.
  const deadline = Date.now() + 30_000;
  while (!closed && pending.length > 0 && Date.now() < deadline) {
    await new Promise<void>((r) => {
      wake = r;
      setTimeout(r, 50);
    });
  }
  sock.end();
}

interface Life {
  proc: ChildProcess;
  exited: Promise<void>;
  log: () => string;
  port: number;
}

async function startAgent(dir: string, extra: string[], waitReady: boolean): Promise<Life> {
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
    ...extra,
  ]);
  const proc = spawn(cmd, argv, { stdio: ["ignore", "pipe", "pipe"] });
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
      (_, c) => client(c, socketPath, life, 1e9, stop),
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
  } else {
    const a = await startAgent(dir, [], true);
    const stop = { now: false };
    const clients = Array.from(
      { length: CLIENTS },
      (_, c) => client(c, socketPath, life, Infinity, stop),
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
    }: ${acked.size} acked`,
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
const admin = kafka.admin();
await admin.connect();
const offsets = await admin.fetchTopicOffsets(topic);
await admin.disconnect();
const total = offsets.reduce((n, o) => n + Number(o.high) - Number(o.low), 0);
const seen = new Map<string, number>();
let corrupt = 0, reordered = 0, ghosts = 0, consumed = 0;
const lastSeq = new Map<string, number>();
const dupRun = new Map<number, { n: number; len: number }>();
let dupRuns = 0, longestDupRun = 0;
const consumer = kafka.consumer({
  groupId: `mb-crash-loop-${SEED}-${Date.now()}`,
  maxBytes: 64 << 20,
});
await consumer.connect();
await consumer.subscribe({ topics: [topic], fromBeginning: true });
await consumer.run({
  eachBatch: ({ batch }) => {
    for (const m of batch.messages) {
      consumed++;
      const headers: Array<[string, Buffer]> = [];
      for (const [k, v] of Object.entries(m.headers ?? {})) {
        for (const x of Array.isArray(v) ? v : [v]) headers.push([k, Buffer.from(x as Buffer)]);
      }
      const value = m.value ?? Buffer.alloc(0);
      const idHeader = headers.find(([k]) => k === "mb-id");
      const bar = value.indexOf(0x7c);
      const id = idHeader
        ? idHeader[1].toString()
        : bar > 0
        ? value.subarray(0, bar).toString()
        : "";
      const expected = acked.get(id)?.d ?? unknown.get(id);
      if (errored.has(id)) ghosts++;
      if (!expected || digest(m.key, value, headers) !== expected) {
        corrupt++;
        continue;
      }
      const n = (seen.get(id) ?? 0) + 1;
      seen.set(id, n);
      // Re-sent records come as runs in a partition, one run per re-send (a batch sent again
      // twice gives a run of second copies, then one of third copies): a run longer than a
      // batch would mean more than the batch in flight was sent again.
      const prev = dupRun.get(batch.partition);
      const run = n === 1 ? 0 : prev && prev.n === n ? prev.len + 1 : 1;
      dupRun.set(batch.partition, { n, len: run });
      if (run === 1) dupRuns++;
      longestDupRun = Math.max(longestDupRun, run);
      if (n > 1) continue; // a duplicate: counted below
      const [c, seq] = id.split(".").map(Number);
      const key = `k${c}`;
      if ((lastSeq.get(key) ?? -1) > seq) reordered++;
      else lastSeq.set(key, seq);
    }
    return Promise.resolve();
  },
});
{
  const deadline = Date.now() + 300_000;
  while (consumed < total && Date.now() < deadline) await sleep(100);
}
await consumer.disconnect();

let lost = 0, lostAfterPrune = 0, duplicates = 0, unknownDelivered = 0;
for (const [id, a] of acked) {
  if (!seen.has(id)) {
    lost++;
    if (a.life > lastPruneLife) lostAfterPrune++;
  }
}
for (const [id, n] of seen) {
  duplicates += n - 1;
  if (unknown.has(id)) unknownDelivered++;
}
const window = KILLS * BATCH;
// Missing acknowledged records are allowed only as many as the agent counted dropped, and only
// from before the last prune.
const unexplained = Math.max(0, lost - droppedCounted) + lostAfterPrune;
const ok = unexplained === 0 && corrupt === 0 && reordered === 0 && ghosts === 0 &&
  quarantined === 0 && deadFiles.length === 0 && duplicates <= window && consumed >= total &&
  longestDupRun <= BATCH;
console.log(
  `crash-loop: seed ${SEED}, kills ${KILLS} (${startupKills} at startup), outages ${outages}, prunes ${prunes}, acked ${acked.size}, delivered ${seen.size} (${unknownDelivered} of ${unknown.size} unanswered), lost ${unexplained} (missing ${lost}, ${droppedCounted} counted dropped), duplicated ${duplicates} (window ${window}; ${dupRuns} runs, longest ${longestDupRun}, batch ${BATCH}), corrupt ${corrupt}, reordered ${reordered}, errored-but-delivered ${ghosts}, quarantined ${quarantined}, dead-lettered files ${deadFiles.length}, ${
    ((Date.now() - started) / 1000).toFixed(0)
  } s, agent ${EXE ? "executable" : "from source"}, ${machine()} => ${ok ? "OK" : "FAIL"}`,
);
if (!ok && logsOfNote.length) console.error(logsOfNote.join("\n---\n").slice(-20_000));
if (!args.keep) await rm(dir, { recursive: true, force: true });
else console.error(`crash-loop: kept ${dir}`);
process.exit(ok ? 0 : 1);
