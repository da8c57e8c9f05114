// The batch in flight and its identity (the in-flight file), on the in-memory filesystem:
// a batch sent again after a failure or a crash is the same records under the same
// identity; a provider that keeps no identity has its repeats counted.

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { MessageBuffer, type Provider, type ProviderRecord, type SendContext } from "../../mod.ts";
import { MemoryFileSystem } from "../../src/fs/memory.ts";
import { memoryBufferOptions, RecordingProvider, waitFor } from "../_helpers.ts";

const dec = new TextDecoder();

/** A send as the provider saw it: the values, and the identity the context held. */
interface Seen {
  values: string[];
  identity: string | null;
}

/**
 * A provider that keeps an identity: a new batch gets `id-<n>`, committed before it "sends";
 * then it acknowledges, fails, or never answers, as told.
 */
class IdentityProvider implements Provider {
  readonly name = "identity";
  readonly keepsIdentity = true;
  readonly retryWaitMs = 1;
  seen: Seen[] = [];
  made = 0;
  /** What each send does after its commit, in turn; then "ack". */
  script: Array<"ack" | "fail" | "hang"> = [];

  open(): Promise<void> {
    return Promise.resolve();
  }

  async send(records: readonly ProviderRecord[], context?: SendContext): Promise<void> {
    assert.ok(context, "the disk path gives a context");
    const given = context.identity;
    if (given === null) await context.commit(`id-${++this.made}`);
    this.seen.push({ values: records.map((r) => dec.decode(r.value)), identity: given });
    const step = this.script.shift() ?? "ack";
    if (step === "fail") throw new Error("lost connection");
    if (step === "hang") await new Promise(() => {});
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** A recording provider whose first `failures` sends fail. */
class FlakyProvider extends RecordingProvider {
  constructor(private failures: number) {
    super();
  }
  override send(records: readonly ProviderRecord[]) {
    if (this.failures-- > 0) {
      this.sends++;
      return Promise.reject(new Error("lost connection"));
    }
    return super.send(records);
  }
}

async function writeAll(b: MessageBuffer, n: number): Promise<void> {
  for (let i = 0; i < n; i++) await b.write("t", `v${i}`);
}

describe("in-flight batch and identity", () => {
  it("a retried batch keeps its records and identity", async () => {
    const fs = new MemoryFileSystem();
    const p = new IdentityProvider();
    p.script = ["fail", "fail"];
    const b = await MessageBuffer.open(memoryBufferOptions(fs, p));
    await writeAll(b, 6);
    await b.drained(5000);
    await b.close();
    assert.deepEqual(p.seen.slice(0, 3), [
      { values: ["v0", "v1", "v2", "v3"], identity: null },
      { values: ["v0", "v1", "v2", "v3"], identity: "id-1" },
      { values: ["v0", "v1", "v2", "v3"], identity: "id-1" },
    ]);
    assert.equal(p.made, 2, "one identity per batch");
    assert.equal(b.stats().counters.resentRecords, 8);
    assert.equal(b.stats().counters.maybeDuplicatedAtLeastOnce, 0);
  });

  for (const cut of ["SIGKILL", "power cut"]) {
    it(`after a ${cut}, the batch that was in flight goes first, as it was, under its identity`, async () => {
      const fs = new MemoryFileSystem();
      const first = new IdentityProvider();
      first.script = ["ack", "hang"];
      const b = await MessageBuffer.open(memoryBufferOptions(fs, first, { batchMaxRecords: 4 }));
      await writeAll(b, 10);
      await waitFor(() => first.seen.length === 2, 5000, "the second send");
      const after = cut === "SIGKILL" ? fs.processCrash() : fs.crash();
      await b.close();
      // The next run reads smaller batches: the batch in flight is still sent whole.
      const second = new IdentityProvider();
      const again = await MessageBuffer.open(
        memoryBufferOptions(after, second, { batchMaxRecords: 3 }),
      );
      await again.drained(5000);
      await again.close();
      assert.deepEqual(first.seen[1], { values: ["v4", "v5", "v6", "v7"], identity: null });
      assert.deepEqual(second.seen, [
        { values: ["v4", "v5", "v6", "v7"], identity: "id-2" },
        { values: ["v8", "v9"], identity: null },
      ]);
    });
  }

  it("an acknowledged batch is not sent again under its identity", async () => {
    const fs = new MemoryFileSystem();
    const first = new IdentityProvider();
    const b = await MessageBuffer.open(memoryBufferOptions(fs, first));
    await writeAll(b, 4);
    await b.drained(5000);
    const after = fs.crash();
    await b.close();
    const second = new IdentityProvider();
    const again = await MessageBuffer.open(memoryBufferOptions(after, second));
    await again.write("t", "later");
    await again.drained(5000);
    await again.close();
    assert.deepEqual(second.seen, [{ values: ["later"], identity: null }]);
  });

  it("a provider that keeps no identity has each batch it gets again counted", async () => {
    const fs = new MemoryFileSystem();
    const first = new RecordingProvider();
    first.hangAfterSends = 1;
    const b = await MessageBuffer.open(memoryBufferOptions(fs, first, { batchMaxRecords: 4 }));
    await writeAll(b, 8);
    await waitFor(() => first.sends === 2, 5000, "the second send");
    const after = fs.crash();
    await b.close();
    const second = new FlakyProvider(2);
    const again = await MessageBuffer.open(memoryBufferOptions(after, second));
    await again.drained(5000);
    await again.close();
    assert.deepEqual(second.values(), ["v4", "v5", "v6", "v7"]);
    const c = again.stats().counters;
    // The batch in flight at the crash, then again after each of its 2 failed sends.
    assert.equal(second.sends, 3);
    assert.equal(c.maybeDuplicatedAtLeastOnce, 4 * 3);
  });

  it("a disk that refuses the in-flight file does not stop delivery: the batches are counted", async () => {
    class NoRoomForInflight extends MemoryFileSystem {
      override open(path: string, mode: "create" | "append" | "read") {
        if (/INFLIGHT(\.new)?$/.test(path) && mode !== "read") {
          return Promise.reject(Object.assign(new Error("ENOSPC: no space left on device"), {
            code: "ENOSPC",
          }));
        }
        return super.open(path, mode);
      }
    }
    const p = new IdentityProvider();
    p.script = ["fail"];
    const b = await MessageBuffer.open(memoryBufferOptions(new NoRoomForInflight(), p));
    await writeAll(b, 6);
    await b.drained(5000);
    await b.close();
    assert.deepEqual(p.seen.map((s) => s.values.length), [4, 4, 2]);
    assert.equal(p.seen[1].identity, "id-1", "a retry still gets the identity, kept in memory");
    const c = b.stats().counters;
    assert.equal(c.delivered, 6);
    assert.equal(c.maybeDuplicatedIdentityNotStored, 6, "each batch counted once");
    assert.ok(c.storageErrors >= 2, "each refused write is a storage error");
  });
});
