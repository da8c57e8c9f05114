// messagebuffer as another project uses it: a small app in its own directory, outside this
// tree, with its own config, imports mod.ts by path under Deno and under Bun, writes one
// record with each Kafka client, and a consumer reads it back from the real broker. The
// Deno app's deno.json holds the one import-map line per client library that the README
// tells Deno users to write.

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { LIBRARY_VERSIONS } from "../../src/provider/kafka/kafka.ts";
import { BROKERS, consume, createTopics, uniqueTopic } from "../_kafka.ts";

const repo = resolve(import.meta.dirname ?? ".", "../..");

const APP = `import { KafkaProvider, MessageBuffer } from ${
  JSON.stringify(pathToFileURL(join(repo, "mod.ts")).href)
};
const [brokers, topic, client, dir] = (globalThis.Deno?.args ?? process.argv.slice(2));
const buffer = await MessageBuffer.open({
  dir,
  provider: new KafkaProvider({ brokers: brokers.split(","), client }),
});
await buffer.write(topic, "hello from an app", { key: "app" });
await buffer.drained(60_000);
console.log("delivered", buffer.stats().counters.delivered);
await buffer.close();
`;

function run(cmd: string, args: string[], cwd: string): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    execFile(cmd, args, { cwd, timeout: 120_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} ${args.join(" ")} failed: ${stderr || err.message}`));
      else resolvePromise(stdout);
    });
  });
}

describe("an app outside the tree imports mod.ts", () => {
  it("names the same client library versions as package.json and deno.json", async () => {
    const pkg = JSON.parse(await readFile(join(repo, "package.json"), "utf8"));
    const deno = JSON.parse(await readFile(join(repo, "deno.json"), "utf8"));
    for (const [lib, version] of Object.entries(LIBRARY_VERSIONS)) {
      assert.equal(pkg.dependencies[lib], version, `package.json ${lib}`);
      assert.equal(deno.imports[lib], `npm:${lib}@${version}`, `deno.json ${lib}`);
    }
  });

  it("under deno without the import-map lines, MessageBuffer.open fails at once, saying which line the app needs", async () => {
    const app = await mkdtemp(join(tmpdir(), "mb-consumer-app-"));
    try {
      await writeFile(
        join(app, "main.ts"),
        `import { KafkaProvider, MessageBuffer } from ${
          JSON.stringify(pathToFileURL(join(repo, "mod.ts")).href)
        };
await MessageBuffer.open({
  dir: ${JSON.stringify(join(app, "buffer"))},
  provider: new KafkaProvider({ brokers: ["127.0.0.1:1"] }),
}).then(
  () => console.log("opened"),
  (e) => console.log(e.name + ": " + e.message),
);
`,
      );
      await writeFile(join(app, "deno.json"), "{}");
      const out = await run(join(repo, "node_modules/.bin/deno"), ["run", "-A", "main.ts"], app);
      assert.match(
        out,
        /^KafkaClientLoadError: cannot load the Kafka client library for client "platformatic"/,
      );
      assert.match(
        out,
        /map it in the app's deno\.json: "imports": \{ "@platformatic\/kafka": "npm:@platformatic\/kafka@2\.12\.1" \}/,
      );
    } finally {
      await rm(app, { recursive: true, force: true });
    }
  });

  it("compiled with a plain `bun build --compile`, the agent (cli.ts) and an app that imports mod.ts both deliver, compressed", async () => {
    const app = await mkdtemp(join(tmpdir(), "mb-consumer-app-"));
    try {
      // bun build takes a path, not a file: URL.
      const source = APP.replace(pathToFileURL(join(repo, "mod.ts")).href, join(repo, "mod.ts"))
        .replace("client })", 'client, compression: "lz4" })');
      await writeFile(join(app, "main.ts"), source);
      const bun = join(repo, "node_modules/.bin/bun");
      await run(bun, ["build", "--compile", "main.ts", "--outfile", join(app, "app")], app);
      await run(bun, ["build", "--compile", "cli.ts", "--outfile", join(app, "agent")], repo);
      const topic = uniqueTopic("consumer-compiled");
      await createTopics([topic], 1);
      // The app: a compiled binary outside this tree, moved away from where it was built.
      const out = await run(
        join(app, "app"),
        [BROKERS.join(","), topic, "platformatic", join(app, "buffer")],
        tmpdir(),
      );
      assert.match(out, /^delivered 1$/m);
      // The agent: --version, then one line through `send`, delivered with snappy.
      assert.match(await run(join(app, "agent"), ["--version"], tmpdir()), /^messagebuffer /);
      const dir = join(app, "agent-buffer");
      const agent = execFile(
        join(app, "agent"),
        ["run", "--brokers", BROKERS.join(","), "--buffer-dir", dir, "--compression", "snappy"],
      );
      try {
        let sent = "";
        for (let i = 0; i < 100 && !/1 accepted/.test(sent); i++) {
          await new Promise((r) => setTimeout(r, 100));
          sent = await new Promise<string>((resolve) => {
            const p = execFile(
              join(app, "agent"),
              ["send", "--buffer-dir", dir],
              (_e, _o, err) => resolve(err),
            );
            p.stdin!.end(`${topic}\tagent\thello from a plain build\n`);
          });
        }
        assert.match(sent, /1 accepted/);
        const got = await consume([topic], 2);
        assert.deepEqual(got.map((r) => r.value!.toString()).sort(), [
          "hello from a plain build",
          "hello from an app",
        ]);
      } finally {
        agent.kill("SIGTERM");
      }
    } finally {
      await rm(app, { recursive: true, force: true });
    }
  });

  for (const runtime of ["deno", "bun"] as const) {
    it(`under ${runtime}, leaves an app's own kafkajs as it was, while both deliver`, async () => {
      const dir = await mkdtemp(join(tmpdir(), "mb-app-kafkajs-"));
      try {
        const topic = uniqueTopic(`app-kafkajs-${runtime}`);
        await createTopics([topic], 1);
        const bin = join(repo, "node_modules/.bin", runtime);
        const args = ["tests/fixtures/app_with_kafkajs.ts", BROKERS.join(","), topic, dir];
        const out = await run(bin, runtime === "deno" ? ["run", "-A", ...args] : args, repo);
        const verdict = JSON.parse(out.trim().split("\n").at(-1)!);
        assert.deepEqual(verdict, { unchanged: true });
        const got = await consume([topic], 3);
        assert.deepEqual(got.map((r) => r.value!.toString()), [
          "from the app's own kafkajs",
          "from messagebuffer's kafkajs client",
          "from the app again",
        ]);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    });

    for (const client of ["platformatic", "kafkajs"] as const) {
      it(`under ${runtime}, with the ${client} client, and the record reaches Kafka`, async () => {
        const app = await mkdtemp(join(tmpdir(), "mb-consumer-app-"));
        try {
          await writeFile(join(app, "main.ts"), APP);
          // The app's own config, and nothing else (a package.json would let Deno resolve
          // from node_modules): Deno maps the client libraries (README); Bun needs none.
          await writeFile(
            join(app, "deno.json"),
            JSON.stringify({
              imports: Object.fromEntries(
                Object.entries(LIBRARY_VERSIONS).map(([lib, v]) => [lib, `npm:${lib}@${v}`]),
              ),
            }),
          );
          const topic = uniqueTopic(`consumer-${runtime}-${client}`);
          await createTopics([topic], 1);
          const bin = join(repo, "node_modules/.bin", runtime);
          const args = [BROKERS.join(","), topic, client, join(app, "buffer")];
          const out = runtime === "deno"
            ? await run(bin, ["run", "-A", "main.ts", ...args], app)
            : await run(bin, ["main.ts", ...args], app);
          assert.match(out, /^delivered 1$/m);
          const got = await consume([topic], 1);
          assert.deepEqual(got.map((r) => [r.key!.toString(), r.value!.toString()]), [
            ["app", "hello from an app"],
          ]);
        } finally {
          await rm(app, { recursive: true, force: true });
        }
      });
    }
  }
});
