#!/usr/bin/env bash
# Compare Switchboard with the socket.io setup it replaces
# (bench/socketio), running the same swbench scenarios against each, one
# server at a time, each scenario on a freshly started server whose
# process swbench samples (CPU, RSS).
#
#   bench/compare.sh                 # every scenario once
#   RUNS=3 bench/compare.sh          # medians of three runs
#   SCENARIOS="a b" bench/compare.sh # a subset
#   TARGETS=switchboard bench/compare.sh
#   TARGETS="switchboard switchboard-nohistory switchboard-pair" bench/compare.sh
#       # the message log's cost: history off (SWITCHBOARD_HISTORY_SIZE=0),
#       # and a primary whose standby follows its log (swbench drives the
#       # primary; server CPU and RSS are the primary's)
#   TARGETS="switchboard switchboard-cluster" bench/compare.sh
#       # three cluster members on NATS JetStream (three nats-servers from
#       # deploy/cluster/nats.conf, the log on all three; CLUSTER_NATS=1 for
#       # one): swbench spreads its clients and emits over the three nodes;
#       # server CPU and RSS are the three nodes' together, the NATS
#       # servers' CPU a row of its own (bench/cluster.sh runs this)
#   PIN=1 bench/compare.sh           # server on CPU 0, swbench on CPU 1 (taskset)
#   SWITCHBOARD_BIN=/tmp/sb-old bench/compare.sh  # a prebuilt node, e.g. another commit's
#
# Scenarios (the "Fan-out performance" issue):
#   a  1,000 clients, 200 emits, one at a time, 128 B
#   b  2,000 clients, 500 emits, 8 in flight
#   c  10,000 clients, 2 emits/s for 10 s
#   d  10,000 idle clients: memory per connection
#   e  10,000 clients connecting at once: time to connect and count all
#
# Prints a markdown table on stdout; logs and one JSON file per run go to
# $OUT (a temporary directory unless set). Exits non-zero if any run lost,
# duplicated or reordered a message.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-1}
CLUSTER_NATS=${CLUSTER_NATS:-3}
SCENARIOS=${SCENARIOS:-"a b c d e"}
TARGETS=${TARGETS:-"socketio switchboard"}
OUT=${OUT:-$(mktemp -d -t swbench.XXXXXX)}
PIN=${PIN:-0}
mkdir -p "$OUT"
log() { echo "compare: $*" >&2; }

# 10,000 clients hold 10,000 sockets here and as many in the server.
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt 10100 ]; then
  log "warning: ulimit -n is $(ulimit -n); the 10,000-client scenarios need more"
fi
read -r lo hi </proc/sys/net/ipv4/ip_local_port_range
if [ $((hi - lo)) -lt 12000 ]; then
  log "warning: only $((hi - lo)) ephemeral ports ($lo-$hi)"
fi

log "building into $OUT"
if [ -n "${SWITCHBOARD_BIN:-}" ]; then
  cp "$SWITCHBOARD_BIN" "$OUT/switchboard"
else
  CGO_ENABLED=0 go build -o "$OUT/switchboard" ./cmd/switchboard
fi
go build -o "$OUT/swbench" ./cmd/swbench
if [[ " $TARGETS " == *" socketio "* ]]; then
  (cd bench/socketio && npm ci --no-audit --no-fund --loglevel=error >&2)
fi
if [[ " $TARGETS " == *" switchboard-cluster "* ]]; then
  bash scripts/install-tools.sh nats-server >&2
  NATS_SERVER=$(command -v nats-server || echo "$(go env GOPATH)/bin/nats-server")
fi

# With PIN=1 the server and the load generator get a CPU each, so that
# neither steals the other's: fairer, but a Go server then has one core.
SERVER_CPU=() LOAD_CPU=()
if [ "$PIN" = 1 ]; then
  SERVER_CPU=(taskset -c 0) LOAD_CPU=(taskset -c 1)
fi

free_port() {
  node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })'
}

wait_up() { # url
  for _ in $(seq 200); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.05
  done
  log "server did not come up at $1"
  return 1
}

# PID is what swbench samples (a comma list for a cluster); STOP lists
# every process a run started, stopped after it in this order; NATS_PIDS
# are the NATS servers among them.
PID="" STOP=() NATS_PIDS=()
stop_server() {
  for p in "${STOP[@]}"; do
    kill -TERM "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  PID="" STOP=() NATS_PIDS=()
}
trap stop_server EXIT

# cpu_of pids...: their user plus system CPU time, in clock ticks
# (/proc/PID/stat fields 14 and 15).
cpu_of() {
  local sum=0 p
  for p in "$@"; do
    sum=$((sum + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "$sum"
}

# start_nats logfile: CLUSTER_NATS nats-servers with JetStream, their
# stores under $OUT; sets NATS_URLS and NATS_PIDS.
start_nats() {
  local urls=() routes=() monitors=() ports=() i
  for i in $(seq "$CLUSTER_NATS"); do
    ports+=("$(free_port)") monitors+=("$(free_port)") routes+=("$(free_port)")
  done
  for i in $(seq 0 $((CLUSTER_NATS - 1))); do
    local store="$OUT/nats.$$.$RANDOM"
    if [ "$CLUSTER_NATS" = 1 ]; then
      "${SERVER_CPU[@]}" "$NATS_SERVER" -a 127.0.0.1 -p "${ports[i]}" -m "${monitors[i]}" -js -sd "$store" >"$1.nats$i" 2>&1 &
    else
      NATS_SERVER_NAME=nats$i NATS_CLIENT_LISTEN=127.0.0.1:${ports[i]} NATS_MONITOR_LISTEN=127.0.0.1:${monitors[i]} \
        NATS_CLUSTER_LISTEN=127.0.0.1:${routes[i]} NATS_STORE_DIR=$store \
        NATS_ROUTE_1=nats://127.0.0.1:${routes[0]} NATS_ROUTE_2=nats://127.0.0.1:${routes[1]} NATS_ROUTE_3=nats://127.0.0.1:${routes[2]} \
        "${SERVER_CPU[@]}" "$NATS_SERVER" -c deploy/cluster/nats.conf >"$1.nats$i" 2>&1 &
    fi
    NATS_PIDS+=($!)
    urls+=("nats://127.0.0.1:${ports[i]}")
  done
  for i in $(seq 0 $((CLUSTER_NATS - 1))); do
    wait_up "http://127.0.0.1:${monitors[i]}/healthz"
  done
  NATS_URLS=$(IFS=,; echo "${urls[*]}")
}

# start_server target logfile: starts a fresh server, sets PID and ARGS
# (the swbench flags that reach it).
start_server() {
  local http grpc
  http=$(free_port)
  case $1 in
  switchboard | switchboard-nohistory | switchboard-pair)
    grpc=$(free_port)
    local history=1000
    [ "$1" = switchboard-nohistory ] && history=0
    SWITCHBOARD_HTTP_ADDR=127.0.0.1:$http SWITCHBOARD_GRPC_ADDR=127.0.0.1:$grpc \
      SWITCHBOARD_ALLOWED_ORIGINS='*' SWITCHBOARD_LOG_LEVEL=warn \
      SWITCHBOARD_MAX_CONNS_PER_IP=0 SWITCHBOARD_HISTORY_SIZE=$history \
      "${SERVER_CPU[@]}" "$OUT/switchboard" >"$2" 2>&1 &
    PID=$!
    STOP=("$PID")
    ARGS=(-ws "ws://127.0.0.1:$http/ws" -grpc "127.0.0.1:$grpc")
    wait_up "http://127.0.0.1:$http/readyz"
    if [ "$1" = switchboard-pair ]; then
      SWITCHBOARD_HTTP_ADDR=127.0.0.1:$(free_port) SWITCHBOARD_GRPC_ADDR=127.0.0.1:$(free_port) \
        SWITCHBOARD_PRIMARY_ADDR=127.0.0.1:$grpc SWITCHBOARD_LOG_LEVEL=warn \
        "${SERVER_CPU[@]}" "$OUT/switchboard" >"$2.standby" 2>&1 &
      STOP=($! "${STOP[@]}")
      for _ in $(seq 200); do
        curl -fsS "http://127.0.0.1:$http/metrics" 2>/dev/null | grep -q '^switchboard_log_followed 1' && break
        sleep 0.05
      done
    fi
    ;;
  switchboard-cluster)
    start_nats "$2"
    local ws=() grpcs=() pids=() readys=() i
    for i in 1 2 3; do
      http=$(free_port)
      grpc=$(free_port)
      SWITCHBOARD_HTTP_ADDR=127.0.0.1:$http SWITCHBOARD_GRPC_ADDR=127.0.0.1:$grpc \
        SWITCHBOARD_ALLOWED_ORIGINS='*' SWITCHBOARD_LOG_LEVEL=warn SWITCHBOARD_MAX_CONNS_PER_IP=0 \
        SWITCHBOARD_NATS_URL=$NATS_URLS SWITCHBOARD_NATS_REPLICAS=$CLUSTER_NATS \
        SWITCHBOARD_CLUSTER_NAME=bench SWITCHBOARD_NODE_NAME=node$i \
        "${SERVER_CPU[@]}" "$OUT/switchboard" >"$2.node$i" 2>&1 &
      pids+=($!) ws+=("ws://127.0.0.1:$http/ws") grpcs+=("127.0.0.1:$grpc") readys+=("http://127.0.0.1:$http/readyz")
    done
    STOP=("${pids[@]}" "${NATS_PIDS[@]}")
    PID=$(IFS=,; echo "${pids[*]}")
    ARGS=(-ws "$(IFS=,; echo "${ws[*]}")" -grpc "$(IFS=,; echo "${grpcs[*]}")")
    for i in "${readys[@]}"; do
      wait_up "$i"
    done
    ;;
  socketio)
    PORT=$http "${SERVER_CPU[@]}" node bench/socketio/server.js >"$2" 2>&1 &
    PID=$!
    STOP=("$PID")
    ARGS=(-target socketio -url "http://127.0.0.1:$http")
    wait_up "http://127.0.0.1:$http/healthz"
    ;;
  esac
}

scenario_args() {
  case $1 in
  a) echo "-clients 1000 -emits 200 -inflight 1 -payload 128" ;;
  b) echo "-clients 2000 -emits 500 -inflight 8 -payload 128" ;;
  c) echo "-clients 10000 -emits 20 -rate 2 -payload 128" ;;
  d) echo "-clients 10000 -emits 0 -hold 10s" ;;
  # 500 dialers: a storm, yet within node's default listen backlog (511)
  # so that neither server is measured on SYN retransmits.
  e) echo "-clients 10000 -emits 0 -dialers 500" ;;
  *)
    log "unknown scenario $1"
    return 1
    ;;
  esac
}

failed=0
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
# Targets alternate run by run, so that a change in the machine's load
# falls on all of them alike.
for sc in $SCENARIOS; do
  for run in $(seq "$RUNS"); do
    for target in $TARGETS; do
      name="$target-$sc-$run"
      start_server "$target" "$OUT/$name.server.log"
      # shellcheck disable=SC2046 # word splitting of the scenario's flags is intended
      log "$name: swbench ${ARGS[*]} $(scenario_args "$sc") (load $(cut -d' ' -f1-3 /proc/loadavg))"
      nats_before=$(cpu_of "${NATS_PIDS[@]}")
      set +e
      "${LOAD_CPU[@]}" "$OUT/swbench" "${ARGS[@]}" $(scenario_args "$sc") -pid "$PID" -timeout 120s -json \
        >"$OUT/$name.out" 2>"$OUT/$name.err"
      rc=$?
      set -e
      nats_cpu=""
      [ ${#NATS_PIDS[@]} -eq 0 ] || nats_cpu=$(awk -v a="$nats_before" -v b="$(cpu_of "${NATS_PIDS[@]}")" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", (b - a) / hz }')
      stop_server
      tail -n 1 "$OUT/$name.out" >"$OUT/$name.json"
      if [ -n "$nats_cpu" ] && head -c 1 "$OUT/$name.json" | grep -q '{'; then
        # The NATS servers' CPU over the whole swbench run, beside its own figures.
        node -e 'const fs = require("fs"); const [f, v] = process.argv.slice(1); const r = JSON.parse(fs.readFileSync(f, "utf8")); r.nats_cpu_s = Number(v); fs.writeFileSync(f, JSON.stringify(r) + "\n");' "$OUT/$name.json" "$nats_cpu"
      fi
      grep -v '^{' "$OUT/$name.out" >&2 || true
      if [ $rc -ne 0 ]; then
        failed=1
        log "$name FAILED (exit $rc):"
        cat "$OUT/$name.err" >&2
        head -c 1 "$OUT/$name.json" | grep -q '{' || echo '{}' >"$OUT/$name.json"
      fi
      sleep 1 # let the sockets of the last run close
    done
  done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

echo "Load average (1, 5, 15 min): $load_before before, $load_after after; $(nproc) CPUs; RUNS=$RUNS (medians); PIN=$PIN."
echo
OUT=$OUT SCENARIOS=$SCENARIOS RUNS=$RUNS TARGETS=$TARGETS node bench/table.js
log "raw results in $OUT"
exit $failed
