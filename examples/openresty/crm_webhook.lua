-- A sample OpenResty plugin: an order webhook comes in with the customer's name and email or
-- phone; the handler looks the guest up in Toast, or creates them, and answers with the guest's
-- GUID. It runs in content_by_lua, so crm picks the ngx transport: while Toast answers, the
-- nginx worker serves other requests.
--
--   lua_shared_dict crm 1m;
--   init_by_lua_block    { require("crm_webhook").configure { base_url = ..., shared_dict = "crm",
--                                                             webhook_secret = ..., ... } }
--   location = /webhooks/order { content_by_lua_block { require("crm_webhook").handle() } }
--
-- With shared_dict every worker of the nginx shares one Toast login, one rate and the
-- find_or_create locks (crm.store); without it each worker has its own.
--
-- Webhooks are authenticated: the sender signs the raw body with the shared `webhook_secret`
-- and sends `X-Crm-Signature: sha1=<hex HMAC-SHA1(webhook_secret, body)>`; anything else gets
-- 401, and without a configured secret every call gets 503. How Toast itself signs webhooks is
-- not in the seeds, so the header and the scheme are the integrator's to match to their sender.
local crm = require "crm"
local hash = require "crm.hash"
local cjson = require "cjson.safe"

local ngx = ngx -- luacheck: ignore 113 (nginx's global; this file only runs inside nginx)

local M = {}

local settings = {}
-- The plugin's own settings (not crm.toast options).
local PLUGIN_KEYS = { webhook_secret = true }
local plugin = {}
M.MIN_SECRET_BYTES = 16
-- One client per transport, created on first use and shared by every request of this worker,
-- so the Toast token is fetched once and connections stay in nginx's keepalive pool.
local clients = {}

-- configure{base_url, restaurant_guid, client_id, client_secret, shared_dict, ..., webhook_secret}:
-- crm.toast options, and the webhook secret (at least 16 bytes). Called from init_by_lua; sends
-- nothing.
function M.configure(opts)
  settings, plugin = {}, {}
  for k, v in pairs(opts) do
    if PLUGIN_KEYS[k] then plugin[k] = v else settings[k] = v end
  end
end

-- client([transport]) -> the worker's client (the backfill timer uses it too) | nil, err
local function client_for(transport)
  local key = transport or "auto"
  if clients[key] then return clients[key] end
  local o = { transport = transport }
  for k, v in pairs(settings) do o[k] = v end
  local c, err = crm.toast(o)
  if not c then return nil, err end
  clients[key] = c
  return c
end

local function reply(status, value)
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  ngx.say(cjson.encode(value))
end

-- Strings only: JSON null and other types are left out, so crm's validation names the field.
local function text(v)
  if type(v) == "string" and v ~= "" then return v end
  return nil
end

M.client = client_for

local function to_hex(raw) return hash.hex(raw) end

-- authentic(raw) -> true | false, status, why: the X-Crm-Signature header is the HMAC-SHA1 of
-- the raw body under webhook_secret. Compared in constant time (crm.hash.equal), so how long
-- the check takes says nothing about how much of a forged signature was right.
local function authentic(raw)
  local secret = plugin.webhook_secret
  if type(secret) ~= "string" or #secret < M.MIN_SECRET_BYTES then
    return false, 503, "webhooks are refused until webhook_secret (at least 16 bytes) is configured"
  end
  local sig = ngx.req.get_headers()["x-crm-signature"]
  if type(sig) ~= "string" then return false, 401, "missing X-Crm-Signature" end
  local given = sig:match("^sha1=(%x+)$")
  if not given then return false, 401, "X-Crm-Signature must be sha1=<40 hex digits>" end
  if not hash.equal(to_hex(ngx.hmac_sha1(secret, raw or "")), given:lower()) then
    return false, 401, "bad signature"
  end
  return true
end

M.authentic = authentic -- the order queue (crm_orders.lua) checks its webhooks the same way

-- sign(secret, body) -> the X-Crm-Signature value a sender puts on `body` (outside nginx too).
function M.sign(secret, body)
  return "sha1=" .. to_hex(hash.hmac_sha1(secret, body))
end

-- handle([{transport = "curl"|"ngx"}]): answers one webhook.
function M.handle(opts)
  if ngx.req.get_method() ~= "POST" then
    return reply(405, { error = "POST an order as JSON" })
  end
  ngx.req.read_body()
  local raw = ngx.req.get_body_data() -- nil when empty or larger than client_body_buffer_size
  local ok, status, why = authentic(raw)
  if not ok then return reply(status, { error = why }) end
  local order = raw and cjson.decode(raw)
  if type(order) ~= "table" or type(order.customer) ~= "table" then
    return reply(400, { error = "expected a JSON order with a customer object" })
  end
  local c = order.customer
  local guest = { firstName = text(c.firstName), lastName = text(c.lastName),
                  email = text(c.email), phone = text(c.phone) }

  local client, err = client_for(opts and opts.transport)
  if not client then return reply(500, { error = tostring(err) }) end
  local customer, ferr, how = client:find_or_create(guest)
  if not customer then
    err = ferr
    -- Bad input in the webhook is the sender's problem; anything else is Toast's or the network's.
    return reply(err.kind == "validation" and 422 or 502,
      { error = tostring(err), kind = err.kind, field = err.field })
  end
  local t = client.transport
  reply(200, {
    order = text(order.orderId),
    guest = customer.guid,
    how = how, -- "found" or "created"
    transport = t.current_name and t.current_name() or t.name,
    worker = ngx.worker.pid(),
  })
end

return M
