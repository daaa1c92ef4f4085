#!/usr/bin/env bash
# Runs every benchmark of docs/benchmarks.md against a fresh release server on this machine and
# prints the results. Usage: apps/loadgen/bench.sh [scenario...]
# Scenarios: http fanout-latency fanout-throughput idle (default: all).
set -euo pipefail
cd "$(dirname "$0")/../.."

cargo build --release -p newspaper-server -p newspaper-loadgen >&2
SERVER=$PWD/target/release/newspaper
LOADGEN=$PWD/target/release/loadgen
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
# Each client and each server connection is a file descriptor.
ulimit -n "$(ulimit -Hn)"

start_server() {
  pkill -f "$SERVER" 2>/dev/null || true
  sleep 0.5
  rm -f "$WORK"/news.db*
  "$SERVER" --secret-key bench --auth-rate-limit 0 --log warn \
    --database-url "$WORK/news.db" --bind 127.0.0.1:8000 "$@" 2>"$WORK/server.log" &
  SERVER_PID=$!
  for _ in $(seq 1 50); do curl -sf http://127.0.0.1:8000/api/posts/ >/dev/null && return; sleep 0.1; done
  echo "server did not start" >&2; cat "$WORK/server.log" >&2; exit 1
}

scenario_http() {
  echo "## HTTP, 64 concurrent clients, 1,000 posts"
  start_server
  "$LOADGEN" http --mode list --concurrency 64 --duration 10 --seed 1000
  "$LOADGEN" http --mode list --authenticated --concurrency 64 --duration 10 --seed 0
  "$LOADGEN" http --mode create --concurrency 64 --duration 10
}

scenario_fanout_latency() {
  echo "## Fan-out latency: 10,000 clients, one post per second"
  start_server
  "$LOADGEN" fanout --clients 10000 --posts 30 --rate 1 --server-pid "$SERVER_PID"
  echo "## Fan-out latency: 1,000 clients, one post per second"
  "$LOADGEN" fanout --clients 1000 --posts 30 --rate 1 --server-pid "$SERVER_PID"
}

scenario_fanout_throughput() {
  echo "## Fan-out throughput: 10,000 clients x 20 posts/s"
  start_server
  "$LOADGEN" fanout --clients 10000 --posts 300 --rate 20 --server-pid "$SERVER_PID"
  echo "## Fan-out throughput: 2,000 clients x 125 posts/s"
  start_server
  "$LOADGEN" fanout --clients 2000 --posts 1500 --rate 125 --server-pid "$SERVER_PID"
}

scenario_idle() {
  # As many as one process may hold: the hard limit on open files (20,000 here) caps both
  # the server and the load tool.
  local n=$(( $(ulimit -Hn) - 1000 ))
  echo "## Idle connections: $n"
  start_server
  "$LOADGEN" idle --clients "$n" --hold 5 --server-pid "$SERVER_PID"
}

scenarios=("$@")
[ ${#scenarios[@]} -eq 0 ] && scenarios=(http fanout-latency fanout-throughput idle)
echo "# $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(uname -r)"
for s in "${scenarios[@]}"; do
  "scenario_${s//-/_}"
  echo
done
