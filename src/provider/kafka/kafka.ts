/**
 * The Kafka {@link Provider}. It produces through one of two client libraries, chosen by
 * the `client` option, each behind the same small {@link KafkaClient} interface in its own
 * file (`platformatic.ts`, `kafkajs.ts`: the only files that import them). Whichever runs:
 *
 * - Safe producer settings: acks from all in-sync replicas, the idempotent producer, and the
 *   Java client's partitioner for keyed records (murmur2, sign bit masked).
 * - A batch from the engine is split into requests of at most `maxRequestBytes`, sent one
 *   after another, so that no partition's record batch exceeds what a broker accepts.
 *   Records over `maxMessageBytes` are rejected without being sent.
 * - Errors: anything that may pass (broker down, leader moving, timeouts, network, TLS and
 *   SASL failures) is thrown, so the engine retries the batch. A per-record permanent error
 *   (message too large, invalid topic, not authorized) is narrowed down to the records that
 *   cause it by splitting the request, and those records are returned as rejected.
 * - Compression: none, gzip, snappy, lz4 or zstd, in pure JS or WASM for both clients.
 *
 * @module
 */

import type { Logger } from "../../log.ts";
import { KAFKA, type Resolved, resolveTable, type Same, type ValueOf } from "../../settings.ts";
import type { Provider, ProviderRecord, RecordRejection, SendResult } from "../types.ts";
import { KafkajsClient } from "./kafkajs.ts";
import { PlatformaticClient } from "./platformatic.ts";

/** TLS settings; PEM text, not file names (the agent reads the files). */
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

/** SASL settings. */
export interface KafkaSaslOptions {
  mechanism: ValueOf<(typeof KAFKA)["sasl.mechanism"]>;
  username: string;
  password: string;
}

/** Options of {@link KafkaProvider}. */
export interface KafkaProviderOptions {
  /** Bootstrap brokers, `host:port`. */
  brokers: string[];
  /**
   * The Kafka client library: `"platformatic"` (@platformatic/kafka, the faster) or
   * `"kafkajs"`. Both produce the same way (see the module doc). @default "platformatic"
   */
  client?: ValueOf<typeof KAFKA.client>;
  /** Client id the brokers see. @default "messagebuffer" */
  clientId?: string;
  /** Compression of record batches. @default "none" */
  compression?: ValueOf<typeof KAFKA.compression>;
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

/** Protocol errors that concern particular records and will not pass by retrying. */
export const PER_RECORD_ERRORS: ReadonlySet<string> = new Set([
  "MESSAGE_TOO_LARGE",
  "RECORD_LIST_TOO_LARGE",
  "INVALID_RECORD",
  "CORRUPT_MESSAGE",
  "INVALID_TOPIC_EXCEPTION",
  "TOPIC_AUTHORIZATION_FAILED",
  "POLICY_VIOLATION",
  "INVALID_TIMESTAMP",
]);

/** What {@link KafkaProvider} needs of a client library. */
export interface KafkaClient {
  /** Connects the producer; throws when the brokers cannot be reached. */
  open(): Promise<void>;
  /** Produces `records` in order in one call; resolves once all are acknowledged. */
  produce(records: readonly ProviderRecord[]): Promise<void>;
  /** The protocol error name behind `e` (such as `MESSAGE_TOO_LARGE`), if it has one. */
  errorType(e: unknown): string | undefined;
  close(): Promise<void>;
}

/** The settings a client is built from: the options, validated, with defaults. */
export type KafkaClientSettings = Resolved<typeof KAFKA> & {
  tls?: KafkaTlsOptions;
  sasl?: KafkaSaslOptions;
  logger?: Logger;
};

/** The message of `e` with the causes client libraries nest inside it. */
export function describeError(e: unknown): string {
  const parts: string[] = [];
  let cur = e as
    | { name?: string; message?: string; cause?: unknown; errors?: unknown[] }
    | undefined;
  for (let i = 0; i < 5 && cur; i++) {
    if (cur.message && !parts.some((p) => p.includes(cur!.message!))) parts.push(cur.message);
    cur = (Array.isArray(cur.errors) && cur.errors.length > 0 ? cur.errors[0] : cur.cause) as
      | typeof cur
      | undefined;
  }
  const name = (e as Error)?.name ?? "Error";
  return `${name}: ${parts.join(": ") || String(e)}`;
}

/** The error a retried send ends with: names the cause and says that records are kept. */
export class KafkaSendError extends Error {
  constructor(what: string, cause: unknown) {
    super(`${what}: ${describeError(cause)}`, { cause });
    this.name = "KafkaSendError";
  }
}

/** Bytes a record adds to a request, roughly (record framing included). */
function recordBytes(r: ProviderRecord): number {
  let n = r.value.length + (r.key?.length ?? 0) + 24;
  if (r.headers) { for (const [k, v] of r.headers) n += k.length + v.length + 8; }
  return n;
}

/**
 * Delivers records to Kafka.
 *
 * @example Deliver through a local broker, compressed
 * ```ts
 * import { KafkaProvider } from "./kafka.ts";
 * const provider = new KafkaProvider({ brokers: ["127.0.0.1:9092"], compression: "zstd" });
 * ```
 */
export class KafkaProvider implements Provider {
  readonly name = "kafka";
  readonly retryWaitMs = 250;
  readonly #o: Resolved<typeof KAFKA>;
  readonly #client: KafkaClient;
  #open = false;

  constructor(options: KafkaProviderOptions) {
    if (options === null || typeof options !== "object") {
      throw new TypeError("KafkaProvider needs an options object");
    }
    this.#o = resolveTable(
      KAFKA,
      { ...options, "sasl.mechanism": options.sasl?.mechanism },
      (name) => `KafkaProvider option "${name}"`,
    );
    const tls = options.tls === true ? {} : options.tls || undefined;
    const settings: KafkaClientSettings = {
      ...this.#o,
      tls,
      sasl: options.sasl,
      logger: options.logger,
    };
    this.#client = this.#o.client === "kafkajs"
      ? new KafkajsClient(settings)
      : new PlatformaticClient(settings);
  }

  /** The client library in use. */
  get client(): ValueOf<typeof KAFKA.client> {
    return this.#o.client;
  }

  async open(): Promise<void> {
    if (this.#open) return;
    try {
      await this.#client.open();
    } catch (e) {
      throw new KafkaSendError(`cannot connect to Kafka at ${this.#o.brokers.join(",")}`, e);
    }
    this.#open = true;
  }

  async send(records: readonly ProviderRecord[]): Promise<SendResult> {
    await this.open();
    const rejected: RecordRejection[] = [];
    // Split into requests of at most maxRequestBytes, in order; oversized records are
    // rejected here rather than sent.
    let chunk: number[] = [];
    let bytes = 0;
    for (let i = 0; i < records.length; i++) {
      const size = recordBytes(records[i]);
      if (size > this.#o.maxMessageBytes) {
        if (chunk.length) await this.#sendIndexes(records, chunk, rejected);
        chunk = [];
        bytes = 0;
        rejected.push({
          index: i,
          reason:
            `MESSAGE_TOO_LARGE: record of ${size} bytes is over maxMessageBytes (${this.#o.maxMessageBytes})`,
        });
        continue;
      }
      if (chunk.length > 0 && bytes + size > this.#o.maxRequestBytes) {
        await this.#sendIndexes(records, chunk, rejected);
        chunk = [];
        bytes = 0;
      }
      chunk.push(i);
      bytes += size;
    }
    if (chunk.length) await this.#sendIndexes(records, chunk, rejected);
    return { rejected };
  }

  /**
   * Sends `records[idx]` in one request. On a per-record permanent error, splits the request
   * in halves (sent in order) until the records that fail are alone; those are rejected.
   */
  async #sendIndexes(
    records: readonly ProviderRecord[],
    idx: number[],
    rejected: RecordRejection[],
  ): Promise<void> {
    try {
      await this.#client.produce(
        idx.length === records.length ? records : idx.map((i) => records[i]),
      );
    } catch (e) {
      const type = this.#client.errorType(e);
      if (type === undefined || !PER_RECORD_ERRORS.has(type)) {
        throw new KafkaSendError(`sending ${idx.length} record(s) failed`, e);
      }
      if (idx.length === 1) {
        rejected.push({ index: idx[0], reason: `${type}: ${describeError(e)}` });
        return;
      }
      const half = Math.ceil(idx.length / 2);
      await this.#sendIndexes(records, idx.slice(0, half), rejected);
      await this.#sendIndexes(records, idx.slice(half), rejected);
    }
  }

  async close(): Promise<void> {
    this.#open = false;
    await this.#client.close();
  }
}
