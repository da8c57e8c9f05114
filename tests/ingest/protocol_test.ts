import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { escapeField, parseLine } from "../../src/ingest/protocol.ts";

describe("ingest line protocol", () => {
  it("parses the text form with escapes, and an empty key as no key", () => {
    assert.deepEqual(parseLine("orders\tuser-1\ta\\tb\\nc\\\\d\\re"), {
      kind: "record",
      topic: "orders",
      key: "user-1",
      value: "a\tb\nc\\d\re",
      headers: null,
    });
    assert.equal((parseLine("t\t\tv") as { key: unknown }).key, null);
    assert.equal((parseLine("t\tk\t") as { value: unknown }).value, "");
    assert.equal(
      (parseLine("t\tk\tv\r") as { value: unknown }).value,
      "v",
      "a CRLF client's CR is dropped",
    );
  });

  it("escapeField is the inverse of the parser's unescaping", () => {
    const nasty = "tab\there\nnew\\line\r\\n literal";
    const parsed = parseLine(`t\t${escapeField("k\tk")}\t${escapeField(nasty)}`);
    assert.equal((parsed as { value: string }).value, nasty);
    assert.equal((parsed as { key: string }).key, "k\tk");
  });

  it("parses the JSON form, with base64 for binary and headers", () => {
    assert.deepEqual(parseLine('{"topic":"t","key":"k","value":"v","headers":{"a":"1"}}'), {
      kind: "record",
      topic: "t",
      key: "k",
      value: "v",
      headers: [["a", "1"]],
    });
    const bin = parseLine('{"topic":"t","value_base64":"AP8K","key_base64":"AQ=="}') as {
      value: Uint8Array;
      key: Uint8Array;
    };
    assert.deepEqual([...bin.value], [0, 255, 10]);
    assert.deepEqual([...bin.key], [1]);
    const full = parseLine(
      '{"topic":"t","value":"v","headers_base64":[["h","AP8="],["h","AQ=="]],"timestamp":1700000000000}',
    ) as { headers: Array<[string, Uint8Array]>; timestamp: number };
    assert.deepEqual(full.headers.map(([k, v]) => [k, [...v]]), [["h", [0, 255]], ["h", [1]]]);
    assert.equal(full.timestamp, 1_700_000_000_000);
  });

  it("recognises #ack and #stats, and refuses unknown control lines", () => {
    assert.deepEqual(parseLine("#ack"), { kind: "control", command: "ack" });
    assert.deepEqual(parseLine("#stats"), { kind: "control", command: "stats" });
    assert.match((parseLine("#nope") as { reason: string }).reason, /unknown control line "#nope"/);
  });

  const bad: Array<[string, RegExp]> = [
    ["t\tk\tbad\\q", /bad escape "\\q" in value/],
    ["t\tk\\x\tv", /bad escape "\\x" in key/],
    ["t\tk\tends\\", /value ends with a lone backslash/],
    ["just text", /expected TOPIC<TAB>KEY<TAB>VALUE, found no tab/],
    ["t\tonly-one", /found one tab/],
    ["t\tk\tv\textra", /raw tab in value/],
    ["\tk\tv", /empty topic/],
    ["", /empty line/],
    ['{"topic":"t"', /invalid JSON/],
    ['{"value":"v"}', /missing field "topic"/],
    ['{"topic":"t"}', /missing field "value"/],
    ['{"topic":"t","value":5}', /"value" must be a string/],
    ['{"topic":"t","value":"v","extra":1}', /unknown field "extra"/],
    ['{"topic":"t","value_base64":"not base64!"}', /"value_base64" must be a base64 string/],
    ['{"topic":"t","value":"v","headers":{"h":1}}', /header "h" must be a string/],
    ['{"topic":"t","value":"v","value_base64":"AA=="}', /not both/],
    ["[1,2]", /expected TOPIC/],
    ['{"topic":"t","value":"v","timestamp":-1}', /"timestamp" must be a whole number of ms/],
    ['{"topic":"t","value":"v","timestamp":"now"}', /"timestamp" must be a whole number of ms/],
    ['{"topic":"t","value":"v","headers_base64":{"h":"AA=="}}', /list of \[name, base64 value\]/],
    [
      '{"topic":"t","value":"v","headers_base64":[["h","!"]]}',
      /header "h" in "headers_base64" must be a base64 string/,
    ],
    ['{"topic":"t","value":"v","headers":{},"headers_base64":[]}', /"headers" or "headers_base64"/],
  ];
  for (const [line, reason] of bad) {
    it(`refuses ${JSON.stringify(line)} naming the problem`, () => {
      const r = parseLine(line);
      assert.equal(r.kind, "error");
      assert.match((r as { reason: string }).reason, reason);
    });
  }
});
