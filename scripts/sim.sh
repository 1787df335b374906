#!/usr/bin/env bash
# Starts, stops or reports on the crm test simulator (nginx + lua-nginx-module).
#
#   scripts/sim.sh start  [PORT]   (re)start on 127.0.0.1:PORT
#   scripts/sim.sh stop   [PORT]   stop it (not running is fine)
#   scripts/sim.sh status [PORT]   print state; exit 0 when running, 1 when not
#
# PORT defaults to $CRM_SIM_PORT, then 18080. Everything the running simulator
# writes (config, pid, logs, temp files) lives in ${XDG_STATE_HOME:-~/.local/state}/crm/sim/PORT/,
# the one state directory `crm sim` uses too: either stops what the other started, and
# simulators on different ports (parallel test runs) never share a pid file.
# nginx starts without the caller's Lua paths (LUA_PATH, LUA_CPATH, LUA_PATH_5_4, ...): its
# LuaJIT must not load modules built for another Lua.
set -eu

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
sim="$here/spec/sim"
nginx_bin=${NGINX:-/usr/sbin/nginx}

die() { echo "sim: $*" >&2; exit 1; }

running_pid() {
  local pid
  [ -s "$pidfile" ] || return 1
  pid=$(cat "$pidfile" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  # a stale pid file may name a recycled pid: only ever signal an nginx
  if [ -r "/proc/$pid/cmdline" ]; then
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q nginx || return 1
  fi
  echo "$pid"
}

wait_gone() { # pid, tenths of a second
  local i
  for ((i = 0; i < $2; i++)); do
    kill -0 "$1" 2>/dev/null || return 0
    sleep 0.1
  done
  return 1
}

do_stop() {
  local pid
  if ! pid=$(running_pid); then
    rm -f "$pidfile"
    return 0
  fi
  kill -QUIT "$pid" 2>/dev/null || true          # graceful: finish in-flight requests
  wait_gone "$pid" 50 && { rm -f "$pidfile"; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  wait_gone "$pid" 30 && { rm -f "$pidfile"; return 0; }
  kill -KILL "$pid" 2>/dev/null || true
  wait_gone "$pid" 20 || die "nginx (pid $pid) would not exit"
  rm -f "$pidfile"
}

show_log() {
  if [ -s "$run/error.log" ]; then
    echo "---- tail of $run/error.log ----" >&2
    tail -n 30 "$run/error.log" >&2
  fi
}

# Why nginx stopped, in its own words: the first [emerg]/[alert]/[crit]/[error] entry of
# start.err or error.log with its continuation lines (up to a stack traceback), on one line.
cause() {
  local text
  text=$(cat "$run/start.err" "$run/error.log" 2>/dev/null | awk '
    found && /^[ \t]/ && !/stack traceback/ { sub(/^[ \t]+/, ""); out = out " " $0; next }
    found { exit }
    /\[(emerg|alert|crit|error)\]/ { sub(/^.*\[(emerg|alert|crit|error)\] ([0-9]+#[0-9]+: )?/, ""); out = $0; found = 1 }
    END { print out }')
  case "$text" in
    *'Address already in use'*) echo "port $port is in use by another process (no simulator with its state in $run)" ;;
    '') echo "see $run/error.log" ;;
    *) echo "$text" ;;
  esac
}

# The environment without any LUA_* variable: nginx's LuaJIT reads LUA_PATH and LUA_CPATH
# for its default package paths (the ";;" in nginx.conf), and a private Lua 5.4 tree there
# makes it load a 5.4 cjson.so and die.
lua_free_env() {
  local v args=()
  for v in $(compgen -e); do
    case "$v" in LUA_*) args+=(-u "$v") ;; esac
  done
  env "${args[@]}" "$@"
}

do_start() {
  local port=$1 pid i
  case "$port" in
    '' | *[!0-9]*) die "bad port '$port'" ;;
  esac
  [ -x "$nginx_bin" ] || die "nginx not found at $nginx_bin (install nginx and libnginx-mod-http-lua)"
  command -v curl >/dev/null 2>&1 || die "curl is needed"
  for m in ndk_http_module.so ngx_http_lua_module.so; do
    [ -f "/usr/lib/nginx/modules/$m" ] || die "missing /usr/lib/nginx/modules/$m (install libnginx-mod-http-lua)"
  done

  do_stop
  mkdir -p -m 700 "$run/tmp"
  : >"$run/error.log"
  : >"$run/access.log"
  local user_sed='s|^#user root;|#user root;|'
  [ "$(id -u)" = 0 ] && user_sed='s|^#user root;|user root;|'
  sed -e "s|@PORT@|$port|g" -e "s|@RUN@|$run|g" -e "s|@ROOT@|$sim|g" -e "$user_sed" "$sim/nginx.conf.in" >"$run/nginx.conf"
  echo "$port" >"$portfile"

  if ! lua_free_env "$nginx_bin" -p "$run/" -c "$run/nginx.conf" 2>"$run/start.err"; then
    cat "$run/start.err" >&2
    show_log
    die "nginx failed to start on 127.0.0.1:$port: $(cause)"
  fi
  for ((i = 0; i < 50; i++)); do
    if curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$port/__sim/stats" 2>/dev/null; then
      pid=$(running_pid) || pid='?'
      echo "sim: running on http://127.0.0.1:$port (pid $pid)"
      return 0
    fi
    sleep 0.1
  done
  cat "$run/start.err" >&2 2>/dev/null || true
  show_log
  do_stop || true
  die "$(cause); simulator did not answer on 127.0.0.1:$port within 5s"
}

do_status() {
  local pid port
  if pid=$(running_pid); then
    port=$(cat "$portfile" 2>/dev/null || echo '?')
    echo "sim: running on http://127.0.0.1:$port (pid $pid)"
    return 0
  fi
  echo "sim: not running"
  return 1
}

cmd=${1:-}
port=${2:-${CRM_SIM_PORT:-18080}}
case "$port" in
  '' | *[!0-9]*) die "bad port '$port'" ;;
esac
state=${XDG_STATE_HOME:-}
[ -n "$state" ] || state=${HOME:-/tmp}/.local/state
run="$state/crm/sim/$port"
pidfile="$run/nginx.pid"
portfile="$run/port"
case "$cmd" in
  start) do_start "$port" ;;
  stop) do_stop; echo "sim: stopped" ;;
  status) do_status ;;
  restart) do_start "$port" ;;
  *) echo "usage: $0 start|stop|status [PORT]" >&2; exit 2 ;;
esac
