// /metrics and /health of a buffer whose disk fails fsync: the fault shows in both, and
// clears once storage works again.

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { MessageBuffer, silentLogger, StorageError } from "../../mod.ts";
import { serveMetrics } from "../../src/agent/metrics.ts";
import { MemoryFileSystem } from "../../src/fs/memory.ts";
import { RecordingProvider, waitFor } from "../_helpers.ts";

async function get(port: number, path: string): Promise<{ status: number; body: string }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: res.status, body: await res.text() };
}

describe("metrics and health", () => {
  it("report a failed fsync as storage down, and Kafka as up, until storage works again", async () => {
    const fs = new MemoryFileSystem();
    const provider = new RecordingProvider();
    const b = await MessageBuffer.open({
      dir: "/buf",
      provider,
      fs,
      logger: silentLogger,
      fsync: "interval",
      fsyncIntervalMs: 5,
    });
    const server = await serveMetrics("127.0.0.1:0", () => ({
      stats: b.stats(),
      ingest: null,
      open: true,
    }));
    const port = (server.address() as { port: number }).port;
    try {
      await b.write("t", "a");
      await b.drained(5000);
      assert.equal((await get(port, "/health")).status, 200);
      fs.failNext("sync", "EIO", ".seg");
      fs.failNext("sync", "EIO", ".seg");
      await b.write("t", "b");
      await waitFor(() => b.stats().storage.state === "failed", 5000, "the failed state");
      const health = await get(port, "/health");
      assert.equal(health.status, 503);
      const h = JSON.parse(health.body);
      assert.equal(h.storage, "failed");
      assert.equal(h.provider, "ready", "Kafka is not blamed");
      assert.match(h.storageError, /EIO/);
      const metrics = (await get(port, "/metrics")).body;
      assert.match(metrics, /^messagebuffer_storage_up 0$/m);
      assert.match(metrics, /^messagebuffer_storage_errors_total 1$/m);
      assert.match(metrics, /^messagebuffer_records_resent_total 0$/m);
      await assert.rejects(b.write("t", "c"), (e) => e instanceof StorageError);
      await b.write("t", "d");
      assert.equal((await get(port, "/health")).status, 200);
      assert.match((await get(port, "/metrics")).body, /^messagebuffer_storage_up 1$/m);
      await b.drained(5000);
      assert.deepEqual(provider.values(), ["a", "b", "d"]);
    } finally {
      server.close();
      await b.close();
    }
  });
});
