-- Secrets and PII never leak; hostile servers and callers get error values; the rate limiter.
local crm = require "crm"
local H = require "helper"
local ratelimit = require "crm.ratelimit"

describe("secrets and PII", function()
  before_each(function() H.reset() end)

  it("never show up in error text or in the debug hook's output", function()
    local emitted = {}
    local function emit(s) emitted[#emitted + 1] = tostring(s) end
    local secret = "sim-secret"
    local c = H.toast { debug = emit }
    local email, phone = "jane.private@example.org", "+12065550123"
    local cust = assert(c:create_customer { firstName = "Jane", lastName = "Private", email = email,
                                            phone = phone })
    local token = assert(c:login())
    -- A server that echoes PII and the token back in its error messages.
    H.fault { path = "/crm/v1/customers", status = 400, count = 3,
              body = ('{"message":"bad customer %s / %s with Bearer %s","requestId":"r1"}')
                :format(email, phone, token) }
    local _, e1 = c:get_customer(cust.guid)
    local _, e2 = c:search_customers { email = email }
    local _, e3 = c:search_customers { phone = phone }
    for _, e in ipairs { e1, e2, e3 } do emit(e) end
    -- A failed login with a wrong secret.
    local bad = H.toast { client_secret = "wrong-" .. secret, debug = emit }
    local _, e4 = bad:get_customer(cust.guid)
    emit(e4)
    assert.is_true(#emitted > 8)
    local all = table.concat(emitted, "\n")
    for _, needle in ipairs { secret, token, email, phone, "2065550123", "jane.private" } do
      assert.is_nil(all:find(needle, 1, true), "leaked: " .. needle)
    end
    assert.matches("<email>", all)
    assert.matches("%-> POST /crm/v1/customers/search", all)
  end)

  it("redacts an API key or token even when the server echoes it", function()
    local c = H.toast { client_id = false, client_secret = false, token = "tok-abcdef-123456" }
    H.fault { path = "/crm/v1/customers/", status = 403, count = 1,
              body = '{"message":"token tok-abcdef-123456 is not allowed"}' }
    local _, err = c:get_customer("0b7d3f0e-1111-4a2b-9c3d-000000000001")
    assert.equal("auth", err.kind)
    assert.not_matches("tok%-abcdef", tostring(err))
  end)
end)

describe("hostile servers", function()
  before_each(function() H.reset() end)

  it("refuses a body over max_response_bytes without retrying", function()
    H.fault { path = "/crm/v1/customers/", status = 200, count = 5,
              body = '{"pad":"' .. ("x"):rep(200000) .. '"}' }
    local c = H.toast { max_response_bytes = 100000 }
    local res, err = c:get_customer("0b7d3f0e-1111-4a2b-9c3d-000000000001")
    assert.is_nil(res)
    assert.equal("response_too_large", err.code)
    assert.equal(1, err.attempts)
  end)

  it("stops a slow-drip response at the total timeout", function()
    -- 40 bytes at one byte per 0.1 s would take 4 s; the client's total timeout is 0.5 s.
    H.fault { path = "/crm/v1/customers/", status = 200, drip = 0.1, count = 1,
              body = '{"guid":"drip","firstName":"slow-slow"}' }
    local c = H.toast { timeout = 0.5, retry = { max_attempts = 1 } }
    local t0 = require("crm.core").now()
    local res, err = c:get_customer("0b7d3f0e-1111-4a2b-9c3d-000000000002")
    assert.is_nil(res)
    assert.equal("timeout", err.kind)
    assert.is_true(require("crm.core").now() - t0 < 2)
  end)

  it("treats a JSON object where an array belongs as a decode error", function()
    H.fault { path = "/crm/v1/customers/search", status = 200, body = '{"a":1}', count = 1 }
    local _, err = H.toast():search_customers { lastName = "X" }
    assert.equal("decode", err.kind)
  end)

  it("treats truncated JSON as a decode error", function()
    H.fault { path = "/crm/v1/customers/search", status = 200, body = '[{"guid":"a"', count = 10 }
    local _, err = H.toast():search_customers { lastName = "X" }
    assert.equal("decode", err.kind)
  end)

  it("does not follow redirects", function()
    H.fault { path = "/crm/v1/customers/", status = 302, count = 1, body = "" }
    local res, err = H.toast():get_customer("0b7d3f0e-1111-4a2b-9c3d-000000000001")
    assert.is_nil(res)
    assert.equal(302, err.status)
    assert.equal(1, H.count("GET /crm/v1/customers/0b7d3f0e-1111-4a2b-9c3d-000000000001"))
  end)
end)

describe("hostile callers", function()
  before_each(function() H.reset() end)

  it("refuses CR/LF in header values and tokens", function()
    local _, e1 = crm.toast { base_url = H.base_url, restaurant_guid = H.restaurant, token = "a\r\nX: y" }
    assert.equal("token", e1.field)
    local _, e2 = crm.toast { base_url = H.base_url, restaurant_guid = H.restaurant, token = "tok-test",
                              user_agent = "x\ny" }
    assert.equal("user_agent", e2.field)
    assert.equal(0, H.total())
  end)

  it("refuses NUL bytes and invalid UTF-8 in fields", function()
    local c = H.toast()
    local _, e1 = c:search_customers { lastName = "a\0b" }
    assert.equal("query.lastName", e1.field)
    local _, e2 = c:search_customers { lastName = "\192\128" } -- overlong encoding
    assert.equal("query.lastName", e2.field)
    local _, e3 = c:get_customer("a\0b")
    assert.equal("customerId", e3.field)
    assert.equal(0, H.total())
  end)
end)

describe("rate limiter", function()
  local function fake_clock()
    local c = { t = 0, slept = 0 }
    c.now = function() return c.t end
    c.sleep = function(s) c.slept = c.slept + s; c.t = c.t + s end
    return c
  end

  it("lets a burst through, then spaces requests at per_second", function()
    local clock = fake_clock()
    local b = assert(ratelimit.new({ per_second = 10, burst = 5 }, clock))
    for _ = 1, 5 do b:take() end
    assert.equal(0, clock.slept)
    for _ = 1, 10 do b:take() end
    assert.is_true(math.abs(clock.slept - 1.0) < 1e-9)
  end)

  it("validates its options", function()
    assert.is_nil((ratelimit.new({ per_second = 0 }, fake_clock())))
    assert.is_nil((ratelimit.new({ per_second = 5, burst = 0.5 }, fake_clock())))
    assert.is_nil((ratelimit.new({ rps = 5 }, fake_clock())))
    local _, err = crm.toast { base_url = H.base_url, restaurant_guid = H.restaurant, token = "tok-test",
                               rate = { per_second = -1 } }
    assert.equal("rate.per_second", err.field)
  end)

  it("spaces real calls on a client", function()
    H.reset()
    local c = H.toast { rate = { per_second = 50, burst = 1 } }
    local t0 = require("crm.core").now()
    for _ = 1, 6 do c:get_customer("0b7d3f0e-1111-4a2b-9c3d-000000000003") end
    -- 1 login + 6 calls with a burst of 1 at 50/s: at least 6 gaps of 20 ms.
    assert.is_true(require("crm.core").now() - t0 >= 0.11)
  end)
end)
