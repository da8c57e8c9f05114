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

import { isIP } from "node:net";
import { connect as tlsConnect } from "node:tls";
import type { Logger } from "../../log.ts";
import { KAFKA, type Resolved, resolveTable, type Same, type ValueOf } from "../../settings.ts";
import type {
  Provider,
  ProviderCounters,
  ProviderRecord,
  RecordRejection,
  SendResult,
} from "../types.ts";

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
 * A Kafka client library {@link KafkaProvider} can produce through.
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
 * Options of {@link KafkaProvider}.
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

/** Of those, the errors that concern a whole topic: every record of it is refused. */
const TOPIC_ERRORS: ReadonlySet<string> = new Set([
  "INVALID_TOPIC_EXCEPTION",
  "TOPIC_AUTHORIZATION_FAILED",
]);

/** What {@link KafkaProvider} needs of a client library. */
export interface KafkaClient {
  /** Connects the producer; throws when the brokers cannot be reached. */
  open(): Promise<void>;
  /** Produces `records` in order in one call; resolves once all are acknowledged. */
  produce(records: readonly ProviderRecord[]): Promise<void>;
  /** The protocol error name behind `e` (such as `MESSAGE_TOO_LARGE`), if it has one. */
  errorType(e: unknown): string | undefined;
  /** See {@link Provider.probe}. */
  probe(topics: readonly string[]): Promise<string>;
  /** What it counted inside sends (see {@link ProviderCounters}). */
  readonly counters: ProviderCounters;
  /**
   * A TLS failure a socket reported since the last call, when the library's own error may
   * have lost it (kafkajs under Deno); then forgotten.
   */
  takeSocketFailure?(): ErrorLink | null;
  close(): Promise<void>;
}

/** The settings a client is built from: the options, validated, with defaults. */
export type KafkaClientSettings = Resolved<typeof KAFKA> & {
  tls?: KafkaTlsOptions;
  sasl?: KafkaSaslOptions;
  logger?: Logger;
};

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
  const tls = options.tls === true ? {} : options.tls || undefined;
  return { ...resolved, tls, sasl: options.sasl, logger: options.logger };
}

/**
 * Certificate verification failures of Node's `tls` (OpenSSL's X509_V_ERR_* names), which
 * Deno and Bun report with the same codes.
 */
const CERT_VERIFY_ERRORS = new Set([
  "SELF_SIGNED_CERT_IN_CHAIN",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "CERT_UNTRUSTED",
  "CERT_SIGNATURE_FAILURE",
  "CERT_HAS_EXPIRED",
  "CERT_NOT_YET_VALID",
  "CERT_REVOKED",
  "INVALID_CA",
  "ERR_TLS_CERT_ALTNAME_INVALID",
]);

/** A TLS alert from the broker about our (missing or unaccepted) client certificate. */
const CLIENT_CERT_ALERT =
  /^ERR_SSL_(?:SSLV3|TLSV1|TLSV13)_ALERT_(?:BAD_CERTIFICATE|UNKNOWN_CA|CERTIFICATE_\w+|UNSUPPORTED_CERTIFICATE|ACCESS_DENIED)$/;

/** Whether a socket error code is a TLS failure that {@link tlsFailure} explains. */
export function isTlsFailure(code: string | undefined): boolean {
  return code !== undefined && (CERT_VERIFY_ERRORS.has(code) || CLIENT_CERT_ALERT.test(code));
}

/** What tlsFailure reads of an error and of the errors behind it. */
export interface ErrorLink {
  code?: unknown;
  broker?: unknown;
  message?: string;
  cause?: unknown;
  originalError?: unknown;
  errors?: unknown[];
}

/**
 * A plain statement of a TLS failure behind `e` (a client library's error whose chain of
 * causes holds the socket's error code, and for kafkajs the broker's address), or undefined
 * when it is not one.
 */
function tlsFailure(e: unknown, clientCert: boolean, brokers: string): string | undefined {
  let cur = e as ErrorLink | undefined;
  let broker: string | undefined;
  for (let i = 0; i < 6 && cur; i++) {
    if (typeof cur.broker === "string") broker ??= cur.broker;
    const code = typeof cur.code === "string" ? cur.code : "";
    const what = `(${code}: ${String(cur.message ?? "").replace(/^Connection error: /, "")})`;
    const at = ` ${broker ?? brokers}`;
    if (CERT_VERIFY_ERRORS.has(code)) {
      return `TLS: the certificate of broker${at} could not be verified ${what}; ` +
        (code === "ERR_TLS_CERT_ALTNAME_INVALID"
          ? "it is not made out to that host name or address"
          : "is the CA that signed it given (tls.ca, --tls-ca-file)?");
    }
    if (CLIENT_CERT_ALERT.test(code)) {
      return clientCert
        ? `TLS: broker${at} did not accept the client certificate ${what}`
        : `TLS: broker${at} refused the connection, wanting a client certificate (mutual TLS) ` +
          `${what}; give tls.cert and tls.key (--tls-cert-file, --tls-key-file)`;
    }
    cur = (cur.cause ?? cur.originalError ?? cur.errors?.[0]) as ErrorLink | undefined;
  }
  return undefined;
}

/** `host:port` split at its last colon. */
function splitAddress(address: string): [string, number] {
  const i = address.lastIndexOf(":");
  return [address.slice(0, i), Number(address.slice(i + 1))];
}

/**
 * Opens one TLS connection to `host:port` and waits briefly after the handshake for the
 * broker to refuse it; resolves with the TLS failure, or null when there was none.
 */
function probeTls(
  host: string,
  port: number,
  tls: KafkaTlsOptions,
  timeoutMs: number,
): Promise<ErrorLink | null> {
  return new Promise((resolve) => {
    let done = false;
    const finish = (v: ErrorLink | null) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(v);
    };
    const socket = tlsConnect({
      host,
      port,
      ...(isIP(host) ? {} : { servername: host }),
      ca: tls.ca,
      cert: tls.cert,
      key: tls.key,
      rejectUnauthorized: !tls.insecureSkipVerify,
    });
    const timer = setTimeout(() => finish(null), timeoutMs);
    socket.on("error", (err: Error & { code?: string }) =>
      finish(
        isTlsFailure(err.code)
          ? { code: err.code, message: err.message, broker: `${host}:${port}` }
          : null,
      ));
    // A refusal of the client certificate comes as an alert after the handshake.
    socket.on("secureConnect", () => {
      socket.resume();
      setTimeout(() => finish(null), Math.min(1000, timeoutMs));
    });
    socket.on("close", () => finish(null));
  });
}

/**
 * What went wrong behind `e`, in the words of its root cause: client libraries wrap a socket's
 * or a broker's error in layers ("AggregateError: metadata failed 4 times.: Cannot connect to
 * any broker.: ...: connect ECONNREFUSED 127.0.0.1:1"), and the last layer says it
 * ("connect ECONNREFUSED 127.0.0.1:1", "The request included a message larger than ...").
 */
export function describeError(e: unknown): string {
  let root: string | undefined;
  let cur = e as
    | { message?: string; cause?: unknown; errors?: unknown[]; originalError?: unknown }
    | undefined;
  for (let i = 0; i < 8 && cur; i++) {
    if (typeof cur.message === "string" && cur.message.trim() !== "") root = cur.message;
    cur = (Array.isArray(cur.errors) && cur.errors.length > 0
      ? cur.errors[0]
      : cur.cause ?? cur.originalError) as typeof cur;
  }
  return (root ?? String(e)).replace(/^Connection error: /, "").replace(/\.$/, "");
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

/** The error a retried send ends with: names the cause and says that records are kept. */
export class KafkaSendError extends Error {
  constructor(what: string, cause: unknown, explanation?: string) {
    super(`${what}: ${explanation ?? describeError(cause)}`, { cause });
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
  readonly #settings: KafkaClientSettings;
  #client: KafkaClient | null = null;
  #closed = false;
  /** Whether a TLS client certificate is configured (for the wording of TLS errors). */
  readonly #clientCert: boolean;
  readonly #tls: KafkaTlsOptions | undefined;
  #open = false;

  /**
   * Checks the options (a bad one throws a TypeError or RangeError naming it); connects on
   * `open()`.
   */
  constructor(options: KafkaProviderOptions) {
    const settings = resolveKafkaSettings(options);
    this.#o = settings;
    this.#clientCert = !!settings.tls?.cert;
    this.#tls = settings.tls;
    this.#settings = settings;
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
      ? new module.KafkajsClient(this.#settings)
      : new module.PlatformaticClient(this.#settings);
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
        await this.#probeTls(e),
      );
    }
    this.#open = true;
  }

  /** A TLS failure behind `e`, or else one a socket reported since the last check. */
  #tlsFailure(e: unknown): string | undefined {
    const socket = this.#client?.takeSocketFailure?.() ?? null;
    const brokers = this.#o.brokers.join(",");
    return tlsFailure(e, this.#clientCert, brokers) ??
      (socket ? tlsFailure(socket, this.#clientCert, brokers) : undefined);
  }

  /**
   * When connecting over TLS failed without saying why (a broker's alert about the client
   * certificate can arrive after the library took the handshake as done, and be lost), one
   * TLS connection of our own to the first broker finds out.
   */
  async #probeTls(e: unknown): Promise<string | undefined> {
    const found = this.#tlsFailure(e);
    if (found || !this.#tls) return found;
    const [host, port] = splitAddress(this.#o.brokers[0]);
    const failure = await probeTls(host, port, this.#tls, this.#o.connectionTimeoutMs);
    return failure ? tlsFailure(failure, this.#clientCert, `${host}:${port}`) : undefined;
  }

  async send(records: readonly ProviderRecord[]): Promise<SendResult> {
    if (this.#closed) throw new KafkaSendError("not sent", new Error("the provider is closed"));
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
   * in halves (sent in order) until the records that fail are alone; those are rejected. On a
   * topic-wide one (not authorized, invalid topic), splits it by topic instead, and rejects
   * all the records of the refused topic at once.
   */
  async #sendIndexes(
    records: readonly ProviderRecord[],
    idx: number[],
    rejected: RecordRejection[],
  ): Promise<void> {
    if (this.#closed) throw new KafkaSendError("not sent", new Error("the provider is closed"));
    try {
      await this.#client!.produce(
        idx.length === records.length ? records : idx.map((i) => records[i]),
      );
    } catch (e) {
      const type = this.#client!.errorType(e);
      if (type === undefined || !PER_RECORD_ERRORS.has(type)) {
        throw new KafkaSendError(`sending ${idx.length} record(s) failed`, e, this.#tlsFailure(e));
      }
      if (idx.length === 1) {
        rejected.push({ index: idx[0], reason: `${type}: ${describeError(e)}` });
        return;
      }
      if (TOPIC_ERRORS.has(type)) {
        // A topic-wide refusal: send each topic's records apart; the refused topic's are
        // refused together, without halving them one by one.
        const byTopic = new Map<string, number[]>();
        for (const i of idx) {
          const list = byTopic.get(records[i].topic);
          if (list) list.push(i);
          else byTopic.set(records[i].topic, [i]);
        }
        if (byTopic.size === 1) {
          for (const i of idx) rejected.push({ index: i, reason: `${type}: ${describeError(e)}` });
          return;
        }
        for (const sub of byTopic.values()) await this.#sendIndexes(records, sub, rejected);
        return;
      }
      const half = Math.ceil(idx.length / 2);
      await this.#sendIndexes(records, idx.slice(0, half), rejected);
      await this.#sendIndexes(records, idx.slice(half), rejected);
    }
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
