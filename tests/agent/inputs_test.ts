// The HTTP and syslog inputs as users reach them: curl with the Kafka REST Proxy v2 content
// types, a Python client, logger(1) over a Unix datagram socket and TCP, raw sockets for what
// careless and hostile clients send; a real agent process and a real broker.

import { afterEach, describe, it } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { execFile } from "node:child_process";
import { Buffer } from "node:buffer";
import net from "node:net";
import { join } from "node:path";
import { type Agent, freePort, scrapeMetrics, startAgent, waitForMetrics } from "../_agent.ts";
import { tempDir } from "../_helpers.ts";
import { BROKERS, consume, createTopics, uniqueTopic } from "../_kafka.ts";

let cleanup = async () => {};
const agents: Agent[] = [];
afterEach(async () => {
  for (const a of agents.splice(0)) await a.stop("SIGKILL");
  await cleanup();
});

async function agent(args: string[]): Promise<Agent> {
  const a = await startAgent(args);
  agents.push(a);
  return a;
}

/** Runs a command to completion. */
function run(
  cmd: string,
  args: string[],
  input?: string,
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = execFile(cmd, args, { maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      resolve({ code: err ? (err as { code?: number }).code ?? 1 : 0, stdout, stderr });
    });
    p.stdin!.end(input ?? "");
  });
}

/** curl: POST `body` (a string, or @file) with `type`; resolves with the status and body. */
async function post(
  url: string,
  type: string | null,
  body: string,
  extra: string[] = [],
): Promise<{ status: number; body: string; headers: string }> {
  const args = [
    "-sS",
    "-D",
    "-",
    "-X",
    "POST",
    "--data-binary",
    body.startsWith("@") ? body : "@-",
  ];
  if (type) args.push("-H", `Content-Type: ${type}`);
  const r = await run("curl", [...args, ...extra, url], body.startsWith("@") ? undefined : body);
  assert.equal(r.code, 0, `curl failed: ${r.stderr}`);
  const split = r.stdout.indexOf("\r\n\r\n");
  const headers = r.stdout.slice(0, split);
  return {
    status: Number(/^HTTP\/\S+ (\d+)/.exec(headers)?.[1]),
    headers,
    body: r.stdout.slice(split + 4),
  };
}

const JSON_V2 = "application/vnd.kafka.json.v2+json";
const BINARY_V2 = "application/vnd.kafka.binary.v2+json";
const b64 = (s: string | Uint8Array) => Buffer.from(s).toString("base64");

/**
 * Sends raw bytes over TCP and resolves with the server's answer once it is complete (by its
 * Content-Length), or with what came before the server closed. Keeps the connection open for
 * up to `keepOpenMs` (0: ends it at once).
 */
function rawHttp(port: number, data: string, keepOpenMs = 0): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect(port, "127.0.0.1");
    let got = "";
    const done = () => {
      clearTimeout(timer);
      s.destroy();
      resolve(got);
    };
    s.on("data", (d) => {
      got += d;
      const head = got.indexOf("\r\n\r\n");
      const length = /content-length: (\d+)/i.exec(got.slice(0, head));
      if (head >= 0 && length && got.length - head - 4 >= Number(length[1])) done();
    });
    s.on("error", () => {});
    s.on("close", done);
    s.write(data);
    const timer = setTimeout(() => s.end(), keepOpenMs);
  });
}

describe("HTTP input (--http)", () => {
  it("REST Proxy v2 clients (curl, Python) and NDJSON produce records that arrive intact, keyed and in order", async () => {
    const t = await tempDir();
    cleanup = t.cleanup;
    const topic = uniqueTopic("http-rest");
    await createTopics([topic], 1);
    const port = await freePort();
    await agent([
      "--brokers",
      BROKERS.join(","),
      "--buffer-dir",
      t.dir,
      "--http",
      `127.0.0.1:${port}`,
    ]);
    const url = `http://127.0.0.1:${port}`;
    const expected: Array<{ key: string | null; value: string; headers?: Record<string, string> }> =
      [];

    // The json format: key and value are any JSON, stored as their text.
    const jsonRecords = [
      { key: "user-1", value: { n: 0, s: "ünï" } },
      { value: [1, 2, 3] },
      { key: { id: 7 }, value: "text" },
    ];
    let r = await post(`${url}/topics/${topic}`, JSON_V2, JSON.stringify({ records: jsonRecords }));
    assert.equal(r.status, 200, r.body);
    assert.deepEqual(JSON.parse(r.body), {
      key_schema_id: null,
      value_schema_id: null,
      offsets: jsonRecords.map(() => ({
        partition: null,
        offset: null,
        error_code: null,
        error: null,
      })),
    });
    for (const x of jsonRecords) {
      expected.push({
        key: "key" in x ? JSON.stringify(x.key) : null,
        value: JSON.stringify(x.value),
      });
    }
    // The binary format: base64 key, value and header values (bytes that are not UTF-8 too).
    const bin = Buffer.from([0, 1, 2, 0xff, 0xfe, 10, 13]);
    r = await post(
      `${url}/topics/${topic}`,
      BINARY_V2,
      JSON.stringify({
        records: [
          { key: b64("bk"), value: b64(bin), headers: [{ name: "h", value: b64("hv") }] },
          { value: "aGVsbG8" }, // unpadded, as the REST Proxy's Java decoder takes it
        ],
      }),
    );
    assert.equal(r.status, 200, r.body);
    expected.push({ key: "bk", value: bin.toString("latin1"), headers: { h: "hv" } });
    expected.push({ key: null, value: "hello" });
    // application/json, as the json format, with headers as an object.
    r = await post(
      `${url}/topics/${topic}`,
      "application/json",
      JSON.stringify({ records: [{ value: "plain", headers: { trace: "t-1" } }] }),
    );
    assert.equal(r.status, 200, r.body);
    expected.push({ key: null, value: '"plain"', headers: { trace: "t-1" } });

    // A client in another language: Python's standard library, 5 requests of 100 records.
    const py = `
import json, sys, urllib.request
url, topic = sys.argv[1], sys.argv[2]
for req in range(5):
    records = [{"key": f"py-{i % 3}", "value": {"seq": req * 100 + i}} for i in range(100)]
    r = urllib.request.Request(f"{url}/topics/{topic}", data=json.dumps({"records": records}).encode(),
        headers={"Content-Type": "application/vnd.kafka.json.v2+json"}, method="POST")
    with urllib.request.urlopen(r) as res:
        answer = json.load(res)
        assert res.status == 200 and len(answer["offsets"]) == 100, answer
        assert all(o["error_code"] is None for o in answer["offsets"]), answer
print("ok")
`;
    const p = await run("python3", ["-c", py, url, topic]);
    assert.equal(p.stdout.trim(), "ok", p.stderr);
    for (let i = 0; i < 500; i++) {
      expected.push({
        key: JSON.stringify(`py-${(i % 100) % 3}`),
        value: JSON.stringify({ seq: i }),
      });
    }

    // NDJSON of the JSON line form, for bulk senders.
    const lines: string[] = [];
    for (let i = 0; i < 1000; i++) {
      lines.push(JSON.stringify({ topic, key: `nd-${i % 7}`, value: `line ${i}` }));
      expected.push({ key: `nd-${i % 7}`, value: `line ${i}` });
    }
    const file = join(t.dir, "bulk.ndjson");
    await writeFile(file, lines.join("\n") + "\n");
    r = await post(`${url}/records`, "application/x-ndjson", `@${file}`);
    assert.equal(r.status, 200, r.body);
    assert.deepEqual(JSON.parse(r.body), { records: 1000 });

    const got = await consume([topic], expected.length, { timeoutMs: 60_000 });
    got.sort((a, b) => a.offset - b.offset);
    assert.equal(got.length, expected.length);
    got.forEach((g, i) => {
      const e = expected[i];
      assert.equal(g.key === null ? null : g.key.toString(), e.key, `record ${i} key`);
      assert.equal(
        g.value!.toString(e.value === bin.toString("latin1") ? "latin1" : "utf8"),
        e.value,
        `record ${i}`,
      );
      for (const [h, v] of Object.entries(e.headers ?? {})) {
        assert.equal(String(g.headers[h]), v, `record ${i} header ${h}`);
      }
    });
  });

  it("refuses hostile and bad requests with an error naming the problem, stores none of them, and serves others meanwhile", async () => {
    const t = await tempDir();
    cleanup = t.cleanup;
    const topic = uniqueTopic("http-bad");
    await createTopics([topic], 1);
    const [port, mport] = [await freePort(), await freePort()];
    const tokenFile = join(t.dir, "token");
    await writeFile(tokenFile, "s3cret\n");
    await agent([
      "--brokers",
      BROKERS.join(","),
      "--buffer-dir",
      join(t.dir, "buf"),
      "--http",
      `127.0.0.1:${port}`,
      "--http-token-file",
      tokenFile,
      "--http-max-body",
      "64KiB",
      "--http-max-records",
      "100",
      "--http-timeout",
      "1s",
      "--metrics",
      `127.0.0.1:${mport}`,
    ]);
    const url = `http://127.0.0.1:${port}/topics/${topic}`;
    const auth = ["-H", "Authorization: Bearer s3cret"];
    const good = JSON.stringify({ records: [{ value: "good" }] });
    const expectRefused = async (
      status: number,
      pattern: RegExp,
      type: string | null,
      body: string,
      extra = auth,
      to = url,
    ) => {
      const r = await post(to, type, body, extra);
      assert.equal(r.status, status, `${r.status} ${r.body}`);
      assert.match(JSON.parse(r.body).message, pattern);
      return r;
    };

    const unauth = await expectRefused(401, /bearer token/, JSON_V2, good, []);
    assert.match(unauth.headers, /www-authenticate: Bearer/i);
    await expectRefused(401, /bearer token/, JSON_V2, good, ["-H", "Authorization: Bearer wrong!"]);
    await expectRefused(
      422,
      /records\[1\]\.value: must be a base64 string/,
      BINARY_V2,
      JSON.stringify({ records: [{ value: b64("ok") }, { value: "not base64!" }] }),
    );
    await expectRefused(
      422,
      /records\[0\]\.colour: unknown field/,
      JSON_V2,
      JSON.stringify({ records: [{ value: 1, colour: "red" }] }),
    );
    await expectRefused(
      422,
      /records\[0\]\.partition: choosing a partition is not supported/,
      JSON_V2,
      JSON.stringify({ records: [{ value: 1, partition: 2 }] }),
    );
    await expectRefused(
      422,
      /"value_schema": schemas are not supported/,
      JSON_V2,
      JSON.stringify({ value_schema: "{}", records: [{ value: 1 }] }),
    );
    await expectRefused(400, /not valid JSON/, JSON_V2, '{"records": [{"value": ');
    await expectRefused(
      413,
      /over the limit of 100 \(--http-max-records\)/,
      JSON_V2,
      JSON.stringify({ records: Array.from({ length: 101 }, () => ({ value: 1 })) }),
    );
    const huge = JSON.stringify({ records: [{ value: "x".repeat(200_000) }] });
    await expectRefused(413, /over the limit of 65536/, JSON_V2, huge);
    await expectRefused(413, /over the limit of 65536/, JSON_V2, huge, [
      ...auth,
      "-H",
      "Transfer-Encoding: chunked",
    ]);
    await expectRefused(
      415,
      /unsupported Content-Type "application\/vnd.kafka.avro.v2\+json"/,
      "application/vnd.kafka.avro.v2+json",
      good,
    );
    await expectRefused(
      422,
      /Invalid topic name "bad topic!"/,
      JSON_V2,
      good,
      auth,
      `http://127.0.0.1:${port}/topics/bad%20topic!`,
    );
    await expectRefused(
      404,
      /use POST \/topics\/\{topic\}/,
      JSON_V2,
      good,
      auth,
      `http://127.0.0.1:${port}/nope`,
    );
    await expectRefused(
      422,
      /line 2: invalid JSON/,
      "application/x-ndjson",
      `{"topic":"${topic}","value":"a"}\n{"topic":\n`,
      auth,
      `http://127.0.0.1:${port}/records`,
    );
    const get = await run("curl", ["-sS", "-o", "/dev/null", "-w", "%{http_code}", ...auth, url]);
    assert.equal(get.stdout, "405");

    // A body cut short: the client goes away; nothing is stored.
    const head = (len: number) =>
      `POST /topics/${topic} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\nContent-Type: ${JSON_V2}\r\nContent-Length: ${len}\r\nConnection: close\r\n\r\n`;
    await rawHttp(port, head(good.length + 50) + good);
    // A slow client (slowloris): sends part of its body and then nothing. Another client is
    // served meanwhile; the slow one is answered 408 once --http-timeout passes.
    const slow = rawHttp(port, head(good.length) + good.slice(0, 5), 10_000);
    let r = await post(url, JSON_V2, good, auth);
    assert.equal(r.status, 200, r.body);
    const slowAnswer = await slow;
    assert.match(slowAnswer, /^HTTP\/1\.1 408/);
    assert.match(slowAnswer, /did not arrive within 1000 ms/);
    r = await post(url, JSON_V2, good, auth);
    assert.equal(r.status, 200, r.body);

    // Only the two good requests were stored, and Kafka has exactly them.
    const m = await waitForMetrics(
      `127.0.0.1:${mport}`,
      (x) => x.messagebuffer_records_delivered_total === 2,
      "2 delivered",
    );
    assert.equal(m.messagebuffer_records_written_total, 2);
    assert.equal(m.messagebuffer_http_records_total, 2);
    assert.ok(m.messagebuffer_http_requests_failed_total >= 16, JSON.stringify(m));
    const got = await consume([topic], 2);
    assert.deepEqual(got.map((g) => g.value!.toString()), ['"good"', '"good"']);
  });

  it("answers 503 with Retry-After when the buffer is full under when_full reject, storing nothing of that request", async () => {
    const t = await tempDir();
    cleanup = t.cleanup;
    const [port, mport] = [await freePort(), await freePort()];
    await agent([
      "--brokers",
      "127.0.0.1:1",
      "--buffer-dir",
      t.dir,
      "--http",
      `127.0.0.1:${port}`,
      "--total-size",
      "2",
      "--file-max-size",
      "1",
      "--when-full",
      "reject",
      "--metrics",
      `127.0.0.1:${mport}`,
    ]);
    const url = `http://127.0.0.1:${port}/topics/full-test`;
    const body = JSON.stringify({
      records: Array.from({ length: 100 }, () => ({ value: "x".repeat(2000) })),
    });
    let r = { status: 200, body: "", headers: "" };
    for (let i = 0; i < 40 && r.status === 200; i++) r = await post(url, JSON_V2, body);
    assert.equal(r.status, 503, "the buffer never filled");
    const before = (await scrapeMetrics(`127.0.0.1:${mport}`)).messagebuffer_records_written_total;
    r = await post(url, JSON_V2, body);
    assert.equal(r.status, 503);
    assert.match(r.headers, /retry-after: 5/i);
    assert.match(JSON.parse(r.body).message, /the buffer is full/);
    const after = (await scrapeMetrics(`127.0.0.1:${mport}`)).messagebuffer_records_written_total;
    assert.equal(after, before);
  });

  it("answers 429 with Retry-After past --http-max-requests, and serves again once one ends", async () => {
    const t = await tempDir();
    cleanup = t.cleanup;
    const [port, mport] = [await freePort(), await freePort()];
    await agent([
      "--metrics",
      `127.0.0.1:${mport}`,
      "--brokers",
      "127.0.0.1:1",
      "--buffer-dir",
      t.dir,
      "--http",
      `127.0.0.1:${port}`,
      "--http-max-requests",
      "1",
      "--http-timeout",
      "2s",
    ]);
    const url = `http://127.0.0.1:${port}/topics/busy`;
    const body = JSON.stringify({ records: [{ value: "v" }] });
    // One request in progress: its body never comes whole.
    const slow = rawHttp(
      port,
      `POST /topics/busy HTTP/1.1\r\nHost: x\r\nContent-Type: ${JSON_V2}\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{"rec`,
      10_000,
    );
    await waitForMetrics(
      `127.0.0.1:${mport}`,
      (m) => m.messagebuffer_http_requests_active === 1,
      "the slow request in progress",
    );
    const busy = await post(url, JSON_V2, body);
    assert.equal(busy.status, 429, busy.body);
    assert.match(busy.headers, /retry-after: 1/i);
    assert.match(JSON.parse(busy.body).message, /too many requests at once \(the limit is 1/);
    assert.match(await slow, /^HTTP\/1\.1 408/);
    const after = await post(url, JSON_V2, body);
    assert.equal(after.status, 200, after.body);
  });

  it("parses and stores bodies of about 4 MiB at once: a request whose body is read waits its turn, and is answered 429 if none comes within --http-timeout; a slow body holds up no one", async () => {
    const t = await tempDir();
    cleanup = t.cleanup;
    const small = JSON.stringify({ records: [{ value: "v" }] });
    const [port, mport] = [await freePort(), await freePort()];
    const metrics = `127.0.0.1:${mport}`;
    await agent([
      "--metrics",
      metrics,
      "--brokers",
      "127.0.0.1:1",
      "--buffer-dir",
      join(t.dir, "a"),
      "--http",
      `127.0.0.1:${port}`,
      "--http-timeout",
      "5s",
    ]);
    // A body of 4 MiB declared that never comes whole takes no room: others are served.
    let slowAnswered = false;
    const slow = rawHttp(
      port,
      `POST /topics/room HTTP/1.1\r\nHost: x\r\nContent-Type: ${JSON_V2}\r\nContent-Length: ${
        4 << 20
      }\r\nConnection: close\r\n\r\n{"rec`,
      10_000,
    ).then((answer) => {
      slowAnswered = true;
      return answer;
    });
    await waitForMetrics(
      metrics,
      (m) => m.messagebuffer_http_requests_active === 1,
      "the slow request in progress",
    );
    const served = await post(`http://127.0.0.1:${port}/topics/room`, JSON_V2, small);
    assert.equal(served.status, 200, served.body);
    assert.equal(slowAnswered, false, "the slow one is still arriving");
    let m = await scrapeMetrics(metrics);
    assert.equal(m.messagebuffer_http_body_bytes, 0);
    assert.equal(m.messagebuffer_http_records_total, 1);
    assert.match(await slow, /^HTTP\/1\.1 408/);

    // A request whose records wait for Kafka (no disk, the broker unreachable) holds its
    // body's room for longer than --http-timeout: one whose body came after it waits, then 429.
    const [port2, mport2] = [await freePort(), await freePort()];
    const metrics2 = `127.0.0.1:${mport2}`;
    await agent([
      "--metrics",
      metrics2,
      "--brokers",
      "127.0.0.1:1",
      "--buffer-dir",
      join(t.dir, "b"),
      "--mode",
      "block-on-error",
      "--direct-timeout",
      "30s",
      "--http",
      `127.0.0.1:${port2}`,
      "--http-timeout",
      "2s",
    ]);
    // NDJSON of exactly 4 MiB: nothing more fits beside it.
    let ndjson = "";
    for (let i = 0; i < 40; i++) {
      ndjson += JSON.stringify({ topic: "room", value: "x".repeat(100_000) }) + "\n";
    }
    const pad = (4 << 20) - ndjson.length - JSON.stringify({ topic: "room", value: "" }).length - 1;
    ndjson += JSON.stringify({ topic: "room", value: "y".repeat(pad) }) + "\n";
    assert.equal(ndjson.length, 4 << 20);
    const body = join(t.dir, "big.ndjson");
    await writeFile(body, ndjson);
    // (`Expect:` empty: curl would otherwise wait for a 100 Continue before a large body.)
    const holder = post(`http://127.0.0.1:${port2}/records`, null, `@${body}`, ["-H", "Expect:"]);
    void holder.catch(() => {}); // (cut by the agent's stop at the end of the test)
    await waitForMetrics(
      metrics2,
      (m) => m.messagebuffer_http_body_bytes === 4 << 20,
      "the big request to take the room",
    );
    const started = Date.now();
    const busy = await post(`http://127.0.0.1:${port2}/topics/room`, JSON_V2, small);
    assert.equal(busy.status, 429, busy.body);
    assert.match(busy.headers, /retry-after: 1/i);
    assert.match(
      JSON.parse(busy.body).message,
      new RegExp(
        `^busy: the bodies of other requests \\(4194304 bytes\\) are being stored, and this one's \\(${small.length} bytes\\) found no room within 2000 ms \\(--http-timeout\\); nothing stored$`,
      ),
    );
    assert.ok(Date.now() - started >= 1500, "it waited for --http-timeout");
    m = await scrapeMetrics(metrics2);
    assert.equal(m.messagebuffer_http_body_bytes, 4 << 20, "the big one still holds its room");
    assert.equal(m.messagebuffer_http_records_total, 0);
    assert.equal(m.messagebuffer_http_requests_active, 1);
  });

  it("serves beyond loopback only with TLS (or --http-allow-remote), and says why otherwise", async () => {
    const t = await tempDir();
    cleanup = t.cleanup;
    const port = await freePort();
    const plain = await startAgent([
      "--brokers",
      "127.0.0.1:1",
      "--buffer-dir",
      t.dir,
      "--http",
      `0.0.0.0:${port}`,
    ]).then(() => null, (e: Error) => e);
    assert.ok(plain instanceof Error);
    assert.match(
      plain.message,
      /reachable from other hosts.*--http-tls-cert-file.*--http-allow-remote/s,
    );
    // HTTPS with a certificate made here: a client that trusts it is served.
    const [cert, key] = [join(t.dir, "c.pem"), join(t.dir, "k.pem")];
    const made = await run("openssl", [
      "req",
      "-x509",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-keyout",
      key,
      "-out",
      cert,
      "-days",
      "1",
      "-subj",
      "/CN=localhost",
      "-addext",
      "subjectAltName=IP:127.0.0.1,DNS:localhost",
    ]);
    assert.equal(made.code, 0, made.stderr);
    const topic = uniqueTopic("https");
    await createTopics([topic], 1);
    await agent([
      "--brokers",
      BROKERS.join(","),
      "--buffer-dir",
      join(t.dir, "buf"),
      "--http",
      `0.0.0.0:${port}`,
      "--http-tls-cert-file",
      cert,
      "--http-tls-key-file",
      key,
    ]);
    const r = await post(
      `https://127.0.0.1:${port}/topics/${topic}`,
      JSON_V2,
      JSON.stringify({ records: [{ key: "k", value: "over TLS" }] }),
      ["--cacert", cert],
    );
    assert.equal(r.status, 200, r.body);
    const got = await consume([topic], 1);
    assert.deepEqual(got.map((g) => g.value!.toString()), ['"over TLS"']);
  });
});

describe("syslog inputs (--syslog-socket, --syslog-tcp)", () => {
  it("logger over the datagram socket and TCP (RFC 3164, RFC 5424, octet counting) delivers parsed messages", async () => {
    const t = await tempDir();
    cleanup = t.cleanup;
    const topic = uniqueTopic("syslog");
    await createTopics([topic], 1);
    const port = await freePort();
    const sock = join(t.dir, "log.sock");
    await agent([
      "--brokers",
      BROKERS.join(","),
      "--buffer-dir",
      join(t.dir, "buf"),
      "--syslog-socket",
      sock,
      "--syslog-tcp",
      `127.0.0.1:${port}`,
      "--syslog-topic",
      topic,
    ]);
    const loggers = [
      ["-u", sock, "-t", "app3164", "local 3164 message"],
      [
        "--rfc5424",
        "-u",
        sock,
        "-t",
        "app5424",
        "--msgid",
        "M1",
        "--sd-id",
        "x@1",
        "--sd-param",
        'k="v"',
        "local 5424 message",
      ],
      ["-T", "-n", "127.0.0.1", "-P", String(port), "-t", "apptcp", "tcp line message"],
      [
        "-T",
        "--octet-count",
        "-n",
        "127.0.0.1",
        "-P",
        String(port),
        "-p",
        "local3.err",
        "-t",
        "appoct",
        "tcp octet message",
      ],
    ];
    for (const args of loggers) {
      const r = await run("logger", args);
      assert.equal(r.code, 0, `logger ${args.join(" ")}: ${r.stderr}`);
    }
    const got = await consume([topic], 4);
    assert.equal(got.length, 4);
    const byApp = Object.fromEntries(got.map((g) => {
      const v = JSON.parse(g.value!.toString());
      return [v.app_name, { v, key: g.key?.toString() }];
    }));
    assert.equal(byApp.app3164.v.format, "rfc3164");
    assert.equal(byApp.app3164.v.message, "local 3164 message");
    assert.equal(byApp.app3164.key, byApp.app3164.v.hostname); // the agent's host name
    assert.equal(byApp.app5424.v.format, "rfc5424");
    assert.equal(byApp.app5424.v.msg_id, "M1");
    assert.deepEqual(byApp.app5424.v.structured_data["x@1"], { k: "v" });
    assert.equal(byApp.apptcp.v.message, "tcp line message");
    assert.equal(byApp.appoct.v.message, "tcp octet message");
    assert.deepEqual([byApp.appoct.v.facility, byApp.appoct.v.severity], ["local3", "err"]);
  });

  it("counts what careless senders send (no priority, binary junk, over-long messages) and keeps serving others", async () => {
    const t = await tempDir();
    cleanup = t.cleanup;
    const topic = uniqueTopic("syslog-bad");
    await createTopics([topic], 1);
    const [port, mport] = [await freePort(), await freePort()];
    const sock = join(t.dir, "log.sock");
    await agent([
      "--brokers",
      BROKERS.join(","),
      "--buffer-dir",
      join(t.dir, "buf"),
      "--syslog-socket",
      sock,
      "--syslog-tcp",
      `127.0.0.1:${port}`,
      "--syslog-topic",
      topic,
      "--syslog-value",
      "raw",
      "--max-line-bytes",
      "1024",
      "--metrics",
      `127.0.0.1:${mport}`,
    ]);
    // A client that stays connected throughout, and is served after each bad one.
    const steady = net.connect(port, "127.0.0.1");
    await new Promise((r) => steady.once("connect", r));
    const send = (s: net.Socket, data: string | Uint8Array) => new Promise((r) => s.write(data, r));
    const tcp = async (data: string | Uint8Array) => {
      const s = net.connect(port, "127.0.0.1");
      await new Promise((r) => s.once("connect", r));
      await send(s, data);
      s.end();
      await new Promise((r) => s.once("close", r));
    };
    await tcp("no priority here\n");
    await send(steady, "<13>1 - h app - - - steady 1\n");
    await tcp(Buffer.from([0x3c, 0x31, 0x33, 0x3e, 0xff, 0x00, 0xfe, 0x0a, 0x80, 0x81, 0x0a]));
    await send(steady, "<13>1 - h app - - - steady 2\n");
    await tcp(`5000 ${"y".repeat(5000)}13 <13>after big`); // an over-long octet-counted frame, then a good one
    await tcp(`<13>${"z".repeat(3000)}\n<13>after long line\n`);
    const py =
      "import socket,sys\ns=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\ns.sendto(b'<13>'+b'd'*4000, sys.argv[1])\ns.sendto(b'<13>after big datagram', sys.argv[1])";
    const p = await run("python3", ["-c", py, sock]);
    assert.equal(p.code, 0, p.stderr);
    await send(steady, "<13>1 - h app - - - steady 3\n");
    steady.end();

    const values = [
      "no priority here",
      "<13>1 - h app - - - steady 1",
      Buffer.from([0x3c, 0x31, 0x33, 0x3e, 0xff, 0x00, 0xfe]).toString("latin1"),
      Buffer.from([0x80, 0x81]).toString("latin1"),
      "<13>1 - h app - - - steady 2",
      "<13>after big",
      "<13>after long line",
      "<13>after big datagram",
      "<13>1 - h app - - - steady 3",
    ];
    const m = await waitForMetrics(
      `127.0.0.1:${mport}`,
      (x) => x.messagebuffer_records_delivered_total >= values.length,
      "delivered",
    );
    assert.equal(m.messagebuffer_syslog_dropped_too_long_total, 3);
    assert.equal(m.messagebuffer_syslog_without_priority_total, 2); // the plain line, the junk after LF
    assert.equal(m.messagebuffer_syslog_stored_total, values.length);
    const got = await consume([topic], values.length);
    assert.deepEqual(got.map((g) => g.value!.toString("latin1")).sort(), values.sort());
  });

  it("replaces a stale syslog socket file, but not one a live process receives on", async () => {
    const t = await tempDir();
    cleanup = t.cleanup;
    const sock = join(t.dir, "log.sock");
    // A socket file whose process is gone, as a crash leaves it.
    const stale = await run("python3", [
      "-c",
      "import socket,sys\ns=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\ns.bind(sys.argv[1])",
      sock,
    ]);
    assert.equal(stale.code, 0, stale.stderr);
    const [mport] = [await freePort()];
    const first = await agent([
      "--brokers",
      "127.0.0.1:1",
      "--buffer-dir",
      join(t.dir, "a"),
      "--syslog-socket",
      sock,
      "--metrics",
      `127.0.0.1:${mport}`,
    ]);
    assert.match(first.log(), /removed a stale syslog socket file/);
    const second = await startAgent([
      "--brokers",
      "127.0.0.1:1",
      "--buffer-dir",
      join(t.dir, "b"),
      "--syslog-socket",
      sock,
    ]).then(() => null, (e: Error) => e);
    assert.ok(second instanceof Error);
    assert.match(second.message, /another process receives on it/);
    // The first still receives.
    const r = await run("logger", ["-u", sock, "-t", "app", "still here"]);
    assert.equal(r.code, 0, r.stderr);
    await waitForMetrics(
      `127.0.0.1:${mport}`,
      (m) => m.messagebuffer_syslog_stored_total === 1,
      "1 stored",
    );
  });

  it("under when_full block, stops reading a TCP sender while the buffer is full, past --idle-timeout, and loses nothing", async () => {
    const t = await tempDir();
    cleanup = t.cleanup;
    const topic = uniqueTopic("syslog-block");
    const [port, mport] = [await freePort(), await freePort()];
    // The topic does not exist yet, and the agent may not create it: records wait on disk, and
    // the 2 MiB buffer fills.
    await agent([
      "--brokers",
      BROKERS.join(","),
      "--buffer-dir",
      t.dir,
      "--require-existing-topics",
      "--syslog-tcp",
      `127.0.0.1:${port}`,
      "--syslog-topic",
      topic,
      "--syslog-value",
      "raw",
      "--total-size",
      "2",
      "--file-max-size",
      "1",
      "--when-full",
      "block",
      "--idle-timeout",
      "1s",
      "--metrics",
      `127.0.0.1:${mport}`,
    ]);
    const N = 10_000;
    const py = `
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
for i in range(int(sys.argv[2])):
    s.sendall(b"<13>1 - h app - - - %06d " % i + b"x" * 980 + b"\\n")
s.close()
print("all sent")
`;
    const sender = run("python3", ["-c", py, String(port), String(N)]);
    const metrics = `127.0.0.1:${mport}`;
    await waitForMetrics(metrics, (m) => m.messagebuffer_blocked_writes > 0, "a full buffer");
    // Paused for longer than --idle-timeout: the connection must stay, as it is not idle but
    // held back by the agent.
    await new Promise((r) => setTimeout(r, 2500));
    await createTopics([topic], 1);
    const sent = await sender;
    assert.equal(sent.stdout.trim(), "all sent", sent.stderr);
    const m = await waitForMetrics(
      metrics,
      (x) => x.messagebuffer_records_delivered_total === N,
      `${N} delivered`,
      120_000,
    );
    assert.equal(m.messagebuffer_syslog_stored_total, N);
    assert.equal(m.messagebuffer_syslog_partial_dropped_total, 0);
    assert.equal(m.messagebuffer_syslog_dropped_refused_total, 0);
    const got = await consume([topic], N, { timeoutMs: 120_000 });
    const seq = got.sort((a, b) => a.offset - b.offset).map((g) =>
      g.value!.toString().slice(20, 26)
    );
    assert.deepEqual(seq, Array.from({ length: N }, (_, i) => String(i).padStart(6, "0")));
  });

  it("stops cleanly on SIGTERM: a request whose body is still coming is answered 503, the socket file goes", async () => {
    const t = await tempDir();
    cleanup = t.cleanup;
    const [port, mport] = [await freePort(), await freePort()];
    const sock = join(t.dir, "log.sock");
    const a = await agent([
      "--brokers",
      "127.0.0.1:1",
      "--buffer-dir",
      join(t.dir, "buf"),
      "--http",
      `127.0.0.1:${port}`,
      "--syslog-socket",
      sock,
      "--syslog-tcp",
      `127.0.0.1:${await freePort()}`,
      "--metrics",
      `127.0.0.1:${mport}`,
    ]);
    const slow = rawHttp(
      port,
      `POST /topics/t HTTP/1.1\r\nHost: x\r\nContent-Type: ${JSON_V2}\r\nContent-Length: 100\r\n\r\n{"rec`,
      60_000,
    );
    await waitForMetrics(
      `127.0.0.1:${mport}`,
      (m) => m.messagebuffer_http_requests_active === 1,
      "the slow request in progress",
    );
    const code = a.stop("SIGTERM");
    const answer = await slow;
    assert.match(answer, /^HTTP\/1\.1 503/);
    assert.match(answer, /retry-after: 5/i);
    assert.match(answer, /shutting down/);
    assert.equal(await code, 0, a.log());
    assert.equal(existsSync(sock), false);
  });

  it("a start that fails with the inputs on exits 1, names the setting, and leaves nothing behind", async () => {
    const t = await tempDir();
    cleanup = t.cleanup;
    const taken = net.createServer();
    const takenPort = await new Promise<number>((r) =>
      taken.listen(0, "127.0.0.1", () => r((taken.address() as net.AddressInfo).port))
    );
    try {
      const [http, sock] = [await freePort(), join(t.dir, "log.sock")];
      const base = [
        "--brokers",
        "127.0.0.1:1",
        "--buffer-dir",
        join(t.dir, "buf"),
        "--http",
        `127.0.0.1:${http}`,
        "--syslog-socket",
        sock,
      ];
      for (
        const [extra, named] of [
          [
            ["--syslog-tcp", `127.0.0.1:${takenPort}`],
            /--syslog-tcp \\?"127\.0\.0\.1:\d+\\?": the address is in use/,
          ],
          [
            ["--metrics", `127.0.0.1:${takenPort}`],
            /--metrics \\?"127\.0\.0\.1:\d+\\?": the address is in use/,
          ],
        ] as const
      ) {
        const failed = await startAgent([...base, ...extra]).then(() => null, (e: Error) => e);
        assert.ok(failed instanceof Error);
        assert.match(failed.message, /agent exited with 1/);
        assert.match(failed.message, named);
        assert.equal(existsSync(sock), false, "the syslog socket file is left");
        // The HTTP port is free again.
        const probe = net.createServer();
        await new Promise<void>((resolve, reject) => {
          probe.once("error", reject);
          probe.listen(http, "127.0.0.1", () => probe.close(() => resolve()));
        });
      }
    } finally {
      taken.close();
    }
  });
});
