/**
 * The Kafka {@link Provider}, on kafkajs. This is the only file that imports kafkajs.
 *
 * - Safe producer settings: `acks: -1` (all in-sync replicas), idempotent producer, one
 *   request in flight per broker, Java-compatible partitioner for keyed records.
 * - A batch from the engine is split into requests of at most `maxRequestBytes`, sent one
 *   after another, so that no partition's record batch exceeds what a broker accepts.
 * - Errors: anything that may pass (broker down, leader moving, timeouts, network, SASL
 *   failures) is thrown, so the engine retries the batch. A per-record permanent error
 *   (message too large, invalid topic, not authorized) is narrowed down to the records that
 *   cause it by splitting the request, and those records are returned as rejected.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import {
  CompressionTypes,
  type CompressionTypes as KafkaCompressionTypes,
  Kafka,
  type KafkaConfig,
  logLevel,
  type Message,
  Partitioners,
  type Producer,
  type SASLOptions,
} from "kafkajs";
import RequestQueue from "kafkajs/src/network/requestQueue/index.js";
import type { Logger } from "../../log.ts";
import { silentLogger } from "../../log.ts";
import { KAFKA, type Resolved, resolveTable, type Same, type ValueOf } from "../../settings.ts";
import type { Provider, ProviderRecord, RecordRejection, SendResult } from "../types.ts";

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
  /** Where kafkajs's own log lines go. @default none */
  logger?: Logger;
}

/**
 * Stops kafkajs 2.2.4's request queues from polling while idle. After every response a queue
 * calls `scheduleCheckPendingRequests`, which arms a timer for `throttledUntil - Date.now()`
 * ms even when nothing is pending and nothing is throttled. `throttledUntil` is then -1, so
 * the delay is about minus the epoch time: runtimes clamp it to 1 ms and print a
 * TimeoutNegativeWarning, and the timer re-arms itself every millisecond for the life of the
 * connection (kafkajs issues #1751 and #1704, unfixed upstream). With no request pending
 * there is nothing to check: a request queued later schedules its own check, and a response
 * checks the queue. So this skips exactly that case; the rest runs as kafkajs wrote it.
 * Idempotent; called by {@link KafkaProvider}'s constructor.
 */
export function stopIdlePolling(): void {
  if (idlePollingStopped) return;
  idlePollingStopped = true;
  const proto = RequestQueue.prototype;
  const original = proto.scheduleCheckPendingRequests;
  proto.scheduleCheckPendingRequests = function (this: RequestQueue) {
    if (this.pending.length === 0 && this.throttledUntil <= Date.now()) return;
    original.call(this);
  };
}

let idlePollingStopped = false;

// The table and the documented options agree: same names, same value types.
const _sameOptions: Same<
  Required<Omit<KafkaProviderOptions, "tls" | "sasl" | "logger">>,
  { [K in Exclude<keyof typeof KAFKA, "sasl.mechanism">]: ValueOf<(typeof KAFKA)[K]> }
> = true;
void _sameOptions;

/** Protocol errors that concern particular records and will not pass by retrying. */
const PER_RECORD_ERRORS = new Set([
  "MESSAGE_TOO_LARGE",
  "RECORD_LIST_TOO_LARGE",
  "INVALID_RECORD",
  "CORRUPT_MESSAGE",
  "INVALID_TOPIC_EXCEPTION",
  "TOPIC_AUTHORIZATION_FAILED",
  "POLICY_VIOLATION",
  "INVALID_TIMESTAMP",
]);

/** Bytes a record adds to a request, roughly (record framing included). */
function recordBytes(r: ProviderRecord): number {
  let n = r.value.length + (r.key?.length ?? 0) + 24;
  if (r.headers) { for (const [k, v] of r.headers) n += k.length + v.length + 8; }
  return n;
}

function toBuffer(u: Uint8Array): Buffer {
  return Buffer.from(u.buffer, u.byteOffset, u.byteLength);
}

function toMessage(r: ProviderRecord): Message {
  let headers: Record<string, Buffer | Buffer[]> | undefined;
  if (r.headers && r.headers.length > 0) {
    headers = {};
    for (const [k, v] of r.headers) {
      const prev = headers[k];
      headers[k] = prev === undefined
        ? toBuffer(v)
        : Array.isArray(prev)
        ? [...prev, toBuffer(v)]
        : [prev, toBuffer(v)];
    }
  }
  return {
    key: r.key === null ? null : toBuffer(r.key),
    value: toBuffer(r.value),
    headers,
    timestamp: String(r.timestamp),
  };
}

/** The kafkajs error type behind `e` (protocol error name such as MESSAGE_TOO_LARGE), if any. */
function errorType(e: unknown): string | undefined {
  let cur = e as { type?: string; cause?: unknown; errors?: unknown[] } | undefined;
  for (let i = 0; i < 5 && cur; i++) {
    if (typeof cur.type === "string") return cur.type;
    if (Array.isArray(cur.errors) && cur.errors.length > 0) cur = cur.errors[0] as typeof cur;
    else cur = cur.cause as typeof cur;
  }
  return undefined;
}

/** The error a retried send ends with: names the cause and says that records are kept. */
export class KafkaSendError extends Error {
  constructor(what: string, cause: unknown) {
    const c = cause as Error;
    super(`${what}: ${c?.name ?? "Error"}: ${c?.message ?? String(cause)}`, { cause });
    this.name = "KafkaSendError";
  }
}

/**
 * Delivers records to Kafka.
 *
 * @example
 * ```ts
 * import { KafkaProvider } from "./kafka.ts";
 * const provider = new KafkaProvider({ brokers: ["127.0.0.1:9092"], compression: "gzip" });
 * ```
 */
export class KafkaProvider implements Provider {
  readonly name = "kafka";
  readonly retryWaitMs = 250;
  readonly #o: Resolved<typeof KAFKA>;
  readonly #kafka: Kafka;
  #producer: Producer | null = null;
  readonly #compression: KafkaCompressionTypes;

  constructor(options: KafkaProviderOptions) {
    if (options === null || typeof options !== "object") {
      throw new TypeError("KafkaProvider needs an options object");
    }
    stopIdlePolling();
    this.#o = resolveTable(
      KAFKA,
      { ...options, "sasl.mechanism": options.sasl?.mechanism },
      (name) => `KafkaProvider option "${name}"`,
    );
    const compression = this.#o.compression;
    this.#compression = compression === "gzip" ? CompressionTypes.GZIP : CompressionTypes.None;
    const log = options.logger ?? silentLogger;
    const config: KafkaConfig = {
      brokers: this.#o.brokers,
      clientId: this.#o.clientId,
      connectionTimeout: this.#o.connectionTimeoutMs,
      requestTimeout: this.#o.requestTimeoutMs,
      // kafkajs retries a little by itself (a leader move, a reconnect); longer outages come
      // back to the engine, which keeps the batch on disk and retries with its own backoff.
      retry: { retries: 3, initialRetryTime: 200, maxRetryTime: 2_000 },
      logLevel: logLevel.INFO,
      logCreator: () => ({ namespace, level, log: entry }) => {
        const { message, ...fields } = entry as { message: string } & Record<string, unknown>;
        delete fields.timestamp;
        delete fields.logger;
        const text = `kafkajs ${namespace}: ${message}`;
        // Failed sends are reported by the engine at "warn", with the retry plan; kafkajs's
        // own error lines about the same events (and its routine ones) are detail.
        if (/Limiting retries for the idempotent producer/.test(message)) log.debug(text, fields);
        else if (level === logLevel.ERROR || level === logLevel.WARN) log.info(text, fields);
        else log.debug(text, fields);
      },
    };
    const tls = options.tls;
    if (tls) {
      const t = tls === true ? {} : tls;
      config.ssl = {
        ca: t.ca,
        cert: t.cert,
        key: t.key,
        rejectUnauthorized: !t.insecureSkipVerify,
      };
    }
    if (options.sasl) {
      const { mechanism, username, password } = options.sasl;
      config.sasl = { mechanism, username, password } as SASLOptions;
    }
    this.#kafka = new Kafka(config);
  }

  async open(): Promise<void> {
    if (this.#producer) return;
    const producer = this.#kafka.producer({
      idempotent: true,
      maxInFlightRequests: 1,
      createPartitioner: Partitioners.DefaultPartitioner,
      retry: { retries: 3, initialRetryTime: 200, maxRetryTime: 2_000 },
      allowAutoTopicCreation: true,
    });
    try {
      await producer.connect();
    } catch (e) {
      await producer.disconnect().catch(() => {});
      throw new KafkaSendError(`cannot connect to Kafka at ${this.#o.brokers.join(",")}`, e);
    }
    this.#producer = producer;
  }

  async send(records: readonly ProviderRecord[]): Promise<SendResult> {
    if (!this.#producer) await this.open();
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
    const byTopic = new Map<string, Message[]>();
    for (const i of idx) {
      const r = records[i];
      let list = byTopic.get(r.topic);
      if (!list) byTopic.set(r.topic, list = []);
      list.push(toMessage(r));
    }
    try {
      await this.#producer!.sendBatch({
        acks: -1,
        timeout: this.#o.requestTimeoutMs,
        compression: this.#compression,
        topicMessages: [...byTopic].map(([topic, messages]) => ({ topic, messages })),
      });
    } catch (e) {
      const type = errorType(e);
      if (type === undefined || !PER_RECORD_ERRORS.has(type)) {
        throw new KafkaSendError(`sending ${idx.length} record(s) failed`, e);
      }
      if (idx.length === 1) {
        rejected.push({ index: idx[0], reason: `${type}: ${(e as Error).message}` });
        return;
      }
      const half = Math.ceil(idx.length / 2);
      await this.#sendIndexes(records, idx.slice(0, half), rejected);
      await this.#sendIndexes(records, idx.slice(half), rejected);
    }
  }

  async close(): Promise<void> {
    const p = this.#producer;
    this.#producer = null;
    await p?.disconnect();
  }
}
