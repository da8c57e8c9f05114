/**
 * The Provider interface: what the sender delivers records through, a batch at a time: a
 * name, a first retry wait, open, send, close, and optionally prepare, probe and counters.
 *
 * @module
 */

/**
 * A record header as `[name, value]`; Kafka allows repeated names, so headers are a list.
 *
 * @example Read a header of a record
 * ```ts
 * const trace = record.headers?.find(([name]) => name === "trace-id")?.[1];
 * ```
 */
export type ProviderHeader = readonly [name: string, value: Uint8Array];

/**
 * A record handed to a provider: what a writer stored, as it reads back. `value`, `key` and
 * header values may view memory the engine reuses after `send` settles: copy to keep them.
 * `key` and `value` may be accessors that make a view on each read (the engine keeps them as
 * ranges of the bytes it read): read each once, and copy fields by name, not with `{...r}`.
 *
 * @example The value as text
 * ```ts
 * const text = new TextDecoder().decode(record.value);
 * ```
 */
export interface ProviderRecord {
  /** The Kafka topic. */
  readonly topic: string;
  /** Null when the record was written without a key. */
  readonly key: Uint8Array | null;
  /** The record's value, byte for byte as written. */
  readonly value: Uint8Array;
  /** Null when the record has no headers. */
  readonly headers: readonly ProviderHeader[] | null;
  /** Event time in ms since the Unix epoch (the Kafka record timestamp). */
  readonly timestamp: number;
}

/**
 * A record the provider will never accept (too large, invalid topic, not authorized).
 *
 * @example Refuse records that are too large
 * ```ts
 * const rejected = records
 *   .map((r, index) => ({ r, index }))
 *   .filter(({ r }) => r.value.length > 1_000_000)
 *   .map(({ index }) => ({ index, reason: "MESSAGE_TOO_LARGE: over 1 MB" }));
 * return { rejected };
 * ```
 */
export interface RecordRejection {
  /** Index of the record in the batch passed to `send`. */
  index: number;
  /** Why, e.g. the broker's error name: `"MESSAGE_TOO_LARGE: ..."`. */
  reason: string;
}

/**
 * What `send` resolves with. Absent or empty `rejected`: every record was acknowledged.
 *
 * @example Every record acknowledged
 * ```ts
 * return { rejected: [] };
 * ```
 */
export interface SendResult {
  /** The records that will never be accepted; the others were acknowledged. */
  rejected?: RecordRejection[];
}

/**
 * What a provider counts of the work inside its sends: what a failover inside one send did,
 * which the engine does not see when the send then succeeds. Kafka's words; a provider for
 * another destination leaves at 0 what it does not have.
 *
 * @example Alert on partitions a client left unacknowledged
 * ```ts
 * const c = provider.counters?.();
 * if (c && c.unacknowledgedPartitions > 0) console.warn("a client reported a send it did not make");
 * ```
 */
export interface ProviderCounters {
  /** Requests retried inside a send (a leader moved, a connection dropped, too few replicas). */
  retriesInSend: number;
  /** Partitions whose leader changed between one request to them and the next. */
  leaderMoves: number;
  /** Times the cluster metadata was looked up again because a request failed. */
  metadataRefreshes: number;
  /**
   * Partitions a send covered that came back without an acknowledgement with an offset (a
   * client library that resolved anyway, or a broker's answer that left one out): each was
   * sent again, never counted as delivered.
   */
  unacknowledgedPartitions: number;
}

/**
 * Why records may have reached the destination twice, as counted
 * (`messagebuffer_records_maybe_duplicated_total{reason}`, `stats().counters`):
 *
 * - `producer-state-lost`: the broker no longer knew the producer or its sequence numbers
 *   when a batch was sent again (`UNKNOWN_PRODUCER_ID`, `OUT_OF_ORDER_SEQUENCE_NUMBER`,
 *   `INVALID_PRODUCER_EPOCH`), so it was sent under a new identity;
 * - `producer-expired`: the batch in flight at a crash was older than the broker keeps
 *   producer state (`producer.id.expiration.ms`), so it was sent under a new identity;
 * - `partitions-changed`: a topic's partition count changed since the batch's identity
 *   was made, so its records were placed again;
 * - `at-least-once-client`: the batch was sent again through a provider that keeps no
 *   identity (the `kafkajs` client);
 * - `direct`: a direct send (the direct modes) whose outcome was not waited for: taken
 *   over by the disk path while in flight (`direct-until-error`), or timed out for its
 *   writer and acknowledged after;
 * - `refused-record`: a record of a batch sent before was refused for good, so the records
 *   after it in its partition went under a new producer id (its sequence number is never
 *   taken again), and some of them may have been appended before;
 * - `identity-not-stored`: the in-flight file could not be written (a full or failing disk):
 *   the batch went out with its identity kept in memory only, so a crash before Kafka
 *   acknowledged it would send it again under a new one.
 *
 * @example Alert on possible duplicates
 * ```ts
 * const reason: DuplicateReason = "producer-state-lost";
 * ```
 */
export type DuplicateReason =
  | "producer-state-lost"
  | "producer-expired"
  | "partitions-changed"
  | "at-least-once-client"
  | "direct"
  | "refused-record"
  | "identity-not-stored";

/**
 * What the engine gives `send` so that a batch sent again reaches the destination once: the
 * identity the provider committed for it before (a retry after a failed send, or the batch
 * that was in flight when the process stopped, read back from the in-flight file), a way
 * to commit one, and a way to count the records it cannot keep that promise for.
 *
 * @example A provider that keeps an identity (a sketch)
 * ```ts
 * async function send(records: readonly ProviderRecord[], context?: SendContext) {
 *   const identity = context?.identity ?? JSON.stringify({ batch: crypto.randomUUID() });
 *   await context?.commit(identity); // stored before anything leaves
 *   // ... send `records` under `identity`; the destination drops a copy it already has
 * }
 * ```
 */
export interface SendContext {
  /** The identity committed for this batch earlier, or null for a batch not sent before. */
  readonly identity: string | null;
  /**
   * Stores `identity` as the batch's: on stable storage under `fsync: "always"`, before
   * this resolves. Call it before any record of the send leaves, and again when the
   * identity changes. When the disk refuses the write, the identity is kept in memory (a
   * retry in this process still gets it) and the batch is counted as `identity-not-stored`,
   * so that delivery goes on from a full disk. Throws only when the buffer is closing: then
   * send nothing and throw.
   */
  commit(identity: string): Promise<void>;
  /** Counts `records` of this batch that may arrive twice, logged with why (see {@link DuplicateReason}). */
  maybeDuplicated(records: number, reason: DuplicateReason, detail: string): void;
}

/**
 * A destination for records.
 *
 * - `send` resolves once the destination has acknowledged every record it did not reject;
 *   the engine then advances the checkpoint past the whole batch and moves rejected records
 *   to the dead-letter folder.
 * - `send` throwing means "not delivered, try again": the engine waits (backoff with jitter)
 *   and sends the same batch again, never skipping it. Any record may then arrive twice.
 *
 * @example A provider that prints records (for a dry run)
 * ```ts
 * import type { Provider } from "./mod.ts";
 * const printer: Provider = {
 *   name: "stdout",
 *   open: () => Promise.resolve(),
 *   send: (records) => {
 *     for (const r of records) console.log(r.topic, new TextDecoder().decode(r.value));
 *     return Promise.resolve();
 *   },
 *   close: () => Promise.resolve(),
 * };
 * ```
 */
export interface Provider {
  /** Short name for logs and metrics, e.g. `"kafka"`. */
  readonly name: string;
  /** Suggested first wait after a failed send, in ms (the engine's backoff starts here). */
  readonly retryWaitMs?: number;
  /**
   * Readies what no retry can fix, such as loading a client library, without connecting.
   * `MessageBuffer.open` calls it first, and fails with its error: a provider that can never
   * send is an error at open, not a backlog that waits forever. @default nothing to ready
   */
  prepare?(): Promise<void>;
  /** Connects. Throwing is retried like a failed send. */
  open(): Promise<void>;
  /**
   * True when `send` commits an identity through its context before sending, so that a
   * batch sent again (after a failure, after a crash) reaches the destination once. Without
   * it, the engine counts a batch it sends again as `at-least-once-client`.
   * @default false
   */
  readonly keepsIdentity?: boolean;
  /**
   * True when `send` reads its records (their topics, keys, values, headers and timestamps)
   * only until it settles, and keeps no reference to them or their bytes after that (it
   * copies what it needs, or sends before it settles). The engine then reads the next records
   * into the same memory, and the same record objects, instead of new ones per read. A
   * provider that keeps records, or views of them, past its `send` must leave this unset:
   * they would change under it. @default false
   */
  readonly releasesRecords?: boolean;
  /**
   * The most records one `send` should carry for this provider to work well: the engine's
   * `batchMaxRecords` when that option is not given. @default no limit of its own
   */
  readonly sendMaxRecords?: number;
  /**
   * Delivers records in order. See the interface doc for the outcome contract; `context`
   * (given by the disk path) carries the batch's identity ({@link SendContext}).
   */
  send(records: readonly ProviderRecord[], context?: SendContext): Promise<SendResult | void>;
  /** Disconnects; called once by `MessageBuffer.close()`. */
  close(): Promise<void>;
  /** What it counted inside its sends since it was made. @default none */
  counters?(): ProviderCounters;
  /**
   * Asks the destination whether it answers, cheaply, without sending records: resolves with
   * a summary of its state (for Kafka the live brokers and the leaders and in-sync replicas
   * of `topics`) that changes when that state does, or throws when it does not answer. While
   * a send waits out its backoff, the engine calls it about once a second, and sends again
   * at once when the answer changes: a cluster back from an outage is used within a second,
   * while sends that fail against a cluster that answers keep their backoff. @default none
   */
  probe?(topics: readonly string[]): Promise<string>;
}
