#!/usr/bin/env bash
# Starts the simulator, runs every demo example against it, and stops it again.
set -u
LUA=${1:-lua5.4}
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PORT=${CRM_SIM_PORT:-18080}
export CRM_SIM_PORT=$PORT
export LUA_PATH="$ROOT/lua/?.lua;$ROOT/lua/?/init.lua;;"
export LUA_CPATH="$ROOT/build/$LUA/?.so;;"
bash scripts/sim.sh start "$PORT" || exit 1
trap 'bash scripts/sim.sh stop "$PORT" >/dev/null 2>&1' EXIT
BASE="http://127.0.0.1:$PORT"
KEY="Authorization: sim-tablecheck-key"
rc=0

echo "== examples/toast_demo.lua"
"$LUA" examples/toast_demo.lua || rc=1

# The simulator starts empty: give the TableCheck examples 450 customers (three scroll pages)
# and two pairs of duplicates to find.
curl -sf -X POST "$BASE/__sim/tablecheck/seed" -d '{"customers": 450, "prefix": "Demo"}' >/dev/null || rc=1
for who in "Ann Lee +81311112222 ann@example.org" "Anne Lee +81311112222 anne.lee@example.org" \
           "Bob Ito +81399990000 bob@example.org" "Robert Ito +81388887777 BOB@example.org"; do
  set -- $who
  curl -sf -X POST "$BASE/api/crm/v1/customers" -H "$KEY" -H 'Content-Type: application/json' \
    -d "{\"franchise_id\":\"5ed64e249551e80639a4d995\",\"first_name\":\"$1\",\"last_name\":\"$2\",\"phones\":[\"$3\"],\"emails\":[\"$4\"]}" \
    >/dev/null || rc=1
done

out=$(mktemp)
echo "== examples/tablecheck_export.lua $out"
"$LUA" examples/tablecheck_export.lua "$out" || rc=1
echo "first line: $(head -c 160 "$out")..."
rm -f "$out"

echo "== examples/tablecheck_dedupe.lua"
"$LUA" examples/tablecheck_dedupe.lua || rc=1

for ex in examples/toast_guest_history.lua; do
  [ -f "$ex" ] || continue
  echo "== $ex"
  "$LUA" "$ex" || rc=1
done

# The command line (bin/crm) against the same simulator: JSON Lines on stdout, the rest on stderr.
crm() { echo "\$ crm $*" >&2; "$LUA" bin/crm "$@"; }
echo "== bin/crm"
curl -sf -X POST "$BASE/__sim/tablecheck/seed" -d '{"customers": 50, "prefix": "Cli"}' >/dev/null || rc=1
for who in "Cy Ono +81322223333 cy@example.org" "Cyrus Ono +81322223333 cyrus@example.org"; do
  set -- $who
  crm --sim tablecheck customers create --data "{\"franchise_id\":\"5ed64e249551e80639a4d995\",\"first_name\":\"$1\",\"last_name\":\"$2\",\"phones\":[\"$3\"],\"emails\":[\"$4\"]}" \
    | cut -c1-100 || rc=1
done
n=$(crm --sim tablecheck customers export | wc -l) || rc=1
echo "exported $n customers (one JSON line each)"
groups=$(mktemp)
crm --sim tablecheck duplicates --by phone >"$groups" || rc=1
echo "$(wc -l <"$groups") group(s) sharing a phone"
pair=$("$LUA" -e 'local crm = require "crm"
  local g = crm.json.decode(io.read("l") or "null")
  if g then print(g.primary .. " " .. table.concat(g.secondaries, " ")) end' <"$groups")
rm -f "$groups"
if [ -n "$pair" ]; then
  # shellcheck disable=SC2086
  crm --sim --dry-run tablecheck merge $pair | cut -c1-160 || rc=1
  # shellcheck disable=SC2086
  crm --sim tablecheck merge $pair --wait 30 | cut -c1-120 || rc=1
else
  echo "no duplicates found" >&2
  rc=1
fi
guests=$(mktemp --suffix=.csv)
printf 'firstName,lastName,email,phone\nAnn,Lee,ann.cli@example.org,\nBo,Ito,,+1 206 555 0177\n' >"$guests"
crm --sim toast customers find-or-create --input "$guests" | cut -c1-100 || rc=1
crm --sim toast customers find-or-create --input "$guests" | cut -c1-100 || rc=1
rm -f "$guests"
crm --sim toast customers get 00000000-0000-4000-8000-000000000000
echo "exit code $? (4: http)"
exit $rc
