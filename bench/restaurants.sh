#!/usr/bin/env bash
# make bench (and make bench-restaurants): the many-restaurant backfill through the simulator,
# 12 weeks of orders per restaurant, into the file sink, on a client clock that compresses
# Toast's 5 s spacing (bench/restaurants.lua). Three measurements, written to bench/restaurants.md:
#   throughput   100 restaurants side by side, spacing compressed 1000x (it costs ~nothing):
#                orders per second, bound by decoding, writing and the simulator
#   memory       peak RSS of 10 and of 100 restaurants, 10 at a time: flat in the restaurants
#   wall time    100 restaurants side by side against the slowest restaurant alone, spacing
#                compressed only BENCH_WALL_FACTOR (default 2: 2.5 s), so the spacing dominates
set -eu
cd "$(dirname "$0")/.."
LUA=${LUA:-lua5.4} WALL=${BENCH_WALL_FACTOR:-2}
export CRM_SIM_PORT=${CRM_SIM_PORT:-18080} LUA_PATH="$PWD/lua/?.lua;$PWD/lua/?/init.lua;;" \
  LUA_CPATH="$PWD/build/$LUA/?.so;;"
PORT=$CRM_SIM_PORT
bash scripts/sim.sh start "$PORT" >/dev/null
trap 'bash scripts/sim.sh stop "$PORT" >/dev/null 2>&1' EXIT

run() { "$LUA" bench/restaurants.lua "$@"; }
echo "bench: restaurants: throughput..." >&2
T100=$(run 100 1000 100)
echo "bench: restaurants: memory..." >&2
M10=$(run 10 1000 10)
M100=$(run 100 1000 10)
echo "bench: restaurants: wall time (spacing compressed ${WALL}x)..." >&2
W100=$(run 100 "$WALL" 100)
# The slowest single restaurant: one with the most orders a day (restaurant 4: 6 + 3 a day).
SLOW=$(curl -sf "http://127.0.0.1:$PORT/__sim/toast/restaurants" \
  | "$LUA" -e 'print(require("crm").json.decode(io.read("*a")).restaurants[4].guid)')
W1=$(run 100 "$WALL" 1 "$SLOW")
row() {
  local n orders calls wall ops rss
  read -r n orders calls wall ops rss <<<"$3"
  printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$1" "$n" "$2" "$orders" "$calls" "$wall" "$ops" "$rss"
}
field() { echo "$1" | awk -v i="$2" '{print $i}'; }
{
  echo "# Many restaurants: backfill_restaurants through the simulator"
  echo
  echo "$LUA, $(date -u +%Y-%m-%d), bench/restaurants.sh: file sink, 12 weeks per restaurant (6 to 9"
  echo "orders a day), Toast's 5 s spacing per restaurant, compressed by the client's clock."
  echo
  echo "| run | restaurants | at once | orders | ordersBulk calls | wall s | orders/s | peak RSS kB |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
  row "throughput (spacing /1000)" 100 "$T100"
  row "memory (spacing /1000)" 10 "$M10"
  row "memory (spacing /1000)" 10 "$M100"
  row "wall time (spacing /$WALL)" 100 "$W100"
  row "slowest alone (spacing /$WALL)" 1 "$W1"
  echo
  echo "Peak RSS, 100 restaurants / 10 (10 at a time): $(awk -v a="$(field "$M100" 6)" -v b="$(field "$M10" 6)" \
    'BEGIN {printf "%.2f", a / b}')"
  echo "Wall time, 100 restaurants side by side / the slowest alone: $(awk -v a="$(field "$W100" 4)" \
    -v b="$(field "$W1" 4)" 'BEGIN {printf "%.2f", a / b}') (the sum of their spacing would be" \
    "$(awk -v c="$(field "$W100" 3)" -v w="$WALL" 'BEGIN {printf "%.0f", c * 5 / w}') s)"
} | tee bench/restaurants.md
