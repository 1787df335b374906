-- What an attacker or a careless server would try: concurrent flows on one client, answers that
-- lie, inputs that are not what they seem. Each case here was found by an adversarial review.
local H = require "helper"
local crm = require "crm"
local cjson = require "cjson"

local function refused(field, res, err)
  assert.is_nil(res)
  assert.equal("validation", err.kind, tostring(err))
  assert.equal(field, err.field)
end

describe("concurrent TableCheck merges on one client", function()
  before_each(function() H.reset() end)

  it("take turns when they share a customer, so no customer's data is lost", function()
    local tc = H.tablecheck()
    local A = assert(tc:create_customer(H.tc_customer()))
    local B = assert(tc:create_customer(H.tc_customer()))
    local C = assert(tc:create_customer(H.tc_customer()))
    -- A's PUT is slow, so without turns merge(B <- C) would finish while merge(A <- B) still
    -- holds the B it read before C went into it.
    H.fault { method = "PUT", path = "/api/crm/v1/customers/" .. A.id, delay = 0.3 }
    local res = assert(tc:batch({ { "merge_customers", A.id, { B.id } }, { "merge_customers", B.id, { C.id } } },
      { concurrency = 2 }))
    assert.is_truthy(res[1].value)
    local a = assert(tc:get_customer(A.id))
    local c = tc:get_customer(C.id)
    -- C's phone is either still with C (its merge found B gone) or went into A through B.
    local kept = c ~= nil
    for _, p in ipairs(a.phones or {}) do
      if p == C.phones[1] then kept = true end
    end
    assert.is_true(kept, "C's phone exists nowhere")
  end)
end)

describe("find_or_create against a slow server", function()
  before_each(function() H.reset() end)

  it("holds its keys step by step, so a second call never creates the same guest", function()
    -- Every step stays inside its bound, but the four searches and the create together take
    -- longer than one step's bound: the keys are extended before each step.
    local c = H.toast { timeout = 1, retry = { max_attempts = 2, base_delay = 0.01, max_delay = 0.02,
                                                deadline = 0.2 }, confirm_timeout = 0.1 }
    assert(c:login())
    -- The first call's as-given phone search and its create are slow (each within `timeout`);
    -- the second call's own requests are fast.
    H.fault { path = "/crm/v1/customers/search", match = "(206) 555-0177", delay = 0.9 }
    H.fault { path = "/crm/v1/customers", method = "POST", match = "SlowOne", delay = 0.9 }
    local first = { firstName = "SlowOne", lastName = "Poke", email = "slow@example.org",
                    phone = "(206) 555-0177" }
    local second = { firstName = "SlowTwo", lastName = "Poke", email = "slow@example.org",
                     phone = "+12065550177" }
    local res = assert(c:batch({ { "find_or_create", first }, { "find_or_create", second } },
      { concurrency = 2 }))
    H.clear_faults()
    local hows = {}
    for i = 1, 2 do hows[#hows + 1] = res[i].extra or tostring(res[i].err) end
    table.sort(hows)
    assert.same({ "created", "found" }, hows)
    local found = assert(H.toast():search_customers({ email = "slow@example.org" }, { pageSize = 10 }))
    assert.equal(1, #found)
  end)

  it("sends the same GUID again after a create that was accepted but never confirmed", function()
    H.config { toast_accept_202 = 1000 }
    local c = H.toast { confirm_timeout = 0.15 }
    local guest = { firstName = "Pending", lastName = "Guest", email = "pending@example.org" }
    local guids = {}
    for i = 1, 3 do
      local res, err = c:find_or_create(guest)
      assert.is_nil(res)
      assert.is_true(err.pending)
      guids[i] = err.guid
    end
    assert.equal(guids[1], guids[2])
    assert.equal(guids[1], guids[3])
  end)
end)

describe("answers that lie", function()
  before_each(function() H.reset() end)

  it("find_or_create does not take another guest's record as found", function()
    local t = H.toast()
    local other = assert(t:create_customer { firstName = "Jo", lastName = "Ann", email = "joann@example.org" })
    H.fault { path = "/crm/v1/customers/search", status = 200, body = cjson.encode { other } }
    local c, _, how = t:find_or_create { firstName = "Ann", lastName = "Smith", email = "ann@example.org" }
    assert.equal("created", how)
    assert.equal("ann@example.org", c.email)
  end)

  it("a page whose entries are not objects is a decode error, not a result", function()
    local t = H.toast()
    for _, body in ipairs { "[null]", '["x"]', "[1,2]", "[[1]]" } do
      H.fault { path = "/crm/v1/customers/search", status = 200, body = body, count = 10 }
      local res, err = t:find_or_create { firstName = "A", lastName = "B", email = "ab@example.org" }
      assert.is_nil(res, body)
      assert.equal("decode", err.kind)
      H.clear_faults()
    end
    assert.equal(0, H.count("POST /crm/v1/customers"))
  end)

  it("a create answered with another record's guid is an unknown outcome", function()
    local t = H.toast()
    H.fault { path = "/crm/v1/customers", method = "POST", status = 200, count = 1,
              body = cjson.encode { guid = crm.guid(), firstName = "X", lastName = "Y" } }
    local res, err = t:create_customer(H.customer())
    assert.is_nil(res)
    assert.is_true(err.outcome_unknown)
    assert.is_false(err.retryable)
    assert.is_truthy(err.guid)
  end)

  it("a DELETE the server did, then answered badly, ends as done", function()
    local tc = H.tablecheck()
    for _, spoil in ipairs {
      { status = 200, content_type = "text/html", body = "<html>hi</html>" },
      { drop = true },
      { raw = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n{\"a\":" },
    } do
      local c = assert(tc:create_customer(H.tc_customer()))
      assert(tc:list_shops()) -- a warm connection libcurl would like to reuse
      local fault = { method = "DELETE", path = "/api/crm/v1/customers/" .. c.id, after = true }
      for k, v in pairs(spoil) do fault[k] = v end
      H.fault(fault)
      local ok, err = tc:delete_customer(c.id)
      assert.is_true(ok, tostring(err))
      assert.is_nil(tc:get_customer(c.id))
    end
  end)

  it("a customer_search scroll page that reached the server is never sent again", function()
    H.tc_seed(450, "Scroll")
    local tc = H.tablecheck()
    H.fault { path = "/api/crm/v1/customer_search", method = "POST", match = "scroll_id", after = true,
              status = 500 }
    local n, failure = 0, nil
    for c, e in tc:iter_search_customers {} do
      if c == false then failure = e break end
      n = n + 1
    end
    assert.equal(200, n)
    assert.is_true(failure.scroll_lost)
    assert.equal(2, H.count("POST /api/crm/v1/customer_search"))
    -- With restart_on_expiry the iterator starts again and skips what it gave already.
    H.reset()
    H.tc_seed(450, "Scroll")
    H.fault { path = "/api/crm/v1/customer_search", method = "POST", match = "scroll_id", after = true,
              status = 500 }
    local seen, dups = {}, 0
    for c, e in tc:iter_search_customers({}, { restart_on_expiry = true }) do
      assert(c, tostring(e))
      if seen[c.id] then dups = dups + 1 end
      seen[c.id] = true
      n = n + 1
    end
    local total = 0
    for _ in pairs(seen) do total = total + 1 end
    assert.equal(450, total)
    assert.equal(0, dups)
  end)
end)

describe("inputs that are not what they seem", function()
  before_each(function() H.reset() end)

  it("fields inherited through a metatable are not there: checked and sent from raw copies", function()
    local t, tc = H.toast(), H.tablecheck()
    refused("firstName", t:create_customer(setmetatable({ email = "meta@example.org" },
      { __index = { firstName = "In", lastName = "Herited" } })))
    refused("franchise_id", tc:create_customer(setmetatable({ first_name = "A", last_name = "B" },
      { __index = { franchise_id = H.tc.franchise_id } })))
    -- A metamethod that raises cannot escape either.
    local evil = setmetatable({ firstName = "A", lastName = "B", email = "evil@example.org" },
      { __pairs = function() error("boom") end, __index = function() error("boom") end })
    local ok, res, err = pcall(t.create_customer, t, evil)
    assert.is_true(ok, tostring(res))
    assert.is_truthy(res or err)
    assert.equal(0, H.count("POST /api/crm/v1/customers"))
  end)

  it("arrays with holes and nulls the contract does not allow are refused", function()
    local tc = H.tablecheck()
    local holes = { "a" }
    holes[3] = "c"
    refused("tags", tc:create_customer(H.tc_customer { tags = holes }))
    refused("first_name", tc:create_customer(H.tc_customer { first_name = crm.null }))
    refused("tags", tc:create_customer(H.tc_customer { tags = crm.null }))
    assert.equal(0, H.count("POST /api/crm/v1/customers"))
  end)

  it("integers JSON would change are refused, fractions go out rounded", function()
    local tc = H.tablecheck()
    local _, err = tc:create_membership { membership_program_id = H.tc.program_ids[1], code = "M1",
                                           points = 123456789012345 }
    refused("points", nil, err)
    assert.equal(0, H.count("POST /api/crm/v1/memberships"))
    local http = require "crm.http"
    assert.equal('{"a":0.3}', http.encode { a = 0.1 + 0.2 })
    assert.is_nil((http.encode { a = 2 ^ 53 }))
  end)

  it("Toast sends startDate and endDate only where the seed has them", function()
    local t = H.toast()
    refused("startDate", t:search_customers({ lastName = "X" }, { startDate = "2024-01-01" }))
    local it = t:iter_customer_credit_transactions(crm.guid(), { endDate = "2024-01-01" })
    local first, err = it()
    assert.is_false(first)
    assert.equal("endDate", err.field)
    assert.equal(0, H.total())
  end)

  it("the contract's [PII] fields echoed back are redacted too", function()
    local tc = H.tablecheck()
    H.fault { path = "/api/crm/v1/customers", method = "POST", status = 422,
              body = { errors = { { code = "invalid", message = "street 742 Evergreen Terrace /"
                .. " postal 90210-1234 / birthday 1956-05-12 / memo Allergic to peanuts" } } } }
    local _, err = tc:create_customer(H.tc_customer {
      addresses = { { street = "742 Evergreen Terrace", postal_code = "90210-1234" } },
      events = { { tag = "birthday", date = "1956-05-12" } }, memo = "Allergic to peanuts" })
    local s = tostring(err)
    for _, v in ipairs { "Evergreen", "90210", "1956-05-12", "peanuts" } do
      assert.is_nil(s:find(v, 1, true), v .. " in " .. s)
    end
  end)
end)
