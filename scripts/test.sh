#!/usr/bin/env bash
# Runs the busted suite under one Lua against the simulator; the simulator is stopped even when
# the specs fail. The last line is "LUA: N passed, N failed, N skipped" from busted's own counts.
set -u
LUA=${1:-lua5.4}
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PORT=${CRM_SIM_PORT:-18080}
export CRM_SIM_PORT=$PORT
export LUA_PATH="$ROOT/lua/?.lua;$ROOT/lua/?/init.lua;$ROOT/spec/?.lua;;"
# make check points these at a sanitizer build, a preload, or a valgrind wrapper.
export LUA_CPATH="$ROOT/${CRM_CPATH_DIR:-build/$LUA}/?.so;;"

bash scripts/sim.sh start "$PORT" || { echo "$LUA: 0 passed, 1 failed, 0 skipped"; exit 1; }
trap 'bash scripts/sim.sh stop "$PORT" >/dev/null 2>&1' EXIT

log=$(mktemp)
# shellcheck disable=SC2086
LD_PRELOAD="${CRM_PRELOAD:-}" ${CRM_WRAP:-} "$LUA" /usr/bin/busted --output=plainTerminal ${BUSTED_ARGS:-} spec 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}

# busted's summary: "N successes / N failures / N errors / N pending : T seconds"
summary=$(grep -E '^[0-9]+ successes? / [0-9]+ failures? / [0-9]+ errors? / [0-9]+ pending' "$log" | tail -n 1)
rm -f "$log"
if [ -z "$summary" ]; then
  echo "$LUA: 0 passed, 1 failed, 0 skipped"
  exit 1
fi
read -r ok _ _ fail _ _ errs _ _ pend _ <<<"$summary"
echo "$LUA: $ok passed, $((fail + errs)) failed, $pend skipped"
[ "$rc" = 0 ] && [ "$((fail + errs))" = 0 ]
