/**
 * The `platformatic` client behind `KafkaProvider`, and the reader `messagebuffer tail` uses:
 * the only file that uses @platformatic/kafka, through its public exports only. The library
 * connects (TLS, SASL), keeps the cluster metadata, gets the idempotent producer's id, says
 * which Produce versions a broker speaks (ApiVersions) and parses responses into its error
 * types; the records go out as record batches that `produce.ts` encodes, in a Produce
 * request built here at the highest version both sides speak, because the library's own
 * `Producer.send` spends several times more CPU per record than everything else in delivery.
 * Partitions are picked by `partitioner.ts`, as the Java client picks them.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import {
  Admin,
  type ClusterMetadata,
  compatibilityPartitioner,
  type CompressionAlgorithmSpecification,
  compressionsAlgorithms,
  ConfigResourceTypes,
  Consumer,
  createAPI,
  findErrorBy,
  NetworkError,
  Producer,
  type ProducerOptions,
  produceV10,
  produceV11,
  produceV3,
  produceV4,
  produceV5,
  produceV6,
  produceV7,
  produceV8,
  produceV9,
  protocolErrorsCodesById,
  ResponseError,
  Writer,
} from "@platformatic/kafka";
import { silentLogger } from "../../log.ts";
import type {
  DuplicateReason,
  ProviderCounters,
  ProviderRecord,
  RecordRejection,
  SendContext,
} from "../types.ts";
import { describeError, type KafkaClient, PER_RECORD_ERRORS } from "./client.ts";
import {
  decodePlan,
  encodePlan,
  type Plan,
  type PlannedBatch,
  plannedRecords,
  refuse,
  SEQUENCE_WRAP,
} from "./plan.ts";
import { AnsweredRequests } from "./requests.ts";
import { requestsOf, TOPIC_ERRORS } from "./split.ts";
import type { KafkaClientSettings } from "./options.ts";
import { Partitioner } from "./partitioner.ts";
import { BatchMemory, encodeRecords, finishBatch } from "./produce.ts";

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

/** A send's records, encoded: one batch per partition, with the partition counts used. */
interface PartitionBatches {
  partitionCounts: ReadonlyMap<string, number>;
  batches: Array<
    PartitionBatch & { topic: string; acknowledged?: boolean; planned?: PlannedBatch }
  >;
}

/** One topic's partitions in a Produce request. */
interface TopicBatches {
  topic: string;
  partitions: PartitionBatch[];
}

/** A Produce response, as every version's parser gives it (the fields read here). */
interface ProduceAnswer {
  responses: Array<{
    name: string;
    partitionResponses: Array<{ index: number; errorCode: number; baseOffset: bigint }>;
  }>;
}

/** The Produce request versions spoken here, with the library's parser of each answer. */
const PRODUCE_PARSERS = {
  3: produceV3.parseResponse,
  4: produceV4.parseResponse,
  5: produceV5.parseResponse,
  6: produceV6.parseResponse,
  7: produceV7.parseResponse,
  8: produceV8.parseResponse,
  9: produceV9.parseResponse,
  10: produceV10.parseResponse,
  11: produceV11.parseResponse,
} as const;

export type ProduceVersion = keyof typeof PRODUCE_PARSERS;

/**
 * The Produce API at `version` (3 to 11, as the broker's ApiVersions allows), with record
 * batches encoded by `produce.ts`; the answer is parsed by the library, so that errors carry
 * its protocol error types. Versions 9 and up are "flexible" (compact strings and arrays,
 * tagged fields); the request's fields are the same in all of them.
 */
export function produceApi(version: ProduceVersion) {
  const flexible = version >= 9;
  return createAPI<[number, number, TopicBatches[]], ProduceAnswer>(
    0,
    version,
    (acks: number, timeout: number, topics: TopicBatches[]) => {
      const w = Writer.create()
        .appendString(null, flexible) // transactional id
        .appendInt16(acks)
        .appendInt32(timeout)
        .appendArray(
          topics,
          (w, t) => {
            w.appendString(t.topic, flexible).appendArray(
              t.partitions,
              (w, p) => {
                w.appendInt32(p.partition);
                if (flexible) w.appendUnsignedVarInt(p.batch.length + 1);
                else w.appendInt32(p.batch.length);
                w.append(toBuffer(p.batch));
              },
              flexible,
              flexible,
            );
          },
          flexible,
          flexible,
        );
      return flexible ? w.appendTaggedFields() : w;
    },
    PRODUCE_PARSERS[version] as (...args: unknown[]) => ProduceAnswer,
    // The request and response headers carry tagged fields from version 9 only (as the
    // library's own Produce APIs say): an older broker reads them otherwise.
    flexible,
    flexible,
  );
}

/**
 * The highest Produce version both the broker (its ApiVersions answer) and this client
 * speak, or an error naming both ranges.
 */
export function produceVersionFor(
  apis: ReadonlyArray<{ apiKey: number; minVersion: number; maxVersion: number }>,
): ProduceVersion {
  const produce = apis.find((a) => a.apiKey === 0);
  const ours = Object.keys(PRODUCE_PARSERS).map(Number);
  const [low, high] = [Math.min(...ours), Math.max(...ours)];
  if (produce) {
    const v = Math.min(high, produce.maxVersion);
    if (v >= Math.max(low, produce.minVersion)) return v as ProduceVersion;
  }
  throw new Error(
    `the broker speaks Produce versions ${
      produce ? `${produce.minVersion} to ${produce.maxVersion}` : "none"
    }; this client speaks ${low} to ${high}`,
  );
}

function toBuffer(u: Uint8Array): Buffer {
  return Buffer.from(u.buffer, u.byteOffset, u.byteLength);
}

/** Errors after which the producer id and its sequence numbers no longer hold. */
const PRODUCER_STATE_ERRORS = [
  "OUT_OF_ORDER_SEQUENCE_NUMBER",
  "UNKNOWN_PRODUCER_ID",
  "INVALID_PRODUCER_EPOCH",
];

/**
 * Room kept below `producer.id.expiration.ms`: the brokers' check interval
 * (`producer.id.expiration.check.interval.ms`, 10 min by default) and some clock skew.
 */
const EXPIRATION_MARGIN_MS = 11 * 60_000;

/** The key of batch `b` of request `r` of a plan. */
function batchKey(r: number, b: PlannedBatch): string {
  return `${r}:${b.topic}:${b.partition}:${b.sequence}:${b.records.length}`;
}

/** Kafka's default `producer.id.expiration.ms`: how long a broker keeps an idle producer's state. */
const PRODUCER_ID_EXPIRATION_MS = 86_400_000;

/** DUPLICATE_SEQUENCE_NUMBER: the broker has the batch already (an acknowledgement). */
const DUPLICATE_SEQUENCE_NUMBER = 46;

/**
 * Batches the broker refused for good (a per-record error: too large, invalid record, not
 * authorized...): their records were not appended and consumed no sequence numbers.
 */
class RefusedBatchesError extends Error {
  readonly type: string;
  constructor(readonly refused: Array<{ batch: SendBatch; type: string; reason: string }>) {
    super(refused.map((r) => `${r.batch.topic}:${r.batch.partition}: ${r.reason}`).join("; "));
    this.name = "RefusedBatchesError";
    this.type = refused[0].type;
  }
}

/** A topic Kafka has no producible metadata for (an internal topic). */
class RefusedTopicError extends Error {
  readonly type = "INVALID_TOPIC_EXCEPTION";
  constructor(topic: string) {
    super(`the broker offers no metadata to produce to topic "${topic}" (an internal topic?)`);
    this.name = "RefusedTopicError";
  }
}

interface ProducerSession {
  id: Promise<{ producerId: bigint; producerEpoch: number }>;
  /** The id, once it came. */
  known?: { producerId: bigint; producerEpoch: number };
  sequences: Map<string, number>;
}

/** A partition's batch in a send, with where it went and whether it was acknowledged. */
type SendBatch = PartitionBatches["batches"][number];

/**
 * A broker answered a Produce request without an offset for a partition it was sent: the
 * batch counts as not delivered, and is sent again under the same id and sequence.
 */
class UnacknowledgedError extends NetworkError {
  constructor(broker: number, partitions: string[]) {
    super(
      `broker ${broker} answered without acknowledging ${partitions.join(", ")}; ` +
        "they count as not sent",
    );
  }
}

/** Brokers, client id, timeouts, TLS and SASL as the library takes them. */
function connectionOptions(s: KafkaClientSettings) {
  return {
    clientId: s.clientId,
    bootstrapBrokers: s.brokers,
    timeout: s.requestTimeoutMs,
    connectTimeout: s.connectionTimeoutMs,
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

/** A record read back from Kafka by {@link readTopic}. */
export interface TopicRecord {
  topic: string;
  partition: number;
  offset: bigint;
  timestamp: number;
  key: Uint8Array | null;
  value: Uint8Array;
  headers: Array<[string, Uint8Array]>;
}

/**
 * Reads `topic` with the library's consumer (for `messagebuffer tail`; it decodes every
 * codec): from its start, or only what arrives from now on, calling `each` per record, until
 * `count` records were read or `stop` resolves. A consumer group of its own, never committed.
 * Resolves with how many were read.
 */
export async function readTopic(
  settings: KafkaClientSettings,
  topic: string,
  o: { fromBeginning: boolean; count: number; stop: Promise<void> },
  each: (r: TopicRecord) => void,
): Promise<number> {
  const consumer = new Consumer({
    ...connectionOptions(settings),
    groupId: `messagebuffer-tail-${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`,
  });
  let read = 0;
  try {
    const stream = await consumer.consume({
      topics: [topic],
      mode: o.fromBeginning ? "earliest" : "latest",
      autocommit: false,
      maxWaitTime: 200,
    });
    await new Promise<void>((resolve, reject) => {
      stream.on("data", (m) => {
        if (read >= o.count) return;
        each({
          topic,
          partition: m.partition,
          offset: m.offset,
          timestamp: Number(m.timestamp),
          key: m.key && m.key.length > 0 ? m.key : null,
          value: m.value ?? new Uint8Array(0),
          headers: m.headerEntries.map(([k, v]) => [k.toString(), v]),
        });
        if (++read >= o.count) resolve();
      });
      stream.on("error", reject);
      o.stop.then(() => resolve());
    });
    await stream.close().catch(() => {});
  } finally {
    await consumer.close(true).catch(() => {});
  }
  return read;
}

/** See the module doc. */
export class PlatformaticClient implements KafkaClient {
  readonly #options: ProducerOptions<Buffer, Buffer, Buffer, Buffer>;
  readonly #settings: KafkaClientSettings;
  /** The brokers' `producer.id.expiration.ms`, once asked. */
  #expiration: number | null = null;
  /** For plans whose send failed, by identity: the batches already acknowledged. */
  readonly #acked = new Map<string, Set<string>>();
  readonly #timeout: number;
  readonly #autoCreate: boolean;
  readonly #codec: CompressionAlgorithmSpecification | null;
  readonly #log;
  /**
   * The idempotent producer's id (asked for once, shared by concurrent sends) and the next
   * sequence number per `topic:partition` under it; null until the first send, and after a
   * failure. A send keeps the session it started with, so that a failure of one send (of
   * another lane) that drops the session never mixes ids and sequence numbers in the other.
   */
  #session: ProducerSession | null = null;
  readonly #partitioner = new Partitioner();
  /** The leader each `topic:partition` was last sent to (leader moves are counted). */
  readonly #leaders = new Map<string, number>();
  #producer: Producer<Buffer, Buffer, Buffer, Buffer> | null = null;
  /** Produce at the version the broker's ApiVersions allows (set by open()). */
  #produce: ReturnType<typeof produceApi> | null = null;
  /** Memory of the encoded batches, reused from send to send. */
  readonly #memory = new BatchMemory();
  /**
   * Each Produce request's memory, freed at its answer (`requests.ts`); what stops that
   * unexpectedly is logged, once per client.
   */
  readonly #requests = new AnsweredRequests((why) => {
    if (this.#requestsWarned) return;
    this.#requestsWarned = true;
    this.#log.warn(
      "kafka: Produce requests are no longer freed at their answer on a connection; their memory is left to the collector (the agent's memory may peak higher)",
      { reason: why },
    );
  });
  #requestsWarned = false;
  /** Topics the library has metadata for. */
  readonly #producible = new Set<string>();
  readonly counters: ProviderCounters = {
    retriesInSend: 0,
    leaderMoves: 0,
    metadataRefreshes: 0,
    unacknowledgedPartitions: 0,
  };

  constructor(s: KafkaClientSettings) {
    this.#settings = s;
    this.#timeout = s.requestTimeoutMs;
    this.#autoCreate = s.autoCreateTopics;
    this.#log = s.logger ?? silentLogger;
    this.#codec = s.compression === "none" ? null : compressionsAlgorithms[s.compression];
    this.#options = {
      ...connectionOptions(s),
      idempotent: true,
      acks: -1,
      compression: s.compression,
      partitioner: compatibilityPartitioner,
      autocreateTopics: this.#autoCreate,
      // The library retries a little by itself (a leader move, a reconnect); longer outages
      // come back to the engine, which keeps the batch on disk and retries with its backoff.
      // (With the idempotent producer, 0 or 1 here would mean "retry forever".)
      retries: RETRIES,
      retryDelay: RETRY_DELAY_MS,
    };
  }

  /** Produce requests whose memory was freed at their answer (`requests.ts`). */
  get requestsFreed(): number {
    return this.#requests.freed;
  }

  async open(): Promise<void> {
    if (this.#producer) return;
    const producer = new Producer<Buffer, Buffer, Buffer, Buffer>(this.#options);
    // The producer connects on its first send; asking for metadata checks the brokers (and
    // TLS, and SASL) now, so that a wrong address or credentials show at open.
    try {
      await producer.metadata({ topics: [] });
      const apis = await producer.listApis();
      const version = produceVersionFor(apis);
      this.#produce = produceApi(version);
      const theirs = apis.find((a) => a.apiKey === 0)!;
      this.#log.debug("kafka: producing with Produce v" + version, {
        broker: `${theirs.minVersion} to ${theirs.maxVersion}`,
      });
    } catch (e) {
      await producer.close(true).catch(() => {});
      throw e;
    }
    this.#producer = producer;
  }

  /**
   * Asks a broker for the cluster's metadata, bypassing the cache; the brokers it lists, and
   * the leader and in-sync replicas of `topics`' partitions, as text that changes when any
   * of them does. Throws when no broker answers.
   */
  async probe(topics: readonly string[]): Promise<string> {
    if (!this.#producer) await this.open();
    const m = await this.#producer!.metadata({
      topics: [...topics],
      forceUpdate: true,
      autocreateTopics: false,
      retries: 0,
    });
    const parts = [[...m.brokers.keys()].sort().join(",")];
    for (const t of [...topics].sort()) {
      const tm = m.topics.get(t);
      parts.push(
        `${t}:${tm?.partitions.map((p) => `${p.leader}/${[...p.isr].sort().join(",")}`) ?? "-"}`,
      );
    }
    return parts.join(" ");
  }

  /**
   * Sends `records` in one Produce request per leader broker, each partition's records as one
   * record batch under the idempotent producer's id and the partition's next sequence numbers.
   * A batch counts as delivered only when its leader's answer gives its partition an offset.
   * A failure that may pass (a lost connection, a leader move, too few replicas, a partition
   * left unanswered) is tried again up to `retries` times, 200 ms apart, for the batches not
   * yet acknowledged, under the same id and sequence numbers, so that the broker drops any
   * copy it already holds: no duplicates. Any other failure, or the last, gives the id up
   * (the next send gets a new one) and goes back to the engine, which keeps the batch,
   * retries it, and counts what it sends again.
   */
  async produce(records: readonly ProviderRecord[]): Promise<void> {
    if (!this.#producer) await this.open();
    await this.#checkTopics(records);
    let batches: PartitionBatches | null = null;
    const session = this.#session ??= this.#newSession();
    try {
      batches = await this.#encode(records, session);
      for (let attempt = 0;; attempt++) {
        const failure = await this.#sendBatches(batches, attempt);
        if (failure === null) return;
        const e = failure as Error;
        const stale = findErrorBy(e, "hasStaleMetadata", true);
        const passing = (stale || e instanceof NetworkError || findErrorBy(e, "canRetry", true)) &&
          !findErrorBy(e, "canRetry", false) &&
          !PRODUCER_STATE_ERRORS.some((id) => findErrorBy(e, "apiId", id));
        if (stale || e instanceof NetworkError) this.#refreshMetadata(e);
        if (!passing || attempt >= RETRIES || !this.#producer) throw e;
        await new Promise((r) => setTimeout(r, RETRY_DELAY_MS));
        // The same batches only fit the same partitions: a topic that gained partitions
        // would place records elsewhere, so give up and let the engine send them afresh.
        if (!(await this.#samePartitions(batches))) throw e;
      }
    } catch (e) {
      // Sequence numbers were handed out that the broker may not have seen: a later batch
      // under this id would be refused as out of order. Start the next send with a new id.
      if (this.#session === session) this.#session = null;
      throw e;
    }
  }

  /**
   * Sends `records` under the identity of a plan (see `plan.ts`): the one `context` holds
   * (a batch sent before), unless it no longer fits (then its records are counted as maybe
   * duplicated, with why, and placed afresh); else a new one, committed before anything
   * leaves. Requests go one after another, each retried as {@link produce} does; a batch
   * the broker refuses for good is narrowed down to its refused records in the plan, which
   * is committed again; a broker that no longer knows the producer gets the rest under a new
   * id (counted). Anything else is thrown with the plan committed, for the engine to send
   * again under it. Resolves with the refused records.
   */
  async sendPlanned(
    records: readonly ProviderRecord[],
    context: SendContext,
    limits: { maxRequestBytes: number; maxMessageBytes: number },
  ): Promise<RecordRejection[]> {
    if (!this.#producer) await this.open();
    const refusedTopics = await this.#refusedTopics(records);
    let plan = context.identity === null ? null : decodePlan(context.identity, records.length);
    let why: { reason: DuplicateReason; detail: string } | null = null;
    if (context.identity !== null && plan === null) {
      why = { reason: "producer-state-lost", detail: "the batch's stored identity is unreadable" };
    } else if (plan !== null) why = await this.#outdated(plan, records);
    if (why !== null) {
      context.maybeDuplicated(plan ? plannedRecords(plan) : records.length, why.reason, why.detail);
      if (plan) this.#dropSession(plan);
      plan = null;
    }
    /** The plan may have had requests appended before this send (a retry, a restart). */
    let sentBefore = plan !== null;
    let committed = context.identity ?? "";
    if (plan === null) {
      const { requests, rejected } = requestsOf(
        records,
        limits.maxRequestBytes,
        limits.maxMessageBytes,
      );
      // Records of a topic Kafka offers no metadata for are refused as the broker would.
      const sent = refusedTopics.size === 0 ? requests : requests.map((q) =>
        q.filter((i) => {
          const reason = refusedTopics.get(records[i].topic);
          if (reason === undefined) return true;
          rejected.push({ index: i, reason });
          return false;
        })
      ).filter((q) => q.length > 0);
      rejected.sort((a, b) => a.index - b.index);
      plan = await this.#planned(records, sent, rejected);
      await context.commit(committed = encodePlan(plan));
    }
    // Batches this plan had acknowledged in an earlier send of it in this process.
    const before = this.#acked.get(committed);
    let acked = new Set<PlannedBatch>();
    if (before) {
      plan.requests.forEach((q, r) => {
        for (const b of q) if (before.has(batchKey(r, b))) acked.add(b);
      });
    }
    let encoded = new Map<PlannedBatch, Uint8Array>();
    let replans = 0;
    for (let r = 0, attempt = 0; r < plan.requests.length;) {
      const list = plan.requests[r].filter((b) => !acked.has(b));
      if (list.length === 0) {
        r++;
        attempt = 0;
        continue;
      }
      const batches: PartitionBatches = { partitionCounts: plan.partitionCounts, batches: [] };
      for (const b of list) {
        batches.batches.push({
          topic: b.topic,
          partition: b.partition,
          batch: await this.#encodePlanned(records, plan, b, encoded),
          planned: b,
        });
      }
      const failure = await this.#sendBatches(batches, attempt);
      for (const b of batches.batches) if (b.acknowledged) acked.add(b.planned!);
      if (failure === null) continue;
      // The sequence numbers this client handed out no longer follow on from the broker's.
      this.#dropSession(plan);
      // What this plan has not had acknowledged, from request r on, as requests of indexes.
      const left = () =>
        plan!.requests.slice(r).map((q) =>
          q.filter((b) => !acked.has(b)).flatMap((b) => b.records).sort((x, y) => x - y)
        ).filter((q) => q.length > 0);
      const count = (q: number[][]) => q.reduce((n, x) => n + x.length, 0);
      if (failure instanceof RefusedBatchesError) {
        let gap = false;
        for (const { batch, type, reason } of failure.refused) {
          encoded.delete(batch.planned!);
          gap = refuse(plan, r, batch.planned!, reason, TOPIC_ERRORS.has(type), acked) || gap;
        }
        if (gap) {
          // A refused record's sequence number is not taken again: the rest goes under a new
          // id. A plan sent before may have had some of it appended under the old one.
          const rest = left();
          if (sentBefore) {
            context.maybeDuplicated(
              count(rest),
              "refused-record",
              `a record of a batch sent before was refused for good; the rest goes under a new producer id`,
            );
          }
          plan = await this.#planned(records, rest, plan.rejected);
          [acked, encoded, r, attempt] = [new Set(), new Map(), 0, 0];
          sentBefore = false;
        }
        await context.commit(committed = encodePlan(plan));
        continue;
      }
      const e = failure as Error;
      const lost = PRODUCER_STATE_ERRORS.find((id) => findErrorBy(e, "apiId", id));
      if (lost !== undefined && replans++ === 0) {
        // The broker no longer knows the producer (expired, or its state lost with a
        // partition's log): what it has not acknowledged goes under a new id, once per send
        // (if that fails the same way, the engine's backoff takes over).
        // Counted when some of it may have been appended before: a plan sent before, or a
        // request tried again in this send (a first try may have been appended, unanswered).
        const rest = left();
        if (sentBefore || attempt > 0) {
          context.maybeDuplicated(
            count(rest),
            "producer-state-lost",
            `${lost} from the broker for producer id ${plan.producerId}`,
          );
        }
        plan = await this.#planned(records, rest, plan.rejected);
        await context.commit(committed = encodePlan(plan));
        [acked, encoded, r, attempt] = [new Set(), new Map(), 0, 0];
        sentBefore = false;
        continue;
      }
      const stale = findErrorBy(e, "hasStaleMetadata", true);
      const passing = (stale || e instanceof NetworkError || findErrorBy(e, "canRetry", true)) &&
        !findErrorBy(e, "canRetry", false);
      if (stale || e instanceof NetworkError) this.#refreshMetadata(e);
      if (!passing || attempt >= RETRIES || !this.#producer) {
        // Sent again by the engine under this plan: what was acknowledged is not sent again
        // (a partition keeps only its last 5 batches to recognize copies by).
        this.#rememberAcked(committed, plan, acked);
        throw e;
      }
      attempt++;
      await new Promise((res) => setTimeout(res, RETRY_DELAY_MS));
    }
    this.#acked.delete(committed);
    // Every request of this send was answered: its batches' memory serves the next send.
    for (const batch of encoded.values()) this.#memory.give(batch);
    return plan.rejected;
  }

  /** Notes `acked` batches of `plan` (committed as `identity`) for the plan's next send. */
  #rememberAcked(identity: string, plan: Plan, acked: ReadonlySet<PlannedBatch>): void {
    this.#acked.delete(identity);
    if (this.#acked.size >= 64) this.#acked.delete(this.#acked.keys().next().value!);
    const keys = new Set<string>();
    plan.requests.forEach((q, r) => {
      for (const b of q) if (acked.has(b)) keys.add(batchKey(r, b));
    });
    this.#acked.set(identity, keys);
  }

  /**
   * Why `plan` can no longer be sent as it is, or null: a topic whose partition count
   * changed (its records would be placed elsewhere now), or a producer id idle for longer
   * than a broker keeps it by default (a copy of a first batch would then be taken anew).
   */
  async #outdated(
    plan: Plan,
    records: readonly ProviderRecord[],
  ): Promise<{ reason: DuplicateReason; detail: string } | null> {
    const metadata = await this.#producer!.metadata({
      topics: [...plan.partitionCounts.keys()],
      autocreateTopics: this.#autoCreate,
    });
    for (const [topic, count] of plan.partitionCounts) {
      const now = metadata.topics.get(topic)?.partitionsCount;
      if (now !== count) {
        return {
          reason: "partitions-changed",
          detail: `topic ${topic} had ${count} partitions when the batch was placed, now ${now}`,
        };
      }
    }
    // A broker forgets a producer once the newest record timestamp of its last batch (not the
    // time it was sent) is older than producer.id.expiration.ms, checked every 10 minutes by
    // default: the oldest batch of the plan, or when it was made, with that much to spare.
    let since = plan.madeAt;
    for (const q of plan.requests) {
      for (const b of q) {
        let newest = -Infinity;
        for (const i of b.records) newest = Math.max(newest, records[i].timestamp);
        since = Math.min(since, newest);
      }
    }
    const idle = Date.now() - since;
    const keep = await this.#producerIdExpirationMs(metadata);
    const limit = keep - Math.min(EXPIRATION_MARGIN_MS, keep / 2);
    if (idle > limit) {
      return {
        reason: "producer-expired",
        detail: `the batch's records or its identity are ${idle} ms old, too close to how long ` +
          `the brokers keep an idle producer id (producer.id.expiration.ms: ${keep})`,
      };
    }
    return null;
  }

  /**
   * How long the brokers keep an idle producer's state (`producer.id.expiration.ms`, asked
   * of a broker once; Kafka's default, 24 h, when the answer is refused).
   */
  async #producerIdExpirationMs(metadata: ClusterMetadata): Promise<number> {
    if (this.#expiration !== null) return this.#expiration;
    const broker = [...metadata.brokers.keys()][0];
    const admin = new Admin({ ...connectionOptions(this.#settings), retries: 0 });
    try {
      const [d] = await admin.describeConfigs({
        resources: [{
          resourceType: ConfigResourceTypes.BROKER,
          resourceName: String(broker),
          configurationKeys: ["producer.id.expiration.ms"],
        }],
      });
      const value = Number(d?.configs.find((c) => c.name === "producer.id.expiration.ms")?.value);
      this.#expiration = Number.isFinite(value) && value > 0 ? value : PRODUCER_ID_EXPIRATION_MS;
    } catch (e) {
      this.#log.debug("kafka: cannot read producer.id.expiration.ms; taking Kafka's default", {
        error: e,
      });
      this.#expiration = PRODUCER_ID_EXPIRATION_MS;
    } finally {
      await admin.close().catch(() => {});
    }
    return this.#expiration;
  }

  /**
   * A plan for `records`: each request's records placed on partitions (the sticky choice
   * for unkeyed records made per request, as unplanned sends do) and given `session`'s next
   * sequence numbers.
   */
  async #plan(
    records: readonly ProviderRecord[],
    requests: number[][],
    rejected: RecordRejection[],
    session: ProducerSession,
  ): Promise<Plan> {
    const topics = new Set<string>();
    let lastTopic: string | undefined;
    for (const q of requests) {
      for (const i of q) {
        const t = records[i].topic;
        if (t !== lastTopic) topics.add(lastTopic = t); // (a send's records mostly share one)
      }
    }
    const metadata = await this.#producer!.metadata({
      topics: [...topics],
      autocreateTopics: this.#autoCreate,
    });
    const id = await session.id;
    const plan: Plan = {
      producerId: id.producerId,
      producerEpoch: id.producerEpoch,
      madeAt: Date.now(),
      partitionCounts: new Map(),
      requests: [],
      rejected: [...rejected],
    };
    for (const q of requests) {
      this.#partitioner.newSend();
      // topic -> partition -> its batch (no string built per record: this runs per record).
      const byTopic = new Map<string, Map<number, PlannedBatch>>();
      let topic = "";
      let count = 0;
      let partitions: Map<number, PlannedBatch> | undefined;
      // The batch of the record before: consecutive records mostly share it.
      let last: PlannedBatch | undefined;
      for (const i of q) {
        const r = records[i];
        if (r.topic !== topic || partitions === undefined) {
          topic = r.topic;
          count = metadata.topics.get(topic)!.partitionsCount;
          plan.partitionCounts.set(topic, count);
          partitions = byTopic.get(topic);
          if (!partitions) byTopic.set(topic, partitions = new Map());
          last = undefined;
        }
        const partition = this.#partitioner.partitionOf(topic, r, count);
        let b = last !== undefined && last.partition === partition
          ? last
          : partitions.get(partition);
        if (!b) partitions.set(partition, b = { topic, partition, sequence: 0, records: [] });
        b.records.push(i);
        last = b;
      }
      const batches: PlannedBatch[] = [];
      for (const partitionsOf of byTopic.values()) {
        for (const b of partitionsOf.values()) {
          const key = `${b.topic}:${b.partition}`;
          b.sequence = session.sequences.get(key) ?? 0;
          session.sequences.set(key, (b.sequence + b.records.length) % SEQUENCE_WRAP);
          batches.push(b);
        }
      }
      plan.requests.push(batches);
    }
    return plan;
  }

  /** A batch's records compressed with the configured codec (as they are without one). */
  async #compress(bytes: Uint8Array): Promise<Uint8Array> {
    const codec = this.#codec;
    if (!codec) return bytes;
    return new Uint8Array(
      codec.compress ? await codec.compress(toBuffer(bytes)) : codec.compressSync(toBuffer(bytes)),
    );
  }

  /** The codec's bits in a record batch's attributes (0: none). */
  get #codecBits(): number {
    return this.#codec?.bitmask ?? 0;
  }

  /** {@link #plan} under this client's producer id (a new one when getting it fails). */
  async #planned(
    records: readonly ProviderRecord[],
    requests: number[][],
    rejected: RecordRejection[],
  ): Promise<Plan> {
    const session = this.#session ??= this.#newSession();
    try {
      return await this.#plan(records, requests, rejected, session);
    } catch (e) {
      if (this.#session === session) this.#session = null;
      throw e;
    }
  }

  /** Batch `b` of `plan` as a finished record batch (kept in `cache` for its retries). */
  async #encodePlanned(
    records: readonly ProviderRecord[],
    plan: Plan,
    b: PlannedBatch,
    cache: Map<PlannedBatch, Uint8Array>,
  ): Promise<Uint8Array> {
    const hit = cache.get(b);
    if (hit) return hit;
    const encoded = encodeRecords(records, b.records, this.#memory);
    const payload = await this.#compress(encoded.bytes);
    const batch = finishBatch(encoded, payload, this.#codecBits, {
      producerId: plan.producerId,
      producerEpoch: plan.producerEpoch,
      baseSequence: b.sequence,
    });
    // Compressed, the batch is a copy: the records' memory is free at once.
    if (payload !== encoded.bytes) this.#memory.give(encoded.bytes);
    cache.set(b, batch);
    return batch;
  }

  /** The next plan gets a new producer id, if this client's is still `plan`'s. */
  #dropSession(plan: Plan): void {
    const s = this.#session;
    if (s?.known?.producerId === plan.producerId) this.#session = null;
  }

  /** Drops the cached metadata, so that the next look-up asks a broker (counted). */
  #refreshMetadata(cause: Error): void {
    this.counters.metadataRefreshes++;
    this.#log.debug("kafka: refreshing the cluster metadata", { reason: cause.message });
    this.#producer?.clearMetadata();
  }

  #newSession(): ProducerSession {
    const id = this.#producer!.initIdempotentProducer({});
    const session: ProducerSession = { id, sequences: new Map() };
    id.then((known) => (session.known = known), () => {}); // a send awaiting it reports a failure
    return session;
  }

  /** Encodes each partition's records as one batch, under this id's next sequence numbers. */
  async #encode(
    records: readonly ProviderRecord[],
    session: ProducerSession,
  ): Promise<PartitionBatches> {
    const producer = this.#producer!;
    const topics = new Set<string>();
    for (const r of records) topics.add(r.topic);
    const metadata = await producer.metadata({
      topics: [...topics],
      autocreateTopics: this.#autoCreate,
    });
    // topic -> partition -> indexes of its records, in order.
    const plan = new Map<string, Map<number, number[]>>();
    this.#partitioner.newSend();
    const partitionCounts = new Map<string, number>();
    for (let i = 0; i < records.length; i++) {
      const r = records[i];
      const count = metadata.topics.get(r.topic)!.partitionsCount;
      partitionCounts.set(r.topic, count);
      const partition = this.#partitioner.partitionOf(r.topic, r, count);
      let byPartition = plan.get(r.topic);
      if (!byPartition) plan.set(r.topic, byPartition = new Map());
      let idx = byPartition.get(partition);
      if (!idx) byPartition.set(partition, idx = []);
      idx.push(i);
    }
    const id = await session.id;
    const out: PartitionBatches = { partitionCounts, batches: [] };
    for (const [topic, byPartition] of plan) {
      for (const [partition, idx] of byPartition) {
        const encoded = encodeRecords(records, idx);
        const payload = await this.#compress(encoded.bytes);
        const key = `${topic}:${partition}`;
        const baseSequence = session.sequences.get(key) ?? 0;
        // Sequence numbers wrap to 0 after 2^31 - 1, as the broker counts them.
        session.sequences.set(key, (baseSequence + encoded.count) % 0x80000000);
        out.batches.push({
          topic,
          partition,
          batch: finishBatch(encoded, payload, this.#codecBits, {
            producerId: id.producerId,
            producerEpoch: id.producerEpoch,
            baseSequence,
          }),
        });
      }
    }
    return out;
  }

  /** True when every topic of `b` still has the partition count it was encoded for. */
  async #samePartitions(b: PartitionBatches): Promise<boolean> {
    const metadata = await this.#producer!.metadata({
      topics: [...b.partitionCounts.keys()],
      autocreateTopics: this.#autoCreate,
    });
    for (const [topic, count] of b.partitionCounts) {
      if (metadata.topics.get(topic)?.partitionsCount !== count) return false;
    }
    return true;
  }

  /**
   * Sends the batches not yet acknowledged, one request per partition leader, all at once;
   * waits for every request to settle (so that no retry overlaps a request still in flight).
   * Returns the first failure, or null when every batch has been acknowledged.
   */
  async #sendBatches(b: PartitionBatches, attempt: number): Promise<unknown> {
    const producer = this.#producer!;
    const metadata = await producer.metadata({
      topics: [...b.partitionCounts.keys()],
      autocreateTopics: this.#autoCreate,
    }).catch((e) => e as Error);
    if (metadata instanceof Error) return metadata;
    const byLeader = this.#byLeader(b, metadata);
    const outcomes = await Promise.allSettled(
      [...byLeader].map(([leader, list]) => this.#sendTo(metadata, leader, list)),
    );
    let first: unknown = null;
    const refused: RefusedBatchesError["refused"] = [];
    outcomes.forEach((o, i) => {
      if (o.status === "fulfilled") return;
      if (o.reason instanceof RefusedBatchesError) refused.push(...o.reason.refused);
      else first ??= o.reason;
      const [leader, list] = [...byLeader][i];
      if (attempt < RETRIES) this.counters.retriesInSend++;
      this.#log.debug("kafka: a produce request failed inside a send", {
        broker: leader,
        partitions: list.map((pb) => `${pb.topic}:${pb.partition}`).join(","),
        attempt: attempt + 1,
        error: (o.reason as Error)?.message ?? String(o.reason),
        then: attempt < RETRIES ? `retried in ${RETRY_DELAY_MS} ms` : "the send fails",
      });
    });
    // What may pass is retried first; the refusals come back with the retry.
    return first ?? (refused.length > 0 ? new RefusedBatchesError(refused) : null);
  }

  /**
   * The batches not yet acknowledged, grouped by the leader of their partition now; notes
   * (logs and counts) each partition whose leader changed since it was last sent to.
   */
  #byLeader(b: PartitionBatches, metadata: ClusterMetadata): Map<number, SendBatch[]> {
    const byLeader = new Map<number, SendBatch[]>();
    for (const pb of b.batches) {
      if (pb.acknowledged) continue;
      const leader = metadata.topics.get(pb.topic)!.partitions[pb.partition].leader;
      const key = `${pb.topic}:${pb.partition}`;
      const before = this.#leaders.get(key);
      if (before !== undefined && before !== leader) {
        this.counters.leaderMoves++;
        this.#log.debug("kafka: partition leader moved", {
          partition: key,
          from: before,
          to: leader,
        });
      }
      this.#leaders.set(key, leader);
      let list = byLeader.get(leader);
      if (!list) byLeader.set(leader, list = []);
      list.push(pb);
    }
    return byLeader;
  }

  /**
   * One Produce request to broker `leader` with `list`'s batches; marks each batch its answer
   * acknowledges with an offset. A partition left out of the answer, or answered without an
   * offset, fails the request (as passing: it is sent again).
   */
  async #sendTo(metadata: ClusterMetadata, leader: number, list: SendBatch[]): Promise<void> {
    const broker = metadata.brokers.get(leader);
    if (!broker) throw new NetworkError(`no address for broker ${leader} in the cluster metadata`);
    const connection = await this.#producer!.connections.get(broker);
    const byTopic = new Map<string, SendBatch[]>();
    for (const pb of list) {
      const same = byTopic.get(pb.topic);
      if (same) same.push(pb);
      else byTopic.set(pb.topic, [pb]);
    }
    const topics = [...byTopic].map(([topic, partitions]) => ({ topic, partitions }));
    let response: ProduceAnswer;
    let failure: unknown = null;
    const requests = this.#requests.watch(connection);
    try {
      response = await this.#produce!.async(connection, -1, this.#timeout, topics);
      requests?.answered();
    } catch (e) {
      // An answer with errors: each partition's own code says what became of its batch.
      const answer = (e as { response?: ProduceAnswer }).response;
      if (!(e instanceof ResponseError) || !Array.isArray(answer?.responses)) {
        requests?.stop();
        throw e;
      }
      requests?.answered();
      response = answer;
      failure = e;
    }
    const answers = new Map<string, { errorCode: number; baseOffset: bigint; message?: string }>();
    for (const t of response.responses) {
      for (const p of t.partitionResponses) answers.set(`${t.name}:${p.index}`, p);
    }
    const missing: string[] = [];
    const refused: Array<{ batch: SendBatch; type: string; reason: string }> = [];
    let other = false;
    for (const pb of list) {
      const key = `${pb.topic}:${pb.partition}`;
      const a = answers.get(key);
      if (a === undefined) missing.push(key);
      else if (a.errorCode === DUPLICATE_SEQUENCE_NUMBER) pb.acknowledged = true;
      else if (a.errorCode === 0) {
        if (a.baseOffset >= 0n) pb.acknowledged = true;
        else missing.push(key);
      } else {
        const type = protocolErrorsCodesById[a.errorCode as keyof typeof protocolErrorsCodesById];
        if (type !== undefined && PER_RECORD_ERRORS.has(type)) {
          const said = (a as { errorMessage?: string | null }).errorMessage;
          refused.push({ batch: pb, type, reason: `${type}: ${said || describeError(failure)}` });
        } else other = true;
      }
    }
    if (other) throw failure;
    if (refused.length > 0) throw new RefusedBatchesError(refused);
    if (missing.length > 0) {
      this.counters.unacknowledgedPartitions += missing.length;
      throw new UnacknowledgedError(leader, missing);
    }
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
      autocreateTopics: this.#autoCreate,
    });
    for (const t of unknown) {
      if (metadata.topics.get(t) === undefined) {
        throw new RefusedTopicError(t);
      }
      this.#producible.add(t);
    }
  }

  /**
   * The topics of `records` Kafka refuses whole, with why: one it offers no metadata for (an
   * internal topic, see #checkTopics), or whose metadata it refuses with a per-record error
   * (not authorized, an invalid name). Other failures are thrown.
   */
  async #refusedTopics(records: readonly ProviderRecord[]): Promise<Map<string, string>> {
    const refused = new Map<string, string>();
    const unknown = new Set<string>();
    let last: string | undefined;
    for (const r of records) {
      if (r.topic === last) continue; // (a batch's records mostly share their topic)
      last = r.topic;
      if (!this.#producible.has(last)) unknown.add(last);
    }
    if (unknown.size === 0) return refused;
    const lookUp = (topics: string[]) =>
      this.#producer!.metadata({ topics, autocreateTopics: this.#autoCreate });
    let metadata: ClusterMetadata | null = null;
    try {
      metadata = await lookUp([...unknown]);
    } catch (e) {
      if (!PER_RECORD_ERRORS.has(this.errorType(e) ?? "")) throw e;
    }
    for (const t of unknown) {
      let m = metadata;
      if (m === null) {
        // A refusal of the whole look-up: ask topic by topic which one it is.
        try {
          m = await lookUp([t]);
        } catch (e) {
          const type = this.errorType(e);
          if (type === undefined || !PER_RECORD_ERRORS.has(type)) throw e;
          refused.set(t, `${type}: ${describeError(e)}`);
          continue;
        }
      }
      if (m.topics.get(t) === undefined) {
        const e = new RefusedTopicError(t);
        refused.set(t, `${e.type}: ${e.message}`);
      } else this.#producible.add(t);
    }
    return refused;
  }

  errorType(e: unknown): string | undefined {
    if (e instanceof RefusedTopicError || e instanceof RefusedBatchesError) return e.type;
    for (const id of PER_RECORD_ERRORS) if (findErrorBy(e as Error, "apiId", id)) return id;
    return undefined;
  }

  async close(): Promise<void> {
    const p = this.#producer;
    this.#producer = null;
    this.#session = null;
    this.#memory.close();
    await p?.close(true);
  }
}
