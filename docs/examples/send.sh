#!/usr/bin/env bash
# Sends records to a messagebuffer agent from a shell, in acknowledged mode: two lines with
# socat, then two with OpenBSD netcat (nc -U -N). Exits 1 unless the agent answered "ok" to
# #ack and to every line; 2 on usage errors.
#
#   bash docs/examples/send.sh SOCKET TOPIC    (or MB_SOCKET and MB_TOPIC in the environment)
set -euo pipefail

sock=${1:-${MB_SOCKET:-}}
topic=${2:-${MB_TOPIC:-}}
if [[ -z $sock || -z $topic ]]; then
  echo "usage: send.sh SOCKET TOPIC (or MB_SOCKET and MB_TOPIC)" >&2
  exit 2
fi

# One answer per line sent: "ok" for #ack, then "ok" (stored) or "error line N: REASON".
check() {
  if [[ $2 != $'ok\nok\nok' ]]; then
    echo "send.sh: $1: expected ok three times, got: ${2:-nothing}" >&2
    exit 1
  fi
  echo "send.sh: $1: 2 records stored"
}

# socat: after stdin ends, wait up to 10 s (-t) for the answers; the agent closes once all are sent.
out=$(printf '#ack\n%s\tkey-1\thello from socat\n%s\tkey-2\tsecond line\n' "$topic" "$topic" |
  socat -t 10 - "UNIX-CONNECT:$sock")
check socat "$out"

# OpenBSD netcat: -U a Unix socket; -N shut down the socket's sending side at the end of stdin.
out=$(printf '#ack\n%s\tkey-3\thello from nc\n%s\tkey-4\tsecond line\n' "$topic" "$topic" |
  nc -U -N "$sock")
check nc "$out"
