import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { DEFAULTS, resolveOptions } from "../src/engine/options.ts";
import { buildConfig, engineOptions, providerOptions } from "../src/agent/config.ts";
import { silentLogger } from "../src/log.ts";
import { MemoryFileSystem } from "../src/fs/memory.ts";
import { KafkaProvider } from "../src/provider/kafka/kafka.ts";
import { AGENT, ENGINE, KAFKA } from "../src/settings.ts";
import { RecordingProvider } from "./_helpers.ts";

const MiB = 1024 * 1024;

function resolve(o: Record<string, unknown>) {
  return resolveOptions(
    { dir: "/b", provider: new RecordingProvider(), ...o },
    new MemoryFileSystem(),
    silentLogger,
  );
}

describe("settings table", () => {
  it("gives the engine's defaults (batches of 5000 records since delivery got faster)", () => {
    assert.deepEqual({ ...DEFAULTS }, {
      mode: "buffer",
      directMaxRecords: 10_000,
      directTimeoutMs: 2000,
      lanes: 1,
      maxSendsInFlight: 4,
      segmentMaxAgeMs: 10_000,
      segmentMaxBytes: 16 * MiB,
      maxBufferBytes: 1024 * MiB,
      whenFull: "drop-oldest",
      maxRecordAgeMs: 0,
      pruneIntervalMs: 60_000,
      fsync: "interval",
      fsyncIntervalMs: 1000,
      maxRecordBytes: 4 * MiB,
      batchMaxRecords: 5000,
      batchMaxBytes: 4 * MiB,
      retryMaxMs: 30_000,
      closeTimeoutMs: 10_000,
    });
    assert.ok(Object.isFrozen(DEFAULTS));
  });

  it("words the engine's errors for the library: TypeError for the type, RangeError for the range", () => {
    const cases: Array<[Record<string, unknown>, string, RegExp]> = [
      [
        { fsync: "sometimes" },
        "TypeError",
        /^Option "fsync" must be one of "always", "interval", "never", got "sometimes"$/,
      ],
      [{ segmentMaxAgeMs: 1.5 }, "TypeError", /^Option "segmentMaxAgeMs" must be an integer/],
      [{ segmentMaxAgeMs: null }, "TypeError", /must be an integer, got null/],
      [{ maxRecordBytes: 32 }, "RangeError", /"maxRecordBytes" must be between 64 and 268435456/],
      [{ dir: "" }, "TypeError", /^Option "dir" must be a non-empty string$/],
      [
        { segmentMaxBytes: MiB, maxBufferBytes: MiB },
        "RangeError",
        /^Option "maxBufferBytes" \(1048576\) must be at least twice "segmentMaxBytes" \(1048576\), so that pruning a sealed segment can make room$/,
      ],
      [
        { retryInitialMs: 500, retryMaxMs: 100 },
        "RangeError",
        /^Option "retryMaxMs" \(100\) must not be below "retryInitialMs" \(500\)$/,
      ],
      [{ segmentMaxAge: 5 }, "TypeError", /^Unknown option "segmentMaxAge"$/],
    ];
    for (const [o, name, message] of cases) {
      assert.throws(() => resolve(o), { name, message }, JSON.stringify(o));
    }
  });

  it("takes the first retry wait from the options, else the provider, else 100 ms", () => {
    assert.equal(resolve({ retryInitialMs: 7 }).retryInitialMs, 7);
    assert.equal(resolve({}).retryInitialMs, 1); // RecordingProvider.retryWaitMs
    const plain = {
      name: "plain",
      open: () => Promise.resolve(),
      send: () => Promise.resolve({ rejected: [] }),
      close: () => Promise.resolve(),
    };
    assert.equal(resolve({ provider: plain }).retryInitialMs, 100);
  });

  it("takes the batch size from the options, else the provider's sendMaxRecords, else 5000", () => {
    const kafkajs = new KafkaProvider({ brokers: ["127.0.0.1:1"], client: "kafkajs" });
    const platformatic = new KafkaProvider({ brokers: ["127.0.0.1:1"] });
    assert.equal(resolve({ provider: kafkajs }).batchMaxRecords, 500);
    assert.equal(resolve({ provider: kafkajs, batchMaxRecords: 3000 }).batchMaxRecords, 3000);
    assert.equal(resolve({ provider: platformatic }).batchMaxRecords, 5000);
    assert.equal(resolve({}).batchMaxRecords, 5000); // RecordingProvider: no limit of its own
    const odd = Object.assign(new RecordingProvider(), { sendMaxRecords: 0.5 });
    assert.throws(
      () => resolve({ provider: odd }),
      /Provider "recording": sendMaxRecords must be a whole number of at least 1, not 0.5/,
    );
  });

  it("gives the agent the engine's defaults, in the agent's units", () => {
    const o = engineOptions(buildConfig({}, null, {}));
    const { dir, ...rest } = o;
    assert.equal(dir, "./messagebuffer-data");
    for (const [name, v] of Object.entries(rest)) {
      assert.equal(v, DEFAULTS[name as keyof typeof DEFAULTS], name);
    }
  });

  it("gives the agent the Kafka provider's defaults", async () => {
    const p = await providerOptions(buildConfig({ brokers: "h:1" }, null, {}), () => {
      throw new Error("no files");
    });
    assert.equal(p.clientId, KAFKA.clientId.default);
    assert.equal(p.compression, KAFKA.compression.default);
    assert.equal(p.requestTimeoutMs, KAFKA.requestTimeoutMs.default);
    assert.equal(p.maxMessageBytes, KAFKA.maxMessageBytes.default);
  });

  it("accepts at the engine every smallest value the agent accepts", () => {
    // Each minimum as the agent words it, e.g. "--file-max-size: must be at least 0.0009766 MB"
    // (in the unit a plain number is in).
    const flags: Record<string, string> = {};
    for (const [key, entry] of Object.entries(AGENT)) {
      if (!("engine" in entry) || ENGINE[entry.engine].type !== "integer") continue;
      if (key === "total_size") continue; // set below: at least twice file_max_size
      try {
        buildConfig({ [key.replace(/_/g, "-")]: "-1" }, null, {});
        assert.fail(`${key}: -1 accepted`);
      } catch (e) {
        const min = /must be at least (\S+)(?: \w+)?, got -1$/.exec((e as Error).message);
        assert.ok(min, (e as Error).message);
        flags[key.replace(/_/g, "-")] = min[1];
      }
    }
    flags["total-size"] = String(2 * Number(flags["file-max-size"]));
    assert.doesNotThrow(() => resolve(engineOptions(buildConfig(flags, null, {}))));
  });

  it("words the Kafka provider's errors for the library", () => {
    const cases: Array<[Record<string, unknown>, RegExp]> = [
      [{}, /^KafkaProvider option "brokers" must be a non-empty list of "host:port"$/],
      [{ brokers: [] }, /must be a non-empty list of "host:port"/],
      [
        { brokers: ["localhost"] },
        /^KafkaProvider option "brokers": "localhost" is not "host:port"$/,
      ],
      [
        { brokers: ["h:1"], compression: "brotli" },
        /^KafkaProvider option "compression" must be one of "none", "gzip", "snappy", "lz4", "zstd", got "brotli"$/,
      ],
      [
        { brokers: ["h:1"], client: "librdkafka" },
        /^KafkaProvider option "client" must be one of "platformatic", "kafkajs", got "librdkafka"$/,
      ],
      [
        { brokers: ["h:1"], sasl: { mechanism: "md5", username: "u", password: "p" } },
        /^KafkaProvider option "sasl.mechanism" must be one of "plain", /,
      ],
      [{ brokers: ["h:1"], requestTimeoutMs: 0 }, /"requestTimeoutMs" must be between 1 and/],
    ];
    for (const [o, message] of cases) {
      assert.throws(
        () => new KafkaProvider(o as unknown as ConstructorParameters<typeof KafkaProvider>[0]),
        { name: /TypeError|RangeError/, message },
        JSON.stringify(o),
      );
    }
  });
});
