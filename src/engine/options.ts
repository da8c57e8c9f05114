/**
 * Options of {@link MessageBuffer.open}. Their types, ranges and defaults are the engine section
 * of the settings table (`src/settings.ts`); this file documents them and checks them.
 *
 * @module
 */

import type { FileSystem } from "../fs/types.ts";
import type { Logger } from "../log.ts";
import type { Provider } from "../provider/types.ts";
import {
  breaks,
  checkOption,
  type Defaults,
  defaultsOf,
  ENGINE,
  ENGINE_RELATIONS,
  lanesRelationMessage,
  relationMessage,
  resolveTable,
  RETRY_INITIAL_MS,
  type Same,
  type ValueOf,
} from "../settings.ts";

/**
 * When a write's promise resolves, and how often data is flushed to stable storage.
 *
 * @example Durable acknowledgements
 * ```ts
 * import type { FsyncPolicy } from "./mod.ts";
 * const fsync: FsyncPolicy = "always"; // a write resolves after the fsync that covers it
 * ```
 */
export type FsyncPolicy = "always" | "interval" | "never";

/**
 * How records reach the provider: through the disk, directly, or directly with a fallback.
 *
 * @example Straight to Kafka, with the disk as a safety net
 * ```ts
 * import { KafkaProvider, MessageBuffer } from "./mod.ts";
 * const buffer = await MessageBuffer.open({
 *   dir: "./buffer",
 *   mode: "direct-until-error",
 *   provider: new KafkaProvider({ brokers: ["127.0.0.1:9092"] }),
 * });
 * ```
 */
export type Mode = "buffer" | "direct-until-error" | "block-on-error" | "error-on-error";

/**
 * What a write does when the buffer holds `maxBufferBytes`.
 *
 * @example Refuse writes at the cap
 * ```ts
 * import type { WhenFull } from "./mod.ts";
 * const whenFull: WhenFull = "reject"; // writes past the cap fail with BufferFullError
 * ```
 */
export type WhenFull = "drop-oldest" | "block" | "reject";

// The names above are those of the settings table.
const _sameNames: [
  Same<FsyncPolicy, ValueOf<typeof ENGINE.fsync>>,
  Same<Mode, ValueOf<typeof ENGINE.mode>>,
  Same<WhenFull, ValueOf<typeof ENGINE.whenFull>>,
] = [true, true, true];
void _sameNames;

/**
 * Options of {@link MessageBuffer.open}. Sizes are bytes, times are milliseconds.
 *
 * @example A buffer with a 10 GiB cap that waits when full
 * ```ts
 * import { KafkaProvider, MessageBuffer, type MessageBufferOptions } from "./mod.ts";
 * const options: MessageBufferOptions = {
 *   dir: "/var/lib/myapp/buffer",
 *   provider: new KafkaProvider({ brokers: ["kafka-1:9092", "kafka-2:9092"] }),
 *   maxBufferBytes: 10 * 2 ** 30,
 *   whenFull: "block",
 * };
 * const buffer = await MessageBuffer.open(options);
 * ```
 */
export interface MessageBufferOptions {
  /**
   * Buffer directory; created if missing. Holds segments, S files, `dead/`, `quarantine/`.
   * Not used (and may be left out) in the modes without disk. On the default filesystem
   * what the buffer creates is owner-only (directories 0700, files 0600). Unlike the agent,
   * `open` does not refuse a directory that another user owns or may write to: the caller
   * chose it.
   */
  dir?: string;
  /**
   * How records reach the provider (README, "Delivery modes"):
   * - `"buffer"`: every record is stored in the segment files first; a write resolves once
   *   stored (under the `fsync` policy), and the sender delivers in the background.
   * - `"direct-until-error"`: records go straight to the provider, and a write resolves once
   *   Kafka acknowledged it. At the first error, refusal, a send slower than
   *   `directTimeoutMs`, or `directMaxRecords` records waiting, the waiting records and every
   *   later write go to the segment files (a write then resolves once stored), until that
   *   backlog is delivered; then writes go direct again. Order holds across both switches.
   * - `"block-on-error"`: no disk. A write resolves once Kafka acknowledged it; failed sends
   *   are retried until `directTimeoutMs` after the write, which then fails with
   *   `DeliveryTimeoutError`.
   * - `"error-on-error"`: no disk. A failed send fails its writes with `DeliveryError`.
   * @default "buffer"
   */
  mode?: Mode;
  /**
   * Delivery lanes: topics are spread over this many lanes, each with its own segments,
   * checkpoints and sender, delivered side by side, so that a topic whose sends fail or are
   * slow holds up only the topics of its lane. A topic stays in its lane for good (README,
   * "Lanes"). Each lane may hold `maxBufferBytes / lanes`. @default 1
   */
  lanes?: number;
  /** With lanes: sends in flight at once, across lanes. @default 4 */
  maxSendsInFlight?: number;
  /**
   * Direct modes: records waiting for Kafka in memory. Past it, `direct-until-error`
   * buffers on disk and the modes without disk refuse writes with `BufferFullError`.
   * @default 10_000
   */
  directMaxRecords?: number;
  /**
   * Direct modes: how long a write waits for Kafka's acknowledgement before
   * `direct-until-error` buffers it on disk, or the modes without disk fail it with
   * `DeliveryTimeoutError`. @default 2000
   */
  directTimeoutMs?: number;
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
  /** Most records handed to one `Provider.send`. @default provider.sendMaxRecords, else 5000 */
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

/**
 * The default of every option that has one (from the table in `src/settings.ts`).
 *
 * @example Read a default
 * ```ts
 * import { DEFAULTS } from "./options.ts";
 * console.log(DEFAULTS.segmentMaxBytes); // 16777216
 * ```
 */
export const DEFAULTS: EngineDefaults = defaultsOf(ENGINE);

/**
 * The type of {@link DEFAULTS}: every option that has a default, with it.
 *
 * @example Half the default cap
 * ```ts
 * import { DEFAULTS } from "./mod.ts";
 * const maxBufferBytes = DEFAULTS.maxBufferBytes / 2;
 * ```
 */
export type EngineDefaults = Readonly<
  Required<Omit<MessageBufferOptions, "dir" | "provider" | "fs" | "logger" | "retryInitialMs">>
>;

const _sameDefaults: Same<EngineDefaults, Defaults<typeof ENGINE>> = true;
void _sameDefaults;

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
  const option = (name: string) => `Option "${name}"`;
  const noDisk = o.mode === "block-on-error" || o.mode === "error-on-error";
  if (!noDisk || o.dir !== undefined) checkOption(option("dir"), ENGINE.dir, o.dir);
  const p = o.provider as Partial<Provider> | undefined;
  if (
    !p || typeof p.open !== "function" || typeof p.send !== "function" ||
    typeof p.close !== "function"
  ) {
    throw new TypeError(`Option "provider" must implement open(), send() and close()`);
  }
  const hint = p.sendMaxRecords;
  if (hint !== undefined && !(Number.isInteger(hint) && hint >= 1)) {
    throw new TypeError(
      `Provider "${p.name}": sendMaxRecords must be a whole number of at least 1, not ${hint}`,
    );
  }
  for (const k of Object.keys(o)) {
    if (!(k in ENGINE) && k !== "provider" && k !== "fs" && k !== "logger") {
      throw new TypeError(`Unknown option "${k}"`);
    }
  }
  const v = resolveTable(ENGINE, {
    ...o,
    dir: o.dir ?? (noDisk ? "(no disk)" : undefined),
    retryInitialMs: o.retryInitialMs ?? p.retryWaitMs ?? RETRY_INITIAL_MS,
    batchMaxRecords: o.batchMaxRecords ?? p.sendMaxRecords,
  }, option);
  const r: ResolvedOptions = {
    ...v,
    retryInitialMs: v.retryInitialMs ?? RETRY_INITIAL_MS,
    dir: v.dir.replace(/\/+$/, "") || "/",
    provider: o.provider,
    fs,
    logger,
  };
  for (const rel of ENGINE_RELATIONS) {
    if (breaks(rel, r)) {
      throw new RangeError(relationMessage(
        rel,
        `${option(rel.option)} (${r[rel.option]})`,
        `"${rel.other}" (${r[rel.other]})`,
      ));
    }
  }
  if (r.lanes > 1 && r.maxBufferBytes < 2 * r.segmentMaxBytes * r.lanes) {
    throw new RangeError(lanesRelationMessage(
      `Option "maxBufferBytes" (${r.maxBufferBytes})`,
      `"segmentMaxBytes" (${r.segmentMaxBytes})`,
      `"lanes" (${r.lanes})`,
    ));
  }
  return r;
}

// The table and the documented options agree: same names, same value types.
const _sameOptions: Same<
  Required<Omit<MessageBufferOptions, "provider" | "fs" | "logger">>,
  { [K in keyof typeof ENGINE]: ValueOf<(typeof ENGINE)[K]> }
> = true;
void _sameOptions;
