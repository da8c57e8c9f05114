// The Kafka provider against a real Apache Kafka broker (scripts/kafka.sh, started by
// scripts/test.sh). Every test checks what a real consumer reads back.

import { after, afterEach, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readdir } from "node:fs/promises";
import process from "node:process";
import { Buffer } from "node:buffer";
import { DEFAULTS, type MessageBufferOptions, silentLogger } from "../../mod.ts";
import { OpenBuffers, tempDir, waitFor } from "../_helpers.ts";
import {
  BROKERS,
  consume,
  type Consumed,
  consumeWithJava,
  createTopics,
  KAFKA_CLIENT,
  kafkaProvider,
  kafkaScript,
  uniqueTopic,
} from "../_kafka.ts";

let dir = "";
let cleanup = async () => {};
const buffers = new OpenBuffers();

function openBuffer(extra: Partial<MessageBufferOptions> = {}, provider = kafkaProvider()) {
  return buffers.open({
    dir,
    provider,
    logger: silentLogger,
    retryInitialMs: 100,
    retryMaxMs: 1000,
    ...extra,
  });
}

afterEach(async () => {
  await buffers.closeAll();
  await cleanup();
});

const enc = new TextEncoder();

/** How this runtime runs a script in a child process. */
const runtime = (globalThis as { Deno?: unknown }).Deno
  ? [process.execPath, "run", "-A"]
  : [process.execPath];

/** Values per topic+partition in offset order. */
function byPartition(records: Consumed[]): Map<string, string[]> {
  const m = new Map<string, string[]>();
  for (const r of [...records].sort((a, b) => a.offset - b.offset)) {
    const k = `${r.topic}/${r.partition}`;
    if (!m.has(k)) m.set(k, []);
    m.get(k)!.push(r.value!.toString("latin1"));
  }
  return m;
}

describe(`Kafka provider (${KAFKA_CLIENT}), real broker`, () => {
  before(async () => {
    // Fail fast with a clear message when there is no broker (scripts/test.sh starts one).
    await kafkaProvider({ connectionTimeoutMs: 2000 }).open().catch((e) => {
      throw new Error(
        `No Kafka broker at ${
          BROKERS.join(",")
        }; run the suite with scripts/test.sh (${e.message})`,
      );
    });
  });

  it("spreads records without a key over the partitions, each send's in order", async () => {
    const topic = uniqueTopic("unkeyed");
    await createTopics([topic], 3);
    const p = kafkaProvider();
    try {
      for (let s = 0; s < 6; s++) {
        await p.send(Array.from({ length: 20 }, (_, i) => ({
          topic,
          key: null,
          value: enc.encode(`s${s}-${String(i).padStart(2, "0")}`),
          headers: null,
          timestamp: Date.now(),
        })));
      }
    } finally {
      await p.close();
    }
    const got = byPartition(await consume([topic], 120));
    assert.equal([...got.values()].reduce((n, v) => n + v.length, 0), 120);
    assert.equal(got.size, 3, `partitions used: ${[...got.keys()].join(", ")}`);
    for (const [partition, values] of got) {
      // Within a partition, each send's records keep their order.
      for (let s = 0; s < 6; s++) {
        const mine = values.filter((v) => v.startsWith(`s${s}-`));
        assert.deepEqual(mine, [...mine].sort(), `${partition}, send ${s}`);
      }
      if (KAFKA_CLIENT === "platformatic") {
        // One partition per send (sticky): a send's 20 records are all here or none are.
        for (let s = 0; s < 6; s++) {
          const n = values.filter((v) => v.startsWith(`s${s}-`)).length;
          assert.ok(n === 0 || n === 20, `${partition} holds ${n} of send ${s}`);
        }
      }
    }
  });

  it("delivers 100K adversarial records over several topics exactly once, in order, with keys, headers and timestamps", async () => {
    ({ dir, cleanup } = await tempDir());
    const topics = [uniqueTopic("e2e-a"), uniqueTopic("e2e-b"), uniqueTopic("e2e-c")];
    await createTopics(topics, 3);
    const b = await openBuffer();
    const N = 100_000;
    const special = [
      new Uint8Array(0),
      enc.encode("line\nbreak\ttab\\slash\r"),
      new Uint8Array([0, 0xff, 0xc3, 0x28, 0x0a]),
      new Uint8Array(100 * 1024).fill(0x42),
    ];
    const expected = new Map<
      string,
      { key: string; value: Uint8Array; ts: number; topic: string }
    >();
    const base = Date.now() - 3_600_000;
    const writes: Promise<void>[] = [];
    for (let i = 0; i < N; i++) {
      const topic = topics[i % 3];
      const tail = special[i % 50 === 0 ? (i / 50) % special.length : -1] ??
        enc.encode("v".repeat(i % 90));
      const id = `#${i}#`;
      const value = new Uint8Array(id.length + tail.length);
      value.set(enc.encode(id));
      value.set(tail, id.length);
      const key = `key-${i % 17}`;
      expected.set(id, { key, value, ts: base + i, topic });
      writes.push(
        b.write(topic, value, {
          key,
          headers: { seq: String(i), bin: new Uint8Array([i & 0xff, 0]) },
          timestamp: base + i,
        }),
      );
    }
    await Promise.all(writes);
    await b.drained(180_000);
    const got = await consume(topics, N, { timeoutMs: 120_000 });
    assert.equal(got.length, N, "each record once");
    const seen = new Set<string>();
    for (const r of got) {
      const text = r.value!.toString("latin1");
      const id = text.slice(0, text.indexOf("#", 1) + 1);
      const want = expected.get(id);
      assert.ok(want, `unexpected record ${id}`);
      assert.ok(!seen.has(id), `duplicate ${id}`);
      seen.add(id);
      assert.equal(r.topic, want.topic);
      assert.deepEqual(new Uint8Array(r.value!), want.value, `value of ${id}`);
      assert.equal(r.key?.toString(), want.key);
      assert.equal(r.timestamp, want.ts, `timestamp of ${id} is its write time`);
      assert.equal(r.headers.seq?.toString(), id.slice(1, -1));
      assert.deepEqual([...(r.headers.bin as Buffer)], [Number(id.slice(1, -1)) & 0xff, 0]);
    }
    // Write order per partition: sequence numbers increase along the offsets.
    for (const [part, values] of byPartition(got)) {
      const seqs = values.map((v) => Number(v.slice(1, v.indexOf("#", 1))));
      assert.deepEqual(seqs, [...seqs].sort((a, c) => a - c), `order in ${part}`);
    }
    // Keyed records land where the Java client puts them: partition of "key-0".."key-16"
    // over 3 partitions, computed with kafka-clients 4.1.2's
    // Utils.toPositive(Utils.murmur2(key)) % 3.
    const JAVA_PARTITION = [1, 0, 2, 2, 0, 2, 2, 1, 1, 0, 2, 1, 2, 1, 1, 0, 1];
    for (const r of got) {
      const i = Number(r.key!.toString().slice(4));
      assert.equal(r.partition, JAVA_PARTITION[i], `partition of ${r.key}`);
    }
    assert.equal(new Set(got.map((r) => r.partition)).size, 3, "keys spread over the partitions");
  });

  it("keeps writing through a broker outage and delivers everything in order after it", async () => {
    ({ dir, cleanup } = await tempDir());
    const topic = uniqueTopic("outage");
    await createTopics([topic], 1);
    const b = await openBuffer({ retryInitialMs: 200, retryMaxMs: 1000 });
    let n = 0;
    const writeSome = async (count: number) => {
      const ws: Promise<void>[] = [];
      for (let i = 0; i < count; i++, n++) ws.push(b.write(topic, `o-${n}`));
      await Promise.all(ws);
    };
    await writeSome(2000);
    await kafkaScript("stop");
    try {
      await writeSome(3000); // succeeds into the buffer while the broker is down
      await waitFor(
        () => b.stats().provider.state === "retrying",
        30_000,
        "the sender to notice the outage",
      );
      await writeSome(3000);
      assert.ok(b.stats().backlog.records > 0, "records wait on disk");
    } finally {
      await kafkaScript("start");
    }
    await b.drained(120_000);
    const got = await consume([topic], n, { timeoutMs: 90_000 });
    const values = got.sort((a, c) => a.offset - c.offset).map((r) => r.value!.toString());
    // In write order (README, "Delivery guarantees"): every record arrives, and the first
    // arrivals are in the order of the writes.
    const firstSeen = [...new Set(values)];
    assert.deepEqual(firstSeen, Array.from({ length: n }, (_, i) => `o-${i}`), "no loss, in order");
    // A failed send is sent again whole. With the default client it goes under the identity
    // it was first sent under, so the broker keeps one copy: no duplicates. kafkajs keeps its
    // own sequence numbers: its copies are bounded by the records it counted.
    const { sendRetries, resentRecords, maybeDuplicatedAtLeastOnce } = b.stats().counters;
    const duplicates = values.length - firstSeen.length;
    console.log(
      `outage: ${n} records, ${duplicates} duplicates, ${sendRetries} retries, ${resentRecords} records resent`,
    );
    assert.ok(sendRetries > 0, "the sender noticed the outage");
    assert.ok(
      resentRecords <= sendRetries * DEFAULTS.batchMaxRecords,
      `${resentRecords} records resent in ${sendRetries} failed sends of at most ${DEFAULTS.batchMaxRecords}`,
    );
    if (KAFKA_CLIENT === "platformatic") assert.equal(duplicates, 0, "exactly once");
    else {
      assert.ok(
        duplicates <= maybeDuplicatedAtLeastOnce,
        `${duplicates} duplicates, but only ${maybeDuplicatedAtLeastOnce} counted`,
      );
    }
  });

  it("resumes at the checkpoint when the engine is closed mid-stream and opened again", async () => {
    ({ dir, cleanup } = await tempDir());
    const topic = uniqueTopic("restart");
    await createTopics([topic], 1);
    const b1 = await openBuffer({ batchMaxRecords: 100 });
    const ws: Promise<void>[] = [];
    for (let i = 0; i < 20_000; i++) ws.push(b1.write(topic, `r-${i}`));
    await Promise.all(ws);
    await waitFor(() => b1.stats().counters.delivered > 0, 30_000);
    await buffers.close(b1);
    const deliveredBefore = b1.stats().counters.delivered;
    const b2 = await openBuffer();
    await b2.drained(60_000);
    const got = await consume([topic], 20_000);
    const values = got.sort((a, c) => a.offset - c.offset).map((r) => r.value!.toString());
    assert.deepEqual([...new Set(values)], Array.from({ length: 20_000 }, (_, i) => `r-${i}`));
    console.log(
      `restart: ${deliveredBefore} delivered before close, ${values.length - 20_000} duplicates`,
    );
    assert.equal(values.length, 20_000, "a clean close leaves no duplicates");
  });

  it("a batch the broker appended before a SIGKILL is not appended again by the next run", async () => {
    ({ dir, cleanup } = await tempDir());
    const topic = uniqueTopic("appended");
    await createTopics([topic], 3);
    const run = async (mode: string) => {
      const child = spawn(runtime[0], [
        ...runtime.slice(1),
        "tests/fixtures/crash_child.ts",
        dir,
        topic,
        BROKERS.join(","),
        mode,
      ], {
        stdio: ["ignore", "pipe", "inherit"],
        env: { ...process.env, MB_TEST_KAFKA_CLIENT: KAFKA_CLIENT },
      });
      let out = "";
      child.stdout!.on("data", (d) => (out += d));
      const [code, signal] = await new Promise<[number | null, string | null]>((r) =>
        child.once("exit", (c, s) => r([c, s]))
      );
      return { code, signal, out };
    };
    const died = await run("append-then-die");
    assert.equal(died.signal, "SIGKILL", died.out);
    assert.match(died.out, /^appended 60$/m);
    // Kafka holds the batch; the checkpoint never moved past it.
    const endOffsets = (rs: Consumed[]) => {
      const end = new Map<number, number>();
      for (const r of rs) end.set(r.partition, Math.max(end.get(r.partition) ?? 0, r.offset + 1));
      return [...end.values()].reduce((a, b) => a + b, 0);
    };
    assert.equal(endOffsets(await consume([topic], 60)), 60);
    const drained = await run("drain");
    assert.equal(drained.code, 0, drained.out);
    const counters = JSON.parse(/^drained (.*)$/m.exec(drained.out)![1]);
    const got = await consume([topic], 60);
    const values = got.map((r) => r.value!.toString());
    assert.equal(new Set(values).size, 60);
    if (KAFKA_CLIENT === "platformatic") {
      // Sent again under the same producer id and sequence numbers: the broker kept one copy.
      assert.equal(endOffsets(got), 60, "the end offsets did not move");
      assert.equal(values.length, 60);
      assert.equal(counters.maybeDuplicatedProducerStateLost, 0);
    } else {
      // kafkajs keeps its own sequence numbers: at least once, and counted.
      assert.equal(endOffsets(got), 120);
      assert.equal(counters.maybeDuplicatedAtLeastOnce, 60);
    }
  });

  it("after SIGKILL of a writing agent, every acknowledged record is delivered", async () => {
    ({ dir, cleanup } = await tempDir());
    const topic = uniqueTopic("sigkill");
    await createTopics([topic], 1);
    const child = spawn(runtime[0], [
      ...runtime.slice(1),
      "tests/fixtures/crash_child.ts",
      dir,
      topic,
      BROKERS.join(","),
      "write",
    ], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    let acked = 0;
    let buf = "";
    child.stdout!.on("data", (d) => {
      buf += d;
      for (let i; (i = buf.indexOf("\n")) >= 0; buf = buf.slice(i + 1)) {
        const m = /^ack \d+ (\d+)$/.exec(buf.slice(0, i));
        if (m) acked = Number(m[1]);
      }
    });
    await waitFor(() => acked >= 5000, 60_000, "the child to acknowledge 5000 records");
    child.kill("SIGKILL");
    await new Promise((r) => child.once("exit", r));
    const ackedAtKill = acked;
    const drain = spawn(runtime[0], [
      ...runtime.slice(1),
      "tests/fixtures/crash_child.ts",
      dir,
      topic,
      BROKERS.join(","),
      "drain",
    ], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    const code = await new Promise((r) => drain.once("exit", r));
    assert.equal(code, 0);
    const got = await consume([topic], ackedAtKill);
    const values = got.sort((a, c) => a.offset - c.offset).map((r) => r.value!.toString());
    const set = new Set(values);
    for (let i = 0; i < ackedAtKill; i++) {
      assert.ok(set.has(`rec-${i}`), `acknowledged rec-${i} was lost`);
    }
    const firstSeen = [...set].map((v) => Number(v.slice(4)));
    assert.deepEqual(firstSeen, [...firstSeen].sort((a, c) => a - c), "in order");
    console.log(
      `sigkill: ${ackedAtKill} acknowledged, ${set.size} delivered, ${
        values.length - set.size
      } duplicates`,
    );
  });

  it("sends records the broker refuses for good to dead letters and delivers the ones around them", async () => {
    ({ dir, cleanup } = await tempDir());
    const topic = uniqueTopic("poison");
    await createTopics([topic], 1, { "max.message.bytes": "20000" });
    // __consumer_offsets is a legal name, but the broker refuses produce requests to it.
    const b = await openBuffer();
    await b.write(topic, "before");
    await b.write(topic, "x".repeat(50_000)); // over the topic's max.message.bytes
    await b.write("__consumer_offsets", "internal");
    await b.write(topic, "y".repeat(2_000_000)); // over the provider's maxMessageBytes
    await b.write(topic, "after");
    await b.drained(60_000);
    const got = await consume([topic], 2);
    assert.deepEqual(got.map((r) => r.value!.toString()), ["before", "after"]);
    assert.equal(b.stats().counters.deadLettered, 3);
    const dead = (await readdir(`${dir}/dead`)).filter((n) => n.endsWith(".seg"));
    assert.equal(dead.length, 1);
  });

  const saslBrokers = process.env.MB_TEST_SASL_BROKERS?.split(",");
  it(
    "authenticates with SASL/SCRAM-SHA-256, and a wrong password is a clear error that loses nothing",
    {
      skip: saslBrokers
        ? false
        : "MB_TEST_SASL_BROKERS is not set (scripts/test.sh sets it for its own broker)",
    },
    async () => {
      ({ dir, cleanup } = await tempDir());
      const topic = uniqueTopic("sasl");
      await createTopics([topic], 1);
      const sasl = (password: string) =>
        kafkaProvider({
          brokers: saslBrokers!,
          sasl: { mechanism: "scram-sha-256", username: "alice", password },
        });
      const wrong = await openBuffer({}, sasl("not-the-password"));
      for (let i = 0; i < 100; i++) await wrong.write(topic, `s-${i}`);
      await waitFor(
        () => wrong.stats().provider.lastError !== null,
        30_000,
        "the authentication failure",
      );
      assert.match(wrong.stats().provider.lastError!, /SASL|[Aa]uthentication/);
      assert.ok(
        !wrong.stats().provider.lastError!.includes("not-the-password"),
        "the password is not in the error",
      );
      assert.equal(wrong.stats().backlog.records, 100, "records wait on disk");
      await buffers.close(wrong);
      const right = await openBuffer({}, sasl("alice-secret"));
      await right.drained(60_000);
      const got = await consume([topic], 100);
      assert.deepEqual(
        got.map((r) => r.value!.toString()),
        Array.from({ length: 100 }, (_, i) => `s-${i}`),
      );
    },
  );

  for (const compression of ["none", "gzip", "snappy", "lz4", "zstd"] as const) {
    it(`compresses with ${compression}, and Kafka's Java consumer reads back every record exactly`, async () => {
      if (KAFKA_CLIENT === "kafkajs" && compression !== "none" && compression !== "gzip") {
        // kafkajs has gzip only, and messagebuffer leaves its shared codec registry alone.
        assert.throws(
          () => kafkaProvider({ compression }),
          new RegExp(`"compression": "${compression}" needs client "platformatic"`),
        );
        return;
      }
      ({ dir, cleanup } = await tempDir());
      const topic = uniqueTopic(`codec-${compression}`);
      await createTopics([topic], 2);
      const b = await openBuffer({ batchMaxRecords: 500 }, kafkaProvider({ compression }));
      const values: Uint8Array[] = [];
      for (let i = 0; i < 2000; i++) {
        // Compressible text and incompressible bytes, alternating.
        const v = i % 2 === 0
          ? enc.encode(`record ${i} ${"abc".repeat(i % 50)}`)
          : crypto.getRandomValues(new Uint8Array(1 + (i % 300)));
        values.push(v);
        await b.write(topic, v, { key: `k${i % 13}`, headers: [["n", String(i)], ["n", "again"]] });
      }
      await b.drained(60_000);
      const got = await consumeWithJava(topic, values.length);
      if (got === null) return; // no jars known: a broker not started by scripts/test.sh
      assert.equal(got.length, values.length, "each record once");
      for (const r of got) {
        const i = Number(r.headers[0][1].toString());
        assert.deepEqual(r.headers.map(([k, v]) => [k, v.toString()]), [["n", String(i)], [
          "n",
          "again",
        ]]);
        assert.equal(r.key!.toString(), `k${i % 13}`);
        assert.ok(Buffer.from(values[i]).equals(r.value), `record ${i} (${compression})`);
      }
      // Per partition, in write order.
      for (const p of [0, 1]) {
        const idx: number[] = got.filter((r) => r.partition === p).sort((a, c) =>
          a.offset - c.offset
        )
          .map((r) => Number(r.headers[0][1].toString()));
        assert.deepEqual(idx, [...idx].sort((a, c) => a - c));
      }
    });
  }

  it("reports a broker that cannot be reached as a retriable error naming the address, keeping the records", async () => {
    ({ dir, cleanup } = await tempDir());
    const b = await openBuffer(
      {},
      kafkaProvider({ brokers: ["127.0.0.1:1"], connectionTimeoutMs: 200 }),
    );
    await b.write("kept", "safe");
    await waitFor(() => b.stats().provider.lastError !== null, 30_000);
    assert.match(b.stats().provider.lastError!, /127\.0\.0\.1:1/);
    assert.equal(b.stats().backlog.records, 1);
  });
});

after(() => {
  // kafkajs keeps no timers after disconnect; nothing to do.
});
