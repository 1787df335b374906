-- TableCheck find_or_create: search by normalised email and phone, create only when nothing
-- matches, one create per guest under concurrency (and across clients sharing a store).
local core = require "crm.core"
local stores = require "crm.store"
local H = require "helper"

local n = 0
local function guest(extra)
  n = n + 1
  local tag = core.guid():sub(1, 8)
  local b = { franchise_id = H.tc.franchise_id, first_name = "Ann" .. n, last_name = "Lee",
              emails = { "ann" .. n .. "." .. tag .. "@example.org" } }
  for k, v in pairs(extra or {}) do b[k] = v end
  return b
end

local function without(b, k)
  b[k] = nil
  return b
end

-- ops for client:batch that record each call's `how` (the third value).
local function calls(clients, body, count, hows)
  local ops = {}
  for i = 1, count do
    local c = clients[(i - 1) % #clients + 1]
    ops[i] = function()
      local res, err, how = c:find_or_create(body)
      if res then hows[how] = (hows[how] or 0) + 1 end
      return res, err
    end
  end
  return ops
end

describe("TableCheck find_or_create", function()
  local tc
  before_each(function()
    H.reset()
    tc = H.tablecheck()
  end)
  after_each(function()
    H.clear_faults()
    tc:close()
  end)

  it("creates once, then finds by email in another spelling, and by phone", function()
    local phone = "+1206555" .. string.format("%04d", math.random(0, 9999))
    local body = guest { phones = { phone } }
    local c, err, how = tc:find_or_create(body)
    assert.is_nil(err)
    assert.equal("created", how)
    local again = guest { emails = { body.emails[1]:upper() } }
    local f, ferr, fhow = tc:find_or_create(again)
    assert.is_nil(ferr)
    assert.equal("found", fhow)
    assert.equal(c.id, f.id)
    local by_phone = without(guest { phones = { { number = phone } } }, "emails")
    local p, _, phow = tc:find_or_create(by_phone)
    assert.equal("found", phow)
    assert.equal(c.id, p.id)
    -- a rerun of the very same call: found, nothing created
    local _, _, rhow = tc:find_or_create(body)
    assert.equal("found", rhow)
    assert.equal(1, #assert(tc:search_customers { email = body.emails[1] }))
  end)

  it("does not take a substring match for the guest", function()
    local body = guest()
    local long = guest { emails = { "jo" .. body.emails[1] } }
    assert.equal("created", select(3, tc:find_or_create(long)))
    local c, _, how = tc:find_or_create(body)
    assert.equal("created", how)
    assert.equal(body.emails[1], c.emails[1])
  end)

  it("refuses a body without email or phone, and bad options, before sending", function()
    local before = H.total()
    local res, err = tc:find_or_create(without(guest(), "emails"))
    assert.is_nil(res)
    assert.equal("emails", err.field)
    res, err = tc:find_or_create(guest(), { bogus = 1 })
    assert.is_nil(res)
    assert.equal("bogus", err.field)
    res, err = tc:find_or_create(without(guest(), "franchise_id"))
    assert.is_nil(res)
    assert.equal("validation", err.kind)
    assert.equal(before, H.total())
  end)

  it("creates one customer when concurrent calls look for the same guest", function()
    local body, hows = guest(), {}
    H.fault { method = "POST", path = "/api/crm/v1/customer_search", delay = 0.05, count = 8 }
    local r = assert(tc:batch(calls({ tc }, body, 6, hows), { concurrency = 6 }))
    assert.equal(6, r.succeeded)
    assert.same({ created = 1, found = 5 }, hows)
  end)

  it("takes turns across clients sharing a store", function()
    local s = stores.new_local()
    local a, b = H.tablecheck { store = s }, H.tablecheck { store = s }
    local body, hows = guest(), {}
    H.fault { method = "POST", path = "/api/crm/v1/customer_search", delay = 0.1, count = 8 }
    local r = assert(a:batch(calls({ a, b }, body, 4, hows), { concurrency = 4 }))
    assert.equal(4, r.succeeded)
    assert.same({ created = 1, found = 3 }, hows)
    a:close()
    b:close()
  end)

  it("ends a repeatable update whose first attempt acted, then got 502s, as outcome_unknown", function()
    local c = assert(tc:create_customer(guest()))
    local path = "/api/crm/v1/customers/" .. c.id
    H.fault { method = "PUT", path = path, after = true, drop = true, count = 1 }
    H.fault { method = "PUT", path = path, status = 502, count = 10 }
    local res, err = tc:update_customer(c.id, { last_name = "Changed" })
    assert.is_nil(res)
    assert.is_true(err.outcome_unknown)
    H.clear_faults()
    assert.equal("Changed", assert(tc:get_customer(c.id)).last_name)
  end)
end)
