#!/usr/bin/env bash
# Installs the Debian packages crm needs to build and test, when any is missing.
# redis-server and lua-redis are test dependencies only: the shared-store example
# (examples/redis_store.lua) and its spec run against a real Redis. lua-sql-sqlite3 and
# lua-sql-postgres are crm.toast.db's drivers (loaded only when a database is opened); postgresql
# is the server its specs and bench start (as the postgres user, in a temporary directory).
#   scripts/deps.sh          what make test and make demo need
#   scripts/deps.sh tools    also what make check, make fuzz and make bench need
set -eu
tools=""
[ "${1:-}" = tools ] && tools="valgrind wrk clang libclang-rt-14-dev lua5.1 lua-curl"
pkgs="$tools lua5.4 liblua5.4-dev lua-cjson lua-argparse libcurl4-openssl-dev uuid-dev lua-busted lua-check lua-yaml lua-ldoc luarocks zip unzip
      nginx libnginx-mod-http-lua luajit2 libluajit2-5.1-dev curl gcc make pkg-config openssl
      redis-server lua-redis lua-sql-sqlite3 lua-sql-postgres postgresql"
missing=""
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "crm: missing Debian packages:$missing (run as root, or install them)" >&2
  exit 1
fi
echo "crm: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q $missing >/dev/null
# Debian starts nginx on install; the simulator brings its own, so the system one can go.
# The same for Redis: the spec starts its own redis-server on a port of its own.
if command -v systemctl >/dev/null 2>&1; then
  systemctl stop nginx >/dev/null 2>&1 || true
  systemctl stop redis-server >/dev/null 2>&1 || true
  systemctl stop postgresql >/dev/null 2>&1 || true
fi
