#!/usr/bin/env bash
# make bench, the deterministic part: client instructions per request under callgrind, crm and
# baselines that do the same HTTP work, all in this run. Called by bench/run.sh with the
# simulator up; prints a markdown section on stdout.
#   bench/instr.sh BASE TOKEN GUID TC_ID
# Every figure is (instructions of a run of N) - (instructions of a run of 1), divided by N - 1:
# process start, module loading and the first connection cancel out.
set -eu
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BASE=$1 TOKEN=$2 GUID=$3 TC_ID=$4
N=${BENCH_INSTR_N:-1000}
RID="6f1d2d0e-8f65-4d7b-9b59-0f1f0c8e0a11"
H1="Authorization: Bearer $TOKEN"
H2="Toast-Restaurant-External-ID: $RID"
H3="Accept: application/json"
TURL="$BASE/crm/v1/customers/$GUID"
CURL_TC="$BASE/api/crm/v1/customers/$TC_ID"
HT1="Authorization: sim-tablecheck-key"

instr() { valgrind --tool=callgrind --callgrind-out-file=/dev/null "$@" 2>&1 >/dev/null | awk '/Collected/ {print $4}'; }
# per NAME CMD... (the command's count argument is the literal word COUNT)
per() {
  local a b
  a=$(instr "${@//COUNT/$N}")
  b=$(instr "${@//COUNT/1}")
  echo $(( (a - b) / (N - 1) ))
}
# crm_per LUA ARGS...: per() of bench/crm_bench.lua ARGS under that runtime and its build
crm_per() {
  local lua=$1; shift
  ( export LUA_PATH="$ROOT/lua/?.lua;$ROOT/lua/?/init.lua;;" LUA_CPATH="$ROOT/build/$lua/?.so;;"
    per "$lua" bench/crm_bench.lua "$@" )
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a / b}'; }
mark() { awk -v v="$1" -v t="$2" 'BEGIN {print (v <= t) ? "met" : "MISSED"}'; }

mkdir -p build/bench
cc -O2 -std=c11 -Wall -Wextra -Werror -o build/bench/raw_curl bench/raw_curl.c -lcurl
cc -O2 -std=c11 -Wall -Wextra -Werror -o build/bench/raw_multi bench/raw_multi.c -lcurl
curl -sf "$TURL" -H "$H1" -H "$H2" -H "$H3" > build/bench/toast_customer.json
curl -sf "$CURL_TC" -H "$HT1" -H "$H3" > build/bench/tc_customer.json
# Search pages of 1, 10 and 50 customers: 50 customers named Pagebench, the pages fetched once
# for the decode floor. The body and query string are the ones crm sends.
# They live in a restaurant of their own: the simulator's search reads every customer of the
# restaurant, and the other measurements create thousands.
SEARCH_RID="0c7d5e2a-8b1f-4e6a-9d3c-5f2b7a9e1d40"
HS="Toast-Restaurant-External-ID: $SEARCH_RID"
SEARCH_BODY='{"query":{"lastName":"Pagebench"}}'
SEARCH_URL="$BASE/crm/v1/customers/search"
HC="Content-Type: application/json"
if [ "$(curl -sf -X POST "$SEARCH_URL?pageSize=50" -H "$H1" -H "$HS" -H "$H3" -H "$HC" -d "$SEARCH_BODY" | grep -o '"guid"' | wc -l)" -lt 50 ]; then
  for i in $(seq 50); do
    curl -sf -X POST "$BASE/crm/v1/customers" -H "$H1" -H "$HS" -H "$HC" \
      -d "{\"guid\":\"$(cat /proc/sys/kernel/random/uuid)\",\"firstName\":\"P$i\",\"lastName\":\"Pagebench\",\"email\":\"page$i@example.org\"}" >/dev/null
  done
fi
for ps in 1 10 50; do
  curl -sf -X POST "$SEARCH_URL?pageSize=$ps" -H "$H1" -H "$HS" -H "$H3" -H "$HC" -d "$SEARCH_BODY" > "build/bench/search_$ps.json"
done

echo "bench: callgrind, $N requests a run..." >&2
RAW=$(per build/bench/raw_curl "$TURL" -COUNT "$H1" "$H2" "$H3")
RAW_TC=$(per build/bench/raw_curl "$CURL_TC" -COUNT "$HT1" "$H3")
MULTI=$(per build/bench/raw_multi "$TURL" COUNT 16 "$H1" "$H2" "$H3")
DEC54=$(crm_per lua5.4 decode COUNT build/bench/toast_customer.json)
DECJIT=$(crm_per luajit decode COUNT build/bench/toast_customer.json)
DEC54_TC=$(crm_per lua5.4 decode COUNT build/bench/tc_customer.json)
CRM54=$(crm_per lua5.4 count COUNT "$GUID")
CRMJIT=$(crm_per luajit count COUNT "$GUID")
KEEP54=$(crm_per lua5.4 countkeep COUNT "$GUID")
KEEPJIT=$(crm_per luajit countkeep COUNT "$GUID")
CO54=$(crm_per lua5.4 coswitch COUNT)
COJIT=$(crm_per luajit coswitch COUNT)
BATCH54=$(crm_per lua5.4 batchcount COUNT "$GUID")
BATCHJIT=$(crm_per luajit batchcount COUNT "$GUID")
TC54=$(crm_per lua5.4 tccount COUNT "$TC_ID")
TCJIT=$(crm_per luajit tccount COUNT "$TC_ID")
DECJIT_TC=$(crm_per luajit decode COUNT build/bench/tc_customer.json)
TCBATCH54=$(crm_per lua5.4 tcbatchcount COUNT "$TC_ID")
TCBATCHJIT=$(crm_per luajit tcbatchcount COUNT "$TC_ID")
# crm's own Lua per call: the exchange replaced by a stand-in that answers at once.
LUAONLY54=$(crm_per lua5.4 luaonly COUNT toast)
LUAONLYJIT=$(crm_per luajit luaonly COUNT toast)
LUAONLY54_TC=$(crm_per lua5.4 luaonly COUNT tc)
LUAONLYJIT_TC=$(crm_per luajit luaonly COUNT tc)
declare -A RAW_S DEC_S DECJIT_S S54 SJIT
for ps in 1 10 50; do
  RAW_S[$ps]=$(RAW_CURL_BODY="$SEARCH_BODY" per build/bench/raw_curl "$SEARCH_URL?pageSize=$ps" -COUNT "$H1" "$HS" "$H3" "$HC" "Expect:")
  DEC_S[$ps]=$(crm_per lua5.4 decode COUNT "build/bench/search_$ps.json")
  DECJIT_S[$ps]=$(crm_per luajit decode COUNT "build/bench/search_$ps.json")
  S54[$ps]=$(crm_per lua5.4 searchcount COUNT "$ps" "$SEARCH_RID")
  SJIT[$ps]=$(crm_per luajit searchcount COUNT "$ps" "$SEARCH_RID")
done
LUACURL_JIT="" LUACURL_51=""
if luajit -e 'require "curl"' 2>/dev/null; then
  LUACURL_JIT=$(per luajit bench/lua_curl.lua "$TURL" COUNT "$H1" "$H2" "$H3")
fi
if command -v lua5.1 >/dev/null && lua5.1 -e 'require "curl"; require "cjson"' 2>/dev/null; then
  LUACURL_51=$(per lua5.1 bench/lua_curl.lua "$TURL" COUNT "$H1" "$H2" "$H3")
fi
# req LUA CODE: instructions of `LUA -e CODE` beyond `LUA -e ''`
req() {
  local a b
  a=$( export LUA_PATH="$ROOT/lua/?.lua;$ROOT/lua/?/init.lua;;" LUA_CPATH="$ROOT/build/$1/?.so;;"
       instr "$1" -e "$2" )
  b=$(instr "$1" -e '')
  echo $(( a - b ))
}
REQ54=$(req lua5.4 'require "crm"')
REQJIT=$(req luajit 'require "crm"')
REQCURL_JIT="" REQCURL_51=""
luajit -e 'require "curl"' 2>/dev/null && REQCURL_JIT=$(req luajit 'require "curl"')
command -v lua5.1 >/dev/null && lua5.1 -e 'require "curl"' 2>/dev/null && REQCURL_51=$(req lua5.1 'require "curl"')

# Breakdown of crm's get_customer under Lua 5.4 by where the instructions run (exclusive cost
# per shared object, N-run minus 1-run).
by_object() {
  local out=$1; shift
  valgrind --tool=callgrind --callgrind-out-file="$out" "$@" >/dev/null 2>&1
  callgrind_annotate --inclusive=no --threshold=100 "$out" 2>/dev/null \
    | awk '/\[/ {gsub(",", "", $1); o = $NF; gsub(/[\[\]]/, "", o); s[o] += $1} END {for (k in s) print k, s[k]}'
}
group() {
  case "$1" in
    *libcurl*) echo libcurl ;; *cjson*) echo cjson ;; */crm/core.so) echo "crm C" ;;
    */lua5.4|*liblua5.4*) echo "Lua VM" ;; *libc.so*|*ld-linux*) echo "libc (malloc, memcpy, loader)" ;;
    *) echo "other (TLS, zlib, ...)" ;;
  esac
}
export LUA_PATH="$ROOT/lua/?.lua;$ROOT/lua/?/init.lua;;" LUA_CPATH="$ROOT/build/lua5.4/?.so;;"
by_object build/bench/cg.n lua5.4 bench/crm_bench.lua count "$N" "$GUID" > build/bench/objects.n
by_object build/bench/cg.1 lua5.4 bench/crm_bench.lua count 1 "$GUID" > build/bench/objects.1
BREAKDOWN=$(awk 'NR == FNR {one[$1] = $2; next} {print $1, ($2 - one[$1])}' build/bench/objects.1 build/bench/objects.n \
  | while read -r obj v; do echo "$(group "$obj")|$v"; done \
  | awk -F'|' -v n="$N" '{s[$1] += $2} END {for (k in s) printf "| %s | %d |\n", k, s[k] / (n - 1)}' | sort)
rm -f build/bench/cg.n build/bench/cg.1

SAME54=$((RAW + DEC54))
SAME_TC=$((RAW_TC + DEC54_TC))
SAME_TCJIT=$((RAW_TC + DECJIT_TC))
{
  echo "## Client instructions per request (callgrind, $N requests a run, this run)"
  echo
  echo "| client | instructions/request |"
  echo "| --- | --- |"
  echo "| raw C libcurl, crm's options and its three headers (bench/raw_curl.c) | $RAW |"
  echo "| raw C libcurl multi at concurrency 16 (bench/raw_multi.c) | $MULTI |"
  echo "| cjson decode of the Toast customer, Lua 5.4 / LuaJIT | $DEC54 / $DECJIT |"
  [ -n "$LUACURL_51$LUACURL_JIT" ] && echo "| Debian lua-curl + cjson decode, the same three headers, Lua 5.1 / LuaJIT | ${LUACURL_51:-n/a} / ${LUACURL_JIT:-n/a} |"
  echo "| crm Toast get_customer, Lua 5.4 | $CRM54 |"
  echo "| crm Toast get_customer, LuaJIT | $CRMJIT |"
  echo "| crm client:batch(16) get_customer, Lua 5.4 / LuaJIT | $BATCH54 / $BATCHJIT |"
  echo "| raw C libcurl, TableCheck GET /customers/{id} + cjson decode (Lua 5.4) | $RAW_TC + $DEC54_TC = $SAME_TC |"
  echo "| crm TableCheck get_customer (customers_show), Lua 5.4 / LuaJIT | $TC54 / $TCJIT |"
  echo "| cjson decode of the TableCheck customer, LuaJIT | $DECJIT_TC |"
  echo "| crm TableCheck client:batch(16) get_customer, Lua 5.4 / LuaJIT | $TCBATCH54 / $TCBATCHJIT |"
  echo "| crm's own Lua per get_customer (exchange answered at once by a stand-in), Toast 5.4 / LuaJIT | $LUAONLY54 / $LUAONLYJIT |"
  echo "| the same, TableCheck 5.4 / LuaJIT | $LUAONLY54_TC / $LUAONLYJIT_TC |"
  for ps in 1 10 50; do
    echo "| Toast search page of $ps: raw libcurl POST + cjson 5.4 / LuaJIT; crm 5.4 / LuaJIT | ${RAW_S[$ps]} + ${DEC_S[$ps]} / ${RAW_S[$ps]} + ${DECJIT_S[$ps]}; ${S54[$ps]} / ${SJIT[$ps]} |"
  done
  echo "| require \"crm\", Lua 5.4 / LuaJIT (instructions) | $REQ54 / $REQJIT |"
  [ -n "$REQCURL_51$REQCURL_JIT" ] && echo "| require \"curl\" (lua-curl), Lua 5.1 / LuaJIT | ${REQCURL_51:-n/a} / ${REQCURL_JIT:-n/a} |"
  echo
  echo "| floor (issue 18) | value | target |"
  echo "| --- | --- | --- |"
  R=$(ratio "$CRM54" "$SAME54")
  echo "| Toast get_customer, Lua 5.4 / (raw libcurl + cjson $SAME54) | $R | <= 1.05: $(mark "$R" 1.05); goal <= 1.0: $(mark "$R" 1.0) |"
  if [ -n "$LUACURL_JIT" ]; then
    R=$(ratio "$CRMJIT" "$LUACURL_JIT")
    echo "| Toast get_customer, LuaJIT / lua-curl + cjson, LuaJIT | $R | <= 1.0: $(mark "$R" 1.0) |"
  fi
  R=$(ratio "$TC54" "$SAME_TC"); RJ=$(ratio "$TCJIT" "$SAME_TCJIT")
  echo "| TableCheck get_customer (1,347 bytes) / (raw libcurl + cjson), Lua 5.4 / LuaJIT | $R / $RJ | <= 1.05: $(mark "$R" 1.05) / $(mark "$RJ" 1.05); goal <= 1.0 |"
  for ps in 1 10 50; do
    R=$(ratio "${S54[$ps]}" "$((RAW_S[$ps] + DEC_S[$ps]))"); RJ=$(ratio "${SJIT[$ps]}" "$((RAW_S[$ps] + DECJIT_S[$ps]))")
    if [ "$ps" = 50 ]; then T="<= 1.05: $(mark "$R" 1.05) / $(mark "$RJ" 1.05)"; else T="(measured)"; fi
    echo "| Toast search page of $ps / (raw libcurl + cjson), Lua 5.4 / LuaJIT | $R / $RJ | $T |"
  done
  RB=$(ratio "$BATCH54" "$CRM54"); RBJ=$(ratio "$BATCHJIT" "$CRMJIT")
  echo "| Toast batch(16) / sequential, per request, Lua 5.4 / LuaJIT | $RB / $RBJ | <= 1.05: $(mark "$RB" 1.05) / $(mark "$RBJ" 1.05) |"
  RB=$(ratio "$BATCH54" "$KEEP54"); RBJ=$(ratio "$BATCHJIT" "$KEEPJIT")
  echo "| Toast batch(16) / sequential keeping every result as a batch does ($KEEP54 / $KEEPJIT), Lua 5.4 / LuaJIT | $RB / $RBJ | (measured) |"
  echo "| of a batch's cost beyond sequential, the parts any coroutine batch over a curl multi pays, Lua 5.4 / LuaJIT: keeping the results $((KEEP54 - CRM54)) / $((KEEPJIT - CRMJIT)); a coroutine round trip $CO54 / $COJIT; libcurl's multi beside its easy interface $((MULTI - RAW)) | $((KEEP54 - CRM54 + CO54 + MULTI - RAW)) / $((KEEPJIT - CRMJIT + COJIT + MULTI - RAW)) | the 5% allowance: $((CRM54 / 20)) / $((CRMJIT / 20)) |"
  RB=$(ratio "$TCBATCH54" "$TC54"); RBJ=$(ratio "$TCBATCHJIT" "$TCJIT")
  echo "| TableCheck batch(16) / sequential, per request, Lua 5.4 / LuaJIT | $RB / $RBJ | <= 1.05: $(mark "$RB" 1.05) / $(mark "$RBJ" 1.05) |"
  echo "| require \"crm\", Lua 5.4 | $REQ54 | <= 22000000: $(mark "$REQ54" 22000000) |"
  echo
  echo "Where crm's get_customer spends its instructions (Lua 5.4, per request):"
  echo
  echo "| group | instructions/request |"
  echo "| --- | --- |"
  echo "$BREAKDOWN"
}

# ---- decoders alone, per body (issue 18): cjson.decode against crm's core.decode (src/jdec.c),
# the same text N times in one process (bench/decode.lua), both runtimes. ----
dec_per() { # LUA WHICH FILE
  ( export LUA_PATH="$ROOT/lua/?.lua;$ROOT/lua/?/init.lua;;" LUA_CPATH="$ROOT/build/$1/?.so;;"
    per "$1" bench/decode.lua "$2" COUNT "$3" )
}
{
  echo
  echo "### Decoders alone, per body (callgrind instructions per decode)"
  echo
  echo "| body | runtime | cjson.decode | crm core.decode | crm / cjson | floor <= 0.90 (goal <= 0.80) |"
  echo "| --- | --- | --- | --- | --- | --- |"
  for body in "TableCheck customer ($(wc -c < build/bench/tc_customer.json) bytes)|build/bench/tc_customer.json" \
              "Toast customer ($(wc -c < build/bench/toast_customer.json) bytes)|build/bench/toast_customer.json"; do
    name=${body%%|*} file=${body#*|}
    for lua in lua5.4 luajit; do
      c=$(dec_per "$lua" cjson "$file"); m=$(dec_per "$lua" crm "$file"); r=$(ratio "$m" "$c")
      verdict="$(mark "$r" 0.90); goal: $(mark "$r" 0.80)"
      case "$name" in Toast*) verdict="($verdict)" ;; esac
      echo "| $name | $lua | $c | $m | $r | $verdict |"
    done
  done
  echo
  echo "(The floor is set on the TableCheck customer; the Toast row is shown for the per-call cost.)"
}
