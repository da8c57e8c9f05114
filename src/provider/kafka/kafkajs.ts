/**
 * The kafkajs client behind `KafkaProvider`: the only file that imports kafkajs. It uses
 * kafkajs through its documented API only, and changes nothing of kafkajs outside its own
 * instances: an application that imports messagebuffer and uses kafkajs itself gets kafkajs
 * as it is. What that costs, from kafkajs 2.2.4 as it is:
 *
 * - Compression: kafkajs has gzip built in and takes other codecs only in a registry shared
 *   by every kafkajs user of the process (`CompressionCodecs`), so this client compresses
 *   with none or gzip; `KafkaProvider` refuses snappy, lz4 and zstd with it (the default
 *   client has them all).
 * - Idle CPU: after its first response, each kafkajs connection re-arms a timer every
 *   millisecond for as long as it lives (`RequestQueue.scheduleCheckPendingRequests` with
 *   `throttledUntil` = -1: kafkajs issues #1751 and #1704, unfixed), about 2% of a core per
 *   idle connection here, with a TimeoutNegativeWarning on stderr. kafkajs exposes no hook to
 *   fix it for one instance.
 * - A send over several leaders can resolve without sending some partitions (kafkajs issue
 *   #1303): see {@link KafkajsClient}'s `produce`.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { connect as netConnect, isIP } from "node:net";
import { connect as tlsConnect } from "node:tls";
import {
  type Admin,
  CompressionTypes,
  type ISocketFactory,
  Kafka,
  type KafkaConfig,
  logLevel,
  type Message,
  type Producer,
  type RecordMetadata,
  type SASLOptions,
} from "kafkajs";
import { type Logger, silentLogger } from "../../log.ts";
import type { ProviderCounters, ProviderRecord } from "../types.ts";
import type { KafkaClient } from "./client.ts";
import type { KafkaClientSettings } from "./options.ts";
import { type ErrorLink, isTlsFailure } from "./tls.ts";
import { Partitioner } from "./partitioner.ts";

/** The codecs kafkajs has built in (see the module doc). */
export const KAFKAJS_COMPRESSION = {
  none: CompressionTypes.None,
  gzip: CompressionTypes.GZIP,
} as const;

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

/**
 * kafkajs's own socket factory (`src/network/socketFactory.js`, which it does not export),
 * plus a report of each TLS failure on a socket. Under Deno, a broker's TLS 1.3 alert about
 * the client certificate can arrive after kafkajs took the connection as made; kafkajs then
 * fails its next request with "write after end" or "Not connected", and the alert is lost
 * (a quarter of the tries here). The report keeps it, so the error can say what happened.
 */
function socketFactory(onError: (e: ErrorLink) => void): ISocketFactory {
  return ({ host, port, ssl, onConnect }) => {
    const socket = ssl
      ? tlsConnect({ host, port, ...(isIP(host) ? {} : { servername: host }), ...ssl }, onConnect)
      : netConnect({ host, port }, onConnect);
    socket.setKeepAlive(true, 60_000);
    socket.on("error", (e: Error & { code?: string }) => {
      if (isTlsFailure(e.code)) {
        onError({ code: e.code, message: e.message, broker: `${host}:${port}` });
      }
    });
    return socket;
  };
}

/** Brokers, client id, timeouts, TLS and SASL as kafkajs takes them. */
function connectionConfig(s: KafkaClientSettings): KafkaConfig {
  const config: KafkaConfig = {
    brokers: s.brokers,
    clientId: s.clientId,
    connectionTimeout: s.connectionTimeoutMs,
    requestTimeout: s.requestTimeoutMs,
  };
  if (s.tls) {
    config.ssl = {
      ca: s.tls.ca,
      cert: s.tls.cert,
      key: s.tls.key,
      rejectUnauthorized: !s.tls.insecureSkipVerify,
    };
  }
  if (s.sasl) {
    const { mechanism, username, password } = s.sasl;
    config.sasl = { mechanism, username, password } as SASLOptions;
  }
  return config;
}

/** Quick retries of partitions kafkajs left unacknowledged, before the send fails. */
const UNACKNOWLEDGED_RETRIES = 3;

/** A message and its topic. */
interface Placed {
  topic: string;
  message: Message;
}

/** See the module doc. */
export class KafkajsClient implements KafkaClient {
  readonly #s: KafkaClientSettings;
  readonly #kafka: Kafka;
  readonly #log: Logger;
  #producer: Producer | null = null;
  #admin: Promise<Admin> | null = null;
  #last: Promise<unknown> = Promise.resolve();
  /** The last TLS failure a socket reported (see socketFactory). */
  #socketFailure: ErrorLink | null = null;
  readonly #partitioner = new Partitioner();
  /** The partition picked for each message being sent. */
  readonly #placed = new WeakMap<Message, number>();
  readonly counters: ProviderCounters = {
    retriesInSend: 0,
    leaderMoves: 0,
    metadataRefreshes: 0,
    unacknowledgedPartitions: 0,
  };

  constructor(settings: KafkaClientSettings) {
    this.#s = settings;
    const log = this.#log = settings.logger ?? silentLogger;
    const config: KafkaConfig = {
      ...connectionConfig(settings),
      // kafkajs retries a little by itself (a leader move, a reconnect); longer outages come
      // back to the engine, which keeps the batch on disk and retries with its own backoff.
      retry: { retries: 3, initialRetryTime: 200, maxRetryTime: 2_000 },
      socketFactory: socketFactory((e) => (this.#socketFailure = e)),
      logLevel: logLevel.INFO,
      logCreator: () => ({ namespace, level, log: entry }) => {
        const { message, ...fields } = entry as { message: string } & Record<string, unknown>;
        delete fields.timestamp;
        delete fields.logger;
        const text = `kafkajs ${namespace}: ${message}`;
        // A request kafkajs retries inside a send (its own retry loop): counted, and detail,
        // as the engine reports at "warn" a send that fails back to it, with the retry plan.
        if (/^Failed to send messages/.test(message)) {
          this.counters.retriesInSend++;
          this.counters.metadataRefreshes++;
          log.debug(text, fields);
        } else if (/Limiting retries for the idempotent producer/.test(message)) {
          log.debug(text, fields);
        } else if (level === logLevel.ERROR || level === logLevel.WARN) log.info(text, fields);
        else log.debug(text, fields);
      },
    };
    this.#kafka = new Kafka(config);
  }

  async open(): Promise<void> {
    if (this.#producer) return;
    const producer = this.#kafka.producer({
      idempotent: true,
      maxInFlightRequests: 1,
      // Each message's partition is picked once, by messagebuffer's partitioner, and kept
      // for every retry of it (kafkajs asks again on each of its own retries).
      createPartitioner: () => ({ topic, partitionMetadata, message }) => {
        let p = this.#placed.get(message);
        if (p === undefined) {
          const key = message.key === undefined || message.key === null
            ? null
            : Buffer.from(message.key);
          p = this.#partitioner.partition(topic, key, partitionMetadata.length);
          this.#placed.set(message, p);
        }
        return p;
      },
      retry: { retries: 3, initialRetryTime: 200, maxRetryTime: 2_000 },
      allowAutoTopicCreation: this.#s.autoCreateTopics,
    });
    try {
      await producer.connect();
    } catch (e) {
      await producer.disconnect().catch(() => {});
      throw e;
    }
    this.#producer = producer;
  }

  /** The admin client the probe and the partition counts use (connected once, kept). */
  #adminClient(): Promise<Admin> {
    this.#admin ??= (async () => {
      const admin = this.#kafka.admin({ retry: { retries: 0 } });
      await admin.connect();
      return admin;
    })();
    this.#admin.catch(() => (this.#admin = null));
    return this.#admin;
  }

  /** See {@link KafkaClient.probe}: the brokers and each partition's leader and ISR. */
  async probe(topics: readonly string[]): Promise<string> {
    const admin = await this.#adminClient();
    const cluster = await admin.describeCluster();
    const parts = [cluster.brokers.map((b) => b.nodeId).sort().join(",")];
    if (topics.length > 0) {
      const m = await admin.fetchTopicMetadata({ topics: [...topics].sort() });
      for (const t of m.topics) {
        const ps = [...t.partitions].sort((a, b) => a.partitionId - b.partitionId);
        parts.push(`${t.name}:${ps.map((p) => `${p.leader}/${[...p.isr].sort().join(",")}`)}`);
      }
    }
    return parts.join(" ");
  }

  /**
   * One send at a time: kafkajs refreshes the metadata of every topic it has seen with each
   * send, so a concurrent send (another lane's) of a topic the broker refuses would fail this
   * one with that topic's error, and its records would be taken for refused.
   */
  produce(records: readonly ProviderRecord[]): Promise<void> {
    const run = this.#last.then(() => this.#produce(records));
    this.#last = run.catch(() => {});
    return run;
  }

  /**
   * Sends the records and checks that kafkajs's answer acknowledges, with an offset, every
   * partition they were placed in. kafkajs 2.2.4 can resolve a send that left some out: when
   * a send spans several leaders and one leader's request fails while another's succeeds, its
   * retry goes only to the brokers that have not answered, so the failed partitions, moved
   * meanwhile to a broker that answered, are never sent (kafkajs issue #1303; the fix, PR
   * #1798, is not merged). Their records are then sent again here, in their partitions, and
   * the send fails back to the engine if they still are not acknowledged.
   */
  async #produce(records: readonly ProviderRecord[]): Promise<void> {
    if (!this.#producer) await this.open();
    this.#partitioner.newSend();
    let pending: Placed[] = records.map((r) => ({ topic: r.topic, message: toMessage(r) }));
    for (let attempt = 0;; attempt++) {
      const result = await this.#producer!.sendBatch({
        acks: -1,
        timeout: this.#s.requestTimeoutMs,
        compression: KAFKAJS_COMPRESSION[this.#s.compression as keyof typeof KAFKAJS_COMPRESSION],
        topicMessages: byTopic(pending),
      });
      const missing = this.#unacknowledged(pending, result);
      if (missing.length === 0) return;
      const partitions = [...new Set(missing.map((p) => this.#partitionOf(p)))];
      this.counters.unacknowledgedPartitions += partitions.length;
      const last = attempt >= UNACKNOWLEDGED_RETRIES;
      this.#log.debug("kafkajs resolved a send without acknowledging some partitions", {
        partitions: partitions.join(","),
        records: missing.length,
        then: last ? "the send fails" : "they are sent again",
      });
      if (last) {
        throw new Error(
          `kafkajs resolved a send without acknowledging ${partitions.join(", ")} ` +
            `(${missing.length} records, kafkajs issue #1303); they count as not sent`,
        );
      }
      pending = missing;
    }
  }

  /** `topic:partition` of a message sent. */
  #partitionOf(p: Placed): string {
    return `${p.topic}:${this.#placed.get(p.message)}`;
  }

  /** The messages whose partition `result` gives no offset for. */
  #unacknowledged(sent: readonly Placed[], result: RecordMetadata[]): Placed[] {
    const acked = new Set<string>();
    for (const r of result) {
      const offset = r.baseOffset ?? r.offset;
      if (r.errorCode === 0 && offset !== undefined && BigInt(offset) >= 0n) {
        acked.add(`${r.topicName}:${r.partition}`);
      }
    }
    return sent.filter((p) => !acked.has(this.#partitionOf(p)));
  }

  errorType(e: unknown): string | undefined {
    return errorType(e);
  }

  takeSocketFailure(): ErrorLink | null {
    const f = this.#socketFailure;
    this.#socketFailure = null;
    return f;
  }

  async close(): Promise<void> {
    const p = this.#producer;
    const admin = this.#admin;
    this.#producer = null;
    this.#admin = null;
    await Promise.all([
      p?.disconnect(),
      admin?.then((a) => a.disconnect(), () => {}),
    ]);
  }
}

/** The messages grouped by topic, in order, as `sendBatch` takes them. */
function byTopic(placed: readonly Placed[]): Array<{ topic: string; messages: Message[] }> {
  const out = new Map<string, Message[]>();
  for (const p of placed) {
    const list = out.get(p.topic);
    if (list) list.push(p.message);
    else out.set(p.topic, [p.message]);
  }
  return [...out].map(([topic, messages]) => ({ topic, messages }));
}
