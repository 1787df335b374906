#!/usr/bin/env bash
# make bench, inside nginx: worker instructions per request of one keep-alive GET of a Toast
# customer plus its decode, made by crm, by lua-resty-http + cjson and by a bare cosocket +
# cjson, in a handler nginx (master_process off, daemon off) under callgrind. Called by
# bench/run.sh with the simulator up; prints a markdown section on stdout.
#   bench/nginx.sh BASE TOKEN GUID
# Every figure is (instructions of a run of LONG requests) - (a run of SHORT), divided by
# LONG - SHORT, minus the same figure of a handler that sends nothing (/noop): nginx's own work
# on the incoming request cancels out. The crm runs keep LuaJIT's jit.v log; a trace abort in
# lua/crm/ during the long run counts as a miss.
set -eu
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BASE=$1 TOKEN=$2 GUID=$3
LONG=${BENCH_NGINX_LONG:-2000}
SHORT=${BENCH_NGINX_SHORT:-200}
SIM_PORT=${BASE##*:}
PORT=${BENCH_NGINX_PORT:-$((SIM_PORT + 40))}
RESTY=${BENCH_RESTY:-$ROOT/../shared/baselines/lua-resty-http}
OUT=build/bench/nginx
NGINX=${NGINX:-/usr/sbin/nginx}

curl -s -o /dev/null --max-time 5 "$BASE/" || { echo "bench/nginx.sh: nothing answers at $BASE" >&2; exit 1; }
[ -r "$RESTY/lib/resty/http.lua" ] || { echo "bench/nginx.sh: no lua-resty-http at $RESTY" >&2; exit 1; }
RESTY=$(cd "$RESTY" && pwd)
mkdir -p "$OUT"

# run HANDLER N [paused]: starts the handler nginx under callgrind, makes N requests on one
# keep-alive connection, stops it; prints the instructions of the whole process. With "paused":
# the control run, without callgrind, whose handler stops the collector after the warm-up
# (BENCH_GC_PAUSE, see bench/nginx/handlers.lua); it prints nothing, only its jit.log counts.
run() {
  local h=$1 n=$2 dir="$ROOT/$OUT/$1-$2${3:+-$3}" pid ok i
  local -a wrap=(valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.out" --log-file="$dir/valgrind.log")
  [ -n "${3:-}" ] && wrap=(env BENCH_GC_PAUSE=1)
  rm -rf "$dir"; mkdir -p "$dir/tmp"
  sed -e "s|@DIR@|$dir|g" -e "s|@PORT@|$PORT|g" -e "s|@ROOT@|$ROOT|g" -e "s|@RESTY@|$RESTY|g" \
    bench/nginx/nginx.conf.in > "$dir/nginx.conf"
  BENCH_BASE=$BASE BENCH_TOKEN=$TOKEN BENCH_GUID=$GUID BENCH_JIT_LOG="$dir/jit.log" BENCH_WARMUP=$SHORT \
    "${wrap[@]}" "$NGINX" -p "$dir" -c "$dir/nginx.conf" >/dev/null 2>&1 &
  pid=$!
  for i in $(seq 300); do
    curl -sf -o /dev/null "http://127.0.0.1:$PORT/noop" && break
    kill -0 "$pid" 2>/dev/null || { cat "$dir/error.log" >&2; exit 1; }
    sleep 0.1
  done
  ok=$(curl -s -o /dev/null -w '%{http_code}\n' "http://127.0.0.1:$PORT/$h?i=[1-$n]" | grep -c '^200$' || true)
  kill -QUIT "$pid"
  wait "$pid" || true
  if [ "$ok" != "$n" ]; then
    echo "bench/nginx.sh: $h answered $ok of $n requests with 200; $dir/error.log:" >&2
    tail -n 5 "$dir/error.log" >&2
    exit 1
  fi
  [ -n "${3:-}" ] || awk '/Collected/ {print $4}' "$dir/valgrind.log"
}
per() {
  local a b
  a=$(run "$1" "$LONG"); b=$(run "$1" "$SHORT")
  echo $(( (a - b) / (LONG - SHORT) ))
}
# Exclusive instructions of a callgrind.out file in one object: LuaJIT (libluajit: interpreter,
# GC, runtime) or "???" (no object: compiled traces, JIT machine code).
in_object() {
  awk -v want="$2" '
    /^c?ob=\(/ { s = $0; sub(/^c?ob=/, "", s); id = s; sub(/ .*/, "", id); nm = s
                 sub(/^\([0-9]+\) ?/, "", nm); if (nm != "") name[id] = nm
                 if ($0 ~ /^ob=/) cur = id; next }
    /^calls=/ { skip = 1; next }
    /^[0-9+*-]/ { if (skip) { skip = 0; next } split($0, f, " "); cost[cur] += f[2] }
    END { for (k in cost) if (index(name[k], want)) t += cost[k]; printf "%d\n", t }' "$1"
}
# crm's long run beyond its short run, per request, in OBJECT
where() {
  local a b
  a=$(in_object "$OUT/crm-$LONG/callgrind.out" "$1"); b=$(in_object "$OUT/crm-$SHORT/callgrind.out" "$1")
  echo $(( (a - b) / (LONG - SHORT) ))
}

echo "bench: inside nginx (callgrind, $SHORT and $LONG requests a run)..." >&2
NOOP=$(per noop)
CRM=$(( $(per crm) - NOOP ))
RESTY_I=$(( $(per resty) - NOOP ))
BARE=$(( $(per bare) - NOOP ))
INTERP=$(where libluajit); JITTED=$(where "???")
# Trace aborts ("[TRACE --- ...]" in the jit.v log) that start or end in a file of lua/crm/, in
# the long run after its first SHORT requests (the warm-up: the log marks its end), and in all.
crm_aborts() { grep -F -- '[TRACE ---' | grep -c '/lua/crm/' || true; }
ABORTS=$(sed -n '/^\[warm-up over/,$p' "$OUT/crm-$LONG/jit.log" | crm_aborts)
ABORTS_ALL=$(crm_aborts < "$OUT/crm-$LONG/jit.log")
# Of those, the ones of the kind a finalizer makes: LuaJIT aborts a trace it is recording when
# the collector calls a __gc (lj_gc: gc_call_finalizer); every request leaves one cosocket
# object with a __gc (lua-nginx-module's), crm's or not.
ABORTS_GC=$(sed -n '/^\[warm-up over/,$p' "$OUT/crm-$LONG/jit.log" | grep -F -- '[TRACE ---' | grep '/lua/crm/' \
  | grep -c 'error thrown or hook called during recording' || true)
# The control run: the same handler and length, no callgrind, the collector stopped after the
# warm-up: no finalizer runs, so every abort left in lua/crm/ is one of crm's own code.
run crm "$LONG" paused
ABORTS_PAUSED=$(sed -n '/^\[warm-up over/,$p' "$OUT/crm-$LONG-paused/jit.log" | crm_aborts)
R_RESTY=$(awk -v a="$CRM" -v b="$RESTY_I" 'BEGIN {printf "%.3f", a / b}')
R_BARE=$(awk -v a="$CRM" -v b="$BARE" 'BEGIN {printf "%.3f", a / b}')
mark() { awk -v v="$1" -v t="$2" 'BEGIN {print (v <= t) ? "met" : "MISSED"}'; }
{
  echo "## Inside nginx: worker instructions per request (callgrind, this run)"
  echo
  echo "One keep-alive GET of the Toast customer from the simulator plus the decode, in a handler nginx"
  echo "(lua-nginx-module, LuaJIT, master_process off) under callgrind: ($LONG-request run − $SHORT-request run)"
  echo "/ $((LONG - SHORT)), minus a handler that sends nothing ($NOOP). Logs: $OUT/ (bench/nginx.sh)."
  echo
  echo "| handler | instructions/request |"
  echo "| --- | --- |"
  echo "| bare ngx.socket.tcp + cjson.decode | $BARE |"
  echo "| lua-resty-http 0.17 request_uri + cjson.decode | $RESTY_I |"
  echo "| crm Toast get_customer (ngx transport) | $CRM |"
  echo "| of crm's (nginx's share included): in libluajit (interpreter, GC, runtime) / in compiled traces | $INTERP / $JITTED |"
  echo
  echo "| floor (issue 18) | value | target |"
  echo "| --- | --- | --- |"
  echo "| crm / lua-resty-http + cjson | $R_RESTY | <= 1.0: $(mark "$R_RESTY" 1.0) |"
  echo "| crm / bare cosocket + cjson | $R_BARE | goal <= 1.5: $(mark "$R_BARE" 1.5) |"
  echo "| trace aborts in lua/crm/ after the first $SHORT of $LONG requests ($OUT/crm-$LONG/jit.log; in all: $ABORTS_ALL; of the kind a finalizer makes, 'error thrown or hook called during recording': $ABORTS_GC) | $ABORTS | 0: $(mark "$ABORTS" 0) |"
  echo "| the same, control run with the collector stopped after the warm-up ($OUT/crm-$LONG-paused/jit.log): crm's own aborts | $ABORTS_PAUSED | 0: $(mark "$ABORTS_PAUSED" 0) |"
}
