/**
 * The `HOST:PORT` addresses the agent listens on (metrics, HTTP, syslog over TCP).
 *
 * @module
 */

/**
 * Splits `address` at its last colon: the port after it (0–65535), the host before it, an
 * IPv6 host's brackets dropped (`[::1]:8080`); null when there is no port. The host may be
 * empty (`:9464`): each listener says what that means.
 */
export function splitHostPort(address: string): { host: string; port: number } | null {
  const i = address.lastIndexOf(":");
  const port = address.slice(i + 1);
  if (i < 0 || !/^\d{1,5}$/.test(port) || Number(port) > 65535) return null;
  return { host: address.slice(0, i).replace(/^\[(.*)\]$/, "$1"), port: Number(port) };
}
