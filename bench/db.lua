-- bench/db.lua URL RESTAURANTS: orders per second into a database (crm.toast.db). The orders are
-- read once from the simulator (twelve weeks of its one restaurant, spacing compressed), then
-- written under RESTAURANTS restaurant GUIDs, window by window as a backfill hands them out; then
-- the same again (a rerun: every order is the same version, so nothing is written) and the
-- reports. Prints "name value" lines.
local crm = require "crm"
local core = require "crm.core"
local db = require "crm.toast.db"

local url, n = arg[1], tonumber(arg[2] or "100")
local base = "http://127.0.0.1:" .. (os.getenv("CRM_SIM_PORT") or "18080")
local toast = assert(crm.toast { base_url = base, restaurant_guid = "6f1d2d0e-8f65-4d7b-9b59-0f1f0c8e0a11",
                                 client_id = "sim-client", client_secret = "sim-secret" })
local ctx = assert(toast:get_guest_context())
local windows = {}
assert(toast:backfill_orders { spacing = 0, allow_fast = true, profiles = false,
  on_window = function(orders) windows[#windows + 1] = orders end })
toast:close()

local sink = assert(db.open(url))
local function restaurant(i) return ("00000000-0000-4000-8000-%012d"):format(i) end
local function pass()
  local total, written = 0, 0
  local t0 = core.now()
  for i = 1, n do
    for _, orders in ipairs(windows) do
      written = written + assert(sink:write_orders(restaurant(i), orders, ctx))
      total = total + #orders
    end
  end
  return total, written, core.now() - t0
end
local total, written, secs = pass()
print("db_orders", total)
print("db_written", written)
print("db_orders_per_s", ("%.1f"):format(total / secs))
local _, rewritten, resecs = pass()
print("db_rerun_written", rewritten)
print("db_rerun_orders_per_s", ("%.1f"):format(total / resecs))
local t0 = core.now()
local rows = 0
for _, name in ipairs { "guests", "last_orders", "favourite_items", "servers" } do
  rows = rows + #assert(sink:report(name))
end
print("db_reports_ms", ("%.1f"):format((core.now() - t0) * 1000))
print("db_report_rows", rows)
sink:close()
-- peak RSS of this process (the orders of one restaurant are held; the rest streams through)
local f = io.open("/proc/self/status")
local status = f and f:read("*a") or ""
if f then f:close() end
print("db_peak_rss_kb", status:match("VmHWM:%s*(%d+)") or "?")
