/**
 * The agent's configuration: one table of settings drives the command-line flags, the JSON
 * config file keys, the defaults, `--help` and `--print-config`. The seed's keys keep their
 * meaning and units: `file_max_time` (s), `file_max_size` (MB), `total_size` (MB),
 * `buffer_dir`, `prune_frequency` (min).
 *
 * Precedence: flag > environment (secrets only) > config file > default.
 *
 * @module
 */

import type { FsyncPolicy, MessageBufferOptions, WhenFull } from "../engine/options.ts";
import type { KafkaProviderOptions } from "../provider/kafka/kafka.ts";
import { isLogLevel, type LogLevel } from "../log.ts";

type Kind = "string" | "number" | "boolean" | "list";

/** One setting. */
export interface Setting {
  /** Key in the JSON config file (snake_case, the seed's names where it had one). */
  key: string;
  /** Command-line flag without `--`. */
  flag: string;
  kind: Kind;
  default?: string | number | boolean | string[];
  /** Unit shown in help. */
  unit?: string;
  /** Allowed values for a string. */
  choices?: readonly string[];
  /** Smallest allowed number. */
  min?: number;
  /** Masked by --print-config. */
  secret?: boolean;
  help: string;
}

/** Every setting of `messagebuffer run`, in help order. */
export const SETTINGS: readonly Setting[] = [
  {
    key: "brokers",
    flag: "brokers",
    kind: "list",
    help: "Kafka bootstrap brokers, comma-separated host:port (required)",
  },
  {
    key: "buffer_dir",
    flag: "buffer-dir",
    kind: "string",
    default: "./messagebuffer-data",
    help: "Directory for segments, S files, dead letters, quarantine",
  },
  {
    key: "socket",
    flag: "socket",
    kind: "string",
    help: "Unix socket to listen on (default: <buffer_dir>/messagebuffer.sock)",
  },
  {
    key: "socket_mode",
    flag: "socket-mode",
    kind: "string",
    default: "0660",
    help: "Permissions of the socket file, octal",
  },
  {
    key: "file_max_time",
    flag: "file-max-time",
    kind: "number",
    default: 10,
    unit: "s",
    min: 0.001,
    help: "Roll the active segment when its first record is this old",
  },
  {
    key: "file_max_size",
    flag: "file-max-size",
    kind: "number",
    default: 16,
    unit: "MB",
    min: 0.001,
    help: "Roll the active segment before it exceeds this size",
  },
  {
    key: "total_size",
    flag: "total-size",
    kind: "number",
    default: 1024,
    unit: "MB",
    min: 0.002,
    help: "Cap on all segments together (at least 2 x file_max_size)",
  },
  {
    key: "when_full",
    flag: "when-full",
    kind: "string",
    default: "drop-oldest",
    choices: ["drop-oldest", "block", "reject"],
    help: "At the cap: prune oldest segments (counted), stop reading sockets, or refuse lines",
  },
  {
    key: "prune_frequency",
    flag: "prune-frequency",
    kind: "number",
    default: 1,
    unit: "min",
    min: 0.001,
    help: "How often the cap and max_record_age are checked (also at every roll)",
  },
  {
    key: "max_record_age",
    flag: "max-record-age",
    kind: "number",
    default: 0,
    unit: "s",
    min: 0,
    help: "Records older than this are not sent but counted as expired; 0 = keep all",
  },
  {
    key: "fsync",
    flag: "fsync",
    kind: "string",
    default: "interval",
    choices: ["always", "interval", "never"],
    help:
      "always: ack after fsync; interval: ack once written, fsync periodically; never: leave it to the OS",
  },
  {
    key: "fsync_interval",
    flag: "fsync-interval",
    kind: "number",
    default: 1000,
    unit: "ms",
    min: 1,
    help: "fsync period under --fsync interval",
  },
  {
    key: "max_line_bytes",
    flag: "max-line-bytes",
    kind: "number",
    default: 1048576,
    unit: "bytes",
    min: 64,
    help: "Longest accepted ingest line; longer ones are refused and skipped",
  },
  {
    key: "batch_max_records",
    flag: "batch-max-records",
    kind: "number",
    default: 1000,
    min: 1,
    help: "Most records per Kafka send",
  },
  {
    key: "close_timeout",
    flag: "close-timeout",
    kind: "number",
    default: 10,
    unit: "s",
    min: 0,
    help: "On shutdown, how long to wait for the batch in flight",
  },
  {
    key: "client_id",
    flag: "client-id",
    kind: "string",
    default: "messagebuffer",
    help: "Kafka client id",
  },
  {
    key: "compression",
    flag: "compression",
    kind: "string",
    default: "none",
    choices: ["none", "gzip"],
    help: "Compression of record batches sent to Kafka",
  },
  {
    key: "request_timeout",
    flag: "request-timeout",
    kind: "number",
    default: 30000,
    unit: "ms",
    min: 1,
    help: "How long a broker may take to answer",
  },
  {
    key: "max_message_bytes",
    flag: "max-message-bytes",
    kind: "number",
    default: 1048576,
    unit: "bytes",
    min: 64,
    help: "Records larger than this go to dead letters without being sent",
  },
  { key: "tls", flag: "tls", kind: "boolean", default: false, help: "Connect to Kafka with TLS" },
  {
    key: "tls_ca_file",
    flag: "tls-ca-file",
    kind: "string",
    help: "PEM file of CA certificates to trust (implies --tls)",
  },
  {
    key: "tls_cert_file",
    flag: "tls-cert-file",
    kind: "string",
    help: "PEM client certificate for mutual TLS",
  },
  {
    key: "tls_key_file",
    flag: "tls-key-file",
    kind: "string",
    help: "PEM client key for mutual TLS",
  },
  {
    key: "tls_insecure_skip_verify",
    flag: "tls-insecure-skip-verify",
    kind: "boolean",
    default: false,
    help: "Do not verify the broker certificate (tests only)",
  },
  {
    key: "sasl_mechanism",
    flag: "sasl-mechanism",
    kind: "string",
    choices: ["plain", "scram-sha-256", "scram-sha-512"],
    help: "SASL mechanism",
  },
  { key: "sasl_username", flag: "sasl-username", kind: "string", help: "SASL user name" },
  {
    key: "sasl_password_file",
    flag: "sasl-password-file",
    kind: "string",
    secret: false,
    help: "File holding the SASL password (or set MESSAGEBUFFER_SASL_PASSWORD)",
  },
  {
    key: "metrics",
    flag: "metrics",
    kind: "string",
    help: "host:port for the HTTP listener with /metrics and /health (off when unset)",
  },
  {
    key: "log_level",
    flag: "log-level",
    kind: "string",
    default: "info",
    choices: ["debug", "info", "warn", "error"],
    help: "Lowest level logged",
  },
  {
    key: "log_format",
    flag: "log-format",
    kind: "string",
    default: "text",
    choices: ["text", "json"],
    help: "Log line format (to stderr)",
  },
];

/** Environment variable holding the SASL password (never logged, masked in --print-config). */
export const SASL_PASSWORD_ENV = "MESSAGEBUFFER_SASL_PASSWORD";

/** A setting failed validation; the message names the flag/key and the reason. */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

/** Raw values as given, keyed by setting key. */
export type RawConfig = Record<string, unknown>;

/** The agent's effective configuration. */
export interface AgentConfig {
  values: Record<string, string | number | boolean | string[] | undefined>;
  /** From where each value came: "flag", "file", "env" or "default". */
  sources: Record<string, string>;
  saslPassword?: string;
}

function coerce(s: Setting, v: unknown, from: string): string | number | boolean | string[] {
  const where = from === "flag" ? `--${s.flag}` : `"${s.key}" in the config file`;
  switch (s.kind) {
    case "number": {
      const n = typeof v === "number"
        ? v
        : typeof v === "string" && v.trim() !== ""
        ? Number(v)
        : NaN;
      if (!Number.isFinite(n)) {
        throw new ConfigError(
          `${where}: expected a number${s.unit ? ` (${s.unit})` : ""}, got ${JSON.stringify(v)}`,
        );
      }
      if (s.min !== undefined && n < s.min) {
        throw new ConfigError(`${where}: must be at least ${s.min}, got ${n}`);
      }
      return n;
    }
    case "boolean":
      if (typeof v === "boolean") return v;
      if (v === "true" || v === "1") return true;
      if (v === "false" || v === "0") return false;
      throw new ConfigError(`${where}: expected true or false, got ${JSON.stringify(v)}`);
    case "list": {
      const list = Array.isArray(v) ? v : typeof v === "string" ? v.split(",") : null;
      if (!list || list.some((x) => typeof x !== "string")) {
        throw new ConfigError(`${where}: expected a list of strings, got ${JSON.stringify(v)}`);
      }
      return list.map((x: string) => x.trim()).filter((x: string) => x !== "");
    }
    default: {
      if (typeof v !== "string") {
        throw new ConfigError(`${where}: expected a string, got ${JSON.stringify(v)}`);
      }
      if (s.choices && !s.choices.includes(v)) {
        throw new ConfigError(
          `${where}: must be one of ${s.choices.join(", ")}, got ${JSON.stringify(v)}`,
        );
      }
      return v;
    }
  }
}

/**
 * Merges flags (already parsed, keyed by flag name), the config file's object and the
 * environment into an {@link AgentConfig}. Throws {@link ConfigError} naming the bad input.
 */
export function buildConfig(
  flags: Record<string, unknown>,
  file: RawConfig | null,
  env: Record<string, string | undefined>,
): AgentConfig {
  const byKey = new Map(SETTINGS.map((s) => [s.key, s]));
  if (file) {
    if (typeof file !== "object" || Array.isArray(file)) {
      throw new ConfigError("config file: expected a JSON object");
    }
    for (const k of Object.keys(file)) {
      if (!byKey.has(k)) {
        const near = SETTINGS.find((s) =>
          s.key.replace(/_/g, "") === k.replace(/[_-]/g, "").toLowerCase()
        );
        throw new ConfigError(
          `config file: unknown key "${k}"${near ? ` (did you mean "${near.key}"?)` : ""}`,
        );
      }
    }
  }
  const values: AgentConfig["values"] = {};
  const sources: Record<string, string> = {};
  for (const s of SETTINGS) {
    if (flags[s.flag] !== undefined) {
      values[s.key] = coerce(s, flags[s.flag], "flag");
      sources[s.key] = "flag";
    } else if (file && file[s.key] !== undefined && file[s.key] !== null) {
      values[s.key] = coerce(s, file[s.key], "file");
      sources[s.key] = "file";
    } else if (s.default !== undefined) {
      values[s.key] = s.default;
      sources[s.key] = "default";
    }
  }
  const config: AgentConfig = { values, sources };
  if (env[SASL_PASSWORD_ENV] !== undefined) config.saslPassword = env[SASL_PASSWORD_ENV];
  validate(config);
  return config;
}

function validate(c: AgentConfig): void {
  const v = c.values;
  const mode = String(v.socket_mode);
  if (!/^0?[0-7]{3}$/.test(mode)) {
    throw new ConfigError(`--socket-mode: expected octal permissions like 0660, got "${mode}"`);
  }
  if ((v.total_size as number) < 2 * (v.file_max_size as number)) {
    throw new ConfigError(
      `--total-size (${v.total_size} MB) must be at least twice --file-max-size (${v.file_max_size} MB), so that pruning a sealed segment makes room`,
    );
  }
  if (v.metrics !== undefined && !/^[^\s]*:\d{1,5}$/.test(String(v.metrics))) {
    throw new ConfigError(
      `--metrics: expected host:port (e.g. 127.0.0.1:9464), got "${v.metrics}"`,
    );
  }
  for (const b of (v.brokers as string[] | undefined) ?? []) {
    if (!/^[^\s:]+:\d{1,5}$/.test(b)) throw new ConfigError(`--brokers: "${b}" is not host:port`);
  }
  if (v.sasl_mechanism !== undefined && v.sasl_username === undefined) {
    throw new ConfigError("--sasl-mechanism needs --sasl-username");
  }
  if (!isLogLevel(v.log_level)) throw new ConfigError(`--log-level: unknown level ${v.log_level}`);
}

/** The engine options the config describes (provider and logger are added by the caller). */
export function engineOptions(c: AgentConfig): Omit<MessageBufferOptions, "provider"> {
  const v = c.values;
  const MB = 1024 * 1024;
  return {
    dir: v.buffer_dir as string,
    segmentMaxAgeMs: Math.round((v.file_max_time as number) * 1000),
    segmentMaxBytes: Math.round((v.file_max_size as number) * MB),
    maxBufferBytes: Math.round((v.total_size as number) * MB),
    whenFull: v.when_full as WhenFull,
    pruneIntervalMs: Math.round((v.prune_frequency as number) * 60_000),
    maxRecordAgeMs: Math.round((v.max_record_age as number) * 1000),
    fsync: v.fsync as FsyncPolicy,
    fsyncIntervalMs: Math.round(v.fsync_interval as number),
    batchMaxRecords: Math.round(v.batch_max_records as number),
    closeTimeoutMs: Math.round((v.close_timeout as number) * 1000),
  };
}

/** Kafka provider options, reading TLS and password files with `readText`. */
export async function providerOptions(
  c: AgentConfig,
  readText: (path: string) => Promise<string>,
): Promise<KafkaProviderOptions> {
  const v = c.values;
  const brokers = v.brokers as string[] | undefined;
  if (!brokers || brokers.length === 0) {
    throw new ConfigError(
      'no Kafka brokers: pass --brokers host:port (or "brokers" in the config file); scripts/kafka.sh start runs a local broker for trying it out',
    );
  }
  const read = async (flag: string, path: unknown) => {
    try {
      return await readText(String(path));
    } catch (e) {
      throw new ConfigError(
        `--${flag}: cannot read "${path}": ${
          (e as { code?: string }).code ?? (e as Error).message
        }`,
      );
    }
  };
  const o: KafkaProviderOptions = {
    brokers,
    clientId: v.client_id as string,
    compression: v.compression as "none" | "gzip",
    requestTimeoutMs: v.request_timeout as number,
    maxMessageBytes: v.max_message_bytes as number,
  };
  if (v.tls || v.tls_ca_file || v.tls_cert_file || v.tls_key_file || v.tls_insecure_skip_verify) {
    o.tls = {
      ca: v.tls_ca_file ? await read("tls-ca-file", v.tls_ca_file) : undefined,
      cert: v.tls_cert_file ? await read("tls-cert-file", v.tls_cert_file) : undefined,
      key: v.tls_key_file ? await read("tls-key-file", v.tls_key_file) : undefined,
      insecureSkipVerify: v.tls_insecure_skip_verify === true,
    };
  }
  if (v.sasl_mechanism) {
    let password = c.saslPassword;
    if (password === undefined && v.sasl_password_file) {
      password = (await read("sasl-password-file", v.sasl_password_file)).replace(/\r?\n$/, "");
    }
    if (password === undefined) {
      throw new ConfigError(
        `--sasl-mechanism ${v.sasl_mechanism}: no password; set ${SASL_PASSWORD_ENV} or --sasl-password-file`,
      );
    }
    o.sasl = {
      mechanism: v.sasl_mechanism as "plain" | "scram-sha-256" | "scram-sha-512",
      username: v.sasl_username as string,
      password,
    };
  }
  return o;
}

/** The effective config as JSON, with secrets masked, for `run --print-config`. */
export function printableConfig(c: AgentConfig): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const s of SETTINGS) {
    if (c.values[s.key] !== undefined) out[s.key] = c.values[s.key];
  }
  if (c.saslPassword !== undefined) out.sasl_password = "***** (from " + SASL_PASSWORD_ENV + ")";
  return out;
}

/** Help lines for every setting. */
export function settingsHelp(): string {
  return SETTINGS.map((s) => {
    const arg = s.kind === "boolean"
      ? ""
      : s.choices
      ? ` <${s.choices.join("|")}>`
      : s.kind === "number"
      ? " <n>"
      : s.kind === "list"
      ? " <a,b>"
      : " <value>";
    const def = s.default !== undefined && s.default !== false
      ? ` [default: ${s.default}${s.unit ? " " + s.unit : ""}]`
      : s.unit
      ? ` (${s.unit})`
      : "";
    return `  --${s.flag}${arg}\n      ${s.help}${def}\n      config key: ${s.key}`;
  }).join("\n");
}

/** Log level of a config. */
export function logLevelOf(c: AgentConfig): LogLevel {
  return c.values.log_level as LogLevel;
}
