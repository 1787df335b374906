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
rc=0
for ex in examples/toast_demo.lua examples/tablecheck_export.lua examples/tablecheck_dedupe.lua; do
  [ -f "$ex" ] || continue
  echo "== $ex"
  "$LUA" "$ex" || rc=1
done
exit $rc
