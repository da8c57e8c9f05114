// The default client negotiates the Produce version with the broker (ApiVersions) instead of
// assuming one: both clients deliver to an Apache Kafka 3.9.1 broker as they do to 4.1.2, and
// Kafka's own Java consumer reads back every record. scripts/test.sh starts the 3.9.1 broker
// (scripts/kafka.sh with KAFKA_VERSION=3.9.1) and sets MB_TEST_OLD_BROKERS.

import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import process from "node:process";
import { KafkaProvider, type LogFields, type Logger, MessageBuffer } from "../../mod.ts";
import { tempDir } from "../_helpers.ts";
import { consumeWithJava, uniqueTopic } from "../_kafka.ts";

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
