# Shared by scripts/kafka.sh (one broker) and scripts/kafka_cluster.sh (a cluster): the jars
# from Maven Central and the JVM command line. Sourced, not run; the caller sets $here,
# $version and $libs.

die() { echo "$(basename "$0"): $*" >&2; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

fetch_jars() {
  [[ -f $libs/.complete ]] && return 0
  command -v java >/dev/null || die "java not found (Java 17+ is needed for the test broker)"
  command -v mvn >/dev/null || die "mvn not found (Maven resolves the broker's jars from Maven Central)"
  echo "$(basename "$0"): resolving Apache Kafka $version jars from Maven Central into $libs" >&2
  mkdir -p "$libs"
  mvn -q -B -f "$here/kafka/pom.xml" -Dkafka.version="$version" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$libs" >&2 \
    || die "mvn could not resolve org.apache.kafka:kafka_2.13:$version"
  touch "$libs/.complete"
}

java_cmd() { java -Dlog4j2.configurationFile="$here/kafka/log4j2.xml" -cp "$libs/*" "$@"; }
