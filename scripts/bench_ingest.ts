// Agent benchmark: Unix-socket ingest throughput with 1, 4, 16 and 64 clients, with and without
// acknowledgements, and end-to-end latency (socket write to Kafka's log, and to a consumer) at a steady
// 10K records/s. Runs the real agent as a child process against a real broker.
//
//   scripts/kafka.sh start
//   npx deno run -A scripts/bench_ingest.ts [--brokers HOST:PORT] [--lines N] [--agent-bin PATH]
//       [--latency-only] [--latency-seconds N] [--mode buffer|direct-until-error] [--fsync POLICY]
//       [--ingest-only] [--http] [--topics T] [--lanes L] [--agent-args="--kafka-client kafkajs"]
//
// --topics T: the lines' topics go round T topics (line i to topic i % T), as from an app
// that writes to several; --lanes L runs the agent with that many delivery lanes.
//
// The latency run is repeated with librdkafka in the agent's place when kcat is installed:
// the same feeder writes the same lines into `kcat -P` (idempotent, acks=all, linger.ms=0),
// and the same reader reads them back, so that both run beside the same broker and host.
//
// Throughput is measured until the agent has stored every line (metrics endpoint,
// messagebuffer_records_written_total), not merely until the client has written them.

import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { parseArgs } from "node:util";
import { Kafka, logLevel } from "kafkajs";
import { fmtRate, hasKcat, machine, MiB, peakRss } from "./_bench_util.ts";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    brokers: { type: "string", default: "127.0.0.1:9092" },
    lines: { type: "string", default: "1000000" },
    "agent-bin": { type: "string" },
    // More options for the agent, space-separated (e.g. "--kafka-client kafkajs").
    "agent-args": { type: "string", default: "" },
    "latency-seconds": { type: "string", default: "10" },
    // Only the latency run; and the delivery mode and fsync policy it runs under.
    "latency-only": { type: "boolean", default: false },
    mode: { type: "string", default: "buffer" },
    fsync: { type: "string", default: "interval" },
    // Point the agent at an address where no broker listens, so that its sender idles:
    // ingest alone, without delivery competing for the CPU (no latency run then).
    "ingest-only": { type: "boolean", default: false },
    // Who reads the records back for the end-to-end latency: kcat (librdkafka, in a process
    // of its own; the default when it is installed) or kafkajs (in this process, beside the
    // writer: its own delays count in the figures).
    consumer: { type: "string", default: "" },
    // The HTTP input (POST /records, NDJSON bodies of 10,000 records) instead of the socket:
    // 1, 16 and 64 clients posting at once.
    http: { type: "boolean", default: false },
    topics: { type: "string", default: "1" },
    lanes: { type: "string", default: "1" },
  },
  strict: true,
});
const LINES = Number(values.lines);
const TOPICS = Number(values.topics);
if (!Number.isInteger(TOPICS) || TOPICS < 1) {
  console.error(`bench_ingest: --topics is a whole number of 1 or more, not "${values.topics}"`);
  process.exit(2);
}
const METRICS = "127.0.0.1:19465";
const HTTP = "127.0.0.1:19466";

const CONSUMER = values.consumer || (hasKcat() ? "kcat" : "kafkajs");
if (CONSUMER !== "kcat" && CONSUMER !== "kafkajs") {
  console.error(`bench_ingest: --consumer is kcat or kafkajs, not "${CONSUMER}"`);
  process.exit(2);
}

// Reads N records back with kcat, each line stamped as it arrives; prints "ready" for the
// first, then for each later record: its latency to the reader (arrival minus the send time at
// the start of its value), its latency to Kafka's log (the LogAppendTime kcat prints as %T,
// minus the send time), and the send time, in ms. In a process of its own, so that the
// writer's work does not delay the reading.
const KCAT_READER = `
import signal, subprocess, sys, time
broker, topic, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
p = subprocess.Popen(["kcat", "-C", "-q", "-u", "-b", broker, "-t", topic, "-o", "beginning",
    "-c", str(n), "-f", "%T %s\\n"], stdout=subprocess.PIPE)
# Stopped early: kcat goes, and what was read is reported.
signal.signal(signal.SIGTERM, lambda *_: p.kill())
out, first = [], True
for line in p.stdout:
    now = time.time() * 1000
    if first:
        sys.stdout.write("ready\\n"); sys.stdout.flush(); first = False
        continue
    appended, sent = line.split(b" ")[:2]
    out.append("%.3f %.3f %s" % (now - float(sent), float(appended) - float(sent), sent.decode()))
p.wait()
sys.stdout.write("\\n".join(out) + "\\n")
`;

function agentCommand(args: string[]): [string, string[]] {
  if (values["agent-bin"]) return [values["agent-bin"], args];
  if ((globalThis as { Deno?: unknown }).Deno) {
    return [process.execPath, ["run", "-A", "cli.ts", ...args]];
  }
  return [process.execPath, ["cli.ts", ...args]];
}

async function written(): Promise<number> {
  const res = await fetch(`http://${METRICS}/metrics`);
  const m = /^messagebuffer_records_written_total (\d+)/m.exec(await res.text());
  return Number(m?.[1] ?? 0);
}

async function withAgent<T>(
  fn: (sock: string, peak: () => number) => Promise<T>,
): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), "mb-bench-"));
  const [cmd, args] = agentCommand([
    "run",
    "--brokers",
    values["ingest-only"] ? "127.0.0.1:1" : values.brokers,
    "--buffer-dir",
    dir,
    "--metrics",
    METRICS,
    "--log-level",
    "warn",
    "--total-size",
    "8192",
    "--mode",
    values.mode,
    "--fsync",
    values.fsync,
    "--lanes",
    values.lanes,
    ...(values.http ? ["--http", HTTP] : []),
    ...values["agent-args"].split(" ").filter((a) => a !== ""),
  ]);
  const p = spawn(cmd, args, { stdio: ["ignore", "inherit", "inherit"] });
  const sock = `${dir}/messagebuffer.sock`;
  for (let i = 0; i < 300; i++) {
    try {
      await written();
      break;
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  try {
    return await fn(sock, () => peakRss(p.pid!) / MiB);
  } finally {
    process.kill(p.pid!, "SIGTERM");
    await new Promise((r) => p.once("exit", r));
    await rm(dir, { recursive: true, force: true });
  }
}

function connect(sock: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(sock);
    s.once("connect", () => resolve(s));
    s.once("error", reject);
  });
}

async function throughput(
  sock: string,
  clients: number,
  ack: boolean,
  topic: string,
): Promise<number> {
  const per = Math.floor(LINES / clients);
  const before = await written();
  const chunkLines = 2000;
  const lines: string[] = [];
  for (let i = 0; i < chunkLines; i++) {
    const t = TOPICS === 1 ? topic : `${topic}-${i % TOPICS}`;
    lines.push(`${t}\tk${i % 10}\t${"x".repeat(100)}\n`);
  }
  const chunk = lines.join("");
  // Each client sends exactly its share, so that the agent has read everything sent once it
  // has stored the target (nothing is still in flight when it stops).
  const last = lines.slice(0, per % chunkLines).join("");
  const t0 = performance.now();
  await Promise.all(Array.from({ length: clients }, async () => {
    const s = await connect(sock);
    let answers = 0;
    const done = new Promise<void>((resolve) => {
      if (!ack) return resolve();
      s.on("data", (d: Buffer) => {
        for (let i = d.indexOf(10); i >= 0; i = d.indexOf(10, i + 1)) answers++;
        if (answers >= per + 1) resolve();
      });
    });
    if (ack) s.write("#ack\n");
    for (let sent = 0; sent < per; sent += chunkLines) {
      const part = per - sent >= chunkLines ? chunk : last;
      if (!s.write(part)) await new Promise((r) => s.once("drain", r));
    }
    await done;
    s.end();
  }));
  const target = before + per * clients;
  while ((await written()) < target) await new Promise((r) => setTimeout(r, 5));
  return (target - before) / ((performance.now() - t0) / 1000);
}

/**
 * `clients` HTTP clients at once, each posting its share of the records as NDJSON bodies of
 * 10,000 records (about 1.4 MB), one after the other; records/s until all are stored, and the
 * answers' statuses.
 */
async function httpThroughput(
  clients: number,
  topic: string,
): Promise<{ rate: number; statuses: Map<number, number> }> {
  const perBody = 10_000;
  const bodies = Math.max(1, Math.floor(LINES / clients / perBody));
  let body = "";
  for (let i = 0; i < perBody; i++) {
    body += JSON.stringify({ topic, key: `k${i % 10}`, value: "x".repeat(100) }) + "\n";
  }
  const statuses = new Map<number, number>();
  const before = await written();
  const t0 = performance.now();
  await Promise.all(Array.from({ length: clients }, async () => {
    for (let b = 0; b < bodies; b++) {
      const res = await fetch(`http://${HTTP}/records`, {
        method: "POST",
        headers: { "content-type": "application/x-ndjson" },
        body,
      });
      await res.arrayBuffer();
      statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
    }
  }));
  const stored = (await written()) - before;
  return { rate: stored / ((performance.now() - t0) / 1000), statuses };
}

/** Where the latency run writes its lines: the agent's socket, or `kcat -P`'s input. */
interface Sink {
  /** The line that carries `value` to `topic`. */
  line(topic: string, value: string): string;
  write(chunk: string): void;
  end(): void;
}

function socketSink(s: net.Socket): Sink {
  return {
    line: (topic, value) => `${topic}\t\t${value}\n`,
    write: (chunk) => s.write(chunk),
    end: () => s.end(),
  };
}

/**
 * librdkafka as the reference, on the same feeder and reader: `kcat -P` with idempotence,
 * acks=all and linger.ms=0 (it sends at once, as the agent does), one line per record.
 */
function kcatSink(topic: string): Sink & { exited: Promise<void> } {
  const p = spawn("kcat", [
    "-P",
    "-b",
    values.brokers.split(",")[0],
    "-t",
    topic,
    "-X",
    "enable.idempotence=true",
    "-X",
    "acks=all",
    "-X",
    "linger.ms=0",
  ], { stdio: ["pipe", "inherit", "inherit"] });
  return {
    line: (_topic, value) => `${value}\n`,
    write: (chunk) => p.stdin.write(chunk),
    end: () => p.stdin.end(),
    exited: new Promise((r) => p.on("close", () => r())),
  };
}

/**
 * The wall clock in ms with the monotonic clock's precision. The send time a line carries is
 * compared with times read in other processes (the broker's LogAppendTime, the reader's
 * clock), which all read the wall clock; `performance.timeOrigin` can be off from it by a ms
 * or more, so the offset is taken at the instant `Date.now()` steps to its next ms.
 */
const wallClock = (() => {
  const start = Date.now();
  while (Date.now() === start) { /* spin to the next ms, at most one */ }
  const offset = Date.now() - (performance.timeOrigin + performance.now());
  return () => performance.timeOrigin + performance.now() + offset;
})();

/**
 * Latencies in ms from the feeder's write: until a consumer read the record (p50, p99), and
 * until the broker appended it to its log (the LogAppendTime stamp, truncated to the ms, so up
 * to 1 ms short).
 */
interface Latency {
  p50: number;
  p99: number;
  appendP50: number;
  appendP99: number;
  /** appendP99 of the records sent after the run's first second (none: undefined). */
  warmP99: number | undefined;
  n: number;
}

async function latency(
  sink: Sink,
  topic: string,
  seconds: number,
): Promise<Latency> {
  const kafka = new Kafka({ brokers: values.brokers.split(","), logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  await admin.connect();
  // The broker stamps each batch with the time it appended it (LogAppendTime, in whole ms), so
  // that the latency to Kafka's log is measured without the consumer's share.
  await admin.createTopics({
    topics: [{
      topic,
      numPartitions: 1,
      configEntries: [{ name: "message.timestamp.type", value: "LogAppendTime" }],
    }],
    waitForLeaders: true,
  });
  await admin.disconnect();
  const rate = 10_000, tick = 10;
  const perTick = rate * tick / 1000;
  const total = rate * seconds;
  const lat: number[] = [];
  const appended: number[] = [];
  /** The records sent after the first second (the agent's code compiled, its caches full). */
  const appendedWarm: number[] = [];
  let warm = Infinity;
  /** One record read back: its latencies to the reader and to Kafka's log, and its send time. */
  const add = (read: number, append: number, sentAt: number) => {
    lat.push(read);
    appended.push(append);
    if (sentAt >= warm) appendedWarm.push(append);
  };
  let stopConsumer: () => Promise<void>;
  if (CONSUMER === "kcat") {
    const reader = spawn(
      "python3",
      ["-c", KCAT_READER, values.brokers.split(",")[0], topic, String(total + 1)],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    let out = "";
    reader.stdout.on("data", (d) => (out += d));
    reader.on("error", (e) => console.error(`bench_ingest: cannot run python3: ${e.message}`));
    const ended = new Promise<void>((r) => reader.on("close", () => r()));
    // A first record, once read back, says that the consumer is attached. Neither wait is
    // endless: kcat waits for its N records, and for an unreachable broker, forever.
    sink.write(sink.line(topic, "ready"));
    const ready = Date.now() + 30_000;
    while (!out.includes("ready\n") && reader.exitCode === null && Date.now() < ready) {
      await new Promise((r) => setTimeout(r, 10));
    }
    stopConsumer = async () => {
      const timer = setTimeout(() => reader.kill(), 30_000);
      await ended;
      clearTimeout(timer);
      for (const x of out.split("\n").slice(1)) {
        if (x === "") continue;
        const [read, append, sentAt] = x.split(" ").map(Number);
        add(read, append, sentAt);
      }
    };
  } else {
    const consumer = kafka.consumer({ groupId: `${topic}-g`, maxWaitTimeInMs: 5 });
    await consumer.connect();
    await consumer.subscribe({ topics: [topic], fromBeginning: true });
    await consumer.run({
      eachBatch: ({ batch }) => {
        const now = wallClock();
        for (const m of batch.messages) {
          const sentAt = Number(m.value!.toString().split(" ")[0]);
          if (!Number.isNaN(sentAt)) add(now - sentAt, Number(m.timestamp) - sentAt, sentAt);
        }
        return Promise.resolve();
      },
    });
    await new Promise((r) => setTimeout(r, 3000)); // group join
    stopConsumer = async () => {
      const deadline = Date.now() + 30_000;
      while (lat.length < total && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 50));
      }
      await consumer.disconnect();
    };
  }
  let sent = 0;
  const t0 = performance.now();
  warm = wallClock() + 1000;
  while (sent < total) {
    let chunk = "";
    const now = wallClock();
    const line = sink.line(topic, `${now.toFixed(3)} ${"y".repeat(80)}`);
    for (let i = 0; i < perTick; i++) chunk += line;
    sink.write(chunk);
    sent += perTick;
    const next = t0 + (sent / perTick) * tick;
    await new Promise((r) => setTimeout(r, Math.max(0, next - performance.now())));
  }
  sink.end();
  await stopConsumer();
  if (lat.length === 0) throw new Error(`the ${CONSUMER} consumer read no record back`);
  if (lat.length < total) console.error(`bench_ingest: only ${lat.length} of ${total} read back`);
  for (const xs of [lat, appended, appendedWarm]) xs.sort((a, b) => a - b);
  const q = (xs: number[], p: number) => xs[Math.floor(xs.length * p)];
  return {
    p50: q(lat, 0.5),
    p99: q(lat, 0.99),
    appendP50: q(appended, 0.5),
    appendP99: q(appended, 0.99),
    warmP99: q(appendedWarm, 0.99),
    n: lat.length,
  };
}

/** The agent's own view of its last window of deliveries, from its metrics. */
async function agentLatency(): Promise<void> {
  // The agent's own view: from each record's timestamp (when it was read from the socket) to
  // Kafka's acknowledgement, without the consumer's share.
  const metrics = await (await fetch(`http://${METRICS}/metrics`)).text();
  const q = (x: string) =>
    Number(
      new RegExp(`^messagebuffer_delivery_latency_seconds\\{quantile="${x}"\\} (\\S+)`, "m")
        .exec(metrics)?.[1],
    ) * 1000;
  console.log(
    `  the agent's delivery latency (read from the socket -> acknowledged by Kafka), its last window: p50 ${
      q("0.5").toFixed(1)
    } ms, p99 ${q("0.99").toFixed(1)} ms`,
  );
}

console.log(`# messagebuffer agent benchmark (${values.http ? "HTTP" : "Unix-socket"} ingest)`);
console.log(`# ${machine()}; agent: ${agentCommand([]).flat().join(" ")}`);
console.log(`# command: ${process.argv.join(" ")}`);
console.log(
  (values.http
    ? `# records: NDJSON lines {"topic", "key", "value"} with 100-byte values, 10,000 a body, about ${LINES} per run`
    : `# lines: TOPIC<TAB>KEY<TAB>VALUE with 100-byte values, ${LINES} per run` +
      (TOPICS > 1 ? `, going round ${TOPICS} topics` : "")) +
    `; lanes=${values.lanes}` +
    `; mode=${values.mode}, fsync=${values.fsync}; ` +
    (values["ingest-only"]
      ? "no broker (the sender idles): ingest alone"
      : "delivering to the broker on the same machine meanwhile"),
);
if (values.http) {
  // A fresh agent for each, so that its peak memory is that run's.
  for (const clients of [1, 16, 64]) {
    await withAgent(async (_sock, peak) => {
      const r = await httpThroughput(clients, `http-bench-${Date.now().toString(36)}`);
      console.log(
        `HTTP input ${String(clients).padStart(2)} client(s): ${
          fmtRate(r.rate)
        } records/s stored, agent peak RSS ${peak().toFixed(0)} MiB, answers ${
          [...r.statuses].map(([status, n]) => `${n} × ${status}`).join(", ")
        }`,
      );
    });
  }
} else if (!values["latency-only"]) {
  // A fresh agent for each, so that its peak memory is that run's.
  for (const ack of [false, true]) {
    for (const clients of [1, 4, 16, 64]) {
      await withAgent(async (sock, peak) => {
        const r = await throughput(sock, clients, ack, `ingest-bench-${Date.now().toString(36)}`);
        console.log(
          `ingest ${ack ? "with #ack   " : "without acks"} ${
            String(clients).padStart(2)
          } client(s): ${fmtRate(r)} lines/s stored, agent peak RSS ${peak().toFixed(0)} MiB`,
        );
      });
    }
  }
}
if (!values["ingest-only"] && !values.http) {
  const seconds = Number(values["latency-seconds"]);
  const report = (who: string, l: Latency) =>
    console.log(
      `end-to-end latency at 10K records/s (${who}), ${l.n} records: to Kafka's log (LogAppendTime) p50 ${
        l.appendP50.toFixed(1)
      } ms, p99 ${l.appendP99.toFixed(1)} ms (after the first second ${
        l.warmP99?.toFixed(1) ?? "n/a"
      } ms); read back (${CONSUMER}) p50 ${l.p50.toFixed(1)} ms, p99 ${l.p99.toFixed(1)} ms`,
    );
  await withAgent(async (sock) => {
    const s = await connect(sock);
    report(
      "socket write",
      await latency(socketSink(s), `latency-bench-${Date.now().toString(36)}`, seconds),
    );
    await agentLatency();
  });
  if (hasKcat()) {
    const topic = `latency-kcat-${Date.now().toString(36)}`;
    const kcat = kcatSink(topic);
    report("kcat -P input, the reference", await latency(kcat, topic, seconds));
    await kcat.exited;
  }
}
