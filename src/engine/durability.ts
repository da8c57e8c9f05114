/**
 * The fsync policy, resolved once into what each part of the engine does about durability.
 *
 * | policy     | write resolves         | active segment fsync | seal, new segment | S files, deletions |
 * | ---------- | ---------------------- | -------------------- | ----------------- | ------------------ |
 * | `always`   | after its fsync        | with every frame     | fsynced           | fsynced at once    |
 * | `interval` | once the OS has it     | every interval       | fsynced           | directory fsynced every interval |
 * | `never`    | once the OS has it     | never                | not fsynced       | not fsynced        |
 *
 * @module
 */

/** When a write's promise resolves, and how often data is flushed to stable storage. */
export type FsyncPolicy = "always" | "interval" | "never";

/** What the engine fsyncs, and when (see the module doc). */
export interface Durability {
  readonly policy: FsyncPolicy;
  /** A write resolves only after the fsync that covers it (group commit). */
  readonly ackAfterSync: boolean;
  /** Period of the background fsync of the active segment and the directory; 0 for none. */
  readonly syncIntervalMs: number;
  /** Sealing a segment fsyncs it; creating one fsyncs its header and directory entry. */
  readonly syncFiles: boolean;
  /** An S file write or a deletion is fsynced (file and directory) before it counts. */
  readonly syncMetadata: boolean;
}

/** The durability that `policy` stands for. */
export function durabilityOf(policy: FsyncPolicy, intervalMs: number): Durability {
  switch (policy) {
    case "always":
      return {
        policy,
        ackAfterSync: true,
        syncIntervalMs: 0,
        syncFiles: true,
        syncMetadata: true,
      };
    case "interval":
      return {
        policy,
        ackAfterSync: false,
        syncIntervalMs: intervalMs,
        syncFiles: true,
        syncMetadata: false,
      };
    case "never":
      return {
        policy,
        ackAfterSync: false,
        syncIntervalMs: 0,
        syncFiles: false,
        syncMetadata: false,
      };
  }
}
