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
  type Broker,
  type CallbackWithPromise,
  compatibilityPartitioner,
  compressionsAlgorithms,
  type Connection,
  createAPI,
  findErrorBy,
  kGetConnection,
  NetworkError,
  Producer,
  type ProducerOptions,
  produceV9,
  Writer,
} from "@platformatic/kafka";
import type { ProviderRecord } from "../types.ts";
import { type KafkaClient, type KafkaClientSettings, PER_RECORD_ERRORS } from "./kafka.ts";
import { partitionForKey } from "./murmur2.ts";
import { encodeRecords, finishBatch } from "./produce.ts";

const SASL_MECHANISMS = {
  "plain": "PLAIN",
  "scram-sha-256": "SCRAM-SHA-256",
  "scram-sha-512": "SCRAM-SHA-512",
} as const;

/** Quick retries inside one send, before the engine's own backoff takes over. */
const RETRIES = 3;
const RETRY_DELAY_MS = 200;

/** One partition's records in a Produce request, as a finished record batch. */
interface PartitionBatch {
  partition: number;
  batch: Uint8Array;
}

/** One topic's partitions in a Produce request. */
interface TopicBatches {
  topic: string;
  partitions: PartitionBatch[];
}

/**
 * Produce v9 (flexible), with record batches encoded by `produce.ts`; the response is parsed
 * by the library, so that errors carry its protocol error types.
 */
const produceApi = createAPI<[number, number, TopicBatches[]], unknown>(
  0,
  9,
  (acks: number, timeout: number, topics: TopicBatches[]) =>
    Writer.create()
      .appendString(null) // transactional id
      .appendInt16(acks)
      .appendInt32(timeout)
      .appendArray(topics, (w, t) => {
        w.appendString(t.topic).appendArray(t.partitions, (w, p) => {
          w.appendInt32(p.partition)
            .appendUnsignedVarInt(p.batch.length + 1)
            .append(toBuffer(p.batch));
        });
      })
      .appendTaggedFields(),
  produceV9.parseResponse,
);

function toBuffer(u: Uint8Array): Buffer {
  return Buffer.from(u.buffer, u.byteOffset, u.byteLength);
}

/** A codec of the library's (gzip has an asynchronous form too). */
interface Codec {
  bitmask: number;
  compressSync(data: Buffer): Buffer;
  compress?(data: Buffer): Promise<Buffer>;
}

/** Errors after which the producer id and its sequence numbers no longer hold. */
const PRODUCER_STATE_ERRORS = [
  "OUT_OF_ORDER_SEQUENCE_NUMBER",
  "UNKNOWN_PRODUCER_ID",
  "INVALID_PRODUCER_EPOCH",
];

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
  readonly #timeout: number;
  readonly #codec: Codec | null;
  /** The idempotent producer's id, from the broker; null until the first send (or after a failure). */
  #producerId: { producerId: bigint; producerEpoch: number } | null = null;
  /** Next sequence number per `topic:partition` under that id. */
  readonly #sequences = new Map<string, number>();
  #producer: Producer<Buffer, Buffer, Buffer, Buffer> | null = null;
  /** Topics the library has metadata for. */
  readonly #producible = new Set<string>();

  constructor(s: KafkaClientSettings) {
    this.#timeout = s.requestTimeoutMs;
    this.#codec = s.compression === "none"
      ? null
      : compressionsAlgorithms[s.compression] as unknown as Codec;
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
      retries: RETRIES,
      retryDelay: RETRY_DELAY_MS,
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

  /**
   * Sends `records` in one Produce request per leader broker, each partition's records as one
   * record batch under the idempotent producer's id and the partition's next sequence number.
   * A failure that may be passing (a lost connection, a leader move, a timeout) is tried again
   * up to `retries` times, after 200 ms, from a fresh producer id: the library's own producer
   * does the same. Then the error goes back to the engine, which keeps the batch and retries.
   */
  async produce(records: readonly ProviderRecord[]): Promise<void> {
    if (!this.#producer) await this.open();
    await this.#checkTopics(records);
    for (let attempt = 0;; attempt++) {
      try {
        await this.#produceOnce(records);
        return;
      } catch (e) {
        // The sequence numbers handed out may not have been used: start over with a new id.
        this.#producerId = null;
        this.#sequences.clear();
        const stale = findErrorBy(e as Error, "hasStaleMetadata", true);
        if (stale || e instanceof NetworkError) this.#producer?.clearMetadata();
        const again = stale || e instanceof NetworkError ||
          PRODUCER_STATE_ERRORS.some((id) => findErrorBy(e as Error, "apiId", id)) ||
          findErrorBy(e as Error, "canRetry", true);
        if (!again || attempt >= RETRIES || !this.#producer) throw e;
        await new Promise((r) => setTimeout(r, RETRY_DELAY_MS));
      }
    }
  }

  async #produceOnce(records: readonly ProviderRecord[]): Promise<void> {
    const producer = this.#producer!;
    const topics = new Set<string>();
    for (const r of records) topics.add(r.topic);
    const metadata = await producer.metadata({ topics: [...topics], autocreateTopics: true });
    // leader -> topic -> partition -> indexes of its records, in order.
    const plan = new Map<number, Map<string, Map<number, number[]>>>();
    for (let i = 0; i < records.length; i++) {
      const r = records[i];
      const t = metadata.topics.get(r.topic)!;
      const partition = r.key === null ? 0 : partitionForKey(r.key, t.partitionsCount);
      const leader = t.partitions[partition].leader;
      let byTopic = plan.get(leader);
      if (!byTopic) plan.set(leader, byTopic = new Map());
      let byPartition = byTopic.get(r.topic);
      if (!byPartition) byTopic.set(r.topic, byPartition = new Map());
      let idx = byPartition.get(partition);
      if (!idx) byPartition.set(partition, idx = []);
      idx.push(i);
    }
    this.#producerId ??= await producer.initIdempotentProducer({});
    const id = this.#producerId;
    const codec = this.#codec;
    const requests: Array<{ broker: Broker; topics: TopicBatches[] }> = [];
    for (const [leader, byTopic] of plan) {
      const topicBatches: TopicBatches[] = [];
      for (const [topic, byPartition] of byTopic) {
        const partitions: PartitionBatch[] = [];
        for (const [partition, idx] of byPartition) {
          const encoded = encodeRecords(records, idx);
          const payload = codec
            ? new Uint8Array(
              codec.compress
                ? await codec.compress(toBuffer(encoded.bytes))
                : codec.compressSync(toBuffer(encoded.bytes)),
            )
            : encoded.bytes;
          const key = `${topic}:${partition}`;
          const baseSequence = this.#sequences.get(key) ?? 0;
          // Sequence numbers wrap to 0 after 2^31 - 1, as the broker counts them.
          this.#sequences.set(key, (baseSequence + encoded.count) % 0x80000000);
          partitions.push({
            partition,
            batch: finishBatch(encoded, payload, codec?.bitmask ?? 0, {
              producerId: id.producerId,
              producerEpoch: id.producerEpoch,
              baseSequence,
            }),
          });
        }
        topicBatches.push({ topic, partitions });
      }
      const broker = metadata.brokers.get(leader);
      if (!broker) {
        throw new NetworkError(`no address for broker ${leader} in the cluster metadata`);
      }
      requests.push({ broker, topics: topicBatches });
    }
    await Promise.all(requests.map(async ({ broker, topics }) => {
      const connection = await new Promise<Connection>((resolve, reject) =>
        (producer as unknown as {
          [kGetConnection]: (b: Broker, cb: CallbackWithPromise<Connection>) => void;
        })[kGetConnection](broker, (e, c) => (e ? reject(e) : resolve(c!)))
      );
      await produceApi.async(connection, -1, this.#timeout, topics);
    }));
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
    this.#producerId = null;
    this.#sequences.clear();
    await p?.close(true);
  }
}
