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
  read -r p f s <<<"$(echo "$line" | sed -E 's/^[^:]+: ([0-9]+) passed, ([0-9]+) failed, ([0-9]+) skipped.*/\1 \2 \3/')"
  passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
done
echo "total: $passed passed, $failed failed, $skipped skipped"
exit $rc
