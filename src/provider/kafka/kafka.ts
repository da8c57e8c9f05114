/**
 * The Kafka {@link Provider}. It produces through one of two client libraries, chosen by
 * the `client` option, each behind the same small {@link KafkaClient} interface in its own
 * file (`platformatic.ts`, `kafkajs.ts`: the only files that import them; their contract is
 * `client.ts`, the options `options.ts`, the request splitting `split.ts`, the TLS diagnosis
 * `tls.ts`). Whichever runs:
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

import type {
  Provider,
  ProviderCounters,
  ProviderRecord,
  SendContext,
  SendResult,
} from "../types.ts";
import { type KafkaClient, KafkaSendError } from "./client.ts";
import {
  type KafkaClientName,
  type KafkaClientSettings,
  KAFKAJS_SEND_MAX_RECORDS,
  type KafkaProviderOptions,
  resolveKafkaSettings,
} from "./options.ts";
import { sendInRequests } from "./split.ts";
import { diagnoseTls, type TlsContext, tlsProblem } from "./tls.ts";

export type {
  KafkaClientName,
  KafkaCompression,
  KafkaProviderOptions,
  KafkaSaslMechanism,
  KafkaSaslOptions,
  KafkaTlsOptions,
} from "./options.ts";

/** The client libraries' versions, as in package.json and deno.json (checked by a test). */
export const LIBRARY_VERSIONS = { "@platformatic/kafka": "2.12.1", kafkajs: "2.2.4" } as const;

/**
 * The message of a failed import of a client library, with, when Deno could not resolve a
 * library (an app importing messagebuffer by path: Deno resolves bare specifiers with the
 * app's import map), the line the app's deno.json needs.
 */
function importHint(e: unknown): string {
  const message = e instanceof Error ? e.message.split("\n")[0] : String(e);
  const missing = /Import "([^"]+)" not a dependency|"([^"]+)" is not in import map/.exec(message);
  const name = missing?.[1] ?? missing?.[2];
  if (!name || !(name in LIBRARY_VERSIONS)) return message;
  const version = LIBRARY_VERSIONS[name as keyof typeof LIBRARY_VERSIONS];
  return `${message}. In a Deno app, map it in the app's deno.json: "imports": { "${name}": "npm:${name}@${version}" }`;
}

/**
 * The Kafka client library cannot be loaded: no send can ever succeed, so this fails
 * `MessageBuffer.open` (and the agent's start), with the fix in the message.
 */
export class KafkaClientLoadError extends Error {
  constructor(client: KafkaClientName, cause: unknown) {
    super(`cannot load the Kafka client library for client "${client}": ${importHint(cause)}`, {
      cause,
    });
    this.name = "KafkaClientLoadError";
  }
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
  readonly #o: KafkaClientSettings;
  readonly #tls: TlsContext;
  #client: KafkaClient | null = null;
  #closed = false;
  #open = false;

  /**
   * Checks the options (a bad one throws a TypeError or RangeError naming it); connects on
   * `open()`.
   */
  constructor(options: KafkaProviderOptions) {
    const o = this.#o = resolveKafkaSettings(options);
    this.#tls = { tls: o.tls, brokers: o.brokers, connectionTimeoutMs: o.connectionTimeoutMs };
  }

  /**
   * The client, built on first use (`prepare()`, which `MessageBuffer.open` calls): each
   * library is loaded only when a provider uses it, so that importing this module (or
   * mod.ts) costs neither its load time nor its memory, and a library that cannot load fails
   * the open instead of every send.
   */
  async #connectClient(): Promise<KafkaClient> {
    if (this.#client) return this.#client;
    let module;
    try {
      module = this.#o.client === "kafkajs"
        ? await import("./kafkajs.ts")
        : await import("./platformatic.ts");
    } catch (e) {
      throw new KafkaClientLoadError(this.#o.client, e);
    }
    this.#client ??= "KafkajsClient" in module
      ? new module.KafkajsClient(this.#o)
      : new module.PlatformaticClient(this.#o);
    return this.#client;
  }

  /** The client library in use. */
  get client(): KafkaClientName {
    return this.#o.client;
  }

  /** Loads the client library and builds the client (it connects on `open()`). */
  async prepare(): Promise<void> {
    await this.#connectClient();
  }

  async open(): Promise<void> {
    if (this.#open) return;
    const client = await this.#connectClient();
    client.takeSocketFailure?.();
    try {
      await client.open();
    } catch (e) {
      throw new KafkaSendError(
        `cannot connect to Kafka at ${this.#o.brokers.join(",")}`,
        e,
        await diagnoseTls(e, this.#client?.takeSocketFailure?.() ?? null, this.#tls),
      );
    }
    this.#open = true;
  }

  /** A TLS failure behind `e`, or else one a socket reported since the last check. */
  #tlsProblem(e: unknown): string | undefined {
    return tlsProblem(e, this.#client?.takeSocketFailure?.() ?? null, this.#tls);
  }

  /**
   * True with the `platformatic` client: a batch sent again goes under the identity it was
   * first sent under (see {@link SendContext}), and the broker drops what it already has.
   * The `kafkajs` client keeps its own sequence numbers: at least once.
   */
  get keepsIdentity(): boolean {
    return this.#o.client === "platformatic";
  }

  /**
   * True with the `platformatic` client: a send reads its records only while it runs, copying
   * them into batches of its own, and keeps none of them after it settles. The `kafkajs`
   * client is handed views of them, and its sends may encode them again while they retry.
   */
  get releasesRecords(): boolean {
    return this.#o.client === "platformatic";
  }

  /** With the `kafkajs` client, {@link KAFKAJS_SEND_MAX_RECORDS}; no limit of its own otherwise. */
  get sendMaxRecords(): number | undefined {
    return this.#o.client === "kafkajs" ? KAFKAJS_SEND_MAX_RECORDS : undefined;
  }

  async send(records: readonly ProviderRecord[], context?: SendContext): Promise<SendResult> {
    if (this.#closed) throw new KafkaSendError("not sent", new Error("the provider is closed"));
    await this.open();
    const client = this.#client!;
    if (context && client.sendPlanned) {
      try {
        const rejected = await client.sendPlanned(records, context, {
          maxRequestBytes: this.#o.maxRequestBytes,
          maxMessageBytes: this.#o.maxMessageBytes,
        });
        return { rejected };
      } catch (e) {
        if (e instanceof KafkaSendError) throw e;
        throw new KafkaSendError(
          `sending ${records.length} record(s) failed`,
          e,
          this.#tlsProblem(e),
        );
      }
    }
    const rejected = await sendInRequests({
      client: this.#client!,
      maxRequestBytes: this.#o.maxRequestBytes,
      maxMessageBytes: this.#o.maxMessageBytes,
      closed: () => this.#closed,
      tlsProblem: (e) => this.#tlsProblem(e),
    }, records);
    return { rejected };
  }

  counters(): ProviderCounters {
    return this.#client
      ? { ...this.#client.counters }
      : { retriesInSend: 0, leaderMoves: 0, metadataRefreshes: 0, unacknowledgedPartitions: 0 };
  }

  async probe(topics: readonly string[]): Promise<string> {
    if (this.#closed) throw new KafkaSendError("not probed", new Error("the provider is closed"));
    const client = await this.#connectClient();
    return await client.probe(topics);
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#open = false;
    await this.#client?.close();
  }
}
