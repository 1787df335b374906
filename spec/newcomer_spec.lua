-- What a newcomer trips over in the library (issue 20): crm.core, old names, constructor typos,
-- duplicates from customers already read, the scroll expiry hint, one phone rule.
local crm = require "crm"
local core = require "crm.core"
local renamed = require "crm.renamed"
local H = require "helper"

describe("the library as the README describes it", function()
  before_each(H.reset)

  it("require 'crm'.core is the C core", function()
    assert.equal(core, crm.core)
    assert.equal(crm._VERSION, crm.core.version)
    assert.is_table(crm.core.ops)
  end)

  it("a core that is found but does not load is named, with what the dynamic loader said", function()
    for lua, other in pairs { ["lua5.4"] = { "luajit", "lua_pcall" }, luajit = { "lua5.4", "lua_newuserdatauv" } } do
      local so, symbol = "build/" .. other[1] .. "/crm/core.so", other[2]
      if H.exists(so) then
        local r = H.capture(("LUA_PATH='lua/?.lua;;' LUA_CPATH='build/%s/?.so;;' LUA_CPATH_5_4='build/%s/?.so;;' %s -e"
          .. " 'require \"crm\"'"):format(other[1], other[1], lua))
        assert.is_not.equal(0, r.code)
        assert.truthy(r.err:find("crm found its C core at " .. so .. " but could not load it", 1, true), r.err)
        -- the first missing symbol the loader meets depends on the build (lua_pcall, lua_replace…)
        assert.truthy(r.err:find("undefined symbol: lua_", 1, true), r.err)
        assert.truthy(r.err:find(symbol, 1, true), r.err)
        assert.truthy(r.err:find("a core built for another Lua", 1, true), r.err)
      end
    end
    local r = H.capture("LUA_PATH='lua/?.lua;;' LUA_CPATH='/nonexistent/?.so' LUA_CPATH_5_4='/nonexistent/?.so' "
      .. H.lua .. " -e 'require \"crm\"'")
    assert.truthy(r.err:find("build it with make, or install the rock", 1, true), r.err)
  end)

  it("crm.hash is in the API reference", function()
    local ld = H.slurp("config.ld")
    assert.truthy(ld:find('"lua/crm/hash.lua"', 1, true))
    local src = H.slurp("lua/crm/hash.lua")
    assert.truthy(src:find("\n%-%- @module crm.hash\n"))
    for _, name in ipairs { "sha256", "sha1", "hmac_sha256", "hmac_sha1", "hex", "sha256_hex", "equal" } do
      assert.truthy(src:find("\n%-%- @treturn [^\n]*\nfunction M%." .. name .. "%("), name .. " has no doc comment")
    end
  end)

  describe("0.1.0 names", function()
    it("raise an error naming the new method, for every rename of both clients", function()
      local clients = { tablecheck = H.tablecheck(), toast = H.toast() }
      for kind, names in pairs { tablecheck = renamed.tablecheck, toast = renamed.toast } do
        local c = clients[kind]
        for old, new in pairs(names) do
          assert.is_function(c[new], kind .. "." .. new .. " does not exist")
          local ok, msg = pcall(function() return c[old](c, "x") end)
          assert.is_false(ok, old)
          assert.truthy(tostring(msg):find("'" .. old .. "' was renamed to '" .. new .. "'", 1, true), msg)
        end
        assert.is_nil(c.no_such_method)
      end
      assert.equal(0, H.total())
    end)

    it("are the CHANGELOG's rename table, as data", function()
      local from_changelog = { tablecheck = {}, toast = {} }
      local section = H.slurp("CHANGELOG.md"):match("\n### Renamed[^\n]*\n(.-)\n###")
      for client, old, new in section:gmatch("\n| (%a+)[^|]* | ([^|]+) | ([^|]+) |") do
        local kind = client:lower()
        if from_changelog[kind] then
          local olds, news = {}, {}
          for name in old:gmatch("`([%w_]+)`") do olds[#olds + 1] = name end
          for name in new:gmatch("`([%w_]+)`") do news[#news + 1] = name end
          for i, name in ipairs(olds) do from_changelog[kind][name] = news[i] end
        end
      end
      assert.same(from_changelog.tablecheck, renamed.tablecheck)
      assert.same(from_changelog.toast, renamed.toast)
    end)
  end)

  it("an unknown constructor option gets 'did you mean'", function()
    local _, err = crm.toast { restaurantGuid = H.restaurant, client_id = "a", client_secret = "secret" }
    assert.equal("restaurantGuid", err.field)
    assert.truthy(err.message:find("did you mean 'restaurant_guid'?", 1, true), err.message)
    _, err = crm.tablecheck { api_key = H.tablecheck_key, tiemout = 3 }
    assert.truthy(err.message:find("did you mean 'timeout'?", 1, true), err.message)
    _, err = crm.tablecheck { api_key = H.tablecheck_key, frobnicate = 3 }
    assert.equal("frobnicate is not a known option", err.message)
  end)

  describe("find_duplicates", function()
    local SEARCH = "POST /api/crm/v1/customer_search"

    local function twins(c)
      local a = assert(c:create_customer(H.tc_customer { emails = { "twin@example.com" } }))
      local b = assert(c:create_customer(H.tc_customer { emails = { "Twin@Example.com" } }))
      H.tc_seed(7, "Other")
      return a, b
    end

    it("takes the customers of an export read back, and reads the API no more", function()
      local c = H.tablecheck()
      local a, b = twins(c)
      local file = os.tmpname()
      local out = assert(io.open(file, "w"))
      for cust, err in c:iter_search_customers() do
        assert(cust, err)
        out:write(assert(crm.json.encode(cust)), "\n")
      end
      out:close()
      local searches = H.count(SEARCH)
      local lines = io.lines(file)
      local groups, err = c:find_duplicates(function()
        local l = lines()
        return l and assert(crm.json.decode(l))
      end)
      os.remove(file)
      assert.is_table(groups, tostring(err))
      assert.equal(searches, H.count(SEARCH))
      assert.equal(1, #groups)
      assert.equal(a.id, groups[1].primary)
      assert.same({ b.id }, groups[1].secondaries)
    end)

    it("takes a pager, and refuses restart_on_expiry with one", function()
      local c = H.tablecheck()
      local a = twins(c)
      local groups = assert(c:find_duplicates(c:iter_search_customers { has_email = true }))
      assert.equal(a.id, groups[1].primary)
      local none, err = c:find_duplicates(c:iter_search_customers(), { restart_on_expiry = true })
      assert.is_nil(none)
      assert.equal("restart_on_expiry", err.field)
      none, err = c:find_duplicates(function() return "not a customer" end)
      assert.is_nil(none)
      assert.equal("customers", err.field)
    end)

    it("an expired scroll says all of it and names find_duplicates' option", function()
      H.config { tablecheck_search_page_size = 2 }
      H.tc_seed(5, "Slow")
      local clock = H.manual_clock()
      local c = H.tablecheck { scroll_ttl = 20, clock = clock }
      local groups, err = c:find_duplicates(nil, { on_progress = function() clock.advance(30) end })
      assert.is_nil(groups)
      assert.equal("scroll_expired", err.code)
      assert.truthy(err.message:find("pass it restart_on_expiry = true to start the search over by itself",
        1, true), err.message)
      assert.is_nil(err.message:find("iterator", 1, true), err.message)
    end)
  end)

  describe("Toast phones: one rule, E.164 on every write", function()
    it("create_customer stores E.164, as find_or_create does", function()
      local c = H.toast()
      local made = assert(c:create_customer(H.customer { email = crm.null, phone = "+1 206 555 0199" }))
      assert.equal("+12065550199", made.phone)
      local national = assert(c:create_customer(H.customer { email = crm.null, phone = "(206) 555-0198" }))
      assert.equal("+12065550198", national.phone)
      local found = assert(c:find_or_create(H.customer { email = crm.null, phone = "206.555.0197" }))
      assert.equal("+12065550197", found.phone)
    end)

    it("refuses what cannot be a phone number, before sending", function()
      local c = H.toast()
      for _, bad in ipairs { "12", "+1 206", "555-0100" } do
        local none, err = c:create_customer(H.customer { phone = bad })
        assert.is_nil(none)
        assert.equal("phone", err.field)
        assert.truthy(err.message:find("E.164", 1, true), err.message)
        none, err = c:find_or_create(H.customer { phone = bad })
        assert.is_nil(none)
        assert.equal("phone", err.field)
      end
      assert.equal(0, H.total())
    end)
  end)
end)
