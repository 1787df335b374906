-- Control plane under /__sim/ (JSON in, JSON out). Not counted in stats.
--
--   POST   /__sim/reset   wipe all state, config, faults and stats   -> {"ok":true}
--   GET    /__sim/config  effective config                           -> {setting: value, ...}
--   POST   /__sim/config  merge {setting: value|null, ...}           -> effective config
--                         (null resets a setting; unknown settings or wrong types -> 400)
--   GET    /__sim/faults  pending faults                             -> {"faults":[{id,left,...}]}
--   POST   /__sim/faults  queue a fault object, or an array of them  -> {"ok":true,"faults":[...]}
--   DELETE /__sim/faults  drop all pending faults                    -> {"ok":true}
--   GET    /__sim/stats   {"total":n,"requests":{"METHOD /path":n},"logins":n,"connections":n}
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

local routes = {
  ["/__sim/reset"] = { POST = reset },
  ["/__sim/config"] = {
    GET = function() return common.send_json(200, common.config()) end,
    POST = post_config,
  },
  ["/__sim/faults"] = {
    GET = function() return common.send_json(200, { faults = faults.list() }) end,
    POST = post_faults,
    DELETE = function()
      faults.clear()
      return common.send_json(200, { ok = true })
    end,
  },
  ["/__sim/stats"] = {
    GET = function() return common.send_json(200, common.stats()) end,
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
