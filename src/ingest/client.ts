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
 * reached or closes before all answers arrived.
 */
export function sendLines(
  socketPath: string,
  input: Readable,
  onError?: (e: string) => void,
): Promise<SendSummary> {
  return new Promise((resolve, reject) => {
    const summary: SendSummary = { lines: 0, ok: 0, errors: [] };
    let inputDone = false;
    let lastByte = 10;
    let answered = -1; // the "#ack" line is answered too
    let pendingText = "";
    const socket = net.connect(socketPath);
    const finishIfDone = () => {
      if (inputDone && answered === summary.lines) {
        socket.end();
        resolve(summary);
      }
    };
    socket.once("error", (e) => {
      const code = (e as { code?: string }).code;
      reject(
        new Error(
          `Cannot send to "${socketPath}": ${
            code === "ENOENT" || code === "ECONNREFUSED"
              ? `no agent is listening there (${code})`
              : e.message
          }`,
        ),
      );
    });
    socket.once("connect", () => {
      socket.write("#ack\n");
      input.on("data", (chunk: Buffer | string) => {
        const b = typeof chunk === "string" ? Buffer.from(chunk) : chunk;
        if (b.length === 0) return;
        for (let i = b.indexOf(10); i >= 0; i = b.indexOf(10, i + 1)) summary.lines++;
        lastByte = b[b.length - 1];
        if (!socket.write(b)) {
          input.pause();
          socket.once("drain", () => input.resume());
        }
      });
      input.once("end", () => {
        if (lastByte !== 10) {
          socket.write("\n");
          summary.lines++;
        }
        inputDone = true;
        finishIfDone();
      });
      input.once("error", (e) => reject(e));
    });
    socket.setEncoding("utf8");
    socket.on("data", (text: string) => {
      pendingText += text;
      let nl;
      while ((nl = pendingText.indexOf("\n")) >= 0) {
        const answer = pendingText.slice(0, nl);
        pendingText = pendingText.slice(nl + 1);
        answered++;
        if (answered === 0) continue; // the answer to #ack
        if (answer === "ok") summary.ok++;
        else {
          const msg = answer.replace(/^error /, "");
          summary.errors.push(msg);
          onError?.(msg);
        }
      }
      finishIfDone();
    });
    socket.once("close", () => {
      if (!(inputDone && answered === summary.lines)) {
        reject(
          new Error(
            `The agent closed the connection after answering ${
              Math.max(0, answered)
            } of ${summary.lines} lines`,
          ),
        );
      }
    });
  });
}
