// Delivery lanes against the real broker: a topic whose sends keep failing (it does not exist,
// and topic creation is left to the operator) holds up only its own lane, and follows in order once fixed; a topic the broker
// refuses (an ACL denies the SASL user writes to it) goes to dead letters while the other
// topics, in their own lanes, are delivered whole and in order.

import { afterEach, describe, it } from "node:test";
import assert from "node:assert/strict";
import process from "node:process";
import { silentLogger } from "../../mod.ts";
import { OpenBuffers, tempDir, waitFor } from "../_helpers.ts";
import {
  consume,
  createTopics,
  denyWrites,
  KAFKA_CLIENT,
  kafkaProvider,
  uniqueTopic,
} from "../_kafka.ts";

let cleanup = async () => {};
const buffers = new OpenBuffers();
afterEach(async () => {
  await buffers.closeAll();
  await cleanup();
});

const saslBrokers = process.env.MB_TEST_SASL_BROKERS?.split(",");

describe(`lanes (${KAFKA_CLIENT}), real broker`, () => {
  it("a topic whose sends keep failing holds up only its lane; it follows, in order, once fixed", async () => {
    const t = await tempDir();
    cleanup = t.cleanup;
    // A topic that does not exist yet, with topic creation left to the operator: a failure
    // that may pass, so its sends are retried until the topic is created.
    const stuck = uniqueTopic("lanes-stuck");
    const flowing = uniqueTopic("lanes-flowing");
    await createTopics([flowing], 1);
    const b = await buffers.open({
      dir: t.dir,
      lanes: 2,
      logger: silentLogger,
      retryInitialMs: 100,
      retryMaxMs: 500,
      provider: kafkaProvider({ autoCreateTopics: false }),
    });
    const N = 2000;
    const ws: Promise<void>[] = [];
    for (let i = 0; i < N; i++) {
      ws.push(b.write(stuck, `${stuck}-${i}`), b.write(flowing, `${flowing}-${i}`));
    }
    await Promise.all(ws);
    const laneOf = (topic: string) => b.stats().lanes.find((l) => l.topics.includes(topic))!;
    await waitFor(
      () => laneOf(flowing).backlog.records === 0 && laneOf(stuck).provider.state === "retrying",
      60_000,
      "the flowing topic's lane to deliver everything while the other retries",
    );
    assert.notEqual(laneOf(stuck).lane, laneOf(flowing).lane);
    assert.equal(laneOf(stuck).backlog.records, N, "the stuck topic waits on disk");
    assert.match(laneOf(stuck).provider.lastError ?? "", /Unknown topic|does not host this topic/);
    await createTopics([stuck], 1); // the operator creates it
    await b.drained(120_000);
    const got = await consume([stuck, flowing], 2 * N, { timeoutMs: 90_000 });
    for (const topic of [stuck, flowing]) {
      const values = got.filter((r) => r.topic === topic).sort((a, c) => a.offset - c.offset)
        .map((r) => r.value!.toString());
      assert.deepEqual(
        [...new Set(values)],
        Array.from({ length: N }, (_, i) => `${topic}-${i}`),
        `${topic}: all, in order`,
      );
    }
  });

  it(
    "a topic refused by an ACL goes to dead letters; the other lanes deliver every record in order",
    {
      skip: saslBrokers
        ? false
        : "MB_TEST_SASL_BROKERS is not set (scripts/test.sh sets it for its own broker)",
    },
    async () => {
      const t = await tempDir();
      cleanup = t.cleanup;
      const denied = uniqueTopic("lanes-denied");
      const open = [uniqueTopic("lanes-a"), uniqueTopic("lanes-b")];
      await createTopics([denied, ...open], 2);
      await denyWrites(denied, "User:alice");
      const b = await buffers.open({
        dir: t.dir,
        lanes: 3,
        logger: silentLogger,
        retryInitialMs: 100,
        retryMaxMs: 1000,
        provider: kafkaProvider({
          brokers: saslBrokers!,
          sasl: { mechanism: "scram-sha-256", username: "alice", password: "alice-secret" },
        }),
      });
      const N = 3000;
      const ws: Promise<void>[] = [];
      for (let i = 0; i < N; i++) {
        for (const topic of [denied, ...open]) {
          ws.push(b.write(topic, `${topic}-${i}`, { key: `k${i % 7}` }));
        }
      }
      await Promise.all(ws);
      await b.drained(120_000);
      const s = b.stats();
      assert.equal(s.lanes.length, 3);
      assert.deepEqual(s.lanes.map((l) => l.topics.length), [1, 1, 1], "one topic per lane");
      assert.equal(s.counters.deadLettered, N, "every record of the refused topic, in dead/");
      assert.equal(s.counters.delivered, 2 * N);
      const got = await consume([...open, denied], 2 * N, { timeoutMs: 90_000 });
      for (const topic of open) {
        // Order holds per partition: per key here.
        for (let k = 0; k < 7; k++) {
          const mine = got.filter((r) => r.topic === topic && r.key!.toString() === `k${k}`)
            .sort((a, c) => a.offset - c.offset).map((r) => r.value!.toString());
          const want = Array.from({ length: N }, (_, i) => i).filter((i) => i % 7 === k)
            .map((i) => `${topic}-${i}`);
          assert.deepEqual(mine, want, `${topic} key k${k}: all, in order, once`);
        }
      }
      assert.equal(
        got.filter((r) => r.topic === denied).length,
        0,
        "nothing reached the denied topic",
      );
      const lane = s.lanes.find((l) => l.topics[0] === denied)!;
      assert.equal(lane.backlog.records, 0);
    },
  );
});
