/**
 * The Kafka {@link Provider} on @platformatic/kafka. This is the only file that imports it.
 *
 * - The same safe producer settings as the kafkajs provider: acks from all in-sync replicas,
 *   the idempotent producer, and the Java client's partitioner for keyed records
 *   (`compatibilityPartitioner`: murmur2 with the sign bit masked, as kafka-clients does;
 *   the library's default keeps the sign bit and so picks other partitions).
 * - A batch from the engine is split into requests of at most `maxRequestBytes`, sent in
 *   order. Records over `maxMessageBytes` are rejected without being sent.
 * - Errors: anything that may pass (a broker down, a leader moving, timeouts, the network,
 *   TLS and SASL failures) is thrown, so the engine retries the batch. A per-record
 *   permanent error (message too large, invalid topic, not authorized) is narrowed down to
 *   the records that cause it by splitting the request, and those come back as rejected.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import {
  compatibilityPartitioner,
  findErrorBy,
  Producer,
  type ProducerOptions,
} from "@platformatic/kafka";
import type { Logger } from "../../log.ts";
import { silentLogger } from "../../log.ts";
import type { Provider, ProviderRecord, RecordRejection, SendResult } from "../types.ts";
import { type KafkaProviderOptions, KafkaSendError } from "./kafka.ts";

/** Protocol errors that concern particular records and will not pass by retrying. */
const PER_RECORD_ERRORS = [
  "MESSAGE_TOO_LARGE",
  "RECORD_LIST_TOO_LARGE",
  "INVALID_RECORD",
  "CORRUPT_MESSAGE",
  "INVALID_TOPIC_EXCEPTION",
  "TOPIC_AUTHORIZATION_FAILED",
  "POLICY_VIOLATION",
  "INVALID_TIMESTAMP",
];

const SASL_MECHANISMS = {
  "plain": "PLAIN",
  "scram-sha-256": "SCRAM-SHA-256",
  "scram-sha-512": "SCRAM-SHA-512",
} as const;

type Message = {
  topic: string;
  key?: Buffer;
  value: Buffer;
  headers?: Map<Buffer, Buffer>;
  timestamp: bigint;
};

function toBuffer(u: Uint8Array): Buffer {
  return Buffer.from(u.buffer, u.byteOffset, u.byteLength);
}

function toMessage(r: ProviderRecord): Message {
  const m: Message = {
    topic: r.topic,
    value: toBuffer(r.value),
    timestamp: BigInt(r.timestamp),
  };
  if (r.key !== null) m.key = toBuffer(r.key);
  if (r.headers && r.headers.length > 0) {
    // Keys are distinct Buffer objects, so a name that repeats keeps every value, in order.
    m.headers = new Map(r.headers.map(([k, v]) => [Buffer.from(k), toBuffer(v)]));
  }
  return m;
}

/** Bytes a record adds to a request, roughly (record framing included). */
function recordBytes(r: ProviderRecord): number {
  let n = r.value.length + (r.key?.length ?? 0) + 24;
  if (r.headers) { for (const [k, v] of r.headers) n += k.length + v.length + 8; }
  return n;
}

/** The per-record protocol error behind `e`, if it is one. */
function perRecordError(e: unknown): string | undefined {
  for (const id of PER_RECORD_ERRORS) if (findErrorBy(e as Error, "apiId", id)) return id;
  return undefined;
}

/** The message of `e` with its causes, which the library nests. */
function describe(e: unknown): string {
  const parts: string[] = [];
  let cur = e as { message?: string; cause?: unknown; errors?: unknown[] } | undefined;
  for (let i = 0; i < 4 && cur; i++) {
    if (cur.message && !parts.includes(cur.message)) parts.push(cur.message);
    cur = (Array.isArray(cur.errors) && cur.errors.length > 0 ? cur.errors[0] : cur.cause) as
      | typeof cur
      | undefined;
  }
  return parts.join(": ") || String(e);
}

/**
 * Delivers records to Kafka with @platformatic/kafka.
 *
 * @example
 * ```ts
 * import { PlatformaticKafkaProvider } from "./platformatic.ts";
 * const provider = new PlatformaticKafkaProvider({ brokers: ["127.0.0.1:9092"] });
 * ```
 */
export class PlatformaticKafkaProvider implements Provider {
  readonly name = "kafka";
  readonly retryWaitMs = 250;
  readonly #brokers: string[];
  readonly #maxRequestBytes: number;
  readonly #maxMessageBytes: number;
  readonly #producerOptions: ProducerOptions<Buffer, Buffer, Buffer, Buffer>;
  readonly #log: Logger;
  #producer: Producer | null = null;

  constructor(options: KafkaProviderOptions) {
    if (!options || !Array.isArray(options.brokers) || options.brokers.length === 0) {
      throw new TypeError(`KafkaProvider option "brokers" must be a non-empty list of "host:port"`);
    }
    this.#brokers = options.brokers;
    this.#maxRequestBytes = options.maxRequestBytes ?? 900_000;
    this.#maxMessageBytes = options.maxMessageBytes ?? 1_048_576;
    this.#log = options.logger ?? silentLogger;
    const tls = options.tls === true ? {} : options.tls || undefined;
    this.#producerOptions = {
      clientId: options.clientId ?? "messagebuffer",
      bootstrapBrokers: options.brokers,
      idempotent: true,
      acks: -1,
      compression: options.compression ?? "none",
      partitioner: compatibilityPartitioner,
      autocreateTopics: true,
      timeout: options.requestTimeoutMs ?? 30_000,
      connectTimeout: options.connectionTimeoutMs ?? 3_000,
      // The library retries a little by itself (a leader move, a reconnect); longer outages
      // come back to the engine, which keeps the batch on disk and retries with its backoff.
      // (With the idempotent producer, 0 or 1 would mean "retry forever".)
      retries: 3,
      retryDelay: 200,
      tls: tls && {
        ca: tls.ca,
        cert: tls.cert,
        key: tls.key,
        rejectUnauthorized: !tls.insecureSkipVerify,
      },
      sasl: options.sasl && {
        mechanism: SASL_MECHANISMS[options.sasl.mechanism],
        username: options.sasl.username,
        password: options.sasl.password,
      },
    };
  }

  open(): Promise<void> {
    if (this.#producer) return Promise.resolve();
    const producer = new Producer<Buffer, Buffer, Buffer, Buffer>(this.#producerOptions);
    this.#producer = producer;
    // The producer connects on its first send; asking for metadata checks the brokers now,
    // so that a wrong address or credentials show at open.
    return producer.metadata({ topics: [] }).then(
      () => {},
      async (e) => {
        const p = this.#producer;
        this.#producer = null;
        await p?.close(true).catch(() => {});
        throw new KafkaSendError(`cannot connect to Kafka at ${this.#brokers.join(",")}`, {
          name: "Error",
          message: describe(e),
        });
      },
    );
  }

  async send(records: readonly ProviderRecord[]): Promise<SendResult> {
    if (!this.#producer) await this.open();
    const rejected: RecordRejection[] = [];
    let chunk: number[] = [];
    let bytes = 0;
    for (let i = 0; i < records.length; i++) {
      const size = recordBytes(records[i]);
      if (size > this.#maxMessageBytes) {
        if (chunk.length) await this.#sendIndexes(records, chunk, rejected);
        chunk = [];
        bytes = 0;
        rejected.push({
          index: i,
          reason:
            `MESSAGE_TOO_LARGE: record of ${size} bytes is over maxMessageBytes (${this.#maxMessageBytes})`,
        });
        continue;
      }
      if (chunk.length > 0 && bytes + size > this.#maxRequestBytes) {
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
   * Sends `records[idx]` in one call. On a per-record permanent error, splits the call in
   * halves (sent in order) until the records that fail are alone; those are rejected.
   */
  async #sendIndexes(
    records: readonly ProviderRecord[],
    idx: number[],
    rejected: RecordRejection[],
  ): Promise<void> {
    const messages = idx.map((i) => toMessage(records[i]));
    try {
      await this.#producer!.send({ messages });
    } catch (e) {
      const type = perRecordError(e);
      if (type === undefined) {
        throw new KafkaSendError(`sending ${idx.length} record(s) failed`, {
          name: (e as Error)?.name ?? "Error",
          message: describe(e),
        });
      }
      if (idx.length === 1) {
        rejected.push({ index: idx[0], reason: `${type}: ${describe(e)}` });
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
    await p?.close(true).catch((e) => this.#log.debug("producer close failed", { error: e }));
  }
}
