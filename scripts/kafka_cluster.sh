#!/usr/bin/env bash
# scripts/kafka_cluster.sh: a real Apache Kafka cluster on 127.0.0.1 for failover tests and
# benchmarks: one KRaft controller and three brokers, each its own JVM with a small heap,
# from the same Maven Central jars as scripts/kafka.sh.
#
#   scripts/kafka_cluster.sh start          fetch jars and format (first time), start all, wait
#   scripts/kafka_cluster.sh stop           stop the brokers, then the controller (data kept)
#   scripts/kafka_cluster.sh stop-broker N  SIGTERM broker N (a controlled shutdown: its
#                                           leaders move first) and wait for it to exit
#   scripts/kafka_cluster.sh kill-broker N  SIGKILL broker N (a crash: the controller fences
#                                           it after broker.session.timeout.ms)
#   scripts/kafka_cluster.sh start-broker N start broker N again and wait for its port
#   scripts/kafka_cluster.sh status         one line per node, "running <pid>" or "stopped";
#                                           exit 3 when any is stopped
#   scripts/kafka_cluster.sh bootstrap      print the brokers' addresses, comma-separated
#   scripts/kafka_cluster.sh logs [N]       the log of broker N (0: the controller)
#   scripts/kafka_cluster.sh wipe           stop everything and delete the data directory
#
# Ports, all on 127.0.0.1: broker N (1..3) listens on KAFKA_CLUSTER_PORT + N - 1, the
# controller on KAFKA_CLUSTER_PORT + 3 (defaults: 29092-29094, 29095).
# Topics default to 6 partitions, replication factor 3 and min.insync.replicas 2, as on a
# production cluster. Leaders move only when a test moves them (no automatic rebalancing),
# and a crashed broker is fenced after 3 s, so failover tests run in seconds.
#
# Environment:
#   KAFKA_CLUSTER_PORT  first broker's port (default 29092)
#   KAFKA_CLUSTER_DIR   data, pids and logs (default ${TMPDIR:-/tmp}/messagebuffer-cluster-$port-<n>,
#                       n a checksum of this checkout's path)
#   KAFKA_VERSION       Kafka version resolved from Maven Central (default 4.1.2)
#   KAFKA_LIBS          jar folder (default ~/.cache/messagebuffer/kafka-$KAFKA_VERSION)
#   KAFKA_HEAP          heap of each broker (default 384m; the controller gets 192m)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
port=${KAFKA_CLUSTER_PORT:-29092}
brokers=3
cport=$((port + brokers))
version=${KAFKA_VERSION:-4.1.2}
# One data directory per checkout and port (see kafka.sh).
checkout=$(printf %s "$here" | cksum | cut -d' ' -f1)
data=${KAFKA_CLUSTER_DIR:-${TMPDIR:-/tmp}/messagebuffer-cluster-$port-$checkout}
libs=${KAFKA_LIBS:-$HOME/.cache/messagebuffer/kafka-$version}
heap=${KAFKA_HEAP:-384m}

# shellcheck source=scripts/kafka/common.sh
source "$here/kafka/common.sh"

# Node 0 is the controller (its node.id is 100); nodes 1..3 are the brokers.
node_dir() { echo "$data/node-$1"; }
node_port() { if (($1 == 0)); then echo "$cport"; else echo $((port + $1 - 1)); fi; }
pidfile() { echo "$(node_dir "$1")/pid"; }
logfile() { echo "$(node_dir "$1")/kafka.log"; }
pid_alive() { [[ -f $(pidfile "$1") ]] && kill -0 "$(cat "$(pidfile "$1")")" 2>/dev/null; }

bootstrap() {
  local n out=()
  for ((n = 1; n <= brokers; n++)); do out+=("127.0.0.1:$(node_port "$n")"); done
  (IFS=,; echo "${out[*]}")
}

check_node() {
  [[ $1 =~ ^[0-9]+$ ]] && (($1 >= 1 && $1 <= brokers)) || die "no broker \"$1\" (brokers are 1 to $brokers)"
}

write_config() {
  local n=$1 dir
  dir=$(node_dir "$n")
  mkdir -p "$dir/logs"
  if ((n == 0)); then
    cat >"$dir/server.properties" <<PROPS
process.roles=controller
node.id=100
controller.quorum.bootstrap.servers=127.0.0.1:$cport
listeners=CONTROLLER://127.0.0.1:$cport
advertised.listeners=CONTROLLER://127.0.0.1:$cport
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT
log.dirs=$dir/logs
broker.session.timeout.ms=3000
PROPS
    return
  fi
  local p
  p=$(node_port "$n")
  cat >"$dir/server.properties" <<PROPS
process.roles=broker
node.id=$n
controller.quorum.bootstrap.servers=127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$p
advertised.listeners=PLAINTEXT://127.0.0.1:$p
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir/logs
num.partitions=6
default.replication.factor=3
min.insync.replicas=2
auto.create.topics.enable=true
auto.leader.rebalance.enable=false
offsets.topic.replication.factor=3
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
group.initial.rebalance.delay.ms=0
broker.heartbeat.interval.ms=500
replica.lag.time.max.ms=5000
num.network.threads=2
num.io.threads=2
num.replica.fetchers=1
log.flush.interval.messages=9223372036854775807
PROPS
}

format() {
  [[ -f $data/cluster.id ]] && return 0
  local id n
  id=$(java_cmd kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
  for ((n = 0; n <= brokers; n++)); do
    write_config "$n"
    local how=(--no-initial-controllers)
    ((n == 0)) && how=(--standalone)
    java_cmd kafka.tools.StorageTool format "${how[@]}" -t "$id" -c "$(node_dir "$n")/server.properties" \
      >>"$(logfile "$n")" 2>&1 || { cat "$(logfile "$n")" >&2; die "formatting node $n in $data failed"; }
  done
  echo "$id" >"$data/cluster.id"
}

launch() {
  local n=$1 mem=$heap
  ((n == 0)) && mem=192m
  write_config "$n"
  # setsid: the node outlives this script and is not hit by the caller's ^C.
  setsid java -Xmx"$mem" -Xms"$mem" -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
    -Djava.awt.headless=true -Dlog4j2.configurationFile="$here/kafka/log4j2.xml" -cp "$libs/*" \
    kafka.Kafka "$(node_dir "$n")/server.properties" >>"$(logfile "$n")" 2>&1 </dev/null &
  echo $! >"$(pidfile "$n")"
}

wait_ready() {
  local n=$1 i p
  p=$(node_port "$n")
  for ((i = 0; i < 1200; i++)); do
    if ! pid_alive "$n"; then tail -n 40 "$(logfile "$n")" >&2; die "node $n exited during start-up (log: $(logfile "$n"))"; fi
    port_open "$p" && return 0
    sleep 0.1
  done
  die "node $n did not open 127.0.0.1:$p within 120 s (log: $(logfile "$n"))"
}

start_node() {
  local n=$1
  if pid_alive "$n"; then return 0; fi
  port_open "$(node_port "$n")" && die "port $(node_port "$n") is in use by another process; set KAFKA_CLUSTER_PORT"
  launch "$n"
}

start() {
  fetch_jars
  mkdir -p "$data"
  format
  local n
  start_node 0
  wait_ready 0
  for ((n = 1; n <= brokers; n++)); do start_node "$n"; done
  for ((n = 1; n <= brokers; n++)); do wait_ready "$n"; done
  echo "kafka_cluster.sh: $brokers brokers ready on $(bootstrap)" >&2
}

stop_node() {
  local n=$1 signal=${2:-TERM} pid i
  pid_alive "$n" || { rm -f "$(pidfile "$n")"; return 0; }
  pid=$(cat "$(pidfile "$n")")
  kill -"$signal" "$pid"
  for ((i = 0; i < 600; i++)); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$(pidfile "$n")"; return 0; }
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$(pidfile "$n")"
  echo "kafka_cluster.sh: node $n did not stop in 60 s; killed" >&2
}

stop() {
  local n pids=()
  # The brokers together (each moves its leaders away while the others still run), then the
  # controller they report to.
  for ((n = 1; n <= brokers; n++)); do stop_node "$n" & pids+=($!); done
  wait "${pids[@]}" 2>/dev/null || true
  stop_node 0
}

status() {
  local n down=0
  for ((n = 0; n <= brokers; n++)); do
    local what="broker $n 127.0.0.1:$(node_port "$n")"
    ((n == 0)) && what="controller 127.0.0.1:$cport"
    if pid_alive "$n"; then echo "running $(cat "$(pidfile "$n")") $what"; else echo "stopped $what"; down=1; fi
  done
  return $((down * 3))
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  stop-broker) check_node "${2:-}"; stop_node "$2" TERM ;;
  kill-broker) check_node "${2:-}"; stop_node "$2" KILL ;;
  start-broker) check_node "${2:-}"; start_node "$2"; wait_ready "$2" ;;
  status) status ;;
  bootstrap) bootstrap ;;
  logs) cat "$(logfile "${2:-1}")" ;;
  wipe) stop; rm -rf "$data" ;;
  *) sed -n '2,31p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
