/**
 * Memory given back at once, rather than when the collector gets to it: a buffer the agent is
 * done with is detached (`ArrayBuffer.prototype.transfer(0)`), which frees what it held. Only a
 * view of the whole of an `ArrayBuffer` is ever detached: a view of part of one may share its
 * memory with something still in use.
 *
 * @module
 */

type Detachable = ArrayBuffer & { transfer(length: number): ArrayBuffer };

/** True when `u` views the whole of an `ArrayBuffer` (not a part of one, not shared memory). */
export function ownsBuffer(u: Uint8Array): boolean {
  return u.byteOffset === 0 && u.buffer instanceof ArrayBuffer &&
    u.buffer.byteLength === u.byteLength;
}

/**
 * Detaches `u`'s buffer when `u` views the whole of it; true when its memory was given back
 * (false too when the runtime cannot detach it, or it already was: the collector takes it).
 */
export function freeBuffer(u: Uint8Array): boolean {
  if (!ownsBuffer(u)) return false;
  try {
    (u.buffer as Detachable).transfer(0);
    return true;
  } catch {
    return false;
  }
}
