/**
 * Gives back the resident pages of the agent's own executable file that it is not using.
 *
 * The executable is about 110 MB of code and read-only data (JavaScriptCore, Bun's runtime,
 * the agent's bytecode). Start-up, recovery, the first connections and the compilers' first
 * work touch about 44 MiB of it, and those pages stay mapped, and counted in the resident set,
 * long after the agent has stopped running that code: a third of its memory at the peak of a
 * delivery. Asking the kernel to drop them from the process (`madvise(MADV_DONTNEED)` on the
 * file's read-only mappings) leaves in the resident set only what the agent touches again;
 * those pages come back at the next touch from the page cache (a minor fault, no disk read:
 * the file stays cached), and the rest stay on disk or in the cache, where the kernel may
 * reclaim them, as it may any file page.
 *
 * Only a mapping of the executable's file that is not writable and holds no private copy of a
 * page (`Anonymous: 0 kB` in `/proc/self/smaps`) is dropped: a page relocated at load time
 * (RELRO) would otherwise come back as the file holds it, not as the loader left it. So the
 * mappings are read again at each trim.
 *
 * Linux and Bun only (`bun:ffi` calls libc's `madvise`); elsewhere {@link codePageTrimmer}
 * returns null.
 *
 * @module
 */

import { readFileSync, readlinkSync } from "node:fs";
import process from "node:process";

/** `MADV_DONTNEED` (Linux, every architecture). */
const MADV_DONTNEED = 4;

/** One read-only mapping of the executable's file. */
interface Mapping {
  start: bigint;
  length: bigint;
}

/**
 * The read-only mappings of `path` in `smaps` (the text of `/proc/self/smaps`) that hold no
 * private page: the ones whose pages may be dropped and faulted back from the file.
 */
export function droppableMappings(smaps: string, path: string): Mapping[] {
  const out: Mapping[] = [];
  let open: Mapping | null = null;
  for (const line of smaps.split("\n")) {
    const head = /^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ \d+\s*(.*)$/.exec(line);
    if (head !== null) {
      const [, from, to, perms, file] = head;
      open = file === path && perms[1] === "-" && perms[3] === "p"
        ? { start: BigInt(`0x${from}`), length: BigInt(`0x${to}`) - BigInt(`0x${from}`) }
        : null;
    } else if (open !== null && line.startsWith("Anonymous:")) {
      if (/^Anonymous:\s+0 kB$/.test(line.trimEnd())) out.push(open);
      open = null;
    }
  }
  return out;
}

type Madvise = (start: bigint, length: bigint, advice: number) => number;

/**
 * A function that drops the pages of the executable's read-only mappings from the process
 * and returns how many mappings it dropped, or null where this cannot be done (not Linux, not
 * Bun, libc not found). A trim that fails turns the trimmer off: it then returns 0.
 */
export function codePageTrimmer(): (() => number) | null {
  if (process.platform !== "linux" || !("Bun" in globalThis)) return null;
  let madvise: Madvise;
  let exe: string;
  try {
    exe = readlinkSync("/proc/self/exe");
    // (`require` so that Deno, which type-checks and runs this module, never resolves it.)
    const ffi = require("bun:ffi") as {
      dlopen(
        name: string,
        symbols: Record<string, { args: string[]; returns: string }>,
      ): { symbols: { madvise: Madvise } };
    };
    madvise = ffi.dlopen("libc.so.6", {
      madvise: { args: ["u64", "u64", "i32"], returns: "i32" },
    }).symbols.madvise;
  } catch {
    return null;
  }
  let working = true;
  return () => {
    if (!working) return 0;
    try {
      const mappings = droppableMappings(readFileSync("/proc/self/smaps", "utf8"), exe);
      for (const m of mappings) {
        if (madvise(m.start, m.length, MADV_DONTNEED) !== 0) throw new Error("madvise failed");
      }
      return mappings.length;
    } catch {
      working = false;
      return 0;
    }
  };
}
