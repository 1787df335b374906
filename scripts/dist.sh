#!/usr/bin/env bash
# Version checks and the source rock.
#
#   scripts/dist.sh check         the version agrees everywhere it is written down
#   scripts/dist.sh pack [DIR]    DIR/crm-<version>-1.src.rock (DIR defaults to build/dist)
#
# lua/crm/version.lua is the one source. A .src.rock is a zip holding the rockspec and the source
# archive its source.url names (crm-<version>.tar.gz, files under crm-<version>/). `luarocks pack`
# would download source.url, and crm has no published archive yet, so the archive is made here
# from the checkout: every file git knows (tracked, and new files not ignored), as they are on
# disk now. `luarocks build --deps-mode=none DIR/crm-<version>-1.src.rock` installs it offline.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "dist: $*" >&2; exit 1; }

version=$(sed -n 's/^return "\([0-9][0-9]*\.[0-9][0-9]*\.[0-9][0-9]*\)"$/\1/p' lua/crm/version.lua)
[ -n "$version" ] || die 'lua/crm/version.lua must hold a line `return "MAJOR.MINOR.PATCH"`'
rockspec=rockspec/crm-$version-1.rockspec

# The value of a top-level `key = "value"` line of a rockspec.
field() { sed -n "s/^$2 *= *\"\([^\"]*\)\".*/\1/p" "$1" | head -n 1; }

check() {
  local bad=0 f
  [ -f "$rockspec" ] || die "$rockspec is missing: lua/crm/version.lua says $version"
  [ "$(field "$rockspec" version)" = "$version-1" ] ||
    { echo "dist: $rockspec: version is not \"$version-1\"" >&2; bad=1; }
  [ "$(field "$rockspec" package)" = crm ] || { echo "dist: $rockspec: package is not crm" >&2; bad=1; }
  grep -q "url = \"crm-$version.tar.gz\"" "$rockspec" ||
    { echo "dist: $rockspec: source.url is not crm-$version.tar.gz" >&2; bad=1; }
  grep -q "dir = \"crm-$version\"" "$rockspec" ||
    { echo "dist: $rockspec: source.dir is not crm-$version" >&2; bad=1; }
  for f in rockspec/*.rockspec; do
    case "$f" in "$rockspec" | rockspec/crm-scm-1.rockspec) continue ;; esac
    echo "dist: $f: only $rockspec and rockspec/crm-scm-1.rockspec belong here" >&2
    bad=1
  done
  # The version is written once: no literal CRM_VERSION in the C, no literal in platform.lua.
  if grep -nE '^[[:space:]]*#[[:space:]]*define[[:space:]]+CRM_VERSION' src/core.c >&2; then
    echo "dist: src/core.c defines CRM_VERSION: it comes from lua/crm/version.lua" >&2
    bad=1
  fi
  grep -q '^M.VERSION = require "crm.version"' lua/crm/platform.lua ||
    { echo "dist: lua/crm/platform.lua must take its VERSION from crm.version" >&2; bad=1; }
  [ "$bad" = 0 ] || exit 1
  echo "dist: version $version ($rockspec, lua/crm/version.lua, CRM_VERSION from the Makefile)"
}

pack() {
  local out=${1:-build/dist} stage files mtime name=crm-$version
  command -v git >/dev/null || die "git is needed (the archive holds the files git knows)"
  command -v zip >/dev/null || die "zip is needed (apt-get install zip)"
  git rev-parse --is-inside-work-tree >/dev/null 2>&1 || die "not a git checkout"
  check
  mkdir -p "$out"
  out=$(cd "$out" && pwd)
  stage=$(mktemp -d)
  trap 'rm -rf "$stage"' RETURN
  files=$stage/files
  # Tracked and new (not ignored) files that exist on disk; a tracked file deleted in the work
  # tree is left out, as git archive of the next commit would.
  git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do [ -f "$f" ] && printf '%s\0' "$f"; done |
    LC_ALL=C sort -z -u >"$files"
  # Reproducible: sorted names, one owner, the last commit's time, gzip without a timestamp.
  mtime=$(git log -1 --format=%ct 2>/dev/null || echo 0)
  tar --null -T "$files" --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$mtime" \
    --transform "s,^,$name/," -cf - | gzip -n -9 >"$stage/$name.tar.gz"
  cp "$rockspec" "$stage/"
  rm -f "$out/$name-1.src.rock"
  (cd "$stage" && zip -q -X "$out/$name-1.src.rock" "$name-1.rockspec" "$name.tar.gz")
  if [ -n "$(git status --porcelain --untracked-files=normal 2>/dev/null)" ]; then
    echo "dist: note: the work tree has uncommitted changes; they are in the archive" >&2
  fi
  echo "dist: ${out#"$PWD"/}/$name-1.src.rock ($(tr -cd '\0' <"$files" | wc -c) files)"
}

case "${1:-}" in
  check) check ;;
  pack) pack "${2:-}" ;;
  *) die "usage: scripts/dist.sh check | pack [DIR]" ;;
esac
