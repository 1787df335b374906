-- A sample OpenResty plugin: an order webhook comes in with the customer's name and email or
-- phone; the handler looks the guest up in Toast, or creates them, and answers with the guest's
-- GUID. It runs in content_by_lua, so crm picks the ngx transport: while Toast answers, the
-- nginx worker serves other requests.
--
--   init_by_lua_block    { require("crm_webhook").configure { base_url = ..., ... } }
--   location = /webhooks/order { content_by_lua_block { require("crm_webhook").handle() } }
local crm = require "crm"
local cjson = require "cjson.safe"

local ngx = ngx -- luacheck: ignore 113 (nginx's global; this file only runs inside nginx)

local M = {}

local settings = {}
-- One client per transport, created on first use and shared by every request of this worker,
-- so the Toast token is fetched once and connections stay in nginx's keepalive pool.
local clients = {}

-- configure{base_url, restaurant_guid, client_id, client_secret, ...}: crm.toast options.
-- Called from init_by_lua; sends nothing.
function M.configure(opts)
  settings = opts
end

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

-- handle([{transport = "curl"|"ngx"}]): answers one webhook.
function M.handle(opts)
  if ngx.req.get_method() ~= "POST" then
    return reply(405, { error = "POST an order as JSON" })
  end
  ngx.req.read_body()
  local raw = ngx.req.get_body_data() -- nil when empty or larger than client_body_buffer_size
  local order = raw and cjson.decode(raw)
  if type(order) ~= "table" or type(order.customer) ~= "table" then
    return reply(400, { error = "expected a JSON order with a customer object" })
  end
  local c = order.customer
  local guest = { firstName = text(c.firstName), lastName = text(c.lastName),
                  email = text(c.email), phone = text(c.phone) }

  local client, err = client_for(opts and opts.transport)
  if not client then return reply(500, { error = tostring(err) }) end
  local customer, how = client:find_or_create(guest)
  if not customer then
    err = how
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
  })
end

return M
