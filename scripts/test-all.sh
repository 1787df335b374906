#!/usr/bin/env bash
# Runs scripts/test.sh once per Lua runtime and ends with one line summing busted's counts.
set -u
cd "$(dirname "$0")/.."
passed=0 failed=0 skipped=0 rc=0
for lua in "$@"; do
  log=$(mktemp)
  bash scripts/test.sh "$lua" 2>&1 | tee "$log"
  [ "${PIPESTATUS[0]}" = 0 ] || rc=1
  line=$(grep -E "^$lua: [0-9]+ passed, [0-9]+ failed" "$log" | tail -n 1)
  rm -f "$log"
  if [ -z "$line" ]; then failed=$((failed + 1)); rc=1; continue; fi
  # "LUA: N passed, N failed[, N skipped]": skipped may be missing on an early failure.
  p=$(echo "$line" | sed -nE 's/.*: ([0-9]+) passed.*/\1/p')
  f=$(echo "$line" | sed -nE 's/.* ([0-9]+) failed.*/\1/p')
  s=$(echo "$line" | sed -nE 's/.* ([0-9]+) skipped.*/\1/p')
  p=${p:-0}; f=${f:-1}; s=${s:-0}
  passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
done
echo "total: $passed passed, $failed failed, $skipped skipped"
exit $rc
