#!/usr/bin/env bash
# Real-server test environment for Abacus: Kafka (KRaft), Cassandra, an S3 store
# (versitygw), a Kubernetes control plane (etcd, kube-apiserver,
# kube-controller-manager) and Prometheus, all on 127.0.0.1, on free ports, with
# data under .test-env/. See test/env/README.md.
#
#   test-env.sh up [kafka] [cassandra] [s3] [kube] [prometheus]   (none = all)
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
ALL_SERVERS=(kafka cassandra s3 kube prometheus)
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
    if ! proc_alive "$name"; then
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
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
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
  local java=(java -Xms256m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20
    -XX:MaxDirectMemorySize=256m -Djava.awt.headless=true
    "-Dlog4j.configuration=file:$d/log4j.properties" -cp "$lib/*")
  if [[ ! -f "$d/logs/meta.properties" ]]; then
    local id; id="$("${java[@]}" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1)"
    "${java[@]}" kafka.tools.StorageTool format -t "$id" -c "$d/server.properties" >> "$d/kafka.log" 2>&1 \
      || { tail -n 30 "$d/kafka.log" >&2; die "kafka storage format failed"; }
  fi
  wait_port_free "$port"; wait_port_free "$cport"
  local off; off="$(log_size "$d/kafka.log")"
  spawn kafka "$d/kafka.log" "${java[@]}" kafka.Kafka "$d/server.properties"
  wait_until kafka 120 "$d/kafka.log" log_has_since "$d/kafka.log" "$off" "Kafka Server started"
  wait_until kafka 30 "$d/kafka.log" tcp_open "$port"
  write_env_fragment kafka <<EOF
export ABACUS_TEST_KAFKA=127.0.0.1:$port
EOF
  log "kafka $KAFKA_VERSION ready on 127.0.0.1:$port"
}

stop_kafka() { kill_proc kafka 30; }

# -------------------------------------------------------------------- Cassandra

prepare_cassandra() { maven_lib "cassandra-$CASSANDRA_VERSION" "$ENV_DIR/maven/cassandra" >/dev/null; }

start_cassandra() {
  local lib; lib="$(maven_lib "cassandra-$CASSANDRA_VERSION" "$ENV_DIR/maven/cassandra")"
  local d; d="$(data_dir)/cassandra"
  local port sport
  port="$(port_for cassandra)"; sport="$(port_for cassandra-storage)"
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
rpc_address: 127.0.0.1
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
authenticator: AllowAllAuthenticator
authorizer: AllowAllAuthorizer
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
  local java=(java -Xms1g -Xmx1g -Xss256k -XX:+UseG1GC -XX:+ParallelRefProcEnabled
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
    -Dcassandra.ring_delay_ms=1000
    -Dcassandra.consistent.rangemovement=false
    -cp "$d/conf:$lib/*"
    org.apache.cassandra.service.CassandraDaemon)
  wait_port_free "$port"; wait_port_free "$sport"
  local off; off="$(log_size "$d/cassandra.log")"
  spawn cassandra "$d/cassandra.log" "${java[@]}"
  wait_until cassandra 240 "$d/cassandra.log" log_has_since "$d/cassandra.log" "$off" "Starting listening for CQL clients"
  wait_until cassandra 30 "$d/cassandra.log" tcp_open "$port"
  write_env_fragment cassandra <<EOF
export ABACUS_TEST_CASSANDRA=127.0.0.1:$port
export ABACUS_TEST_CASSANDRA_DC=datacenter1
EOF
  log "cassandra $CASSANDRA_VERSION ready on 127.0.0.1:$port"
}

stop_cassandra() { kill_proc cassandra 60; }

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
    "$bin/versitygw" --port "127.0.0.1:$port" \
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

prepare_prometheus() { apt_ensure prometheus; }

start_prometheus() {
  apt_ensure prometheus
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
  wait_port_free "$port"
  spawn prometheus "$d/prometheus.log" prometheus \
    --config.file="$d/prometheus.yml" --storage.tsdb.path="$d/data" \
    --web.listen-address="127.0.0.1:$port" --web.enable-lifecycle \
    --web.enable-admin-api --storage.tsdb.retention.time=1d
  wait_until prometheus 60 "$d/prometheus.log" curl -sf "http://127.0.0.1:$port/-/ready"
  write_env_fragment prometheus <<EOF
export ABACUS_TEST_PROMETHEUS=http://127.0.0.1:$port
export ABACUS_TEST_PROMETHEUS_TARGETS_DIR=$d/targets
export ABACUS_TEST_PROMETHEUS_RULES_DIR=$d/rules
EOF
  log "prometheus $(prometheus --version 2>&1 | head -n1 | awk '{print $3}') ready on 127.0.0.1:$port"
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
    printf 'subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\nextendedKeyUsage=serverAuth\n' > apiserver.ext
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
  wait_port_free "$port"
  spawn kube-apiserver "$d/kube-apiserver.log" "$kbin/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$(port_for etcd)" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$port" \
    --tls-cert-file "$d/pki/apiserver.crt" --tls-private-key-file "$d/pki/apiserver.key" \
    --client-ca-file "$d/pki/ca.crt" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$d/pki/sa.pub" \
    --service-account-signing-key-file "$d/pki/sa.key" \
    --service-cluster-ip-range 10.0.0.0/24 \
    --authorization-mode RBAC \
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
    --endpoint-reconciler-type none \
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

# --------------------------------------------------------------------- commands

# Procs each server owns, for stop/status.
procs_of() {
  case "$1" in
    kube) echo "kube-controller-manager kube-apiserver etcd" ;;
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
    case " ${ALL_SERVERS[*]} etcd kube-apiserver kube-controller-manager " in
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
    *) "start_$1" ;;
  esac
}

stop_one() {
  case "$1" in
    etcd | kube-apiserver | kube-controller-manager)
      local e
      for e in "${KUBE_GRACE[@]}"; do [[ "${e%%:*}" == "$1" ]] && kill_proc "$1" "${e##*:}"; done
      ;;
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
  for n in s3 kube; do
    case " ${names[*]} " in *" $n "*) ;; *) continue ;; esac
    server_running "$n" && continue
    ("prepare_$n") > "$STATE/prepare-$n.log" 2>&1 9>&- &
    bg[$n]=$!
  done
  for n in kafka cassandra s3 prometheus kube; do
    case " ${names[*]} " in *" $n "*) ;; *) continue ;; esac
    if server_running "$n"; then
      log "$n already running"
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
  stop_kube
  for p in prometheus s3 kafka cassandra; do
    kill_proc "$p" 60
  done
  if [[ -d "$STATE/pids" ]]; then
    for p in "$STATE"/pids/*.pid; do
      [[ -e "$p" ]] || continue
      kill_proc "$(basename "$p" .pid)" 10
    done
  fi
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
      etcd | kube-apiserver | kube-controller-manager) proc_alive "$n" || start_one "$n" ;;
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
  for p in etcd kube-apiserver kube-controller-manager kafka cassandra s3 prometheus; do
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
