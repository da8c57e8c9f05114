// Test helpers: a provider that records what it was sent and fails on demand, temp dirs.
// A fake provider is for engine unit tests only; delivery to Kafka is proven against a real
// broker in tests/provider/.

import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Provider, ProviderRecord, SendResult } from "../src/provider/types.ts";

/** A copy of a delivered record. */
export interface Received {
  topic: string;
  key: string | null;
  value: Uint8Array;
  headers: Array<[string, Uint8Array]>;
  timestamp: number;
}

const dec = new TextDecoder();

/** Records every batch; can be made to fail, hang or reject records. */
export class RecordingProvider implements Provider {
  readonly name = "recording";
  readonly retryWaitMs = 1;
  received: Received[] = [];
  sends = 0;
  opens = 0;
  /** While true, open() and send() throw (a broker outage). */
  down = false;
  /** Per-record permanent rejection: return a reason to reject. */
  rejectIf: ((r: ProviderRecord) => string | null) | null = null;
  /** When set, send() waits for it before acknowledging. */
  gate: Promise<void> | null = null;
  /** Sends after this many never resolve (a broker that stops answering mid-stream). */
  hangAfterSends = Infinity;
  closed = false;

  open(): Promise<void> {
    this.opens++;
    if (this.down) return Promise.reject(new Error("provider down"));
    return Promise.resolve();
  }

  async send(records: readonly ProviderRecord[]): Promise<SendResult | void> {
    this.sends++;
    if (this.sends > this.hangAfterSends) await new Promise(() => {});
    if (this.gate) await this.gate;
    if (this.down) throw new Error("provider down");
    const rejected: { index: number; reason: string }[] = [];
    records.forEach((r, index) => {
      const reason = this.rejectIf?.(r) ?? null;
      if (reason) {
        rejected.push({ index, reason });
        return;
      }
      this.received.push({
        topic: r.topic,
        key: r.key === null ? null : dec.decode(r.key),
        value: r.value.slice(),
        headers: (r.headers ?? []).map(([k, v]) => [k, v.slice()]),
        timestamp: r.timestamp,
      });
    });
    return { rejected };
  }

  close(): Promise<void> {
    this.closed = true;
    return Promise.resolve();
  }

  /** Delivered values as text. */
  values(): string[] {
    return this.received.map((r) => dec.decode(r.value));
  }
}

/** A fresh temp directory, removed by the returned cleanup. */
export async function tempDir(
  prefix = "mb-test-",
): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** Waits until `cond()` is true, polling; throws after `ms`. */
export async function waitFor(cond: () => boolean, ms = 10_000, what = "condition"): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
