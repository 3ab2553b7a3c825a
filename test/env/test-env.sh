#!/usr/bin/env bash
# Real-server test environment for Abacus: Kafka (KRaft), Cassandra, an S3 store
# (versitygw), a Kubernetes control plane (etcd, kube-apiserver,
# kube-controller-manager), a Kubernetes node (containerd, kubelet, kube-scheduler,
# kube-proxy) running the Abacus image, and Prometheus, on free ports, with data under
# .test-env/. See test/env/README.md.
#
#   test-env.sh up [kafka] [kafka4] [cassandra] [cassandra-auth] [s3] [kube] [node] [prometheus]   (none = all)
#   test-env.sh down
#   test-env.sh stop|start|restart NAME     (reuses NAME's data and ports)
#   test-env.sh status
#   test-env.sh prepare [NAMES]             (install/build only, start nothing)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
ENV_DIR="$ROOT/test/env"
STATE="$ROOT/.test-env"
export ABACUS_CACHE_DIR="${ABACUS_CACHE_DIR:-$HOME/.cache/abacus}"
CACHE="$ABACUS_CACHE_DIR"

# shellcheck source=test/env/build-go.sh
source "$ENV_DIR/build-go.sh"

KAFKA_VERSION="$(sed -n 's#.*<kafka.version>\(.*\)</kafka.version>.*#\1#p' "$ENV_DIR/maven/kafka/pom.xml")"
CASSANDRA_VERSION="$(sed -n 's#.*<cassandra.version>\(.*\)</cassandra.version>.*#\1#p' "$ENV_DIR/maven/cassandra/pom.xml")"
ALL_SERVERS=(kafka kafka4 cassandra cassandra-auth s3 kube node prometheus)
S3_ACCESS_KEY="abacus-test"
S3_SECRET_KEY="abacus-test-secret"
S3_BUCKET="abacus-test"

log() { printf '[test-env %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- state helpers

data_dir() {
  # One temporary data directory per environment, created on first `up`.
  if [[ -f "$STATE/datadir" && -d "$(cat "$STATE/datadir")" ]]; then
    cat "$STATE/datadir"; return
  fi
  mkdir -p "$STATE"
  local d; d="$(mktemp -d "$STATE/run.XXXXXX")"
  echo "$d" > "$STATE/datadir"
  echo "$d"
}

pidfile() { echo "$STATE/pids/$1.pid"; }

# Alive and really ours: every server's command line names a path under
# $STATE, so a pid reused by something else (after a reboot) is left alone.
pid_ours() { # pid
  kill -0 "$1" 2>/dev/null && tr '\0' ' ' < "/proc/$1/cmdline" 2>/dev/null | grep -qF "$STATE/"
}

proc_alive() { # name
  local pf; pf="$(pidfile "$1")"
  [[ -f "$pf" ]] && pid_ours "$(cat "$pf")"
}

# A port that nothing listens on and that we have not handed out already; kept
# in $STATE/ports so a restarted server gets the same one.
port_for() { # key
  local f="$STATE/ports/$1"
  if [[ -s "$f" ]]; then cat "$f"; return; fi
  mkdir -p "$STATE/ports"
  local p
  while :; do
    p="$(node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close();});')"
    if ! grep -qx "$p" "$STATE"/ports/* 2>/dev/null; then break; fi
  done
  echo "$p" > "$f"
  echo "$p"
}

# Starts a command in its own session/process group; the pid file is written at
# once so `down` finds it even if this script is interrupted right after.
spawn() { # name logfile cmd...
  local name="$1" logf="$2"; shift 2
  mkdir -p "$STATE/pids" "$(dirname "$logf")"
  echo "=== start $(date -Is): $*" >> "$logf"
  # fd 9 is the state lock: the server must not inherit (and so hold) it.
  setsid "$@" >> "$logf" 2>&1 < /dev/null 9>&- &
  echo $! > "$(pidfile "$name")"
}

kill_proc() { # name [grace seconds]
  local name="$1" grace="${2:-30}" pf pid
  pf="$(pidfile "$name")"
  [[ -f "$pf" ]] || return 0
  pid="$(cat "$pf")"
  if ! pid_ours "$pid"; then rm -f "$pf"; return 0; fi
  if kill -0 "$pid" 2>/dev/null; then
    log "stopping $name (pid $pid)"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    local i
    for ((i = 0; i < grace * 10; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "$name did not stop in ${grace}s, killing"
    fi
  fi
  # Whatever is left of the group (also when the leader is already gone).
  kill -KILL -- "-$pid" 2>/dev/null || true
  local i
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  rm -f "$pf"
}

wait_port_free() { # port
  local i
  for ((i = 0; i < 100; i++)); do
    ss -Hltn "sport = :$1" | grep -q . || return 0
    sleep 0.2
  done
  die "port $1 is still in use"
}

log_size() { [[ -f "$1" ]] && stat -c %s "$1" || echo 0; }

# Waits until check_cmd succeeds; fails early when the process died.
wait_until() { # name timeout logfile check_cmd...
  local name="$1" timeout="$2" logf="$3"; shift 3
  local start=$SECONDS
  while :; do
    if "$@" >/dev/null 2>&1; then return 0; fi
    # kill -0, not proc_alive: right after spawn the child may not have exec'd yet, and
    # its command line is still this script's (no $STATE in it).
    if ! kill -0 "$(cat "$(pidfile "$name")" 2>/dev/null)" 2>/dev/null; then
      tail -n 60 "$logf" >&2 || true
      die "$name exited during startup (log: $logf)"
    fi
    if ((SECONDS - start > timeout)); then
      tail -n 60 "$logf" >&2 || true
      die "$name not ready after ${timeout}s (log: $logf)"
    fi
    sleep 0.5
  done
}

log_has_since() { # logfile offset pattern
  tail -c "+$(($2 + 1))" "$1" 2>/dev/null | grep -q -- "$3"
}

tcp_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

write_env_fragment() { # server, lines on stdin
  mkdir -p "$STATE/env.d"
  cat > "$STATE/env.d/$1.env"
  {
    echo "# Written by test/env/test-env.sh; source this file."
    cat "$STATE"/env.d/*.env
  } > "$STATE/env.tmp"
  mv "$STATE/env.tmp" "$STATE/env"
}

# ------------------------------------------------------------- installs (cached)

# Installs Debian packages that are missing, keeping the .debs in the cache.
apt_ensure() { # pkg...
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  log "installing Debian packages: ${missing[*]}"
  local sudo=()
  [[ $(id -u) == 0 ]] || sudo=(sudo)
  mkdir -p "$CACHE/apt/archives/partial"
  local aptopts=(-o "Dir::Cache::archives=$CACHE/apt/archives" -o DPkg::Lock::Timeout=600
    -y -q --no-install-recommends)
  # Packages must not start their own daemons (no systemd here anyway).
  local added_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee /usr/sbin/policy-rc.d >/dev/null
    "${sudo[@]}" chmod +x /usr/sbin/policy-rc.d
    added_policy=1
  fi
  if ! DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install "${aptopts[@]}" "${missing[@]}" >&2; then
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get update -q -o DPkg::Lock::Timeout=600 >&2
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install "${aptopts[@]}" "${missing[@]}" >&2
  fi
  if ((added_policy)); then "${sudo[@]}" rm -f /usr/sbin/policy-rc.d; fi
}

ensure_java() {
  command -v java >/dev/null || apt_ensure openjdk-17-jre-headless
  command -v mvn >/dev/null || apt_ensure maven
}

ensure_go() {
  if ! command -v go >/dev/null && [[ -x /usr/local/go/bin/go ]]; then
    export PATH="/usr/local/go/bin:$PATH"
  fi
  command -v go >/dev/null || die "Go (1.24 or newer) is required to build the Go-based servers: go is not on PATH"
}

# Resolves a Maven runtime into $CACHE/<name>/lib (once).
maven_lib() { cache_locked "maven-$1" _maven_lib "$@"; }
_maven_lib() { # name pomdir
  local lib="$CACHE/$1/lib"
  if [[ -f "$lib/.complete" ]]; then echo "$lib"; return; fi
  ensure_java
  log "resolving $1 from Maven Central (cached after the first time)"
  rm -rf "$lib.tmp"
  mvn -q -B -Dstyle.color=never -f "$2/pom.xml" -Dmaven.repo.local="$CACHE/m2" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$lib.tmp" >&2
  touch "$lib.tmp/.complete"
  rm -rf "$lib"; mv "$lib.tmp" "$lib"
  echo "$lib"
}

# ------------------------------------------------------------------------ Kafka

# Formats the KRaft storage once (extra StorageTool format arguments after --), starts
# the broker and waits until it serves on every port given.
run_kafka() { # name dir lib log-config-flag ports... [-- format-args...]
  local name="$1" d="$2" lib="$3" logflag="$4"; shift 4
  local ports=() format_args=()
  while (($#)) && [[ "$1" != "--" ]]; do ports+=("$1"); shift; done
  (($#)) && { shift; format_args=("$@"); }
  local java=(java -Xms256m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20
    -XX:MaxDirectMemorySize=256m -Djava.awt.headless=true "$logflag" -cp "$lib/*")
  if [[ ! -f "$d/logs/meta.properties" ]]; then
    local id; id="$("${java[@]}" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1)"
    "${java[@]}" kafka.tools.StorageTool format -t "$id" -c "$d/server.properties" \
      ${format_args[@]+"${format_args[@]}"} >> "$d/kafka.log" 2>&1 \
      || { tail -n 30 "$d/kafka.log" >&2; die "$name storage format failed"; }
  fi
  local p
  for p in "${ports[@]}"; do wait_port_free "$p"; done
  local off; off="$(log_size "$d/kafka.log")"
  spawn "$name" "$d/kafka.log" "${java[@]}" kafka.Kafka "$d/server.properties"
  wait_until "$name" 120 "$d/kafka.log" log_has_since "$d/kafka.log" "$off" "Kafka Server started"
  for p in "${ports[@]}"; do wait_until "$name" 30 "$d/kafka.log" tcp_open "$p"; done
}

prepare_kafka() { maven_lib "kafka-$KAFKA_VERSION" "$ENV_DIR/maven/kafka" >/dev/null; }

start_kafka() {
  local lib; lib="$(maven_lib "kafka-$KAFKA_VERSION" "$ENV_DIR/maven/kafka")"
  local d; d="$(data_dir)/kafka"
  local port cport
  port="$(port_for kafka)"; cport="$(port_for kafka-controller)"
  mkdir -p "$d/logs"
  cat > "$d/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://$(bind_addr):$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://$(advertised_addr):$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$d/logs
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=10
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
delete.topic.enable=true
log.flush.interval.messages=9223372036854775807
EOF
  cat > "$d/log4j.properties" <<'EOF'
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.org.apache.kafka.controller=INFO
EOF
  run_kafka kafka "$d" "$lib" "-Dlog4j.configuration=file:$d/log4j.properties" "$port" "$cport"
  write_env_fragment kafka <<EOF
export ABACUS_TEST_KAFKA=127.0.0.1:$port
EOF
  log "kafka $KAFKA_VERSION ready on 127.0.0.1:$port"
}

stop_kafka() { kill_proc kafka 30; }

# ---------------------------------------------------------------------- Kafka 4

# A second broker, Kafka 4.x (the line users run today; 4.0 removed the old protocol
# versions, KIP-896), beside 3.9. Besides PLAINTEXT it has an SSL listener and a
# SASL_SSL listener with SCRAM-SHA-512, signed by a CA made here with openssl; the SCRAM
# user is created when the storage is formatted.
KAFKA4_VERSION="$(sed -n 's#.*<kafka.version>\(.*\)</kafka.version>.*#\1#p' "$ENV_DIR/maven/kafka4/pom.xml")"
KAFKA4_SCRAM_USER="abacus-test"
KAFKA4_SCRAM_PASSWORD="abacus-test-scram-secret"
KAFKA4_STORE_PASSWORD="abacus-test-store"

prepare_kafka4() { maven_lib "kafka-$KAFKA4_VERSION" "$ENV_DIR/maven/kafka4" >/dev/null; }

kafka4_certs() { # dir: ca.crt (what clients trust) and the broker's PKCS#12 keystore
  local t="$1"
  [[ -f "$t/broker.p12" ]] && return 0
  mkdir -p "$t"
  (
    cd "$t"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=abacus-test-kafka-ca" \
      -keyout ca.key -out ca.crt 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout broker.key -out broker.csr 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' > broker.ext
    openssl x509 -req -in broker.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile broker.ext -out broker.crt 2>/dev/null
    openssl pkcs12 -export -in broker.crt -inkey broker.key -certfile ca.crt -name broker \
      -out broker.p12 -passout "pass:$KAFKA4_STORE_PASSWORD"
    rm -f broker.csr broker.ext ca.key ca.srl
  )
}

start_kafka4() {
  local lib; lib="$(maven_lib "kafka-$KAFKA4_VERSION" "$ENV_DIR/maven/kafka4")"
  local d; d="$(data_dir)/kafka4"
  local port cport sport aport
  port="$(port_for kafka4)"; cport="$(port_for kafka4-controller)"
  sport="$(port_for kafka4-ssl)"; aport="$(port_for kafka4-sasl-ssl)"
  mkdir -p "$d/logs"
  kafka4_certs "$d/tls"
  cat > "$d/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,SSL://127.0.0.1:$sport,SASL_SSL://127.0.0.1:$aport,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port,SSL://127.0.0.1:$sport,SASL_SSL://127.0.0.1:$aport
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT
ssl.keystore.type=PKCS12
ssl.keystore.location=$d/tls/broker.p12
ssl.keystore.password=$KAFKA4_STORE_PASSWORD
ssl.key.password=$KAFKA4_STORE_PASSWORD
ssl.client.auth=none
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
log.dirs=$d/logs
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=10
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
delete.topic.enable=true
log.flush.interval.messages=9223372036854775807
EOF
  cat > "$d/log4j2.properties" <<'EOF'
status = warn
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
EOF
  run_kafka kafka4 "$d" "$lib" "-Dlog4j2.configurationFile=$d/log4j2.properties" \
    "$port" "$sport" "$aport" "$cport" \
    -- --add-scram "SCRAM-SHA-512=[name=$KAFKA4_SCRAM_USER,password=$KAFKA4_SCRAM_PASSWORD]"
  write_env_fragment kafka4 <<EOF
export ABACUS_TEST_KAFKA4=127.0.0.1:$port
export ABACUS_TEST_KAFKA4_SSL=127.0.0.1:$sport
export ABACUS_TEST_KAFKA4_SASL_SSL=127.0.0.1:$aport
export ABACUS_TEST_KAFKA4_CA=$d/tls/ca.crt
export ABACUS_TEST_KAFKA4_SCRAM_USERNAME=$KAFKA4_SCRAM_USER
export ABACUS_TEST_KAFKA4_SCRAM_PASSWORD=$KAFKA4_SCRAM_PASSWORD
EOF
  log "kafka $KAFKA4_VERSION ready on 127.0.0.1:$port (SSL :$sport, SASL_SSL/SCRAM-SHA-512 :$aport)"
}

stop_kafka4() { kill_proc kafka4 30; }

# -------------------------------------------------------------------- Cassandra

prepare_cassandra() { maven_lib "cassandra-$CASSANDRA_VERSION" "$ENV_DIR/maven/cassandra" >/dev/null; }

# Runs one Cassandra node named NAME (its data directory, ports and pid file are named
# after it) with the given authenticator, authorizer and heap, and waits until CQL is served.
run_cassandra() { # name authenticator authorizer heap
  local name="$1" heap="$4"
  local lib; lib="$(maven_lib "cassandra-$CASSANDRA_VERSION" "$ENV_DIR/maven/cassandra")"
  local d; d="$(data_dir)/$name"
  local port sport
  port="$(port_for "$name")"; sport="$(port_for "$name-storage")"
  mkdir -p "$d/conf" "$d/data" "$d/commitlog" "$d/saved_caches" "$d/hints" "$d/cdc_raw" "$d/tmp"
  cat > "$d/conf/cassandra.yaml" <<EOF
cluster_name: abacus-test
num_tokens: 1
initial_token: 0
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "127.0.0.1:$sport"
listen_address: 127.0.0.1
rpc_address: $(bind_addr)
broadcast_rpc_address: $(advertised_addr)
storage_port: $sport
native_transport_port: $port
start_native_transport: true
data_file_directories:
  - $d/data
commitlog_directory: $d/commitlog
saved_caches_directory: $d/saved_caches
hints_directory: $d/hints
cdc_raw_directory: $d/cdc_raw
commitlog_sync: periodic
commitlog_sync_period: 10000ms
authenticator: $2
authorizer: $3
concurrent_compactors: 1
memtable_heap_space: 128MiB
memtable_offheap_space: 128MiB
key_cache_size: 16MiB
disk_access_mode: mmap_index_only
auto_snapshot: false
snapshot_on_duplicate_row_detection: false
EOF
  cat > "$d/conf/logback.xml" <<'EOF'
<configuration scan="false">
  <appender name="STDOUT" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="STDOUT"/></root>
</configuration>
EOF
  local jamm; jamm="$(ls "$lib"/jamm-*.jar | head -n1)"
  local java=(java "-Xms$heap" "-Xmx$heap" -Xss256k -XX:+UseG1GC -XX:+ParallelRefProcEnabled
    -XX:MaxTenuringThreshold=1 -XX:G1HeapRegionSize=4m -XX:MaxGCPauseMillis=300
    -XX:MaxDirectMemorySize=512m -XX:+PerfDisableSharedMem
    "-javaagent:$jamm"
    -Djdk.attach.allowAttachSelf=true
    --add-exports java.base/jdk.internal.misc=ALL-UNNAMED
    --add-exports java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED
    --add-exports java.rmi/sun.rmi.registry=ALL-UNNAMED
    --add-exports java.rmi/sun.rmi.server=ALL-UNNAMED
    --add-exports java.sql/java.sql=ALL-UNNAMED
    --add-exports java.base/java.lang.ref=ALL-UNNAMED
    --add-exports jdk.unsupported/sun.misc=ALL-UNNAMED
    --add-exports jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED
    --add-exports jdk.attach/sun.tools.attach=ALL-UNNAMED
    --add-opens java.base/java.lang.module=ALL-UNNAMED
    --add-opens java.base/jdk.internal.loader=ALL-UNNAMED
    --add-opens java.base/jdk.internal.ref=ALL-UNNAMED
    --add-opens java.base/jdk.internal.reflect=ALL-UNNAMED
    --add-opens java.base/jdk.internal.math=ALL-UNNAMED
    --add-opens java.base/jdk.internal.module=ALL-UNNAMED
    --add-opens java.base/jdk.internal.util.jar=ALL-UNNAMED
    --add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED
    --add-opens java.base/sun.nio.ch=ALL-UNNAMED
    --add-opens java.base/java.io=ALL-UNNAMED
    --add-opens java.base/java.lang.reflect=ALL-UNNAMED
    --add-opens jdk.compiler/com.sun.tools.javac=ALL-UNNAMED
    --add-opens java.base/java.lang=ALL-UNNAMED
    --add-opens java.base/java.util=ALL-UNNAMED
    -Dio.netty.tryReflectionSetAccessible=true
    -Dio.netty.allocator.useCacheForAllThreads=true
    -Dio.netty.allocator.maxOrder=11
    "-Djava.io.tmpdir=$d/tmp" "-Djna.tmpdir=$d/tmp"
    -Dcassandra-foreground=yes
    "-Dcassandra.config=file://$d/conf/cassandra.yaml"
    "-Dcassandra.storagedir=$d"
    "-Dlogback.configurationFile=$d/conf/logback.xml"
    -Dcassandra.skip_wait_for_gossip_to_settle=0
    -Dcassandra.superuser_setup_delay_ms=0
    -Dcassandra.ring_delay_ms=1000
    -Dcassandra.consistent.rangemovement=false
    -cp "$d/conf:$lib/*"
    org.apache.cassandra.service.CassandraDaemon)
  wait_port_free "$port"; wait_port_free "$sport"
  local off; off="$(log_size "$d/cassandra.log")"
  spawn "$name" "$d/cassandra.log" "${java[@]}"
  wait_until "$name" 240 "$d/cassandra.log" log_has_since "$d/cassandra.log" "$off" "Starting listening for CQL clients"
  wait_until "$name" 30 "$d/cassandra.log" tcp_open "$port"
}

start_cassandra() {
  run_cassandra cassandra AllowAllAuthenticator AllowAllAuthorizer 1g
  local port; port="$(port_for cassandra)"
  write_env_fragment cassandra <<EOF
export ABACUS_TEST_CASSANDRA=127.0.0.1:$port
export ABACUS_TEST_CASSANDRA_DC=datacenter1
EOF
  log "cassandra $CASSANDRA_VERSION ready on 127.0.0.1:$port"
}

stop_cassandra() { kill_proc cassandra 60; }

# A second node with password authentication (PasswordAuthenticator, CassandraAuthorizer)
# for the credential tests, which write little (half the heap); the other tests keep the
# open node. Its superuser is
# Cassandra's default cassandra/cassandra, created at once (superuser_setup_delay_ms=0);
# tests create their own roles with it.
prepare_cassandra-auth() { prepare_cassandra; }

start_cassandra-auth() {
  run_cassandra cassandra-auth PasswordAuthenticator CassandraAuthorizer 512m
  local port; port="$(port_for cassandra-auth)"
  # The default superuser is created just after CQL starts (once: the line stays in the log).
  local logf; logf="$(data_dir)/cassandra-auth/cassandra.log"
  wait_until cassandra-auth 60 "$logf" log_has_since "$logf" 0 "Created default superuser role"
  write_env_fragment cassandra-auth <<EOF
export ABACUS_TEST_CASSANDRA_AUTH=127.0.0.1:$port
export ABACUS_TEST_CASSANDRA_AUTH_SUPERUSER=cassandra
export ABACUS_TEST_CASSANDRA_AUTH_SUPERUSER_PASSWORD=cassandra
EOF
  log "cassandra $CASSANDRA_VERSION with PasswordAuthenticator ready on 127.0.0.1:$port"
}

stop_cassandra-auth() { kill_proc cassandra-auth 60; }


# ------------------------------------------------------------------- S3 (versitygw)

prepare_s3() { ensure_go; build_versitygw >/dev/null; }

s3_curl() { # method path [curl args...]
  local m="$1" p="$2"; shift 2
  curl -sS -f -o /dev/null --max-time 5 -X "$m" \
    --aws-sigv4 "aws:amz:us-east-1:s3" --user "$S3_ACCESS_KEY:$S3_SECRET_KEY" \
    -H "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" \
    "$@" "http://127.0.0.1:$(port_for s3)$p"
}

start_s3() {
  ensure_go
  local bin; bin="$(build_versitygw)"
  local d; d="$(data_dir)/s3"
  local port; port="$(port_for s3)"
  mkdir -p "$d/root"
  wait_port_free "$port"
  spawn s3 "$d/versitygw.log" env ROOT_ACCESS_KEY="$S3_ACCESS_KEY" ROOT_SECRET_KEY="$S3_SECRET_KEY" \
    "$bin/versitygw" --port "$(bind_addr):$port" \
    --region us-east-1 posix "$d/root"
  wait_until s3 60 "$d/versitygw.log" s3_curl GET /
  if ! s3_curl HEAD "/$S3_BUCKET" 2>/dev/null; then
    s3_curl PUT "/$S3_BUCKET" || die "could not create bucket $S3_BUCKET"
  fi
  write_env_fragment s3 <<EOF
export ABACUS_TEST_S3_ENDPOINT=http://127.0.0.1:$port
export ABACUS_TEST_S3_ACCESS_KEY=$S3_ACCESS_KEY
export ABACUS_TEST_S3_SECRET_KEY=$S3_SECRET_KEY
export ABACUS_TEST_S3_BUCKET=$S3_BUCKET
export ABACUS_TEST_S3_REGION=us-east-1
EOF
  log "s3 (versitygw $VERSITYGW_VERSION, posix) ready on 127.0.0.1:$port, bucket $S3_BUCKET"
}

stop_s3() { kill_proc s3 15; }

# ------------------------------------------------------------------- Prometheus

prepare_prometheus() { ensure_go; build_prometheus >/dev/null; }

start_prometheus() {
  ensure_go
  local pbin; pbin="$(build_prometheus)"
  local d; d="$(data_dir)/prometheus"
  local port; port="$(port_for prometheus)"
  mkdir -p "$d/data" "$d/targets" "$d/rules"
  # Tests add scrape targets by writing file_sd JSON into targets/ (picked up
  # within seconds) and rule files into rules/ (then POST /-/reload).
  cat > "$d/prometheus.yml" <<EOF
global:
  scrape_interval: 2s
  evaluation_interval: 2s
rule_files:
  - $d/rules/*.yml
  - $d/rules/*.yaml
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: ["127.0.0.1:$port"]
  - job_name: abacus-test
    file_sd_configs:
      - files: ["$d/targets/*.json", "$d/targets/*.yml", "$d/targets/*.yaml"]
        refresh_interval: 2s
EOF
  # With a node: every Service endpoint whose port is named "metrics", found through the
  # API server (Kubernetes service discovery), labelled with its namespace, pod, service.
  local kcfg; kcfg="$(data_dir)/kube/pki/admin.kubeconfig"
  if [[ -n "$(node_ip_if_up)" && -f "$kcfg" ]]; then
    cat >> "$d/prometheus.yml" <<EOF
  - job_name: kubernetes-service-endpoints
    kubernetes_sd_configs:
      - role: endpoints
        kubeconfig_file: $kcfg
    relabel_configs:
      - source_labels: [__meta_kubernetes_endpoint_port_name]
        regex: metrics
        action: keep
      - source_labels: [__meta_kubernetes_namespace]
        target_label: namespace
      - source_labels: [__meta_kubernetes_pod_name]
        target_label: pod
      - source_labels: [__meta_kubernetes_service_name]
        target_label: service
      - regex: __meta_kubernetes_pod_label_(app_kubernetes_io_.+)
        action: labelmap
EOF
  fi
  wait_port_free "$port"
  spawn prometheus "$d/prometheus.log" "$pbin/prometheus" \
    --config.file="$d/prometheus.yml" --storage.tsdb.path="$d/data" \
    --web.listen-address="127.0.0.1:$port" --web.enable-lifecycle \
    --web.enable-admin-api --storage.tsdb.retention.time=1d
  wait_until prometheus 60 "$d/prometheus.log" curl -sf "http://127.0.0.1:$port/-/ready"
  write_env_fragment prometheus <<EOF
export ABACUS_TEST_PROMETHEUS=http://127.0.0.1:$port
export ABACUS_TEST_PROMETHEUS_TARGETS_DIR=$d/targets
export ABACUS_TEST_PROMETHEUS_RULES_DIR=$d/rules
EOF
  mkdir -p "$STATE/bin"
  ln -sfn "$pbin/promtool" "$STATE/bin/promtool"
  write_env_fragment prometheus-bin <<EOF
export ABACUS_TEST_BIN=$STATE/bin
EOF
  log "prometheus $("$pbin/prometheus" --version 2>&1 | head -n1 | awk '{print $3}') ready on 127.0.0.1:$port"
}

stop_prometheus() { kill_proc prometheus 15; }

# ------------------------------------------------------- Kubernetes control plane

prepare_kube() { ensure_go; build_kube >/dev/null; build_etcd >/dev/null; build_helm >/dev/null; }

kube_certs() { # dir
  local k="$1"
  mkdir -p "$k"
  # Front-proxy (request header) CA: lets the aggregation layer and the
  # controller manager's delegated authentication see a complete config.
  if [[ ! -f "$k/front-proxy-client.crt" ]]; then
    (
      cd "$k"
      openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=abacus-test-front-proxy-ca" \
        -keyout front-proxy-ca.key -out front-proxy-ca.crt 2>/dev/null
      openssl req -newkey rsa:2048 -nodes -subj "/CN=front-proxy-client" \
        -keyout front-proxy-client.key -out front-proxy-client.csr 2>/dev/null
      printf 'extendedKeyUsage=clientAuth\n' > fp.ext
      openssl x509 -req -in front-proxy-client.csr -CA front-proxy-ca.crt -CAkey front-proxy-ca.key \
        -CAcreateserial -days 3650 -extfile fp.ext -out front-proxy-client.crt 2>/dev/null
      rm -f front-proxy-client.csr fp.ext
    )
  fi
  [[ -f "$k/admin.crt" ]] && return 0
  (
    cd "$k"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=abacus-test-ca" \
      -keyout ca.key -out ca.crt 2>/dev/null
    # apiserver serving cert
    openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
      -keyout apiserver.key -out apiserver.csr 2>/dev/null
    # The node IP too: pods reach the API server there (the `kubernetes` Service's endpoint).
    printf 'subjectAltName=IP:127.0.0.1,IP:10.0.0.1,IP:%s,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\nextendedKeyUsage=serverAuth\n' "$NODE_IP" > apiserver.ext
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile apiserver.ext -out apiserver.crt 2>/dev/null
    # client certs: cluster admin, and the controller manager's own identity
    local who
    for who in "admin:/O=system:masters/CN=abacus-test-admin" \
      "kube-controller-manager:/CN=system:kube-controller-manager"; do
      local n="${who%%:*}" subj="${who#*:}"
      openssl req -newkey rsa:2048 -nodes -subj "$subj" -keyout "$n.key" -out "$n.csr" 2>/dev/null
      printf 'extendedKeyUsage=clientAuth\n' > client.ext
      openssl x509 -req -in "$n.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
        -extfile client.ext -out "$n.crt" 2>/dev/null
    done
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    rm -f ./*.csr ./*.ext
  )
}

kubeconfig_for() { # dir user port -> writes dir/user.kubeconfig
  local k="$1" u="$2" port="$3"
  cat > "$k/$u.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: abacus-test
    cluster:
      server: https://127.0.0.1:$port
      certificate-authority-data: $(base64 -w0 < "$k/ca.crt")
users:
  - name: $u
    user:
      client-certificate-data: $(base64 -w0 < "$k/$u.crt")
      client-key-data: $(base64 -w0 < "$k/$u.key")
contexts:
  - name: abacus-test
    context:
      cluster: abacus-test
      user: $u
      namespace: default
current-context: abacus-test
EOF
}

start_etcd() {
  local ebin; ebin="$(build_etcd)"
  local d; d="$(data_dir)/kube"
  local port peer
  port="$(port_for etcd)"; peer="$(port_for etcd-peer)"
  mkdir -p "$d/etcd"; chmod 700 "$d/etcd"
  wait_port_free "$port"; wait_port_free "$peer"
  spawn etcd "$d/etcd.log" "$ebin/etcd" --name abacus-test --data-dir "$d/etcd" \
    --listen-client-urls "http://127.0.0.1:$port" --advertise-client-urls "http://127.0.0.1:$port" \
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "abacus-test=http://127.0.0.1:$peer" \
    --unsafe-no-fsync --quota-backend-bytes=2147483648 --log-level=warn
  wait_until etcd 60 "$d/etcd.log" curl -sf "http://127.0.0.1:$port/health"
  log "etcd $ETCD_VERSION ready on 127.0.0.1:$port"
}

start_kube_apiserver() {
  local kbin; kbin="$(build_kube)"
  local d; d="$(data_dir)/kube"
  local port; port="$(port_for kube-apiserver)"
  node_certs "$d/pki"
  # With a node, pods reach the API server at the node IP (the `kubernetes` Service's
  # endpoint); without one, loopback only.
  local listen=(--bind-address 127.0.0.1 --advertise-address 127.0.0.1) reconciler=(--endpoint-reconciler-type none)
  if [[ -n "$(node_ip_if_up)" ]]; then
    listen=(--bind-address 0.0.0.0 --advertise-address "$NODE_IP")
    reconciler=(--endpoint-reconciler-type lease)
  fi
  wait_port_free "$port"
  spawn kube-apiserver "$d/kube-apiserver.log" "$kbin/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$(port_for etcd)" \
    "${listen[@]}" --secure-port "$port" \
    --tls-cert-file "$d/pki/apiserver.crt" --tls-private-key-file "$d/pki/apiserver.key" \
    --client-ca-file "$d/pki/ca.crt" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$d/pki/sa.pub" \
    --service-account-signing-key-file "$d/pki/sa.key" \
    --service-cluster-ip-range 10.0.0.0/24 \
    --authorization-mode Node,RBAC \
    --kubelet-client-certificate "$d/pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$d/pki/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority "$d/pki/ca.crt" \
    --kubelet-preferred-address-types InternalIP \
    --allow-privileged=true \
    --enable-admission-plugins NamespaceLifecycle,ServiceAccount,DefaultStorageClass,ResourceQuota \
    --cert-dir "$d/pki/generated" \
    --requestheader-client-ca-file "$d/pki/front-proxy-ca.crt" \
    --requestheader-allowed-names front-proxy-client \
    --requestheader-username-headers X-Remote-User \
    --requestheader-group-headers X-Remote-Group \
    --requestheader-extra-headers-prefix X-Remote-Extra- \
    --proxy-client-cert-file "$d/pki/front-proxy-client.crt" \
    --proxy-client-key-file "$d/pki/front-proxy-client.key" \
    "${reconciler[@]}" \
    --profiling=false --v=1
  wait_until kube-apiserver 120 "$d/kube-apiserver.log" \
    curl -sf --cacert "$d/pki/ca.crt" --cert "$d/pki/admin.crt" --key "$d/pki/admin.key" \
    "https://127.0.0.1:$port/readyz"
  log "kube-apiserver $KUBE_VERSION ready on https://127.0.0.1:$port"
}

start_kube_controller_manager() {
  local kbin; kbin="$(build_kube)"
  local d; d="$(data_dir)/kube"
  local port; port="$(port_for kube-controller-manager)"
  wait_port_free "$port"
  spawn kube-controller-manager "$d/kube-controller-manager.log" "$kbin/kube-controller-manager" \
    --kubeconfig "$d/pki/kube-controller-manager.kubeconfig" \
    --authentication-kubeconfig "$d/pki/kube-controller-manager.kubeconfig" \
    --authorization-kubeconfig "$d/pki/kube-controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$port" \
    --service-account-private-key-file "$d/pki/sa.key" \
    --root-ca-file "$d/pki/ca.crt" \
    --cluster-signing-cert-file "$d/pki/ca.crt" --cluster-signing-key-file "$d/pki/ca.key" \
    --use-service-account-credentials=true \
    --leader-elect=false --controllers '*' \
    --concurrent-gc-syncs 5 --v=1
  wait_until kube-controller-manager 60 "$d/kube-controller-manager.log" \
    curl -skf "https://127.0.0.1:$port/healthz"
  log "kube-controller-manager $KUBE_VERSION running"
}

start_kube() {
  ensure_go
  local kbin hbin
  kbin="$(build_kube)"; build_etcd >/dev/null; hbin="$(build_helm)"
  local d; d="$(data_dir)/kube"
  kube_certs "$d/pki"
  local port; port="$(port_for kube-apiserver)"
  kubeconfig_for "$d/pki" admin "$port"
  kubeconfig_for "$d/pki" kube-controller-manager "$port"
  proc_alive etcd || start_etcd
  proc_alive kube-apiserver || start_kube_apiserver
  proc_alive kube-controller-manager || start_kube_controller_manager
  # The controllers really run once the service-account controller has made
  # the default namespace's service account.
  wait_until kube-controller-manager 90 "$d/kube-controller-manager.log" \
    "$kbin/kubectl" --kubeconfig "$d/pki/admin.kubeconfig" get serviceaccount default -n default
  mkdir -p "$STATE/bin"
  ln -sfn "$kbin/kubectl" "$STATE/bin/kubectl"
  ln -sfn "$hbin/helm" "$STATE/bin/helm"
  write_env_fragment kube <<EOF
export ABACUS_TEST_KUBECONFIG=$d/pki/admin.kubeconfig
export ABACUS_TEST_BIN=$STATE/bin
EOF
  log "kubernetes $KUBE_VERSION control plane ready on https://127.0.0.1:$port"
}

# kube-apiserver's graceful termination can hang after "HTTPServerStoppedListening"
# for minutes; everything it holds is in etcd, so it gets a short grace only.
KUBE_GRACE=(kube-controller-manager:10 kube-apiserver:5 etcd:15)

stop_kube() {
  local e
  for e in "${KUBE_GRACE[@]}"; do kill_proc "${e%%:*}" "${e##*:}"; done
}

# ------------------------------------------------------------ Kubernetes node
#
# A real node: containerd + runc, a CNI bridge, kubelet, kube-scheduler, kube-proxy,
# pre-created local PersistentVolumes, and the Abacus image built from this checkout.
# It changes the host (a bridge, iptables chains, sysctls, mounts, cgroups), so there is
# one per machine: $NODE_OWNER names the checkout that has it. `down` restores the host.

NODE_NAME=abacus-node
NODE_BRIDGE="${ABACUS_TEST_NODE_BRIDGE:-abacus0}"
NODE_CIDR="${ABACUS_TEST_NODE_CIDR:-10.244.0.0/24}"
NODE_IP="${NODE_CIDR%.*}.1"
NODE_OWNER=/run/abacus-test-node.owner
NODE_CGROUP_ROOT=/abacus-test
NODE_PV_COUNT="${ABACUS_TEST_NODE_PVS:-16}"
# Sysctls the node's parts change (bridge plugin, kube-proxy, kubelet): saved before, restored by down.
NODE_SYSCTLS=(net.ipv4.ip_forward net.ipv4.conf.all.route_localnet net.bridge.bridge-nf-call-iptables
  kernel.panic kernel.panic_on_oops vm.overcommit_memory vm.panic_on_oom)

node_dir() { echo "$(data_dir)/node"; }

# The node IP when this checkout's node network exists: servers then also listen there
# and advertise it, so pods reach them.
node_ip_if_up() {
  [[ -f "$STATE/node-net" ]] && ip -br addr show dev "$NODE_BRIDGE" 2>/dev/null | grep -qF "$NODE_IP/" \
    && echo "$NODE_IP"
  return 0
}

# Address a host server binds to (all interfaces with a node, else loopback) and the one
# it advertises to its clients.
bind_addr() { if [[ -n "$(node_ip_if_up)" ]]; then echo 0.0.0.0; else echo 127.0.0.1; fi; }
advertised_addr() { local ip; ip="$(node_ip_if_up)"; echo "${ip:-127.0.0.1}"; }

prepare_node() {
  ensure_go
  apt_ensure containerd runc containernetworking-plugins iptables
  build_kube >/dev/null; build_kube_node >/dev/null; build_pause >/dev/null
  build_image >/dev/null
}

# The pod sandbox's process: a static Go program that waits to be stopped.
build_pause() { cache_locked pause _build_pause; }
_build_pause() {
  local src="$ENV_DIR/pause/main.go" key
  key="$(cat "$src" "$ENV_DIR/pause/Dockerfile" "$ENV_DIR/oci-archive.sh" | sha256sum | cut -c1-12)"
  local out="$ABACUS_CACHE_DIR/images/pause-$key.tar"
  if [[ ! -f "$out" ]]; then
    go_env
    local root; root="$(mktemp -d)"
    (cd "$ENV_DIR/pause" && GOFLAGS= go build -trimpath -ldflags "-s -w" -o "$root/pause" main.go)
    mkdir -p "$(dirname "$out")"
    bash "$ENV_DIR/oci-archive.sh" "$root" "abacus.local/pause:$key" "$out" "$ENV_DIR/pause/Dockerfile"
    rm -rf "$root"
  fi
  echo "abacus.local/pause:$key $out"
}

# The Abacus image from this checkout's compiled code (Dockerfile + scripts/image-rootfs.sh),
# as an OCI archive in the cache, keyed by everything that goes into it.
image_key() {
  (
    cd "$ROOT"
    {
      sha256sum Dockerfile scripts/image-rootfs.sh test/env/oci-archive.sh package.json package-lock.json bin/abacus.js
      find dist/common dist/worker dist/operator dist/native -type f ! -name '*.map' -print0 | sort -z | xargs -0 sha256sum
    } | sha256sum | cut -c1-16
  )
}
build_image() { cache_locked image _build_image; }
_build_image() {
  [[ -d "$ROOT/dist/operator" && -d "$ROOT/dist/worker" && -f "$ROOT/dist/native/abacus-kernel.node" ]] \
    || die "the Abacus image is built from dist/: run 'npm ci && npm run build && bash scripts/build-native.sh' first"
  local key; key="$(image_key)"
  local dir="$ABACUS_CACHE_DIR/images" out
  out="$dir/abacus-$key.tar"
  if [[ ! -f "$out" ]]; then
    log "building the Abacus image $key (scripts/image-rootfs.sh)"
    mkdir -p "$dir"
    local root="$dir/rootfs-$key"
    bash "$ROOT/scripts/image-rootfs.sh" "$root" >&2
    bash "$ENV_DIR/oci-archive.sh" "$root" "abacus.local/abacus:$key" "$out.tmp" "$ROOT/Dockerfile"
    mv "$out.tmp" "$out"
    rm -rf "$root"
    # Older images of checkouts long gone: keep the cache from growing without bound.
    find "$dir" -maxdepth 1 -name 'abacus-*.tar' -mtime +2 -delete
  fi
  touch "$out"
  echo "abacus.local/abacus:$key $out"
}

node_certs() { # pki dir
  local k="$1"
  [[ -f "$k/kubelet-serving.crt" ]] && return 0
  (
    cd "$k"
    local who
    for who in "kubelet:/O=system:nodes/CN=system:node:$NODE_NAME" \
      "kube-scheduler:/CN=system:kube-scheduler" "kube-proxy:/CN=system:kube-proxy" \
      "apiserver-kubelet-client:/O=system:masters/CN=kube-apiserver-kubelet-client"; do
      local n="${who%%:*}" subj="${who#*:}"
      openssl req -newkey rsa:2048 -nodes -subj "$subj" -keyout "$n.key" -out "$n.csr" 2>/dev/null
      printf 'extendedKeyUsage=clientAuth\n' > client.ext
      openssl x509 -req -in "$n.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
        -extfile client.ext -out "$n.crt" 2>/dev/null
    done
    openssl req -newkey rsa:2048 -nodes -subj "/CN=$NODE_NAME" \
      -keyout kubelet-serving.key -out kubelet-serving.csr 2>/dev/null
    printf 'subjectAltName=IP:%s,IP:127.0.0.1,DNS:%s\nextendedKeyUsage=serverAuth\n' "$NODE_IP" "$NODE_NAME" > serving.ext
    openssl x509 -req -in kubelet-serving.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile serving.ext -out kubelet-serving.crt 2>/dev/null
    rm -f ./*.csr ./*.ext
  )
}

# Whether another checkout's node still runs: its containerd or kubelet is alive and its
# command line names that checkout's state dir. Pid files alone are not enough: a run
# that was killed, or a reboot, leaves them behind.
node_runs_in() { # state dir
  local name pid
  for name in containerd kubelet; do
    pid="$(cat "$1/pids/$name.pid" 2>/dev/null)" || continue
    kill -0 "$pid" 2>/dev/null && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF "$1/" && return 0
  done
  return 1
}

sysctl_get() { cat "/proc/sys/${1//./\/}" 2>/dev/null; }
sysctl_set() { [[ -e "/proc/sys/${1//./\/}" ]] && echo "$2" > "/proc/sys/${1//./\/}"; }

# The bridge (its gateway address is the node IP), before any server starts so they can
# listen on it. Saves what it changes in $STATE/node-net.
start_node_net() {
  [[ $(id -u) == 0 ]] || die "the node needs root (bridge, iptables, mounts, cgroups)"
  if [[ -f "$NODE_OWNER" ]] && [[ "$(cat "$NODE_OWNER")" != "$STATE" ]]; then
    local other; other="$(cat "$NODE_OWNER")"
    if node_runs_in "$other"; then
      die "this machine's Kubernetes node belongs to $other (one node per machine): run 'npm run test-env -- down' there, or 'up' without node"
    fi
    log "taking over the node from $other (nothing of it runs): undoing what it left on the host"
    # What its `down` would have done, so the host values saved below are the original ones.
    (
      STATE="$other"
      node_shims_kill
      [[ -f "$other/datadir" ]] && node_unmount "$(cat "$other/datadir")"
      stop_node_net
    )
  fi
  echo "$STATE" > "$NODE_OWNER"
  if [[ ! -f "$STATE/node-net" ]]; then
    local s saved=()
    for s in "${NODE_SYSCTLS[@]}"; do saved+=("$s=$(sysctl_get "$s")"); done
    printf '%s\n' "${saved[@]}" > "$STATE/node-net.tmp"
    mv "$STATE/node-net.tmp" "$STATE/node-net"
  fi
  if ! ip link show "$NODE_BRIDGE" >/dev/null 2>&1; then
    ip link add "$NODE_BRIDGE" type bridge
  fi
  ip addr replace "$NODE_IP/${NODE_CIDR#*/}" dev "$NODE_BRIDGE"
  ip link set "$NODE_BRIDGE" up
  # Pod traffic leaves through the host (the bridge plugin would set it on the first pod).
  sysctl_set net.ipv4.ip_forward 1
}

# Undoes start_node_net and whatever the node's parts added: iptables chains, sysctls.
stop_node_net() {
  [[ -f "$STATE/node-net" ]] || return 0
  local kp; kp="$ABACUS_CACHE_DIR/bin/kubernetes-node-$KUBE_VERSION/kube-proxy"
  [[ -x "$kp" ]] && "$kp" --cleanup >/dev/null 2>&1 || true
  local t chain
  for t in filter nat mangle; do
    # Rules jumping to the chains first, then the chains themselves.
    iptables -t "$t" -S 2>/dev/null | grep -E '^-A .*-j (CNI-|KUBE-)' | grep -vE '^-A (CNI-|KUBE-)' \
      | sed 's/^-A/-D/' | while read -r rule; do eval "iptables -t $t $rule" 2>/dev/null || true; done || true
    for chain in $(iptables -t "$t" -S 2>/dev/null | awk '/^-N (CNI-|KUBE-)/ {print $2}'); do
      iptables -t "$t" -F "$chain" 2>/dev/null || true
    done
    for chain in $(iptables -t "$t" -S 2>/dev/null | awk '/^-N (CNI-|KUBE-)/ {print $2}'); do
      iptables -t "$t" -X "$chain" 2>/dev/null || true
    done
  done
  # Pod interfaces go with their network namespaces; the bridge is ours.
  ip link del "$NODE_BRIDGE" 2>/dev/null || true
  local kv
  while read -r kv; do
    [[ -n "${kv#*=}" ]] && sysctl_set "${kv%%=*}" "${kv#*=}" 2>/dev/null || true
  done < "$STATE/node-net"
  rm -f "$STATE/node-net"
  [[ "$(cat "$NODE_OWNER" 2>/dev/null)" == "$STATE" ]] && rm -f "$NODE_OWNER"
  return 0
}

start_containerd() {
  local d; d="$(node_dir)"
  local pause; pause="$(build_pause)"
  mkdir -p "$d/containerd/root" "$d/containerd/state" "$d/cni/net.d" "$d/cni/ipam"
  cat > "$d/cni/net.d/10-abacus.conflist" <<JSON
{"cniVersion":"0.4.0","name":"abacus-test","plugins":[
  {"type":"bridge","bridge":"$NODE_BRIDGE","isGateway":true,"ipMasq":true,"hairpinMode":true,
   "ipam":{"type":"host-local","ranges":[[{"subnet":"$NODE_CIDR","gateway":"$NODE_IP"}]],
           "routes":[{"dst":"0.0.0.0/0"}],"dataDir":"$d/cni/ipam"}},
  {"type":"portmap","capabilities":{"portMappings":true}}]}
JSON
  cat > "$d/containerd/config.toml" <<TOML
version = 2
root = "$d/containerd/root"
state = "$d/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$d/containerd/containerd.sock"
[ttrpc]
  address = "$d/containerd/containerd.sock.ttrpc"
[debug]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$d/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "${pause%% *}"
  # root here lacks CAP_SYS_RESOURCE: runc cannot lower oom_score_adj below its own.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$d/cni/net.d"
TOML
  spawn containerd "$d/containerd.log" containerd --config "$d/containerd/config.toml"
  wait_until containerd 60 "$d/containerd.log" ctr --address "$d/containerd/containerd.sock" version
  node_import "${pause#* }"
  log "containerd $(containerd --version | awk '{print $3}') ready"
}

ctr_node() { ctr --address "$(node_dir)/containerd/containerd.sock" -n k8s.io "$@"; }

node_import() { # archive
  ctr_node images import --no-unpack=false "$1" >/dev/null \
    || die "importing $1 into the node's containerd failed"
}

start_kubelet() {
  local nbin; nbin="$(build_kube_node)"
  local d k; d="$(node_dir)"; k="$(data_dir)/kube/pki"
  local port hport
  port="$(port_for kubelet)"; hport="$(port_for kubelet-healthz)"
  mkdir -p "$d/kubelet"
  # The kubelet's cgroup root exists in every v1 controller before it starts (it refuses
  # otherwise); cpuset children start empty and need the parent's CPUs and memory nodes.
  local c
  for c in /sys/fs/cgroup/*/; do
    [[ -f "$c/cgroup.procs" ]] || continue
    mkdir -p "$c${NODE_CGROUP_ROOT#/}"
    if [[ -f "$c/cpuset.cpus" ]]; then
      cat "$c/cpuset.cpus" > "$c${NODE_CGROUP_ROOT#/}/cpuset.cpus"
      cat "$c/cpuset.mems" > "$c${NODE_CGROUP_ROOT#/}/cpuset.mems"
    fi
  done
  cat > "$d/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: $port
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $hport
tlsCertFile: $k/kubelet-serving.crt
tlsPrivateKeyFile: $k/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $k/ca.crt}
authorization: {mode: AlwaysAllow}
containerRuntimeEndpoint: unix://$d/containerd/containerd.sock
cgroupDriver: cgroupfs
cgroupRoot: $NODE_CGROUP_ROOT
failSwapOn: false
makeIPTablesUtilChains: false
# ConfigMap updates reach mounted files within seconds (71 s with the default 1m).
syncFrequency: 5s
fileCheckFrequency: 5s
# Images here cannot be pulled again: never collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%}
serializeImagePulls: false
resolvConf: /etc/resolv.conf
maxPods: 40
YAML
  spawn kubelet "$d/kubelet.log" "$nbin/kubelet" --config "$d/kubelet.yaml" \
    --kubeconfig "$k/kubelet.kubeconfig" --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" \
    --root-dir "$d/kubelet" --cert-dir "$d/kubelet/pki" --v=1
  wait_until kubelet 90 "$d/kubelet.log" node_ready
  log "kubelet $KUBE_VERSION: node $NODE_NAME Ready at $NODE_IP"
}

node_ready() {
  kubectl_admin get node "$NODE_NAME" \
    -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -qx True
}

kubectl_admin() { "$(build_kube)/kubectl" --kubeconfig "$(data_dir)/kube/pki/admin.kubeconfig" "$@"; }

start_kube_scheduler() {
  local nbin; nbin="$(build_kube_node)"
  local d k; d="$(node_dir)"; k="$(data_dir)/kube/pki"
  local port; port="$(port_for kube-scheduler)"
  wait_port_free "$port"
  spawn kube-scheduler "$d/kube-scheduler.log" "$nbin/kube-scheduler" \
    --kubeconfig "$k/kube-scheduler.kubeconfig" \
    --authentication-kubeconfig "$k/kube-scheduler.kubeconfig" \
    --authorization-kubeconfig "$k/kube-scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$port" --leader-elect=false --v=1
  wait_until kube-scheduler 60 "$d/kube-scheduler.log" curl -skf "https://127.0.0.1:$port/healthz"
}

start_kube_proxy() {
  local nbin; nbin="$(build_kube_node)"
  local d k; d="$(node_dir)"; k="$(data_dir)/kube/pki"
  local mport hport
  mport="$(port_for kube-proxy-metrics)"; hport="$(port_for kube-proxy-healthz)"
  cat > "$d/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $k/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
mode: iptables
clusterCIDR: $NODE_CIDR
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:$hport
metricsBindAddress: 127.0.0.1:$mport
# No conntrack table resizing: root here may not write those sysctls.
conntrack: {maxPerCore: 0, min: 0}
YAML
  spawn kube-proxy "$d/kube-proxy.log" "$nbin/kube-proxy" --config "$d/kube-proxy.yaml" --v=1
  wait_until kube-proxy 60 "$d/kube-proxy.log" curl -sf "http://127.0.0.1:$hport/healthz"
}

# Local PersistentVolumes on the node, the default StorageClass (no provisioner, bound
# when a pod is scheduled). pv-recycler makes a Released one Available again.
node_volumes() {
  local d i; d="$(node_dir)"
  {
    cat <<YAML
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: local
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Retain
YAML
    for ((i = 0; i < NODE_PV_COUNT; i++)); do
      mkdir -p "$d/pv/pv$i"; chmod 0777 "$d/pv/pv$i"
      cat <<YAML
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: abacus-test-pv$i, labels: {abacus-test: local}}
spec:
  capacity: {storage: 10Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: local
  local: {path: $d/pv/pv$i}
  nodeAffinity:
    required:
      nodeSelectorTerms: [{matchExpressions: [{key: kubernetes.io/hostname, operator: In, values: [$NODE_NAME]}]}]
YAML
    done
  } | kubectl_admin apply -f - >/dev/null
}

# What the retired Recycle reclaim policy did: every few seconds, a Released test volume is
# emptied and made Available, so that tests can claim volumes without end.
start_pv_recycler() {
  local d kubectl; d="$(node_dir)"; kubectl="$(build_kube)/kubectl"
  cat > "$d/pv-recycler.sh" <<SH
#!/usr/bin/env bash
while sleep 3; do
  "$kubectl" --kubeconfig "$(data_dir)/kube/pki/admin.kubeconfig" get pv -l abacus-test=local \\
    -o jsonpath='{range .items[?(@.status.phase=="Released")]}{.metadata.name} {.spec.local.path}{"\\n"}{end}' 2>/dev/null |
  while read -r pv path; do
    case "\$path" in "$d/pv/"*) find "\$path" -mindepth 1 -delete ;; *) continue ;; esac
    "$kubectl" --kubeconfig "$(data_dir)/kube/pki/admin.kubeconfig" patch pv "\$pv" --type json \\
      -p '[{"op":"remove","path":"/spec/claimRef"}]' >/dev/null && echo "recycled \$pv"
  done
done
SH
  spawn pv-recycler "$d/pv-recycler.log" bash "$d/pv-recycler.sh"
}

start_node() {
  ensure_go
  apt_ensure containerd runc containernetworking-plugins iptables
  server_running kube || die "the node needs the control plane: up kube node"
  start_node_net
  local k; k="$(data_dir)/kube/pki"
  node_certs "$k"
  local port; port="$(port_for kube-apiserver)"
  local u; for u in kubelet kube-scheduler kube-proxy; do kubeconfig_for "$k" "$u" "$port"; done
  proc_alive containerd || start_containerd
  # The kubelet registers the Node that kube-proxy reads its address from.
  proc_alive kubelet || start_kubelet
  proc_alive kube-scheduler || start_kube_scheduler
  proc_alive kube-proxy || start_kube_proxy
  node_volumes
  proc_alive pv-recycler || start_pv_recycler
  node_image
  log "node $NODE_NAME ready at $NODE_IP"
}

# The image of this checkout's current dist/ in the node's containerd, and its name in the
# env file. Also run by `up` when the node already runs, so a rebuilt checkout is tested.
node_image() {
  local image; image="$(build_image)"
  if ! ctr_node images ls -q | grep -qxF "${image%% *}"; then
    node_import "${image#* }"
  fi
  write_env_fragment node <<ENV
export ABACUS_TEST_IMAGE=${image%% *}
export ABACUS_TEST_NODE_IP=$NODE_IP
ENV
  log "image ${image%% *} in the node's containerd"
}

# Pods first (so their mounts and shims go), then the daemons; the host is restored by
# cmd_down (mounts, cgroups, network).
stop_node() {
  if proc_alive containerd; then
    # Containers stop with their shims; nothing of them must survive the node.
    local c
    for c in $(ctr_node tasks ls -q 2>/dev/null); do ctr_node tasks kill -s KILL "$c" >/dev/null 2>&1 || true; done
  fi
  kill_proc pv-recycler 5
  kill_proc kubelet 15
  kill_proc kube-proxy 10
  kill_proc kube-scheduler 10
  kill_proc containerd 15
  node_shims_kill
}

# containerd-shim processes outlive containerd (they are re-parented): ours are the ones
# whose command line names this checkout's containerd.
node_shims_kill() {
  local pid
  for pid in $(pgrep -f containerd-shim 2>/dev/null); do
    tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF "$STATE/" || continue
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  done
}

# Mounts under the data directory (overlay roots, volumes, secrets), deepest first.
node_unmount() { # data dir
  local d="$1" m
  for m in $(awk '{print $2}' /proc/self/mounts | grep -F "$d/" | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
  # Pods' network namespaces (bind mounts named cni-*): the node is the only one on
  # this machine that makes them.
  local ns
  for ns in $(ip netns list 2>/dev/null | awk '/^cni-/ {print $1}'); do ip netns delete "$ns" 2>/dev/null || true; done
}

# The kubelet's cgroup tree under every controller, deepest first.
node_cgroups_remove() {
  local c
  for c in /sys/fs/cgroup/*/"${NODE_CGROUP_ROOT#/}"; do
    [[ -d "$c" ]] || continue
    find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
}

# --------------------------------------------------------------------- commands

# Procs each server owns, for stop/status.
procs_of() {
  case "$1" in
    kube) echo "kube-controller-manager kube-apiserver etcd" ;;
    node) echo "containerd kube-scheduler kube-proxy kubelet pv-recycler" ;;
    *) echo "$1" ;;
  esac
}

server_running() { # server: all its procs alive
  local p
  for p in $(procs_of "$1"); do proc_alive "$p" || return 1; done
}

check_names() {
  local n
  for n in "$@"; do
    case " ${ALL_SERVERS[*]} etcd kube-apiserver kube-controller-manager containerd kubelet kube-scheduler kube-proxy " in
      *" $n "*) ;;
      *) die "unknown server '$n' (known: ${ALL_SERVERS[*]})" ;;
    esac
  done
}

start_one() {
  case "$1" in
    etcd) start_etcd ;;
    kube-apiserver) start_kube_apiserver ;;
    kube-controller-manager) start_kube_controller_manager ;;
    containerd | kubelet | kube-scheduler | kube-proxy) "start_${1//-/_}" ;;
    *) "start_$1" ;;
  esac
}

stop_one() {
  case "$1" in
    etcd | kube-apiserver | kube-controller-manager)
      local e
      for e in "${KUBE_GRACE[@]}"; do [[ "${e%%:*}" == "$1" ]] && kill_proc "$1" "${e##*:}"; done
      ;;
    containerd | kubelet | kube-scheduler | kube-proxy) kill_proc "$1" 15 ;;
    *) "stop_$1" ;;
  esac
}

with_lock() {
  mkdir -p "$STATE"
  exec 9> "$STATE/state.lock"
  flock 9
}

cmd_up() {
  local names=("$@")
  ((${#names[@]})) || names=("${ALL_SERVERS[@]}")
  check_names "${names[@]}"
  with_lock
  data_dir > /dev/null
  local t0=$SECONDS n
  # Start the slow Go builds in the background while the JVMs come up, and
  # bring the servers up quickest-first (the kube build takes minutes cold).
  declare -gA bg=()
  trap 'for b in ${bg[@]+"${bg[@]}"}; do kill -- "$b" 2>/dev/null || true; done' EXIT
  for n in s3 kube node prometheus; do
    case " ${names[*]} " in *" $n "*) ;; *) continue ;; esac
    server_running "$n" && continue
    ("prepare_$n") > "$STATE/prepare-$n.log" 2>&1 9>&- &
    bg[$n]=$!
  done
  # With a node, its bridge comes first: the servers also listen on the node IP and
  # advertise it, so pods reach them. Prometheus comes last: it discovers pods through
  # the API server.
  case " ${names[*]} " in
    *" node "*)
      case " ${names[*]} " in *" kube "*) ;; *) server_running kube || names+=(kube) ;; esac
      start_node_net ;;
  esac
  for n in kafka kafka4 cassandra cassandra-auth s3 kube node prometheus; do
    case " ${names[*]} " in *" $n "*) ;; *) continue ;; esac
    if server_running "$n"; then
      log "$n already running"
      [[ "$n" == node ]] && node_image
      continue
    fi
    if [[ -n "${bg[$n]:-}" ]]; then
      wait "${bg[$n]}" || { cat "$STATE/prepare-$n.log" >&2; die "preparing $n failed"; }
      unset "bg[$n]"
    fi
    "start_$n"
  done
  log "up (${names[*]}) in $((SECONDS - t0))s; source $STATE/env"
}

cmd_down() {
  with_lock
  local p
  # Reverse dependency order; also anything else that left a pid file.
  stop_node
  stop_kube
  for p in prometheus s3 kafka kafka4 cassandra cassandra-auth; do
    kill_proc "$p" 60
  done
  if [[ -d "$STATE/pids" ]]; then
    for p in "$STATE"/pids/*.pid; do
      [[ -e "$p" ]] || continue
      kill_proc "$(basename "$p" .pid)" 10
    done
  fi
  # The host as it was before the node: mounts, cgroups, network, sysctls.
  [[ -f "$STATE/datadir" ]] && node_unmount "$(cat "$STATE/datadir")"
  node_cgroups_remove
  stop_node_net
  if [[ -f "$STATE/datadir" ]]; then
    local d; d="$(cat "$STATE/datadir")"
    if [[ "${ABACUS_TEST_ENV_KEEP_DATA:-}" == 1 ]]; then
      log "keeping data in $d"
    else
      case "$d" in "$STATE"/run.*) rm -rf "$d" ;; esac
    fi
  fi
  rm -rf "$STATE/ports" "$STATE/env.d" "$STATE/env" "$STATE/datadir" "$STATE/bin" "$STATE"/prepare-*.log
  log "down"
}

cmd_stop() {
  (($#)) || die "usage: stop NAME..."
  check_names "$@"
  with_lock
  local n
  for n in "$@"; do stop_one "$n"; done
}

cmd_start() {
  (($#)) || die "usage: start NAME..."
  check_names "$@"
  with_lock
  [[ -f "$STATE/datadir" ]] || die "no environment is up (run: up)"
  local n
  for n in "$@"; do
    case "$n" in
      etcd | kube-apiserver | kube-controller-manager | containerd | kubelet | kube-scheduler | kube-proxy)
        proc_alive "$n" || start_one "$n" ;;
      *) server_running "$n" || start_one "$n" ;;
    esac
  done
}

cmd_restart() {
  (($#)) || die "usage: restart NAME..."
  check_names "$@"
  with_lock
  [[ -f "$STATE/datadir" ]] || die "no environment is up (run: up)"
  local n
  for n in "$@"; do stop_one "$n"; start_one "$n"; done
}

cmd_status() {
  local p pf
  for p in etcd kube-apiserver kube-controller-manager containerd kubelet kube-scheduler kube-proxy \
    pv-recycler kafka kafka4 cassandra cassandra-auth s3 prometheus; do
    pf="$(pidfile "$p")"
    if proc_alive "$p"; then
      printf '%-24s running  pid %-8s rss %s MiB\n' "$p" "$(cat "$pf")" \
        "$(ps -o rss= -g "$(cat "$pf")" | awk '{s+=$1} END {printf "%d", s/1024}')"
    elif [[ -f "$pf" ]]; then
      printf '%-24s dead     (stale pid file)\n' "$p"
    else
      printf '%-24s stopped\n' "$p"
    fi
  done
  [[ -f "$STATE/env" ]] && cat "$STATE/env"
  return 0
}

cmd_prepare() {
  local names=("$@")
  ((${#names[@]})) || names=("${ALL_SERVERS[@]}")
  check_names "${names[@]}"
  local n
  for n in "${names[@]}"; do "prepare_$n"; done
}

main() {
  local cmd="${1:-}"
  (($#)) && shift
  case "$cmd" in
    up) cmd_up "$@" ;;
    down) cmd_down ;;
    stop) cmd_stop "$@" ;;
    start) cmd_start "$@" ;;
    restart) cmd_restart "$@" ;;
    status) cmd_status ;;
    prepare) cmd_prepare "$@" ;;
    *) sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2 ;;
  esac
}

main "$@"
