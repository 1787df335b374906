-- The many-restaurant backfill through the simulator (bench/restaurants.sh runs it):
--   restaurants.lua N FACTOR CONCURRENCY [GUID]
-- seeds N restaurants (twelve weeks of orders each), then backfills all of them (or only GUID)
-- with backfill_restaurants into the file sink (or the database BENCH_SINK names), CONCURRENCY
-- restaurants at once, on a clock
-- FACTOR times faster than real time:
-- Toast's 5 s spacing holds in the client's time and takes 5 / FACTOR real seconds.
-- Prints one line: restaurants orders calls wall_seconds orders_per_second peak_rss_kb
local core = require "crm.core"
local crm = require "crm"
local batch = require "crm.batch"
local transports = require "crm.transport"

local n, factor, concurrency, only = tonumber(arg[1]), tonumber(arg[2]) or 100, tonumber(arg[3]), arg[4]
local port = tonumber(os.getenv("CRM_SIM_PORT") or "18080")
local base = "http://127.0.0.1:" .. port
local control = assert(core.new { timeout = 30 })
local function sim(method, path, body)
  local status, _, raw = control:request(method, base .. path, { "Content-Type: application/json" },
    body and crm.json.encode(body) or nil)
  assert(status == 200, path .. " answered " .. tostring(status))
  return crm.json.decode(raw)
end

sim("POST", "/__sim/reset", {})
sim("POST", "/__sim/config", { toast_restaurants = n, toast_orders_days = 84, toast_orders_per_day = 6,
                               toast_orders_end_date = "2024-05-01" })
local guids = {}
for i, r in ipairs(sim("GET", "/__sim/toast/restaurants").restaurants) do guids[i] = r.guid end
if only then guids = { only } end

-- The curl transport, on a clock FACTOR times faster: now() runs fast, sleep(s) waits s / FACTOR
-- (yielding inside client:batch as the curl clock does).
local real = assert(transports.new("curl", { timeout = 30 }))
local clock = {
  now = function() return batch.clock.now() * factor end,
  sleep = function(s) return transports.curl_clock.sleep((s or 0) / factor) end,
  yields = transports.curl_clock.yields,
}
local transport = { clock = clock, options_key = real.options_key,
                    request = function(_, ...) return real:request(...) end,
                    close = function() return real:close() end }
local toast = assert(crm.toast { base_url = base, restaurant_guid = guids[1], client_id = "sim-client",
                                 client_secret = "sim-secret", transport = transport, timeout = 30 })
-- BENCH_SINK=URL (sqlite:PATH, postgresql://...): into crm.toast.db instead of the file sink.
local sink_url, sink = os.getenv("BENCH_SINK"), nil
if sink_url and sink_url ~= "" then sink = assert(require("crm.toast.db").open(sink_url)) end
local dir = os.tmpname()
os.remove(dir)
local started = core.now()
local res = assert(toast:backfill_restaurants(guids, { dir = not sink and dir or nil, sink = sink,
                                                          guest_context = sink ~= nil, now = 1714521600,
                                                          concurrency = math.min(concurrency or #guids, #guids) }))
local wall = core.now() - started
if sink then sink:close() end
for _, r in ipairs(res.restaurants) do
  if r.err then error(("restaurant %s failed: %s"):format(r.restaurant_guid, tostring(r.err))) end
end
os.execute("rm -rf '" .. dir .. "'")
local hwm = 0
for l in io.lines("/proc/self/status") do
  local kb = l:match("^VmHWM:%s*(%d+)")
  if kb then hwm = tonumber(kb) end
end
print(("%d %d %d %.3f %.0f %d"):format(#guids, res.orders, res.calls, wall, res.orders / wall, hwm))
