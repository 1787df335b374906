-- Exactly once across runs: idempotency keys (RFC 9562 version-5 GUIDs), replays that do not
-- match, and outcome_unknown for any write that may have acted.
local core = require "crm.core"
local crm = require "crm"
local H = require "helper"

local TOAST_CUSTOMERS = "/crm/v1/customers"

-- A customer to credit, created without faults.
local function customer(toast)
  return assert(toast:create_customer(H.customer()))
end

local function when() return assert(crm.toast_time()) end

-- A fresh simulator and Toast client for each spec of a block; `cleanup` after each.
local function fresh_toast(cleanup)
  local box = {}
  before_each(function()
    H.reset()
    box.toast = H.toast()
  end)
  after_each(function()
    cleanup()
    box.toast:close()
  end)
  return box
end

describe("core.guid_v5", function()
  it("is RFC 9562's name-based SHA-1 UUID (the RFC's DNS namespace example)", function()
    -- RFC 9562 A.4: "www.example.com" in the DNS namespace.
    assert.equal("2ed6657d-e927-568b-95e1-2665a8aea6a2",
      core.guid_v5("6ba7b810-9dad-11d1-80b4-00c04fd430c8", "www.example.com"))
    -- the namespace is read in either case; the result is lowercase
    assert.equal("2ed6657d-e927-568b-95e1-2665a8aea6a2",
      core.guid_v5("6BA7B810-9DAD-11D1-80B4-00C04FD430C8", "www.example.com"))
  end)

  it("answers nil, err for a namespace that is not a UUID", function()
    for _, ns in ipairs { "", "6ba7b810", "6ba7b810-9dad-11d1-80b4-00c04fd430c8x",
                          "6ba7b810-9dad-11d1-80b4-00c04fd430c\0", "zba7b810-9dad-11d1-80b4-00c04fd430c8" } do
      local g, err = core.guid_v5(ns, "x")
      assert.is_nil(g)
      assert.matches("namespace must be a UUID", err)
    end
  end)
end)

describe("Toast idempotency keys", function()
  local toast
  before_each(function()
    H.reset()
    toast = H.toast()
  end)
  after_each(function() toast:close() end)

  it("derives the README's test vector", function()
    local t = assert(crm.toast { restaurant_guid = "76cb1b05-cb1e-4adf-863a-b2a94a5ecdcf",
                                 token = "test-token" })
    assert.equal("3c878c72-0e6e-5253-a925-3015a1ff82e9", t:get_idempotency_guid("add_credit", "order-1001"))
    assert.equal(core.guid_v5("76cb1b05-cb1e-4adf-863a-b2a94a5ecdcf", "add_credit\norder-1001"),
      t:get_idempotency_guid("add_credit", "order-1001"))
    local g, err = t:get_idempotency_guid("delete_customer", "x")
    assert.is_nil(g)
    assert.equal("operation", err.field)
    t:close()
  end)

  it("adds a keyed credit once, whatever process sends it again", function()
    local c = customer(toast)
    local key = "row-" .. core.guid()
    local a = assert(toast:add_credit(c.guid, { amount = 4, localCreatedDate = when() },
      { idempotency_key = key }))
    assert.equal(toast:get_idempotency_guid("add_credit", key), a.guid)
    -- a second client (another run) with the same key sends the same GUID: one record
    local other = H.toast()
    local b = assert(other:add_credit(c.guid, { amount = 4, localCreatedDate = when() },
      { idempotency_key = key }))
    other:close()
    assert.equal(a.guid, b.guid)
    assert.equal(1, #assert(toast:list_customer_credit_transactions(c.guid)))
    assert.equal(4, assert(toast:get_credit_summary(c.guid)).amount)
  end)

  it("creates a keyed customer once, and find_or_create's key is its own", function()
    local c = H.customer()
    local key = "guest-" .. core.guid()
    local a = assert(toast:create_customer(c, { idempotency_key = key }))
    local b = assert(toast:create_customer(c, { idempotency_key = key }))
    assert.equal(a.guid, b.guid)
    assert.equal(toast:get_idempotency_guid("create_customer", key), a.guid)
    local d = H.customer()
    local f, _, how = toast:find_or_create(d, { idempotency_key = key })
    assert.equal("created", how)
    assert.equal(toast:get_idempotency_guid("find_or_create", key), f.guid)
  end)

  it("refuses before sending a guid that is not the derived one, and a bad key", function()
    assert(toast:login())
    local before = H.total()
    local c = H.customer { guid = core.guid() }
    local res, err = toast:create_customer(c, { idempotency_key = "k1" })
    assert.is_nil(res)
    assert.equal("validation", err.kind)
    assert.equal("guid", err.field)
    assert.matches("derived from idempotency_key", err.message)
    -- the derived one itself is fine alongside
    c.guid = toast:get_idempotency_guid("create_customer", "k1")
    assert(toast:create_customer(c, { idempotency_key = "k1" }))
    local id = core.guid()
    for _, bad in ipairs { "", "   ", 7, string.rep("k", 257), "a\0b" } do
      local r, e = toast:add_credit(id, { amount = 1, localCreatedDate = when() }, { idempotency_key = bad })
      assert.is_nil(r)
      assert.equal("idempotency_key", e.field)
    end
    local r, e = toast:find_or_create(H.customer { guid = core.guid() }, { idempotency_key = "k2" })
    assert.is_nil(r)
    assert.equal("guid", e.field)
    r, e = toast:add_credit(id, { amount = 1, localCreatedDate = when(), guid = core.guid() },
      { idempotency_key = "k3" })
    assert.is_nil(r)
    assert.equal("guid", e.field)
    assert.equal(before + 1, H.total()) -- the one create that was allowed
  end)
end)

describe("Toast replays that do not match", function()
  local box = fresh_toast(function() H.config { toast_replay = "first" } end)

  for _, mode in ipairs { "first", "conflict" } do
    it("fails a credit replayed with another amount (" .. mode .. ")", function()
      local toast = box.toast
      local c = customer(toast)
      H.config { toast_replay = mode }
      local key = "k-" .. core.guid()
      local first = assert(toast:add_credit(c.guid, { amount = 3, localCreatedDate = when() },
        { idempotency_key = key }))
      local path = "POST " .. TOAST_CUSTOMERS .. "/" .. c.guid .. "/creditTransactions"
      local posts = H.count(path)
      local res, err = toast:add_credit(c.guid, { amount = 4, localCreatedDate = when() },
        { idempotency_key = key })
      assert.is_nil(res)
      assert.equal("idempotency_mismatch", err.code)
      assert.equal(first.guid, err.guid)
      assert.equal(3, err.record.amount)
      assert.matches("amount", err.message)
      assert.is_falsy(err.retryable)
      -- one POST for the replay, nothing sent again
      assert.equal(posts + 1, H.count(path))
      -- the stored record stays out of pairs() and JSON: it holds customer data
      local encoded = assert(crm.json.encode(err))
      assert.is_nil(encoded:find('"record"', 1, true))
      assert.is_nil(rawget(err, "record"))
      -- the same guid without a key, to another customer: also refused
      local c2 = customer(toast)
      res, err = toast:add_credit(c2.guid, { amount = 3, localCreatedDate = when(), guid = first.guid })
      assert.is_nil(res)
      assert.equal("idempotency_mismatch", err.code)
      assert.matches("customer", err.message)
      -- the very same request again is the stored one: success
      assert.same(first.guid, assert(toast:add_credit(c.guid, { amount = 3, localCreatedDate = when() },
        { idempotency_key = key })).guid)
      assert.equal(3, assert(toast:get_credit_summary(c.guid)).amount)
    end)

    it("fails a customer replayed with other names or contacts (" .. mode .. ")", function()
      local toast = box.toast
      H.config { toast_replay = mode }
      local c = H.customer()
      local key = "k-" .. core.guid()
      local first = assert(toast:create_customer(c, { idempotency_key = key }))
      -- the same person in other spellings is the same record
      local same = { firstName = "  " .. c.firstName:upper(), lastName = c.lastName,
                     email = c.email:upper() }
      assert.equal(first.guid, assert(toast:create_customer(same, { idempotency_key = key })).guid)
      local other = H.customer()
      local res, err = toast:create_customer(other, { idempotency_key = key })
      assert.is_nil(res)
      assert.equal("idempotency_mismatch", err.code)
      assert.equal(first.email, err.record.email)
      assert.matches("firstName", err.message)
      assert.matches("email", err.message)
      -- the error text never shows the record's PII
      assert.is_nil(tostring(err):find(c.email, 1, true))
      assert.is_nil(tostring(err):find(c.firstName, 1, true))
    end)
  end
end)

describe("outcome_unknown for writes with a client GUID", function()
  local box = fresh_toast(H.clear_faults)

  it("marks a credit whose first attempt acted and whose answer was lost, then 502s", function()
    local toast = box.toast
    local c = customer(toast)
    local note = "lost-" .. core.guid()
    H.fault { path = TOAST_CUSTOMERS .. "/", method = "POST", match = note, after = true, drop = true, count = 1 }
    H.fault { path = TOAST_CUSTOMERS .. "/", method = "POST", match = note, status = 502, count = 10 }
    local res, err = toast:add_credit(c.guid, { amount = 5, note = note, localCreatedDate = when() })
    assert.is_nil(res)
    assert.is_true(err.outcome_unknown)
    assert.is_true(err.attempts > 1)
    assert.is_string(err.guid)
    assert.matches("same guid", err.message)
    -- the credit is stored: replaying the GUID returns it, once
    H.clear_faults()
    local again = assert(toast:add_credit(c.guid, { amount = 5, note = note, localCreatedDate = when(),
                                                   guid = err.guid }))
    assert.equal(err.guid, again.guid)
    assert.equal(5, assert(toast:get_credit_summary(c.guid)).amount)
  end)

  it("marks a create answered only with 5xx (none is a refusal), not one refused with a 4xx", function()
    local toast = box.toast
    H.fault { path = TOAST_CUSTOMERS, method = "POST", status = 503, count = 10 }
    local res, err = toast:create_customer(H.customer())
    assert.is_nil(res)
    assert.is_true(err.outcome_unknown)
    H.clear_faults()
    H.fault { path = TOAST_CUSTOMERS, method = "POST", status = 422, count = 1 }
    res, err = toast:create_customer(H.customer())
    assert.is_nil(res)
    assert.equal(422, err.status)
    assert.is_nil(err.outcome_unknown)
    -- 429 is "not now", not a refusal: with the attempts spent it stays unknown
    H.clear_faults()
    H.fault { path = TOAST_CUSTOMERS, method = "POST", status = 429, count = 10 }
    res, err = toast:create_customer(H.customer())
    assert.is_nil(res)
    assert.is_true(err.outcome_unknown)
  end)

  it("does not mark a write whose login failed before anything was sent", function()
    local toast = box.toast
    H.fault { path = "/authentication", status = 503, count = 20 }
    local res, err = toast:create_customer(H.customer())
    assert.is_nil(res)
    assert.is_nil(err.outcome_unknown)
  end)
end)
