#!/usr/bin/env bash
# The agent's drain, from the executable or from source, against kcat in the same run:
#   1. an agent with no reachable broker stores N lines sent through its socket (a backlog);
#   2. a second agent on the same directory, with the broker, delivers them; the time runs
#      from its start until its metrics count N delivered (so it includes the start-up);
#   3. kcat -P sends the same N records (key, 100-byte value) with idempotence and acks=all.
#
#   scripts/kafka.sh start
#   scripts/bench_agent_drain.sh [N] -- dist/messagebuffer
#   scripts/bench_agent_drain.sh [N] -- node_modules/deno/deno run -A cli.ts
#   (BROKERS=host:port to use another broker)
set -euo pipefail
N=${1:-1000000}
shift
[[ ${1:-} == -- ]] && shift
AGENT=("$@")
BROKERS=${BROKERS:-127.0.0.1:9092}
METRICS=127.0.0.1:19466
D=$(mktemp -d "${TMPDIR:-/tmp}/mb-agent-drain-XXXXXX")
P=""
trap '[[ -n $P ]] && kill -TERM $P 2>/dev/null; rm -rf "$D"' EXIT
topic=bench-agent-drain-$(date +%s%N)
python3 - "$D" "$N" "$topic" <<'PY'
import sys
d, n, topic = sys.argv[1], int(sys.argv[2]), sys.argv[3]
v = "x" * 100
with open(f"{d}/lines.txt", "w") as f, open(f"{d}/kcat.txt", "w") as k:
    for i in range(n):
        f.write(f"{topic}\tk{i % 10}\t{v}\n")
        k.write(f"k{i % 10}\t{v}\n")
PY
echo "# $(uname -sr), $(nproc) x $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "# command: $0 $N -- ${AGENT[*]}"
"${AGENT[@]}" run --brokers 127.0.0.1:1 --buffer-dir "$D/buf" --log-level warn --total-size 8192 &
P=$!
for _ in $(seq 1 200); do [[ -S $D/buf/messagebuffer.sock ]] && break; sleep 0.05; done
"${AGENT[@]}" send --socket "$D/buf/messagebuffer.sock" <"$D/lines.txt" >/dev/null
kill -TERM $P
wait $P || true
P=""
t0=$(date +%s.%N)
"${AGENT[@]}" run --brokers "$BROKERS" --buffer-dir "$D/buf" --log-level warn --metrics "$METRICS" &
P=$!
until curl -s "$METRICS/metrics" | grep -q "^messagebuffer_records_delivered_total $N\$"; do sleep 0.02; done
t1=$(date +%s.%N)
kill -TERM $P
wait $P || true
P=""
agent=$(python3 -c "print(f'{$N/($t1-$t0):.0f}')")
echo "agent drain: $agent records/s ($(python3 -c "print(f'{$t1-$t0:.2f}')") s, from the agent's start)"
if command -v kcat >/dev/null; then
  s=$(date +%s.%N)
  kcat -P -b "$BROKERS" -t "$topic-kcat" -K $'\t' -X enable.idempotence=true -X acks=all \
    -X linger.ms=5 -l "$D/kcat.txt"
  e=$(date +%s.%N)
  rd=$(python3 -c "print(f'{$N/($e-$s):.0f}')")
  echo "kcat -P: $rd records/s (topic created on first use)"
  python3 -c "print(f'agent / kcat: {$agent/$rd:.2f}')"
else
  echo "kcat: not installed (apt-get install kcat); skipped"
fi
