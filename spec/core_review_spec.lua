-- What the adversarial review of the C-core change found, each held down by a spec: header sets
-- outliving a token change, the retry deadline counting the fast first attempt, debug lines
-- without query strings, transports of the caller's that have a `call` method, overridden
-- methods in a batch, error values that cannot be shown, clients with other options inside a
-- batch, and `[]` where an object belongs.
local H = require "helper"
local core = require "crm.core"
local crm = require "crm"

describe("the C-core paths, after review", function()
  before_each(function() H.reset() end)

  it("keeps a header set usable after a token change: queued reads still go out", function()
    local store = require("crm.store").new_local(core.time)
    local a = H.toast { store = store, rate = { per_second = 20, burst = 1 } }
    local b = H.toast { store = store }
    local ids = {}
    for i = 1, 3 do ids[i] = assert(a:create_customer(H.customer())).guid end
    local victim = assert(b:create_customer(H.customer())).guid
    H.fault { path = "/crm/v1/customers/" .. victim, status = 401, count = 1 }
    local ops = {}
    for i = 1, 10 do ops[i] = { "get_customer", ids[(i - 1) % 3 + 1] } end
    table.insert(ops, 3, function() return b:get_customer(victim) end)
    local r = assert(a:batch(ops, { concurrency = 8 }))
    for i = 1, #ops do assert.is_nil(r[i].err, r[i].err and tostring(r[i].err)) end
    assert.equal(11, r.succeeded)
  end)

  it("counts the fast first attempt within the retry deadline", function()
    local t = H.toast { timeout = 0.5, retry = { max_attempts = 10, base_delay = 0.2, max_delay = 0.2,
                                                 deadline = 1 } }
    local c = assert(t:create_customer(H.customer()))
    H.fault { path = "/crm/v1/customers/" .. c.guid, delay = 2, status = 500, count = 50 }
    local t0 = core.now()
    local v, err = t:get_customer(c.guid)
    local took = core.now() - t0
    assert.is_nil(v)
    assert.equal(2, err.attempts)
    assert.is_true(took < 1.6, ("took %.2fs"):format(took))
  end)

  it("writes debug lines without query strings", function()
    local lines = {}
    local tc = assert(crm.tablecheck { base_url = H.tablecheck_url, api_key = H.tablecheck_key,
                                       debug = function(l) lines[#lines + 1] = l end })
    assert(tc:list_customers { updated_at_min = "2024-01-01T00:00:00Z" })
    assert.is_true(#lines >= 2)
    for _, l in ipairs(lines) do
      assert.is_nil(l:find("?", 1, true), l)
      assert.is_nil(l:find("updated_at_min", 1, true), l)
    end
  end)

  it("uses a caller's transport through request() even when it has a call method", function()
    local T = {}
    T.__index = T
    local seen = {}
    function T.request(_, method, url)
      seen[#seen + 1] = method .. " " .. url
      return 200, {}, '{"customer":{"id":"c1"}}'
    end
    function T.call() error("call() must not be used") end
    function T.close() end
    local tc = assert(crm.tablecheck { base_url = "http://y.test/api/crm/v1", api_key = "key-abcdef",
                                       transport = setmetatable({}, T) })
    local c = assert(tc:get_customer("c1"))
    assert.equal("c1", c.id)
    assert.same({ "GET http://y.test/api/crm/v1/customers/c1" }, seen)
  end)

  it("runs an instance's own get_customer in a batch (a method the caller replaced is called as it is)", function()
    local t = H.toast()
    local g = assert(t:create_customer(H.customer())).guid
    local calls = 0
    local original = t.get_customer
    t.get_customer = function(self, id)
      calls = calls + 1
      return original(self, id)
    end
    local r = assert(t:batch({ { "get_customer", g }, { "get_customer", g } }))
    assert.equal(2, r.succeeded)
    assert.equal(2, calls)
  end)

  it("reports an operation whose error cannot be shown, and runs the rest", function()
    local bad = setmetatable({}, { __tostring = function() error("no") end })
    local t = H.toast()
    local ops = { function() error(bad) end, function() return 1 end, function() return 2 end }
    local r = assert(t:batch(ops, { concurrency = 1 }))
    assert.equal(2, r.succeeded)
    assert.equal("validation", r[1].err.kind)
    assert.matches("cannot be shown", r[1].err.message, 1, true)
    assert.equal(2, r[3].value)
  end)

  it("keeps another client's options inside a batch (its own timeout, not the owner's)", function()
    local a = H.toast { timeout = 5 }
    local b = H.toast { timeout = 0.3, retry = { max_attempts = 1 } }
    local g = assert(a:create_customer(H.customer())).guid
    H.fault { path = "/crm/v1/customers/" .. g, delay = 1.2, count = 1 }
    local r = assert(a:batch { function() return b:get_customer(g) end })
    assert.equal(0, r.succeeded)
    assert.equal("timeout", r[1].err.kind)
  end)

  it("hashes under PUC Lua 5.1 too (a 5.1 tree's bin/crm runs there), with the published digests", function()
    if not H.sh("command -v lua5.1") then return pending("lua5.1 is not installed") end
    local out = H.sh_out(H.CLEAN_ENV .. "LUA_PATH='lua/?.lua;;' lua5.1 -e 'local h = require \"crm.hash\";"
      .. " print(h.hex(h.sha256(\"abc\")),"
      .. " h.hex(h.hmac_sha1(\"key\", \"The quick brown fox jumps over the lazy dog\")))' 2>&1")
    assert.equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\t"
      .. "de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9\n", out)
  end)

  it("refuses [] where Toast answers a customer object", function()
    local t = H.toast()
    local g = assert(t:create_customer(H.customer())).guid
    H.fault { path = "/crm/v1/customers/" .. g, status = 200, body = "[]", count = 4 }
    local v, err = t:get_customer(g)
    assert.is_nil(v)
    assert.equal("decode", err.kind)
  end)
end)
