#!/usr/bin/env bash
# make demo-openresty: the sample plugin (examples/openresty/) in its own nginx in front of the
# simulator. POSTs examples/openresty/order.json twice (created, then found), prints the answers,
# and stops both nginx instances again, even when something fails.
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
nginx_bin=${NGINX:-/usr/sbin/nginx}
SIM_PORT=${CRM_SIM_PORT:-18080}
PORT=${CRM_PLUGIN_PORT:-$((SIM_PORT + 530))}
dir=$(mktemp -d)

stop() {
  [ -s "$dir/nginx.pid" ] && "$nginx_bin" -p "$dir" -c "$dir/nginx.conf" -s stop 2>/dev/null
  for _ in $(seq 1 30); do [ -e "$dir/nginx.pid" ] || break; sleep 0.1; done
  bash scripts/sim.sh stop "$SIM_PORT" >/dev/null 2>&1
  rm -rf "$dir"
}
trap stop EXIT

bash scripts/sim.sh start "$SIM_PORT" || exit 1
mkdir -p "$dir/tmp"
sed -e "s|@PREFIX@|$dir|g" -e "s|@PORT@|$PORT|g" -e "s|@ROOT@|$ROOT|g" \
    -e "s|@CPATH@|$ROOT/build/luajit|g" examples/openresty/nginx.conf.in >"$dir/nginx.conf"
user=()
[ "$(id -u)" = 0 ] && user=(-g "user root;")
# The plugin refuses unsigned webhooks: X-Crm-Signature is the HMAC-SHA1 of the body.
secret="demo-webhook-secret-$(date +%s)"
sig=$(openssl dgst -sha1 -hmac "$secret" examples/openresty/order.json | sed 's/^.*= //')
if ! CRM_WEBHOOK_SECRET="$secret" CRM_TOAST_URL="http://127.0.0.1:$SIM_PORT" \
     CRM_TOAST_RESTAURANT="6f1d2d0e-8f65-4d7b-9b59-0f1f0c8e0a11" \
     CRM_TOAST_CLIENT_ID="sim-client" CRM_TOAST_CLIENT_SECRET="sim-secret" \
     "$nginx_bin" -p "$dir" -c "$dir/nginx.conf" "${user[@]}"; then
  cat "$dir/error.log" >&2 2>/dev/null
  exit 1
fi
for _ in $(seq 1 50); do
  curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break
  sleep 0.1
done
echo "plugin: nginx on http://127.0.0.1:$PORT (examples/openresty/nginx.conf.in), Toast = simulator on $SIM_PORT"

rc=0
post() {
  echo "== $1"
  echo "\$ curl -X POST -H 'X-Crm-Signature: sha1=$sig' --data-binary @examples/openresty/order.json http://127.0.0.1:$PORT/webhooks/order"
  local out
  out=$(curl -sS -w 'HTTP %{http_code} in %{time_total}s' -X POST -H 'Content-Type: application/json' \
        -H "X-Crm-Signature: sha1=$sig" \
        --data-binary @examples/openresty/order.json "http://127.0.0.1:$PORT/webhooks/order") || rc=1
  echo "$out"
  case "$out" in *"HTTP 200"*) ;; *) rc=1 ;; esac
}
post "an order webhook for a new guest: looked up, then created"
post "the same webhook again: found, not created twice"
if [ "$rc" != 0 ]; then
  echo "---- tail of the plugin's error.log ----" >&2
  tail -n 20 "$dir/error.log" >&2
fi
exit $rc
