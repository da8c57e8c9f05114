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
#   scripts/kafka.sh dir       print the data directory (its tls/ holds the test certificates)
#
# Listeners, all on 127.0.0.1:
#   KAFKA_PORT     PLAINTEXT
#   KAFKA_PORT+1   CONTROLLER (KRaft)
#   KAFKA_PORT+2   SASL_PLAINTEXT, SCRAM-SHA-256, user "alice", password "alice-secret"
#   KAFKA_PORT+3   SSL, one-way: clients check the broker against tls/ca.pem
#   KAFKA_PORT+4   SSL, mutual: clients must also present a certificate signed by tls/ca.pem
#   KAFKA_PORT+5   SASL_SSL: SCRAM-SHA-256 (user "alice") over one-way SSL (tls/ca.pem)
# ACLs are enforced (StandardAuthorizer): ANONYMOUS (the PLAINTEXT and one-way SSL clients)
# is a super user, and a resource without ACLs is open to everyone, so nothing is refused
# until a test adds an ACL (the lanes test denies "alice" writes to one topic).
# Test TLS material, made with keytool (and openssl for the client key) on the first start
# in a data directory, in $KAFKA_DATA_DIR/tls/ (store password "messagebuffer-test"):
#   ca.pem           the test CA's certificate: what a client trusts
#   client-cert.pem  a client certificate signed by the CA (CN=messagebuffer-test-client)
#   client-key.pem   its private key, unencrypted PKCS#8 PEM
#   wrong-ca.pem     an unrelated CA that did not sign the broker's certificate
#   broker.p12       the broker's keystore: key + certificate (SAN IP:127.0.0.1, DNS:localhost)
#                    signed by the CA
#   truststore.p12   the broker's truststore: the CA (checks client certificates)
#   ca.p12           the CA's key and certificate
#
# Environment:
#   KAFKA_PORT       client port (default 9092); the other listeners follow it (above)
#   KAFKA_DATA_DIR   data, pid and log (default ${TMPDIR:-/tmp}/messagebuffer-kafka-$KAFKA_PORT-<n>,
#                    n a checksum of this checkout's path: `scripts/kafka.sh dir` prints it)
#   KAFKA_VERSION    Kafka version resolved from Maven Central (default 4.1.2)
#   KAFKA_LIBS       jar folder (default ~/.cache/messagebuffer/kafka-$KAFKA_VERSION)
#   KAFKA_HEAP       broker heap (default 512m)
# Needs Java 17+ (with keytool), Maven and openssl. Any existing Kafka cluster works instead
# (pass its --brokers).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
port=${KAFKA_PORT:-9092}
cport=$((port + 1))
sport=$((port + 2))
tport=$((port + 3))
mport=$((port + 4))
xport=$((port + 5))
version=${KAFKA_VERSION:-4.1.2}
# One data directory per checkout and port: a broker another checkout started on the same
# port is not this one's to stop or wipe (starting then says the port is taken).
checkout=$(printf %s "$here" | cksum | cut -d' ' -f1)
data=${KAFKA_DATA_DIR:-${TMPDIR:-/tmp}/messagebuffer-kafka-$port-$checkout}
libs=${KAFKA_LIBS:-$HOME/.cache/messagebuffer/kafka-$version}
heap=${KAFKA_HEAP:-512m}
pidfile=$data/broker.pid
logfile=$data/broker.log
tls=$data/tls
storepass=messagebuffer-test

# shellcheck source=scripts/kafka/common.sh
source "$here/kafka/common.sh"

pid_alive() { [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

# A keytool run; JVM flags that start it faster (it runs a dozen times on a first start).
kt() { keytool -J-XX:TieredStopAtLevel=1 -J-Xshare:auto "$@"; }

# Runs one step of make_tls, its output to the log; a failure ends the script, saying which.
tls_step() {
  "$@" >>"$logfile" 2>&1 && return 0
  tail -n 20 "$logfile" >&2
  die "making the test TLS certificates failed at: $*"
}

# Makes the test CA, the broker's keystore and truststore, a client certificate and key and an
# unrelated CA in $tls (once per data directory; see the header). Written to tls.tmp and then
# renamed, so that an interrupted run starts over. About 16 JVM starts: 5-10 s. (Running the
# three parts in parallel measured no faster on two busy cores.)
make_tls() {
  [[ -f $tls/.complete ]] && return 0
  command -v keytool >/dev/null || die "keytool not found (it comes with the JDK)"
  command -v openssl >/dev/null || die "openssl not found (it exports the test client's key as PEM)"
  echo "kafka.sh: making test TLS certificates in $tls" >&2
  local t=$data/tls.tmp
  local p=(-storetype PKCS12 -storepass "$storepass")
  local new_ca=(-genkeypair -alias ca -keyalg RSA -keysize 2048 -validity 3650
    -ext bc:c -ext ku:c=keyCertSign,cRLSign)
  local new_key=(-genkeypair -keyalg RSA -keysize 2048 -validity 3650)
  local sign=(-gencert -alias ca -keystore "$t/ca.p12" "${p[@]}" -validity 3650 -rfc)
  rm -rf "$t" && mkdir -p "$t"
  tls_step kt "${new_ca[@]}" -dname CN=messagebuffer-test-ca -keystore "$t/ca.p12" "${p[@]}"
  tls_step kt -exportcert -rfc -alias ca -keystore "$t/ca.p12" "${p[@]}" -file "$t/ca.pem"
  tls_step kt "${new_ca[@]}" -dname CN=messagebuffer-wrong-ca -keystore "$t/wrong-ca.p12" "${p[@]}"
  tls_step kt -exportcert -rfc -alias ca -keystore "$t/wrong-ca.p12" "${p[@]}" \
    -file "$t/wrong-ca.pem"
  # The broker: a key pair, its certificate signed by the CA, the chain back in the keystore;
  # and a truststore with the CA, which client certificates are checked against.
  tls_step kt "${new_key[@]}" -alias broker -dname CN=localhost -keystore "$t/broker.p12" "${p[@]}"
  tls_step kt -certreq -alias broker -keystore "$t/broker.p12" "${p[@]}" -file "$t/broker.csr"
  tls_step kt "${sign[@]}" -infile "$t/broker.csr" -outfile "$t/broker.pem" \
    -ext san=ip:127.0.0.1,dns:localhost -ext ku:c=digitalSignature,keyEncipherment \
    -ext eku=serverAuth,clientAuth
  tls_step kt -importcert -noprompt -alias ca -file "$t/ca.pem" -keystore "$t/broker.p12" "${p[@]}"
  tls_step kt -importcert -noprompt -alias broker -file "$t/broker.pem" \
    -keystore "$t/broker.p12" "${p[@]}"
  tls_step kt -importcert -noprompt -alias ca -file "$t/ca.pem" \
    -keystore "$t/truststore.p12" "${p[@]}"
  # The client: the same, then its key out of the PKCS12 store as unencrypted PKCS#8 PEM.
  tls_step kt "${new_key[@]}" -alias client -dname CN=messagebuffer-test-client \
    -keystore "$t/client.p12" "${p[@]}"
  tls_step kt -certreq -alias client -keystore "$t/client.p12" "${p[@]}" -file "$t/client.csr"
  tls_step kt "${sign[@]}" -infile "$t/client.csr" -outfile "$t/client-cert.pem" \
    -ext ku:c=digitalSignature -ext eku=clientAuth
  tls_step openssl pkcs12 -in "$t/client.p12" -passin "pass:$storepass" -nocerts -nodes \
    -out "$t/client-key.p12.pem"
  tls_step openssl pkey -in "$t/client-key.p12.pem" -out "$t/client-key.pem"
  rm -f "$t"/*.csr "$t/broker.pem" "$t/client.p12" "$t/client-key.p12.pem" "$t/wrong-ca.p12"
  touch "$t/.complete"
  rm -rf "$tls" && mv "$t" "$tls"
}

write_config() {
  mkdir -p "$data/logs"
  cat >"$data/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport,SASL_PLAINTEXT://127.0.0.1:$sport,SSL://127.0.0.1:$tport,MTLS://127.0.0.1:$mport,SASL_SSL://127.0.0.1:$xport
advertised.listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport,SASL_PLAINTEXT://127.0.0.1:$sport,SSL://127.0.0.1:$tport,MTLS://127.0.0.1:$mport,SASL_SSL://127.0.0.1:$xport
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SSL:SSL,MTLS:SSL,SASL_SSL:SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-256
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PKCS12
ssl.keystore.location=$tls/broker.p12
ssl.keystore.password=$storepass
ssl.key.password=$storepass
ssl.truststore.type=PKCS12
ssl.truststore.location=$tls/truststore.p12
ssl.truststore.password=$storepass
ssl.client.auth=none
listener.name.mtls.ssl.client.auth=required
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=true
super.users=User:ANONYMOUS
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
  local p
  for p in "$port" "$cport" "$sport" "$tport" "$mport" "$xport"; do
    port_open "$p" && die "port $p is in use by another process; set KAFKA_PORT (the broker uses $port-$xport)"
  done
  fetch_jars
  mkdir -p "$data"
  make_tls
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
    if port_open "$port"; then echo "kafka.sh: broker ready on 127.0.0.1:$port (pid $(cat "$pidfile"))" >&2; return 0; fi
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
  dir) echo "$data" ;;
  wipe) stop; rm -rf "$data" ;;
  *) sed -n '2,43p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
