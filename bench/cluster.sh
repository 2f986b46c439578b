#!/usr/bin/env bash
# A Switchboard cluster against a single node, in one run: the same
# swbench scenarios against one node and against three cluster members on
# NATS JetStream (bench/compare.sh's switchboard and switchboard-cluster
# targets: deliveries/s, emit-to-browser latency, CPU per delivery of all
# nodes together, count agreement after a connect storm), then kill -9 of
# a member, ten times, for its browsers' eviction from every count
# (test/cluster's BenchmarkEviction).
#
#   bench/cluster.sh                  # scenarios a, b and e, once; ten kills
#   RUNS=3 bench/cluster.sh           # medians of three runs
#   CLUSTER_NATS=1 bench/cluster.sh   # one nats-server instead of three
#   KILLS=20 bench/cluster.sh
#
# Prints markdown on stdout; exits non-zero if a run lost, duplicated or
# reordered a message, or the eviction benchmark failed.
set -euo pipefail
cd "$(dirname "$0")/.."

SCENARIOS=${SCENARIOS:-"a b e"}
KILLS=${KILLS:-10}
failed=0

SCENARIOS=$SCENARIOS TARGETS="switchboard switchboard-cluster" bash bench/compare.sh || failed=1

echo
echo "kill -9 of a member, $KILLS times (go test -run '^\$' -bench Eviction -benchtime=${KILLS}x ./test/cluster/):"
echo
out=$(mktemp)
if go test -run '^$' -bench Eviction -benchtime="${KILLS}x" ./test/cluster/ >"$out" 2>&1; then
  # The benchmark's summary line and its metrics.
  grep -E 'kills: evicted|^BenchmarkEviction' "$out" | sed 's/^ *bench_test.go:[0-9]*: /    /'
else
  failed=1
  cat "$out" >&2
  echo "eviction benchmark FAILED"
fi
rm -f "$out"
exit $failed
