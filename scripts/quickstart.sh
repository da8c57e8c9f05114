#!/usr/bin/env bash
# Quick start: install, start a local Apache Kafka broker (scripts/kafka.sh), and run the
# agent against it in the foreground (Ctrl-C stops it; the broker keeps running until
# `scripts/kafka.sh stop`). Needs Node.js + npm, and Java 17+ and Maven for the broker.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[[ -x node_modules/.bin/deno ]] || npm ci --no-audit --no-fund
scripts/kafka.sh start
dir=${MESSAGEBUFFER_DIR:-./messagebuffer-data}
port=${KAFKA_PORT:-9092}
cat >&2 <<MSG

  messagebuffer is starting with buffer directory $dir and Kafka at 127.0.0.1:$port.
  In another terminal, send it lines (TOPIC<TAB>KEY<TAB>VALUE):

    printf 'demo\tuser-1\thello from messagebuffer\n' | ./messagebuffer send --buffer-dir $dir
    ./messagebuffer status --buffer-dir $dir
    ./messagebuffer tail --brokers 127.0.0.1:$port --topic demo --from-beginning --count 1
    curl -s 127.0.0.1:9464/metrics | grep messagebuffer_records

  Ctrl-C stops the agent (it finishes the batch in flight and saves its checkpoint).

MSG
exec ./messagebuffer run --brokers "127.0.0.1:$port" --buffer-dir "$dir" --metrics 127.0.0.1:9464 "$@"
