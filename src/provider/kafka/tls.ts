/**
 * Saying why a TLS connection to a broker failed: a certificate that could not be verified
 * (and against which CA), a client certificate the broker wanted or refused. Client libraries
 * bury the socket's error code in nested errors, or lose it (kafkajs under Deno); this finds
 * it, and when it was lost, opens one TLS connection of its own to find out.
 *
 * @module
 */

import { isIP } from "node:net";
import { connect as tlsConnect } from "node:tls";
import type { KafkaTlsOptions } from "./options.ts";

/**
 * Certificate verification failures of Node's `tls` (OpenSSL's X509_V_ERR_* names), which
 * Deno and Bun report with the same codes.
 */
const CERT_VERIFY_ERRORS = new Set([
  "SELF_SIGNED_CERT_IN_CHAIN",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "CERT_UNTRUSTED",
  "CERT_SIGNATURE_FAILURE",
  "CERT_HAS_EXPIRED",
  "CERT_NOT_YET_VALID",
  "CERT_REVOKED",
  "INVALID_CA",
  "ERR_TLS_CERT_ALTNAME_INVALID",
]);

/** A TLS alert from the broker about our (missing or unaccepted) client certificate. */
const CLIENT_CERT_ALERT =
  /^ERR_SSL_(?:SSLV3|TLSV1|TLSV13)_ALERT_(?:BAD_CERTIFICATE|UNKNOWN_CA|CERTIFICATE_\w+|UNSUPPORTED_CERTIFICATE|ACCESS_DENIED)$/;

/** Whether a socket error code is a TLS failure that {@link tlsFailure} explains. */
export function isTlsFailure(code: string | undefined): boolean {
  return code !== undefined && (CERT_VERIFY_ERRORS.has(code) || CLIENT_CERT_ALERT.test(code));
}

/** What tlsFailure reads of an error and of the errors behind it. */
export interface ErrorLink {
  code?: unknown;
  broker?: unknown;
  message?: string;
  cause?: unknown;
  originalError?: unknown;
  errors?: unknown[];
}

/**
 * A plain statement of a TLS failure behind `e` (a client library's error whose chain of
 * causes holds the socket's error code, and for kafkajs the broker's address), or undefined
 * when it is not one.
 */
function tlsFailure(e: unknown, clientCert: boolean, brokers: string): string | undefined {
  let cur = e as ErrorLink | undefined;
  let broker: string | undefined;
  for (let i = 0; i < 6 && cur; i++) {
    if (typeof cur.broker === "string") broker ??= cur.broker;
    const code = typeof cur.code === "string" ? cur.code : "";
    const what = `(${code}: ${String(cur.message ?? "").replace(/^Connection error: /, "")})`;
    const at = ` ${broker ?? brokers}`;
    if (CERT_VERIFY_ERRORS.has(code)) {
      return `TLS: the certificate of broker${at} could not be verified ${what}; ` +
        (code === "ERR_TLS_CERT_ALTNAME_INVALID"
          ? "it is not made out to that host name or address"
          : "is the CA that signed it given (tls.ca, --tls-ca-file)?");
    }
    if (CLIENT_CERT_ALERT.test(code)) {
      return clientCert
        ? `TLS: broker${at} did not accept the client certificate ${what}`
        : `TLS: broker${at} refused the connection, wanting a client certificate (mutual TLS) ` +
          `${what}; give tls.cert and tls.key (--tls-cert-file, --tls-key-file)`;
    }
    cur = (cur.cause ?? cur.originalError ?? cur.errors?.[0]) as ErrorLink | undefined;
  }
  return undefined;
}

/** `host:port` split at its last colon. */
function splitAddress(address: string): [string, number] {
  const i = address.lastIndexOf(":");
  return [address.slice(0, i), Number(address.slice(i + 1))];
}

/**
 * Opens one TLS connection to `host:port` and waits briefly after the handshake for the
 * broker to refuse it; resolves with the TLS failure, or null when there was none.
 */
function probeTls(
  host: string,
  port: number,
  tls: KafkaTlsOptions,
  timeoutMs: number,
): Promise<ErrorLink | null> {
  return new Promise((resolve) => {
    let done = false;
    const finish = (v: ErrorLink | null) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(v);
    };
    const socket = tlsConnect({
      host,
      port,
      ...(isIP(host) ? {} : { servername: host }),
      ca: tls.ca,
      cert: tls.cert,
      key: tls.key,
      rejectUnauthorized: !tls.insecureSkipVerify,
    });
    const timer = setTimeout(() => finish(null), timeoutMs);
    socket.on("error", (err: Error & { code?: string }) =>
      finish(
        isTlsFailure(err.code)
          ? { code: err.code, message: err.message, broker: `${host}:${port}` }
          : null,
      ));
    // A refusal of the client certificate comes as an alert after the handshake.
    socket.on("secureConnect", () => {
      socket.resume();
      setTimeout(() => finish(null), Math.min(1000, timeoutMs));
    });
    socket.on("close", () => finish(null));
  });
}

/** What {@link diagnoseTls} needs to know of the connection. */
export interface TlsContext {
  /** The TLS settings, or undefined without TLS. */
  tls: KafkaTlsOptions | undefined;
  brokers: readonly string[];
  connectionTimeoutMs: number;
}

/**
 * A plain statement of the TLS failure behind `e`, or behind `socket` (a failure a socket
 * reported since the library last looked, when the library's own error may have lost it);
 * undefined when neither is one.
 */
export function tlsProblem(
  e: unknown,
  socket: ErrorLink | null,
  c: TlsContext,
): string | undefined {
  const clientCert = !!c.tls?.cert;
  const brokers = c.brokers.join(",");
  return tlsFailure(e, clientCert, brokers) ??
    (socket ? tlsFailure(socket, clientCert, brokers) : undefined);
}

/**
 * Like {@link tlsProblem}; and when connecting over TLS failed without saying why (a broker's
 * alert about the client certificate can arrive after the library took the handshake as done,
 * and be lost), one TLS connection of its own to the first broker finds out.
 */
export async function diagnoseTls(
  e: unknown,
  socket: ErrorLink | null,
  c: TlsContext,
): Promise<string | undefined> {
  const found = tlsProblem(e, socket, c);
  if (found || !c.tls) return found;
  const [host, port] = splitAddress(c.brokers[0]);
  const failure = await probeTls(host, port, c.tls, c.connectionTimeoutMs);
  return failure ? tlsFailure(failure, !!c.tls.cert, `${host}:${port}`) : undefined;
}
