// The Kafka provider over TLS, against the SSL listeners of the broker that scripts/kafka.sh
// runs: one-way TLS (KAFKA_PORT+3) with the right and a wrong CA, and mutual TLS
// (KAFKA_PORT+4) with and without a client certificate. scripts/test.sh sets
// MB_TEST_TLS_BROKERS, MB_TEST_MTLS_BROKERS and MB_TEST_TLS_DIR (where kafka.sh put ca.pem,
// client-cert.pem, client-key.pem and wrong-ca.pem). Topics are made and read back over
// PLAINTEXT, so what a consumer sees does not depend on the TLS under test.

import { afterEach, describe, it } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import process from "node:process";
import { type MessageBuffer, type Provider, silentLogger } from "../../mod.ts";
import { OpenBuffers, tempDir, waitFor } from "../_helpers.ts";
import { consume, createTopics, KAFKA_CLIENT, kafkaProvider, uniqueTopic } from "../_kafka.ts";

const TLS_BROKERS = process.env.MB_TEST_TLS_BROKERS?.split(",");
const MTLS_BROKERS = process.env.MB_TEST_MTLS_BROKERS?.split(",");
const TLS_DIR = process.env.MB_TEST_TLS_DIR;
const skip = TLS_BROKERS && MTLS_BROKERS && TLS_DIR
  ? false
  : "MB_TEST_TLS_BROKERS, MB_TEST_MTLS_BROKERS and MB_TEST_TLS_DIR are not set " +
    "(scripts/test.sh sets them for its own broker)";
// Neither runtime prints a skip reason, so say it here.
if (skip) console.log(`tests/provider/tls_test.ts: skipping the TLS tests: ${skip}`);

/** A PEM file kafka.sh made, as text. */
function pem(name: "ca.pem" | "wrong-ca.pem" | "client-cert.pem" | "client-key.pem"): string {
  return readFileSync(`${TLS_DIR}/${name}`, "utf8");
}

/** What the tests ask of a provider: brokers and TLS, as PEM text. */
interface TlsProviderOptions {
  brokers: string[];
  tls: { ca?: string; cert?: string; key?: string };
}

/** The provider under test. The only place that names one, so that others can run these tests. */
function makeProvider(opts: TlsProviderOptions): Provider {
  return kafkaProvider({ ...opts, connectionTimeoutMs: 3_000 });
}

let cleanup = async () => {};
const buffers = new OpenBuffers();

function openBuffer(dir: string, provider: Provider): Promise<MessageBuffer> {
  return buffers.open({
    dir,
    provider,
    logger: silentLogger,
    retryInitialMs: 100,
    retryMaxMs: 1000,
  });
}

const closeBuffer = (b: MessageBuffer) => buffers.close(b);

afterEach(async () => {
  await buffers.closeAll();
  await cleanup();
});

/** Writes `values` to `topic` and returns them. */
async function writeAll(b: MessageBuffer, topic: string, values: string[]): Promise<string[]> {
  for (const v of values) await b.write(topic, v);
  return values;
}

/** Waits for the first failed send and checks that it kept the records and did not connect. */
async function failsKeepingRecords(b: MessageBuffer, records: number): Promise<string> {
  await waitFor(() => b.stats().provider.lastError !== null, 30_000, "the TLS failure");
  const { provider, backlog } = b.stats();
  assert.notEqual(provider.state, "ready");
  assert.equal(backlog.records, records, "records wait on disk");
  return provider.lastError!;
}

describe(`Kafka provider (${KAFKA_CLIENT}) over TLS, real broker`, () => {
  it(
    "delivers over one-way TLS with the broker's CA, and a consumer reads back exactly what was written",
    { skip },
    async () => {
      const t = await tempDir();
      cleanup = t.cleanup;
      const topic = uniqueTopic("tls");
      await createTopics([topic], 1);
      const b = await openBuffer(
        t.dir,
        makeProvider({ brokers: TLS_BROKERS!, tls: { ca: pem("ca.pem") } }),
      );
      const N = 1000;
      for (let i = 0; i < N; i++) {
        await b.write(topic, `tls-${i}`, { key: `k-${i % 7}`, headers: { seq: String(i) } });
      }
      await b.drained(60_000);
      assert.equal(b.stats().provider.state, "ready");
      assert.equal(b.stats().provider.lastError, null);
      const got = await consume([topic], N);
      assert.deepEqual(
        got.map((r) => [r.value!.toString(), r.key!.toString(), r.headers.seq!.toString()]),
        Array.from({ length: N }, (_, i) => [`tls-${i}`, `k-${i % 7}`, String(i)]),
      );
    },
  );

  it(
    "with a wrong CA, keeps every record and says the broker's certificate could not be verified; with the right CA, delivers them all",
    { skip },
    async () => {
      const t = await tempDir();
      cleanup = t.cleanup;
      const topic = uniqueTopic("tls-wrong-ca");
      await createTopics([topic], 1);
      const wrong = await openBuffer(
        t.dir,
        makeProvider({ brokers: TLS_BROKERS!, tls: { ca: pem("wrong-ca.pem") } }),
      );
      const values = await writeAll(wrong, topic, Array.from({ length: 100 }, (_, i) => `w-${i}`));
      const error = await failsKeepingRecords(wrong, 100);
      assert.match(error, /certificate of broker \S+ could not be verified/);
      assert.ok(error.includes(TLS_BROKERS![0]), `names the broker: ${error}`);
      await closeBuffer(wrong);
      const right = await openBuffer(
        t.dir,
        makeProvider({ brokers: TLS_BROKERS!, tls: { ca: pem("ca.pem") } }),
      );
      await right.drained(60_000);
      const got = await consume([topic], values.length);
      assert.deepEqual(got.map((r) => r.value!.toString()), values);
    },
  );

  it(
    "delivers over mutual TLS with a client certificate; without one, keeps every record and says the broker wants one",
    { skip },
    async () => {
      const t = await tempDir();
      cleanup = t.cleanup;
      const topic = uniqueTopic("mtls");
      await createTopics([topic], 1);
      const ca = pem("ca.pem");
      const without = await openBuffer(
        t.dir,
        makeProvider({ brokers: MTLS_BROKERS!, tls: { ca } }),
      );
      const values = await writeAll(
        without,
        topic,
        Array.from({ length: 100 }, (_, i) => `m-${i}`),
      );
      const error = await failsKeepingRecords(without, 100);
      assert.match(error, /broker \S+ refused the connection, wanting a client certificate/);
      assert.ok(error.includes(MTLS_BROKERS![0]), `names the broker: ${error}`);
      await closeBuffer(without);
      const withCert = await openBuffer(
        t.dir,
        makeProvider({
          brokers: MTLS_BROKERS!,
          tls: { ca, cert: pem("client-cert.pem"), key: pem("client-key.pem") },
        }),
      );
      values.push(...await writeAll(withCert, topic, ["after-1", "after-2"]));
      await withCert.drained(60_000);
      assert.equal(withCert.stats().provider.state, "ready");
      const got = await consume([topic], values.length);
      assert.deepEqual(got.map((r) => r.value!.toString()), values);
    },
  );
});
