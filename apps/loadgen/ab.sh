#!/usr/bin/env bash
# Side-by-side runs of the same HTTP load against several builds or database URLs, round by
# round (A, B, A, B, ...), so that the machine's drift from minute to minute falls on all alike.
#
#   apps/loadgen/ab.sh MODE ROUNDS 'BIN_DIR|DATABASE_URL' ['BIN_DIR|DATABASE_URL' ...]
#
# MODE is `list` (authenticated GET /api/posts/), `anonymous-list` (the same without a token: the
# ceiling an authenticated list can reach), `create` (POST /api/posts/) or `list-writing`
# (the authenticated list while two connections create posts, so that few lists find their page
# cached: the page cache's miss path; the creates' rate is printed too); BIN_DIR holds
# a release `newspaper` and `loadgen` (say target/release of two checkouts). Every run starts
# its server afresh on DATABASE_URL (not emptied: seed it once, e.g. with bench.sh), warms up
# for 1 s, measures 6 s at 64 connections and prints req/s and the server's CPU per request.
set -euo pipefail
mode=$1 rounds=$2
shift 2
case $mode in
  list) load=(--mode list --authenticated) ;;
  anonymous-list) load=(--mode list) ;;
  create) load=(--mode create) ;;
  list-writing) load=(--mode list --authenticated) writing=1 ;;
  *) echo "MODE is list, anonymous-list, create or list-writing" >&2; exit 2 ;;
esac
creates=$(mktemp)
trap 'pkill -f "newspaper --secret-key ab-" 2>/dev/null || true; rm -f "$creates"' EXIT

run() { # BIN_DIR DATABASE_URL
  pkill -f "newspaper --secret-key ab-" 2>/dev/null || true
  sleep 0.7
  "$1/newspaper" --secret-key ab-secret-key-of-at-least-32-bytes-long --auth-rate-limit 0 \
    --log warn --database-url "$2" --bind 127.0.0.1:8000 >/dev/null 2>&1 &
  for _ in $(seq 1 100); do curl -sf http://127.0.0.1:8000/api/health/ >/dev/null && break; sleep 0.1; done
  "$1/loadgen" http --url http://127.0.0.1:8000 "${load[@]}" --concurrency 64 --duration 1 --seed 0 >/dev/null
  if [ -n "${writing:-}" ]; then
    "$1/loadgen" http --url http://127.0.0.1:8000 --mode create --concurrency 2 --duration 7 \
      --seed 0 >"$creates" &
    local writer=$!
    sleep 0.5
  fi
  local rate server cpu0 cpu1
  server=$(pgrep -f "newspaper --secret-key ab-" | head -1)
  cpu0=$(awk '{print $14 + $15}' "/proc/$server/stat")
  rate=$("$1/loadgen" http --url http://127.0.0.1:8000 "${load[@]}" --concurrency 64 --duration 6 \
    --seed 0 | awk '/rate:/ {print $2}')
  cpu1=$(awk '{print $14 + $15}' "/proc/$server/stat")
  # The server's CPU per request steadies what the rate cannot: the load tool and the server
  # share the cores, and the machine drifts.
  rate="$rate req/s, $(awk -v t="$((cpu1 - cpu0))" -v hz="$(getconf CLK_TCK)" -v r="$rate" \
    'BEGIN { printf "%.1f", t / hz * 1e6 / (r * 6) }') µs server CPU per request"
  if [ -n "${writing:-}" ]; then
    wait "$writer"
    rate="$rate, creating $(awk '/rate:/ {print $2}' "$creates")/s"
  fi
  echo "$rate"
}

for round in $(seq 1 "$rounds"); do
  for config in "$@"; do
    IFS='|' read -r bin url <<<"$config"
    echo "round $round  $config  $(run "$bin" "$url")"
  done
done
