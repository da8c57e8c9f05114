/**
 * The options of `KafkaProvider` and the settings a client library is built from: the
 * documented types, checked against the settings table (`src/settings.ts`), and
 * {@link resolveKafkaSettings}, which validates them and fills in the defaults.
 *
 * @module
 */

import type { Logger } from "../../log.ts";
import { KAFKA, type Resolved, resolveTable, type Same, type ValueOf } from "../../settings.ts";

/**
 * TLS settings; PEM text, not file names (the agent reads the files).
 *
 * @example Mutual TLS
 * ```ts
 * import { KafkaProvider } from "./mod.ts";
 * const provider = new KafkaProvider({
 *   brokers: ["kafka.example.com:9093"],
 *   tls: {
 *     ca: await Deno.readTextFile("ca.pem"),
 *     cert: await Deno.readTextFile("client-cert.pem"),
 *     key: await Deno.readTextFile("client-key.pem"),
 *   },
 * });
 * ```
 */
export interface KafkaTlsOptions {
  /** CA certificate(s) to trust. @default the runtime's CA store */
  ca?: string;
  /** Client certificate for mutual TLS. */
  cert?: string;
  /** Client private key for mutual TLS. */
  key?: string;
  /** Skip server certificate verification: for tests only. @default false */
  insecureSkipVerify?: boolean;
}

/**
 * A Kafka client library `KafkaProvider` can produce through.
 *
 * @example Produce with kafkajs
 * ```ts
 * import { KafkaProvider } from "./mod.ts";
 * const provider = new KafkaProvider({ brokers: ["127.0.0.1:9092"], client: "kafkajs" });
 * ```
 */
export type KafkaClientName = "platformatic" | "kafkajs";

/**
 * Compression of the record batches sent to Kafka.
 *
 * @example Compressed batches
 * ```ts
 * import { KafkaProvider } from "./mod.ts";
 * const provider = new KafkaProvider({ brokers: ["127.0.0.1:9092"], compression: "zstd" });
 * ```
 */
export type KafkaCompression = "none" | "gzip" | "snappy" | "lz4" | "zstd";

/**
 * A SASL mechanism.
 *
 * @example SASL/PLAIN
 * ```ts
 * const sasl = { mechanism: "plain" as const, username: "app", password: "secret" };
 * ```
 */
export type KafkaSaslMechanism = "plain" | "scram-sha-256" | "scram-sha-512";

// The names above are those of the settings table.
const _sameNames: [
  Same<KafkaClientName, ValueOf<typeof KAFKA.client>>,
  Same<KafkaCompression, ValueOf<typeof KAFKA.compression>>,
  Same<KafkaSaslMechanism, ValueOf<(typeof KAFKA)["sasl.mechanism"]>>,
] = [true, true, true];
void _sameNames;

/**
 * SASL settings.
 *
 * @example SCRAM-SHA-256
 * ```ts
 * import { KafkaProvider } from "./mod.ts";
 * const provider = new KafkaProvider({
 *   brokers: ["127.0.0.1:9094"],
 *   sasl: { mechanism: "scram-sha-256", username: "alice", password: "alice-secret" },
 * });
 * ```
 */
export interface KafkaSaslOptions {
  /** The mechanism the broker's listener offers. */
  mechanism: KafkaSaslMechanism;
  /** The user name. */
  username: string;
  /** The password (the agent reads it from a file or the environment, never a flag). */
  password: string;
}

/**
 * Options of `KafkaProvider`.
 *
 * @example TLS and SASL/SCRAM
 * ```ts
 * import { KafkaProvider } from "./mod.ts";
 * const provider = new KafkaProvider({
 *   brokers: ["kafka.example.com:9093"],
 *   tls: { ca: await Deno.readTextFile("/etc/ssl/kafka-ca.pem") },
 *   sasl: { mechanism: "scram-sha-512", username: "app", password: Deno.env.get("KAFKA_PASSWORD")! },
 * });
 * ```
 */
export interface KafkaProviderOptions {
  /** Bootstrap brokers, `host:port`. */
  brokers: string[];
  /**
   * The Kafka client library: `"platformatic"` (@platformatic/kafka, the faster) or
   * `"kafkajs"`. Both produce the same way (see the module doc). @default "platformatic"
   */
  client?: KafkaClientName;
  /** Client id the brokers see. @default "messagebuffer" */
  clientId?: string;
  /** Compression of record batches. @default "none" */
  compression?: KafkaCompression;
  /** How long a broker may take to answer a request. @default 30_000 */
  requestTimeoutMs?: number;
  /** How long to wait for a TCP (and TLS) connection. @default 3_000 */
  connectionTimeoutMs?: number;
  /** Most record bytes in one produce request; larger engine batches are split. @default 900_000 */
  maxRequestBytes?: number;
  /**
   * Records larger than this are rejected without sending (the broker's default
   * `message.max.bytes` is 1048588). @default 1_048_576
   */
  maxMessageBytes?: number;
  /**
   * Ask the broker to create a topic that does not exist (if the broker allows it:
   * `auto.create.topics.enable`). When false, records of a topic that does not exist wait,
   * retried, until it is created. @default true
   */
  autoCreateTopics?: boolean;
  /** TLS; `true` for TLS with default settings. @default off */
  tls?: KafkaTlsOptions | boolean;
  /** SASL authentication. @default none */
  sasl?: KafkaSaslOptions;
  /** Where the client library's own log lines go. @default none */
  logger?: Logger;
}

// The table and the documented options agree: same names, same value types.
const _sameOptions: Same<
  Required<Omit<KafkaProviderOptions, "tls" | "sasl" | "logger">>,
  { [K in Exclude<keyof typeof KAFKA, "sasl.mechanism">]: ValueOf<(typeof KAFKA)[K]> }
> = true;
void _sameOptions;

/** The settings a client is built from: the options, validated, with defaults. */
export type KafkaClientSettings = Resolved<typeof KAFKA> & {
  tls?: KafkaTlsOptions;
  sasl?: KafkaSaslOptions;
  logger?: Logger;
};

/**
 * The compressions the kafkajs client has: kafkajs has gzip built in, and takes other codecs
 * only in a registry every kafkajs user of the process shares, which messagebuffer leaves
 * alone (see `kafkajs.ts`).
 */
export const KAFKAJS_CODECS: ReadonlySet<KafkaCompression> = new Set(["none", "gzip"]);

/**
 * The most records a send through the `kafkajs` client should carry (`Provider.sendMaxRecords`;
 * the agent's `batch_max_records` default with it): kafkajs's CPU per record grows with the
 * size of a send, and a send holds the one thread the whole time. Sends of 500 delivered
 * 130-137K records/s at 7.8-8.2 us of CPU each, against 67-74K/s and 15-17 us with 5000
 * (`bench_e2e.ts --records 200000 --agent-args="--kafka-client kafkajs --batch-max-records N"`,
 * 2 x AMD EPYC, 2026-12-05; 250: 118-129K/s, 1000: 98-110K/s, 2000: 92-95K/s).
 */
export const KAFKAJS_SEND_MAX_RECORDS = 500;

/**
 * {@link KafkaProviderOptions} checked (a bad one throws a TypeError or RangeError naming it)
 * and completed with their defaults, as a client is built from them.
 */
export function resolveKafkaSettings(options: KafkaProviderOptions): KafkaClientSettings {
  if (options === null || typeof options !== "object") {
    throw new TypeError("KafkaProvider needs an options object");
  }
  const resolved = resolveTable(
    KAFKA,
    { ...options, "sasl.mechanism": options.sasl?.mechanism },
    (name) => `KafkaProvider option "${name}"`,
  );
  if (resolved.client === "kafkajs" && !KAFKAJS_CODECS.has(resolved.compression)) {
    throw new RangeError(
      `KafkaProvider option "compression": "${resolved.compression}" needs client "platformatic" ` +
        `(the default); kafkajs compresses with "none" or "gzip" only`,
    );
  }
  const tls = options.tls === true ? {} : options.tls || undefined;
  return { ...resolved, tls, sasl: options.sasl, logger: options.logger };
}
