/**
 * The Kafka {@link Provider}, on kafkajs. This is the only file that imports kafkajs.
 *
 * - Safe producer settings: `acks: -1` (all in-sync replicas), idempotent producer, one
 *   request in flight per broker, Java-compatible partitioner for keyed records.
 * - A batch from the engine is split into requests of at most `maxRequestBytes`, sent one
 *   after another, so that no partition's record batch exceeds what a broker accepts.
 * - Errors: anything that may pass (broker down, leader moving, timeouts, network, SASL and
 *   TLS failures) is thrown, so the engine retries the batch. A TLS failure is said plainly,
 *   naming the broker: its certificate could not be verified, or it wants (or refused) a
 *   client certificate. A per-record permanent error (message too large, invalid topic, not
 *   authorized) is narrowed down to the records that cause it by splitting the request, and
 *   those records are returned as rejected.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { connect as netConnect, isIP } from "node:net";
import { connect as tlsConnect } from "node:tls";
import {
  CompressionTypes,
  type CompressionTypes as KafkaCompressionTypes,
  type ISocketFactory,
  Kafka,
  type KafkaConfig,
  logLevel,
  type Message,
  Partitioners,
  type Producer,
  type SASLOptions,
} from "kafkajs";
import type { Logger } from "../../log.ts";
import { silentLogger } from "../../log.ts";
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
  mechanism: "plain" | "scram-sha-256" | "scram-sha-512";
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
  compression?: "none" | "gzip";
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
function isTlsFailure(code: string | undefined): boolean {
  return code !== undefined && (CERT_VERIFY_ERRORS.has(code) || CLIENT_CERT_ALERT.test(code));
}

/** What tlsFailure reads of an error and of the errors behind it. */
interface ErrorLink {
  code?: unknown;
  broker?: unknown;
  message?: string;
  cause?: unknown;
  originalError?: unknown;
}

/**
 * A plain statement of a TLS failure behind `e` (a kafkajs error whose cause chain holds the
 * socket's error code and the broker's address), or undefined when it is not one.
 */
function tlsFailure(e: unknown, clientCert: boolean): string | undefined {
  let cur = e as ErrorLink | undefined;
  let broker: string | undefined;
  for (let i = 0; i < 6 && cur; i++) {
    if (typeof cur.broker === "string") broker ??= cur.broker;
    const code = typeof cur.code === "string" ? cur.code : "";
    const what = `(${code}: ${String(cur.message ?? "").replace(/^Connection error: /, "")})`;
    const at = broker ? ` ${broker}` : "";
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
    cur = (cur.cause ?? cur.originalError) as ErrorLink | undefined;
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

/** The error a retried send ends with: names the cause and says that records are kept. */
export class KafkaSendError extends Error {
  readonly retriable = true;
  constructor(what: string, cause: unknown, explanation?: string) {
    const c = cause as Error;
    super(
      `${what}: ${explanation ?? `${c?.name ?? "Error"}: ${c?.message ?? String(cause)}`}`,
      { cause },
    );
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
  readonly #o:
    & Required<Omit<KafkaProviderOptions, "tls" | "sasl" | "logger">>
    & KafkaProviderOptions;
  readonly #kafka: Kafka;
  #producer: Producer | null = null;
  readonly #compression: KafkaCompressionTypes;
  /** Whether a TLS client certificate is configured (for the wording of TLS errors). */
  readonly #clientCert: boolean;
  /** The last TLS failure on a socket since the current open or send began (socketFactory). */
  #socketError: ErrorLink | null = null;

  constructor(options: KafkaProviderOptions) {
    if (!options || !Array.isArray(options.brokers) || options.brokers.length === 0) {
      throw new TypeError(`KafkaProvider option "brokers" must be a non-empty list of "host:port"`);
    }
    for (const b of options.brokers) {
      if (typeof b !== "string" || !/^[^\s:]+:\d{1,5}$/.test(b)) {
        throw new TypeError(
          `KafkaProvider option "brokers": ${JSON.stringify(b)} is not "host:port"`,
        );
      }
    }
    const compression = options.compression ?? "none";
    if (compression !== "none" && compression !== "gzip") {
      throw new TypeError(
        `KafkaProvider option "compression" must be "none" or "gzip", got ${
          JSON.stringify(compression)
        }`,
      );
    }
    this.#o = {
      clientId: "messagebuffer",
      requestTimeoutMs: 30_000,
      connectionTimeoutMs: 3_000,
      maxRequestBytes: 900_000,
      maxMessageBytes: 1_048_576,
      ...options,
      compression,
    };
    this.#compression = compression === "gzip" ? CompressionTypes.GZIP : CompressionTypes.None;
    const log = options.logger ?? silentLogger;
    const config: KafkaConfig = {
      brokers: options.brokers,
      clientId: this.#o.clientId,
      connectionTimeout: this.#o.connectionTimeoutMs,
      requestTimeout: this.#o.requestTimeoutMs,
      // kafkajs retries a little by itself (a leader move, a reconnect); longer outages come
      // back to the engine, which keeps the batch on disk and retries with its own backoff.
      retry: { retries: 3, initialRetryTime: 200, maxRetryTime: 2_000 },
      socketFactory: socketFactory((e) => (this.#socketError = e)),
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
    this.#clientCert = typeof tls === "object" && tls !== null && !!tls.cert;
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
      if (!["plain", "scram-sha-256", "scram-sha-512"].includes(mechanism)) {
        throw new TypeError(
          `KafkaProvider option "sasl.mechanism" must be plain, scram-sha-256 or scram-sha-512`,
        );
      }
      config.sasl = { mechanism, username, password } as SASLOptions;
    }
    this.#kafka = new Kafka(config);
  }

  /** A TLS failure behind `e`, or else one a socket reported since this open or send began. */
  #tlsFailure(e: unknown): string | undefined {
    return tlsFailure(e, this.#clientCert) ??
      (this.#socketError ? tlsFailure(this.#socketError, this.#clientCert) : undefined);
  }

  async open(): Promise<void> {
    if (this.#producer) return;
    this.#socketError = null;
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
      throw new KafkaSendError(
        `cannot connect to Kafka at ${this.#o.brokers.join(",")}`,
        e,
        this.#tlsFailure(e),
      );
    }
    this.#producer = producer;
  }

  async send(records: readonly ProviderRecord[]): Promise<SendResult> {
    if (!this.#producer) await this.open();
    this.#socketError = null;
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
        throw new KafkaSendError(
          `sending ${idx.length} record(s) failed`,
          e,
          this.#tlsFailure(e),
        );
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
