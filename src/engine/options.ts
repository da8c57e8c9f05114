/**
 * Options of {@link MessageBuffer.open}, their defaults and their validation.
 *
 * @module
 */

import type { FileSystem } from "../fs/types.ts";
import type { Logger } from "../log.ts";
import type { Provider } from "../provider/types.ts";

/** When a write's promise resolves, and how often data is flushed to stable storage. */
export type FsyncPolicy = "always" | "interval" | "never";

/** What a write does when the buffer holds `maxBufferBytes`. */
export type WhenFull = "drop-oldest" | "block" | "reject";

/** Options of {@link MessageBuffer.open}. Sizes are bytes, times are milliseconds. */
export interface MessageBufferOptions {
  /** Buffer directory; created if missing. Holds segments, S files, `dead/`, `quarantine/`. */
  dir: string;
  /** Where records are delivered. */
  provider: Provider;
  /** Filesystem adapter. @default the node:fs one (Deno, Bun, Node) */
  fs?: FileSystem;
  /** Where events go. @default warnings and errors as text on stderr */
  logger?: Logger;
  /** The active segment rolls when its first record is this old (seed: `file_max_time`). @default 10_000 */
  segmentMaxAgeMs?: number;
  /** The active segment rolls before it would exceed this (seed: `file_max_size`). @default 16 MiB */
  segmentMaxBytes?: number;
  /** Cap on all segments together (seed: `total_size`); at least 2 × segmentMaxBytes. @default 1 GiB */
  maxBufferBytes?: number;
  /** At the cap: delete the oldest segments (counted), make writes wait, or fail them. @default "drop-oldest" */
  whenFull?: WhenFull;
  /** Records older than this are not delivered but counted as expired; 0 = no limit. @default 0 */
  maxRecordAgeMs?: number;
  /** How often the cap and the record age limit are checked besides every roll (seed: `prune_frequency`). @default 60_000 */
  pruneIntervalMs?: number;
  /**
   * `"always"`: a write resolves after the fsync that covers it (concurrent writes share it).
   * `"interval"`: a write resolves once the OS has the bytes; fsync every `fsyncIntervalMs`.
   * `"never"`: the OS decides when data reaches the disk.
   * @default "interval"
   */
  fsync?: FsyncPolicy;
  /** fsync period under `fsync: "interval"`. @default 1000 */
  fsyncIntervalMs?: number;
  /** Largest encoded record accepted by `write`. @default 4 MiB */
  maxRecordBytes?: number;
  /** Most records handed to one `Provider.send`. @default 1000 */
  batchMaxRecords?: number;
  /** Most bytes handed to one `Provider.send` (a larger single record goes alone). @default 4 MiB */
  batchMaxBytes?: number;
  /** First wait after a failed send. @default provider.retryWaitMs, else 100 */
  retryInitialMs?: number;
  /** Longest wait between retries (the wait doubles per failure, with jitter). @default 30_000 */
  retryMaxMs?: number;
  /** How long `close()` waits for the batch in flight and the provider to close. @default 10_000 */
  closeTimeoutMs?: number;
}

/** Options with every default filled in. */
export type ResolvedOptions = Required<Omit<MessageBufferOptions, "fs" | "logger">> & {
  fs: FileSystem;
  logger: Logger;
};

export const DEFAULTS = {
  segmentMaxAgeMs: 10_000,
  segmentMaxBytes: 16 * 1024 * 1024,
  maxBufferBytes: 1024 * 1024 * 1024,
  whenFull: "drop-oldest" as WhenFull,
  maxRecordAgeMs: 0,
  pruneIntervalMs: 60_000,
  fsync: "interval" as FsyncPolicy,
  fsyncIntervalMs: 1000,
  maxRecordBytes: 4 * 1024 * 1024,
  batchMaxRecords: 1000,
  batchMaxBytes: 4 * 1024 * 1024,
  retryMaxMs: 30_000,
  closeTimeoutMs: 10_000,
} as const;

function integer(name: string, v: unknown, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof v !== "number" || !Number.isInteger(v)) {
    throw new TypeError(
      `Option "${name}" must be an integer, got ${JSON.stringify(v) ?? String(v)}`,
    );
  }
  if (v < min || v > max) {
    throw new RangeError(`Option "${name}" must be between ${min} and ${max}, got ${v}`);
  }
  return v;
}

function oneOf<T extends string>(name: string, v: unknown, allowed: readonly T[]): T {
  if (!allowed.includes(v as T)) {
    throw new TypeError(
      `Option "${name}" must be one of ${allowed.map((a) => `"${a}"`).join(", ")}, got ${
        JSON.stringify(v)
      }`,
    );
  }
  return v as T;
}

/**
 * Fills in defaults and checks every option, throwing TypeError/RangeError naming the option.
 * `fs` and `logger` are filled by the caller (they choose runtime adapters).
 */
export function resolveOptions(
  o: MessageBufferOptions,
  fs: FileSystem,
  logger: Logger,
): ResolvedOptions {
  if (o === null || typeof o !== "object") {
    throw new TypeError("MessageBuffer.open() needs an options object");
  }
  if (typeof o.dir !== "string" || o.dir === "") {
    throw new TypeError(`Option "dir" must be a non-empty string`);
  }
  const p = o.provider as Partial<Provider> | undefined;
  if (
    !p || typeof p.open !== "function" || typeof p.send !== "function" ||
    typeof p.close !== "function"
  ) {
    throw new TypeError(`Option "provider" must implement open(), send() and close()`);
  }
  const known = new Set([
    "dir",
    "provider",
    "fs",
    "logger",
    ...Object.keys(DEFAULTS),
    "retryInitialMs",
  ]);
  for (const k of Object.keys(o)) {
    if (!known.has(k)) throw new TypeError(`Unknown option "${k}"`);
  }
  const v = { ...DEFAULTS, ...stripUndefined(o) };
  const r: ResolvedOptions = {
    dir: o.dir.replace(/\/+$/, "") || "/",
    provider: o.provider,
    fs,
    logger,
    segmentMaxAgeMs: integer("segmentMaxAgeMs", v.segmentMaxAgeMs, 1),
    segmentMaxBytes: integer("segmentMaxBytes", v.segmentMaxBytes, 1024),
    maxBufferBytes: integer("maxBufferBytes", v.maxBufferBytes, 2048),
    whenFull: oneOf("whenFull", v.whenFull, ["drop-oldest", "block", "reject"]),
    maxRecordAgeMs: integer("maxRecordAgeMs", v.maxRecordAgeMs, 0),
    pruneIntervalMs: integer("pruneIntervalMs", v.pruneIntervalMs, 1),
    fsync: oneOf("fsync", v.fsync, ["always", "interval", "never"]),
    fsyncIntervalMs: integer("fsyncIntervalMs", v.fsyncIntervalMs, 1),
    maxRecordBytes: integer("maxRecordBytes", v.maxRecordBytes, 64, 256 * 1024 * 1024),
    batchMaxRecords: integer("batchMaxRecords", v.batchMaxRecords, 1),
    batchMaxBytes: integer("batchMaxBytes", v.batchMaxBytes, 1),
    retryInitialMs: integer("retryInitialMs", v.retryInitialMs ?? p.retryWaitMs ?? 100, 1),
    retryMaxMs: integer("retryMaxMs", v.retryMaxMs, 1),
    closeTimeoutMs: integer("closeTimeoutMs", v.closeTimeoutMs, 0),
  };
  if (r.maxBufferBytes < 2 * r.segmentMaxBytes) {
    throw new RangeError(
      `Option "maxBufferBytes" (${r.maxBufferBytes}) must be at least twice "segmentMaxBytes" (${r.segmentMaxBytes}), ` +
        `so that pruning a sealed segment can make room`,
    );
  }
  if (r.retryMaxMs < r.retryInitialMs) {
    throw new RangeError(
      `Option "retryMaxMs" (${r.retryMaxMs}) must not be below "retryInitialMs" (${r.retryInitialMs})`,
    );
  }
  return r;
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  const out: Partial<T> = {};
  for (const [k, v] of Object.entries(o)) {
    if (v !== undefined) (out as Record<string, unknown>)[k] = v;
  }
  return out;
}
