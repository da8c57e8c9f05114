#!/usr/bin/env bash
# The whole test suite: starts the local Apache Kafka broker (scripts/kafka.sh), runs every
# test file under Deno and then under Bun, builds the single-file executable and runs the
# agent tests against it, and stops the broker it started. `npm test` and .ci/run call this.
#
#   scripts/test.sh            everything (with MB_TEST_PACKAGE=1 also the release build and
#                              the .deb installed, run and removed: root, as .ci/run does)
#   scripts/test.sh FILES...   only these test files (both runtimes)
# It also starts a 3-broker cluster (scripts/kafka_cluster.sh) for tests/cluster/.
# Environment: MB_TEST_BROKERS=host:port uses that broker instead of starting one. The
# SASL test then needs MB_TEST_SASL_BROKERS, a SCRAM-SHA-256 listener with user "alice",
# password "alice-secret"; the TLS tests need MB_TEST_TLS_BROKERS (an SSL listener),
# MB_TEST_MTLS_BROKERS (an SSL listener that requires client certificates) and MB_TEST_TLS_DIR
# (ca.pem, client-cert.pem, client-key.pem, wrong-ca.pem; see kafka.sh). Each is skipped,
# saying so, without them. MB_TEST_CLUSTER_BROKERS=host:port,... uses that cluster instead of
# starting one (its brokers numbered 1 to 3 and managed by scripts/kafka_cluster.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bin=node_modules/.bin
[[ -x $bin/deno && -x $bin/bun ]] || { echo "test.sh: run 'npm ci' first (deno and bun come from npm)" >&2; exit 1; }

started_broker=""
if [[ -z ${MB_TEST_BROKERS:-} ]]; then
  # The test brokers' ports (19092, 19192, 19292 and the few after each) lie below Linux's
  # ephemeral range (32768-60999): a broker stopped by a test (outages, failover, the crash and
  # power-cut loops) could otherwise find its port taken by an outgoing connection when it
  # starts again ("Address already in use"), as a CI run once did on 39092.
  export KAFKA_PORT=${KAFKA_PORT:-19092}
  if ! scripts/kafka.sh status >/dev/null; then
    # A fresh data directory: no topics or users left over from an earlier run.
    KAFKA_DATA_DIR=$(mktemp -d "${TMPDIR:-/tmp}/messagebuffer-test-kafka-XXXXXX")
    export KAFKA_DATA_DIR
    scripts/kafka.sh start
    started_broker=yes
  fi
  export MB_TEST_BROKERS=127.0.0.1:$KAFKA_PORT
  # The broker's jars hold Kafka's Java client: the independent consumer of the codec tests.
  export MB_TEST_KAFKA_LIBS=${KAFKA_LIBS:-$HOME/.cache/messagebuffer/kafka-${KAFKA_VERSION:-4.1.2}}
  # The same broker's SASL_PLAINTEXT listener (SCRAM-SHA-256, user alice; see kafka.sh).
  export MB_TEST_SASL_BROKERS=127.0.0.1:$((KAFKA_PORT + 2))
  # Its SSL listeners (one-way, mutual) and their certificates, unless a broker already running
  # was started by an older kafka.sh that made none.
  tls_dir=$(scripts/kafka.sh dir)/tls
  if [[ -f $tls_dir/.complete ]]; then
    export MB_TEST_TLS_BROKERS=127.0.0.1:$((KAFKA_PORT + 3))
    export MB_TEST_MTLS_BROKERS=127.0.0.1:$((KAFKA_PORT + 4))
    export MB_TEST_SASL_SSL_BROKERS=127.0.0.1:$((KAFKA_PORT + 5))
    export MB_TEST_TLS_DIR=$tls_dir
  fi
fi
files=("$@")
[[ ${#files[@]} -gt 0 ]] || files=(tests/)

# An Apache Kafka 3.9.1 broker beside the 4.1.2 one, for tests/provider/versions_test.ts (the
# Produce version negotiated, both clients): started for a whole run, or when that file is
# named. MB_TEST_OLD_BROKERS names a running one instead.
started_old=""
need_old=""
for f in "${files[@]}"; do
  case $f in tests | tests/ | tests/provider | tests/provider/ | tests/provider/versions_test.ts) need_old=yes ;; esac
done
if [[ -n $need_old && -z ${MB_TEST_OLD_BROKERS:-} ]]; then
  old_port=${KAFKA_OLD_PORT:-19292}
  old_dir=$(mktemp -d "${TMPDIR:-/tmp}/messagebuffer-test-kafka391-XXXXXX")
  KAFKA_VERSION=3.9.1 KAFKA_PORT=$old_port KAFKA_DATA_DIR=$old_dir scripts/kafka.sh start
  started_old=$old_dir
  export MB_TEST_OLD_BROKERS=127.0.0.1:$old_port
fi

# The 3-broker cluster (scripts/kafka_cluster.sh) that tests/cluster/ runs against: started
# for a whole run, or when the files named include tests/cluster. MB_TEST_CLUSTER_BROKERS
# names a running one instead.
started_cluster=""
need_cluster=""
for f in "${files[@]}"; do
  case $f in tests | tests/ | tests/cluster*) need_cluster=yes ;; esac
done
if [[ -n $need_cluster && -z ${MB_TEST_CLUSTER_BROKERS:-} ]]; then
  export KAFKA_CLUSTER_PORT=${KAFKA_CLUSTER_PORT:-19192}
  if ! scripts/kafka_cluster.sh status >/dev/null; then
    KAFKA_CLUSTER_DIR=$(mktemp -d "${TMPDIR:-/tmp}/messagebuffer-test-cluster-XXXXXX")
    export KAFKA_CLUSTER_DIR
    scripts/kafka_cluster.sh start
    started_cluster=yes
  fi
  MB_TEST_CLUSTER_BROKERS=$(scripts/kafka_cluster.sh bootstrap)
  export MB_TEST_CLUSTER_BROKERS
  # The leader moves run Kafka's own Admin client from the broker's jars.
  export MB_TEST_KAFKA_LIBS=${MB_TEST_KAFKA_LIBS:-${KAFKA_LIBS:-$HOME/.cache/messagebuffer/kafka-${KAFKA_VERSION:-4.1.2}}}
fi

cleanup() {
  [[ -n $started_broker ]] && scripts/kafka.sh wipe
  [[ -n $started_cluster ]] && scripts/kafka_cluster.sh wipe
  [[ -n $started_old ]] && KAFKA_VERSION=3.9.1 KAFKA_PORT=$old_port KAFKA_DATA_DIR=$started_old \
    scripts/kafka.sh wipe
  true
}
trap cleanup EXIT

status=0
echo "== deno test (Kafka client: platformatic, the default)" >&2
$bin/deno test -A --no-check "${files[@]}" || status=1
echo "== bun test (Kafka client: platformatic, the default)" >&2
$bin/bun test --timeout 300000 "${files[@]}" || status=1
# The same Kafka provider and cluster tests with the other client library.
provider_files=()
for f in "${files[@]}"; do
  case $f in
    tests | tests/) provider_files+=(tests/provider/ tests/cluster/) ;;
    tests/provider* | tests/cluster*) provider_files+=("$f") ;;
  esac
done
if [[ ${#provider_files[@]} -gt 0 ]]; then
  echo "== deno test, bun test: Kafka provider tests with the kafkajs client" >&2
  MB_TEST_KAFKA_CLIENT=kafkajs $bin/deno test -A --no-check "${provider_files[@]}" || status=1
  MB_TEST_KAFKA_CLIENT=kafkajs $bin/bun test --timeout 300000 "${provider_files[@]}" || status=1
fi
if [[ $# -eq 0 ]]; then
  # The agent as shipped: the single-file executable, through the same agent tests.
  echo "== single-file executable (bun build --compile) + agent tests" >&2
  exe=$(mktemp -d)/messagebuffer
  scripts/compile.sh "$exe" || status=1
  # Others may run it (mktemp made its directory 0700): the security tests run it as another
  # user, as the Debian package's unit does.
  chmod 755 "$(dirname "$exe")"
  MB_AGENT_BIN=$exe $bin/deno test -A --no-check tests/agent/ tests/cluster/failover_test.ts ||
    status=1
  # The crash loop (SIGKILLs, broker outages, a pruning cap; see scripts/crash_loop.ts), short:
  # the agent from source, then the executable. It stops and starts the broker, so only one
  # that kafka.sh manages.
  if scripts/kafka.sh status >/dev/null 2>&1; then
    # With the default client it asserts no duplicates; kafkajs (at least once) stays within the
    # batch in flight at each kill.
    echo "== crash loop: 20 kills from source, 20 of the executable, 10 with kafkajs" >&2
    $bin/deno run -A scripts/crash_loop.ts --kills 20 --outage-every 7 --prune-every 9 --quiet || status=1
    $bin/deno run -A scripts/crash_loop.ts --kills 20 --outage-every 7 --prune-every 9 --quiet \
      --exe "$exe" || status=1
    $bin/deno run -A scripts/crash_loop.ts --kills 10 --outage-every 4 --prune-every 0 --quiet \
      --kafka-client kafkajs || status=1
    # The power-cut loop (the executable on pcfs, a FUSE file system that drops, tears or
    # reorders unsynced writes; see scripts/powercut_loop.ts). It says SKIPPED without root,
    # /dev/fuse or Go.
    echo "== power-cut loop: 12 cuts under --fsync always, 12 under interval" >&2
    for policy in always interval; do
      $bin/deno run -A scripts/powercut_loop.ts --cuts 12 --fsync $policy --exe "$exe" --quiet ||
        status=1
    done
  else
    echo "== crash and power-cut loops skipped: the broker at $MB_TEST_BROKERS is not one scripts/kafka.sh runs" >&2
  fi
  rm -rf "$(dirname "$exe")"
  # The release (tarball and .deb) and the package installed as a host would (root only).
  if [[ ${MB_TEST_PACKAGE:-} == 1 ]]; then
    echo "== release build + Debian package install test" >&2
    rel=$(mktemp -d)
    if scripts/release.sh "$rel"; then
      scripts/test_package.sh "$rel"/messagebuffer_*.deb || status=1
    else
      status=1
    fi
    rm -rf "$rel"
  fi
fi
exit $status
