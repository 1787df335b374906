#!/usr/bin/env bash
# Builds the API reference (docs/api/index.html) from the doc comments in lua/ with LDoc
# (Debian's lua-ldoc), using config.ld at the repository root. LDoc exits 0 even when it warns
# (an unknown tag, a parameter name that does not match, an unresolved reference), so this
# script reads what it printed: any line other than LDoc's own progress lines is a warning, and
# the build fails. Usage: bash scripts/docs.sh   (make docs; CI runs it too)
set -u
cd "$(dirname "$0")/.."

LDOC=${LDOC:-ldoc}
if ! command -v "$LDOC" >/dev/null 2>&1; then
  echo "docs: $LDOC not found; install it with: apt-get install lua-ldoc" >&2
  exit 2
fi

# LDoc skips a listed file that has no doc comments without a word: every file config.ld lists
# must name its module, so a public module cannot drop out of the reference silently.
missing=0
for f in $(grep -o '"lua/[^"]*\.lua"' config.ld | tr -d '"'); do
  if [ ! -f "$f" ]; then
    echo "docs: config.ld lists $f, which does not exist" >&2
    missing=1
  elif ! grep -q -E '^-- @(module|classmod) ' "$f"; then
    echo "$f:1: no '-- @module' doc comment; LDoc would leave it out of the reference" >&2
    missing=1
  fi
done
[ "$missing" -eq 0 ] || exit 1

rm -rf docs/api
out=$("$LDOC" -c config.ld . 2>&1)
rc=$?
printf '%s\n' "$out"

# LDoc's progress lines; everything else it prints ("file:line: ...", "nofile error: ...",
# "format: ... not found", a Lua error) is a problem with the comments or the setup.
problems=$(printf '%s\n' "$out" | grep -v -E \
  -e '^reading configuration from ' \
  -e '^output written to ' \
  -e '^found master module' \
  -e '^\*\*\*closing section from master module\*\*\*$' \
  -e '^$' || true)

if [ "$rc" -ne 0 ]; then
  echo "docs: ldoc failed (exit $rc)" >&2
  exit 1
fi
if [ -n "$problems" ]; then
  n=$(printf '%s\n' "$problems" | wc -l)
  echo "docs: ldoc printed $n warning(s); fix the doc comments above" >&2
  exit 1
fi
if [ ! -s docs/api/index.html ]; then
  echo "docs: docs/api/index.html was not written" >&2
  exit 1
fi
echo "docs: docs/api/index.html (0 warnings)"
