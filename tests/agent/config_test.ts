import { describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  buildConfig,
  ConfigError,
  engineOptions,
  httpOptions,
  printableConfig,
  providerOptions,
  SASL_PASSWORD_ENV,
} from "../../src/agent/config.ts";

describe("agent configuration", () => {
  it("reads plain numbers in each key's unit: file_max_time s, file_max_size MB, total_size MB, prune_frequency min", () => {
    const c = buildConfig({}, {
      file_max_time: 5,
      file_max_size: 2,
      total_size: 10,
      prune_frequency: 2,
      buffer_dir: "/b",
    }, {});
    const o = engineOptions(c);
    assert.equal(o.segmentMaxAgeMs, 5000);
    assert.equal(o.segmentMaxBytes, 2 * 1024 * 1024);
    assert.equal(o.maxBufferBytes, 10 * 1024 * 1024);
    assert.equal(o.pruneIntervalMs, 120_000);
    assert.equal(o.dir, "/b");
  });

  it("takes times and sizes with units, in the config file and on flags; plain numbers keep the unit shown", () => {
    const c = buildConfig(
      { "file-max-time": "250MS", "total-size": "2GB", "max-line-bytes": "64kib" },
      { file_max_size: "16MiB", prune_frequency: "90s", fsync_interval: "1.5s", close_timeout: 3 },
      {},
    );
    const o = engineOptions(c);
    assert.equal(o.segmentMaxAgeMs, 250);
    assert.equal(o.maxBufferBytes, 2_000_000_000);
    assert.equal(o.segmentMaxBytes, 16 * 1024 * 1024);
    assert.equal(o.pruneIntervalMs, 90_000);
    assert.equal(o.fsyncIntervalMs, 1500);
    assert.equal(o.closeTimeoutMs, 3000);
    assert.equal(c.values.max_line_bytes, 65536);
  });

  it("--print-config shows times and sizes with units, which a config file takes back, and the socket path", () => {
    const c = buildConfig({ "buffer-dir": "/var/lib/mb", "file-max-time": "250ms" }, null, {});
    const printed = printableConfig(c);
    assert.equal(printed.file_max_time, "250ms");
    assert.equal(printed.file_max_size, "16MiB");
    assert.equal(printed.prune_frequency, "1min");
    assert.equal(printed.fsync_interval, "1s");
    assert.equal(printed.socket, "/var/lib/mb/messagebuffer.sock");
    const { socket: _socket, ...file } = printed;
    assert.deepEqual(engineOptions(buildConfig({}, file, {})), engineOptions(c));
  });

  it("sends 500 records at most with kafkajs unless batch_max_records says otherwise", () => {
    const batch = (flags: Record<string, string>, file: Record<string, unknown> | null = null) =>
      engineOptions(buildConfig(flags, file, {})).batchMaxRecords;
    assert.equal(batch({ "kafka-client": "kafkajs" }), 500);
    assert.equal(batch({}, { kafka_client: "kafkajs" }), 500);
    assert.equal(batch({ "kafka-client": "kafkajs", "batch-max-records": "5000" }), 5000);
    assert.equal(batch({ "kafka-client": "kafkajs" }, { batch_max_records: 2000 }), 2000);
    assert.equal(batch({}), 5000);
    const printed = printableConfig(buildConfig({ "kafka-client": "kafkajs" }, null, {}));
    assert.equal(printed.batch_max_records, 500);
  });

  it("--print-config shows the inputs that are off as null, which a config file takes back", () => {
    const printed = printableConfig(buildConfig({ "syslog-tcp": "127.0.0.1:5514" }, null, {}));
    assert.equal(printed.http, null);
    assert.equal(printed.metrics, null);
    // In the settings' order, not moved to the end.
    const keys = Object.keys(printed);
    assert.ok(keys.indexOf("http") < keys.indexOf("log_level"), keys.join(","));
    assert.equal(printed.syslog_socket, null);
    assert.equal(printed.syslog_tcp, "127.0.0.1:5514");
    assert.equal(printed.syslog_topic, "syslog");
    const { socket: _socket, ...file } = printed;
    assert.equal(buildConfig({}, file, {}).values.http, undefined);
  });

  it("reads the HTTP token and TLS files, naming a file it cannot read", async () => {
    const files: Record<string, string> = { tok: "s3cret\n", "c.pem": "CERT", "k.pem": "KEY" };
    const read = (p: string) =>
      p in files
        ? Promise.resolve(files[p])
        : Promise.reject(Object.assign(new Error("x"), { code: "ENOENT" }));
    const c = buildConfig(
      {
        http: "127.0.0.1:8080",
        "http-token-file": "tok",
        "http-tls-cert-file": "c.pem",
        "http-tls-key-file": "k.pem",
      },
      null,
      {},
    );
    const o = await httpOptions(c, read);
    assert.equal(o?.token, "s3cret");
    assert.deepEqual(o?.tls, { cert: "CERT", key: "KEY" });
    assert.equal(await httpOptions(buildConfig({}, null, {}), read), null);
    await assert.rejects(
      httpOptions(buildConfig({ http: "127.0.0.1:1", "http-token-file": "nope" }, null, {}), read),
      /^ConfigError: --http-token-file: cannot read "nope": ENOENT$/,
    );
  });

  it("lets flags override the file and the file override defaults", () => {
    const c = buildConfig({ "file-max-time": "3" }, { file_max_time: 7, fsync: "always" }, {});
    assert.equal(c.values.file_max_time, 3);
    assert.equal(c.sources.file_max_time, "flag");
    assert.equal(c.values.fsync, "always");
    assert.equal(c.values.when_full, "drop-oldest");
    assert.equal(c.sources.when_full, "default");
  });

  const bad: Array<[Record<string, unknown>, Record<string, unknown> | null, RegExp]> = [
    [
      { "file-max-time": "soon" },
      null,
      /--file-max-time: expected a number \(s\), or one with a unit \(500ms, 5s, 2min\), got "soon"/,
    ],
    [{ "file-max-time": "5x" }, null, /--file-max-time: unknown time unit "x" \(use ms, s/],
    [
      { metrics: "localhost:99999" },
      null,
      /^--metrics: port 99999 of "localhost:99999" is not between/,
    ],
    [{ brokers: "h:0" }, null, /^--brokers: port 0 of "h:0" is not between 1 and 65535$/],
    [{}, { file_max_size: "5s" }, /"file_max_size" in the config file: unknown size unit "s"/],
    [{ "fsync-interval": "0.1ms" }, null, /^--fsync-interval: must be at least 1 ms, got "0.1ms"$/],
    [{ fsync: "sometimes" }, null, /--fsync: must be one of always, interval, never/],
    [{}, { file_max_tme: 5 }, /unknown key "file_max_tme"/],
    [{}, { filemaxtime: 5 }, /did you mean "file_max_time"/],
    [{}, { total_size: "big" }, /"total_size" in the config file: expected a number/],
    [
      { "total-size": "10", "file-max-size": "8" },
      null,
      /--total-size \(10 MiB\) must be at least twice --file-max-size/,
    ],
    [{ "socket-mode": "rw" }, null, /--socket-mode: expected octal/],
    [{ brokers: "localhost" }, null, /--brokers: "localhost" is not host:port/],
    [{ metrics: "9464" }, null, /--metrics: expected host:port/],
    [{ "sasl-mechanism": "plain" }, null, /--sasl-mechanism needs --sasl-username/],
    [{ "file-max-time": "-1" }, null, /^--file-max-time: must be at least 0\.001 s, got -1$/],
    [{ "file-max-size": "0.0005" }, null, /^--file-max-size: must be at least 0\.0009766 MiB, got/],
    [{}, { max_record_age: -5 }, /^"max_record_age" in the config file: must be at least 0/],
    [{ "buffer-dir": "" }, null, /^--buffer-dir: expected a non-empty string, got ""$/],
    [{ tls: "yes" }, null, /^--tls: expected true or false, got "yes"$/],
    [{}, { brokers: ["h:1", 2] }, /^"brokers" in the config file: expected a list of strings/],
    [{ "log-level": "trace" }, null, /^--log-level: must be one of debug, info, warn, error/],
    [{ http: "8080" }, null, /^--http: expected host:port/],
    [{ http: "127.0.0.1:70000" }, null, /^--http: port 70000 of "127.0.0.1:70000" is not between/],
    [{ "syslog-tcp": "0.0.0.0:0" }, null, /^--syslog-tcp: port 0 of "0.0.0.0:0" is not between/],
    [{ "http-tls-cert-file": "c.pem" }, null, /^--http-tls-cert-file needs --http-tls-key-file$/],
    [{ "syslog-topic": "logs.{colour}" }, null, /^--syslog-topic: unknown placeholder \{colour\}/],
    [{ "syslog-topic": "logs/{app}" }, null, /^--syslog-topic: "logs\/\{app\}" has characters/],
    [{ "syslog-key": "pid" }, null, /^--syslog-key: must be one of hostname, app, none/],
    [{ "syslog-value": "xml" }, null, /^--syslog-value: must be one of json, raw/],
    [{ "http-max-body": "12" }, null, /^--http-max-body: must be at least 1024/],
  ];
  for (const [flags, file, message] of bad) {
    it(`refuses ${JSON.stringify(flags)} ${JSON.stringify(file)} naming the setting`, () => {
      assert.throws(
        () => buildConfig(flags, file, {}),
        (e) => e instanceof ConfigError && message.test(e.message),
      );
    });
  }

  it("types its values: numbers in the agent's units, choices as their unions", () => {
    const c = buildConfig({ "total-size": "64", brokers: "a:1, b:2" }, null, {});
    const total: number = c.values.total_size;
    const level: "debug" | "info" | "warn" | "error" = c.values.log_level;
    const brokers: string[] | undefined = c.values.brokers;
    const socket: string | undefined = c.values.socket;
    assert.deepEqual([total, level, brokers, socket], [64, "info", ["a:1", "b:2"], undefined]);
    assert.equal(engineOptions(c).maxBufferBytes, 64 * 1024 * 1024);
  });

  it("needs brokers to build the provider, and says how to get one", async () => {
    await assert.rejects(
      providerOptions(buildConfig({}, null, {}), () => Promise.resolve("")),
      /no Kafka brokers: pass --brokers/,
    );
  });

  it("--require-existing-topics (or require_existing_topics) turns the provider's autoCreateTopics off", async () => {
    const read = () => Promise.resolve("");
    const on = await providerOptions(buildConfig({ brokers: "a:1" }, null, {}), read);
    assert.notEqual(on.autoCreateTopics, false);
    const flag = buildConfig({ brokers: "a:1", "require-existing-topics": true }, null, {});
    assert.equal((await providerOptions(flag, read)).autoCreateTopics, false);
    const file = buildConfig({ brokers: "a:1" }, { require_existing_topics: true }, {});
    assert.equal((await providerOptions(file, read)).autoCreateTopics, false);
  });

  it("takes the SASL password from the environment and masks it in --print-config", async () => {
    const c = buildConfig(
      { brokers: "h:1", "sasl-mechanism": "scram-sha-256", "sasl-username": "alice" },
      null,
      {
        [SASL_PASSWORD_ENV]: "s3cret",
      },
    );
    const p = await providerOptions(c, () => Promise.reject(new Error("no files")));
    assert.deepEqual(p.sasl, { mechanism: "scram-sha-256", username: "alice", password: "s3cret" });
    const printed = JSON.stringify(printableConfig(c));
    assert.ok(!printed.includes("s3cret"));
    assert.match(printed, /\*\*\*\*\*/);
  });

  it("reads the password file and names it when it cannot", async () => {
    const c = buildConfig(
      {
        brokers: "h:1",
        "sasl-mechanism": "plain",
        "sasl-username": "u",
        "sasl-password-file": "/nope",
      },
      null,
      {},
    );
    await assert.rejects(
      providerOptions(c, () => Promise.reject(Object.assign(new Error("x"), { code: "ENOENT" }))),
      /--sasl-password-file: cannot read "\/nope": ENOENT/,
    );
    const p = await providerOptions(c, () => Promise.resolve("pw\n"));
    assert.equal(p.sasl?.password, "pw");
  });
});
