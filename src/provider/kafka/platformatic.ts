/**
 * The @platformatic/kafka client behind {@link KafkaProvider}: the only file that produces
 * with it. Keyed records use its `compatibilityPartitioner` (murmur2 with the sign bit
 * masked, as kafka-clients does); the library's default partitioner keeps the sign bit and
 * so would pick other partitions than the Java client.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import {
  compatibilityPartitioner,
  findErrorBy,
  type MessageToProduce,
  Producer,
  type ProducerOptions,
} from "@platformatic/kafka";
import type { ProviderRecord } from "../types.ts";
import { type KafkaClient, type KafkaClientSettings, PER_RECORD_ERRORS } from "./kafka.ts";

const SASL_MECHANISMS = {
  "plain": "PLAIN",
  "scram-sha-256": "SCRAM-SHA-256",
  "scram-sha-512": "SCRAM-SHA-512",
} as const;

type Message = MessageToProduce<Buffer, Buffer, Buffer, Buffer>;

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

/** A topic Kafka has no producible metadata for (an internal topic). */
class RefusedTopicError extends Error {
  readonly type = "INVALID_TOPIC_EXCEPTION";
  constructor(topic: string) {
    super(`the broker offers no metadata to produce to topic "${topic}" (an internal topic?)`);
    this.name = "RefusedTopicError";
  }
}

/** See the module doc. */
export class PlatformaticClient implements KafkaClient {
  readonly #options: ProducerOptions<Buffer, Buffer, Buffer, Buffer>;
  #producer: Producer<Buffer, Buffer, Buffer, Buffer> | null = null;
  /** Topics the library has metadata for. */
  readonly #producible = new Set<string>();

  constructor(s: KafkaClientSettings) {
    this.#options = {
      clientId: s.clientId,
      bootstrapBrokers: s.brokers,
      idempotent: true,
      acks: -1,
      compression: s.compression,
      partitioner: compatibilityPartitioner,
      autocreateTopics: true,
      timeout: s.requestTimeoutMs,
      connectTimeout: s.connectionTimeoutMs,
      // The library retries a little by itself (a leader move, a reconnect); longer outages
      // come back to the engine, which keeps the batch on disk and retries with its backoff.
      // (With the idempotent producer, 0 or 1 here would mean "retry forever".)
      retries: 3,
      retryDelay: 200,
      tls: s.tls && {
        ca: s.tls.ca,
        cert: s.tls.cert,
        key: s.tls.key,
        rejectUnauthorized: !s.tls.insecureSkipVerify,
      },
      sasl: s.sasl && {
        mechanism: SASL_MECHANISMS[s.sasl.mechanism],
        username: s.sasl.username,
        password: s.sasl.password,
      },
    };
  }

  async open(): Promise<void> {
    if (this.#producer) return;
    const producer = new Producer<Buffer, Buffer, Buffer, Buffer>(this.#options);
    // The producer connects on its first send; asking for metadata checks the brokers (and
    // TLS, and SASL) now, so that a wrong address or credentials show at open.
    try {
      await producer.metadata({ topics: [] });
    } catch (e) {
      await producer.close(true).catch(() => {});
      throw e;
    }
    this.#producer = producer;
  }

  async produce(records: readonly ProviderRecord[]): Promise<void> {
    if (!this.#producer) await this.open();
    await this.#checkTopics(records);
    await this.#producer!.send({ messages: records.map(toMessage) });
  }

  /**
   * Looks up (creating where the broker allows) each topic not produced to before. The
   * library leaves internal topics such as `__consumer_offsets` out of its metadata and then
   * fails on them outside any promise, so a record for a topic it has no metadata for is
   * refused here, as the broker would refuse it, before anything is sent.
   */
  async #checkTopics(records: readonly ProviderRecord[]): Promise<void> {
    let unknown: Set<string> | null = null;
    for (const r of records) {
      if (!this.#producible.has(r.topic)) (unknown ??= new Set()).add(r.topic);
    }
    if (!unknown) return;
    const metadata = await this.#producer!.metadata({
      topics: [...unknown],
      autocreateTopics: true,
    });
    for (const t of unknown) {
      if (metadata.topics.get(t) === undefined) {
        throw new RefusedTopicError(t);
      }
      this.#producible.add(t);
    }
  }

  errorType(e: unknown): string | undefined {
    if (e instanceof RefusedTopicError) return e.type;
    for (const id of PER_RECORD_ERRORS) if (findErrorBy(e as Error, "apiId", id)) return id;
    return undefined;
  }

  async close(): Promise<void> {
    const p = this.#producer;
    this.#producer = null;
    await p?.close(true);
  }
}
