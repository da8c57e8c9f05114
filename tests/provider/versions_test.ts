// The default client negotiates the Produce version with the broker (ApiVersions) instead of
// assuming one: both clients deliver to an Apache Kafka 3.9.1 broker as they do to 4.1.2, and
// Kafka's own Java consumer reads back every record. scripts/test.sh starts the 3.9.1 broker
// (scripts/kafka.sh with KAFKA_VERSION=3.9.1) and sets MB_TEST_OLD_BROKERS. Against the
// test broker, each Produce version the default client speaks is sent one batch, so that a
// broker whose highest version is an older one is spoken to correctly too.

import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import process from "node:process";
import { KafkaProvider, type LogFields, type Logger, MessageBuffer } from "../../mod.ts";
import { tempDir } from "../_helpers.ts";
import { BROKERS, consume, consumeWithJava, createTopics, uniqueTopic } from "../_kafka.ts";
import { Buffer } from "node:buffer";
import { Producer } from "@platformatic/kafka";
import { produceApi, type ProduceVersion } from "../../src/provider/kafka/platformatic.ts";
import { encodeRecords, finishBatch } from "../../src/provider/kafka/produce.ts";
import type { ProviderRecord } from "../../src/provider/types.ts";

const OLD = process.env.MB_TEST_OLD_BROKERS?.split(",");
const skip = OLD ? false : "MB_TEST_OLD_BROKERS is not set (scripts/test.sh starts Kafka 3.9.1)";
if (skip) console.log(`tests/provider/versions_test.ts: skipping: ${skip}`);

const dirs: Array<() => Promise<void>> = [];
after(async () => {
  for (const d of dirs) await d();
});

describe("Kafka 3.9.1 (the Produce version from ApiVersions)", () => {
  for (const client of ["platformatic", "kafkajs"] as const) {
    it(
      `${client} delivers to Kafka 3.9.1, and the Java consumer reads every record`,
      { skip },
      async () => {
        const t = await tempDir();
        dirs.push(t.cleanup);
        const lines: string[] = [];
        const logger: Logger = {
          debug: (m: string, f?: LogFields) => lines.push(`${m} ${JSON.stringify(f ?? {})}`),
          info: () => {},
          warn: () => {},
          error: () => {},
        };
        const topic = uniqueTopic(`kafka391-${client}`);
        const b = await MessageBuffer.open({
          dir: t.dir,
          provider: new KafkaProvider({ brokers: OLD!, client, logger }),
          logger,
        });
        for (let i = 0; i < 500; i++) await b.write(topic, `v391-${i}`, { key: `k${i % 7}` });
        await b.drained(60_000);
        await b.close();
        if (client === "platformatic") {
          const chosen = lines.find((l) => l.startsWith("kafka: producing with Produce v"));
          assert.match(chosen ?? "", /Produce v11 \{"broker":"\d+ to 11"\}/, lines.join("\n"));
        }
        const got = await consumeWithJava(topic, 500, 60_000, OLD);
        if (got === null) return;
        assert.deepEqual(
          got.map((r) => r.value.toString()).sort(),
          Array.from({ length: 500 }, (_, i) => `v391-${i}`).sort(),
        );
      },
    );
  }
});

describe("every Produce version the default client speaks, against the test broker", () => {
  it("versions 3 to 11 each deliver a batch the broker appends, and a consumer reads it", async () => {
    const topic = uniqueTopic("produce-versions");
    await createTopics([topic]);
    const producer = new Producer({ clientId: "mb-test-versions", bootstrapBrokers: BROKERS });
    const sent: string[] = [];
    try {
      const metadata = await producer.metadata({ topics: [topic] });
      const leader = metadata.topics.get(topic)!.partitions[0].leader;
      const connection = await producer.connections.get(metadata.brokers.get(leader)!);
      for (const version of [3, 4, 5, 6, 7, 8, 9, 10, 11] as ProduceVersion[]) {
        const records: ProviderRecord[] = [0, 1, 2].map((i) => {
          sent.push(`v${version}-${i}`);
          return {
            topic,
            key: Buffer.from(`k${i}`),
            value: Buffer.from(`v${version}-${i}`),
            headers: null,
            timestamp: Date.now(),
          };
        });
        const encoded = encodeRecords(records, [0, 1, 2]);
        // No producer id: a plain (not idempotent) batch, which every version takes.
        const batch = finishBatch(encoded, encoded.bytes, 0, {
          producerId: -1n,
          producerEpoch: -1,
          baseSequence: -1,
        });
        const answer = await produceApi(version).async(connection, -1, 10_000, [
          { topic, partitions: [{ partition: 0, batch }] },
        ]);
        const p = answer.responses[0].partitionResponses[0];
        assert.equal(p.errorCode, 0, `Produce v${version}`);
        assert.ok(p.baseOffset >= 0n, `Produce v${version} appended`);
      }
    } finally {
      await producer.close();
    }
    const got = await consume([topic], sent.length);
    assert.deepEqual(
      [...got].sort((a, b) => a.offset - b.offset).map((r) => r.value!.toString()),
      sent,
    );
  });
});
