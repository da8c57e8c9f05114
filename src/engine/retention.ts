/**
 * Retention: the size cap and the record age limit. Under `whenFull: "drop-oldest"` the
 * oldest sealed segments are deleted while the buffer is over `maxBufferBytes`; with
 * `maxRecordAgeMs`, a sealed segment whose newest record is past the limit is deleted
 * whole. Every record deleted unsent is counted (`dropped`, `expired`) and logged with its
 * segment. Checked after every frame and roll and every `pruneIntervalMs`.
 *
 * @module
 */

import type { Logger } from "../log.ts";
import type { Ledger } from "./ledger.ts";

/** What a full buffer does to writes. */
export type WhenFull = "drop-oldest" | "block" | "reject";

/** Settings and hooks of {@link Retention}. */
export interface RetentionOptions {
  ledger: Ledger;
  logger: Logger;
  whenFull: WhenFull;
  maxBufferBytes: number;
  maxRecordAgeMs: number;
  /** Bytes counted against the cap: segment files plus records accepted but not yet written. */
  usedBytes: () => number;
}

/** See the module doc. */
export class Retention {
  readonly #o: RetentionOptions;

  constructor(o: RetentionOptions) {
    this.#o = o;
  }

  /** Under drop-oldest, deletes the oldest sealed segments while over the cap. */
  async pruneIfOverCap(): Promise<void> {
    if (this.#o.whenFull === "drop-oldest" && this.#o.usedBytes() > this.#o.maxBufferBytes) {
      await this.prune("cap");
    }
  }

  /** Deletes expired segments, then (under drop-oldest) the oldest while over the cap. */
  async prune(check: "cap" | "interval"): Promise<void> {
    const { ledger, logger: log, maxRecordAgeMs, maxBufferBytes } = this.#o;
    if (check === "interval") await ledger.retryLeftovers();
    if (maxRecordAgeMs > 0) {
      const limit = Date.now() - maxRecordAgeMs;
      for (const seg of [...ledger.segments]) {
        if (!seg.sealed || seg.gone || seg.newestTimestamp >= limit) continue;
        const lost = await ledger.expired(seg);
        log.warn("deleted a segment whose records are all past maxRecordAgeMs", {
          segment: seg.name,
          records: lost,
        });
      }
    }
    if (this.#o.whenFull !== "drop-oldest") return;
    while (this.#o.usedBytes() > maxBufferBytes) {
      const seg = ledger.segments.find((s) => s.sealed && !s.gone);
      if (!seg) break;
      const used = this.#o.usedBytes();
      const lost = await ledger.pruned(seg);
      log.warn("buffer over maxBufferBytes; dropped the oldest segment", {
        segment: seg.name,
        records: lost.records,
        bytes: lost.bytes,
        usedBytes: used,
        maxBufferBytes,
        check,
      });
    }
  }
}
