/**
 * The ingest line protocol (one message per LF-terminated UTF-8 line):
 *
 * - Text form: `TOPIC<TAB>KEY<TAB>VALUE`. An empty KEY means no key. In KEY and VALUE,
 *   `\\` is a backslash, `\n` a newline, `\t` a tab, `\r` a carriage return; any other
 *   backslash sequence, or a raw tab inside VALUE, is an error.
 * - JSON form, a line starting with `{`:
 *   `{"topic": "t", "key": "k", "value": "v", "headers": {"h": "v"}}`, with `key_base64` /
 *   `value_base64` instead of `key` / `value` for binary data, `headers_base64` (a list of
 *   `[name, base64 value]` pairs, names may repeat) instead of `headers` for binary header
 *   values, and `timestamp` (ms since the epoch) for the record's event time.
 * - Control lines start with `#`: `#ack` switches the connection to acknowledged mode;
 *   `#stats` is answered with `stats <JSON>`, the agent's state (`messagebuffer top`).
 *
 * A trailing CR (from CRLF clients) is dropped before parsing.
 *
 * @module
 */

import { Buffer } from "node:buffer";

/** What one line means. */
export type ParsedLine =
  | {
    kind: "record";
    topic: string;
    key: string | Uint8Array | null;
    value: string | Uint8Array;
    headers: Array<[string, string | Uint8Array]> | null;
    /** Event time in ms since the epoch, when the line gives one. */
    timestamp?: number;
  }
  | { kind: "control"; command: "ack" | "stats" }
  | { kind: "error"; reason: string };

function unescape(s: string, field: string): string | { error: string } {
  let i = s.indexOf("\\");
  if (i < 0) return s;
  let out = "";
  let from = 0;
  while (i >= 0) {
    out += s.slice(from, i);
    const c = s[i + 1];
    if (c === "\\") out += "\\";
    else if (c === "n") out += "\n";
    else if (c === "t") out += "\t";
    else if (c === "r") out += "\r";
    else if (c === undefined) return { error: `${field} ends with a lone backslash` };
    else return { error: `bad escape "\\${c}" in ${field} (use \\\\, \\n, \\t or \\r)` };
    from = i + 2;
    i = s.indexOf("\\", from);
  }
  return out + s.slice(from);
}

const JSON_KEYS = new Set([
  "topic",
  "key",
  "key_base64",
  "value",
  "value_base64",
  "headers",
  "headers_base64",
  "timestamp",
]);
const BASE64_RE = /^[A-Za-z0-9+/]*={0,2}$/;

function base64(v: unknown, field: string): Uint8Array | { error: string } {
  if (typeof v !== "string" || v.length % 4 !== 0 || !BASE64_RE.test(v)) {
    return { error: `"${field}" must be a base64 string` };
  }
  const b = Buffer.from(v, "base64");
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

function parseJson(line: string): ParsedLine {
  let o: unknown;
  try {
    o = JSON.parse(line);
  } catch (e) {
    return { kind: "error", reason: `invalid JSON: ${(e as Error).message}` };
  }
  if (o === null || typeof o !== "object" || Array.isArray(o)) {
    return { kind: "error", reason: "JSON line must be an object" };
  }
  const r = o as Record<string, unknown>;
  for (const k of Object.keys(r)) {
    if (!JSON_KEYS.has(k)) {
      return {
        kind: "error",
        reason: `unknown field "${k}" (fields: ${[...JSON_KEYS].join(", ")})`,
      };
    }
  }
  if (typeof r.topic !== "string") {
    return { kind: "error", reason: `missing field "topic" (a string)` };
  }
  if (r.value !== undefined && r.value_base64 !== undefined) {
    return { kind: "error", reason: `give "value" or "value_base64", not both` };
  }
  if (r.key != null && r.key_base64 !== undefined) {
    return { kind: "error", reason: `give "key" or "key_base64", not both` };
  }
  let value: string | Uint8Array;
  if (typeof r.value === "string") value = r.value;
  else if (r.value_base64 !== undefined) {
    const b = base64(r.value_base64, "value_base64");
    if ("error" in b) return { kind: "error", reason: b.error };
    value = b;
  } else if (r.value === undefined) {
    return { kind: "error", reason: `missing field "value" (or "value_base64")` };
  } else {return {
      kind: "error",
      reason: `"value" must be a string (use "value_base64" for binary)`,
    };}
  let key: string | Uint8Array | null = null;
  if (typeof r.key === "string") key = r.key;
  else if (r.key_base64 !== undefined) {
    const b = base64(r.key_base64, "key_base64");
    if ("error" in b) return { kind: "error", reason: b.error };
    key = b;
  } else if (r.key != null) return { kind: "error", reason: `"key" must be a string or null` };
  let headers: Array<[string, string | Uint8Array]> | null = null;
  if (r.headers != null && r.headers_base64 != null) {
    return { kind: "error", reason: `give "headers" or "headers_base64", not both` };
  }
  if (r.headers_base64 != null) {
    const list = r.headers_base64;
    const shape = `"headers_base64" must be a list of [name, base64 value] pairs`;
    if (!Array.isArray(list)) return { kind: "error", reason: shape };
    headers = [];
    for (const pair of list) {
      if (!Array.isArray(pair) || pair.length !== 2 || typeof pair[0] !== "string") {
        return { kind: "error", reason: shape };
      }
      const b = base64(pair[1], "headers_base64");
      if ("error" in b) {
        return {
          kind: "error",
          reason: `header "${pair[0]}" in "headers_base64" must be a base64 string`,
        };
      }
      headers.push([pair[0], b]);
    }
  }
  let timestamp: number | undefined;
  if (r.timestamp != null) {
    if (!Number.isSafeInteger(r.timestamp) || (r.timestamp as number) < 0) {
      return {
        kind: "error",
        reason: `"timestamp" must be a whole number of ms since the epoch, got ${
          JSON.stringify(r.timestamp)
        }`,
      };
    }
    timestamp = r.timestamp as number;
  }
  if (r.headers != null) {
    if (typeof r.headers !== "object" || Array.isArray(r.headers)) {
      return { kind: "error", reason: `"headers" must be an object of strings` };
    }
    headers = [];
    for (const [k, v] of Object.entries(r.headers as Record<string, unknown>)) {
      if (typeof v !== "string") return { kind: "error", reason: `header "${k}" must be a string` };
      headers.push([k, v]);
    }
  }
  return timestamp === undefined
    ? { kind: "record", topic: r.topic, key, value, headers }
    : { kind: "record", topic: r.topic, key, value, headers, timestamp };
}

/** Parses one line (without its LF). */
export function parseLine(line: string): ParsedLine {
  if (line.endsWith("\r")) line = line.slice(0, -1);
  const c = line.charCodeAt(0);
  if (c === 123 /* { */) return parseJson(line);
  if (c === 35 /* # */) {
    if (line === "#ack") return { kind: "control", command: "ack" };
    if (line === "#stats") return { kind: "control", command: "stats" };
    return {
      kind: "error",
      reason: `unknown control line ${JSON.stringify(line.slice(0, 40))} (known: #ack, #stats)`,
    };
  }
  if (line.length === 0) return { kind: "error", reason: "empty line" };
  const t1 = line.indexOf("\t");
  const t2 = t1 < 0 ? -1 : line.indexOf("\t", t1 + 1);
  if (t2 < 0) {
    return {
      kind: "error",
      reason: `expected TOPIC<TAB>KEY<TAB>VALUE, found ${t1 < 0 ? "no" : "one"} tab`,
    };
  }
  if (line.indexOf("\t", t2 + 1) >= 0) {
    return { kind: "error", reason: "raw tab in value (escape it as \\t)" };
  }
  const topic = line.slice(0, t1);
  if (topic.length === 0) return { kind: "error", reason: "empty topic" };
  const key = unescape(line.slice(t1 + 1, t2), "key");
  if (typeof key !== "string") return { kind: "error", reason: key.error };
  const value = unescape(line.slice(t2 + 1), "value");
  if (typeof value !== "string") return { kind: "error", reason: value.error };
  return { kind: "record", topic, key: key === "" ? null : key, value, headers: null };
}

/** Escapes a value for the text form (the inverse of the parser's unescaping). */
export function escapeField(s: string): string {
  return s.replace(
    /[\\\n\t\r]/g,
    (c) => c === "\\" ? "\\\\" : c === "\n" ? "\\n" : c === "\t" ? "\\t" : "\\r",
  );
}

const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

/** The text of `u` when it is valid UTF-8, else null. */
function utf8(u: Uint8Array): string | null {
  try {
    return strictUtf8.decode(u);
  } catch {
    return null;
  }
}

function toBase64(u: Uint8Array): string {
  return Buffer.from(u.buffer, u.byteOffset, u.byteLength).toString("base64");
}

/** A record as the engine stores and the provider sends it. */
export interface JsonRecordInput {
  topic: string;
  key: Uint8Array | null;
  value: Uint8Array;
  headers: ReadonlyArray<readonly [string, Uint8Array]> | null;
  timestamp: number;
}

/**
 * A record in the JSON form of the ingest protocol, which {@link parseLine} reads back to the
 * same record (the one codec of `dump`, `tail` and `replay`): `value` and `key` as text when
 * they are valid UTF-8, else `value_base64` and `key_base64`; `headers` as an object when
 * every value is UTF-8 and every name once (and none looks like an array index, which an
 * object would reorder), else `headers_base64` as `[name, base64]` pairs; and `timestamp`
 * unless `timestamp` is false.
 */
export function recordToJson(
  r: JsonRecordInput,
  options: { timestamp?: boolean } = {},
): Record<string, unknown> {
  const o: Record<string, unknown> = { topic: r.topic };
  if (r.key !== null) {
    const key = utf8(r.key);
    if (key !== null) o.key = key;
    else o.key_base64 = toBase64(r.key);
  }
  const value = utf8(r.value);
  if (value !== null) o.value = value;
  else o.value_base64 = toBase64(r.value);
  if (r.headers && r.headers.length > 0) {
    const texts = r.headers.map(([, v]) => utf8(v));
    const names = new Set(r.headers.map(([k]) => k));
    const asObject = names.size === r.headers.length && texts.every((t) => t !== null) &&
      r.headers.every(([k]) => !/^(0|[1-9]\d*)$/.test(k));
    if (asObject) o.headers = Object.fromEntries(r.headers.map(([k], i) => [k, texts[i]]));
    else o.headers_base64 = r.headers.map(([k, v]) => [k, toBase64(v)]);
  }
  if (options.timestamp !== false) o.timestamp = r.timestamp;
  return o;
}
