#!/usr/bin/env bash
# Builds the agent as one self-contained executable with Bun (works offline):
#   scripts/compile.sh [OUTFILE]      default dist/messagebuffer
# `deno task compile` builds the same with `deno compile` into dist/messagebuffer-deno (its
# own path: deno compile removes its output before it downloads Deno's runtime, which needs
# internet access, so sharing a path would lose the Bun build when offline).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${1:-dist/messagebuffer}
mkdir -p "$(dirname "$out")"
# scripts/compile.ts is `bun build --compile cli.ts` with the build information --version prints.
node_modules/.bin/bun scripts/compile.ts "$out" >&2
"$out" --version >&2
