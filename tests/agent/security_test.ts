// Who may write and read: the agent's buffer directory and every file in it are owner-only
// whatever the umask; the agent refuses a buffer directory another user owns or others may
// write to (unless --allow-unsafe-buffer-dir); and secrets (the SASL password, the TLS key)
// never appear in the log, --print-config, status, top or /metrics and /health.
// A real agent process (from source, or the executable with MB_AGENT_BIN), a real broker.

import { afterEach, describe, it } from "node:test";
import assert from "node:assert/strict";
import { chmod, chown, lstat, mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import process from "node:process";
import { spawnSync } from "node:child_process";
import { SEGMENT_FOOTER_SIZE } from "../../src/segment/format.ts";
import {
  type Agent,
  agentCommand,
  freePort,
  RawClient,
  runCli,
  startAgent,
  waitForMetrics,
} from "../_agent.ts";
import { tempDir, waitFor } from "../_helpers.ts";
import { BROKERS, consume, createTopics, uniqueTopic } from "../_kafka.ts";

let cleanup = async () => {};
const agents: Agent[] = [];
afterEach(async () => {
  for (const a of agents.splice(0)) await a.stop("SIGKILL");
  await cleanup();
});

/** A uid that is not ours (nobody), for "owned by another user". */
const OTHER_UID = 65534;
const uid = process.getuid!();

/** Every directory and file under `root` (root included) with its permission bits; no sockets. */
async function tree(root: string): Promise<Array<{ path: string; dir: boolean; mode: string }>> {
  const out = [];
  const st = await lstat(root);
  out.push({ path: root, dir: st.isDirectory(), mode: (st.mode & 0o7777).toString(8) });
  if (st.isDirectory()) {
    for (const name of await readdir(root)) {
      const path = `${root}/${name}`;
      if ((await lstat(path)).isSocket()) continue;
      out.push(...await tree(path));
    }
  }
  return out;
}

/** Asserts every directory under `root` is 0700 and every file 0600; returns their paths. */
async function assertOwnerOnly(root: string): Promise<string[]> {
  const all = await tree(root);
  for (const e of all) assert.equal(e.mode, e.dir ? "700" : "600", `${e.path} is ${e.mode}`);
  return all.map((e) => e.path.slice(root.length + 1));
}

describe("agent: the buffer directory is owner-only", () => {
  it("creates the buffer directory, its parents and every file in it 0700/0600, even under umask 000", async () => {
    const t = await tempDir();
    cleanup = t.cleanup;
    const parent = `${t.dir}/made`;
    const dir = `${parent}/buffer`;
    const wide = { umask: "000" };
    const seen = new Set<string>();
    const check = async () => {
      for (const p of await assertOwnerOnly(parent)) {
        seen.add(p.replace(/\d{20}-[0-9a-f]+/, "N").replace(/@\d+/, "@O"));
      }
    };
    // Deliver two records and dead-letter one; replay it (the journal); then, offline, leave a
    // backlog, corrupt a segment and open again (quarantine).
    const topic = uniqueTopic("perm");
    await createTopics([topic], 1, { "max.message.bytes": "20000" });
    const metrics = `127.0.0.1:${await freePort()}`;
    const common = ["--buffer-dir", dir, "--file-max-size", "0.01", "--total-size", "10"];
    const a = await startAgent(
      ["--brokers", BROKERS.join(","), ...common, "--metrics", metrics],
      {},
      wide,
    );
    agents.push(a);
    const sock = `${dir}/messagebuffer.sock`;
    const send = await runCli(
      ["send", "--socket", sock],
      `${topic}\tk\tfirst\n${topic}\tk\t${"x".repeat(30000)}\n${topic}\tk\tlast\n`,
    );
    assert.equal(send.code, 0, send.stderr);
    await waitForMetrics(
      metrics,
      (m) =>
        m.messagebuffer_records_delivered_total === 2 &&
        m.messagebuffer_records_dead_lettered_total === 1,
      "two records delivered, one dead-lettered",
    );
    await check();
    const replayed = await runCli(["replay", "--buffer-dir", dir], undefined, wide);
    assert.equal(replayed.code, 0, replayed.stderr);
    await waitForMetrics(
      metrics,
      (m) => m.messagebuffer_records_dead_lettered_total === 2,
      "the replayed record dead-lettered again",
    );
    await check();
    assert.equal(await a.stop("SIGTERM"), 0);

    const offline = ["--brokers", "127.0.0.1:1", ...common];
    const b = await startAgent(offline, {}, wide);
    agents.push(b);
    const lines = Array.from({ length: 300 }, (_, i) => `${topic}\tk${i}\tbacklog-${i}\n`);
    assert.equal((await runCli(["send", "--socket", sock], lines.join(""))).code, 0);
    await check();
    assert.equal(await b.stop("SIGTERM"), 0);
    const segs = (await readdir(dir)).filter((n) => n.endsWith(".seg")).sort();
    const last = `${dir}/${segs.at(-1)}`;
    const bytes = (await readFile(last)).subarray(0, -SEGMENT_FOOTER_SIZE);
    bytes[16 + 25] ^= 0xff;
    await writeFile(last, bytes); // (writeFile keeps the file's mode)
    const c = await startAgent(offline, {}, wide);
    agents.push(c);
    await waitFor(() => /quarantin/i.test(c.log()), 10_000, "a quarantine");
    await check();
    assert.equal(await c.stop("SIGTERM"), 0);
    await check();
    for (
      const kind of [
        "",
        "buffer",
        "buffer/LOCK",
        "buffer/N.seg",
        "buffer/N.s",
        "buffer/SYNCED",
        "buffer/INFLIGHT",
        "buffer/dead",
        "buffer/dead/N.seg",
        "buffer/dead/replay.log",
        "buffer/quarantine",
        "buffer/quarantine/N.seg@O",
      ]
    ) {
      assert.ok(seen.has(kind), `no ${kind} among ${[...seen].join(", ")}`);
    }
  });

  it("creates lanes/, each lane's directory and lanes/topics owner-only under umask 000", async () => {
    const t = await tempDir();
    cleanup = t.cleanup;
    const dir = `${t.dir}/buffer`;
    const a = await startAgent(
      ["--brokers", "127.0.0.1:1", "--buffer-dir", dir, "--lanes", "2"],
      {},
      { umask: "000" },
    );
    agents.push(a);
    const c = await RawClient.connect(`${dir}/messagebuffer.sock`);
    c.write("#ack\n" + ["a", "b", "c", "d"].map((x) => `topic-${x}\t\tv\n`).join(""));
    assert.deepEqual(await c.waitAnswers(5), ["ok", "ok", "ok", "ok", "ok"]);
    c.end();
    const running = await assertOwnerOnly(dir);
    assert.ok(running.includes("lanes/topics"), running.join(", "));
    assert.ok(running.includes("lanes/1"), running.join(", "));
    assert.ok(running.some((p) => /^lanes\/1\/.*\.seg$/.test(p)), running.join(", "));
    assert.equal(await a.stop("SIGTERM"), 0);
    await assertOwnerOnly(dir);
  });
});

describe("agent: an unsafe buffer directory is refused", () => {
  it("refuses a buffer directory another user owns, naming it, its owner and mode and the override, and writes nothing there", async () => {
    const t = await tempDir();
    cleanup = t.cleanup;
    const dir = `${t.dir}/theirs`;
    await mkdir(dir);
    await chmod(dir, 0o700);
    await chown(dir, OTHER_UID, OTHER_UID);
    const run = await runCli(["run", "--brokers", "127.0.0.1:1", "--buffer-dir", dir], "", {
      timeoutMs: 20_000,
    });
    assert.equal(run.code, 1, run.stderr);
    assert.equal(
      run.stderr.trim(),
      `messagebuffer run: buffer directory "${dir}" is owned by uid ${OTHER_UID} (mode 0700), ` +
        `not by the user the agent runs as (uid ${uid}): that user could delete or replace ` +
        `buffered records; run the agent as its owner (e.g. setpriv --reuid=${OTHER_UID} ` +
        `--regid=${OTHER_UID} --init-groups, or sudo -u with the owner's name), or chown the ` +
        `directory to uid ${uid}, or pass --allow-unsafe-buffer-dir to use it anyway`,
    );
    assert.deepEqual(await readdir(dir), []);
    // A dry run only reads: it needs no ownership, and writes nothing.
    const dry = await runCli(["replay", "--buffer-dir", dir, "--dry-run"], "", {
      timeoutMs: 20_000,
    });
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, /0 records to replay from 0 file\(s\)\ndry run: nothing sent/);
    assert.deepEqual(await readdir(dir), []);
    // A replay writes its journal in dead/: refused, naming replay, not the agent.
    const replay = await runCli(["replay", "--buffer-dir", dir], "", { timeoutMs: 20_000 });
    assert.equal(replay.code, 2, replay.stderr);
    assert.match(
      replay.stderr,
      /^messagebuffer replay: buffer directory .* owned by uid 65534 .*not by the user replay runs as/m,
    );
    assert.deepEqual(await readdir(dir), []);

    // The override, as a flag and as a config key: the agent starts, and says what it allowed.
    const a = await startAgent([
      "--brokers",
      "127.0.0.1:1",
      "--buffer-dir",
      dir,
      "--allow-unsafe-buffer-dir",
    ]);
    agents.push(a);
    assert.match(a.log(), /WARN using an unsafe buffer directory .*owned by uid 65534/);
    assert.equal(await a.stop("SIGTERM"), 0);
    await writeFile(
      `${t.dir}/c.json`,
      JSON.stringify({ brokers: ["127.0.0.1:1"], buffer_dir: dir, allow_unsafe_buffer_dir: true }),
    );
    const printed = await runCli(["run", "--config", `${t.dir}/c.json`, "--print-config"]);
    assert.equal(JSON.parse(printed.stdout).allow_unsafe_buffer_dir, true);
    const b = await startAgent(["--config", `${t.dir}/c.json`]);
    agents.push(b);
    assert.equal(await b.stop("SIGTERM"), 0);
    const allowed = await runCli(["replay", "--buffer-dir", dir, "--allow-unsafe-buffer-dir"]);
    assert.equal(allowed.code, 0, allowed.stderr);
    assert.match(allowed.stderr, /warning: buffer directory/);
    assert.match(allowed.stdout, /replayed 0 records/);
  });

  it("refuses a buffer directory its group or others may write to; one they may only read keeps its mode", async () => {
    const t = await tempDir();
    cleanup = t.cleanup;
    const cases: Array<[number, string]> = [
      [0o770, "writable by its group, "],
      [0o702, "writable by others, "],
      [0o777, "writable by its group and others, "],
      [0o1777, "writable by its group and others, "],
    ];
    for (const [mode, what] of cases) {
      const dir = `${t.dir}/m${mode.toString(8)}`;
      await mkdir(dir);
      await chmod(dir, mode);
      const run = await runCli(["run", "--brokers", "127.0.0.1:1", "--buffer-dir", dir], "", {
        timeoutMs: 20_000,
      });
      assert.equal(run.code, 1, run.stderr);
      const shown = mode.toString(8).padStart(4, "0");
      assert.equal(
        run.stderr.trim(),
        `messagebuffer run: buffer directory "${dir}" (owner uid ${uid}, mode ${shown}) is ` +
          `${what}who could delete or replace buffered records; chmod go-w "${dir}" (the ` +
          `agent creates it 0700), or pass --allow-unsafe-buffer-dir to use it anyway`,
      );
      assert.deepEqual(await readdir(dir), []);
    }
    // Readable by the group (for a socket inside, say) is not writable: used as it is.
    const readable = `${t.dir}/m750`;
    await mkdir(readable);
    await chmod(readable, 0o750);
    const a = await startAgent(["--brokers", "127.0.0.1:1", "--buffer-dir", readable]);
    agents.push(a);
    assert.doesNotMatch(a.log(), /unsafe/);
    assert.equal(await a.stop("SIGTERM"), 0);
    assert.equal(((await lstat(readable)).mode & 0o7777).toString(8), "750");
  });
});

describe("agent: the Debian package's buffer directory", () => {
  // postinst makes /var/lib/messagebuffer owned by the messagebuffer user, 0700, and the unit
  // runs the agent as that user with UMask=0007: here, nobody (65534) stands in for it.
  // Whether the agent can run as that user here (root, setpriv, a checkout others may read).
  const [cmd, argv] = agentCommand(["--version"]);
  const runsAsOther = uid === 0 && spawnSync(
        "setpriv",
        [`--reuid=${OTHER_UID}`, `--regid=${OTHER_UID}`, "--clear-groups", "--", cmd, ...argv],
      ).status === 0;
  it("is taken by the agent running as its owner, and what it creates there is owner-only", {
    skip: runsAsOther ? false : "cannot run the agent as uid 65534 here (needs root and setpriv)",
  }, async () => {
    const t = await tempDir();
    cleanup = t.cleanup;
    await chown(t.dir, OTHER_UID, OTHER_UID);
    const dir = `${t.dir}/var-lib-messagebuffer`;
    await mkdir(dir);
    await chmod(dir, 0o700);
    await chown(dir, OTHER_UID, OTHER_UID);
    const a = await startAgent(
      ["--brokers", "127.0.0.1:1", "--buffer-dir", dir, "--socket-mode", "0660"],
      {},
      { uid: OTHER_UID, umask: "0007" },
    );
    agents.push(a);
    assert.doesNotMatch(a.log(), /unsafe/);
    const c = await RawClient.connect(`${dir}/messagebuffer.sock`);
    c.write("#ack\nt\t\tv\n");
    assert.deepEqual(await c.waitAnswers(2), ["ok", "ok"]);
    c.end();
    const made = await assertOwnerOnly(dir);
    assert.ok(made.some((p) => p.endsWith(".seg")), made.join(", "));
    for (const p of made) assert.equal((await lstat(`${dir}/${p}`)).uid, OTHER_UID, p);
    assert.equal(await a.stop("SIGTERM"), 0);
  });
});

describe("agent: secrets stay secret", () => {
  /** Everything an operator can see of a running agent: what it logged and what it serves. */
  async function everythingShown(
    a: Agent,
    dir: string,
    metrics: string,
    printConfig: () => Promise<string>,
  ): Promise<Record<string, string>> {
    const get = async (path: string) => await (await fetch(`http://${metrics}${path}`)).text();
    const top = await runCli(["top", "--socket", `${dir}/messagebuffer.sock`, "--json"]);
    const status = await runCli(["status", "--buffer-dir", dir, "--json"]);
    const statusText = await runCli(["status", "--buffer-dir", dir]);
    return {
      "/metrics": await get("/metrics"),
      "/health": await get("/health"),
      "top --json": top.stdout + top.stderr,
      "status --json": status.stdout + status.stderr,
      status: statusText.stdout + statusText.stderr,
      "--print-config": await printConfig(),
      log: a.log(),
    };
  }

  function assertAbsent(shown: Record<string, string>, secrets: string[]): void {
    for (const [where, text] of Object.entries(shown)) {
      for (const s of secrets) assert.ok(!text.includes(s), `${where} shows a secret:\n${text}`);
    }
  }

  it("never shows the HTTP input's bearer token, nor a wrong one a client sent, at --log-level debug", async () => {
    const t = await tempDir();
    cleanup = t.cleanup;
    const topic = uniqueTopic("secret-http");
    await createTopics([topic], 1);
    const token = `tok-${Math.random().toString(36).slice(2)}-en`;
    const wrong = `wrong-${Math.random().toString(36).slice(2)}-tok`;
    const file = `${t.dir}/token`;
    await writeFile(file, `${token}\n`, { mode: 0o600 });
    const [http, metrics] = [`127.0.0.1:${await freePort()}`, `127.0.0.1:${await freePort()}`];
    const args = [
      "--brokers",
      BROKERS.join(","),
      "--buffer-dir",
      `${t.dir}/buf`,
      "--log-level",
      "debug",
      "--http",
      http,
      "--http-token-file",
      file,
    ];
    const a = await startAgent([...args, "--metrics", metrics]);
    agents.push(a);
    const post = (bearer: string) =>
      fetch(`http://${http}/topics/${topic}`, {
        method: "POST",
        headers: {
          authorization: `Bearer ${bearer}`,
          "content-type": "application/vnd.kafka.json.v2+json",
        },
        body: JSON.stringify({ records: [{ value: "v" }] }),
      }).then(async (r) => [r.status, await r.text()] as const);
    const [refused, refusal] = await post(wrong);
    assert.equal(refused, 401, refusal);
    const [ok] = await post(token);
    assert.equal(ok, 200);
    await waitForMetrics(metrics, (m) => m.messagebuffer_records_delivered_total === 1, "delivery");
    const shown = await everythingShown(a, `${t.dir}/buf`, metrics, async () => {
      const p = await runCli(["run", ...args, "--print-config"]);
      return p.stdout + p.stderr;
    });
    assertAbsent({ ...shown, "the 401 answer": refusal }, [token, wrong]);
    assert.equal(await a.stop("SIGTERM"), 0);
  });

  const saslBrokers = process.env.MB_TEST_SASL_BROKERS;
  for (const [client, format] of [["platformatic", "text"], ["kafkajs", "json"]] as const) {
    it(
      `never shows the SASL password, wrong or right, at --log-level debug (${client}, ${format} log)`,
      {
        skip: saslBrokers ? false : "MB_TEST_SASL_BROKERS is not set (scripts/test.sh sets it)",
      },
      async () => {
        const t = await tempDir();
        cleanup = t.cleanup;
        const topic = uniqueTopic("secret");
        await createTopics([topic], 1);
        const login = ["--sasl-mechanism", "scram-sha-256", "--sasl-username", "alice"];
        const common = [
          "--brokers",
          saslBrokers!,
          ...login,
          "--kafka-client",
          client,
          "--log-level",
          "debug",
          "--log-format",
          format,
        ];

        // A wrong password from the environment: Kafka refuses the login, the agent says so.
        const wrong = `wrong-${Math.random().toString(36).slice(2)}-pw`;
        const env = { MESSAGEBUFFER_SASL_PASSWORD: wrong };
        const dir1 = `${t.dir}/wrong`;
        const m1 = `127.0.0.1:${await freePort()}`;
        const a = await startAgent([...common, "--buffer-dir", dir1, "--metrics", m1], env);
        agents.push(a);
        const sent = await runCli(
          ["send", "--socket", `${dir1}/messagebuffer.sock`],
          `${topic}\t\tx\n`,
        );
        assert.equal(sent.code, 0, sent.stderr);
        await waitFor(
          () => /SASL|[Aa]uthentication/.test(a.log()),
          30_000,
          "the failed login in the log",
        );
        const shown1 = await everythingShown(a, dir1, m1, async () => {
          const p = await runCli(
            [
              "run",
              ...common,
              "--buffer-dir",
              dir1,
              "--print-config",
            ],
            undefined,
            { env },
          );
          assert.match(p.stdout, /"sasl_password": "\*\*\*\*\*/);
          return p.stdout + p.stderr;
        });
        assert.match(shown1["/health"], /SASL|[Aa]uthentication/);
        assertAbsent(shown1, [wrong]);
        assert.equal(await a.stop("SIGTERM"), 0);

        // The right password from a file: delivered, and the password shown nowhere.
        const file = `${t.dir}/password`;
        await writeFile(file, "alice-secret\n", { mode: 0o600 });
        const dir2 = `${t.dir}/right`;
        const m2 = `127.0.0.1:${await freePort()}`;
        const withFile = [...common, "--sasl-password-file", file, "--buffer-dir", dir2];
        const b = await startAgent([...withFile, "--metrics", m2]);
        agents.push(b);
        const ok = await runCli(
          ["send", "--socket", `${dir2}/messagebuffer.sock`],
          `${topic}\t\ty\n`,
        );
        assert.equal(ok.code, 0, ok.stderr);
        await waitForMetrics(m2, (m) => m.messagebuffer_records_delivered_total === 1, "delivery");
        const shown2 = await everythingShown(b, dir2, m2, async () => {
          const p = await runCli(["run", ...withFile, "--print-config"]);
          return p.stdout + p.stderr;
        });
        assertAbsent(shown2, ["alice-secret"]);
        assert.equal(await b.stop("SIGTERM"), 0);
        const got = await consume([topic], 1);
        assert.deepEqual(got.map((r) => r.value!.toString()), ["y"]);
      },
    );
  }

  const mtlsBrokers = process.env.MB_TEST_MTLS_BROKERS;
  const tlsDir = process.env.MB_TEST_TLS_DIR;
  it("never shows the TLS private key, whether it works or the broker refuses it", {
    skip: mtlsBrokers && tlsDir
      ? false
      : "MB_TEST_MTLS_BROKERS and MB_TEST_TLS_DIR are not set (scripts/test.sh sets them)",
  }, async () => {
    const t = await tempDir();
    cleanup = t.cleanup;
    const key = await readFile(`${tlsDir}/client-key.pem`, "utf8");
    const body = key.split("\n").filter((l) => l !== "" && !l.startsWith("-----"));
    assert.ok(body.length > 3, "a PEM key");
    // Bits of the key: every line of its body, and the body as one string.
    const secrets = [...body, body.join("")];
    const topic = uniqueTopic("secret-tls");
    await createTopics([topic], 1);
    const tls = (keyFile: string) => [
      "--brokers",
      mtlsBrokers!,
      "--tls-ca-file",
      `${tlsDir}/ca.pem`,
      "--tls-cert-file",
      `${tlsDir}/client-cert.pem`,
      "--tls-key-file",
      keyFile,
      "--log-level",
      "debug",
    ];

    const dir1 = `${t.dir}/good`;
    const m1 = `127.0.0.1:${await freePort()}`;
    const a = await startAgent([
      ...tls(`${tlsDir}/client-key.pem`),
      "--buffer-dir",
      dir1,
      "--metrics",
      m1,
    ]);
    agents.push(a);
    const ok = await runCli(["send", "--socket", `${dir1}/messagebuffer.sock`], `${topic}\t\tz\n`);
    assert.equal(ok.code, 0, ok.stderr);
    await waitForMetrics(m1, (m) => m.messagebuffer_records_delivered_total === 1, "delivery");
    assertAbsent(
      await everythingShown(a, dir1, m1, async () => {
        const p = await runCli(["run", ...tls(`${tlsDir}/client-key.pem`), "--print-config"]);
        return p.stdout + p.stderr;
      }),
      secrets,
    );
    assert.equal(await a.stop("SIGTERM"), 0);

    // A damaged key (one line of its body changed): the TLS handshake cannot use it, and the
    // errors the agent logs and serves name neither that key nor the good one.
    const damaged = body.slice();
    damaged[2] = damaged[2].split("").reverse().join("");
    const badKey = key.replace(body[2], damaged[2]);
    await writeFile(`${t.dir}/bad-key.pem`, badKey, { mode: 0o600 });
    const dir2 = `${t.dir}/bad`;
    const m2 = `127.0.0.1:${await freePort()}`;
    const b = await startAgent([
      ...tls(`${t.dir}/bad-key.pem`),
      "--buffer-dir",
      dir2,
      "--metrics",
      m2,
    ]);
    agents.push(b);
    const sent = await runCli(
      ["send", "--socket", `${dir2}/messagebuffer.sock`],
      `${topic}\t\tw\n`,
    );
    assert.equal(sent.code, 0, sent.stderr);
    await waitFor(() => /WARN/.test(b.log()), 30_000, "the failed send in the log");
    assertAbsent(
      await everythingShown(b, dir2, m2, async () => {
        const p = await runCli(["run", ...tls(`${t.dir}/bad-key.pem`), "--print-config"]);
        return p.stdout + p.stderr;
      }),
      [...secrets, ...damaged, damaged.join("")],
    );
    await b.stop("SIGKILL");
  });
});
