// `send`'s client (sendLines) against a stand-in agent that ends connections the way the real
// one does at its idle timeout, to hit exactly the moments that are races against a real one.

import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { PassThrough } from "node:stream";
import { sendLines } from "../../src/ingest/client.ts";
import { tempDir } from "../_helpers.ts";

let root: { dir: string; cleanup: () => Promise<void> };
before(async () => (root = await tempDir("mb-client-")));
after(() => root.cleanup());

/** Answers every line `ok`; ends a connection (its side only) when told to. */
async function standIn(path: string) {
  const lines: string[] = [];
  let received = 0;
  const sockets: net.Socket[] = [];
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    sockets.push(s);
    let text = "";
    s.setEncoding("utf8");
    s.on("error", () => {});
    s.on("data", (t: string) => {
      text += t;
      received += t.length;
      let nl;
      while ((nl = text.indexOf("\n")) >= 0) {
        lines.push(text.slice(0, nl));
        text = text.slice(nl + 1);
        if (!lines.at(-1)!.includes("unanswered")) s.write("ok\n");
      }
    });
    s.on("end", () => s.end());
  });
  await new Promise<void>((r) => server.listen(path, () => r()));
  return {
    lines,
    sockets,
    received: () => received,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

describe("sendLines", () => {
  it("reconnects for input that comes after the agent ended an idle connection, before it closed", async () => {
    const agent = await standIn(`${root.dir}/a.sock`);
    const input = new PassThrough();
    // Input arrives just after the client saw the agent's end, before the socket's "close".
    const emit = net.Socket.prototype.emit;
    let armed = false;
    net.Socket.prototype.emit = function (this: net.Socket, ...args: Parameters<typeof emit>) {
      const handled = emit.apply(this, args);
      if ((args[0] as string) === "end" && armed && !agent.sockets.includes(this)) {
        armed = false;
        input.write("t\t\tsecond\n");
        input.end();
      }
      return handled;
    } as typeof emit;
    try {
      const sent = sendLines(`${root.dir}/a.sock`, input);
      input.write("t\t\tfirst\n");
      while (agent.lines.length < 2) await new Promise((r) => setTimeout(r, 5)); // #ack, first
      armed = true;
      agent.sockets[0].end(); // the idle close: its answer goes out before the end
      const summary = await sent;
      assert.deepEqual(summary, { lines: 2, ok: 2, errors: [] });
      assert.deepEqual(agent.lines, ["#ack", "t\t\tfirst", "#ack", "t\t\tsecond"]);
    } finally {
      net.Socket.prototype.emit = emit;
      await agent.close();
    }
  });

  it("fails, without hanging, when the agent ends a connection with a line unanswered or mid-line", async () => {
    const agent = await standIn(`${root.dir}/b.sock`);
    try {
      for (
        const [text, expected] of [
          ["t\t\tfirst\nt\t\tunanswered\n", /after answering 1 of 2 lines$/],
          [
            "t\t\tfirst\nt\t\tcut in the mid",
            /after answering 1 of 1 lines, in the middle of a line$/,
          ],
        ] as const
      ) {
        const input = new PassThrough();
        const from = agent.sockets.length;
        const sent = sendLines(`${root.dir}/b.sock`, input);
        input.write(text);
        const until = agent.received() + "#ack\n".length + text.length;
        while (agent.received() < until) await new Promise((r) => setTimeout(r, 5));
        agent.sockets[from].end();
        await assert.rejects(sent, expected);
      }
    } finally {
      await agent.close();
    }
  });
});
