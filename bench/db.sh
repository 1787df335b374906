#!/usr/bin/env bash
# make bench (after bench/run.sh): orders per second into SQLite and into PostgreSQL
# (crm.toast.db), a rerun of the same orders (nothing written), the four reports. PostgreSQL is a
# throwaway server started here (Debian's, as the postgres user when run as root) and stopped
# by its pid. Writes bench/results_db.md.
set -eu
cd "$(dirname "$0")/.."
ROOT=$(pwd)
LUA=${LUA:-lua5.4}
PORT=${CRM_SIM_PORT:-18080}
N=${BENCH_DB_RESTAURANTS:-100}
export CRM_SIM_PORT=$PORT
export LUA_PATH="$ROOT/lua/?.lua;$ROOT/lua/?/init.lua;;"
export LUA_CPATH="$ROOT/build/$LUA/?.so;;"
PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
PG_PORT=$((PORT + 701))
tmp=$(mktemp -d)
pg_pid=""
stop() {
  [ -n "$pg_pid" ] && kill -INT "$pg_pid" 2>/dev/null && for _ in $(seq 50); do kill -0 "$pg_pid" 2>/dev/null || break; sleep 0.1; done
  bash scripts/sim.sh stop "$PORT" >/dev/null 2>&1
  rm -rf "$tmp"
}
trap stop EXIT
bash scripts/sim.sh start "$PORT" >/dev/null
curl -sf -X POST "http://127.0.0.1:$PORT/__sim/reset" -d '{}' >/dev/null

echo "bench: orders into SQLite ($N restaurants)..." >&2
SQ=$("$LUA" bench/db.lua "sqlite:$tmp/bench.db" "$N")
# backfill_restaurants through the simulator into the database: 100 restaurants x 12 weeks, 10
# at a time, Toast's spacing compressed 1000x by the client's clock (bench/restaurants.lua).
echo "bench: backfill_restaurants into SQLite (100 restaurants)..." >&2
FLEET_SQ=$(BENCH_SINK="sqlite:$tmp/fleet.db" "$LUA" bench/restaurants.lua 100 1000 10)
FLEET_PG=""

PG="(not measured: no PostgreSQL server in /usr/lib/postgresql)"
if [ -n "$PG_BIN" ] && [ -x "$PG_BIN/postgres" ]; then
  echo "bench: orders into PostgreSQL ($N restaurants)..." >&2
  run=""
  if [ "$(id -u)" = 0 ]; then chown postgres "$tmp"; run="runuser -u postgres --"; fi
  $run "$PG_BIN/initdb" -D "$tmp/pg" -A trust -U postgres -E UTF8 --no-sync >/dev/null
  $run "$PG_BIN/postgres" -D "$tmp/pg" -h 127.0.0.1 -p "$PG_PORT" -k "$tmp" >"$tmp/pg.log" 2>&1 &
  for _ in $(seq 100); do [ -s "$tmp/pg/postmaster.pid" ] && break; sleep 0.1; done
  pg_pid=$(head -n 1 "$tmp/pg/postmaster.pid")
  for _ in $(seq 100); do
    "$LUA" -e "assert(require('luasql.postgres').postgres():connect('postgres', 'postgres', nil, '127.0.0.1', '$PG_PORT'))" \
      2>/dev/null && break
    sleep 0.1
  done
  PG=$("$LUA" bench/db.lua "postgresql://postgres@127.0.0.1:$PG_PORT/postgres" "$N")
  echo "bench: backfill_restaurants into PostgreSQL (100 restaurants)..." >&2
  "$LUA" -e "local c = assert(require('luasql.postgres').postgres():connect('postgres', 'postgres', nil,
    '127.0.0.1', '$PG_PORT')); assert(c:execute('CREATE DATABASE fleet'))"
  FLEET_PG=$(BENCH_SINK="postgresql://postgres@127.0.0.1:$PG_PORT/fleet" "$LUA" bench/restaurants.lua 100 1000 10)
fi

get() { echo "$1" | awk -v k="$2" '$1 == k {print $2}'; }
row() {
  if [ -z "$(get "$2" db_orders)" ]; then echo "| $1 | $2 | | | |"; return; fi
  echo "| $1 | $(get "$2" db_orders) orders ($(get "$2" db_written) written): $(get "$2" db_orders_per_s) orders/s |" \
    "$(get "$2" db_rerun_orders_per_s) orders/s ($(get "$2" db_rerun_written) written) |" \
    "$(get "$2" db_reports_ms) ms for $(get "$2" db_report_rows) rows | $(get "$2" db_peak_rss_kb) kB |"
}
{
  echo "# crm.toast.db bench"
  echo
  echo "Date: $(date -u '+%Y-%m-%d %H:%M UTC'). Machine: $(nproc) cores. Runtime: $LUA."
  echo "Twelve weeks of the simulator's orders (read once, spacing compressed), written window by window"
  echo "under $N restaurant GUIDs, each order in its own transaction (SQLite: WAL, synchronous=NORMAL;"
  echo "PostgreSQL: synchronous_commit=off, a local server on loopback). The rerun writes the same orders"
  echo "again: every one is the stored version, so nothing is written."
  echo
  echo "| database | first write | rerun (idempotent) | reports (guests, last orders, favourite items, servers) | peak RSS |"
  echo "| --- | --- | --- | --- | --- |"
  row SQLite "$SQ"
  row PostgreSQL "$PG"
  echo
  echo "backfill_restaurants through the simulator into the database (bench/restaurants.lua with"
  echo "BENCH_SINK): 100 restaurants x 12 weeks, 10 at a time, spacing compressed 1000x, each"
  echo "restaurant's guest context read once."
  echo
  echo "| database | restaurants | orders | ordersBulk calls | wall s | orders/s | peak RSS kB |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
  for pair in "SQLite:$FLEET_SQ" "PostgreSQL:$FLEET_PG"; do
    read -r n orders calls wall ops rss <<<"${pair#*:}"
    echo "| ${pair%%:*} | ${n:-} | ${orders:-} | ${calls:-} | ${wall:-} | ${ops:-} | ${rss:-} |"
  done
} | tee bench/results_db.md
