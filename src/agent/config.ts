/**
 * The agent's configuration: the agent section of the settings table (`src/settings.ts`)
 * drives the command-line flags, the JSON config file keys, the defaults, `--help` and
 * `--print-config`. A plain number is in the key's unit: `file_max_time` (s),
 * `file_max_size` (MB, that is MiB), `total_size` (MB), `prune_frequency` (min); a string
 * takes a unit (`"5s"`, `"16MiB"`).
 *
 * Precedence: flag > environment (secrets only) > config file > default.
 *
 * @module
 */

import type { MessageBufferOptions } from "../engine/options.ts";
import { closest } from "./flags.ts";
import type { HttpIngestOptions } from "../ingest/http.ts";
import type { SyslogServerOptions } from "../ingest/syslog_server.ts";
import { checkTopicTemplate } from "../ingest/syslog.ts";
import { defaultSocketPath } from "../layout.ts";
import {
  KAFKAJS_CODECS,
  KAFKAJS_SEND_MAX_RECORDS,
  type KafkaProviderOptions,
  type KafkaSaslOptions,
} from "../provider/kafka/options.ts";
import {
  AGENT,
  type AgentEntry,
  type AgentKey,
  type AgentValues,
  breaks,
  ENGINE,
  ENGINE_RELATIONS,
  formatWithUnit,
  isTimeUnit,
  KAFKA,
  lanesRelationMessage,
  parseWithUnit,
  relationMessage,
  type Spec,
  type Unit,
  unitLabel,
  UNITS,
} from "../settings.ts";

/** One setting of `messagebuffer run`, as the agent sees it. */
export interface Setting {
  /** Key in the JSON config file (snake_case). */
  key: AgentKey;
  /** Command-line flag without `--`: the key with `-` for `_`. */
  flag: string;
  /** Type, range and default, in the engine's units (ms, bytes). */
  spec: Spec;
  /** The unit the agent takes the value in, shown in help. */
  unit?: Unit;
  /** Engine units per agent unit (1000 for seconds). */
  scale: number;
  /** The default in the agent's unit. */
  default?: string | number | boolean;
  /** The engine or Kafka provider option this setting sets. */
  sets?: { section: "engine" | "kafka"; option: string };
  help: string;
}

function settingOf(key: AgentKey, e: AgentEntry): Setting {
  const scale = e.unit ? UNITS[e.unit] : 1;
  const spec: Spec = "engine" in e ? ENGINE[e.engine] : "kafka" in e ? KAFKA[e.kafka] : e;
  const fallback = "engine" in e ? e.default : undefined;
  return {
    key,
    flag: key.replace(/_/g, "-"),
    spec,
    unit: e.unit,
    scale,
    default: fallback ?? (typeof spec.default === "number" ? spec.default / scale : spec.default),
    sets: "engine" in e
      ? { section: "engine", option: e.engine }
      : "kafka" in e
      ? { section: "kafka", option: e.kafka }
      : undefined,
    help: e.help,
  };
}

/** Every setting of `messagebuffer run`, in help order. */
export const SETTINGS: readonly Setting[] = (Object.keys(AGENT) as AgentKey[]).map((key) =>
  settingOf(key, AGENT[key])
);

const byKey = new Map<string, Setting>(SETTINGS.map((s) => [s.key, s]));

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
  /** Every setting by config key, in the agent's units; absent when unset without a default. */
  values: AgentValues;
  /** From where each value came. */
  sources: Partial<Record<AgentKey, "flag" | "file" | "default">>;
  /** From {@link SASL_PASSWORD_ENV}. */
  saslPassword?: string;
}

/** A number in the agent's unit, shown as a minimum: rounded up to 4 digits, so it is accepted. */
function shownMin(engineMin: number, scale: number): number {
  const x = engineMin / scale;
  if (x === 0) return 0;
  const r = Number(x.toPrecision(4));
  return r >= x ? r : Number((r + 10 ** (Math.floor(Math.log10(x)) - 3)).toPrecision(4));
}

function coerce(s: Setting, v: unknown, where: string): unknown {
  const spec = s.spec;
  switch (spec.type) {
    case "integer": {
      let n = typeof v === "number"
        ? v
        : typeof v === "string" && v.trim() !== ""
        ? Number(v)
        : NaN;
      if (typeof v === "string" && s.unit && !Number.isFinite(n)) {
        try {
          const engine = parseWithUnit(v, s.unit);
          if (engine !== null) n = engine / s.scale;
        } catch (problem) {
          throw new ConfigError(`${where}: ${problem}, got ${JSON.stringify(v)}`);
        }
      }
      if (!Number.isFinite(n)) {
        throw new ConfigError(
          `${where}: expected a number${s.unit ? ` (${unitLabel(s.unit)})` : ""}${
            s.unit
              ? `, or one with a unit (${
                isTimeUnit(s.unit) ? "500ms, 5s, 2min" : "64KiB, 16MiB, 2GB"
              })`
              : ""
          }, got ${JSON.stringify(v)}`,
        );
      }
      // As given when it came with a unit ("250ms"), else the number.
      const got = typeof v === "string" && !Number.isFinite(Number(v))
        ? JSON.stringify(v)
        : String(n);
      if (n * s.scale < spec.min) {
        throw new ConfigError(
          `${where}: must be at least ${shownMin(spec.min, s.scale)}${
            s.unit ? ` ${unitLabel(s.unit)}` : ""
          }, got ${got}`,
        );
      }
      if (spec.max !== undefined && Math.round(n * s.scale) > spec.max) {
        throw new ConfigError(
          `${where}: must be at most ${spec.max / s.scale}${
            s.unit ? ` ${s.unit}` : ""
          }, got ${got}`,
        );
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
      const items = list.map((x: string) => x.trim()).filter((x: string) => x !== "");
      for (const item of items) {
        if (spec.format && !spec.format.pattern.test(item)) {
          throw new ConfigError(`${where}: "${item}" is not ${spec.format.name}`);
        }
      }
      return items;
    }
    case "choice":
      if (typeof v !== "string" || !spec.choices.includes(v)) {
        throw new ConfigError(
          `${where}: must be one of ${spec.choices.join(", ")}, got ${JSON.stringify(v)}`,
        );
      }
      return v;
    case "text":
      if (typeof v !== "string") {
        throw new ConfigError(`${where}: expected a string, got ${JSON.stringify(v)}`);
      }
      if (spec.format && !spec.format.pattern.test(v)) {
        throw new ConfigError(`${where}: expected ${spec.format.name}, got ${JSON.stringify(v)}`);
      }
      return v;
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
  if (file) {
    if (typeof file !== "object" || Array.isArray(file)) {
      throw new ConfigError("config file: expected a JSON object");
    }
    for (const k of Object.keys(file)) {
      if (!byKey.has(k)) {
        const near = SETTINGS.find((s) =>
          s.key.replace(/_/g, "") === k.replace(/[_-]/g, "").toLowerCase()
        ) ?? byKey.get(closest(k, [...byKey.keys()]) ?? "");
        throw new ConfigError(
          `config file: unknown key "${k}"${near ? ` (did you mean "${near.key}"?)` : ""}`,
        );
      }
    }
  }
  const values: Record<string, unknown> = {};
  const sources: AgentConfig["sources"] = {};
  for (const s of SETTINGS) {
    if (flags[s.flag] !== undefined) {
      values[s.key] = coerce(s, flags[s.flag], `--${s.flag}`);
      sources[s.key] = "flag";
    } else if (file && file[s.key] !== undefined && file[s.key] !== null) {
      values[s.key] = coerce(s, file[s.key], `"${s.key}" in the config file`);
      sources[s.key] = "file";
    } else if (s.default !== undefined) {
      values[s.key] = s.default;
      sources[s.key] = "default";
    }
  }
  // With kafkajs, sends are smaller unless told otherwise (see KAFKAJS_SEND_MAX_RECORDS).
  if (sources.batch_max_records === "default" && values.kafka_client === "kafkajs") {
    values.batch_max_records = KAFKAJS_SEND_MAX_RECORDS;
  }
  // coerce() checked each value against its setting's spec: these are AgentValues.
  const config: AgentConfig = { values: values as AgentValues, sources };
  if (env[SASL_PASSWORD_ENV] !== undefined) config.saslPassword = env[SASL_PASSWORD_ENV];
  validate(config);
  return config;
}

function validate(c: AgentConfig): void {
  for (const r of ENGINE_RELATIONS) {
    const a = SETTINGS.find((s) => s.sets?.section === "engine" && s.sets.option === r.option);
    const b = SETTINGS.find((s) => s.sets?.section === "engine" && s.sets.option === r.other);
    if (!a || !b) continue;
    const shown = (s: Setting) =>
      `--${s.flag} (${c.values[s.key]}${s.unit ? ` ${unitLabel(s.unit)}` : ""})`;
    if (breaks(r, { [r.option]: inEngineUnits(a, c), [r.other]: inEngineUnits(b, c) })) {
      throw new ConfigError(relationMessage(r, shown(a), shown(b)));
    }
  }
  const setting = (option: string) =>
    SETTINGS.find((s) => s.sets?.section === "engine" && s.sets.option === option)!;
  const [cap, seg, lanes] = [
    setting("maxBufferBytes"),
    setting("segmentMaxBytes"),
    setting("lanes"),
  ];
  const shown = (s: Setting) =>
    `--${s.flag} (${c.values[s.key]}${s.unit ? ` ${unitLabel(s.unit)}` : ""})`;
  const n = inEngineUnits(lanes, c) as number;
  if (n > 1 && (inEngineUnits(cap, c) as number) < 2 * (inEngineUnits(seg, c) as number) * n) {
    throw new ConfigError(lanesRelationMessage(shown(cap), shown(seg), shown(lanes)));
  }
  for (
    const [flag, address] of [
      ["metrics", c.values.metrics],
      ["http", c.values.http],
      ["syslog-tcp", c.values.syslog_tcp],
      ...(c.values.brokers ?? []).map((b) => ["brokers", b]),
    ] as const
  ) {
    const port = address === undefined ? 1 : Number(address.slice(address.lastIndexOf(":") + 1));
    if (port < 1 || port > 65535) {
      throw new ConfigError(`--${flag}: port ${port} of "${address}" is not between 1 and 65535`);
    }
  }
  if (c.values.http_tls_cert_file !== undefined && c.values.http_tls_key_file === undefined) {
    throw new ConfigError("--http-tls-cert-file needs --http-tls-key-file");
  }
  if (c.values.http_tls_key_file !== undefined && c.values.http_tls_cert_file === undefined) {
    throw new ConfigError("--http-tls-key-file needs --http-tls-cert-file");
  }
  try {
    checkTopicTemplate(c.values.syslog_topic);
  } catch (message) {
    throw new ConfigError(`--syslog-topic: ${message}`);
  }
  const { kafka_client: client, compression } = c.values;
  if (client === "kafkajs" && !KAFKAJS_CODECS.has(compression)) {
    throw new ConfigError(
      `--compression ${compression} needs --kafka-client platformatic (the default); ` +
        `with kafkajs, use none or gzip`,
    );
  }
  saslLogin(c);
}

/** SASL mechanism and user name, if SASL is on; a mechanism needs a user name. */
function saslLogin(c: AgentConfig): Omit<KafkaSaslOptions, "password"> | undefined {
  const { sasl_mechanism: mechanism, sasl_username: username } = c.values;
  if (mechanism === undefined) return undefined;
  if (username === undefined) throw new ConfigError("--sasl-mechanism needs --sasl-username");
  return { mechanism, username };
}

/** A setting's value as the engine or provider takes it: numbers in ms or bytes, rounded. */
function inEngineUnits(s: Setting, c: AgentConfig): unknown {
  const v = c.values[s.key];
  return typeof v === "number" ? Math.round(v * s.scale) : v;
}

/** The options of one section the settings set (nested ones such as sasl.mechanism aside). */
function optionsOf(section: "engine" | "kafka", c: AgentConfig): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const s of SETTINGS) {
    if (s.sets?.section !== section || s.sets.option.includes(".")) continue;
    const v = inEngineUnits(s, c);
    if (v !== undefined) out[s.sets.option] = v;
  }
  return out;
}

/** The engine options the config describes (provider and logger are added by the caller). */
export function engineOptions(c: AgentConfig): Omit<MessageBufferOptions, "provider"> {
  // Checked by buildConfig against the same table the engine checks them against.
  return optionsOf("engine", c) as Omit<MessageBufferOptions, "provider">;
}

/** Kafka provider options, reading TLS and password files with `readText`. */
export async function providerOptions(
  c: AgentConfig,
  readText: (path: string) => Promise<string>,
): Promise<KafkaProviderOptions> {
  const v = c.values;
  const brokers = v.brokers;
  if (!brokers || brokers.length === 0) {
    throw new ConfigError(
      'no Kafka brokers: pass --brokers host:port (or "brokers" in the config file); scripts/kafka.sh start runs a local broker for trying it out',
    );
  }
  const read = async (flag: string, path: string) => {
    try {
      return await readText(path);
    } catch (e) {
      throw new ConfigError(
        `--${flag}: cannot read "${path}": ${
          (e as { code?: string }).code ?? (e as Error).message
        }`,
      );
    }
  };
  const o: KafkaProviderOptions = {
    // Checked by buildConfig against the same table the provider checks them against.
    ...(optionsOf("kafka", c) as Partial<KafkaProviderOptions>),
    brokers,
  };
  if (v.require_existing_topics) o.autoCreateTopics = false;
  if (v.tls || v.tls_ca_file || v.tls_cert_file || v.tls_key_file || v.tls_insecure_skip_verify) {
    o.tls = {
      ca: v.tls_ca_file ? await read("tls-ca-file", v.tls_ca_file) : undefined,
      cert: v.tls_cert_file ? await read("tls-cert-file", v.tls_cert_file) : undefined,
      key: v.tls_key_file ? await read("tls-key-file", v.tls_key_file) : undefined,
      insecureSkipVerify: v.tls_insecure_skip_verify === true,
    };
  }
  const login = saslLogin(c);
  if (login) {
    let password = c.saslPassword;
    if (password === undefined && v.sasl_password_file) {
      password = (await read("sasl-password-file", v.sasl_password_file)).replace(/\r?\n$/, "");
    }
    if (password === undefined) {
      throw new ConfigError(
        `--sasl-mechanism ${login.mechanism}: no password; set ${SASL_PASSWORD_ENV} or --sasl-password-file`,
      );
    }
    o.sasl = { ...login, password };
  }
  return o;
}

/** What a setting's file could not be read for: a ConfigError naming the flag and the path. */
async function readSettingFile(
  flag: string,
  path: string,
  readText: (path: string) => Promise<string>,
): Promise<string> {
  try {
    return await readText(path);
  } catch (e) {
    throw new ConfigError(
      `--${flag}: cannot read "${path}": ${(e as { code?: string }).code ?? (e as Error).message}`,
    );
  }
}

/** The HTTP input's options, reading its token and TLS files with `readText`; null when off. */
export async function httpOptions(
  c: AgentConfig,
  readText: (path: string) => Promise<string>,
): Promise<Omit<HttpIngestOptions, "buffer" | "logger"> | null> {
  const v = c.values;
  if (v.http === undefined) return null;
  let token: string | null = null;
  if (v.http_token_file !== undefined) {
    token = (await readSettingFile("http-token-file", v.http_token_file, readText)).trim();
    if (token.length === 0) {
      throw new ConfigError(`--http-token-file: "${v.http_token_file}" is empty`);
    }
  }
  const tls = v.http_tls_cert_file !== undefined && v.http_tls_key_file !== undefined
    ? {
      cert: await readSettingFile("http-tls-cert-file", v.http_tls_cert_file, readText),
      key: await readSettingFile("http-tls-key-file", v.http_tls_key_file, readText),
    }
    : null;
  return {
    address: v.http,
    allowRemote: v.http_allow_remote,
    token,
    tls,
    maxBodyBytes: v.http_max_body,
    maxRecords: v.http_max_records,
    maxRequests: v.http_max_requests,
    timeoutMs: v.http_timeout,
  };
}

/** The syslog inputs' options; null when neither is on. */
export function syslogOptions(
  c: AgentConfig,
): Omit<SyslogServerOptions, "buffer" | "logger"> | null {
  const v = c.values;
  if (v.syslog_socket === undefined && v.syslog_tcp === undefined) return null;
  return {
    socket: v.syslog_socket,
    socketMode: Number.parseInt(v.socket_mode, 8),
    tcp: v.syslog_tcp,
    mapping: { topic: v.syslog_topic, key: v.syslog_key, value: v.syslog_value },
    maxMessageBytes: v.max_line_bytes,
    maxConnections: v.max_connections,
    idleTimeoutMs: v.idle_timeout * 1000,
  };
}

/** The socket the agent listens on: `socket`, else `messagebuffer.sock` in the buffer directory. */
export function socketPath(c: AgentConfig): string {
  return c.values.socket ?? defaultSocketPath(c.values.buffer_dir);
}

/** Settings that turn a listener on, shown as null by `--print-config` while off. */
const OFF_UNLESS_SET: ReadonlySet<string> = new Set([
  "metrics",
  "http",
  "syslog_socket",
  "syslog_tcp",
]);

/**
 * The effective config as JSON, with secrets masked, for `run --print-config`: times and
 * sizes with their unit ("10s", "16MiB"), which a config file takes back as they are, and
 * the socket path the agent will use.
 */
export function printableConfig(c: AgentConfig): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const s of SETTINGS) {
    const v = c.values[s.key];
    if (v === undefined) {
      // The inputs that are off, as null: the file a user copies from this shows where to
      // turn them on (a config file takes null as "not set").
      if (OFF_UNLESS_SET.has(s.key)) out[s.key] = null;
      continue;
    }
    out[s.key] = typeof v === "number" && s.unit
      ? formatWithUnit(Math.round(v * s.scale), s.unit)
      : v;
  }
  out.socket = socketPath(c);
  if (c.saslPassword !== undefined) out.sasl_password = "***** (from " + SASL_PASSWORD_ENV + ")";
  return out;
}

/** Help lines for every setting. */
export function settingsHelp(): string {
  return SETTINGS.map((s) => {
    const argOf = s.spec.type === "boolean"
      ? ""
      : s.spec.type === "choice"
      ? ` <${s.spec.choices.join("|")}>`
      : s.spec.type === "integer"
      ? " <n>"
      : s.spec.type === "list"
      ? " <a,b>"
      : " <value>";
    const def = s.default !== undefined && s.default !== false
      ? ` [default: ${
        typeof s.default === "number" && s.unit
          ? formatWithUnit(Math.round(s.default * s.scale), s.unit)
          : s.default
      }]`
      : s.unit
      ? ` (${unitLabel(s.unit)})`
      : "";
    const plain = s.unit && s.spec.type === "integer"
      ? ` (a plain number is in ${unitLabel(s.unit)})`
      : "";
    const arg = s.spec.type === "integer" && s.unit
      ? isTimeUnit(s.unit) ? " <time>" : " <size>"
      : argOf;
    return `  --${s.flag}${arg}\n      ${s.help}${def}${plain}\n      config key: ${s.key}`;
  }).join("\n");
}

/** What the agent was doing when a start failed: the setting that names the thing. */
export type StartPhase =
  | "buffer_dir"
  | "socket"
  | "metrics"
  | "http"
  | "syslog_socket"
  | "syslog_tcp";

const ERRNO_MEANING: Readonly<Record<string, string>> = {
  ENOENT: "a directory on the way does not exist, or cannot hold directories",
  EACCES: "permission denied",
  EPERM: "not permitted",
  EROFS: "the file system is read-only",
  ENOTDIR: "a part of the path is a file, not a directory",
  EEXIST: "a file of that name is in the way (a directory is needed there)",
  EINVAL: "the system refused the value (for an address: is it one of this host's?)",
  ENOSPC: "the disk is full",
  EADDRINUSE: "the address is in use",
  EADDRNOTAVAIL: "no interface has that address",
  ENAMETOOLONG: "the path is too long",
};

const ERRNO_FIX: Readonly<Record<StartPhase, string>> = {
  buffer_dir:
    "choose a directory this user may create or write (the Debian package uses /var/lib/messagebuffer)",
  socket:
    "choose a socket path in a directory this user may write (the Debian package uses /run/messagebuffer/messagebuffer.sock)",
  metrics: "choose another host:port, or stop what listens there",
  http: "choose another host:port, or stop what listens there",
  syslog_socket:
    "choose a path in a directory this user may write, or stop the syslog daemon that holds it",
  syslog_tcp: "choose another host:port, or stop what listens there",
};

/**
 * A start failure, worded for the user: an operating-system error (`code` ENOENT, EACCES,
 * EADDRINUSE...) names the setting, its value, what the code means and a fix; any other error
 * keeps its message (it already names what failed).
 */
export function explainStartError(e: unknown, phase: StartPhase, c: AgentConfig): string {
  const err = e as { code?: unknown; message?: string };
  const message = err?.message ?? String(e);
  const code = typeof err?.code === "string" ? err.code : undefined;
  if (!code || !/^E[A-Z]+$/.test(code)) return message;
  const value = phase === "socket" ? socketPath(c) : String(c.values[phase] ?? "");
  const flag = `--${phase.replace(/_/g, "-")}`;
  const meaning = ERRNO_MEANING[code] ?? "the operating system refused";
  const detail = message.startsWith(code) ? message : `${code}: ${message}`;
  return `${flag} "${value}": ${meaning} (${detail}); ${ERRNO_FIX[phase]}`;
}
