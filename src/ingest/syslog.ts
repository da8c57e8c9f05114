/**
 * Syslog messages: parsing RFC 5424 and RFC 3164 (what `logger`, rsyslog and syslog-ng send),
 * and mapping a message to a record (topic, key, value, timestamp) by the agent's settings.
 *
 * Parsing is lenient, as syslog daemons are: a message without a valid priority (`<PRI>`) is
 * taken whole as the text of a `user.notice` message (RFC 3164 section 4.3.3 asks a relay to
 * do so), and flagged so that the server counts it; a header field that does not fit is left
 * in the text. Nothing is ever dropped here: bytes that are not UTF-8 are kept, as
 * `message_base64` in the JSON value, or as they came in the raw value.
 *
 * @module
 */

import { Buffer, isUtf8 } from "node:buffer";

/** RFC 5424 facility names, by code. */
export const FACILITIES = [
  "kern",
  "user",
  "mail",
  "daemon",
  "auth",
  "syslog",
  "lpr",
  "news",
  "uucp",
  "cron",
  "authpriv",
  "ftp",
  "ntp",
  "security",
  "console",
  "solaris-cron",
  "local0",
  "local1",
  "local2",
  "local3",
  "local4",
  "local5",
  "local6",
  "local7",
] as const;

/** RFC 5424 severity names, by code. */
export const SEVERITIES = [
  "emerg",
  "alert",
  "crit",
  "err",
  "warning",
  "notice",
  "info",
  "debug",
] as const;

/** A parsed syslog message. Absent header fields (`-` in RFC 5424) are null. */
export interface SyslogMessage {
  format: "rfc5424" | "rfc3164" | "unknown";
  /** False when the message had no valid `<PRI>`: it was taken as `user.notice` (13). */
  hasPriority: boolean;
  facility: number;
  severity: number;
  /** The timestamp as written, or null. */
  timestamp: string | null;
  /** The timestamp in ms since the epoch, when it could be read. */
  time: number | null;
  hostname: string | null;
  appName: string | null;
  procId: string | null;
  msgId: string | null;
  /** RFC 5424 structured data: SD-ID to its parameters. Null when none. */
  structuredData: Record<string, Record<string, string>> | null;
  /** The MSG part, as bytes (a UTF-8 BOM removed). */
  message: Uint8Array;
}

const LT = 60, GT = 62, SP = 32;
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/** A header field's text (UTF-8, as RFC 5424 allows in PARAM-VALUE and senders write anyway). */
function text(b: Buffer, from: number, to: number): string {
  return b.toString("utf8", from, to);
}

/**
 * The text last read at one place of the header, given again while the same bytes come again
 * (a sender's host and app name, and its timestamp within a second, repeat from one message to
 * the next): a compare of a few bytes instead of a decode into a new string.
 */
class LastText {
  readonly #bytes = new Uint8Array(64);
  #length = -1;
  #text = "";

  get(b: Buffer, from: number, to: number): string {
    const n = to - from;
    const last = this.#bytes;
    if (n === this.#length) {
      let i = 0;
      while (i < n && last[i] === b[from + i]) i++;
      if (i === n) return this.#text;
    }
    const t = b.toString("utf8", from, to);
    if (n <= last.length) {
      for (let i = 0; i < n; i++) last[i] = b[from + i];
      this.#length = n;
      this.#text = t;
    }
    return t;
  }
}

/** One per RFC 5424 header field: TIMESTAMP, HOSTNAME, APP-NAME, PROCID, MSGID. */
const LAST_FIELDS = [
  new LastText(),
  new LastText(),
  new LastText(),
  new LastText(),
  new LastText(),
];
/** The last RFC 5424 timestamp read, and its time. */
let lastStamp: string | null = null;
let lastTime: number | null = null;

/** `b` as a `Buffer` over the same memory (no copy). */
function asBuffer(b: Uint8Array): Buffer {
  return b instanceof Buffer ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength);
}

/** RFC 5424's TIMESTAMP: RFC 3339 with at most 6 fractional digits. */
const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2})$/;

/** The end of the space-free token at `from`. */
function tokenEnd(b: Buffer, from: number): number {
  let i = from;
  while (i < b.length && b[i] !== SP) i++;
  return i;
}

/** `<PRI>` at the start: [priority, index after `>`], or null. */
function priority(b: Buffer): [number, number] | null {
  if (b[0] !== LT) return null;
  let v = 0;
  let i = 1;
  for (; i < b.length && i <= 4; i++) {
    const c = b[i];
    if (c === GT) break;
    if (c < 48 || c > 57) return null;
    v = v * 10 + (c - 48);
  }
  if (i === 1 || b[i] !== GT || v > 191 || (b[1] === 48 && i > 2)) return null;
  return [v, i + 1];
}

/**
 * Parses one message (without its framing: no trailing newline, no octet count). `now` and
 * the local time zone date an RFC 3164 timestamp, which has neither year nor zone: the year
 * that puts it nearest to `now`.
 */
export function parseSyslog(bytes: Uint8Array, now = Date.now()): SyslogMessage {
  // Trailing newlines and NULs that some senders add within a frame.
  let end = bytes.length;
  while (end > 0 && (bytes[end - 1] === 10 || bytes[end - 1] === 13 || bytes[end - 1] === 0)) {
    end--;
  }
  // One view of the message for every field read from it (no view, or copy, per field).
  const b = asBuffer(end === bytes.length ? bytes : bytes.subarray(0, end));
  const m: SyslogMessage = {
    format: "unknown",
    hasPriority: false,
    facility: 1,
    severity: 5,
    timestamp: null,
    time: null,
    hostname: null,
    appName: null,
    procId: null,
    msgId: null,
    structuredData: null,
    message: b,
  };
  const pri = priority(b);
  if (pri === null) return m;
  m.hasPriority = true;
  m.facility = pri[0] >> 3;
  m.severity = pri[0] & 7;
  const at = pri[1];
  if (b[at] === 49 /* 1 */ && b[at + 1] === SP && parse5424(b, at + 2, m)) return m;
  parse3164(b, at, m, now);
  return m;
}

/** The RFC 5424 header from `i` (after `<PRI>1 `); false, changing nothing, if it does not fit. */
function parse5424(b: Buffer, i: number, m: SyslogMessage): boolean {
  const fields: Array<string | null> = [];
  for (let f = 0; f < 5; f++) {
    const e = tokenEnd(b, i);
    if (e === i || e >= b.length && f < 4) return false;
    fields.push(e === i + 1 && b[i] === 45 /* - */ ? null : LAST_FIELDS[f].get(b, i, e));
    i = e + 1;
  }
  let sd: Record<string, Record<string, string>> | null = null;
  if (b[i] === 45 /* - */) i++;
  else if (b[i] === 91 /* [ */) {
    const parsed = structuredData(b, i);
    if (parsed === null) return false;
    [sd, i] = parsed;
  } else return false;
  if (i < b.length && b[i] !== SP) return false;
  let msg = i < b.length ? i + 1 : i;
  if (b[msg] === 0xef && b[msg + 1] === 0xbb && b[msg + 2] === 0xbf) msg += 3; // BOM
  const [ts, host, app, proc, id] = fields;
  let time: number | null = null;
  if (ts !== null && ts === lastStamp) time = lastTime;
  else if (ts !== null && RFC3339.test(ts)) {
    time = Date.parse(ts);
    if (Number.isNaN(time)) time = null;
    [lastStamp, lastTime] = [ts, time];
  }
  Object.assign(m, {
    format: "rfc5424",
    timestamp: ts,
    time,
    hostname: host,
    appName: app,
    procId: proc,
    msgId: id,
    structuredData: sd,
    message: b.subarray(msg),
  });
  return true;
}

/** `[id k="v" ...][...]` from `i`: the elements and the index after them, or null. */
function structuredData(
  b: Buffer,
  i: number,
): [Record<string, Record<string, string>>, number] | null {
  // (No prototype: an SD-ID or a name such as "__proto__" is kept as any other.)
  const out: Record<string, Record<string, string>> = Object.create(null);
  while (b[i] === 91 /* [ */) {
    let e = i + 1;
    while (e < b.length && b[e] !== SP && b[e] !== 93) e++;
    if (e >= b.length) return null;
    const id = text(b, i + 1, e);
    const params: Record<string, string> = Object.create(null);
    i = e;
    while (b[i] === SP) {
      const eq = b.indexOf(61, /* = */ i + 1);
      if (eq < 0 || b[eq + 1] !== 34 /* " */) return null;
      const name = text(b, i + 1, eq);
      const bytes: number[] = [];
      let j = eq + 2;
      for (; j < b.length && b[j] !== 34; j++) {
        if (b[j] === 92 /* \ */ && (b[j + 1] === 34 || b[j + 1] === 92 || b[j + 1] === 93)) j++;
        bytes.push(b[j]);
      }
      if (j >= b.length) return null;
      params[name] = Buffer.from(bytes).toString("utf8");
      i = j + 1;
    }
    if (b[i] !== 93 /* ] */) return null;
    out[id] = params;
    i++;
  }
  return [out, i];
}

/**
 * The RFC 3164 header from `i`: `Mmm dd hh:mm:ss HOSTNAME TAG[PID]: MSG`. Messages a local
 * `logger` writes to a Unix socket have no HOSTNAME; a token that ends with `:` or holds `[`
 * is taken as the TAG. What does not fit is left in the message.
 */
function parse3164(b: Buffer, i: number, m: SyslogMessage, now: number): void {
  m.format = "rfc3164";
  m.message = b.subarray(i);
  const head = text(b, i, Math.min(b.length, i + 16)); // (ASCII when it is a timestamp)
  const t = /^([A-Z][a-z]{2}) ([ \d]\d) (\d\d):(\d\d):(\d\d)(?: |$)/.exec(head);
  if (t === null) return;
  const month = MONTHS.indexOf(t[1]);
  if (month < 0) return;
  m.timestamp = t[0].trimEnd();
  m.time = dated(month, Number(t[2]), Number(t[3]), Number(t[4]), Number(t[5]), now);
  i += t[0].length;
  // HOSTNAME, unless the next token is already the TAG.
  let e = tokenEnd(b, i);
  const first = text(b, i, e);
  if (e < b.length && !first.endsWith(":") && !first.includes("[")) {
    m.hostname = first;
    i = e + 1;
    e = tokenEnd(b, i);
  }
  m.message = b.subarray(i);
  // TAG: up to 32 characters of the app name, then `[PID]` and `:`.
  const tag = /^([^\s:\[\]]{1,48})(?:\[([^\]\s]{1,32})\])?:(?: |$)/.exec(
    text(b, i, Math.min(b.length, i + 90)),
  );
  if (tag === null) return;
  m.appName = tag[1];
  m.procId = tag[2] ?? null;
  m.message = b.subarray(i + Buffer.byteLength(tag[0]));
}

/** A local time without a year: in the year that puts it nearest to `now`. */
function dated(mo: number, d: number, h: number, mi: number, s: number, now: number): number {
  const year = new Date(now).getFullYear();
  let best = NaN;
  for (const y of [year - 1, year, year + 1]) {
    const t = new Date(y, mo, d, h, mi, s).getTime();
    if (Number.isNaN(best) || Math.abs(t - now) < Math.abs(best - now)) best = t;
  }
  return best;
}

/** How a message becomes a record: the agent's `syslog_*` settings. */
export interface SyslogMapping {
  /** Topic, or a template over `{facility}`, `{severity}`, `{app}` and `{host}`. @default "syslog" */
  topic: string;
  /** What keys the record. @default "hostname" */
  key: "hostname" | "app" | "none";
  /** The record's value: the parsed fields as JSON, or the message as received. @default "json" */
  value: "json" | "raw";
}

/** A record made from a syslog message. */
export interface SyslogRecord {
  topic: string;
  key: string | null;
  value: string | Uint8Array;
  timestamp: number | undefined;
}

/** A JSON value's fields before the message, as it names them, in its order. */
interface Head {
  format: string;
  facility: string;
  severity: string;
  priority: number;
  timestamp: string | null;
  hostname: string;
  app_name: string | null;
  proc_id: string | null;
  msg_id: string | null;
  structured_data?: Record<string, Record<string, string>>;
}

/** The last message's {@link Head} without structured data, and its JSON (see toRecord). */
let lastHead: { head: Head; json: string } | null = null;

/**
 * The JSON value's fields before the message, without the closing brace, as `JSON.stringify`
 * writes them; kept while the next message has the same ones.
 */
function headJson(m: SyslogMessage, facility: string, severity: string, host: string): string {
  const head: Head = {
    format: m.format,
    facility,
    severity,
    priority: m.facility * 8 + m.severity,
    timestamp: m.timestamp,
    hostname: host,
    app_name: m.appName,
    proc_id: m.procId,
    msg_id: m.msgId,
  };
  if (m.structuredData) {
    head.structured_data = m.structuredData;
    return JSON.stringify(head).slice(0, -1);
  }
  const last = lastHead?.head;
  if (
    // (The priority decides the facility and severity names.)
    last !== undefined && last.format === head.format && last.priority === head.priority &&
    last.timestamp === head.timestamp && last.hostname === host &&
    last.app_name === head.app_name && last.proc_id === head.proc_id &&
    last.msg_id === head.msg_id
  ) {
    return lastHead!.json;
  }
  lastHead = { head, json: JSON.stringify(head).slice(0, -1) };
  return lastHead.json;
}

/** Characters not allowed in a Kafka topic name, replaced by `_` in a templated topic. */
const NOT_TOPIC = /[^a-zA-Z0-9._-]/g;

/** Checks a topic template; throws a message naming what is wrong. */
export function checkTopicTemplate(template: string): void {
  const unknown = [...template.matchAll(/\{([^}]*)\}/g)].map((x) => x[1])
    .filter((n) => !["facility", "severity", "app", "host"].includes(n));
  if (unknown.length > 0) {
    throw `unknown placeholder {${unknown[0]}} (use {facility}, {severity}, {app} or {host})`;
  }
  const fixed = template.replace(/\{[^}]*\}/g, "");
  if (/[^a-zA-Z0-9._-]/.test(fixed)) {
    throw `"${template}" has characters a Kafka topic cannot have (use letters, digits, ".", "_", "-")`;
  }
  if (template.length === 0 || template.length > 249) throw "must be 1 to 249 characters";
  if (template === "." || template === "..") throw `"${template}" is not a legal Kafka topic name`;
}

/**
 * The record for `m`. `raw` is the message as received (for `value: "raw"`); `fallbackHost`
 * stands in for a missing HOSTNAME (the agent's host name for local messages, the peer's
 * address for remote ones).
 */
export function toRecord(
  m: SyslogMessage,
  raw: Uint8Array,
  map: SyslogMapping,
  fallbackHost: string,
): SyslogRecord {
  const host = m.hostname ?? fallbackHost;
  const facility = FACILITIES[m.facility] ?? String(m.facility);
  const severity = SEVERITIES[m.severity];
  let topic = map.topic;
  if (topic.includes("{")) {
    const fields: Record<string, string> = { facility, severity, app: m.appName ?? "-", host };
    topic = topic.replace(/\{(facility|severity|app|host)\}/g, (_, n: string) => fields[n])
      .replace(NOT_TOPIC, "_").slice(0, 249);
    if (topic === "." || topic === "..") topic = topic.replace(/\./g, "_");
  }
  const key = map.key === "hostname" ? host : map.key === "app" ? m.appName : null;
  let value: string | Uint8Array;
  if (map.value === "raw") value = raw;
  else {
    // The JSON of every field but the message, then the message: the fields before it repeat
    // from one message to the next (a sender's host, app and second), so their JSON is kept.
    const message = asBuffer(m.message);
    const text = isUtf8(message);
    value = headJson(m, facility, severity, host) +
      (text ? ',"message":' : ',"message_base64":') +
      JSON.stringify(message.toString(text ? "utf8" : "base64")) + "}";
  }
  return { topic, key, value, timestamp: m.time ?? undefined };
}
