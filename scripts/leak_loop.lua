-- make check-valgrind: N requests through one client (hits, misses, decode and transport errors)
-- and many short-lived clients, so valgrind sees every path that allocates in the C core.
local crm = require "crm"
local n = tonumber(arg[1]) or 10000
local base = "http://127.0.0.1:" .. (os.getenv("CRM_SIM_PORT") or "18080")
local opts = { base_url = base, restaurant_guid = "6f1d2d0e-8f65-4d7b-9b59-0f1f0c8e0a11",
               client_id = "sim-client", client_secret = "sim-secret",
               retry = { max_attempts = 1 } }
local c = assert(crm.toast(opts))
local cust = assert(c:create_customer { firstName = "V", lastName = "G", email = "vg@example.org" })
local ok, failed = 0, 0
for i = 1, n do
  local res
  if i % 10 == 0 then
    res = c:get_customer(crm.guid()) -- a 404 from the server
  else
    res = c:get_customer(cust.guid)
  end
  if res then ok = ok + 1 else failed = failed + 1 end
end
c:close()
for _ = 1, 100 do
  local short = assert(crm.toast(opts))
  short:close()
  assert(crm.toast(opts)) -- left to the collector
end
collectgarbage()
local dead = assert(crm.toast { base_url = "http://127.0.0.1:1",
                                restaurant_guid = "6f1d2d0e-8f65-4d7b-9b59-0f1f0c8e0a11",
                                token = "tok-test", retry = { max_attempts = 1 } })
assert(not dead:get_customer(crm.guid()))
print(("leak loop: %d requests, %d ok, %d errors"):format(n, ok, failed))
