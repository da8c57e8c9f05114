// Sends two records to a messagebuffer agent in acknowledged mode and checks every answer.
//
//   node docs/examples/send.mjs SOCKET TOPIC    (or MB_SOCKET and MB_TOPIC in the environment)
//
// The agent answers "#ack" with "ok", then each line with "ok" once the record is stored, or
// with "error line N: REASON". Exits 0 only when all three answers are "ok"; 1 otherwise; 2 on
// usage errors. Node.js 20 (node:net), no packages.

import { connect } from "node:net";
import process from "node:process";

const path = process.argv[2] ?? process.env.MB_SOCKET;
const topic = process.argv[3] ?? process.env.MB_TOPIC;
if (!path || !topic) {
  console.error("usage: send.mjs SOCKET TOPIC (or MB_SOCKET and MB_TOPIC)");
  process.exit(2);
}
// TOPIC<TAB>KEY<TAB>VALUE; in KEY and VALUE, write \\ \n \t \r for those characters.
const lines = [`${topic}\tkey-1\thello from Node.js`, `${topic}\tkey-2\tsecond line`];
const sent = ["#ack", ...lines];

const answers = await new Promise((resolve, reject) => {
  let received = "";
  const socket = connect(path);
  socket.setEncoding("utf8");
  socket.setTimeout(30_000, () => socket.destroy(new Error("no answer within 30 s")));
  // end() sends the lines and shuts down our side: the agent answers every line, then closes.
  socket.on("connect", () => socket.end(sent.map((line) => `${line}\n`).join("")));
  socket.on("data", (chunk) => (received += chunk));
  socket.on("end", () => resolve(received.split("\n").slice(0, -1)));
  socket.on("error", reject);
}).catch((e) => {
  console.error(String(e));
  process.exit(1);
});

let failed = 0;
sent.forEach((line, i) => {
  if (answers[i] !== "ok") {
    console.error(`${JSON.stringify(line)}: ${answers[i] ?? "no answer"}`);
    failed++;
  }
});
if (failed > 0) process.exit(1);
console.log(`send.mjs: ${lines.length} records stored`);
