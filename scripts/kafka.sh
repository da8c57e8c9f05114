#!/usr/bin/env bash
# scripts/kafka.sh: a real single-node Apache Kafka broker (KRaft) on 127.0.0.1 for tests,
# demos and benchmarks, assembled from Maven Central jars and run with the installed JDK.
#
#   scripts/kafka.sh start     fetch jars (first time), format storage (first time), start, wait
#   scripts/kafka.sh stop      SIGTERM the broker and wait for it to exit (data is kept)
#   scripts/kafka.sh restart   stop then start, keeping the data (outage tests)
#   scripts/kafka.sh status    print "running <pid> <bootstrap>" or "stopped"; exit 0 / 3
#   scripts/kafka.sh logs      print the broker log
#   scripts/kafka.sh wipe      stop and delete the data directory (a data directory made by
#                              an older version of this script lacks the SASL user: wipe it)
#
# Environment:
#   KAFKA_PORT       client port (default 9092); the controller uses KAFKA_PORT+1, and a
#                    SASL_PLAINTEXT listener (SCRAM-SHA-256, user "alice", password
#                    "alice-secret", for tests) KAFKA_PORT+2
#   KAFKA_DATA_DIR   data, pid and log (default ${TMPDIR:-/tmp}/messagebuffer-kafka-$KAFKA_PORT)
#   KAFKA_VERSION    Kafka version resolved from Maven Central (default 4.1.2)
#   KAFKA_LIBS       jar folder (default ~/.cache/messagebuffer/kafka-$KAFKA_VERSION)
#   KAFKA_HEAP       broker heap (default 512m)
# Needs Java 17+ and Maven. Any existing Kafka cluster works instead (pass its --brokers).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
port=${KAFKA_PORT:-9092}
cport=$((port + 1))
sport=$((port + 2))
version=${KAFKA_VERSION:-4.1.2}
data=${KAFKA_DATA_DIR:-${TMPDIR:-/tmp}/messagebuffer-kafka-$port}
libs=${KAFKA_LIBS:-$HOME/.cache/messagebuffer/kafka-$version}
heap=${KAFKA_HEAP:-512m}
pidfile=$data/broker.pid
logfile=$data/broker.log

die() { echo "kafka.sh: $*" >&2; exit 1; }

pid_alive() { [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }

fetch_jars() {
  [[ -f $libs/.complete ]] && return 0
  command -v java >/dev/null || die "java not found (Java 17+ is needed for the test broker)"
  command -v mvn >/dev/null || die "mvn not found (Maven resolves the broker's jars from Maven Central)"
  echo "kafka.sh: resolving Apache Kafka $version jars from Maven Central into $libs" >&2
  mkdir -p "$libs"
  mvn -q -B -f "$here/kafka/pom.xml" -Dkafka.version="$version" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$libs" >&2 \
    || die "mvn could not resolve org.apache.kafka:kafka_2.13:$version"
  touch "$libs/.complete"
}

write_config() {
  mkdir -p "$data/logs"
  cat >"$data/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport,SASL_PLAINTEXT://127.0.0.1:$sport
advertised.listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport,SASL_PLAINTEXT://127.0.0.1:$sport
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-256
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
log.dirs=$data/logs
num.partitions=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.flush.interval.messages=9223372036854775807
PROPS
}

java_cmd() { java -Dlog4j2.configurationFile="$here/kafka/log4j2.xml" -cp "$libs/*" "$@"; }

format() {
  [[ -f $data/logs/meta.properties ]] && return 0
  local id
  id=$(java_cmd kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
  java_cmd kafka.tools.StorageTool format --standalone -t "$id" -c "$data/server.properties" \
    --add-scram 'SCRAM-SHA-256=[name=alice,password=alice-secret]' >>"$logfile" 2>&1 \
    || { cat "$logfile" >&2; die "formatting the broker's storage in $data failed"; }
}

start() {
  if pid_alive; then echo "kafka.sh: already running (pid $(cat "$pidfile"), 127.0.0.1:$port)" >&2; return 0; fi
  port_open && die "port $port is in use by another process; set KAFKA_PORT"
  fetch_jars
  write_config
  format
  # setsid: the broker outlives this script and is not hit by the caller's ^C.
  setsid java -Xmx"$heap" -Xms"$heap" -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$here/kafka/log4j2.xml" -cp "$libs/*" \
    kafka.Kafka "$data/server.properties" >>"$logfile" 2>&1 </dev/null &
  echo $! >"$pidfile"
  local i
  for ((i = 0; i < 1200; i++)); do
    if ! pid_alive; then tail -n 40 "$logfile" >&2; die "the broker exited during start-up (log: $logfile)"; fi
    if port_open; then echo "kafka.sh: broker ready on 127.0.0.1:$port (pid $(cat "$pidfile"))" >&2; return 0; fi
    sleep 0.1
  done
  die "the broker did not open 127.0.0.1:$port within 120 s (log: $logfile)"
}

stop() {
  pid_alive || { rm -f "$pidfile"; return 0; }
  local pid i
  pid=$(cat "$pidfile")
  kill -TERM "$pid"
  for ((i = 0; i < 600; i++)); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; echo "kafka.sh: broker stopped" >&2; return 0; }
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$pidfile"
  echo "kafka.sh: broker did not stop in 60 s; killed" >&2
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  status) if pid_alive; then echo "running $(cat "$pidfile") 127.0.0.1:$port"; else echo stopped; exit 3; fi ;;
  logs) cat "$logfile" ;;
  wipe) stop; rm -rf "$data" ;;
  *) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
