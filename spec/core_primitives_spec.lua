-- The C core's primitives (src/ops.c, src/json.c, src/core.c): operations as data, the request
-- builder, the per-client header lists, answer decoding with the array marker, client:batch's
-- reads by id, and what `require "crm"` loads. Against the simulator where HTTP is involved.
local H = require "helper"
local core = require "crm.core"
local http = require "crm.http"
local json = require "crm.json"
local validate = require "crm.validate"

local GUID = "0b7d3f0e-1111-4a2b-9c3d-000000000001"

local function subprocess(code)
  local f = assert(io.popen(H.lua .. " -e " .. ("%q"):format(code) .. " 2>&1"))
  local out = f:read("*a")
  f:close()
  return out
end

describe("crm.core operations", function()
  it("names every primitive of the four families, and each builds its method and path", function()
    for _, name in ipairs {
      "toast.create_customer", "toast.get_customer", "toast.search_customers",
      "toast.get_credit_summary", "toast.list_customer_credit_transactions",
      "toast.list_credit_transactions", "toast.get_credit_transaction", "toast.add_credit",
      "tablecheck.customers.list", "tablecheck.customers.show", "tablecheck.customers.create",
      "tablecheck.customers.amend", "tablecheck.customers.delete", "tablecheck.customer_search",
    } do
      assert.is_number(core.ops[name], name)
    end
    local method, url, fresh = core.build(core.ops["toast.get_customer"], "http://h", GUID)
    assert.equal("GET", method)
    assert.equal("http://h/crm/v1/customers/" .. GUID, url)
    assert.is_false(fresh)
    method, url, fresh = core.build(core.ops["tablecheck.customers.delete"], "http://h/api", "abc")
    assert.equal("DELETE", method)
    assert.equal("http://h/api/customers/abc", url)
    assert.is_true(fresh) -- a DELETE gets a connection of its own
    method, url = core.build(core.ops["toast.add_credit"], "http://h", GUID)
    assert.equal("POST", method)
    assert.equal("http://h/crm/v1/customers/" .. GUID .. "/creditTransactions", url)
  end)

  it("refuses ids the API's rule refuses, naming the argument, and only those", function()
    local toast_get = core.ops["toast.get_customer"]
    for _, bad in ipairs { "x", GUID .. "0", GUID:gsub("-", "_"), 42, {}, true } do
      local ok, field = core.build(toast_get, "http://h", bad)
      assert.is_false(ok)
      assert.equal("customerId", field)
    end
    local show = core.ops["tablecheck.customers.show"]
    local samples = { "abc", "a/b", "a?b", "a#b", "50%", "..", ".", "a..b", "a b", "a\0b", "",
                      ("x"):rep(128), ("x"):rep(129), "\195\169t\195\169", "\255", "a\\b", "a.b",
                      "a@b+c", 7 }
    for _, id in ipairs(samples) do
      local ok, field = core.build(show, "http://h", id)
      local lua_rule = validate.id(id, "customer_id")
      if lua_rule then
        assert.is_false(ok, tostring(id))
        assert.equal("customer_id", field)
      else
        assert.equal("GET", ok, tostring(id))
      end
    end
  end)

  it("writes the query as crm.http.query does: sorted keys, whole numbers, lists, escapes", function()
    local list = core.ops["toast.list_credit_transactions"]
    local queries = {
      { page = 2, pageSize = 50 },
      { page = 2.0, startDate = "2024-01-01T00:00:00.000+0000" },
      { b = true, a = false, c = "x y/z&", d = -0.0 },
      { ids = { "a", "b,c" }, n = 1.5, big = 2 ^ 53, neg = -7 },
      { ["k ey"] = "\195\169" },
    }
    for _, q in ipairs(queries) do
      local _, url = core.build(list, "http://h", nil, nil, q)
      assert.equal("http://h/crm/v1/creditTransactions" .. http.query(q), url)
    end
    local ok, field = core.build(list, "http://h", nil, nil, { f = function() end })
    assert.is_false(ok)
    assert.equal("query", field)
  end)
end)

describe("crm.core header sets", function()
  it("refuses header lines with CR, LF, NUL or non-ASCII bytes, and closes twice", function()
    local hs, err = core.header_set({ "A: b\r\nX: y" }, {})
    assert.is_nil(hs)
    assert.equal("bad_header", err.name)
    assert.is_nil((core.header_set({}, { "A: \195\169" })))
    hs = assert(core.header_set({ "A: b" }, { "A: b", "Content-Type: application/json" }))
    hs:close()
    hs:close()
  end)

  it("sends the client's header lines: no Content-Type or Expect without a body", function()
    H.reset()
    H.config { record_headers = true }
    local toast = H.toast()
    local created = assert(toast:create_customer(H.customer()))
    assert(toast:get_customer(created.guid))
    assert(toast:get_customer(created.guid))
    local seen = H.control("GET", "/__sim/headers").requests
    local gets, posts = {}, {}
    for _, line in ipairs(seen) do
      local method, path, names = line:match("^(%S+) (%S+) (%S*)$")
      if path:find("^/crm/v1/customers/") then gets[#gets + 1] = names end
      if method == "POST" and path == "/crm/v1/customers" then posts[#posts + 1] = names end
    end
    assert.equal(2, #gets)
    for _, names in ipairs(gets) do
      assert.equal("accept,authorization,host,toast-restaurant-external-id,user-agent", names)
    end
    assert.equal(1, #posts)
    assert.matches("content%-type", posts[1])
    assert.is_nil(posts[1]:find("expect", 1, true))
    toast:close()
  end)
end)

describe("crm.core.decode", function()
  local mt = json.array_mt
  it("marks every array, empty ones included, and nothing else", function()
    local cases = {
      { '[]', function(v) return getmetatable(v) == mt and #v == 0 end },
      { '{}', function(v) return getmetatable(v) == nil and next(v) == nil end },
      { '[true]', function(v) return getmetatable(v) == mt and v[1] == true and #v == 1 end },
      { '[ true ,[]]', function(v) return v[1] == true and getmetatable(v[2]) == mt and #v[2] == 0 end },
      { '[[]]', function(v) return #v == 1 and getmetatable(v[1]) == mt and #v[1] == 0 end },
      { '{"a":[],"b":{},"c":"[]"}', function(v)
          return getmetatable(v.a) == mt and getmetatable(v.b) == nil and v.c == "[]" end },
      { '["[", "\\"[]", [ ]]', function(v) return v[1] == "[" and v[2] == '"[]' and #v[3] == 0 end },
      { '{"x":[null,{"y":null}]}', function(v) return v.x[1] == json.null and v.x[2].y == nil end },
    }
    for _, c in ipairs(cases) do
      local v = assert(core.decode(c[1]))
      assert.is_true(c[2](v), c[1])
    end
  end)

  it("refuses what is not JSON and numbers beyond a double, with crm.http's messages", function()
    for _, bad in ipairs { '[', '{"a":', '"open', 'nul', '[1,]', '' } do
      local v, msg = core.decode(bad)
      assert.is_nil(v)
      assert.equal("response body is not valid JSON", msg)
    end
    local v, msg = core.decode('{"a":[1e400]}')
    assert.is_nil(v)
    assert.equal("response body has a number out of range", msg)
    assert.equal("1e400", core.decode('{"a":"1e400"}').a)
  end)
end)

describe("crm.core multi", function()
  it("wait_into hands back each finished transfer's owner in place of its slot, and forgets it", function()
    local m = assert(core.multi { size = 3, timeout = 10 })
    local owners, done, got = {}, {}, {}
    local who = { {}, {}, {} }
    for i = 1, 3 do
      local slot = assert(m:submit("GET", H.base_url .. "/__sim/times", {}, nil))
      owners[slot] = who[i]
    end
    local left = 3
    while left > 0 do
      local count = m:wait_into(done, 1, owners)
      for k = 1, 6 * count, 6 do
        got[#got + 1] = done[k]
        assert.equal(200, done[k + 1])
        assert.is_string(done[k + 3])
      end
      left = left - count
    end
    -- each owner came back once, and nothing is left filed under a slot
    assert.equal(3, #got)
    for i = 1, 3 do
      local seen = 0
      for _, o in ipairs(got) do if o == who[i] then seen = seen + 1 end end
      assert.equal(1, seen)
    end
    assert.is_nil(next(owners))
    -- without the owners table the first value is the slot number, as before
    local slot = assert(m:submit("GET", H.base_url .. "/__sim/times", {}, nil))
    local count
    repeat count = m:wait_into(done, 1) until count > 0
    assert.equal(slot, done[1])
    assert.has_error(function() m:wait_into(done, 1, "not a table") end)
    m:close()
  end)
end)

describe("client:batch reads by id (the one road, on the multi)", function()
  before_each(function() H.reset() end)

  it("answers reads straight from the multi, in order, and carries failures to the policy", function()
    local toast = H.toast()
    local guids = {}
    for i = 1, 5 do guids[i] = assert(toast:create_customer(H.customer())).guid end
    local ops = {}
    for i = 1, 40 do ops[i] = { "get_customer", guids[(i - 1) % 5 + 1] } end
    ops[41] = { "get_customer", "not-a-guid" }
    H.fault { method = "GET", path = "/crm/v1/customers/" .. guids[3], status = 503, count = 2 }
    local before = H.count("GET /crm/v1/customers/" .. guids[3])
    local r = assert(toast:batch(ops, { concurrency = 8 }))
    assert.equal(40, r.succeeded)
    assert.equal(1, r.failed)
    for i = 1, 40 do assert.equal(guids[(i - 1) % 5 + 1], r[i].value.guid) end
    assert.equal("validation", r[41].err.kind)
    assert.equal("customerId", r[41].err.field)
    -- 8 reads of guid 3, two of them answered 503 and sent again
    assert.equal(before + 8 + 2, H.count("GET /crm/v1/customers/" .. guids[3]))
    toast:close()
  end)

  it("logs in once more when the token is refused under many fast reads", function()
    local toast = H.toast()
    local guid = assert(toast:create_customer(H.customer())).guid
    local logins = H.stats().logins
    -- The 401s wait 0.3 s, so all 16 first reads are out before any is refused, however slow
    -- the process (ASan): a read sent again after the new login never meets one of them.
    H.fault { method = "GET", path = "/crm/v1/customers/" .. guid, status = 401, count = 16, delay = 0.3 }
    local ops = {}
    for i = 1, 32 do ops[i] = { "get_customer", guid } end
    local r = assert(toast:batch(ops, { concurrency = 16 }))
    assert.equal(32, r.succeeded)
    assert.equal(logins + 1, H.stats().logins)
    toast:close()
  end)
end)

describe("require \"crm\"", function()
  it("loads the C core and a few lines; clients, JSON, schemas and orders load on first use", function()
    local out = subprocess([[
      local crm = require "crm"
      local function loaded(m) return package.loaded[m] ~= nil and "y" or "n" end
      local s = loaded("crm.toast") .. loaded("crm.tablecheck") .. loaded("crm.http")
        .. loaded("crm.json") .. loaded("crm.error")
      local tc = crm.tablecheck { api_key = "abcd1234" }
      local t = crm.toast { restaurant_guid = "]] .. H.restaurant .. [[", client_id = "a",
        client_secret = "bbbbbb" }
      s = s .. " " .. loaded("crm.tablecheck.schema") .. loaded("crm.tablecheck.merge")
        .. loaded("crm.toast.orders") .. loaded("crm.toast.guests")
      local _ = tc:create_customer { first_name = 1 }
      local _ = crm.json, require("crm.toast").guests
      s = s .. " " .. loaded("crm.tablecheck.schema") .. loaded("crm.toast.orders") .. loaded("crm.json")
      s = s .. " " .. type(require("crm.core").curl_version) .. " " .. type(t.list_orders)
      print(s)
    ]])
    assert.equal("nnnnn nnnn yyy function function\n", out)
  end)
end)
