/**
 * Error classes that callers are expected to catch, each with a stable `code`, an optional
 * `cause` and a `retriable` flag. Bad arguments throw the built-in `TypeError`/`RangeError`.
 *
 * @module
 */

/**
 * Every code a {@link MessageBufferError} can carry.
 *
 * @example Compare codes without importing every class
 * ```ts
 * import { ErrorCodes, MessageBufferError } from "./mod.ts";
 * await buffer.write("t", "v").catch((e) => {
 *   if (e instanceof MessageBufferError && e.code === ErrorCodes.STORAGE) console.error("disk");
 * });
 * ```
 */
export const ErrorCodes = {
  /** The buffer was closed (or is closing); the write was not stored. */
  CLOSED: "MB_CLOSED",
  /** The buffer is at its size cap and `whenFull` is `"reject"`; the write was not stored. */
  FULL: "MB_FULL",
  /** The filesystem refused a write, fsync or rename (ENOSPC, EIO, ...); nothing was stored. */
  STORAGE: "MB_STORAGE",
  /** Another live process holds the buffer directory's lock. */
  LOCKED: "MB_LOCKED",
  /** A mode without disk (`error-on-error`): Kafka did not take the record; it was not kept. */
  DELIVERY: "MB_DELIVERY",
  /**
   * A mode without disk: Kafka had not acknowledged the record in time; it is not kept or sent
   * again by messagebuffer (a send in flight may still have delivered it).
   */
  TIMEOUT: "MB_TIMEOUT",
  /** A mode without disk: Kafka refused the record for good (too large, not authorized). */
  REJECTED: "MB_REJECTED",
} as const;

/**
 * One of the values of {@link ErrorCodes}.
 *
 * @example Switch on the code
 * ```ts
 * import type { ErrorCode } from "./mod.ts";
 * function describe(code: ErrorCode): string {
 *   return code === "MB_FULL" ? "buffer full" : code === "MB_STORAGE" ? "disk error" : code;
 * }
 * ```
 */
export type ErrorCode = typeof ErrorCodes[keyof typeof ErrorCodes];

/**
 * Base class: `code`, `retriable` and (when there is one) `cause`.
 *
 * @example Retry what may pass
 * ```ts
 * import { MessageBufferError } from "./mod.ts";
 * await buffer.write("t", "v").catch((e) => {
 *   if (e instanceof MessageBufferError && e.retriable) return retryLater();
 *   throw e;
 * });
 * ```
 */
export class MessageBufferError extends Error {
  /** Stable machine-readable code, one of {@link ErrorCodes}. */
  readonly code: ErrorCode;
  /** True when the same call may succeed later without any change by the caller. */
  readonly retriable: boolean;

  /** An error with `code`, `message`, and optionally a `cause` and whether it is retriable. */
  constructor(
    code: ErrorCode,
    message: string,
    options: { cause?: unknown; retriable?: boolean } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.retriable = options.retriable ?? false;
  }
}

/**
 * The buffer is closed; nothing more is accepted.
 *
 * @example A write after close
 * ```ts
 * import { BufferClosedError } from "./mod.ts";
 * await buffer.close();
 * await buffer.write("t", "late").catch((e) => console.assert(e instanceof BufferClosedError));
 * ```
 */
export class BufferClosedError extends MessageBufferError {
  /** The buffer at `dir` is closed. */
  constructor(dir: string) {
    super(ErrorCodes.CLOSED, `Buffer "${dir}" is closed; the record was not stored`);
  }
}

/**
 * The buffer reached `maxBufferBytes` and its `whenFull` policy is `"reject"`, or, in a mode
 * without disk, `directMaxRecords` records wait for Kafka.
 *
 * @example Back off at the cap
 * ```ts
 * import { BufferFullError } from "./mod.ts";
 * try {
 *   await buffer.write("events", line);
 * } catch (e) {
 *   if (e instanceof BufferFullError) await new Promise((r) => setTimeout(r, 1000)); // and retry
 *   else throw e;
 * }
 * ```
 */
export class BufferFullError extends MessageBufferError {
  /** `used` of `cap` (in `unit`) are taken at `dir`. */
  constructor(dir: string, used: number, cap: number, unit = "bytes") {
    super(
      ErrorCodes.FULL,
      `Buffer "${dir}" is full (${used} of ${cap} ${unit}); the record was not stored`,
      { retriable: true },
    );
  }
}

/**
 * A filesystem operation failed; the records of the failed write were not stored.
 *
 * @example Tell a full disk from other errors
 * ```ts
 * import { StorageError } from "./mod.ts";
 * await buffer.write("t", "v").catch((e) => {
 *   if (e instanceof StorageError && e.errno === "ENOSPC") console.error("the buffer's disk is full");
 * });
 * ```
 */
export class StorageError extends MessageBufferError {
  /** The underlying errno code, such as `"ENOSPC"` or `"EIO"`, when known. */
  readonly errno: string | undefined;
  /** `operation` on `path` failed with `cause` (its `code` becomes `errno`). */
  constructor(operation: string, path: string, cause: unknown) {
    const errno = (cause as { code?: unknown })?.code;
    const errnoText = typeof errno === "string" ? errno : undefined;
    super(
      ErrorCodes.STORAGE,
      `Cannot ${operation} "${path}": ${errnoText ?? (cause as Error)?.message ?? String(cause)}`,
      { cause, retriable: true },
    );
    this.errno = errnoText;
  }
}

/**
 * The buffer directory is locked by another live process.
 *
 * @example Say who holds the directory
 * ```ts
 * import { LockedError, MessageBuffer } from "./mod.ts";
 * try {
 *   await MessageBuffer.open(options);
 * } catch (e) {
 *   if (e instanceof LockedError) console.error(`in use by pid ${e.holderPid}`);
 *   throw e;
 * }
 * ```
 */
export class LockedError extends MessageBufferError {
  /** The pid written in the lock file by the holder. */
  readonly holderPid: number;
  /** `dir` is locked by the live process `holderPid`. */
  constructor(dir: string, holderPid: number) {
    super(
      ErrorCodes.LOCKED,
      `Buffer directory "${dir}" is in use by process ${holderPid} (lock file "${dir}/LOCK")`,
    );
    this.holderPid = holderPid;
  }
}

/**
 * Mode `error-on-error`: the send that held the record failed; Kafka may or may not have it
 * (a failed send can have reached the broker). `cause` is the provider's error.
 *
 * @example Fall back when Kafka fails (mode error-on-error)
 * ```ts
 * import { DeliveryError } from "./mod.ts";
 * await buffer.write("events", line).catch((e) => {
 *   if (e instanceof DeliveryError) return writeToFallback(line);
 *   throw e;
 * });
 * ```
 */
export class DeliveryError extends MessageBufferError {
  /** A record of `topic` failed with the provider's error `cause`. */
  constructor(topic: string, cause: unknown) {
    super(
      ErrorCodes.DELIVERY,
      `Kafka did not acknowledge a record for topic "${topic}": ${describeCause(cause)}`,
      { cause, retriable: true },
    );
  }
}

/**
 * Modes without disk: Kafka had not acknowledged the record `directTimeoutMs` after the write
 * (`block-on-error`: after retries; `error-on-error`: a send that did not answer). It is not
 * sent again; a send still in flight may deliver it. `cause` is the last send error, if any.
 *
 * @example Tell the caller Kafka was too slow (mode block-on-error)
 * ```ts
 * import { DeliveryTimeoutError } from "./mod.ts";
 * await buffer.write("events", line).catch((e) => {
 *   if (e instanceof DeliveryTimeoutError) console.warn(e.message);
 *   else throw e;
 * });
 * ```
 */
export class DeliveryTimeoutError extends MessageBufferError {
  /** A record of `topic` was not acknowledged within `timeoutMs`; `cause`: the last error. */
  constructor(topic: string, timeoutMs: number, cause: unknown) {
    super(
      ErrorCodes.TIMEOUT,
      `Kafka did not acknowledge a record for topic "${topic}" within ${timeoutMs} ms` +
        (cause === undefined
          ? "; no send had failed yet (Kafka slow to answer, or still connecting)"
          : `; last error: ${describeCause(cause)}`),
      { cause, retriable: true },
    );
  }
}

/**
 * A mode without disk: Kafka refused the record for good; `reason` is the broker's.
 *
 * @example Log Kafka's reason
 * ```ts
 * import { RecordRejectedError } from "./mod.ts";
 * await buffer.write("t", huge).catch((e) => {
 *   if (e instanceof RecordRejectedError) console.error(`refused: ${e.reason}`);
 * });
 * ```
 */
export class RecordRejectedError extends MessageBufferError {
  /** Why, as the provider gave it, e.g. `"MESSAGE_TOO_LARGE: ..."`. */
  readonly reason: string;
  /** A record of `topic` was refused for `reason`. */
  constructor(topic: string, reason: string) {
    super(ErrorCodes.REJECTED, `Kafka refused a record for topic "${topic}": ${reason}`);
    this.reason = reason;
  }
}

function describeCause(e: unknown): string {
  return e instanceof Error ? `${e.name}: ${e.message}` : String(e);
}
