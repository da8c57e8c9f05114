// The delivery modes against the real broker (scripts/kafka.sh): what reaches Kafka in each
// mode, and direct-until-error's two switches through a real outage, checked by a consumer.

import { afterEach, describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  DeliveryError,
  DeliveryTimeoutError,
  type MessageBufferOptions,
  silentLogger,
} from "../../mod.ts";
import { OpenBuffers, tempDir, waitFor } from "../_helpers.ts";
import {
  consume,
  createTopics,
  KAFKA_CLIENT,
  kafkaProvider,
  kafkaScript,
  uniqueTopic,
} from "../_kafka.ts";

/** The directories of the buffers a test opened (several per test), removed after it. */
const cleanups: Array<() => Promise<void>> = [];
const buffers = new OpenBuffers();
afterEach(async () => {
  await buffers.closeAll();
  for (const c of cleanups.splice(0)) await c();
});

async function openBuffer(extra: Partial<MessageBufferOptions>) {
  const t = await tempDir();
  cleanups.push(t.cleanup);
  return buffers.open({
    dir: t.dir,
    provider: kafkaProvider({ requestTimeoutMs: 5000 }),
    logger: silentLogger,
    retryInitialMs: 100,
    retryMaxMs: 1000,
    ...extra,
  });
}

const range = (from: number, to: number) =>
  Array.from({ length: to - from }, (_, i) => `m-${from + i}`);

async function consumeValues(topic: string, n: number): Promise<string[]> {
  const got = await consume([topic], n, { timeoutMs: 90_000 });
  return got.sort((a, b) => a.offset - b.offset).map((r) => r.value!.toString());
}

describe(`delivery modes (${KAFKA_CLIENT}), real broker`, () => {
  it("each mode delivers every record in order while Kafka is up", async () => {
    for (const mode of ["direct-until-error", "block-on-error", "error-on-error"] as const) {
      const topic = uniqueTopic(`mode-${mode}`);
      await createTopics([topic], 1);
      const b = await openBuffer({ mode });
      if (mode === "direct-until-error") {
        // Until the provider connects, writes go to the disk (and resolve once stored).
        await waitFor(() => b.stats().provider.state === "ready", 30_000, "the provider");
      }
      // Writes in waves, as an application would: each wave resolves once Kafka has it.
      for (let wave = 0; wave < 5; wave++) {
        await Promise.all(range(wave * 400, wave * 400 + 400).map((v) => b.write(topic, v)));
      }
      const s = b.stats();
      assert.equal(s.backlog.records, 0, `${mode}: every write resolved once acknowledged`);
      assert.equal(s.counters.delivered, 2000, mode);
      if (mode !== "direct-until-error") {
        assert.equal(s.counters.sentDirect, 2000, `${mode}: nothing touched the disk`);
      } else {
        assert.ok(s.counters.sentDirect > 0, "direct once the provider connected");
        assert.equal(s.path, "direct");
      }
      assert.deepEqual(await consumeValues(topic, 2000), range(0, 2000), mode);
    }
  });

  it("direct-until-error buffers through a broker outage and goes direct again, losing nothing", async () => {
    const topic = uniqueTopic("direct-outage");
    await createTopics([topic], 1);
    const b = await openBuffer({ mode: "direct-until-error", directTimeoutMs: 1500 });
    let n = 0;
    const writeSome = async (count: number) => {
      const ws: Promise<void>[] = [];
      for (let i = 0; i < count; i++, n++) ws.push(b.write(topic, `m-${n}`));
      await Promise.all(ws);
    };
    await waitFor(() => b.stats().provider.state === "ready", 30_000, "the provider to connect");
    await writeSome(1000);
    assert.equal(b.stats().path, "direct");
    await kafkaScript("stop");
    try {
      // The first writes after the stop fail on the direct path and are stored on disk;
      // every write resolves (stored), none sees Kafka's error.
      await writeSome(500);
      await writeSome(500);
      assert.equal(b.stats().path, "disk");
      assert.ok(b.stats().counters.switchesToBuffer >= 1);
      assert.ok(b.stats().backlog.records > 0, "records wait on disk");
    } finally {
      await kafkaScript("start");
    }
    await b.drained(120_000);
    await writeSome(1000); // the backlog is delivered: these go direct again
    const c = b.stats().counters;
    assert.equal(b.stats().path, "direct");
    assert.ok(c.switchesToDirect >= 2, `${c.switchesToDirect} switches to direct`);
    const values = await consumeValues(topic, n);
    const firstSeen = [...new Set(values)];
    assert.deepEqual(firstSeen, range(0, n), "no loss, in write order across both switches");
    const duplicates = values.length - n;
    console.log(
      `direct-until-error outage: ${n} records, ${duplicates} duplicates, ` +
        `${c.spilledRecords} spilled, ${c.switchesToBuffer} to disk, ${c.switchesToDirect} to direct`,
    );
    const counted = c.maybeDuplicatedDirect + c.maybeDuplicatedAtLeastOnce;
    assert.ok(duplicates <= counted, `${duplicates} duplicates, ${counted} counted`);
  });

  it("block-on-error and error-on-error tell the writer when Kafka is down, and recover", async () => {
    const topic = uniqueTopic("nodisk-outage");
    await createTopics([topic], 1);
    const block = await openBuffer({ mode: "block-on-error", directTimeoutMs: 2000 });
    const error = await openBuffer({ mode: "error-on-error", directTimeoutMs: 20_000 });
    await block.write(topic, "block-before");
    await error.write(topic, "error-before");
    await kafkaScript("stop");
    let restarted = false;
    try {
      const started = Date.now();
      const e1 = await block.write(topic, "block-during").then(() => null, (e) => e);
      assert.ok(e1 instanceof DeliveryTimeoutError, `block-on-error: got ${e1}`);
      assert.ok(Date.now() - started >= 1900, "it waited for its bound");
      const e2 = await error.write(topic, "error-during").then(() => null, (e) => e);
      assert.ok(e2 instanceof DeliveryError, `error-on-error: got ${e2}`);
      assert.ok(e2.cause, "the provider's error is the cause");
      // A write that waits across the restart resolves under block-on-error.
      const waiting = block.write(topic, "block-across").then(() => null, (e) => e);
      await kafkaScript("start");
      restarted = true;
      // The broker may take longer to come back than the bound: then the write says so.
      const e3 = await waiting;
      assert.ok(e3 === null || e3 instanceof DeliveryTimeoutError, `got ${e3}`);
    } finally {
      if (!restarted) await kafkaScript("start");
    }
    // Both recover without a restart (the broker may need a moment to take writes again).
    const eventually = async (write: () => Promise<void>) => {
      for (let i = 0;; i++) {
        try {
          return await write();
        } catch (e) {
          if (i > 30) throw e;
          await new Promise((r) => setTimeout(r, 500));
        }
      }
    };
    await eventually(() => block.write(topic, "block-after"));
    await eventually(() => error.write(topic, "error-after"));
    const values = await consumeValues(topic, 4);
    for (const v of ["block-before", "error-before", "block-after", "error-after"]) {
      assert.ok(values.includes(v), `${v} reached Kafka`);
    }
    assert.equal(error.stats().counters.failedWrites >= 1, true);
    assert.equal(block.stats().counters.failedWrites >= 1, true);
  });
});
