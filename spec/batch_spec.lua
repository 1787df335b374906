-- client:batch: many operations at once through libcurl's multi interface, results in order.
local crm = require "crm"
local core = require "crm.core"
local H = require "helper"

describe("client:batch options", function()
  it("refuses unknown or mistyped options before running anything", function()
    local c = H.toast()
    local ran = false
    local ops = { function() ran = true return 1 end }
    for _, opts in ipairs { { stop_on_eror = true }, { concurency = 4 }, { stop_on_error = "yes" } } do
      local res, err = c:batch(ops, opts)
      assert.is_nil(res)
      assert.equal("validation", err.kind)
    end
    assert.is_false(ran)
  end)
end)

describe("batch", function()
  local c, guids
  before_each(function()
    H.reset()
    c = H.toast()
    guids = {}
    for i = 1, 40 do guids[i] = assert(c:create_customer(H.customer())).guid end
  end)

  it("runs operations concurrently and returns results in input order", function()
    local ops = {}
    for i = 1, #guids do ops[i] = { "get_customer", guids[i] } end
    local results = assert(c:batch(ops, { concurrency = 16 }))
    assert.equal(40, results.succeeded)
    assert.equal(0, results.failed)
    for i = 1, #guids do assert.equal(guids[i], results[i].value.guid) end
  end)

  it("keeps one error per failed operation, in place, without cancelling the rest", function()
    local ops = {}
    for i = 1, 10 do
      ops[i] = i % 3 == 0 and { "get_customer", crm.guid() } or { "get_customer", guids[i] }
    end
    local results = assert(c:batch(ops, { concurrency = 4 }))
    assert.equal(3, results.failed)
    assert.equal(7, results.succeeded)
    for i = 1, 10 do
      if i % 3 == 0 then
        assert.equal(404, results[i].err.status)
      else
        assert.equal(guids[i], results[i].value.guid)
      end
    end
  end)

  it("accepts functions, so any flow (find_or_create) runs in a batch", function()
    local people = {}
    for i = 1, 6 do people[i] = H.customer { lastName = "Batch" } end
    people[7] = people[1] -- a repeat: found, not created twice
    local ops = {}
    for i = 1, #people do
      ops[i] = function(client) return client:find_or_create(people[i]) end
    end
    local results = assert(c:batch(ops, { concurrency = 1 }))
    assert.equal(7, results.succeeded)
    assert.equal("created", results[1].extra)
    assert.equal("found", results[7].extra)
    assert.equal(results[1].value.guid, results[7].value.guid)
    assert.equal(6, #assert(c:search_customers({ lastName = "Batch" })))
  end)

  it("logs in once for the whole batch", function()
    local fresh = H.toast()
    local ops = {}
    for i = 1, 16 do ops[i] = { "get_customer", guids[i] } end
    assert.equal(16, assert(fresh:batch(ops, { concurrency = 16 })).succeeded)
    assert.equal(2, H.stats().logins) -- one for `c` in before_each, one for `fresh`
  end)

  it("retries per operation", function()
    H.fault { path = "/crm/v1/customers/" .. guids[2], status = 503, count = 2 }
    local results = assert(c:batch({ { "get_customer", guids[1] }, { "get_customer", guids[2] } }))
    assert.equal(2, results.succeeded)
  end)

  it("stops starting new operations after a failure when asked", function()
    local ops = { { "get_customer", guids[1] }, { "get_customer", "0b7d3f0e-1111-4a2b-9c3d-00000000dead" },
                  { "get_customer", guids[3] }, { "get_customer", guids[4] } }
    local results = assert(c:batch(ops, { concurrency = 1, stop_on_error = true }))
    assert.equal(guids[1], results[1].value.guid)
    assert.equal(404, results[2].err.status)
    assert.equal("cancelled", results[3].err.code)
    assert.equal("cancelled", results[4].err.code)
    assert.equal(1, results.succeeded)
  end)

  it("overlaps slow requests", function()
    H.fault { path = "/crm/v1/customers/", delay = 0.3, count = 8 }
    local ops = {}
    for i = 1, 8 do ops[i] = { "get_customer", guids[i] } end
    local t0 = core.now()
    assert.equal(8, assert(c:batch(ops, { concurrency = 8 })).succeeded)
    -- Eight 0.3 s requests one after another take 2.4 s; overlapped they take about 0.3 s.
    assert.is_true(core.now() - t0 < 1.2)
  end)

  it("refuses bad arguments before sending", function()
    local before = H.total()
    local _, e1 = c:batch({ { "no_such_method" } })
    assert.equal("ops[1]", e1.field)
    local _, e2 = c:batch({}, { concurrency = 0 })
    assert.equal("concurrency", e2.field)
    local _, e3 = c:batch("x")
    assert.equal("ops", e3.field)
    assert.equal(before, H.total())
  end)

  it("sends a request when its operation makes it, not after the other operations' first steps", function()
    H.config { record_times = true }
    local busy_until
    local ops = {
      { "get_customer", guids[1] },
      function(client)
        -- half a second of the caller's own work before this operation's request
        busy_until = core.now() + 0.5
        while core.now() < busy_until do end -- luacheck: ignore 563
        return client:get_customer(guids[2])
      end,
    }
    local results = assert(c:batch(ops, { concurrency = 2 }))
    assert.equal(2, results.succeeded)
    local times = H.control("GET", "/__sim/times").times
    table.sort(times)
    assert.equal(2, #times)
    -- the first request went out before the second operation started its work, so the two
    -- arrived about half a second apart (together, had it waited for the second's first step)
    assert.is_true(times[2] - times[1] > 0.25, ("arrivals %.3f s apart"):format(times[2] - times[1]))
  end)

  it("reads each operation when it starts it: one the caller spoiled meanwhile fails alone", function()
    local ops
    ops = {
      function()
        ops[2][1] = "no_such_method" -- after the check, before operation 2 starts
        ops[3] = 42
        return true
      end,
      { "get_customer", guids[1] },
      { "get_customer", guids[2] },
      { "get_customer", guids[2] },
    }
    local results = assert(c:batch(ops, { concurrency = 1 }))
    assert.is_true(results[1].value)
    assert.equal("ops[2]", results[2].err.field)
    assert.equal("ops[3]", results[3].err.field)
    assert.equal(guids[2], results[4].value.guid)
    assert.equal(2, results.succeeded)
    assert.equal(2, results.failed)
  end)

  it("reads an operation's table as the caller made it; what its metamethods raise fails that operation", function()
    -- an operation whose fields come from its metatable (a class-like object) runs
    local proxy = setmetatable({}, { __index = { "get_customer", guids[1] } })
    -- one whose argument cannot be read fails alone, naming itself, when it starts
    local raising = setmetatable({ "get_customer" }, { __index = function() error("no arguments here") end })
    local results = assert(c:batch({ proxy, raising, { "get_customer", guids[2] } }, { concurrency = 1 }))
    assert.equal(guids[1], results[1].value.guid)
    assert.equal("validation", results[2].err.kind)
    assert.equal("ops[2]", results[2].err.field)
    assert.matches("no arguments here", results[2].err.message)
    assert.equal(guids[2], results[3].value.guid)
  end)

  it("refuses an operation whose method name cannot be read, before sending anything", function()
    local before = H.total()
    local unreadable = setmetatable({}, { __index = function() error("unreadable") end })
    local res, err = c:batch({ { "get_customer", guids[1] }, unreadable })
    assert.is_nil(res)
    assert.equal("validation", err.kind)
    assert.equal("ops[2]", err.field)
    assert.equal(before, H.total())
  end)

  it("reads the list of operations raw when it has a metatable: its __index cannot make it endless", function()
    local extra = 0
    local ops = setmetatable({ { "get_customer", guids[1] } }, { __index = function()
      extra = extra + 1
      return { "get_customer", guids[2] }
    end })
    local results = assert(c:batch(ops))
    assert.equal(1, results.succeeded)
    assert.equal(0, results.failed)
    assert.equal(0, extra)
  end)

  it("fails alone an operation that calls from where it cannot yield; no answer goes to another", function()
    -- a call made inside a C function's callback (string.gsub) cannot wait for the multi: that
    -- operation fails, nothing of it is left on the multi, and every other one gets its own answer
    local ops = {
      function(client)
        local res, err
        string.gsub("x", "x", function() res, err = client:get_customer(guids[1]) end)
        return res, err
      end,
    }
    for i = 2, 6 do ops[i] = { "get_customer", guids[i] } end
    for _, concurrency in ipairs { 1, 2, 4 } do
      local results = assert(c:batch(ops, { concurrency = concurrency }))
      assert.equal("validation", results[1].err.kind)
      assert.matches("yield", results[1].err.message)
      for i = 2, 6 do assert.equal(guids[i], results[i].value and results[i].value.guid) end
      assert.equal(5, results.succeeded)
    end
  end)

  it("runs the other operations when one yields its own coroutine, even the first with one worker", function()
    local ops = { function() coroutine.yield() end, { "get_customer", guids[1] }, { "get_customer", guids[2] } }
    for _, concurrency in ipairs { 1, 4 } do
      local results = assert(c:batch(ops, { concurrency = concurrency }))
      assert.equal("ops[1]", results[1].err.field)
      assert.matches("must not yield", results[1].err.message)
      assert.equal(guids[1], results[2].value.guid)
      assert.equal(guids[2], results[3].value.guid)
    end
  end)

  it("names the operation whose error value yields while it is shown (LuaJIT's tostring can)", function()
    local odd = setmetatable({}, { __tostring = function() coroutine.yield() return "odd" end })
    local results = assert(c:batch({ function() error(odd) end, { "get_customer", guids[1] } }, { concurrency = 1 }))
    assert.equal("ops[1]", results[1].err.field)
    assert.is_nil(results[1].err.code) -- not "cancelled": it ran
    assert.equal(guids[1], results[2].value.guid)
  end)

  it("fails at most the operation that waits for something not a number of seconds", function()
    -- Lua 5.4 compares a table with an __lt to a number: the transport's check let it through
    -- and the batch's loop raised out of client:batch while adding it to the clock
    local weird = setmetatable({}, { __lt = function() return true end })
    local results = assert(c:batch({
      function(client) client.clock.sleep(weird) return "slept" end,
      { "get_customer", guids[1] },
    }, { concurrency = 2 }))
    assert.equal(guids[1], results[2].value.guid)
    assert.equal(0, require("crm.batch").running)
  end)

  it("lets go of its workers when it ends by an error (a hook's timeout): collected, and calls work after", function()
    H.fault { path = "/crm/v1/customers/" .. guids[1], delay = 0.3, count = 4 }
    local alive = setmetatable({}, { __mode = "k" }) -- the workers' coroutines
    local armed = false
    local ops = {}
    for i = 1, 4 do
      ops[i] = function(client)
        alive[coroutine.running()] = true
        return client:get_customer(guids[1])
      end
    end
    ops[5] = function()
      alive[coroutine.running()] = true
      armed = true
      return true
    end
    -- the hook raises in the batch's loop (this thread) once the four are in flight; LuaJIT
    -- calls hooks only outside compiled code
    local jit = rawget(_G, "jit")
    if jit then jit.off() jit.flush() end
    local here = coroutine.running()
    debug.sethook(function()
      if armed and coroutine.running() == here then
        armed = false
        debug.sethook()
        error("deadline", 0)
      end
    end, "", 1)
    local ok, err = pcall(c.batch, c, ops, { concurrency = 8 })
    debug.sethook()
    if jit then jit.on() end
    assert.is_false(ok)
    assert.equal("deadline", err)
    collectgarbage()
    collectgarbage()
    assert.is_nil(next(alive))
    assert.equal(guids[2], assert(c:get_customer(guids[2])).guid)
  end)

  it("lets the outer batch run while a batch inside one of its operations waits", function()
    -- the outer batch's first operation logs in; the second runs a batch whose operation waits
    -- for that login: the outer loop must go on meanwhile (it stood still until the login wait
    -- ran out, the login's transfer timed out unread, and the inner batch logged in again)
    local fresh = H.toast { timeout = 1, retry = { max_attempts = 1, deadline = 1 } }
    local logins = H.stats().logins
    local results = assert(fresh:batch({
      { "get_customer", guids[1] },
      function(client)
        local inner = assert(client:batch({ { "get_customer", guids[2] } }))
        return inner[1].value, inner[1].err
      end,
    }, { concurrency = 2 }))
    assert.equal(guids[1], results[1].value.guid)
    assert.equal(guids[2], results[2].value.guid)
    assert.equal(logins + 1, H.stats().logins)
  end)

  it("turns a raised error inside an operation into an error value", function()
    local results = assert(c:batch({ function() error("boom") end, { "get_customer", guids[1] } }))
    assert.equal("validation", results[1].err.kind)
    assert.matches("boom", results[1].err.message)
    assert.equal(guids[1], results[2].value.guid)
  end)

  it("applies validation inside operations without sending", function()
    local before = H.total()
    local results = assert(c:batch({ { "get_customer", "../x" } }))
    assert.equal("customerId", results[1].err.field)
    assert.equal(before, H.total())
  end)

  it("imports a CSV with the example script, creating nobody twice", function()
    local csv = os.tmpname()
    local f = assert(io.open(csv, "w"))
    f:write("firstName,lastName,email,phone\r\n")
    for i = 1, 30 do f:write(("Guest%d,\"Smith, Jr\",guest%d@example.org,\n"):format(i, i)) end
    f:write("Nope,,,\n") -- no last name, no contact: refused before sending
    f:close()
    local lua = rawget(_G, "jit") and "luajit" or "lua5.4"
    local function run()
      local p = assert(io.popen(lua .. " examples/toast_import_csv.lua " .. csv .. " 2>&1"))
      local out = p:read("a")
      p:close()
      return out
    end
    local before = H.count("POST /crm/v1/customers")
    local first = run()
    assert.matches("imported 31 rows: 30 created, 0 found, 1 failed", first, 1, true)
    assert.matches("line 32: crm validation: lastName", first, 1, true)
    local second = run()
    assert.matches("imported 31 rows: 0 created, 30 found, 1 failed", second, 1, true)
    assert.equal(before + 30, H.count("POST /crm/v1/customers"))
    local one = assert(c:search_customers { email = "guest7@example.org" })
    assert.equal("Smith, Jr", one[1].lastName)
    os.remove(csv)
  end)
end)

describe("batch operation tables", function()
  it("passes the arguments an operation's __index supplies when there are three", function()
    H.reset()
    local tc = H.tablecheck()
    local a = assert(tc:create_customer(H.tc_customer()))
    local b = assert(tc:create_customer(H.tc_customer()))
    -- the options come from the metatable: dropping them would merge for real
    local mixed = setmetatable({ "merge_customers", a.id, { b.id } }, { __index = { [4] = { dry_run = true } } })
    local proxy = setmetatable({}, { __index = { "merge_customers", a.id, { b.id }, { dry_run = true } } })
    local results = assert(tc:batch({ mixed, proxy }, { concurrency = 1 }))
    for i = 1, 2 do
      assert.equal("PUT", results[i].value.method)
      assert.equal("/customers/" .. a.id, results[i].value.path)
    end
    assert.equal(0, H.count("PUT /api/crm/v1/customers/" .. a.id))
    assert.equal(b.id, assert(tc:get_customer(b.id)).id)
  end)

  it("reads at most three arguments through __index: one that answers for ever cannot make them endless", function()
    H.reset()
    local c = H.toast()
    local guid = assert(c:create_customer(H.customer())).guid
    local reads = 0
    local forever = setmetatable({ "get_customer" }, { __index = function()
      reads = reads + 1
      if reads > 100 then error("read for ever") end
      return guid
    end })
    local results = assert(c:batch({ forever }))
    assert.equal(guid, results[1].value.guid)
    assert.equal(3, reads)
  end)
end)
