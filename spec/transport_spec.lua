-- Choosing a transport and its clock outside nginx, and the Lua stand-ins for the C functions
-- (used inside nginx when crm/core.so is not installed). The ngx transport itself runs inside
-- nginx: spec/openresty_spec.lua.
local crm = require "crm"
local core = require "crm.core"
local platform = require "crm.platform"
local transports = require "crm.transport"
local batch = require "crm.batch"
local H = require "helper"

describe("transports", function()
  before_each(function() H.reset() end)

  it("default to curl outside nginx, with the curl clock", function()
    local c = H.toast()
    assert.equal("curl", c.transport.name)
    assert.equal(transports.curl_clock, c.clock)
    assert.equal(transports.curl_clock, c.policy.clock)
    assert.equal(core.now, c.clock.now)
    assert(c:search_customers { email = "default@example.org" })
  end)

  it("accept transport = \"curl\" and refuse \"ngx\" outside nginx, naming the option", function()
    local c = H.toast { transport = "curl" }
    assert(c:search_customers { email = "curl@example.org" })
    local before = H.total()
    for _, bad in ipairs { "ngx", "resty", 42, { nothing = true } } do
      local res, err = crm.toast { base_url = H.base_url, restaurant_guid = H.restaurant, token = "t",
                                   transport = bad }
      assert.is_nil(res)
      assert.equal("validation", err.kind)
      assert.equal("transport", err.field)
    end
    local _, err = crm.toast { base_url = H.base_url, restaurant_guid = H.restaurant, token = "t",
                               transport = "ngx" }
    assert.matches("nginx", err.message)
    assert.equal(before, H.total())
  end)

  it("take a custom transport's clock, so retries wait on it", function()
    local clock = H.manual_clock()
    local t = H.recording_transport()
    t.clock = clock
    local c = H.toast { transport = t, retry = { max_attempts = 3, base_delay = 1, max_delay = 1 } }
    assert.equal(clock, c.clock)
    H.fault { path = "/crm/v1/customers/search", status = 503, count = 2 }
    local started = core.now()
    assert(c:search_customers { email = "clock@example.org" })
    assert.is_true(core.now() - started < 0.5) -- the backoff went to the manual clock
    assert.is_true(clock.t > 1000)
    assert.equal(4, #t.log) -- the login and three searches
  end)

  it("keep client:batch over libcurl's multi for curl", function()
    local c = H.toast()
    local results = assert(c:batch({ { "search_customers", { email = "b1@example.org" } },
                                     { "search_customers", { email = "b2@example.org" } } }))
    assert.equal(2, results.succeeded)
    assert.is_false(batch.in_batch())
  end)
end)

describe("crm.platform", function()
  it("has the C core's version", function()
    assert.equal(core.version, platform.VERSION)
    assert.equal(core.version, crm._VERSION)
  end)

  it("refuses to load without the C core, and says where it looked", function()
    local out = H.sh_out("env LUA_CPATH='/nonexistent/?.so' " .. H.lua
      .. " -e 'local ok, e = pcall(require, \"crm\") print(ok, e)' 2>&1")
    assert.matches("^false", out)
    assert.matches("crm/core.so", out, 1, true)
    assert.matches("package.cpath", out, 1, true)
  end)

  it("knows it is not inside nginx", function()
    assert.is_nil(platform.ngx)
    assert.is_false((platform.yieldable()))
  end)
end)

describe("Toast login, single flight", function()
  before_each(function() H.reset() end)

  it("stops waiting for a login that never finished (an aborted nginx request)", function()
    local c = H.toast()
    c._logging_in = c.clock.now() - c.login_wait - 1
    local started = core.now()
    -- Inside a batch sleeping yields, so a login in progress would be waited for.
    local results = assert(c:batch { { "search_customers", { email = "stale@example.org" } } })
    assert.equal(1, results.succeeded)
    assert.is_true(core.now() - started < 1)
    assert.equal(1, H.stats().logins)
    assert.is_false(c._logging_in)
  end)

  it("does not wait where sleeping would hold the thread the login needs", function()
    local c = H.toast()
    c._logging_in = c.clock.now() -- someone else's login, just started
    local started = core.now()
    assert(c:search_customers { email = "nowait@example.org" })
    assert.is_true(core.now() - started < 1)
    assert.equal(1, H.stats().logins)
  end)

  it("clears the flag when the login fails", function()
    local c = H.toast { client_secret = "wrong" }
    local res, err = c:search_customers { email = "bad@example.org" }
    assert.is_nil(res)
    assert.equal("auth", err.kind)
    assert.is_false(c._logging_in)
  end)
end)
