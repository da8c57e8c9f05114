// Syslog parsing and mapping: the forms `logger`, rsyslog and syslog-ng send (RFC 5424, RFC
// 3164 with and without a HOSTNAME), and what a careless sender sends (no priority, junk).

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import {
  checkTopicTemplate,
  FACILITIES,
  parseSyslog,
  SEVERITIES,
  toRecord,
} from "../../src/ingest/syslog.ts";

const b = (s: string | number[]) => typeof s === "string" ? Buffer.from(s) : Buffer.from(s);
const text = (u: Uint8Array) => Buffer.from(u).toString("utf8");
const json = { topic: "syslog", key: "hostname", value: "json" } as const;

describe("parseSyslog", () => {
  it("reads an RFC 5424 message with structured data, escapes and a BOM", () => {
    const m = parseSyslog(b(
      '<165>1 2026-12-05T09:13:03.214701+00:00 web-1 nginx 4242 ID47 [exampleSDID@32473 iut="3" eventSource="App\\"lication\\]"][x@1 a="b"] \ufeffBOM\'d message',
    ));
    assert.equal(m.format, "rfc5424");
    assert.equal(m.hasPriority, true);
    assert.equal(m.facility, 20); // local4
    assert.equal(m.severity, 5);
    assert.equal(m.hostname, "web-1");
    assert.equal(m.appName, "nginx");
    assert.equal(m.procId, "4242");
    assert.equal(m.msgId, "ID47");
    assert.equal(m.time, Date.parse("2026-12-05T09:13:03.214701+00:00"));
    assert.deepEqual(JSON.parse(JSON.stringify(m.structuredData)), {
      "exampleSDID@32473": { iut: "3", eventSource: 'App"lication]' },
      "x@1": { a: "b" },
    });
    assert.equal(text(m.message), "BOM'd message");
  });

  it("keeps structured data named like Object's own properties, and refuses timestamps that are not RFC 3339", () => {
    const m = parseSyslog(b('<13>1 2026 h a - - [__proto__ constructor="x" __proto__="y"] m'));
    assert.equal(m.format, "rfc5424");
    assert.equal(
      JSON.stringify(m.structuredData),
      '{"__proto__":{"constructor":"x","__proto__":"y"}}',
    );
    for (
      const ts of ["2026", "1", "2026-12-05", "2026-12-05T09:00:00", "2026-12-05T09:00:00.1234567Z"]
    ) {
      const t = parseSyslog(b(`<13>1 ${ts} h a - - - m`));
      assert.equal(t.timestamp, ts);
      assert.equal(t.time, null, ts);
    }
  });

  it("reads RFC 3164 host names and tags that are not ASCII", () => {
    const m = parseSyslog(b("<13>Dec  5 09:13:01 hôst äpp[7]: grüße"));
    assert.equal(m.hostname, "hôst");
    assert.equal(m.appName, "äpp");
    assert.equal(m.procId, "7");
    assert.equal(text(m.message), "grüße");
  });

  it("reads RFC 5424 nil fields and an empty message", () => {
    const m = parseSyslog(b("<14>1 - - - - - -"));
    assert.equal(m.format, "rfc5424");
    assert.deepEqual(
      [m.timestamp, m.hostname, m.appName, m.procId, m.msgId, m.structuredData],
      [null, null, null, null, null, null],
    );
    assert.equal(m.message.length, 0);
  });

  it("reads RFC 3164 as forwarded (with HOSTNAME) and as written locally (without)", () => {
    const now = new Date(2026, 11, 5, 12, 0, 0).getTime();
    const remote = parseSyslog(b("<34>Oct 11 22:14:15 mymachine su[230]: 'su root' failed"), now);
    assert.equal(remote.format, "rfc3164");
    assert.equal(remote.facility, 4);
    assert.equal(remote.severity, 2);
    assert.equal(remote.hostname, "mymachine");
    assert.equal(remote.appName, "su");
    assert.equal(remote.procId, "230");
    assert.equal(text(remote.message), "'su root' failed");
    assert.equal(remote.time, new Date(2026, 9, 11, 22, 14, 15).getTime());
    const local = parseSyslog(b("<13>Dec  5 09:13:01 myapp: hello 3164\n"), now);
    assert.equal(local.hostname, null);
    assert.equal(local.appName, "myapp");
    assert.equal(text(local.message), "hello 3164");
    assert.equal(local.time, new Date(2026, 11, 5, 9, 13, 1).getTime());
    // Just after New Year, a December timestamp is last year's.
    const jan = new Date(2027, 0, 1, 0, 5, 0).getTime();
    assert.equal(
      parseSyslog(b("<13>Dec 31 23:59:00 app: x"), jan).time,
      new Date(2026, 11, 31, 23, 59, 0).getTime(),
    );
  });

  it("takes a message without a valid priority whole, as user.notice, and says so", () => {
    for (const raw of ["no priority here", "<>x", "<999>too big", "<013>leading zero", "<13"]) {
      const m = parseSyslog(b(raw));
      assert.equal(m.hasPriority, false, raw);
      assert.equal(m.format, "unknown");
      assert.equal(m.facility * 8 + m.severity, 13);
      assert.equal(text(m.message), raw);
    }
  });

  it("keeps whatever does not fit a header in the message, bytes as they came", () => {
    const junk = [0x3c, 0x31, 0x33, 0x3e, 0xff, 0xfe, 0x00, 0x41, 0x80];
    const m = parseSyslog(b(junk));
    assert.equal(m.hasPriority, true);
    assert.deepEqual([...m.message], junk.slice(4));
    const bad5424 = parseSyslog(b('<13>1 2026-12-05T00:00:00Z h a p m [unterminated x="y" msg'));
    assert.equal(bad5424.format, "rfc3164");
    assert.match(text(bad5424.message), /unterminated/);
  });
});

describe("toRecord", () => {
  it("maps a message to topic, key, a JSON value and the message's timestamp", () => {
    const raw = b("<13>1 2026-12-05T09:00:00Z web-1 api 7 - - hello");
    const r = toRecord(parseSyslog(raw), raw, json, "fallback");
    assert.equal(r.topic, "syslog");
    assert.equal(r.key, "web-1");
    assert.equal(r.timestamp, Date.parse("2026-12-05T09:00:00Z"));
    assert.deepEqual(JSON.parse(r.value as string), {
      format: "rfc5424",
      facility: "user",
      severity: "notice",
      priority: 13,
      timestamp: "2026-12-05T09:00:00Z",
      hostname: "web-1",
      app_name: "api",
      proc_id: "7",
      msg_id: null,
      message: "hello",
    });
  });

  it("fills a missing HOSTNAME, keys by app or nothing, and keeps the raw bytes", () => {
    const raw = b("<13>Dec  5 09:13:01 myapp: hi");
    const m = parseSyslog(raw);
    assert.equal(toRecord(m, raw, json, "this-host").key, "this-host");
    assert.equal(toRecord(m, raw, { ...json, key: "app" }, "h").key, "myapp");
    assert.equal(toRecord(m, raw, { ...json, key: "none" }, "h").key, null);
    assert.equal(toRecord(m, raw, { ...json, value: "raw" }, "h").value, raw);
  });

  it("gives bytes that are not UTF-8 as message_base64, losing nothing", () => {
    const raw = b([0x3c, 0x31, 0x33, 0x3e, 0xff, 0x41]);
    const v = JSON.parse(toRecord(parseSyslog(raw), raw, json, "h").value as string);
    assert.equal(v.message, undefined);
    assert.deepEqual([...Buffer.from(v.message_base64, "base64")], [0xff, 0x41]);
  });

  it("fills a topic template, replacing what a topic name cannot hold", () => {
    const raw = b("<165>1 - web/1 my app - - - x");
    const m = parseSyslog(raw);
    const r = toRecord(m, raw, { ...json, topic: "logs.{facility}.{severity}.{host}" }, "h");
    assert.equal(r.topic, "logs.local4.notice.web_1");
  });

  it("checks a template: unknown placeholders and bad characters are named", () => {
    assert.throws(() => checkTopicTemplate("logs.{colour}"), /unknown placeholder \{colour\}/);
    assert.throws(() => checkTopicTemplate("logs/{app}"), /characters a Kafka topic cannot have/);
    assert.throws(() => checkTopicTemplate(".."), /not a legal Kafka topic name/);
    checkTopicTemplate("syslog");
    checkTopicTemplate("logs-{app}-{host}");
  });

  it("reads and maps each message as if it came alone, whatever came before it", () => {
    // Header fields, timestamps and JSON heads repeat from one message to the next, and are
    // kept while they do: messages that differ from the one before in one byte of one field,
    // or not at all, must each come out as the documented fields in the documented order.
    const messages = [
      "<14>1 2026-12-06T07:00:00Z hostA app 12 ID1 - one",
      "<14>1 2026-12-06T07:00:00Z hostA app 12 ID1 - two",
      "<14>1 2026-12-06T07:00:00Z hostB app 12 ID1 - host differs by a byte",
      "<14>1 2026-12-06T07:00:01Z hostB app 12 ID1 - a second later",
      "<14>1 2026-12-06T07:00:01Z hostB apq 12 ID1 - app differs",
      "<15>1 2026-12-06T07:00:01Z hostB apq 12 ID1 - severity differs",
      "<14>1 2026-12-06T07:00:01Z hostB apq 12 ID1 - severity back",
      "<14>1 2026-12-06T07:00:01Z hostB apq 13 ID1 - procid differs",
      "<14>1 2026-12-06T07:00:01Z hostB apq 13 ID2 - msgid differs",
      "<14>1 2026-12-06T07:00:01.000001Z hostB apq 13 ID2 - a microsecond later",
      "<14>1 2026-12-06T07:00:01.000002Z hostB apq 13 ID2 - and another",
      "<14>1 - - - - - all nil",
      "<14>1 - - - - - all nil again",
      '<14>1 2026-12-06T07:00:01Z hostB apq 12 ID1 [a@1 k="v"] with data',
      '<14>1 2026-12-06T07:00:01Z hostB apq 12 ID1 [a@1 k="w"] other data',
      '<14>1 2026-12-06T07:00:01Z hostB apq 12 ID1 - quotes " and \\ and \u0001',
      "<14>1 2026-12-06T07:00:01Z hostB apq 12 ID1 - grüße",
      "<13>Dec  5 09:13:01 web-1 myapp[7]: rfc 3164",
      "<14>1 2026-12-06T07:00:01Z hostB apq 12 ID1 - back to 5424",
      "<13>1 - - - - - every field as a message without a priority has them",
      "no priority at all",
    ].map((t) => b(t));
    messages.push(Buffer.concat([b("<14>1 2026-12-06T07:00:01Z hostB apq 12 ID1 - "), b([0xff])]));
    for (const raw of messages) {
      const m = parseSyslog(raw);
      const v = toRecord(m, raw, json, "fallback").value as string;
      const expected: Record<string, unknown> = {
        format: m.format,
        facility: FACILITIES[m.facility],
        severity: SEVERITIES[m.severity],
        priority: m.facility * 8 + m.severity,
        timestamp: m.timestamp,
        hostname: m.hostname ?? "fallback",
        app_name: m.appName,
        proc_id: m.procId,
        msg_id: m.msgId,
      };
      if (m.structuredData) expected.structured_data = m.structuredData;
      const body = Buffer.from(m.message);
      if (body.includes(0xff)) expected.message_base64 = body.toString("base64");
      else expected.message = body.toString("utf8");
      assert.equal(v, JSON.stringify(expected), raw.toString("latin1"));
      // The header fields themselves, read from the message alone (none kept from before).
      const alone = raw.toString("utf8");
      if (m.format === "rfc5424") {
        const [, ts, host, app, proc, id] = alone.split(" ").map((t) => t === "-" ? null : t);
        assert.deepEqual(
          [m.timestamp, m.hostname, m.appName, m.procId, m.msgId],
          [ts, host, app, proc, id],
          alone,
        );
        assert.equal(m.time, ts === null ? null : Date.parse(ts!), alone);
      }
    }
  });
});
