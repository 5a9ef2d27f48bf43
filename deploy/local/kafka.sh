#!/usr/bin/env bash
# Local single-node Apache Kafka (KRaft) from Maven Central jars, no Docker.
# Usage: kafka.sh start|stop|status|restart|topics
# Env: STACK_DIR, KAFKA_PORT (19092), KAFKA_CONTROLLER_PORT (19093), PYTHON (repo .venv);
# topics: KAFKA_COMMANDS_TOPIC, KAFKA_EVENTS_TOPIC, KAFKA_DLQ_TOPIC, KAFKA_PARTITIONS (3),
# KAFKA_REPLICATION_FACTOR (1), KAFKA_MIN_INSYNC_REPLICAS, KAFKA_BOOTSTRAP_SERVERS (`topics` only).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
STATE=${STACK_DIR:-$REPO/.stack}/kafka
KAFKA_PORT=${KAFKA_PORT:-19092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-19093}
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
BOOTSTRAP=127.0.0.1:$KAFKA_PORT
POM=$HERE/kafka/pom.xml
KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM")
# Keyed on the pom's content too, so any edit to it (e.g. the log4j version) re-resolves.
LIBS=$STATE/libs-$KAFKA_VERSION-$(sha256sum "$POM" | cut -c1-8)
DATA=$STATE/data
LOGS=$STATE/logs
PIDFILE=$STATE/kafka.pid
CONF=$STATE/server.properties
START_TIMEOUT=120

say() { echo "kafka: $*"; }
die() { echo "kafka: $*" >&2; exit 1; }

# aiokafka is what the service uses, so "answering" means answering this client.
admin() {
  [[ -x $PYTHON ]] || die "no python at $PYTHON (set PYTHON to one with aiokafka)"
  "$PYTHON" - "$@" <<'PY'
import asyncio, logging, os, sys, time
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

logging.disable(logging.CRITICAL)  # connection-refused noise while the broker starts
cmd, bootstrap, *args = sys.argv[1:]

def client():
    return AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)

async def ping():
    admin = client()
    try:
        await admin.start()
        return bool((await admin.describe_cluster())["brokers"])
    except Exception:
        return False
    finally:
        await admin.close()

def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] not in ("Z", "X")
    except OSError:
        return False

async def wait(pid, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not alive(pid):
            return 2
        if await ping():
            return 0
        await asyncio.sleep(0.25)
    return 1

# Production: KAFKA_REPLICATION_FACTOR=3 KAFKA_MIN_INSYNC_REPLICAS=2 kafka.sh topics
async def topics(commands, events, dlq):
    parts = int(os.environ.get("KAFKA_PARTITIONS", "3"))
    rf = int(os.environ.get("KAFKA_REPLICATION_FACTOR", "1"))
    isr = os.environ.get("KAFKA_MIN_INSYNC_REPLICAS")
    configs = {"min.insync.replicas": isr} if isr else {}
    wanted = {commands: parts, events: parts, dlq: 1}
    admin = client()
    try:
        try:
            await admin.start()
        except Exception as e:
            sys.exit(f"kafka: cannot reach {bootstrap}: {e!r}")
        missing = [t for t in wanted if t not in set(await admin.list_topics())]
        if missing:
            new = [NewTopic(t, wanted[t], rf, topic_configs=configs) for t in missing]
            resp = await admin.create_topics(new, timeout_ms=30000)
            for topic, code, *msg in resp.topic_errors:
                if code not in (0, 36):  # 36: TOPIC_ALREADY_EXISTS, lost a race
                    sys.exit(f"kafka: creating {topic} failed: error {code} {msg}")
        for t, n in wanted.items():
            state = f"created (partitions {n}, RF {rf})" if t in missing else "exists"
            print(f"kafka: topic {t} {state}")
    finally:
        await admin.close()

if cmd == "ping":
    sys.exit(0 if asyncio.run(ping()) else 1)
if cmd == "wait":
    sys.exit(asyncio.run(wait(int(args[0]), float(args[1]))))
asyncio.run(topics(*args))
PY
}

# The pid from our pid file, if that process is still our broker (not a recycled pid).
our_pid() {
  local pid
  [[ -f $PIDFILE ]] || return 1
  pid=$(<"$PIDFILE")
  [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "kafka.Kafka $CONF" || return 1
  echo "$pid"
}

# A zombie counts as gone: where PID 1 reaps late (some containers), kill -0 would still succeed.
alive() {
  local st
  st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) && [[ -n $st && $st != [ZX] ]]
}

wait_gone() {
  local end=$((SECONDS + $2))
  while alive "$1"; do
    ((SECONDS < end)) || return 1
    sleep 0.1
  done
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

resolve_libs() {
  [[ -d $LIBS ]] && return 0
  command -v mvn >/dev/null || die "mvn not found (apt-get install maven)"
  say "resolving Kafka $KAFKA_VERSION jars from Maven into $LIBS"
  # Copy into an empty dir: two versions of one jar in a `-cp dir/*` is undefined behaviour.
  rm -rf "$STATE"/libs-*
  if ! mvn -q -B -f "$POM" \
      org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$LIBS.tmp" >"$LOGS/mvn.log" 2>&1; then
    tail -n 30 "$LOGS/mvn.log" >&2
    die "jar resolution failed (full log: $LOGS/mvn.log)"
  fi
  mv "$LIBS.tmp" "$LIBS"
}

format_storage() {
  [[ -f $DATA/meta.properties ]] && return 0
  local id
  # A cluster id is 16 random bytes in url-safe base64; a leading '-' would read as an option.
  id=$(head -c16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
  id=${id/#-/A}
  java -Xmx256m -Dlog4j2.configurationFile="$HERE/kafka/log4j2-tools.xml" -cp "$LIBS/*" \
    kafka.tools.StorageTool format -t "$id" -c "$CONF" >"$LOGS/format.log" 2>&1 \
    || { cat "$LOGS/format.log" >&2; die "formatting $DATA failed"; }
  say "formatted $DATA (cluster id $id)"
}

ensure_topics() {
  admin topics "$1" \
    "${KAFKA_COMMANDS_TOPIC:-conference.commands.v1}" \
    "${KAFKA_EVENTS_TOPIC:-conference.events.v1}" \
    "${KAFKA_DLQ_TOPIC:-conference.commands.dlq.v1}"
}

cmd_start() {
  local pid port t0 rc=0
  command -v java >/dev/null || die "java not found (need Java 17+)"
  if pid=$(our_pid); then
    # Alive: either up already or still starting (e.g. a concurrent start); never start a second one.
    admin wait "$BOOTSTRAP" "$pid" "$START_TIMEOUT" || die "broker pid $pid is running but not answering on $BOOTSTRAP"
    say "already running (pid $pid) on $BOOTSTRAP"
    return 0
  fi
  # A broker SIGKILLed a moment ago may still be exiting and holding its ports.
  if [[ -f $PIDFILE ]]; then
    wait_gone "$(<"$PIDFILE")" 10 || true
    rm -f "$PIDFILE"
  fi
  for port in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
    port_busy "$port" && die "port $port is in use by another process"
  done
  mkdir -p "$DATA" "$LOGS"
  resolve_libs
  sed -e "s|@KAFKA_PORT@|$KAFKA_PORT|g" -e "s|@KAFKA_CONTROLLER_PORT@|$KAFKA_CONTROLLER_PORT|g" \
    -e "s|@DATA_DIR@|$DATA|g" "$HERE/kafka/server.properties" >"$CONF"
  format_storage
  t0=$(date +%s%N)
  # setsid: own session, so a Ctrl-C or a test runner killing its process group spares the broker.
  # 9>&-: the broker must not inherit (and hold forever) the lock taken in lock().
  setsid nohup java -Xms256m -Xmx512m \
    -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
    -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
    -Dkafka.logs.dir="$LOGS" -Dlog4j2.configurationFile="$HERE/kafka/log4j2-server.xml" \
    -cp "$LIBS/*" kafka.Kafka "$CONF" >>"$LOGS/console.log" 2>&1 </dev/null 9>&- &
  pid=$!
  echo "$pid" >"$PIDFILE"
  admin wait "$BOOTSTRAP" "$pid" "$START_TIMEOUT" || rc=$?
  if ((rc != 0)); then
    echo "--- tail of $LOGS/console.log" >&2; tail -n 20 "$LOGS/console.log" >&2 || true
    echo "--- tail of $LOGS/server.log" >&2; tail -n 40 "$LOGS/server.log" >&2 || true
    ((rc == 2)) && die "broker exited during startup"
    cmd_stop >&2
    die "broker not answering on $BOOTSTRAP after ${START_TIMEOUT}s"
  fi
  say "Kafka $KAFKA_VERSION up on $BOOTSTRAP (pid $pid, $(( ($(date +%s%N) - t0) / 1000000 )) ms)"
  ensure_topics "$BOOTSTRAP"
}

cmd_stop() {
  local pid
  if ! pid=$(our_pid); then
    rm -f "$PIDFILE"
    say "not running"
    return 0
  fi
  kill -TERM "$pid"
  # Clean shutdown flushes and closes the logs; after 30 s, SIGKILL (the next start recovers).
  if ! wait_gone "$pid" 30; then
    say "pid $pid still alive after 30 s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone "$pid" 10 || die "pid $pid survived SIGKILL"
  fi
  rm -f "$PIDFILE"
  say "stopped (pid $pid)"
}

cmd_status() {
  local pid
  pid=$(our_pid) || { say "not running"; return 1; }
  admin ping "$BOOTSTRAP" || { say "pid $pid alive but not answering on $BOOTSTRAP"; return 1; }
  say "running (pid $pid) on $BOOTSTRAP"
}

lock() {
  mkdir -p "$STATE"
  exec 9>"$STATE/.lock"
  flock 9
}

case ${1:-} in
  start) lock; cmd_start ;;
  stop) lock; cmd_stop ;;
  restart) lock; cmd_stop; cmd_start ;;
  status) cmd_status ;;
  topics) ensure_topics "${KAFKA_BOOTSTRAP_SERVERS:-$BOOTSTRAP}" ;;
  *) die "usage: $0 start|stop|status|restart|topics" ;;
esac
