/**
 * Gives back the resident pages of the agent's own executable file that it is not using.
 *
 * The executable is about 110 MB of code and read-only data (JavaScriptCore, Bun's runtime,
 * the agent's bytecode). Start-up, recovery, the first connections and the compilers' first
 * work touch about 44 MiB of it, and those pages stay mapped, and counted in the resident set,
 * long after the agent has stopped running that code: nearly half its memory at the peak of a
 * delivery. Asking the kernel to drop them from the process (`madvise(MADV_DONTNEED)` on the
 * file's read-only mappings) leaves in the resident set only what the agent touches again;
 * those pages come back at the next touch from the page cache (a minor fault, no disk read:
 * the file stays cached), and the rest stay in the page cache, where the kernel may reclaim
 * them, as it may any file page.
 *
 * Dropped, a page of a private mapping comes back as the file holds it. So only mappings whose
 * every page still is the file's are dropped: of the executable's own file (by device and
 * inode, so also after it was replaced on disk), private, not writable, never writable since
 * they were mapped (no `ac` in their VmFlags: the kernel marks a private mapping so once it has
 * been writable, and keeps the mark when it is made read-only again), and with no page of
 * their own, in memory or swapped out (`Anonymous:` and `Swap:` both 0). Bun's executable has
 * such a mapping that is not the file's: JavaScriptCore's configuration and opcode table,
 * written at start and then made read-only. The mappings are read again at each trim.
 *
 * Linux and Bun only (`bun:ffi` calls libc's `madvise`); elsewhere {@link codePageTrimmer}
 * returns null.
 *
 * @module
 */

import { readFileSync, statSync } from "node:fs";
import process from "node:process";

/** `MADV_DONTNEED` (Linux, every architecture). */
const MADV_DONTNEED = 4;

/** One mapping whose pages may be dropped. */
export interface Mapping {
  start: bigint;
  length: bigint;
}

/** A file as `/proc/PID/smaps` names it: its device's major and minor numbers, and inode. */
export interface FileId {
  major: number;
  minor: number;
  inode: number;
}

/**
 * The mappings of `file` in `smaps` (the text of `/proc/self/smaps`) whose pages are all the
 * file's, so may be dropped and faulted back from it (see the module doc).
 */
export function droppableMappings(smaps: string, file: FileId): Mapping[] {
  const out: Mapping[] = [];
  let open: Mapping | null = null;
  // What the open mapping's body has shown: each of these must be seen, and 0 or clear.
  let anonymous = false, swap = false, flags = false;
  for (const line of [...smaps.split("\n"), ""]) {
    const head = /^([0-9a-f]+)-([0-9a-f]+) (\S{4}) [0-9a-f]+ ([0-9a-f]+):([0-9a-f]+) (\d+)/
      .exec(line);
    if (head !== null || line === "") {
      // The body of the mapping before ends here.
      if (open !== null && anonymous && swap && flags) out.push(open);
      open = null;
    }
    if (head !== null) {
      const [, from, to, perms, major, minor, inode] = head;
      if (
        perms[1] === "-" && perms[3] === "p" && parseInt(major, 16) === file.major &&
        parseInt(minor, 16) === file.minor && Number(inode) === file.inode
      ) {
        open = { start: BigInt(`0x${from}`), length: BigInt(`0x${to}`) - BigInt(`0x${from}`) };
        anonymous = swap = flags = false;
      }
      continue;
    }
    if (open === null) continue;
    const field = /^(Anonymous|Swap|VmFlags):\s*(.*)$/.exec(line);
    if (field === null) continue;
    const [, name, value] = field;
    if (name === "Anonymous") anonymous = value.trim() === "0 kB";
    else if (name === "Swap") swap = value.trim() === "0 kB";
    // (A mapping that was ever writable: its private pages may differ from the file.)
    else flags = !value.trim().split(/\s+/).includes("ac");
  }
  return out;
}

/** The executable's file as smaps names it. */
function executableFile(): FileId {
  const st = statSync("/proc/self/exe", { bigint: true });
  // Linux's encoding of a device number (glibc's gnu_dev_major and gnu_dev_minor).
  const d = st.dev;
  return {
    major: Number(((d >> 8n) & 0xfffn) | ((d >> 32n) & ~0xfffn)),
    minor: Number((d & 0xffn) | ((d >> 12n) & ~0xffn)),
    inode: Number(st.ino),
  };
}

type Madvise = (start: bigint, length: bigint, advice: number) => number;

/**
 * A function that drops the pages of the executable's droppable mappings from the process and
 * returns how many mappings it dropped, or null where this cannot be done (not Linux, not Bun,
 * libc or FFI missing). A `madvise` that fails turns it off for good (it then returns 0); a
 * smaps that cannot be read (out of file descriptors) skips that one trim.
 */
export function codePageTrimmer(): (() => number) | null {
  if (process.platform !== "linux" || !("Bun" in globalThis)) return null;
  let madvise: Madvise;
  let exe: FileId;
  try {
    exe = executableFile();
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
    let smaps: string;
    try {
      smaps = readFileSync("/proc/self/smaps", "utf8");
    } catch {
      return 0;
    }
    const mappings = droppableMappings(smaps, exe);
    for (const m of mappings) {
      if (madvise(m.start, m.length, MADV_DONTNEED) !== 0) {
        working = false;
        return 0;
      }
    }
    return mappings.length;
  };
}
