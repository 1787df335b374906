#!/usr/bin/env bash
# make rock-test: the source rock installs offline and runs, under both runtimes.
#
#   scripts/rock-test.sh [PORT]     (PORT: the simulator's, default 18787)
#
# 1. make dist's build/dist/crm-<version>-1.src.rock
# 2. luarocks build --deps-mode=none into two clean trees: Lua 5.4, and Lua 5.1 against LuaJIT's
#    headers (the tree LuaJIT and OpenResty load); luarocks make of the scm rockspec into a third
# 3. each tree under its own runtime, with paths that reach only the tree and the system's
#    lua-cjson: require "crm", versions, Toast and TableCheck calls to the simulator, a batch
# 4. the README's install steps as written (luarocks path for 5.4 and 5.1, crm sim start, a script
#    run by lua5.4 and by luajit from outside the checkout)
# 5. the User-Agent the simulator saw, and that a tree never loads under the other runtime
# Nothing is fetched: lua-cjson is Debian's, the rocks' other dependencies are system libraries.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PORT=${1:-18787}

die() { echo "rock-test: $*" >&2; exit 1; }

# What this needs beyond scripts/deps.sh: luarocks itself, zip for make dist, unzip for luarocks.
bash scripts/deps.sh || exit 1
missing=""
for p in luarocks zip unzip; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  [ "$(id -u)" = 0 ] || die "missing Debian packages:$missing (run as root, or install them)"
  echo "rock-test: installing$missing"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing >/dev/null ||
    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing >/dev/null; } ||
    die "could not install$missing"
fi

# The rocks must build as a user's would: nothing from the Makefile that may have started us
# (its exported LUA_PATH reaches the checkout; MAKEFLAGS would hand the rock's make our variables).
unset MAKEFLAGS MFLAGS MAKELEVEL MAKEOVERRIDES LUA_PATH LUA_CPATH LUA_PATH_5_4 LUA_CPATH_5_4 LUA_INIT LUA_INIT_5_4

version=$(sed -n 's/^return "\([0-9][0-9]*\.[0-9][0-9]*\.[0-9][0-9]*\)"$/\1/p' lua/crm/version.lua)
[ -n "$version" ] || die "no version in lua/crm/version.lua"
bash scripts/dist.sh pack build/dist || exit 1
rock=$ROOT/build/dist/crm-$version-1.src.rock

luajit_inc=$(pkg-config --variable=includedir luajit 2>/dev/null)
[ -f "${luajit_inc:-/nonexistent}/lua.h" ] || luajit_inc=/usr/include/luajit-2.1
[ -f "$luajit_inc/lua.h" ] || die "LuaJIT's headers are not in $luajit_inc (libluajit2-5.1-dev)"

work=$(mktemp -d /tmp/crm-rock-test.XXXXXX)
sim_started=0
cleanup() {
  [ "$sim_started" = 1 ] && bash scripts/sim.sh stop "$PORT" >/dev/null 2>&1
  [ -s "$work/nginx/nginx.pid" ] && kill -QUIT "$(cat "$work/nginx/nginx.pid")" 2>/dev/null && sleep 0.5
  # the simulator an installed bin/crm started (crm sim start), should its check have failed
  [ -s "$work/state/crm/sim/$((PORT + 2))/nginx.pid" ] &&
    kill -QUIT "$(cat "$work/state/crm/sim/$((PORT + 2))/nginx.pid")" 2>/dev/null && sleep 0.5
  rm -rf "$work"
}
trap cleanup EXIT

# build NAME COMMAND...: runs a luarocks command, its log shown only when it fails.
build() {
  local name=$1 t0=$SECONDS
  shift
  if ! (cd "$work" && timeout 300 "$@") >"$work/$name.log" 2>&1; then
    tail -n 40 "$work/$name.log" >&2
    die "$name: $* failed"
  fi
  echo "rock-test: $name: $(grep -E 'is now installed' "$work/$name.log" | tail -n 1) ($((SECONDS - t0))s)"
}

build lua5.4 luarocks --lua-version 5.4 build --tree "$work/tree-5.4" --deps-mode=none "$rock"
build luajit luarocks --lua-version 5.1 build --tree "$work/tree-5.1" --deps-mode=none "$rock" \
  "LUA_INCDIR=$luajit_inc"
# The scm rockspec builds what is on disk (luarocks make runs in the checkout, fetches nothing).
if ! (timeout 300 luarocks --lua-version 5.4 make --tree "$work/tree-scm" --deps-mode=none \
      rockspec/crm-scm-1.rockspec) >"$work/scm.log" 2>&1; then
  tail -n 40 "$work/scm.log" >&2
  die "luarocks make rockspec/crm-scm-1.rockspec failed"
fi
echo "rock-test: scm: $(grep -E 'is now installed' "$work/scm.log" | tail -n 1)"

# The rock's build used make's flags.
for name in lua5.4 luajit; do
  grep -q -- "-DCRM_VERSION='\"$version\"'" "$work/$name.log" && grep -q -- "-Wl,-z,nodelete" "$work/$name.log" &&
    grep -q -- "-std=c11 -Wall -Wextra -Werror" "$work/$name.log" || die "$name: the rock's build lacks make's flags"
done
grep -q -- "-I$luajit_inc " "$work/luajit.log" || die "luajit: the 5.1 rock was not built against $luajit_inc"

# Every module of the checkout is in each tree; so are the simulator (crm/sim/, for `crm sim`)
# and the command line.
(cd lua && find . -name '*.lua' | sed 's,^\./,,' | LC_ALL=C sort) >"$work/want"
(cd spec/sim && { echo nginx.conf.in; find lua -name '*.lua'; } | LC_ALL=C sort) >"$work/want-sim"
for t in 5.4 5.1 scm; do
  lv=$t; [ "$t" = scm ] && lv=5.4
  (cd "$work/tree-$t/share/lua/$lv" && find . -name '*.lua' | sed 's,^\./,,' | grep -v '^crm/sim/' |
    LC_ALL=C sort) >"$work/got"
  diff "$work/want" "$work/got" >&2 || die "tree-$t: the installed modules differ from lua/"
  [ -f "$work/tree-$t/lib/lua/$lv/crm/core.so" ] || die "tree-$t: no crm/core.so"
  (cd "$work/tree-$t/share/lua/$lv/crm/sim" 2>/dev/null && { echo nginx.conf.in; find lua -name '*.lua'; } |
    LC_ALL=C sort) >"$work/got-sim"
  diff "$work/want-sim" "$work/got-sim" >&2 || die "tree-$t: the simulator's files are not all in crm/sim/"
  [ -x "$work/tree-$t/bin/crm" ] || die "tree-$t: no bin/crm"
done

bash scripts/sim.sh start "$PORT" >/dev/null || die "the simulator did not start on $PORT"
sim_started=1
log=${XDG_STATE_HOME:-${HOME:-/tmp}/.local/state}/crm/sim/$PORT/access.log
: >"$log" 2>/dev/null || true

# paths TREE LUAVERSION: the tree, then the runtime's own defaults (;;).
smoke() { # LUA TREE LUAVERSION
  (cd "$work" &&
   LUA_PATH="$2/share/lua/$3/?.lua;$2/share/lua/$3/?/init.lua;;" LUA_CPATH="$2/lib/lua/$3/?.so;;" \
     timeout 60 "$1" "$ROOT/scripts/rock_smoke.lua" "$2" "$PORT" "$version")
}
rc=0
smoke lua5.4 "$work/tree-5.4" 5.4 || { echo "rock-test: lua5.4 with the 5.4 tree failed" >&2; rc=1; }
smoke luajit "$work/tree-5.1" 5.1 || { echo "rock-test: luajit with the 5.1 tree failed" >&2; rc=1; }
smoke lua5.4 "$work/tree-scm" 5.4 >/dev/null || { echo "rock-test: lua5.4 with the scm tree failed" >&2; rc=1; }

# The installed command line (luarocks' wrapper in TREE/bin), from outside the checkout: --help,
# then `crm sim start` runs the rock's own copy of the simulator, and a command talks to it. A
# --tree of its own is not one luarocks.loader knows, so its paths are given (luarocks path).
cli_port=$((PORT + 2))
cli_check() { # TREE LUAVERSION
  local t=$1 lv=$2 out n
  export LUA_PATH="$t/share/lua/$lv/?.lua;$t/share/lua/$lv/?/init.lua;;" LUA_CPATH="$t/lib/lua/$lv/?.so;;"
  out=$(cd "$work" && XDG_STATE_HOME="$work/state" timeout 30 "$t/bin/crm" --help 2>&1) &&
    echo "$out" | grep -q "crm tablecheck customers export" || { echo "$out" >&2; return 1; }
  (cd "$work" && XDG_STATE_HOME="$work/state" timeout 30 "$t/bin/crm" sim start --port "$cli_port" \
    --seed-customers 25 >/dev/null) || return 1
  n=$(cd "$work" && XDG_STATE_HOME="$work/state" CRM_SIM_PORT=$cli_port timeout 30 "$t/bin/crm" --sim \
    tablecheck customers export 2>/dev/null | wc -l)
  (cd "$work" && XDG_STATE_HOME="$work/state" timeout 30 "$t/bin/crm" sim status --port "$cli_port" |
    grep -q '"running":true') || { n="not running"; }
  (cd "$work" && XDG_STATE_HOME="$work/state" timeout 30 "$t/bin/crm" sim stop --port "$cli_port" >/dev/null)
  [ "$n" = 25 ] || { echo "rock-test: $t/bin/crm exported $n customers, not 25" >&2; return 1; }
  grep -q "$work/state/crm/sim/$cli_port" <(cd "$work" && XDG_STATE_HOME="$work/state" "$t/bin/crm" sim status \
    --port "$cli_port") || return 1
}
for t in 5.4 5.1; do
  if (cli_check "$work/tree-$t" "$t"); then
    echo "rock-test: tree-$t/bin/crm: --help, crm sim start/status/stop from the rock, an export ok"
  else
    echo "rock-test: tree-$t/bin/crm failed" >&2; rc=1
  fi
done

# The README's install steps as written, from outside the checkout: the 5.4 tree's paths from
# `luarocks --lua-version 5.4 --tree DIR path`, exported as printed (LUA_PATH/LUA_CPATH, which
# LuaJIT inside nginx would inherit) and in the README's LUA_PATH_5_4 form; each time
# `crm sim start` (the tree's bin/crm, on PATH), then `lua5.4 script.lua`.
cat >"$work/script.lua" <<'LUA'
local crm = require "crm"
local tc = assert(crm.tablecheck { base_url = arg[1], api_key = "sim-tablecheck-key" })
local shops, err = tc:list_shops()
assert(shops, tostring(err))
print("ok " .. #shops .. " " .. package.searchpath("crm", package.path))
LUA
readme_check() { # SED-EXPRESSION (applied to luarocks path's output) [LUAVERSION LUA]
  local lv=${2:-5.4} lua=${3:-lua5.4}
  (
    unset LUA_PATH LUA_CPATH LUA_PATH_5_4 LUA_CPATH_5_4
    eval "$(luarocks --lua-version "$lv" --tree "$work/tree-$lv" path | sed "$1")"
    export XDG_STATE_HOME="$work/state"
    cd "$work" || exit 1
    crm sim start --port "$cli_port" >/dev/null || exit 1
    out=$(timeout 30 "$lua" script.lua "http://127.0.0.1:$cli_port/api/crm/v1" 2>&1)
    crm sim stop --port "$cli_port" >/dev/null
    [ "$out" = "ok 2 $work/tree-$lv/share/lua/$lv/crm.lua" ] || { echo "$out" >&2; exit 1; }
  )
}
if readme_check 's/^//' 5.1 luajit; then
  echo "rock-test: luarocks path (5.1, for LuaJIT): crm sim start, luajit script.lua outside the checkout ok"
else
  echo "rock-test: the README's LuaJIT install steps failed" >&2; rc=1
fi
if readme_check 's/^//'; then
  echo "rock-test: luarocks path (5.4, as printed): crm sim start, lua5.4 script.lua outside the checkout ok"
else
  echo "rock-test: the README's 5.4 install steps (LUA_PATH as printed) failed" >&2; rc=1
fi
if readme_check 's/^export LUA_\(C\{0,1\}PATH\)=/export LUA_\1_5_4=/'; then
  echo "rock-test: luarocks path (5.4, LUA_PATH_5_4 form): crm sim start, lua5.4 script.lua ok"
else
  echo "rock-test: the README's 5.4 install steps (LUA_PATH_5_4) failed" >&2; rc=1
fi

# OpenResty / lua-nginx-module: nginx (LuaJIT inside) loads the 5.1 tree through its own
# lua_package_path and lua_package_cpath; a request runs crm over cosockets (the ngx transport)
# and checks that the C core loaded too.
nginx_bin=${NGINX:-/usr/sbin/nginx}
ng=$work/nginx
ng_port=$((PORT + 1))
mkdir -p "$ng/tmp" "$ng/logs"
cat >"$ng/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
worker_processes 1;
daemon on;
pid $ng/nginx.pid;
error_log $ng/logs/error.log notice;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path $ng/tmp/body;
    proxy_temp_path $ng/tmp/proxy;
    fastcgi_temp_path $ng/tmp/fastcgi;
    uwsgi_temp_path $ng/tmp/uwsgi;
    scgi_temp_path $ng/tmp/scgi;
    lua_package_path "$work/tree-5.1/share/lua/5.1/?.lua;$work/tree-5.1/share/lua/5.1/?/init.lua;;";
    lua_package_cpath "$work/tree-5.1/lib/lua/5.1/?.so;;";
    server {
        listen 127.0.0.1:$ng_port;
        location = /smoke {
            content_by_lua_block {
                local crm = require "crm"
                local platform = require "crm.platform"
                local toast = assert(crm.toast {
                  base_url = "http://127.0.0.1:$PORT",
                  restaurant_guid = "6f1d2d0e-8f65-4d7b-9b59-0f1f0c8e0a11",
                  client_id = "sim-client", client_secret = "sim-secret", timeout = 5,
                })
                local email = "rock-ngx-" .. crm.guid():sub(1, 8) .. "@example.org"
                local made, err = toast:create_customer { firstName = "Rock", lastName = "Nginx", email = email }
                if not made then ngx.say("create_customer: ", tostring(err)) return end
                local got
                got, err = toast:get_customer(made.guid)
                if not got or got.email ~= email then ngx.say("get_customer: ", tostring(err)) return end
                ngx.say("ok ", crm._VERSION, " core=", platform.core and platform.core.version or "none",
                        " ", package.searchpath("crm", package.path))
            }
        }
    }
}
CONF
ng_user=()
[ "$(id -u)" = 0 ] && ng_user=(-g "user root;")
if "$nginx_bin" -p "$ng" -c "$ng/nginx.conf" "${ng_user[@]}" 2>"$ng/start.err"; then
  out=$(curl -sS --max-time 20 "http://127.0.0.1:$ng_port/smoke" 2>&1)
  "$nginx_bin" -p "$ng" -c "$ng/nginx.conf" "${ng_user[@]}" -s stop 2>/dev/null
  for _ in $(seq 1 30); do [ -e "$ng/nginx.pid" ] || break; sleep 0.1; done
  if [ "$out" = "ok $version core=$version $work/tree-5.1/share/lua/5.1/crm.lua" ]; then
    echo "rock-test: nginx (lua-nginx-module) with the 5.1 tree: toast create/get over cosockets ok"
  else
    echo "rock-test: nginx with the 5.1 tree answered: $out" >&2
    tail -n 20 "$ng/logs/error.log" >&2
    rc=1
  fi
else
  cat "$ng/start.err" >&2
  echo "rock-test: nginx did not start on $ng_port" >&2
  rc=1
fi

# The curl User-Agent is crm/<version> (the simulator logs it).
n=$(grep -c "\"crm/$version\"\$" "$log" 2>/dev/null || true)
if [ "${n:-0}" -gt 0 ]; then
  echo "rock-test: the simulator saw User-Agent crm/$version ($n requests)"
else
  echo "rock-test: no request with User-Agent crm/$version in $log" >&2
  rc=1
fi

# A tree is for its runtime only: the C core of the other ABI must be refused at load, clearly.
wrong() { # LUA CPATH_DIR
  local out
  out=$(cd "$work" && LUA_CPATH="$2/?.so;;" timeout 20 "$1" -e 'require "crm.core"' 2>&1) && return 1
  echo "$out" | grep -q "undefined symbol" || { echo "$out" >&2; return 1; }
  echo "$out" | grep -o "undefined symbol: [A-Za-z_]*" | head -n 1
}
if msg=$(wrong luajit "$work/tree-5.4/lib/lua/5.4"); then
  echo "rock-test: luajit refuses the 5.4 tree ($msg), as documented"
else
  echo "rock-test: luajit did not refuse the 5.4 tree's crm.core with an undefined symbol" >&2; rc=1
fi
if msg=$(wrong lua5.4 "$work/tree-5.1/lib/lua/5.1"); then
  echo "rock-test: lua5.4 refuses the 5.1 tree ($msg), as documented"
else
  echo "rock-test: lua5.4 did not refuse the 5.1 tree's crm.core with an undefined symbol" >&2; rc=1
fi

[ "$rc" = 0 ] && echo "rock-test: ok (crm $version, Lua 5.4 and LuaJIT, offline)"
exit $rc
