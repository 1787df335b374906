-- A write whose bytes reached the server but whose answer cannot be used ends with
-- outcome_unknown = true, is sent once, and is stored once: whatever spoiled the answer.
local H = require "helper"
local crm = require "crm"

local POST = "POST /api/crm/v1/customers"

local function create(tc, email)
  return tc:create_customer { franchise_id = H.tc.franchise_id, first_name = "Spoiled",
                               last_name = "Answer", emails = { email } }
end

local function stored(email)
  local n = 0
  for c in H.tablecheck():iter_search_customers { email = email } do
    assert(c)
    n = n + 1
  end
  return n
end

-- Each case: a fault the simulator applies after it has stored the customer.
local CASES = {
  { "a body that is not JSON", { status = 200, body = "this is not json" } },
  { "HTML with status 200", { status = 200, content_type = "text/html",
                               body = "<html><body>Service temporarily unavailable</body></html>" } },
  { "a body larger than max_response_bytes", { status = 200,
                               body = '{"customer":{"pad":"' .. ("x"):rep(70000) .. '"}}' } },
  { "a body cut off mid-way", { partial = true } },
  { "JSON cut off mid-way, with a full Content-Length", { status = 200, body = '{"customer":{"id":"5e' } },
  { "a JSON array where an object belongs", { status = 200, body = "[1,2,3]" } },
  { "a redirect", { status = 302, body = "" } },
  { "a 5xx", { status = 500 } },
  { "bytes that are not HTTP at all", { raw = "\22\3\1\0\5 SSH-2.0-OpenSSH_9.6 not http\r\n\r\n" } },
  { "a broken status line", { raw = "HTTP/1.1 2x0 OK\r\nContent-Length: @LEN@\r\n\r\n@BODY@" } },
  { "broken chunked framing", { raw = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                  .. "Transfer-Encoding: chunked\r\n\r\nzz\r\n@BODY@\r\n0\r\n\r\n" } },
  { "an HTTP/0.9 reply (the body alone)", { raw = "@BODY@" } },
}

describe("a non-idempotent write with a spoiled answer", function()
  before_each(function() H.reset() end)

  for _, case in ipairs(CASES) do
    it("ends with outcome_unknown after " .. case[1] .. ", sent once, stored once", function()
      local tc = H.tablecheck { max_response_bytes = 65536 }
      local email = "spoiled." .. crm.guid():sub(1, 8) .. "@example.org"
      local fault = { path = "/api/crm/v1/customers", method = "POST", after = true, count = 3 }
      for k, v in pairs(case[2]) do fault[k] = v end
      H.fault(fault)
      local res, err = create(tc, email)
      assert.is_nil(res)
      assert.is_true(crm.is_error(err))
      assert.is_true(err.outcome_unknown, tostring(err))
      -- never retryable: a caller that replays on `retryable` must not make a second record
      assert.is_false(err.retryable)
      assert.matches("outcome is unknown", err.message)
      assert.matches("outcome_unknown", tostring(err))
      assert.equal(1, H.count(POST))
      H.clear_faults()
      assert.equal(1, stored(email))
    end)
  end

  it("is final when the server refused it in full (a 4xx with its error body)", function()
    local tc = H.tablecheck()
    H.fault { path = "/api/crm/v1/customers", method = "POST", status = 422, count = 1 }
    local res, err = create(tc, "refused@example.org")
    assert.is_nil(res)
    assert.is_nil(err.outcome_unknown)
    assert.equal(422, err.status)
  end)

  it("is retried, not unknown, when it never left this machine", function()
    local tc = H.tablecheck { base_url = "http://127.0.0.1:1/api/crm/v1" }
    local res, err = create(tc, "never.sent@example.org")
    assert.is_nil(res)
    assert.is_false(err.sent)
    assert.is_nil(err.outcome_unknown)
  end)
end)

describe("answers with numbers JSON does not have", function()
  before_each(function() H.reset() end)

  for _, body in ipairs { '{"guid":"g","amount":NaN}', '{"guid":"g","amount":Infinity}',
                          '{"guid":"g","amount":-Infinity}', '{"guid":"g","amount":0x10}',
                          '{"guid":"g","amount":1e400}' } do
    it("are decode errors: " .. body, function()
      local c = H.toast()
      H.fault { path = "/crm/v1/customers/", method = "GET", status = 200, body = body, count = 10 }
      local res, err = c:get_customer("0b7d3f0e-1111-4a2b-9c3d-000000000001")
      assert.is_nil(res)
      assert.equal("decode", err.kind)
      assert.equal(4, err.attempts) -- a read: retried, the answer stayed spoiled
    end)
  end
end)

describe("a read with a spoiled answer", function()
  before_each(function() H.reset() end)

  it("is retried and succeeds when the next answer is sound", function()
    local c = H.toast()
    local cust = assert(c:create_customer(H.customer()))
    H.fault { path = "/crm/v1/customers/", method = "GET", status = 200, count = 1,
              content_type = "text/html", body = "<html>proxy error</html>" }
    local got = assert(c:get_customer(cust.guid))
    assert.equal(cust.guid, got.guid)
    assert.equal(2, H.count("GET /crm/v1/customers/" .. cust.guid))
  end)

  it("is retried after an HTTP/0.9 reply, as after any other unreadable answer", function()
    local c = H.toast()
    local cust = assert(c:create_customer(H.customer()))
    H.fault { path = "/crm/v1/customers/", method = "GET", after = true, raw = "@BODY@", count = 1 }
    local got = assert(c:get_customer(cust.guid))
    assert.equal(cust.guid, got.guid)
    assert.equal(2, H.count("GET /crm/v1/customers/" .. cust.guid))
  end)
end)
