/**
 * The logger interface the engine, provider and agent write to, and two implementations:
 * a line-per-event writer (text or JSON) and a silent one.
 *
 * @module
 */

/** Severity, lowest first. */
export type LogLevel = "debug" | "info" | "warn" | "error";

const ORDER: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

/** Fields attached to an event. */
export type LogFields = Record<string, unknown>;

/** Where events go. */
export interface Logger {
  debug(message: string, fields?: LogFields): void;
  info(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  error(message: string, fields?: LogFields): void;
}

/** Options of {@link createLogger}. */
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

/** A logger that drops everything. */
export const silentLogger: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
};
