-- Guest history from order webhooks, inside nginx: the handler only queues each order in a
-- lua_shared_dict; a `crm` process (cron or a systemd service) drains the queue into the
-- database (`crm toast guests drain --db URL --queue http://127.0.0.1:PORT/orders/queue`).
-- LuaSQL blocks the worker, and Debian has no non-blocking PostgreSQL client for nginx, so no
-- database call ever runs in a request handler.
--
--   lua_shared_dict crm_orders 10m;   # its own dict: nothing else can push queued orders out
--   location = /webhooks/orders    { content_by_lua_block { require("crm_orders").handle() } }
--   location = /orders/queue       { allow 127.0.0.1; deny all;
--                                    content_by_lua_block { require("crm_orders").queue() } }
--   location = /orders/queue/ack   { allow 127.0.0.1; deny all;
--                                    content_by_lua_block { require("crm_orders").ack() } }
--
-- The webhook is signed as crm_webhook.lua wants it (X-Crm-Signature). Its body is a Toast Order
-- or an orders webhook event ({eventType, details = {order}}); the restaurant is the
-- Toast-Restaurant-External-ID header, else the event's restaurantGuid, else the configured one.
--
-- The queue: each order gets the next number (an atomic incr of q:tail) and is stored under
-- q:<n> with safe_set, which fails rather than evict anything (the sender gets 503 and sends it
-- again). GET /orders/queue?max=N gives the orders after q:head, in order, and `through`, the
-- last number they cover; POST /orders/queue/ack?through=N deletes them and moves q:head. A
-- drain that dies before its ack reads the same orders again, and the database writes are
-- idempotent, so nothing is lost and nothing counts twice. A number whose order is not there
-- (a handler between incr and set, or one whose set failed) is waited for GAP_WAIT seconds, then
-- passed over.
local cjson = require "cjson.safe"
local webhook = require "crm_webhook"

local ngx = ngx -- luacheck: ignore 113 (nginx's global; this file only runs inside nginx)

local M = {}

M.DICT = "crm_orders"
M.GAP_WAIT = 10
M.MAX_ITEMS = 1000

local function reply(status, value)
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  ngx.say(cjson.encode(value))
end

local function dict()
  local d = ngx.shared[M.DICT]
  if not d then error("lua_shared_dict " .. M.DICT .. " is not configured", 0) end
  return d
end

local GUID = "^[%w%-]+$"

-- handle(): POST /webhooks/orders -> 202 {queued = n}
function M.handle()
  if ngx.req.get_method() ~= "POST" then return reply(405, { error = "POST an order as JSON" }) end
  ngx.req.read_body()
  local raw = ngx.req.get_body_data()
  local ok, status, why = webhook.authentic(raw)
  if not ok then return reply(status, { error = why }) end
  local v = raw and cjson.decode(raw)
  local order = type(v) == "table" and type(v.details) == "table" and v.details.order or v
  -- What the database refuses is refused here (a GUID of 1 to 255 bytes): queued, it would
  -- stop every drain at it, for good.
  if type(order) ~= "table" or type(order.guid) ~= "string" or order.guid == "" or #order.guid > 255 then
    return reply(400, { error = "expected a JSON Order (or an orders event) with a guid (at most 255 bytes)" })
  end
  local restaurant = ngx.req.get_headers()["toast-restaurant-external-id"]
  if type(restaurant) ~= "string" then restaurant = type(v.restaurantGuid) == "string" and v.restaurantGuid or nil end
  restaurant = restaurant or os.getenv("CRM_TOAST_RESTAURANT")
  if type(restaurant) ~= "string" or #restaurant > 255 or not restaurant:find(GUID) then
    return reply(400, { error = "no restaurant: send Toast-Restaurant-External-ID" })
  end
  local d = dict()
  local n, err = d:incr("q:tail", 1, 0)
  if not n then return reply(503, { error = "queue: " .. tostring(err) }) end
  -- the raw body, not a re-encoding: [] and {} stay as the sender wrote them
  local stored
  stored, err = d:safe_set("q:" .. n, restaurant .. "\n" .. raw)
  if not stored then
    d:safe_set("q:" .. n, "") -- a marker the drain passes over at once (when it fits)
    return reply(503, { error = "queue full (" .. tostring(err) .. "): send it again later" })
  end
  reply(202, { queued = n })
end

-- queue(): GET /orders/queue?max=N -> {through = n, items = [{seq, restaurant, order}]}
function M.queue()
  local d = dict()
  local max = math.min(tonumber(ngx.var.arg_max) or 200, M.MAX_ITEMS)
  local head, tail = d:get("q:head") or 0, d:get("q:tail") or 0
  local parts, through = {}, head
  for i = head + 1, math.min(tail, head + max) do
    local v = d:get("q:" .. i)
    if v == nil then
      local first = d:get("q:gap:" .. i)
      if not first then
        d:safe_set("q:gap:" .. i, ngx.now(), 600)
        break
      end
      if ngx.now() - first < M.GAP_WAIT then break end
    elseif v ~= "" then
      local restaurant, body = v:match("^([^\n]*)\n(.*)$")
      -- the body was decoded once when it came in, so it is JSON: it goes out as it is
      parts[#parts + 1] = '{"seq":' .. i .. ',"restaurant":' .. cjson.encode(restaurant) .. ',"order":'
        .. body .. "}"
    end
    through = i
  end
  ngx.header["Content-Type"] = "application/json"
  ngx.say('{"through":', through, ',"head":', head, ',"items":[', table.concat(parts, ","), "]}")
end

-- ack(): POST /orders/queue/ack?through=N -> {head = n}
function M.ack()
  if ngx.req.get_method() ~= "POST" then return reply(405, { error = "POST" }) end
  local d = dict()
  local n = tonumber(ngx.var.arg_through)
  if not n or n % 1 ~= 0 or n < 0 then return reply(400, { error = "through must be a queue number" }) end
  local head, tail = d:get("q:head") or 0, d:get("q:tail") or 0
  n = math.min(n, tail)
  for i = head + 1, n do
    d:delete("q:" .. i)
    d:delete("q:gap:" .. i)
  end
  if n > head then
    local ok, err = d:safe_set("q:head", n)
    if not ok then return reply(503, { error = "queue: " .. tostring(err) }) end
  end
  reply(200, { head = math.max(n, head) })
end

return M
