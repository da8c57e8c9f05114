// The HOST:PORT addresses of the agent's listeners, split one way for all of them.

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { splitHostPort } from "../../src/ingest/address.ts";

describe("listener addresses", () => {
  it("split at the last colon, with an IPv6 host's brackets dropped", () => {
    assert.deepEqual(splitHostPort("127.0.0.1:9464"), { host: "127.0.0.1", port: 9464 });
    assert.deepEqual(splitHostPort("localhost:0"), { host: "localhost", port: 0 });
    assert.deepEqual(splitHostPort("[::1]:8080"), { host: "::1", port: 8080 });
    assert.deepEqual(splitHostPort("::1:8080"), { host: "::1", port: 8080 });
    assert.deepEqual(splitHostPort(":9464"), { host: "", port: 9464 });
  });

  it("are refused without a port of 0 to 65535", () => {
    for (const bad of ["localhost", "localhost:", "host:65536", "host:-1", "host:80x", "[::1]"]) {
      assert.equal(splitHostPort(bad), null, bad);
    }
  });
});
