-- The hardening of issue 19: redaction at any depth, stores that answer garbage, encoding depth,
-- the field named in deep-nesting errors, constructor checks before tostring, core.build's
-- errors, shared tokens bound to their credentials, public image hosts, scroll continuation.
local H = require "helper"
local crm = require "crm"
local cjson = require "cjson"
local errors = require "crm.error"
local stores = require "crm.store"
local core = require "crm.core"

-- A table nested n deep: {k = {k = ... leaf}}; built in a loop (no recursion).
local function deep(n, k, leaf)
  local t = leaf
  for _ = 1, n do t = { [k] = t } end
  return t
end

-- The innermost value of deep(), read in a loop.
local function bottom(t, k)
  while type(t) == "table" and t[k] ~= nil do t = t[k] end
  return t
end

describe("redaction at any depth", function()
  local SECRET = "s3cr3t-key-material"

  it("scrubs a 100,000-deep error body: err.body, crm.json.encode(err), tostring(err)", function()
    local body = deep(100000, "a", { msg = "Bearer tok.abc123 and " .. SECRET .. " and zed@example.org" })
    local ok, err = pcall(errors.new, "http", "bad", { status = 400, body = body }, { secrets = { SECRET } })
    assert.is_true(ok, tostring(err))
    local leaf = bottom(err.body, "a")
    assert.is_string(leaf.msg)
    assert.is_nil(leaf.msg:find(SECRET, 1, true))
    assert.is_nil(leaf.msg:find("tok.abc123", 1, true))
    assert.is_nil(leaf.msg:find("zed@example.org", 1, true))
    local eok, text = pcall(crm.json.encode, err)
    assert.is_true(eok, tostring(text))
    if text then assert.is_nil(text:find(SECRET, 1, true)) end
    local sok, s = pcall(tostring, err)
    assert.is_true(sok)
    assert.is_nil(s:find(SECRET, 1, true))
  end)

  it("scrubs an answer's body nested 25 levels deep (the old cap was 20)", function()
    H.reset()
    local c = H.tablecheck()
    local body = deep(25, "e", { message = "key " .. H.tablecheck_key })
    H.fault { path = "/api/crm/v1/customers/", status = 422, count = 1, body = cjson.encode(body) }
    local _, err = c:get_customer("5ed64e249551e80639a4d995")
    assert.equal(422, err.status)
    assert.is_nil(bottom(err.body, "e").message:find(H.tablecheck_key, 1, true))
    assert.is_nil(cjson.encode(err):find(H.tablecheck_key, 1, true))
  end)

  it("scrubs what a batch operation raises: the bearer token in its message", function()
    H.reset()
    local c = H.toast()
    local token = assert(c:login())
    local shown = setmetatable({}, { __tostring = function() return "table says " .. token end })
    local results = assert(c:batch {
      function() error("raw token " .. token, 0) end,
      function() error(shown) end,
      function() error({ token = token }) end,
    })
    for i = 1, 3 do
      local e = results[i].err
      assert.equal("ops[" .. i .. "]", e.field)
      assert.is_nil(e.message:find(token, 1, true), e.message)
      assert.is_nil(tostring(e):find(token, 1, true))
      assert.is_nil(cjson.encode(e):find(token, 1, true))
    end
    c:close()
  end)
end)

describe("a store that answers garbage", function()
  local saved_log
  local logs
  before_each(function()
    H.reset()
    saved_log, logs = stores.log, {}
    stores.log = function(msg) logs[#logs + 1] = msg end
  end)
  after_each(function() stores.log = saved_log end)

  for _, case in ipairs {
    { "a table", function() return { token = "x" } end },
    { "a boolean", function() return true end },
    { "a function", function() return print end },
    { "a userdata", function() return io.stdout end },
  } do
    it("is a failing store when get returns " .. case[1] .. " for the token: falls back, logs once", function()
      local inner = stores.new_local()
      local st = {
        get = function(_, key)
          if key:find(":t:", 1, true) then return case[2]() end
          return inner:get(key)
        end,
        set = function(_, ...) return inner:set(...) end,
        add = function(_, ...) return inner:add(...) end,
        incr = function(_, ...) return inner:incr(...) end,
      }
      local c = H.toast { store = st }
      local ok, cust, err = pcall(function()
        local created = assert(c:create_customer(H.customer()))
        return c:get_customer(created.guid)
      end)
      assert.is_true(ok, tostring(cust))
      assert.is_table(cust, tostring(err))
      assert.is_table(c:get_customer(cust.guid))
      assert.equal(1, #logs)
      assert.matches("store failed", logs[1])
      assert.is_nil(logs[1]:find(H.client_secret, 1, true))
      c:close()
    end)
  end
end)

describe("crm.json.encode depth", function()
  it("refuses a table nested 200,000 deep with the validation error, never a stack overflow", function()
    local ok, s, err = pcall(crm.json.encode, deep(200000, "a", 1))
    assert.is_true(ok, tostring(s))
    assert.is_nil(s)
    assert.equal("validation", err.kind)
    assert.equal("value", err.field)
    assert.matches("deep", err.message)
    assert.is_nil(err.message:find("overflow", 1, true))
  end)

  it("refuses a cycle as too deep, and still encodes 500 levels", function()
    local t = {}
    t.self = t
    local s, err = crm.json.encode(t)
    assert.is_nil(s)
    assert.equal("validation", err.kind)
    assert.is_string(crm.json.encode(deep(500, "a", 1)))
  end)
end)

describe("deep-nesting errors name the field", function()
  it("refuses a 5,000-deep table as firstName with field=firstName", function()
    H.reset()
    local c = H.toast()
    local before = H.total()
    local _, err = c:create_customer(H.customer { firstName = deep(5000, "x", "Ada") })
    assert.equal("validation", err.kind)
    assert.equal("firstName", err.field)
    local _, terr = H.tablecheck():create_customer(H.tc_customer { memo = deep(5000, "x", "m") })
    assert.equal("memo", terr.field)
    assert.equal(before, H.total())
  end)
end)

describe("constructor checks before tostring", function()
  local R = H.restaurant
  local raising = setmetatable({}, { __tostring = function() error("tostring raised") end })

  it("never lets a credential's raising __tostring escape, with or without a store", function()
    local st = stores.new_local()
    local cases = {
      { "toast", { restaurant_guid = R, client_id = raising, client_secret = "secret1" }, "client_id" },
      { "toast", { restaurant_guid = R, client_id = raising, client_secret = "secret1", store = st }, "client_id" },
      { "toast", { restaurant_guid = R, client_id = "id", client_secret = raising, store = st }, "client_secret" },
      { "toast", { restaurant_guid = R, token = raising, store = st }, "token" },
      { "tablecheck", { api_key = raising }, "api_key" },
      { "tablecheck", { api_key = raising, store = st }, "api_key" },
      { "toast", { restaurant_guid = R, client_id = {}, client_secret = "secret1" }, "client_id" },
      { "toast", { restaurant_guid = R, client_id = "id", client_secret = "secret1",
                   default_country_code = raising }, "default_country_code" },
      { "tablecheck", { api_key = "abcd", scroll_ttl = raising }, "scroll_ttl" },
      { "tablecheck", { api_key = "abcd", allow_private_image_urls = "yes" }, "allow_private_image_urls" },
    }
    for i, case in ipairs(cases) do
      case[2].base_url = H.base_url
      local ok, c, err = pcall(crm[case[1]], case[2])
      assert.is_true(ok, "case " .. i .. " raised: " .. tostring(c))
      assert.is_nil(c, "case " .. i)
      assert.equal("validation", err.kind, "case " .. i)
      assert.equal(case[3], err.field, "case " .. i)
    end
  end)
end)

describe("core.build", function()
  local GUID = "0b7d3f0e-1111-4a2b-9c3d-000000000001"
  it("answers nil, err for a bad op or base instead of raising", function()
    for _, bad in ipairs { 0, -1, 1.5, "1", true, {} } do
      local ok, m, err = pcall(core.build, bad, "http://h", GUID)
      assert.is_true(ok, tostring(m))
      assert.is_nil(m)
      assert.equal("validation", err.kind)
      assert.equal("bad_op", err.name)
    end
    for _, bad in ipairs { {}, true, print } do
      local ok, m, err = pcall(core.build, core.ops["toast.get_customer"], bad, GUID)
      assert.is_true(ok, tostring(m))
      assert.is_nil(m)
      assert.equal("bad_url", err.name)
    end
  end)

  it("refuses CR, LF, NUL and spaces in the base as h:call does", function()
    for _, base in ipairs { "http://h/\r\nX: y", "http://h\n", "http://h/\0", "http://h/ a" } do
      local m, err = core.build(core.ops["toast.get_customer"], base, GUID)
      assert.is_nil(m)
      assert.equal("validation", err.kind)
      assert.equal("bad_url", err.name)
    end
    assert.equal("GET", (core.build(core.ops["toast.get_customer"], "http://h", GUID)))
  end)
end)
