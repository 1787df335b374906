-- Entry point for every simulated API request (everything outside /__sim/):
-- count it, apply a queued fault if one matches, then hand it to the API
-- module that owns the path prefix.

local common = require("sim.common")
local faults = require("sim.faults")

local M = {}

local toast = require("sim.toast")
local tablecheck = common.optional_require("sim.tablecheck")
-- Toast orders, configuration, labor and menus (guest history from orders)
local toast_orders = common.optional_require("sim.toast_orders")

-- prefix -> module with handle(method, path)
local PREFIXES = {
  { "/authentication/", toast },
  { "/crm/", toast },
  { "/api/", tablecheck },
  { "/orders/", toast_orders },
  { "/config/", toast_orders },
  { "/labor/", toast_orders },
  { "/menus/", toast_orders },
}

function M.handle()
  local method = ngx.req.get_method()
  local path = ngx.var.uri
  common.count_request(method, path)
  if toast_orders then toast_orders.observe(method, path) end -- records ordersBulk arrivals
  if faults.apply(method, path) then return end
  for _, p in ipairs(PREFIXES) do
    local prefix, mod = p[1], p[2]
    if mod and path:sub(1, #prefix) == prefix then
      return mod.handle(method, path)
    end
  end
  return common.toast_error(404, "no such endpoint")
end

return M
