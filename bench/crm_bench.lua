-- make bench: one crm measurement per process, printed as "key value" lines.
--   crm_bench.lua seq SECONDS GUID      sequential get_customer, body decoded
--   crm_bench.lua batch SECONDS GUID    get_customer through client:batch at concurrency 16
--   crm_bench.lua create SECONDS        Toast create_customer
--   crm_bench.lua export N              TableCheck scroll export of N customers, to /dev/null
--   crm_bench.lua require               time to require "crm"
--   crm_bench.lua count N GUID          N sequential get_customer calls (for callgrind)
--   crm_bench.lua batchcount N GUID     N get_customer calls in one client:batch at concurrency 16
--   crm_bench.lua tccount N ID          N sequential TableCheck get_customer calls
--   crm_bench.lua decode N FILE         N cjson decodes of FILE's text (the floor of decoding)
--   crm_bench.lua tcbatchcount N ID     N TableCheck get_customer calls in one client:batch at 16
--   crm_bench.lua searchcount N SIZE RESTAURANT   N Toast search_customers pages of SIZE
--                                       (lastName Pagebench) in that restaurant
--   crm_bench.lua luaonly N toast|tc    N get_customer calls whose exchange is a stand-in that
--                                       answers at once: crm's own Lua per call, nothing else
--   crm_bench.lua countkeep N GUID      N sequential get_customer calls, every result kept as
--                                       client:batch keeps it ({value = customer})
--   crm_bench.lua coswitch N            N coroutine resume + yield round trips carrying what a
--                                       batch's call carries (10 values out, 5 back): the floor
--                                       of running an operation as a coroutine
local mode = arg[1]
if mode == "coswitch" then
  local mark = {}
  local co = coroutine.create(function()
    while true do coroutine.yield(mark, 1, 2, 3, 4, 5, 6, 7, 8, 9) end
  end)
  local resume = coroutine.resume
  for _ = 1, tonumber(arg[2]) do resume(co, 1, 2, 3, 4, 5) end
  return
end
if mode == "require" then
  local t0 = os.clock()
  require "crm"
  print(("require_ms %.3f"):format((os.clock() - t0) * 1000))
  return
end

local crm = require "crm"
local core = require "crm.core"
local base = "http://127.0.0.1:" .. (os.getenv("CRM_SIM_PORT") or "18080")

local function toast(restaurant)
  return assert(crm.toast { base_url = base, restaurant_guid = restaurant or "6f1d2d0e-8f65-4d7b-9b59-0f1f0c8e0a11",
                            client_id = "sim-client", client_secret = "sim-secret" })
end

local function peak_rss_kb()
  local f = io.open("/proc/self/status")
  if not f then return 0 end
  local s = f:read("a")
  f:close()
  return tonumber(s:match("VmHWM:%s*(%d+)")) or 0
end

local seconds = tonumber(arg[2])
if mode == "decode" then
  local cjson = require "cjson"
  local f = assert(io.open(arg[3], "rb"))
  local text = f:read("*a")
  f:close()
  for _ = 1, seconds do assert(type(cjson.decode(text)) == "table") end
  return
end
if mode == "batchcount" then
  local c, guid = toast(), arg[3]
  assert(c:get_customer(guid))
  local ops = {}
  for i = 1, seconds do ops[i] = { "get_customer", guid } end
  local r = assert(c:batch(ops, { concurrency = 16 }))
  assert(r.failed == 0, "batch failures")
  return
end
if mode == "tcbatchcount" then
  local tc = assert(crm.tablecheck { base_url = base .. "/api/crm/v1", api_key = "sim-tablecheck-key" })
  assert(tc:get_customer(arg[3]))
  local ops = {}
  for i = 1, seconds do ops[i] = { "get_customer", arg[3] } end
  local r = assert(tc:batch(ops, { concurrency = 16 }))
  assert(r.failed == 0, "batch failures")
  return
end
if mode == "searchcount" then
  local c, size = toast(arg[4]), tonumber(arg[3])
  for _ = 1, seconds do
    local page = assert(c:search_customers({ lastName = "Pagebench" }, { pageSize = size }))
    assert(#page == size, "search page size")
  end
  return
end
if mode == "luaonly" then
  -- The client's handle replaced by a stand-in whose call answers at once with a decoded
  -- record: what is left is crm's Lua from the method to the exchange and back.
  local which = arg[3]
  local answer = which == "tc" and { customer = { id = "x", phones = {}, emails = {},
                                                  phone_objects = {}, email_objects = {} } }
    or { guid = "x" }
  local stand_in = { call = function() return 200, answer, nil, true end, close = function() end }
  local c, id
  if which == "tc" then
    c = assert(crm.tablecheck { base_url = base .. "/api/crm/v1", api_key = "sim-tablecheck-key" })
    id = "5ed64e249551e80639a4d995"
  else
    c = assert(crm.toast { base_url = base, restaurant_guid = "6f1d2d0e-8f65-4d7b-9b59-0f1f0c8e0a11",
                           token = "bench-token" })
    id = "583110ce-e5ca-4368-a1c4-60828332214c"
  end
  c.transport.handle, c.engine.handle = stand_in, stand_in
  for _ = 1, seconds do assert(c:get_customer(id)) end
  return
end
if mode == "tccount" then
  local tc = assert(crm.tablecheck { base_url = base .. "/api/crm/v1", api_key = "sim-tablecheck-key" })
  for _ = 1, seconds do assert(tc:get_customer(arg[3])) end
  return
end
if mode == "count" then
  -- A fixed number of requests, for instruction counts under callgrind.
  local c, guid = toast(), arg[3]
  for _ = 1, seconds do assert(c:get_customer(guid)) end
elseif mode == "countkeep" then
  local c, guid = toast(), arg[3]
  local keep = {}
  for i = 1, seconds do keep[i] = { value = assert(c:get_customer(guid)) } end
elseif mode == "seq" then
  local c, guid = toast(), arg[3]
  assert(c:get_customer(guid))
  local n, t0 = 0, core.now()
  while core.now() - t0 < seconds do
    assert(c:get_customer(guid))
    n = n + 1
  end
  print(("seq_rps %.1f"):format(n / (core.now() - t0)))
elseif mode == "batch" then
  local c, guid = toast(), arg[3]
  local ops = {}
  for i = 1, 2000 do ops[i] = { "get_customer", guid } end
  assert(c:get_customer(guid))
  local n, t0 = 0, core.now()
  while core.now() - t0 < seconds do
    local r = assert(c:batch(ops, { concurrency = 16 }))
    assert(r.failed == 0, "batch failures")
    n = n + #ops
  end
  print(("batch_rps %.1f"):format(n / (core.now() - t0)))
elseif mode == "create" then
  local c = toast()
  local n, t0 = 0, core.now()
  while core.now() - t0 < seconds do
    n = n + 1
    assert(c:create_customer { firstName = "B", lastName = "Bench", email = "b" .. n .. "@example.org" })
  end
  print(("create_rps %.1f"):format(n / (core.now() - t0)))
elseif mode == "export" then
  local want = assert(tonumber(arg[2]))
  local tc = assert(crm.tablecheck { base_url = base .. "/api/crm/v1",
                                     api_key = "sim-tablecheck-key" })
  local cjson = require "cjson"
  local out = assert(io.open("/dev/null", "w"))
  local n, bytes, t0, work = 0, 0, core.now(), 0
  local it = tc:iter_search_customers {}
  while true do
    local page, err = it:next_page()
    if page == false then error(tostring(err)) end
    if not page then break end
    -- The caller's share of the time is what prefetching the next page could hide at most.
    local w0 = core.now()
    for i = 1, #page do
      local line = cjson.encode(page[i])
      bytes = bytes + #line + 1
      out:write(line, "\n")
    end
    n = n + #page
    work = work + (core.now() - w0)
  end
  out:close()
  local took = core.now() - t0
  assert(n == want, ("exported %d of %d"):format(n, want))
  print(("export_n %d"):format(n))
  print(("export_cps %.1f"):format(n / took))
  print(("export_mbps %.2f"):format(bytes / took / 1e6))
  print(("export_rss_kb %d"):format(peak_rss_kb()))
  print(("export_work_share %.3f"):format(work / took))
end
