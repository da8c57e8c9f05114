// The agent end to end and draining, beside librdkafka (`kcat -P`) on the same records, in one
// sitting, for each partition count given. For each:
//   - kcat: `kcat -P` sends N records (keyed, 100-byte values by default) with idempotence
//     and acks=all, from a file; timed until it exits (every record acknowledged);
//   - end to end: a fresh agent with the broker; N lines are fed through its socket in
//     acknowledged mode as fast as it answers (Python's sendfile, so that the feeder costs
//     next to nothing); timed from the first byte until the topic holds N records;
//   - drain: an agent with no broker stores the N lines; a second agent on that directory,
//     with the broker, is timed from its start until the first record is in the topic, and
//     until all N are.
// The topic's records are counted from the broker's end offsets (every 20 ms; every 1 ms
// for the first), not from the agent's metrics, which would cost the agent CPU.
// It reports records/s, the agent's CPU per delivered record (user + system, from /proc, from
// the agent's start: end to end, to the last record delivered with --settle or --warm, else to
// its exit, as for the drain; in brackets, the part its JIT compiler threads took) and its peak
// RSS (VmHWM), and kcat's (getrusage).
//
//   scripts/kafka.sh start
//   npm run compile
//   deno run -A scripts/bench_e2e.ts [--records N] [--partitions 1,6] [--runs 3]
//       [--agent dist/messagebuffer] [--brokers HOST:PORT] [--value-bytes 100]
//       [--agent-args="--kafka-client kafkajs"] [--restart-gb 10 [--drain-rss]] [--settle 20]
//       [--warm [--broker-pid PID]] [--topics T]
//
// --restart-gb G also stores a backlog of G GB through the agent (Kafka unreachable), then
// times, once per run, a start of the agent on it until its first record is delivered
// (--partitions 0 skips the rest). With --drain-rss, the last of those starts delivers the
// whole backlog, and the agent's resident memory is printed at each tenth delivered. With
// --runs > 1, each figure is the median of the runs, and the range is printed beside it.
// --settle S: each end-to-end agent is left idle S seconds once all is delivered, and its
// resident memory then is printed for every run (what it keeps after a burst), beside its peak.
// --topics T spreads the agent's records (end to end and drain) evenly over T topics of the
// given partitions each, for runs with lanes (--agent-args="--lanes T"); kcat keeps one topic.
// The first of them is polled until it holds its share, then all (the first record delivered
// is then the first in that topic).
//
// --records beyond about 7M (of 100 bytes) need a larger cap than the agent's default 1 GiB,
// which a drain's stored backlog would pass (pruned at the cap, it would never count N): the
// script says so and stops, unless --agent-args gives --total-size.
//
// --warm also measures the end-to-end agent once it has run a while, as an agent on a host
// does: the figures above count its whole life, JIT compilation and start-up included (a
// cold 1M run pays 0.2-0.3 s of CPU on JavaScriptCore's compiler threads). Once its first N
// are delivered, the same agent takes N more lines end to end (a second topic), then drains
// a backlog: the broker is paused (SIGSTOP) while N lines are stored, and the drain is timed
// from its resumption (SIGCONT) until the topic holds N. CPU for these is the agent's over
// that span only; peak RSS is reset before each (/proc/PID/clear_refs). The broker's pid is
// `--broker-pid`, else what `scripts/kafka.sh status` gives for --brokers; it is resumed on
// any way out of the script (an error, Ctrl-C, SIGTERM). The agent must answer lines once
// they are stored (`--mode buffer`, the default): the paused broker would hold the others.

import { spawn, spawnSync } from "node:child_process";
import {
  closeSync,
  existsSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { parseArgs } from "node:util";
import { Kafka, logLevel } from "kafkajs";
import { currentRss, fmtRate, kcatProduceArgs, machine, MiB, peakRss } from "./_bench_util.ts";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    records: { type: "string", default: "1000000" },
    partitions: { type: "string", default: "1,6" },
    runs: { type: "string", default: "1" },
    agent: { type: "string", default: "dist/messagebuffer" },
    "agent-args": { type: "string", default: "" },
    brokers: { type: "string", default: "127.0.0.1:9092" },
    "value-bytes": { type: "string", default: "100" },
    "no-kcat": { type: "boolean", default: false },
    // Also: start to the first stored record delivered on a backlog of this many GB (0: not).
    "restart-gb": { type: "string", default: "0" },
    "drain-rss": { type: "boolean", default: false },
    settle: { type: "string", default: "0" },
    warm: { type: "boolean", default: false },
    "broker-pid": { type: "string" },
    topics: { type: "string", default: "1" },
  },
  strict: true,
});
const N = Number(values.records);
const RUNS = Number(values.runs);
const VALUE_BYTES = Number(values["value-bytes"]);
const TOPICS = Number(values.topics);
const counts = [
  ["records", N, 1],
  ["runs", RUNS, 1],
  ["value-bytes", VALUE_BYTES, 0],
  ["topics", TOPICS, 1],
] as const;
for (const [name, n, least] of counts) {
  if (!Number.isInteger(n) || n < least) {
    console.error(
      `bench_e2e: --${name} must be a whole number of at least ${least}, not "${values[name]}"`,
    );
    process.exit(2);
  }
}
const PARTITIONS = values.partitions.split(",").map(Number).filter((p) => p > 0);
const BROKERS = values.brokers;
const SETTLE_S = Number(values.settle);
if (TOPICS > 1 && (values.warm || Number(values["restart-gb"]) > 0)) {
  console.error(
    "bench_e2e: --topics is for the end-to-end and drain runs, not --warm or --restart-gb",
  );
  process.exit(2);
}
/** The topics a name stands for, when its records are spread over several (--topics). */
const families = new Map<string, string[]>();
/** `base`'s records spread over TOPICS topics: their names (just `base` with one). */
function spread(base: string): string[] {
  if (TOPICS === 1) return [base];
  const names = Array.from({ length: TOPICS }, (_, j) => `${base}-${j}`);
  families.set(base, names);
  return names;
}

const EXTRA = values["agent-args"].split(" ").filter((a) => a !== "");
const agentCmd = values.agent.split(" ");
if (!existsSync(agentCmd[0])) {
  console.error(`bench_e2e: ${agentCmd[0]} not found (npm run compile, or --agent "PATH ARGS")`);
  process.exit(2);
}

// The drain's agent stores all N lines before it delivers, and at its cap (`--total-size`,
// 1 GiB by default) it prunes the oldest: the topic would then never count N. About 140
// bytes a record are stored for values of 100 and topic names of about 30 characters (so a
// 1 GiB cap holds about 7.7M).
const storedBytes = N * (VALUE_BYTES + 40);
if (
  PARTITIONS.length > 0 && storedBytes > 0.9 * 2 ** 30 &&
  !/(^|\s)--total-size\b/.test(values["agent-args"])
) {
  console.error(
    `bench_e2e: ${N} records need about ${
      (storedBytes / 2 ** 30).toFixed(1)
    } GiB of segments, close to or over the agent's default cap (--total-size 1GiB), where it prunes the oldest: pass --agent-args="--total-size ${
      Math.ceil(storedBytes * 1.5 / 2 ** 30)
    }GiB"`,
  );
  process.exit(2);
}

const WARM = values.warm;
/** The broker's process, paused and resumed by --warm's drain. */
const brokerPid = WARM && PARTITIONS.length > 0 ? findBrokerPid() : 0;

/** --warm's broker: a live Java process (a pid of 0 or less would signal a process group). */
function findBrokerPid(): number {
  const fail = (why: string): never => {
    console.error(`bench_e2e: --warm pauses the broker: ${why}`);
    process.exit(2);
  };
  if (/(^|\s)--mode(=|\s+)(?!\s|buffer\b)/.test(values["agent-args"])) {
    fail("the agent must answer lines once stored (--mode buffer), not once Kafka has them");
  }
  let pid: number;
  if (values["broker-pid"] !== undefined) pid = Number(values["broker-pid"]);
  else {
    const r = spawnSync("bash", [new URL("kafka.sh", import.meta.url).pathname, "status"], {
      encoding: "utf8",
    });
    const m = /^running (\d+) (\S+)/.exec(r.stdout ?? "");
    if (!m) fail("scripts/kafka.sh status finds none running (give --broker-pid PID)");
    if (m![2] !== BROKERS) {
      fail(`scripts/kafka.sh runs ${m![2]}, not ${BROKERS} (give --broker-pid PID)`);
    }
    pid = Number(m![1]);
  }
  if (!Number.isInteger(pid) || pid <= 1) {
    fail(`--broker-pid ${values["broker-pid"]} is not a process id`);
  }
  let cmdline = "";
  try {
    cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8");
  } catch {
    fail(`no process ${pid}`);
  }
  if (!cmdline.includes("java")) fail(`process ${pid} is not a Java process`);
  // A broker left paused would stop everything after: it is resumed on any way out.
  process.on("exit", () => resumeBroker());
  return pid;
}

function resumeBroker(): void {
  try {
    process.kill(brokerPid, "SIGCONT");
  } catch {
    // (gone)
  }
}

/** Pauses the broker, and checks that it is paused (its state in /proc is "T"). */
async function pauseBroker(): Promise<void> {
  process.kill(brokerPid, "SIGSTOP");
  for (let i = 0; i < 2000; i++) {
    const stat = readFileSync(`/proc/${brokerPid}/stat`, "utf8");
    if (stat.slice(stat.lastIndexOf(")") + 2)[0] === "T") return;
    await new Promise((r) => setTimeout(r, 1));
  }
  resumeBroker();
  throw new Error(`the broker (pid ${brokerPid}) did not stop on SIGSTOP`);
}

const CLK_TCK = 100;
/** CPU seconds (user + system) of a /proc stat line. */
function statCpu(stat: string): number {
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(f[11]) + Number(f[12])) / CLK_TCK;
}

/**
 * CPU seconds (user + system) and peak RSS of a live process, from /proc; `jit`: the CPU of
 * its threads named JITWorker (JavaScriptCore compiling hot code; the executable and Bun keep
 * them for the life of the process), part of `cpu`; 0 under Deno, whose V8 names them otherwise.
 */
function procUsage(pid: number): { cpu: number; jit: number; rss: number } {
  const cpu = statCpu(readFileSync(`/proc/${pid}/stat`, "utf8"));
  let jit = 0;
  for (const t of readdirSync(`/proc/${pid}/task`)) {
    let stat: string;
    try {
      stat = readFileSync(`/proc/${pid}/task/${t}/stat`, "utf8");
    } catch {
      continue; // a thread that ended between the listing and its read
    }
    if (stat.includes("(JITWorker")) jit += statCpu(stat);
  }
  return { cpu, jit, rss: peakRss(pid) };
}

function run(cmd: string, args: string[], input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ["pipe", "pipe", "inherit"] });
    let out = "";
    p.stdout.on("data", (d) => (out += d));
    p.on("error", reject);
    // "close", not "exit": the process's output is then read to its end.
    p.on(
      "close",
      (code) =>
        code === 0 ? resolve(out) : reject(new Error(`${cmd} ${args[0] ?? ""}: exit ${code}`)),
    );
    p.stdin.end(input ?? "");
  });
}

// Feeds FILE through the socket in acknowledged mode, reading the answers as they come;
// prints the wall-clock time of its first byte (ms since the epoch), and exits 0 once every
// line is answered "ok".
const FEEDER = `
import socket, sys, threading, time
path, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket(socket.AF_UNIX)
s.connect(path)
print(time.time() * 1000, flush=True)
s.sendall(b"#ack\\n")
res = {"ok": 0, "bad": b""}
def read():
    got, tail = 0, b""
    while got < n + 1:
        d = s.recv(1 << 20)
        if not d: break
        got += d.count(b"\\n")
        if b"error" in d and not res["bad"]: res["bad"] = d[:200]
    res["ok"] = got
t = threading.Thread(target=read)
t.start()
with open(name, "rb") as f:
    s.sendfile(f)
t.join()
if res["bad"] or res["ok"] != n + 1:
    sys.exit(f"feeder: {res['ok']} answers, {res['bad']!r}")
`;

/**
 * Feeds `file` to the agent at `sock`; resolves, once every line is answered, with when its
 * first byte was sent, in `Date.now()` terms (the interpreter's start is not the agent's time).
 */
async function feed(sock: string, file: string): Promise<number> {
  const out = (await run("python3", ["-c", FEEDER, sock, file, String(N)])).trim();
  if (!/^\d+(\.\d+)?$/.test(out)) throw new Error(`feeder: no start time printed (${out})`);
  return Number(out);
}

/** Agents started and not yet exited: stopped if the script ends early (an error, a signal). */
const running = new Set<ReturnType<typeof spawn>>();
/** Temporary directories not yet removed: removed too, then (after the agents are stopped). */
const temps = new Set<string>();
process.on("exit", () => {
  for (const p of running) p.kill("SIGKILL");
  for (const d of temps) rmSync(d, { recursive: true, force: true });
});

/** A new temporary directory, removed on the way out if the script ends before {@link removeTemp}. */
async function makeTemp(prefix: string): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), prefix));
  temps.add(d);
  return d;
}

async function removeTemp(d: string): Promise<void> {
  await rm(d, { recursive: true, force: true });
  temps.delete(d);
}
for (const sig of ["SIGINT", "SIGTERM"] as const) process.on(sig, () => process.exit(130));

/**
 * Writes lines `line(0)` to `line(n - 1)` to `path`, a million at a time: a string holds at
 * most 2^29 - 24 characters, about 4M of these lines.
 */
function writeLines(path: string, n: number, line: (i: number) => string): void {
  const fd = openSync(path, "w");
  try {
    for (let from = 0; from < n; from += 1_000_000) {
      const part: string[] = [];
      for (let i = from; i < Math.min(n, from + 1_000_000); i++) part.push(line(i));
      writeSync(fd, part.join(""));
    }
  } finally {
    closeSync(fd);
  }
}

interface Agent {
  pid: number;
  sock: string;
  /** When it was spawned, and ms from then until its socket was there. */
  started: number;
  readyMs: number;
  stop(): Promise<{ cpu: number; jit: number; rss: number }>;
}

async function startAgent(
  dir: string,
  brokers: string,
  /** False for the agent that only stores (its broker unreachable): it logs errors only. */
  delivers: boolean,
  more: string[] = [],
): Promise<Agent> {
  const [cmd, ...pre] = agentCmd;
  const args = [
    ...pre,
    "run",
    "--brokers",
    brokers,
    "--buffer-dir",
    dir,
    "--log-level",
    delivers ? "warn" : "error", // (the storing agent warns that it cannot connect)
    ...EXTRA,
    ...more,
  ];
  const started = performance.now();
  const p = spawn(cmd, args, { stdio: ["ignore", "inherit", "inherit"] });
  running.add(p);
  const exited = new Promise<void>((r) =>
    p.on("exit", () => {
      running.delete(p);
      r();
    })
  );
  const sock = join(dir, "messagebuffer.sock");
  for (let i = 0; !existsSync(sock); i++) {
    if (i > 10_000 || p.exitCode !== null) throw new Error("the agent did not open its socket");
    await new Promise((r) => setTimeout(r, 1));
  }
  return {
    pid: p.pid!,
    sock,
    started,
    readyMs: performance.now() - started,
    async stop() {
      const u = procUsage(p.pid!);
      p.kill("SIGTERM");
      await exited;
      return u;
    },
  };
}

/** Records in `topic` (or in the topics it stands for: --topics), from the broker's end offsets. */
async function inKafka(topic: string): Promise<number> {
  let n = 0;
  for (const t of families.get(topic) ?? [topic]) {
    const offsets = await admin.fetchTopicOffsets(t);
    n += offsets.reduce((sum, o) => sum + Number(o.high), 0);
  }
  return n;
}

/**
 * Waits until `topic` holds `n` records, asking the broker every `everyMs`: not the agent,
 * whose CPU is measured (a scrape of its metrics cost it 0.5-0.9 ms of CPU; at 1 ms apart,
 * a quarter of its CPU while it started).
 */
async function untilInKafka(topic: string, n: number, everyMs: number): Promise<void> {
  const sleep = () => new Promise((r) => setTimeout(r, everyMs));
  const family = families.get(topic);
  if (family) {
    // Records spread over several topics (--topics): the first alone is asked about until it
    // holds its share (its first record, for n = 1), then all of them, so that each poll
    // costs the broker one request while the records arrive, not one per topic.
    const share = n === 1 ? 1 : Math.ceil(n / family.length);
    while ((await inKafka(family[0])) < share) await sleep();
    if (n === 1) return;
  }
  while ((await inKafka(topic)) < n) await sleep();
}

interface Figure {
  rate: number;
  cpuUs: number;
  /** Agents: of cpuUs, what the JIT compiler's threads took. */
  jitUs?: number;
  rss: number;
  /** Agents: ms from start to socket ready; drain: also to the first record delivered. */
  readyMs?: number;
  firstMs?: number;
  /** With --settle: RSS once the agent has been idle that long after delivering all. */
  settledRss?: number;
}

/** What --warm measures on an end-to-end agent after its first N: see the header. */
interface WarmFiles {
  e2eFile: string;
  e2eTopic: string;
  drainFile: string;
  drainTopic: string;
}

/** Resets the peak RSS the kernel keeps for `pid` (VmHWM) to its RSS now. */
function resetPeakRss(pid: number): void {
  writeFileSync(`/proc/${pid}/clear_refs`, "5");
}

/**
 * The --warm figures of agent `a`, which has delivered a first N: N more lines end to end,
 * then N stored while the broker is paused and drained once it goes on.
 */
async function warmFigures(a: Agent, w: WarmFiles): Promise<{ e2e: Figure; drain: Figure }> {
  /**
   * The figure of N records delivered since `t0` (`Date.now()` terms), for the CPU the agent
   * spent since `u0`.
   */
  const since = (t0: number, u0: { cpu: number; jit: number }): Figure => {
    const u = procUsage(a.pid);
    return {
      rate: N / ((Date.now() - t0) / 1000),
      cpuUs: ((u.cpu - u0.cpu) / N) * 1e6,
      jitUs: ((u.jit - u0.jit) / N) * 1e6,
      rss: u.rss,
    };
  };
  resetPeakRss(a.pid);
  let u0 = procUsage(a.pid);
  let t0 = await feed(a.sock, w.e2eFile);
  await untilInKafka(w.e2eTopic, N, 20);
  const e2e = since(t0, u0);
  await pauseBroker();
  try {
    await feed(a.sock, w.drainFile);
    resetPeakRss(a.pid);
    u0 = procUsage(a.pid);
  } finally {
    resumeBroker();
  }
  t0 = Date.now();
  await untilInKafka(w.drainTopic, N, 20);
  return { e2e, drain: since(t0, u0) };
}

async function endToEnd(
  topicFile: string,
  topic: string,
  warm?: WarmFiles,
): Promise<Figure & { warm?: { e2e: Figure; drain: Figure } }> {
  const dir = await makeTemp("mb-e2e-");
  try {
    const a = await startAgent(join(dir, "buf"), BROKERS, true);
    const t0 = await feed(a.sock, topicFile);
    await untilInKafka(topic, N, 20);
    const s = (Date.now() - t0) / 1000;
    // With --settle, CPU up to the last record delivered (the idle wait is not counted).
    const busy = SETTLE_S > 0 || warm ? procUsage(a.pid) : null;
    let settledRss: number | undefined;
    if (SETTLE_S > 0) {
      await new Promise((r) => setTimeout(r, SETTLE_S * 1000));
      settledRss = currentRss(a.pid);
      if (settledRss === 0) throw new Error(`settle: the agent (pid ${a.pid}) is gone`);
    }
    const warmed = warm ? await warmFigures(a, warm) : undefined;
    const u = await a.stop();
    return {
      rate: N / s,
      cpuUs: ((busy ?? u).cpu / N) * 1e6,
      jitUs: ((busy ?? u).jit / N) * 1e6,
      rss: (busy ?? u).rss,
      readyMs: a.readyMs,
      settledRss,
      warm: warmed,
    };
  } finally {
    await removeTemp(dir);
  }
}

async function drain(topicFile: string, topic: string): Promise<Figure> {
  const dir = await makeTemp("mb-drain-");
  try {
    const store = await startAgent(join(dir, "buf"), "127.0.0.1:1", false);
    await feed(store.sock, topicFile);
    await store.stop();
    const a = await startAgent(join(dir, "buf"), BROKERS, true);
    await untilInKafka(topic, 1, 1);
    const firstMs = performance.now() - a.started;
    await untilInKafka(topic, N, 20);
    const s = (performance.now() - a.started) / 1000;
    const u = await a.stop();
    return {
      rate: N / s,
      cpuUs: (u.cpu / N) * 1e6,
      jitUs: (u.jit / N) * 1e6,
      rss: u.rss,
      readyMs: a.readyMs,
      firstMs,
    };
  } finally {
    await removeTemp(dir);
  }
}

/** Bytes of the files directly in `dir`. */
function dirBytes(dir: string): number {
  let n = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (e.isFile()) n += statSync(join(dir, e.name)).size;
  }
  return n;
}

/**
 * A backlog of `gb` GB stored through the agent's socket (the lines of `topicFile`, again and
 * again), then, `RUNS` times, the agent started on it with the broker up and timed until its
 * first record is delivered; each run stops it at once, leaving nearly all of the backlog,
 * but the last with --drain-rss, which delivers all of it.
 */
async function restartOnBacklog(
  topicFile: string,
  topic: string,
  gb: number,
): Promise<number[]> {
  const dir = await makeTemp("mb-restart-");
  const buf = join(dir, "buf");
  const cap = ["--total-size", `${Math.ceil(gb * 1.2 + 1)}GiB`];
  try {
    const store = await startAgent(buf, "127.0.0.1:1", false, cap);
    let stored = 0;
    for (; dirBytes(buf) < gb * 1e9; stored += N) await feed(store.sock, topicFile);
    await store.stop();
    const firsts: number[] = [];
    for (let r = 0; r < RUNS; r++) {
      const before = await inKafka(topic);
      const a = await startAgent(buf, BROKERS, true, cap);
      await untilInKafka(topic, before + 1, 1);
      firsts.push(performance.now() - a.started);
      if (values["drain-rss"] && r === RUNS - 1) await drainRss(a, topic, stored);
      await a.stop();
    }
    return firsts;
  } finally {
    await removeTemp(dir);
  }
}

/**
 * Waits until `topic` holds `stored` records (the count of a first delivery: records sent
 * twice would end it early), printing `a`'s RSS at each tenth delivered; gives up after 30
 * minutes, or when the agent is gone.
 */
async function drainRss(a: Agent, topic: string, stored: number): Promise<void> {
  const rss = () => {
    const bytes = currentRss(a.pid);
    if (bytes === 0) throw new Error(`drain-rss: the agent (pid ${a.pid}) is gone`);
    return bytes / MiB;
  };
  const t0 = performance.now();
  const from = await inKafka(topic);
  const marks: string[] = [];
  const deadline = Date.now() + 30 * 60_000;
  for (let tenth = 1; tenth <= 10;) {
    if (Date.now() > deadline) throw new Error(`drain-rss: not all delivered in 30 minutes`);
    const n = await inKafka(topic);
    const now = rss();
    if (n - from >= (stored - from) * tenth / 10) {
      marks.push(now.toFixed(0));
      tenth++;
    } else await new Promise((r) => setTimeout(r, 200));
  }
  const s = (performance.now() - t0) / 1000;
  console.log(
    `the whole backlog delivered: ${stored - from} records in ${s.toFixed(1)} s (${
      fmtRate((stored - from) / s)
    } records/s); RSS at each tenth delivered ${marks.join(", ")} MiB; peak ${
      (peakRss(a.pid) / MiB).toFixed(0)
    } MiB`,
  );
}

const RUSAGE = `
import json, resource, subprocess, sys, time
t = time.monotonic()
p = subprocess.run(sys.argv[1:])
s = time.monotonic() - t
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"rc": p.returncode, "s": s, "cpu": r.ru_utime + r.ru_stime, "rss": r.ru_maxrss * 1024}))
`;

async function kcat(topic: string, file: string, n = N): Promise<Figure> {
  const out = JSON.parse(
    await run("python3", [
      "-c",
      RUSAGE,
      "kcat",
      ...kcatProduceArgs(BROKERS, topic, file),
    ]),
  );
  if (out.rc !== 0) throw new Error(`kcat exited ${out.rc}`);
  return { rate: n / out.s, cpuUs: (out.cpu / n) * 1e6, rss: out.rss };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

function show(name: string, figs: Figure[], ref?: Figure[]): string {
  const r = median(figs.map((f) => f.rate));
  const c = median(figs.map((f) => f.cpuUs));
  const m = median(figs.map((f) => f.rss));
  const range = (xs: number[], fmt: (x: number) => string) =>
    xs.length > 1 ? ` (${fmt(Math.min(...xs))}-${fmt(Math.max(...xs))})` : "";
  const ratio = ref
    ? ` | ${(r / median(ref.map((f) => f.rate))).toFixed(2)}x | ${
      (c / median(ref.map((f) => f.cpuUs))).toFixed(2)
    }x`
    : " | | ";
  const jits = figs.flatMap((f) => f.jitUs === undefined ? [] : [f.jitUs]);
  const jit = jits.some((j) => j > 0) ? ` (JIT ${median(jits).toFixed(2)})` : "";
  return `| ${name} | ${fmtRate(r)}/s${range(figs.map((f) => f.rate), fmtRate)} | ${
    c.toFixed(2)
  } us${jit} | ${(m / MiB).toFixed(0)} MiB${
    range(figs.map((f) => f.rss), (x) => (x / MiB).toFixed(0))
  }${ratio} |`;
}

const kafka = new Kafka({ brokers: [BROKERS], logLevel: logLevel.NOTHING, clientId: "bench-e2e" });
const admin = kafka.admin();
await admin.connect();
const work = await makeTemp("mb-bench-e2e-");
const stamp = Date.now().toString(36);
console.log(`# ${machine()}`);
console.log(`# command: deno run -A scripts/bench_e2e.ts ${process.argv.slice(2).join(" ")}`);
console.log(
  `# agent: ${values.agent} ${EXTRA.join(" ")}; ${N} records, ${
    values["value-bytes"]
  }-byte values, keys k0..k999`,
);
try {
  const value = "x".repeat(VALUE_BYTES);
  // A first idempotent producer waits for the broker's coordinator to load: not measured.
  const warm = `bench-e2e-${stamp}-warm-up`;
  await admin.createTopics({ topics: [{ topic: warm }], waitForLeaders: true });
  await writeFile(join(work, "warm.txt"), `k\t${value}\n`.repeat(1000));
  await kcat(warm, join(work, "warm.txt"), 1000);
  await admin.deleteTopics({ topics: [warm] });
  for (const p of PARTITIONS) {
    const figs = {
      kcat: [] as Figure[],
      e2e: [] as Figure[],
      drain: [] as Figure[],
      e2eWarm: [] as Figure[],
      drainWarm: [] as Figure[],
    };
    const kinds = ["e2e", "drain", ...(WARM ? ["e2e-warm", "drain-warm"] : [])];
    for (let r = 0; r < RUNS; r++) {
      const t = (k: string) => `bench-e2e-${stamp}-p${p}-r${r}-${k}`;
      await admin.createTopics({
        topics: [t("kcat"), ...kinds.flatMap((k) => spread(t(k)))].map((topic) => ({
          topic,
          numPartitions: p,
        })),
        waitForLeaders: true,
      });
      writeLines(join(work, "kcat.txt"), N, (i) => `k${i % 1000}\t${value}\n`);
      for (const k of kinds) {
        const names = spread(t(k));
        writeLines(
          join(work, `${k}.txt`),
          N,
          (i) => `${names[i % names.length]}\tk${i % 1000}\t${value}\n`,
        );
      }
      if (!values["no-kcat"]) figs.kcat.push(await kcat(t("kcat"), join(work, "kcat.txt")));
      const e2e = await endToEnd(
        join(work, "e2e.txt"),
        t("e2e"),
        WARM
          ? {
            e2eFile: join(work, "e2e-warm.txt"),
            e2eTopic: t("e2e-warm"),
            drainFile: join(work, "drain-warm.txt"),
            drainTopic: t("drain-warm"),
          }
          : undefined,
      );
      figs.e2e.push(e2e);
      if (e2e.warm) {
        figs.e2eWarm.push(e2e.warm.e2e);
        figs.drainWarm.push(e2e.warm.drain);
      }
      figs.drain.push(await drain(join(work, "drain.txt"), t("drain")));
      for (const k of [...kinds, ...(values["no-kcat"] ? [] : ["kcat"])]) {
        const sum = await inKafka(t(k));
        if (sum !== N) throw new Error(`topic ${t(k)} holds ${sum} records, not ${N}`);
      }
      await admin.deleteTopics({ topics: [t("kcat"), ...kinds.flatMap((k) => spread(t(k)))] });
    }
    const ref = values["no-kcat"] ? undefined : figs.kcat;
    console.log(`\n${p} partition(s), median of ${RUNS}:\n`);
    console.log("| sender | records/s | CPU per record | peak RSS | rate / kcat | CPU / kcat |");
    console.log("|---|---|---|---|---|---|");
    if (ref) console.log(show("kcat -P", ref));
    console.log(show("agent end to end", figs.e2e, ref));
    console.log(show("agent drain", figs.drain, ref));
    if (WARM) {
      console.log(show(`agent end to end, warm (${N} more)`, figs.e2eWarm, ref));
      console.log(show("agent drain, warm (broker paused, then resumed)", figs.drainWarm, ref));
    }
    if (SETTLE_S > 0) {
      const settled = figs.e2e.map((f) => (f.settledRss! / MiB).toFixed(0)).join(", ");
      const peaks = figs.e2e.map((f) => (f.rss / MiB).toFixed(0)).join(", ");
      console.log(
        `\nagent end to end, RSS ${SETTLE_S} s after the last record was delivered: ${settled} MiB (peaks ${peaks} MiB)`,
      );
    }
    const ready = [...figs.e2e, ...figs.drain].map((f) => f.readyMs!);
    const first = figs.drain.map((f) => f.firstMs!);
    console.log(
      `\nagent start to socket ready: median ${median(ready).toFixed(0)} ms (${
        Math.min(...ready).toFixed(0)
      }-${Math.max(...ready).toFixed(0)}); start to the first stored record delivered (${
        N / 1e6
      }M backlog): median ${median(first).toFixed(0)} ms (${Math.min(...first).toFixed(0)}-${
        Math.max(...first).toFixed(0)
      })`,
    );
  }
  const gb = Number(values["restart-gb"]);
  if (gb > 0) {
    const topic = `bench-e2e-${stamp}-restart`;
    await admin.createTopics({ topics: [{ topic }], waitForLeaders: true });
    writeLines(join(work, "restart.txt"), N, (i) => `${topic}\tk${i % 1000}\t${value}\n`);
    const firsts = await restartOnBacklog(join(work, "restart.txt"), topic, gb);
    console.log(
      `\nagent start to the first stored record delivered, on a ${gb} GB backlog: median ${
        median(firsts).toFixed(0)
      } ms (${firsts.map((f) => f.toFixed(0)).join(", ")})`,
    );
    await admin.deleteTopics({ topics: [topic] });
  }
} finally {
  await admin.disconnect();
  await removeTemp(work);
}
