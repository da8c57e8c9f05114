/**
 * The client side of the ingest protocol, for `messagebuffer send`: streams lines from a
 * readable (stdin or a file) to the agent's socket in acknowledged mode and collects the
 * answers.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import net from "node:net";
import type { Readable } from "node:stream";

/** What `send` saw. */
export interface SendSummary {
  lines: number;
  ok: number;
  errors: string[];
}

/**
 * Sends every line of `input` (pipelined) and waits for every answer. Lines are sent as
 * they are: they must already be in the text or JSON form. Rejects if the socket cannot be
 * reached or closes before all answers arrived. When the agent closes a connection that had
 * every line answered (its idle timeout, while the input was quiet, as with `tail -F`), the
 * next input opens a new one: nothing is lost or sent twice.
 */
export function sendLines(
  socketPath: string,
  input: Readable,
  onError?: (e: string) => void,
): Promise<SendSummary> {
  return new Promise((resolve, reject) => {
    const summary: SendSummary = { lines: 0, ok: 0, errors: [] };
    let inputDone = false;
    let failed = false;
    let lastByte = 10;
    /** Lines answered, over all connections. */
    let answered = 0;
    /** The current connection, null between an idle close and the next input. */
    let socket: net.Socket | null = null;
    let connecting: Promise<net.Socket> | null = null;
    const fail = (e: Error) => {
      if (failed) return;
      failed = true;
      socket?.destroy();
      reject(e);
    };
    const finishIfDone = () => {
      if (!failed && inputDone && answered === summary.lines) {
        socket?.end();
        failed = true; // settled
        resolve(summary);
      }
    };
    const connect = (): Promise<net.Socket> =>
      new Promise((ok) => {
        const s = net.connect(socketPath);
        let pendingText = "";
        let ackAnswered = false;
        s.once("error", (e) => {
          const code = (e as { code?: string }).code;
          fail(
            new Error(
              `Cannot send to "${socketPath}": ${
                code === "ENOENT" || code === "ECONNREFUSED"
                  ? `no agent is listening there (${code})`
                  : e.message
              }`,
            ),
          );
        });
        s.once("connect", () => {
          s.write("#ack\n");
          ok(s);
        });
        s.setEncoding("utf8");
        s.on("data", (text: string) => {
          pendingText += text;
          let nl;
          while ((nl = pendingText.indexOf("\n")) >= 0) {
            const answer = pendingText.slice(0, nl);
            pendingText = pendingText.slice(nl + 1);
            if (!ackAnswered) {
              ackAnswered = true; // the answer to #ack
              // The agent refuses a connection (too many open) with one error line for it.
              if (answer !== "ok") {
                fail(
                  new Error(`The agent refused the connection: ${answer.replace(/^error /, "")}`),
                );
                return;
              }
              continue;
            }
            answered++;
            if (answer === "ok") summary.ok++;
            else {
              const msg = answer.replace(/^error /, "");
              summary.errors.push(msg);
              onError?.(msg);
            }
          }
          finishIfDone();
        });
        // The agent's end of the connection (its idle timeout): from then on nothing more is
        // answered on it, and a write would fail ("ended by the other party"), so the next
        // input opens a new connection; the same check runs at "close" (no "end" before it).
        let gone = false;
        const onGone = () => {
          if (gone) return;
          gone = true;
          if (socket === s) socket = null;
          if (failed) return;
          if (answered !== summary.lines || lastByte !== 10) {
            fail(
              new Error(
                `The agent closed the connection after answering ${answered} of ${summary.lines} lines${
                  lastByte !== 10 ? ", in the middle of a line" : ""
                }`,
              ),
            );
          }
          // Otherwise every line was answered: an idle close. The next input reconnects.
        };
        s.once("end", onGone);
        s.once("close", onGone);
      });
    const send = async (b: Buffer) => {
      if (!socket) {
        input.pause();
        connecting ??= connect().then((s) => (socket = s)).finally(() => (connecting = null));
        await connecting;
        input.resume();
      }
      if (failed || !socket) return;
      if (!socket.write(b)) {
        input.pause();
        socket.once("drain", () => input.resume());
      }
    };
    /** Writes go out in input order even while a reconnect is in progress. */
    let queue: Promise<void> = Promise.resolve();
    const enqueue = (b: Buffer) => (queue = queue.then(() => send(b)));
    queue = connect().then((s) => {
      socket = s;
      input.on("data", (chunk: Buffer | string) => {
        const b = typeof chunk === "string" ? Buffer.from(chunk) : chunk;
        if (b.length === 0) return;
        for (let i = b.indexOf(10); i >= 0; i = b.indexOf(10, i + 1)) summary.lines++;
        lastByte = b[b.length - 1];
        void enqueue(b);
      });
      input.once("end", () => {
        if (lastByte !== 10) {
          summary.lines++;
          void enqueue(Buffer.from("\n"));
        }
        void queue.then(() => {
          inputDone = true;
          finishIfDone();
        });
      });
      input.once("error", (e) => fail(e));
    });
  });
}
