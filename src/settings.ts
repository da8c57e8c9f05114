/**
 * Every setting of messagebuffer in one table, in the manner of Kafka's `LogConfig`: for each
 * one its type, range or allowed values, and default. Three sections:
 *
 * - {@link ENGINE}: the options of `MessageBuffer.open`, in the engine's units (ms, bytes);
 * - {@link KAFKA}: the options of `KafkaProvider`;
 * - {@link AGENT}: the settings of `messagebuffer run`, keyed by config-file key (the flag is
 *   the key with `-` for `_`). An agent setting that sets an engine or Kafka option names it
 *   and the unit it is given in (`file_max_time` is `segmentMaxAgeMs` in seconds); its type,
 *   range and default come from that option. The others carry their own.
 *
 * The engine, the provider and the agent validate against these entries and word the errors
 * for their callers: `Option "fsync" must be one of ...` for the library, `--fsync: must be
 * one of ...` for the agent.
 *
 * @module
 */

import type { LoggerOptions, LogLevel } from "./log.ts";

const MiB = 1024 * 1024;

/**
 * Units a plain number of an agent setting is in, as multiples of the engine's unit (ms or
 * bytes). `MB` here is a mebibyte (2^20 bytes), as `file_max_size` has always meant.
 */
export const UNITS = { ms: 1, s: 1000, min: 60_000, bytes: 1, MB: MiB } as const;

/** A unit an agent setting is given in. */
export type Unit = keyof typeof UNITS;

/** Suffixes a time may be written with, in ms; matched without regard to case. */
export const TIME_SUFFIXES: Readonly<Record<string, number>> = {
  ms: 1,
  s: 1000,
  sec: 1000,
  m: 60_000,
  min: 60_000,
  h: 3_600_000,
  d: 86_400_000,
};

/**
 * Suffixes a size may be written with, in bytes: SI (`KB` = 1000) and IEC (`KiB` = 1024), as
 * the words mean; matched without regard to case (`mib`, `MiB`).
 */
export const SIZE_SUFFIXES: Readonly<Record<string, number>> = {
  b: 1,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  tb: 1e12,
  kib: 1024,
  mib: MiB,
  gib: 1024 * MiB,
  tib: 1024 * 1024 * MiB,
};

/** How a unit is named to users: `MB` (a plain number of `file_max_size`) is a mebibyte. */
export function unitLabel(u: Unit): string {
  return u === "MB" ? "MiB" : u;
}

/** Whether a unit measures time (else size). */
export function isTimeUnit(u: Unit): boolean {
  return u === "ms" || u === "s" || u === "min";
}

/**
 * Reads "250ms", "5s", "1.5min", "16MiB", "2GB" as engine units (ms or bytes), for a
 * setting in `unit`. Returns null when `text` has no suffix (a plain number), and throws a
 * message (a string) when the suffix is unknown or of the other kind.
 */
export function parseWithUnit(text: string, unit: Unit): number | null {
  const m = /^\s*(\d+(?:\.\d+)?|\.\d+)\s*([a-zA-Z]+)\s*$/.exec(text);
  if (!m) return null;
  const [, num, suffix] = m;
  const time = isTimeUnit(unit);
  const factor = (time ? TIME_SUFFIXES : SIZE_SUFFIXES)[suffix.toLowerCase()];
  if (factor === undefined) {
    throw time
      ? `unknown time unit "${suffix}" (use ms, s or sec, m or min, h or d, e.g. 500ms or 5s)`
      : `unknown size unit "${suffix}" (use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB, e.g. 16MiB)`;
  }
  return Number(num) * factor;
}

/** An amount in engine units (ms or bytes) with the largest unit that shows it exactly. */
export function formatWithUnit(engineValue: number, unit: Unit): string {
  if (isTimeUnit(unit)) {
    for (const [u, f] of [["d", 86_400_000], ["h", 3_600_000], ["min", 60_000], ["s", 1000]]) {
      if (engineValue !== 0 && engineValue % (f as number) === 0) {
        return `${engineValue / (f as number)}${u}`;
      }
    }
    return `${engineValue}ms`;
  }
  const sizes = [
    ["GiB", 1024 * MiB],
    ["GB", 1e9],
    ["MiB", MiB],
    ["MB", 1e6],
    ["KiB", 1024],
    ["KB", 1e3],
  ] as const;
  for (const [u, f] of sizes) {
    if (engineValue !== 0 && engineValue % f === 0) return `${engineValue / f}${u}`;
  }
  return `${engineValue}B`;
}

/** A pattern a text value (or each item of a list) must match, and how messages name it. */
export interface Format {
  readonly pattern: RegExp;
  /** Completes "expected …" and "is not …", e.g. `host:port`. */
  readonly name: string;
}

/** An integer: a time in ms, a size in bytes, or a count. */
export interface IntegerSpec {
  readonly type: "integer";
  readonly min: number;
  /** @default Number.MAX_SAFE_INTEGER */
  readonly max?: number;
  readonly default?: number;
}

/** One of a few strings. */
export interface ChoiceSpec {
  readonly type: "choice";
  readonly choices: readonly string[];
  readonly default?: string;
}

/** A string, optionally of a {@link Format}. */
export interface TextSpec {
  readonly type: "text";
  readonly format?: Format;
  readonly default?: string;
  /** Checked even when not given (there is no default). */
  readonly required?: boolean;
}

/** On or off. */
export interface BooleanSpec {
  readonly type: "boolean";
  readonly default?: boolean;
}

/** A list of strings (comma-separated on the command line), each optionally of a format. */
export interface ListSpec {
  readonly type: "list";
  readonly format?: Format;
  /** Must have at least one item, and is checked even when not given. */
  readonly required?: boolean;
  /** Lists have no default. */
  readonly default?: never;
}

/** The type, range and default of one setting. */
export type Spec = IntegerSpec | ChoiceSpec | TextSpec | BooleanSpec | ListSpec;

/** The value type a spec describes. */
export type ValueOf<S> = S extends { type: "integer" } ? number
  : S extends { type: "choice"; choices: readonly (infer C)[] } ? C
  : S extends { type: "text" } ? string
  : S extends { type: "boolean" } ? boolean
  : S extends { type: "list" } ? string[]
  : never;

/** A Kafka broker address. */
export const BROKER_ADDRESS: Format = { pattern: /^[^\s:]+:\d{1,5}$/, name: "host:port" };

/** The address an HTTP listener binds; the host may be empty (all interfaces). */
export const LISTEN_ADDRESS: Format = {
  pattern: /^[^\s]*:\d{1,5}$/,
  name: "host:port (e.g. 127.0.0.1:9464)",
};

/** Unix file permissions. */
export const OCTAL_MODE: Format = { pattern: /^0?[0-7]{3}$/, name: "octal permissions like 0660" };

const NON_EMPTY: Format = { pattern: /./s, name: "a non-empty string" };

/** Options of `MessageBuffer.open` (documented on `MessageBufferOptions`), in ms and bytes. */
export const ENGINE = {
  dir: { type: "text", format: NON_EMPTY, required: true },
  mode: {
    type: "choice",
    choices: ["buffer", "direct-until-error", "block-on-error", "error-on-error"],
    default: "buffer",
  },
  directMaxRecords: { type: "integer", min: 1, default: 10_000 },
  lanes: { type: "integer", min: 1, max: 256, default: 1 },
  maxSendsInFlight: { type: "integer", min: 1, max: 256, default: 4 },
  directTimeoutMs: { type: "integer", min: 1, default: 2_000 },
  segmentMaxAgeMs: { type: "integer", min: 1, default: 10_000 },
  segmentMaxBytes: { type: "integer", min: 1024, default: 16 * MiB },
  maxBufferBytes: { type: "integer", min: 2048, default: 1024 * MiB },
  whenFull: { type: "choice", choices: ["drop-oldest", "block", "reject"], default: "drop-oldest" },
  maxRecordAgeMs: { type: "integer", min: 0, default: 0 },
  pruneIntervalMs: { type: "integer", min: 1, default: 60_000 },
  fsync: { type: "choice", choices: ["always", "interval", "never"], default: "interval" },
  fsyncIntervalMs: { type: "integer", min: 1, default: 1000 },
  maxRecordBytes: { type: "integer", min: 64, max: 256 * MiB, default: 4 * MiB },
  batchMaxRecords: { type: "integer", min: 1, default: 5000 },
  batchMaxBytes: { type: "integer", min: 1, default: 4 * MiB },
  /** Its default is the provider's `retryWaitMs`, else {@link RETRY_INITIAL_MS}. */
  retryInitialMs: { type: "integer", min: 1 },
  retryMaxMs: { type: "integer", min: 1, default: 30_000 },
  closeTimeoutMs: { type: "integer", min: 0, default: 10_000 },
} as const satisfies Record<string, Spec>;

/** Name of an engine option in {@link ENGINE}. */
export type EngineName = keyof typeof ENGINE;

/** First retry wait when neither the options nor the provider give one. */
export const RETRY_INITIAL_MS = 100;

/** An option that must be at least `factor` times another. */
export interface Relation<N extends string> {
  readonly option: N;
  readonly factor: number;
  readonly other: N;
  /** Why, appended to the message. */
  readonly because?: string;
}

/** Rules between engine options. */
export const ENGINE_RELATIONS: readonly Relation<EngineName>[] = [
  {
    option: "maxBufferBytes",
    factor: 2,
    other: "segmentMaxBytes",
    because: "so that pruning a sealed segment can make room",
  },
  { option: "retryMaxMs", factor: 1, other: "retryInitialMs" },
];

/**
 * Options of `KafkaProvider` (documented on `KafkaProviderOptions`). `sasl.mechanism` is the
 * `mechanism` of the `sasl` option.
 */
export const KAFKA = {
  brokers: { type: "list", format: BROKER_ADDRESS, required: true },
  client: { type: "choice", choices: ["platformatic", "kafkajs"], default: "platformatic" },
  clientId: { type: "text", default: "messagebuffer" },
  compression: {
    type: "choice",
    choices: ["none", "gzip", "snappy", "lz4", "zstd"],
    default: "none",
  },
  requestTimeoutMs: { type: "integer", min: 1, default: 30_000 },
  connectionTimeoutMs: { type: "integer", min: 1, default: 3_000 },
  maxRequestBytes: { type: "integer", min: 1, default: 900_000 },
  maxMessageBytes: { type: "integer", min: 64, default: 1_048_576 },
  autoCreateTopics: { type: "boolean", default: true },
  "sasl.mechanism": { type: "choice", choices: ["plain", "scram-sha-256", "scram-sha-512"] },
} as const satisfies Record<string, Spec>;

/** Name of a Kafka provider option in {@link KAFKA}. */
export type KafkaName = keyof typeof KAFKA;

/** An agent setting that sets an engine option. */
export interface EngineLinked {
  readonly engine: EngineName;
  /** The agent's default where the engine has none (the buffer directory). */
  readonly default?: string;
  readonly unit?: Unit;
  readonly help: string;
}

/** An agent setting that sets a Kafka provider option. */
export interface KafkaLinked {
  readonly kafka: KafkaName;
  readonly unit?: Unit;
  readonly help: string;
}

/** A setting of the agent alone. */
export type AgentOnly = Spec & { readonly unit?: Unit; readonly help: string };

/** One entry of {@link AGENT}. */
export type AgentEntry = EngineLinked | KafkaLinked | AgentOnly;

/** Settings of `messagebuffer run`, by config-file key, in help order. */
export const AGENT = {
  brokers: {
    kafka: "brokers",
    help: "Kafka bootstrap brokers, comma-separated host:port (required)",
  },
  buffer_dir: {
    engine: "dir",
    default: "./messagebuffer-data",
    help: "Directory for segments, S files, dead letters, quarantine",
  },
  allow_unsafe_buffer_dir: {
    type: "boolean",
    default: false,
    help:
      "Use a buffer directory owned by another user, or writable by its group or others (refused otherwise)",
  },
  mode: {
    engine: "mode",
    help:
      "buffer: every record through the disk; direct-until-error: straight to Kafka, on disk while Kafka fails; block-on-error / error-on-error: no disk, a write waits for Kafka / gets Kafka's error",
  },
  direct_max_records: {
    engine: "directMaxRecords",
    help:
      "Direct modes: records waiting for Kafka in memory before buffering (direct-until-error) or refusing lines",
  },
  direct_timeout: {
    engine: "directTimeoutMs",
    unit: "ms",
    help:
      "Direct modes: how long a record may wait for Kafka before it is buffered on disk (direct-until-error) or fails",
  },
  lanes: {
    engine: "lanes",
    help:
      "Delivery lanes: topics are spread over this many, each with its own segments and checkpoints, delivered side by side",
  },
  max_sends_in_flight: {
    engine: "maxSendsInFlight",
    help: "With lanes: Kafka sends in flight at once, across lanes",
  },
  socket: {
    type: "text",
    help: "Unix socket to listen on (default: <buffer_dir>/messagebuffer.sock)",
  },
  socket_mode: {
    type: "text",
    format: OCTAL_MODE,
    default: "0660",
    help: "Permissions of the socket file, octal",
  },
  file_max_time: {
    engine: "segmentMaxAgeMs",
    unit: "s",
    help: "Roll the active segment when its first record is this old",
  },
  file_max_size: {
    engine: "segmentMaxBytes",
    unit: "MB",
    help: "Roll the active segment before it exceeds this size",
  },
  total_size: {
    engine: "maxBufferBytes",
    unit: "MB",
    help: "Cap on all segments together (at least 2 x file_max_size)",
  },
  when_full: {
    engine: "whenFull",
    help: "At the cap: prune oldest segments (counted), stop reading sockets, or refuse lines",
  },
  prune_frequency: {
    engine: "pruneIntervalMs",
    unit: "min",
    help: "How often the cap and max_record_age are checked (also at every roll)",
  },
  max_record_age: {
    engine: "maxRecordAgeMs",
    unit: "s",
    help: "Records older than this are not sent but counted as expired; 0 = keep all",
  },
  fsync: {
    engine: "fsync",
    help:
      "always: ack after fsync; interval: ack once written, fsync periodically; never: leave it to the OS",
  },
  fsync_interval: {
    engine: "fsyncIntervalMs",
    unit: "ms",
    help: "fsync period under --fsync interval",
  },
  max_line_bytes: {
    type: "integer",
    min: 64,
    default: 1_048_576,
    unit: "bytes",
    help: "Longest accepted ingest line; longer ones are refused and skipped",
  },
  max_connections: {
    type: "integer",
    min: 1,
    default: 1024,
    help: "Ingest connections served at once; one more is answered with an error line and closed",
  },
  idle_timeout: {
    type: "integer",
    min: 0,
    default: 600_000,
    unit: "s",
    help:
      "Close an ingest connection that sends nothing this long while none of its lines awaits an answer; 0 = never",
  },
  batch_max_records: {
    engine: "batchMaxRecords",
    help: "Most records per Kafka send (with --kafka-client kafkajs the default is 500)",
  },
  close_timeout: {
    engine: "closeTimeoutMs",
    unit: "s",
    help: "On shutdown, how long to wait for the batch in flight",
  },
  memory_limit: {
    type: "integer",
    min: 0,
    default: 88 * MiB,
    unit: "bytes",
    help:
      "Soft limit on the agent's resident memory: above it, garbage is collected at once and the pages of the executable's file not in use are given back, in at most a tenth of the time (like Go's GOMEMLIMIT; 0 = off). The executable and Bun only",
  },
  kafka_client: {
    kafka: "client",
    help: "Kafka client library: platformatic (@platformatic/kafka, faster) or kafkajs",
  },
  client_id: { kafka: "clientId", help: "Kafka client id" },
  compression: { kafka: "compression", help: "Compression of record batches sent to Kafka" },
  request_timeout: {
    kafka: "requestTimeoutMs",
    unit: "ms",
    help: "How long a broker may take to answer",
  },
  require_existing_topics: {
    type: "boolean",
    default: false,
    help:
      "Never ask the broker to create a topic: records for a topic that does not exist wait on disk, retried, until it is created (default: the broker creates it where auto.create.topics.enable allows)",
  },
  max_message_bytes: {
    kafka: "maxMessageBytes",
    unit: "bytes",
    help: "Records larger than this go to dead letters without being sent",
  },
  tls: { type: "boolean", default: false, help: "Connect to Kafka with TLS" },
  tls_ca_file: {
    type: "text",
    help: "PEM file of CA certificates to trust (implies --tls)",
  },
  tls_cert_file: { type: "text", help: "PEM client certificate for mutual TLS" },
  tls_key_file: { type: "text", help: "PEM client key for mutual TLS" },
  tls_insecure_skip_verify: {
    type: "boolean",
    default: false,
    help: "Do not verify the broker certificate (tests only)",
  },
  sasl_mechanism: { kafka: "sasl.mechanism", help: "SASL mechanism" },
  sasl_username: { type: "text", help: "SASL user name" },
  sasl_password_file: {
    type: "text",
    help: "File holding the SASL password (or set MESSAGEBUFFER_SASL_PASSWORD)",
  },
  metrics: {
    type: "text",
    format: LISTEN_ADDRESS,
    help: "host:port for the HTTP listener with /metrics and /health (off when unset)",
  },
  http: {
    type: "text",
    format: LISTEN_ADDRESS,
    help:
      "host:port for the HTTP input: POST /topics/{topic} (Kafka REST Proxy v2) and POST /records (NDJSON); off when unset. Beyond loopback it needs TLS or --http-allow-remote",
  },
  http_allow_remote: {
    type: "boolean",
    default: false,
    help: "Serve plain HTTP on an address beyond loopback (refused otherwise)",
  },
  http_token_file: {
    type: "text",
    help: "File holding a bearer token every HTTP request must carry (Authorization: Bearer …)",
  },
  http_tls_cert_file: {
    type: "text",
    help: "PEM certificate chain: serve the HTTP input as HTTPS",
  },
  http_tls_key_file: { type: "text", help: "PEM private key of --http-tls-cert-file" },
  http_max_body: {
    type: "integer",
    min: 1024,
    default: 4 * MiB,
    unit: "bytes",
    help: "Largest HTTP request body; larger ones are answered 413",
  },
  http_max_records: {
    type: "integer",
    min: 1,
    default: 10_000,
    help: "Most records in one HTTP request; more are answered 413",
  },
  http_max_requests: {
    type: "integer",
    min: 1,
    default: 64,
    help:
      "HTTP requests served at once; more are answered 429 with Retry-After (the input holds up to this many bodies)",
  },
  http_timeout: {
    type: "integer",
    min: 1,
    default: 30_000,
    unit: "ms",
    help: "How long an HTTP client may take to send its request body (408 after)",
  },
  syslog_socket: {
    type: "text",
    help:
      "Unix datagram socket for syslog messages (like /dev/log; logger -u PATH); off when unset",
  },
  syslog_tcp: {
    type: "text",
    format: LISTEN_ADDRESS,
    help:
      "host:port for syslog over TCP (RFC 6587: octet counting or one message per line); off when unset",
  },
  syslog_topic: {
    type: "text",
    default: "syslog",
    help: "Topic of syslog records, or a template over {facility}, {severity}, {app}, {host}",
  },
  syslog_key: {
    type: "choice",
    choices: ["hostname", "app", "none"],
    default: "hostname",
    help: "Key of syslog records: the message's HOSTNAME, its APP-NAME (tag), or none",
  },
  syslog_value: {
    type: "choice",
    choices: ["json", "raw"],
    default: "json",
    help: "Value of syslog records: the parsed fields as a JSON object, or the message as received",
  },
  log_level: {
    type: "choice",
    choices: ["debug", "info", "warn", "error"],
    default: "info",
    help: "Lowest level logged",
  },
  log_format: {
    type: "choice",
    choices: ["text", "json"],
    default: "text",
    help: "Log line format (to stderr)",
  },
} as const satisfies Record<string, AgentEntry>;

/** A config-file key of {@link AGENT}. */
export type AgentKey = keyof typeof AGENT;

/** The spec an agent entry is checked against: its own, or that of the option it sets. */
export type SpecOf<A> = A extends { engine: infer N extends EngineName } ? (typeof ENGINE)[N]
  : A extends { kafka: infer N extends KafkaName } ? (typeof KAFKA)[N]
  : A;

type HasDefault<A> = A extends { default: unknown } ? true
  : SpecOf<A> extends { default: unknown } ? true
  : false;

type Agent = typeof AGENT;

/**
 * The agent's settings, typed: present when they have a default, optional otherwise. Numbers
 * are in the agent's units (`file_max_time` in seconds).
 */
export type AgentValues =
  & { [K in AgentKey as HasDefault<Agent[K]> extends true ? K : never]: AgentValue<K> }
  & { [K in AgentKey as HasDefault<Agent[K]> extends true ? never : K]?: AgentValue<K> };

type AgentValue<K extends AgentKey> = ValueOf<SpecOf<Agent[K]>>;

type Given<S> = S extends { default: unknown } | { required: true } ? true : false;

/** Resolved values of a table: present when given a default or required. */
export type Resolved<T extends Record<string, Spec>> =
  & { [K in keyof T as Given<T[K]> extends true ? K : never]: ValueOf<T[K]> }
  & { [K in keyof T as Given<T[K]> extends true ? never : K]?: ValueOf<T[K]> };

/** The defaults of a table. */
export type Defaults<T extends Record<string, Spec>> = {
  readonly [K in keyof T as T[K] extends { default: unknown } ? K : never]: ValueOf<T[K]>;
};

/** The defaults of `table`, frozen. */
export function defaultsOf<T extends Record<string, Spec>>(table: T): Defaults<T> {
  const out: Record<string, unknown> = {};
  for (const [name, spec] of Object.entries(table)) {
    if (spec.default !== undefined) out[name] = spec.default;
  }
  return Object.freeze(out) as Defaults<T>;
}

function show(v: unknown): string {
  return JSON.stringify(v) ?? String(v);
}

/**
 * Checks one value for a library caller, throwing a `TypeError` (wrong type, not an allowed
 * value) or `RangeError` (out of range) that starts with `what`, e.g. `Option "fsync"`.
 */
export function checkOption(what: string, spec: Spec, v: unknown): unknown {
  switch (spec.type) {
    case "integer": {
      if (typeof v !== "number" || !Number.isInteger(v)) {
        throw new TypeError(`${what} must be an integer, got ${show(v)}`);
      }
      const max = spec.max ?? Number.MAX_SAFE_INTEGER;
      if (v < spec.min || v > max) {
        throw new RangeError(`${what} must be between ${spec.min} and ${max}, got ${v}`);
      }
      return v;
    }
    case "choice":
      if (typeof v !== "string" || !spec.choices.includes(v)) {
        throw new TypeError(
          `${what} must be one of ${spec.choices.map((c) => `"${c}"`).join(", ")}, got ${show(v)}`,
        );
      }
      return v;
    case "text":
      if (typeof v !== "string" || (spec.format && !spec.format.pattern.test(v))) {
        throw new TypeError(`${what} must be ${spec.format?.name ?? "a string"}`);
      }
      return v;
    case "boolean":
      if (typeof v !== "boolean") throw new TypeError(`${what} must be true or false`);
      return v;
    case "list": {
      const of = spec.format ? ` of "${spec.format.name}"` : " of strings";
      if (!Array.isArray(v) || (spec.required && v.length === 0)) {
        throw new TypeError(`${what} must be a${spec.required ? " non-empty" : ""} list${of}`);
      }
      for (const item of v) {
        if (typeof item !== "string" || (spec.format && !spec.format.pattern.test(item))) {
          throw new TypeError(`${what}: ${show(item)} is not "${spec.format?.name ?? "a string"}"`);
        }
      }
      return v;
    }
  }
}

/**
 * Fills in the defaults of `table` and checks every value of `given` it names, with
 * {@link checkOption}; `label` words an option's name (`Option "fsync"`).
 */
export function resolveTable<T extends Record<string, Spec>>(
  table: T,
  given: Readonly<Record<string, unknown>>,
  label: (name: string) => string,
): Resolved<T> {
  const out: Record<string, unknown> = {};
  for (const [name, spec] of Object.entries(table)) {
    const v = given[name] !== undefined ? given[name] : spec.default;
    if (v !== undefined || ("required" in spec && spec.required)) {
      out[name] = checkOption(label(name), spec, v);
    }
  }
  return out as Resolved<T>;
}

/** True when `values` break `r` (both options being known). */
export function breaks<N extends string>(
  r: Relation<N>,
  values: Readonly<Partial<Record<N, unknown>>>,
): boolean {
  const a = values[r.option];
  const b = values[r.other];
  return typeof a === "number" && typeof b === "number" && a < r.factor * b;
}

/** The message when the cap cannot hold two segments per lane. */
export function lanesRelationMessage(cap: string, segment: string, lanes: string): string {
  return `${cap} must be at least 2 × ${segment} × ${lanes}, so that each lane can prune a sealed segment to make room`;
}

/** The message for a broken relation, given how to name each side (with its value). */
export function relationMessage<N extends string>(
  r: Relation<N>,
  option: string,
  other: string,
): string {
  const rule = r.factor === 1
    ? "must not be below"
    : r.factor === 2
    ? "must be at least twice"
    : `must be at least ${r.factor} times`;
  return `${option} ${rule} ${other}${r.because ? `, ${r.because}` : ""}`;
}

/** `true` when A and B are the same type: for compile-time checks that two lists agree. */
export type Same<A, B> = [A] extends [B] ? [B] extends [A] ? true : false : false;

// The table's allowed values are those of the types that use them.
const _levels: Same<ValueOf<Agent["log_level"]>, LogLevel> = true;
const _formats: Same<ValueOf<Agent["log_format"]>, NonNullable<LoggerOptions["format"]>> = true;
void _levels;
void _formats;
