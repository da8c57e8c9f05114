import { describe, it } from "node:test";
import assert from "node:assert/strict";
import RequestQueue from "kafkajs/src/network/requestQueue/index.js";
import { stopIdlePolling } from "../../src/provider/kafka/kafkajs.ts";

const quiet = { debug() {}, info() {}, warn() {}, error() {} };

function queue() {
  return new RequestQueue({
    maxInFlightRequests: 1,
    requestTimeout: 1000,
    enforceRequestTimeout: false,
    clientId: "test",
    broker: "127.0.0.1:9",
    logger: quiet as never,
  });
}

describe("kafkajs request queue, with the provider's fix", () => {
  it("arms no timer when nothing is pending and nothing is throttled", () => {
    stopIdlePolling();
    const q = queue();
    q.checkPendingRequests(); // what kafkajs does after every response
    assert.equal(q.throttleCheckTimeoutId, null);
  });

  it("still checks pending requests, and a throttled queue, as kafkajs does", () => {
    stopIdlePolling();
    const pending = queue();
    pending.pending.push({} as never);
    pending.scheduleCheckPendingRequests();
    assert.notEqual(pending.throttleCheckTimeoutId, null);
    pending.destroy();
    const throttled = queue();
    throttled.maybeThrottle(50);
    throttled.scheduleCheckPendingRequests();
    assert.notEqual(throttled.throttleCheckTimeoutId, null);
    throttled.destroy();
  });
});
