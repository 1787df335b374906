#!/usr/bin/env bash
# make bench: baselines and crm measured in one run against the simulator; prints one table and
# writes it to bench/results.md. Figures are compared as ratios within the run.
set -eu
cd "$(dirname "$0")/.."
ROOT=$(pwd)
LUA=${LUA:-lua5.4}
PORT=${CRM_SIM_PORT:-18080}
SECS=${BENCH_SECONDS:-4}
export CRM_SIM_PORT=$PORT
export LUA_PATH="$ROOT/lua/?.lua;$ROOT/lua/?/init.lua;;"
export LUA_CPATH="$ROOT/build/$LUA/?.so;;"
BASE="http://127.0.0.1:$PORT"
RID="6f1d2d0e-8f65-4d7b-9b59-0f1f0c8e0a11"

mkdir -p build/bench
cc -O2 -std=c11 -Wall -Wextra -Werror -o build/bench/raw_curl bench/raw_curl.c -lcurl
bash scripts/sim.sh start "$PORT" >/dev/null
trap 'bash scripts/sim.sh stop "$PORT" >/dev/null 2>&1' EXIT
# Request logging costs the server time that is not crm's; the bench measures the client.
curl -sf -X POST "$BASE/__sim/reset" -d '{}' >/dev/null

TOKEN=$(curl -sf -X POST "$BASE/authentication/v1/authentication/login" -H 'Content-Type: application/json' \
  -d '{"clientId":"sim-client","clientSecret":"sim-secret","userAccessType":"TOAST_MACHINE_CLIENT"}' \
  | sed -E 's/.*"accessToken":"([^"]+)".*/\1/')
GUID=$("$LUA" -e 'print(require("crm").guid())')
curl -sf -X POST "$BASE/crm/v1/customers" -H "Authorization: Bearer $TOKEN" -H "Toast-Restaurant-External-ID: $RID" \
  -H 'Content-Type: application/json' \
  -d "{\"guid\":\"$GUID\",\"firstName\":\"Bench\",\"lastName\":\"Mark\",\"email\":\"bench@example.org\",\"phone\":\"+12065550100\"}" >/dev/null
URL="$BASE/crm/v1/customers/$GUID"
H1="Authorization: Bearer $TOKEN"
H2="Toast-Restaurant-External-ID: $RID"

best() { printf '%s\n' "$@" | sort -g | tail -n 1; }
wrk_rps() { wrk "$@" -H "$H1" -H "$H2" "$URL" | awk '/Requests\/sec/ {print $2}'; }
crm() { "$LUA" bench/crm_bench.lua "$@" | awk '{print $2}'; }

H3="Accept: application/json"
# This machine's speed drifts within a run, so raw libcurl and crm alternate in short rounds and
# the ratio is the median of each round's ratio (adjacent runs see the same machine).
ROUNDS=${BENCH_ROUNDS:-7}
ROUND_SECS=${BENCH_ROUND_SECONDS:-1.5}
echo "bench: sequential ($ROUNDS alternating rounds of ${ROUND_SECS}s)..." >&2
raws=() seqs=() pairs=()
for _ in $(seq "$ROUNDS"); do
  r=$(build/bench/raw_curl "$URL" "$ROUND_SECS" "$H1" "$H2" "$H3" | awk '{print $1}')
  q=$(crm seq "$ROUND_SECS" "$GUID")
  raws+=("$r"); seqs+=("$q"); pairs+=("$(awk -v a="$q" -v b="$r" 'BEGIN {printf "%.4f", a / b}')")
done
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
RAW=$(median "${raws[@]}"); SEQ=$(median "${seqs[@]}"); SEQ_RAW_MEDIAN=$(median "${pairs[@]}")
echo "bench: wrk..." >&2
WRK1=$(wrk_rps -t1 -c1 -d"${SECS}s")
WRK16=$(wrk_rps -t2 -c16 -d"${SECS}s")
echo "bench: batch, create..." >&2
BATCH=$(crm batch "$SECS" "$GUID")
CREATE=$(crm create "$SECS")
REQ=$(for _ in 1 2 3 4 5; do "$LUA" bench/crm_bench.lua require | awk '{print $2}'; done | sort -g | sed -n 3p)

export_row=""
if [ -z "${BENCH_NO_EXPORT:-}" ] && "$LUA" -e 'require "crm.tablecheck"' 2>/dev/null; then
  echo "bench: exports..." >&2
  run_export() {
    curl -sf -X POST "$BASE/__sim/config" -d "{\"tablecheck_synthetic_customers\": $1}" >/dev/null
    "$LUA" bench/crm_bench.lua export "$1"
  }
  E10K=$(run_export 10000)
  E1M=$(run_export 1000000)
  get() { echo "$1" | awk -v k="$2" '$1 == k {print $2}'; }
  RSS10K=$(get "$E10K" export_rss_kb); RSS1M=$(get "$E1M" export_rss_kb)
  export_row=$(cat <<ROWS
| TableCheck scroll export, 1M customers | $(get "$E1M" export_cps) customers/s, $(get "$E1M" export_mbps) MB/s of JSON |
| caller's share of 1M-export time (the most a next-page prefetch could hide) | $(get "$E1M" export_work_share) |
| peak RSS, 10k export | $RSS10K kB |
| peak RSS, 1M export | $RSS1M kB |
ROWS
)
  RSS_RATIO=$(awk -v a="$RSS1M" -v b="$RSS10K" 'BEGIN {printf "%.3f", a / b}')
fi

# Instructions per request on the client side: repeatable whatever the machine's speed does.
TC_ID=$(BENCH_BASE="$BASE" "$LUA" -e 'local crm = require "crm"
  local tc = assert(crm.tablecheck { base_url = os.getenv("BENCH_BASE") .. "/api/crm/v1",
    api_key = "sim-tablecheck-key" })
  print(assert(tc:create_customer { franchise_id = "5ed64e249551e80639a4d995", first_name = "Bench",
    last_name = "Mark", emails = { "bench@example.org" }, phones = { "+12065550100" } }).id)')
INSTR_SECTION=$(bash bench/instr.sh "$BASE" "$TOKEN" "$GUID" "$TC_ID")
# Inside nginx: crm, lua-resty-http and a bare cosocket, worker instructions per request.
NGINX_SECTION=$(bash bench/nginx.sh "$BASE" "$TOKEN" "$GUID")
CRM_I=$(echo "$INSTR_SECTION" | awk -F'|' '/crm Toast get_customer, Lua 5.4/ {gsub(/ /, "", $3); print $3}')
RAW_I=$(echo "$INSTR_SECTION" | awk -F'|' '/raw C libcurl, crm.s options/ {gsub(/ /, "", $3); print $3}')
INSTR_RATIO=$(awk -v a="$RAW_I" -v b="$CRM_I" 'BEGIN {printf "%.3f", a / b}')

# The export's client instructions per customer, at 10k and 100k customers (1M under callgrind
# takes too long; its RSS is measured above).
export_instr=""
if [ -z "${BENCH_NO_EXPORT:-}" ]; then
  echo "bench: export instructions (callgrind, 10k and 100k customers)..." >&2
  ex_instr() {
    curl -sf -X POST "$BASE/__sim/config" -d "{\"tablecheck_synthetic_customers\": $1}" >/dev/null
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$LUA" bench/crm_bench.lua export "$1" 2>&1 >/dev/null \
      | awk -v n="$1" '/Collected/ {printf "%d", $4 / n}'
  }
  EI10K=$(ex_instr 10000); EI100K=$(ex_instr 100000)
  export_instr="| TableCheck export, client instructions per customer (10k / 100k customers) | $EI10K / $EI100K |"
fi

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a / b}'; }
SEQ_RAW=$SEQ_RAW_MEDIAN; BATCH_SEQ=$(ratio "$BATCH" "$SEQ"); BATCH_WRK=$(ratio "$BATCH" "$WRK16")
mark() { awk -v v="$1" -v t="$2" -v d="$3" 'BEGIN {print (d == "min" ? (v >= t) : (v <= t)) ? "met" : "MISSED"}'; }

{
  echo "# crm bench results"
  echo
  echo "Date: $(date -u '+%Y-%m-%d %H:%M UTC'). Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')."
  echo "Runtime: $LUA. Against the simulator on loopback (GET /crm/v1/customers/{id}, ~200-byte JSON): sequential figures in $ROUNDS alternating rounds of ${ROUND_SECS}s, the others ${SECS}s each."
  echo
  echo "| measurement | figure |"
  echo "| --- | --- |"
  echo "| raw libcurl, one reused handle, same options as crm (C baseline, median) | $RAW req/s |"
  echo "| wrk -c1 (server's sequential ceiling) | $WRK1 req/s |"
  echo "| wrk -c16 (server's concurrent ceiling) | $WRK16 req/s |"
  echo "| crm sequential get_customer, body decoded (median) | $SEQ req/s |"
  echo "| crm batch(16) get_customer | $BATCH req/s |"
  echo "| crm Toast create_customer | $CREATE req/s |"
  [ -n "$export_row" ] && echo "$export_row"
  [ -n "$export_instr" ] && echo "$export_instr"
  echo "| require \"crm\" (median of 5) | $REQ ms |"
  echo
  echo "| ratio | value | target |"
  echo "| --- | --- | --- |"
  echo "| crm sequential / raw libcurl (median of $ROUNDS paired rounds: ${pairs[*]}) | $SEQ_RAW | >= 0.90: $(mark "$SEQ_RAW" 0.90 min) |"
  echo "| client instructions per request: raw libcurl $RAW_I, crm $CRM_I (callgrind) | raw / crm = $INSTR_RATIO | (the deterministic view: see below) |"
  echo "| crm batch(16) / crm sequential | $BATCH_SEQ | >= 3: $(mark "$BATCH_SEQ" 3 min) |"
  echo "| crm batch(16) / wrk -c16 | $BATCH_WRK | (how close to the server's ceiling) |"
  [ -n "$export_row" ] && echo "| 1M-export peak RSS / 10k-export peak RSS | $RSS_RATIO | <= 1.10: $(mark "$RSS_RATIO" 1.10 max) |"
  echo
  echo "Notes:"
  echo "- Wall-clock figures drift on this machine within a run (see the paired rounds above), so the"
  echo "  sequential ratio is the median of rounds that ran back to back; the instruction counts do not drift."
  echo "- Instruction counts (below) are the figures to compare; the group breakdown counts each"
  echo "  shared object's own instructions (cjson's table and string building runs in the Lua VM's"
  echo "  API, malloc in libc)."
  echo "- require \"crm\" time is mostly the dynamic loader: crm/core.so links libcurl, which pulls in"
  echo "  $(ldd "build/$LUA/crm/core.so" | wc -l) shared libraries."
  echo
  echo "$INSTR_SECTION"
  echo
  echo "$NGINX_SECTION"
} | tee bench/results.md
