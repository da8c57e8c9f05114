// The agent as users run it: a real process, a real Unix socket, a real Kafka broker.
// Runs the source (deno/bun) or, with MB_AGENT_BIN, the single-file executable.

import { afterEach, describe, it } from "node:test";
import assert from "node:assert/strict";
import { readdir, readFile, stat, writeFile } from "node:fs/promises";
import process from "node:process";
import { Buffer } from "node:buffer";
import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { escapeField } from "../../src/ingest/protocol.ts";
import { SEGMENT_FOOTER_SIZE } from "../../src/segment/format.ts";
import { nativeCrc32c } from "../../src/binary/crc32c.ts";
import {
  type Agent,
  agentCommand,
  freePort,
  RawClient,
  runCli,
  scrapeMetrics,
  startAgent,
  waitForMetrics,
} from "../_agent.ts";
import { tempDir, waitFor } from "../_helpers.ts";
import { alterTopic, BROKERS, consume, createTopics, uniqueTopic } from "../_kafka.ts";

let cleanup = async () => {};
const agents: Agent[] = [];
afterEach(async () => {
  for (const a of agents.splice(0)) await a.stop("SIGKILL");
  await cleanup();
});

async function agentIn(dir: string, extra: string[] = []): Promise<Agent> {
  const a = await startAgent([
    "--brokers",
    BROKERS.join(","),
    "--buffer-dir",
    dir,
    "--log-level",
    "debug",
    ...extra,
  ]);
  agents.push(a);
  return a;
}

/** An agent pointed at an address where no broker listens: it stores lines it cannot deliver. */
async function offlineAgent(dir: string, extra: string[] = []): Promise<Agent> {
  const a = await startAgent(["--brokers", "127.0.0.1:1", "--buffer-dir", dir, ...extra]);
  agents.push(a);
  return a;
}

describe("agent (messagebuffer run)", () => {
  it("ingests 100K lines over several connections, text and JSON, acked and not, and Kafka gets exactly them", async () => {
    const t = await tempDir();
    cleanup = t.cleanup;
    const topic = uniqueTopic("agent-e2e");
    await createTopics([topic], 2);
    await agentIn(t.dir);
    const sock = `${t.dir}/messagebuffer.sock`;
    const PER = 25_000;
    const expected = new Set<string>();
    const clients = await Promise.all([0, 1, 2, 3].map(() => RawClient.connect(sock)));
    await Promise.all(clients.map(async (c, ci) => {
      const acked = ci % 2 === 0;
      let text = acked ? "#ack\n" : "";
      for (let i = 0; i < PER; i++) {
        const value = `c${ci}-${i}${i % 100 === 0 ? "\ttab\nnl\\bs" : ""}`;
        expected.add(value);
        text += ci < 2
          ? `${topic}\tk${i % 5}\t${escapeField(value)}\n`
          : JSON.stringify({ topic, key: `k${i % 5}`, value, headers: { client: String(ci) } }) +
            "\n";
        if (text.length > 1 << 16) {
          c.write(text);
          text = "";
        }
      }
      c.write(text);
      if (acked) {
        const answers = await c.waitAnswers(PER + 1, 60_000);
        assert.equal(
          answers.filter((a) => a === "ok").length,
          PER + 1,
          answers.find((a) => a !== "ok"),
        );
      }
      c.end();
      await c.closed;
    }));
    const got = await consume([topic], 4 * PER, { timeoutMs: 120_000 });
    const values = got.map((r) => r.value!.toString());
    assert.equal(values.length, 4 * PER);
    assert.deepEqual(new Set(values), expected);
    // Per connection, per key (same partition), in the order written.
    const byStream = new Map<string, number[]>();
    for (const r of got.sort((a, b) => a.offset - b.offset)) {
      const v = r.value!.toString();
      const m = /^c(\d)-(\d+)/.exec(v)!;
      const k = `${m[1]}/${r.key}`;
      if (!byStream.has(k)) byStream.set(k, []);
      byStream.get(k)!.push(Number(m[2]));
    }
    for (const [k, seq] of byStream) {
      assert.deepEqual(
        seq,
        [...seq].sort((a, b) => a - b),
        `order of ${k}`,
      );
    }
    assert.equal(
      got.filter((r) => r.headers.client !== undefined).length,
      2 * PER,
      "JSON headers arrive",
    );
  });

  it("answers each bad line with an error naming it and harms nothing else", async () => {
    const t = await tempDir();
    cleanup = t.cleanup;
    const topic = uniqueTopic("agent-bad");
    await createTopics([topic], 1);
    await agentIn(t.dir, ["--max-line-bytes", "1000"]);
    const sock = `${t.dir}/messagebuffer.sock`;
    const c = await RawClient.connect(sock);
    const lines = [
      `${topic}\tk\tgood-1`,
      `${topic}\tk\tbad\\escape`,
      `{"topic":"${topic}"}`,
      `not a topic!\tk\tv`,
      `{"topic": "${topic}", "value": `,
      `${topic}\tk\t${"x".repeat(5000)}`,
      "\x00\x01\xff\xfe garbage",
      `${topic}\tk\tgood-2`,
    ];
    c.write("#ack\n" + lines.join("\n") + "\n");
    const answers = await c.waitAnswers(lines.length + 1);
    assert.equal(answers[0], "ok");
    assert.equal(answers[1], "ok");
    assert.match(answers[2], /^error line 2: bad escape "\\e" in value/);
    assert.match(answers[3], /^error line 3: missing field "value"/);
    assert.match(answers[4], /^error line 4: Invalid topic name "not a topic!"/);
    assert.match(answers[5], /^error line 5: invalid JSON/);
    assert.match(answers[6], /^error line 6: line too long \(over 1000 bytes\)/);
    assert.match(answers[7], /^error line 7: /);
    assert.equal(answers[8], "ok");
    // A client that disconnects mid-line loses only that line.
    const d = await RawClient.connect(sock);
    d.write(`${topic}\tk\tcomplete\n${topic}\tk\tcut-off-in-the-mid`);
    d.end();
    await d.closed;
    // 200 concurrent connections, each with one acked line.
    const many = await Promise.all(Array.from({ length: 200 }, () => RawClient.connect(sock)));
    many.forEach((m, i) => m.write(`#ack\n${topic}\tk\tconn-${i}\n`));
    await Promise.all(many.map((m) => m.waitAnswers(2)));
    for (const m of many) {
      assert.deepEqual(m.answers, ["ok", "ok"]);
      m.end();
    }
    const got = await consume([topic], 203);
    const values = got.map((r) => r.value!.toString());
    assert.equal(values.length, 203);
    assert.ok(
      values.includes("good-1") && values.includes("good-2") && values.includes("complete"),
    );
    assert.ok(!values.some((v) => v.startsWith("cut-off")));
  });

  it("answers every line of a client that half-closes after writing, then closes its side", async () => {
    const t = await tempDir();
    cleanup = t.cleanup;
    await offlineAgent(t.dir);
    const sock = `${t.dir}/messagebuffer.sock`;
    for (const n of [1, 1_000, 20_000]) {
      const c = await RawClient.connect(sock);
      let text = "#ack\n";
      for (let i = 0; i < n; i++) text += `half-close\t\tline-${i}\n`;
      // All of it in one go, then a half-close (what `nc -U -N` does): the client still reads.
      const errors: Error[] = [];
      c.socket.on("error", (e) => errors.push(e));
      c.socket.end(text);
      await c.closed;
      assert.equal(c.answers.length, n + 1, `${c.answers.length} answers to #ack and ${n} line(s)`);
      assert.deepEqual(errors, []);
      assert.ok(c.peerEnded, "the agent ended its side");
      assert.equal(
        c.answers.filter((a) => a === "ok").length,
        n + 1,
        c.answers.find((a) => a !== "ok"),
      );
    }
  });

  it("on SIGTERM while clients write, exits 0, and every acknowledged line reaches Kafka after a restart", async () => {
    const t = await tempDir();
    cleanup = t.cleanup;
    const topic = uniqueTopic("agent-sigterm");
    await createTopics([topic], 1);
    const a = await agentIn(t.dir, ["--fsync", "always"]);
    const sock = `${t.dir}/messagebuffer.sock`;
    const clients = await Promise.all([0, 1, 2].map(() => RawClient.connect(sock)));
    let stop = false;
    const sent = [0, 0, 0];
    const writers = clients.map(async (c, ci) => {
      c.write("#ack\n");
      c.socket.on("error", () => {});
      while (!stop && !c.socket.destroyed) {
        // Paced by the agent's answers: up to 1,000 lines in flight, topped up as answers come.
        if (sent[ci] - (c.answers.length - 1) < 1000) {
          let text = "";
          for (let i = 0; i < 200; i++) text += `${topic}\t\ts${ci}-${sent[ci]++}\n`;
          c.write(text);
        }
        await new Promise((r) => setTimeout(r, 1));
      }
    });
    await waitFor(
      () => clients.every((c) => c.answers.length > 1000),
      30_000,
      "acks before SIGTERM",
    );
    const code = await a.stop("SIGTERM");
    stop = true;
    await Promise.all(writers);
    await Promise.all(clients.map((c) => c.closed));
    assert.equal(code, 0, a.log());
    // Every line the agent read (each one stored: `written`) was answered before it hung up.
    const written = Number(/ stopped written=(\d+)/.exec(a.log())?.[1]);
    const answers = clients.flatMap((c) => c.answers.slice(1));
    assert.equal(answers.length, written, "answers to the lines the agent stored");
    assert.deepEqual(answers.filter((x) => x !== "ok"), []);
    const acked: string[] = [];
    clients.forEach((c, ci) =>
      c.answers.slice(1).forEach((ans, i) => ans === "ok" && acked.push(`s${ci}-${i}`))
    );
    assert.ok(acked.length >= 3000, `only ${acked.length} acknowledged`);
    await agentIn(t.dir);
    const got = await consume([topic], acked.length, { timeoutMs: 60_000 });
    const values = new Set(got.map((r) => r.value!.toString()));
    for (const v of acked) assert.ok(values.has(v), `acknowledged ${v} missing`);
  });

  it("with --when-full block, stops reading a client at the cap instead of buffering, and loses no acknowledged line", async () => {
    const t = await tempDir();
    cleanup = t.cleanup;
    const topic = uniqueTopic("agent-block");
    await createTopics([topic], 1);
    const cap = ["--file-max-size", "0.01", "--total-size", "0.05", "--when-full", "block"];
    const metrics = `127.0.0.1:${await freePort()}`;
    // No broker reachable: nothing is delivered, so the 50 KB cap fills and never frees.
    const a = await offlineAgent(t.dir, [...cap, "--metrics", metrics]);
    const c = await RawClient.connect(`${t.dir}/messagebuffer.sock`);
    c.socket.on("error", () => {});
    let text = "#ack\n";
    const sent = 20_000;
    for (let i = 0; i < sent; i++) text += `${topic}\t\tb-${i}-${"z".repeat(90)}\n`;
    c.write(text); // 2 MB, forty times the cap
    // Settled: writes wait for room, every line read is either stored (and answered) or one
    // of those waiting writes.
    const m = await waitForMetrics(
      metrics,
      (m) =>
        m.messagebuffer_blocked_writes > 0 &&
        c.answers.length === 1 + m.messagebuffer_records_written_total &&
        m.messagebuffer_ingest_lines_total ===
          1 + m.messagebuffer_records_written_total + m.messagebuffer_blocked_writes,
      "blocked writes, and an answer to every stored line",
    );
    const stalled = c.answers.length;
    assert.ok(stalled < 1000, `${stalled - 1} lines taken for a 50 KB cap`);
    assert.ok(c.answers.every((x) => x === "ok"), "nothing refused, nothing dropped: writes wait");
    // It read up to the cap and at most one more read's worth (what the kernel held: about
    // 600 lines under Deno, 2,100 under Bun), not what the client sent.
    const read = m.messagebuffer_ingest_lines_total;
    assert.ok(read < sent / 4, `${read} of ${sent} lines read while blocked`);
    // And it stays so: the agent serves other requests (here, scrapes) and reads no more.
    for (let i = 0; i < 10; i++) {
      const again = await scrapeMetrics(metrics);
      assert.equal(again.messagebuffer_ingest_lines_total, read);
      assert.equal(again.messagebuffer_blocked_writes, m.messagebuffer_blocked_writes);
    }
    assert.equal(c.answers.length, stalled);
    const st = JSON.parse((await runCli(["status", "--buffer-dir", t.dir, "--json"])).stdout);
    assert.ok(st.backlog.bytes <= 60 * 1024, `backlog ${st.backlog.bytes} bytes`);
    assert.equal(await a.stop("SIGTERM"), 0);
    c.socket.destroy();
    // With a broker, every acknowledged line arrives.
    await agentIn(t.dir, cap);
    const got = await consume([topic], stalled - 1);
    const values = new Set(got.map((r) => r.value!.toString().split("-").slice(0, 2).join("-")));
    for (let i = 0; i < stalled - 1; i++) {
      assert.ok(values.has(`b-${i}`), `acknowledged b-${i} missing`);
    }
  });

  it("with --memory-limit below what it needs, collects garbage, says so in /metrics, and still delivers every line", async () => {
    const t = await tempDir();
    cleanup = t.cleanup;
    const topic = uniqueTopic("agent-memlimit");
    await createTopics([topic], 2);
    const metrics = `127.0.0.1:${await freePort()}`;
    const a = await agentIn(t.dir, ["--memory-limit", "1MiB", "--metrics", metrics]);
    // The executable and Bun can collect; Deno only with --v8-flags=--expose-gc (not given).
    const collects = Boolean(process.env.MB_AGENT_BIN) || !("Deno" in globalThis);
    const c = await RawClient.connect(`${t.dir}/messagebuffer.sock`);
    const n = 20_000;
    let text = "#ack\n";
    for (let i = 0; i < n; i++) text += `${topic}\tk${i % 97}\tm-${i}-${"v".repeat(80)}\n`;
    c.write(text);
    await waitFor(() => c.answers.length === n + 1, 60_000, "an answer to every line");
    assert.ok(c.answers.every((x) => x === "ok"), "every line stored");
    const m = await waitForMetrics(
      metrics,
      (m) =>
        m.messagebuffer_records_delivered_total === n &&
        (!collects || m.messagebuffer_memory_collections_total >= 2),
      "every line delivered, and collections made",
    );
    // (0: not in effect, where the runtime cannot collect)
    assert.equal(m.messagebuffer_memory_limit_bytes, collects ? 1024 * 1024 : 0);
    assert.ok(m.process_resident_memory_bytes > 1024 * 1024, "the resident set, in bytes");
    if (collects) {
      assert.ok(m.messagebuffer_memory_collection_seconds_total > 0);
    } else {
      assert.equal(m.messagebuffer_memory_collections_total, 0);
      assert.match(a.log(), /memory_limit has no effect/);
    }
    const got = await consume([topic], n);
    assert.equal(got.length, n);
    assert.deepEqual(
      new Set(got.map((r) => r.value!.toString().split("-")[1])),
      new Set(Array.from({ length: n }, (_, i) => String(i))),
    );
    c.socket.destroy();
    assert.equal(await a.stop("SIGTERM"), 0);
    if (collects) assert.match(a.log(), /memory limit .*collections=\d+/);
  });

  it("with --when-full reject, answers lines past the cap with an error saying the buffer is full", async () => {
    const t = await tempDir();
    cleanup = t.cleanup;
    await offlineAgent(t.dir, [
      "--file-max-size",
      "0.01",
      "--total-size",
      "0.05",
      "--when-full",
      "reject",
    ]);
    const lines =
      Array.from({ length: 1000 }, (_, i) => `t\t\tr-${i}-${"q".repeat(90)}`).join("\n") + "\n";
    const r = await runCli(["send", "--socket", `${t.dir}/messagebuffer.sock`], lines);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /refused: line \d+: Buffer ".*" is full \(\d+ of 52429 bytes\); the record was not stored/,
    );
    const summary = /sent 1000 line\(s\): (\d+) accepted, (\d+) refused/.exec(r.stderr);
    assert.ok(summary, r.stderr);
    assert.ok(Number(summary[1]) > 100 && Number(summary[2]) > 100, summary[0]);
  });

  it("--mode direct-until-error acknowledges lines once Kafka has them, with no segment written", async () => {
    const t = await tempDir();
    cleanup = t.cleanup;
    const topic = uniqueTopic("agent-direct");
    await createTopics([topic], 1);
    const port = await freePort();
    await agentIn(t.dir, ["--mode", "direct-until-error", "--metrics", `127.0.0.1:${port}`]);
    await waitForMetrics(
      `127.0.0.1:${port}`,
      (m) => m.messagebuffer_provider_up === 1,
      "the provider to connect",
    );
    const c = await RawClient.connect(`${t.dir}/messagebuffer.sock`);
    let text = "#ack\n";
    for (let i = 0; i < 3000; i++) text += `${topic}\t\td-${i}\n`;
    c.write(text);
    const answers = await c.waitAnswers(3001, 60_000);
    assert.deepEqual(new Set(answers), new Set(["ok"]));
    const m = await scrapeMetrics(`127.0.0.1:${port}`);
    assert.equal(m.messagebuffer_direct, 1, "writes go straight to Kafka");
    assert.equal(m.messagebuffer_records_sent_direct_total, 3000);
    assert.equal(m.messagebuffer_records_written_total, 0, "no line went through a segment");
    c.end();
    const got = await consume([topic], 3000);
    assert.deepEqual(
      got.sort((a, b) => a.offset - b.offset).map((r) => r.value!.toString()),
      Array.from({ length: 3000 }, (_, i) => `d-${i}`),
    );
  });

  it("--mode error-on-error answers each line Kafka did not take with Kafka's error, and stores nothing", async () => {
    const t = await tempDir();
    cleanup = t.cleanup;
    const sock = `${t.dir}/sock/mb.sock`;
    await offlineAgent(`${t.dir}/buffer`, [
      "--mode",
      "error-on-error",
      "--socket",
      sock,
      "--direct-timeout",
      "20000",
    ]);
    const r = await runCli(["send", "--socket", sock], "t\t\tone\nt\t\ttwo\n");
    assert.equal(r.code, 1);
    assert.match(r.stderr, /refused: line 1: Kafka did not acknowledge a record for topic "t": /);
    assert.match(r.stderr, /sent 2 line\(s\): 0 accepted, 2 refused/);
    assert.deepEqual(
      await readdir(`${t.dir}/buffer`).catch(() => []),
      [],
      "the buffer directory is not used",
    );
  });

  it("closes a connection idle past --idle-timeout; `send` reading a quiet pipe reconnects and loses nothing", async () => {
    const t = await tempDir();
    cleanup = t.cleanup;
    const topic = uniqueTopic("agent-idle");
    await createTopics([topic]);
    const port = await freePort();
    await agentIn(t.dir, ["--idle-timeout", "1", "--metrics", `127.0.0.1:${port}`]);
    const sock = `${t.dir}/messagebuffer.sock`;
    // A client that connects and never writes is closed.
    const silent = await RawClient.connect(sock);
    await silent.closed;
    // `send` on a pipe that goes quiet (as `tail -F app.log | messagebuffer send` does).
    const [cmd, argv] = agentCommand(["send", "--socket", sock]);
    const send = spawn(cmd, argv, { stdio: ["pipe", "pipe", "pipe"] });
    let out = "";
    send.stdout!.on("data", (d) => (out += d));
    send.stderr!.on("data", (d) => (out += d));
    const exited = new Promise<number | null>((r) => send.once("exit", (c) => r(c)));
    send.stdin!.write(`${topic}\t\tone\n`);
    // The agent closes send's connection once it has been idle: two closes, the silent one's
    // too. Its side is gone once `send` has closed its own, on seeing the agent's close: input
    // written before that would race the close, and be refused (counted) as it arrives.
    await waitForMetrics(
      `127.0.0.1:${port}`,
      (m) =>
        m.messagebuffer_ingest_idle_timeouts_total >= 2 && m.messagebuffer_ingest_connections === 0,
      "the idle close of send's connection, seen by send",
    );
    send.stdin!.end(`${topic}\t\ttwo\n`);
    assert.equal(await exited, 0, out);
    assert.match(out, /2 accepted/);
    const got = await consume([topic], 2);
    assert.deepEqual(got.map((r) => String(r.value)), ["one", "two"]);
  });

  it("--mode block-on-error answers a line Kafka does not take within --direct-timeout with an error", async () => {
    const t = await tempDir();
    cleanup = t.cleanup;
    const sock = `${t.dir}/mb.sock`;
    await offlineAgent(`${t.dir}/buffer`, [
      "--mode",
      "block-on-error",
      "--socket",
      sock,
      "--direct-timeout",
      "700",
    ]);
    const started = Date.now();
    const r = await runCli(["send", "--socket", sock], "t\t\tone\n");
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /refused: line 1: Kafka did not acknowledge a record for topic "t" within 700 ms; (last error: |no send had failed yet)/,
    );
    assert.ok(Date.now() - started >= 650, "the line waited for its bound");
  });

  it("top shows a running agent's backlog, rates and counters, once as text and as JSON", async () => {
    const t = await tempDir();
    cleanup = t.cleanup;
    const sock = `${t.dir}/messagebuffer.sock`;
    await offlineAgent(t.dir);
    const lines = Array.from({ length: 500 }, (_, i) => `t\t\tr-${i}`).join("\n") +
      "\nbad topic!\t\tx\n";
    const sent = await runCli(["send", "--socket", sock], lines);
    assert.equal(sent.code, 1, sent.stderr);
    const once = await runCli(["top", "--socket", sock, "--once", "--interval", "0.2"]);
    assert.equal(once.code, 0, once.stderr);
    assert.match(once.stdout, /^mode +buffer, writes go through the disk$/m);
    assert.match(once.stdout, /^provider +kafka (connecting|retrying)/m);
    assert.match(once.stdout, /^backlog +500 records, [\d.]+ KiB, 1 segments, oldest /m);
    // 500 records, the bad line and send's #ack (top's own #stats lines are not counted).
    assert.match(once.stdout, /^totals +500 stored, 0 delivered \(0 direct\), 502 lines read$/m);
    assert.match(once.stdout, /0 write errors, 0 failed writes, 1 lines refused, 0 partial lines/);
    const json = await runCli(["top", "--socket", sock, "--json", "--interval", "0.2"]);
    assert.equal(json.code, 0, json.stderr);
    const snap = JSON.parse(json.stdout);
    assert.equal(snap.buffer.backlog.records, 500);
    assert.equal(snap.buffer.counters.written, 500);
    assert.equal(snap.ingest.linesRejected, 1);
    assert.equal(snap.rates.delivered, 0);
    const none = await runCli(["top", "--socket", `${t.dir}/nothing.sock`, "--once"]);
    assert.equal(none.code, 1);
    assert.match(none.stderr, /cannot reach an agent at .*nothing\.sock: ENOENT/);
  });

  it("replay sends dead letters again once the cause is fixed, with key, headers and timestamp, and never twice", async () => {
    const t = await tempDir();
    cleanup = t.cleanup;
    const sock = `${t.dir}/messagebuffer.sock`;
    const topic = uniqueTopic("agent-replay");
    await createTopics([topic], 1, { "max.message.bytes": "20000" });
    const agent = await agentIn(t.dir);
    const big = (i: number) => `big-${i}-${"z".repeat(50_000)}`;
    const lines = [
      JSON.stringify({ topic, value: "small-0" }),
      JSON.stringify({
        topic,
        key: "k1",
        value: big(1),
        headers_base64: [["bin", "AAEC/w=="], ["bin", "Aw=="]],
        timestamp: 1_700_000_000_000,
      }),
      JSON.stringify({ topic, value: "small-2" }),
      JSON.stringify({ topic, value: big(3), timestamp: 1_700_000_000_003 }),
    ].join("\n") + "\n";
    assert.equal((await runCli(["send", "--socket", sock], lines)).code, 0);
    const deadCount = async () =>
      JSON.parse((await runCli(["status", "--buffer-dir", t.dir, "--json"])).stdout).deadLetters
        .records;
    for (const deadline = Date.now() + 60_000; (await deadCount()) < 2;) {
      assert.ok(Date.now() < deadline, "the two large records reach dead/");
      await new Promise((r) => setTimeout(r, 200));
    }
    const dry = await runCli(["replay", "--buffer-dir", t.dir, "--dry-run"]);
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, /dead\/\S+\.seg: 2 records, 0 replayed before, 2 to replay/);
    assert.match(dry.stdout, /refused by Kafka for: .*TOO_LARGE/);
    assert.match(dry.stdout, /dry run: nothing sent/);
    await alterTopic(topic, { "max.message.bytes": "1000000" }); // the operator fixes the cause
    const first = await runCli(["replay", "--buffer-dir", t.dir]);
    assert.equal(first.code, 0, first.stderr + first.stdout);
    assert.match(first.stdout, /replayed 2 records \(0 refused\)/);
    const again = await runCli(["replay", "--buffer-dir", t.dir]);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /2 records, 2 replayed before, 0 to replay/);
    assert.match(again.stdout, /replayed 0 records/);
    const got = await consume([topic], 4);
    assert.equal(got.length, 4, "each record once: two delivered, two replayed");
    const byValue = new Map(got.map((r) => [r.value!.toString(), r]));
    const r1 = byValue.get(big(1))!;
    assert.equal(r1.key!.toString(), "k1");
    assert.deepEqual(
      (r1.headers.bin as Buffer[]).map((b) => [...b]),
      [[0, 1, 2, 255], [3]],
      "headers as they were written, without the dead-letter headers",
    );
    assert.equal(r1.headers["messagebuffer-error"], undefined);
    assert.equal(r1.timestamp, 1_700_000_000_000, "the original timestamp");
    assert.equal(byValue.get(big(3))!.timestamp, 1_700_000_000_003);
    const journal = await readFile(`${t.dir}/dead/replay.log`, "utf8");
    assert.match(journal, /"accepted":\[\[0,1\]\]/);

    // The dead letters' life after the replay: status and list say they were replayed;
    // purge keeps the file the running agent may still add to, and removes it once stopped.
    const status = await runCli(["status", "--buffer-dir", t.dir]);
    assert.match(
      status.stdout,
      /dead letters: 2 records in 1 file\(s\) .*: 0 wait to be replayed .*2 replayed/,
    );
    const list = await runCli(["dead-letters", "--buffer-dir", t.dir]);
    assert.match(
      list.stdout,
      /dead\/\S+\.seg: 2 records, replayed \(the running agent may still add to it\)/,
    );
    assert.match(list.stdout, /refused by Kafka for: MESSAGE_TOO_LARGE \(2\)/);
    const kept = await runCli(["dead-letters", "purge", "--buffer-dir", t.dir]);
    assert.equal(kept.code, 0, kept.stderr);
    assert.match(kept.stdout, /kept dead\/\S+\.seg: the running agent may still add to it/);
    await agent.stop();
    const dryPurge = await runCli(["dead-letters", "purge", "--dry-run", "--buffer-dir", t.dir]);
    assert.match(dryPurge.stdout, /would remove dead\/\S+\.seg \(2 records, 2 replayed\)/);
    assert.equal((await readdir(`${t.dir}/dead`)).filter((f) => f.endsWith(".seg")).length, 1);
    const purge = await runCli(["dead-letters", "purge", "--buffer-dir", t.dir]);
    assert.equal(purge.code, 0, purge.stderr);
    assert.match(purge.stdout, /removed 1 file\(s\), 2 records; kept 0/);
    assert.deepEqual((await readdir(`${t.dir}/dead`)).filter((f) => f.endsWith(".seg")), []);
    assert.equal(await readFile(`${t.dir}/dead/replay.log`, "utf8"), "", "the journal forgets it");
    assert.match(
      (await runCli(["status", "--buffer-dir", t.dir])).stdout,
      /dead letters: 0 records/,
    );
  });

  it("--lanes 3 spreads topics over lanes, delivers each in order, and status and top show the lanes", async () => {
    const t = await tempDir();
    cleanup = t.cleanup;
    const sock = `${t.dir}/messagebuffer.sock`;
    const topics = [uniqueTopic("lane-a"), uniqueTopic("lane-b"), uniqueTopic("lane-c")];
    await createTopics(topics, 1);
    const agent = await agentIn(t.dir, ["--lanes", "3"]);
    let lines = "";
    for (let i = 0; i < 2000; i++) {
      for (const topic of topics) lines += `${topic}\t\t${topic}-${i}\n`;
    }
    assert.equal((await runCli(["send", "--socket", sock], lines)).code, 0);
    const got = await consume(topics, 6000);
    for (const topic of topics) {
      assert.deepEqual(
        got.filter((r) => r.topic === topic).sort((a, b) => a.offset - b.offset)
          .map((r) => r.value!.toString()),
        Array.from({ length: 2000 }, (_, i) => `${topic}-${i}`),
        `${topic}: every line once, in order`,
      );
    }
    const top = await runCli(["top", "--socket", sock, "--once", "--interval", "0.2"]);
    assert.equal(top.code, 0, top.stderr);
    for (let lane = 0; lane < 3; lane++) {
      assert.match(top.stdout, new RegExp(`^lane ${lane} +ready, .* 1 topic \\(lane-`, "m"));
    }
    await agent.stop("SIGTERM");
    const status = await runCli(["status", "--buffer-dir", t.dir]);
    assert.match(status.stdout, /\(3 lanes\)/);
    assert.match(status.stdout, /backlog: 0 records/);
    const map = await readFile(`${t.dir}/lanes/topics`, "utf8");
    assert.equal(map.trim().split("\n").length, 3, "one assignment per topic, kept for restarts");
  });

  it("a start that fails (the metrics port is taken) logs an ERROR, exits 1 and leaves no socket file and no LOCK", async () => {
    const t = await tempDir();
    cleanup = t.cleanup;
    const taken = await new Promise<import("node:net").Server>((resolve) => {
      const srv = createServer();
      srv.listen(0, "127.0.0.1", () => resolve(srv));
    });
    try {
      const port = (taken.address() as import("node:net").AddressInfo).port;
      const r = await runCli(
        [
          "run",
          "--brokers",
          BROKERS.join(","),
          "--buffer-dir",
          t.dir,
          "--metrics",
          `127.0.0.1:${port}`,
        ],
        undefined,
        { timeoutMs: 60_000 },
      );
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /ERROR cannot start .*EADDRINUSE|ERROR cannot start .*in use/);
      const left = await readdir(t.dir);
      assert.ok(!left.includes("LOCK"), `no LOCK: ${left}`);
      assert.ok(!left.includes("messagebuffer.sock"), `no socket: ${left}`);
    } finally {
      taken.close();
    }
  });

  it("a buffer directory whose path runs through a file is refused with an ERROR naming the flag", async () => {
    const r = await runCli(
      ["run", "--brokers", BROKERS.join(","), "--buffer-dir", "/dev/null/x"],
      undefined,
      {
        timeoutMs: 30_000,
      },
    );
    assert.equal(r.code, 1, r.stderr);
    assert.match(
      r.stderr,
      /ERROR cannot start error="--buffer-dir \\"\/dev\/null\/x\\": a part of the path is a file, not a directory \(ENOTDIR/,
    );
  });

  it("./messagebuffer (the from-source command) passes SIGTERM to the agent, which stops cleanly", {
    skip: process.env.MB_AGENT_BIN ? "the executable has no wrapper" : false,
  }, async () => {
    const t = await tempDir();
    cleanup = t.cleanup;
    const p = spawn("./messagebuffer", [
      "run",
      "--brokers",
      BROKERS.join(","),
      "--buffer-dir",
      t.dir,
    ], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let log = "";
    p.stderr!.on("data", (d) => (log += d));
    p.stdout!.on("data", (d) => (log += d));
    const exited = new Promise<number | null>((r) => p.once("exit", (code) => r(code)));
    await waitFor(() => /agent ready/.test(log), 60_000, "agent ready");
    process.kill(p.pid!, "SIGTERM");
    assert.equal(await exited, 0, log);
    assert.match(log, /shutting down signal=SIGTERM/);
    const left = await readdir(t.dir);
    assert.ok(!left.includes("LOCK"), `the agent released its LOCK: ${left}`);
    assert.ok(!left.includes("messagebuffer.sock"), `and removed its socket: ${left}`);
  });

  it("tail reads a topic back from Kafka as JSON lines, binary values and repeated headers intact", async () => {
    const t = await tempDir();
    cleanup = t.cleanup;
    const topic = uniqueTopic("agent-tail");
    await createTopics([topic], 1);
    await agentIn(t.dir);
    const lines = [
      `${topic}\tk1\tfirst\n`,
      JSON.stringify({
        topic,
        value_base64: "AP8K",
        headers_base64: [["h", "AQ=="], ["h", "Ag=="]],
        timestamp: 1_700_000_000_000,
      }) + "\n",
    ].join("");
    assert.equal((await runCli(["send", "--buffer-dir", t.dir], lines)).code, 0);
    const r = await runCli(
      [
        "tail",
        "--brokers",
        BROKERS.join(","),
        "--topic",
        topic,
        "--from-beginning",
        "--count",
        "2",
      ],
      undefined,
      { timeoutMs: 60_000 },
    );
    assert.equal(r.code, 0, r.stderr);
    const got = r.stdout.trim().split("\n").map((l) => JSON.parse(l));
    assert.equal(got[0].key, "k1");
    assert.equal(got[0].value, "first");
    assert.deepEqual(
      { ...got[1], partition: undefined, offset: undefined },
      {
        partition: undefined,
        offset: undefined,
        topic,
        value_base64: "AP8K",
        headers_base64: [["h", "AQ=="], ["h", "Ag=="]],
        timestamp: 1_700_000_000_000,
      },
    );
  });

  it("replaces a stale socket file and refuses to start on a live one", async () => {
    const t = await tempDir();
    cleanup = t.cleanup;
    const sock = `${t.dir}/s.sock`;
    // What a crashed agent leaves: a socket file nobody serves.
    const crashed = await agentIn(`${t.dir}/crashed`, ["--socket", sock]);
    await crashed.stop("SIGKILL");
    assert.ok((await stat(sock)).isSocket());
    await agentIn(t.dir, ["--socket", sock, "--socket-mode", "0600"]);
    assert.equal((await stat(sock)).mode & 0o777, 0o600);
    // It was bound in an owner-only staging directory and renamed into place; none is left.
    assert.deepEqual((await readdir(t.dir)).filter((n) => n.startsWith(".mb-")), []);
    const second = await runCli([
      "run",
      "--brokers",
      BROKERS[0],
      "--buffer-dir",
      `${t.dir}/other`,
      "--socket",
      sock,
    ]);
    assert.equal(second.code, 1);
    assert.match(second.stderr, /another process is serving it/);
    // A second agent on the same buffer directory is refused, naming the first one's pid.
    const live = agents.at(-1)!;
    const same = await runCli([
      "run",
      "--brokers",
      BROKERS[0],
      "--buffer-dir",
      t.dir,
      "--socket",
      `${t.dir}/x.sock`,
    ]);
    assert.equal(same.code, 1);
    assert.match(same.stderr, new RegExp(`in use by process ${live.proc.pid}`));
  });

  // The broker's SSL listener that requires client certificates, and kafka.sh's PEM files.
  const mtlsBrokers = process.env.MB_TEST_MTLS_BROKERS;
  const tlsDir = process.env.MB_TEST_TLS_DIR;
  it("delivers over mutual TLS with --tls-ca-file, --tls-cert-file and --tls-key-file", {
    skip: mtlsBrokers && tlsDir
      ? false
      : "MB_TEST_MTLS_BROKERS and MB_TEST_TLS_DIR are not set (scripts/test.sh sets them)",
  }, async () => {
    const t = await tempDir();
    cleanup = t.cleanup;
    const topic = uniqueTopic("agent-mtls");
    await createTopics([topic], 1);
    agents.push(
      await startAgent([
        "--brokers",
        mtlsBrokers!,
        "--buffer-dir",
        t.dir,
        "--tls-ca-file",
        `${tlsDir}/ca.pem`,
        "--tls-cert-file",
        `${tlsDir}/client-cert.pem`,
        "--tls-key-file",
        `${tlsDir}/client-key.pem`,
      ]),
    );
    const c = await RawClient.connect(`${t.dir}/messagebuffer.sock`);
    c.write(`#ack\n${topic}\t\tover mutual TLS\n`);
    assert.deepEqual(await c.waitAnswers(2), ["ok", "ok"]);
    c.socket.end();
    const got = await consume([topic], 1);
    assert.deepEqual(got.map((r) => r.value!.toString()), ["over mutual TLS"]);
  });

  // The broker's SASL_SSL listener: SCRAM-SHA-256 (user alice) over one-way TLS.
  const saslSslBrokers = process.env.MB_TEST_SASL_SSL_BROKERS;
  it(
    "delivers over SASL_SSL (SCRAM-SHA-256 inside TLS), and a wrong password keeps the record and says so",
    {
      skip: saslSslBrokers && tlsDir
        ? false
        : "MB_TEST_SASL_SSL_BROKERS and MB_TEST_TLS_DIR are not set (scripts/test.sh sets them)",
    },
    async () => {
      const t = await tempDir();
      cleanup = t.cleanup;
      const topic = uniqueTopic("agent-sasl-ssl");
      await createTopics([topic], 1);
      const args = (dir: string) => [
        "--brokers",
        saslSslBrokers!,
        "--buffer-dir",
        dir,
        "--tls-ca-file",
        `${tlsDir}/ca.pem`,
        "--sasl-mechanism",
        "scram-sha-256",
        "--sasl-username",
        "alice",
      ];
      const wrong = await startAgent(args(t.dir), { MESSAGEBUFFER_SASL_PASSWORD: "not-it" });
      agents.push(wrong);
      const c = await RawClient.connect(`${t.dir}/messagebuffer.sock`);
      c.write(`#ack\n${topic}\t\tover SASL_SSL\n`);
      assert.deepEqual(await c.waitAnswers(2), ["ok", "ok"]);
      c.socket.end();
      await waitFor(() => /SASL|[Aa]uthentication/.test(wrong.log()), 30_000, "the login failure");
      assert.doesNotMatch(wrong.log(), /not-it/, "the password is not logged");
      assert.equal(await wrong.stop(), 0);
      agents.push(await startAgent(args(t.dir), { MESSAGEBUFFER_SASL_PASSWORD: "alice-secret" }));
      const got = await consume([topic], 1);
      assert.deepEqual(got.map((r) => r.value!.toString()), ["over SASL_SSL"]);
    },
  );

  // --tls without --tls-ca-file trusts the runtime's CA store, which each runtime lets a user
  // extend from the environment (Deno: DENO_CERT; Bun and the executable:
  // NODE_EXTRA_CA_CERTS); the system's store is a file to name with --tls-ca-file.
  const tlsBrokers = process.env.MB_TEST_TLS_BROKERS;
  it(
    "with --tls alone trusts the runtime's CA store (extended by DENO_CERT or NODE_EXTRA_CA_CERTS), and the system's bundle through --tls-ca-file",
    {
      skip: tlsBrokers && tlsDir
        ? false
        : "MB_TEST_TLS_BROKERS and MB_TEST_TLS_DIR are not set (scripts/test.sh sets them)",
    },
    async () => {
      const t = await tempDir();
      cleanup = t.cleanup;
      const topic = uniqueTopic("agent-ca-store");
      await createTopics([topic], 1);
      const ca = `${tlsDir}/ca.pem`;
      const send = async (dir: string, args: string[], env: Record<string, string>, v: string) => {
        const a = await startAgent(["--brokers", tlsBrokers!, "--buffer-dir", dir, ...args], env);
        agents.push(a);
        const c = await RawClient.connect(`${dir}/messagebuffer.sock`);
        c.write(`#ack\n${topic}\t\t${v}\n`);
        assert.deepEqual(await c.waitAnswers(2), ["ok", "ok"]);
        c.socket.end();
        return a;
      };
      // Without the test CA in the store, the broker's certificate cannot be verified.
      const bare = await send(`${t.dir}/bare`, ["--tls"], {}, "kept");
      await waitFor(() => /could not be verified/.test(bare.log()), 30_000, "the TLS failure");
      assert.match(bare.log(), /--tls-ca-file/, "the error names the setting");
      await bare.stop();
      await send(`${t.dir}/bare`, ["--tls"], { DENO_CERT: ca, NODE_EXTRA_CA_CERTS: ca }, "store");
      // A system-style bundle: the distribution's roots and the test CA in one file.
      const system = await readFile("/etc/ssl/certs/ca-certificates.crt", "utf8").catch(() => "");
      const bundle = `${t.dir}/ca-certificates.crt`;
      await writeFile(bundle, system + (await readFile(ca, "utf8")));
      await send(`${t.dir}/bundle`, ["--tls-ca-file", bundle], {}, "bundle");
      const got = await consume([topic], 3);
      assert.deepEqual(got.map((r) => r.value!.toString()).sort(), ["bundle", "kept", "store"]);
    },
  );
});

describe("agent codecs", () => {
  it("delivers with every --compression, from source and as the executable (WASM codecs inside)", async () => {
    const t = await tempDir();
    cleanup = t.cleanup;
    for (const codec of ["gzip", "snappy", "lz4", "zstd"]) {
      const topic = uniqueTopic(`agent-${codec}`);
      await createTopics([topic], 1);
      const dir = `${t.dir}/${codec}`;
      const a = await agentIn(dir, ["--compression", codec]);
      const c = await RawClient.connect(`${dir}/messagebuffer.sock`);
      const lines = Array.from({ length: 50 }, (_, i) => `${topic}\tk${i}\t${codec}-${i}\n`);
      c.write(`#ack\n${lines.join("")}`);
      assert.equal((await c.waitAnswers(51)).filter((x) => x === "ok").length, 51);
      c.socket.end();
      const got = await consume([topic], 50, { settleMs: 300 });
      assert.deepEqual(
        got.map((r) => r.value!.toString()),
        Array.from({ length: 50 }, (_, i) => `${codec}-${i}`),
        codec,
      );
      assert.equal(await a.stop("SIGTERM"), 0);
    }
  });
});

describe("agent CLI", () => {
  it("explains itself: --help, help run, --version", async () => {
    const help = await runCli(["--help"]);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /messagebuffer run --brokers/);
    const run = await runCli(["help", "run"]);
    assert.match(run.stdout, /--file-max-time <time>/);
    assert.match(run.stdout, /\[default: 10s\] \(a plain number is in s\)/);
    assert.match(run.stdout, /config key: file_max_time/);
    const v = await runCli(["--version"]);
    assert.match(
      v.stdout,
      process.env.MB_AGENT_BIN
        ? /^messagebuffer \d+\.\d+\.\d+ \(commit ([0-9a-f]{7,}\S*|unknown), built with Bun \d\S* on \d{4}-\d\d-\d\dT[\d:]+Z, single executable\)$/m
        : /^messagebuffer \d+\.\d+\.\d+ \(from source, running on (Deno|Bun) \d/,
    );
    // Where this test's runtime loads the native checksum, so do the agent from source and the
    // executable, which embeds it.
    assert.match(
      v.stdout,
      nativeCrc32c
        ? /^checksums: CRC32C in native code \(@node-rs\/crc32\)$/m
        : /^checksums: CRC32C in TypeScript \(the native code did not load\)$/m,
    );
  });

  it("refuses bad flags and values with an error naming them (exit 2)", async () => {
    const cases: Array<[string[], RegExp]> = [
      [
        ["run", "--brokers", "h:1", "--nope"],
        /^messagebuffer run: unknown flag --nope \(see: messagebuffer help run\)$/m,
      ],
      [
        ["run", "--brokers", "h:1", "--fsyn", "always"],
        /^messagebuffer run: unknown flag --fsyn \(did you mean --fsync\?\) \(see: messagebuffer help run\)$/m,
      ],
      [
        ["run", "--brokers", "h:1", "--file-max-time", "5 parsecs"],
        /^messagebuffer run: --file-max-time: unknown time unit "parsecs" \(use ms, s or sec, m or min, h or d/m,
      ],
      [
        ["run", "--brokers", "h:1", "--fsync", "sometimes"],
        /^messagebuffer run: --fsync: must be one of always, interval, never/m,
      ],
      [
        ["run", "--brokers", "h:1", "--file-max-time", "-1"],
        /^messagebuffer run: --file-max-time: must be at least 0\.001 s, got -1$/m,
      ],
      [
        ["run", "--brokers", "h:1", "--file-max-time"],
        /^messagebuffer run: --file-max-time needs a value/m,
      ],
      [["run", "--buffer-dir", "/tmp/x"], /^messagebuffer run: no Kafka brokers: pass --brokers/m],
      [
        ["run", "--config", "/nonexistent.json"],
        /^messagebuffer run: --config: cannot read "\/nonexistent.json": ENOENT/m,
      ],
      [["status", "--json=1"], /^messagebuffer status: --json takes no value/m],
      [["frobnicate"], /^messagebuffer: unknown command "frobnicate"/m],
      [["stauts"], /^messagebuffer: unknown command "stauts" \(did you mean status\?\)/m],
    ];
    for (const [args, msg] of cases) {
      const r = await runCli(args);
      assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, msg);
    }
  });

  it("--print-config shows the effective config with the password masked", async () => {
    const t = await tempDir();
    cleanup = t.cleanup;
    await writeFile(
      `${t.dir}/c.json`,
      JSON.stringify({
        brokers: ["h:1"],
        file_max_time: 3,
        sasl_mechanism: "plain",
        sasl_username: "u",
      }),
    );
    const [bin, argv] = agentCommand([
      "run",
      "--config",
      `${t.dir}/c.json`,
      "--fsync",
      "always",
      "--print-config",
    ]);
    const out = await new Promise<{ code: number | null; stdout: string }>((resolve) => {
      const p = spawn(bin, argv, {
        env: { ...process.env, MESSAGEBUFFER_SASL_PASSWORD: "topsecret" },
      });
      let stdout = "";
      p.stdout.on("data", (d) => (stdout += d));
      p.once("exit", (code) => resolve({ code, stdout }));
    });
    assert.equal(out.code, 0);
    const cfg = JSON.parse(out.stdout);
    assert.equal(cfg.file_max_time, "3s");
    assert.equal(cfg.file_max_size, "16MiB");
    assert.equal(cfg.socket, "./messagebuffer-data/messagebuffer.sock");
    assert.equal(cfg.fsync, "always");
    assert.ok(!out.stdout.includes("topsecret"));
    assert.match(cfg.sasl_password, /\*\*\*\*\*/);
  });

  it("status and dump show backlog, dead letters and quarantined data of a stopped agent's directory", async () => {
    const t = await tempDir();
    cleanup = t.cleanup;
    const topic = uniqueTopic("agent-status");
    await createTopics([topic], 1, { "max.message.bytes": "20000" });
    // Deliver some, dead-letter one, then stop with a backlog the broker cannot take.
    const metrics = `127.0.0.1:${await freePort()}`;
    const a = await agentIn(t.dir, [
      "--file-max-size",
      "0.01",
      "--total-size",
      "10",
      "--metrics",
      metrics,
    ]);
    const sock = `${t.dir}/messagebuffer.sock`;
    const send = await runCli(
      ["send", "--socket", sock],
      `${topic}\tk\tfirst\n${topic}\tk\t${"x".repeat(30000)}\n${topic}\tk\tlast\n`,
    );
    assert.equal(send.code, 0, send.stderr);
    await waitFor(() => /moved to dead letters/.test(a.log()), 30_000, "a dead letter");
    // Both good records delivered, the big one dead-lettered: nothing left to send.
    await waitForMetrics(
      metrics,
      (m) =>
        m.messagebuffer_records_delivered_total === 2 &&
        m.messagebuffer_records_dead_lettered_total === 1 &&
        m.messagebuffer_backlog_records === 0,
      "two records delivered, one dead-lettered",
    );
    const live = JSON.parse((await runCli(["status", "--buffer-dir", t.dir, "--json"])).stdout);
    assert.equal(live.agent.running, true);
    assert.equal(await a.stop("SIGTERM"), 0);
    // A backlog: an agent pointed at no broker stores lines it cannot deliver.
    const b = await offlineAgent(t.dir, ["--file-max-size", "0.01", "--total-size", "10"]);
    const lines =
      Array.from({ length: 300 }, (_, i) => `${topic}\tk${i}\tbacklog-${i}\\tline`).join("\n") +
      "\n";
    assert.equal((await runCli(["send", "--socket", sock], lines)).code, 0);
    assert.equal(await b.stop("SIGTERM"), 0);
    const segs = (await readdir(t.dir)).filter((n) => n.endsWith(".seg")).sort();
    assert.ok(segs.length >= 2);
    // A clean stop sealed every segment with a footer: the next open walks none of them.
    const sealed = JSON.parse((await runCli(["status", "--buffer-dir", t.dir, "--json"])).stdout);
    assert.deepEqual(
      sealed.segments.map((g: { footer: string }) => g.footer),
      segs.map(() => "used"),
    );
    // Make the last segment what a SIGKILL leaves (no footer), and corrupt its first frame:
    // status reports it, and the next open quarantines it.
    const last = `${t.dir}/${segs.at(-1)}`;
    const bytes = (await readFile(last)).subarray(0, -SEGMENT_FOOTER_SIZE);
    bytes[16 + 25] ^= 0xff;
    await writeFile(last, bytes);

    // status reads the directory as opening it would: the corrupt segment's records are not
    // in the backlog (the next open quarantines them), and the segment says why.
    const st = await runCli(["status", "--buffer-dir", t.dir, "--json"]);
    assert.equal(st.code, 0, st.stderr);
    const s = JSON.parse(st.stdout);
    const lost = s.segments.at(-1);
    assert.match(lost.problem, /corrupt at 16: checksum mismatch .* quarantined at the next open/);
    assert.equal(lost.records, 0);
    const kept = s.segments.slice(0, -1).reduce(
      (n: number, g: { records: number }) => n + g.records,
      0,
    );
    assert.ok(kept > 0 && kept < 300, `${kept} records before the corrupt segment`);
    assert.equal(s.backlog.records, kept);
    assert.equal(s.deadLetters.records, 1);
    assert.equal(s.agent?.running ?? false, false);
    const text = await runCli(["status", "--buffer-dir", t.dir]);
    assert.match(text.stdout, new RegExp(`backlog: ${kept} records`));
    assert.match(text.stdout, /dead letters: 1 records/);

    const first = await runCli(["dump", `${t.dir}/${segs[0]}`]);
    assert.equal(first.code, 0, first.stderr);
    const recs = first.stdout.trim().split("\n").map((l) => JSON.parse(l));
    assert.equal(recs[0].topic, topic);
    assert.match(recs[0].value, /^backlog-0\tline$/);
    assert.equal(recs[0].key, "k0");
    const dead = (await readdir(`${t.dir}/dead`)).find((n) => n.endsWith(".seg"))!;
    const dd = await runCli(["dump", `${t.dir}/dead/${dead}`]);
    const deadRec = JSON.parse(dd.stdout.trim());
    assert.equal(deadRec.value.length, 30000);
    assert.match(deadRec.headers["messagebuffer-error"], /MESSAGE_TOO_LARGE/);
    const broken = await runCli(["dump", last]);
    assert.equal(broken.code, 1);
    assert.match(broken.stderr, /bad frame at offset 16: checksum mismatch/);

    // Opening again quarantines the corrupt data; status lists it.
    const c = await offlineAgent(t.dir);
    await c.stop("SIGTERM");
    const after = JSON.parse((await runCli(["status", "--buffer-dir", t.dir, "--json"])).stdout);
    assert.equal(after.quarantine.length, 1);
    assert.equal(after.backlog.records, kept, "what status said opening would keep");
  });
  it("starts, twice, on a directory with every kind of damage, and delivers everything else exactly once", async () => {
    const t = await tempDir();
    cleanup = t.cleanup;
    const topic = uniqueTopic("agent-damage");
    await createTopics([topic]);
    // Four 1 MB segments of numbered 2 KB lines, stored offline under `--fsync never` and
    // sealed by a clean stop: no sync mark says what reached the disk, so a power loss may
    // have kept any part of the files.
    const a = await offlineAgent(t.dir, ["--file-max-size", "1", "--fsync", "never"]);
    const total = 2000;
    let lines = "";
    for (let i = 0; i < total; i++) lines += `${topic}\t\t${i}:${"d".repeat(2000)}\n`;
    assert.equal(
      (await runCli(["send", "--socket", `${t.dir}/messagebuffer.sock`], lines)).code,
      0,
    );
    assert.equal(await a.stop("SIGTERM"), 0);
    const segs = (await readdir(t.dir)).filter((n) => n.endsWith(".seg")).sort();
    assert.ok(segs.length >= 4, `${segs.length} segments`);
    const before = JSON.parse((await runCli(["status", "--buffer-dir", t.dir, "--json"])).stdout);
    const inFirst: number = before.segments[0].records;
    // A flipped bit in the middle of the first segment's data.
    const first = await readFile(`${t.dir}/${segs[0]}`);
    first[first.length >> 1] ^= 0x10;
    await writeFile(`${t.dir}/${segs[0]}`, first);
    // A garbage S file for the second and the third.
    await writeFile(
      `${t.dir}/${segs[1].replace(/\.seg$/, ".s")}`,
      "not a checkpoint at all ".repeat(4),
    );
    const past = new Uint8Array(64);
    past.set([0x4d, 0x42, 0x43, 0x4b, 0, 0, 0, 1]); // "MBCK", then garbage: two unusable slots
    await writeFile(`${t.dir}/${segs[2].replace(/\.seg$/, ".s")}`, past);
    // The newest as such a power loss leaves it: its footer gone, a zero-filled tail.
    const newest = `${t.dir}/${segs.at(-1)}`;
    const unsealed = (await readFile(newest)).subarray(0, -SEGMENT_FOOTER_SIZE);
    await writeFile(newest, Buffer.concat([unsealed, new Uint8Array(4096)]));
    // And a file that is not ours.
    await writeFile(`${t.dir}/notes.txt`, "an operator's notes");

    const port = await freePort();
    const b = await agentIn(t.dir, ["--metrics", `127.0.0.1:${port}`]);
    const m = await waitForMetrics(
      `127.0.0.1:${port}`,
      (x) => x.messagebuffer_backlog_records === 0 && x.messagebuffer_records_quarantined_total > 0,
      "delivery of everything but the damaged frames",
      60_000,
    );
    assert.equal(m.messagebuffer_unknown_files_total, 1);
    assert.equal(m.messagebuffer_checkpoint_errors_total, 2);
    assert.ok(m.messagebuffer_torn_bytes_total >= 4096);
    assert.match(b.log(), /notes\.txt/);
    const quarantineLine = b.log().split("\n").find((l) => /quarantine/.test(l)) ?? "";
    assert.ok(quarantineLine.includes(segs[0]), `the log names the segment: ${quarantineLine}`);
    assert.equal(await b.stop("SIGTERM"), 0);
    const quarantined = m.messagebuffer_records_quarantined_total;
    const got = (await consume([topic], total - quarantined)).map((r) =>
      Number(String(r.value).split(":")[0])
    );
    // Exactly once, in order; missing only the quarantined records, all from the first segment.
    assert.equal(got.length, total - quarantined);
    assert.deepEqual(got, [...got].sort((x, y) => x - y));
    assert.equal(new Set(got).size, got.length);
    const missing = Array.from({ length: total }, (_, i) => i).filter((i) => !got.includes(i));
    assert.equal(missing.length, quarantined);
    assert.ok(missing.every((i) => i < inFirst), "only the first segment lost any");
    assert.equal(missing.at(-1), inFirst - 1, "the rest of the first segment from the bad frame");
    // A second start finds nothing new to repair and does not fail.
    const c = await agentIn(t.dir);
    assert.equal(await c.stop("SIGTERM"), 0);
    assert.match(c.log(), /notes\.txt/);
    assert.equal(await readFile(`${t.dir}/notes.txt`, "utf8"), "an operator's notes");
  });
});
