/**
 * The HTTP input: the produce call of the Kafka REST Proxy v2, so that its clients switch by
 * changing a URL, and an NDJSON stream of the ingest protocol's JSON lines for bulk senders.
 *
 * - `POST /topics/{topic}` with `application/vnd.kafka.json.v2+json` (key and value are any
 *   JSON, stored as its text), `application/vnd.kafka.binary.v2+json` (base64 key and value),
 *   or `application/json` (as the JSON form). The body is
 *   `{"records": [{"key"?: …, "value": …, "headers"?: …, "timestamp"?: ms}]}`. The answer has
 *   one entry per record in `offsets`, whose `partition` and `offset` are null: a record is
 *   stored here, and gets them only when the sender delivers it.
 * - `POST /records` with one JSON line of the ingest protocol per line (`{"topic": …,
 *   "value": …}`), blank lines skipped. The answer is `{"records": N}`.
 *
 * Every request is all or nothing for bad input: one bad record refuses the whole request,
 * with an error naming it (`records[3].value: …`, `line 7: …`), and nothing is stored. A
 * request is answered 200 only once every record in it is durable under the fsync policy.
 * Under `whenFull: "reject"`, a request that comes while the buffer is full is answered 503
 * with `Retry-After`, nothing stored; under `"block"` it waits for room.
 *
 * Limits: the body size, the records per request, the requests served at once (429 beyond),
 * and the time a client may take to send its body (408). A bearer token, when set, is
 * required of every request (401). The bodies being parsed and stored at once are bounded
 * together (see {@link BodyRoom}): a request beyond waits once its body is read, and is
 * answered 429 if no room comes within the time limit.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { createHash, timingSafeEqual } from "node:crypto";
import type { MessageBuffer } from "../engine/buffer.ts";
import type { Logger } from "../log.ts";
import { validateTopic } from "../segment/format.ts";
import { parseLine } from "./protocol.ts";
import { MAX_PARSING_BODY_BYTES } from "./bounds.ts";
import { type HttpListener, serveHttp } from "./http_serve.ts";
import { splitHostPort } from "./address.ts";

/** Options of {@link HttpIngest.listen}. */
export interface HttpIngestOptions {
  /** `host:port` to listen on (port 0: any free port). */
  address: string;
  /** Allow an address beyond loopback without TLS. @default false */
  allowRemote?: boolean;
  /** Bearer token every request must carry. @default null (none) */
  token?: string | null;
  /** PEM certificate chain and key: serve HTTPS. */
  tls?: { cert: string; key: string } | null;
  /** Largest request body, in bytes. @default 4 MiB */
  maxBodyBytes?: number;
  /** Most records per request. @default 10000 */
  maxRecords?: number;
  /** Requests served at once; more are answered 429. @default 64 */
  maxRequests?: number;
  /** How long a client may take to send its request body, in ms (408 after). @default 30000 */
  timeoutMs?: number;
  buffer: MessageBuffer;
  logger: Logger;
}

/** HTTP input counters (also exported as metrics and in `#stats`). */
export interface HttpStats {
  /** Requests answered, by any status. */
  requests: number;
  /** Requests answered with a 4xx or 5xx status. */
  requestsFailed: number;
  /** Requests in progress. */
  active: number;
  /** Records stored (in requests answered 200, and the stored part of a partial 503). */
  records: number;
  /** Bytes of request bodies being parsed and stored (see {@link BodyRoom}). */
  bodyBytes: number;
}

const JSON_V2 = "application/vnd.kafka.json.v2+json";
const BINARY_V2 = "application/vnd.kafka.binary.v2+json";
const TYPES = [JSON_V2, BINARY_V2, "application/vnd.kafka.v2+json", "application/json"];
const RECORD_FIELDS = new Set(["key", "value", "headers", "timestamp", "partition"]);
const BASE64_RE = /^[A-Za-z0-9+/]*={0,2}$/;

/** Whether `host` can only be reached from this machine. */
export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, "").toLowerCase();
  return h === "localhost" || h === "::1" || /^127\.\d+\.\d+\.\d+$/.test(h);
}

/** An answer that refuses a request: an HTTP status and a message naming what is wrong. */
class Refusal {
  constructor(
    readonly status: number,
    readonly message: string,
    readonly headers: Record<string, string> = {},
  ) {}
}

interface Parsed {
  /** The NDJSON line it came from. */
  line?: number;
  topic: string;
  key: string | Uint8Array | null;
  value: string | Uint8Array;
  headers: Array<[string, string | Uint8Array]> | null;
  timestamp: number | undefined;
}

function json(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/vnd.kafka.v2+json", ...headers },
  });
}

function checkTopic(topic: string, where: string): void {
  try {
    validateTopic(topic);
  } catch (e) {
    throw new Refusal(422, `${where}: ${(e as Error).message}`);
  }
}

/** SHA-256 of `s`: tokens are compared as digests, in constant time and whatever their length. */
function digest(s: string): Buffer {
  return createHash("sha256").update(s).digest();
}

/** What a client is told about a record not stored (the details go to the log). */
function notStored(e: unknown): string {
  const code = (e as { code?: unknown })?.code;
  return code === "MB_FULL"
    ? "not stored: the buffer is full"
    : code === "MB_CLOSED"
    ? "not stored: the agent is shutting down"
    : code === "MB_STORAGE"
    ? "not stored: a storage error (see the agent's log)"
    : "not stored (see the agent's log)";
}

/** Standard base64, padded or not (as the REST Proxy's Java decoder takes it). */
function base64(v: unknown, where: string): Uint8Array {
  if (
    typeof v !== "string" || !BASE64_RE.test(v) || v.length % 4 === 1 ||
    (v.includes("=") && v.length % 4 !== 0)
  ) {
    throw new Refusal(
      422,
      `${where}: must be a base64 string (binary format; A-Z, a-z, 0-9, + and /)`,
    );
  }
  return Buffer.from(v, "base64");
}

/** A REST Proxy record's key or value in `format`. */
function field(v: unknown, binary: boolean, where: string): string | Uint8Array {
  return binary ? base64(v, where) : JSON.stringify(v);
}

/**
 * Room for the bodies being parsed and stored, all requests together, from the end of a body's
 * read until its request is answered: a body's records, parsed into objects and written one by
 * one, take several times its size, and 64 clients posting 1.4 MB of NDJSON each at once took
 * the executable to 494 MiB. A request whose body is read takes room for its size, and waits,
 * first come first served, until that fits beside the others, or until none is in progress (so
 * that one body up to `--http-max-body` is always taken). The room is taken only once a body is
 * whole, so that a client that sends its body slowly holds up no one.
 */
export class BodyRoom {
  /** Bytes taken by requests in progress. */
  used = 0;
  readonly #waiting: Array<{ bytes: number; admit: () => void }> = [];

  constructor(readonly limit: number, readonly onChange: (used: number) => void = () => {}) {}

  /** Takes `bytes` at once if they fit (true); else false, and `take` must wait. */
  tryTake(bytes: number): boolean {
    if (this.#waiting.length > 0 || !this.#fits(bytes)) return false;
    this.#change(bytes);
    return true;
  }

  /**
   * Waits for `bytes` in turn: `taken` resolves once they are. `cancel` gives up the place, or
   * the room if it was let in meanwhile.
   */
  take(bytes: number): { taken: Promise<void>; cancel: () => void } {
    let admit!: () => void;
    const taken = new Promise<void>((r) => (admit = r));
    const entry = { bytes, admit };
    if (this.tryTake(bytes)) admit();
    else this.#waiting.push(entry);
    return {
      taken,
      cancel: () => {
        const i = this.#waiting.indexOf(entry);
        if (i < 0) return this.give(bytes); // (let in meanwhile)
        this.#waiting.splice(i, 1);
        this.#admit(); // (the one behind it may fit now)
      },
    };
  }

  /** Gives back `bytes` taken; lets in those waiting that fit now, in order. */
  give(bytes: number): void {
    this.#change(-bytes);
    this.#admit();
  }

  /** Beside what is taken, or alone whatever its size. */
  #fits(bytes: number): boolean {
    return this.used === 0 || this.used + bytes <= this.limit;
  }

  #change(bytes: number): void {
    this.used += bytes;
    this.onChange(this.used);
  }

  #admit(): void {
    while (this.#waiting.length > 0 && this.#fits(this.#waiting[0].bytes)) {
      const next = this.#waiting.shift()!;
      this.#change(next.bytes);
      next.admit();
    }
  }
}

/** See the module doc. */
export class HttpIngest {
  readonly stats: HttpStats = {
    requests: 0,
    requestsFailed: 0,
    active: 0,
    records: 0,
    bodyBytes: 0,
  };
  readonly #o: Required<Omit<HttpIngestOptions, "token" | "tls">> & HttpIngestOptions;
  readonly #token: Buffer | null;
  #listener: HttpListener | null = null;
  #stopped = false;
  #lastLog = 0;
  /** Ends the bounded wait of each request waiting (for its body, or for room): see #bounded. */
  readonly #receiving = new Set<() => void>();
  /** The bodies in progress, bounded together (see {@link BodyRoom}). */
  readonly bodyRoom: BodyRoom = new BodyRoom(
    MAX_PARSING_BODY_BYTES,
    (used) => (this.stats.bodyBytes = used),
  );

  private constructor(o: HttpIngestOptions) {
    this.#o = {
      allowRemote: false,
      maxBodyBytes: 4 << 20,
      maxRecords: 10_000,
      maxRequests: 64,
      timeoutMs: 30_000,
      ...o,
    };
    this.#token = o.token ? digest(`Bearer ${o.token}`) : null;
  }

  /** `host:port` listened on, the port resolved. */
  get address(): string {
    return this.#listener?.address ?? this.#o.address;
  }

  /**
   * Listens on `o.address`. Throws an Error naming the address when it is beyond loopback
   * without TLS or `allowRemote`, or cannot be bound.
   */
  static async listen(o: HttpIngestOptions): Promise<HttpIngest> {
    const split = splitHostPort(o.address);
    if (split === null || split.host === "") {
      throw new Error(`HTTP address "${o.address}" is not host:port`);
    }
    const { host, port } = split;
    if (!isLoopback(host) && !o.tls && !o.allowRemote) {
      throw new Error(
        `HTTP address "${o.address}" is reachable from other hosts, and plain HTTP would let anyone who reaches it write records unencrypted: give --http-tls-cert-file and --http-tls-key-file, or --http-allow-remote to serve plain HTTP anyway (with --http-token-file, at least)`,
      );
    }
    const h = new HttpIngest(o);
    h.#listener = await serveHttp({
      hostname: host,
      port,
      tls: o.tls ?? null,
      idleTimeoutS: Math.ceil(h.#o.timeoutMs / 1000),
    }, (req, exempt) => h.#handle(req, exempt));
    return h;
  }

  async #handle(req: Request, exempt: () => void): Promise<Response> {
    this.stats.active++;
    let res: Response;
    try {
      res = await this.#route(req, exempt);
    } catch (e) {
      let r: Refusal;
      if (e instanceof Refusal) r = e;
      else {
        this.#o.logger.error("HTTP input: request failed", { error: e });
        r = new Refusal(500, "internal error (see the agent's log)");
      }
      res = json(r.status, { error_code: r.status, message: r.message }, r.headers);
    } finally {
      this.stats.active--;
    }
    this.stats.requests++;
    if (res.status >= 400) {
      this.stats.requestsFailed++;
      const now = Date.now();
      if (now - this.#lastLog >= 1000) {
        this.#lastLog = now;
        this.#o.logger.warn("HTTP input refused a request", {
          status: res.status,
          path: new URL(req.url).pathname,
          failedTotal: this.stats.requestsFailed,
        });
      }
    }
    return res;
  }

  async #route(req: Request, exempt: () => void): Promise<Response> {
    if (this.#stopped) {
      throw new Refusal(503, "the agent is shutting down", { "retry-after": "5" });
    }
    if (this.#token !== null) {
      const given = digest(req.headers.get("authorization") ?? "");
      if (!timingSafeEqual(given, this.#token)) {
        throw new Refusal(401, "missing or wrong bearer token (Authorization: Bearer …)", {
          "www-authenticate": 'Bearer realm="messagebuffer"',
        });
      }
    }
    // (This request is counted in `active`.)
    if (this.stats.active > this.#o.maxRequests) {
      throw new Refusal(
        429,
        `too many requests at once (the limit is ${this.#o.maxRequests}, --http-max-requests)`,
        { "retry-after": "1" },
      );
    }
    const path = new URL(req.url).pathname;
    const topicRoute = /^\/topics\/([^/]+)$/.exec(path);
    if (topicRoute === null && path !== "/records") {
      throw new Refusal(
        404,
        `no such resource ${path}: use POST /topics/{topic} (Kafka REST Proxy v2) or POST /records (NDJSON)`,
      );
    }
    if (req.method !== "POST") {
      throw new Refusal(405, `use POST on ${path}, not ${req.method}`, { allow: "POST" });
    }
    let topic = "";
    const type = (req.headers.get("content-type") ?? "").split(";")[0].trim().toLowerCase();
    if (topicRoute !== null) {
      try {
        topic = decodeURIComponent(topicRoute[1]);
      } catch {
        throw new Refusal(400, `the topic in ${path} is not valid percent-encoding`);
      }
      if (!TYPES.includes(type)) {
        throw new Refusal(
          415,
          `unsupported Content-Type "${type}": use ${TYPES.join(", ")} (schemas are not supported)`,
        );
      }
      checkTopic(topic, "the topic");
    }
    const body = await this.#body(req);
    this.#refuseIfFull();
    // Room to parse and store it beside the other requests in progress (see BodyRoom).
    await this.#roomFor(body.length, req, exempt);
    try {
      if (this.#stopped) {
        throw new Refusal(503, "the agent is shutting down", { "retry-after": "5" });
      }
      const records = topicRoute !== null
        ? this.#restRecords(topic, body, type === BINARY_V2)
        : this.#ndjson(body);
      return await this.#store(records, topicRoute !== null, exempt);
    } finally {
      this.bodyRoom.give(body.length);
    }
  }

  /** Writes the records of a request; answers once all are durable (or some failed). */
  async #store(records: Parsed[], rest: boolean, exempt: () => void): Promise<Response> {
    this.#refuseIfFull();
    // From here on the client waits for durability, which under "block" may take long.
    exempt();
    const writes = records.map((r) =>
      this.#o.buffer.write(r.topic, r.value, {
        key: r.key,
        headers: r.headers,
        timestamp: r.timestamp,
      })
    );
    const outcomes = await Promise.allSettled(writes);
    const failed = outcomes.filter((o) => o.status === "rejected") as PromiseRejectedResult[];
    this.stats.records += outcomes.length - failed.length;
    if (failed.length === 0) {
      return rest
        ? json(200, {
          key_schema_id: null,
          value_schema_id: null,
          offsets: outcomes.map(() => ({
            partition: null,
            offset: null,
            error_code: null,
            error: null,
          })),
        })
        : json(200, { records: outcomes.length });
    }
    // Some or all were not stored (full, closing, a storage error): 503, saying which.
    this.#o.logger.warn("HTTP input: records not stored", {
      notStored: failed.length,
      of: outcomes.length,
      error: failed[0].reason,
    });
    const message = `${failed.length} of ${outcomes.length} records ${notStored(failed[0].reason)}`;
    const retry = { "retry-after": "5" };
    if (rest) {
      return json(503, {
        error_code: 503,
        message: `${message}; those whose "error_code" is null were stored`,
        key_schema_id: null,
        value_schema_id: null,
        offsets: outcomes.map((o) => ({
          partition: null,
          offset: null,
          error_code: o.status === "rejected" ? 50301 : null,
          error: o.status === "rejected" ? notStored(o.reason) : null,
        })),
      }, retry);
    }
    return json(503, {
      error_code: 503,
      message: `${message}; "not_stored" lists their lines`,
      records: outcomes.length - failed.length,
      not_stored: outcomes.flatMap((o, i) => o.status === "rejected" ? [records[i].line] : []),
    }, retry);
  }

  /** A full buffer under `whenFull: "reject"` refuses the request (503), nothing stored. */
  #refuseIfFull(): void {
    if (this.#o.buffer.full && !this.#o.buffer.wouldBlock) {
      throw new Refusal(
        503,
        "the buffer is full (at its size cap, when_full reject); nothing stored",
        {
          "retry-after": "5",
        },
      );
    }
  }

  /**
   * Takes room for a body of `bytes` (see {@link BodyRoom}), waiting for it in turn: at most
   * `--http-timeout` (then 429), and not past a stop (503) or the client's leaving.
   */
  async #roomFor(bytes: number, req: Request, exempt: () => void): Promise<void> {
    const room = this.bodyRoom;
    if (room.tryTake(bytes)) return;
    exempt(); // (the wait is bounded by the timer below, not by the server's idle timeout)
    const { taken, cancel } = room.take(bytes);
    const { late, cut, end } = this.#bounded(() =>
      new Refusal(
        429,
        `busy: the bodies of other requests (${room.used} bytes) are being stored, and this one's (${bytes} bytes) found no room within ${this.#o.timeoutMs} ms (--http-timeout); nothing stored`,
        { "retry-after": "1" },
      )
    );
    const gone = () => cut(new Refusal(400, "the client went away while its request waited"));
    req.signal.addEventListener("abort", gone);
    try {
      await Promise.race([taken, late]);
    } catch (e) {
      cancel();
      throw e;
    } finally {
      end();
      req.signal.removeEventListener("abort", gone);
    }
  }

  /**
   * A wait on a client or on room, bounded: `late` rejects with `timedOut()` after
   * `--http-timeout`, with a 503 when the agent stops, or with what `cut` is given; `end()`
   * when the wait is over.
   */
  #bounded(timedOut: () => Refusal): {
    late: Promise<never>;
    cut: (r: Refusal) => void;
    end: () => void;
  } {
    let timer: ReturnType<typeof setTimeout> | undefined;
    let cut!: (r: Refusal) => void;
    const late = new Promise<never>((_, reject) => {
      cut = reject;
      timer = setTimeout(() => reject(timedOut()), this.#o.timeoutMs);
    });
    const stopping = () =>
      cut(new Refusal(503, "the agent is shutting down", { "retry-after": "5" }));
    this.#receiving.add(stopping);
    return {
      late,
      cut,
      end: () => {
        clearTimeout(timer);
        this.#receiving.delete(stopping);
      },
    };
  }

  /** The whole body, within the size limit and the time limit. */
  async #body(req: Request): Promise<Uint8Array> {
    const max = this.#o.maxBodyBytes;
    const declared = Number(req.headers.get("content-length") ?? NaN);
    if (declared > max) {
      throw new Refusal(
        413,
        `body of ${declared} bytes is over the limit of ${max} (--http-max-body)`,
      );
    }
    if (req.body === null) return new Uint8Array(0);
    const reader = req.body.getReader();
    const chunks: Uint8Array[] = [];
    let total = 0;
    // A stop ends the wait for a body that is still coming: a slow client must not hold up
    // the agent's shutdown.
    const { late, end } = this.#bounded(() =>
      new Refusal(
        408,
        `the body did not arrive within ${this.#o.timeoutMs} ms (${total} bytes came; --http-timeout)`,
      )
    );
    try {
      for (;;) {
        const { done, value } = await Promise.race([reader.read(), late]);
        if (done) break;
        total += value.length;
        if (total > max) {
          throw new Refusal(413, `body is over the limit of ${max} bytes (--http-max-body)`);
        }
        chunks.push(value);
      }
    } catch (e) {
      reader.cancel().catch(() => {});
      if (e instanceof Refusal) throw e;
      if (this.#stopped) {
        // The agent stops (under Deno, the read fails then): a retry later may succeed.
        throw new Refusal(503, "the agent is shutting down", { "retry-after": "5" });
      }
      throw new Refusal(
        400,
        `the body could not be read (${total} bytes came): ${(e as Error)?.message ?? e}`,
      );
    } finally {
      end();
    }
    return chunks.length === 1 ? chunks[0] : Buffer.concat(chunks);
  }

  #restRecords(topic: string, body: Uint8Array, binary: boolean): Parsed[] {
    let doc: unknown;
    try {
      doc = JSON.parse(Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString("utf8"));
    } catch (e) {
      throw new Refusal(400, `the body is not valid JSON: ${(e as Error).message}`);
    }
    const list = (doc as { records?: unknown })?.records;
    if (doc === null || typeof doc !== "object" || !Array.isArray(list)) {
      throw new Refusal(422, `the body must be an object with "records", a list of records`);
    }
    for (const k of Object.keys(doc)) {
      if (k !== "records") {
        throw new Refusal(
          422,
          k.includes("schema")
            ? `"${k}": schemas are not supported (use the json or binary format)`
            : `unknown field "${k}" (the body has "records")`,
        );
      }
    }
    if (list.length === 0) throw new Refusal(422, `"records" is empty`);
    this.#checkCount(list.length);
    return list.map((r, i) => {
      const at = `records[${i}]`;
      if (r === null || typeof r !== "object" || Array.isArray(r)) {
        throw new Refusal(422, `${at}: must be an object with "value"`);
      }
      const o = r as Record<string, unknown>;
      for (const k of Object.keys(o)) {
        if (!RECORD_FIELDS.has(k)) {
          throw new Refusal(
            422,
            `${at}.${k}: unknown field (fields: ${[...RECORD_FIELDS].join(", ")})`,
          );
        }
      }
      if (o.partition != null) {
        throw new Refusal(
          422,
          `${at}.partition: choosing a partition is not supported; records are partitioned by key`,
        );
      }
      if (o.value === undefined || o.value === null) {
        throw new Refusal(422, `${at}.value: missing or null (tombstones are not supported)`);
      }
      const value = field(o.value, binary, `${at}.value`);
      const key = o.key == null ? null : field(o.key, binary, `${at}.key`);
      let timestamp: number | undefined;
      if (o.timestamp != null) {
        if (!Number.isSafeInteger(o.timestamp) || (o.timestamp as number) < 0) {
          throw new Refusal(422, `${at}.timestamp: must be a whole number of ms since the epoch`);
        }
        timestamp = o.timestamp as number;
      }
      return { topic, key, value, headers: this.#headers(o.headers, binary, at), timestamp };
    });
  }

  /** `{"name": "value"}`, or `[{"name": n, "value": v}]` (v in base64 in the binary format). */
  #headers(h: unknown, binary: boolean, at: string): Array<[string, string | Uint8Array]> | null {
    if (h == null) return null;
    const out: Array<[string, string | Uint8Array]> = [];
    if (Array.isArray(h)) {
      h.forEach((e, j) => {
        const where = `${at}.headers[${j}]`;
        const { name, value } = (e ?? {}) as { name?: unknown; value?: unknown };
        if (typeof name !== "string") throw new Refusal(422, `${where}.name: must be a string`);
        if (binary) out.push([name, base64(value, `${where}.value`)]);
        else if (typeof value === "string") out.push([name, value]);
        else throw new Refusal(422, `${where}.value: must be a string`);
      });
      return out;
    }
    if (typeof h !== "object") {
      throw new Refusal(
        422,
        `${at}.headers: must be an object of strings or a list of {name, value}`,
      );
    }
    for (const [k, v] of Object.entries(h as Record<string, unknown>)) {
      if (typeof v !== "string") throw new Refusal(422, `${at}.headers.${k}: must be a string`);
      out.push([k, binary ? base64(v, `${at}.headers.${k}`) : v]);
    }
    return out;
  }

  #checkCount(n: number): void {
    if (n > this.#o.maxRecords) {
      throw new Refusal(
        413,
        `${n} records in one request, over the limit of ${this.#o.maxRecords} (--http-max-records)`,
      );
    }
  }

  #ndjson(body: Uint8Array): Parsed[] {
    const text = Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString("utf8");
    const out: Parsed[] = [];
    let lineNo = 0;
    for (const raw of text.split("\n")) {
      lineNo++;
      const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
      if (line.trim() === "") continue;
      if (line[0] !== "{") {
        throw new Refusal(422, `line ${lineNo}: expected a JSON object ({"topic": …, "value": …})`);
      }
      const p = parseLine(line);
      if (p.kind !== "record") {
        throw new Refusal(422, `line ${lineNo}: ${p.kind === "error" ? p.reason : "not a record"}`);
      }
      checkTopic(p.topic, `line ${lineNo}`);
      out.push({
        line: lineNo,
        topic: p.topic,
        key: p.key,
        value: p.value,
        headers: p.headers,
        timestamp: p.timestamp,
      });
      this.#checkCount(out.length);
    }
    if (out.length === 0) throw new Refusal(422, "the body holds no records");
    return out;
  }

  /**
   * Refuses new requests (503). Requests whose body is still arriving are answered 503 too;
   * those whose records are being stored go on.
   */
  stop(): void {
    this.#stopped = true;
    for (const stopping of [...this.#receiving]) stopping();
  }

  /** Stops listening once every request in progress is answered. */
  async close(): Promise<void> {
    this.stop();
    await this.#listener?.close();
  }
}
