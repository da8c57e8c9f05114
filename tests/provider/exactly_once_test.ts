// Exactly once with the default client, against the real broker (scripts/kafka.sh): the
// batch in flight when a run stopped is sent again under its identity, and the broker keeps
// one copy; where the identity cannot hold (the partition count changed, the broker forgot
// the producer), the records are counted and logged with the reason. The kafkajs client keeps
// no identity: its repeats are counted (tests/provider/kafka_test.ts).

import { after, afterEach, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { Kafka, logLevel } from "kafkajs";
import { execFile } from "node:child_process";
import process from "node:process";
import { MessageBuffer, type Provider, silentLogger } from "../../mod.ts";
import { recordingLogger, tempDir } from "../_helpers.ts";
import {
  alterTopic,
  BROKERS,
  consume,
  type Consumed,
  createTopics,
  KAFKA_CLIENT,
  kafkaProvider,
  uniqueTopic,
} from "../_kafka.ts";

const skip = KAFKA_CLIENT === "kafkajs" ? "the kafkajs client keeps no identity" : false;
const noJava = process.env.MB_TEST_KAFKA_LIBS
  ? false
  : "MB_TEST_KAFKA_LIBS (the broker's jars, set by scripts/test.sh) is not set";
const kafka = new Kafka({ brokers: BROKERS, clientId: "mb-test-eo", logLevel: logLevel.NOTHING });
const admin = kafka.admin();
let dir = "";
let cleanup = async () => {};

/** Records each partition holds (its end offset: the topics are new). */
function endOffsets(rs: Consumed[]): number {
  const end = new Map<number, number>();
  for (const r of rs) end.set(r.partition, Math.max(end.get(r.partition) ?? 0, r.offset + 1));
  return [...end.values()].reduce((a, b) => a + b, 0);
}

/**
 * A run that writes `n` keyed records, sends them as one batch, and stops for good once Kafka
 * acknowledged it, before the checkpoint moves (as a crash there would): the batch is in
 * Kafka and in the in-flight file.
 */
async function appendThenStop(
  topic: string,
  n: number,
  options: { big?: { at: number; bytes: number }; maxMessageBytes?: number } = {},
): Promise<void> {
  const kp = kafkaProvider(
    options.maxMessageBytes ? { maxMessageBytes: options.maxMessageBytes } : {},
  );
  let written!: () => void;
  const allWritten = new Promise<void>((r) => (written = r));
  let appended!: () => void;
  const inKafka = new Promise<void>((r) => (appended = r));
  const provider: Provider = {
    name: kp.name,
    keepsIdentity: kp.keepsIdentity,
    open: () => allWritten.then(() => kp.open()),
    send: async (records, context) => {
      await kp.send(records, context);
      appended();
      await new Promise(() => {}); // never answers: the checkpoint stays before the batch
    },
    close: () => kp.close(),
  };
  const b = await MessageBuffer.open({ dir, provider, logger: silentLogger, closeTimeoutMs: 100 });
  await Promise.all(
    Array.from(
      { length: n },
      (_, i) =>
        b.write(topic, i === options.big?.at ? "x".repeat(options.big.bytes) : `v${i}`, {
          key: `k${i % 7}`,
        }),
    ),
  );
  written();
  await inKafka;
  await b.close();
}

/** The next run: delivers the backlog, with its counters and log. */
async function nextRun(maxMessageBytes?: number) {
  const { logger, lines } = recordingLogger();
  const provider = kafkaProvider(maxMessageBytes ? { maxMessageBytes } : {});
  const b = await MessageBuffer.open({ dir, provider, logger });
  await b.drained(60_000);
  const counters = b.stats().counters;
  await b.close();
  return { counters, lines };
}

describe("exactly once (platformatic), real broker", { skip }, () => {
  before(() => admin.connect());
  after(() => admin.disconnect());
  afterEach(() => cleanup());

  it("the batch in flight at a stop goes again under its identity: Kafka keeps one copy", async () => {
    ({ dir, cleanup } = await tempDir());
    const topic = uniqueTopic("eo-again");
    await createTopics([topic], 3);
    await appendThenStop(topic, 40);
    assert.equal(endOffsets(await consume([topic], 40)), 40);
    const { counters, lines } = await nextRun();
    const got = await consume([topic], 40);
    assert.equal(endOffsets(got), 40, "the end offsets did not move");
    assert.deepEqual(
      got.map((r) => r.value!.toString()).sort(),
      [...Array(40).keys()].map((i) => `v${i}`).sort(),
    );
    assert.ok(lines.some((l) => l.includes("sending first the batch that was in flight")));
    assert.equal(
      counters.maybeDuplicatedPartitionsChanged + counters.maybeDuplicatedProducerExpired +
        counters.maybeDuplicatedProducerStateLost,
      0,
    );
  });

  it("a topic that gained partitions since: its records are placed again, counted", async () => {
    ({ dir, cleanup } = await tempDir());
    const topic = uniqueTopic("eo-partitions");
    await createTopics([topic], 2);
    await appendThenStop(topic, 30);
    await admin.createPartitions({ topicPartitions: [{ topic, count: 4 }] });
    const { counters, lines } = await nextRun();
    assert.equal(counters.maybeDuplicatedPartitionsChanged, 30);
    assert.ok(
      lines.some((l) =>
        l.includes("may reach the destination twice") && l.includes("partitions-changed")
      ),
      lines.join("\n"),
    );
    // As counted: the 30 records are in Kafka twice.
    assert.equal(endOffsets(await consume([topic], 60)), 60);
  });

  it(
    "a producer the broker has forgotten (producer.id.expiration.ms): counted, sent under a new id",
    {
      skip: noJava,
    },
    async () => {
      ({ dir, cleanup } = await tempDir());
      const topic = uniqueTopic("eo-expired");
      await createTopics([topic], 1);
      await appendThenStop(topic, 20);
      // The brokers' cluster-wide default, set and then deleted, with Kafka's own ConfigCommand
      // (from the broker's jars).
      const expiration = (ms: number | null) =>
        new Promise<void>((resolve, reject) =>
          execFile("java", [
            "-cp",
            `${process.env.MB_TEST_KAFKA_LIBS}/*`,
            "kafka.admin.ConfigCommand",
            "--bootstrap-server",
            BROKERS[0],
            "--entity-type",
            "brokers",
            "--entity-default",
            "--alter",
            ...(ms === null
              ? ["--delete-config", "producer.id.expiration.ms"]
              : ["--add-config", `producer.id.expiration.ms=${ms}`]),
          ], (err, _out, stderr) => err ? reject(new Error(`ConfigCommand: ${stderr}`)) : resolve())
        );
      await expiration(1000);
      try {
        await new Promise((r) => setTimeout(r, 1500)); // the batch is now older than that
        const { counters, lines } = await nextRun();
        assert.equal(counters.maybeDuplicatedProducerExpired, 20);
        assert.ok(lines.some((l) => l.includes("producer-expired")), lines.join("\n"));
        assert.equal(endOffsets(await consume([topic], 40)), 40, "sent again, as counted");
      } finally {
        await expiration(null);
      }
    },
  );

  it("a record refused for good when its batch is sent again: the rest goes under a new id, counted", async () => {
    ({ dir, cleanup } = await tempDir());
    const topic = uniqueTopic("eo-refused");
    const big = 2 << 20;
    await createTopics([topic], 1, { "max.message.bytes": String(4 << 20) });
    await appendThenStop(topic, 30, { big: { at: 10, bytes: big }, maxMessageBytes: 4 << 20 });
    // Before the next run, the topic's limit falls under the record Kafka already holds: sent
    // again, it is refused, and the 19 records after it may not take its sequence number.
    await alterTopic(topic, { "max.message.bytes": String(1 << 20) });
    const { counters, lines } = await nextRun(4 << 20);
    assert.equal(counters.deadLettered, 1);
    assert.equal(counters.maybeDuplicatedRefusedRecord, 19);
    assert.ok(lines.some((l) => l.includes("refused-record")), lines.join("\n"));
    // As counted: the 19 records after it are in Kafka twice, the 10 before it once.
    assert.equal(endOffsets(await consume([topic], 30 + 19)), 30 + 19);
  });
});
