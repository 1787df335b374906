-- Control plane under /__sim/ (JSON in, JSON out). Not counted in stats.
--
--   POST   /__sim/reset   wipe all state, config, faults and stats   -> {"ok":true}
--   GET    /__sim/config  effective config                           -> {setting: value, ...}
--   POST   /__sim/config  merge {setting: value|null, ...}           -> effective config
--                         (null resets a setting; unknown settings or wrong types -> 400)
--   GET    /__sim/faults  pending faults                             -> {"faults":[{id,left,hits,...}],
--                         ?all=1: spent ones too                       "inflight":n}
--                         (inflight: API requests being handled right now)
--   POST   /__sim/faults  queue a fault object, or an array of them  -> {"ok":true,"faults":[...]}
--   DELETE /__sim/faults  drop all pending faults                    -> {"ok":true}
--   GET    /__sim/stats   {"total":n,"requests":{"METHOD /path":n},"logins":n,"connections":n}
--   GET    /__sim/times   {"times":[t, ...]}: arrival times of API requests (epoch seconds), in
--                         order, recorded while the setting record_times is true
--   GET    /__sim/headers {"requests":["GET /path accept,authorization,...", ...]}: each API
--                         request's header names, while the setting record_headers is true
--   GET    /__sim/secrets the credentials the simulator accepts and every Toast token it
--                         issued that is still stored -> {"toast_client_secret", "toast_client_id",
--                         "tablecheck_api_key", "tokens":[...]} (for leak checks)
--   GET    /__sim/toast/customers  every stored Toast customer, all restaurants
--                         -> {"customers":[{guid, firstName, lastName, email, phone, restaurant}]}
--
-- API modules add their own routes through `control_routes` (sim.tablecheck:
-- /__sim/tablecheck/seed, /__sim/tablecheck/fixtures; sim.toast_orders: /__sim/toast/orders_calls,
-- /__sim/toast/orders_truth).
--
-- Errors: 400/404/405 with {"error":"message"}.

local common = require("sim.common")
local faults = require("sim.faults")

local M = {}

local function fail(status, message)
  return common.send_json(status, { error = message })
end

local function json_object_body()
  local body, err = common.read_json()
  if body == nil then return nil, err end
  if type(body) ~= "table" then return nil, "request body must be a JSON object" end
  return body
end

local function reset()
  for _, d in pairs(ngx.shared) do
    d:flush_all()
    d:flush_expired(0)
  end
  return common.send_json(200, { ok = true })
end

local function post_config()
  local body, err = json_object_body()
  if not body then return fail(400, err) end
  if not common.is_object(body) then return fail(400, "config must be a JSON object") end
  local cfg, cerr = common.config_merge(body)
  if not cfg then return fail(400, cerr) end
  return common.send_json(200, cfg)
end

local function post_faults()
  local body, err = json_object_body()
  if not body then return fail(400, err) end
  local added, ferr = faults.add(body)
  if not added then return fail(400, ferr) end
  return common.send_json(200, { ok = true, faults = added })
end

-- Keys of the shared dict "sim" that start with `prefix`, sorted (at most `max`).
local function keys_with(prefix, max)
  local out = {}
  for _, k in ipairs(common.state():get_keys(0)) do
    if k:sub(1, #prefix) == prefix then out[#out + 1] = k end
    if #out >= max then break end
  end
  table.sort(out)
  return out
end

local function secrets()
  local cfg = common.config()
  local tokens = common.array()
  for _, k in ipairs(keys_with("toast:token:", 100000)) do tokens[#tokens + 1] = k:sub(13) end
  return common.send_json(200, {
    toast_client_id = cfg.toast_client_id, toast_client_secret = cfg.toast_client_secret,
    tablecheck_api_key = cfg.tablecheck_api_key, tokens = tokens,
  })
end

-- sim.toast stores customer <guid> of restaurant <rid> as JSON under toast:cust:<rid>:<guid>.
local function toast_customers()
  local d = common.state()
  local out = common.array()
  for _, k in ipairs(keys_with("toast:cust:", 1000000)) do
    local rid = k:match("^toast:cust:(.+):[^:]+$")
    local c = rid and common.get_json(d, k)
    if type(c) == "table" then
      c.restaurant = rid
      out[#out + 1] = c
    end
  end
  return common.send_json(200, { customers = out })
end

local routes = {
  ["/__sim/reset"] = { POST = reset },
  ["/__sim/secrets"] = { GET = secrets },
  ["/__sim/toast/customers"] = { GET = toast_customers },
  ["/__sim/config"] = {
    GET = function() return common.send_json(200, common.config()) end,
    POST = post_config,
  },
  ["/__sim/faults"] = {
    GET = function()
      local all = ngx.var.arg_all == "1" or ngx.var.arg_all == "true"
      return common.send_json(200, { faults = faults.list(all), inflight = faults.inflight() })
    end,
    POST = post_faults,
    DELETE = function()
      faults.clear()
      return common.send_json(200, { ok = true })
    end,
  },
  ["/__sim/stats"] = {
    GET = function() return common.send_json(200, common.stats()) end,
  },
  ["/__sim/times"] = {
    GET = function() return common.send_json(200, { times = common.array(common.times()) }) end,
  },
  ["/__sim/headers"] = {
    GET = function() return common.send_json(200, { requests = common.array(common.headers_seen()) }) end,
  },
}

for _, name in ipairs({ "sim.tablecheck", "sim.toast_orders" }) do
  local mod = common.optional_require(name)
  for path, methods in pairs(mod and mod.control_routes or {}) do routes[path] = methods end
end

function M.handle()
  local path = ngx.var.uri:gsub("/+$", "")
  local methods = routes[path]
  if not methods then return fail(404, "no control route " .. path) end
  local method = ngx.req.get_method()
  local h = methods[method]
  if not h then
    local allowed = {}
    for m in pairs(methods) do allowed[#allowed + 1] = m end
    table.sort(allowed)
    ngx.header["Allow"] = table.concat(allowed, ", ")
    return fail(405, method .. " not allowed on " .. path)
  end
  return h()
end

return M
