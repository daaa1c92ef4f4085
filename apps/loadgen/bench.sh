#!/usr/bin/env bash
# Runs every benchmark of docs/benchmarks.md against a fresh release server on this machine and
# prints the results. Usage: apps/loadgen/bench.sh [scenario...]
# Scenarios: http fanout-latency fanout-throughput idle (default), search, and with PostgreSQL
# (NEWSPAPER_BENCH_POSTGRES_URL) http-postgres-alone search-postgres, lists at scale: archive
# (SQLite) and archive-postgres (sizes in ARCHIVE_SIZES), and with Redis too
# (NEWSPAPER_BENCH_REDIS_URL) http-postgres cluster idle-cluster.
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
  [ -n "${KEEP_DB:-}" ] || rm -f "$WORK"/news.db*
  "$SERVER" --secret-key bench-secret-key-of-at-least-32-bytes --auth-rate-limit 0 --log warn \
    --database-url "$WORK/news.db" --bind 127.0.0.1:8000 "$@" 2>"$WORK/server.log" &
  SERVER_PID=$!
  for _ in $(seq 1 50); do curl -sf http://127.0.0.1:8000/api/posts/ >/dev/null && return; sleep 0.1; done
  echo "server did not start" >&2; cat "$WORK/server.log" >&2; exit 1
}

PG_SERVER=${NEWSPAPER_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
PG_URL=${PG_SERVER%/*}/newspaper_bench
REDIS_URL=${NEWSPAPER_BENCH_REDIS_URL:-redis://127.0.0.1:6379}

fresh_postgres() {
  psql "$PG_SERVER" -qc "DROP DATABASE IF EXISTS newspaper_bench WITH (FORCE)" >/dev/null
  psql "$PG_SERVER" -qc "CREATE DATABASE newspaper_bench" >/dev/null
}

# start_instance PORT NAME [flags...]: a server on PostgreSQL and Redis.
start_instance() {
  local port=$1 name=$2; shift 2
  "$SERVER" --secret-key bench-secret-key-of-at-least-32-bytes --auth-rate-limit 0 --log warn --database-url "$PG_URL" \
    --channel-layer "$REDIS_URL" --redis-namespace "bench-$$" --instance-id "$name" \
    --bind "127.0.0.1:$port" "$@" 2>"$WORK/$name.log" &
  echo $! >"$WORK/$name.pid"
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/api/health/" >/dev/null && return; sleep 0.1; done
  echo "instance $name did not start" >&2; cat "$WORK/$name.log" >&2; exit 1
}

stop_all() {
  pkill -f "$SERVER" 2>/dev/null || true
  sleep 1
}

scenario_http_postgres() {
  echo "## HTTP on PostgreSQL (one instance, Redis layer), 64 concurrent clients, 1,000 posts"
  stop_all; fresh_postgres
  start_instance 8000 one
  "$LOADGEN" http --url http://127.0.0.1:8000 --mode list --concurrency 64 --duration 1 --seed 1000 >/dev/null
  psql "$PG_URL" -qc "ANALYZE" # as autovacuum would, soon enough
  "$LOADGEN" http --url http://127.0.0.1:8000 --mode list --concurrency 64 --duration 10 --seed 0
  "$LOADGEN" http --url http://127.0.0.1:8000 --mode list --authenticated --concurrency 64 --duration 10 --seed 0
  "$LOADGEN" http --url http://127.0.0.1:8000 --mode create --concurrency 64 --duration 10
  stop_all
}

# search_seed URL SIZE: SIZE published posts of ~2 KB through the API (every 10,000th holds the
# rare word "quokka"); search_measure URL: searches for it with a token, then with every page
# read from the database.
search_seed() {
  "$LOADGEN" http --url "$1" --mode list --concurrency 64 --duration 0 --seed "$2" \
    --seed-bytes 2000 --rare-every 10000 >/dev/null
}
search_measure() {
  "$LOADGEN" http --url "$1" --mode list --authenticated --concurrency 64 --duration 10 \
    --seed 0 --path "/api/posts/?search=quokka"
  "$LOADGEN" http --url "$1" --mode list --authenticated --concurrency 64 --duration 10 \
    --seed 0 --path "/api/posts/?search=Quokka&ordering=title"
  # Each page read from the database: no request is answered from the page cache.
  "$LOADGEN" http --url "$1" --mode list --authenticated --concurrency 64 --duration 10 \
    --seed 0 --path "/api/posts/?search=quokka" --uncached
}

# settle_search_index DB: waits until the idle writer has merged SQLite's search index into one
# segment (it starts once writes stop; about a minute and a half for 100,000 posts of 2 KB).
settle_search_index() {
  local query="SELECT count(DISTINCT segid) FROM posts_search_idx"
  for _ in $(seq 1 600); do
    [ "$(python3 -c "import sqlite3,sys; print(sqlite3.connect('file:$1?mode=ro', uri=True).execute(sys.argv[1]).fetchone()[0])" "$query")" -le 1 ] && return
    sleep 1
  done
  echo "the search index was not merged within 10 minutes" >&2
}

scenario_search() {
  echo "## Search for a rare word, SQLite, 100,000 posts of 2 KB, 64 concurrent clients with a token"
  start_server
  search_seed http://127.0.0.1:8000 100000
  settle_search_index "$WORK/news.db"
  search_measure http://127.0.0.1:8000
}

scenario_search_postgres() {
  echo "## Search for a rare word, PostgreSQL, 100,000 posts of 2 KB, 64 concurrent clients with a token"
  stop_all; fresh_postgres
  start_pg_instance
  search_seed http://127.0.0.1:8000 100000
  # As autovacuum would, soon enough: statistics, and the trigram indexes' pending lists merged.
  psql "$PG_URL" -qc "VACUUM ANALYZE posts"
  search_measure http://127.0.0.1:8000
  stop_all
}

# One instance on PostgreSQL alone (in-memory channel layer: one instance needs no Redis).
start_pg_instance() {
  "$SERVER" --secret-key bench-secret-key-of-at-least-32-bytes --auth-rate-limit 0 --log warn --database-url "$PG_URL" \
    --bind 127.0.0.1:8000 2>"$WORK/pg.log" &
  SERVER_PID=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:8000/api/health/" >/dev/null && return; sleep 0.1; done
  echo "the PostgreSQL instance did not start" >&2; cat "$WORK/pg.log" >&2; exit 1
}

scenario_http_postgres_alone() {
  echo "## HTTP on PostgreSQL (one instance, in-memory layer), 64 concurrent clients, 1,000 posts"
  stop_all; fresh_postgres
  start_pg_instance
  "$LOADGEN" http --url http://127.0.0.1:8000 --mode list --concurrency 64 --duration 1 --seed 1000 >/dev/null
  psql "$PG_URL" -qc "ANALYZE"
  "$LOADGEN" http --url http://127.0.0.1:8000 --mode list --concurrency 64 --duration 10 --seed 0
  "$LOADGEN" http --url http://127.0.0.1:8000 --mode list --authenticated --concurrency 64 --duration 10 --seed 0
  "$LOADGEN" http --url http://127.0.0.1:8000 --mode create --concurrency 64 --duration 10
  stop_all
}

scenario_cluster() {
  for n in 1 2; do
    echo "## Fan-out through Redis: $n instance(s), 10,000 clients spread over them"
    stop_all; fresh_postgres
    local urls="" pids=""
    for i in $(seq 1 "$n"); do
      start_instance $((8000 + i)) "i$i"
      urls="${urls:+$urls,}http://127.0.0.1:$((8000 + i))"
      pids="${pids:+$pids,}$(cat "$WORK/i$i.pid")"
    done
    "$LOADGEN" fanout --url "$urls" --server-pid "$pids" --clients 10000 --posts 30 --rate 1
    "$LOADGEN" fanout --url "$urls" --server-pid "$pids" --clients 10000 --posts 300 --rate 20
  done
  stop_all
}

scenario_idle_cluster() {
  # One process may hold about 19,000 sockets here (hard limit 20,000 open files), so 51,000
  # connections take three instances and three load processes.
  echo "## Idle connections through Redis: 3 instances x 17,000"
  stop_all; fresh_postgres
  for i in 1 2 3; do start_instance $((8000 + i)) "i$i"; done
  local pids="$(cat "$WORK/i1.pid"),$(cat "$WORK/i2.pid"),$(cat "$WORK/i3.pid")"
  local before=$(for p in ${pids//,/ }; do grep VmRSS /proc/$p/status | awk '{print $2}'; done | paste -sd+ | bc)
  for i in 1 2 3; do
    "$LOADGEN" idle --url "http://127.0.0.1:$((8000 + i))" --clients 17000 --hold 20 >"$WORK/idle$i.txt" 2>&1 &
  done
  # Measure while all three hold their connections.
  for _ in $(seq 1 120); do
    joined=$(curl -s http://127.0.0.1:8001/api/realtime/stats/ | sed -E 's/.*"blog_feed":([0-9]+).*/\1/')
    [ "${joined:-0}" -ge 51000 ] && break
    sleep 0.5
  done
  sleep 2
  local after=$(for p in ${pids//,/ }; do grep VmRSS /proc/$p/status | awk '{print $2}'; done | paste -sd+ | bc)
  echo "  connections joined (global presence): $joined"
  echo "  server RSS, 3 instances: $((before / 1024)) MiB -> $((after / 1024)) MiB ($(echo "scale=2; ($after - $before) / $joined" | bc) KiB per connection)"
  wait
  cat "$WORK"/idle*.txt | grep -E "lost|still" || true
  stop_all
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

# Lists at scale (issue 14): an archive of SIZE posts (one author writes 90%, every 10th post a
# draft) written through the persistence layer, then every list variant with a token at 64
# connections for 5 s, and one request at a time for 2 s (the single-request latency).
ARCHIVE_SIZES=${ARCHIVE_SIZES:-10000 100000 1000000}
PASSWORD=bench-password-not-common

# archive_users URL: registers the author and the reader.
archive_users() {
  for who in author other reader; do
    curl -sf -X POST "$1/api/auth/register/" -H 'Content-Type: application/json' \
      -d "{\"email\": \"$who@bench.example\", \"password\": \"$PASSWORD\"}" >/dev/null
  done
}

# archive_token URL WHO: a fresh access token.
archive_token() {
  curl -sf -X POST "$1/api/auth/token/" -H 'Content-Type: application/json' \
    -d "{\"email\": \"$2@bench.example\", \"password\": \"$PASSWORD\"}" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["access"])'
}

# archive_measure URL SIZE: every variant, as one table row each.
archive_measure() {
  local base=$1 size=$2
  local author reader author_id cursor
  author=$(archive_token "$base" author)
  reader=$(archive_token "$base" reader)
  author_id=$(curl -sf -H "Authorization: Bearer $author" "$base/api/auth/me/" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
  # Page 1,000 (or half-way, in a smaller archive), and the cursor of the page after it, made
  # as the server makes them.
  local visible depth
  visible=$(curl -sf -H "Authorization: Bearer $reader" "$base/api/posts/?page_size=1" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["count"])')
  depth=$(( visible / 20 < 1000 ? visible / 20 : 1000 ))
  cursor=$(curl -sf -H "Authorization: Bearer $reader" "$base/api/posts/?page=$depth" | python3 -c '
import base64, json, sys
last = json.load(sys.stdin)["results"][-1]
wire = json.dumps({"o": "-created_at", "k": last["created_at"], "i": last["id"]}, separators=(",", ":"))
print(base64.urlsafe_b64encode(wire.encode()).decode().rstrip("="))')
  local variants=(
    "author: own list|$author|/api/posts/"
    "author: ?status=draft|$author|/api/posts/?status=draft"
    "reader: list|$reader|/api/posts/"
    "reader: ?ordering=title|$reader|/api/posts/?ordering=title"
    "reader: ?page=$depth|$reader|/api/posts/?page=$depth"
    "reader: ?author=&ordering=-updated_at|$reader|/api/posts/?author=$author_id&ordering=-updated_at"
    "reader: ?cursor= after page $depth|$reader|/api/posts/?cursor=$cursor"
    "reader: ?search=quokka|$reader|/api/posts/?search=quokka"
  )
  echo "| posts | request | req/s (64 conn.) | p99 | errors | one at a time, p50 |"
  echo "|---|---|---|---|---|---|"
  for variant in "${variants[@]}"; do
    IFS='|' read -r label token path <<<"$variant"
    local loaded single
    loaded=$("$LOADGEN" http --url "$base" --mode list --authenticated --token "$token" --seed 0 \
      --concurrency 64 --duration 5 --path "$path")
    single=$("$LOADGEN" http --url "$base" --mode list --authenticated --token "$token" --seed 0 \
      --concurrency 1 --duration 2 --path "$path")
    echo "| $size | $label | $(echo "$loaded" | awk '/rate:/ {print $2}') | $(echo "$loaded" |
      sed -nE 's/.*p99 ([0-9.]+ ms).*/\1/p') | $(echo "$loaded" | awk '/errors:/ {print $2}') | $(echo "$single" |
      sed -nE 's/.*p50 ([0-9.]+ ms).*/\1/p') |"
  done
  # The feed's replay: streams resuming 1,000 events back, one after the other.
  local replay
  replay=$("$LOADGEN" replay --url "$base" --token "$author" --back 1000 --duration 5)
  echo "| $size | feed: \`?since=\` 1,000 events back, streams/s (one at a time) | $(echo "$replay" |
    awk '/streams:/ {printf "%.0f", $2 / 5}') | $(echo "$replay" | sed -nE 's/.*p99 ([0-9.]+ ms).*/\1/p') | 0 | $(echo "$replay" |
    sed -nE 's/.*p50 ([0-9.]+ ms).*/\1/p') |"
}

scenario_archive() {
  for size in $ARCHIVE_SIZES; do
    echo "## Lists at scale, SQLite, $size posts"
    start_server
    archive_users http://127.0.0.1:8000
    stop_all
    "$LOADGEN" archive --database-url "$WORK/news.db" --posts "$size" \
      --author author@bench.example --other other@bench.example 2>/dev/null
    KEEP_DB=1 start_server
    archive_measure http://127.0.0.1:8000 "$size"
    stop_all
  done
}

# Each size in its own database (newspaper_archive_SIZE), kept afterwards: with ARCHIVE_REUSE=1
# an existing one is measured again without being written anew.
scenario_archive_postgres() {
  for size in $ARCHIVE_SIZES; do
    echo "## Lists at scale, PostgreSQL, $size posts"
    stop_all
    local name=newspaper_archive_$size
    local PG_URL=${PG_SERVER%/*}/$name
    if [ -z "${ARCHIVE_REUSE:-}" ] || ! psql "$PG_URL" -qc "SELECT 1" >/dev/null 2>&1; then
      psql "$PG_SERVER" -qc "DROP DATABASE IF EXISTS $name WITH (FORCE)" >/dev/null
      psql "$PG_SERVER" -qc "CREATE DATABASE $name" >/dev/null
      start_pg_instance
      archive_users http://127.0.0.1:8000
      stop_all
      "$LOADGEN" archive --database-url "$PG_URL" --posts "$size" \
        --author author@bench.example --other other@bench.example 2>/dev/null
      # As autovacuum would, soon enough: statistics, the visibility map (index-only scans)
      # and the trigram indexes' pending lists.
      psql "$PG_URL" -qc "VACUUM ANALYZE"
    fi
    start_pg_instance
    archive_measure http://127.0.0.1:8000 "$size"
    stop_all
  done
}

scenarios=("$@")
[ ${#scenarios[@]} -eq 0 ] && scenarios=(http fanout-latency fanout-throughput idle)
echo "# $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(uname -r)"
for s in "${scenarios[@]}"; do
  "scenario_${s//-/_}"
  echo
done
