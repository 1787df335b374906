-- One of the plain LuaJIT processes of spec/redis_store_spec.lua: a Toast client over the Redis
-- store of examples/redis_store.lua (or none, with "alone"), making `n` calls at a shared rate.
--   luajit spec/redis_worker.lua SIM_PORT REDIS_PORT N shared|alone [EMAIL]
-- With EMAIL: one find_or_create of that guest instead of N searches.
local crm = require "crm"
local redis_store = require "redis_store"

local sim_port, redis_port, n, mode = tonumber(arg[1]), tonumber(arg[2]), tonumber(arg[3]), arg[4]
local store = mode == "shared" and redis_store.new { port = redis_port } or nil
local toast = assert(crm.toast {
  base_url = "http://127.0.0.1:" .. sim_port, restaurant_guid = "6f1d2d0e-8f65-4d7b-9b59-0f1f0c8e0a11",
  client_id = "sim-client", client_secret = "sim-secret", timeout = 10,
  store = store, rate = { per_second = 20, burst = 4 },
  debug = os.getenv("CRM_DEBUG") and function(l) io.stderr:write(l, "\n") end or nil,
})
if arg[5] then
  local guest, err, how = toast:find_or_create { firstName = "Redis", lastName = "Flight", email = arg[5] }
  print(guest and how or tostring(err))
  toast:close()
  -- the state closed too (finalizers run): under make check-asan, LeakSanitizer sees nothing left
  os.exit(guest and 0 or 1, true)
end
local failed = 0
for i = 1, n do
  local res, err = toast:search_customers { email = ("redis%d@example.org"):format(i) }
  if not res then
    failed = failed + 1
    io.stderr:write(tostring(err), "\n")
  end
end
print(("done %d failed %d"):format(n, failed))
toast:close()
os.exit(failed == 0 and 0 or 1, true)
