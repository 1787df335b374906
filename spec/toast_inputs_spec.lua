-- Toast input rules: GUIDs, secrets, date-times, null contacts, customers read back, and the 202
-- on add_credit.
local crm = require "crm"
local cjson = require "cjson"
local H = require "helper"

local function refused(field, res, err)
  assert.is_nil(res)
  assert.equal("validation", err.kind)
  assert.equal(field, err.field)
  assert.matches(field, tostring(err), 1, true)
end

describe("Toast inputs", function()
  before_each(function() H.reset() end)

  describe("GUIDs", function()
    it("refuses a restaurant_guid that is not a Toast GUID", function()
      for _, bad in ipairs { "not-a-guid", "6f1d2d0e8f654d7b9b590f1f0c8e0a11", "restaurant-1",
                             H.restaurant .. "0" } do
        refused("restaurant_guid", crm.toast { base_url = H.base_url, restaurant_guid = bad,
                                               token = "tok-test" })
      end
      assert(crm.toast { base_url = H.base_url, restaurant_guid = H.restaurant:upper(), token = "tok-test" })
      assert.equal(0, H.total())
    end)

    it("refuses path ids that are not GUIDs, sending nothing", function()
      local c = H.toast()
      local txn = { amount = 1, localCreatedDate = "2024-03-05T09:21:40+09:00" }
      for _, bad in ipairs { "abc", "12345", ".", "..", "%2e%2e", H.restaurant .. "x", 7 } do
        refused("customerId", c:get_customer(bad))
        refused("customerId", c:get_credit_summary(bad))
        refused("customerId", c:list_customer_credit_transactions(bad))
        refused("customerId", c:add_credit(bad, txn))
        refused("transactionId", c:get_credit_transaction(bad))
        local item, err = c:iter_customer_credit_transactions(bad)()
        assert.is_false(item)
        assert.equal("customerId", err.field)
      end
      assert.equal(0, H.total())
    end)
  end)

  describe("secrets", function()
    it("refuses a client_secret or token shorter than 4 bytes", function()
      refused("token", crm.toast { base_url = H.base_url, restaurant_guid = H.restaurant, token = "abc" })
      refused("client_secret", crm.toast { base_url = H.base_url, restaurant_guid = H.restaurant,
                                           client_id = "id", client_secret = "abc" })
      assert(crm.toast { base_url = H.base_url, restaurant_guid = H.restaurant, token = "abcd" })
      assert.equal(0, H.total())
    end)
  end)

  describe("crm.toast_time", function()
    it("never raises: bad input gives a validation error naming the time", function()
      for _, bad in ipairs { "x", "2024-13-01T00:00:00Z", true, {}, 0 / 0, math.huge, -1, 1e300,
                             253402300800 } do
        local ok, res, err = pcall(crm.toast_time, bad)
        assert.is_true(ok, tostring(res))
        refused("time", res, err)
      end
    end)

    it("formats epoch seconds in UTC and RFC 3339 text in its own offset", function()
      assert.equal("1970-01-01T00:00:00.000+0000", crm.toast_time(0))
      assert.equal("2018-06-16T15:01:14.250+0000", crm.toast_time(1529161274.25))
      assert.equal("1970-01-01T00:00:02.000+0000", crm.toast_time(1.9996))
      assert.equal("2024-03-05T09:21:40.000+0900", crm.toast_time("2024-03-05T09:21:40+09:00"))
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%d%+0000$", crm.toast_time())
    end)
  end)

  describe("localCreatedDate", function()
    local c, cust
    before_each(function()
      c = H.toast()
      cust = assert(c:create_customer(H.customer()))
    end)

    it("takes any RFC 3339 date-time and sends it in Toast's form, same local time and offset", function()
      local cases = {
        { "2024-03-05T09:21:40+09:00", "2024-03-05T09:21:40.000+0900" },
        { "2024-03-05T09:21:40Z", "2024-03-05T09:21:40.000+0000" },
        { "2024-03-05t09:21:40.5-05:30", "2024-03-05T09:21:40.500-0530" },
        { "2024-03-05T09:21:40.123456789+0100", "2024-03-05T09:21:40.123+0100" }, -- truncated
        { "2024-03-05T23:59:59.9999+00:00", "2024-03-05T23:59:59.999+0000" },
        { "2018-06-16T15:01:14.000+0000", "2018-06-16T15:01:14.000+0000" },
        { "2016-12-31T23:59:60Z", "2016-12-31T23:59:59.999+0000" },               -- leap second
        { "2024-02-29T12:00:00-08:00", "2024-02-29T12:00:00.000-0800" },
      }
      for _, case in ipairs(cases) do
        local t = assert(c:add_credit(cust.guid, { amount = 1, localCreatedDate = case[1] }))
        assert.equal(case[2], t.localCreatedDate, case[1])
      end
    end)

    it("refuses impossible and incomplete date-times, sending nothing", function()
      local before = H.total()
      for _, bad in ipairs { "2024-13-05T09:21:40Z", "2023-02-29T09:21:40Z", "2024-02-31T09:21:40Z",
                             "2024-03-05T29:21:40Z", "2024-03-05T09:61:40Z", "2024-03-05T09:21:40+9999",
                             "2024-03-05T09:21:40+24:00", "2024-03-05T09:21:40", "2024-03-05",
                             "2018-06-16 15:01:14Z", "2024-03-05T09:21Z", 1709598100 } do
        refused("localCreatedDate", c:add_credit(cust.guid, { amount = 1, localCreatedDate = bad }))
      end
      for _, bad in ipairs { "2024-02-31", "2024-03-05T25:00", "2024-03-05T09:21:40+9999" } do
        refused("startDate", c:list_credit_transactions { startDate = bad })
        refused("endDate", c:list_credit_transactions { endDate = bad })
      end
      assert.equal(before, H.total())
    end)
  end)

  describe("customers", function()
    it("accepts crm.null for the phone or the email when the other is given, and leaves it out", function()
      local t = H.recording_transport()
      local c = H.toast { transport = t }
      local a = assert(c:create_customer(H.customer { phone = crm.null }))
      assert.is_nil(a.phone)
      local b = assert(c:find_or_create { firstName = "N", lastName = "Ull", email = crm.null,
                                          phone = "+1 206 555 0111" })
      assert.equal("+12065550111", b.phone)
      for _, r in ipairs(t.log) do
        if r.method == "POST" and r.url:find("/crm/v1/customers$") then
          local body = cjson.decode(r.body)
          assert.is_nil(body.entityType)
          assert.is_true(body.phone == nil or type(body.phone) == "string")
          assert.is_true(body.email == nil or type(body.email) == "string")
          assert.is_nil(r.body:find("null", 1, true))
        end
      end
      refused("email", c:create_customer { firstName = "N", lastName = "O", email = crm.null,
                                          phone = crm.null })
    end)

    it("takes a customer read back from Toast as it is, but still refuses typos", function()
      local c = H.toast()
      local cust = assert(c:create_customer(H.customer { lastName = "Readback" }))
      local read = assert(c:get_customer(cust.guid))
      assert.equal("Customer", read.entityType)
      local again = assert(c:create_customer(read))
      assert.equal(cust.guid, again.guid)
      local found, _, how = assert(c:find_or_create(read))
      assert.equal("found", how)
      assert.equal(cust.guid, found.guid)
      assert.equal(1, #assert(c:search_customers { lastName = "Readback" }))
      local typo = {}
      for k, v in pairs(read) do typo[k] = v end
      typo.emial = "x@example.org"
      refused("emial", c:create_customer(typo))
      typo.emial, typo.entityType = nil, "Restaurant"
      refused("entityType", c:find_or_create(typo))
    end)
  end)

  describe("add_credit and 202", function()
    it("posts the same GUID again until 200, adding the value once", function()
      local c = H.toast()
      local cust = assert(c:create_customer(H.customer()))
      local path = "/crm/v1/customers/" .. cust.guid .. "/creditTransactions"
      H.fault { method = "POST", path = path, status = 202, count = 2 }
      local t = assert(c:add_credit(cust.guid, { amount = 6, localCreatedDate = crm.toast_time() }))
      assert.equal(3, H.count("POST " .. path))
      assert.equal(6, t.amount)
      assert.equal(6, assert(c:get_credit_summary(cust.guid)).amount)
    end)

    it("gives a pending timeout carrying the GUID when 202 never ends", function()
      local c = H.toast()
      local cust = assert(c:create_customer(H.customer()))
      local path = "/crm/v1/customers/" .. cust.guid .. "/creditTransactions"
      H.fault { method = "POST", path = path, status = 202, count = 1000 }
      local res, err = c:add_credit(cust.guid, { amount = 2, localCreatedDate = crm.toast_time() },
                                    { confirm_timeout = 0.3 })
      assert.is_nil(res)
      assert.equal("timeout", err.kind)
      assert.is_true(err.pending)
      assert.matches("^%x+%-", err.guid)
      H.clear_faults()
      local t = assert(c:add_credit(cust.guid, { amount = 2, localCreatedDate = crm.toast_time(),
                                                 guid = err.guid }))
      assert.equal(err.guid, t.guid)
      refused("confirm_timeout", c:add_credit(cust.guid, { amount = 2, localCreatedDate = crm.toast_time() },
                                              { confirm_timeout = 0 }))
    end)
  end)

  describe("credit ranges and dates", function()
    it("refuses a reversed range and an epoch for localCreatedDate, sending nothing", function()
      local c = H.toast { token = "tok-test", client_id = false, client_secret = false }
      refused("endDate", c:list_credit_transactions { startDate = "2024-03-31", endDate = "2024-03-01" })
      refused("endDate", c:list_credit_transactions { startDate = "2024-03-05T10:00:00+09:00",
                                                 endDate = "2024-03-05T00:59:59Z" })
      local _, err = c:add_credit("0b7d3f0e-1111-4a2b-9c3d-000000000001",
        { amount = 1, localCreatedDate = os.time() })
      refused("localCreatedDate", nil, err)
      assert.matches("toast_time", err.message)
      assert.equal(0, H.total())
      -- the same instant written in two zones is not reversed
      local ok, e2 = H.toast():list_credit_transactions { startDate = "2024-03-05T10:00:00+09:00",
                                                     endDate = "2024-03-05T01:00:00Z" }
      assert.is_truthy(ok, tostring(e2))
    end)
  end)

  it("has one date helper: crm.toast_time and guest history format epochs alike", function()
    local guests = require "crm.toast.guests"
    for _, t in ipairs { 0, 1.0004, 1.9996, 1709600000.5, 1709600000.9999 } do
      assert.equal(guests.format_time(t), (crm.toast_time(t)))
    end
    assert.equal("1970-01-01T00:00:02.000+0000", (crm.toast_time(1.9996)))
  end)

  it("gives now with its milliseconds, from the wall clock", function()
    local seen = {}
    for _ = 1, 5 do
      local t = assert(crm.toast_time())
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%d%+0000$", t)
      seen[t:match("%.(%d%d%d)")] = true
      require("crm.core").sleep(0.011)
    end
    local distinct = 0
    for _ in pairs(seen) do distinct = distinct + 1 end
    assert.is_true(distinct >= 3, "milliseconds did not move")
    local now = require("crm.core").time()
    assert.is_true(math.abs(now - os.time()) < 2)
  end)
end)
