/**
 * The filesystem adapter used when none is given. `node:fs` is implemented by Deno, Bun and
 * Node alike, so one adapter serves all three; this is the one place that choice is made.
 *
 * @module
 */

import { NodeFileSystem } from "./node.ts";
import type { FileSystem } from "./types.ts";

/** The filesystem for the runtime this runs on. */
export function defaultFileSystem(): FileSystem {
  return new NodeFileSystem();
}
