/**
 * How much input the inputs read ahead of the disk: past these, the socket stops reading a
 * connection, and the syslog inputs stop reading, until what they read is stored.
 *
 * @module
 */

/**
 * Lines (syslog: messages) read and not yet stored beyond which an input stops reading: for all
 * the socket's connections together (their unanswered lines), for both syslog inputs together.
 */
export const MAX_WAITING_LINES = 50_000;
/**
 * Bytes of input read and not yet stored beyond which the socket and the syslog inputs stop
 * reading (as above; the socket counts what each connection read past its last answered line):
 * what bounds the frames a flood keeps waiting for the disk (about two frames, written one
 * after the other while the next fills), however many clients send it. 2 MiB rather than 4 took
 * 2-7 MiB off the peaks of an agent taking 1M lines from 1 to 16 clients (none at 64), and kept
 * one delivering them too at 99-102 MiB rather than 100-110, without storing more slowly
 * (docs/benchmarks.md).
 */
export const MAX_WAITING_BYTES = 2 << 20;
/**
 * Bytes of HTTP request bodies being parsed and stored at once; more wait (see `BodyRoom` in
 * `http.ts`): one body of the default largest size (`--http-max-body`, 4 MiB), or several
 * smaller ones.
 */
export const MAX_PARSING_BODY_BYTES = 4 << 20;
