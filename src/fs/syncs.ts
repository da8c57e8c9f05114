/**
 * The fdatasyncs of one open file that may run beside its writes (the ledger's periodic
 * sync under `interval`): its close waits for every one of them, and, if one failed, syncs
 * once more first, so that a failed periodic sync is not lost by a close that follows it.
 *
 * @module
 */

import type { FileHandle } from "./types.ts";

/** See the module doc. */
export class OverlappingSyncs {
  #all: Promise<unknown> = Promise.resolve();
  #failed = false;

  /** fdatasyncs `fh`, noting the sync until it ends. */
  sync(fh: FileHandle): Promise<void> {
    const s = fh.sync();
    // (Resolved to nothing: a result array would hold the one before it, sync after sync.)
    this.#all = Promise.all([this.#all, s.catch(() => (this.#failed = true))]).then(() => {});
    return s;
  }

  /**
   * Resolves once every sync started has ended; `again`, syncs `fh` once more (failures
   * ignored: the file is being left) when one of them failed.
   */
  async ended(fh: FileHandle, again: boolean): Promise<void> {
    await this.#all;
    if (this.#failed && again) await fh.sync().catch(() => {});
    this.#failed = false;
  }
}
