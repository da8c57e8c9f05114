/**
 * The logger interface the engine, provider and agent write to, and two implementations:
 * a line-per-event writer (text or JSON) and a silent one.
 *
 * @module
 */

/**
 * Severity, lowest first.
 *
 * @example Only errors
 * ```ts
 * import { createLogger, type LogLevel } from "./mod.ts";
 * const level: LogLevel = "error";
 * const logger = createLogger({ level });
 * ```
 */
export type LogLevel = "debug" | "info" | "warn" | "error";

const ORDER: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

/**
 * Fields attached to an event.
 *
 * @example Fields of a log line
 * ```ts
 * logger.warn("backlog growing", { records: 120_000, topic: "orders" });
 * ```
 */
export type LogFields = Record<string, unknown>;

/**
 * Where events go.
 *
 * @example Send the engine's events to your logger
 * ```ts
 * import type { Logger } from "./mod.ts";
 * const logger: Logger = {
 *   debug: () => {},
 *   info: (m, f) => console.info(m, f),
 *   warn: (m, f) => console.warn(m, f),
 *   error: (m, f) => console.error(m, f),
 * };
 * ```
 */
export interface Logger {
  /** Detail for troubleshooting (every retry, every connection). */
  debug(message: string, fields?: LogFields): void;
  /** Normal events (start, stop, roll, recovery). */
  info(message: string, fields?: LogFields): void;
  /** Something was dropped, expired, dead-lettered, or is being retried. */
  warn(message: string, fields?: LogFields): void;
  /** Something failed: storage, corruption, a stopped sender. */
  error(message: string, fields?: LogFields): void;
}

/**
 * Options of {@link createLogger}.
 *
 * @example JSON lines from info up
 * ```ts
 * import { createLogger } from "./mod.ts";
 * const logger = createLogger({ level: "info", format: "json" });
 * ```
 */
export interface LoggerOptions {
  /** Lowest level written. @default "info" */
  level?: LogLevel;
  /** `"text"`: `2026-11-29T17:00:00.000Z WARN message key=value`; `"json"`: one object a line. @default "text" */
  format?: "text" | "json";
  /** Receives each finished line (without newline). @default writes to stderr */
  write?: (line: string) => void;
}

/** True when `s` names a level. */
export function isLogLevel(s: unknown): s is LogLevel {
  return typeof s === "string" && s in ORDER;
}

/**
 * A logger that writes one line per event.
 *
 * @example Warnings and errors as JSON on stderr
 * ```ts
 * import { createLogger } from "./log.ts";
 * const log = createLogger({ level: "warn", format: "json" });
 * log.warn("segment dropped", { segment: "0001.seg", records: 10 });
 * ```
 */
export function createLogger(options: LoggerOptions = {}): Logger {
  const min = ORDER[options.level ?? "info"];
  const format = options.format ?? "text";
  const write = options.write ?? ((line: string) => console.error(line));
  const emit = (level: LogLevel, message: string, fields?: LogFields) => {
    if (ORDER[level] < min) return;
    const time = new Date().toISOString();
    if (format === "json") {
      write(JSON.stringify({ time, level, message, ...fields }, jsonSafe));
      return;
    }
    let line = `${time} ${level.toUpperCase()} ${message}`;
    if (fields) {
      for (const [k, v] of Object.entries(fields)) {
        if (v === undefined) continue;
        const s = typeof v === "string" ? v : JSON.stringify(v, jsonSafe);
        line += ` ${k}=${/[\s"=]/.test(s) ? JSON.stringify(s) : s}`;
      }
    }
    write(line);
  };
  return {
    debug: (m, f) => emit("debug", m, f),
    info: (m, f) => emit("info", m, f),
    warn: (m, f) => emit("warn", m, f),
    error: (m, f) => emit("error", m, f),
  };
}

function jsonSafe(_key: string, value: unknown): unknown {
  if (value instanceof Error) return `${value.name}: ${value.message}`;
  if (typeof value === "bigint") return value.toString();
  return value;
}

/**
 * A logger that drops everything.
 *
 * @example A quiet buffer in tests
 * ```ts
 * import { KafkaProvider, MessageBuffer, silentLogger } from "./mod.ts";
 * const buffer = await MessageBuffer.open({
 *   dir: "./buffer",
 *   provider: new KafkaProvider({ brokers: ["127.0.0.1:9092"] }),
 *   logger: silentLogger,
 * });
 * ```
 */
export const silentLogger: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
};
