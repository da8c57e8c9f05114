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
 * Bytes of input read and not yet stored beyond which an input stops reading (as above; the
 * socket counts what each connection read past its last answered line): what bounds the frames
 * a flood keeps waiting for the disk (about four frames), however many clients send it.
 */
export const MAX_WAITING_BYTES = 4 << 20;
